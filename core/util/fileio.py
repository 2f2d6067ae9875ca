"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def _read_umask() -> int:
    # os.umask can only be read by setting it; do that once, at import, not per write.
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as f:
            write(f)
        # mkstemp makes 0600 files; give the result the permissions a plain open() would.
        Path(tmp_name).chmod(0o666 & ~_UMASK)
        Path(tmp_name).replace(path)  # atomic: os.replace
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def atomic_write_json(path: str | Path, data: Any, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON (numpy scalars/arrays and paths allowed)."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=_json_default) + "\n"
    return atomic_write_text(path, text)


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` without pickle, atomically."""
    return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), binary=True)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
