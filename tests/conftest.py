"""Shared fixtures: real-face media and the face model live in ../shared (never committed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GLOG_minloglevel", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PAINMON_SHARED", REPO_ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        message = f"shared test file missing: {path} (set PAINMON_SHARED to the shared/ folder)"
        if IN_CI:
            pytest.fail(message)  # under CI these tests must run, never skip
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_file():
    """Return a function giving the path of a file in ../shared, verified against SHA256SUMS."""
    sums = {}
    sums_file = SHARED / "SHA256SUMS"
    if sums_file.is_file():
        for line in sums_file.read_text().splitlines():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest.strip()

    def get(relative: str) -> Path:
        path = _shared_file(relative)
        expected = sums.get(relative)
        if expected is not None:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            assert actual == expected, f"{path} does not match shared/SHA256SUMS"
        return path

    return get


@pytest.fixture(scope="session")
def face_model_path(shared_file) -> Path:
    """The MediaPipe Face Landmarker bundle from ../shared/models."""
    return shared_file("models/face_landmarker.task")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """No test reads or writes the real user cache."""
    cache = tmp_path_factory.mktemp("painmon-cache")
    monkeypatch.setenv("PAINMON_CACHE", str(cache))
    monkeypatch.delenv("PAINMON_FACE_MODEL", raising=False)


def make_toy_crops(n: int, seed: int):
    """Crops whose brightness encodes the class 0..4: learnable in a few epochs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(5), n // 5 + 1)[:n]
    images = rng.integers(0, 40, (n, 64, 64, 3)).astype(np.int64) + labels[:, None, None, None] * 50
    return images.clip(0, 255).astype(np.uint8), labels


def make_toy_gate_data(n: int = 60, seed: int = 0):
    """Domain-gate data from toy crops: 4/5 fit the gate, 1/5 set its threshold."""
    from painmon.core.research.export import GateData

    images, labels = make_toy_crops(n, seed)
    split = n * 4 // 5
    return GateData(images[:split], labels[:split], images[split:], 4, 1)


@pytest.fixture(scope="session")
def toy_gate_data():
    """Domain-gate data (:class:`GateData`) from toy crops."""
    return make_toy_gate_data()


@pytest.fixture(scope="session")
def toy_crops():
    """``toy_crops(n, seed) -> (uint8 crops (n,64,64,3), labels)``."""
    return make_toy_crops


def _export_untrained_dacnn(run_dir: Path, **export_kwargs) -> Path:
    import torch

    from painmon.core.research.export import export_onnx
    from painmon.core.research.train import checkpoint_meta, save_checkpoint
    from painmon.models import create_model

    torch.manual_seed(0)
    model = create_model("dacnn").eval()
    checkpoint = run_dir / "best.safetensors"
    save_checkpoint(model, checkpoint, checkpoint_meta(model, temperature=1.0,
                                                       data_sha256="cd" * 32, epoch=0))  # fmt: skip
    out = run_dir / "dacnn.onnx"
    export_onnx(checkpoint, out, **export_kwargs)
    return out


@pytest.fixture(scope="session")
def untrained_dacnn_onnx(tmp_path_factory) -> Path:
    """A freshly initialised DA-CNN exported to ONNX without a domain gate (it scores every
    face, which pipeline tests need); its folder is also a run folder."""
    return _export_untrained_dacnn(tmp_path_factory.mktemp("dacnn-untrained"), domain_gate=False)


@pytest.fixture(scope="session")
def gated_dacnn_onnx(tmp_path_factory) -> Path:
    """The same untrained DA-CNN with a domain gate fitted on toy crops: every real or
    synthetic face lies far outside that domain."""
    return _export_untrained_dacnn(
        tmp_path_factory.mktemp("dacnn-gated"), gate_data=make_toy_gate_data()
    )
