"""Settings saved before #12 lose their stream credential on load; tokens never get saved.

An older painmon wrote the source URL as typed, password included. The window rewrites
the file at once without it, keeps the full URL for the running session only, and says
so once in the status bar. A token used as the URL's user name is a credential too.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QObject, QSettings, Signal

from painmon.app.settings_dialog import (
    CREDENTIALS_NOT_STORED_TEXT,
    PASSWORD_NOT_STORED_TEXT,
    SOURCE_CREDENTIALS_HINT,
    SOURCE_MIGRATED_TEXT,
    SOURCE_PASSWORD_HINT,
    AppSettings,
    SettingsDialog,
    load_settings,
    migrate_stored_source,
    save_settings,
)

SECRET = "s3cret"
OLD = f"rtsp://nurse:{SECRET}@127.0.0.1:9/live"
STRIPPED = "rtsp://nurse@127.0.0.1:9/live"
TOKEN = "ghp_abcdEFGH1234567890xyz"
TOKEN_URL = f"https://{TOKEN}@127.0.0.1:9/stream.mjpg"
TOKEN_STRIPPED = "https://@127.0.0.1:9/stream.mjpg"


def _store(path) -> QSettings:
    return QSettings(str(path), QSettings.Format.IniFormat)


def _write_old_style(path, source: str) -> None:
    """What an older painmon left: the source written verbatim, next to the other settings."""
    store = _store(path)
    store.setValue("source", source)
    store.sync()
    assert source.encode() in path.read_bytes()


@pytest.mark.parametrize(
    ("old", "secret", "stored"),
    [
        (OLD, SECRET, STRIPPED),
        (TOKEN_URL, TOKEN, TOKEN_STRIPPED),
        (f"http://{TOKEN}:@127.0.0.1:9/", TOKEN, "http://@127.0.0.1:9/"),
        (
            f"http://127.0.0.1:9/live.mjpg?token={SECRET}",
            SECRET,
            "http://127.0.0.1:9/live.mjpg?token=",
        ),
    ],
)
def test_migrate_stored_source_rewrites_the_file(store_path, old, secret, stored):
    _write_old_style(store_path, old)
    assert migrate_stored_source(_store(store_path))
    assert secret.encode() not in store_path.read_bytes()
    assert load_settings(_store(store_path)).source == stored
    # The other settings are untouched; a second load has nothing left to migrate.
    assert load_settings(_store(store_path)).session_root.endswith("sessions")
    assert not migrate_stored_source(_store(store_path))


@pytest.mark.parametrize("source", ["camera:0", STRIPPED, "rtsp://127.0.0.1:9/live", "/v/a@b.mp4"])
def test_a_clean_source_is_not_migrated(store_path, source):
    save_settings(_store(store_path), AppSettings(source=source))
    before = store_path.read_bytes()
    assert not migrate_stored_source(_store(store_path))
    assert store_path.read_bytes() == before


def test_no_stored_source_is_not_migrated(tmp_path):
    assert not migrate_stored_source(_store(tmp_path / "empty.ini"))
    assert not (tmp_path / "empty.ini").exists()


def test_the_window_migrates_an_old_password_once(make_window, store_path):
    _write_old_style(store_path, OLD)
    window = make_window()
    assert SECRET.encode() not in store_path.read_bytes()  # at once, before any save
    assert window.app_settings.source == OLD  # this session still connects
    assert window.statusBar().currentMessage() == SOURCE_MIGRATED_TEXT
    window.close()
    assert SECRET.encode() not in store_path.read_bytes()

    restarted = make_window()
    assert restarted.app_settings.source == STRIPPED
    assert restarted.statusBar().currentMessage() == PASSWORD_NOT_STORED_TEXT  # not migrated again


def test_the_window_migrates_an_old_token_user(make_window, store_path):
    _write_old_style(store_path, TOKEN_URL)
    window = make_window()
    assert TOKEN.encode() not in store_path.read_bytes()
    assert window.app_settings.source == TOKEN_URL
    assert window.statusBar().currentMessage() == SOURCE_MIGRATED_TEXT

    restarted = make_window()
    assert restarted.app_settings.source == TOKEN_STRIPPED
    assert restarted.statusBar().currentMessage() == CREDENTIALS_NOT_STORED_TEXT
    dialog = SettingsDialog(restarted.app_settings, restarted)
    assert not dialog.source_password_hint.isHidden()
    assert dialog.source_password_hint.text() == SOURCE_CREDENTIALS_HINT
    dialog._source.setText("rtsp://nurse@127.0.0.1:9/live")
    assert dialog.source_password_hint.text() == SOURCE_PASSWORD_HINT
    dialog._source.setText(TOKEN_URL)  # the token typed again: nothing missing
    assert dialog.source_password_hint.isHidden()
    assert TOKEN not in dialog._source.toolTip()
    dialog.deleteLater()


def test_a_token_user_name_is_never_saved(make_window, store_path):
    save_settings(_store(store_path), AppSettings(source=TOKEN_URL))
    assert TOKEN.encode() not in store_path.read_bytes()
    assert load_settings(_store(store_path)).source == TOKEN_STRIPPED

    window = make_window()
    window.apply_settings(
        AppSettings(source=TOKEN_URL, session_root=window.app_settings.session_root)
    )
    assert window.app_settings.source == TOKEN_URL  # kept in memory for this session
    window.close()
    assert TOKEN.encode() not in store_path.read_bytes()


def test_the_password_tooltip_is_redacted(make_window):
    window = make_window()
    dialog = SettingsDialog(window.app_settings, window)
    dialog._source.setText(OLD)
    assert SECRET not in dialog._source.toolTip()
    assert dialog._source.toolTip() == "rtsp://nurse:***@127.0.0.1:9/live"
    dialog.deleteLater()


class _Worker(QObject):
    """Stands in for the inference worker: the window only listens to its own worker."""

    ended = Signal(str)
    stopped = Signal(str)
    command_failed = Signal(str)


def test_worker_messages_quoting_the_url_are_redacted(make_window):
    window = make_window()
    worker = _Worker()
    window._worker = worker
    worker.ended.connect(window._on_source_ended)
    worker.stopped.connect(window._on_worker_error)
    worker.command_failed.connect(window._on_command_failed)
    try:
        worker.ended.emit(f"video source failed: lost {TOKEN_URL}")
        assert TOKEN not in window.status_source.text()
        assert TOKEN not in window.source_ended_reason
        assert "https://***@127.0.0.1:9/stream.mjpg" in window.source_ended_reason
        worker.stopped.emit(f"monitoring stopped: {OLD} timed out")
        assert SECRET not in window.statusBar().currentMessage()
        assert "rtsp://nurse:***@127.0.0.1:9/live" in window.statusBar().currentMessage()
        worker.command_failed.emit(f"acknowledge failed on {OLD}")
        assert SECRET not in window.statusBar().currentMessage()
    finally:
        window._worker = None
