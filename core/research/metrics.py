"""Evaluation metrics for the 5-class ordinal pain classifier (pure numpy + scipy).

Every number here is checked against scikit-learn in tests/test_metrics.py; the
library itself does not import scikit-learn so that the bedside bundle stays small.
All results are plain Python floats/ints/lists (JSON-serialisable); a metric that is
mathematically undefined on the given data is ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from painmon.core.util.errors import InvalidInputError
from painmon.core.util.labels import NUM_CLASSES
from painmon.core.util.validate import check_probability_rows

ECE_BINS = 15
NLL_PROB_FLOOR = 1e-12
# Slack for float round-off in probabilities that come out of a softmax.
_PROB_RANGE_TOLERANCE = 1e-6


# --------------------------------------------------------------------------- validation


def as_class_indices(values: Any, num_classes: int, what: str = "labels") -> np.ndarray:
    """``values`` as int64 class indices 0..num_classes-1, or InvalidInputError saying why.

    Floats are accepted when whole (labels read back from CSV arrive as floats).
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidInputError(
            f"{what} must be a 1-D array of class indices, got shape {array.shape}"
        )
    if array.size == 0:
        raise InvalidInputError(f"{what} is empty: need at least one sample to evaluate")
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise InvalidInputError(f"{what} must be integer class indices, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and (
        not np.all(np.isfinite(array)) or np.any(array != np.round(array))
    ):
        raise InvalidInputError(
            f"{what} must be whole numbers (class indices 0..{num_classes - 1})"
        )
    out = array.astype(np.int64)
    bad = (out < 0) | (out >= num_classes)
    if np.any(bad):
        index = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"{what}: {out[index]} at sample {index} is outside the classes 0..{num_classes - 1}"
        )
    return out


def _as_probs(probs: Any, n_samples: int, num_classes: int) -> np.ndarray:
    array = np.asarray(probs, dtype=np.float64)
    if array.shape != (n_samples, num_classes):
        raise ValueError(
            f"probs must have shape (N, {num_classes}) = ({n_samples}, {num_classes}) to match "
            f"the labels, got {array.shape}"
        )
    # Rows are samples; the sum tolerance is painmon's one PROB_SUM_ATOL (util.validate).
    check_probability_rows(
        array,
        hint=" (are these logits? apply softmax first)",
        range_slack=_PROB_RANGE_TOLERANCE,
    )
    return np.clip(array, 0.0, 1.0)


def _check_num_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


# --------------------------------------------------------------------------- helpers


def _safe_div(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise division returning 0 where the denominator is 0 (sklearn zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    flat = labels * num_classes + preds
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _kappa(confusion: np.ndarray, weights: str | None) -> float | None:
    """Cohen's kappa from a confusion matrix; None where sklearn would return NaN."""
    cm = confusion.astype(np.float64)
    n = cm.sum()
    if n == 0:
        return None
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    idx = np.arange(cm.shape[0], dtype=np.float64)
    if weights is None:
        w = 1.0 - np.eye(cm.shape[0])
    elif weights == "quadratic":
        w = (idx[:, None] - idx[None, :]) ** 2
    else:
        raise ValueError(f"unknown kappa weights {weights!r}")
    denominator = float((w * expected).sum())
    if denominator == 0.0:
        return None
    return float(1.0 - (w * cm).sum() / denominator)


def _mcc(confusion: np.ndarray) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K); 0.0 when undefined, as in sklearn."""
    cm = confusion.astype(np.float64)
    t_sum = cm.sum(axis=1)
    p_sum = cm.sum(axis=0)
    n_correct = np.trace(cm)
    n = cm.sum()
    cov_ytyp = n_correct * n - t_sum @ p_sum
    cov_ypyp = n * n - p_sum @ p_sum
    cov_ytyt = n * n - t_sum @ t_sum
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ypyp * cov_ytyt))


def _binary_roc(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """ROC points as sklearn.metrics.roc_curve(drop_intermediate=True); None if undefined."""
    y_true = y_true.astype(bool)
    n_pos = int(y_true.sum())
    if n_pos == 0 or n_pos == y_true.size:
        return None
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores = scores[order]
    y_sorted = y_true[order].astype(np.float64)
    distinct = np.flatnonzero(np.diff(scores))
    threshold_idx = np.r_[distinct, y_sorted.size - 1]
    tps = np.cumsum(y_sorted)[threshold_idx]
    fps = 1 + threshold_idx - tps
    if fps.size > 2:
        # Collinear points add nothing to the curve or its area; drop them to keep plots small.
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[keep], tps[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1]


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _to_optional_floats(values: np.ndarray, valid: np.ndarray) -> list[float | None]:
    return [float(v) if ok else None for v, ok in zip(values, valid, strict=True)]


# --------------------------------------------------------------------------- public API


def reliability_bins(
    confidences: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    n_bins: int = ECE_BINS,
) -> dict[str, Any]:
    """Equal-width confidence bins for ECE/MCE and the reliability diagram.

    A confidence c falls in bin i when edges[i] < c <= edges[i+1] (bin 0 also takes
    c == 0). Returns ``edges`` (n_bins+1 floats), ``accuracy`` and ``confidence``
    (per bin mean; ``None`` for an empty bin), ``counts`` (ints), plus ``ece``
    (count-weighted mean |accuracy - confidence|) and ``mce`` (largest gap over
    non-empty bins).
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    n_bins = int(n_bins)
    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct)
    if conf.ndim != 1 or hit.shape != conf.shape:
        raise ValueError(
            f"confidences and correct must be 1-D arrays of equal length, got {conf.shape} "
            f"and {hit.shape}"
        )
    if conf.size == 0:
        raise ValueError("no samples: cannot compute reliability bins")
    if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1 + _PROB_RANGE_TOLERANCE:
        raise ValueError("confidences must be finite probabilities in [0, 1]")
    hit = hit.astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_index = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    counts = np.bincount(bin_index, minlength=n_bins)
    acc_sum = np.bincount(bin_index, weights=hit, minlength=n_bins)
    conf_sum = np.bincount(bin_index, weights=conf, minlength=n_bins)
    filled = counts > 0
    accuracy = _safe_div(acc_sum, counts)
    confidence = _safe_div(conf_sum, counts)
    gaps = np.abs(accuracy - confidence)
    ece = float(np.sum(counts * gaps) / conf.size)
    mce = float(gaps[filled].max())
    return {
        "edges": [float(e) for e in edges],
        "accuracy": _to_optional_floats(accuracy, filled),
        "confidence": _to_optional_floats(confidence, filled),
        "counts": [int(c) for c in counts],
        "ece": ece,
        "mce": mce,
    }


def calibration_errors(
    labels: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    n_bins: int = ECE_BINS,
) -> tuple[float, float]:
    """Top-label (ECE, MCE) of class probabilities against labels, equal-width bins."""
    probs_arr = np.asarray(probs, dtype=np.float64)
    if probs_arr.ndim != 2:
        raise ValueError(f"probs must be a 2-D (N, C) array, got shape {probs_arr.shape}")
    num_classes = _check_num_classes(probs_arr.shape[1])
    y = as_class_indices(labels, num_classes)
    p = _as_probs(probs_arr, y.size, num_classes)
    bins = reliability_bins(p.max(axis=1), p.argmax(axis=1) == y, n_bins)
    return bins["ece"], bins["mce"]


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    num_classes: int = NUM_CLASSES,
) -> dict[str, Any]:
    """All evaluation metrics of class probabilities ``probs`` (N, C) against ``labels`` (N,).

    Predictions are ``argmax(probs)`` (ties go to the lower class). Conventions, all
    matching scikit-learn's defaults with ``zero_division=0``:

    - per-class precision is 0 for a class never predicted, recall is 0 for a class
      absent from the labels, F1 is 0 when its precision and recall are both 0;
    - macro_precision/recall/f1 average over the classes that occur in the labels
      *or* the predictions (sklearn's ``labels=None``); ``per_class`` lists all classes;
    - balanced_accuracy averages recall over the classes present in the labels;
    - cohen_kappa and quadratic_kappa use the full 0..C-1 class grid, so the ordinal
      distance between classes is kept even when a class is absent (sklearn with
      ``labels=range(C)``); they are ``None`` where sklearn returns NaN (labels and
      predictions all one and the same class);
    - mcc is 0.0 when undefined (sklearn);
    - auc_macro is one-vs-rest ROC-AUC averaged over ``auc_classes_used`` (classes
      present in the labels); ``None`` unless at least two classes are present;
      auc_micro pools every (sample, class) pair; roc_curves holds the points for
      plotting (``per_class`` for the used classes, and ``micro``);
    - ece/mce use 15 equal-width top-label confidence bins (see ``reliability_bins``);
    - brier is the multiclass Brier score in [0, 2] (sklearn's multiclass default);
    - nll clips the true-class probability at 1e-12;
    - confusion_matrix rows are true classes; the normalized matrix divides each row
      by its count and leaves rows without samples as zeros;
    - mae_expected_level is mean |sum_k k*p_k - label| (in class steps).
    """
    num_classes = _check_num_classes(num_classes)
    y = as_class_indices(labels, num_classes)
    p = _as_probs(probs, y.size, num_classes)
    n = int(y.size)
    preds = p.argmax(axis=1)
    classes = np.arange(num_classes)

    cm = _confusion(y, preds, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)

    in_labels = support > 0
    seen = in_labels | (predicted > 0)

    onehot = (y[:, None] == classes[None, :]).astype(np.float64)

    auc_classes = [int(k) for k in classes[in_labels]] if in_labels.sum() >= 2 else []
    per_class_roc = []
    for k in auc_classes:
        curve = _binary_roc(onehot[:, k], p[:, k])
        assert curve is not None  # k has positives and, with >= 2 classes present, negatives
        fpr, tpr = curve
        per_class_roc.append(
            {"class": k, "fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": _auc(fpr, tpr)}
        )
    auc_macro = float(np.mean([c["auc"] for c in per_class_roc])) if per_class_roc else None
    micro_curve = _binary_roc(onehot.ravel(), p.ravel())
    if micro_curve is None:
        micro = None
        auc_micro = None
    else:
        fpr, tpr = micro_curve
        auc_micro = _auc(fpr, tpr)
        micro = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": auc_micro}

    bins = reliability_bins(p.max(axis=1), preds == y, ECE_BINS)
    true_prob = np.clip(p[np.arange(n), y], NLL_PROB_FLOOR, None)
    expected_level = p @ classes.astype(np.float64)

    return {
        "n": n,
        "accuracy": float(np.mean(preds == y)),
        "balanced_accuracy": float(np.mean(recall[in_labels])),
        "macro_precision": float(np.mean(precision[seen])),
        "macro_recall": float(np.mean(recall[seen])),
        "macro_f1": float(np.mean(f1[seen])),
        "per_class": [
            {
                "class": int(k),
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k in classes
        ],
        "cohen_kappa": _kappa(cm, None),
        "quadratic_kappa": _kappa(cm, "quadratic"),
        "mcc": _mcc(cm),
        "auc_macro": auc_macro,
        "auc_micro": auc_micro,
        "auc_classes_used": auc_classes,
        "roc_curves": {"per_class": per_class_roc, "micro": micro},
        "ece": bins["ece"],
        "mce": bins["mce"],
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        "nll": float(np.mean(-np.log(true_prob))),
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": _safe_div(cm, support[:, None]).tolist(),
        "mae_expected_level": float(np.mean(np.abs(expected_level - y))),
    }


def mean_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """(mean, sample std, CI low, CI high) with a Student-t interval over ``values``.

    The std uses ddof=1. With a single value the std is 0.0 and the interval
    collapses to (mean, mean): there is no spread to estimate, which is reported
    rather than hidden behind NaN — treat such an interval as "unknown", not "exact".
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("values contain NaN or infinity")
    mean = float(array.mean())
    if array.size == 1:
        return mean, 0.0, mean, mean
    std = float(array.std(ddof=1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2.0, df=array.size - 1)) * std
    half_width /= math.sqrt(array.size)
    return mean, std, mean - half_width, mean + half_width


def paired_t_test(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> dict[str, float | int]:
    """Paired two-sided t-test of a against b (scipy.stats.ttest_rel).

    Returns t, p, mean_diff (mean of a - b) and n. Identical inputs give t=0.0 and
    p=1.0 (scipy gives NaN). A constant non-zero difference gives t=±inf and p=0.0.
    """
    x = np.asarray(a, dtype=np.float64)
    z = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != z.shape:
        raise ValueError(
            f"paired t-test needs two 1-D sequences of equal length, got {x.shape} and {z.shape}"
        )
    if x.size < 2:
        raise ValueError(f"paired t-test needs at least 2 pairs, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(z))):
        raise ValueError("paired t-test inputs contain NaN or infinity")
    diff = x - z
    mean_diff = float(diff.mean())
    n = int(x.size)
    if np.all(diff == diff[0]):
        # Zero variance of the differences: scipy returns NaN (or warns); give the limit.
        if diff[0] == 0:
            return {"t": 0.0, "p": 1.0, "mean_diff": 0.0, "n": n}
        return {"t": math.copysign(math.inf, mean_diff), "p": 0.0, "mean_diff": mean_diff, "n": n}
    result = stats.ttest_rel(x, z)
    return {"t": float(result.statistic), "p": float(result.pvalue), "mean_diff": mean_diff, "n": n}


# --------------------------------------------------------------------------- cross-validation

CV_INTERVAL_REFERENCE = "Nadeau & Bengio 2003"


class CorrectedTTest(NamedTuple):
    """Result of :func:`corrected_resampled_ttest`: mean difference, t, p and its 95 % CI."""

    mean: float
    t: float
    p: float
    ci_low: float
    ci_high: float


def overlap_correction(n_runs: int, n_train: float, n_test: float) -> float:
    """Nadeau & Bengio's variance factor ``1/J + n_test/n_train`` for J resampled runs.

    Plain ``1/J`` assumes the J runs are independent; runs of a K-fold CV share most of
    their training data, so their scores co-vary and the plain interval is too narrow.
    """
    if int(n_runs) != n_runs or n_runs < 1:
        raise ValueError(f"n_runs must be a positive integer, got {n_runs!r}")
    if not (math.isfinite(n_train) and math.isfinite(n_test)) or n_train <= 0 or n_test <= 0:
        raise ValueError(
            f"n_train and n_test must be positive sizes of one run's train and test sets, got "
            f"{n_train!r} and {n_test!r}"
        )
    return 1.0 / n_runs + n_test / n_train


def _finite_1d(values: Sequence[float] | np.ndarray, what: str, minimum: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size < minimum:
        raise ValueError(f"{what} must be a 1-D sequence of at least {minimum}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinity")
    return array


def corrected_resampled_ttest(
    diffs: Sequence[float] | np.ndarray,
    n_train: float,
    n_test: float,
    confidence: float = 0.95,
) -> CorrectedTTest:
    """Corrected resampled t-test (Nadeau & Bengio 2003) of per-run differences ``diffs``.

    ``diffs[j]`` is model A's score minus model B's on run j (one CV fold, both models
    trained on the same fold); ``n_train`` and ``n_test`` are the sizes of one run's training
    and test sets (subjects, the unit that is resampled). The variance of the mean
    difference is ``s² (1/J + n_test/n_train)`` instead of the paired t-test's ``s²/J``;
    the statistic has J − 1 degrees of freedom. Two-sided p; the interval is on the mean
    difference. A constant difference gives t = ±inf, p = 0 (t = 0, p = 1 when it is 0) and
    a zero-width interval, as :func:`paired_t_test` does.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    d = _finite_1d(diffs, "differences", 2)
    factor = overlap_correction(d.size, n_train, n_test)
    mean = float(d.mean())
    variance = float(d.var(ddof=1))
    if variance == 0.0:
        if mean == 0.0:
            return CorrectedTTest(0.0, 0.0, 1.0, 0.0, 0.0)
        return CorrectedTTest(mean, math.copysign(math.inf, mean), 0.0, mean, mean)
    se = math.sqrt(variance * factor)
    df = d.size - 1
    t = mean / se
    p = float(2.0 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return CorrectedTTest(mean, float(t), p, mean - half, mean + half)


def corrected_mean_ci(
    values: Sequence[float] | np.ndarray,
    n_train: float,
    n_test: float,
    confidence: float = 0.95,
) -> tuple[float, float, float, float]:
    """(mean, std, CI low, CI high) of one model's CV scores, overlap-corrected (N&B 2003).

    The t-interval of :func:`mean_ci` with the variance factor ``1/J + n_test/n_train``
    (:func:`overlap_correction`) instead of ``1/J``: the J fold scores share training
    subjects. One value gives a collapsed interval, as in :func:`mean_ci`.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    array = _finite_1d(values, "values", 1)
    mean = float(array.mean())
    if array.size == 1:
        return mean, 0.0, mean, mean
    std = float(array.std(ddof=1))
    factor = overlap_correction(array.size, n_train, n_test)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, array.size - 1)) * std * math.sqrt(factor)
    return mean, std, mean - half, mean + half
