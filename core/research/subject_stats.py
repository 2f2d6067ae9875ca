"""Model-card statistics: subject-bootstrap confidence intervals and accuracy by subgroup.

Samples of one person are not independent (same face, same quirks, same lighting), so a
per-sample bootstrap makes an interval far too narrow. Here *subjects* are resampled with
replacement and their samples pooled, which is what a new ward of new patients would see.

Each replicate only needs per-subject sufficient statistics (a confusion matrix, and for ECE
the per-bin hit and confidence sums from :func:`metrics.reliability_bins`), so 2000
replicates are one matrix product instead of 2000 passes over the samples. The point
estimates come from the project's own metric functions (:mod:`painmon.core.research.metrics`).

Command line::

    python -m painmon.core.research.subject_stats --predictions preds.csv [--synth-seed 0]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.research.metrics import (
    ECE_BINS,
    as_class_indices,
    calibration_errors,
    classification_metrics,
    reliability_bins,
)
from painmon.core.synth.dataset import subject_identity
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import atomic_write_json
from painmon.core.util.labels import NUM_CLASSES
from painmon.core.util.validate import check_probability_rows

logger = logging.getLogger(__name__)

# What `summarise` reports; the first four are every test-set table's (accuracy, macro-F1,
# the project's κ, which is quadratic-weighted, and ECE).
TEST_SET_METRICS = ("accuracy", "macro_f1", "quadratic_kappa", "ece")
METRICS = ("accuracy", "macro_f1", "quadratic_kappa", "ece", "within_one")
BOOTSTRAP_METRICS = (*METRICS, "cohen_kappa", "balanced_accuracy")
METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "quadratic_kappa": "quadratic-weighted κ",
    "cohen_kappa": "Cohen's κ",
    "balanced_accuracy": "balanced accuracy",
    "within_one": "within-one accuracy",
    "ece": f"ECE ({ECE_BINS} bins)",
}
DEFAULT_N_BOOT = 2000
CI_PERCENTILES = (2.5, 97.5)
PREDICTIONS_HEADER = ("path", "subject", "label", "pred", "p0", "p1", "p2", "p3", "p4")

_SYNTH_SUBJECT = re.compile(r"^s(\d+)$")
# Attribute -> its groups in display order.
SUBGROUPS: dict[str, tuple[str, ...]] = {
    "age": ("<40", "40-64", ">=65"),
    "fitzpatrick": ("I-II", "III-IV", "V-VI"),
    "fringe": ("fringe", "no fringe"),
    "glasses": ("glasses", "no glasses"),
    "beard": ("beard", "no beard"),
}


# --------------------------------------------------------------------------- validation


def _check_inputs(
    labels: Any, preds: Any, subjects: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = as_class_indices(labels, NUM_CLASSES, "labels")
    p = as_class_indices(preds, NUM_CLASSES, "preds")
    s = np.asarray(subjects)
    if p.shape != y.shape or s.shape != y.shape:
        raise InvalidInputError(
            f"labels, preds and subjects must have one entry per sample, got lengths "
            f"{y.size}, {p.size} and {s.size}"
        )
    return y, p, s.astype(str)


# --------------------------------------------------------------------------- metrics


def _metrics_from_confusion(confusion: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` of each pooled confusion matrix in ``confusion`` (..., C, C), rows true.

    Kappas are NaN where undefined (chance agreement is total: one and the same class).
    """
    n = confusion.sum(axis=(-2, -1)).astype(np.float64)
    if metric == "accuracy":
        return np.trace(confusion, axis1=-2, axis2=-1) / n
    if metric == "balanced_accuracy":
        # Recall averaged over the classes present in the labels (classification_metrics).
        support = confusion.sum(axis=-1).astype(np.float64)
        tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        present = support > 0
        return (recall * present).sum(axis=-1) / present.sum(axis=-1)
    if metric == "within_one":
        classes = np.arange(confusion.shape[-1])
        near = np.abs(classes[:, None] - classes[None, :]) <= 1
        return (confusion * near).sum(axis=(-2, -1)) / n
    if metric == "macro_f1":
        # The convention of metrics.classification_metrics (sklearn, zero_division=0): F1
        # averaged over the classes present in the labels or the predictions.
        tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
        support = confusion.sum(axis=-1)
        predicted = confusion.sum(axis=-2)
        denominator = support + predicted
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        seen = denominator > 0
        return (f1 * seen).sum(axis=-1) / seen.sum(axis=-1)
    if metric in ("quadratic_kappa", "cohen_kappa"):
        # metrics._kappa over the full class grid, for a stack of confusion matrices.
        cm = confusion.astype(np.float64)
        rows, cols = cm.sum(axis=-1), cm.sum(axis=-2)
        expected = rows[..., :, None] * cols[..., None, :] / n[..., None, None]
        idx = np.arange(cm.shape[-1], dtype=np.float64)
        if metric == "quadratic_kappa":
            w = (idx[:, None] - idx[None, :]) ** 2
        else:
            w = 1.0 - np.eye(cm.shape[-1])
        denominator = (w * expected).sum(axis=(-2, -1))
        observed = (w * cm).sum(axis=(-2, -1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denominator > 0, 1.0 - observed / denominator, np.nan)
    raise AssertionError(metric)  # callers check the name


def _point_estimate(
    y: np.ndarray, p: np.ndarray, metric: str, probs: np.ndarray | None
) -> float | None:
    if metric == "accuracy":
        return float(np.mean(p == y))
    if metric == "within_one":
        return float(np.mean(np.abs(p - y) <= 1))
    if metric in ("macro_f1", "quadratic_kappa", "cohen_kappa", "balanced_accuracy"):
        # classification_metrics predicts argmax(probs): one-hot rows make that ``preds``.
        value = classification_metrics(y, np.eye(NUM_CLASSES)[p])[metric]
        return None if value is None else float(value)
    assert probs is not None
    return float(calibration_errors(y, probs, ECE_BINS)[0])


def _subject_confusions(
    y: np.ndarray, p: np.ndarray, index: np.ndarray, n_subjects: int
) -> np.ndarray:
    flat = (index * NUM_CLASSES + y) * NUM_CLASSES + p
    counts = np.bincount(flat, minlength=n_subjects * NUM_CLASSES * NUM_CLASSES)
    return counts.reshape(n_subjects, NUM_CLASSES, NUM_CLASSES)


def _subject_ece_sums(
    y: np.ndarray, probs: np.ndarray, index: np.ndarray, n_subjects: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per subject and bin: sample count, hit count and confidence sum (reliability_bins)."""
    shape = (n_subjects, ECE_BINS)
    counts, hits, confidence = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for k in range(n_subjects):
        rows = index == k
        bins = reliability_bins(
            probs[rows].max(axis=1), probs[rows].argmax(axis=1) == y[rows], ECE_BINS
        )
        counts[k] = bins["counts"]
        hits[k] = [0.0 if a is None else a for a in bins["accuracy"]] * counts[k]
        confidence[k] = [0.0 if c is None else c for c in bins["confidence"]] * counts[k]
    return counts, hits, confidence


@dataclasses.dataclass(frozen=True)
class _ModelStack:
    """Checked inputs of a bootstrap: labels, subjects, and M models' predictions on them."""

    y: np.ndarray  # (N,)
    subjects: np.ndarray  # (N,) str
    preds: np.ndarray  # (M, N)
    probs: np.ndarray | None  # (M, N, C)


def _model_stack(labels: Any, preds: Any, subjects: Any, probs: Any, metric: str) -> _ModelStack:
    if metric not in BOOTSTRAP_METRICS:
        raise InvalidInputError(
            f"unknown metric {metric!r}; choose one of {', '.join(BOOTSTRAP_METRICS)}"
        )
    stacked = np.asarray(preds)
    if stacked.ndim == 1:
        stacked = stacked[None]
    if stacked.ndim != 2 or stacked.shape[0] < 1:
        raise InvalidInputError(
            f"preds must be (N,) or (models, N) class indices, got shape {stacked.shape}"
        )
    rows = [_check_inputs(labels, row, subjects) for row in stacked]
    y, _, s = rows[0]
    p = np.stack([r[1] for r in rows])
    if metric == "ece" and probs is None:
        raise InvalidInputError("the ECE needs the class probabilities: pass probs (N, C)")
    probs_arr = None
    if probs is not None:
        probs_arr = np.asarray(probs, dtype=np.float64)
        if probs_arr.ndim == 2:
            probs_arr = probs_arr[None]
        if probs_arr.shape != (p.shape[0], y.size, NUM_CLASSES):
            raise InvalidInputError(
                f"probs must have shape ({y.size}, {NUM_CLASSES}) per model for {p.shape[0]} "
                f"model(s), got {np.asarray(probs).shape}"
            )
    return _ModelStack(y, s, p, probs_arr)


def _estimate(stack: _ModelStack, metric: str) -> float | None:
    """Mean over the models of each model's metric (None where every one is undefined)."""
    values = []
    for m in range(stack.preds.shape[0]):
        probs = None if stack.probs is None else stack.probs[m]
        try:
            value = _point_estimate(stack.y, stack.preds[m], metric, probs)
        except ValueError as exc:  # metrics.py speaks plain ValueError about bad probabilities
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(str(exc)) from exc
        if value is not None:
            values.append(value)
    return float(np.mean(values)) if values else None


def _draws(n_subjects: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_subjects): how many times each replicate drew each subject."""
    if int(n_boot) != n_boot or n_boot < 1:
        raise InvalidInputError(f"n_boot must be a positive integer, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=int(n_boot))
    return draws.astype(np.float64)


def _replicates(
    stack: _ModelStack, metric: str, index: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """Mean over the models of each replicate's metric, (n_boot,); NaN where undefined."""
    n_subjects = draws.shape[1]
    per_model = []
    for m in range(stack.preds.shape[0]):
        if metric == "ece":
            assert stack.probs is not None
            counts, hits, confidence = _subject_ece_sums(stack.y, stack.probs[m], index, n_subjects)
            gap = np.abs(draws @ hits - draws @ confidence).sum(axis=1)
            per_model.append(gap / (draws @ counts).sum(axis=1))
        else:
            confusion = _subject_confusions(stack.y, stack.preds[m], index, n_subjects)
            pooled = (draws @ confusion.reshape(n_subjects, -1)).reshape(
                -1, NUM_CLASSES, NUM_CLASSES
            )
            per_model.append(_metrics_from_confusion(pooled, metric))
    values = np.stack(per_model)  # (M, n_boot)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(values)
        total = np.where(finite, values, 0.0).sum(axis=0)
        count = finite.sum(axis=0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _percentile_interval(replicates: np.ndarray) -> tuple[float | None, float | None]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None, None
    low, high = np.percentile(finite, CI_PERCENTILES)
    return float(low), float(high)


def subject_bootstrap_ci(
    labels: Sequence[int] | np.ndarray,
    preds: Sequence[int] | np.ndarray,
    subjects: Sequence[str] | np.ndarray,
    metric: str = "accuracy",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    probs: np.ndarray | None = None,
) -> dict[str, Any]:
    """Point estimate and subject-bootstrap 95 % percentile interval of one metric.

    ``metric`` is ``accuracy``, ``macro_f1``, ``quadratic_kappa`` (the project's κ),
    ``cohen_kappa``, ``within_one`` (|pred - label| <= 1) or ``ece`` (top-label, 15
    equal-width bins of ``probs`` (N, C); needs ``probs``). Each of the ``n_boot``
    replicates draws as many subjects as there are, with replacement, and pools all their
    samples. ``preds`` (M, N) with ``probs`` (M, N, C) scores M models on the same samples:
    the estimate is the mean of their metrics and every replicate averages the M models on
    the same drawn subjects. Returns metric, estimate, ci_low, ci_high, n_subjects,
    n_samples, n_models, n_boot and seed (estimate and interval None where κ is undefined).
    With one subject the interval says nothing (it collapses).
    """
    stack = _model_stack(labels, preds, subjects, probs, metric)
    estimate = _estimate(stack, metric)
    names, index = np.unique(stack.subjects, return_inverse=True)
    draws = _draws(int(names.size), n_boot, seed)
    low, high = _percentile_interval(_replicates(stack, metric, index, draws))
    if estimate is None:
        low = high = None
    return {
        "metric": metric,
        "estimate": estimate,
        "ci_low": low,
        "ci_high": high,
        "n_subjects": int(names.size),
        "n_samples": int(stack.y.size),
        "n_models": int(stack.preds.shape[0]),
        "n_boot": int(n_boot),
        "seed": int(seed),
    }


def paired_subject_bootstrap(
    labels: Sequence[int] | np.ndarray,
    subjects: Sequence[str] | np.ndarray,
    preds_a: np.ndarray,
    preds_b: np.ndarray,
    metric: str = "accuracy",
    probs_a: np.ndarray | None = None,
    probs_b: np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Model A minus model B on the same test samples, with a paired subject bootstrap.

    Every replicate draws subjects with replacement once and scores *both* models on the
    same drawn subjects, so the interval is on the per-subject paired difference, not on
    two independent intervals. ``preds_a``/``preds_b`` are (N,) or (M, N) (M fold models of
    one configuration, averaged as in :func:`subject_bootstrap_ci`). Returns metric,
    estimate_a, estimate_b, mean_diff, ci_low, ci_high, p (two-sided: twice the smaller
    share of replicates on either side of 0, at most 1), n_subjects, n_samples, n_boot, seed.
    """
    a = _model_stack(labels, preds_a, subjects, probs_a, metric)
    b = _model_stack(labels, preds_b, subjects, probs_b, metric)
    est_a, est_b = _estimate(a, metric), _estimate(b, metric)
    names, index = np.unique(a.subjects, return_inverse=True)
    draws = _draws(int(names.size), n_boot, seed)
    diff = _replicates(a, metric, index, draws) - _replicates(b, metric, index, draws)
    low, high = _percentile_interval(diff)
    finite = diff[np.isfinite(diff)]
    p = None
    if est_a is not None and est_b is not None and finite.size:
        p = float(min(1.0, 2.0 * min(np.mean(finite <= 0), np.mean(finite >= 0))))
    undefined = est_a is None or est_b is None
    return {
        "metric": metric,
        "estimate_a": est_a,
        "estimate_b": est_b,
        "mean_diff": None if undefined else est_a - est_b,
        "ci_low": None if undefined else low,
        "ci_high": None if undefined else high,
        "p": p,
        "n_subjects": int(names.size),
        "n_samples": int(a.y.size),
        "n_boot": int(n_boot),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------- subgroups


def _synthetic_index(subject: str) -> int:
    match = _SYNTH_SUBJECT.match(str(subject))
    if match is None:
        raise InvalidInputError(
            f"subject {subject!r} is not a painmon synthetic subject (ids like 's000', "
            "'s017'); subgroups can only be rebuilt for synthetic data"
        )
    return int(match.group(1))


def _age_band(age_years: int) -> str:
    if age_years < 40:
        return "<40"
    return "40-64" if age_years < 65 else ">=65"


def _fitzpatrick_band(fitzpatrick: int) -> str:
    return ("I-II", "III-IV", "V-VI")[(fitzpatrick - 1) // 2]


def synthetic_subgroups(
    subjects: Sequence[str] | np.ndarray, seed: int
) -> dict[str, dict[str, str]]:
    """Subject id -> {attribute: group} for painmon's synthetic subjects drawn with ``seed``.

    Each identity is rebuilt with :func:`subject_identity`; the attributes and their groups
    are those of :data:`SUBGROUPS` (age band, Fitzpatrick type, fringe, glasses, beard).
    """
    groups: dict[str, dict[str, str]] = {}
    for subject in dict.fromkeys(str(s) for s in np.asarray(subjects).ravel()):
        identity = subject_identity(int(seed), _synthetic_index(subject))
        groups[subject] = {
            "age": _age_band(identity.age_years),
            "fitzpatrick": _fitzpatrick_band(identity.fitzpatrick),
            "fringe": "fringe" if identity.hair_style == "fringe" else "no fringe",
            "glasses": "glasses" if identity.glasses != "none" else "no glasses",
            "beard": "beard" if identity.beard != "none" else "no beard",
        }
    return groups


@dataclasses.dataclass(frozen=True)
class SubgroupRow:
    """Accuracy of one group of one attribute, with its subject-bootstrap 95 % interval."""

    attribute: str
    group: str
    subjects: int
    samples: int
    accuracy: float
    ci_low: float
    ci_high: float

    def __post_init__(self) -> None:
        if self.subjects < 1 or self.samples < self.subjects:
            raise ValueError(
                f"a group needs >= 1 subject and >= 1 sample each, got {self.subjects} "
                f"subjects and {self.samples} samples"
            )
        if not 0.0 <= self.ci_low <= self.ci_high <= 1.0:
            raise ValueError(f"bad interval [{self.ci_low}, {self.ci_high}]")


def _group_order(attribute: str, present: set[str]) -> list[str]:
    known = [g for g in SUBGROUPS.get(attribute, ()) if g in present]
    return known + sorted(present - set(known))


def subgroup_table(
    labels: Sequence[int] | np.ndarray,
    preds: Sequence[int] | np.ndarray,
    subjects: Sequence[str] | np.ndarray,
    groups: Mapping[str, Mapping[str, str]],
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> list[SubgroupRow]:
    """Per attribute and group (``groups``: subject -> {attribute: group}): accuracy + CI.

    Rows come attribute by attribute in the order of the first subject's mapping, groups in
    :data:`SUBGROUPS` order (others alphabetically); empty groups are left out.
    """
    y, p, s = _check_inputs(labels, preds, subjects)
    missing = sorted(set(s) - set(groups))
    if missing:
        raise InvalidInputError(
            f"no subgroup for subject(s) {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    attributes = list(dict.fromkeys(a for subject in dict.fromkeys(s) for a in groups[subject]))
    rows = []
    for attribute in attributes:
        of_sample = np.array([groups[subject].get(attribute, "") for subject in s])
        for group in _group_order(attribute, set(of_sample) - {""}):
            mask = of_sample == group
            ci = subject_bootstrap_ci(y[mask], p[mask], s[mask], "accuracy", n_boot, seed)
            rows.append(
                SubgroupRow(
                    attribute=attribute,
                    group=group,
                    subjects=ci["n_subjects"],
                    samples=ci["n_samples"],
                    accuracy=ci["estimate"],
                    ci_low=ci["ci_low"],
                    ci_high=ci["ci_high"],
                )
            )
    return rows


# --------------------------------------------------------------------------- predictions file


@dataclasses.dataclass(frozen=True)
class Predictions:
    """The rows of a ``painmon evaluate --predictions`` CSV, one array entry per crop."""

    paths: np.ndarray  # str
    subjects: np.ndarray  # str
    labels: np.ndarray  # int64
    preds: np.ndarray  # int64
    probs: np.ndarray  # float64 (N, NUM_CLASSES)

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        for name in ("paths", "subjects", "preds"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have {n} entries, got {getattr(self, name).shape}")
        if self.probs.shape != (n, NUM_CLASSES):
            raise ValueError(f"probs must have shape ({n}, {NUM_CLASSES}), got {self.probs.shape}")


def read_predictions_csv(path: str | Path) -> Predictions:
    """Read the ``path,subject,label,pred,p0..p4`` CSV that ``painmon evaluate`` writes."""
    source = Path(path)
    with source.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != PREDICTIONS_HEADER:
            raise InvalidInputError(
                f"{source} is not a predictions file: expected the header "
                f"{','.join(PREDICTIONS_HEADER)}, got {','.join(header or []) or 'nothing'}"
            )
        records = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(PREDICTIONS_HEADER):
                raise InvalidInputError(
                    f"{source}, line {line}: expected {len(PREDICTIONS_HEADER)} fields, "
                    f"got {len(row)}"
                )
            try:
                records.append(
                    (row[0], row[1], int(row[2]), int(row[3]), [float(v) for v in row[4:]])
                )
            except ValueError as exc:
                raise InvalidInputError(f"{source}, line {line}: {exc}") from exc
    if not records:
        raise InvalidInputError(f"{source} has a header but no predictions")
    paths, subjects, labels, preds, probs = zip(*records, strict=True)
    predictions = Predictions(
        paths=np.array(paths, dtype=str),
        subjects=np.array(subjects, dtype=str),
        labels=as_class_indices(np.array(labels), NUM_CLASSES, f"{source}: label"),
        preds=as_class_indices(np.array(preds), NUM_CLASSES, f"{source}: pred"),
        probs=np.array(probs, dtype=np.float64),
    )
    try:
        check_probability_rows(predictions.probs, what=f"{source}: p0..p4", range_slack=1e-6)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    return predictions


# --------------------------------------------------------------------------- report


def summarise(
    predictions: Predictions,
    synth_seed: int | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Overall metrics with CIs and (for synthetic subjects, given ``synth_seed``) subgroups."""
    overall = [
        subject_bootstrap_ci(
            predictions.labels,
            predictions.preds,
            predictions.subjects,
            metric,
            n_boot,
            seed,
            probs=predictions.probs,
        )
        for metric in METRICS
    ]
    result: dict[str, Any] = {"overall": overall, "subgroups": None, "synth_seed": synth_seed}
    if synth_seed is not None:
        groups = synthetic_subgroups(predictions.subjects, synth_seed)
        rows = subgroup_table(
            predictions.labels, predictions.preds, predictions.subjects, groups, n_boot, seed
        )
        result["subgroups"] = [dataclasses.asdict(row) for row in rows]
    return result


def bootstrap_interval_text(n_boot: int, n_subjects: int, n_models: int = 1) -> str:
    """What a subject-bootstrap interval means, for a table's header or footnote."""
    models = (
        f"; each replicate averages the {n_models} fold models on the same drawn subjects"
        if n_models > 1
        else ""
    )
    return (
        f"95 % CI: subject bootstrap, percentile interval of {n_boot} replicates that resample "
        f"the {n_subjects} subjects (not images) with replacement{models}"
    )


def _ci_text(low: float | None, high: float | None, n_subjects: int) -> str:
    # One subject resamples to itself: a zero-width interval would read as certainty.
    if n_subjects < 2:
        return "n/a (1 subject)"
    if low is None or high is None:
        return "n/a (undefined)"
    return f"{low:.3f} – {high:.3f}"


def _estimate_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def to_markdown(summary: Mapping[str, Any]) -> str:
    """The summary of :func:`summarise` as markdown tables (overall, then subgroups)."""
    first = summary["overall"][0]
    lines = [
        f"Subject-bootstrap 95 % CIs ({first['n_boot']} replicates over "
        f"{first['n_subjects']} subjects, {first['n_samples']} samples). "
        + bootstrap_interval_text(first["n_boot"], first["n_subjects"])
        + ".",
        "",
        "| metric | estimate | 95 % CI |",
        "|---|---|---|",
    ]
    for row in summary["overall"]:
        lines.append(
            f"| {METRIC_NAMES[row['metric']]} | {_estimate_text(row['estimate'])} | "
            f"{_ci_text(row['ci_low'], row['ci_high'], row['n_subjects'])} |"
        )
    if summary.get("subgroups"):
        lines += [
            "",
            f"Accuracy by subgroup (synthetic identities, seed {summary['synth_seed']})",
            "",
            "| attribute | group | subjects | samples | accuracy | 95 % CI |",
            "|---|---|---|---|---|---|",
        ]
        for row in summary["subgroups"]:
            lines.append(
                f"| {row['attribute']} | {row['group']} | {row['subjects']} | {row['samples']} | "
                f"{row['accuracy']:.3f} | "
                f"{_ci_text(row['ci_low'], row['ci_high'], row['subjects'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m painmon.core.research.subject_stats",
        description="Model-card statistics: subject-bootstrap 95 %% CIs and subgroup accuracy.",
    )
    parser.add_argument(
        "--predictions", required=True, type=Path, help="preds.csv from `painmon evaluate`"
    )
    parser.add_argument(
        "--synth-seed",
        type=int,
        default=None,
        help="dataset seed of synthetic subjects: adds accuracy by subgroup",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    try:
        predictions = read_predictions_csv(args.predictions)
        summary = summarise(predictions, args.synth_seed, args.n_boot, args.seed)
    except (PainmonError, OSError) as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 2
    sys.stdout.write(to_markdown(summary))
    if args.json is not None:
        atomic_write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
