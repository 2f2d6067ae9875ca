"""Reproducibility: device choice, seeding, and a manifest of the software a run used."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import atomic_write_json
from painmon.core.util.timeline import utc_now

log = logging.getLogger(__name__)

# The paper-style reporting seeds: every headline number is a mean over these three runs.
PAPER_SEEDS: tuple[int, ...] = (42, 123, 999)
# cuBLAS needs this set before its first use for deterministic matmuls (CUDA >= 10.2).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_MAX_SEED = 2**32 - 1


class DeviceUnavailableError(PainmonError, RuntimeError):
    """The training device asked for (``--device cuda``, ``mps``...) is not on this machine."""


# Distribution names to try for each reported package (first one installed wins).
_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "onnx": ("onnx",),
    "opencv": (
        "opencv-contrib-python",
        "opencv-python",
        "opencv-contrib-python-headless",
        "opencv-python-headless",
    ),
    "mediapipe": ("mediapipe",),
    "scikit-learn": ("scikit-learn",),
    "painmon": ("painmon",),
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def parse_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as a device, without asking whether it exists."""
    text = str(name).strip().lower()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(
            f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    return device


def check_device_name(name: str) -> None:
    """Refuse a device name that no machine has (``gpu``, ``cuda:x``); ``auto`` passes."""
    if str(name).strip().lower() != "auto":
        parse_device(name)


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch build has no CUDA (torch {torch.__version__}, a CPU-only build)"
    return (
        f"no GPU visible (this PyTorch build has CUDA {torch.version.cuda}, but no NVIDIA GPU "
        "or driver answers; CUDA_VISIBLE_DEVICES may hide it)"
    )


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an unavailable explicit choice is an error."""
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    device = parse_device(name)
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"--device {text}: CUDA is not available: {_no_cuda_reason()}; "
                "use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceUnavailableError(
                f"--device {text}: only {count} CUDA device(s) are visible: "
                f"use cuda:0..cuda:{count - 1}, auto or cpu"
            )
        return device
    if not _mps_available():
        raise DeviceUnavailableError(
            f"--device {text}: Apple MPS is not available here; use --device cpu or auto"
        )
    return device


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all GPUs); with ``deterministic``, ask torch for determinism.

    Deterministic mode warns (rather than fails) on ops without a deterministic kernel.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise InvalidInputError(f"seed must be an int in 0..{_MAX_SEED}, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    # Only affects child processes (e.g. DataLoader workers started by spawn).
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    log.debug("seeded everything with %d (deterministic=%s)", seed, deterministic)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/random seeds from torch's per-worker seed."""
    worker_seed = torch.initial_seed() % (_MAX_SEED + 1)
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def torch_generator(seed: int) -> torch.Generator:
    """A CPU generator for DataLoader shuffling and samplers, independent of global state."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _package_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git, not a checkout, or git hung: the manifest simply lacks it
    return result.stdout.strip()


def _git_state(source_root: Path) -> dict[str, Any]:
    commit = _git(["rev-parse", "HEAD"], source_root)
    if not commit:
        return {"git_commit": None, "git_dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], source_root)
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def environment_manifest() -> dict[str, Any]:
    """Python, OS, package versions, GPU and git commit of the source tree; never raises."""
    cuda = torch.cuda.is_available()
    gpu_names: list[str] = []
    if cuda:
        try:
            gpu_names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except RuntimeError as exc:
            log.warning("could not query CUDA devices: %s", exc)
    manifest: dict[str, Any] = {
        "created_utc": utc_now().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {key: _package_version(names) for key, names in _PACKAGES.items()},
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "gpu": gpu_names[0] if gpu_names else None,
        "gpus": gpu_names,
        "mps_available": _mps_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    manifest.update(_git_state(Path(__file__).resolve().parents[1]))
    return manifest


def write_environment_manifest(path: str | Path) -> Path:
    """Write :func:`environment_manifest` as JSON (atomically) and return the path."""
    return atomic_write_json(path, environment_manifest(), sort_keys=True)
