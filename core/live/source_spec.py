"""The spelling of a video source (``camera:N``, ``synthetic[:SEED]``, a stream URL, a path).

Pure and cheap (no OpenCV): the command line checks a source before it loads a model or
opens a window, and :func:`painmon.core.live.capture.open_source` checks it again.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from painmon.core.util.errors import PainmonError
from painmon.core.util.redact import redact_source

URL_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "http", "https")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WHOLE_NUMBER = re.compile(r"[0-9]+")
SOURCE_KINDS = (
    "camera:N for a camera, rtsp://... for a network camera, a video file, an image folder "
    "or synthetic for the demo patient"
)


class SourceSpecError(PainmonError, ValueError):
    """A source that cannot be right whatever is plugged in (a typo, a bad port...)."""


def check_source_spec(spec: str, *, check_path: bool = False) -> str:
    """``spec`` stripped, or :class:`SourceSpecError` saying what is wrong with its spelling.

    With ``check_path``, a spec that is neither a camera, the synthetic patient nor a URL
    must name an existing file or folder.
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceSpecError(f"no video source given: use {SOURCE_KINDS}")
    lowered = spec.lower()
    if lowered.startswith("camera:"):
        number = spec.split(":", 1)[1].strip()
        if not _WHOLE_NUMBER.fullmatch(number):
            raise SourceSpecError(
                f"camera source {spec!r} needs a camera number, e.g. camera:0 for the first camera"
            )
        return spec
    if lowered == "synthetic" or lowered.startswith("synthetic:"):
        seed = spec.split(":", 1)[1].strip() if ":" in spec else "0"
        if not _WHOLE_NUMBER.fullmatch(seed):
            raise SourceSpecError(
                f"synthetic source {spec!r} needs a whole-number seed, e.g. synthetic:3"
            )
        return spec
    match = _SCHEME.match(spec)
    if match:
        scheme = match.group(1).lower()
        shown = redact_source(spec)
        if scheme not in URL_SCHEMES:
            raise SourceSpecError(
                f"{scheme}:// sources are not supported ({shown}): use "
                f"{', '.join(s + '://' for s in URL_SCHEMES)} for a network camera, or a file path"
            )
        parts = urllib.parse.urlsplit(spec)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise SourceSpecError(
                f"stream URL {shown} has a bad port: give 1-65535, e.g. "
                f"{scheme}://camera.local:554/stream"
            )
        if not parts.hostname:
            raise SourceSpecError(
                f"stream URL {shown} names no host, e.g. {scheme}://camera.local:554/stream"
            )
        return spec
    if check_path and not Path(spec).expanduser().exists():
        raise SourceSpecError(
            f"no file or folder at {redact_source(spec)}: check the path, or use {SOURCE_KINDS}"
        )
    return spec


def is_stream_url(spec: object) -> bool:
    """Whether ``spec`` is a URL of a scheme painmon streams from."""
    return isinstance(spec, str) and urllib.parse.urlsplit(spec).scheme.lower() in URL_SCHEMES
