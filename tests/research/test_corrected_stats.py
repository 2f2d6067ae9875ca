"""Intervals a reviewer accepts: Nadeau & Bengio's corrected t, seed-averaged folds, paired
subject bootstraps (issue #15)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from painmon.core.research.experiment import summarise_cv
from painmon.core.research.metrics import (
    classification_metrics,
    corrected_mean_ci,
    corrected_resampled_ttest,
    mean_ci,
    overlap_correction,
    paired_t_test,
)
from painmon.core.research.subject_stats import (
    paired_subject_bootstrap,
    subject_bootstrap_ci,
)

DIFFS = [0.02, 0.05, -0.01, 0.04, 0.03]


def test_corrected_t_matches_a_hand_computed_example():
    # By hand: mean 0.026; squared deviations sum to 0.00212, so s² = 0.00053 (ddof 1).
    # 5 folds, 40 train and 10 test subjects each: factor 1/5 + 10/40 = 0.45 (plain: 0.2).
    result = corrected_resampled_ttest(DIFFS, n_train=40, n_test=10)
    se = math.sqrt(0.00053 * 0.45)
    t = 0.026 / se
    assert t == pytest.approx(1.6836, abs=1e-4)
    assert result.mean == pytest.approx(0.026)
    assert result.t == pytest.approx(t, rel=1e-9)
    assert result.p == pytest.approx(2 * stats.t.sf(t, df=4), rel=1e-9)
    half = stats.t.ppf(0.975, df=4) * se
    assert (result.ci_low, result.ci_high) == pytest.approx((0.026 - half, 0.026 + half))
    mean, t_stat, p, low, high = result  # unpacks as (mean, t, p, ci_low, ci_high)
    assert (mean, t_stat, p, low, high) == tuple(result)


def test_corrected_t_is_wider_than_the_plain_paired_t():
    a = np.array([0.70, 0.74, 0.69, 0.75, 0.73])
    b = a - np.array(DIFFS)
    plain = paired_t_test(a, b)
    naive = stats.ttest_rel(a, b)
    assert plain["t"] == pytest.approx(naive.statistic)
    corrected = corrected_resampled_ttest(a - b, n_train=40, n_test=10)
    assert abs(corrected.t) < abs(plain["t"]) and corrected.p > plain["p"]
    # Exactly: t shrinks by sqrt((1/J) / (1/J + n_test/n_train)).
    assert corrected.t == pytest.approx(plain["t"] * math.sqrt(0.2 / 0.45))
    naive_ci = naive.confidence_interval(0.95)
    assert corrected.ci_low < naive_ci.low and corrected.ci_high > naive_ci.high


def test_corrected_mean_ci_widens_the_plain_t_interval():
    values = [0.61, 0.66, 0.58, 0.70, 0.64]
    mean, std, low, high = mean_ci(values)
    c_mean, c_std, c_low, c_high = corrected_mean_ci(values, n_train=40, n_test=10)
    assert (c_mean, c_std) == pytest.approx((mean, std))
    assert (c_high - c_low) == pytest.approx((high - low) * math.sqrt(0.45 / 0.2))
    assert corrected_mean_ci([0.5], 4, 1) == (0.5, 0.0, 0.5, 0.5)


def test_corrected_t_edge_cases_and_bad_input():
    assert tuple(corrected_resampled_ttest([0.0, 0.0, 0.0], 4, 1)) == (0.0, 0.0, 1.0, 0.0, 0.0)
    constant = corrected_resampled_ttest([0.1, 0.1], 4, 1)
    assert constant.t == math.inf and constant.p == 0.0
    assert overlap_correction(5, 4, 1) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="at least 2"):
        corrected_resampled_ttest([0.1], 4, 1)
    with pytest.raises(ValueError, match="positive"):
        corrected_resampled_ttest(DIFFS, 0, 1)
    with pytest.raises(ValueError, match="NaN"):
        corrected_resampled_ttest([0.1, math.nan], 4, 1)


# --- cross-validation summaries ------------------------------------------------------------


def _cv_rows(values, n_train=None):
    """values[seed][fold] -> CV rows with that validation accuracy (other metrics alike)."""
    rows = []
    for seed, folds in values.items():
        for k, v in enumerate(folds, start=1):
            scores = {"accuracy": v, "balanced_accuracy": v, "macro_f1": v,
                      "quadratic_kappa": v, "ece": 0.05}  # fmt: skip
            row = {"seed": seed, "fold": k, "run": f"s{seed}/f{k}", "best_epoch": 1,
                   "val": scores, "test": None}  # fmt: skip
            if n_train:
                row |= {"n_train_subjects": n_train, "n_val_subjects": 2}
            rows.append(row)
    return rows


def test_cv_summary_averages_seeds_within_folds_before_the_interval():
    values = {42: [0.60, 0.70, 0.80], 123: [0.64, 0.66, 0.90], 999: [0.62, 0.74, 0.85]}
    summary = summarise_cv(_cv_rows(values, n_train=8))
    acc = summary["val"]["accuracy"]
    fold_means = np.mean([values[s] for s in values], axis=0)
    expected = corrected_mean_ci(fold_means, n_train=8, n_test=2)
    assert (acc["n"], acc["n_runs"]) == (3, 9)
    assert (acc["mean"], acc["std"], *acc["ci95"]) == pytest.approx(expected)
    # The old interval, nine "independent" runs with a plain t, is narrower than the truth.
    _, _, low, high = mean_ci([v for s in values for v in values[s]])
    assert acc["ci95"][1] - acc["ci95"][0] > high - low
    text = summary["intervals"]["val"]
    assert "mean ± std over 3 folds (each the mean of 3 seeds)" in text
    assert "Nadeau & Bengio 2003" in text and "1/3 + 2/8" in text


def _predictions(skill, n_subjects=10, per_subject=12, seed=0):
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"p{i}" for i in range(n_subjects)], per_subject)
    labels = np.random.default_rng(99).integers(0, 5, subjects.size)
    hit = rng.random(subjects.size) < np.repeat(rng.uniform(skill - 0.2, skill + 0.2,
                                                            n_subjects), per_subject)  # fmt: skip
    preds = np.where(hit, labels, (labels + 2) % 5)
    probs = np.eye(5)[preds] * 0.75 + 0.05
    return labels, subjects, preds, probs


def test_cv_test_rows_get_a_subject_bootstrap_over_the_fold_models():
    rows = _cv_rows({42: [0.6, 0.7]})
    fold_preds = []
    for i, row in enumerate(rows):
        labels, subjects, preds, probs = _predictions(0.6, seed=i)
        row["test"] = classification_metrics(labels, probs)
        row["test_predictions"] = {"labels": labels, "subjects": subjects, "probs": probs}
        fold_preds.append((preds, probs))
    summary = summarise_cv(rows, n_boot=300)
    acc = summary["test"]["accuracy"]
    stacked_preds = np.stack([p for p, _ in fold_preds])
    stacked_probs = np.stack([q for _, q in fold_preds])
    ci = subject_bootstrap_ci(labels, stacked_preds, subjects, "accuracy", 300, probs=stacked_probs)
    assert acc["mean"] == pytest.approx(np.mean([r["test"]["accuracy"] for r in rows]))
    assert acc["ci95"] == pytest.approx([ci["ci_low"], ci["ci_high"]])
    assert acc["n"] == 10 and set(summary["test"]) >= {"accuracy", "macro_f1",
                                                      "quadratic_kappa", "ece"}  # fmt: skip
    assert all(summary["test"][m]["ci95"] for m in ("macro_f1", "quadratic_kappa", "ece"))
    assert "resample the 10 subjects (not images)" in summary["intervals"]["test"]


# --- subject bootstrap of several models, and paired differences ---------------------------


def test_stacked_models_bootstrap_their_mean_on_the_same_subjects():
    labels, subjects, preds, _ = _predictions(0.7)
    single = subject_bootstrap_ci(labels, preds, subjects, "quadratic_kappa", 200)
    twice = subject_bootstrap_ci(labels, np.stack([preds, preds]), subjects, "quadratic_kappa",
                                 200)  # fmt: skip
    assert single["estimate"] == pytest.approx(
        classification_metrics(labels, np.eye(5)[preds])["quadratic_kappa"]
    )
    assert (twice["estimate"], twice["ci_low"], twice["ci_high"]) == pytest.approx(
        (single["estimate"], single["ci_low"], single["ci_high"])
    )
    assert twice["n_models"] == 2


def test_paired_bootstrap_ends_are_the_extreme_paired_differences():
    # Two subjects: replicates pool AA, AB or BB; with 2000 draws each is > 2.5 % of them,
    # so the interval ends are the smallest and largest pooled paired differences.
    labels, subjects, preds_a, _ = _predictions(0.8, n_subjects=2, per_subject=30, seed=1)
    _, _, preds_b, _ = _predictions(0.5, n_subjects=2, per_subject=30, seed=2)
    result = paired_subject_bootstrap(labels, subjects, preds_a, preds_b, "accuracy", n_boot=2000)
    a, b = subjects == "p0", subjects == "p1"
    diffs = [np.mean(preds_a[m] == labels[m]) - np.mean(preds_b[m] == labels[m])
             for m in (a, b, a | b)]  # fmt: skip
    assert result["mean_diff"] == pytest.approx(diffs[2])
    assert result["ci_low"] == pytest.approx(min(diffs)) and result["ci_high"] == pytest.approx(
        max(diffs)
    )
    same = paired_subject_bootstrap(labels, subjects, preds_a, preds_a, "ece",
                                    np.eye(5)[preds_a] * 0.75 + 0.05,
                                    np.eye(5)[preds_a] * 0.75 + 0.05, n_boot=100)  # fmt: skip
    assert (same["mean_diff"], same["ci_low"], same["ci_high"], same["p"]) == (0, 0, 0, 1.0)


def test_paired_bootstrap_is_narrower_than_two_independent_intervals():
    # Two models that share most of their per-subject skill: pairing removes that shared part.
    labels, subjects, preds_a, _ = _predictions(0.7, n_subjects=20, seed=3)
    preds_b = preds_a.copy()
    flip = np.random.default_rng(4).random(preds_b.size) < 0.05
    preds_b[flip] = (labels[flip] + 1) % 5
    paired = paired_subject_bootstrap(labels, subjects, preds_a, preds_b, "accuracy", n_boot=500)
    ci_a = subject_bootstrap_ci(labels, preds_a, subjects, "accuracy", 500)
    ci_b = subject_bootstrap_ci(labels, preds_b, subjects, "accuracy", 500)
    assert paired["ci_high"] - paired["ci_low"] < 0.5 * (ci_a["ci_high"] - ci_a["ci_low"])
    assert paired["ci_low"] > 0 and paired["p"] < 0.05  # a is better on most drawn subjects
    assert ci_a["ci_low"] < ci_b["ci_high"]  # the unpaired intervals overlap
