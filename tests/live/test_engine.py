"""The engine loop and the headless monitor on real clips and synthetic no-face frames."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
import time

import numpy as np
import pytest

from painmon.core.live import engine as engine_module
from painmon.core.live import monitor as monitor_module
from painmon.core.live.alarms import (
    AlarmEventKind,
    AlarmPriority,
    AlarmSettings,
    TechnicalCondition,
)
from painmon.core.live.capture import Frame, FrameSource, RawFrame, SourceError, open_source
from painmon.core.live.engine import STAGES, Engine, MonitorEngine
from painmon.core.live.face import FaceObservation, create_face_tracker
from painmon.core.live.monitor import run_monitor, run_monitor_cli
from painmon.core.live.preview import FaceOnlyEngine
from painmon.core.live.scoring import ModelLoadError, OnnxPainModel
from painmon.core.live.session import SESSION_COLUMNS, SessionWriter
from painmon.core.research.torch_scoring import load_pain_model


@pytest.fixture(scope="module")
def model_path(untrained_dacnn_onnx):
    """A freshly initialised DA-CNN exported to ONNX (shared by the session)."""
    return untrained_dacnn_onnx


def _read_rows(folder):
    with (folder / "session.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def test_single_face_clip_every_frame_scored(shared_file, face_model_path, model_path, tmp_path):
    results = []
    summary = run_monitor(
        str(shared_file("media/single_face.mp4")),
        model_path,
        tmp_path,
        face_model=face_model_path,
        pseudonym="bed-7",
        progress=False,
        on_result=results.append,
    )
    assert summary.end_reason == "end of media"
    assert summary.frames == len(results) > 0
    # Pull mode: every frame of the file, in order, none dropped.
    assert [r.frame.index for r in results] == list(range(len(results)))
    assert summary.frames_with_face >= 0.95 * summary.frames
    scored = [r for r in results if r.output_known]
    assert len(scored) == summary.frames_scored > 0
    for result in scored:
        assert result.probs is not None
        assert result.probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert result.gradcam is not None and result.gradcam.shape == (8, 8)
        assert result.technical_condition is None
        assert set(STAGES) <= set(result.timings_ms)
        assert result.timings_ms["gradcam"] == 0.0  # fused into the dacnn call
        assert result.timings_ms["total"] >= result.timings_ms["dacnn"] > 0
    folder = tmp_path / summary.session_folder
    header, rows = _read_rows(folder)
    assert tuple(header) == SESSION_COLUMNS
    assert len(rows) == summary.frames
    written = sum(1 for row in rows if row[header.index("p0")] != "")
    assert written == summary.frames_scored
    meta = json.loads((folder / "session.json").read_text())
    assert meta["status"] == "ended" and meta["frames_written"] == len(rows)


def test_no_face_clip_writes_no_probabilities(shared_file, face_model_path, model_path, tmp_path):
    summary = run_monitor(
        str(shared_file("media/no_face.mp4")),
        model_path,
        tmp_path,
        max_seconds=3.0,
        face_model=face_model_path,
        progress=False,
    )
    assert summary.end_reason.startswith("max_seconds")
    assert summary.frames_scored == 0
    header, rows = _read_rows(tmp_path / summary.session_folder)
    assert 0 < len(rows) == summary.frames
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert row[header.index("face_found")] == "0"
        for column in ("p0", "p1", "p2", "p3", "p4", "pain_class", "pain_level", "confidence"):
            assert cells[column] == "", column
        assert cells["technical_condition"] == "NO_FACE"


def test_blank_frames_raise_no_face_after_delay_and_never_pain(model_path):
    engine = Engine(OnnxPainModel(model_path), create_face_tracker("haar"))
    rng = np.random.default_rng(0)
    results = []
    try:
        for index in range(71):  # 0..7 s at 10 fps
            # Dim blotches: no face, and every frame a new picture (so not FROZEN; fine pixel
            # noise alone would be codec/sensor noise on one still picture).
            blotches = rng.integers(0, 30, size=(12, 16, 3), dtype=np.uint8)
            rgb = blotches.repeat(10, axis=0).repeat(10, axis=1)
            frame = Frame(index, index * 0.1, rgb, float(index), "blank")
            results.append(engine.process(frame))
    finally:
        engine.close()
    for result in results:
        assert result.probs is None and result.pain_level is None
        assert result.smoothed.unknown and result.smoothed.pain_level is None
        assert result.technical_condition == TechnicalCondition.NO_FACE.value
        assert result.alarm_state.pain_priority == AlarmPriority.NONE.value
        assert result.alarm_state.output_unknown
    raised = [r for r in results if "NO_FACE" in r.alarm_state.technical_conditions]
    assert raised, "NO_FACE technical alarm never raised"
    assert all(r.frame.t_s > 5.0 for r in raised)
    assert raised[-1] is results[-1]


def test_identical_frames_become_frozen(model_path):
    engine = Engine(OnnxPainModel(model_path), create_face_tracker("haar"))
    rgb = np.full((120, 160, 3), 40, dtype=np.uint8)
    try:
        conditions = [
            engine.process(Frame(i, i * 0.1, rgb, float(i), "still")).technical_condition
            for i in range(31)
        ]
    finally:
        engine.close()
    assert conditions[0] == "NO_FACE"
    assert conditions[-1] == "FROZEN"


def test_missing_source_and_corrupt_model_raise_clear_errors(model_path, tmp_path):
    with pytest.raises(SourceError, match="no file or folder"):
        run_monitor(str(tmp_path / "absent.mp4"), model_path, tmp_path / "out", progress=False)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(model_path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"corrupt|not a loadable|cannot be verified"):
        run_monitor("synthetic", corrupt, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_returns_zero_and_writes_session(
    shared_file, face_model_path, model_path, tmp_path, capsys
):
    code = run_monitor_cli(
        str(shared_file("media/single_face.mp4")),
        model_path,
        tmp_path,
        max_seconds=1.0,
        face_model=face_model_path,
        pseudonym="bed-3",
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "frames:" in out and "session folder:" in out
    # Not a terminal: whole status lines (the first at once), no carriage returns; a file
    # source says how far it got.
    assert "\r" not in out
    first = out.splitlines()[0]
    assert re.match(r"\s*\d+\.\d %  t\s+\d", first), first
    folders = list((tmp_path / "bed-3").iterdir())
    assert len(folders) == 1
    _header, rows = _read_rows(folders[0])
    assert len(rows) > 0
    assert (folders[0] / "alarms.csv").is_file()


def test_cli_redraws_one_status_line_on_a_terminal(
    shared_file, face_model_path, model_path, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    run_monitor_cli(str(shared_file("media/single_face.mp4")), model_path, tmp_path,
                    max_seconds=0.5, face_model=face_model_path)  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("\r") and "%  t" in out and "\nsession folder:" in out


class _StallingCamera(FrameSource):
    """A live source that delivers a few frames, goes silent for ``stall_s``, then ends."""

    is_live = True

    def __init__(self, frames: int, stall_s: float) -> None:
        super().__init__("camera:stalling")
        self.frames = frames
        self.stall_s = stall_s
        self.rng = np.random.default_rng(3)

    def open(self) -> None:
        self.sent = 0

    def read(self) -> RawFrame | None:
        if self.sent < self.frames:
            self.sent += 1
            time.sleep(0.03)
            return RawFrame(self.rng.integers(0, 30, size=(120, 160, 3), dtype=np.uint8))
        if self.sent == self.frames:
            self.sent += 1
            time.sleep(self.stall_s)  # the camera hangs without an error
        return None


def test_silent_live_source_raises_signal_lost_headless(model_path, tmp_path, monkeypatch):
    camera = _StallingCamera(frames=3, stall_s=3.0)

    def fake_open_source(spec):
        camera.open()
        return camera

    monkeypatch.setattr(monitor_module, "open_source", fake_open_source)
    summary = run_monitor("camera:0", model_path, tmp_path, progress=False)
    assert summary.frames == 3
    assert summary.technical_alarms_raised >= 1
    with (tmp_path / summary.session_folder / "alarms.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lost = [row for row in rows if "SIGNAL_LOST" in ",".join(row.values())]
    assert lost, f"no SIGNAL_LOST event in {rows}"


def test_change_settings_applies_alarm_and_smoothing_and_logs_to_the_session(model_path, tmp_path):
    model = OnnxPainModel(model_path)
    old = AlarmSettings(model_sha256=model.sha256)
    writer = SessionWriter(
        tmp_path / "session",
        "bed-2",
        model_id="dacnn",
        model_sha256=model.sha256,
        settings=old,
        source="test",
        face_detector="haar",
    )
    engine = Engine(model, create_face_tracker("haar"), old, 3.0, session_writer=writer)
    new = dataclasses.replace(old, medium_threshold=2.0, alarm_delay_s=4.0)
    try:
        with pytest.raises(ValueError, match="smoothing time constant"):
            engine.change_settings(1.0, new, smoothing_time_constant_s=0.0)
        assert engine.alarms.settings == old  # a rejected change changes nothing
        assert engine.smoother.time_constant_s == 3.0
        state = engine.change_settings(1.5, new, smoothing_time_constant_s=6.0)
        assert engine.alarms.settings == new
        assert engine.smoother.time_constant_s == 6.0
        assert [e.kind for e in state.new_events] == ["settings_change"]
        assert "medium_threshold 2.5 -> 2.0" in state.new_events[0].message
        engine.change_settings(2.0, old)  # tau left out: unchanged
        assert engine.smoother.time_constant_s == 6.0
    finally:
        engine.close()
        writer.close("test over")
    with (tmp_path / "session" / "alarms.csv").open(newline="") as handle:
        kinds = [row["kind"] for row in csv.DictReader(handle)]
    assert kinds.count("settings_change") == 2
    meta = json.loads((tmp_path / "session" / "session.json").read_text())
    assert meta["thresholds"]["medium_threshold"] == 2.5  # the last change is recorded


def test_live_crops_follow_the_training_crop_metadata_and_run_folders_work(
    shared_file, face_model_path, model_path, tmp_path, monkeypatch, caplog
):
    """Crops are framed as the model's training crops were; a run folder scores through torch."""
    seen = []
    real_crop = engine_module.crop_for_model

    def spy(rgb, box, landmarks, eye_line, spec, size_px):
        made = real_crop(rgb, box, landmarks, eye_line, spec, size_px)
        seen.append((spec, eye_line, made))
        return made

    monkeypatch.setattr(engine_module, "crop_for_model", spy)
    model = OnnxPainModel(model_path, prefer="cpu")
    source = open_source(str(shared_file("media/single_face.mp4")))
    raw = source.read()
    source.close()
    frame = Frame(0, 0.0, raw.rgb, time.monotonic(), "test")
    for crop_meta in (
        {"margin": 0.3, "eye_alignment": True, "detector": "haar"},
        {"framing": "stable-landmarks", "detector": "mediapipe-landmarker"},
    ):
        model.metadata["crop"] = crop_meta
        engine = Engine(model, create_face_tracker(face_model_path))
        try:
            with caplog.at_level("WARNING"):
                engine.process(frame)
        finally:
            engine.close()
    (box_spec, box_eyes, box_crop), (stable_spec, _, stable_crop) = seen
    assert box_spec.margin == 0.3 and box_spec.eye_alignment and box_eyes is not None
    assert box_crop.framing == "box" and not box_crop.fell_back
    assert stable_crop.framing == "stable-landmarks" and not stable_crop.fell_back
    assert stable_spec.framing == "stable-landmarks"
    assert any("trained on haar face crops" in r.getMessage() for r in caplog.records)

    run_dir = model_path.parent  # holds best.safetensors + best.json
    summary = run_monitor(str(shared_file("media/single_face.mp4")), run_dir, tmp_path / "out",
                          max_seconds=0.5, face_model=face_model_path, progress=False,
                          load_model=load_pain_model)  # fmt: skip
    assert summary.frames_scored >= 10


class _NoFaceTracker:
    """A face tracker that never finds a face (no MediaPipe needed)."""

    name = "no-face stub"

    def __init__(self) -> None:
        self.closed = False

    def observe(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        return FaceObservation(t_s, False, None, 0, self.name)

    def close(self) -> None:
        self.closed = True


class _UnusedModel:
    """Enough of a pain model to build an Engine that never gets a face to score."""

    input_size = (3, 64, 64)
    metadata: dict = {}  # noqa: RUF012 - read only

    def predict(self, crops_uint8: np.ndarray):
        raise AssertionError("no face, so nothing to score")


@pytest.mark.parametrize("make", [lambda t: Engine(_UnusedModel(), t), FaceOnlyEngine])
def test_both_engines_are_monitor_engines(make):
    """The window and its worker drive either engine through MonitorEngine alone."""
    tracker = _NoFaceTracker()
    engine = make(tracker)
    assert isinstance(engine, MonitorEngine)
    assert engine.face_tracker is tracker and engine.session_writer is None
    frame = Frame(0, 0.0, np.zeros((120, 160, 3), np.uint8), time.monotonic(), "test")
    result = engine.process(frame, decode_ms=1.0)
    assert result.technical_condition == TechnicalCondition.NO_FACE and not result.output_known
    assert engine.tick(0.5).t_s == 0.5
    state = engine.change_settings(1.0, AlarmSettings(medium_threshold=2.0), 5.0)
    assert [e.kind for e in state.new_events] == [AlarmEventKind.SETTINGS_CHANGE]
    assert engine.acknowledge(1.5).new_events[0].kind == AlarmEventKind.ACKNOWLEDGE
    assert engine.audio_pause(2.0).audio_paused_remaining_s == pytest.approx(120.0)
    try:
        engine.calibrate_neutral()
    except ValueError as exc:  # the Engine needs good faces first; the window reports it
        assert "neutral" in str(exc)
    engine.close()
    assert tracker.closed
    assert not isinstance(object(), MonitorEngine)
