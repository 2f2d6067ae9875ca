"""A full disk stops recording, never monitoring, in the bedside window.

The headless ``painmon monitor`` ends on a session write error (exit 3; see
tests/live/test_monitor_endings.py); the window's worker keeps scoring frames and raising
alarms, and the window says that recording stopped and what to do.
"""

from __future__ import annotations

import dataclasses
import errno
import threading
from pathlib import Path

import numpy as np
import pytest
from fakes import HIGH, FaceEverywhere, FakeModel, FullDiskFile

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings

from painmon.app.main_window import RECORDING_FAILED_ACTION, MainWindow
from painmon.app.settings_dialog import AppSettings, load_settings, save_settings
from painmon.app.worker import InferenceWorker
from painmon.core.live.alarms import AlarmSettings
from painmon.core.live.capture import FrameSource, RawFrame
from painmon.core.live.engine import Engine
from painmon.core.live.session import SESSION_CSV, SessionWriter

WAIT_MS = 20000
FRAMES = 300  # 30 s at 10 fps
FULL_AT = 30  # the disk fills when frame 30 (t = 3 s) is read


class FillingSource(FrameSource):
    """30 s of media at 10 fps; the session disk fills when frame ``FULL_AT`` is read."""

    def __init__(self, files: dict[str, FullDiskFile]) -> None:
        super().__init__("fake.mp4")
        self.files = files
        self.sent = 0
        self.rng = np.random.default_rng(2)

    def open(self) -> None:
        self.sent = 0

    def read(self) -> RawFrame | None:
        if self.sent >= FRAMES:
            return None
        if self.sent == FULL_AT:
            for handle in self.files.values():
                handle.full = True
        self.sent += 1
        rgb = self.rng.integers(40, 215, size=(160, 160, 3), dtype=np.uint8)
        return RawFrame(rgb, (self.sent - 1) / 10.0, self.sent - 1)


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_full_disk_stops_recording_but_not_monitoring_or_alarms(tmp_path, pipelined):
    files: dict[str, FullDiskFile] = {}

    def opener(path: Path) -> FullDiskFile:
        files[path.name] = FullDiskFile(path)
        return files[path.name]

    model = FakeModel(HIGH)
    settings = AlarmSettings(model_sha256=model.sha256)
    engines: list[Engine] = []
    writer = SessionWriter(
        tmp_path / "session",
        "bed-1",
        "fake",
        model.sha256,
        settings,
        "fake.mp4",
        "fake-face",
        opener=opener,
        flush_interval_s=0.001,
    )

    def make_engine() -> Engine:
        engine = Engine(model, FaceEverywhere(), settings)
        engine.session_writer = writer
        engines.append(engine)
        return engine

    results, errors, failures, events = [], [], [], []

    def on_result(result) -> None:
        results.append(result)
        events.extend(result.alarm_state.new_events)
        if result.frame.index == FRAMES - 1:
            worker.stop()

    worker = InferenceWorker(
        FillingSource(files),
        make_engine,
        every_frame=True,
        pipelined=pipelined,
        on_result=on_result,
    )
    worker.alarm_state.connect(lambda state: events.extend(state.new_events))
    worker.error.connect(errors.append)
    worker.recording_failed.connect(failures.append)
    watchdog = threading.Timer(60.0, worker.stop)  # never hang the test run
    watchdog.start()
    try:
        worker.run()  # synchronously, on this thread: the signals reach the lambdas directly
    finally:
        watchdog.cancel()

    assert errors == []  # the engine did not fail: monitoring went on
    assert [r.frame.index for r in results] == list(range(FRAMES))
    onsets = [e for e in events if e.kind == "onset" and e.priority == "high"]
    assert onsets and onsets[0].t_s > FULL_AT / 10.0  # raised after recording had stopped
    assert results[-1].alarm_state.pain_priority == "high"
    # Recording's failure is a technical alarm of the bed (the window, the ward show it).
    technical = [e for e in events if e.kind == "technical_onset"]
    assert len(technical) == 1 and "RECORDING_FAILED" in technical[0].message
    assert "RECORDING_FAILED" in results[-1].alarm_state.system_conditions
    # Said once, with what to do; the engine went on without its writer.
    assert len(failures) == 1
    assert "Recording has stopped" in failures[0] and "Free disk space" in failures[0]
    (engine,) = engines
    assert engine.recording_error is not None and engine.session_writer is None
    # The rows written before the disk filled are kept.
    rows = (tmp_path / "session" / SESSION_CSV).read_text(encoding="utf-8").splitlines()
    assert 1 < len(rows) <= FULL_AT + 1


def test_the_window_says_recording_failed_and_keeps_alarming(
    qtbot, tmp_path, face_model_path, untrained_dacnn_onnx, monkeypatch
):
    store = QSettings(str(tmp_path / "painmon.ini"), QSettings.Format.IniFormat)
    save_settings(store, AppSettings(session_root=str(tmp_path / "sessions")))
    # Thresholds so low that the untrained model's level (~2) is a HIGH pain episode.
    alarm = AlarmSettings(
        medium_threshold=0.1, high_threshold=0.2, hysteresis=0.05, alarm_delay_s=0.5
    )
    save_settings(store, dataclasses.replace(load_settings(store), alarm=alarm))
    window = MainWindow(store, face_model=face_model_path)
    qtbot.addWidget(window)
    try:
        assert window.load_model(untrained_dacnn_onnx)
        window.start_source("synthetic")
        qtbot.waitUntil(lambda: window.results_received >= 1, timeout=WAIT_MS)

        real = SessionWriter.write_row
        written = []

        def write_row(self, row):
            if len(written) >= 3:  # the disk is full after three rows
                raise self._fail(OSError(errno.ENOSPC, "No space left on device"))
            written.append(row)
            real(self, row)

        monkeypatch.setattr(SessionWriter, "write_row", write_row)
        folder = window.start_session("bed-9")
        assert folder is not None
        qtbot.waitUntil(lambda: window.recording_error is not None, timeout=WAIT_MS)
        assert "No space left on device" in window.recording_error

        # Monitoring and alarms go on.
        received = window.results_received
        qtbot.waitUntil(lambda: window.results_received >= received + 5, timeout=WAIT_MS)
        qtbot.waitUntil(
            lambda: window.alarm_state is not None and window.alarm_state.pain_priority == "high",
            timeout=WAIT_MS,
        )
        assert window._worker is not None and window._source_problem is None
        # ... and the window says that recording stopped and what to do.
        window.refresh()
        assert not window.session_active
        assert window.status_session.text().startswith("recording FAILED")
        assert "RECORDING_FAILED" in window.alarm_state.system_conditions  # a technical alarm
        row = window.banner.technical_row
        assert not row.isHidden()
        assert "session not recorded" in row.text() and RECORDING_FAILED_ACTION in row.text()
        # The whole message (what to do) on the session label; the status bar said it too,
        # until the alarm's own message replaced it.
        assert "Free disk space" in window.status_session.toolTip()

        # Space freed, a new session: recording again, the failure no longer shown.
        monkeypatch.setattr(SessionWriter, "write_row", real)
        second = window.start_session("bed-9")
        assert second is not None and second != folder
        assert window.recording_error is None and window.session_active
        assert window.status_session.text().startswith("recording:")
        qtbot.waitUntil(
            lambda: len((second / SESSION_CSV).read_text(encoding="utf-8").splitlines()) > 2,
            timeout=WAIT_MS,
        )
        window.refresh()
        assert "RECORDING_FAILED" not in window.alarm_state.system_conditions
        assert row.isHidden() or RECORDING_FAILED_ACTION not in row.text()
    finally:
        window.close()
    assert window.threads_finished()
