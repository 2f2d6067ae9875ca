"""Where painmon finds things on disk: the user cache, the face model, shared test media."""

from __future__ import annotations

import importlib.util
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


FACE_MODEL_HAAR = "haar"
"""``--face-model haar`` (or ``PAINMON_FACE_MODEL=haar``): OpenCV's Haar cascade, on purpose."""


def shipped_face_model_path() -> Path | None:
    """The Face Landmarker bundle that ships inside painmon (None in a build without it)."""
    # find_spec, not import: painmon.models pulls in torch, which a bedside install lacks.
    spec = importlib.util.find_spec("painmon.models")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = root / "face" / FACE_LANDMARKER_FILENAME
    return path if path.is_file() else None


def find_face_model(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The Face Landmarker bundle to use, or None for the Haar fallback.

    Looked for at the explicit path, ``PAINMON_FACE_MODEL``, the user cache (``painmon
    models download``), then the copy shipped with painmon. An explicit path or environment
    value that does not exist is an error (the user asked for it); ``haar`` there chooses
    the Haar cascade on purpose.
    """
    for source, value in (
        ("--face-model", explicit),
        ("PAINMON_FACE_MODEL", os.environ.get("PAINMON_FACE_MODEL")),
    ):
        if value:
            if str(value).strip().lower() == FACE_MODEL_HAAR:
                return None
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"face model given by {source} not found: {path}. Point it at "
                    "face_landmarker.task, or leave it out to use the bundle painmon ships."
                )
            return path
    cached = user_cache_dir() / "models" / FACE_LANDMARKER_FILENAME
    if cached.is_file():
        return cached
    return shipped_face_model_path()


def haar_requested(explicit: str | os.PathLike[str] | None = None) -> bool:
    """Whether the user chose the Haar cascade (``--face-model haar`` or the environment)."""
    value = explicit or os.environ.get("PAINMON_FACE_MODEL")
    return bool(value) and str(value).strip().lower() == FACE_MODEL_HAAR


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
