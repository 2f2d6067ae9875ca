"""Research checkpoints score crops through torch exactly as their ONNX export does."""

from __future__ import annotations

import numpy as np
import pytest

from painmon.core.live.scoring import OnnxPainModel, is_checkpoint
from painmon.core.research.export import export_onnx
from painmon.core.research.torch_scoring import TorchPainModel
from painmon.core.research.train import TrainConfig, fit


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(5), 8)
    images = (rng.integers(0, 60, (40, 64, 64, 3)) + labels[:, None, None, None] * 40).astype(
        np.uint8
    )
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(model="dacnn", epochs=1, batch_size=8, device="cpu", warmup_epochs=0)
    fit(cfg, images, labels, images, labels, out, progress=False)
    return out


def test_torch_backend_matches_the_onnx_export(run_dir, tmp_path, toy_gate_data):
    torch_model = TorchPainModel(run_dir, device="cpu")
    exported = export_onnx(run_dir, tmp_path / "m.onnx", gate_data=toy_gate_data)
    onnx_model = OnnxPainModel(exported.onnx_path, prefer="cpu")
    crops = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    a, b = torch_model.predict(crops), onnx_model.predict(crops)
    for name in ("probs", "gradcam", "attention"):
        assert np.allclose(getattr(a, name), getattr(b, name), atol=1e-4), name
    assert np.allclose(a.probs.sum(axis=1), 1.0, atol=1e-5)
    assert torch_model.providers == ["torch:cpu"] and not torch_model.is_demo
    assert torch_model.input_size == onnx_model.input_size
    assert torch_model.class_names == onnx_model.class_names
    with pytest.raises(ValueError, match="uint8"):
        torch_model.predict(crops.astype(np.float32))


def test_is_checkpoint_tells_run_folders_from_onnx(run_dir, tmp_path):
    assert is_checkpoint(run_dir) and is_checkpoint(run_dir / "best.safetensors")
    assert not is_checkpoint(tmp_path / "model.onnx") and not is_checkpoint(tmp_path)


def test_the_torch_backend_refuses_an_unverified_run_folder(run_dir, tmp_path):
    import hashlib
    import json

    from painmon.core.util.errors import InvalidInputError

    model = TorchPainModel(run_dir, device="cpu")
    weights = (run_dir / "best.safetensors").read_bytes()
    assert model.verified and model.sha256 == hashlib.sha256(weights).hexdigest()
    (tmp_path / "best.safetensors").write_bytes(weights)
    meta = json.loads((run_dir / "best.json").read_text())
    del meta["weights_sha256"]
    (tmp_path / "best.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidInputError, match=r"best\.json records no valid weights_sha256"):
        TorchPainModel(tmp_path, device="cpu")


def test_the_torch_backend_on_a_missing_gpu_is_one_clear_error(run_dir, monkeypatch):
    import torch

    from painmon.core.research.seeding import DeviceUnavailableError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="use --device cpu or auto"):
        TorchPainModel(run_dir, device="cuda")
