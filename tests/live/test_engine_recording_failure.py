"""The engine when its session files cannot be written (a full disk): recording stops,
monitoring does not. ``painmon monitor`` still ends on it (test_monitor_endings.py)."""

from __future__ import annotations

import errno
from pathlib import Path

from fakes import HIGH, SHA, FaceEverywhere, FakeModel, noise_frame

from painmon.core.live.alarms import AlarmSettings
from painmon.core.live.engine import Engine
from painmon.core.live.session import SessionWriteError, SessionWriter, read_session_csv


def _writer(folder: Path) -> SessionWriter:
    settings = AlarmSettings(model_sha256=SHA)
    return SessionWriter(folder, "bed-1", "fake", SHA, settings, "fake.mp4", "fake-face")


def test_a_full_disk_detaches_the_writer_and_raises_a_technical_alarm(tmp_path, monkeypatch):
    engine = Engine(FakeModel(HIGH), FaceEverywhere(), AlarmSettings(model_sha256=SHA))
    first = _writer(tmp_path / "first")
    engine.session_writer = first
    real = SessionWriter.write_row

    def write_row(self, row):
        if row.frame >= 20:
            raise self._fail(OSError(errno.ENOSPC, "No space left on device"))
        real(self, row)

    monkeypatch.setattr(SessionWriter, "write_row", write_row)
    results = [engine.process(noise_frame(i)) for i in range(21)]  # frame 20 fails: no raise
    assert isinstance(engine.recording_error, SessionWriteError)
    assert "Recording has stopped" in str(engine.recording_error)
    assert engine.session_writer is None
    # Its result came back, the technical alarm raised in it; the pain alarms go on.
    assert results[-1].frame.index == 20
    assert "RECORDING_FAILED" in results[-1].alarm_state.system_conditions
    later = [engine.process(noise_frame(i)) for i in range(21, 120)]
    events = [e for r in results + later for e in r.alarm_state.new_events]
    onsets = [e for e in events if e.kind == "technical_onset"]
    assert len(onsets) == 1 and "RECORDING_FAILED" in onsets[0].message
    assert onsets[0] in results[-1].alarm_state.new_events
    assert "RECORDING_FAILED" in later[-1].alarm_state.system_conditions
    assert later[-1].alarm_state.pain_priority == "high"  # raised at 10 s, after the failure
    assert later[-1].output_known
    engine.tick(12.5)  # ticks and operator actions no longer try to write
    engine.acknowledge(12.5)
    first.close("monitoring stopped")

    # Space freed, a new session: recording again, the technical alarm cleared in its log.
    monkeypatch.setattr(SessionWriter, "write_row", real)
    second = _writer(tmp_path / "second")
    engine.session_writer = second
    assert engine.recording_error is None and engine.session_writer is second
    state = engine.process(noise_frame(130)).alarm_state
    assert "RECORDING_FAILED" not in state.system_conditions
    # The clear reached the caller too (the window, the ward), with the next state.
    assert [e.kind for e in state.new_events] == ["technical_clear"]
    second.close()
    log = read_session_csv(tmp_path / "second" / "alarms.csv")
    kinds = [(r["kind"], r["message"].split(":")[0]) for r in log]
    assert ("technical_clear", "technical alarm RECORDING_FAILED cleared") in kinds
    assert not any(
        "RECORDING_FAILED" in r["message"] for r in log if r["kind"] != "technical_clear"
    )
    rows = read_session_csv(tmp_path / "second" / "session.csv")
    assert [r["frame"] for r in rows] == [130]


def test_a_settings_change_on_a_full_disk_applies_and_raises_the_technical_alarm(
    tmp_path, monkeypatch
):
    engine = Engine(FakeModel(HIGH), FaceEverywhere(), AlarmSettings(model_sha256=SHA))
    writer = _writer(tmp_path / "s")
    engine.session_writer = writer
    engine.process(noise_frame(0))

    def update_settings(self, settings):
        raise self._fail(OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(SessionWriter, "update_settings", update_settings)
    new = AlarmSettings(model_sha256=SHA, high_threshold=3.2)
    state = engine.change_settings(0.0, new)  # no raise: the settings apply
    assert engine.alarms.settings == new
    assert "RECORDING_FAILED" in state.system_conditions
    kinds = [e.kind for e in state.new_events]
    assert "settings_change" in kinds and "technical_onset" in kinds
    assert engine.session_writer is None and engine.recording_error is not None
    writer.close()
