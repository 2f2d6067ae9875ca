"""The crop cache frames by stable landmarks when it can, and keys its entries by framing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from painmon.core.live.crop import FRAMING_BOX, FRAMING_STABLE, FRAMING_STABLE_2
from painmon.core.live.face_detect import FaceBox
from painmon.core.research.crops import build_crop_set
from painmon.core.research.datasets import Sample


class MeshDetector:
    """Fake landmarker: a face mesh scaled to the image, with box and eye line."""

    name = "fake-mesh"

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        return [box for box, _, _ in self.detect_with_landmarks(rgb)]

    def detect_with_landmarks(self, rgb: np.ndarray):
        self.calls += 1
        height, width = rgb.shape[:2]
        rng = np.random.default_rng(0)
        points = np.column_stack(
            [rng.uniform(0.3, 0.7, 478) * width, rng.uniform(0.25, 0.75, 478) * height]
        ).astype(np.float32)
        corners = [(0.38, 0.45), (0.46, 0.45), (0.54, 0.45), (0.62, 0.45)]
        points[[33, 133, 362, 263]] = np.array(corners) * (width, height)
        points[[127, 356]] = np.array([(0.3, 0.46), (0.7, 0.46)]) * (width, height)
        box = FaceBox(0.3 * width, 0.25 * height, 0.4 * width, 0.5 * height, 0.9)
        eye_line = ((0.42 * width, 0.45 * height), (0.58 * width, 0.45 * height))
        return [(box, eye_line, points)]

    def close(self) -> None:
        pass


class BoxOnlyDetector:
    """Haar-like: boxes only, no landmarks and no eye line."""

    name = "fake-box"

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        return MeshDetector().detect(rgb)

    def close(self) -> None:
        pass


@pytest.fixture
def samples(tmp_path) -> list[Sample]:
    rng = np.random.default_rng(1)
    folder = tmp_path / "data"
    folder.mkdir()
    out = []
    for i in range(3):
        path = folder / f"face{i}.png"
        assert cv2.imwrite(str(path), rng.integers(0, 256, (120, 100, 3), dtype=np.uint8))
        out.append(Sample(path, f"p{i}", i % 5))
    return out


def _entries(cache: Path) -> set[str]:
    return {p.name for p in cache.rglob("*.npy")}


def test_cache_uses_stable_framing_with_landmarks_and_keys_it_apart(tmp_path, samples):
    cache = tmp_path / "cache"
    stable, _ = build_crop_set(samples, cache, detector=MeshDetector(), progress=False)
    assert stable.preprocessing["framing"] == FRAMING_STABLE_2  # new crop sets: version 2
    assert stable.preprocessing["framing_params"]["side_scale"] > 0
    after_stable = _entries(cache)

    # Version 1 (temple-centred) crops are keyed apart from version 2's and differ.
    version1, _ = build_crop_set(
        samples, cache, detector=MeshDetector(), progress=False, framing=FRAMING_STABLE
    )
    assert version1.preprocessing["framing"] == FRAMING_STABLE
    assert len(_entries(cache)) == 2 * len(after_stable)
    assert not np.array_equal(version1.images, stable.images)
    before_box = len(_entries(cache))

    boxed, _ = build_crop_set(
        samples, cache, detector=MeshDetector(), progress=False, framing=FRAMING_BOX
    )
    assert boxed.preprocessing["framing"] == FRAMING_BOX
    assert "framing_params" not in boxed.preprocessing
    assert len(_entries(cache)) == before_box + len(samples)  # new keys: no stale crops reused
    assert not np.array_equal(boxed.images, stable.images)

    rerun = MeshDetector()
    again, report = build_crop_set(samples, cache, detector=rerun, progress=False)
    assert rerun.calls == 0 and report.cache_hits == len(samples)
    np.testing.assert_array_equal(again.images, stable.images)


def test_cache_without_landmarks_keeps_box_framing(tmp_path, samples):
    crops, _ = build_crop_set(
        samples, tmp_path / "cache", detector=BoxOnlyDetector(), progress=False
    )
    assert crops.preprocessing["framing"] == FRAMING_BOX
    assert crops.preprocessing["eye_alignment"] is False
    with pytest.raises(ValueError, match="framing"):
        build_crop_set(samples, tmp_path / "c2", detector=MeshDetector(), framing="zoom")


def test_painmon_crops_frames_by_version_2_unless_told(tmp_path, face_model_path, monkeypatch):
    """The default is the shipped demo model's framing; `--framing stable-landmarks` still
    rebuilds the previous demo model's crops."""
    from painmon.core.research.crops import CropSet
    from painmon.core.synth.dataset import write_dataset
    from painmon.core.tools.cli import main as cli_main

    monkeypatch.setenv("PAINMON_FACE_MODEL", str(face_model_path))
    manifest = write_dataset(tmp_path / "ds", 2, 2, seed=5, image_size_px=160)
    made = {}
    for framing in (None, FRAMING_STABLE):
        out = tmp_path / f"crops-{framing}.npz"
        args = ["crops", "--manifest", str(manifest), "--out", str(out),
                "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
        assert cli_main(args + ([] if framing is None else ["--framing", framing])) == 0
        made[framing], _ = CropSet.load_npz(out)
    assert made[None].preprocessing["framing"] == FRAMING_STABLE_2
    assert made[FRAMING_STABLE].preprocessing["framing"] == FRAMING_STABLE
    assert not np.array_equal(made[None].images, made[FRAMING_STABLE].images)
