"""Score crops with a research checkpoint (``best.safetensors`` + ``best.json``) through torch.

The bedside runs exported ONNX models; this backend lets a researcher monitor with a
run folder straight from ``painmon train``, on CUDA or the CPU, with the same
interface as :class:`painmon.core.live.scoring.OnnxPainModel` and the same outputs
(calibrated probabilities, top-class Grad-CAM, spatial attention): crops go through
:class:`painmon.core.research.export.PainExportWrapper`, the very module the ONNX graph
is exported from, so the inference head exists once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.live.engine import ENGINE_ORT_THREADS
from painmon.core.live.scoring import (
    ModelLoadError,
    OnnxPainModel,
    OnnxPrediction,
    PrevalenceCorrection,
    is_checkpoint,
    model_prevalence_correction,
)
from painmon.core.util.model_cfg import PainModelCfg, thaw

log = logging.getLogger(__name__)


class TorchPainModel:
    """A trained checkpoint behind the same ``predict`` interface as an exported model.

    Like :class:`~painmon.core.live.scoring.OnnxPainModel` it carries the ward's
    ``prevalence`` correction (``prevalence``, else ``$PAINMON_PREVALENCE``, else the
    training data's class frequencies) for the engine to apply; ``predict`` returns the
    network's own probabilities, as the exported graph does.
    """

    def __init__(
        self,
        run_or_checkpoint: str | Path,
        device: str = "auto",
        *,
        prevalence: Sequence[float] | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        from painmon.core.research.export import PainExportWrapper
        from painmon.core.research.seeding import resolve_device
        from painmon.core.research.train import load_checkpoint

        self.device = resolve_device(device)
        self.model, meta = load_checkpoint(run_or_checkpoint, self.device)
        self.path = Path(run_or_checkpoint)
        # load_checkpoint refused weights without a recorded hash or with another one.
        self.sha256: str = str(meta["weights_sha256"])
        self.verified = True
        # load_checkpoint read best.json into the model's config (PainModelCfg).
        self.cfg: PainModelCfg = self.model.pretrained_cfg
        self.temperature = self.cfg.temperature
        self.class_names: list[str] = list(self.cfg.class_names)
        self.input_size: tuple[int, int, int] = self.cfg.input_size
        self.is_demo = False
        self.providers = [f"torch:{self.device}"]
        # The domain gate is fitted at export (it needs the training crops); a run folder
        # has none, and the bedside says so.
        self.domain_gate = None
        self.metadata: dict[str, Any] = {
            "architecture": self.cfg.architecture,
            "model_kwargs": thaw(self.cfg.model_kwargs),
            "class_names": self.class_names,
            "pspi_mapping": self.cfg.pspi_mapping,
            "temperature": self.temperature,
            "crop": thaw(self.cfg.crop),
            "training_data_sha256": meta.get("data_sha256", "unknown"),
            "metrics": meta.get("metrics", {}),
            "intended_use": meta.get("intended_use", "research checkpoint; not a medical device"),
        }
        self.prevalence = self._prevalence(prevalence, env)
        # uint8 NHWC crops -> (probs, gradcam, attention), exactly as the exported graph.
        self._head = PainExportWrapper(
            self.model, self.cfg.mean, self.cfg.std, self.temperature
        ).to(self.device)
        log.info("torch backend: %s on %s", self.cfg.architecture, self.device)

    def _prevalence(
        self, prevalence: Sequence[float] | str | None, env: Mapping[str, str] | None
    ) -> PrevalenceCorrection | None:
        """The same correction the run's ONNX export gets (one function for both backends)."""
        if self.cfg.class_prevalence is not None:
            return model_prevalence_correction(self.cfg, self.path, prevalence, env)
        # Runs trained before checkpoints recorded their class frequencies: their export
        # counts them from the training crops, so the two backends would disagree.
        try:
            correction = model_prevalence_correction(self.cfg, self.path, prevalence, env)
        except ModelLoadError:
            raise ModelLoadError(
                f"{self.path}: a ward prevalence was given but this run records no training "
                "class frequencies to correct from (trained before painmon recorded them); "
                "retrain it, or export it (the export counts them from the training crops)"
            ) from None
        log.warning(
            "%s records no training class frequencies (trained before painmon recorded them): "
            "its probabilities are not prevalence-corrected, its ONNX export's are; retrain "
            "it, or monitor with the export",
            self.path,
        )
        return correction

    def predict(self, crops_uint8: np.ndarray) -> OnnxPrediction:
        """uint8 RGB crops (B, H, W, 3) -> calibrated probs, Grad-CAM, attention (numpy)."""
        import torch

        crops = np.asarray(crops_uint8)
        _, height, width = self.input_size
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
            raise ValueError(f"crops must be uint8 (B, {height}, {width}, 3), got "
                             f"{crops.dtype} {crops.shape}")  # fmt: skip
        with torch.no_grad():
            probs, cam, attention = self._head(torch.from_numpy(crops).to(self.device))
        return OnnxPrediction(
            probs.float().cpu().numpy(), cam.float().cpu().numpy(), attention.float().cpu().numpy()
        )


def load_pain_model(model_path: str | Path) -> Any:
    """An exported .onnx through ONNX Runtime, or a research run folder through torch."""
    if is_checkpoint(model_path):
        return TorchPainModel(model_path)
    return OnnxPainModel(model_path, intra_op_num_threads=ENGINE_ORT_THREADS)
