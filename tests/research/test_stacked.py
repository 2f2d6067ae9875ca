"""The stacked engine: vmapped gradients, fit()'s init, per-member early stopping, CV plumbing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import stack_module_state

from painmon.core.research import stacked
from painmon.core.research.crops import CropReport, CropSet
from painmon.core.research.experiment import (
    PreparedData,
    cross_validate,
    predict_run,
    predict_run_sets,
)
from painmon.core.research.splits import SplitPlan, make_splits
from painmon.core.research.stacked import (
    StackedMember,
    batch_layout,
    fit_stacked,
    init_member_models,
    stacked_base,
    stacked_forward,
    stacked_loss,
)
from painmon.core.research.train import HISTORY_COLUMNS, TrainConfig, load_checkpoint
from painmon.core.util.errors import InvalidInputError

# No dropout: the stacked and the single-model forward then draw nothing at random.
NO_DROPOUT = {"dropout": 0.0}


def _tiny_cfg(**kwargs) -> TrainConfig:
    defaults = dict(model="micropainnet", epochs=2, warmup_epochs=1, batch_size=8, lr=3e-3,
                    device="cpu")  # fmt: skip
    return TrainConfig(**{**defaults, **kwargs})


def test_stacked_gradients_equal_each_members_own(toy_crops):
    cfg = _tiny_cfg(model_kwargs=NO_DROPOUT)
    models = init_member_models(cfg, [1, 2], torch.device("cpu"))
    singles = init_member_models(cfg, [1, 2], torch.device("cpu"))
    params, buffers = stack_module_state(models)
    base = stacked_base(cfg)
    images, labels = toy_crops(16, 0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).view(2, 8, 3, 64, 64)
    y = torch.as_tensor(labels, dtype=torch.int64).view(2, 8)

    total, per_member = stacked_loss(stacked_forward(base, params, buffers, x), y, 0.1)
    total.backward()

    for i, model in enumerate(singles):
        model.train()
        loss = F.cross_entropy(model(x[i]), y[i], label_smoothing=0.1)
        loss.backward()
        assert per_member[i].item() == pytest.approx(loss.item(), abs=1e-5)
        # Float32 sums in another order (grouped vs plain convolution): close, not equal;
        # a wrong scale (a mean over members) or another member's gradient is far off.
        for name, p in model.named_parameters():
            error = (params[name].grad[i] - p.grad).norm() / p.grad.norm().clamp_min(1e-12)
            assert error < 1e-3, (name, error)
        # BatchNorm running statistics are per member, updated like the member's own.
        for name, b in model.named_buffers():
            assert torch.allclose(buffers[name][i].float(), b.float(), atol=1e-6), name


def test_member_init_equals_fit_init(toy_crops, tmp_path, monkeypatch):
    from painmon.core.research import train

    captured = {}

    class _StopTrainingError(Exception):
        pass

    def first_epoch(model, *args, **kwargs):
        captured.update({k: v.clone() for k, v in model.state_dict().items()})
        raise _StopTrainingError

    monkeypatch.setattr(train, "train_one_epoch", first_epoch)
    x, y = toy_crops(20, 0)
    cfg = _tiny_cfg(seed=7)
    with pytest.raises(_StopTrainingError):
        train.fit(cfg, x, y, x, y, tmp_path / "fit", progress=False)
    (member,) = init_member_models(cfg, [7], torch.device("cpu"))
    state = member.state_dict()
    assert state.keys() == captured.keys()
    for name, value in state.items():
        assert torch.equal(value, captured[name]), name


def test_batch_layout_splits_the_flat_batch_by_member():
    x = torch.rand(6, 3, 8, 8)
    stacked = batch_layout(x, 2)
    assert stacked.shape == (2, 3, 3, 8, 8)
    assert torch.equal(stacked[1, 0], x[3])  # member 1's first crop is the 4th of the batch


def _members(toy_crops, tmp_path, seeds=(1, 2), n_val=(10, 15)):
    members = []
    for i, seed in enumerate(seeds):
        x_tr, y_tr = toy_crops(8 + 4 * i, seed)
        x_va, y_va = toy_crops(n_val[i], 10 + seed)
        members.append(
            StackedMember(
                seed=seed,
                train_images=x_tr,
                train_labels=y_tr,
                val_images=x_va,
                val_labels=y_va,
                out_dir=tmp_path / f"m{seed}",
                provenance={"dataset": "toy", "data_sha256": "toy"},
            )
        )
    return members


def test_a_stuck_member_stops_while_the_other_trains_on(toy_crops, tmp_path, monkeypatch):
    real = stacked._val_row
    calls = {"n": 0}

    def scripted(logits, labels, cfg):
        row = real(logits, labels, cfg)
        if len(labels) == 10:  # member 1: a score that never improves
            row["val_macro_f1"] = 0.25
        else:  # member 2: improves every epoch
            calls["n"] += 1
            row["val_macro_f1"] = 0.1 * calls["n"]
        return row

    monkeypatch.setattr(stacked, "_val_row", scripted)
    cfg = _tiny_cfg(epochs=3, patience=1, augment="none", batch_size=4)
    members = _members(toy_crops, tmp_path)
    stuck, improving = fit_stacked(cfg, members, progress=False)

    assert (stuck.stopped, stuck.epochs_run, stuck.best_epoch) == ("early_stopping", 2, 1)
    assert (improving.stopped, improving.epochs_run, improving.best_epoch) == ("completed", 3, 3)
    for member, epochs in zip(members, ([1, 2], [1, 2, 3]), strict=True):
        rows = list(csv.DictReader((member.out_dir / "history.csv").open()))
        assert [int(r["epoch"]) for r in rows] == epochs
        assert all(np.isfinite(float(r["train_loss"])) for r in rows)
        config = json.loads((member.out_dir / "config.json").read_text())
        # Both members ran the larger member's 12 // 4 steps per epoch.
        assert config["stacked_steps_per_epoch"] == 3 and config["seed"] == member.seed
        assert config["resolved_device"] == "cpu"
        for name in ("env.json", "best.safetensors", "best.json", "card.md"):
            assert (member.out_dir / name).is_file(), name
        _, meta = load_checkpoint(member.out_dir)
        assert meta["architecture"] == "micropainnet" and meta["dataset"] == "toy"
        assert meta["epoch"] == (1 if member is members[0] else 3)
        assert 0.05 <= meta["temperature"] <= 20
        probs = predict_run(member.out_dir, member.val_images)
        assert probs.shape == (len(member.val_labels), 5)
        result = stuck if member is members[0] else improving
        assert np.allclose(result.val_probs, probs, atol=1e-6)  # what calibration scored
        assert np.array_equal(probs, predict_run(member.out_dir, member.val_images,
                                                 torch.device("cpu")))  # fmt: skip
        both = predict_run_sets(member.out_dir, [member.val_images, member.train_images])
        assert np.array_equal(both[0], probs)
        assert np.array_equal(both[1], predict_run(member.out_dir, member.train_images))
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_batched_gemm_ops_train_as_vmap_does(toy_crops, tmp_path, caplog):
    # No augmentation, no dropout: both paths then draw only the members' own sampling
    # generators, so they take the same steps and differ by float32 rounding alone. That
    # rounding grows step by step (BatchNorm over 4 crops, Adam dividing by |gradient|),
    # so the first epoch agrees closely and later ones loosely; test_member_batched checks
    # the step itself exactly, in float64.
    cfg = _tiny_cfg(epochs=2, augment="none", batch_size=4, lr=1e-4, model_kwargs=NO_DROPOUT)
    histories = {}
    for ops in ("vmap", "bmm"):
        members = _members(toy_crops, tmp_path / ops)
        caplog.clear()
        with caplog.at_level("INFO", logger="painmon.core.research.stacked"):
            results = fit_stacked(cfg, members, progress=False, ops=ops)
        assert [r.epochs_run for r in results] == [2, 2]
        # Where the time went; a CPU run captured no CUDA graph and must not say it did.
        assert f"stacked {ops}, 2 models on cpu: set-up" in caplog.text
        assert "(2 epochs)" in caplog.text and "CUDA graph" not in caplog.text
        histories[ops] = [_rows(m) for m in members]
        config = json.loads((members[0].out_dir / "config.json").read_text())
        assert config["engine"] == "stacked" and config["stacked_ops"] == ops
        assert config["channels_last"] is (ops == "bmm")
    for vmap_rows, bmm_rows in zip(histories["vmap"], histories["bmm"], strict=True):
        for a, b, tolerance in zip(vmap_rows, bmm_rows, (1e-3, 5e-2), strict=True):
            for key in ("train_loss", "val_loss"):
                assert float(b[key]) == pytest.approx(float(a[key]), rel=tolerance), key


def test_bmm_ops_refuse_a_network_they_cannot_compute(toy_crops, tmp_path, monkeypatch):
    from painmon.core.research.member_batched import UnsupportedModelError

    def unsupported(model):
        raise UnsupportedModelError("block1.conv: no batched form of Conv3d")

    monkeypatch.setattr(stacked, "check_supported", unsupported)
    members = _members(toy_crops, tmp_path)
    with pytest.raises(InvalidInputError, match=r"Conv3d.*--engine stacked"):
        fit_stacked(_tiny_cfg(), members, progress=False, ops="bmm")
    with pytest.raises(InvalidInputError, match="stacked ops"):
        fit_stacked(_tiny_cfg(), members, progress=False, ops="grouped")
    assert not any(m.out_dir.exists() for m in members)


def test_bad_stacked_inputs_are_refused(toy_crops, tmp_path):
    members = _members(toy_crops, tmp_path)
    with pytest.raises(InvalidInputError, match="resume"):
        fit_stacked(_tiny_cfg(), members, resume=True)
    with pytest.raises(InvalidInputError, match="own run folder"):
        fit_stacked(_tiny_cfg(), [members[0], members[0]])
    with pytest.raises(InvalidInputError, match="validation"):
        x, y = toy_crops(10, 0)
        StackedMember(1, x, y, x[:0], y[:0], tmp_path / "empty")


# ---- cross-validation through the stacked engine ----------------------------------------


@pytest.fixture(scope="module")
def toy_data(toy_crops):
    images, labels = toy_crops(75, 5)
    subjects = np.repeat([f"s{i:02d}" for i in range(15)], 5)
    crops = CropSet(images, labels, subjects, tuple(f"{i}.png" for i in range(75)), (None,) * 75)
    return PreparedData(Path("toy.npz"), (), crops, CropReport(75, 75, 75, 0), "ab" * 32)


def _plan(data):
    return make_splits(data.crops.as_samples(), data.dataset_sha256, seed=0, folds=2)


@pytest.mark.parametrize(("engine", "jobs"), [("stacked", 2), ("stacked-bmm", 2), ("threads", 1)])
def test_cross_validate_refuses_a_bad_engine_before_writing(toy_data, tmp_path, engine, jobs):
    with pytest.raises(InvalidInputError, match=r"engine|stacked"):
        cross_validate(toy_data, _plan(toy_data), _tiny_cfg(), tmp_path / "cv", jobs=jobs,
                       engine=engine)  # fmt: skip
    assert not (tmp_path / "cv").exists()


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_stacked_cv_writes_what_the_processes_engine_writes(toy_data, tmp_path):
    plan = _plan(toy_data)
    cfg = _tiny_cfg(epochs=1, batch_size=16)
    summaries = {
        engine: cross_validate(
            toy_data, plan, cfg, tmp_path / engine, seeds=(42,), progress=False, engine=engine
        )
        for engine in ("processes", "stacked", "stacked-bmm")
    }
    ref, got = summaries["processes"], summaries["stacked"]
    bmm = summaries["stacked-bmm"]
    assert bmm.keys() == got.keys() and [f.keys() for f in bmm["folds"]] == [
        f.keys() for f in got["folds"]
    ]
    assert _files(tmp_path / "stacked-bmm") == _files(tmp_path / "stacked")
    assert got.keys() == ref.keys()
    assert got["val"].keys() == ref["val"].keys() and got["test"].keys() == ref["test"].keys()
    assert [f.keys() for f in got["folds"]] == [f.keys() for f in ref["folds"]]
    assert [(f["seed"], f["fold"]) for f in got["folds"]] == [(42, 1), (42, 2)]
    for fold in got["folds"]:
        for key, value in fold.items():
            if key.startswith(("val_", "test_")):
                assert np.isfinite(value) and 0.0 <= value <= 1.0, key
    # The same files, less fit()'s resume state.
    resume_files = {f"seed42/fold{k}/{name}" for k in (1, 2)
                    for name in ("last.safetensors", "last.json")}  # fmt: skip
    assert _files(tmp_path / "stacked") == _files(tmp_path / "processes") - resume_files
    assert (tmp_path / "stacked" / "cv_test_predictions.npz").is_file()
    for k in (1, 2):
        meta = json.loads((tmp_path / "stacked" / "seed42" / f"fold{k}" / "best.json").read_text())
        assert meta["fold"] == k - 1 and meta["training_seed"] == 42
        # Each fold run records its own fold's partition (what evaluate scores), every engine.
        for engine in ("processes", "stacked", "stacked-bmm"):
            run = tmp_path / engine / "seed42" / f"fold{k}"
            assert SplitPlan.from_json(run / "splits.json") == plan.fold_plan(k - 1)
        assert set(meta["val_subjects"]) == set(plan.folds[k - 1].val)


@pytest.mark.parametrize("engine", ["stacked", "stacked-bmm"])
@pytest.mark.parametrize("command", ["cv", "reproduce"])
def test_cli_refuses_stacked_with_jobs_before_writing(command, engine, tmp_path, capsys):
    from painmon.core.tools.cli import main

    argv = [command, "--engine", engine, "--jobs", "2", "--manifest", str(tmp_path / "m.csv"),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--engine {engine} " in err and "--jobs 2" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_failed_graph_capture_falls_back_to_eager_steps(toy_crops, tmp_path, monkeypatch, caplog):
    import contextlib

    cfg = _tiny_cfg(augment="none", batch_size=4)
    members = _members(toy_crops, tmp_path)
    device = torch.device("cpu")
    models = init_member_models(cfg, [m.seed for m in members], device)
    trainer = stacked.StackedTrainer(cfg, models, stacked_base(cfg), members, device, 5, False)
    # Pretend this is a GPU whose capture fails: the epoch must still run all its steps.
    trainer.want_graph = True

    @contextlib.contextmanager
    def failing_graph(graph):
        raise RuntimeError("operation not permitted when stream is capturing")
        yield

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "graph", failing_graph)
    before = {k: v.detach().clone() for k, v in trainer.params.items()}
    with caplog.at_level("WARNING"):
        rows = trainer.train_epoch(1)
    assert "CUDA graph capture" in caplog.text and "without graphs" in caplog.text
    assert trainer.graph is None and not trainer.want_graph
    assert int(trainer.epoch_step) == 5 and int(trainer.global_step) == 5
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    assert any(not torch.equal(before[k], v) for k, v in trainer.params.items())


@pytest.mark.parametrize(("engine", "jobs"), [("stacked", 2), ("stacked-bmm", 2), ("threads", 1)])
def test_reproduce_refuses_a_bad_engine_before_reading(tmp_path, engine, jobs):
    from painmon.core.research.reproduce import run_reproduce

    with pytest.raises(InvalidInputError, match=r"engine|stacked"):
        run_reproduce(tmp_path / "missing.csv", tmp_path / "out", engine=engine, jobs=jobs)
    assert not (tmp_path / "out").exists()


# -- history.csv is written every epoch, as fit() writes it --------------------------------


class _CrashError(RuntimeError):
    """Stands in for anything that kills a run mid-way (a CUDA error, an out-of-memory)."""


def _rows(member: StackedMember) -> list[dict[str, str]]:
    with (member.out_dir / "history.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("finished", [1, 2])
def test_a_run_killed_mid_way_keeps_each_members_finished_epochs(
    toy_crops, tmp_path, monkeypatch, finished
):
    real = stacked.StackedTrainer.train_epoch
    seen: list[list[int]] = []

    def dies_after(self, epoch):
        # What is on disk when the next epoch starts: written before the end, not at it.
        seen.append([len(_rows(m)) if (m.out_dir / "history.csv").exists() else 0
                     for m in self.members])  # fmt: skip
        if epoch > finished:
            raise _CrashError(f"killed in epoch {epoch}")
        return real(self, epoch)

    monkeypatch.setattr(stacked.StackedTrainer, "train_epoch", dies_after)
    cfg = TrainConfig(model="micropainnet", epochs=5, warmup_epochs=1, batch_size=4,
                      device="cpu", augment="none", patience=10)  # fmt: skip
    members = _members(toy_crops, tmp_path)
    with pytest.raises(_CrashError):
        fit_stacked(cfg, members, progress=False)

    # Before epoch e started, every member had e - 1 rows on disk.
    assert seen == [[e - 1] * len(members) for e in range(1, finished + 2)]
    for member in members:
        rows = _rows(member)
        assert [int(r["epoch"]) for r in rows] == list(range(1, finished + 1))
        assert list(rows[0]) == list(HISTORY_COLUMNS)
        assert all(np.isfinite(float(r["val_macro_f1"])) for r in rows)
        assert all(np.isfinite(float(r["train_loss"])) for r in rows)
        # The crash came before the checkpoints are written: no half-made run folder
        # claims to be finished.
        assert not (member.out_dir / "card.md").exists()


def test_an_early_stopped_member_stops_writing_rows(toy_crops, tmp_path, monkeypatch):
    real_row = stacked._val_row
    real_epoch = stacked.StackedTrainer.train_epoch

    calls = {"n": 0}

    def stuck_first_member(logits, labels, cfg):
        row = real_row(logits, labels, cfg)
        if len(labels) == 10:  # member 1 never improves: stops after 1 + patience epochs
            row["val_macro_f1"] = 0.25
        else:  # member 2 improves every epoch
            calls["n"] += 1
            row["val_macro_f1"] = 0.1 * calls["n"]
        return row

    def dies_in_epoch_4(self, epoch):
        if epoch == 4:
            raise _CrashError("killed in epoch 4")
        return real_epoch(self, epoch)

    monkeypatch.setattr(stacked, "_val_row", stuck_first_member)
    monkeypatch.setattr(stacked.StackedTrainer, "train_epoch", dies_in_epoch_4)
    cfg = TrainConfig(model="micropainnet", epochs=5, warmup_epochs=1, batch_size=4,
                      device="cpu", augment="none", patience=1)  # fmt: skip
    stuck, other = _members(toy_crops, tmp_path)
    with pytest.raises(_CrashError):
        fit_stacked(cfg, [stuck, other], progress=False)
    assert [int(r["epoch"]) for r in _rows(stuck)] == [1, 2]
    assert len(_rows(other)) == 3


# ---- Ctrl-C inside a cross-validation stops it: no fold reads as trained ------------------


def _interrupting_fit(monkeypatch, at_epoch: int) -> list[int]:
    """Ctrl-C during ``at_epoch`` of the first training; returns the epochs started."""
    from painmon.core.research import train

    started: list[int] = []
    real = train.train_one_epoch

    def interrupted_once(*args, **kwargs):
        started.append(1)
        if len(started) == at_epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", interrupted_once)
    return started


def test_ctrl_c_in_a_fold_stops_the_cross_validation(toy_data, tmp_path, monkeypatch, caplog):
    from painmon.core.research.experiment import CrossValidationInterrupted

    started = _interrupting_fit(monkeypatch, at_epoch=2)
    out = tmp_path / "cv"
    with pytest.raises(KeyboardInterrupt) as info:
        cross_validate(toy_data, _plan(toy_data), _tiny_cfg(epochs=3), out, progress=False)
    assert isinstance(info.value, CrossValidationInterrupted)
    # Fold 1 stopped in its second epoch and fold 2 never started.
    assert len(started) == 2 and not (out / "seed42" / "fold2").exists()
    assert not (out / "cv_summary.json").exists() and not (out / "cv_folds.csv").exists()
    # fit() kept the interrupted fold's best checkpoint, and the log says where.
    assert (out / "seed42" / "fold1" / "best.safetensors").is_file()
    assert "no summary written" in caplog.text and "fold1" in caplog.text


def test_ctrl_c_in_a_stacked_cross_validation_stops_it(toy_data, tmp_path, monkeypatch):
    real = stacked.StackedTrainer.train_epoch

    def interrupted_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(stacked.StackedTrainer, "train_epoch", interrupted_in_epoch_2)
    out = tmp_path / "cv"
    with pytest.raises(KeyboardInterrupt, match=r"fold1, .*fold2"):
        cross_validate(toy_data, _plan(toy_data), _tiny_cfg(epochs=3, batch_size=16), out,
                       progress=False, engine="stacked")  # fmt: skip
    assert not (out / "cv_summary.json").exists()
    for k in (1, 2):
        run = out / "seed42" / f"fold{k}"
        assert (run / "best.safetensors").is_file()
        assert [int(r["epoch"]) for r in csv.DictReader((run / "history.csv").open())] == [1]


def test_ctrl_c_in_reproduce_leaves_no_reuse_marker(toy_data, tmp_path, monkeypatch):
    from painmon.core.research import reproduce
    from painmon.core.research.experiment import CrossValidationInterrupted

    def interrupted(*args, **kwargs):
        raise CrossValidationInterrupted("interrupted while training fold1")

    monkeypatch.setattr(reproduce, "cross_validate", interrupted)
    cv_dir = tmp_path / "cv" / "dacnn"
    with pytest.raises(KeyboardInterrupt):
        reproduce._cross_validate_once(toy_data, _plan(toy_data), _tiny_cfg(), cv_dir, (42,), 1,
                                       False)  # fmt: skip
    assert not (cv_dir / "reproduce_identity.json").exists()


def test_ctrl_c_before_the_first_epoch_ends_is_an_interrupt_not_a_crash(
    toy_crops, toy_data, tmp_path, monkeypatch
):
    from painmon.core.research.train import fit

    _interrupting_fit(monkeypatch, at_epoch=1)
    x, y = toy_crops(20, 0)
    with pytest.raises(KeyboardInterrupt, match="before the first epoch"):
        fit(_tiny_cfg(), x, y, x[:10], y[:10], tmp_path / "run", progress=False)

    def interrupted_at_once(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(stacked.StackedTrainer, "train_epoch", interrupted_at_once)
    with pytest.raises(KeyboardInterrupt, match="before the first epoch"):
        fit_stacked(_tiny_cfg(), _members(toy_crops, tmp_path / "stacked"), progress=False)
