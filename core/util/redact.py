"""Credentials out of text that names a video source: what logs, files and windows may show.

A network camera's address often carries its password (``rtsp://user:secret@host/...``);
session files, log messages, summaries and the window name the source, so every one of
them goes through :func:`redact_source` first. What is saved to disk to be opened again
(the app's settings) goes through :func:`strip_url_password`: the password is dropped, not
masked, so the saved URL names the user and the window can ask for the password again
(:func:`url_lacks_password`).

A user name can be the secret itself (``https://ghp_…@host``, ``rtsp://eyJhbGciOi…@host``,
``http://API_KEY:@host``). :func:`is_token_user` decides, by one rule, that a user name is
a token rather than a person's or a device's login. Percent-decoded, it is a token when

* it starts with a known token prefix (:data:`TOKEN_PREFIXES`: GitHub ``ghp_``/
  ``github_pat_``, GitLab ``glpat-``, Slack ``xoxb-``, ``sk-``/``sk_live_``, AWS ``AKIA``,
  Google ``AIza``/``ya29.``, Hugging Face ``hf_``, a JWT's ``eyJ``…) and is at least
  8 characters long; or
* it is 20 characters or longer and has both letters and digits; or
* it is 16 characters or longer and has lower-case letters, upper-case letters and digits.

Ordinary logins (``nurse``, ``admin``, ``camera1``, ``john.doe``, ``icu_bed_12``) are
none of these. A token user name is hidden whole by :func:`redact_source` and dropped by
:func:`strip_url_password` (``https://TOKEN@host`` is saved as ``https://@host``: the
credentials must be given again). Any user name standing alone (``scheme://user@host``,
the form tokens travel in) is hidden by :func:`redact_source` too, since the rule cannot
know every token; what is saved keeps an ordinary one, as the login needs it.
"""

from __future__ import annotations

import re
import urllib.parse

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

#: User names starting with one of these are access tokens (case matters: ``AKIA``, ``eyJ``).
TOKEN_PREFIXES: tuple[str, ...] = (
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",  # GitHub
    "glpat-", "gldt-", "glrt-",  # GitLab
    "xoxa-", "xoxb-", "xoxe-", "xoxp-", "xoxr-", "xoxs-",  # Slack
    "sk-", "sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "pk_test_",  # OpenAI, Stripe
    "AKIA", "ASIA",  # AWS access key ids
    "AIza", "ya29.",  # Google API key, OAuth access token
    "hf_", "npm_", "pypi-",  # Hugging Face, npm, PyPI
    "dop_v1_", "shpat_", "SG.",  # DigitalOcean, Shopify, SendGrid
    "eyJ",  # a JWT: base64 of '{"'
)  # fmt: skip
_TOKEN_PREFIX_MIN_CHARS = 8
_TOKEN_MIN_CHARS = 20  # letters and digits
_MIXED_CASE_TOKEN_MIN_CHARS = 16  # lower, upper and digits


def is_token_user(user: str) -> bool:
    """True when the URL user name ``user`` is an access token, not a login (module rule)."""
    name = urllib.parse.unquote(str(user))
    if not name:
        return False
    if len(name) >= _TOKEN_PREFIX_MIN_CHARS and name.startswith(TOKEN_PREFIXES):
        return True
    has_digit = any(c.isdigit() for c in name)
    has_lower = any(c.islower() for c in name)
    has_upper = any(c.isupper() for c in name)
    if len(name) >= _TOKEN_MIN_CHARS and has_digit and (has_lower or has_upper):
        return True
    return len(name) >= _MIXED_CASE_TOKEN_MIN_CHARS and has_digit and has_lower and has_upper


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    if not colon or is_token_user(user):
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
    if is_token_user(user):
        user = ""
    elif not colon:
        return match.group(0)
    # An empty user keeps its '@' ("rtsp://@host"): the URL still says credentials go there.
    return f"{match.group('scheme')}{user}@"


def strip_url_password(text: str) -> str:
    """``text`` with every URL password (and secret query value) removed, the user kept.

    For what is written to disk to be opened again: ``rtsp://nurse:s3cret@10.0.0.5/live``
    becomes ``rtsp://nurse@10.0.0.5/live``, ``?user=a&password=zz`` becomes
    ``?user=a&password=``. A token user name (:func:`is_token_user`) goes with its
    password: ``https://ghp_…@host/x`` becomes ``https://@host/x``. Text without
    credentials comes back unchanged.
    """
    text = str(text)
    if ":/" not in text:
        return text
    text = _USERINFO_RE.sub(_drop_password, text)
    return _SECRET_QUERY_RE.sub(lambda m: m.group("key"), text)


def url_lacks_password(text: str) -> bool:
    """True when the source spec ``text`` is a URL that names a user but gives no password.

    That is what :func:`strip_url_password` leaves of a URL that had one (also an empty
    secret query value such as ``?password=``), so the window can ask for it again; also
    ``https://@host``, what is left of a URL whose user name was a token. A URL that still
    holds its token user name (``https://TOKEN@host``) lacks nothing.
    """
    text = str(text).strip()
    if not _URL_SPEC_RE.match(text):
        return False
    userinfo = _USERINFO_RE.match(text)
    if userinfo is not None:
        user, colon, _password = userinfo.group("userinfo").partition(":")
        if not colon and not is_token_user(user):
            return True
    return any(not m.group("value") for m in _SECRET_QUERY_RE.finditer(text))


def url_lacks_user(text: str) -> bool:
    """True when the source spec ``text`` is a URL whose credentials have an empty user name.

    ``rtsp://@host/live`` is what :func:`strip_url_password` leaves of a URL whose user name
    was a token: the window asks for the whole credentials, not only a password.
    """
    text = str(text).strip()
    if not _URL_SPEC_RE.match(text):
        return False
    userinfo = _USERINFO_RE.match(text)
    return userinfo is not None and not userinfo.group("userinfo").partition(":")[0]
