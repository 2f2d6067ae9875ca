"""The retrained-model registry: every exported model kept, one active, every change logged.

Layout of the registry folder (default ``user_data_dir()/models``)::

    <root>/<model id>/model.onnx           exported by ``painmon export`` (parity-checked)
    <root>/<model id>/model.onnx.sha256    its sidecar
    <root>/<model id>/entry.json           sha256, architecture, metrics, source run
    <root>/state.json                      the active id and the ids active before it
    <root>/registry.log.jsonl              one JSON line per change (UTC time, action, id, sha256)

Activation opens the model with :class:`~painmon.core.live.scoring.OnnxPainModel`, which
checks the file against its sidecar and the SHA-256 recorded at registration: a corrupt or
replaced entry is refused and the active model stays as it was. Rolling back re-activates
the model that was active before, and is logged like every other change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from painmon.core.live.scoring import (
    SIDECAR_SUFFIX,
    ModelLoadError,
    external_data_locations,
    read_sidecar_sha256,
)
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import atomic_write_bytes, atomic_write_json
from painmon.core.util.paths import user_data_dir
from painmon.core.util.timeline import utc_now
from painmon.core.util.validate import is_sha256_hex

log = logging.getLogger(__name__)

MODEL_FILENAME = "model.onnx"
ENTRY_FILENAME = "entry.json"
STATE_FILENAME = "state.json"
LOG_FILENAME = "registry.log.jsonl"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Files of the training run kept beside the model, so an entry explains itself after the
# run folder is gone.
_RUN_FILES_KEPT = ("config.json", "card.md", "history.csv", "splits.json")


class RegistryError(PainmonError, RuntimeError):
    """A registry request that cannot be honoured; the message says what to do."""


def default_registry_dir() -> Path:
    """``user_data_dir()/models`` (``PAINMON_DATA`` moves it)."""
    return user_data_dir() / "models"


@dataclass(frozen=True)
class RegistryEntry:
    """One registered model."""

    model_id: str
    onnx_path: Path
    sha256: str
    registered_utc: str
    architecture: str = ""
    run_dir: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _ID_PATTERN.match(self.model_id):
            raise InvalidInputError(f"invalid model id {self.model_id!r}")
        if not is_sha256_hex(self.sha256):
            raise InvalidInputError(f"sha256 of {self.model_id} must be 64 hex digits")

    def describe(self) -> str:
        """One line for lists and messages."""
        f1 = self.metrics.get("macro_f1")
        score = f", test macro-F1 {f1:.3f}" if isinstance(f1, int | float) else ""
        return f"{self.model_id} ({self.architecture or 'model'}{score}, {self.sha256[:8]})"

    @classmethod
    def from_json(cls, folder: Path) -> RegistryEntry:
        data = json.loads((folder / ENTRY_FILENAME).read_text())
        return cls(
            model_id=data["model_id"],
            onnx_path=folder / MODEL_FILENAME,
            sha256=data["sha256"],
            registered_utc=data["registered_utc"],
            architecture=data.get("architecture", ""),
            run_dir=data.get("run_dir", ""),
            metrics=data.get("metrics", {}),
        )


class ModelRegistry:
    """A folder of exported models with one active model, a rollback stack and a change log."""

    def __init__(
        self, root: str | Path | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.root = Path(root) if root is not None else default_registry_dir()
        self.clock = clock

    # ------------------------------------------------------------------ paths and ids
    @property
    def log_path(self) -> Path:
        return self.root / LOG_FILENAME

    def entry_dir(self, model_id: str) -> Path:
        if not _ID_PATTERN.match(model_id):
            raise RegistryError(f"invalid model id {model_id!r}")
        return self.root / model_id

    def new_id(self, architecture: str) -> str:
        """A fresh id ``<architecture>-<UTC stamp>`` whose folder does not exist yet."""
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", architecture or "model")[:60]
        base = f"{stem}-{self.clock().strftime('%Y%m%d-%H%M%S')}"
        candidate, n = base, 1
        while (self.root / candidate).exists():
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def model_path(self, model_id: str) -> Path:
        """Where ``painmon export --out`` should write the model of ``model_id``."""
        return self.entry_dir(model_id) / MODEL_FILENAME

    # ------------------------------------------------------------------ changes
    def register(
        self,
        onnx_path: str | Path,
        run_dir: str | Path | None,
        metrics: Mapping[str, Any],
        model_id: str | None = None,
    ) -> str:
        """Add an exported model (with its ``.sha256`` sidecar) and return its id; not activated.

        A model already at :meth:`model_path` is registered in place; one elsewhere is
        copied in. The sidecar must match: only verified exports enter the registry.
        """
        source = Path(onnx_path)
        try:
            recorded = read_sidecar_sha256(source) if source.is_file() else None
        except ModelLoadError as exc:
            raise RegistryError(f"{exc}; the model was not registered") from exc
        if recorded is None:
            raise RegistryError(
                f"{source} is not a verified export (the model or its {SIDECAR_SUFFIX} sidecar "
                "is missing); export it with `painmon export`, which writes both"
            )
        model_bytes = source.read_bytes()
        digest = hashlib.sha256(model_bytes).hexdigest()
        if digest != recorded:
            raise RegistryError(
                f"{source} does not match its {SIDECAR_SUFFIX} sidecar; re-export it"
            )
        try:
            outside = external_data_locations(model_bytes)
        except ModelLoadError as exc:
            raise RegistryError(f"{exc}; the model was not registered") from exc
        if outside:
            files = ", ".join(sorted({location for _, location in outside}))
            raise RegistryError(
                f"{source} keeps weights in external files ({files}), which its checksum "
                "does not cover; re-export it with `painmon export` (one self-contained file)"
            )
        run = Path(run_dir) if run_dir is not None else None
        architecture = _architecture(run)
        if model_id is None:
            in_place = source.name == MODEL_FILENAME and source.parent.parent == self.root
            model_id = source.parent.name if in_place else self.new_id(architecture)
        folder = self.entry_dir(model_id)
        if (folder / ENTRY_FILENAME).exists():
            raise RegistryError(f"model id {model_id} is already registered")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / MODEL_FILENAME
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
            # A new sidecar: the old one names the source file, the copy is model.onnx.
            atomic_write_bytes(
                target.with_name(target.name + SIDECAR_SUFFIX),
                f"{digest}  {MODEL_FILENAME}\n".encode(),
            )
        if run is not None:
            for name in _RUN_FILES_KEPT:
                if (run / name).is_file():
                    shutil.copyfile(run / name, folder / f"run_{name}")
        atomic_write_json(
            folder / ENTRY_FILENAME,
            {
                "model_id": model_id,
                "sha256": digest,
                "registered_utc": self.clock().isoformat(),
                "architecture": architecture,
                "run_dir": str(run) if run is not None else "",
                "metrics": dict(metrics),
            },
        )
        self._log("register", model_id, digest)
        log.info("registered model %s (%s)", model_id, digest[:12])
        return model_id

    def activate(self, model_id: str) -> RegistryEntry:
        """Make ``model_id`` the active model after verifying it; the previous one is remembered."""
        entry = self._verified(model_id)
        state = self._state()
        if state["active"] == model_id:
            return entry
        previous = [*state["previous"], state["active"]] if state["active"] else state["previous"]
        self._change("activate", entry, state["active"], previous)
        return entry

    def rollback(self) -> RegistryEntry:
        """Re-activate the model that was active before the current one."""
        state = self._state()
        previous = list(state["previous"])
        if not previous:
            raise RegistryError(
                "there is no previously active model to roll back to"
                + (f" (the active model is {state['active']})" if state["active"] else "")
            )
        target = previous.pop()
        entry = self._verified(target)
        self._change("rollback", entry, state["active"], previous)
        return entry

    # ------------------------------------------------------------------ queries
    def list_entries(self) -> list[RegistryEntry]:
        """Every registered model, oldest first (unreadable folders are skipped with a warning)."""
        entries = []
        if not self.root.is_dir():
            return entries
        for folder in sorted(p for p in self.root.iterdir() if (p / ENTRY_FILENAME).is_file()):
            try:
                entries.append(RegistryEntry.from_json(folder))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping unreadable registry entry %s: %s", folder, exc)
        return sorted(entries, key=lambda e: (e.registered_utc, e.model_id))

    def entry(self, model_id: str) -> RegistryEntry:
        folder = self.entry_dir(model_id)
        if not (folder / ENTRY_FILENAME).is_file():
            raise RegistryError(f"no registered model {model_id!r} in {self.root}")
        try:
            return RegistryEntry.from_json(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"registry entry {model_id!r} ({folder / ENTRY_FILENAME}) is unreadable "
                f"({type(exc).__name__}: {exc}); the active model is unchanged — register the "
                "model again (export it from its run) to use it"
            ) from exc

    def active(self) -> RegistryEntry | None:
        """The active entry, or None when none was activated (file not re-verified here)."""
        active_id = self._state()["active"]
        return self.entry(active_id) if active_id else None

    def previous_id(self) -> str | None:
        """The id :meth:`rollback` would activate, or None."""
        previous = self._state()["previous"]
        return previous[-1] if previous else None

    def log_records(self) -> list[dict[str, Any]]:
        """The change log, oldest first."""
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    # ------------------------------------------------------------------ internals
    def _verified(self, model_id: str) -> RegistryEntry:
        from painmon.core.live.scoring import OnnxPainModel

        entry = self.entry(model_id)
        try:
            # Opening it checks the sidecar, the hash recorded at registration, the metadata.
            OnnxPainModel(entry.onnx_path, prefer="cpu", expected_sha256=entry.sha256)
        except (ModelLoadError, OSError, ValueError) as exc:
            self._log("refused", model_id, entry.sha256, reason=str(exc))
            active = self._state()["active"]
            raise RegistryError(
                f"model {model_id} was refused and not activated: {exc}. The active model is "
                f"unchanged ({active or 'none'}); retrain and export it again"
            ) from exc
        return entry

    def _state(self) -> dict[str, Any]:
        path = self.root / STATE_FILENAME
        if not path.is_file():
            return {"active": None, "previous": []}
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("it is not a registry state (active id, list of previous ids)")
            active, previous = data.get("active"), data.get("previous", [])
            if not (
                (active is None or isinstance(active, str))
                and isinstance(previous, list)
                and all(isinstance(p, str) for p in previous)
            ):
                raise ValueError("it is not a registry state (active id, list of previous ids)")
            return {"active": active, "previous": list(previous)}
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"{path} is unreadable ({exc}); the change log {self.log_path} records which "
                "model was active — restore state.json or activate a model again"
            ) from exc

    def _write_state(self, active: str, previous: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / STATE_FILENAME, {"active": active, "previous": previous})

    def _change(
        self, action: str, entry: RegistryEntry, active: str | None, previous: list[str]
    ) -> None:
        """Make ``entry`` the active model: logged first, so no change goes unlogged; a file
        that cannot be written (a full disk) is a RegistryError with the model unchanged."""
        try:
            self._log(action, entry.model_id, entry.sha256, previous=active)
            self._write_state(entry.model_id, previous)
        except OSError as exc:
            raise RegistryError(
                f"could not record the {action} of model {entry.model_id} in {self.root} "
                f"({exc.strerror or exc}); the active model is unchanged ({active or 'none'}): "
                "free disk space and try again"
            ) from exc

    def _log(self, action: str, model_id: str, sha256: str, **extra: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        record = {
            "time_utc": self.clock().isoformat(),
            "action": action,
            "model_id": model_id,
            "sha256": sha256,
            **extra,
        }
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _architecture(run: Path | None) -> str:
    if run is None:
        return ""
    for name, key in (("best.json", "architecture"), ("config.json", "model")):
        path = run / name
        if path.is_file():
            try:
                return str(json.loads(path.read_text()).get(key, ""))
            except (OSError, ValueError):
                continue
    return ""
