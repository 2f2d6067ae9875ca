"""``painmon reproduce``: the founding paper's whole evaluation protocol in one command.

Every network and ablation row goes through the same subject-wise K-fold
cross-validation (one split plan, the same seeds) and is scored on the same
held-out test subjects. Out come Table 2 (model comparison), Table 3 (attention,
recipe, pooling-set and head-count ablations) and Table 4 (paired t-tests of
DA-CNN against each baseline over the same folds), written as ``tables.md`` and
``results.json`` beside one CV folder per distinct configuration.

The numbers are whatever honest subject-wise evaluation gives on the data at hand;
nothing here knows or aims at the paper's figures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.research.crops import CropSet
from painmon.core.research.experiment import (
    PreparedData,
    cross_validate,
    prepare_data,
    resolve_plan,
)
from painmon.core.research.metrics import paired_t_test
from painmon.core.research.splits import SplitPlan
from painmon.core.research.train import TrainConfig
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_write_json, atomic_write_text
from painmon.core.util.model_cfg import thaw

log = logging.getLogger(__name__)

REFERENCE_MODEL = "dacnn"
BASELINE_MODELS = ("simplecnn", "micropainnet", "painxception")
MODEL_LABELS = {
    "simplecnn": "SimpleCNN",
    "micropainnet": "MicroPainNet",
    "painxception": "PainXception",
    "dacnn": "DA-CNN",
}
TABLE_METRICS = ("accuracy", "macro_f1", "quadratic_kappa", "ece")
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "macro_f1": "Macro-F1",
    "quadratic_kappa": "QWK",
    "ece": "ECE",
}
T_TEST_METRICS = ("accuracy", "macro_f1")
POOLING_SETS = ("avg", "avg,max", "avg,max,std")
HEAD_COUNTS = (1, 2, 4, 8)

# --quick: enough to run every code path on synthetic patients in CI's 2-core budget.
QUICK_FOLDS = 2
QUICK_EPOCHS = 1
QUICK_BATCH_SIZE = 4
QUICK_CROPS_PER_SUBJECT = 1

HONESTY_NOTE = "numbers are whatever honest subject-wise evaluation gives"


@dataclass(frozen=True)
class Experiment:
    """One table row: a label, the table it belongs to and the training configuration."""

    key: str  # folder name under out_dir/cv; rows with equal configurations share one
    table: str  # "table2", "ablation", "pooling" or "heads"
    label: str
    cfg: TrainConfig

    def __post_init__(self) -> None:
        if self.table not in ("table2", "ablation", "pooling", "heads"):
            raise ValueError(f"unknown table {self.table!r}")
        if not self.key or "/" in self.key or self.key.startswith("."):
            raise ValueError(f"experiment key {self.key!r} must be a plain folder name")


@dataclass(frozen=True)
class ProtocolSettings:
    """Folds, seeds, epochs and data cap actually used (``--quick`` shrinks them)."""

    folds: int
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    warmup_epochs: int
    crops_per_subject: int | None  # None: every crop
    quick: bool
    lr: float = TrainConfig.lr  # the paper's 1e-4 unless asked otherwise

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise InvalidInputError(f"cross-validation needs at least 2 folds, got {self.folds}")
        if not self.seeds:
            raise InvalidInputError("give at least one seed, e.g. 42,123,999")
        if self.epochs < 1:
            raise InvalidInputError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise InvalidInputError(f"learning rate must be > 0, got {self.lr}")


def protocol_settings(
    quick: bool,
    folds: int,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 32,
    lr: float = TrainConfig.lr,
) -> ProtocolSettings:
    """The settings a full run asks for, or their ``--quick`` shrink."""
    seeds = tuple(int(s) for s in seeds)
    if not quick:
        return ProtocolSettings(folds, seeds, epochs, batch_size, 5, None, False, lr)
    return ProtocolSettings(
        folds=min(folds, QUICK_FOLDS),
        seeds=seeds[:1],
        epochs=min(epochs, QUICK_EPOCHS),
        batch_size=QUICK_BATCH_SIZE,
        warmup_epochs=0,
        crops_per_subject=QUICK_CROPS_PER_SUBJECT,
        quick=True,
        lr=lr,
    )


def build_experiments(settings: ProtocolSettings, device: str = "auto") -> list[Experiment]:
    """Every row of Tables 2 and 3 with its training configuration (the paper's recipe)."""
    recipe = TrainConfig(
        model=REFERENCE_MODEL,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        warmup_epochs=settings.warmup_epochs,
        seed=settings.seeds[0],
        device=device,
        augment="full",
        label_smoothing=0.1,
    )
    plain = dataclasses.replace(recipe, augment="none", label_smoothing=0.0)

    def dacnn(base: TrainConfig, **kwargs: Any) -> TrainConfig:
        return dataclasses.replace(base, model=REFERENCE_MODEL, model_kwargs=kwargs)

    rows = [
        Experiment(name, "table2", MODEL_LABELS[name], dataclasses.replace(recipe, model=name))
        for name in (*BASELINE_MODELS, REFERENCE_MODEL)
    ]
    rows += [
        Experiment(
            "ablation-baseline",
            "ablation",
            "Baseline (no attention, no augmentation, no label smoothing)",
            dacnn(plain, spatial_attention=False, channel_attention=False),
        ),
        Experiment(
            "ablation-spatial",
            "ablation",
            "+ spatial attention",
            dacnn(plain, spatial_attention=True, channel_attention=False),
        ),
        Experiment(
            "ablation-channel",
            "ablation",
            "+ channel attention",
            dacnn(plain, spatial_attention=False, channel_attention=True),
        ),
        Experiment(
            "ablation-both",
            "ablation",
            "+ both attentions",
            dacnn(plain, spatial_attention=True, channel_attention=True),
        ),
        Experiment(
            "ablation-full",
            "ablation",
            "Full (both + augmentation + label smoothing 0.1)",
            dacnn(recipe, spatial_attention=True, channel_attention=True),
        ),
    ]
    if not settings.quick:
        rows += [
            Experiment(
                f"pooling-{pooling.replace(',', '-')}",
                "pooling",
                "{" + pooling.replace(",", ", ") + "}",
                dacnn(recipe, pooling=pooling),
            )
            for pooling in POOLING_SETS
        ]
        rows += [
            Experiment(f"heads-{k}", "heads", f"{k} head{'s' if k > 1 else ''}",
                       dacnn(recipe, num_heads=k))
            for k in HEAD_COUNTS
        ]  # fmt: skip
    return rows


def resolved_model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The model's options with defaults filled in (builds it on the meta device: no weights)."""
    import torch

    from painmon.models import create_model

    with torch.device("meta"):
        model = create_model(cfg.model, **cfg.model_kwargs)
    return thaw(model.pretrained_cfg.model_kwargs)


def config_identity(cfg: TrainConfig) -> str:
    """A canonical text of a configuration: rows that would train the same networks match."""
    data = cfg.to_dict()
    data["model_kwargs"] = resolved_model_kwargs(cfg)
    return json.dumps(data, sort_keys=True, default=str)


def count_parameters(cfg: TrainConfig) -> int:
    import torch

    from painmon.models import create_model

    with torch.device("meta"):
        model = create_model(cfg.model, **cfg.model_kwargs)
    return sum(p.numel() for p in model.parameters())


def cap_crops_per_subject(data: PreparedData, per_subject: int) -> PreparedData:
    """Keep at most ``per_subject`` crops of each person, spread over their recordings."""
    if per_subject < 1:
        raise ValueError(f"crops per subject must be >= 1, got {per_subject}")
    crops = data.crops
    keep: list[int] = []
    for subject in sorted(set(crops.subjects.tolist())):
        idx = np.flatnonzero(crops.subjects == subject)
        if len(idx) > per_subject:
            idx = idx[np.linspace(0, len(idx) - 1, per_subject).round().astype(int)]
        keep.extend(idx.tolist())
    sel = np.asarray(sorted(keep), dtype=np.int64)
    subset = CropSet(
        images=crops.images[sel],
        labels=crops.labels[sel],
        subjects=crops.subjects[sel],
        paths=tuple(crops.paths[i] for i in sel),
        frame_indices=tuple(crops.frame_indices[i] for i in sel),
        preprocessing=dict(crops.preprocessing, capped_crops_per_subject=per_subject),
    )
    return dataclasses.replace(data, crops=subset)


# --- statistics ---------------------------------------------------------------------------


def paired_comparisons(
    reference_folds: Sequence[Mapping[str, Any]],
    baseline_folds: Mapping[str, Sequence[Mapping[str, Any]]],
    metrics: Sequence[str] = T_TEST_METRICS,
    partitions: Sequence[str] = ("val", "test"),
) -> list[dict[str, Any]]:
    """Paired t-tests of the reference model against each baseline over the same (seed, fold).

    Fold rows are ``cross_validate`` summary rows (``seed``, ``fold``, ``val_accuracy``…).
    A partition is left out for a baseline when a fold lacks it (no test subjects).
    """
    ref = {(r["seed"], r["fold"]): r for r in reference_folds}
    out = []
    for name, folds in baseline_folds.items():
        base = {(r["seed"], r["fold"]): r for r in folds}
        if set(base) != set(ref):
            raise ValueError(
                f"{name} was cross-validated on folds {sorted(base)}, the reference on "
                f"{sorted(ref)}: a paired test needs the same seeds and folds"
            )
        pairs = sorted(ref)
        for part in partitions:
            for metric in metrics:
                column = f"{part}_{metric}"
                if any(ref[k].get(column) is None or base[k].get(column) is None for k in pairs):
                    continue
                a = [float(ref[k][column]) for k in pairs]
                b = [float(base[k][column]) for k in pairs]
                test = paired_t_test(a, b)
                out.append(
                    {
                        "baseline": name,
                        "partition": part,
                        "metric": metric,
                        "n": test["n"],
                        "reference_mean": float(np.mean(a)),
                        "baseline_mean": float(np.mean(b)),
                        "mean_diff": test["mean_diff"],
                        "t": test["t"],
                        "p": test["p"],
                    }
                )
    return out


# --- tables -------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def format_metric_cell(stats: Mapping[str, Any] | None) -> str:
    """``mean ± std [ci low, ci high]``, or ``n/a`` when the metric was undefined everywhere."""
    if not stats:
        return "n/a"
    low, high = stats["ci95"]
    return f"{stats['mean']:.3f} ± {stats['std']:.3f} [{low:.3f}, {high:.3f}]"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _metric_rows(
    result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], part: str, lead: Sequence[str]
) -> list[list[str]]:
    out = []
    for row in rows:
        summary = result["experiments"][row["experiment"]]["summary"]
        cells = [str(row.get(c, "")) for c in lead]
        if row.get("same_runs_as"):
            # Trained once: the same configuration appears in two tables.
            shared = result["experiments"][row["same_runs_as"]].get("label", row["same_runs_as"])
            cells[0] += f" (same runs as {shared})"
        cells += [format_metric_cell(summary[part].get(m)) for m in TABLE_METRICS]
        out.append(cells)
    return out


def _partition_tables(
    result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], lead: Sequence[str]
) -> list[str]:
    header = [*lead, *(METRIC_LABELS[m] for m in TABLE_METRICS)]
    lines = ["Cross-validation (each fold's validation subjects):", ""]
    lines += _markdown_table(header, _metric_rows(result, rows, "val", lead))
    if any(result["experiments"][r["experiment"]]["summary"]["test"] for r in rows):
        lines += [
            "",
            "Held-out test subjects (every fold's model, scored on subjects no fold saw):",
        ]
        lines += ["", *_markdown_table(header, _metric_rows(result, rows, "test", lead))]
    return lines


def format_tables_markdown(result: Mapping[str, Any]) -> str:
    """Tables 2, 3 and 4 as Markdown, headed by the protocol that produced them."""
    p = result["protocol"]
    seeds = ", ".join(str(s) for s in p["seeds"])
    lines = [
        "# painmon reproduce — the founding paper's protocol",
        "",
        f"Dataset `{p['dataset']}` (SHA-256 `{p['dataset_sha256']}`), {p['n_subjects']} subjects "
        f"({p['n_test_subjects']} held out for test), {p['n_crops']} face crops; "
        f"{p['folds']} folds, seeds {seeds}, {p['epochs']} epoch(s) (batch {p['batch_size']}, "
        f"lr {p.get('lr', 1e-4):g}, device {p['device']}); {HONESTY_NOTE}, reported exactly as "
        "they came out, whichever model comes first. Cells: mean ± std [95% CI, "
        f"t-distribution] over {p['folds'] * len(p['seeds'])} fold runs.",
    ]
    if p["quick"]:
        lines += [
            "",
            f"**Quick run**: {p['folds']} folds, {len(p['seeds'])} seed, {p['epochs']} epoch, "
            f"at most {p['crops_per_subject']} crop(s) per subject. It only checks that the "
            "protocol runs end to end; the numbers mean nothing.",
        ]
    tables = result["tables"]
    lines += ["", "## Table 2 — model comparison", ""]
    lines += _partition_tables(result, tables["table2"], ["Model", "Params"])
    lines += ["", "## Table 3 — ablation (DA-CNN)", ""]
    lines += _partition_tables(result, tables["ablation"], ["Configuration"])
    for name, title, lead in (
        ("pooling", "Table 3b — channel-attention pooling set (full recipe)", "Pooling"),
        ("heads", "Table 3c — spatial-attention heads (full recipe)", "Heads"),
    ):
        lines += ["", f"## {title}", ""]
        if tables.get(name):
            lines += _partition_tables(result, tables[name], [lead])
        else:
            lines.append(
                f"Skipped in quick mode: run without `--quick` for the {lead.lower()} rows."
            )
    ref = MODEL_LABELS[REFERENCE_MODEL]
    lines += [
        "",
        f"## Table 4 — paired t-tests, {ref} vs each baseline",
        "",
        f"Two-sided paired t-test over the same (seed, fold) pairs; difference = {ref} − baseline.",
        "",
    ]
    t_rows = [
        [
            f"{ref} vs {MODEL_LABELS.get(t['baseline'], t['baseline'])}",
            "CV" if t["partition"] == "val" else "test",
            METRIC_LABELS.get(t["metric"], t["metric"]),
            str(t["n"]),
            f"{t['mean_diff']:+.3f}",
            _num(t["t"]),
            _num(t["p"], 4),
        ]
        for t in result["t_tests"]
    ]
    lines += _markdown_table(
        ["Comparison", "Partition", "Metric", "Pairs", "Mean difference", "t", "p"], t_rows
    )
    return "\n".join(lines) + "\n"


def format_reproduce_summary(result: Mapping[str, Any]) -> str:
    """What ``painmon reproduce`` prints: validation accuracy/macro-F1 per row and the files."""
    p = result["protocol"]
    lines = [
        f"reproduce{' (QUICK: numbers mean nothing)' if p['quick'] else ''}: {p['n_subjects']} "
        f"subjects, {p['folds']} folds x {len(p['seeds'])} seed(s), {p['epochs']} epoch(s), "
        f"lr {p.get('lr', 1e-4):g}, {result['seconds']:.0f} s"
    ]
    for table, rows in result["tables"].items():
        for row in rows:
            summary = result["experiments"][row["experiment"]]["summary"]["val"]
            acc = summary.get("accuracy")
            f1 = summary.get("macro_f1")
            lines.append(
                f"  {table:<8} {row['label'][:48]:<48} CV acc {_num(acc and acc['mean'])}  "
                f"macro-F1 {_num(f1 and f1['mean'])}"
            )
    ref = MODEL_LABELS[REFERENCE_MODEL]
    for t in result["t_tests"]:
        if t["partition"] == "val":
            lines.append(
                f"  t-test {ref} vs {MODEL_LABELS.get(t['baseline'], t['baseline'])} "
                f"{t['metric']}: diff {t['mean_diff']:+.3f}, t {_num(t['t'])}, p {_num(t['p'], 4)}"
            )
    out = Path(result["out_dir"])
    lines.append(f"tables: {out / 'tables.md'}  results: {out / 'results.json'}")
    if result.get("report"):
        lines.append(f"report: {result['report']}")
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Infinite t statistics (a constant difference) become "inf"/"-inf": strict JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _run_identity(cfg: TrainConfig, plan: SplitPlan, data: PreparedData, seeds) -> dict[str, Any]:
    return {
        "config": json.loads(config_identity(cfg)),
        "seeds": list(seeds),
        "plan": plan.to_dict(),
        "crops_sha256": data.crops.data_sha256,
    }


def _cross_validate_once(
    data: PreparedData,
    plan: SplitPlan,
    cfg: TrainConfig,
    cv_dir: Path,
    seeds: Sequence[int],
    jobs: int,
    progress: bool,
) -> dict[str, Any]:
    """Cross-validate, or reuse a finished CV of the very same setup in ``cv_dir`` (resume)."""
    identity = _run_identity(cfg, plan, data, seeds)
    marker = cv_dir / "reproduce_identity.json"
    summary_path = cv_dir / "cv_summary.json"
    if marker.is_file() and summary_path.is_file():
        if json.loads(marker.read_text()) == json.loads(json.dumps(identity)):
            log.info("reusing the finished cross-validation in %s", cv_dir)
            return json.loads(summary_path.read_text())
        log.info("%s holds a different setup; training it again", cv_dir)
    marker.unlink(missing_ok=True)
    summary = cross_validate(data, plan, cfg, cv_dir, seeds=seeds, jobs=jobs, progress=progress)
    atomic_write_json(marker, identity)
    return summary


def _write_report(out: Path, result: dict[str, Any], tables_md: str) -> Path | None:
    try:
        from painmon.core.research.report import write_report
    except ImportError:
        log.info("painmon.core.research.report is not available: report.html not written")
        return None
    path = out / "report.html"
    reference = result["experiments"][REFERENCE_MODEL]
    try:
        write_report(path, cv_summary=reference["summary"], tables_markdown=tables_md)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.error("report.html not written (%s); tables.md and results.json are complete", exc)
        return None
    return path


def run_reproduce(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    quick: bool = False,
    device: str = "auto",
    jobs: int = 1,
    seeds: Sequence[int] = (42,),
    folds: int = 5,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = TrainConfig.lr,
    splits: str | Path | None = None,
    cache_dir: str | Path | None = None,
    detector: Any = None,
    progress: bool = True,
    allow_outside_root: bool = False,
) -> dict[str, Any]:
    """Run Tables 2-4 of the founding paper on ``manifest``; write tables.md and results.json.

    Each distinct configuration is cross-validated once under ``out_dir/cv/<key>``
    (rows that train the same networks share a folder); a rerun reuses finished ones.
    ``allow_outside_root`` lets a manifest list images outside its own folder.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidInputError(f"jobs is how many folds train at once: 1 or more, got {jobs!r}")
    t0 = time.perf_counter()
    settings = protocol_settings(quick, folds, seeds, epochs, batch_size, lr)
    out = Path(out_dir)
    data = prepare_data(
        manifest,
        cache_dir=cache_dir,
        detector=detector,
        progress=progress,
        allow_outside_root=allow_outside_root,
    )
    if settings.crops_per_subject is not None:
        data = cap_crops_per_subject(data, settings.crops_per_subject)
    plan = resolve_plan(data, splits, seed=settings.seeds[0], folds=settings.folds)
    if len(plan.folds) != settings.folds:
        log.info("the split plan has %d folds; using them", len(plan.folds))
        settings = dataclasses.replace(settings, folds=len(plan.folds))
    # Only now, with the data and plan sound: a bad manifest leaves no empty --out behind.
    out.mkdir(parents=True, exist_ok=True)
    plan.to_json(out / "splits.json")

    experiments = build_experiments(settings, device)
    by_identity: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    tables: dict[str, list[dict[str, Any]]] = {"table2": [], "ablation": [], "pooling": [],
                                               "heads": []}  # fmt: skip
    to_train = []
    for exp in experiments:
        identity = config_identity(exp.cfg)
        key = by_identity.setdefault(identity, exp.key)
        row = {"label": exp.label, "experiment": key}
        if exp.table == "table2":
            row["Model"] = exp.label
            row["Params"] = f"{count_parameters(exp.cfg) / 1e6:.2f}M"
        elif exp.table == "ablation":
            row["Configuration"] = exp.label
        elif exp.table == "pooling":
            row["Pooling"] = exp.label
        else:
            row["Heads"] = exp.label
        if key != exp.key:
            row["same_runs_as"] = key
        tables[exp.table].append(row)
        if key == exp.key:
            to_train.append(exp)

    for i, exp in enumerate(to_train, 1):
        log.info("[%d/%d] cross-validating %s: %s", i, len(to_train), exp.key, exp.label)
        t_exp = time.perf_counter()
        summary = _cross_validate_once(
            data, plan, exp.cfg, out / "cv" / exp.key, settings.seeds, jobs, progress
        )
        results[exp.key] = {
            "label": exp.label,
            "table": exp.table,
            "config": exp.cfg.to_dict(),
            "cv_dir": str(out / "cv" / exp.key),
            "seconds": time.perf_counter() - t_exp,
            "summary": summary,
        }

    reference = results[REFERENCE_MODEL]["summary"]["folds"]
    t_tests = paired_comparisons(
        reference, {name: results[name]["summary"]["folds"] for name in BASELINE_MODELS}
    )
    subjects = sorted(set(data.crops.subjects.tolist()))
    result: dict[str, Any] = {
        "out_dir": str(out),
        "protocol": {
            "dataset": str(data.source),
            "dataset_sha256": data.dataset_sha256,
            "crops_sha256": data.crops.data_sha256,
            "n_subjects": len(subjects),
            "n_test_subjects": len(set(plan.test) & set(subjects)),
            "n_crops": len(data.crops),
            "folds": settings.folds,
            "seeds": list(settings.seeds),
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "crops_per_subject": settings.crops_per_subject,
            "split_seed": plan.seed,
            "device": device,
            "quick": settings.quick,
            "note": HONESTY_NOTE,
        },
        "experiments": results,
        "tables": tables,
        "t_tests": t_tests,
        "skipped": [] if not settings.quick else ["pooling", "heads"],
    }
    result["seconds"] = time.perf_counter() - t0
    tables_md = format_tables_markdown(result)
    atomic_write_text(out / "tables.md", tables_md)
    atomic_write_json(out / "results.json", _json_safe(result))
    report = _write_report(out, result, tables_md)
    result["report"] = str(report) if report else None
    if report:
        atomic_write_json(out / "results.json", _json_safe(result))
    log.info("reproduce finished in %.0f s: %s", result["seconds"], out / "tables.md")
    return result
