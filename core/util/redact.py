"""Credentials out of text that names a video source: what logs, files and windows may show.

A network camera's address often carries its password (``rtsp://user:secret@host/...``);
session files, log messages, summaries and the window name the source, so every one of
them goes through :func:`redact_source` first. What is saved to disk to be opened again
(the app's settings) goes through :func:`strip_url_password`: the password is dropped, not
masked, so the saved URL names the user and the window can ask for the password again
(:func:`url_lacks_password`).
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
# A whole source spec that is a URL: a scheme of two letters or more (C:/... is a Windows
# path) and "://" (pathlib's one-slash form is a file path, never a spec opened as a URL).
_URL_SPEC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


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


def _drop_password(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    if not colon:
        return match.group(0)
    # An empty user keeps its '@' ("rtsp://@host"): the URL still says credentials go there.
    return f"{match.group('scheme')}{user}@"


def strip_url_password(text: str) -> str:
    """``text`` with every URL password (and secret query value) removed, the user kept.

    For what is written to disk to be opened again: ``rtsp://nurse:s3cret@10.0.0.5/live``
    becomes ``rtsp://nurse@10.0.0.5/live``, ``?user=a&password=zz`` becomes
    ``?user=a&password=``. Text without credentials comes back unchanged.
    """
    text = str(text)
    if ":/" not in text:
        return text
    text = _USERINFO_RE.sub(_drop_password, text)
    return _SECRET_QUERY_RE.sub(lambda m: m.group("key"), text)


def url_lacks_password(text: str) -> bool:
    """True when the source spec ``text`` is a URL that names a user but gives no password.

    That is what :func:`strip_url_password` leaves of a URL that had one (also an empty
    secret query value such as ``?password=``), so the window can ask for it again. A URL
    whose user name is itself the token (``https://TOKEN@host``) reads the same.
    """
    text = str(text).strip()
    if not _URL_SPEC_RE.match(text):
        return False
    userinfo = _USERINFO_RE.match(text)
    if userinfo is not None and ":" not in userinfo.group("userinfo"):
        return True
    return any(not m.group("value") for m in _SECRET_QUERY_RE.finditer(text))
