"""Post-hoc temperature scaling (Guo et al., 2017) fitted on validation logits.

One scalar T divides the logits before the softmax. It never changes the predicted
class, only how confident the model claims to be, which is what the alarm
thresholds and the displayed confidence rely on. T is stored with the model
(checkpoint/ONNX metadata) and read back by the app.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from painmon.core.research.metrics import ECE_BINS, calibration_errors
from painmon.core.util.errors import InvalidInputError

logger = logging.getLogger(__name__)

TEMPERATURE_MIN = 0.05
TEMPERATURE_MAX = 20.0
# Fewer validation samples than this give a temperature worth little; fit anyway, but say so.
MIN_RECOMMENDED_SAMPLES = 10


def _check_temperature(temperature: float) -> float:
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


def _as_logits(logits: Any) -> np.ndarray:
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] < 2:
        raise ValueError(
            f"logits must be shaped (C,) or (N, C) with C >= 2 classes, got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("logits contain NaN or infinity: the model output is broken upstream")
    return array


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of logits / temperature over the last axis (float64)."""
    z = _as_logits(logits) / _check_temperature(temperature)
    # Logits near ±1e308 overflow to -inf here, whose exp is the correct 0.
    with np.errstate(over="ignore"):
        z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Calibrated class probabilities: softmax(logits / temperature)."""
    return softmax(logits, temperature)


def _validate_fit_inputs(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _as_logits(logits)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, C) to fit a temperature, got {z.shape}")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one entry per logit row ({z.shape[0]}), got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) and (
        not np.issubdtype(y.dtype, np.floating) or np.any(y != np.round(y))
    ):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if np.any((y < 0) | (y >= z.shape[1])):
        raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}")
    if z.shape[0] < 2:
        raise ValueError(
            f"need at least 2 validation samples to fit a temperature, got {z.shape[0]}"
        )
    return z, y


def _nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Exact mean NLL of softmax(z / T) via log-sum-exp (no probability clipping)."""
    scaled = z / temperature
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(y.size), y]))


def fit_temperature(logits: Any, labels: Any) -> float:
    """Temperature in [0.05, 20] minimising the validation NLL of softmax(logits / T).

    Needs N >= 2 finite logit rows. It fits on any such data, but warns (logging)
    below 10 samples or when only one class is present: there T mostly runs to a
    bound and says little about the model. Deterministic: the NLL is unimodal in
    log T, minimised with bounded Brent; T = 1 is kept if it is at least as good.
    """
    z, y = _validate_fit_inputs(logits, labels)
    if y.size < MIN_RECOMMENDED_SAMPLES:
        logger.warning(
            "fitting a temperature on only %d samples; use at least %d validation samples",
            y.size,
            MIN_RECOMMENDED_SAMPLES,
        )
    if np.unique(y).size < 2:
        logger.warning(
            "all %d validation labels are class %d; the fitted temperature will be extreme",
            y.size,
            int(y[0]),
        )
    result = optimize.minimize_scalar(
        lambda log_t: _nll(z, y, math.exp(log_t)),
        bounds=(math.log(TEMPERATURE_MIN), math.log(TEMPERATURE_MAX)),
        method="bounded",
        options={"xatol": 1e-6, "maxiter": 500},
    )
    fitted = float(np.clip(math.exp(float(result.x)), TEMPERATURE_MIN, TEMPERATURE_MAX))
    # Brent stops within xatol of the optimum; never return a T worse than doing nothing.
    if _nll(z, y, 1.0) <= _nll(z, y, fitted):
        return 1.0
    return fitted


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    """A fitted temperature and what it did to the validation ECE and NLL."""

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    n: int

    def __post_init__(self) -> None:
        if not TEMPERATURE_MIN <= self.temperature <= TEMPERATURE_MAX:
            raise ValueError(
                f"temperature {self.temperature!r} outside [{TEMPERATURE_MIN}, {TEMPERATURE_MAX}]"
            )
        for name in ("ece_before", "ece_after", "nll_before", "nll_after"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if int(self.n) != self.n or self.n < 2:
            raise ValueError(f"n must be an integer >= 2, got {self.n!r}")


def calibrate(logits: Any, labels: Any) -> CalibrationResult:
    """Fit a temperature on validation logits and report ECE (15 bins) and NLL before/after.

    NLL here is exact (log-softmax, no clipping), the quantity the fit minimises;
    metrics.classification_metrics clips probabilities at 1e-12, so the two differ
    only for samples whose true-class probability is below 1e-12.
    """
    z, y = _validate_fit_inputs(logits, labels)
    temperature = fit_temperature(z, y)
    ece_before, _ = calibration_errors(y, softmax(z))
    ece_after, _ = calibration_errors(y, softmax(z, temperature))
    result = CalibrationResult(
        temperature=temperature,
        ece_before=ece_before,
        ece_after=ece_after,
        nll_before=_nll(z, y, 1.0),
        nll_after=_nll(z, y, temperature),
        n=int(y.size),
    )
    logger.info(
        "temperature %.4f: ECE %.4f -> %.4f, NLL %.4f -> %.4f on %d samples",
        result.temperature,
        result.ece_before,
        result.ece_after,
        result.nll_before,
        result.nll_after,
        result.n,
    )
    return result


def prevalence_weights(labels: Any, prevalence: Any) -> np.ndarray:
    """Per-sample weights that make ``labels`` look drawn at ``prevalence``: pi'(y) / share(y).

    A class the evaluation set lacks cannot be reweighted; its share of ``prevalence`` is
    dropped and the rest renormalised (logged).
    """
    y = np.asarray(labels).astype(np.int64)
    target = np.asarray(prevalence, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("labels must be a non-empty 1-D array of class indices")
    if np.any((y < 0) | (y >= target.size)):
        raise ValueError(f"labels must lie in 0..{target.size - 1}")
    share = np.bincount(y, minlength=target.size) / y.size
    missing = (share == 0) & (target > 0)
    if np.any(missing):
        logger.warning(
            "classes %s are absent from the evaluation set; ECE at prevalence ignores them",
            np.flatnonzero(missing).tolist(),
        )
        target = np.where(missing, 0.0, target)
    if target.sum() <= 0:
        raise ValueError("the prevalence gives no weight to any class present in the labels")
    target = target / target.sum()
    return np.divide(target, share, out=np.zeros_like(target), where=share > 0)[y]


def weighted_ece(labels: Any, probs: Any, weights: Any, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE with sample weights, the same equal-width bins as ``reliability_bins``."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    w = np.asarray(weights, dtype=np.float64)
    if p.ndim != 2 or y.shape != (p.shape[0],) or w.shape != y.shape:
        raise ValueError(f"probs (N, C), labels (N,) and weights (N,) disagree: {p.shape}, "
                         f"{y.shape}, {w.shape}")  # fmt: skip
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all 0")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, n_bins - 1)
    gap = np.bincount(index, weights=w * (correct - confidence), minlength=n_bins)
    return float(np.abs(gap).sum() / w.sum())


def ece_at_prevalence(labels: Any, probs: Any, prevalence: Any, n_bins: int = ECE_BINS) -> float:
    """ECE of ``probs`` as if the evaluation set's classes occurred at ``prevalence``
    (importance-weighted by class): what a ward at that prevalence would see."""
    return weighted_ece(labels, probs, prevalence_weights(labels, prevalence), n_bins)


def training_priors(
    labels: Any, num_classes: int, class_weighted_sampling: bool
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(natural class frequencies, priors the model was fitted under) of training labels.

    The class-balanced sampler (``train.sample_epoch_indices``) draws each crop with weight
    1 / (its class's count): every class present is drawn equally often, an absent one never.
    Without it the model is fitted under the natural frequencies.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("no training labels: the class frequencies cannot be counted")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"training labels must lie in 0..{num_classes - 1}")
    counts = np.bincount(y.astype(np.int64), minlength=num_classes).astype(np.float64)
    natural = counts / counts.sum()
    if not class_weighted_sampling:
        return tuple(natural.tolist()), tuple(natural.tolist())
    present = (counts > 0).astype(np.float64)
    return tuple(natural.tolist()), tuple((present / present.sum()).tolist())


def run_class_weighted_sampling(run_dir: str | Path) -> bool:
    """Whether a run drew class-balanced batches (its ``config.json``; the default if absent)."""
    from painmon.core.research.train import TrainConfig

    config = Path(run_dir) / "config.json"
    default = bool(TrainConfig.class_weighted_sampling)
    try:
        recorded = json.loads(config.read_text())
    except (OSError, ValueError):
        logger.warning("%s is missing or unreadable: assuming the default sampling", config)
        return default
    value = recorded.get("class_weighted_sampling", default) if isinstance(recorded, dict) else None
    if not isinstance(value, bool):
        raise InvalidInputError(f"{config}: class_weighted_sampling must be true or false")
    return value


def prevalence_report(
    labels: Any, probs: Any, prevalence: Any, trained_prior: Any
) -> dict[str, Any]:
    """ECE at ``prevalence`` of the model's probabilities as they are (fitted under
    ``trained_prior``) and after the bedside's prior-shift correction to ``prevalence``."""
    from painmon.core.live.scoring import prior_shift

    corrected = prior_shift(np.asarray(probs, dtype=np.float64), prevalence, trained_prior)
    return {
        "prevalence": [float(v) for v in prevalence],
        "trained_prior": [float(v) for v in trained_prior],
        "ece_uncorrected": ece_at_prevalence(labels, probs, prevalence),
        "ece_corrected": ece_at_prevalence(labels, corrected, prevalence),
    }


def format_prevalence(prevalence: Any) -> str:
    """``0.56/0.20/0.12/0.08/0.04``: a prevalence in one token."""
    return "/".join(f"{float(v):.2f}" for v in prevalence)
