"""The demo never writes the app's settings; no camera is a technical state; long texts
elide with a tooltip; "Open session folder" without a file manager says where it is (#13)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QRect, QSettings
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication

from painmon.app import main_window as main_window_module
from painmon.app.main_window import DEMO_SOURCE
from painmon.app.settings_dialog import AppSettings, SettingsDialog, load_settings
from painmon.app.widgets import ElidedLabel
from painmon.core.live.display import NO_CAMERA_HEADLINE, NO_PAIN_ALARM_TEXT
from painmon.core.store.catalog import shipped_demo_model_path

WAIT_MS = 20000
LONG_PATH = "/srv/painmon/" + "/".join(f"ward-{i}-subfolder" for i in range(12)) + "/model.onnx"


def _saved(store_path) -> AppSettings:
    return load_settings(QSettings(str(store_path), QSettings.Format.IniFormat))


# --------------------------------------------------------------------- demo vs app settings


def test_the_demo_never_writes_the_app_settings(qtbot, make_window, store_path):
    before = store_path.read_bytes()
    window = make_window(demo=True)
    assert "DEMO" in window.windowTitle() and not window.persist_settings
    assert window.load_model(shipped_demo_model_path())
    window.start_source(DEMO_SOURCE)
    qtbot.waitUntil(lambda: window.results_received >= 2, timeout=WAIT_MS)
    window.apply_settings(AppSettings(source=DEMO_SOURCE, trend_window_min=60))
    window.close()
    assert store_path.read_bytes() == before
    saved = _saved(store_path)
    assert saved.source == "camera:0" and saved.model_path == ""


def test_the_app_still_remembers_what_the_nurse_chose(make_window, store_path, tmp_path):
    window = make_window()
    assert window.persist_settings and "DEMO" not in window.windowTitle()
    clip = str(tmp_path / "missing.mp4")
    window.start_source(clip)
    assert window.load_model(shipped_demo_model_path())
    window.close()
    saved = _saved(store_path)
    assert saved.source == clip and saved.model_path == str(shipped_demo_model_path())


def test_run_the_demo_patient_uses_the_demo_model_and_saves_nothing(qtbot, make_window, store_path):
    window = make_window()
    window.start_source("/nonexistent/clip.mp4")
    qtbot.waitUntil(lambda: window.video_stack.currentIndex() == 1, timeout=WAIT_MS)
    saved_before = _saved(store_path)
    assert window.model is None
    window.demo_button.click()
    assert window.demo and "DEMO" in window.windowTitle()
    assert window.model is not None and window.model.is_demo
    assert window.state_panel.demo_badge.isVisibleTo(window)
    qtbot.waitUntil(lambda: window.results_received >= 2, timeout=WAIT_MS)
    assert window.source_name == DEMO_SOURCE and window._latest.output_known
    window.close()
    saved = _saved(store_path)
    assert saved == saved_before and saved.model_path == ""


def test_no_camera_is_a_technical_state_not_no_pain_alarm(qtbot, make_window):
    window = make_window()
    window.show()
    window.start_source("camera:97")  # no such camera
    qtbot.waitUntil(lambda: window.video_stack.currentIndex() == 1, timeout=WAIT_MS)
    window.refresh()
    assert window.prompt_title.text() == NO_CAMERA_HEADLINE
    assert window.banner.text.text() != NO_PAIN_ALARM_TEXT
    assert window.banner.text.text() == "Pain not monitored"
    assert window.banner.technical_row.isVisible()
    assert NO_CAMERA_HEADLINE in window.banner.technical_row.text()
    assert window.status_source.text().endswith("(failed)")


# --------------------------------------------------------------------- elided texts


def test_elided_label_keeps_the_full_text_and_shows_it_as_tooltip(qtbot):
    label = ElidedLabel(LONG_PATH)
    qtbot.addWidget(label)
    label.setToolTip("why this matters")
    label.resize(200, 30)
    label.show()
    assert label.text() == LONG_PATH
    assert label.is_elided() and "…" in label.shown_text()
    shown = label.shown_text()
    assert shown.startswith(LONG_PATH[:4]) and shown.endswith(LONG_PATH[-4:])  # the middle goes
    assert LONG_PATH in label.toolTip() and "why this matters" in label.toolTip()
    assert label.sizeHint().width() >= label.fontMetrics().horizontalAdvance(LONG_PATH)
    assert label.minimumSizeHint().width() < 100
    label.resize(label.sizeHint().width() + 10, 30)
    assert not label.is_elided() and label.shown_text() == LONG_PATH
    assert label.toolTip() == "why this matters"


def test_status_messages_are_elided_in_the_middle_with_tooltip(make_window, qtbot):
    window = make_window()
    window.resize(1280, 720)
    window.show()
    qtbot.waitExposed(window)
    message = f"model not loaded: {LONG_PATH} cannot be verified (checksum mismatch)"
    window.statusBar().showMessage(message, 10000)
    QApplication.processEvents()
    label = window.statusBar().message_label
    assert window.statusBar().currentMessage() == message
    assert label.is_elided() and message in label.toolTip()
    assert label.shown_text().endswith("mismatch)")
    where = QRect(label.mapTo(window, QPoint(0, 0)), label.size())
    assert window.rect().contains(where)
    window.statusBar().clearMessage()
    assert window.statusBar().currentMessage() == ""
    # Permanent labels with long texts elide too, and stay inside the window.
    window.status_model.setText(f"model: {LONG_PATH}")
    QApplication.processEvents()
    model = window.status_model
    assert window.rect().contains(QRect(model.mapTo(window, QPoint(0, 0)), model.size()))
    assert model.is_elided() and LONG_PATH in model.toolTip()


def test_settings_dialog_shows_a_long_model_path_elided_with_tooltip(qtbot):
    dialog = SettingsDialog(AppSettings(model_path=LONG_PATH))
    qtbot.addWidget(dialog)
    dialog.show()
    label = dialog.model_path_label
    assert label.text() == LONG_PATH and label.is_elided() and LONG_PATH in label.toolTip()
    assert dialog._model.toolTip() == LONG_PATH
    dialog._model.setText("/short/model.onnx")
    assert label.text() == "/short/model.onnx" and not label.is_elided()
    assert dialog.settings().model_path == "/short/model.onnx"


# --------------------------------------------------------------------- open session folder


def test_open_session_folder_without_a_file_manager_says_where(make_window, monkeypatch, tmp_path):
    window = make_window()
    folder = tmp_path / "sessions" / "bed-1_20260101T000000Z"
    folder.mkdir(parents=True)
    window.session_folder = folder
    opened = []
    monkeypatch.setattr(main_window_module.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or False)
    assert not window.open_session_folder()
    assert len(opened) == 1
    message = window.statusBar().currentMessage()
    assert "no file manager" in message and str(folder) in message
    assert QApplication.clipboard().text() == str(folder)
    # No xdg-open on Linux: Qt is not even asked.
    monkeypatch.setattr(main_window_module.sys, "platform", "linux")
    monkeypatch.setattr(main_window_module.shutil, "which", lambda name: None)
    window.statusBar().clearMessage()
    assert not window.open_session_folder()
    assert len(opened) == 1 and str(folder) in window.statusBar().currentMessage()
    # With a launcher that works, nothing is said.
    monkeypatch.setattr(main_window_module.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    window.statusBar().clearMessage()
    assert window.open_session_folder() and window.statusBar().currentMessage() == ""
