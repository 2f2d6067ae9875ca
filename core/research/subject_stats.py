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

METRICS = ("accuracy", "macro_f1", "within_one", "ece")
METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
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
    """``metric`` of each pooled confusion matrix in ``confusion`` (..., C, C), rows true."""
    n = confusion.sum(axis=(-2, -1)).astype(np.float64)
    if metric == "accuracy":
        return np.trace(confusion, axis1=-2, axis2=-1) / n
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
    raise AssertionError(metric)  # callers check the name


def _point_estimate(y: np.ndarray, p: np.ndarray, metric: str, probs: np.ndarray | None) -> float:
    if metric == "accuracy":
        return float(np.mean(p == y))
    if metric == "within_one":
        return float(np.mean(np.abs(p - y) <= 1))
    if metric == "macro_f1":
        # classification_metrics predicts argmax(probs): one-hot rows make that ``preds``.
        one_hot = np.eye(NUM_CLASSES)[p]
        return float(classification_metrics(y, one_hot)["macro_f1"])
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

    ``metric`` is ``accuracy``, ``macro_f1``, ``within_one`` (|pred - label| <= 1) or
    ``ece`` (top-label, 15 equal-width bins of ``probs`` (N, C); needs ``probs``). Each of
    the ``n_boot`` replicates draws as many subjects as there are, with replacement, and
    pools all their samples. Returns metric, estimate, ci_low, ci_high, n_subjects,
    n_samples, n_boot and seed. With one subject the interval says nothing (it collapses).
    """
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise InvalidInputError(f"n_boot must be a positive integer, got {n_boot!r}")
    y, p, s = _check_inputs(labels, preds, subjects)
    if metric == "ece" and probs is None:
        raise InvalidInputError("the ECE needs the class probabilities: pass probs (N, C)")
    probs_arr = None
    if probs is not None:
        probs_arr = np.asarray(probs, dtype=np.float64)
        if probs_arr.shape != (y.size, NUM_CLASSES):
            raise InvalidInputError(
                f"probs must have shape ({y.size}, {NUM_CLASSES}), got {probs_arr.shape}"
            )
    try:
        estimate = _point_estimate(y, p, metric, probs_arr)
    except InvalidInputError:
        raise
    except ValueError as exc:  # metrics.py speaks plain ValueError about bad probabilities
        raise InvalidInputError(str(exc)) from exc

    names, index = np.unique(s, return_inverse=True)
    n_subjects = int(names.size)
    rng = np.random.default_rng(seed)
    # Row b: how many times replicate b drew each subject.
    draws = rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=int(n_boot))
    draws = draws.astype(np.float64)
    if metric == "ece":
        assert probs_arr is not None
        counts, hits, confidence = _subject_ece_sums(y, probs_arr, index, n_subjects)
        gap = np.abs(draws @ hits - draws @ confidence).sum(axis=1)
        replicates = gap / (draws @ counts).sum(axis=1)
    else:
        confusion = _subject_confusions(y, p, index, n_subjects).reshape(n_subjects, -1)
        pooled = (draws @ confusion).reshape(-1, NUM_CLASSES, NUM_CLASSES)
        replicates = _metrics_from_confusion(pooled, metric)
    low, high = np.percentile(replicates, CI_PERCENTILES)
    return {
        "metric": metric,
        "estimate": estimate,
        "ci_low": float(low),
        "ci_high": float(high),
        "n_subjects": n_subjects,
        "n_samples": int(y.size),
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


def _ci_text(low: float, high: float, n_subjects: int) -> str:
    # One subject resamples to itself: a zero-width interval would read as certainty.
    if n_subjects < 2:
        return "n/a (1 subject)"
    return f"{low:.3f} – {high:.3f}"


def to_markdown(summary: Mapping[str, Any]) -> str:
    """The summary of :func:`summarise` as markdown tables (overall, then subgroups)."""
    first = summary["overall"][0]
    lines = [
        f"Subject-bootstrap 95 % CIs ({first['n_boot']} replicates over "
        f"{first['n_subjects']} subjects, {first['n_samples']} samples)",
        "",
        "| metric | estimate | 95 % CI |",
        "|---|---|---|",
    ]
    for row in summary["overall"]:
        lines.append(
            f"| {METRIC_NAMES[row['metric']]} | {row['estimate']:.3f} | "
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
