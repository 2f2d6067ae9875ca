"""``painmon reproduce``: the founding paper's whole evaluation protocol in one command.

Every network and ablation row goes through the same subject-wise K-fold
cross-validation (one split plan, the same seeds) and is scored on the same
held-out test subjects. Out come Table 2 (model comparison), Table 3 (attention,
recipe, pooling-set and head-count ablations) and Table 4 (paired t-tests of
DA-CNN against each baseline: the corrected resampled t-test of Nadeau & Bengio over the
same seed-averaged folds, and a paired subject bootstrap on the held-out test subjects),
written as ``tables.md`` and ``results.json`` beside one CV folder per distinct
configuration. Every table says what its intervals mean.

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
    CVTestPredictions,
    PreparedData,
    cross_validate,
    cv_interval_text,
    load_cv_test_predictions,
    overlap_sizes,
    prepare_data,
    resolve_plan,
    seed_averaged_folds,
)
from painmon.core.research.metrics import CV_INTERVAL_REFERENCE, corrected_resampled_ttest
from painmon.core.research.options import CV_ENGINES
from painmon.core.research.splits import DEFAULT_SEED, SplitPlan
from painmon.core.research.subject_stats import (
    DEFAULT_N_BOOT,
    bootstrap_interval_text,
    paired_subject_bootstrap,
)
from painmon.core.research.train import TrainConfig, resolved_model_kwargs
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_write_json, atomic_write_text

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


def build_experiments(
    settings: ProtocolSettings, device: str = "auto", deterministic: bool = True
) -> list[Experiment]:
    """Every row of Tables 2 and 3 with its training configuration (the paper's recipe)."""
    recipe = TrainConfig(
        deterministic=deterministic,
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


def config_identity(cfg: TrainConfig) -> str:
    """A canonical text of a configuration: rows that would train the same networks match.

    ``deterministic`` appears only when off, so cells finished before the setting existed
    (all deterministic) are still recognised."""
    data = cfg.to_dict()
    if data.get("deterministic", True):
        data.pop("deterministic", None)
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
) -> list[dict[str, Any]]:
    """Corrected resampled t-tests (Nadeau & Bengio 2003) of the reference against each baseline.

    Fold rows are ``cross_validate`` summary rows (``seed``, ``fold``, ``val_accuracy``…);
    both models must cover the same (seed, fold) pairs. Seeds reuse the folds, so each
    fold's difference is first averaged over seeds; the K fold differences are tested with
    the variance factor ``1/K + n_val/n_train`` (folds share training subjects), where the
    sizes come from the rows (:func:`overlap_sizes`). Validation ("CV") only: held-out
    test comparisons need per-subject predictions (:func:`paired_test_comparisons`).
    """
    ref = {(r["seed"], r["fold"]): r for r in reference_folds}
    n_train, n_test = overlap_sizes(list(reference_folds))
    out = []
    for name, folds in baseline_folds.items():
        base = {(r["seed"], r["fold"]): r for r in folds}
        if set(base) != set(ref):
            raise ValueError(
                f"{name} was cross-validated on folds {sorted(base)}, the reference on "
                f"{sorted(ref)}: a paired test needs the same seeds and folds"
            )
        for metric in metrics:
            column = f"val_{metric}"
            if any(ref[k].get(column) is None or base[k].get(column) is None for k in ref):
                continue
            a = seed_averaged_folds(list(ref.values()), column)
            b = seed_averaged_folds(list(base.values()), column)
            if len(a) < 2:
                continue  # one fold: no spread to test against
            diffs = [a[k] - b[k] for k in a]
            test = corrected_resampled_ttest(diffs, n_train, n_test)
            out.append(
                {
                    "baseline": name,
                    "partition": "val",
                    "metric": metric,
                    "test": "corrected resampled t-test",
                    "n": len(diffs),
                    "n_runs": len(ref),
                    "reference_mean": float(np.mean(list(a.values()))),
                    "baseline_mean": float(np.mean(list(b.values()))),
                    "mean_diff": test.mean,
                    "ci95": [test.ci_low, test.ci_high],
                    "t": test.t,
                    "p": test.p,
                }
            )
    return out


def paired_test_comparisons(
    reference: CVTestPredictions,
    baselines: Mapping[str, CVTestPredictions],
    metrics: Sequence[str] = T_TEST_METRICS,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Reference minus each baseline on the held-out test subjects, paired by subject.

    Each configuration is its fold models averaged; a subject bootstrap draws the same
    subjects for both, so the interval and p are on the per-subject paired difference —
    not a t-test over fold models that all saw the same few test subjects.
    """
    out = []
    for name, base in baselines.items():
        if not (np.array_equal(base.labels, reference.labels)
                and np.array_equal(base.subjects, reference.subjects)):  # fmt: skip
            raise ValueError(f"{name} was scored on other test crops than the reference")
        for metric in metrics:
            diff = paired_subject_bootstrap(
                reference.labels, reference.subjects, reference.preds, base.preds, metric,
                reference.probs, base.probs, n_boot, seed,
            )  # fmt: skip
            if diff["mean_diff"] is None:
                continue
            out.append(
                {
                    "baseline": name,
                    "partition": "test",
                    "metric": metric,
                    "test": "paired subject bootstrap",
                    "n": diff["n_subjects"],
                    "n_boot": diff["n_boot"],
                    "reference_mean": diff["estimate_a"],
                    "baseline_mean": diff["estimate_b"],
                    "mean_diff": diff["mean_diff"],
                    "ci95": [diff["ci_low"], diff["ci_high"]],
                    "t": None,
                    "p": diff["p"],
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
    if not stats.get("ci95"):
        return f"{stats['mean']:.3f} ± {stats['std']:.3f} [no interval]"
    low, high = stats["ci95"]
    return f"{stats['mean']:.3f} ± {stats['std']:.3f} [{low:.3f}, {high:.3f}]"


def _interval_note(result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], part: str) -> str:
    """What the cells of one partition table mean, as the CV summaries say (one text per table)."""
    p = result["protocol"]
    for row in rows:
        text = (result["experiments"][row["experiment"]]["summary"].get("intervals") or {}).get(
            part
        )
        if text:
            return text
    if part == "val":
        k = int(p["folds"])
        return cv_interval_text(k, len(p["seeds"]), max(k - 1, 1), 1)
    return (
        "mean ± std over the fold models scored on the same held-out test subjects; "
        "no interval recorded"
    )


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
    lines = [
        "Cross-validation (each fold's validation subjects): "
        f"{_interval_note(result, rows, 'val')}.",
        "",
    ]
    lines += _markdown_table(header, _metric_rows(result, rows, "val", lead))
    if any(result["experiments"][r["experiment"]]["summary"]["test"] for r in rows):
        lines += [
            "",
            "Held-out test subjects (every fold's model, scored on subjects no fold saw): "
            f"{_interval_note(result, rows, 'test')}.",
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
        f"lr {p.get('lr', 1e-4):g}, device {p['device']}, engine {p.get('engine', 'processes')}, "
        f"split seed "
        f"{p.get('split_seed', DEFAULT_SEED)}); {HONESTY_NOTE}, reported exactly as they came "
        "out, whichever model comes first. Cells: mean ± std [95% CI]; each table says what "
        "its interval means.",
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
    folds = int(p["folds"])
    lines += [
        "",
        f"## Table 4 — {ref} vs each baseline: paired comparisons",
        "",
        f"Difference = {ref} − baseline. CV rows: corrected resampled t-test "
        f"({CV_INTERVAL_REFERENCE}) over the {folds} folds, each fold's difference the mean "
        f"over {len(p['seeds'])} seed(s); n = folds; the variance is scaled by (1/{folds} + "
        "n_val/n_train) because folds share training subjects; 95 % CI: t-interval on the "
        "mean difference. Test rows: the fold models of each configuration averaged, scored on "
        "the same held-out test subjects; n = subjects; "
        + bootstrap_interval_text(DEFAULT_N_BOOT, int(p.get("n_test_subjects", 0)))
        + " for both models at once (paired), p = twice the share of replicates on the "
        "other side of 0.",
        "",
    ]
    t_rows = [
        [
            f"{ref} vs {MODEL_LABELS.get(t['baseline'], t['baseline'])}",
            "CV" if t["partition"] == "val" else "test",
            METRIC_LABELS.get(t["metric"], t["metric"]),
            str(t["n"]),
            f"{t['mean_diff']:+.3f}",
            _ci_cell(t.get("ci95")),
            _num(t["t"]) if t.get("t") is not None else "—",
            _num(t["p"], 4),
        ]
        for t in result["t_tests"]
    ]
    lines += _markdown_table(
        ["Comparison", "Partition", "Metric", "n", "Mean difference", "95% CI", "t", "p"], t_rows
    )
    return "\n".join(lines) + "\n"


def _ci_cell(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "n/a"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


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
                f"  corrected t-test {ref} vs {MODEL_LABELS.get(t['baseline'], t['baseline'])} "
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


def _run_identity(
    cfg: TrainConfig, plan: SplitPlan, data: PreparedData, seeds, engine: str
) -> dict[str, Any]:
    """What a finished cross-validation must share with a rerun to be reused.

    The engine is part of it: the stacked engine's runs are the same recipe but not the same
    numbers (shared step count per epoch, global-generator augmentation), so a table says
    which engine made it and a change of engine trains again.
    """
    return {
        "config": json.loads(config_identity(cfg)),
        "seeds": list(seeds),
        "plan": plan.to_dict(),
        "crops_sha256": data.crops.data_sha256,
        "engine": engine,
    }


def _engine_of_runs(cv_dir: Path) -> str:
    """The engine that trained ``cv_dir``'s fold runs, from their ``config.json`` (the stacked
    engine writes ``engine: stacked`` and its ``stacked_ops``; ``fit()`` writes no engine);
    "unknown" when the runs are missing, unreadable or disagree."""
    engines = set()
    configs = sorted(cv_dir.glob("seed*/fold*/config.json"))
    for config in configs:
        try:
            recorded = json.loads(config.read_text())
        except (OSError, ValueError):
            return "unknown"
        if not isinstance(recorded, dict):
            return "unknown"
        engine = recorded.get("engine", "processes")
        if engine == "stacked" and recorded.get("stacked_ops", "vmap") == "bmm":
            engine = "stacked-bmm"
        engines.add(engine)
    if len(engines) != 1 or None in engines:
        return "unknown"
    return str(engines.pop())


def identity_differences(recorded: Any, wanted: Mapping[str, Any]) -> list[str]:
    """What differs between a finished cross-validation's identity and a rerun's, in words
    (``engine processes -> stacked``); a field absent from an older marker counts as differing."""
    if not isinstance(recorded, Mapping):
        return ["the reuse marker is unreadable"]
    changes = []
    for key, value in wanted.items():
        old = recorded.get(key, "(not recorded)")
        if old == value:
            continue
        if key == "config" and isinstance(old, Mapping):
            fields = sorted(k for k in set(old) | set(value) if old.get(k) != value.get(k))
            changes.append(f"config {', '.join(fields)}")
        elif isinstance(value, str | int | float) or value is None:
            changes.append(f"{key} {old} -> {value}")
        else:
            changes.append(key)
    return changes


def _cross_validate_once(
    data: PreparedData,
    plan: SplitPlan,
    cfg: TrainConfig,
    cv_dir: Path,
    seeds: Sequence[int],
    jobs: int,
    progress: bool,
    engine: str = "processes",
) -> dict[str, Any]:
    """Cross-validate, or reuse a finished CV of the very same setup in ``cv_dir`` (resume)."""
    identity = json.loads(json.dumps(_run_identity(cfg, plan, data, seeds, engine)))
    marker = cv_dir / "reproduce_identity.json"
    summary_path = cv_dir / "cv_summary.json"
    if marker.is_file() and summary_path.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except ValueError:
            recorded = None
        if isinstance(recorded, dict) and "engine" not in recorded:
            # Markers written before the engine was recorded: the runs' own config.json say.
            recorded["engine"] = _engine_of_runs(cv_dir)
        if recorded == identity:
            log.info("reusing the finished cross-validation in %s (engine %s)", cv_dir, engine)
            return json.loads(summary_path.read_text())
        log.warning(
            "%s was made with a different setup (%s); training it again",
            cv_dir,
            "; ".join(identity_differences(recorded, identity)),
        )
    marker.unlink(missing_ok=True)
    summary = cross_validate(
        data, plan, cfg, cv_dir, seeds=seeds, jobs=jobs, progress=progress, engine=engine
    )
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


def _test_comparisons(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Paired subject-bootstrap comparisons on test, when every CV kept its test predictions."""
    reference = load_cv_test_predictions(results[REFERENCE_MODEL]["cv_dir"])
    baselines = {
        name: load_cv_test_predictions(results[name]["cv_dir"]) for name in BASELINE_MODELS
    }
    if reference is None or any(b is None for b in baselines.values()):
        log.info("no per-crop test predictions in some CV folder: test comparisons left out")
        return []
    return paired_test_comparisons(reference, {k: v for k, v in baselines.items() if v})


def run_reproduce(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    quick: bool = False,
    device: str = "auto",
    jobs: int = 1,
    engine: str = "processes",
    deterministic: bool = True,
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
    split_seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Run Tables 2-4 of the founding paper on ``manifest``; write tables.md and results.json.

    The subjects come from ``splits`` or from a split drawn with ``split_seed`` — never
    from the training ``seeds``, so every seed trains and tests on the same people.

    Each distinct configuration is cross-validated once under ``out_dir/cv/<key>``
    (rows that train the same networks share a folder); a rerun reuses finished ones.
    ``allow_outside_root`` lets a manifest list images outside its own folder.
    ``engine`` is :func:`~painmon.core.research.experiment.cross_validate`'s: ``"stacked"``
    (or ``"stacked-bmm"``) trains each CV's fold models together in this process (the fast
    path on one GPU).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidInputError(f"jobs is how many folds train at once: 1 or more, got {jobs!r}")
    if engine not in CV_ENGINES:
        raise InvalidInputError(f"engine must be one of {', '.join(CV_ENGINES)}, got {engine!r}")
    if engine != "processes" and jobs > 1:
        raise InvalidInputError(
            f"the stacked engine trains every fold in one process: use jobs 1 with it (got {jobs})"
        )
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
    # The split first, on every crop: a dataset and its crops file then give the same
    # subjects (a CSV's plan is drawn from its samples, never from the capped crops), and
    # --quick's one crop per person does not starve the stratified split of classes.
    plan = resolve_plan(data, splits, seed=split_seed, folds=settings.folds)
    if settings.crops_per_subject is not None:
        data = cap_crops_per_subject(data, settings.crops_per_subject)
    if len(plan.folds) != settings.folds:
        log.warning("the split plan %s has %d folds, not %d: cross-validating over its folds",
                    splits, len(plan.folds), settings.folds)  # fmt: skip
        settings = dataclasses.replace(settings, folds=len(plan.folds))
    # Only now, with the data and plan sound: a bad manifest leaves no empty --out behind.
    out.mkdir(parents=True, exist_ok=True)
    plan.to_json(out / "splits.json")

    experiments = build_experiments(settings, device, deterministic)
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
            data, plan, exp.cfg, out / "cv" / exp.key, settings.seeds, jobs, progress, engine
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
    t_tests += _test_comparisons(results)
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
            "engine": engine,
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
