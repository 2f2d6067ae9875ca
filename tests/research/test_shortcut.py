"""The outer-ring probe: chance when the border carries no label, high when it does."""

from __future__ import annotations

import numpy as np
import pytest

from painmon.core.research.shortcut import main, ring_features, ring_mask, ring_probe


def _crops(label_in_ring: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"p{i:02d}" for i in range(15)], 20)
    labels = np.tile(np.arange(5), 60)
    images = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
    images[:, 4:12, 4:12] = (labels * 50)[:, None, None, None]  # the label, inside only
    if label_in_ring:
        ring = ring_mask(16, 4)
        images[:, ring] = np.clip(images[:, ring] // 16 + (labels * 45)[:, None, None], 0, 255)
    return images, labels, subjects


def test_ring_features_see_only_the_border():
    assert ring_mask(16, 4).sum() == 16 * 16 - 8 * 8
    images, _, _ = _crops(False)
    assert ring_features(images).shape == (len(images), (256 - 64) * 3)


def test_probe_is_at_chance_when_the_ring_carries_no_label():
    result = ring_probe(*_crops(False), folds=5)
    assert result.chance == pytest.approx(0.2)
    assert result.n_scored == 300
    assert result.accuracy < 0.32


def test_probe_reads_a_label_carried_by_the_ring():
    result = ring_probe(*_crops(True), folds=5)
    assert result.accuracy > 0.9


def test_probe_cli_prints_the_accuracy(tmp_path, capsys):
    from painmon.core.research.crops import CropSet

    images, labels, subjects = _crops(True)
    path = CropSet(images, labels, subjects, ("x",) * len(labels), (None,) * len(labels)).save_npz(
        tmp_path / "crops.npz", "0" * 64
    )
    assert main(["--crops", str(path)]) == 0
    assert float(capsys.readouterr().out.strip()) > 0.9
