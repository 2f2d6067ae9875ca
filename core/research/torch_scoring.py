"""Score crops with a research checkpoint (``best.safetensors`` + ``best.json``) through torch.

The bedside runs exported ONNX models; this backend lets a researcher monitor with a
run folder straight from ``painmon train``, on CUDA or the CPU, with the same
interface as :class:`painmon.core.live.scoring.OnnxPainModel` and the same outputs
(calibrated probabilities, top-class Grad-CAM, spatial attention).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.live.engine import ENGINE_ORT_THREADS
from painmon.core.live.scoring import OnnxPainModel, OnnxPrediction, is_checkpoint

log = logging.getLogger(__name__)


class TorchPainModel:
    """A trained checkpoint behind the same ``predict`` interface as an exported model."""

    def __init__(self, run_or_checkpoint: str | Path, device: str = "auto") -> None:
        import torch

        from painmon.core.research.seeding import resolve_device
        from painmon.core.research.train import load_checkpoint

        self.device = resolve_device(device)
        self.model, meta = load_checkpoint(run_or_checkpoint, self.device)
        self.path = Path(run_or_checkpoint)
        self.sha256: str = str(meta.get("weights_sha256", ""))
        self.verified = True  # load_checkpoint refused a file whose hash differs from best.json
        self.temperature = float(meta.get("temperature", 1.0))
        self.class_names: list[str] = list(meta["class_names"])
        self.input_size: tuple[int, int, int] = tuple(int(v) for v in meta["input_size"])
        self.is_demo = False
        self.providers = [f"torch:{self.device}"]
        self.metadata: dict[str, Any] = {
            "architecture": meta["architecture"],
            "model_kwargs": meta.get("model_kwargs", {}),
            "class_names": self.class_names,
            "pspi_mapping": meta.get("pspi_mapping", ""),
            "temperature": self.temperature,
            "crop": dict(meta.get("preprocessing") or {}),
            "training_data_sha256": meta.get("data_sha256", "unknown"),
            "metrics": meta.get("metrics", {}),
            "intended_use": meta.get("intended_use", "research checkpoint; not a medical device"),
        }
        mean = torch.tensor(meta["mean"], dtype=torch.float32, device=self.device)
        std = torch.tensor(meta["std"], dtype=torch.float32, device=self.device)
        self._mean, self._std = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)
        log.info("torch backend: %s on %s", meta["architecture"], self.device)

    def predict(self, crops_uint8: np.ndarray) -> OnnxPrediction:
        """uint8 RGB crops (B, H, W, 3) -> calibrated probs, Grad-CAM, attention (numpy)."""
        import torch

        from painmon.models import gradcam_from_gradient

        crops = np.asarray(crops_uint8)
        _, height, width = self.input_size
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
            raise ValueError(f"crops must be uint8 (B, {height}, {width}, 3), got "
                             f"{crops.dtype} {crops.shape}")  # fmt: skip
        with torch.no_grad():
            x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float() / 255.0
            x = (x - self._mean) / self._std
            features = self.model.forward_features(x)
            logits, grad = self.model.head.logits_and_input_gradient(features, None)
            probs = torch.softmax(logits / self.temperature, dim=1)
            cam = gradcam_from_gradient(features, grad)
            attention = self.model.attention_maps(x)
            if attention is None:
                attention = torch.ones_like(cam).unsqueeze(1)
        return OnnxPrediction(
            probs.float().cpu().numpy(), cam.float().cpu().numpy(), attention.float().cpu().numpy()
        )


def load_pain_model(model_path: str | Path) -> Any:
    """An exported .onnx through ONNX Runtime, or a research run folder through torch."""
    if is_checkpoint(model_path):
        return TorchPainModel(model_path)
    return OnnxPainModel(model_path, intra_op_num_threads=ENGINE_ORT_THREADS)
