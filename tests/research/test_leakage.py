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


# --- `painmon train --init-from RUN`: fine-tuning must not start from a model that saw the test


def _weights(run: Path) -> dict[str, np.ndarray]:
    """The run's learnt parameters (BatchNorm statistics move even at a zero learning rate)."""
    from safetensors.numpy import load_file

    return {k: v for k, v in load_file(run / "best.safetensors").items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}  # fmt: skip


def test_init_from_fine_tunes_the_runs_weights_and_records_them(runs, datasets, tmp_path):
    from painmon.core.util.fileio import sha256_file

    run1, _ = runs
    _, own, _ = datasets
    # A learning rate of 1e-6 (a few steps of AdamW move a weight by ~1e-6 each): run1's weights.
    out = tmp_path / "tuned"
    assert _train(own, out, "--init-from", str(run1), "--lr", "1e-6", "--warmup-epochs",
                  "0") == 0  # fmt: skip
    start, tuned = _weights(run1), _weights(out)
    assert start.keys() == tuned.keys()
    assert all(np.allclose(start[k], tuned[k], atol=5e-5) for k in start)
    # Without --init-from the same command starts from fresh weights.
    fresh = tmp_path / "fresh"
    assert _train(own, fresh, "--lr", "1e-6", "--warmup-epochs", "0") == 0
    assert not all(np.allclose(start[k], _weights(fresh)[k], atol=1e-3) for k in start)

    meta = json.loads((out / "best.json").read_text())
    record = meta["init_from"]
    assert record["run"] == str(run1)
    assert record["weights_sha256"] == sha256_file(run1 / "best.safetensors")
    assert record["epoch"] == json.loads((run1 / "best.json").read_text())["epoch"]
    assert "init_from" not in json.loads((fresh / "best.json").read_text())
    assert f"Initialised from: run `{run1}`" in (out / "card.md").read_text()
    assert json.loads((out / "config.json").read_text())["warmup_epochs"] == 0


def test_init_from_a_run_that_saw_a_test_subject_is_refused(runs, datasets, tmp_path, capsys):
    run1, _ = runs
    _, own, _ = datasets
    seen = set(json.loads((run1 / "best.json").read_text())["train_subjects"])
    # Another split seed draws other test subjects: some of them trained run1.
    capsys.readouterr()
    out = tmp_path / "leaky"
    assert _train(own, out, "--init-from", str(run1), "--split-seed", "7") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "learnt from" in err and "test subjects" in err and "not be honest" in err
    assert not out.exists() or not any(out.iterdir())
    test7 = set(SplitPlan.from_json(_split7(own, tmp_path)).test)
    assert test7 & seen  # the refusal was about real overlap


def _split7(npz: Path, tmp_path: Path) -> Path:
    path = tmp_path / "split7.json"
    assert main(["split", "--manifest", str(npz), "--out", str(path), "--seed", "7"]) == 0
    return path


def test_init_from_refuses_another_model_or_a_run_without_subjects(runs, datasets, tmp_path,
                                                                   capsys):  # fmt: skip
    run1, _ = runs
    _, own, _ = datasets
    capsys.readouterr()
    assert _train(own, tmp_path / "other-model", "--init-from", str(run1),
                  "--model", "dacnn") == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "holds a 'micropainnet' model" in err and "--model micropainnet" in err

    # A run whose best.json does not name its subjects cannot be checked: refused.
    import shutil

    from painmon.core.util.fileio import sha256_file

    blind = tmp_path / "blind"
    shutil.copytree(run1, blind)
    meta = json.loads((blind / "best.json").read_text())
    del meta["train_subjects"]
    assert meta["weights_sha256"] == sha256_file(blind / "best.safetensors")
    (blind / "best.json").write_text(json.dumps(meta))
    assert _train(own, tmp_path / "from-blind", "--init-from", str(blind)) == 2
    err = capsys.readouterr().err.strip()
    assert "does not list the subjects" in err and len(err.splitlines()) == 1

    # Not a run folder at all.
    assert _train(own, tmp_path / "from-nothing", "--init-from", str(tmp_path / "nope")) == 2
    assert "not found: give a run folder" in capsys.readouterr().err


def test_init_from_warns_only_when_its_crops_were_framed_otherwise(runs, toy_crops, tmp_path,
                                                                   caplog):  # fmt: skip
    import dataclasses
    import shutil

    from painmon.core.live.crop import FRAMING_STABLE, FRAMING_STABLE_2, stable_framing_meta
    from painmon.core.research.experiment import initial_weights
    from painmon.core.research.train import TrainConfig

    run1, _ = runs
    base = {"size_px": 64, "margin": 0.25, "detector": "mediapipe-landmarker",
            "face_choice": "largest", "eye_alignment": True, "color": "RGB",
            "resize": "INTER_AREA", "crop_version": 1}  # fmt: skip
    framing2 = {**base, **stable_framing_meta(framing=FRAMING_STABLE_2)}
    # A run trained on stable-landmarks-2 crops (its best.json, as a real run writes it).
    framed = tmp_path / "framed"
    shutil.copytree(run1, framed)
    meta = json.loads((framed / "best.json").read_text())
    (framed / "best.json").write_text(json.dumps({**meta, "preprocessing": framing2}))
    crops = _crops(toy_crops, 0)
    plan = SplitPlan.from_json(run1 / "splits.json")
    cfg = TrainConfig(model="micropainnet")
    framing1 = {**base, **stable_framing_meta(framing=FRAMING_STABLE)}
    for framing, warned in ((framing2, False), (framing1, True)):
        # The crops file's framing comes back from JSON: lists, not tuples.
        as_read = dataclasses.replace(crops, preprocessing=json.loads(json.dumps(framing)))
        data = PreparedData(Path("toy.npz"), (), as_read, CropReport(80, 80, 80, 0), "ab" * 32)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="painmon"):
            state, record = initial_weights(framed, cfg, plan, data)
        assert record["run"] == str(framed) and state
        assert any("another framing" in r.getMessage() for r in caplog.records) is warned


def test_init_from_remembers_the_people_of_earlier_fine_tunings(runs, datasets, tmp_path,
                                                                 capsys):  # fmt: skip
    import shutil

    run1, _ = runs
    _, own, _ = datasets
    tuned = tmp_path / "tuned"
    assert _train(own, tuned, "--init-from", str(run1)) == 0
    record = json.loads((tuned / "best.json").read_text())["init_from"]
    meta1 = json.loads((run1 / "best.json").read_text())
    assert record["subjects_seen"] == sorted(meta1["train_subjects"] + meta1["val_subjects"])
    # A run that itself learnt from nobody of split seed 7's test set, but started from
    # run1's weights: the test people run1 learnt from still refuse it.
    clean = tmp_path / "clean"
    shutil.copytree(tuned, clean)
    meta = json.loads((clean / "best.json").read_text())
    (clean / "best.json").write_text(json.dumps({**meta, "train_subjects": [],
                                                 "val_subjects": []}))  # fmt: skip
    capsys.readouterr()
    assert _train(own, tmp_path / "next", "--init-from", str(clean), "--split-seed", "7") == 2
    assert "learnt from" in capsys.readouterr().err
