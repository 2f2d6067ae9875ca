"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


def _read_umask() -> int:
    # os.umask can only be read by setting it; do that once, at import, not per write.
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | Path, mkdir: bool = True, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` when the ``with`` block ends.

    For writers that want a file name (``torch.onnx.export``, safetensors' ``save_file``)
    and for checks made on the finished file before it is published (a parity check, a
    download's hash): raise inside the block and the temporary file is deleted, ``path``
    untouched. ``mkdir=False`` refuses to create a missing folder (a session folder on a
    drive that was unplugged must fail, not reappear on the disk beneath the mount point).
    ``mode`` (e.g. ``0o600`` for patient data) sets the file's permissions exactly, whatever
    the umask; by default it gets what a plain ``open()`` would give.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 files (so a private file is never readable by others, even for
        # a moment); give the result the requested mode, else what a plain open() would.
        tmp.chmod((0o666 & ~_UMASK) if mode is None else mode)
        tmp.replace(path)  # atomic: os.replace
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | Path,
    write: Callable[[IO[Any]], None],
    binary: bool = False,
    mkdir: bool = True,
    *,
    mode: int | None = None,
) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it into place.

    ``mode`` as in :func:`atomic_path`.
    """
    path = Path(path)
    with (
        atomic_path(path, mkdir=mkdir, mode=mode) as tmp,
        tmp.open("wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f,
    ):
        write(f)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), binary=True)


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
