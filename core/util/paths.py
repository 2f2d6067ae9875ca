"""Where painmon finds things on disk: the user cache, the face model, shared test media."""

from __future__ import annotations

import os
import sys
from pathlib import Path

FACE_LANDMARKER_FILENAME = "face_landmarker.task"
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
FACE_LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/"
    "face_landmarker/float16/1/face_landmarker.task"
)


def user_cache_dir() -> Path:
    """Per-user cache folder (``PAINMON_CACHE`` overrides; XDG on Linux)."""
    override = os.environ.get("PAINMON_CACHE")
    if override:
        return Path(override).expanduser()
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "painmon" / "cache"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "painmon"


def find_face_model(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The Face Landmarker bundle: explicit path, ``PAINMON_FACE_MODEL``, then the user cache.

    An explicit path or environment value that does not exist is an error (the
    user asked for it); an empty cache simply means "use the Haar fallback".
    """
    for source, value in (
        ("--face-model", explicit),
        ("PAINMON_FACE_MODEL", os.environ.get("PAINMON_FACE_MODEL")),
    ):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"face model given by {source} not found: {path}. "
                    "Run `painmon models download` or point it at face_landmarker.task."
                )
            return path
    cached = user_cache_dir() / "models" / FACE_LANDMARKER_FILENAME
    return cached if cached.is_file() else None


def user_data_dir() -> Path:
    """Per-user data folder (``PAINMON_DATA`` overrides; XDG_DATA_HOME on Linux)."""
    override = os.environ.get("PAINMON_DATA")
    if override:
        return Path(override).expanduser()
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "painmon" / "data"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "painmon"
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "painmon"


def default_sessions_dir() -> Path:
    """Where monitoring sessions go unless the user picks a folder."""
    return user_data_dir() / "sessions"
