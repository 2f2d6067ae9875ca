"""The training loop on tiny data: run folder, checkpoints, resume, leak refusal, schedule."""

from __future__ import annotations

import csv
import itertools
import json

import pytest
import torch

from painmon.core.research.splits import SubjectLeakError
from painmon.core.research.train import (
    TrainConfig,
    fit,
    load_checkpoint,
    lr_factor,
    sample_epoch_indices,
)
from painmon.core.util.errors import InvalidInputError


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, toy_crops):
    out = tmp_path_factory.mktemp("run")
    x_tr, y_tr = toy_crops(80, 0)
    x_va, y_va = toy_crops(40, 1)
    cfg = TrainConfig(
        model="micropainnet", epochs=3, warmup_epochs=1, batch_size=16, lr=3e-3, device="cpu"
    )
    result = fit(cfg, x_tr, y_tr, x_va, y_va, out, progress=False,
                 provenance={"data_sha256": "toy", "dataset": "toy"})  # fmt: skip
    return out, result, cfg, (x_va, y_va)


def test_run_folder_holds_everything(trained_run):
    out, result, _, _ = trained_run
    for name in ("config.json", "env.json", "history.csv", "best.safetensors", "best.json",
                 "card.md", "last.safetensors", "last.json"):  # fmt: skip
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) >= {
        "lr",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_macro_f1",
        "val_ece",
    }
    meta = json.loads((out / "best.json").read_text())
    assert meta["architecture"] == "micropainnet"
    assert meta["class_names"][0] == "No pain"
    assert meta["pspi_mapping"].startswith("0->0")
    assert 0.05 <= meta["temperature"] <= 20
    assert meta["temperature"] == pytest.approx(result.temperature)
    assert result.stopped == "completed" and result.epochs_run == 3
    config = json.loads((out / "config.json").read_text())
    assert config["label_smoothing"] == 0.1 and config["resolved_device"] == "cpu"


def test_model_learns_the_toy_task(trained_run):
    _, result, _, _ = trained_run
    assert result.best_val_macro_f1 > 0.5  # chance is 0.2


def test_checkpoint_reloads_to_same_predictions(trained_run):
    out, _, _, (x_va, _) = trained_run
    model_a, _ = load_checkpoint(out)
    model_b, _ = load_checkpoint(out / "best.safetensors")
    x = torch.from_numpy(x_va[:4]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        assert torch.equal(model_a(x), model_b(x))


def test_tampered_checkpoint_is_refused(trained_run, tmp_path):
    out, _, _, _ = trained_run
    for name in ("best.safetensors", "best.json"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    data = bytearray((tmp_path / "best.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "best.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing")


def test_resume_continues_after_last_epoch(trained_run, tmp_path, toy_crops):
    out, _, cfg, (x_va, y_va) = trained_run
    for path in out.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    x_tr, y_tr = toy_crops(80, 0)
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 4})
    result = fit(longer, x_tr, y_tr, x_va, y_va, tmp_path, resume=True, progress=False)
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert result.epochs_run == 4
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(longer, x_tr, y_tr, x_va, y_va, tmp_path / "fresh", resume=True, progress=False)


def test_a_subject_in_train_and_val_is_refused(tmp_path, toy_crops):
    x, y = toy_crops(20, 0)
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu")
    with pytest.raises(SubjectLeakError, match="'p7'"):
        fit(cfg, x, y, x, y, tmp_path, progress=False,
            train_subjects=["p1"] * 10 + ["p7"] * 10, val_subjects=["p7"] * 20)  # fmt: skip
    assert not (tmp_path / "best.safetensors").exists()


def test_schedule_warms_up_then_anneals_to_min_lr():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, lr=1e-3, min_lr=1e-5)
    factors = [lr_factor(s, 10, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.05)
    assert factors[19] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(factors[20:]))
    assert factors[-1] == pytest.approx(1e-2, abs=2e-3)  # min_lr / lr at the end


def test_class_weighted_sampling_balances_rare_classes():
    labels = torch.tensor([0] * 900 + [4] * 100)
    gen = torch.Generator().manual_seed(0)
    drawn = labels[sample_epoch_indices(labels, True, gen)]
    share = float((drawn == 4).float().mean())
    assert 0.4 < share < 0.6
    plain = labels[sample_epoch_indices(labels, False, gen)]
    assert float((plain == 4).float().mean()) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "bad",
    [{"epochs": 0}, {"batch_size": 1}, {"lr": 0}, {"label_smoothing": 1.0}, {"augment": "x"},
     {"compile": "fast"}, {"min_lr": 1.0}],
)  # fmt: skip
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_atomic_writes_get_normal_permissions(tmp_path):
    from painmon.core.util.fileio import _UMASK, atomic_write_json

    path = atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~_UMASK


# --- integrity: every checkpoint is verified against a recorded hash (issue #12.3) ----------


def _copy_run(src, dst):
    for path in src.iterdir():
        if path.is_file():
            (dst / path.name).write_bytes(path.read_bytes())


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("recorded", [None, "", "ab" * 31, "AB" * 32, 12])
def test_a_checkpoint_without_a_valid_recorded_hash_is_refused(trained_run, tmp_path, recorded):
    out, _, _, _ = trained_run
    _copy_run(out, tmp_path)
    meta = json.loads((tmp_path / "best.json").read_text())
    if recorded is None:
        del meta["weights_sha256"]
    else:
        meta["weights_sha256"] = recorded
    (tmp_path / "best.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidInputError, match=r"best\.json records no valid weights_sha256"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_with_unreadable_json_is_refused(trained_run, tmp_path):
    out, _, _, _ = trained_run
    _copy_run(out, tmp_path)
    (tmp_path / "best.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_checkpoint(tmp_path)
    (tmp_path / "best.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match="must hold a JSON object"):
        load_checkpoint(tmp_path)


def test_last_json_records_the_hash_of_the_resume_weights(trained_run):
    out, _, _, _ = trained_run
    state = json.loads((out / "last.json").read_text())
    assert state["weights_file"] == "last.safetensors"
    assert state["weights_sha256"] == _sha256(out / "last.safetensors")
    assert state["epoch"] == 3


def test_resume_refuses_bit_flipped_weights(trained_run, tmp_path, toy_crops):
    out, _, cfg, (x_va, y_va) = trained_run
    _copy_run(out, tmp_path)
    data = bytearray((tmp_path / "last.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x04  # one bit, inside the tensors
    (tmp_path / "last.safetensors").write_bytes(bytes(data))
    history_before = (tmp_path / "history.csv").read_bytes()
    x_tr, y_tr = toy_crops(80, 0)
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 4})
    with pytest.raises(InvalidInputError) as caught:
        fit(longer, x_tr, y_tr, x_va, y_va, tmp_path, resume=True, progress=False)
    message = str(caught.value)
    assert "last.safetensors does not match the SHA-256 recorded in last.json" in message
    assert "start again without --resume" in message and "restore" in message
    assert (tmp_path / "history.csv").read_bytes() == history_before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no-hash", r"last\.json records no valid weights_sha256"),
        ("no-weights", r"last\.safetensors is missing"),
        ("bad-json", r"last\.json is not valid JSON"),
        ("no-history", r"last\.json lacks history"),
    ],
)
def test_resume_refuses_an_unverifiable_state(trained_run, tmp_path, toy_crops, damage, message):
    out, _, cfg, (x_va, y_va) = trained_run
    _copy_run(out, tmp_path)
    state = json.loads((tmp_path / "last.json").read_text())
    if damage == "no-hash":
        del state["weights_sha256"]  # as an older painmon wrote it
    elif damage == "no-history":
        del state["history"]
    (tmp_path / "last.json").write_text(json.dumps(state))
    if damage == "no-weights":
        (tmp_path / "last.safetensors").unlink()
    elif damage == "bad-json":
        (tmp_path / "last.json").write_text("{")
    x_tr, y_tr = toy_crops(80, 0)
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 4})
    with pytest.raises(InvalidInputError, match=message) as caught:
        fit(longer, x_tr, y_tr, x_va, y_va, tmp_path, resume=True, progress=False)
    assert "without --resume" in str(caught.value)


# --- devices (issue #12.9) ------------------------------------------------------------------


def test_a_misspelt_device_is_refused_by_the_config():
    for bad in ("gpu", "cuda:x", "tpu", ""):
        with pytest.raises(InvalidInputError, match="unknown device"):
            TrainConfig(device=bad)
    for good in ("auto", "cpu", "cuda", "cuda:1", "mps", " CUDA "):
        assert TrainConfig(device=good).device == good  # a GPU config reads on any machine


@pytest.mark.parametrize(
    ("cuda_build", "reason"),
    [(None, "this PyTorch build has no CUDA"), ("12.4", "no GPU visible")],
)
def test_fit_on_a_missing_gpu_is_one_clear_error(tmp_path, toy_crops, monkeypatch, cuda_build,
                                                 reason):  # fmt: skip
    from painmon.core.research.seeding import DeviceUnavailableError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    x, y = toy_crops(10, 0)
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=4, device="cuda")
    with pytest.raises(DeviceUnavailableError) as caught:
        fit(cfg, x, y, x, y, tmp_path, progress=False)
    message = str(caught.value)
    assert message.startswith("--device cuda: CUDA is not available: ")
    assert reason in message and message.endswith("use --device cpu or auto")
    assert not (tmp_path / "best.safetensors").exists()


def test_painmon_train_on_a_missing_gpu_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from painmon.core.tools.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["train", "--manifest", str(tmp_path / "no-dataset"),
                 "--out", str(tmp_path / "run"), "--device", "cuda"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("painmon train: error: --device cuda: CUDA is not available")
    assert "\n" not in err and "Traceback" not in err


# --- resuming another run (subject leakage) -------------------------------------------------


def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def subject_run(tmp_path_factory, toy_crops):
    """A 1-epoch run that records its subjects and crops hash, as train_on_plan's does."""
    out = tmp_path_factory.mktemp("subject-run")
    x_tr, y_tr = toy_crops(40, 0)
    x_va, y_va = toy_crops(20, 1)
    s_tr, s_va = [f"t{i % 4}" for i in range(40)], [f"v{i % 2}" for i in range(20)]
    cfg = TrainConfig(model="micropainnet", epochs=1, warmup_epochs=0, batch_size=8, device="cpu")
    fit(cfg, x_tr, y_tr, x_va, y_va, out, progress=False, train_subjects=s_tr, val_subjects=s_va,
        provenance={"data_sha256": "cd" * 32})  # fmt: skip
    return out, cfg, (x_tr, y_tr, s_tr), (x_va, y_va, s_va)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("model", "model 'micropainnet' -> 'simplecnn'"),
        ("model_kwargs", "model_kwargs"),
        ("seed", "seed 42 -> 7"),
        ("subjects", "training subjects differ"),
        ("data", "crops data_sha256"),
    ],
)
def test_resume_refuses_another_run_before_writing(subject_run, tmp_path, change, words):
    out, cfg, (x_tr, y_tr, s_tr), (x_va, y_va, s_va) = subject_run
    _copy_run(out, tmp_path)
    before = _snapshot(tmp_path)
    settings = {**cfg.to_dict(), "epochs": 3}
    data_sha = "cd" * 32
    if change == "model":
        settings["model"] = "simplecnn"
    elif change == "model_kwargs":
        settings["model_kwargs"] = {"dropout": 0.3}
    elif change == "seed":
        settings["seed"] = 7
    elif change == "subjects":
        s_tr = [s.replace("t0", "v0") for s in s_tr]  # a validation person of another split
        s_va = [s.replace("v0", "t0") for s in s_va]
    else:
        data_sha = "ef" * 32
    with pytest.raises(InvalidInputError, match="cannot resume") as caught:
        fit(TrainConfig(**settings), x_tr, y_tr, x_va, y_va, tmp_path, resume=True,
            progress=False, train_subjects=s_tr, val_subjects=s_va,
            provenance={"data_sha256": data_sha})  # fmt: skip
    assert words in str(caught.value)
    assert _snapshot(tmp_path) == before  # not even config.json rewritten


def test_resume_of_the_same_run_with_more_epochs_still_works(subject_run, tmp_path):
    out, cfg, (x_tr, y_tr, s_tr), (x_va, y_va, s_va) = subject_run
    _copy_run(out, tmp_path)
    longer = TrainConfig(**{**cfg.to_dict(), "epochs": 2, "patience": 3})
    result = fit(longer, x_tr, y_tr, x_va, y_va, tmp_path, resume=True, progress=False,
                 train_subjects=s_tr, val_subjects=s_va,
                 provenance={"data_sha256": "cd" * 32})  # fmt: skip
    assert result.epochs_run == 2


def test_resume_of_a_run_without_a_recorded_identity_compares_its_files(subject_run, tmp_path):
    """last.json of an older painmon: config.json and best.json say what the run was."""
    out, cfg, (x_tr, y_tr, s_tr), (x_va, y_va, s_va) = subject_run
    _copy_run(out, tmp_path)
    state = json.loads((tmp_path / "last.json").read_text())
    del state["identity"]
    (tmp_path / "last.json").write_text(json.dumps(state))
    before = _snapshot(tmp_path)
    other = TrainConfig(**{**cfg.to_dict(), "model": "simplecnn", "epochs": 2})
    with pytest.raises(InvalidInputError, match="model 'micropainnet' -> 'simplecnn'"):
        fit(other, x_tr, y_tr, x_va, y_va, tmp_path, resume=True, progress=False,
            train_subjects=s_tr, val_subjects=s_va,
            provenance={"data_sha256": "cd" * 32})  # fmt: skip
    assert _snapshot(tmp_path) == before


def test_a_checkpoint_whose_weights_do_not_fit_its_json_is_one_clear_error(trained_run, tmp_path):
    """best.json says micropainnet, the weights are another network's (bug: a RuntimeError)."""
    out, _, _, _ = trained_run
    _copy_run(out, tmp_path)
    from painmon.core.research.train import checkpoint_meta, save_checkpoint
    from painmon.models import create_model

    other = create_model("simplecnn")
    save_checkpoint(other, tmp_path / "best.safetensors", checkpoint_meta(other))
    meta = json.loads((tmp_path / "best.json").read_text())
    original = json.loads((out / "best.json").read_text())
    meta.update(architecture=original["architecture"], model_kwargs=original["model_kwargs"])
    (tmp_path / "best.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidInputError, match="does not fit the 'micropainnet' model") as caught:
        load_checkpoint(tmp_path)
    assert str(tmp_path) in str(caught.value)
