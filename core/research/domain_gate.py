"""The domain gate: does a face crop look like this model's training crops?

A network trained on one kind of face (drawn synthetic patients, or UNBC's shoulder-pain
videos) still returns confident probabilities on a face unlike anything it saw. The gate
answers a different question than the classifier: *is this input inside the training
distribution?* A monitor that cannot know must say so instead of guessing loudly.

Method: class-conditional Gaussians with one shared covariance on the network's own
features, scored by the Mahalanobis distance to the nearest class mean (Lee et al.,
"A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
Attacks", NeurIPS 2018). Features (see :func:`gate_features`): the mean and standard
deviation over the image of every channel of the first two conv stages (``block1``,
``block2``; 384 numbers for DA-CNN) — Lee et al.'s point that early layers carry what
the last ones have learnt to ignore. Measured on the rebuilt demo model (card:
``models/demo/painmon_demo.md``): the penultimate features flagged 4-14 % of real-face
frames (AUROC real vs synthetic 0.92); the early-stage statistics flag all of them (1.00)
with 1.2 % of unseen synthetic crops flagged.

* Fit on the model's **training subjects' crops** (class means + a Ledoit-Wolf shrunk
  shared covariance: hundreds of features from a few thousand crops need the shrinkage).
* Threshold = the ``quantile`` (default 0.99) of the scores of the **validation
  subjects' crops**: people the fit never saw, so the threshold measures how far a new
  in-domain person lies, not how well the fit remembers its own data.
* In the exported graph (:class:`MahalanobisGate`): output ``domain_score`` (B,), and the
  threshold, quantile and fit facts in the ``domain_gate`` metadata entry. The bedside
  (:mod:`painmon.core.live.domain`) flags a crop whose score exceeds the threshold.

Nothing here knows what "synthetic" means: a model trained on UNBC gets a gate around
UNBC faces, a demo model a gate around drawn faces.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from painmon.core.util.errors import InvalidInputError

log = logging.getLogger(__name__)

GATE_METHOD = "mahalanobis-tied"
GATE_LAYERS: tuple[str, ...] = ("block1", "block2")
GATE_FEATURES = "per-channel spatial mean and std of " + " and ".join(GATE_LAYERS)
DEFAULT_QUANTILE = 0.99
MIN_FIT_CROPS = 20
_BATCH = 256


class LayerTap:
    """Records the outputs of ``GATE_LAYERS`` during one forward pass (forward hooks).

    ``arm()`` before the pass, ``take()`` after it; only the first output of each layer per
    pass is kept (a model may run its backbone twice, e.g. for attention maps). The hooks
    also run while ``torch.onnx.export`` traces, so the taps become part of the graph.
    """

    def __init__(self, model: nn.Module, layers: tuple[str, ...] = GATE_LAYERS) -> None:
        missing = [name for name in layers if not isinstance(getattr(model, name, None), nn.Module)]
        if missing:
            raise InvalidInputError(
                f"{type(model).__name__} has no {', '.join(missing)}: the domain gate taps "
                f"the first conv stages ({', '.join(layers)})"
            )
        self.layers = layers
        self._armed = False
        self._outputs: dict[str, Tensor] = {}
        for name in layers:
            getattr(model, name).register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def record(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            if self._armed and name not in self._outputs:
                self._outputs[name] = output

        return record

    def arm(self) -> None:
        self._outputs = {}
        self._armed = True

    def take(self) -> list[Tensor]:
        self._armed = False
        missing = [name for name in self.layers if name not in self._outputs]
        if missing:
            raise RuntimeError(f"the forward pass did not run {', '.join(missing)}")
        outputs = [self._outputs[name] for name in self.layers]
        self._outputs = {}
        return outputs


def gate_features(taps: list[Tensor]) -> Tensor:
    """(B, 2 * sum of channels) gate features: each tapped map's per-channel mean and std."""
    parts = []
    for activation in taps:
        mean = activation.mean(dim=(2, 3))
        centred = activation - mean[:, :, None, None]
        parts += [mean, torch.sqrt((centred * centred).mean(dim=(2, 3)))]
    return torch.cat(parts, dim=1)


class MahalanobisGate(nn.Module):
    """Features (B, D) -> min over classes of the squared Mahalanobis distance (B,).

    Holds ``whiten`` (D, D) with ``precision = whiten @ whiten.T`` and the whitened class
    means, so the graph is one matmul and a small (B, K, D) difference.
    """

    def __init__(self, centre: np.ndarray, whiten: np.ndarray, means: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32)[None, :])
        self.register_buffer("whiten", torch.as_tensor(whiten, dtype=torch.float32))
        white_means = (means - centre) @ whiten
        self.register_buffer("white_means", torch.as_tensor(white_means, dtype=torch.float32))

    def forward(self, feats: Tensor) -> Tensor:
        z = (feats - self.centre) @ self.whiten
        diff = z.unsqueeze(1) - self.white_means.unsqueeze(0)
        return (diff * diff).sum(dim=2).amin(dim=1)


@dataclass(frozen=True)
class DomainGateFit:
    """A fitted gate: its graph module's arrays, the threshold and how both were made."""

    centre: np.ndarray  # (D,)
    whiten: np.ndarray  # (D, D)
    means: np.ndarray  # (K, D) for the classes present in training
    classes: tuple[int, ...]
    threshold: float
    quantile: float
    shrinkage: float
    train_crops: int
    train_subjects: int
    val_crops: int
    val_subjects: int
    val_scores_median: float
    #: the training crops were fitted twice: as they are and with their outer ring taken
    #: from another person (``--augment periphery``'s swap), i.e. as that model saw them
    ring_swap: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"gate threshold must be a finite number > 0, got {self.threshold}")
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"gate quantile must lie in [0.5, 1), got {self.quantile}")
        dims = self.centre.shape[0]
        if self.whiten.shape != (dims, dims) or self.means.shape != (len(self.classes), dims):
            raise ValueError("gate arrays disagree on the feature dimension")

    @property
    def feature_dims(self) -> int:
        return int(self.centre.shape[0])

    def module(self) -> MahalanobisGate:
        return MahalanobisGate(self.centre, self.whiten, self.means)

    def score(self, feats: np.ndarray) -> np.ndarray:
        """The same score as the graph, in float64 numpy (for reports and tests)."""
        z = (np.asarray(feats, np.float64) - self.centre) @ self.whiten
        white_means = (self.means - self.centre) @ self.whiten
        return ((z[:, None, :] - white_means[None]) ** 2).sum(axis=2).min(axis=1)

    def metadata(self) -> dict[str, Any]:
        """The ``domain_gate`` entry of the ONNX metadata (JSON-ready)."""
        return {
            "method": GATE_METHOD,
            "output": "domain_score",
            "features": GATE_FEATURES,
            "feature_dims": self.feature_dims,
            "classes": list(self.classes),
            "threshold": float(self.threshold),
            "flag_when": "domain_score > threshold",
            "threshold_from": f"the {self.quantile:g} quantile of validation subjects' crops",
            "quantile": float(self.quantile),
            "shrinkage": float(self.shrinkage),
            "fit": {
                "train_crops": self.train_crops,
                "train_ring_swap": bool(self.ring_swap),
                "train_subjects": self.train_subjects,
                "val_crops": self.val_crops,
                "val_subjects": self.val_subjects,
                "val_score_median": float(self.val_scores_median),
            },
            "reference": "Lee et al. 2018, Mahalanobis distance on class-conditional Gaussians",
        }


def extract_gate_features(
    model: nn.Module,
    normalise: Callable[[Tensor], Tensor],
    images_u8: np.ndarray,
    tap: LayerTap | None = None,
) -> np.ndarray:
    """float64 (N, D) gate features of uint8 NHWC crops, in batches, on the CPU."""
    model.eval()
    tap = tap if tap is not None else LayerTap(model)
    out = []
    with torch.no_grad():
        for start in range(0, len(images_u8), _BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(images_u8[start : start + _BATCH]))
            tap.arm()
            model.forward_features(normalise(batch))
            out.append(gate_features(tap.take()).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def ring_swapped(images_u8: np.ndarray, seed: int = 0) -> np.ndarray:
    """Copies of uint8 NHWC crops, each with its left/right/top ring from another crop.

    The swap of ``--augment periphery`` (:func:`~painmon.core.research.augment.swap_periphery`)
    applied to every crop once, with a seeded generator: the crops as such a model saw them.
    """
    from painmon.core.research.augment import AugmentConfig, swap_periphery

    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2)
    gen = torch.Generator().manual_seed(int(seed))
    out = swap_periphery(x, AugmentConfig(mode="periphery", periphery_p=1.0), gen)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def fit_domain_gate(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    val_feats: np.ndarray,
    *,
    quantile: float = DEFAULT_QUANTILE,
    train_subjects: int = 0,
    val_subjects: int = 0,
    ring_swap: bool = False,
) -> DomainGateFit:
    """Fit class means and a shrunk shared covariance; threshold from the validation scores.

    ``ring_swap`` only records that ``train_feats`` include ring-swapped copies."""
    from sklearn.covariance import ledoit_wolf

    train_feats = np.asarray(train_feats, np.float64)
    val_feats = np.asarray(val_feats, np.float64)
    labels = np.asarray(train_labels).astype(int)
    if len(train_feats) < MIN_FIT_CROPS:
        raise InvalidInputError(
            f"the domain gate needs at least {MIN_FIT_CROPS} training crops, got {len(train_feats)}"
        )
    if len(val_feats) < 1:
        raise InvalidInputError("the domain gate needs validation crops to set its threshold")
    if not (np.isfinite(train_feats).all() and np.isfinite(val_feats).all()):
        raise InvalidInputError("gate features are not finite: the model gives NaN/inf")
    classes = tuple(int(c) for c in np.unique(labels))
    means = np.stack([train_feats[labels == c].mean(axis=0) for c in classes])
    residual = train_feats - means[np.searchsorted(classes, labels)]
    covariance, shrinkage = ledoit_wolf(residual, assume_centered=True)
    # A tiny ridge keeps dead (always-zero ReLU) features from making it singular.
    ridge = 1e-6 * max(float(np.trace(covariance)) / len(covariance), 1e-12)
    covariance = covariance + ridge * np.eye(len(covariance))
    # precision = inv(cov) = whiten @ whiten.T with whiten = inv(chol(cov)).T
    chol = np.linalg.cholesky(covariance)
    whiten = np.linalg.inv(chol).T
    centre = means.mean(axis=0)
    fit = DomainGateFit(
        centre=centre,
        whiten=whiten,
        means=means,
        classes=classes,
        threshold=1.0,
        quantile=quantile,
        shrinkage=float(shrinkage),
        train_crops=len(train_feats),
        train_subjects=int(train_subjects),
        val_crops=len(val_feats),
        val_subjects=int(val_subjects),
        val_scores_median=0.0,
        ring_swap=bool(ring_swap),
    )
    val_scores = fit.score(val_feats)
    threshold = float(np.quantile(val_scores, quantile))
    log.info(
        "domain gate: %d train crops, shrinkage %.3f, validation score median %.1f, "
        "%.3g quantile %.1f",
        len(train_feats),
        shrinkage,
        float(np.median(val_scores)),
        quantile,
        threshold,
    )
    return DomainGateFit(
        **{
            **fit.__dict__,
            "threshold": threshold,
            "val_scores_median": float(np.median(val_scores)),
        }
    )
