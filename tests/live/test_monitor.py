"""The headless runner's pieces: the run summary, one way to open a session, model loading."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from painmon.core.live.alarms import AlarmSettings
from painmon.core.live.monitor import (
    MonitorSummary,
    StageLatency,
    format_status,
    load_onnx_model,
    open_session,
)
from painmon.core.live.scoring import ModelLoadError, OnnxPainModel, PainScorer
from painmon.core.live.session import SESSION_CSV


def _summary(**overrides) -> MonitorSummary:
    fields = dict(
        session_folder=Path("/tmp/s"),
        source="video.mp4",
        end_reason="end of media",
        frames=10,
        frames_with_face=8,
        frames_scored=6,
        technical_condition_frames={"NO_FACE": 2},
        pain_alarm_episodes=1,
        pain_escalations=0,
        technical_alarms_raised=0,
        media_seconds=0.4,
        wall_seconds=2.0,
        latency_ms={"total": StageLatency(10.25, 16.5), "dacnn": StageLatency(None, None)},
        model_is_demo=True,
        providers=("CPUExecutionProvider",),
        frames_out_of_domain=1,
        class_frames={0: 4, 1: 2},
    )
    return MonitorSummary(**{**fields, **overrides})


def test_summary_formats_every_line_and_is_read_only():
    summary = _summary()
    assert summary.fps == 5.0
    text = summary.format().splitlines()
    assert text[0] == "session folder: /tmp/s"
    assert text[1] == "ended: end of media after 0.40 s of media (2.00 s wall, 5.0 frames/s)"
    assert text[2] == "frames: 10, with a face: 8, scored: 6, out of domain: 1"
    assert text[3] == "scored frames by pain class: 0: 4, 1: 2"
    assert text[4] == "technical conditions (frames): NO_FACE 2"
    assert text[5] == "pain alarm episodes: 1; technical alarms: 0"
    assert text[6] == "latency per frame: median 10.2 ms, p95 16.5 ms"
    assert "no domain gate" in _summary(domain_gate=False).format()
    with pytest.raises(TypeError):
        summary.technical_condition_frames["FROZEN"] = 1  # type: ignore[index]
    no_frames = _summary(
        frames=0, frames_with_face=0, frames_scored=0, technical_condition_frames={},
        latency_ms={"total": StageLatency(None, None)}, wall_seconds=0.0,
        frames_out_of_domain=0, class_frames={},
    )  # fmt: skip
    assert no_frames.fps == 0.0
    assert "technical conditions (frames): none" in no_frames.format()
    assert "latency" not in no_frames.format()


def test_summary_refuses_counts_out_of_order():
    with pytest.raises(ValueError, match="out of order"):
        _summary(frames_scored=9)
    with pytest.raises(ValueError, match="out of order"):
        _summary(frames_with_face=11)
    with pytest.raises(ValueError, match="out-of-domain"):
        _summary(frames_out_of_domain=3)
    with pytest.raises(ValueError, match="class_frames"):
        _summary(class_frames={0: 1})
    with pytest.raises(ValueError, match="exit_code"):
        _summary(exit_code=1)
    with pytest.raises(ValueError, match="escalations"):
        _summary(pain_alarm_episodes=0, pain_escalations=1)


def test_summary_counts_an_escalation_apart_from_its_episode():
    one = _summary(pain_alarm_episodes=1, pain_escalations=1, technical_alarms_raised=2)
    assert "pain alarm episodes: 1 (1 escalation to HIGH); technical alarms: 2" in one.format()
    two = _summary(pain_alarm_episodes=3, pain_escalations=2).format()
    assert "pain alarm episodes: 3 (2 escalations to HIGH)" in two


def test_status_line_gives_the_band_of_the_level_shown_and_the_arg_max_apart():
    import time

    import numpy as np

    from painmon.core.live.alarms import AlarmManager
    from painmon.core.live.capture import Frame
    from painmon.core.live.engine import STAGES, EngineResult
    from painmon.core.live.face import FaceObservation
    from painmon.core.live.face_detect import FaceBox
    from painmon.core.live.quality import QualityReport
    from painmon.core.live.smoothing import SmoothedScore

    probs = (0.3, 0.05, 0.05, 0.5, 0.1)  # expected level 1.46 (shown 1.5), arg-max 3
    smoothed = SmoothedScore(2.0, probs, 3, 1.46, 0.5, False, "ok")
    result = EngineResult(
        frame=Frame(4, 2.0, np.zeros((8, 8, 3), np.uint8), time.monotonic(), "t"),
        observation=FaceObservation(2.0, True, FaceBox(1.0, 1.0, 4.0, 4.0, 0.9), 1, "t"),
        quality=QualityReport(True, 1.0, ()),
        probs=np.array(probs),
        gradcam=None,
        pain_class=3,
        pain_level=1.46,
        smoothed=smoothed,
        au_pspi=None,
        alarm_state=AlarmManager().update(2.0, 1.46),
        technical_condition=None,
        timings_ms=dict.fromkeys(STAGES, 1.0),
    )
    assert "level 1.5 band 2 (most likely class 3 p 0.50)" in format_status(result)


def test_a_faulted_summary_says_so_in_its_last_line():
    summary = _summary(end_reason="model error: the pain model failed on frame 3", exit_code=3)
    assert summary.faulted
    lines = summary.format().splitlines()
    assert lines[1].startswith("ended: model error: the pain model failed on frame 3 after")
    assert lines[-1].startswith("exit status 3: the run ended on a fault")
    assert not _summary().faulted


def test_open_session_records_the_model_and_settings(untrained_dacnn_onnx, tmp_path):
    model = OnnxPainModel(untrained_dacnn_onnx)
    assert isinstance(model, PainScorer)
    settings = AlarmSettings(model_sha256=model.sha256)
    stamp = datetime(2026, 11, 27, 8, 30, 5, tzinfo=UTC)
    writer = open_session(tmp_path, "bed-4", model, settings, "camera:0", "haar", utc_now=stamp)
    writer.close("end of media")
    assert writer.folder == tmp_path / "bed-4" / "20261127-083005Z"
    meta = json.loads((writer.folder / "session.json").read_text())
    assert meta["model_sha256"] == model.sha256
    assert meta["model_id"] == model.metadata["architecture"]
    assert meta["face_detector"] == "haar" and meta["source"] == "camera:0"
    with (writer.folder / SESSION_CSV).open(newline="") as handle:
        assert list(csv.reader(handle))[1:] == []
    # A second session in the same second gets its own folder.
    again = open_session(tmp_path, "bed-4", model, settings, "camera:0", "haar", utc_now=stamp)
    again.close("end of media")
    assert again.folder != writer.folder


def test_the_bedside_loader_refuses_a_research_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"weights")
    with pytest.raises(ModelLoadError, match="painmon export"):
        load_onnx_model(run)
