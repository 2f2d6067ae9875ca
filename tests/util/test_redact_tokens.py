"""A token used as a URL's user name is a secret too (#12 item 7): hidden, never saved."""

from __future__ import annotations

import pytest

from painmon.core.util.redact import (
    is_token_user,
    redact_source,
    strip_url_password,
    url_lacks_password,
    url_lacks_user,
)

GITHUB = "ghp_abcdEFGH1234567890xyz"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW0ifQ.c2lnbmF0dXJlX2hlcmU"
HEX_KEY = "9f86d081884c7d659a2feaa0c55ad015"

TOKENS = [
    GITHUB,
    "github_pat_11ABCDEFG0123456789_abcdefghij",
    "glpat-xxxxXXXXyyyyYYYY",
    "xoxb-1234-5678-abcdEFGH",
    "sk-proj-abcdefgh",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "AKIAIOSFODNN7EXAMPLE",
    "AIzaSyA-1234567890abcdefg",
    "ya29.a0AfH6SMBx",
    "hf_abcdefghijklmnop",
    "eyJhbGciOi",  # a JWT cut short
    JWT,
    HEX_KEY,  # 32 hex digits: letters and digits, >= 20
    "k3j4h5g6f7d8s9a0q1w2",  # exactly 20, letters and digits
    "Xk9fP2mQ7rT4vB8n",  # 16, lower + upper + digits
    "Xk9fP2mQ%37rT4vB8n",  # percent-encoded, decoded before the rule
]
NAMES = [
    "nurse",
    "admin",
    "camera1",
    "john.doe",
    "icu_bed_12",
    "u%40ward",
    "operator",
    "root",
    "ward3-north-camera",  # 18 chars, letters and digits: under 20
    "WardCameraNorthWing",  # 19 chars, no digit
    "intensivecareunitcamera",  # long but letters only
    "Cam01Ward",  # mixed case and digits but short
    "sk-",  # a prefix alone is not a token (shorter than 8)
    "ghp_x",
    "",
]


@pytest.mark.parametrize("user", TOKENS)
def test_tokens_are_recognised(user):
    assert is_token_user(user)


@pytest.mark.parametrize("user", NAMES)
def test_ordinary_names_are_not_tokens(user):
    assert not is_token_user(user)


@pytest.mark.parametrize(
    ("typed", "stored", "shown"),
    [
        # A token alone, as the user: the whole user goes; the '@' says credentials go there.
        (
            f"https://{GITHUB}@cam.local/stream.mjpg",
            "https://@cam.local/stream.mjpg",
            "https://***@cam.local/stream.mjpg",
        ),
        (f"rtsp://{JWT}@10.0.0.5/live", "rtsp://@10.0.0.5/live", "rtsp://***@10.0.0.5/live"),
        # An API key as user with an empty password.
        (f"http://{HEX_KEY}:@host/", "http://@host/", "http://***@host/"),
        # A token user with a password: both go.
        (f"rtsp://{GITHUB}:pw@h:554/a", "rtsp://@h:554/a", "rtsp://***@h:554/a"),
        # A token user and a secret query value in one URL.
        (
            f"https://{GITHUB}@h/x?token=abc&ch=1",
            "https://@h/x?token=&ch=1",
            "https://***@h/x?token=***&ch=1",
        ),
        # Inside a message, pathlib's one-slash form too.
        (
            f"no file or folder at rtmp:/{GITHUB}:@h:9/x",
            "no file or folder at rtmp:/@h:9/x",
            "no file or folder at rtmp:/***@h:9/x",
        ),
    ],
)
def test_a_token_user_name_is_dropped_and_hidden(typed, stored, shown):
    assert strip_url_password(typed) == stored
    assert strip_url_password(stored) == stored  # idempotent
    assert redact_source(typed) == shown
    for secret in (GITHUB, JWT, HEX_KEY):
        assert secret not in strip_url_password(typed)
        assert secret not in redact_source(typed)


@pytest.mark.parametrize(
    ("typed", "stored", "shown"),
    [
        ("rtsp://nurse:s3cret@10.0.0.5/live", "rtsp://nurse@10.0.0.5/live", None),
        ("rtsp://admin:pw@h/a", "rtsp://admin@h/a", "rtsp://admin:***@h/a"),
        ("rtsp://camera1:@h/a", "rtsp://camera1@h/a", "rtsp://camera1:***@h/a"),
        ("rtsp://john.doe:pw@h/a", "rtsp://john.doe@h/a", "rtsp://john.doe:***@h/a"),
        # A user alone that is no token is kept in what is saved (the login needs it)...
        ("rtsp://nurse@h/live", "rtsp://nurse@h/live", "rtsp://***@h/live"),
        # ...and hidden in what is shown, as before (the rule cannot know every token).
        ("rtsp://icu_bed_12@h/live", "rtsp://icu_bed_12@h/live", "rtsp://***@h/live"),
    ],
)
def test_ordinary_user_names_are_kept(typed, stored, shown):
    assert strip_url_password(typed) == stored
    if shown is not None:
        assert redact_source(typed) == shown


@pytest.mark.parametrize(
    ("source", "lacks_password", "lacks_user"),
    [
        # What is saved of a token URL asks for the whole credentials again.
        ("https://@cam.local/stream.mjpg", True, True),
        ("rtsp://:@h/x", False, True),
        # The token still in memory (this session): nothing lacks.
        (f"https://{GITHUB}@cam.local/stream.mjpg", False, False),
        (f"http://{HEX_KEY}:@host/", False, False),
        # An ordinary user alone lacks only the password.
        ("rtsp://nurse@h/live", True, False),
        ("rtsp://nurse:pw@h/live", False, False),
        ("rtsp://h/live", False, False),
        ("camera:0", False, False),
        ("/home/a@b/v.mp4", False, False),
        ("see rtsp://@h/live", False, False),  # a message, not a source spec
    ],
)
def test_what_the_window_asks_for(source, lacks_password, lacks_user):
    assert url_lacks_password(source) is lacks_password
    assert url_lacks_user(source) is lacks_user


@pytest.mark.parametrize("typed", [f"https://{GITHUB}@h/s", f"rtsp://{JWT}:pw@h/s"])
def test_a_stripped_token_url_asks_for_credentials(typed):
    assert not url_lacks_password(typed) and not url_lacks_user(typed)
    stored = strip_url_password(typed)
    assert url_lacks_password(stored) and url_lacks_user(stored)
