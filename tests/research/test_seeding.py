"""Reproducibility helpers: seeding, device resolution, environment manifest."""

from __future__ import annotations

import json
import random
import subprocess

import numpy as np
import pytest
import torch

from painmon.core.research import seeding as repro


@pytest.fixture(autouse=True)
def _restore_torch_determinism(monkeypatch):
    """seed_everything flips process-wide torch flags; put them back for other tests."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def _draws() -> tuple[float, np.ndarray, torch.Tensor]:
    return random.random(), np.random.rand(4), torch.rand(4)


def test_seed_everything_repeats_draws():
    repro.seed_everything(123)
    first = _draws()
    repro.seed_everything(123)
    second = _draws()
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    assert torch.equal(first[2], second[2])
    repro.seed_everything(124)
    assert not torch.equal(_draws()[2], first[2])


def test_seed_everything_sets_determinism_flags():
    repro.seed_everything(42, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == repro.CUBLAS_WORKSPACE_CONFIG
    repro.seed_everything(42, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            repro.seed_everything(bad)


def test_paper_seeds_and_generator():
    assert repro.PAPER_SEEDS == (42, 123, 999)
    a = torch.randperm(20, generator=repro.torch_generator(5))
    b = torch.randperm(20, generator=repro.torch_generator(5))
    assert torch.equal(a, b)


def test_resolve_device_choices(monkeypatch):
    assert repro.resolve_device("cpu") == torch.device("cpu")
    auto = repro.resolve_device()
    expected = "cuda" if torch.cuda.is_available() else ("mps" if repro._mps_available() else "cpu")
    assert auto.type == expected
    with pytest.raises(ValueError, match="unknown device"):
        repro.resolve_device("tpu-please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(repro, "_mps_available", lambda: False)
    assert repro.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        repro.resolve_device("cuda")
    with pytest.raises(RuntimeError, match="MPS is not available"):
        repro.resolve_device("mps")


def test_resolve_device_checks_cuda_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert repro.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match="only 1 CUDA device"):
        repro.resolve_device("cuda:3")


def test_environment_manifest_keys_and_file(tmp_path):
    manifest = repro.environment_manifest()
    for key in ("python", "platform", "packages", "cuda_available", "gpu", "git_commit"):
        assert key in manifest
    packages = manifest["packages"]
    for name in ("torch", "numpy", "onnxruntime", "opencv", "mediapipe", "scikit-learn"):
        assert name in packages
    # Wheels may report a local tag (2.11.0+cu130) that the distribution metadata lacks.
    assert packages["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert packages["numpy"] == np.__version__
    if not torch.cuda.is_available():
        assert manifest["gpu"] is None
    path = repro.write_environment_manifest(tmp_path / "run" / "env.json")
    assert json.loads(path.read_text())["python"] == manifest["python"]


def test_environment_manifest_survives_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    manifest = repro.environment_manifest()
    assert manifest["git_commit"] is None and manifest["git_dirty"] is None

    def hung_git(*args, **kwargs):
        raise subprocess.TimeoutExpired("git", 5)

    monkeypatch.setattr(subprocess, "run", hung_git)
    assert repro.environment_manifest()["git_commit"] is None
