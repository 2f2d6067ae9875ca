"""core.research.metrics agrees with scikit-learn (the reference) on random and edge cases."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from painmon.core.research.metrics import (
    calibration_errors,
    classification_metrics,
    mean_ci,
    paired_t_test,
    reliability_bins,
)

C = 5
TOL = 1e-6
EXPECTED_KEYS = {
    "accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1",
    "per_class", "cohen_kappa", "quadratic_kappa", "mcc", "auc_macro", "auc_micro",
    "auc_classes_used", "roc_curves", "ece", "mce", "brier", "nll", "confusion_matrix",
    "confusion_matrix_normalized", "mae_expected_level", "n",
}  # fmt: skip


def _random_case(seed: int, n: int = 200, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, size=n)
    probs = rng.dirichlet(np.full(C, alpha), size=n)
    # Make the model informative so that kappa/AUC are not all near chance.
    probs[np.arange(n), labels] += rng.uniform(0, 1.5, size=n)
    probs /= probs.sum(axis=1, keepdims=True)
    return labels, probs


def _never_predicted_case() -> tuple[np.ndarray, np.ndarray]:
    labels, probs = _random_case(11)
    probs[:, 3] = 0.0  # class 3 (Strong) is never the argmax
    probs /= probs.sum(axis=1, keepdims=True)
    probs = np.clip(probs, 1e-6, None)
    return labels, probs / probs.sum(axis=1, keepdims=True)


def _absent_label_case() -> tuple[np.ndarray, np.ndarray]:
    labels, probs = _random_case(12)
    labels[labels == 4] = 2  # no Severe sample in the labels, yet the model predicts it
    return labels, probs


def _absent_and_unpredicted_case() -> tuple[np.ndarray, np.ndarray]:
    labels, probs = _absent_label_case()
    probs[:, 4] = 1e-6
    return labels, probs / probs.sum(axis=1, keepdims=True)


def _perfect_case() -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(C), 7)
    probs = np.full((labels.size, C), 0.05)
    probs[np.arange(labels.size), labels] = 0.8
    return labels, probs


def _ties_case() -> tuple[np.ndarray, np.ndarray]:
    # Coarse probabilities give many tied scores: stresses the ROC threshold handling.
    rng = np.random.default_rng(5)
    labels = rng.integers(0, C, size=150)
    raw = rng.integers(1, 4, size=(150, C)).astype(float)
    return labels, raw / raw.sum(axis=1, keepdims=True)


CASES = {
    "random_a": lambda: _random_case(1),
    "random_b": lambda: _random_case(2, n=57, alpha=0.5),
    "random_small": lambda: _random_case(3, n=12),
    "class_never_predicted": _never_predicted_case,
    "class_absent_from_labels": _absent_label_case,
    "class_absent_and_unpredicted": _absent_and_unpredicted_case,
    "perfect": _perfect_case,
    "ties": _ties_case,
}


def _reference_ece_mce(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15):
    """Straight loop from the ECE definition (Guo et al. 2017), bins (lo, hi]."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    ece, mce = 0.0, 0.0
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi) if i > 0 else (conf <= hi)
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - conf[in_bin].mean())
            ece += in_bin.mean() * gap
            mce = max(mce, gap)
    return ece, mce


@pytest.mark.parametrize("case", sorted(CASES))
def test_agrees_with_sklearn(case):
    labels, probs = CASES[case]()
    preds = probs.argmax(axis=1)
    m = classification_metrics(labels, probs)
    assert set(m) == EXPECTED_KEYS
    json.dumps(m, allow_nan=False)  # strictly JSON: no NaN or infinity anywhere

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on the very edge cases we test
        assert m["n"] == labels.size
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds), abs=TOL)
        assert m["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(labels, preds), abs=TOL
        )
        for ours, fn in (
            ("macro_precision", skm.precision_score),
            ("macro_recall", skm.recall_score),
            ("macro_f1", skm.f1_score),
        ):
            ref = fn(labels, preds, average="macro", zero_division=0)
            assert m[ours] == pytest.approx(ref, abs=TOL), ours
        p, r, f, s = skm.precision_recall_fscore_support(
            labels, preds, labels=list(range(C)), average=None, zero_division=0
        )
        assert [row["class"] for row in m["per_class"]] == list(range(C))
        np.testing.assert_allclose([row["precision"] for row in m["per_class"]], p, atol=TOL)
        np.testing.assert_allclose([row["recall"] for row in m["per_class"]], r, atol=TOL)
        np.testing.assert_allclose([row["f1"] for row in m["per_class"]], f, atol=TOL)
        assert [row["support"] for row in m["per_class"]] == s.tolist()

        for ours, weights in (("cohen_kappa", None), ("quadratic_kappa", "quadratic")):
            ref = skm.cohen_kappa_score(labels, preds, labels=list(range(C)), weights=weights)
            assert m[ours] == pytest.approx(ref, abs=TOL), ours
        assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(labels, preds), abs=TOL)

        present = sorted(set(labels.tolist()))
        assert m["auc_classes_used"] == present
        per_class_auc = [skm.roc_auc_score(labels == k, probs[:, k]) for k in present]
        assert m["auc_macro"] == pytest.approx(np.mean(per_class_auc), abs=TOL)
        if len(present) == C:
            assert m["auc_macro"] == pytest.approx(
                skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=TOL
            )
        onehot = label_binarize(labels, classes=list(range(C)))
        assert m["auc_micro"] == pytest.approx(
            skm.roc_auc_score(onehot, probs, average="micro"), abs=TOL
        )
        curves = m["roc_curves"]
        assert [c["class"] for c in curves["per_class"]] == present
        for curve in curves["per_class"]:
            fpr, tpr, _ = skm.roc_curve(labels == curve["class"], probs[:, curve["class"]])
            np.testing.assert_allclose(curve["fpr"], fpr, atol=TOL)
            np.testing.assert_allclose(curve["tpr"], tpr, atol=TOL)
            assert curve["auc"] == pytest.approx(skm.auc(fpr, tpr), abs=TOL)
        fpr, tpr, _ = skm.roc_curve(onehot.ravel(), probs.ravel())
        np.testing.assert_allclose(curves["micro"]["fpr"], fpr, atol=TOL)
        np.testing.assert_allclose(curves["micro"]["tpr"], tpr, atol=TOL)

        assert m["brier"] == pytest.approx(
            skm.brier_score_loss(labels, probs, labels=list(range(C))), abs=TOL
        )
        assert m["nll"] == pytest.approx(
            skm.log_loss(labels, probs, labels=list(range(C))), abs=TOL
        )
        cm = skm.confusion_matrix(labels, preds, labels=list(range(C)))
        assert m["confusion_matrix"] == cm.tolist()
        cm_norm = skm.confusion_matrix(labels, preds, labels=list(range(C)), normalize="true")
        np.testing.assert_allclose(m["confusion_matrix_normalized"], cm_norm, atol=TOL)
        expected_level = probs @ np.arange(C)
        assert m["mae_expected_level"] == pytest.approx(
            skm.mean_absolute_error(labels, expected_level), abs=TOL
        )

    ece, mce = _reference_ece_mce(labels, probs)
    assert m["ece"] == pytest.approx(ece, abs=TOL)
    assert m["mce"] == pytest.approx(mce, abs=TOL)


def test_perfect_predictions_hit_the_ceiling():
    labels, probs = _perfect_case()
    m = classification_metrics(labels, probs)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "quadratic_kappa"):
        assert m[key] == pytest.approx(1.0), key
    assert m["mcc"] == pytest.approx(1.0)
    assert m["auc_macro"] == pytest.approx(1.0)
    assert m["auc_micro"] == pytest.approx(1.0)
    # Always right at confidence 0.8: the calibration gap is exactly 0.2.
    assert m["ece"] == pytest.approx(0.2)


def test_absent_class_zero_division_conventions():
    labels, probs = _absent_label_case()
    m = classification_metrics(labels, probs)
    severe = m["per_class"][4]
    assert severe["support"] == 0
    assert severe["recall"] == 0.0
    assert severe["precision"] == 0.0  # predicted but never right
    assert m["confusion_matrix_normalized"][4] == [0.0] * C
    assert 4 not in m["auc_classes_used"]

    labels, probs = _never_predicted_case()
    m = classification_metrics(labels, probs)
    assert m["per_class"][3]["precision"] == 0.0
    assert m["per_class"][3]["f1"] == 0.0
    assert m["per_class"][3]["support"] > 0


def test_quadratic_kappa_keeps_ordinal_distance_when_a_class_is_absent():
    # Class 2 never occurs: sklearn's default label set would treat 1 -> 3 as one step.
    labels = np.array([0, 1, 3, 4, 1, 3])
    preds = np.array([0, 3, 3, 4, 1, 1])
    probs = np.eye(C)[preds] * 0.95 + 0.01
    m = classification_metrics(labels, probs)
    full = skm.cohen_kappa_score(labels, preds, labels=list(range(C)), weights="quadratic")
    compressed = skm.cohen_kappa_score(labels, preds, weights="quadratic")
    assert m["quadratic_kappa"] == pytest.approx(full, abs=TOL)
    assert abs(full - compressed) > 1e-3


def test_single_class_everywhere_gives_none_not_nan():
    labels = np.zeros(6, dtype=int)
    probs = np.tile([0.9, 0.04, 0.03, 0.02, 0.01], (6, 1))
    m = classification_metrics(labels, probs)
    assert m["cohen_kappa"] is None
    assert m["quadratic_kappa"] is None
    assert m["auc_macro"] is None
    assert m["auc_classes_used"] == []
    assert m["roc_curves"]["per_class"] == []
    assert m["mcc"] == 0.0
    assert m["auc_micro"] is not None  # pooled pairs still have both outcomes
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        ([0, 1], np.full((3, C), 0.2), "shape"),
        ([0, 5], np.full((2, C), 0.2), "outside the classes"),
        ([0, -1], np.full((2, C), 0.2), "outside the classes"),
        ([0.5, 1], np.full((2, C), 0.2), "whole numbers"),
        ([[0, 1]], np.full((2, C), 0.2), "1-D"),
        ([], np.zeros((0, C)), "empty"),
        ([0, 1], np.full((2, C), 0.3), "sum to 1"),
        ([0, 1], np.array([[2.0, -1.0, 0, 0, 0]] * 2), r"\[0, 1\]"),
        ([0, 1], np.array([[np.nan, 1.0, 0, 0, 0]] * 2), "NaN"),
        ([0, 1], np.full((2, 4), 0.25), "shape"),
    ],
)
def test_invalid_inputs_raise_clear_errors(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(np.asarray(labels), probs)


def test_probabilities_within_tolerance_are_accepted():
    probs = np.full((2, C), 0.2)
    probs[:, 0] += 5e-5
    m = classification_metrics(np.array([0, 1]), probs)
    assert m["n"] == 2


def test_reliability_bins_shape_and_empty_bins():
    conf = np.array([0.05, 0.5, 0.5, 0.99, 1.0, 0.0])
    correct = np.array([False, True, False, True, True, False])
    bins = reliability_bins(conf, correct, n_bins=10)
    assert len(bins["edges"]) == 11
    assert bins["edges"][0] == 0.0 and bins["edges"][-1] == 1.0
    assert sum(bins["counts"]) == conf.size
    assert bins["counts"][0] == 2  # 0.0 and 0.05
    assert bins["counts"][4] == 2  # 0.5 sits on an edge: (0.4, 0.5]
    assert bins["counts"][9] == 2
    assert bins["accuracy"][4] == pytest.approx(0.5)
    assert bins["confidence"][9] == pytest.approx(0.995)
    assert bins["accuracy"][2] is None and bins["confidence"][2] is None
    expected_ece = (2 * 0.025 + 2 * 0.0 + 2 * 0.005) / 6
    assert bins["ece"] == pytest.approx(expected_ece)
    assert bins["mce"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="equal length"):
        reliability_bins(conf, correct[:-1])
    with pytest.raises(ValueError, match="positive integer"):
        reliability_bins(conf, correct, n_bins=0)


def test_calibration_errors_matches_metrics():
    labels, probs = _random_case(4)
    m = classification_metrics(labels, probs)
    assert calibration_errors(labels, probs) == (m["ece"], m["mce"])


def test_mean_ci_matches_scipy_t_interval():
    values = np.array([0.61, 0.58, 0.66, 0.63, 0.60])
    mean, std, low, high = mean_ci(values, 0.95)
    ref_low, ref_high = stats.t.interval(
        0.95, df=values.size - 1, loc=values.mean(), scale=stats.sem(values)
    )
    assert mean == pytest.approx(values.mean())
    assert std == pytest.approx(values.std(ddof=1))
    assert low == pytest.approx(ref_low, abs=1e-12)
    assert high == pytest.approx(ref_high, abs=1e-12)
    assert mean_ci([0.7]) == (0.7, 0.0, 0.7, 0.7)
    narrow = mean_ci(values, 0.5)
    assert narrow[2] > low and narrow[3] < high
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci(values, 1.0)


def test_paired_t_test():
    rng = np.random.default_rng(0)
    a = rng.normal(0.7, 0.02, size=10)
    b = a - 0.01 + rng.normal(0, 0.005, size=10)
    result = paired_t_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert result["t"] == pytest.approx(ref.statistic)
    assert result["p"] == pytest.approx(ref.pvalue)
    assert result["mean_diff"] == pytest.approx(np.mean(a - b))
    assert result["n"] == 10
    assert paired_t_test(a, a) == {"t": 0.0, "p": 1.0, "mean_diff": 0.0, "n": 10}
    shifted = paired_t_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert shifted["t"] == math.inf and shifted["p"] == 0.0
    with pytest.raises(ValueError, match="equal length"):
        paired_t_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_t_test([1.0], [1.0])
