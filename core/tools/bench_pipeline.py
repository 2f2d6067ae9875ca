"""Engine benchmarks: per-stage latency of the real pipeline on a file, and a memory soak.

``bench_pipeline`` drives :class:`painmon.core.live.engine.Engine` (ONNX Runtime DA-CNN with
fused Grad-CAM, the face tracker, quality gates, AU cross-check) over every frame of a
source in pull mode and reports p50/p95 per stage, end-to-end fps and how much faster
than real time that is. It also times the DA-CNN at batch 1 in ONNX Runtime against
eager torch computing the same outputs on the same crops.

``bench_soak`` runs the engine on the synthetic patient for a wall-clock duration and
reports resident memory (RSS) at start and end.

These are commands that print numbers; the tests check shapes and sanity, never speed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.live.capture import CaptureThread, Frame, open_source
from painmon.core.live.engine import ENGINE_ORT_THREADS, Engine, EngineResult
from painmon.core.live.monitor import FrameTally
from painmon.core.live.pipelined import PipelinedEngine
from painmon.core.live.scoring import OnnxPainModel
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_write_json
from painmon.core.util.redact import redact_source

log = logging.getLogger(__name__)

# Medians of at least this many batch-1 calls per runtime (after warm-up).
ORT_VS_TORCH_CALLS = 60
_WARMUP_CALLS = 10
# Crops kept from the run for the ORT-vs-torch comparison (real faces, not noise).
_KEPT_CROPS = 16
# Soak: RSS at "start" is read after this many frames, once arenas and caches are warm.
SOAK_WARMUP_FRAMES = 60
_SOAK_SAMPLE_INTERVAL_S = 5.0
UNTRAINED_CHECKPOINT = "untrained.safetensors"


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux /proc; else the peak from resource)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    # ru_maxrss is KiB on Linux, bytes on macOS; only reached where /proc is missing.
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / (1024.0 * 1024.0) if platform.system() == "Darwin" else peak / 1024.0


def _versions() -> dict[str, str]:
    import cv2
    import onnxruntime

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import mediapipe

        versions["mediapipe"] = mediapipe.__version__
    except ImportError:
        versions["mediapipe"] = "not installed"
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        versions["torch"] = "not installed"
    try:
        versions["painmon"] = metadata.version("painmon")
    except metadata.PackageNotFoundError:
        versions["painmon"] = "unknown"
    return versions


def export_untrained_dacnn(out_dir: str | Path, seed: int = 0) -> Path:
    """Export a freshly initialised DA-CNN to ``out_dir/dacnn-untrained.onnx`` (speed only)."""
    import torch

    from painmon.core.research.export import GateData, export_onnx
    from painmon.core.research.train import checkpoint_meta, save_checkpoint
    from painmon.models import create_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = create_model("dacnn").eval()
    meta = checkpoint_meta(model, temperature=1.0, data_sha256="0" * 64, epoch=0)
    checkpoint = out_dir / UNTRAINED_CHECKPOINT
    save_checkpoint(model, checkpoint, meta)
    out = out_dir / "dacnn-untrained.onnx"
    # A gate on random crops: its scores mean nothing, but the graph has the gate's cost.
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (60, 64, 64, 3), dtype=np.uint8)
    gate = GateData(crops[:50], np.arange(50) % 5, crops[50:], 5, 1)
    export_onnx(checkpoint, out, parity_samples=2, gate_data=gate)
    return out


def _stage_stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "n": len(values),
    }


def _call_times_ms(call: Callable[[], object], calls: int) -> list[float]:
    """Wall time of each of ``calls`` calls in ms."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _session_threads(model: OnnxPainModel) -> int | None:
    """The intra-op thread count the session was opened with (0: ONNX Runtime's default)."""
    options = getattr(model.session, "get_session_options", None)
    return int(options().intra_op_num_threads) if options is not None else None


def ort_vs_torch(
    model: OnnxPainModel,
    crops_uint8: np.ndarray,
    calls: int = ORT_VS_TORCH_CALLS,
    torch_threads: int | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Median batch-1 latency of ONNX Runtime vs eager torch on the same uint8 crops.

    Torch runs the exported graph's own wrapper (uint8 NHWC in, normalisation folded in)
    up to probs and Grad-CAM in one backbone pass — the work
    :func:`painmon.models.gradcam` does — and so computes no attention maps, while ONNX
    Runtime runs the engine's full call (probs, Grad-CAM and attention). With the
    ``checkpoint`` the ONNX file was exported from, torch runs those weights and the
    largest output differences are reported; without it the weights are freshly
    initialised (latency does not depend on their values). ``torch_threads`` (None:
    torch's default) should equal the session's intra-op threads: same cores for both.
    """
    import torch

    from painmon.core.research.export import PainExportWrapper
    from painmon.models import create_model, gradcam_from_gradient

    if calls < 50:
        raise ValueError(f"calls must be >= 50 for a stable median, got {calls}")
    if torch_threads is not None and torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
    crops = np.ascontiguousarray(crops_uint8, dtype=np.uint8)
    if crops.ndim != 4 or len(crops) < 1:
        raise ValueError(f"crops must be (N, H, W, 3) uint8, got shape {crops.shape}")
    cfg = model.cfg
    if checkpoint is not None:
        from painmon.core.research.train import load_checkpoint

        torch_model, _meta = load_checkpoint(checkpoint)
    else:
        torch_model = create_model(cfg.architecture, **cfg.model_kwargs)
    wrapper = PainExportWrapper(torch_model.eval(), cfg.mean, cfg.std, cfg.temperature).eval()
    singles = [crops[i : i + 1] for i in range(len(crops))]
    tensors = [torch.from_numpy(single.copy()) for single in singles]

    def torch_call(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            features = wrapper.model.forward_features(wrapper.normalise(x))
            logits, grad = wrapper.model.head.logits_and_input_gradient(features, None)
            probs = torch.softmax(logits / wrapper.temperature, dim=1)
            return probs, gradcam_from_gradient(features, grad)

    counter = {"ort": 0, "torch": 0}

    def next_ort() -> object:
        counter["ort"] += 1
        return model.predict(singles[counter["ort"] % len(singles)])

    def next_torch() -> object:
        counter["torch"] += 1
        return torch_call(tensors[counter["torch"] % len(tensors)])

    default_threads = torch.get_num_threads()
    ort_times: list[float] = []
    torch_times: list[float] = []
    try:
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        used_threads = torch.get_num_threads()
        for _ in range(_WARMUP_CALLS):
            next_ort()
            next_torch()
        # Alternate blocks so that a burst of load from other processes hits both sides.
        block = max(10, calls // 5)
        while len(ort_times) < calls:
            ort_times += _call_times_ms(next_ort, block)
            torch_times += _call_times_ms(next_torch, block)
        diffs = None
        if checkpoint is not None:
            ort_out = [model.predict(single) for single in singles]
            torch_out = [torch_call(tensor) for tensor in tensors]
            diffs = {
                name: max(
                    float(np.abs(o[k][0] - t[k][0].numpy()).max())
                    for o, t in zip(ort_out, torch_out, strict=True)
                )
                for k, name in enumerate(("probs", "gradcam"))
            }
    finally:
        torch.set_num_threads(default_threads)
    ort_ms = statistics.median(ort_times)
    torch_ms = statistics.median(torch_times)
    return {
        "ort_median_ms": ort_ms,
        "torch_median_ms": torch_ms,
        "ratio": ort_ms / torch_ms,
        "calls_each": len(ort_times),
        "ort_p95_ms": float(np.percentile(ort_times, 95)),
        "torch_p95_ms": float(np.percentile(torch_times, 95)),
        "ort_computes": (
            "OnnxPainModel.predict on 1 uint8 crop: in-graph normalisation, DA-CNN, "
            "calibrated softmax probs, Grad-CAM (explicit head gradient) and attention maps"
        ),
        "torch_computes": (
            "eager torch (inference_mode) on the same uint8 crop: PainExportWrapper.normalise, "
            "forward_features, head.logits_and_input_gradient, calibrated softmax probs and "
            "painmon.models.gradcam_from_gradient (the body of painmon.models.gradcam), in "
            "one backbone pass; no attention maps"
        ),
        "torch_weights": "the exported checkpoint" if checkpoint is not None else "fresh init",
        "outputs_compared": diffs is not None,
        "max_abs_diff": diffs,
        "torch_threads": used_threads,
        "ort_intra_op_threads": _session_threads(model),
        "crops": len(crops),
    }


def _fresh_model_path(model_path: str | Path | None, workdir: Path) -> tuple[Path, bool]:
    if model_path is not None:
        return Path(model_path), False
    log.info("no model given: exporting an untrained DA-CNN for timing only")
    return export_untrained_dacnn(workdir), True


def _checkpoint_beside(onnx_path: Path) -> Path | None:
    """The checkpoint an untrained export was made from (see export_untrained_dacnn)."""
    checkpoint = onnx_path.with_name(UNTRAINED_CHECKPOINT)
    return checkpoint if checkpoint.is_file() else None


def bench_pipeline(
    source: str | Path,
    model_path: str | Path | None = None,
    face_model: str | Path | None = None,
    max_frames: int | None = None,
    json_path: str | Path | None = None,
    *,
    ort_threads: int | None = ENGINE_ORT_THREADS,
    pipelined_rounds: int = 1,
) -> dict[str, Any]:
    """Per-stage latency, fps and real-time factor of the engine on every frame of ``source``.

    Without ``model_path`` an untrained DA-CNN is exported to a temp folder (timing is
    independent of the weights; the JSON says "untrained"). ``ort_threads`` are ONNX
    Runtime's intra-op threads (None: its default, one per core); torch gets as many in
    the comparison. With ``pipelined_rounds`` > 0 the same frames are also run face stage
    only, serial and through :class:`PipelinedEngine` that many times (see
    :func:`pipeline_vs_face_only`). Writes
    ``json_path`` if given.
    """
    if max_frames is not None and max_frames < 1:
        raise InvalidInputError(f"max_frames must be >= 1, got {max_frames}")
    with tempfile.TemporaryDirectory(prefix="painmon-bench-") as tmp:
        run = _EngineRun(source, model_path, face_model, Path(tmp), ort_threads, realtime=False)
        crops: list[np.ndarray] = []
        first_t_s = last_t_s = None
        with run:
            for frame, decode_ms in run.frames():
                if max_frames is not None and run.tally.counts["frames"] >= max_frames:
                    break
                result = run.process(frame, decode_ms)
                first_t_s = frame.t_s if first_t_s is None else first_t_s
                last_t_s = frame.t_s
                if result.network_ran and len(crops) < _KEPT_CROPS:
                    crops.append(run.engine.crop(frame, result.observation))
        counts, wall_s = run.tally.counts, run.wall_s
        if counts["frames"] == 0:
            raise RuntimeError(f"{redact_source(str(source))} delivered no frames to benchmark")
        if not crops:
            raise RuntimeError(
                f"the network ran on no frame of {redact_source(str(source))} (no face found "
                "or all failed quality), so "
                "there is nothing to time the network on: use a clip with a visible face"
            )
        # A bedside install (no `train` extra) has no torch: the comparison is left out.
        comparison = (
            ort_vs_torch(
                run.model,
                np.stack(crops),
                torch_threads=ort_threads or os.cpu_count(),
                checkpoint=_checkpoint_beside(run.model_path) if run.untrained else None,
            )
            if importlib.util.find_spec("torch") is not None
            else None
        )

        overlap = (
            pipeline_vs_face_only(
                source,
                run.model_path,
                face_model,
                Path(tmp),
                ort_threads,
                max_frames,
                pipelined_rounds,
            )
            if pipelined_rounds
            else None
        )

    fps = counts["frames"] / wall_s if wall_s > 0 else 0.0
    report: dict[str, Any] = {
        "benchmark": "pipeline",
        "source": redact_source(str(source)),
        "source_fps": run.source_fps,
        "media_seconds": (last_t_s or 0.0) - (first_t_s or 0.0),
        "model": (
            "untrained (freshly initialised DA-CNN, timing only)"
            if run.untrained
            else str(run.model_path)
        ),
        "model_untrained": run.untrained,
        **counts,
        "wall_seconds": wall_s,
        "fps": fps,
        "realtime_factor": fps / run.source_fps if run.source_fps else None,
        "latency_ms": {key: _stage_stats(values) for key, values in run.tally.timings.items()},
        "latency_notes": (
            "decode: wait for the next frame from the capture thread (decoding overlaps on "
            "that thread); face: landmarker + patient selection + quality gates; gradcam: "
            "computed inside the same ONNX Runtime call as dacnn, so 0 (fused); crop, dacnn "
            "and gradcam over scored frames only; total: everything per frame incl. decode"
        ),
        **(overlap or {}),
        "ort_vs_torch_latency_ratio": comparison["ratio"] if comparison else None,
        "ort_vs_torch": comparison if comparison else "not measured: torch is not installed",
        "provider": run.model.providers[0],
        "providers": list(run.model.providers),
        "face_detector": run.face_detector,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "versions": _versions(),
    }
    if json_path is not None:
        atomic_write_json(Path(json_path), report)
    return report


def _throughput_pass(
    mode: str,
    source: str | Path,
    model_path: Path,
    face_model: str | Path | None,
    workdir: Path,
    ort_threads: int | None,
    max_frames: int | None,
) -> dict[str, Any]:
    """One pass over ``source`` with a fresh tracker: ``face`` (the face stage alone),
    ``serial`` (:meth:`Engine.process`) or ``pipelined`` (:class:`PipelinedEngine`).

    Latency is per frame from the moment the frame is handed to the engine to the moment
    its result comes back (for ``pipelined`` that includes the wait in the pipeline).
    """
    run = _EngineRun(source, model_path, face_model, workdir, ort_threads, realtime=False)
    handed_at: dict[int, float] = {}
    latencies: list[float] = []
    frames = 0

    def done(result: EngineResult | None) -> None:
        if result is not None:
            latencies.append((time.perf_counter() - handed_at.pop(result.frame.index)) * 1000.0)

    pipeline = PipelinedEngine(run.engine) if mode == "pipelined" else None
    with run:
        try:
            for frame, _decode_ms in run.frames():
                if max_frames is not None and frames >= max_frames:
                    break
                frames += 1
                handed_at[frame.index] = time.perf_counter()
                if mode == "face":
                    run.engine.observe(frame)
                    latencies.append((time.perf_counter() - handed_at.pop(frame.index)) * 1000.0)
                elif pipeline is not None:
                    done(pipeline.submit(frame))
                else:
                    done(run.engine.process(frame))
            if pipeline is not None:
                done(pipeline.flush())
        finally:
            if pipeline is not None:
                pipeline.close()
    wall_s = run.wall_s
    return {
        "frames": frames,
        "wall_seconds": wall_s,
        "fps": frames / wall_s if wall_s > 0 else 0.0,
        "latency_ms": _stage_stats(latencies),
    }


def pipeline_vs_face_only(
    source: str | Path,
    model_path: Path,
    face_model: str | Path | None,
    workdir: Path,
    ort_threads: int | None = ENGINE_ORT_THREADS,
    max_frames: int | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    """Face-stage-only, serial and pipelined throughput on the same frames, one run.

    Each round runs the three passes back to back (each with its own face tracker and
    capture thread, decoding included), so a load burst from other processes hits them
    alike; the fps and latencies reported are medians over ``rounds``.
    ``pipeline_vs_face_only`` is the median of the rounds' ``pipeline_fps /
    face_only_fps`` (the pipeline's goal: >= 0.9); ``pipeline_added_latency_ms`` is the
    pipelined median latency minus the serial one, to compare with
    ``pipeline_frame_interval_ms`` (1000 / pipeline_fps).
    """
    if rounds < 1:
        raise InvalidInputError(f"rounds must be >= 1, got {rounds}")
    modes = ("face", "serial", "pipelined")
    per_round = []
    for _ in range(rounds):
        per_round.append(
            {
                mode: _throughput_pass(
                    mode, source, model_path, face_model, workdir, ort_threads, max_frames
                )
                for mode in modes
            }
        )

    def median_of(mode: str, key: str, sub: str | None = None) -> float | None:
        values = [p[mode][key] if sub is None else p[mode][key][sub] for p in per_round]
        return None if None in values else statistics.median(values)

    passes = {
        mode: {
            "frames": per_round[-1][mode]["frames"],
            "fps": median_of(mode, "fps"),
            "fps_per_round": [p[mode]["fps"] for p in per_round],
            "latency_ms": {
                "p50": median_of(mode, "latency_ms", "p50"),
                "p95": median_of(mode, "latency_ms", "p95"),
                "n": per_round[-1][mode]["latency_ms"]["n"],
            },
        }
        for mode in modes
    }
    ratios = [p["pipelined"]["fps"] / p["face"]["fps"] for p in per_round if p["face"]["fps"] > 0]
    face_fps, pipe_fps = passes["face"]["fps"] or 0.0, passes["pipelined"]["fps"] or 0.0
    serial_p50 = passes["serial"]["latency_ms"]["p50"]
    pipe_p50 = passes["pipelined"]["latency_ms"]["p50"]
    return {
        "face_only_fps": face_fps,
        "pipeline_fps": pipe_fps,
        "pipeline_vs_face_only": statistics.median(ratios) if ratios else None,
        "pipeline_rounds": rounds,
        "pipeline_vs_face_only_per_round": ratios,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "serial_fps": passes["serial"]["fps"],
        "pipeline_frame_interval_ms": 1000.0 / pipe_fps if pipe_fps > 0 else None,
        "pipeline_added_latency_ms": (
            pipe_p50 - serial_p50 if pipe_p50 is not None and serial_p50 is not None else None
        ),
        "pipeline_passes": passes,
        "pipeline_notes": (
            "three passes over the same frames, back to back, each with a fresh face tracker "
            "and its capture thread decoding: face = Engine.observe only (landmarker, patient "
            "selection, quality gates); serial = Engine.process; pipelined = PipelinedEngine "
            "(face stage of frame n+1 on a worker thread while frame n is scored). Latency: "
            "frame handed to the engine -> its result back."
        ),
    }


class _EngineRun:
    """The engine on a source as both benchmarks drive it: model, tracker, capture, counters.

    ``with`` starts the capture thread and stops it and the engine on the way out;
    :meth:`frames` yields (frame, ms waited for it) until the source is exhausted;
    :meth:`process` runs the engine and adds the result to ``tally``.
    """

    def __init__(
        self,
        source: str | Path,
        model_path: str | Path | None,
        face_model: str | Path | None,
        workdir: Path,
        ort_threads: int | None,
        *,
        realtime: bool,
    ) -> None:
        from painmon.core.live.face import create_face_tracker

        self.source = str(source)
        self.model_path, self.untrained = _fresh_model_path(model_path, workdir)
        self.model = OnnxPainModel(self.model_path, intra_op_num_threads=ort_threads)
        frame_source = open_source(self.source)
        self.source_fps = getattr(frame_source, "fps", None)
        tracker = None
        try:
            tracker = create_face_tracker(face_model)
            self.engine = Engine(self.model, tracker)
        except BaseException:
            frame_source.close()
            if tracker is not None:
                tracker.close()
            raise
        self.face_detector = getattr(tracker, "name", type(tracker).__name__)
        self.capture = CaptureThread(frame_source, realtime=realtime)
        self.tally = FrameTally()
        self.exhausted = False
        self.wall_s = 0.0
        self._wall_start = 0.0

    def __enter__(self) -> _EngineRun:
        try:
            self.capture.start()
        except BaseException:
            self.engine.close()
            raise
        self._wall_start = time.perf_counter()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.wall_s = self.elapsed_s()
        try:
            self.capture.stop()
        finally:
            self.engine.close()
        if exc_type is None and self.capture.error is not None:
            raise RuntimeError(
                f"capture from {redact_source(self.source)} failed: {self.capture.error}"
            )

    def elapsed_s(self) -> float:
        return time.perf_counter() - self._wall_start

    def frames(self, until_s: float | None = None) -> Iterator[tuple[Frame, float]]:
        """Frames in order with the ms waited for each; stops at the end of the source or
        once ``until_s`` wall seconds have passed since the start."""
        while until_s is None or self.elapsed_s() < until_s:
            wait_start = time.perf_counter()
            frame = self.capture.get_latest(timeout_s=0.5)
            if frame is not None:
                yield frame, (time.perf_counter() - wait_start) * 1000.0
            elif self.capture.exhausted:
                self.exhausted = True
                return

    def process(self, frame: Frame, decode_ms: float = 0.0) -> EngineResult:
        result = self.engine.process(frame, decode_ms=decode_ms)
        self.tally.add(result)
        return result


def bench_soak(
    seconds_wall: float = 600.0,
    source: str = "synthetic",
    model_path: str | Path | None = None,
    face_model: str | Path | None = None,
    json_path: str | Path | None = None,
    *,
    realtime: bool = False,
) -> dict[str, Any]:
    """Run the engine on ``source`` for ``seconds_wall`` s and report RSS growth.

    "Start" RSS is read after :data:`SOAK_WARMUP_FRAMES` frames (arenas, caches and the
    landmarker's graph are warm by then); RSS is also sampled every 5 s. Files are
    not looped: use the synthetic patient (endless) for long soaks.
    """
    if not seconds_wall > 0:
        raise InvalidInputError(f"seconds_wall must be > 0, got {seconds_wall!r}")
    rss_before_mib = rss_mib()
    with tempfile.TemporaryDirectory(prefix="painmon-soak-") as tmp:
        run = _EngineRun(
            source, model_path, face_model, Path(tmp), ENGINE_ORT_THREADS, realtime=realtime
        )
        samples: list[tuple[float, float]] = []
        rss_start_mib: float | None = None
        with run:
            next_sample_s = 0.0
            for frame, _ in run.frames(until_s=seconds_wall):
                run.process(frame)
                if run.tally.counts["frames"] == SOAK_WARMUP_FRAMES:
                    rss_start_mib = rss_mib()
                elapsed_s = run.elapsed_s()
                if elapsed_s >= next_sample_s:
                    samples.append((round(elapsed_s, 2), round(rss_mib(), 2)))
                    next_sample_s += _SOAK_SAMPLE_INTERVAL_S
    counts, wall_s = run.tally.counts, run.wall_s
    end_reason = "end of media" if run.exhausted else "time"
    rss_end_mib = rss_mib()
    warm_start = rss_start_mib is not None
    if rss_start_mib is None:
        # A run shorter than the warm-up: compare with the first sample instead.
        rss_start_mib = samples[0][1] if samples else rss_before_mib
    report: dict[str, Any] = {
        "benchmark": "soak",
        "source": redact_source(str(source)),
        "realtime": realtime,
        "seconds_wall_requested": float(seconds_wall),
        "wall_seconds": wall_s,
        "end_reason": end_reason,
        "model_untrained": run.untrained,
        **counts,
        "fps": counts["frames"] / wall_s if wall_s > 0 else 0.0,
        "rss_before_engine_mib": rss_before_mib,
        "rss_start_mib": rss_start_mib,
        "rss_start_after_frames": SOAK_WARMUP_FRAMES if warm_start else 0,
        "rss_end_mib": rss_end_mib,
        "rss_peak_sampled_mib": max([s[1] for s in samples] + [rss_end_mib]),
        "rss_growth_mib": rss_end_mib - rss_start_mib,
        "rss_growth_pct": 100.0 * (rss_end_mib - rss_start_mib) / rss_start_mib,
        "rss_samples": samples,
        "latency_ms": {key: _stage_stats(values) for key, values in run.tally.timings.items()},
        "face_detector": run.face_detector,
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
    }
    if json_path is not None:
        atomic_write_json(Path(json_path), report)
    return report
