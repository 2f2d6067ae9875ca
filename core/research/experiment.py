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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.research.crops import CropReport, CropSet, build_crop_set
from painmon.core.research.datasets import Sample, load_dataset
from painmon.core.research.metrics import (
    CV_INTERVAL_REFERENCE,
    classification_metrics,
    corrected_mean_ci,
)
from painmon.core.research.options import CV_ENGINES, STACKED_ENGINE_OPS
from painmon.core.research.splits import (
    DEFAULT_SEED,
    SplitError,
    SplitPlan,
    SubjectLeakError,
    check_subject_disjoint,
    dataset_sha256,
    make_splits,
)
from painmon.core.research.subject_stats import (
    DEFAULT_N_BOOT,
    TEST_SET_METRICS,
    bootstrap_interval_text,
    subject_bootstrap_ci,
)
from painmon.core.research.train import (
    RESUME_STATE,
    TrainConfig,
    TrainResult,
    check_resume,
    exact_fp32,
    fit,
    load_checkpoint,
    predict_logits,
    resume_identity,
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
    framing: str | None = None,
) -> PreparedData:
    """Load a dataset (UNBC root, BioVid root or manifest) and its face crops (cached).

    ``framing`` picks the crop framing of new crops (default: the current stable framing).

    A ``.npz`` written by ``painmon crops`` is used as it is: no images, no detector.
    ``allow_outside_root`` lets a manifest list images outside its own folder.
    """
    source = Path(dataset)
    if source.suffix.lower() == ".npz":
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
    framing_kw = {} if framing is None else {"framing": framing}
    crops, report = build_crop_set(
        samples, cache, detector=detector, progress=progress, **framing_kw
    )
    if report.skipped_count:
        log.warning("%s", report.to_text())
    return PreparedData(source, tuple(samples), crops, report, dataset_sha256(source, samples))


def resolve_plan(
    data: PreparedData, splits: str | Path | None, seed: int = DEFAULT_SEED, folds: int = 5
) -> SplitPlan:
    """The split plan from ``splits.json`` (checked against the data) or a fresh one.

    ``seed`` is the *split* seed (``--split-seed``), never the training seed: a seed sweep
    must train and test on the same subjects. A split seed other than the default draws
    other test subjects, which is logged as a warning.
    """
    if splits is None:
        if seed != DEFAULT_SEED:
            log.warning(
                "split seed %d is not the default %d: the test subjects differ from the default "
                "split's, so these results are not comparable with runs on the default split",
                seed,
                DEFAULT_SEED,
            )
        samples = list(data.samples) or data.crops.as_samples()
        return make_splits(samples, data.dataset_sha256, seed=seed, folds=folds)
    plan = SplitPlan.from_json(splits)
    if seed != DEFAULT_SEED and seed != plan.seed:
        log.warning(
            "split seed %d ignored: the split plan %s was made with seed %d and is used as it is",
            seed,
            splits,
            plan.seed,
        )
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


def _plan_differences(recorded: SplitPlan, given: SplitPlan) -> str:
    """Which parts of two split plans differ, in words."""
    parts = [
        name
        for name in ("train", "val", "test")
        if set(getattr(recorded, name)) != set(getattr(given, name))
    ]
    if recorded.folds != given.folds:
        parts.append("folds")
    words = []
    if recorded.seed != given.seed:
        words.append(f"split seed {recorded.seed} -> {given.seed}")
    if recorded.manifest_sha256 != given.manifest_sha256:
        words.append(f"dataset {recorded.manifest_sha256[:12]}… -> {given.manifest_sha256[:12]}…")
    if parts:
        words.append(f"other {'/'.join(parts)} subjects")
    return ", ".join(words) or "they differ"


def _check_resume_split(run: Path, plan: SplitPlan) -> None:
    """Refuse to resume ``run`` on another split than the one its ``splits.json`` records."""
    path = run / "splits.json"
    if not path.is_file():
        return
    recorded = SplitPlan.from_json(path)
    if recorded.to_dict() != plan.to_dict():
        raise SubjectLeakError(
            f"cannot resume {run} on another split ({_plan_differences(recorded, plan)}): its "
            "weights were trained on the subjects of its own splits.json, and training them on "
            "other subjects would put people it learnt from among the test subjects; resume "
            "without --splits/--split-seed, or train into a new folder"
        )


def resume_plan(
    run_dir: str | Path,
    data: PreparedData,
    splits: str | Path | None = None,
    seed: int = DEFAULT_SEED,
) -> SplitPlan:
    """The split plan ``--resume`` continues on: the run's own ``splits.json``.

    Refused, before anything is written, when the run has nothing to resume or no
    ``splits.json``, when ``splits`` is another plan, when ``seed`` (not the default) is not
    the run's split seed, or when ``data`` is another dataset than the one it was split on.
    """
    run = Path(run_dir)
    if not (run / RESUME_STATE).is_file():
        raise FileNotFoundError(f"nothing to resume in {run}: {RESUME_STATE} is missing")
    path = run / "splits.json"
    if not path.is_file():
        raise InvalidInputError(
            f"cannot resume {run}: its splits.json is missing, so the subjects its weights "
            "learnt from are unknown; restore it or train into a new folder"
        )
    plan = SplitPlan.from_json(path)
    if splits is not None:
        given = SplitPlan.from_json(splits)
        if given.to_dict() != plan.to_dict():
            raise SubjectLeakError(
                f"--splits {splits} is not the split of the run in {run} "
                f"({_plan_differences(plan, given)}): --resume continues on the run's own "
                "splits.json; drop --splits, or train into a new folder"
            )
    elif seed != DEFAULT_SEED and seed != plan.seed:
        raise SubjectLeakError(
            f"--split-seed {seed} is not the split seed of the run in {run} ({plan.seed}): "
            "--resume continues on the run's own splits.json; drop --split-seed, or train "
            "into a new folder"
        )
    if data.dataset_sha256 != plan.manifest_sha256:
        raise InvalidInputError(
            f"cannot resume {run} on {data.source}: the run was split on dataset "
            f"{plan.manifest_sha256[:12]}…, this is {data.dataset_sha256[:12]}…; resume with "
            "the run's own dataset, or train into a new folder"
        )
    check_subject_disjoint(plan)
    return plan


def _provenance(
    data: PreparedData, plan: SplitPlan, train_subj, val_subj, fold, training_seed: int
) -> dict[str, Any]:
    return {
        "dataset": str(data.source),
        "data_sha256": data.crops.data_sha256,
        "manifest_sha256": data.dataset_sha256,
        "preprocessing": data.crops.preprocessing,
        # Two seeds, two jobs: the split seed picks the subjects, the training seed the weights.
        "split_seed": plan.seed,
        "training_seed": int(training_seed),
        "fold": fold,
        "train_subjects": sorted(set(train_subj)),
        "val_subjects": sorted(set(val_subj)),
        "test_subjects": list(plan.test),
    }


def check_init_run(run: Path, cfg: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """The model and ``best.json`` of an ``--init-from`` run folder, refused when it is not
    a run folder or holds another model than ``cfg.model`` with its options."""
    if not run.exists():
        raise InvalidInputError(
            f"--init-from {run} not found: give a run folder of `painmon train`"
        )
    if not run.is_dir():
        raise InvalidInputError(
            f"--init-from {run} is a file: give the run folder (it holds best.safetensors "
            "and best.json)"
        )
    model, meta = load_checkpoint(run, "cpu")
    cfg_meta = model.pretrained_cfg
    if cfg_meta.architecture != cfg.model or any(
        cfg_meta.model_kwargs.get(k) != v for k, v in cfg.model_kwargs.items()
    ):
        raise InvalidInputError(
            f"--init-from {run} holds a {cfg_meta.architecture!r} model, this run trains "
            f"{cfg.model!r}: give --model {cfg_meta.architecture} or another run"
        )
    return model, meta


def initial_weights(
    run_dir: str | Path, cfg: TrainConfig, plan: SplitPlan, data: PreparedData
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best weights of ``run_dir`` to fine-tune from, and their ``init_from`` record.

    Refused when the run's model is not ``cfg.model`` with its options, when its checkpoint
    does not name the subjects it learnt from, and when any of them is a test subject of
    ``plan``: a test score of a model that has seen the test people is not a test score.
    "Them" includes the people of the runs that run was itself fine-tuned from (its
    ``init_from`` record carries them on). Subjects are compared by name, so a run on
    another dataset whose names overlap is refused too (rename the subjects or split so
    that they do not meet).
    """
    from painmon.core.util.model_cfg import freeze, thaw

    run = Path(run_dir)
    model, meta = check_init_run(run, cfg)
    cfg_meta = model.pretrained_cfg
    seen = meta.get("train_subjects"), meta.get("val_subjects")
    if not all(isinstance(names, list) for names in seen):
        raise InvalidInputError(
            f"--init-from {run}: its best.json does not list the subjects it was trained on, so "
            "it cannot be checked against this run's test subjects; retrain it with this version"
        )
    inherited = (meta.get("init_from") or {}).get("subjects_seen", [])
    if not isinstance(inherited, list):
        raise InvalidInputError(f"--init-from {run}: its best.json init_from record is damaged")
    every = set(seen[0]) | set(seen[1]) | set(inherited)
    leaked = sorted(set(plan.test) & every)
    if leaked:
        shown = ", ".join(leaked[:5]) + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
        raise InvalidInputError(
            f"--init-from {run} learnt from {len(leaked)} of this split's test subjects "
            f"({shown}): the test results would not be honest; use a split whose test "
            "subjects that run never saw (keep its test subjects in test)"
        )
    crop = thaw(cfg_meta.crop)
    if crop and crop != thaw(freeze(data.crops.preprocessing)):
        log.warning(
            "--init-from %s was trained on crops framed %s, these are %s: fine-tuning starts "
            "from features of another framing",
            run,
            crop,
            data.crops.preprocessing,
        )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    record = {
        "run": str(run),
        "epoch": int(meta.get("epoch", 0)),
        # load_checkpoint read the weights against this hash: they are these bytes.
        "weights_sha256": meta["weights_sha256"],
        "data_sha256": meta.get("data_sha256", ""),
        # Everyone the starting weights learnt from, down the chain of fine-tunings.
        "subjects_seen": sorted(every),
    }
    return state, record


def train_on_plan(
    data: PreparedData,
    plan: SplitPlan,
    cfg: TrainConfig,
    out_dir: str | Path,
    fold: int | None = None,
    resume: bool = False,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train on the plan's train/val subjects (or on fold ``fold``) and write the run folder.

    ``init_from`` (a run folder) fine-tunes its best weights: see :func:`initial_weights`.
    """
    check_subject_disjoint(plan)
    init_weights, init_record = (
        initial_weights(init_from, cfg, plan, data) if init_from is not None else (None, None)
    )
    train_subj = plan.subjects("train", fold) if fold is not None else plan.train
    val_subj = plan.subjects("val", fold) if fold is not None else plan.val
    x_tr, y_tr, s_tr = data.partition(train_subj)
    x_va, y_va, s_va = data.partition(val_subj)
    out = Path(out_dir)
    # A fold's run folder records the fold's own partition: what its weights trained on.
    run_plan = plan.fold_plan(fold) if fold is not None else plan
    if resume:  # checked before anything is written: never another run's weights on this one
        _check_resume_split(out, run_plan)
        check_resume(out, resume_identity(cfg, data.crops.data_sha256, s_tr, s_va))
    out.mkdir(parents=True, exist_ok=True)
    run_plan.to_json(out / "splits.json")
    return fit(
        cfg,
        x_tr,
        y_tr,
        x_va,
        y_va,
        out,
        provenance=dict(
            _provenance(data, plan, s_tr, s_va, fold, cfg.seed),
            **({"init_from": init_record} if init_record else {}),
        ),
        train_subjects=s_tr,
        val_subjects=s_va,
        resume=resume,
        progress=progress,
        init_weights=init_weights,
    )


def predict_run(run_dir: str | Path, images: np.ndarray, device: Any = "cpu") -> np.ndarray:
    """Calibrated probabilities (N,5) of a run's best checkpoint on uint8 NHWC crops.

    In float32 on ``device`` (CPU by default); on a GPU without TF32, so a fold's scores
    match what ``painmon evaluate`` computes on a CPU to float32 rounding.
    """
    return predict_run_sets(run_dir, [images], device)[0]


def predict_run_sets(
    run_dir: str | Path, image_sets: Sequence[np.ndarray], device: Any = "cpu"
) -> list[np.ndarray]:
    """:func:`predict_run` on several crop sets, loading (and hash-checking) the run once."""
    import torch

    from painmon.core.research.calibration import softmax

    device = torch.device(device)
    model, meta = load_checkpoint(run_dir, device)
    temperature = float(meta.get("temperature", 1.0))
    out = []
    with exact_fp32(device):
        for images in image_sets:
            tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
            logits = predict_logits(model, tensor.contiguous().to(device))
            out.append(softmax(logits, temperature))
    return out


EVAL_JSON_KEYS = (
    "accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "quadratic_kappa", "mcc",
    "auc_macro", "auc_micro", "ece", "brier", "nll", "confusion_matrix", "n",
)  # fmt: skip


OTHER_DATASET_LABEL = (
    "evaluated on a different dataset than the run's; subject IDs are not the run's test subjects"
)


class DatasetMismatchError(InvalidInputError):
    """``painmon evaluate`` was given another dataset than the one the run was split on."""


def _recorded_dataset_hashes(plan: SplitPlan, meta: dict[str, Any]) -> set[str]:
    """Hashes of the dataset a run was split on (splits.json) and trained on (best.json)."""
    recorded = {plan.manifest_sha256, meta.get("manifest_sha256")}
    return {h for h in recorded if isinstance(h, str) and h}


def is_other_dataset(
    recorded: set[str] | Sequence[str], data: PreparedData, run: Path, other_dataset: bool
) -> bool:
    """Whether ``data`` is scored as a different dataset than the run's; refuse a silent switch.

    The run's subjects are names, not people: another dataset that reuses the names holds
    other people. A dataset whose hash matches none the run recorded is refused unless
    ``other_dataset``; a run that recorded no hash is scored as another dataset, with a
    warning, since nothing shows that its subjects are the run's.
    """
    known = {h for h in recorded if h}
    if not known:
        log.warning(
            "run %s records no dataset hash: scoring %s as a different dataset (all its "
            "subjects; their IDs are not the run's test subjects)",
            run,
            data.source,
        )
        return True
    if data.dataset_sha256 in known:
        return False
    if other_dataset:
        return True
    raise DatasetMismatchError(
        f"{data.source} (sha256 {data.dataset_sha256[:12]}…) is not the dataset run {run} was "
        f"split on (sha256 {sorted(known)[0][:12]}…): its subject IDs may be other people; "
        "pass --other-dataset to score all of it, labelled as a different dataset"
    )


def subject_cis(
    labels: np.ndarray,
    probs: np.ndarray,
    subjects: np.ndarray,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Subject-bootstrap 95 % CIs of accuracy, macro-F1, quadratic κ and ECE, and what they mean."""
    preds = np.asarray(probs).argmax(axis=1)
    cis = {
        m: subject_bootstrap_ci(labels, preds, subjects, m, n_boot, seed, probs=probs)
        for m in TEST_SET_METRICS
    }
    first = cis[TEST_SET_METRICS[0]]
    return {
        "metrics": cis,
        "interval": bootstrap_interval_text(first["n_boot"], first["n_subjects"]),
    }


def format_subject_cis(subject_ci: dict[str, Any]) -> str:
    """One line: each metric's subject-bootstrap interval, then what the interval means."""
    names = {"accuracy": "accuracy", "macro_f1": "macro-F1", "quadratic_kappa": "QWK",
             "ece": "ECE"}  # fmt: skip
    cells = []
    for metric, ci in subject_ci["metrics"].items():
        if ci["ci_low"] is None or ci["n_subjects"] < 2:
            cells.append(f"{names.get(metric, metric)} n/a")
        else:
            cells.append(f"{names.get(metric, metric)} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]")
    return f"{', '.join(cells)} ({subject_ci['interval']})"


def evaluate_partition(
    run_dir: str | Path,
    data: PreparedData,
    partition: str,
    json_path: str | Path | None = None,
    predictions_path: str | Path | None = None,
    report_path: str | Path | None = None,
    other_dataset: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
) -> dict[str, Any]:
    """Score a run on one partition of its own ``splits.json``; write metrics and predictions.

    ``data`` must be the dataset the run was split on (its hash is in the run's
    ``splits.json``): anything else raises :class:`DatasetMismatchError`, unless
    ``other_dataset``, which scores *every* crop of ``data`` and labels the result
    :data:`OTHER_DATASET_LABEL` (``scored_on``). ``subject_ci`` holds subject-bootstrap
    95 % CIs of accuracy, macro-F1, quadratic κ and ECE. ``details.reliability`` holds the
    reliability bins before (T = 1) and after temperature scaling; ``report_path`` also
    writes the self-contained HTML report of the run.

    A val or test partition holding people the run's weights learnt from (its ``best.json``
    training subjects or its ``init_from`` record; for test also its validation subjects) is
    refused with :class:`SubjectLeakError`: that ``splits.json`` is not the run's split.
    """
    import torch

    from painmon.core.research.calibration import softmax
    from painmon.core.research.report import PartitionPredictions, reliability_summary, write_report

    run = Path(run_dir)
    splits = run / "splits.json"
    if not splits.is_file():
        raise FileNotFoundError(f"{splits} is missing: evaluate needs the run's own split plan")
    plan = SplitPlan.from_json(splits)
    model, meta = load_checkpoint(run, "cpu")
    other = is_other_dataset(_recorded_dataset_hashes(plan, meta), data, run, other_dataset)
    if other:
        mask = np.ones(len(data.crops), dtype=bool)
        scored_on = OTHER_DATASET_LABEL
        partition_label = "other dataset"
    else:
        subjects = plan.subjects(partition)
        _refuse_learnt_subjects(run, partition, subjects, meta)
        mask = data.mask(subjects)
        scored_on = f"{partition} subjects of the run"
        partition_label = partition
    if not mask.any():
        raise InvalidInputError(f"no crops of the run's {partition} subjects are in {data.source}")
    images = data.crops.images[mask]
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    # Keep the raw logits: the report shows calibration before and after the temperature.
    logits = predict_logits(model, tensor)
    temperature = float(meta.get("temperature", 1.0))
    probs = softmax(logits, temperature)
    labels = data.crops.labels[mask]
    subjects = data.crops.subjects[mask]
    metrics = classification_metrics(labels, probs)
    details = {k: v for k, v in metrics.items() if k not in EVAL_JSON_KEYS}
    details["reliability"] = reliability_summary(logits, labels, temperature)
    # Another dataset's subject IDs name other people: its "training crops" are not the run's.
    prevalence = None if other else _prevalence_evaluation(run, data, meta, labels, probs)
    result = {k: metrics[k] for k in EVAL_JSON_KEYS} | {
        "prevalence": prevalence,
        "partition": partition_label,
        "scored_on": scored_on,
        "other_dataset": other,
        "dataset_sha256": data.dataset_sha256,
        "run_dataset_sha256": plan.manifest_sha256,
        "run": str(run),
        "subject_ci": subject_cis(labels, probs, subjects, n_boot),
        "details": details,
    }
    if json_path is not None:
        atomic_write_json(json_path, result)
    if predictions_path is not None:
        paths = np.asarray(data.crops.paths)[mask]
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
        title = (
            f"painmon report: {run.name} on a different dataset"
            if other
            else f"painmon report: {run.name} on its {partition} subjects"
        )
        write_report(
            report_path,
            run_dir=run,
            evaluation=result,
            predictions=PartitionPredictions(images, labels, logits, temperature, partition_label),
            title=title,
        )
    return result


def _refuse_learnt_subjects(
    run: Path, partition: str, subjects: Sequence[str], meta: Mapping[str, Any]
) -> None:
    """Refuse to score ``partition`` (val or test) when it holds people the run's weights
    learnt from (its ``best.json`` training subjects, or those its ``init_from`` weights
    had seen) or, for test, were early-stopped and calibrated on (its validation subjects):
    its ``splits.json`` is then not the split its weights were trained on."""
    if partition == "train":
        return
    learnt = {str(s) for s in meta.get("train_subjects") or ()}
    init = meta.get("init_from")
    if isinstance(init, Mapping):
        learnt |= {str(s) for s in init.get("subjects_seen") or ()}
    if partition == "test":
        learnt |= {str(s) for s in meta.get("val_subjects") or ()}
    leaked = sorted(set(subjects) & learnt)
    if leaked:
        shown = ", ".join(leaked[:5]) + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
        raise SubjectLeakError(
            f"{run}: {len(leaked)} of the {partition} subjects in its splits.json ({shown}) are "
            "people its weights learnt from (best.json); the score would not be a "
            f"{partition} score. Its splits.json is not the split it was trained on (a "
            "cross-validation fold written by an older painmon?): score the fold's own "
            "subjects, or retrain"
        )


def _prevalence_evaluation(
    run: Path, data: PreparedData, meta: Mapping[str, Any], labels: np.ndarray, probs: np.ndarray
) -> dict[str, Any] | None:
    """ECE at the training data's natural prevalence, before and after the bedside's prior
    shift (the model's own probabilities sit at the balanced sampler's priors); None when
    the run's training crops are not in ``data``."""
    from painmon.core.research.calibration import (
        prevalence_report,
        run_class_weighted_sampling,
        training_priors,
    )

    train_subjects = [str(s) for s in meta.get("train_subjects") or ()]
    _images, train_labels, _subjects = data.partition(train_subjects)
    if len(train_labels) == 0:
        log.warning("%s: its training crops are not in %s; no ECE at prevalence", run, data.source)
        return None
    balanced = run_class_weighted_sampling(run)
    natural, trained = training_priors(train_labels, probs.shape[1], balanced)
    return dict(prevalence_report(labels, probs, natural, trained), source="training data")


def format_evaluation(result: dict[str, Any]) -> str:
    """What ``painmon evaluate`` prints: what was scored, the metrics, their subject CIs."""

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    reliability = result["details"]["reliability"]
    lines = [
        f"{result['scored_on']} ({result['run']}): n={result['n']}, accuracy "
        f"{result['accuracy']:.3f}, balanced accuracy {result['balanced_accuracy']:.3f}, "
        f"macro-F1 {result['macro_f1']:.3f}, quadratic kappa {num(result['quadratic_kappa'])}, "
        f"ECE {result['ece']:.3f}",
        f"95 % CIs: {format_subject_cis(result['subject_ci'])}",
        f"calibration: temperature {reliability['temperature']:.3f}; ECE "
        f"{reliability['before']['ece']:.3f} at T = 1 -> {reliability['after']['ece']:.3f}",
    ]
    prevalence = result.get("prevalence")
    if prevalence:
        from painmon.core.research.calibration import format_prevalence

        lines.append(
            f"ECE at prevalence {format_prevalence(prevalence['prevalence'])} "
            f"({prevalence['source']}): {prevalence['ece_uncorrected']:.3f} as trained "
            f"(priors {format_prevalence(prevalence['trained_prior'])}) -> "
            f"{prevalence['ece_corrected']:.3f} prior-shift corrected (what the bedside shows)"
        )
    return "\n".join(lines)


# --- cross-validation -----------------------------------------------------------------------

CV_TEST_PREDICTIONS = "cv_test_predictions.npz"


@dataclass(frozen=True)
class CVTestPredictions:
    """Every fold model's calibrated probabilities on the same held-out test crops."""

    labels: np.ndarray  # (N,)
    subjects: np.ndarray  # (N,) str
    probs: np.ndarray  # (M, N, C), one row per fold model
    seeds: np.ndarray  # (M,)
    folds: np.ndarray  # (M,) 1-based

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.subjects.shape != (n,) or self.probs.ndim != 3 or self.probs.shape[1] != n:
            raise ValueError(
                f"test predictions disagree: {n} labels, subjects {self.subjects.shape}, "
                f"probs {self.probs.shape}"
            )
        if self.seeds.shape != (self.probs.shape[0],) or self.folds.shape != self.seeds.shape:
            raise ValueError("one seed and one fold per fold model")

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=2)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez_compressed(path, labels=self.labels, subjects=self.subjects, probs=self.probs,
                            seeds=self.seeds, folds=self.folds)  # fmt: skip
        return path

    @classmethod
    def load(cls, path: str | Path) -> CVTestPredictions:
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(data["labels"], data["subjects"].astype(str), data["probs"],
                       data["seeds"], data["folds"])  # fmt: skip

    def ordered(self, keys: Sequence[tuple[int, int]]) -> np.ndarray:
        """Probabilities of the fold models in the order of ``keys`` ((seed, fold) pairs)."""
        index = {(int(s), int(f)): i for i, (s, f) in enumerate(zip(self.seeds, self.folds,
                                                                   strict=True))}  # fmt: skip
        missing = [k for k in keys if k not in index]
        if missing:
            raise ValueError(f"no test predictions of fold model(s) {missing}")
        return self.probs[[index[k] for k in keys]]


def load_cv_test_predictions(cv_dir: str | Path) -> CVTestPredictions | None:
    """The test predictions ``cross_validate`` kept in ``cv_dir``, or None (older CV folders)."""
    path = Path(cv_dir) / CV_TEST_PREDICTIONS
    return CVTestPredictions.load(path) if path.is_file() else None


class CrossValidationInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a fold's training: the whole cross-validation stops.

    ``fit()`` and the stacked engine answer Ctrl-C by keeping the best checkpoint and
    returning; inside a cross-validation that must not read as a finished fold, or the next
    fold would start and the summary (and ``reproduce``'s reuse of it) would count an
    under-trained model as trained.
    """


def _interrupted(out: Path, runs: Sequence[Path]) -> CrossValidationInterrupted:
    where = ", ".join(str(r) for r in runs)
    log.warning(
        "cross-validation interrupted while training %s: no summary written to %s; the runs "
        "keep their best checkpoints so far; run the command again to cross-validate",
        where, out,
    )  # fmt: skip
    return CrossValidationInterrupted(f"interrupted while training {where}")


def _cv_job(args: tuple) -> dict[str, Any] | None:
    """One fold's CV row, or None when Ctrl-C interrupted its training (nothing scored)."""
    data, plan, cfg, out, fold, progress = args
    result = train_on_plan(data, plan, cfg, out, fold=fold, progress=progress)
    if result.stopped == "interrupted":
        return None
    return _cv_row(data, plan, cfg, out, fold, result)


def _scoring_device(cfg: TrainConfig) -> Any:
    """Where a fold model is scored: the device it trained on (a GPU scores in seconds what
    takes a CPU minutes; see predict_run for the precision)."""
    from painmon.core.research.seeding import resolve_device

    return resolve_device(cfg.device)


def _cv_row(
    data: PreparedData, plan: SplitPlan, cfg: TrainConfig, out: Path, fold: int,
    result: TrainResult,
) -> dict[str, Any]:  # fmt: skip
    """One fold model's CV row: its run, validation metrics and test predictions.

    The validation probabilities are the ones calibration computed (the same checkpoint,
    float32); only the test crops are scored here.
    """
    y_va = data.partition(plan.subjects("val", fold))[1]
    x_te, y_te, s_te = data.partition(plan.test)
    val_probs = result.val_probs
    if val_probs is None or len(val_probs) != len(y_va):
        raise RuntimeError(f"{out}: training returned no validation probabilities to score")
    probs = predict_run_sets(out, [x_te], _scoring_device(cfg))[0] if len(y_te) else None
    row: dict[str, Any] = {
        "seed": cfg.seed,
        "fold": fold + 1,
        "run": str(out),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "temperature": result.temperature,
        # Sizes of the fold's train and validation sets, for the overlap-corrected CI.
        "n_train_subjects": len(plan.subjects("train", fold)),
        "n_val_subjects": len(plan.subjects("val", fold)),
        "val": classification_metrics(np.asarray(y_va), val_probs),
        "test": classification_metrics(np.asarray(y_te), probs) if len(y_te) else None,
    }
    if len(y_te):
        row["test_predictions"] = {"labels": np.asarray(y_te), "subjects": np.asarray(s_te),
                                   "probs": probs}  # fmt: skip
    return row


def cross_validate(
    data: PreparedData,
    plan: SplitPlan,
    cfg: TrainConfig,
    out_dir: str | Path,
    seeds: Sequence[int] = (42,),
    jobs: int = 1,
    progress: bool = True,
    engine: str = "processes",
) -> dict[str, Any]:
    """K-fold CV over the plan's folds for each seed; per-fold metrics, means and 95 % CIs.

    Each fold's model is early-stopped and temperature-calibrated on that fold's
    validation subjects; its ``val`` metrics are the CV estimate, and its ``test``
    metrics score the same model on the held-out test subjects no fold ever saw (their
    per-crop probabilities are kept in ``cv_test_predictions.npz``). See
    :func:`summarise_cv` for what the intervals are.

    ``engine`` ``"processes"`` trains each (seed, fold) model with ``fit()``, ``jobs`` at a
    time; ``"stacked"`` trains all of them together in this process
    (:func:`~painmon.core.research.stacked.fit_stacked`, the fast path on one GPU), and
    ``"stacked-bmm"`` does so with batched GEMMs instead of vmap.
    """
    if engine not in CV_ENGINES:
        raise InvalidInputError(f"engine must be one of {', '.join(CV_ENGINES)}, got {engine!r}")
    if not plan.folds:
        raise SplitError("the split plan has no folds; make one with `painmon split --folds K`")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidInputError(f"jobs is how many folds train at once: 1 or more, got {jobs!r}")
    if engine in STACKED_ENGINE_OPS and jobs > 1:
        raise InvalidInputError(
            f"the stacked engine trains every fold in one process: use jobs 1 with it (got {jobs})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The whole plan (test subjects and every fold); each fold run records its own partition.
    plan.to_json(out / "splits.json")
    if engine in STACKED_ENGINE_OPS:
        rows = _cv_stacked(data, plan, cfg, out, seeds, progress, STACKED_ENGINE_OPS[engine])
        return _finish_cv(out, rows)
    jobs_args = [
        (data, plan, dataclasses.replace(cfg, seed=seed), out / f"seed{seed}" / f"fold{k + 1}", k,
         progress and jobs == 1)
        for seed in seeds
        for k in range(len(plan.folds))
    ]  # fmt: skip
    if jobs <= 1:
        rows = []
        for a in jobs_args:
            row = _cv_job(a)
            if row is None:  # stop here: the next fold must not start after Ctrl-C
                raise _interrupted(out, [a[3]])
            rows.append(row)
    else:
        with mp.get_context("spawn").Pool(jobs) as pool:
            rows = pool.map(_cv_job, jobs_args)
        stopped = [a[3] for a, row in zip(jobs_args, rows, strict=True) if row is None]
        if stopped:
            raise _interrupted(out, stopped)
    return _finish_cv(out, rows)


def _cv_stacked(
    data: PreparedData,
    plan: SplitPlan,
    cfg: TrainConfig,
    out: Path,
    seeds: Sequence[int],
    progress: bool,
    ops: str = "vmap",
) -> list[dict[str, Any]]:
    """Every (seed, fold) model trained together by ``fit_stacked``; their CV rows."""
    from painmon.core.research.stacked import StackedMember, fit_stacked

    check_subject_disjoint(plan)
    keys = [(seed, k) for seed in seeds for k in range(len(plan.folds))]
    members = []
    for seed, k in keys:
        run = out / f"seed{seed}" / f"fold{k + 1}"
        run.mkdir(parents=True, exist_ok=True)
        plan.fold_plan(k).to_json(run / "splits.json")
        x_tr, y_tr, s_tr = data.partition(plan.subjects("train", k))
        x_va, y_va, s_va = data.partition(plan.subjects("val", k))
        members.append(
            StackedMember(
                seed=seed,
                train_images=x_tr,
                train_labels=y_tr,
                val_images=x_va,
                val_labels=y_va,
                out_dir=run,
                provenance=_provenance(data, plan, s_tr, s_va, k, seed),
                train_subjects=s_tr,
                val_subjects=s_va,
            )
        )
    results = fit_stacked(cfg, members, progress=progress, ops=ops)
    stopped = [m.out_dir for m, r in zip(members, results, strict=True)
               if r.stopped == "interrupted"]  # fmt: skip
    if stopped:
        raise _interrupted(out, stopped)
    t0 = time.perf_counter()
    rows = [
        _cv_row(data, plan, dataclasses.replace(cfg, seed=seed), m.out_dir, k, result)
        for (seed, k), m, result in zip(keys, members, results, strict=True)
    ]
    log.info("scored %d fold models on the test subjects (%s): %.1f s",
             len(rows), _scoring_device(cfg), time.perf_counter() - t0)  # fmt: skip
    return rows


def _finish_cv(out: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarise_cv(rows)
    predictions = _test_predictions(rows)
    if predictions is not None:
        predictions.save(out / CV_TEST_PREDICTIONS)
        summary["test_predictions"] = CV_TEST_PREDICTIONS
    _write_cv_outputs(out, rows, summary)
    return summary


def _test_predictions(rows: Sequence[dict[str, Any]]) -> CVTestPredictions | None:
    """Every fold model's test probabilities stacked, or None when a row lacks them."""
    kept = [r for r in rows if r.get("test_predictions") is not None]
    if not kept or len(kept) != len(rows):
        return None
    first = kept[0]["test_predictions"]
    for r in kept[1:]:
        other = r["test_predictions"]
        if not (np.array_equal(other["labels"], first["labels"])
                and np.array_equal(other["subjects"], first["subjects"])):  # fmt: skip
            raise ValueError("fold models were scored on different test crops")
    return CVTestPredictions(
        labels=np.asarray(first["labels"]),
        subjects=np.asarray(first["subjects"]).astype(str),
        probs=np.stack([np.asarray(r["test_predictions"]["probs"]) for r in kept]),
        seeds=np.asarray([int(r["seed"]) for r in kept]),
        folds=np.asarray([int(r["fold"]) for r in kept]),
    )


def overlap_sizes(folds: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """Mean train and validation subjects per fold (N&B's n_train, n_test).

    Rows without the sizes (older summaries) assume K equal folds: K − 1 train parts to 1.
    """
    train = [f["n_train_subjects"] for f in folds if f.get("n_train_subjects")]
    val = [f["n_val_subjects"] for f in folds if f.get("n_val_subjects")]
    if train and val:
        return float(np.mean(train)), float(np.mean(val))
    k = len({f["fold"] for f in folds})
    return float(max(k - 1, 1)), 1.0


def seed_averaged_folds(folds: Sequence[Mapping[str, Any]], column: str) -> dict[int, float]:
    """Fold number -> mean over seeds of ``column`` (seeds reuse the folds: not independent)."""
    per_fold: dict[int, list[float]] = {}
    for f in folds:
        value = f.get(column)
        if value is not None:
            per_fold.setdefault(int(f["fold"]), []).append(float(value))
    return {k: float(np.mean(v)) for k, v in sorted(per_fold.items())}


def cv_interval_text(n_folds: int, n_seeds: int, n_train: float, n_test: float) -> str:
    """What a CV cell means: mean ± std over seed-averaged folds, N&B-corrected t-interval."""
    seeds = f"each the mean of {n_seeds} seeds" if n_seeds > 1 else "one seed"
    return (
        f"mean ± std over {n_folds} folds ({seeds}); 95 % CI: t-interval over folds, corrected "
        f"for training-set overlap ({CV_INTERVAL_REFERENCE}: variance × (1/{n_folds} + "
        f"{n_test:.3g}/{n_train:.3g}) instead of 1/{n_folds})"
    )


def summarise_cv(
    rows: Sequence[dict[str, Any]], n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """Per-metric mean, std and 95 % CI of a CV, and text saying what each interval means.

    Validation (the CV estimate): seeds reuse the same folds, so each fold's scores are
    first averaged over seeds; the interval is a t-interval over those K fold means with
    Nadeau & Bengio's correction for folds sharing training subjects
    (:func:`~painmon.core.research.metrics.corrected_mean_ci`). Test (the held-out subjects
    every fold model is scored on): the mean of the fold models' scores with a subject
    bootstrap interval (all fold models on the same resampled subjects) when the rows carry
    ``test_predictions``; without them there is no honest interval and ``ci95`` is None.
    """
    folds_rows = [
        {
            "seed": r["seed"],
            "fold": r["fold"],
            "run": r["run"],
            "best_epoch": r["best_epoch"],
            **({"n_train_subjects": r["n_train_subjects"], "n_val_subjects": r["n_val_subjects"]}
               if r.get("n_train_subjects") else {}),
            **{f"val_{k}": r["val"][k] for k in CV_METRICS},
            **({f"test_{k}": r["test"][k] for k in CV_METRICS} if r.get("test") else {}),
        }
        for r in rows
    ]  # fmt: skip
    n_folds = len({r["fold"] for r in rows})
    n_seeds = len({r["seed"] for r in rows})
    n_train, n_test = overlap_sizes(folds_rows) if folds_rows else (1.0, 1.0)
    summary: dict[str, Any] = {
        "n_runs": len(rows),
        "n_folds": n_folds,
        "n_seeds": n_seeds,
        "overlap": {"n_train": n_train, "n_test": n_test, "unit": "subjects"},
        "folds": folds_rows,
        "val": {},
        "test": {},
        "intervals": {"val": cv_interval_text(n_folds, n_seeds, n_train, n_test)},
    }
    for key in CV_METRICS:
        fold_means = list(seed_averaged_folds(folds_rows, f"val_{key}").values())
        if fold_means:
            mean, std, low, high = corrected_mean_ci(fold_means, n_train, n_test)
            n_runs = sum(1 for f in folds_rows if f.get(f"val_{key}") is not None)
            summary["val"][key] = {"mean": mean, "std": std, "ci95": [low, high],
                                   "n": len(fold_means), "n_runs": n_runs}  # fmt: skip
    tested = [r for r in rows if r.get("test")]
    predictions = _test_predictions(tested) if tested else None
    for key in CV_METRICS:
        values = [float(r["test"][key]) for r in tested if r["test"].get(key) is not None]
        if not values:
            continue
        stats = {"mean": float(np.mean(values)),
                 "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                 "ci95": None, "n": len(values), "n_runs": len(values)}  # fmt: skip
        if predictions is not None:
            ci = subject_bootstrap_ci(predictions.labels, predictions.preds, predictions.subjects,
                                      key, n_boot, seed, probs=predictions.probs)  # fmt: skip
            if ci["estimate"] is not None:
                stats["mean"] = ci["estimate"]
            if ci["ci_low"] is not None and ci["n_subjects"] > 1:
                stats["ci95"] = [ci["ci_low"], ci["ci_high"]]
            stats["n"] = ci["n_subjects"]
            stats["n_subjects"] = ci["n_subjects"]
        summary["test"][key] = stats
    if tested:
        if predictions is not None:
            n_subjects = len(set(predictions.subjects.tolist()))
            summary["intervals"]["test"] = (
                f"mean ± std over the {len(tested)} fold models scored on the same held-out test "
                f"subjects; {bootstrap_interval_text(n_boot, n_subjects, len(tested))}"
            )
        else:
            summary["intervals"]["test"] = (
                f"mean ± std over the {len(tested)} fold models scored on the same held-out test "
                "subjects; no interval: the per-crop test predictions were not kept, and the "
                "fold models' spread says nothing about other subjects"
            )
    return summary


def _write_cv_outputs(out: Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> None:
    (out / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    fields = list(dict.fromkeys(k for f in summary["folds"] for k in f))
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
            ax.axhspan(*stats["ci95"], color="grey", alpha=0.25, label="95% CI (N&B-corrected)")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks(range(len(values)), labels, rotation=45, fontsize=8)
        ax.set_title(f"validation {key.replace('_', ' ')} per fold")
        ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_cv_summary(summary: dict[str, Any]) -> str:
    """The table ``painmon cv`` prints, each partition headed by what its interval means."""
    intervals = summary.get("intervals") or {}
    lines = [f"cross-validation over {summary['n_runs']} runs"]
    for part, title in (("val", "validation (CV estimate)"), ("test", "held-out test subjects")):
        if not summary[part]:
            continue
        lines.append(f"{title}: {intervals.get(part, 'mean ± std, 95% CI')}")
        for key, stats in summary[part].items():
            ci = stats.get("ci95")
            interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[no interval]"
            lines.append(
                f"  {part:<4} {key:<18} {stats['mean']:.3f} ± {stats['std']:.3f}  {interval}"
            )
    return "\n".join(lines)
