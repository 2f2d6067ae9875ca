"""Model files on the user's machine: fetch the Face Landmarker bundle, list what is installed.

The Face Landmarker bundle is not shipped with painmon; ``painmon models download``
fetches it into the user cache, hashing while it streams and renaming it into place
only once the SHA-256 matches the pinned release. Without it painmon keeps running on
OpenCV's Haar cascade, so every failure here says so and how to recover.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import sha256_file
from painmon.core.util.paths import (
    FACE_LANDMARKER_FILENAME,
    FACE_LANDMARKER_SHA256,
    FACE_LANDMARKER_URL,
    find_face_model,
    haar_requested,
    shipped_face_model_path,
    user_cache_dir,
)
from painmon.core.util.validate import is_sha256_hex

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, total_bytes)``; total is None when the server gives none."""

CHUNK_BYTES = 1 << 16
DEMO_MODEL_RELATIVE = Path("demo") / "painmon_demo.onnx"
HAAR_CASCADE_FILENAME = "haarcascade_frontalface_default.xml"


class ModelDownloadError(PainmonError, RuntimeError):
    """The face model could not be fetched or did not match its pinned SHA-256."""


def models_dir() -> Path:
    """Where downloaded and user-exported models live: ``user_cache_dir()/models``."""
    return user_cache_dir() / "models"


def _fallback_advice(url: str, target: Path, expected_sha256: str) -> str:
    return (
        "painmon keeps working without it: face detection falls back to OpenCV's Haar "
        "cascade (coarser with turned heads and poor light). To retry, run "
        "`painmon models download` once the machine is online; on a machine without "
        f"internet, fetch {url} elsewhere and copy it to {target} "
        f"(SHA-256 {expected_sha256}), or point PAINMON_FACE_MODEL at it."
    )


def _network_error(
    exc: BaseException, url: str, target: Path, expected_sha256: str
) -> ModelDownloadError:
    if isinstance(exc, urllib.error.HTTPError):
        what = f"the server refused the face model download ({url}: HTTP {exc.code} {exc.reason})"
    else:
        reason = getattr(exc, "reason", None) or exc
        what = f"could not download the face model from {url} (no network? {reason})"
    return ModelDownloadError(f"{what}. {_fallback_advice(url, target, expected_sha256)}")


def _check_sha256(value: str) -> str:
    digest = value.strip().lower()
    if not is_sha256_hex(digest):
        raise ValueError(f"expected_sha256 must be 64 hex digits, got {value!r}")
    return digest


def download_face_model(
    dest_dir: str | os.PathLike[str] | None = None,
    url: str = FACE_LANDMARKER_URL,
    expected_sha256: str = FACE_LANDMARKER_SHA256,
    timeout_s: float = 30.0,
    opener: Callable[..., Any] | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch the Face Landmarker bundle into ``dest_dir`` (default: the user models folder).

    A file already there with the right SHA-256 is returned without touching the network
    unless ``force``. ``opener(url, timeout=...)`` defaults to ``urllib.request.urlopen``.
    Raises :class:`ModelDownloadError` when offline or when the bytes do not verify.
    """
    expected = _check_sha256(expected_sha256)
    if timeout_s <= 0:
        raise InvalidInputError(f"timeout_s must be positive, got {timeout_s}")
    folder = Path(dest_dir).expanduser() if dest_dir is not None else models_dir()
    target = folder / FACE_LANDMARKER_FILENAME
    if target.is_file() and not force:
        if sha256_file(target) == expected:
            log.info("face model already installed and verified: %s", target)
            return target
        log.warning("face model at %s does not match the pinned SHA-256; downloading again", target)

    folder.mkdir(parents=True, exist_ok=True)
    open_url = opener if opener is not None else urllib.request.urlopen
    fd, tmp_name = tempfile.mkstemp(
        dir=folder, prefix=f".{FACE_LANDMARKER_FILENAME}.", suffix=".part"
    )
    tmp_path = Path(tmp_name)
    try:
        digest, size_bytes = _stream(open_url, url, timeout_s, fd, target, expected, progress)
        actual = digest.hexdigest()
        if actual != expected:
            tmp_path.unlink(missing_ok=True)
            raise ModelDownloadError(
                f"the file downloaded from {url} ({size_bytes} bytes) has SHA-256 {actual}, "
                f"expected {expected}; it was deleted. A proxy, a captive portal or a "
                "changed release can cause this. Retry `painmon models download`; if it "
                "fails again, copy the verified face_landmarker.task by hand to "
                f"{target}. Until then face detection uses OpenCV's Haar cascade."
            )
        tmp_path.replace(target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    log.info("face model downloaded and verified (%d bytes): %s", size_bytes, target)
    return target


def _stream(
    open_url: Callable[..., Any],
    url: str,
    timeout_s: float,
    fd: int,
    target: Path,
    expected: str,
    progress: ProgressCallback | None,
) -> tuple[Any, int]:
    """Copy the response body into ``fd`` while hashing it; network failures become one error."""
    digest = hashlib.sha256()
    done_bytes = 0
    with os.fdopen(fd, "wb") as sink:
        try:
            response = open_url(url, timeout=timeout_s)
        except (OSError, http.client.HTTPException) as exc:
            raise _network_error(exc, url, target, expected) from exc
        with response:
            headers = getattr(response, "headers", None)
            length = headers.get("Content-Length") if headers is not None else None
            total_bytes = int(length) if length and length.isdigit() else None
            if progress is not None:
                progress(0, total_bytes)
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    raise _network_error(exc, url, target, expected) from exc
                if not chunk:
                    break
                digest.update(chunk)
                sink.write(chunk)  # a full disk raises OSError here, not a "network" error
                done_bytes += len(chunk)
                if progress is not None:
                    progress(done_bytes, total_bytes)
        if total_bytes is not None and done_bytes != total_bytes:
            raise ModelDownloadError(
                f"the face model download stopped after {done_bytes} of {total_bytes} bytes. "
                f"{_fallback_advice(url, target, expected)}"
            )
        sink.flush()
        os.fsync(sink.fileno())
    return digest, done_bytes


# --- what is installed --------------------------------------------------------------------


class ModelKind(StrEnum):
    FACE_DETECTOR = "face detector"
    PAIN_MODEL = "pain model"


@dataclass(frozen=True)
class InstalledModel:
    """One model file painmon can see, and whether it can be trusted."""

    kind: ModelKind
    name: str
    status: str  # short human text: installed, not installed, hash mismatch...
    detail: str = ""
    path: str | None = None
    sha256: str | None = None  # of the file
    verified: bool | None = None  # None: nothing to check it against
    active: bool = False  # the face detector painmon would use now

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ModelKind(self.kind))
        if self.sha256 is not None and not is_sha256_hex(self.sha256):
            raise ValueError(f"not a SHA-256 hex digest: {self.sha256!r}")


def _face_entries() -> list[InstalledModel]:
    """The MediaPipe bundle and the Haar cascade, marking the one the face tracker picks."""
    name = "MediaPipe Face Landmarker"
    haar_chosen = haar_requested()
    try:
        bundle = shipped_face_model_path() if haar_chosen else find_face_model()
    except FileNotFoundError as exc:  # PAINMON_FACE_MODEL names a file that is not there
        entry = InstalledModel(ModelKind.FACE_DETECTOR, name, "missing", str(exc))
        bundle = None
    else:
        if bundle is None:
            entry = InstalledModel(
                ModelKind.FACE_DETECTOR,
                name,
                "not installed",
                "this build ships no bundle: reinstall painmon or run `painmon models download` "
                f"(goes to {models_dir()})",
            )
        else:
            digest = sha256_file(bundle)
            verified = digest == FACE_LANDMARKER_SHA256
            shipped = bundle == shipped_face_model_path()
            entry = InstalledModel(
                ModelKind.FACE_DETECTOR,
                name,
                status="installed" if verified else "hash mismatch",
                detail=(
                    ("pinned release, shipped with painmon" if shipped else "pinned release")
                    if verified
                    else f"expected {FACE_LANDMARKER_SHA256[:12]}…; MediaPipe will refuse it: "
                    "delete it and run `painmon models download`"
                ),
                path=str(bundle),
                sha256=digest,
                verified=verified,
                active=not haar_chosen,
            )
    haar = InstalledModel(
        ModelKind.FACE_DETECTOR,
        "OpenCV Haar cascade",
        status="shipped with OpenCV",
        detail=(
            "chosen with PAINMON_FACE_MODEL=haar"
            if haar_chosen
            else "fallback when no Face Landmarker bundle is found (or --face-model haar)"
        ),
        path=_haar_cascade_path(),
        active=haar_chosen or bundle is None,
    )
    return [entry, haar]


def _haar_cascade_path() -> str | None:
    try:
        import cv2
    except ImportError:
        return None
    return str(Path(cv2.data.haarcascades) / HAAR_CASCADE_FILENAME)


def _onnx_entry(path: Path, name: str) -> InstalledModel:
    from painmon.core.live.scoring import ModelIntegrityError, read_sidecar_sha256

    row = partial(
        InstalledModel, ModelKind.PAIN_MODEL, name, path=str(path), sha256=sha256_file(path)
    )
    try:
        recorded = read_sidecar_sha256(path)
    except ModelIntegrityError as exc:
        return row(status="bad sidecar", detail=str(exc), verified=False)
    if recorded is None:
        detail = f"no {path.name}.sha256 beside it; re-export it to write one"
        return row(status="unverified", detail=detail, verified=None)
    if recorded != row.keywords["sha256"]:
        detail = f"{path.name}.sha256 says {recorded[:12]}…; re-export or delete it"
        return row(status="hash mismatch", detail=detail, verified=False)
    return row(status="installed", detail="matches its .sha256", verified=True)


def shipped_demo_model_path() -> Path:
    """Where the packaged demo pain model lives (it may not be shipped in this build)."""
    # find_spec, not import: painmon.models pulls in torch, which a bedside bundle lacks.
    spec = importlib.util.find_spec("painmon.models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("painmon.models is not installed; reinstall painmon")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / DEMO_MODEL_RELATIVE


def _pain_entries() -> list[InstalledModel]:
    demo = shipped_demo_model_path()
    name = "demo model (shipped)"
    if demo.is_file():
        entries = [_onnx_entry(demo, name)]
    else:
        detail = f"this build has no {DEMO_MODEL_RELATIVE.as_posix()}"
        entries = [InstalledModel(ModelKind.PAIN_MODEL, name, "not shipped yet", detail)]
    folder = models_dir()
    if folder.is_dir():
        entries.extend(_onnx_entry(p, p.name) for p in sorted(folder.glob("*.onnx")))
    return entries


def installed_models() -> list[InstalledModel]:
    """Every model painmon can see: the face detectors first, then the pain models."""
    return [*_face_entries(), *_pain_entries()]


def active_face_detector(entries: list[InstalledModel] | None = None) -> str:
    """``mediapipe`` when a bundle is found, else ``haar`` (as the face tracker decides)."""
    rows = installed_models() if entries is None else entries
    for row in rows:
        if row.kind is ModelKind.FACE_DETECTOR and row.active:
            return "mediapipe" if row.name.startswith("MediaPipe") else "haar"
    return "haar"


def format_installed_models(entries: list[InstalledModel] | None = None) -> str:
    """The "installed" section that ``painmon models list`` prints under the model zoo."""
    rows = installed_models() if entries is None else entries
    header = ("kind", "name", "status", "sha256", "path")
    lines = [header]
    for row in rows:
        status = row.status + (" (active)" if row.active else "")
        digest = f"{row.sha256[:12]}…" if row.sha256 else "-"
        lines.append((row.kind.value, row.name, status, digest, row.path or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    table = [
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    ]
    notes = [f"  {row.name}: {row.detail}" for row in rows if row.detail]
    return "\n".join(
        [
            "Installed models",
            *table,
            "",
            f"Active face detector: {active_face_detector(rows)}",
            *notes,
        ]
    )
