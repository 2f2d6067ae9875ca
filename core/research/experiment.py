"""From a dataset on disk to trained runs: crops, subject-wise splits, training, cross-validation.

These are the functions behind ``painmon train`` and ``painmon cv``; the loop itself
lives in :mod:`painmon.core.research.train`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.research.crops import CropReport, CropSet, build_crop_set
from painmon.core.research.datasets import Sample, load_dataset
from painmon.core.research.metrics import classification_metrics, mean_ci
from painmon.core.research.splits import (
    SplitError,
    SplitPlan,
    check_subject_disjoint,
    dataset_sha256,
    make_splits,
)
from painmon.core.research.train import (
    TrainConfig,
    TrainResult,
    fit,
    load_checkpoint,
    predict_logits,
)
from painmon.core.util.csvsafe import text_cell
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_write_json
from painmon.core.util.paths import user_cache_dir

log = logging.getLogger(__name__)

CV_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "quadratic_kappa", "ece")


@dataclass(frozen=True)
class PreparedData:
    """A dataset's samples, its cached face crops and where both came from."""

    source: Path
    samples: tuple[Sample, ...]
    crops: CropSet
    report: CropReport
    dataset_sha256: str

    def mask(self, subjects: Sequence[str]) -> np.ndarray:
        """Which crops belong to the given people."""
        return np.isin(self.crops.subjects, np.asarray(list(subjects), dtype=str))

    def partition(self, subjects: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crops, labels and subjects of the given people."""
        mask = self.mask(subjects)
        return self.crops.images[mask], self.crops.labels[mask], self.crops.subjects[mask]


def prepare_data(
    dataset: str | Path,
    cache_dir: str | Path | None = None,
    detector: Any = None,
    progress: bool = True,
    allow_outside_root: bool = False,
) -> PreparedData:
    """Load a dataset (UNBC root, BioVid root or manifest) and its face crops (cached).

    A ``.npz`` written by ``painmon crops`` is used as it is: no images, no detector.
    ``allow_outside_root`` lets a manifest list images outside its own folder.
    """
    source = Path(dataset)
    if source.suffix == ".npz":
        crops, dataset_hash = CropSet.load_npz(source)
        if not dataset_hash:
            raise InvalidInputError(
                f"crops file {source} does not record which dataset it came from"
            )
        report = CropReport(
            total=len(crops),
            cropped=len(crops),
            cache_hits=len(crops),
            detections=0,
            detector=str(crops.preprocessing.get("detector", "")),
        )
        return PreparedData(source, (), crops, report, dataset_hash)
    samples = load_dataset(source, allow_outside_root=allow_outside_root)
    cache = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "crops"
    crops, report = build_crop_set(samples, cache, detector=detector, progress=progress)
    if report.skipped_count:
        log.warning("%s", report.to_text())
    return PreparedData(source, tuple(samples), crops, report, dataset_sha256(source, samples))


def resolve_plan(data: PreparedData, splits: str | Path | None, seed: int, folds: int) -> SplitPlan:
    """The split plan from ``splits.json`` (checked against the data) or a fresh one."""
    if splits is None:
        samples = list(data.samples) or data.crops.as_samples()
        return make_splits(samples, data.dataset_sha256, seed=seed, folds=folds)
    plan = SplitPlan.from_json(splits)
    check_subject_disjoint(plan)
    if plan.manifest_sha256 != data.dataset_sha256:
        log.warning(
            "split plan %s was made for dataset %s…, this dataset is %s…",
            splits,
            plan.manifest_sha256[:12],
            data.dataset_sha256[:12],
        )
    known = set(data.crops.subjects.tolist())
    planned = set(plan.train) | set(plan.val) | set(plan.test)
    if not known & planned:
        raise SplitError(f"split plan {splits} names none of this dataset's subjects")
    return plan


def _provenance(data: PreparedData, plan: SplitPlan, train_subj, val_subj, fold) -> dict[str, Any]:
    return {
        "dataset": str(data.source),
        "data_sha256": data.crops.data_sha256,
        "manifest_sha256": data.dataset_sha256,
        "preprocessing": data.crops.preprocessing,
        "split_seed": plan.seed,
        "fold": fold,
        "train_subjects": sorted(set(train_subj)),
        "val_subjects": sorted(set(val_subj)),
        "test_subjects": list(plan.test),
    }


def train_on_plan(
    data: PreparedData,
    plan: SplitPlan,
    cfg: TrainConfig,
    out_dir: str | Path,
    fold: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train on the plan's train/val subjects (or on fold ``fold``) and write the run folder."""
    check_subject_disjoint(plan)
    train_subj = plan.subjects("train", fold) if fold is not None else plan.train
    val_subj = plan.subjects("val", fold) if fold is not None else plan.val
    x_tr, y_tr, s_tr = data.partition(train_subj)
    x_va, y_va, s_va = data.partition(val_subj)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan.to_json(out / "splits.json")
    return fit(
        cfg,
        x_tr,
        y_tr,
        x_va,
        y_va,
        out,
        provenance=_provenance(data, plan, s_tr, s_va, fold),
        train_subjects=s_tr,
        val_subjects=s_va,
        resume=resume,
        progress=progress,
    )


def predict_run(run_dir: str | Path, images: np.ndarray) -> np.ndarray:
    """Calibrated probabilities (N,5) of a run's best checkpoint on uint8 NHWC crops (CPU)."""
    import torch

    from painmon.core.research.calibration import softmax

    model, meta = load_checkpoint(run_dir, "cpu")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return softmax(predict_logits(model, tensor), float(meta.get("temperature", 1.0)))


def evaluate_run(run_dir: str | Path, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Calibrated metrics of a run's best checkpoint on uint8 NHWC crops (CPU)."""
    return classification_metrics(np.asarray(labels), predict_run(run_dir, images))


EVAL_JSON_KEYS = (
    "accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "quadratic_kappa", "mcc",
    "auc_macro", "auc_micro", "ece", "brier", "nll", "confusion_matrix", "n",
)  # fmt: skip


def evaluate_partition(
    run_dir: str | Path,
    data: PreparedData,
    partition: str,
    json_path: str | Path | None = None,
    predictions_path: str | Path | None = None,
    report_path: str | Path | None = None,
) -> dict[str, Any]:
    """Score a run on one partition of its own ``splits.json``; write metrics and predictions.

    ``details.reliability`` holds the reliability bins before (T = 1) and after temperature
    scaling; ``report_path`` also writes the self-contained HTML report of the run.
    """
    import torch

    from painmon.core.research.calibration import softmax
    from painmon.core.research.report import PartitionPredictions, reliability_summary, write_report

    run = Path(run_dir)
    splits = run / "splits.json"
    if not splits.is_file():
        raise FileNotFoundError(f"{splits} is missing: evaluate needs the run's own split plan")
    plan = SplitPlan.from_json(splits)
    mask = data.mask(plan.subjects(partition))
    if not mask.any():
        raise InvalidInputError(f"no crops of the run's {partition} subjects are in {data.source}")
    images = data.crops.images[mask]
    model, meta = load_checkpoint(run, "cpu")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    # Keep the raw logits: the report shows calibration before and after the temperature.
    logits = predict_logits(model, tensor)
    temperature = float(meta.get("temperature", 1.0))
    probs = softmax(logits, temperature)
    labels = data.crops.labels[mask]
    metrics = classification_metrics(labels, probs)
    details = {k: v for k, v in metrics.items() if k not in EVAL_JSON_KEYS}
    details["reliability"] = reliability_summary(logits, labels, temperature)
    result = {k: metrics[k] for k in EVAL_JSON_KEYS} | {
        "partition": partition,
        "run": str(run),
        "details": details,
    }
    if json_path is not None:
        atomic_write_json(json_path, result)
    if predictions_path is not None:
        paths = np.asarray(data.crops.paths)[mask]
        subjects = data.crops.subjects[mask]
        with Path(predictions_path).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "subject", "label", "pred", "p0", "p1", "p2", "p3", "p4"])
            for path, subject, label, p in zip(paths, subjects, labels, probs, strict=True):
                # Paths and subject names come from the dataset: never a spreadsheet formula.
                writer.writerow(
                    [text_cell(path), text_cell(subject), int(label), int(p.argmax()),
                     *(f"{x:.6f}" for x in p)]
                )  # fmt: skip
    if report_path is not None:
        write_report(
            report_path,
            run_dir=run,
            evaluation=result,
            predictions=PartitionPredictions(images, labels, logits, temperature, partition),
            title=f"painmon report: {run.name} on its {partition} subjects",
        )
    return result


# --- cross-validation -----------------------------------------------------------------------


def _cv_job(args: tuple) -> dict[str, Any]:
    data, plan, cfg, out, fold, progress = args
    result = train_on_plan(data, plan, cfg, out, fold=fold, progress=progress)
    x_va, y_va, _ = data.partition(plan.subjects("val", fold))
    x_te, y_te, _ = data.partition(plan.test)
    return {
        "seed": cfg.seed,
        "fold": fold + 1,
        "run": str(out),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "temperature": result.temperature,
        "val": evaluate_run(out, x_va, y_va),
        "test": evaluate_run(out, x_te, y_te) if len(y_te) else None,
    }


def cross_validate(
    data: PreparedData,
    plan: SplitPlan,
    cfg: TrainConfig,
    out_dir: str | Path,
    seeds: Sequence[int] = (42,),
    jobs: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """K-fold CV over the plan's folds for each seed; per-fold metrics, mean ± std, 95 % CI.

    Each fold's model is early-stopped and temperature-calibrated on that fold's
    validation subjects; its ``val`` metrics are the CV estimate, and its ``test``
    metrics score the same model on the held-out test subjects no fold ever saw.
    """
    if not plan.folds:
        raise SplitError("the split plan has no folds; make one with `painmon split --folds K`")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidInputError(f"jobs is how many folds train at once: 1 or more, got {jobs!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs_args = [
        (data, plan, dataclasses.replace(cfg, seed=seed), out / f"seed{seed}" / f"fold{k + 1}", k,
         progress and jobs == 1)
        for seed in seeds
        for k in range(len(plan.folds))
    ]  # fmt: skip
    if jobs <= 1:
        rows = [_cv_job(a) for a in jobs_args]
    else:
        with mp.get_context("spawn").Pool(jobs) as pool:
            rows = pool.map(_cv_job, jobs_args)
    summary = summarise_cv(rows)
    _write_cv_outputs(out, rows, summary)
    return summary


def summarise_cv(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std and t-distribution 95 % CI of each metric over folds (and seeds)."""
    summary: dict[str, Any] = {"n_runs": len(rows), "folds": [], "val": {}, "test": {}}
    for part in ("val", "test"):
        for key in CV_METRICS:
            values = [r[part][key] for r in rows if r.get(part) and r[part].get(key) is not None]
            if values:
                mean, std, low, high = mean_ci(values)
                summary[part][key] = {
                    "mean": mean,
                    "std": std,
                    "ci95": [low, high],
                    "n": len(values),
                }
    for r in rows:
        summary["folds"].append(
            {
                "seed": r["seed"],
                "fold": r["fold"],
                "run": r["run"],
                "best_epoch": r["best_epoch"],
                **{f"val_{k}": r["val"][k] for k in CV_METRICS},
                **({f"test_{k}": r["test"][k] for k in CV_METRICS} if r.get("test") else {}),
            }
        )
    return summary


def _write_cv_outputs(out: Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> None:
    (out / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    fields = list(summary["folds"][0]) if summary["folds"] else []
    with (out / "cv_folds.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(summary["folds"])
    plot_cv_folds(summary, out / "cv_folds.png")


def plot_cv_folds(summary: dict[str, Any], path: Path) -> Path:
    """Per-fold accuracy and macro-F1 bars with the mean and its 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = summary["folds"]
    labels = [f"s{f['seed']}/f{f['fold']}" for f in folds]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, key in zip(axes, ("accuracy", "macro_f1"), strict=True):
        values = [f[f"val_{key}"] for f in folds]
        ax.bar(range(len(values)), values, color="#4C78A8")
        stats = summary["val"].get(key)
        if stats:
            ax.axhline(stats["mean"], color="black", lw=1.5, label=f"mean {stats['mean']:.3f}")
            ax.axhspan(*stats["ci95"], color="grey", alpha=0.25, label="95% CI")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks(range(len(values)), labels, rotation=45, fontsize=8)
        ax.set_title(f"validation {key.replace('_', ' ')} per fold")
        ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_cv_summary(summary: dict[str, Any]) -> str:
    """The table ``painmon cv`` prints."""
    lines = [f"cross-validation over {summary['n_runs']} runs (mean ± std, 95% CI, t-distribution)"]
    for part in ("val", "test"):
        for key, stats in summary[part].items():
            low, high = stats["ci95"]
            lines.append(
                f"  {part:<4} {key:<18} {stats['mean']:.3f} ± {stats['std']:.3f}  "
                f"[{low:.3f}, {high:.3f}]"
            )
    return "\n".join(lines)
