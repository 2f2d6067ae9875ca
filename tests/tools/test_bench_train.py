"""painmon bench train: the training-speed benchmark reports its numbers (never asserts speed)."""

from __future__ import annotations

import pytest

from painmon.core.tools.bench_train import bench_train
from painmon.core.util.errors import InvalidInputError


def test_bench_train_reports_epoch_times_and_the_projection():
    result = bench_train(
        device="cpu", n_crops=64, batch_size=32, epochs=1, augment="none", model="simplecnn"
    )
    assert result["device"] == "cpu" and result["model"] == "simplecnn"
    assert result["n_train_crops"] == 64 and result["batch_size"] == 32
    epoch_s = result["epoch_s_median_with_validation"]
    assert 0 < result["train_s_per_epoch_median"] <= epoch_s
    assert result["ms_per_step"] == pytest.approx(1000 * result["train_s_per_epoch_median"] / 2)
    assert result["images_per_s"] == pytest.approx(64 / result["train_s_per_epoch_median"])
    # Five folds one after another, 100 epochs each.
    assert result["projected_5x100_s"] == pytest.approx(500 * epoch_s)
    assert result["wall_s"] >= result["warmup_s"] > 0
    # The whole command's wall time (process start-up included) is at least the timed part.
    assert result["command_wall_s"] >= result["wall_s"]
    assert "projection" in result["projection_note"]


def test_command_wall_time_counts_from_process_start(monkeypatch):
    import time

    from painmon.core.tools import bench_train as module

    first = module.command_wall_s()
    time.sleep(0.05)
    assert module.command_wall_s() >= first + 0.04
    # Without /proc the time since the module was imported stands in.
    monkeypatch.setattr(module, "Path", lambda *_: (_ for _ in ()).throw(OSError("no /proc")))
    assert 0 < module.command_wall_s() <= time.perf_counter() - module._IMPORTED_AT + 1e-3


@pytest.mark.parametrize("engine", ["stacked", "stacked-bmm"])
def test_bench_train_times_a_stacked_run_per_member(engine):
    result = bench_train(device="cpu", n_crops=64, batch_size=32, epochs=1, augment="none",
                         model="micropainnet", engine=engine, members=2)  # fmt: skip
    assert result["engine"] == engine and result["members"] == 2
    assert result["deterministic"] is True  # as the training commands run by default
    assert result["cuda_graph"] is False  # no CUDA here: eager steps
    train_s = result["train_s_per_epoch_median"]
    assert 0 < train_s <= result["epoch_s_median_with_validation"]
    assert result["ms_per_step"] == pytest.approx(1000 * train_s / 2)
    assert result["ms_per_member_step"] == pytest.approx(result["ms_per_step"] / 2)
    assert result["images_per_s"] == pytest.approx(2 * 64 / train_s)
    # Two of the five folds advance together: three rounds of 100 epochs.
    assert result["projected_5x100_s"] == pytest.approx(
        300 * result["epoch_s_median_with_validation"]
    )


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"jobs": 0}, {"n_crops": 16, "batch_size": 32},
                                    {"members": 0, "engine": "stacked"}])  # fmt: skip
def test_bench_train_refuses_settings_that_time_nothing(kwargs):
    with pytest.raises(InvalidInputError, match="at least one batch"):
        bench_train(device="cpu", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"engine": "threads"}, "engine must be"), ({"engine": "stacked", "jobs": 2}, "jobs 1")],
)
def test_bench_train_refuses_a_bad_engine(kwargs, words):
    with pytest.raises(InvalidInputError, match=words):
        bench_train(device="cpu", **kwargs)
