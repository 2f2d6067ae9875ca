"""The retrained-model registry: register, activate, roll back, log, refuse corrupt entries."""

from __future__ import annotations

import errno
import json
import os
import shutil
from datetime import UTC, datetime, timedelta

import pytest
import torch

from painmon.core.research.export import export_onnx
from painmon.core.research.train import checkpoint_meta, save_checkpoint
from painmon.core.store.registry import (
    LOG_FILENAME,
    ModelRegistry,
    RegistryError,
    default_registry_dir,
)
from painmon.core.util.fileio import sha256_file
from painmon.models import create_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, toy_gate_data):
    """A freshly initialised micropainnet run folder and its verified ONNX export."""
    torch.manual_seed(0)
    model = create_model("micropainnet").eval()
    run = tmp_path_factory.mktemp("registry-run")
    meta = checkpoint_meta(model, temperature=1.0, epoch=1)
    save_checkpoint(model, run / "best.safetensors", meta)
    (run / "card.md").write_text("# card\n")
    onnx_path = run / "export" / "micropainnet.onnx"
    export_onnx(run, onnx_path, parity_samples=2, gate_data=toy_gate_data)
    return run, onnx_path


class StepClock:
    """A UTC clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_default_folder_is_user_data_models(monkeypatch, tmp_path):
    monkeypatch.setenv("PAINMON_DATA", str(tmp_path / "data"))
    assert default_registry_dir() == tmp_path / "data" / "models"
    assert ModelRegistry().root == tmp_path / "data" / "models"


def test_register_activate_rollback_and_log(exported, tmp_path):
    run, onnx_path = exported
    registry = ModelRegistry(tmp_path / "reg", clock=StepClock())
    assert registry.active() is None and registry.list_entries() == []

    first = registry.register(onnx_path, run, {"macro_f1": 0.5})
    second = registry.register(onnx_path, run, {"macro_f1": 0.6})
    assert first != second and first.startswith("micropainnet-")
    entries = registry.list_entries()
    assert [e.model_id for e in entries] == [first, second]
    assert entries[0].metrics["macro_f1"] == 0.5
    assert entries[0].architecture == "micropainnet"
    assert (registry.entry_dir(first) / "run_card.md").is_file()
    assert registry.active() is None  # registering never activates

    with pytest.raises(RegistryError, match="no previously active model"):
        registry.rollback()
    assert registry.activate(first).model_id == first
    assert registry.activate(second).onnx_path == registry.model_path(second)
    assert registry.active().model_id == second
    assert registry.previous_id() == first

    back = registry.rollback()
    assert back.model_id == first and registry.active().model_id == first
    with pytest.raises(RegistryError, match="no previously active model"):
        registry.rollback()
    # Previous models are kept on disk.
    assert registry.model_path(second).is_file()

    records = registry.log_records()
    assert [(r["action"], r["model_id"]) for r in records] == [
        ("register", first),
        ("register", second),
        ("activate", first),
        ("activate", second),
        ("rollback", first),
    ]
    digest = entries[0].sha256
    assert all(r["sha256"] == digest for r in records)  # the same export registered twice
    assert records[3]["previous"] == first and records[4]["previous"] == second
    times = [datetime.fromisoformat(r["time_utc"]) for r in records]
    assert times == sorted(times) and all(t.utcoffset() == timedelta(0) for t in times)
    raw = (registry.root / LOG_FILENAME).read_text().splitlines()
    assert [json.loads(line)["action"] for line in raw] == [r["action"] for r in records]


def test_export_in_place_keeps_its_id(exported, tmp_path):
    run, onnx_path = exported
    registry = ModelRegistry(tmp_path / "reg")
    model_id = registry.new_id("micropainnet")
    target = registry.model_path(model_id)
    target.parent.mkdir(parents=True)
    shutil.copyfile(onnx_path, target)
    shutil.copyfile(
        onnx_path.with_name(onnx_path.name + ".sha256"), target.with_suffix(".onnx.sha256")
    )
    assert registry.register(target, run, {}) == model_id
    assert registry.new_id("micropainnet") != model_id  # its folder exists now


def test_unverified_export_is_not_registered(exported, tmp_path):
    _run, onnx_path = exported
    lone = tmp_path / "lone.onnx"
    shutil.copyfile(onnx_path, lone)  # no sidecar
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="not a verified export"):
        registry.register(lone, None, {})
    (tmp_path / "lone.onnx.sha256").write_text("0" * 64 + "  lone.onnx\n")
    with pytest.raises(RegistryError, match=r"does not match its \.sha256 sidecar"):
        registry.register(lone, None, {})
    assert registry.list_entries() == []


def test_corrupt_entry_is_refused_and_active_model_kept(exported, tmp_path):
    run, onnx_path = exported
    registry = ModelRegistry(tmp_path / "reg")
    good = registry.register(onnx_path, run, {})
    bad = registry.register(onnx_path, run, {})
    registry.activate(good)
    path = registry.model_path(bad)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(RegistryError, match=rf"{bad} was refused.*SHA-256.*unchanged \({good}\)"):
        registry.activate(bad)
    assert registry.active().model_id == good
    assert registry.log_records()[-1]["action"] == "refused"

    # Replacing model and sidecar together is caught by the hash recorded at registration.
    path.with_name("model.onnx.sha256").write_text(f"{sha256_file(path)}  model.onnx\n")
    with pytest.raises(RegistryError, match="expected_sha256"):
        registry.activate(bad)
    assert registry.active().model_id == good


def test_rollback_to_a_corrupted_model_is_refused(exported, tmp_path):
    run, onnx_path = exported
    registry = ModelRegistry(tmp_path / "reg")
    first = registry.register(onnx_path, run, {})
    second = registry.register(onnx_path, run, {})
    registry.activate(first)
    registry.activate(second)
    registry.model_path(first).write_bytes(b"not an onnx model")
    with pytest.raises(RegistryError, match="refused"):
        registry.rollback()
    assert registry.active().model_id == second
    assert registry.previous_id() == first  # nothing was lost: fix the file and retry


def test_a_damaged_entry_or_state_file_is_a_registry_error(exported, tmp_path):
    # The window's activate and roll-back buttons catch RegistryError only: anything else
    # was an uncaught exception in a Qt slot, with no message for the nurse.
    run, onnx_path = exported
    registry = ModelRegistry(tmp_path / "reg")
    first = registry.register(onnx_path, run, {})
    second = registry.register(onnx_path, run, {})
    registry.activate(first)
    registry.activate(second)
    entry_json = registry.entry_dir(first) / "entry.json"
    good_entry = entry_json.read_text()
    entry_json.write_text(good_entry[:20])  # cut short
    with pytest.raises(RegistryError, match=rf"entry '{first}'.*unreadable.*unchanged"):
        registry.rollback()
    assert registry.active().model_id == second
    entry_json.write_text(good_entry)
    state = registry.root / "state.json"
    for damaged in ("[]", "null", '"abc"', '{"active": 3}', '{"active": null, "previous": "abc"}'):
        state.write_text(damaged)
        for call in (registry.active, registry.previous_id, registry.rollback):
            with pytest.raises(RegistryError, match=r"state\.json is unreadable"):
                call()


def test_a_registry_that_cannot_be_written_keeps_the_active_model(exported, tmp_path, monkeypatch):
    run, onnx_path = exported
    registry = ModelRegistry(tmp_path / "reg")
    first = registry.register(onnx_path, run, {})
    second = registry.register(onnx_path, run, {})
    registry.activate(first)
    log_before = registry.log_records()

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(registry, "_log", full)
    with pytest.raises(RegistryError, match=rf"activate of model {second}.*unchanged \({first}\)"):
        registry.activate(second)
    monkeypatch.undo()
    assert registry.active().model_id == first and registry.log_records() == log_before


def test_unknown_and_invalid_ids(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="no registered model"):
        registry.activate("nope")
    with pytest.raises(RegistryError, match="invalid model id"):
        registry.activate("../escape")


def test_a_model_with_external_weights_is_not_registered(exported, tmp_path):
    # Issue #12.3a: the sidecar hashes the graph file only; weights in a side file could be
    # swapped under the same checksum, so such a model never enters the registry.
    import onnx

    _run, onnx_path = exported
    split = tmp_path / "split.onnx"
    onnx.save(
        onnx.load(str(onnx_path)),
        str(split),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="split.weights",
        size_threshold=1024,
    )
    split.with_name("split.onnx.sha256").write_text(f"{sha256_file(split)}  split.onnx\n")
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match=r"external files \(split\.weights\)"):
        registry.register(split, None, {})
    assert registry.list_entries() == []
    assert not (tmp_path / "reg").exists() or not any((tmp_path / "reg").iterdir())
