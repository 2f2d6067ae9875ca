"""What the app saves to disk keeps a stream URL's user, never its password (#12 item 7)."""

from __future__ import annotations

import pytest

from painmon.core.util.redact import strip_url_password, url_lacks_password


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("rtsp://nurse:s3cret@10.0.0.5/live", "rtsp://nurse@10.0.0.5/live"),
        ("RTSPS://admin:pw@cam.local", "RTSPS://admin@cam.local"),
        (
            "rtsp://nurse:s3cret@10.0.0.5:554/live?channel=1",
            "rtsp://nurse@10.0.0.5:554/live?channel=1",
        ),
        # Raw ':' and '@' in the password: all of it goes, the user stays.
        ("rtsp://u:p:w@h/a", "rtsp://u@h/a"),
        ("rtsp://u:p@ss@host:554/a", "rtsp://u@host:554/a"),
        # Percent-encoded ':' and '@' in password and user.
        ("rtsp://u%40ward:p%3Aw%40d@h/x", "rtsp://u%40ward@h/x"),
        # '@' in the path is not userinfo.
        ("rtsp://u:pw@h/clips/a@b.mp4", "rtsp://u@h/clips/a@b.mp4"),
        # IPv6 hosts, with a port and a zone.
        ("rtsp://u:pw@[fe80::1]:554/x", "rtsp://u@[fe80::1]:554/x"),
        ("rtsp://u:pw@[fe80::1%25eth0]/x", "rtsp://u@[fe80::1%25eth0]/x"),
        # A password with no user keeps the '@', so the URL still says one is missing.
        ("rtsp://:pw@h/x", "rtsp://@h/x"),
        # Secret query values go, their keys (and other parameters) stay.
        ("http://h/x?user=a&password=zz&b=1", "http://h/x?user=a&password=&b=1"),
        ("http://h/live.mjpg?token=abc#f", "http://h/live.mjpg?token=#f"),
        ("http://u:pw@h/x?api_key=K", "http://u@h/x?api_key="),
        # pathlib's one-slash form of a URL, inside a message.
        ("no file or folder at rtmp:/u:pw@h:9/x", "no file or folder at rtmp:/u@h:9/x"),
    ],
)
def test_the_password_is_dropped_and_the_user_kept(typed, stored):
    assert strip_url_password(typed) == stored
    assert strip_url_password(stored) == stored  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "camera:0",
        "0",
        "synthetic:3",
        "synthetic",
        "",
        "/home/a@b/video.mp4",
        "C:\\v.mp4",
        "C:/a@b/v.mp4",
        "file:///home/a@b/v.mp4",
        "rtsp://10.0.0.5/live",
        "rtsp://[::1]:554/live",
        "rtsp://h/a@b",
        "rtsp://nurse@10.0.0.5/live",  # a user alone is kept (redact_source hides it)
        # (a token user alone is dropped: tests/util/test_redact_tokens.py)
        # Not a URL: without a scheme nothing is parsed as credentials.
        "nurse:pw@host/live",
    ],
)
def test_text_without_a_password_is_unchanged(text):
    assert strip_url_password(text) == text


@pytest.mark.parametrize(
    "source",
    [
        "rtsp://nurse@10.0.0.5/live",
        "rtsp://u%40ward@[fe80::1]:554/x",
        "rtsp://@h/x",
        "http://h/x?user=a&password=&b=1",
        "  rtsp://nurse@h/live  ",
    ],
)
def test_a_url_naming_a_user_without_password_lacks_one(source):
    assert url_lacks_password(source)


@pytest.mark.parametrize(
    "source",
    [
        "rtsp://nurse:s3cret@10.0.0.5/live",
        "rtsp://10.0.0.5/live",
        "rtsp://h/a@b",
        "http://h/x?token=abc",
        "camera:0",
        "0",
        "",
        "synthetic",
        "/home/a@b/video.mp4",
        "C:/a@b/v.mp4",  # a Windows path, not scheme "C"
        "rtmp:/u@h/x",  # pathlib's form: a file path, never opened as a URL
        "file:///home/a@b/v.mp4",
        "nurse@host/live",
        "see rtsp://nurse@h/live",  # a message, not a source spec
    ],
)
def test_other_sources_do_not_lack_a_password(source):
    assert not url_lacks_password(source)


@pytest.mark.parametrize(
    "typed",
    ["rtsp://nurse:s3cret@10.0.0.5/live", "rtsp://u:p@ss@h/a", "http://h/x?password=zz"],
)
def test_a_stripped_url_lacks_its_password(typed):
    assert not url_lacks_password(typed)
    assert url_lacks_password(strip_url_password(typed))
