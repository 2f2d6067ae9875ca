"""PipelinedEngine: the serial engine's results, in order, with its face stage on a worker."""

from __future__ import annotations

import csv
import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from painmon.core.live.alarms import AlarmSettings, TechnicalCondition
from painmon.core.live.capture import Frame
from painmon.core.live.engine import Engine, EngineResult, ModelRunError
from painmon.core.live.face import FaceObservation, create_face_tracker
from painmon.core.live.pipelined import PipelinedEngine, take_frame
from painmon.core.live.scoring import OnnxPainModel
from painmon.core.live.session import SessionWriter
from painmon.core.store.catalog import shipped_demo_model_path
from painmon.core.synth.stream import SyntheticPatientStream
from painmon.core.tools.bench_pipeline import pipeline_vs_face_only

FPS = 10.0
# Short delays so that pain and technical alarms both happen within a few seconds.
SETTINGS = AlarmSettings(
    alarm_delay_s=0.5, medium_threshold=0.5, high_threshold=1.0, hysteresis=0.2
)


def _patient_then_blank(patient_frames: int, blank_frames: int) -> list[Frame]:
    """The synthetic patient (a pain episode), then dim blotches with no face (NO_FACE)."""
    stream = SyntheticPatientStream(seed=3, fps=FPS, seconds=patient_frames / FPS)
    frames = [Frame(i, item.t_s, item.rgb, float(i), "synthetic") for i, item in enumerate(stream)]
    rng = np.random.default_rng(0)
    for i in range(len(frames), len(frames) + blank_frames):
        blotches = rng.integers(0, 30, size=(36, 64, 3), dtype=np.uint8)
        frames.append(Frame(i, i / FPS, blotches.repeat(10, 0).repeat(10, 1), float(i), "blank"))
    return frames


def _fixed_utc() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


def _engine(tracker: str | None, folder=None) -> Engine:
    model = OnnxPainModel(shipped_demo_model_path(), intra_op_num_threads=1)
    engine = Engine(model, create_face_tracker(tracker), SETTINGS, 1.0, utc_clock=_fixed_utc)
    if folder is not None:
        engine.session_writer = SessionWriter(
            folder, "bed-1", model_id="demo", model_sha256=model.sha256, settings=SETTINGS,
            source="synthetic", face_detector="test",
        )  # fmt: skip
    return engine


def _run_serial(frames: list[Frame], tracker: str | None, folder=None) -> list[EngineResult]:
    engine = _engine(tracker, folder)
    try:
        return [engine.process(frame) for frame in frames]
    finally:
        if engine.session_writer is not None:
            engine.session_writer.close("end of media")
        engine.close()


def _run_pipelined(frames: list[Frame], tracker: str | None, folder=None) -> list[EngineResult]:
    results: list[EngineResult] = []
    with PipelinedEngine(_engine(tracker, folder)) as pipeline:
        try:
            for frame in frames:
                result = pipeline.submit(frame)
                if result is not None:
                    results.append(result)
            last = pipeline.flush()
            assert last is not None and not pipeline.pending
            results.append(last)
        finally:
            if pipeline.session_writer is not None:
                pipeline.session_writer.close("end of media")
    return results


def _outcome(result: EngineResult) -> tuple:
    """Everything a result says, timings aside."""
    alarm = result.alarm_state
    return (
        result.frame.index,
        None if result.probs is None else result.probs.tobytes(),
        None if result.gradcam is None else result.gradcam.tobytes(),
        result.pain_class,
        result.pain_level,
        result.smoothed.pain_level,
        result.smoothed.confidence,
        result.au_pspi,
        result.domain_score,
        result.out_of_domain,
        result.technical_condition,
        result.observation.box,
        alarm.pain_priority,
        tuple(alarm.technical_conditions),
        tuple((e.kind, e.t_s) for e in alarm.new_events),
    )


def _session_rows(folder) -> list[list[str]]:
    (session,) = folder.glob("**/session.csv")
    with session.open(newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.slow
@pytest.mark.parametrize("tracker", ["haar", None], ids=["haar", "mediapipe"])
def test_pipelined_results_and_session_equal_the_serial_engine(tracker, tmp_path):
    # 6 s of the patient, then 7 s without a face (NO_FACE is raised after 5 s).
    frames = _patient_then_blank(60, 70)
    serial = _run_serial(frames, tracker, tmp_path / "serial")
    pipelined = _run_pipelined(frames, tracker, tmp_path / "pipelined")
    assert [r.frame.index for r in pipelined] == list(range(len(frames)))  # every frame, in order
    assert [_outcome(r) for r in pipelined] == [_outcome(r) for r in serial]
    assert _session_rows(tmp_path / "pipelined") == _session_rows(tmp_path / "serial")
    # The run is not trivial: faces were found and scored, and alarms fired.
    assert any(r.network_ran for r in serial)
    assert any(r.alarm_state.new_events for r in serial)
    assert serial[-1].technical_condition == TechnicalCondition.NO_FACE.value
    assert "NO_FACE" in serial[-1].alarm_state.technical_conditions


@pytest.mark.slow
def test_operator_actions_between_results_act_as_with_the_serial_engine(tmp_path):
    frames = _patient_then_blank(30, 10)
    engine = _engine("haar")
    serial = []
    for frame in frames:
        serial.append(engine.process(frame))
        if frame.index == 12:
            engine.acknowledge(engine.media_now_s)
    engine.close()
    pipelined = []
    with PipelinedEngine(_engine("haar")) as pipeline:
        for frame in frames:
            result = pipeline.submit(frame)
            if result is not None:
                pipelined.append(result)
                if result.frame.index == 12:
                    assert pipeline.media_now_s == result.frame.t_s
                    pipeline.acknowledge(pipeline.media_now_s)
        pipelined.append(pipeline.flush())
        # The watchdog belongs to the face stage: a tick waits for an empty pipeline.
        pipeline.submit(Frame(len(frames), len(frames) / FPS, frames[0].rgb, 0.0, "x"))
        with pytest.raises(RuntimeError, match="flush"):
            pipeline.tick(100.0)
        pipeline.flush()
        assert pipeline.tick(100.0).t_s == 100.0
    assert [_outcome(r) for r in pipelined] == [_outcome(r) for r in serial]


class _ScriptedTracker:
    """No face on every frame; raises on the frame it is told to, and says which thread ran it."""

    name = "scripted"

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.threads: set[str] = set()
        self.closed = False

    def observe(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and round(t_s * FPS) == self.fail_at:
            raise RuntimeError("landmarker crashed")
        return FaceObservation(t_s, False, None, 0, self.name)

    def close(self) -> None:
        self.closed = True


class _FailingModel:
    input_size = (3, 64, 64)
    metadata: dict = {}  # noqa: RUF012 - read only

    def predict(self, crops_uint8: np.ndarray):
        raise ValueError("bad output")


def _blank(i: int) -> Frame:
    rng = np.random.default_rng(i)
    return Frame(i, i / FPS, rng.integers(0, 30, (120, 160, 3), dtype=np.uint8), float(i), "b")


def _pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("painmon-face-stage")]


def test_face_stage_runs_on_one_worker_and_close_joins_it():
    tracker = _ScriptedTracker()
    pipeline = PipelinedEngine(Engine(_FailingModel(), tracker))
    assert pipeline.submit(_blank(0)) is None
    results = [pipeline.submit(_blank(i)) for i in range(1, 5)]
    assert [r.frame.index for r in results] == [0, 1, 2, 3]
    assert pipeline.pending
    pipeline.close()  # drops the pending frame, joins the worker, closes the tracker
    assert tracker.closed and not _pipeline_threads()
    assert len(tracker.threads) == 1 and tracker.threads != {threading.current_thread().name}
    with pytest.raises(RuntimeError, match="closed"):
        pipeline.submit(_blank(5))
    pipeline.close()  # twice is fine


class _Capture:
    """Frames handed out in order; records how long each call was allowed to wait."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = list(frames)
        self.waits: list[float | None] = []

    def get_latest(self, timeout_s: float | None = 0.0) -> Frame | None:
        self.waits.append(timeout_s)
        return self.frames.pop(0) if self.frames else None


def test_take_frame_overlaps_a_waiting_frame_and_finishes_a_pending_one_at_once():
    capture = _Capture([_blank(0), _blank(1)])
    with PipelinedEngine(Engine(_FailingModel(), _ScriptedTracker())) as pipeline:
        frame, done = take_frame(capture, pipeline, 0.5)  # nothing pending: it may wait
        assert frame is not None and frame.index == 0 and done is None
        assert capture.waits == [0.5]
        assert pipeline.submit(frame) is None
        frame, done = take_frame(capture, pipeline, 0.5)  # pending, and a frame is there
        assert frame is not None and frame.index == 1 and done is None
        assert capture.waits[-1] == 0.0
        result = pipeline.submit(frame)
        assert result is not None and result.frame.index == 0
        frame, done = take_frame(capture, pipeline, 0.5)  # pending, none there: finish it
        assert frame is None and done is not None and done.frame.index == 1
        assert capture.waits[-1] == 0.0 and not pipeline.pending
        assert take_frame(capture, pipeline, 0.5) == (None, None)
        assert capture.waits[-1] == 0.5
    serial = _Capture([_blank(7)])
    frame, done = take_frame(serial, None, 0.25)
    assert frame is not None and frame.index == 7 and done is None and serial.waits == [0.25]


def test_a_face_stage_exception_surfaces_with_that_frames_result():
    tracker = _ScriptedTracker(fail_at=3)
    with PipelinedEngine(Engine(_FailingModel(), tracker)) as pipeline:
        results = [pipeline.submit(_blank(i)) for i in range(4)]  # frame 3 is in flight
        assert [r.frame.index for r in results[1:]] == [0, 1, 2]
        with pytest.raises(RuntimeError, match="landmarker crashed"):
            pipeline.submit(_blank(4))  # would return frame 3's result
        assert not pipeline.pending  # frame 4 was dropped with the failure
    assert tracker.closed and not _pipeline_threads()


def test_a_scoring_stage_exception_surfaces_and_the_worker_still_joins(shared_file):
    """A model fault on the caller's thread while the worker holds the next frame."""
    tracker = create_face_tracker("haar")
    rgb = _patient_then_blank(1, 0)[0].rgb
    pipeline = PipelinedEngine(Engine(_FailingModel(), tracker))
    try:
        pipeline.submit(Frame(0, 0.0, rgb, 0.0, "synthetic"))
        with pytest.raises(ModelRunError, match="failed on frame 0"):
            pipeline.submit(Frame(1, 0.1, rgb, 0.1, "synthetic"))
    finally:
        pipeline.close()
    assert not _pipeline_threads()


@pytest.mark.slow
def test_bench_reports_face_only_and_pipeline_fps(shared_file, tmp_path):
    report = pipeline_vs_face_only(
        shared_file("media/single_face.mp4"), shipped_demo_model_path(), None, tmp_path,
        max_frames=12,
    )  # fmt: skip
    assert report["face_only_fps"] > 0 and report["pipeline_fps"] > 0 and report["serial_fps"] > 0
    assert report["pipeline_vs_face_only"] == pytest.approx(
        report["pipeline_fps"] / report["face_only_fps"]
    )
    for mode in ("face", "serial", "pipelined"):
        assert report["pipeline_passes"][mode]["frames"] == 12
        assert report["pipeline_passes"][mode]["latency_ms"]["n"] == 12
    assert report["pipeline_frame_interval_ms"] == pytest.approx(1000.0 / report["pipeline_fps"])
    assert not _pipeline_threads()


@pytest.mark.slow
def test_monitor_pipelined_equals_serial(shared_file, tmp_path):
    from painmon.core.live.monitor import run_monitor

    outcomes = {}
    for pipelined in (False, True):
        results: list[EngineResult] = []
        summary = run_monitor(
            str(shared_file("media/single_face.mp4")), shipped_demo_model_path(),
            tmp_path / str(pipelined), max_seconds=1.0, progress=False,
            on_result=results.append, make_face_tracker=lambda _m: create_face_tracker("haar"),
            pipelined=pipelined,
        )  # fmt: skip
        assert summary.end_reason == "max_seconds (1 s)" and summary.exit_code == 0
        assert summary.frames == len(results) > 20
        rows = _session_rows(summary.session_folder)
        utc = rows[0].index("utc_time")
        outcomes[pipelined] = (
            [_outcome(r) for r in results],
            [row[:utc] + row[utc + 1 :] for row in rows],
        )
    assert outcomes[True] == outcomes[False]
    assert not _pipeline_threads()
