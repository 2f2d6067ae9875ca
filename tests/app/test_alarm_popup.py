"""The alarm popup follows the alarm: one per episode, escalates, closes on acknowledge (#13)."""

from __future__ import annotations

import pytest
from fakes import engine_result

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QRect, QSettings, Qt, QTimer
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QWidget

from painmon.app.alarm_popup import (
    ACKNOWLEDGE_KEY,
    ACKNOWLEDGE_TEXT,
    AUDIO_PAUSE_KEY,
    AUDIO_PAUSE_TEXT,
    PopupTracker,
    needs_attention,
)
from painmon.app.main_window import MainWindow
from painmon.app.settings_dialog import AppSettings, save_settings
from painmon.core.live.alarms import AlarmManager, AlarmSettings, AlarmState

IMAGE_SIZE = (160, 120)


class _Engine:
    """The engine's operator commands over a real AlarmManager; records what it received."""

    def __init__(self, manager: AlarmManager, clock: list[float]) -> None:
        self.manager, self.clock, self.received = manager, clock, []

    def acknowledge(self, t_s: float) -> AlarmState:
        self.received.append("acknowledge")
        return self.manager.acknowledge(t_s)

    def audio_pause(self, t_s: float) -> AlarmState:
        self.received.append("audio_pause")
        return self.manager.audio_pause(t_s)


class _Worker:
    """Runs submitted commands at once on the engine and hands the state to the window,
    as the inference worker does on its thread."""

    capture = None

    def __init__(self, window: MainWindow, engine: _Engine) -> None:
        self.window, self.engine = window, engine

    def submit(self, command, on_done=None) -> None:
        value = command(self.engine, self.engine.clock[0])
        if isinstance(value, AlarmState):
            # Queued, as the worker's signal is: the window takes it in its event loop.
            QTimer.singleShot(0, lambda: self.window.on_alarm_state(value))

    def stop(self) -> None:
        pass

    def playback_text(self) -> str:
        return ""


@pytest.fixture
def window(qtbot, tmp_path):
    store = QSettings(str(tmp_path / "painmon.ini"), QSettings.Format.IniFormat)
    save_settings(store, AppSettings(session_root=str(tmp_path / "sessions")))
    made = MainWindow(store)
    qtbot.addWidget(made)
    made.resize(1366, 768)
    made.show()
    qtbot.waitExposed(made)
    yield made
    made.close()
    assert made.threads_finished() and not made.timers_active()


class _Scripted:
    """Feeds a window scripted levels through a real AlarmManager (delay 1 s)."""

    def __init__(self, window: MainWindow, **settings: float) -> None:
        self.window = window
        self.manager = AlarmManager(AlarmSettings(alarm_delay_s=1.0, **settings))
        self.clock = [0.0]
        self.engine = _Engine(self.manager, self.clock)
        window._worker = _Worker(window, self.engine)  # stop_source() drops it again
        self.image = QImage(*IMAGE_SIZE, QImage.Format.Format_RGB888)

    def play(self, level: float, seconds: float) -> None:
        for _ in range(round(seconds * 10)):
            self.clock[0] = round(self.clock[0] + 0.1, 6)
            self.window.on_result(
                engine_result(self.clock[0], level, self.manager, gradcam=False), self.image
            )
        self.window.refresh()


def _in_window(widget: QWidget, window: MainWindow) -> QRect:
    return QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())


def test_escalation_updates_the_same_popup(window):
    script = _Scripted(window)
    script.play(0.5, 1.0)
    assert not window.popup.isVisible() and window.popup_count == 0
    script.play(2.9, 1.5)  # MEDIUM after the 1 s delay
    popup = window.popup
    assert popup.isVisible() and popup.priority == "medium"
    assert popup.title.text().startswith("MEDIUM PAIN ALARM")
    script.play(3.8, 1.5)  # escalates to HIGH: the same popup says so
    assert window.popup is popup and popup.isVisible()
    assert popup.priority == "high" and popup.title.text().startswith("HIGH PAIN ALARM")
    assert "escalated" in popup.detail.text() and "level now 3.8" in popup.detail.text()
    assert window.popup_count == 1
    # Never a window of its own (no second top-level window that could take focus).
    assert not popup.isWindow()
    assert [w for w in QApplication.topLevelWidgets() if w.isVisible()] == [window]
    assert popup.acknowledge_button.text() == ACKNOWLEDGE_TEXT
    assert popup.audio_pause_button.text() == AUDIO_PAUSE_TEXT


def test_popup_button_acknowledges_and_closes(window, qtbot):
    script = _Scripted(window)
    script.play(3.8, 2.0)
    assert window.popup.isVisible() and window.alarm_state.audio_active
    qtbot.mouseClick(window.popup.acknowledge_button, Qt.MouseButton.LeftButton)
    assert script.engine.received == ["acknowledge"]
    assert [e.kind for e in script.manager.events][-1] == "acknowledge"
    qtbot.waitUntil(lambda: not window.popup.isVisible())
    assert window.alarm_state.acknowledged
    script.play(3.8, 1.0)  # still in pain, acknowledged: the popup stays closed
    assert not window.popup.isVisible() and window.popup_count == 1


def test_popup_audio_pause_button_pauses_and_keeps_the_popup(window, qtbot):
    script = _Scripted(window)
    script.play(3.8, 2.0)
    qtbot.mouseClick(window.popup.audio_pause_button, Qt.MouseButton.LeftButton)
    assert script.engine.received == ["audio_pause"]
    qtbot.waitUntil(lambda: window.alarm_state.audio_paused_remaining_s is not None)
    assert window.popup.isVisible()  # paused is not acknowledged


def test_banner_and_menu_acknowledge_close_the_popup(window, qtbot):
    script = _Scripted(window, clear_hold_s=0.5)
    script.play(3.8, 2.0)
    assert window.popup.isVisible()
    qtbot.mouseClick(window.banner.acknowledge_button, Qt.MouseButton.LeftButton)
    assert script.engine.received == ["acknowledge"]
    qtbot.waitUntil(lambda: not window.popup.isVisible())
    script.play(0.2, 1.0)  # the episode ends
    script.play(3.8, 2.0)  # a new episode: a new popup
    assert window.popup.isVisible() and window.popup_count == 2
    window.action_acknowledge.trigger()  # Monitor → Acknowledge alarm
    assert script.engine.received == ["acknowledge", "acknowledge"]
    qtbot.waitUntil(lambda: not window.popup.isVisible())


def test_shortcuts_acknowledge_and_pause_and_are_shown(window, qtbot):
    assert window.banner.acknowledge_button.text() == f"Acknowledge ({ACKNOWLEDGE_KEY})"
    assert window.banner.audio_pause_button.text() == f"Audio pause ({AUDIO_PAUSE_KEY})"
    assert window.action_acknowledge.shortcut().toString() == ACKNOWLEDGE_KEY
    assert window.action_audio_pause.shortcut().toString() == AUDIO_PAUSE_KEY
    script = _Scripted(window)
    script.play(3.8, 2.0)
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    window.window_combo.setFocus()
    qtbot.keyClick(window.window_combo, Qt.Key.Key_F3)
    assert script.engine.received == ["audio_pause"]
    qtbot.keyClick(window.window_combo, Qt.Key.Key_F2)
    assert script.engine.received == ["audio_pause", "acknowledge"]
    qtbot.waitUntil(lambda: not window.popup.isVisible())
    assert window.window_combo.currentIndex() == window.window_combo.findData(15)


def test_popup_never_covers_video_or_menus_and_leaves_focus_alone(window, qtbot):
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    window.window_combo.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is window.window_combo)
    script = _Scripted(window)
    for size in ((1366, 768), (1280, 720), (1920, 1080)):
        window.resize(*size)
        script.play(3.8, 2.0)
        assert window.popup.isVisible()
        popup = _in_window(window.popup, window)
        assert window.rect().contains(popup), (size, popup)
        assert not popup.intersects(_in_window(window.video_stack, window)), size
        assert not popup.intersects(_in_window(window.state_panel.level, window)), size
        assert not popup.intersects(_in_window(window.menuBar(), window)), size
        assert not popup.intersects(_in_window(window.banner, window)), size
        assert QApplication.focusWidget() is window.window_combo
        assert QApplication.activeWindow() is window
    qtbot.mouseClick(window.popup.acknowledge_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.popup.isVisible())
    assert QApplication.focusWidget() is window.window_combo  # the click took no focus


def test_a_new_source_closes_the_popup(window):
    script = _Scripted(window)
    script.play(3.8, 2.0)
    assert window.popup.isVisible()
    window.stop_source()
    window.start_source("/nonexistent/clip.mp4")
    assert not window.popup.isVisible() and window.popup_count == 1


# --------------------------------------------------------------------- the tracker, no Qt


def test_tracker_counts_episodes_and_reopens_for_a_reminder_of_the_same_one():
    manager = AlarmManager(
        AlarmSettings(alarm_delay_s=1.0, clear_hold_s=1.0, reminder_interval_s=5.0)
    )
    tracker = PopupTracker()
    t_s = 0.0

    def play(level: float, seconds: float) -> list[bool]:
        nonlocal t_s
        shown = []
        for _ in range(round(seconds * 10)):
            t_s = round(t_s + 0.1, 6)
            shown.append(tracker.update(manager.update(t_s, level)) is not None)
        return shown

    assert not any(play(0.5, 1.0))
    shown = play(2.9, 2.0)
    assert shown[-1] and tracker.episodes == 1 and tracker.view.priority == "medium"
    state = manager.acknowledge(t_s)
    assert tracker.update(state) is None and not needs_attention(state)
    shown = play(2.9, 6.0)  # the reminder re-arms the same episode
    assert shown[-1] and "reminder" in tracker.view.detail and tracker.episodes == 1
    assert not any(play(0.5, 2.0)[-5:])  # MEDIUM clears: no popup
    play(3.8, 2.0)
    assert tracker.episodes == 2 and tracker.view.priority == "high"
    play(0.5, 2.0)  # HIGH clears unacknowledged: latched, still shown
    assert tracker.view is not None and tracker.view.title.endswith("latched")
    assert tracker.update(manager.acknowledge(t_s)) is None
    assert tracker.update(None) is None and tracker.episodes == 2
