"""Fixtures shared by the window tests that keep their settings in a temporary INI file."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings

from painmon.app.main_window import MainWindow
from painmon.app.settings_dialog import AppSettings, save_settings


@pytest.fixture
def store_path(tmp_path):
    """An INI settings file: camera 0, sessions under tmp_path."""
    path = tmp_path / "painmon.ini"
    store = QSettings(str(path), QSettings.Format.IniFormat)
    save_settings(store, AppSettings(source="camera:0", session_root=str(tmp_path / "sessions")))
    store.sync()
    return path


@pytest.fixture
def make_window(qtbot, store_path, face_model_path):
    """Windows reading ``store_path`` afresh (a restart); each is closed and checked after."""
    windows = []

    def make(**kwargs) -> MainWindow:
        store = QSettings(str(store_path), QSettings.Format.IniFormat)
        window = MainWindow(store, face_model=face_model_path, **kwargs)
        qtbot.addWidget(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()
        assert window.threads_finished() and not window.timers_active()
    assert not [t for t in threading.enumerate() if t.name.startswith("painmon-capture")]
