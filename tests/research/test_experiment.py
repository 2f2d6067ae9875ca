"""Dataset on disk → crops → subject-wise plan → training and CV, on synthetic patients."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from painmon.core.live.face import create_crop_detector
from painmon.core.research.crops import CropError, CropReport, CropSet
from painmon.core.research.experiment import (
    PreparedData,
    cross_validate,
    evaluate_partition,
    format_cv_summary,
    load_cv_test_predictions,
    predict_run,
    prepare_data,
    resolve_plan,
    train_on_plan,
)
from painmon.core.research.metrics import classification_metrics
from painmon.core.research.splits import SplitPlan, SubjectLeakError, make_splits, run_split_cli
from painmon.core.research.train import TrainConfig
from painmon.core.synth.dataset import write_dataset
from painmon.core.util.errors import InvalidInputError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, face_model_path):
    root = tmp_path_factory.mktemp("synth")
    manifest = write_dataset(root / "data", n_subjects=14, images_per_subject=5, seed=3,
                             image_size_px=160)  # fmt: skip
    with create_crop_detector(face_model_path) as detector:
        data = prepare_data(manifest, cache_dir=root / "cache", detector=detector, progress=False)
    return manifest, data


def test_prepare_data_crops_every_synthetic_face(prepared):
    _, data = prepared
    assert len(data.crops) >= 0.95 * len(data.samples)
    assert data.crops.images.shape[1:] == (64, 64, 3)
    assert len(set(data.crops.subjects.tolist())) == 14


def test_train_on_plan_keeps_subjects_apart(prepared, tmp_path):
    _, data = prepared
    plan = resolve_plan(data, None, seed=42, folds=5)
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=8, device="cpu")
    result = train_on_plan(data, plan, cfg, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "best.json").read_text())
    assert set(meta["train_subjects"]).isdisjoint(meta["val_subjects"])
    assert set(meta["train_subjects"]).isdisjoint(meta["test_subjects"])
    assert meta["data_sha256"] == data.crops.data_sha256
    assert SplitPlan.from_json(tmp_path / "run" / "splits.json") == plan
    assert result.epochs_run == 1


def test_a_leaking_splits_file_is_refused(prepared, tmp_path):
    _, data = prepared
    plan = resolve_plan(data, None, seed=42, folds=5).to_dict()
    plan["val"] = [*plan["val"], plan["train"][0]]
    (tmp_path / "splits.json").write_text(json.dumps(plan))
    with pytest.raises(SubjectLeakError, match=plan["train"][0]):
        resolve_plan(data, tmp_path / "splits.json", seed=42, folds=5)


def test_cross_validation_reports_every_fold_with_ci(prepared, tmp_path):
    _, data = prepared
    plan = resolve_plan(data, None, seed=42, folds=2)
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=8, device="cpu")
    summary = cross_validate(data, plan, cfg, tmp_path, seeds=(42, 123), progress=False)
    assert summary["n_runs"] == 4
    assert [(f["seed"], f["fold"]) for f in summary["folds"]] == [
        (42, 1),
        (42, 2),
        (123, 1),
        (123, 2),
    ]
    acc = summary["val"]["accuracy"]
    # Seeds reuse the folds: the interval is over 2 seed-averaged folds, not 4 runs.
    assert acc["ci95"][0] <= acc["mean"] <= acc["ci95"][1]
    assert (acc["n"], acc["n_runs"]) == (2, 4)
    fold_means = [
        np.mean([f["val_accuracy"] for f in summary["folds"] if f["fold"] == k]) for k in (1, 2)
    ]
    # Each fold's validation row reuses calibration's probabilities: they are what scoring
    # the saved fold model on its validation crops gives (the same crops, in their order).
    for f in summary["folds"]:
        x_va, y_va, _ = data.partition(plan.subjects("val", f["fold"] - 1))
        probs = predict_run(tmp_path / f"seed{f['seed']}" / f"fold{f['fold']}", x_va)
        scored = classification_metrics(y_va, probs)
        for k in ("accuracy", "macro_f1", "quadratic_kappa", "ece"):
            assert f[f"val_{k}"] == pytest.approx(scored[k], abs=1e-6), k
    assert acc["mean"] == pytest.approx(np.mean(fold_means))
    # Held-out test: subject bootstrap over the test subjects, every fold model averaged.
    test_acc = summary["test"]["accuracy"]
    assert test_acc["n"] == len(plan.test) and test_acc["ci95"] is not None
    assert test_acc["mean"] == pytest.approx(
        np.mean([f["test_accuracy"] for f in summary["folds"]])
    )
    kept = load_cv_test_predictions(tmp_path)
    assert kept is not None and kept.probs.shape[0] == 4
    assert set(kept.subjects.tolist()) == set(plan.test)
    rows = list(csv.DictReader((tmp_path / "cv_folds.csv").open()))
    assert len(rows) == 4
    assert (tmp_path / "cv_folds.png").stat().st_size > 1000
    text = format_cv_summary(summary)
    assert "each the mean of 2 seeds" in text and "Nadeau & Bengio 2003" in text
    assert "subject bootstrap" in text and "not images" in text


def test_crops_file_trains_without_images_or_detector(prepared, tmp_path):
    _, data = prepared
    npz = data.crops.save_npz(tmp_path / "crops.npz", dataset_sha256=data.dataset_sha256)
    again = prepare_data(npz)
    assert again.crops.data_sha256 == data.crops.data_sha256
    assert again.dataset_sha256 == data.dataset_sha256 and again.samples == ()
    plan = resolve_plan(data, None, seed=42, folds=5)
    # Without --splits a crops file is split from the crops it holds: the same plan as the
    # dataset's when every image gave a crop.
    assert resolve_plan(again, None, seed=42, folds=5) == plan
    cli_plan = run_split_cli(npz, tmp_path / "from_crops.json", folds=5, seed=42)
    assert "wrote" in cli_plan and "subject-wise split" in cli_plan
    assert SplitPlan.from_json(tmp_path / "from_crops.json") == plan
    plan.to_json(tmp_path / "splits.json")
    plan_again = resolve_plan(again, tmp_path / "splits.json", seed=42, folds=5)
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=8, device="cpu")
    result = train_on_plan(again, plan_again, cfg, tmp_path / "run", progress=False)
    assert result.epochs_run == 1
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(CropError, match="painmon crops"):
        prepare_data(tmp_path / "bad.npz")


# ---- toy crops: predictions files and argument checks, no detector ----------------------

# Subject names and paths a spreadsheet would run as formulas.
HOSTILE = ('=HYPERLINK("http://x")', "+s1", "-s2", "@SUM(A1)", "\tTAB")


@pytest.fixture(scope="module")
def toy_data(toy_crops):
    images, labels = toy_crops(75, 5)
    subjects = [HOSTILE[i] if i < len(HOSTILE) else f"s{i:02d}" for i in range(15)]
    per_crop = np.repeat(subjects, 5)
    crops = CropSet(images, labels, per_crop, tuple(f"={i}.png" for i in range(75)),
                    (None,) * 75)  # fmt: skip
    report = CropReport(75, 75, 75, 0)
    return PreparedData(Path("toy.npz"), (), crops, report, "ab" * 32)


def test_predictions_csv_never_holds_a_spreadsheet_formula(toy_data, tmp_path):
    plan = make_splits(toy_data.crops.as_samples(), toy_data.dataset_sha256, seed=0, folds=2)
    # Every hostile name must reach preds.csv: score the training partition.
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=16, device="cpu")
    train_on_plan(toy_data, plan, cfg, tmp_path / "run", progress=False)
    preds = tmp_path / "preds.csv"
    evaluate_partition(tmp_path / "run", toy_data, "train", predictions_path=preds)
    rows = list(csv.reader(preds.open(newline="", encoding="utf-8")))[1:]
    assert rows
    for row in rows:
        for cell in row[:2]:
            assert not cell.startswith(("=", "+", "-", "@", "\t")), row
    written = {row[1] for row in rows}
    hostile_in_train = {name for name in HOSTILE if name in plan.train}
    assert hostile_in_train
    assert {"'" + name for name in hostile_in_train} <= written
    assert {row[0] for row in rows} <= {f"'={i}.png" for i in range(75)}


@pytest.mark.parametrize("jobs", [0, -2])
def test_cross_validate_refuses_jobs_below_one_before_writing(toy_data, tmp_path, jobs):
    plan = make_splits(toy_data.crops.as_samples(), toy_data.dataset_sha256, seed=0, folds=2)
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=16, device="cpu")
    with pytest.raises(InvalidInputError, match="jobs"):
        cross_validate(toy_data, plan, cfg, tmp_path / "cv", jobs=jobs)
    assert not (tmp_path / "cv").exists()


# --- resume on the run's own split only (subject leakage) ----------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def toy_run(toy_data, tmp_path_factory):
    """A 1-epoch run of the toy data on the default split."""
    run = tmp_path_factory.mktemp("toy-run") / "run"
    plan = resolve_plan(toy_data, None, seed=42, folds=2)
    cfg = TrainConfig(model="micropainnet", epochs=1, warmup_epochs=0, batch_size=16,
                      device="cpu")  # fmt: skip
    train_on_plan(toy_data, plan, cfg, run, progress=False)
    return run, plan, cfg


def test_resume_on_another_split_is_refused_before_writing(toy_data, toy_run, tmp_path):
    run, plan, cfg = toy_run
    copy = tmp_path / "run"
    copy.mkdir()
    for path in run.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    before = _files(copy)
    other = make_splits(toy_data.crops.as_samples(), toy_data.dataset_sha256, seed=7, folds=2)
    assert set(other.test) != set(plan.test)
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 2})
    with pytest.raises(SubjectLeakError, match=r"cannot resume .* on another split"):
        train_on_plan(toy_data, other, longer, copy, resume=True, progress=False)
    assert _files(copy) == before  # splits.json, config.json, best.json: all as they were


def test_resume_plan_is_the_runs_own_split(toy_data, toy_run, tmp_path):
    from painmon.core.research.experiment import resume_plan

    run, plan, _ = toy_run
    assert resume_plan(run, toy_data) == plan
    assert resume_plan(run, toy_data, seed=42) == plan  # the default: the run's own
    with pytest.raises(SubjectLeakError, match="--split-seed 7 is not the split seed"):
        resume_plan(run, toy_data, seed=7)
    other = make_splits(toy_data.crops.as_samples(), toy_data.dataset_sha256, seed=7, folds=2)
    with pytest.raises(SubjectLeakError, match="is not the split of the run"):
        resume_plan(run, toy_data, other.to_json(tmp_path / "other.json"))
    same = plan.to_json(tmp_path / "same.json")
    assert resume_plan(run, toy_data, same) == plan
    moved = PreparedData(toy_data.source, (), toy_data.crops, toy_data.report, "cd" * 32)
    with pytest.raises(InvalidInputError, match="the run was split on dataset abab"):
        resume_plan(run, moved)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        resume_plan(tmp_path / "nothing", toy_data)


# --- a cross-validation fold is scored on its own partition (subject leakage) ---------------


@pytest.fixture(scope="module")
def toy_cv(toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-cv") / "cv"
    plan = make_splits(toy_data.crops.as_samples(), toy_data.dataset_sha256, seed=0, folds=2)
    cfg = TrainConfig(model="micropainnet", epochs=1, warmup_epochs=0, batch_size=16,
                      device="cpu")  # fmt: skip
    cross_validate(toy_data, plan, cfg, out, progress=False)
    return out, plan


@pytest.mark.parametrize("fold", [1, 2])
def test_a_cv_fold_run_records_and_scores_its_own_partition(toy_data, toy_cv, fold):
    out, plan = toy_cv
    assert SplitPlan.from_json(out / "splits.json") == plan  # the whole plan, once
    run = out / "seed42" / f"fold{fold}"
    recorded = SplitPlan.from_json(run / "splits.json")
    meta = json.loads((run / "best.json").read_text())
    own = plan.folds[fold - 1]
    assert set(recorded.train) == set(meta["train_subjects"]) == set(own.train)
    assert set(recorded.val) == set(meta["val_subjects"]) == set(own.val)
    assert recorded.test == plan.test and not recorded.folds
    result = evaluate_partition(run, toy_data, "val", n_boot=10)
    assert result["n"] == int(toy_data.mask(own.val).sum())
    assert result["scored_on"] == "val subjects of the run"


def test_evaluate_refuses_a_partition_the_run_learnt_from(toy_data, toy_cv, tmp_path):
    """A fold run with the whole plan's splits.json (as older painmon wrote it): its val
    subjects include people fold 2 trained on; scoring them is refused, nothing written."""
    out, plan = toy_cv
    run = tmp_path / "fold2"
    run.mkdir()
    for path in (out / "seed42" / "fold2").iterdir():
        if path.is_file():
            (run / path.name).write_bytes(path.read_bytes())
    plan.to_json(run / "splits.json")
    assert set(plan.val) & set(plan.folds[1].train)
    written = tmp_path / "ev.json"
    with pytest.raises(SubjectLeakError, match="people its weights learnt from") as caught:
        evaluate_partition(run, toy_data, "val", json_path=written)
    assert "val subjects" in str(caught.value)
    assert not written.exists()
    evaluate_partition(run, toy_data, "train", n_boot=10)  # train is what it learnt from


def test_the_gate_of_an_exported_fold_model_uses_the_folds_subjects(toy_data, toy_cv, tmp_path):
    from painmon.core.research.export import gate_data_for_run

    out, plan = toy_cv
    npz = tmp_path / "toy.npz"
    toy_data.crops.save_npz(npz, dataset_sha256=toy_data.dataset_sha256)
    meta = json.loads((out / "seed42" / "fold2" / "best.json").read_text())
    gate = gate_data_for_run(meta, npz)
    assert set(gate.train_ids.tolist()) == set(plan.folds[1].train)  # fitted on its train
    assert set(gate.val_ids.tolist()) == set(plan.folds[1].val)  # thresholded on its val


def test_a_crops_file_named_in_capitals_is_a_crops_file(toy_data, tmp_path):
    """CROPS.NPZ (a Windows or FAT copy) is read as crops, not refused as a manifest."""
    path = tmp_path / "CROPS.NPZ"
    toy_data.crops.save_npz(path, dataset_sha256=toy_data.dataset_sha256)
    data = prepare_data(path, progress=False)
    assert data.dataset_sha256 == toy_data.dataset_sha256 and len(data.crops) == 75


def test_cv_with_a_split_plan_says_that_its_folds_are_used(toy_data, tmp_path, monkeypatch,
                                                            caplog):  # fmt: skip
    """`painmon cv --splits` (a 2-fold plan) without --folds: the default 5 does not apply, and
    the command says so instead of silently training the plan's folds."""
    from painmon.core.research import experiment
    from painmon.core.tools.cli import main

    npz = tmp_path / "c.npz"
    toy_data.crops.save_npz(npz, dataset_sha256=toy_data.dataset_sha256)
    plan = make_splits(toy_data.crops.as_samples(), toy_data.dataset_sha256, seed=0, folds=2)
    splits = plan.to_json(tmp_path / "splits.json")
    used = []

    class StopError(Exception):
        pass

    def cross_validate_stub(data, plan, *args, **kwargs):
        used.append(len(plan.folds))
        raise StopError

    monkeypatch.setattr(experiment, "cross_validate", cross_validate_stub)
    with caplog.at_level("WARNING", logger="painmon"), pytest.raises(StopError):
        main(["cv", "--manifest", str(npz), "--splits", str(splits), "--out",
              str(tmp_path / "cv"), "--model", "micropainnet", "--device", "cpu"])  # fmt: skip
    assert used == [2]
    assert "has 2 folds: cross-validating over those" in caplog.text
