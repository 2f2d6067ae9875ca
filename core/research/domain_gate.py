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
* Threshold = the ``quantile`` (default 0.99) of the scores of **people the fit never
  saw**, so it measures how far a new in-domain person lies, not how well the fit
  remembers its own data. With enough validation subjects (``CROSS_FIT_BELOW_VAL_SUBJECTS``
  or more) those are the validation subjects' crops. With fewer, a threshold from two or
  three people is chance (UNBC's 25 subjects leave 2 for validation): then every training
  and validation subject is scored by a gate fitted without its fold of subjects
  (:func:`cross_fit_scores`, ``CROSS_FIT_FOLDS`` folds), and the threshold is the quantile
  of those out-of-fold scores, when there are ``CROSS_FIT_MIN_SUBJECTS`` people to pool.
  Measured on drawn faces, 25 subjects split 18/2/5 (`painmon bench gate`, 600 crops of
  the 5 test subjects): the 2 validation subjects' threshold flagged 14.2 % (one person
  61 %; over 30 other choices of the 2, 2-15 %, the 10th-90th percentile); cross-fitted
  over the 20, 4.2 % (nominal 1 %). Real faces stayed 100 % flagged with either.
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
#: How the threshold is set (see the module docstring): "auto" picks "cross-fit" when the
#: validation subjects are fewer than CROSS_FIT_BELOW_VAL_SUBJECTS, else "validation".
THRESHOLD_AUTO, THRESHOLD_VALIDATION, THRESHOLD_CROSS_FIT = "auto", "validation", "cross-fit"
THRESHOLD_MODES = (THRESHOLD_AUTO, THRESHOLD_VALIDATION, THRESHOLD_CROSS_FIT)
CROSS_FIT_BELOW_VAL_SUBJECTS = 10
#: ... and only with at least this many training + validation subjects: the pooled quantile
#: admits a person as unusual as the most unusual one scored, so among a handful of people
#: one unlike the rest (another room, another camera) would set the threshold on their own.
CROSS_FIT_MIN_SUBJECTS = 10
CROSS_FIT_FOLDS = 5
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


def mahalanobis_scores(
    centre: np.ndarray, whiten: np.ndarray, means: np.ndarray, feats: np.ndarray
) -> np.ndarray:
    """Squared Mahalanobis distance of each feature row to the nearest class mean (float64)."""
    z = (np.asarray(feats, np.float64) - centre) @ whiten
    white_means = (means - centre) @ whiten
    return ((z[:, None, :] - white_means[None]) ** 2).sum(axis=2).min(axis=1)


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
    #: what the threshold is the quantile of: THRESHOLD_VALIDATION (the validation crops'
    #: scores) or THRESHOLD_CROSS_FIT (out-of-fold scores of threshold_subjects people)
    threshold_source: str = THRESHOLD_VALIDATION
    threshold_subjects: int = 0
    threshold_crops: int = 0
    threshold_folds: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"gate threshold must be a finite number > 0, got {self.threshold}")
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"gate quantile must lie in [0.5, 1), got {self.quantile}")
        if self.threshold_source not in (THRESHOLD_VALIDATION, THRESHOLD_CROSS_FIT):
            raise ValueError(f"unknown gate threshold source {self.threshold_source!r}")
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
        return mahalanobis_scores(self.centre, self.whiten, self.means, feats)

    def threshold_from(self) -> str:
        """One line: what the threshold is the quantile of."""
        if self.threshold_source == THRESHOLD_CROSS_FIT:
            return (
                f"the {self.quantile:g} quantile of out-of-fold scores of "
                f"{self.threshold_crops} crops of {self.threshold_subjects} training and "
                f"validation subjects ({self.threshold_folds} folds of subjects, each scored by "
                "a gate fitted without its fold)"
            )
        return (
            f"the {self.quantile:g} quantile of {self.val_crops} crops of "
            f"{self.val_subjects} validation subjects"
        )

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
            "threshold_from": self.threshold_from(),
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
            "threshold_fit": {
                "source": self.threshold_source,
                "subjects": self.threshold_subjects,
                "crops": self.threshold_crops,
                "folds": self.threshold_folds,
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


def _fit_gaussians(
    feats: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...], float]:
    """Class means and the whitening of their shrunk shared covariance:
    (centre, whiten, means, classes, shrinkage)."""
    from sklearn.covariance import ledoit_wolf

    classes = tuple(int(c) for c in np.unique(labels))
    means = np.stack([feats[labels == c].mean(axis=0) for c in classes])
    residual = feats - means[np.searchsorted(classes, labels)]
    covariance, shrinkage = ledoit_wolf(residual, assume_centered=True)
    # A tiny ridge keeps dead (always-zero ReLU) features from making it singular.
    ridge = 1e-6 * max(float(np.trace(covariance)) / len(covariance), 1e-12)
    covariance = covariance + ridge * np.eye(len(covariance))
    # precision = inv(cov) = whiten @ whiten.T with whiten = inv(chol(cov)).T
    chol = np.linalg.cholesky(covariance)
    whiten = np.linalg.inv(chol).T
    return means.mean(axis=0), whiten, means, classes, float(shrinkage)


def cross_fit_folds(subjects: np.ndarray, folds: int = CROSS_FIT_FOLDS, seed: int = 0) -> dict:
    """Subject -> fold (0..k-1), k = min(folds, number of subjects); seeded, so repeatable."""
    people = sorted({str(s) for s in np.asarray(subjects).tolist()})
    k = min(int(folds), len(people))
    if k < 2:
        raise InvalidInputError(
            f"a cross-fitted gate threshold needs at least 2 subjects, got {len(people)}"
        )
    order = np.random.default_rng(seed).permutation(len(people))
    return {people[j]: rank % k for rank, j in enumerate(order)}


def cross_fit_scores(
    fit_feats: np.ndarray,
    fit_labels: np.ndarray,
    fit_subjects: np.ndarray,
    score_feats: np.ndarray,
    score_subjects: np.ndarray,
    folds: int = CROSS_FIT_FOLDS,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """Every ``score`` crop scored by a gate fitted on the ``fit`` crops of the *other* folds
    of subjects (folds over the subjects of ``score_subjects``); (scores, number of folds).

    ``fit`` and ``score`` rows are separate so that the fits can include crops the threshold
    must not see as they are (ring-swapped copies)."""
    fit_feats = np.asarray(fit_feats, np.float64)
    score_feats = np.asarray(score_feats, np.float64)
    fit_labels = np.asarray(fit_labels).astype(int)
    fit_subjects = np.asarray(fit_subjects).astype(str)
    score_subjects = np.asarray(score_subjects).astype(str)
    if len(fit_subjects) != len(fit_feats) or len(score_subjects) != len(score_feats):
        raise InvalidInputError("every gate feature row needs its subject")
    fold_of = cross_fit_folds(score_subjects, folds, seed)
    k = max(fold_of.values()) + 1
    fit_fold = np.array([fold_of.get(s, -1) for s in fit_subjects.tolist()])
    score_fold = np.array([fold_of[s] for s in score_subjects.tolist()])
    scores = []
    for fold in range(k):
        keep = fit_fold != fold
        if keep.sum() < MIN_FIT_CROPS:
            raise InvalidInputError(
                f"cross-fitting the gate threshold: fold {fold + 1} of {k} leaves "
                f"{int(keep.sum())} crops to fit on (at least {MIN_FIT_CROPS} needed)"
            )
        centre, whiten, means, _, _ = _fit_gaussians(fit_feats[keep], fit_labels[keep])
        scores.append(mahalanobis_scores(centre, whiten, means, score_feats[score_fold == fold]))
    return np.concatenate(scores), k


def fit_domain_gate(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    val_feats: np.ndarray,
    *,
    quantile: float = DEFAULT_QUANTILE,
    train_subjects: int = 0,
    val_subjects: int = 0,
    ring_swap: bool = False,
    threshold_scores: np.ndarray | None = None,
    threshold_subjects: int = 0,
    threshold_folds: int = 0,
) -> DomainGateFit:
    """Fit class means and a shrunk shared covariance; threshold from the validation scores,
    or from ``threshold_scores`` (out-of-fold scores of ``threshold_subjects`` people, from
    :func:`cross_fit_scores`) when given.

    ``ring_swap`` only records that ``train_feats`` include ring-swapped copies."""
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
    centre, whiten, means, classes, shrinkage = _fit_gaussians(train_feats, labels)
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
    source = {
        "threshold_source": THRESHOLD_VALIDATION,
        "threshold_subjects": int(val_subjects),
        "threshold_crops": len(val_feats),
    }
    if threshold_scores is None:
        threshold = float(np.quantile(val_scores, quantile))
    else:
        threshold_scores = np.asarray(threshold_scores, np.float64)
        if len(threshold_scores) < 1 or not np.isfinite(threshold_scores).all():
            raise InvalidInputError("the gate's threshold scores are empty or not finite")
        threshold = float(np.quantile(threshold_scores, quantile))
        source = {
            "threshold_source": THRESHOLD_CROSS_FIT,
            "threshold_subjects": int(threshold_subjects),
            "threshold_crops": len(threshold_scores),
            "threshold_folds": int(threshold_folds),
        }
    log.info(
        "domain gate: %d train crops, shrinkage %.3f, validation score median %.1f, "
        "threshold %.1f (%s)",
        len(train_feats),
        shrinkage,
        float(np.median(val_scores)),
        threshold,
        source["threshold_source"],
    )
    return DomainGateFit(
        **{
            **fit.__dict__,
            "threshold": threshold,
            "val_scores_median": float(np.median(val_scores)),
            **source,
        }
    )
