"""Credentials never leave in text that names a video source."""

from __future__ import annotations

import pytest

from painmon.core.util.redact import redact_source


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("rtsp://user:secret@127.0.0.1:9/x", "rtsp://user:***@127.0.0.1:9/x"),
        ("RTSPS://admin:pw@cam.local", "RTSPS://admin:***@cam.local"),
        # A raw '@' in the password still hides all of it.
        ("rtsp://u:p@ss@host:554/a", "rtsp://u:***@host:554/a"),
        # A user name alone may be a token.
        ("https://ghp_token@host/stream", "https://***@host/stream"),
        ("http://h/x?user=a&password=zz&b=1", "http://h/x?user=a&password=***&b=1"),
        ("http://h/live.mjpg?token=abc#f", "http://h/live.mjpg?token=***#f"),
        # A URL taken for a file path, as pathlib prints it.
        ("no file or folder at rtmp:/u:pw@h:9/x", "no file or folder at rtmp:/u:***@h:9/x"),
        (
            "stream rtsp://u:pw@h/a stopped; retrying rtsp://u:pw@h/b",
            "stream rtsp://u:***@h/a stopped; retrying rtsp://u:***@h/b",
        ),
    ],
)
def test_passwords_are_replaced(text, shown):
    assert redact_source(text) == shown


@pytest.mark.parametrize(
    "text",
    ["camera:0", "synthetic:3", "/home/a@b/video.mp4", "rtsp://10.0.0.5/live", "", "C:\\v.mp4"],
)
def test_text_without_credentials_is_unchanged(text):
    assert redact_source(text) == text
