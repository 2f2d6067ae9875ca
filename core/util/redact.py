"""Credentials out of text that names a video source: what logs, files and windows may show.

A network camera's address often carries its password (``rtsp://user:secret@host/...``);
session files, log messages, summaries and the window name the source, so every one of
them goes through :func:`redact_source` first.
"""

from __future__ import annotations

import re

REDACTED = "***"

# scheme://userinfo@ : the userinfo runs to the last '@' before the path, so a password
# typed with a raw '@' in it is still hidden whole. One slash is accepted too: a URL taken
# for a file path comes back from pathlib as "rtmp:/user:pw@host/x".
_USERINFO_RE = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,2})(?P<userinfo>[^/?#\s]*)@"
    r"(?=[^\s@/?#]*(?:[/?#\s]|$))"
)
# Query parameters that carry secrets in camera and streaming URLs (?password=..., &token=...).
_SECRET_QUERY_RE = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|pass|token|access_token|auth|authorization|"
    r"api_?key|key|secret|signature|sig)=)(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    if not colon:
        # A user name alone may itself be a token (https://TOKEN@host): hide it too.
        return f"{match.group('scheme')}{REDACTED}@"
    return f"{match.group('scheme')}{user}:{REDACTED}@"


def redact_source(text: str) -> str:
    """``text`` with every URL password (and secret query value) replaced by ``***``.

    Works on a bare source spec and on any message that quotes one; text without
    credentials comes back unchanged. ``rtsp://nurse:s3cret@10.0.0.5/live`` becomes
    ``rtsp://nurse:***@10.0.0.5/live``.
    """
    text = str(text)
    if ":/" not in text:
        return text
    text = _USERINFO_RE.sub(_mask_userinfo, text)
    return _SECRET_QUERY_RE.sub(lambda m: f"{m.group('key')}{REDACTED}", text)
