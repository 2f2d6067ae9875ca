"""Dataset face crops: a cache of crops made once per source file, frame and preprocessing.

Faces are detected and cropped once per (source file content, frame, preprocessing)
and stored as ``.npy`` files (never pickle) under a cache folder, so training runs
and reruns read uint8 arrays without touching a detector.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import stat
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from painmon.core.live.crop import (
    DEFAULT_MARGIN,
    DEFAULT_SIZE_PX,
    FRAMING_BOX,
    FRAMING_STABLE_2,
    FRAMINGS,
    STABLE_FRAMINGS,
    CropSpec,
    crop_for_model,
    stable_framing_meta,
)
from painmon.core.live.face_detect import FaceBox, FaceDetector
from painmon.core.research.datasets import Sample, check_subject_spellings
from painmon.core.util.errors import PainmonError
from painmon.core.util.fileio import atomic_write, sha256_file
from painmon.core.util.progress import progress_bar
from painmon.core.util.validate import is_sha256_hex

log = logging.getLogger(__name__)

# Bump when crop_face's geometry changes: old cache entries then stop matching.
CROP_ALGORITHM_VERSION = 1
CROPS_NPZ_FORMAT = "painmon-crops-v1"


class CropError(PainmonError, RuntimeError):
    """No usable face crop could be made from a dataset."""


@dataclass(frozen=True)
class SkippedSample:
    """A sample that gave no crop, and why."""

    path: str
    frame_index: int | None
    reason: str

    def describe(self) -> str:
        where = self.path if self.frame_index is None else f"{self.path}#frame{self.frame_index}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class CropReport:
    """What building a crop set did: cache hits, detections, and every skipped sample."""

    total: int
    cropped: int
    cache_hits: int
    detections: int
    skipped: tuple[SkippedSample, ...] = ()
    detector: str = ""

    def __post_init__(self) -> None:
        if self.cropped + len(self.skipped) != self.total:
            raise ValueError("crop report: cropped + skipped must equal total")
        if min(self.total, self.cropped, self.cache_hits, self.detections) < 0:
            raise ValueError("crop report counts must be >= 0")

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)

    def to_text(self, max_listed: int = 20) -> str:
        """Readable summary: counts, then the skipped samples (first ``max_listed``)."""
        lines = [
            f"face crops: {self.cropped} of {self.total} samples cropped, "
            f"{self.skipped_count} skipped; {self.cache_hits} from cache, "
            f"{self.detections} detector calls ({self.detector or 'no detector'})"
        ]
        for skipped in self.skipped[:max_listed]:
            lines.append(f"  skipped {skipped.describe()}")
        if self.skipped_count > max_listed:
            lines.append(f"  ... and {self.skipped_count - max_listed} more")
        return "\n".join(lines)


def crop_data_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 over crop pixels and labels (shape-aware), identifying a training set's data."""
    digest = hashlib.sha256()
    digest.update(repr((images.shape, labels.shape)).encode())
    digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CropSet:
    """Face crops of a dataset: RGB uint8 images (N, S, S, 3) with labels, subjects and sources."""

    images: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray
    paths: tuple[str, ...]
    frame_indices: tuple[int | None, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    data_sha256: str = ""

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(
                f"crop images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}"
            )
        if images.shape[1] != images.shape[2]:
            raise ValueError(f"crop images must be square, got {images.shape[1]}x{images.shape[2]}")
        count = images.shape[0]
        labels = np.asarray(self.labels, dtype=np.int64)
        subjects = np.asarray(self.subjects, dtype=str)
        if labels.shape != (count,) or subjects.shape != (count,):
            raise ValueError(
                f"labels {labels.shape} and subjects {subjects.shape} must be ({count},)"
            )
        if len(self.paths) != count or len(self.frame_indices) != count:
            raise ValueError("paths and frame_indices need one entry per image")
        if count and (labels.min() < 0 or labels.max() > 4):
            raise ValueError("crop labels must lie in 0..4")
        expected = crop_data_sha256(images, labels)
        if self.data_sha256 and self.data_sha256 != expected:
            raise ValueError("data_sha256 does not match the crops and labels")
        for array in (images, labels, subjects):
            array.setflags(write=False)  # frozen-ish: shared arrays must not change under a hash
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "subjects", subjects)
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        object.__setattr__(self, "frame_indices", tuple(self.frame_indices))
        object.__setattr__(self, "data_sha256", expected)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> np.ndarray:
        """Samples per class 0..4."""
        return np.bincount(self.labels, minlength=5)

    def save_npz(self, path: str | Path, dataset_sha256: str = "") -> Path:
        """One portable file (no pickle): detect faces on one machine, train on another."""
        frames = np.array([-1 if f is None else f for f in self.frame_indices], dtype=np.int64)
        meta = {
            "format": CROPS_NPZ_FORMAT,
            "preprocessing": self.preprocessing,
            "data_sha256": self.data_sha256,
            "dataset_sha256": dataset_sha256,
        }
        arrays = {
            "images": self.images,
            "labels": self.labels,
            "subjects": self.subjects.astype(str),
            "paths": np.asarray(self.paths, dtype=str),
            "frame_indices": frames,
            "meta_json": np.asarray(json.dumps(meta)),
        }
        return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)

    def as_samples(self) -> list[Sample]:
        """One :class:`Sample` per crop (path, subject, label, frame): enough to plan splits."""
        return [
            Sample(Path(path), str(subject), int(label), frame_index=frame)
            for path, subject, label, frame in zip(
                self.paths, self.subjects.tolist(), self.labels.tolist(), self.frame_indices,
                strict=True,
            )
        ]  # fmt: skip

    @classmethod
    def load_npz(cls, path: str | Path) -> tuple[CropSet, str]:
        """Read :meth:`save_npz` output; returns the crops and the dataset hash they came from.

        Anything but a whole, well-formed crops file raises :class:`CropError` naming the file
        and what is wrong with it.
        """
        path = Path(path)
        try:
            with path.open("rb") as handle:
                magic = handle.read(6)
            if magic.startswith(b"\x93NUMPY"):
                raise CropError(
                    f"{path} is a single .npy array, not a painmon crops file; make one with "
                    "`painmon crops`"
                )
            if not magic.startswith(b"PK"):
                raise CropError(
                    f"{path} is not a painmon crops file (not a .npz zip archive); make one "
                    "with `painmon crops`"
                )
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in _NPZ_KEYS if key in data.files}
        except CropError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise CropError(
                f"cannot read crops file {path} ({type(exc).__name__}: {exc}); is it a whole "
                "file from `painmon crops`? Rebuild it with `painmon crops`"
            ) from exc
        try:
            crops, dataset_sha = _crops_from_arrays(cls, arrays)
        except (CropError, ValueError) as exc:
            raise CropError(
                f"crops file {path} is malformed: {exc}; rebuild it with `painmon crops`"
            ) from exc
        # A crops file of an older painmon (or a renamed subject) may spell a person twice.
        check_subject_spellings(crops.subjects.tolist(), f"crops file {path}")
        return crops, dataset_sha


_NPZ_KEYS = ("images", "labels", "subjects", "paths", "frame_indices", "meta_json")
# Smaller faces carry no expression a network can read (and no model here takes them).
MIN_CROP_SIZE_PX = 16


def _crops_from_arrays(cls: type[CropSet], arrays: dict[str, np.ndarray]) -> tuple[CropSet, str]:
    """Check each array of a crops file (shape, dtype, agreement) and build the crop set."""
    missing = [key for key in _NPZ_KEYS if key not in arrays]
    if missing:
        raise CropError(f"it lacks {', '.join(missing)}")
    meta_array = arrays["meta_json"]
    if meta_array.shape != () or meta_array.dtype.kind != "U":
        raise CropError(f"meta_json must be one text, got {meta_array.dtype} {meta_array.shape}")
    try:
        meta = json.loads(str(meta_array))
    except json.JSONDecodeError as exc:
        raise CropError(f"meta_json is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CropError(f"meta_json must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != CROPS_NPZ_FORMAT:
        raise CropError(f"not a painmon crops file (format {meta.get('format')!r})")
    preprocessing, data_sha, dataset_sha = (
        meta.get("preprocessing"),
        meta.get("data_sha256"),
        meta.get("dataset_sha256", ""),
    )
    if not isinstance(preprocessing, dict):
        raise CropError(f"preprocessing must be a JSON object, got {type(preprocessing).__name__}")
    for name, value in (("data_sha256", data_sha), ("dataset_sha256", dataset_sha)):
        if not isinstance(value, str) or (value and not is_sha256_hex(value)):
            raise CropError(f"{name} must be a SHA-256 hex digest, got {value!r}")

    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise CropError(
            f"images must be uint8 RGB crops (N, S, S, 3), got {images.dtype} {images.shape}"
        )
    count, height, width = images.shape[:3]
    if count == 0:
        raise CropError("it holds no crops")
    if height != width or height < MIN_CROP_SIZE_PX:
        raise CropError(
            f"crops must be square and at least {MIN_CROP_SIZE_PX} px, got {height}x{width}"
        )
    size_px = preprocessing.get("size_px")
    if size_px is not None and size_px != height:
        raise CropError(f"crops are {height} px but its preprocessing says size_px {size_px!r}")
    for key, kinds, what in (
        ("labels", "iu", "integers"),
        ("frame_indices", "iu", "integers"),
        ("subjects", "U", "texts"),
        ("paths", "U", "texts"),
    ):
        array = arrays[key]
        if array.dtype.kind not in kinds or array.shape != (count,):
            raise CropError(
                f"{key} must be {count} {what} (one per crop), got {array.dtype} {array.shape}"
            )
    labels, frames = arrays["labels"], arrays["frame_indices"]
    if labels.min() < 0 or labels.max() > 4:
        raise CropError(f"labels must lie in 0..4, got {labels.min()}..{labels.max()}")
    if frames.min() < -1:
        raise CropError("frame_indices must be >= 0 (or -1 for a still image)")
    if any(not subject.strip() for subject in arrays["subjects"].tolist()):
        raise CropError("every crop needs a non-empty subject")
    crops = cls(
        images=images,
        labels=labels,
        subjects=arrays["subjects"],
        paths=tuple(arrays["paths"].tolist()),
        frame_indices=tuple(None if f < 0 else int(f) for f in frames.tolist()),
        preprocessing=preprocessing,
        data_sha256=data_sha,
    )
    return crops, dataset_sha


# Face crops identify people: the cache is the user's alone, whatever the umask says.
CACHE_DIR_MODE = 0o700
CACHE_FILE_MODE = 0o600
_CACHE_SUBDIR = re.compile(r"\A[0-9a-f]{2}\Z")


def _private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=CACHE_DIR_MODE)
    if stat.S_IMODE(path.stat().st_mode) != CACHE_DIR_MODE:
        path.chmod(CACHE_DIR_MODE)


def _looks_like_crop_cache(root: Path) -> bool:
    """Whether ``root`` holds only cache shards (``00``..``ff``): a folder painmon may tighten."""
    mode = root.stat().st_mode
    if mode & stat.S_ISVTX:  # a shared sticky folder such as /tmp is never ours to chmod
        return False
    return all(_CACHE_SUBDIR.match(p.name) and p.is_dir() for p in root.iterdir())


def _write_private(path: Path, write: Any) -> None:
    """Write ``path`` atomically as a 0600 file in a 0700 folder (never readable by others)."""
    _private_dir(path.parent)
    atomic_write(path, write, binary=True, mode=CACHE_FILE_MODE)


class _CropCache:
    """Crops on disk as ``<key[:2]>/<key>.npy``; a face-less frame leaves ``<key>.noface``.

    Folders are 0700 and files 0600 (chmod'ed, so the umask cannot widen them); an existing
    cache root is tightened when it holds nothing but cache shards.
    """

    def __init__(self, root: Path, preprocessing: dict[str, Any]) -> None:
        self.root = root
        self.preprocessing_json = json.dumps(preprocessing, sort_keys=True)
        self.shape = (preprocessing["size_px"], preprocessing["size_px"], 3)
        if not root.exists():
            _private_dir(root)
        elif root.is_dir() and stat.S_IMODE(root.stat().st_mode) != CACHE_DIR_MODE:
            if _looks_like_crop_cache(root):
                root.chmod(CACHE_DIR_MODE)
            else:
                log.warning(
                    "crop cache folder %s is shared with other files and stays mode %o; "
                    "face crops identify people: give --cache-dir a folder of its own",
                    root,
                    stat.S_IMODE(root.stat().st_mode),
                )

    def key(self, file_sha256: str, frame_index: int | None) -> str:
        text = f"{file_sha256}|{frame_index}|{self.preprocessing_json}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, key: str) -> np.ndarray | str | None:
        """The cached crop, the cached no-face reason, or None on a miss."""
        crop_path = self._path(key, ".npy")
        if crop_path.is_file():
            try:
                crop = np.load(crop_path, allow_pickle=False)
                if crop.dtype == np.uint8 and crop.shape == self.shape:
                    return crop
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable crop cache entry %s (%s)", crop_path, exc)
            else:
                log.warning("ignoring crop cache entry %s with wrong shape/dtype", crop_path)
        noface_path = self._path(key, ".noface")
        if noface_path.is_file():
            return noface_path.read_text(encoding="utf-8").strip() or "no face found"
        return None

    def put_crop(self, key: str, crop: np.ndarray) -> None:
        _write_private(self._path(key, ".npy"), lambda f: np.save(f, crop, allow_pickle=False))

    def put_noface(self, key: str, reason: str) -> None:
        _write_private(self._path(key, ".noface"), lambda f: f.write(reason.encode("utf-8")))


def _read_image_rgb(path: Path) -> np.ndarray | None:
    data = np.fromfile(path, dtype=np.uint8)  # fromfile+imdecode copes with non-ASCII paths
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_video_frames_rgb(path: Path, frame_indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Decode the wanted frames by reading forward (seeking is unreliable in many mp4 files)."""
    wanted = set(frame_indices)
    frames: dict[int, np.ndarray] = {}
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return frames
        last = max(wanted)
        for index in range(last + 1):
            if not capture.grab():
                break
            if index in wanted:
                ok, bgr = capture.retrieve()
                if ok and bgr is not None:
                    frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    return frames


def build_crop_set(
    samples: Sequence[Sample],
    cache_dir: str | Path,
    detector: FaceDetector | None = None,
    size_px: int = DEFAULT_SIZE_PX,
    margin: float = DEFAULT_MARGIN,
    progress: bool = True,
    framing: str = FRAMING_STABLE_2,
) -> tuple[CropSet, CropReport]:
    """Detect, crop and cache every sample's face once; later runs read the cache only.

    The largest detected face is cropped with :func:`crop_for_model`: stable-landmark
    framing when ``framing`` asks for it and the detector gives landmarks
    (``detect_with_landmarks``), else the box plus ``margin`` (eyes levelled when the
    detector gives an eye line); ``preprocessing["framing"]`` records which. A face whose
    landmarks are unusable is skipped rather than framed otherwise. Unreadable files,
    missing video frames and face-less frames are skipped and listed in the report;
    only a dataset where every sample fails raises :class:`CropError`. The default
    detector is ``create_crop_detector()``: the Face Landmarker's landmark box (the live
    tracker's framing, so training and bedside crops match) when its bundle is found,
    else Haar.
    """
    if not samples:
        raise CropError("no samples to crop: the dataset is empty")
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    own_detector = detector is None
    if detector is None:
        from painmon.core.live.face import create_crop_detector

        active = create_crop_detector()
    else:
        active = detector
    preprocessing: dict[str, Any] = {
        "size_px": int(size_px),
        "margin": float(margin),
        "detector": str(active.name),
        "face_choice": "largest",
        "eye_alignment": hasattr(active, "detect_with_eyes"),
        "color": "RGB",
        "resize": "INTER_AREA",
        "crop_version": CROP_ALGORITHM_VERSION,
    }
    # The framing is part of the cache key (preprocessing JSON): old crops never match.
    if framing in STABLE_FRAMINGS and hasattr(active, "detect_with_landmarks"):
        preprocessing.update(stable_framing_meta(framing=framing))
    else:
        preprocessing["framing"] = FRAMING_BOX
    spec = CropSpec.from_meta(preprocessing)
    cache = _CropCache(Path(cache_dir), preprocessing)
    by_path: dict[Path, list[int]] = defaultdict(list)
    for position, sample in enumerate(samples):
        by_path[sample.path].append(position)

    crops: list[np.ndarray | None] = [None] * len(samples)
    reasons: dict[int, str] = {}
    cache_hits = detections = 0
    try:
        with progress_bar(
            total=len(samples), desc="face crops", unit="sample", enabled=progress
        ) as bar:
            for path, positions in by_path.items():
                try:
                    file_sha = sha256_file(path)
                except OSError as exc:
                    for position in positions:
                        reasons[position] = f"unreadable file ({exc.strerror or exc})"
                    bar.update(len(positions))
                    continue
                keys = {p: cache.key(file_sha, samples[p].frame_index) for p in positions}
                misses = []
                for position in positions:
                    cached = cache.get(keys[position])
                    if cached is None:
                        misses.append(position)
                    else:
                        cache_hits += 1
                        if isinstance(cached, str):
                            reasons[position] = cached
                        else:
                            crops[position] = cached
                if misses:
                    detections += _crop_misses(
                        path, misses, samples, keys, cache, active, size_px, spec, crops, reasons
                    )
                bar.update(len(positions))
            if all(crop is None for crop in crops):
                bar.leave = False  # no "done" line above the error that follows
    finally:
        if own_detector:
            active.close()

    kept = [i for i, crop in enumerate(crops) if crop is not None]
    skipped = tuple(
        SkippedSample(str(samples[i].path), samples[i].frame_index, reasons.get(i, "no crop"))
        for i in range(len(samples))
        if crops[i] is None
    )
    report = CropReport(len(samples), len(kept), cache_hits, detections, skipped, active.name)
    if not kept:
        listed = "; ".join(s.describe() for s in skipped[:3])
        raise CropError(
            f"no face crop could be made from any of the {len(samples)} samples "
            f"(e.g. {listed}). Check the dataset path, file formats and the face detector."
        )
    if skipped:
        log.warning("%d of %d samples skipped while cropping faces", len(skipped), len(samples))
    images = np.stack([crops[i] for i in kept]).astype(np.uint8, copy=False)
    labels = np.array([samples[i].label for i in kept], dtype=np.int64)
    crop_set = CropSet(
        images=images,
        labels=labels,
        subjects=np.array([samples[i].subject for i in kept], dtype=str),
        paths=tuple(str(samples[i].path) for i in kept),
        frame_indices=tuple(samples[i].frame_index for i in kept),
        preprocessing=preprocessing,
        data_sha256=crop_data_sha256(images, labels),
    )
    return crop_set, report


def _detect_faces(
    detector: FaceDetector, image: np.ndarray
) -> list[tuple[FaceBox, Any, np.ndarray | None]]:
    """(box, eye line, landmarks) per face; None where the detector does not give them."""
    with_landmarks = getattr(detector, "detect_with_landmarks", None)
    if with_landmarks is not None:
        return list(with_landmarks(image))
    with_eyes = getattr(detector, "detect_with_eyes", None)
    if with_eyes is not None:
        return [(box, eye_line, None) for box, eye_line in with_eyes(image)]
    return [(box, None, None) for box in detector.detect(image)]


def _crop_misses(
    path: Path,
    positions: list[int],
    samples: Sequence[Sample],
    keys: dict[int, str],
    cache: _CropCache,
    detector: FaceDetector,
    size_px: int,
    spec: CropSpec,
    crops: list[np.ndarray | None],
    reasons: dict[int, str],
) -> int:
    """Decode, detect and crop the cache misses of one source file; returns detector calls."""
    frame_positions = [p for p in positions if samples[p].frame_index is not None]
    still_positions = [p for p in positions if samples[p].frame_index is None]
    images: dict[int, np.ndarray | None] = {}
    if still_positions:
        image = _read_image_rgb(path)
        for position in still_positions:
            images[position] = image
            if image is None:
                reasons[position] = "unreadable image (not a decodable picture)"
    if frame_positions:
        wanted = [samples[p].frame_index for p in frame_positions]
        frames = _read_video_frames_rgb(path, [w for w in wanted if w is not None])
        for position in frame_positions:
            frame_index = samples[position].frame_index
            images[position] = frames.get(frame_index) if frame_index is not None else None
            if images[position] is None:
                reasons[position] = (
                    f"unreadable video or no frame {frame_index} (video gave {len(frames)} "
                    "of the wanted frames)"
                )
    calls = 0
    for position, image in images.items():
        if image is None:
            continue
        calls += 1
        faces = _detect_faces(detector, image)
        if not faces:
            reason = f"no face found by {detector.name}"
            reasons[position] = reason
            cache.put_noface(keys[position], reason)
            continue
        largest, eye_line, landmarks = max(faces, key=lambda face: face[0].area)
        try:
            result = crop_for_model(image, largest, landmarks, eye_line, spec, size_px)
        except ValueError as exc:
            reasons[position] = f"face could not be cropped ({exc})"
            continue
        if result.fell_back:
            # A box-framed crop in a stable-framed set would teach the box shortcut again.
            reason = "face found but its landmarks cannot frame it (stable framing)"
            reasons[position] = reason
            cache.put_noface(keys[position], reason)
            continue
        cache.put_crop(keys[position], result.image)
        crops[position] = result.image
    return calls
