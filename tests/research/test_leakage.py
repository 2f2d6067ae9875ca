"""Leakage paths of issue #15: the split seed is not the training seed; evaluate checks the data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from painmon.core.research.crops import CropReport, CropSet
from painmon.core.research.experiment import (
    OTHER_DATASET_LABEL,
    DatasetMismatchError,
    PreparedData,
    is_other_dataset,
    resolve_plan,
    summarise_cv,
)
from painmon.core.research.splits import SplitPlan
from painmon.core.tools.cli import main

N_SUBJECTS = 16
PER_SUBJECT = 5


def _crops(toy_crops, seed: int) -> CropSet:
    images, labels = toy_crops(N_SUBJECTS * PER_SUBJECT, seed)
    subjects = np.repeat([f"s{i:02d}" for i in range(N_SUBJECTS)], PER_SUBJECT)
    paths = tuple(f"img{seed}_{i}.png" for i in range(len(labels)))
    return CropSet(images, labels, subjects, paths, (None,) * len(labels))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, toy_crops):
    """Two crops files: the run's dataset, and another that reuses its subject IDs."""
    root = tmp_path_factory.mktemp("leakage")
    own = _crops(toy_crops, 0).save_npz(root / "own.npz", dataset_sha256="ab" * 32)
    other = _crops(toy_crops, 1).save_npz(root / "other.npz", dataset_sha256="cd" * 32)
    return root, own, other


def _train(npz: Path, out: Path, *extra: str) -> int:
    return main(["train", "--manifest", str(npz), "--out", str(out), "--model", "micropainnet",
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", *extra])  # fmt: skip


@pytest.fixture(scope="module")
def runs(datasets):
    """Two runs on the same data that differ only in their training seed."""
    root, own, _ = datasets
    assert _train(own, root / "run1", "--seed", "1") == 0
    assert _train(own, root / "run2", "--seed", "2") == 0
    return root / "run1", root / "run2"


def test_training_seeds_share_one_split_and_both_seeds_are_recorded(runs):
    run1, run2 = runs
    plan1, plan2 = (
        SplitPlan.from_json(run1 / "splits.json"),
        SplitPlan.from_json(run2 / "splits.json"),
    )
    assert plan1 == plan2 and plan1.seed == 42  # the split seed, not the training seed
    for run, training_seed in ((run1, 1), (run2, 2)):
        meta = json.loads((run / "best.json").read_text())
        assert (meta["split_seed"], meta["training_seed"]) == (42, training_seed)
        assert json.loads((run / "config.json").read_text())["seed"] == training_seed


def test_cv_folds_come_from_the_split_seed(datasets, tmp_path, monkeypatch, caplog):
    _, own, _ = datasets
    plans = []

    def fake_cross_validate(data, plan, cfg, out, seeds, jobs, engine="processes"):
        plans.append((plan, tuple(seeds)))
        return summarise_cv([])

    monkeypatch.setattr("painmon.core.research.experiment.cross_validate", fake_cross_validate)
    base = ["cv", "--manifest", str(own), "--device", "cpu", "--model", "micropainnet",
            "--folds", "2"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a"), "--seeds", "1,2"]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--seeds", "3", "--seed", "3"]) == 0
    assert plans[0][0] == plans[1][0] and plans[0][0].seed == 42
    assert [p[1] for p in plans] == [(1, 2), (3,)]
    assert not [r for r in caplog.records if "test subjects differ" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="painmon"):
        assert main([*base, "--out", str(tmp_path / "c"), "--split-seed", "7"]) == 0
    assert plans[2][0].seed == 7
    assert any("test subjects differ" in r.getMessage() for r in caplog.records)


def test_a_split_seed_other_than_the_default_warns(toy_crops, caplog):
    crops = _crops(toy_crops, 0)
    data = PreparedData(Path("toy.npz"), (), crops, CropReport(80, 80, 80, 0), "ab" * 32)
    with caplog.at_level(logging.WARNING, logger="painmon"):
        default = resolve_plan(data, None, seed=42, folds=2)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="painmon"):
        other = resolve_plan(data, None, seed=5, folds=2)
    assert other.seed == 5 and default.seed == 42
    assert any("split seed 5" in r.getMessage() and "test subjects differ" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_evaluate_refuses_another_dataset_unless_told(runs, datasets, tmp_path, capsys):
    run1, _ = runs
    _, own, other = datasets
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run1), "--manifest", str(own),
                 "--json", str(tmp_path / "own.json")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "test subjects of the run" in out and "subject bootstrap" in out
    own_result = json.loads((tmp_path / "own.json").read_text())
    assert own_result["other_dataset"] is False
    assert own_result["n"] == len(SplitPlan.from_json(run1 / "splits.json").test) * PER_SUBJECT

    # Same subject IDs, other people: refused with one line, exit 2, nothing written.
    assert main(["evaluate", "--run", str(run1), "--manifest", str(other),
                 "--json", str(tmp_path / "refused.json")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is not the dataset run" in err and "--other-dataset" in err
    assert not (tmp_path / "refused.json").exists()

    assert main(["evaluate", "--run", str(run1), "--manifest", str(other), "--other-dataset",
                 "--json", str(tmp_path / "other.json")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert OTHER_DATASET_LABEL in out and "test subjects of the run" not in out
    result = json.loads((tmp_path / "other.json").read_text())
    assert result["other_dataset"] is True and result["scored_on"] == OTHER_DATASET_LABEL
    assert result["n"] == N_SUBJECTS * PER_SUBJECT  # all of it: no subject is the run's


def test_a_run_without_a_recorded_hash_is_scored_as_another_dataset(toy_crops, caplog):
    data = PreparedData(Path("x.npz"), (), _crops(toy_crops, 0), CropReport(80, 80, 80, 0),
                        "ab" * 32)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="painmon"):
        assert is_other_dataset(set(), data, Path("run"), other_dataset=False) is True
    assert any("records no dataset hash" in r.getMessage() for r in caplog.records)
    assert is_other_dataset({"ab" * 32}, data, Path("run"), other_dataset=False) is False
    with pytest.raises(DatasetMismatchError, match="--other-dataset"):
        is_other_dataset({"cd" * 32}, data, Path("run"), other_dataset=False)
    assert is_other_dataset({"cd" * 32}, data, Path("run"), other_dataset=True) is True
