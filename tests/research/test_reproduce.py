"""painmon reproduce: the paper's Tables 2-4 from one command, on synthetic patients."""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats

from painmon.core.live.face import create_crop_detector
from painmon.core.research.experiment import CVTestPredictions
from painmon.core.research.metrics import corrected_resampled_ttest
from painmon.core.research.reproduce import (
    BASELINE_MODELS,
    MODEL_LABELS,
    REFERENCE_MODEL,
    build_experiments,
    config_identity,
    format_reproduce_summary,
    format_tables_markdown,
    paired_comparisons,
    paired_test_comparisons,
    protocol_settings,
    run_reproduce,
)
from painmon.core.synth.dataset import write_dataset

# --- hand-made fold rows (fast) -------------------------------------------------------------


def _folds(acc, f1, test_acc=None):
    rows = []
    for i, (a, f) in enumerate(zip(acc, f1, strict=True)):
        row = {"seed": 42, "fold": i + 1, "val_accuracy": a, "val_macro_f1": f}
        if test_acc is not None:
            row |= {"test_accuracy": test_acc[i], "test_macro_f1": test_acc[i] / 2}
        rows.append(row)
    return rows


def test_paired_comparisons_pair_folds_and_use_the_corrected_t_test():
    ref = _folds([0.60, 0.70, 0.65], [0.50, 0.55, 0.60], test_acc=[0.6, 0.6, 0.7])
    base = {
        "simplecnn": _folds([0.50, 0.60, 0.60], [0.40, 0.50, 0.50], test_acc=[0.5, 0.6, 0.6]),
        # Same rows in another order: pairing goes by (seed, fold), not by position.
        "micropainnet": list(reversed(_folds([0.6, 0.7, 0.65], [0.5, 0.55, 0.6], [0.6, 0.6, 0.7]))),
    }
    rows = paired_comparisons(ref, base)
    # Test rows are never three fold models on the same test subjects: CV only here.
    assert [(r["baseline"], r["partition"], r["metric"]) for r in rows] == [
        (name, "val", metric)
        for name in ("simplecnn", "micropainnet")
        for metric in ("accuracy", "macro_f1")
    ]
    simple_acc = rows[0]
    assert simple_acc["n"] == 3 and simple_acc["test"] == "corrected resampled t-test"
    assert simple_acc["mean_diff"] == pytest.approx((0.10 + 0.10 + 0.05) / 3)
    # Differences (0.10, 0.10, 0.05): the plain paired t is 5.0 (p 0.0377). Without fold
    # sizes in the rows, 3 equal folds train on 2 parts and validate on 1: the variance
    # factor is 1/3 + 1/2 instead of 1/3, so t = 5 * sqrt((1/3) / (1/3 + 1/2)).
    t = 5.0 * math.sqrt((1 / 3) / (1 / 3 + 1 / 2))
    assert simple_acc["t"] == pytest.approx(t, rel=1e-9)
    assert simple_acc["p"] == pytest.approx(2 * scipy_stats.t.sf(t, 2), rel=1e-9)
    assert simple_acc["p"] > 0.0377
    low, high = simple_acc["ci95"]
    assert low < simple_acc["mean_diff"] < high
    same = [r for r in rows if r["baseline"] == "micropainnet"]
    assert all(r["mean_diff"] == 0 and r["p"] == 1.0 for r in same)


def test_paired_comparisons_average_seeds_within_a_fold_first():
    def rows(values_by_seed, n_train=None):
        out = []
        for seed, values in values_by_seed.items():
            for i, v in enumerate(values):
                row = {"seed": seed, "fold": i + 1, "val_accuracy": v, "val_macro_f1": v}
                if n_train:
                    row |= {"n_train_subjects": n_train, "n_val_subjects": 2}
                out.append(row)
        return out

    ref = rows({42: [0.7, 0.8, 0.6], 123: [0.9, 0.6, 0.6]}, n_train=8)
    base = rows({42: [0.6, 0.6, 0.6], 123: [0.6, 0.6, 0.5]})
    acc = paired_comparisons(ref, {"simplecnn": base}, metrics=("accuracy",))[0]
    assert acc["n"] == 3 and acc["n_runs"] == 6  # three folds, not six independent runs
    diffs = [0.2, 0.1, 0.05]  # per fold: mean over the two seeds of each model, subtracted
    assert acc["mean_diff"] == pytest.approx(np.mean(diffs))
    expected = corrected_resampled_ttest(diffs, n_train=8, n_test=2)
    assert acc["t"] == pytest.approx(expected.t) and acc["p"] == pytest.approx(expected.p)


def test_paired_comparisons_refuse_different_folds():
    ref = _folds([0.6, 0.7], [0.5, 0.6])
    with pytest.raises(ValueError, match="same seeds and folds"):
        paired_comparisons(ref, {"simplecnn": _folds([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])})
    rows = paired_comparisons(ref, {"simplecnn": _folds([0.5, 0.6], [0.4, 0.6])})
    assert {r["partition"] for r in rows} == {"val"}


def _test_predictions(n_subjects, skill, seed, n_models=2):
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"s{i:02d}" for i in range(n_subjects)], 10)
    labels = np.random.default_rng(0).integers(0, 5, subjects.size)
    probs = []
    for _ in range(n_models):
        hit = rng.random(subjects.size) < skill
        preds = np.where(hit, labels, (labels + 1) % 5)
        probs.append(np.eye(5)[preds] * 0.8 + 0.04)
    return CVTestPredictions(labels, subjects, np.stack(probs), np.array([42] * n_models),
                             np.arange(1, n_models + 1))  # fmt: skip


def test_test_set_comparisons_pair_by_subject():
    good = _test_predictions(12, 0.9, seed=1)
    poor = _test_predictions(12, 0.4, seed=2)
    rows = paired_test_comparisons(good, {"simplecnn": poor, "twin": good}, n_boot=400)
    by = {(r["baseline"], r["metric"]): r for r in rows}
    acc = by[("simplecnn", "accuracy")]
    assert acc["partition"] == "test" and acc["n"] == 12 and acc["t"] is None
    assert acc["test"] == "paired subject bootstrap"
    expected = good.preds == good.labels
    worse = poor.preds == poor.labels
    assert acc["mean_diff"] == pytest.approx(expected.mean() - worse.mean())
    assert 0 < acc["ci95"][0] < acc["mean_diff"] < acc["ci95"][1] and acc["p"] < 0.01
    twin = by[("twin", "accuracy")]
    assert twin["mean_diff"] == 0 and twin["ci95"] == [0, 0] and twin["p"] == 1.0
    table = format_tables_markdown(_fake_result(quick=False) | {"t_tests": rows})
    assert "| DA-CNN vs SimpleCNN | test | Accuracy | 12 |" in table
    assert "paired" in table and "resample" in table


def _stats(mean):
    return {"mean": mean, "std": 0.01, "ci95": [mean - 0.02, mean + 0.02], "n": 2}


def _fake_result(quick: bool):
    experiments, tables = {}, {"table2": [], "ablation": [], "pooling": [], "heads": []}
    settings = protocol_settings(quick, 5, (42, 123), 100)
    for i, exp in enumerate(build_experiments(settings, "cpu")):
        experiments[exp.key] = {
            "summary": {
                "val": {m: _stats(0.1 * i) for m in ("accuracy", "macro_f1", "ece")}
                | {"quadratic_kappa": None},
                "test": {m: _stats(0.2) for m in ("accuracy", "macro_f1")},
            }
        }
        lead = {"table2": "Model", "ablation": "Configuration", "pooling": "Pooling"}
        tables[exp.table].append(
            {"label": exp.label, "experiment": exp.key, lead.get(exp.table, "Heads"): exp.label}
        )
    t_tests = [
        {"baseline": name, "partition": "val", "metric": "accuracy", "n": 2,
         "mean_diff": 0.05, "t": math.inf, "p": 0.0}
        for name in BASELINE_MODELS
    ]  # fmt: skip
    protocol = {
        "dataset": "/data/m.csv", "dataset_sha256": "ab" * 32, "n_subjects": 14,
        "n_test_subjects": 3, "n_crops": 70, "folds": settings.folds, "seeds": list(settings.seeds),
        "epochs": settings.epochs, "batch_size": 4, "device": "cpu", "quick": quick,
        "crops_per_subject": settings.crops_per_subject,
    }  # fmt: skip
    return {
        "out_dir": "/tmp/x",
        "protocol": protocol,
        "experiments": experiments,
        "tables": tables,
        "t_tests": t_tests,
        "seconds": 1.0,
    }


def test_tables_markdown_has_every_row_and_states_the_protocol():
    text = format_tables_markdown(_fake_result(quick=False))
    assert "ab" * 32 in text and "14 subjects" in text and "seeds 42, 123" in text
    assert "100 epoch(s)" in text and "honest subject-wise evaluation" in text
    assert "Quick run" not in text
    for heading in ("Table 2", "Table 3 —", "Table 3b", "Table 3c", "Table 4"):
        assert f"## {heading}" in text
    for label in ("SimpleCNN", "MicroPainNet", "PainXception", "DA-CNN", "+ spatial attention",
                  "+ channel attention", "+ both attentions", "{avg}", "{avg, max}",
                  "{avg, max, std}", "1 head", "8 heads"):  # fmt: skip
        assert f"| {label} |" in text, label
    assert "| 0.200 ± 0.010 [0.180, 0.220] |" in text  # a cell: mean ± std [CI]
    assert "| n/a |" in text  # undefined QWK is shown, not hidden
    assert "| DA-CNN vs PainXception | CV | Accuracy | 2 | +0.050 | n/a | ∞ | 0.0000 |" in text
    # Each table says what its interval means.
    assert "corrected for training-set overlap (Nadeau & Bengio 2003" in text
    assert "mean over 2 seeds" in text or "each the mean of 2 seeds" in text
    assert "Corrected resampled t-test" in text or "corrected resampled t-test" in text


def test_quick_tables_say_the_numbers_mean_nothing_and_what_was_skipped():
    result = _fake_result(quick=True)
    text = format_tables_markdown(result)
    assert "Quick run" in text and "numbers mean nothing" in text
    assert text.count("Skipped in quick mode") == 2
    summary = format_reproduce_summary(result)
    assert "QUICK" in summary and "tables.md" in summary


def test_full_ablation_rows_share_runs_with_the_table2_dacnn():
    settings = protocol_settings(False, 5, (42,), 100)
    exps = {e.key: e for e in build_experiments(settings, "cpu")}
    full = config_identity(exps[REFERENCE_MODEL].cfg)
    same = {k for k, e in exps.items() if config_identity(e.cfg) == full}
    assert same == {"dacnn", "ablation-full", "pooling-avg-max-std", "heads-4"}
    assert exps["ablation-baseline"].cfg.augment == "none"
    assert exps["ablation-baseline"].cfg.label_smoothing == 0.0
    assert exps["ablation-baseline"].cfg.model_kwargs == {
        "spatial_attention": False,
        "channel_attention": False,
    }


def test_lr_reaches_every_row_and_the_tables():
    settings = protocol_settings(False, 5, (42,), 30, lr=2e-3)
    assert {e.cfg.lr for e in build_experiments(settings, "cpu")} == {2e-3}
    assert protocol_settings(True, 5, (42,), 30, lr=2e-3).lr == 2e-3
    assert protocol_settings(False, 5, (42,), 30).lr == 1e-4  # the paper's
    with pytest.raises(ValueError, match="learning rate"):
        protocol_settings(False, 5, (42,), 30, lr=0.0)
    result = _fake_result(quick=False)
    result["protocol"]["lr"] = 2e-3
    assert "lr 0.002" in format_tables_markdown(result)
    assert "lr 0.002" in format_reproduce_summary(result)


def test_quick_settings_shrink_everything():
    quick = protocol_settings(True, 5, (42, 123, 999), 100)
    assert (quick.folds, quick.seeds, quick.epochs) == (2, (42,), 1)
    assert {e.table for e in build_experiments(quick)} == {"table2", "ablation"}


# --- the whole protocol, quick, on synthetic patients ------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, face_model_path):
    root = tmp_path_factory.mktemp("reproduce")
    manifest = write_dataset(root / "data", n_subjects=14, images_per_subject=5, seed=3,
                             image_size_px=160)  # fmt: skip
    # CPU time, not wall time: the budget must not depend on what else shares the machine.
    cpu0 = time.process_time()
    with create_crop_detector(face_model_path) as detector:
        result = run_reproduce(
            manifest, root / "out", quick=True, device="cpu", seeds=(7, 8),
            cache_dir=root / "cache", detector=detector, progress=False,
        )  # fmt: skip
    return result, root / "out", time.process_time() - cpu0


@pytest.mark.slow
def test_quick_reproduce_writes_all_three_tables(quick_run):
    result, out, cpu_s = quick_run
    assert cpu_s < 90, f"quick reproduce used {cpu_s:.0f} s of CPU"
    text = (out / "tables.md").read_text()
    assert "Quick run" in text and result["protocol"]["dataset_sha256"] in text
    labels = [*MODEL_LABELS.values(), "Baseline", "+ spatial attention", "+ channel attention",
              "+ both attentions", "Full"]  # fmt: skip
    for label in labels:
        assert f"| {label}" in text, label
    for name in ("SimpleCNN", "MicroPainNet", "PainXception"):
        assert f"| DA-CNN vs {name} | CV | Accuracy |" in text
        assert f"| DA-CNN vs {name} | CV | Macro-F1 |" in text
        # Test comparisons pair the two models subject by subject.
        assert (
            f"| DA-CNN vs {name} | test | Accuracy | {result['protocol']['n_test_subjects']} |"
            in text
        )
    assert "Nadeau & Bengio 2003" in text and "resample the" in text
    assert result["protocol"]["seeds"] == [7] and result["protocol"]["folds"] == 2
    assert result["protocol"]["split_seed"] == 42  # the training seeds pick no subjects
    assert "QUICK" in format_reproduce_summary(result)


@pytest.mark.slow
def test_results_json_matches_the_per_fold_csvs(quick_run):
    _, out, _ = quick_run
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["experiments"]) == {
        *BASELINE_MODELS, REFERENCE_MODEL, "ablation-baseline", "ablation-spatial",
        "ablation-channel", "ablation-both",
    }  # fmt: skip
    for key, exp in saved["experiments"].items():
        rows = list(csv.DictReader((out / "cv" / key / "cv_folds.csv").open()))
        folds = exp["summary"]["folds"]
        assert len(rows) == len(folds) == 2
        for row, fold in zip(rows, folds, strict=True):
            for column in ("val_accuracy", "val_macro_f1", "test_accuracy", "test_ece"):
                assert float(row[column]) == pytest.approx(fold[column]), (key, column)
    assert (
        "| Full (both + augmentation + label smoothing 0.1) (same runs as DA-CNN) |"
        in (out / "tables.md").read_text()
    )
    full_row = next(r for r in saved["tables"]["ablation"] if r["label"].startswith("Full"))
    assert full_row["experiment"] == REFERENCE_MODEL  # trained once, reported twice
    ref = saved["experiments"][REFERENCE_MODEL]["summary"]["folds"]
    for t in saved["t_tests"]:
        if t["partition"] == "val" and t["metric"] == "accuracy":
            base = saved["experiments"][t["baseline"]]["summary"]["folds"]
            diffs = [r["val_accuracy"] - b["val_accuracy"] for r, b in zip(ref, base, strict=True)]
            assert t["mean_diff"] == pytest.approx(sum(diffs) / len(diffs))
    assert {t["baseline"] for t in saved["t_tests"]} == set(BASELINE_MODELS)


@pytest.mark.slow
def test_a_rerun_reuses_finished_cross_validations(quick_run, face_model_path):
    result, out, _ = quick_run
    csvs = sorted((out / "cv").glob("*/cv_folds.csv"))
    stamps = [p.stat().st_mtime_ns for p in csvs]
    with create_crop_detector(face_model_path) as detector:
        again = run_reproduce(
            result["protocol"]["dataset"], out, quick=True, device="cpu", seeds=(7,),
            cache_dir=out.parent / "cache", detector=detector, progress=False,
        )  # fmt: skip
    assert len(csvs) == 8 and [p.stat().st_mtime_ns for p in csvs] == stamps  # nothing retrained
    assert again["t_tests"] == result["t_tests"]


def test_quick_reproduce_on_a_crops_file_splits_on_every_crop(tmp_path, monkeypatch):
    """--quick keeps one crop per person for training; the split is drawn from every crop,
    as from a CSV's samples (it was drawn from the one kept crop, and 20 people failed)."""
    from painmon.core.research import reproduce
    from painmon.core.research.crops import CropSet
    from painmon.core.research.splits import SplitPlan, make_splits

    n_subjects, per_subject = 20, 10
    subject = np.repeat(np.arange(n_subjects), per_subject)
    labels = (subject + np.tile(np.arange(per_subject), n_subjects)) % 5
    n = len(labels)
    names = np.array([f"s{s:03d}" for s in subject])
    paths = tuple(f"{i}.png" for i in range(n))
    crops = CropSet(np.zeros((n, 16, 16, 3), np.uint8), labels, names, paths, (None,) * n)
    npz = crops.save_npz(tmp_path / "c.npz", dataset_sha256="ab" * 32)

    class PlannedError(Exception):
        pass

    def stop(*args, **kwargs):
        raise PlannedError

    monkeypatch.setattr(reproduce, "_cross_validate_once", stop)
    with pytest.raises(PlannedError):
        run_reproduce(npz, tmp_path / "rep", quick=True, device="cpu", progress=False)
    expected = make_splits(crops.as_samples(), "ab" * 32, folds=2)
    assert SplitPlan.from_json(tmp_path / "rep" / "splits.json") == expected
