"""The dataset crop cache: detect once, reuse, report failures."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from painmon.core.live.face_detect import FaceBox
from painmon.core.research.crops import CropError, CropReport, CropSet, build_crop_set
from painmon.core.research.datasets import Sample


class CountingDetector:
    """Fake detector: a centred 'face' in any image brighter than black; counts calls."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0
        self.means: list[float] = []

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        self.calls += 1
        self.means.append(float(rgb.mean()))
        if rgb.mean() < 5:
            return []
        height, width = rgb.shape[:2]
        small = FaceBox(0, 0, width / 8, height / 8, 0.6)
        large = FaceBox(width / 4, height / 4, width / 2, height / 2, 0.9)
        return [small, large]  # deliberately not sorted: the largest must still win

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def face_rgb(shared_file) -> np.ndarray:
    bgr = cv2.imread(str(shared_file("media/single_face.jpg")))
    return cv2.cvtColor(
        cv2.resize(bgr, (200, 196), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
    )


def _write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _write_graded_video(path: Path, frame_count: int = 40, fps: float = 25.0) -> Path:
    """mp4v clip whose frame i is a uniform grey of level 40 + 4*i (so frames can be told apart)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 64))
    assert writer.isOpened()
    for index in range(frame_count):
        writer.write(np.full((64, 64, 3), 40 + 4 * index, dtype=np.uint8))
    writer.release()
    return path


# ---- build_crop_set --------------------------------------------------------------------


@pytest.fixture
def mixed_samples(tmp_path, face_rgb) -> list[Sample]:
    folder = tmp_path / "data"
    faces = [
        _write_rgb(folder / f"face{i}.png", np.roll(face_rgb, 3 * i, axis=1)) for i in range(3)
    ]
    black = _write_rgb(folder / "black.png", np.zeros((60, 60, 3), dtype=np.uint8))
    broken = folder / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    video = _write_graded_video(folder / "clip.mp4")
    return [
        Sample(faces[0], "p1", 0, 0.0, "manifest"),
        Sample(faces[1], "p1", 2, 3.0, "manifest"),
        Sample(faces[2], "p2", 4, None, "manifest"),
        Sample(black, "p2", 1, None, "manifest"),
        Sample(broken, "p3", 1, None, "manifest"),
        Sample(video, "p3", 3, None, "biovid", frame_index=5),
        Sample(video, "p3", 3, None, "biovid", frame_index=30),
    ]


def test_build_crop_set_detects_once_then_reads_the_cache(tmp_path, mixed_samples):
    cache = tmp_path / "cache"
    detector = CountingDetector()
    crop_set, report = build_crop_set(mixed_samples, cache, detector=detector, progress=False)
    # 3 faces + black image + 2 video frames; the broken file never reaches the detector.
    assert detector.calls == 6
    assert (report.total, report.cropped, report.detections, report.cache_hits) == (7, 5, 6, 0)
    assert len(crop_set) == 5
    assert crop_set.images.shape == (5, 64, 64, 3) and crop_set.images.dtype == np.uint8
    assert crop_set.labels.dtype == np.int64 and crop_set.labels.tolist() == [0, 2, 4, 3, 3]
    assert crop_set.subjects.tolist() == ["p1", "p1", "p2", "p3", "p3"]
    assert crop_set.frame_indices == (None, None, None, 5, 30)
    assert crop_set.preprocessing["detector"] == "fake" and crop_set.preprocessing["size_px"] == 64
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"black.png", "broken.png"}
    assert "no face" in reasons["black.png"] and "unreadable" in reasons["broken.png"]
    text = report.to_text()
    assert "5 of 7" in text and "black.png" in text and "broken.png" in text

    # Cache entries are plain .npy (no pickle), written atomically (no temp files left).
    entries = sorted(cache.rglob("*.npy"))
    assert len(entries) == 5
    assert np.load(entries[0], allow_pickle=False).shape == (64, 64, 3)
    assert not list(cache.rglob("*.tmp"))

    rerun = CountingDetector()
    again, report2 = build_crop_set(mixed_samples, cache, detector=rerun, progress=True)
    assert rerun.calls == 0
    assert (report2.cropped, report2.cache_hits, report2.detections) == (5, 6, 0)
    assert again.data_sha256 == crop_set.data_sha256
    np.testing.assert_array_equal(again.images, crop_set.images)
    assert {Path(s.path).name for s in report2.skipped} == {"black.png", "broken.png"}


def test_cache_key_follows_preprocessing_and_file_content(tmp_path, mixed_samples):
    cache = tmp_path / "cache"
    faces = mixed_samples[:2]
    build_crop_set(faces, cache, detector=CountingDetector(), progress=False)
    other_size = CountingDetector()
    small, _ = build_crop_set(faces, cache, detector=other_size, size_px=32, progress=False)
    assert other_size.calls == 2 and small.images.shape == (2, 32, 32, 3)
    other_margin = CountingDetector()
    build_crop_set(faces, cache, detector=other_margin, margin=0.4, progress=False)
    assert other_margin.calls == 2
    # New content under the same file name is a new key.
    _write_rgb(faces[0].path, np.full((50, 50, 3), 90, dtype=np.uint8))
    changed = CountingDetector()
    build_crop_set(faces, cache, detector=changed, progress=False)
    assert changed.calls == 1


def test_video_frames_are_the_requested_ones(tmp_path):
    video = _write_graded_video(tmp_path / "graded.mp4")
    samples = [Sample(video, "s", 0, None, "biovid", frame_index=i) for i in (2, 17, 33)]
    detector = CountingDetector()
    _, report = build_crop_set(samples, tmp_path / "cache", detector=detector, progress=False)
    assert report.cropped == 3
    assert detector.means == pytest.approx([40 + 4 * 2, 40 + 4 * 17, 40 + 4 * 33], abs=3)
    past_end = [Sample(video, "s", 0, None, "biovid", frame_index=i) for i in (1, 500)]
    _, report = build_crop_set(
        past_end, tmp_path / "cache", detector=CountingDetector(), progress=False
    )
    assert report.cropped == 1
    assert "no frame 500" in report.skipped[0].reason


def test_all_failing_raises_with_a_clear_message(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x00\x01")
    missing = Sample(tmp_path / "gone.png", "p", 0, None, "manifest")
    with pytest.raises(CropError, match=r"no face crop could be made from any of the 2 samples"):
        build_crop_set(
            [Sample(broken, "p", 0, None, "manifest"), missing],
            tmp_path / "cache",
            detector=CountingDetector(),
            progress=False,
        )
    with pytest.raises(CropError, match="empty"):
        build_crop_set([], tmp_path / "cache", detector=CountingDetector(), progress=False)


def test_default_detector_finds_the_real_face(tmp_path, face_rgb):
    image = _write_rgb(tmp_path / "face.png", face_rgb)
    crop_set, report = build_crop_set(
        [Sample(image, "p", 1, 1.0, "manifest")], tmp_path / "cache", progress=False
    )
    # The Face Landmarker ships with painmon: dataset crops are framed as the live tracker's.
    assert report.cropped == 1 and report.detector == "mediapipe-landmarker"
    # The crop is a face-sized patch of the photo, not the whole frame squashed.
    assert crop_set.images.shape == (1, 64, 64, 3)
    assert crop_set.images.std() > 20


def test_crop_set_and_report_validate():
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    crop_set = CropSet(images, [0, 4], ["a", "b"], ("x", "y"), (None, 3))
    assert len(crop_set) == 2 and len(crop_set.data_sha256) == 64
    assert crop_set.class_counts().tolist() == [1, 0, 0, 0, 1]
    with pytest.raises(ValueError):
        crop_set.images[0, 0, 0, 0] = 1  # read-only: the hash must stay true
    with pytest.raises(ValueError, match="does not match"):
        CropSet(images, [0, 4], ["a", "b"], ("x", "y"), (None, 3), data_sha256="0" * 64)
    with pytest.raises(ValueError, match="uint8"):
        CropSet(images.astype(np.float32), [0, 4], ["a", "b"], ("x", "y"), (None, 3))
    with pytest.raises(ValueError, match=r"0\.\.4"):
        CropSet(images, [0, 5], ["a", "b"], ("x", "y"), (None, 3))
    with pytest.raises(ValueError, match="total"):
        CropReport(total=3, cropped=1, cache_hits=0, detections=1)


def test_corrupt_cache_entry_is_recomputed(tmp_path, mixed_samples):
    cache = tmp_path / "cache"
    face = mixed_samples[:1]
    build_crop_set(face, cache, detector=CountingDetector(), progress=False)
    (entry,) = cache.rglob("*.npy")
    entry.write_bytes(entry.read_bytes()[:40])  # a crash mid-copy, say
    detector = CountingDetector()
    crop_set, report = build_crop_set(face, cache, detector=detector, progress=False)
    assert detector.calls == 1 and report.cache_hits == 0 and len(crop_set) == 1
    assert np.load(entry, allow_pickle=False).shape == (64, 64, 3)


# ---- crops.npz files that are not whole, well-formed crops ------------------------------


def _crops_arrays(tmp_path: Path) -> dict[str, np.ndarray]:
    """The arrays of a valid two-crop file, as save_npz writes them."""
    images = np.arange(2 * 64 * 64 * 3, dtype=np.uint64).reshape(2, 64, 64, 3).astype(np.uint8)
    crops = CropSet(images, [0, 4], ["a", "b"], ("x.png", "y.mp4"), (None, 3), {"size_px": 64})
    path = crops.save_npz(tmp_path / "good.npz", dataset_sha256="ab" * 32)
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _meta(arrays: dict[str, np.ndarray], **changes) -> np.ndarray:
    meta = json.loads(str(arrays["meta_json"])) | changes
    return np.asarray(json.dumps(meta))


MALFORMED_NPZ = {
    "meta a list": lambda a: a | {"meta_json": np.asarray("[1, 2]")},
    "meta null": lambda a: a | {"meta_json": np.asarray("null")},
    "meta not JSON": lambda a: a | {"meta_json": np.asarray("{oops")},
    "meta not text": lambda a: a | {"meta_json": np.zeros(3)},
    "preprocessing a list": lambda a: a | {"meta_json": _meta(a, preprocessing=[64])},
    "data hash not hex": lambda a: a | {"meta_json": _meta(a, data_sha256=42)},
    "data hash wrong": lambda a: a | {"meta_json": _meta(a, data_sha256="cd" * 32)},
    "1x1 crops": lambda a: a | {"images": a["images"][:, :1, :1], "meta_json": _meta(
        a, preprocessing={}, data_sha256="")},
    "size_px disagrees": lambda a: a | {"meta_json": _meta(a, preprocessing={"size_px": 32})},
    "2-D images": lambda a: a | {"images": a["images"].reshape(2, -1)},
    "float images": lambda a: a | {"images": a["images"].astype(np.float32)},
    "no crops": lambda a: a | {"images": a["images"][:0], "labels": a["labels"][:0],
                               "subjects": a["subjects"][:0], "paths": a["paths"][:0],
                               "frame_indices": a["frame_indices"][:0]},
    "paths 2-D": lambda a: a | {"paths": np.array([["x", "y"], ["z", "w"]])},
    "paths too few": lambda a: a | {"paths": a["paths"][:1]},
    "labels too many": lambda a: a | {"labels": np.array([0, 1, 2])},
    "labels float": lambda a: a | {"labels": np.array([0.0, 4.7])},
    "labels text": lambda a: a | {"labels": np.array(["0", "4"])},
    "labels out of range": lambda a: a | {"labels": np.array([0, 9])},
    "subjects numbers": lambda a: a | {"subjects": np.array([1, 2])},
    "subject empty": lambda a: a | {"subjects": np.array(["a", " "])},
    "frames float": lambda a: a | {"frame_indices": np.array([-1.0, 3.5])},
    "frames below -1": lambda a: a | {"frame_indices": np.array([-1, -7])},
    "labels missing": lambda a: {k: v for k, v in a.items() if k != "labels"},
    "pickled subjects": lambda a: a | {"subjects": np.array([{"a": 1}, None], dtype=object)},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED_NPZ))
def test_a_malformed_crops_file_is_a_crop_error_naming_it(case, tmp_path):
    arrays = MALFORMED_NPZ[case](_crops_arrays(tmp_path))
    path = tmp_path / "bad.npz"
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(CropError) as err:
        CropSet.load_npz(path)
    message = str(err.value)
    assert str(path) in message and "painmon crops" in message and "\n" not in message


def test_a_file_that_is_not_a_whole_npz_is_a_crop_error(tmp_path):
    _crops_arrays(tmp_path)
    whole = (tmp_path / "good.npz").read_bytes()
    assert len(CropSet.load_npz(tmp_path / "good.npz")[0]) == 2
    for name, data in (
        ("text.npz", b"not a zip at all"),
        ("empty.npz", b""),
        ("truncated.npz", whole[: len(whole) // 2]),
        ("tail_cut.npz", whole[:-30]),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CropError, match="painmon crops"):
            CropSet.load_npz(tmp_path / name)
    # A member whose compressed bytes were damaged in transit.
    damaged = bytearray(whole)
    start = whole.index(b"images.npy") + 200
    damaged[start : start + 64] = bytes(64)
    (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
    with pytest.raises(CropError, match="painmon crops"):
        CropSet.load_npz(tmp_path / "damaged.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(CropError, match=r"single \.npy array"):
        CropSet.load_npz(tmp_path / "single.npy")


# ---- the crop cache is private: face crops identify people ------------------------------


def _cache_modes(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): stat.S_IMODE(p.stat().st_mode) for p in cache.rglob("*")}


def test_crop_cache_folders_are_0700_and_files_0600_whatever_the_umask(tmp_path):
    face = _write_rgb(tmp_path / "face.png", np.full((60, 60, 3), 120, dtype=np.uint8))
    black = _write_rgb(tmp_path / "black.png", np.zeros((60, 60, 3), dtype=np.uint8))
    samples = [Sample(face, "p1", 0, None, "manifest"), Sample(black, "p1", 1, None, "manifest")]
    cache = tmp_path / "deep" / "cache"
    previous = os.umask(0)
    try:
        build_crop_set(samples, cache, detector=CountingDetector(), progress=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    modes = _cache_modes(cache)
    assert sorted(Path(p).suffix for p in modes) == ["", "", ".noface", ".npy"] or (
        sorted(Path(p).suffix for p in modes) == ["", ".noface", ".npy"]
    )
    for name, mode in modes.items():
        assert mode == (0o700 if (cache / name).is_dir() else 0o600), (name, oct(mode))


def test_an_old_open_cache_is_tightened_but_a_shared_folder_is_left_alone(tmp_path, caplog):
    face = _write_rgb(tmp_path / "face.png", np.full((60, 60, 3), 120, dtype=np.uint8))
    samples = [Sample(face, "p1", 0, None, "manifest")]
    old = tmp_path / "old-cache"
    (old / "ab").mkdir(parents=True)
    old.chmod(0o755)
    (old / "ab").chmod(0o755)
    build_crop_set(samples, old, detector=CountingDetector(), progress=False)
    assert stat.S_IMODE(old.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("not a cache")
    shared.chmod(0o755)
    build_crop_set(samples, shared, detector=CountingDetector(), progress=False)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert "give --cache-dir a folder of its own" in caplog.text
    assert all(m in (0o700, 0o600) for n, m in _cache_modes(shared).items() if n != "notes.txt")
