"""The interface every painmon network offers, its preprocessing config, and Grad-CAM."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from painmon.core.util.labels import DEFAULT_CLASS_NAMES, NUM_CLASSES, pspi_mapping_text
from painmon.core.util.model_cfg import PainModelCfg
from painmon.models.layers import ClassifierHead

INPUT_SIZE: tuple[int, int, int] = (3, 64, 64)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Below this the heatmap is treated as all-zero rather than stretched from noise.
GRADCAM_EPS = 1e-12


def make_pretrained_cfg(
    architecture: str, model_kwargs: Mapping[str, Any], num_classes: int
) -> PainModelCfg:
    """Preprocessing and rebuild information that travels with the weights (timm PretrainedCfg)."""
    names = (
        DEFAULT_CLASS_NAMES
        if num_classes == NUM_CLASSES
        else tuple(f"class {i}" for i in range(num_classes))
    )
    return PainModelCfg(
        architecture=architecture,
        model_kwargs=model_kwargs,
        input_size=INPUT_SIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=names,
        pspi_mapping=pspi_mapping_text() if num_classes == NUM_CLASSES else None,
    )


class PainModel(nn.Module, abc.ABC):
    """Common interface: features for Grad-CAM, a shared :class:`ClassifierHead`, attention maps.

    Subclasses set ``head``, ``gradcam_layer`` (the submodule whose output is what
    :meth:`forward_features` returns) and ``pretrained_cfg``.
    """

    head: ClassifierHead
    gradcam_layer: str
    pretrained_cfg: PainModelCfg

    @abc.abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """The attention-refined feature map (B, C, h, w) that Grad-CAM explains."""

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits (B, num_classes) from :meth:`forward_features` output."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def attention_maps(self, x: Tensor) -> Tensor | None:
        """Spatial attention maps (B, K, h, w) in 0..1, or None when the model has none."""
        return None

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def normalise_heatmap(cam: Tensor) -> Tensor:
    """Scale each (h, w) map by its own maximum so it spans 0..1; an all-zero map stays zero."""
    peak = cam.flatten(1).amax(dim=1).clamp_min(GRADCAM_EPS)
    return cam / peak[:, None, None]


def gradcam_from_gradient(features: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM heatmap (B, h, w): ReLU(sum_c mean_hw(grad)_c * F_c), normalised per image."""
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return normalise_heatmap(torch.relu((weights * features).sum(dim=1)))


def gradcam(model: PainModel, x: Tensor, class_index: int | Tensor | None = None) -> Tensor:
    """Grad-CAM heatmap (B, h, w) in 0..1 for ``class_index`` (None: each image's top class).

    Uses the head's explicit gradient, so it needs no autograd and the model in eval mode.
    """
    if model.training:
        raise RuntimeError("gradcam needs the model in eval mode; call model.eval() first")
    with torch.no_grad():
        features = model.forward_features(x)
        grad = model.head.input_gradient(features, class_index)
        return gradcam_from_gradient(features, grad)


def upsample_heatmap(cam: Tensor, size_px: int) -> Tensor:
    """Bilinear upsampling of (B, h, w) heatmaps to the crop size, kept in 0..1."""
    up = torch.nn.functional.interpolate(
        cam.unsqueeze(1), size=(size_px, size_px), mode="bilinear", align_corners=False
    )
    return up.squeeze(1).clamp(0.0, 1.0)


def saliency_map(model: PainModel, x: Tensor, class_index: int | Tensor | None = None) -> Tensor:
    """Vanilla-gradient saliency (B, H, W) in 0..1: max over channels of |d logit / d input|.

    The paper's Fig. 12 companion to Grad-CAM; research-only (needs autograd).
    """
    if model.training:
        raise RuntimeError("saliency_map needs the model in eval mode; call model.eval() first")
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs)
        if class_index is None:
            index = logits.argmax(dim=1)
        elif isinstance(class_index, int):
            index = torch.full((x.shape[0],), class_index, dtype=torch.long, device=x.device)
        else:
            index = class_index.to(device=x.device, dtype=torch.long)
        chosen = logits.gather(1, index.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(chosen, inputs)
    return normalise_heatmap(grad.abs().amax(dim=1))
