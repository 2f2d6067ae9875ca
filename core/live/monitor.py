"""The headless monitor: a frame source through the engine into a session folder.

:func:`run_monitor` drives :class:`~painmon.core.live.engine.Engine` from a capture
thread until the media ends, ``max_seconds`` of media pass or the operator stops it,
always closing the session files; :class:`FrameTally` counts what the run did, as the
benchmarks also report it.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from painmon.core.live.alarms import AlarmEventKind, AlarmSettings, AlarmState
from painmon.core.live.capture import CaptureThread, open_source
from painmon.core.live.engine import (
    ENGINE_ORT_THREADS,
    STAGES,
    Engine,
    EngineResult,
    ms_since,
)
from painmon.core.live.face import create_face_tracker
from painmon.core.live.scoring import ModelLoadError, OnnxPainModel, PainScorer, is_checkpoint
from painmon.core.live.session import SessionWriter, make_session_folder
from painmon.core.util import timeline
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.progress import LOG_INTERVAL_S

log = logging.getLogger(__name__)

# The live status line is redrawn at most this often.
_STATUS_INTERVAL_S = 0.25
# How long the headless loop waits for a frame before it advances a silent live source's clock.
_LIVE_POLL_S = 0.5
_PAIN_ALARM_KINDS = frozenset({AlarmEventKind.ONSET.value, AlarmEventKind.ESCALATION.value})


class FrameTally:
    """Frame counts and per-stage latencies of a run, as the monitor and the benchmarks report.

    Crop and network times exist only for scored frames, so only those frames add them.
    """

    def __init__(self) -> None:
        self.counts = {
            "frames": 0,
            "frames_with_face": 0,
            "frames_scored": 0,
            "frames_out_of_domain": 0,
        }
        self.class_frames: dict[int, int] = {}
        self.timings: dict[str, list[float]] = {k: [] for k in STAGES}

    def add(self, result: EngineResult) -> None:
        self.counts["frames"] += 1
        self.counts["frames_with_face"] += int(result.observation.face_found)
        self.counts["frames_scored"] += int(result.output_known)
        self.counts["frames_out_of_domain"] += int(result.out_of_domain)
        if result.pain_class is not None:
            self.class_frames[result.pain_class] = self.class_frames.get(result.pain_class, 0) + 1
        for key in STAGES:
            if result.network_ran or key not in ("crop", "dacnn", "gradcam"):
                self.timings[key].append(result.timings_ms[key])


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def format_status(result: EngineResult, total_frames: int | None = None) -> str:
    """One-line live status; with ``total_frames`` (a file) it starts with how far it got."""
    if result.output_known:
        score = (
            f"level {result.smoothed.pain_level:4.2f} class {result.smoothed.pain_class} "
            f"conf {result.smoothed.confidence:4.2f}"
        )
    elif result.out_of_domain:
        au = "-" if result.au_pspi is None else f"{result.au_pspi:.1f}"
        score = f"unknown (face unlike the training data; AU estimate PSPI {au})"
    else:
        score = f"unknown ({result.technical_condition or 'no score'})"
    technical = ",".join(result.alarm_state.technical_conditions) or "-"
    done = ""
    if total_frames:
        done = f"{min(100.0, 100.0 * (result.frame.index + 1) / total_frames):5.1f} %  "
    return (
        f"{done}t {result.frame.t_s:7.2f} s  frame {result.frame.index:6d}  "
        f"face {'yes' if result.observation.face_found else 'no '}  {score}  "
        f"alarm {result.alarm_state.pain_priority}  technical {technical}  "
        f"{result.timings_ms['total']:6.1f} ms"
    )


@dataclass(frozen=True)
class StageLatency:
    """Median and 95th percentile of one engine stage, in ms (None: no frame had it)."""

    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class MonitorSummary:
    """What one headless monitoring run did, as ``painmon monitor`` prints it."""

    session_folder: Path
    source: str
    end_reason: str
    frames: int
    frames_with_face: int
    frames_scored: int
    technical_condition_frames: Mapping[str, int]
    pain_alarms_raised: int
    technical_alarms_raised: int
    media_seconds: float
    wall_seconds: float
    latency_ms: Mapping[str, StageLatency]
    model_is_demo: bool
    providers: tuple[str, ...]
    # Crops beyond the model's domain gate (no pain output), scored frames per pain class,
    # and whether the model has a gate at all.
    frames_out_of_domain: int = 0
    class_frames: Mapping[int, int] = field(default_factory=dict)
    domain_gate: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.frames_scored <= self.frames_with_face <= self.frames:
            raise ValueError(
                f"frame counts out of order: scored {self.frames_scored}, "
                f"with a face {self.frames_with_face}, frames {self.frames}"
            )
        if self.frames_scored + self.frames_out_of_domain > self.frames_with_face:
            raise ValueError("scored and out-of-domain frames are frames with a face")
        if sum(self.class_frames.values()) != self.frames_scored:
            raise ValueError("class_frames must add up to the scored frames")
        object.__setattr__(self, "class_frames", MappingProxyType(dict(self.class_frames)))
        object.__setattr__(
            self,
            "technical_condition_frames",
            MappingProxyType(dict(self.technical_condition_frames)),
        )
        object.__setattr__(self, "latency_ms", MappingProxyType(dict(self.latency_ms)))

    @property
    def fps(self) -> float:
        """Frames processed per wall-clock second."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def format(self) -> str:
        """The end-of-session summary as plain text lines."""
        conditions = ", ".join(
            f"{k} {v}" for k, v in sorted(self.technical_condition_frames.items())
        )
        lines = [
            f"session folder: {self.session_folder}",
            f"ended: {self.end_reason} after {self.media_seconds:.2f} s of media "
            f"({self.wall_seconds:.2f} s wall, {self.fps:.1f} frames/s)",
            f"frames: {self.frames}, with a face: {self.frames_with_face}, "
            f"scored: {self.frames_scored}, out of domain: {self.frames_out_of_domain}",
            "scored frames by pain class: "
            + (", ".join(f"{k}: {v}" for k, v in sorted(self.class_frames.items())) or "none"),
            f"technical conditions (frames): {conditions or 'none'}",
            f"alarms raised: pain {self.pain_alarms_raised}, "
            f"technical {self.technical_alarms_raised}",
        ]
        if not self.domain_gate:
            lines.append(
                "the model has no domain gate: it cannot tell a face unlike its training data"
            )
        total = self.latency_ms.get("total")
        if total is not None and total.p50 is not None:
            lines.append(f"latency per frame: median {total.p50:.1f} ms, p95 {total.p95:.1f} ms")
        return "\n".join(lines)


def open_session(
    root: str | Path,
    pseudonym: str,
    model: PainScorer,
    settings: AlarmSettings,
    source: str,
    face_detector: str,
    utc_now: datetime | None = None,
) -> SessionWriter:
    """A new session folder under ``root/<pseudonym>/`` with its files open for writing.

    The headless monitor and the window both start sessions here, so both record the
    same model identity (architecture, else the model file's name) and settings.
    """
    folder = make_session_folder(root, pseudonym, utc_now or timeline.utc_now())
    return SessionWriter(
        folder,
        pseudonym,
        model_id=str(model.metadata.get("architecture") or Path(model.path).stem),
        model_sha256=model.sha256,
        settings=settings,
        source=source,
        face_detector=face_detector,
    )


def load_onnx_model(model_path: str | Path) -> OnnxPainModel:
    """An exported .onnx through ONNX Runtime, as the bedside runs it.

    A research run folder needs the torch backend (``painmon[train]``): the CLI passes
    :func:`painmon.core.research.torch_scoring.load_pain_model` as ``load_model`` for those.
    """
    if is_checkpoint(model_path):
        raise ModelLoadError(
            f"{model_path} is a research checkpoint, not an exported model: export it with "
            "`painmon export --run RUN --out model.onnx`, or monitor through the `painmon` CLI "
            "with the training extra installed."
        )
    return OnnxPainModel(model_path, intra_op_num_threads=ENGINE_ORT_THREADS)


def run_monitor(
    source_spec: str,
    model_path: str | Path,
    out_dir: str | Path,
    max_seconds: float | None = None,
    realtime: bool = False,
    face_model: str | Path | None = None,
    pseudonym: str = "anonymous",
    progress: bool = True,
    *,
    on_status: Callable[[str], None] | None = None,
    on_result: Callable[[EngineResult], None] | None = None,
    load_model: Callable[[str | Path], Any] = load_onnx_model,
) -> MonitorSummary:
    """Monitor ``source_spec`` headless into a new session folder under ``out_dir``.

    Files run in pull mode (every frame, as fast as possible) unless ``realtime``;
    the run ends at the end of the media, after ``max_seconds`` of media time, or on
    Ctrl-C, always with the session files closed. With ``progress``, ``on_status``
    receives a status line at most every 0.25 s.
    """
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise InvalidInputError(
            f"max_seconds must be a positive number of seconds, got {max_seconds!r}"
        )
    model = load_model(model_path)
    source = open_source(str(source_spec))
    try:
        tracker = create_face_tracker(face_model)
    except BaseException:
        source.close()
        raise
    settings = AlarmSettings(model_sha256=model.sha256)
    capture = CaptureThread(source, realtime=realtime)
    tally = FrameTally()
    counts, timings = tally.counts, tally.timings
    conditions: collections.Counter[str] = collections.Counter()
    alarms = {"pain": 0, "technical": 0}
    first_t_s: float | None = None
    last_t_s = 0.0
    # A silent live source is measured from the last frame's arrival (or from the start):
    # SIGNAL_LOST must come lost_after_s after that frame, whatever the poll timeout.
    last_frame_mono_s = time.monotonic()
    end_reason = "end of media"
    wall_start = time.perf_counter()
    last_status_s = -math.inf

    def count_events(state: AlarmState) -> None:
        for event in state.new_events:
            if event.kind in _PAIN_ALARM_KINDS:
                alarms["pain"] += 1
            elif event.kind == AlarmEventKind.TECHNICAL_ONSET.value:
                alarms["technical"] += 1

    writer = open_session(
        out_dir,
        pseudonym,
        model,
        settings,
        source=str(source_spec),
        face_detector=getattr(tracker, "name", type(tracker).__name__),
    )
    engine = Engine(model, tracker, settings, session_writer=writer)
    try:
        capture.start()
        while True:
            wait_start = time.perf_counter()
            frame = capture.get_latest(timeout_s=_LIVE_POLL_S)
            if frame is None:
                if capture.exhausted:
                    break
                if source.is_live:
                    silent_s = time.monotonic() - last_frame_mono_s
                    count_events(engine.tick(last_t_s + silent_s))
                continue
            last_frame_mono_s = time.monotonic()
            if first_t_s is None:
                first_t_s = frame.t_s
            if max_seconds is not None and frame.t_s - first_t_s >= max_seconds:
                end_reason = f"max_seconds ({max_seconds:g} s)"
                break
            result = engine.process(frame, decode_ms=ms_since(wait_start))
            last_t_s = frame.t_s
            count_events(result.alarm_state)
            tally.add(result)
            if result.technical_condition is not None:
                conditions[result.technical_condition] += 1
            if on_result is not None:
                on_result(result)
            now_s = time.monotonic()
            if progress and on_status is not None and now_s - last_status_s >= _STATUS_INTERVAL_S:
                last_status_s = now_s
                on_status(format_status(result, source.total_frames))
        if capture.error is not None:
            end_reason = f"capture error: {capture.error}"
            log.error("capture from %s failed: %s", source_spec, capture.error)
    except KeyboardInterrupt:
        end_reason = "interrupted"
        log.info("monitoring interrupted by the operator")
    finally:
        capture.stop()
        engine.close()
        writer.close(end_reason)

    media_s = 0.0 if first_t_s is None else last_t_s - first_t_s
    return MonitorSummary(
        session_folder=writer.folder,
        source=str(source_spec),
        end_reason=end_reason,
        frames=counts["frames"],
        frames_with_face=counts["frames_with_face"],
        frames_scored=counts["frames_scored"],
        technical_condition_frames=dict(conditions),
        pain_alarms_raised=alarms["pain"],
        technical_alarms_raised=alarms["technical"],
        media_seconds=media_s,
        wall_seconds=time.perf_counter() - wall_start,
        latency_ms={
            key: StageLatency(_percentile(values, 50), _percentile(values, 95))
            for key, values in timings.items()
        },
        model_is_demo=model.is_demo,
        providers=tuple(model.providers),
        frames_out_of_domain=counts["frames_out_of_domain"],
        class_frames=dict(tally.class_frames),
        domain_gate=getattr(model, "domain_gate", None) is not None,
    )


def run_monitor_cli(
    source: str,
    model: str | Path,
    out: str | Path,
    max_seconds: float | None = None,
    realtime: bool = False,
    face_model: str | Path | None = None,
    pseudonym: str = "anonymous",
    load_model: Callable[[str | Path], Any] = load_onnx_model,
) -> int:
    """``painmon monitor``: live status line on stdout, then the summary; returns 0.

    On a terminal the status line is redrawn in place; into a file or pipe it is written
    as a whole line at most every :data:`painmon.core.util.progress.LOG_INTERVAL_S` seconds.
    Bad sources or models raise (SourceError, ModelLoadError...) for the CLI to report.
    """
    terminal = sys.stdout.isatty()
    last_line_s = -math.inf

    def status(line: str) -> None:
        nonlocal last_line_s
        if terminal:
            sys.stdout.write("\r" + line)
        else:
            now_s = time.monotonic()
            if now_s - last_line_s < LOG_INTERVAL_S:
                return
            last_line_s = now_s
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    summary = run_monitor(
        source,
        model,
        out,
        max_seconds=max_seconds,
        realtime=realtime,
        face_model=face_model,
        pseudonym=pseudonym,
        progress=True,
        on_status=status,
        load_model=load_model,
    )
    sys.stdout.write(("\n" if terminal else "") + summary.format() + "\n")
    sys.stdout.flush()
    return 0
