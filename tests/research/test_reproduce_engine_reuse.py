"""`painmon reproduce` reuses a finished cross-validation only when it was made by the same
engine: processes and stacked runs share a recipe, not their numbers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from painmon.core.research import reproduce
from painmon.core.research.crops import CropReport, CropSet
from painmon.core.research.experiment import PreparedData
from painmon.core.research.splits import make_splits
from painmon.core.research.train import TrainConfig


@pytest.fixture
def setup(toy_crops):
    images, labels = toy_crops(80, 3)
    subjects = np.repeat([f"s{i:02d}" for i in range(16)], 5)
    crops = CropSet(images, labels, subjects, tuple(f"{i}.png" for i in range(80)),
                    (None,) * 80)  # fmt: skip
    data = PreparedData(Path("toy.npz"), (), crops, CropReport(80, 80, 80, 0), "ab" * 32)
    plan = make_splits(crops.as_samples(), data.dataset_sha256, seed=0, folds=2)
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=8, device="cpu")
    return data, plan, cfg


@pytest.fixture
def trainings(monkeypatch):
    """Stands in for cross_validate: writes what each engine leaves (a summary and one
    config.json per fold run, the stacked engine's naming itself) and counts the calls."""
    calls: list[str] = []

    def fake_cross_validate(data, plan, cfg, out, *, seeds, jobs, progress, engine):
        calls.append(engine)
        for seed in seeds:
            for k in range(len(plan.folds)):
                run = Path(out) / f"seed{seed}" / f"fold{k + 1}"
                run.mkdir(parents=True, exist_ok=True)
                config = cfg.to_dict()
                if engine != "processes":
                    ops = "bmm" if engine == "stacked-bmm" else "vmap"
                    config |= {"engine": "stacked", "stacked_ops": ops}
                (run / "config.json").write_text(json.dumps(config))
        summary = {"folds": [], "trained_by": engine, "call": len(calls)}
        (Path(out) / "cv_summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(reproduce, "cross_validate", fake_cross_validate)
    return calls


def _cv(setup, cv_dir, engine):
    data, plan, cfg = setup
    return reproduce._cross_validate_once(data, plan, cfg, cv_dir, (7,), 1, False, engine)


def test_a_different_engine_trains_again_and_says_why(setup, trainings, tmp_path, caplog):
    cv_dir = tmp_path / "cv" / "dacnn"
    assert _cv(setup, cv_dir, "processes")["trained_by"] == "processes"
    assert _cv(setup, cv_dir, "processes")["call"] == 1  # same engine: reused
    assert trainings == ["processes"]
    marker = json.loads((cv_dir / "reproduce_identity.json").read_text())
    assert marker["engine"] == "processes"

    with caplog.at_level(logging.WARNING, logger=reproduce.__name__):
        summary = _cv(setup, cv_dir, "stacked")
    assert summary["trained_by"] == "stacked" and trainings == ["processes", "stacked"]
    assert "engine processes -> stacked" in caplog.text and "training it again" in caplog.text
    assert json.loads((cv_dir / "reproduce_identity.json").read_text())["engine"] == "stacked"

    # And back: the stacked result is not reused for processes either.
    assert _cv(setup, cv_dir, "stacked")["call"] == 2
    assert _cv(setup, cv_dir, "processes")["trained_by"] == "processes"
    assert trainings == ["processes", "stacked", "processes"]


@pytest.mark.parametrize("made_by, reused_for", [("processes", "processes"),
                                                 ("stacked", "stacked"),
                                                 ("stacked-bmm", "stacked-bmm")])  # fmt: skip
def test_an_older_marker_without_the_engine_is_judged_by_its_runs(
    setup, trainings, tmp_path, made_by, reused_for
):
    cv_dir = tmp_path / "cv" / "dacnn"
    _cv(setup, cv_dir, made_by)
    marker_path = cv_dir / "reproduce_identity.json"
    marker = json.loads(marker_path.read_text())
    del marker["engine"]  # as written before the engine was recorded
    marker_path.write_text(json.dumps(marker))

    assert _cv(setup, cv_dir, reused_for)["call"] == 1  # the runs' config.json name the engine
    other = "stacked" if made_by == "processes" else "processes"
    assert _cv(setup, cv_dir, other)["trained_by"] == other
    assert trainings == [made_by, other]


def test_runs_of_one_stacked_kernel_path_are_not_reused_for_the_other(setup, trainings, tmp_path):
    cv_dir = tmp_path / "cv" / "dacnn"
    _cv(setup, cv_dir, "stacked-bmm")
    marker_path = cv_dir / "reproduce_identity.json"
    marker = json.loads(marker_path.read_text())
    del marker["engine"]  # judged by the runs' config.json: engine stacked, stacked_ops bmm
    marker_path.write_text(json.dumps(marker))
    assert _cv(setup, cv_dir, "stacked")["trained_by"] == "stacked"
    assert _cv(setup, cv_dir, "stacked-bmm")["trained_by"] == "stacked-bmm"
    assert trainings == ["stacked-bmm", "stacked", "stacked-bmm"]


def test_an_older_marker_with_no_runs_to_judge_by_trains_again(setup, trainings, tmp_path):
    cv_dir = tmp_path / "cv" / "dacnn"
    _cv(setup, cv_dir, "processes")
    marker_path = cv_dir / "reproduce_identity.json"
    marker = json.loads(marker_path.read_text())
    del marker["engine"]
    marker_path.write_text(json.dumps(marker))
    for config in cv_dir.glob("seed*/fold*/config.json"):
        config.unlink()
    _cv(setup, cv_dir, "processes")
    assert trainings == ["processes", "processes"]


def test_identity_differences_name_what_changed():
    wanted = {"config": {"lr": 1e-4, "epochs": 100}, "seeds": [42], "engine": "stacked"}
    recorded = {"config": {"lr": 3e-4, "epochs": 100}, "seeds": [42], "engine": "processes"}
    assert reproduce.identity_differences(recorded, wanted) == [
        "config lr",
        "engine processes -> stacked",
    ]
    assert reproduce.identity_differences({"config": wanted["config"], "seeds": [42]}, wanted) == [
        "engine (not recorded) -> stacked"
    ]
    assert reproduce.identity_differences(None, wanted) == ["the reuse marker is unreadable"]


def _quick_result() -> dict:
    """A finished quick reproduce's result, every cell the same (only the header matters)."""
    settings = reproduce.protocol_settings(True, 2, (7,), 1)
    cell = {"mean": 0.5, "std": 0.01, "ci95": [0.48, 0.52], "n": 2}
    experiments, tables = {}, {"table2": [], "ablation": [], "pooling": [], "heads": []}
    for exp in reproduce.build_experiments(settings, "cpu"):
        experiments[exp.key] = {"summary": {"val": {"accuracy": cell}, "test": {}}}
        tables[exp.table].append({"label": exp.label, "experiment": exp.key})
    protocol = {"dataset": "toy.npz", "dataset_sha256": "ab" * 32, "n_subjects": 16,
                "n_test_subjects": 3, "n_crops": 80, "folds": 2, "seeds": [7], "epochs": 1,
                "batch_size": 8, "device": "cpu", "quick": True,
                "crops_per_subject": settings.crops_per_subject}  # fmt: skip
    return {"out_dir": "/tmp/x", "protocol": protocol, "experiments": experiments,
            "tables": tables, "t_tests": [], "seconds": 1.0}  # fmt: skip


def test_the_tables_name_the_engine():
    result = _quick_result()
    assert "engine processes," in reproduce.format_tables_markdown(result)  # older results
    result["protocol"]["engine"] = "stacked"
    assert "device cpu, engine stacked," in reproduce.format_tables_markdown(result)
