"""The stacked engine writes each member's history.csv every epoch, as fit() does: a run that
dies mid-way leaves the epochs it finished."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from painmon.core.research import stacked
from painmon.core.research.stacked import StackedMember, fit_stacked
from painmon.core.research.train import HISTORY_COLUMNS, TrainConfig


class _CrashError(RuntimeError):
    """Stands in for anything that kills a run mid-way (a CUDA error, an out-of-memory)."""


def _members(toy_crops, tmp_path):
    members = []
    for i, seed in enumerate((1, 2)):
        x_tr, y_tr = toy_crops(8 + 4 * i, seed)
        x_va, y_va = toy_crops(10 + 5 * i, 10 + seed)
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


def _rows(member: StackedMember) -> list[dict[str, str]]:
    with (member.out_dir / "history.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("finished", [1, 2])
def test_a_run_killed_mid_way_keeps_each_members_finished_epochs(
    toy_crops, tmp_path, monkeypatch, finished
):
    real = stacked._StackedTrainer.train_epoch
    seen: list[list[int]] = []

    def dies_after(self, epoch):
        # What is on disk when the next epoch starts: written before the end, not at it.
        seen.append([len(_rows(m)) if (m.out_dir / "history.csv").exists() else 0
                     for m in self.members])  # fmt: skip
        if epoch > finished:
            raise _CrashError(f"killed in epoch {epoch}")
        return real(self, epoch)

    monkeypatch.setattr(stacked._StackedTrainer, "train_epoch", dies_after)
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
    real_epoch = stacked._StackedTrainer.train_epoch

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
    monkeypatch.setattr(stacked._StackedTrainer, "train_epoch", dies_in_epoch_4)
    cfg = TrainConfig(model="micropainnet", epochs=5, warmup_epochs=1, batch_size=4,
                      device="cpu", augment="none", patience=1)  # fmt: skip
    stuck, other = _members(toy_crops, tmp_path)
    with pytest.raises(_CrashError):
        fit_stacked(cfg, [stuck, other], progress=False)
    assert [int(r["epoch"]) for r in _rows(stuck)] == [1, 2]
    assert len(_rows(other)) == 3
