"""A stream password is never written to the app's settings file (#12 item 7).

The running window keeps the URL as typed (a reconnect still works); after a restart the
stored URL names the user only, and the window says the password must be given again.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings

from painmon.app.settings_dialog import (
    PASSWORD_NOT_STORED_TEXT,
    AppSettings,
    SettingsDialog,
    load_settings,
    save_settings,
)

SECRET = "s3cret"
TYPED = f"rtsp://nurse:{SECRET}@127.0.0.1:9/live"
STORED = "rtsp://nurse@127.0.0.1:9/live"


def _store(path) -> QSettings:
    return QSettings(str(path), QSettings.Format.IniFormat)


def test_save_settings_never_writes_the_password(store_path):
    save_settings(_store(store_path), AppSettings(source=TYPED))
    assert SECRET.encode() not in store_path.read_bytes()
    assert load_settings(_store(store_path)).source == STORED


def test_a_query_secret_is_not_written_either(store_path):
    save_settings(_store(store_path), AppSettings(source=f"http://cam/live.mjpg?token={SECRET}"))
    assert SECRET.encode() not in store_path.read_bytes()
    assert load_settings(_store(store_path)).source == "http://cam/live.mjpg?token="


@pytest.mark.parametrize(
    "source", ["rtsp://127.0.0.1:9/live", "rtsp://nurse@127.0.0.1:9/live", "camera:0", "/v/a@b.mp4"]
)
def test_a_source_without_password_round_trips_unchanged(store_path, source):
    save_settings(_store(store_path), AppSettings(source=source))
    assert load_settings(_store(store_path)).source == source


def test_the_window_keeps_the_password_for_this_session_only(make_window, store_path):
    window = make_window()
    assert PASSWORD_NOT_STORED_TEXT not in window.statusBar().currentMessage()
    window.apply_settings(AppSettings(source=TYPED, session_root=window.app_settings.session_root))
    assert window.app_settings.source == TYPED  # a reconnect in this session still works
    assert SECRET.encode() not in store_path.read_bytes()
    window.close()
    assert SECRET.encode() not in store_path.read_bytes()

    restarted = make_window()
    assert restarted.app_settings.source == STORED
    assert restarted.statusBar().currentMessage() == PASSWORD_NOT_STORED_TEXT
    dialog = SettingsDialog(restarted.app_settings, restarted)
    assert dialog._source.text() == STORED
    assert not dialog.source_password_hint.isHidden()
    dialog._source.setText(TYPED)  # the nurse types it again
    assert dialog.source_password_hint.isHidden()
    assert dialog.settings().source == TYPED
    dialog.deleteLater()


def test_starting_a_url_saves_it_without_password(qtbot, make_window, store_path):
    window = make_window()
    window.start_source(TYPED)
    assert window.app_settings.source == TYPED and window.source_spec == TYPED
    assert SECRET.encode() not in store_path.read_bytes()
    assert load_settings(_store(store_path)).source == STORED
    window.stop_source()

    restarted = make_window()
    restarted.start_source(restarted.app_settings.source)  # what `painmon app` does
    assert restarted.statusBar().currentMessage() == PASSWORD_NOT_STORED_TEXT
    restarted.stop_source()


def test_a_url_without_user_shows_no_password_text(make_window, store_path):
    save_settings(_store(store_path), AppSettings(source="rtsp://127.0.0.1:9/live"))
    window = make_window()
    assert window.statusBar().currentMessage() == ""
    dialog = SettingsDialog(window.app_settings, window)
    assert dialog.source_password_hint.isHidden()
    dialog.deleteLater()


def test_a_failed_stream_without_password_says_why(qtbot, make_window, store_path):
    save_settings(_store(store_path), AppSettings(source=STORED))
    window = make_window()
    window.start_source(window.app_settings.source)
    qtbot.waitUntil(lambda: window.video_stack.currentIndex() == 1, timeout=20000)
    assert PASSWORD_NOT_STORED_TEXT in window.prompt_detail.text()
