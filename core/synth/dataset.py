"""Synthetic patients, still images: labelled face datasets on disk, and ``painmon synth``.

No pain-labelled real data can ship (UNBC-McMaster and BioVid are licensed), so tests, the demo
and benchmarks draw their own patients: each subject is one identity from
:mod:`painmon.core.synth.render`, each image a pain class from a balanced (or natural, mostly
no-pain) schedule drawn with fresh action units and nuisances, written as a PNG under
``<subject>/`` with a ``manifest.csv`` of its action units, PSPI and class (``MANIFEST_COLUMNS``).
Each image also gets non-pain behaviour (smiles and yawns mostly at no pain; speech, half-blinks,
glances and down-turned mouth corners at every level) and passes through JPEG at a random quality
before it is stored, as a camera or a PACS export would; the manifest keeps the pain ground truth
only, and :func:`sample_spec` says what else was drawn. Nuisances come from a random stream that
never sees the label. Everything is a pure function of the seed. :func:`run_synth_cli`, the back-end
of ``painmon synth``, lives here because it writes datasets and, through
:mod:`painmon.core.synth.stream`, videos.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from painmon.core.synth.render import (
    AU_NAMES,
    NEUTRAL,
    ActionUnits,
    Expression,
    Identity,
    Scene,
    render_face,
    sample_aus_for_class,
    sample_expression,
    sample_identity,
    sample_scene,
)
from painmon.core.synth.stream import _check_positive_int, truth_csv_path, write_video
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.labels import DEFAULT_CLASS_NAMES, NUM_CLASSES, pspi_to_class

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "subject", "pspi", "label", *AU_NAMES)
# Share of a "natural" (unbalanced) pain distribution per class, UNBC-like: mostly no pain.
_NATURAL_CLASS_P = (0.55, 0.15, 0.14, 0.10, 0.06)
# Stored stills pass through JPEG at a quality drawn in this range (webcams, PACS exports).
JPEG_QUALITY_RANGE = (40, 95)
# Face width as a share of ``face_fraction * image size``: 102-166 px in a 256-px still. The
# renderer draws a face differently by its size in pixels (its strokes are whole pixels), so
# stills must show the sizes a camera does: the synthetic videos' faces are 151 px wide, and
# stills of 119-137 px only taught a model to read a 151-px resting face as Mild (issue #11).
FACE_SCALE_RANGE = (0.80, 1.30)


@dataclass(frozen=True)
class SyntheticImage:
    """One rendered training image and its ground truth."""

    rgb: np.ndarray
    aus: ActionUnits
    pspi: int
    label: int
    expression: Expression = field(default=NEUTRAL)
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError("synthetic image must be RGB uint8")
        if self.pspi != self.aus.pspi or self.label != pspi_to_class(self.pspi):
            raise ValueError("PSPI/label disagree with the action units")


def subject_identity(seed: int, subject_index: int) -> Identity:
    """The identity of subject ``subject_index`` of a dataset drawn with ``seed``."""
    return sample_identity(np.random.default_rng([seed, subject_index, 0xFACE]))


def subject_labels(
    seed: int, subject_index: int, n_images: int, balanced: bool = True
) -> list[int]:
    """Target classes of one subject's images: each class equally often (shuffled) when balanced."""
    rng = np.random.default_rng([seed, subject_index, 0xC1A55])
    if balanced:
        labels = np.resize(np.arange(NUM_CLASSES), n_images)
        rng.shuffle(labels)
        return [int(v) for v in labels]
    return [int(v) for v in rng.choice(NUM_CLASSES, size=n_images, p=_NATURAL_CLASS_P)]


@dataclass(frozen=True)
class SampleSpec:
    """Everything drawn for one still before it is rendered: truth, nuisances, framing."""

    aus: ActionUnits
    expression: Expression
    scene: Scene
    face_width_px: float
    center_px: tuple[float, float]
    jpeg_quality: int


def sample_spec(
    seed: int,
    subject_index: int,
    image_index: int,
    label: int,
    image_size_px: int = 256,
    face_fraction: float = 0.5,
) -> SampleSpec:
    """Draw image ``image_index`` of subject ``subject_index`` showing pain class ``label``.

    The pain action units come from their own random stream; light, pose, framing, hand, JPEG
    quality and the label-free parts of the expression from one that never sees the label, so
    the same image index shows the same nuisances whatever its class.
    """
    aus = sample_aus_for_class(np.random.default_rng([seed, subject_index, image_index]), label)
    nuisance = np.random.default_rng([seed, subject_index, image_index, 0x5CE4E])
    scene = sample_scene(nuisance)
    size = int(image_size_px)
    face_w = face_fraction * size * nuisance.uniform(*FACE_SCALE_RANGE)
    center = (
        size / 2 + nuisance.uniform(-0.04, 0.04) * size,
        size * (0.47 + nuisance.uniform(-0.03, 0.03)),
    )
    low, high = JPEG_QUALITY_RANGE
    quality = int(nuisance.integers(low, high + 1))
    expression = sample_expression(nuisance, label)
    return SampleSpec(aus, expression, scene, float(face_w), center, quality)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` as it comes back from a JPEG file of ``quality`` (deterministic for one libjpeg)."""
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a synthetic image")
    return cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def render_sample(
    seed: int,
    subject_index: int,
    image_index: int,
    label: int,
    image_size_px: int = 256,
    face_fraction: float = 0.5,
) -> SyntheticImage:
    """Render image ``image_index`` of subject ``subject_index`` showing pain class ``label``."""
    identity = subject_identity(seed, subject_index)
    spec = sample_spec(seed, subject_index, image_index, label, image_size_px, face_fraction)
    size = int(image_size_px)
    rgb = render_face(
        identity,
        spec.aus,
        spec.scene,
        (size, size),
        spec.face_width_px,
        spec.center_px,
        expression=spec.expression,
    )
    rgb = jpeg_roundtrip(rgb, spec.jpeg_quality)
    aus = spec.aus
    return SyntheticImage(rgb, aus, aus.pspi, aus.label, spec.expression, spec.jpeg_quality)


# --------------------------------------------------------------------------- dataset


def write_dataset(
    out_dir: str | Path,
    n_subjects: int,
    images_per_subject: int,
    seed: int,
    image_size_px: int = 256,
    balanced: bool = True,
    progress: bool = False,
    face_fraction: float = 0.5,
) -> Path:
    """Write PNGs under ``out_dir/<subject>/`` and ``out_dir/manifest.csv``; return the manifest.

    Manifest columns: path (relative to the manifest's folder), subject, pspi,
    label, au4, au6, au7, au9, au10, au43. With ``balanced`` every subject gets
    every class equally often (needs images_per_subject >= 5 to cover them all).
    """
    n_subjects = _check_positive_int("n_subjects", n_subjects)
    images_per_subject = _check_positive_int("images_per_subject", images_per_subject)
    seed = _check_positive_int("seed", seed, minimum=0)
    image_size_px = _check_positive_int("image_size_px", image_size_px, minimum=64)
    if not 0.2 <= face_fraction <= 0.8:
        raise ValueError(
            f"face_fraction must lie in 0.2..0.8 of the image width, got {face_fraction}"
        )
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.csv"
    jobs = [(s, i) for s in range(n_subjects) for i in range(images_per_subject)]
    labels = {s: subject_labels(seed, s, images_per_subject, balanced) for s in range(n_subjects)}
    iterator: Iterator[tuple[int, int]] | list[tuple[int, int]] = jobs
    if progress:
        from painmon.core.util.progress import progress_bar

        iterator = progress_bar(jobs, desc="synthetic faces", unit="img")
    tmp_manifest = manifest.with_suffix(".csv.partial")
    with tmp_manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for subject_index, image_index in iterator:
            subject = f"s{subject_index:03d}"
            sample = render_sample(
                seed,
                subject_index,
                image_index,
                labels[subject_index][image_index],
                image_size_px,
                face_fraction,
            )
            rel = Path(subject) / f"{subject}_{image_index:04d}_c{sample.label}.png"
            (root / subject).mkdir(exist_ok=True)
            if not cv2.imwrite(str(root / rel), cv2.cvtColor(sample.rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(
                    f"could not write {root / rel}: check the folder is writable and has space"
                )
            writer.writerow(
                [rel.as_posix(), subject, sample.pspi, sample.label, *sample.aus.rounded()]
            )
    tmp_manifest.replace(manifest)
    log.info("wrote %d synthetic images of %d subjects to %s", len(jobs), n_subjects, root)
    return manifest


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a manifest written by :func:`write_dataset` (checks the header)."""
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(f"{path} is not a synthetic manifest: columns {reader.fieldnames}")
        return list(reader)


def bench_synth(
    n_subjects: int = 20,
    images_per_subject: int = 100,
    seed: int = 0,
    out_dir: str | Path | None = None,
    image_size_px: int = 256,
) -> dict[str, float | int]:
    """Time :func:`write_dataset`; writes into ``out_dir`` or a temporary folder that is removed."""
    scratch = None
    if out_dir is None:
        scratch = tempfile.mkdtemp(prefix="painmon-synth-bench-")
        out_dir = scratch
    try:
        start = time.perf_counter()
        write_dataset(out_dir, n_subjects, images_per_subject, seed, image_size_px)
        elapsed = time.perf_counter() - start
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    n_images = n_subjects * images_per_subject
    return {
        "n_images": n_images,
        "image_size_px": image_size_px,
        "seconds": round(elapsed, 3),
        "images_per_s": round(n_images / elapsed, 1) if elapsed > 0 else float("inf"),
    }


# --------------------------------------------------------------------------- CLI glue


MAX_SYNTH_IMAGES = 1_000_000
MAX_VIDEO_SECONDS = 24 * 3600.0
MAX_VIDEO_FPS = 240.0
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def check_synth_request(
    out: str | Path | None,
    subjects: int,
    images_per_subject: int,
    video: str | Path | None,
    seconds: float,
    fps: float,
) -> None:
    """Refuse a ``painmon synth`` request before anything is written (one part failing after
    the other was written would leave half a result behind)."""
    if out is not None:
        _check_positive_int("--subjects", subjects)
        _check_positive_int("--images-per-subject", images_per_subject)
        if subjects * images_per_subject > MAX_SYNTH_IMAGES:
            raise InvalidInputError(
                f"{subjects} subjects x {images_per_subject} images is too many for a synthetic "
                f"dataset (at most {MAX_SYNTH_IMAGES:,} images)"
            )
        if Path(out).exists() and not Path(out).is_dir():
            raise InvalidInputError(f"--out {out} is a file, not a folder: give a folder path")
    if video is not None:
        video = Path(video)
        if video.is_dir():
            raise InvalidInputError(f"--video {video} is a folder: give a file path")
        if video.suffix.lower() not in VIDEO_SUFFIXES:
            raise InvalidInputError(
                f"--video {video} must end in .mp4 (or {', '.join(VIDEO_SUFFIXES[1:])})"
            )
        for name, value, limit in (("--seconds", seconds, MAX_VIDEO_SECONDS),
                                   ("--fps", fps, MAX_VIDEO_FPS)):  # fmt: skip
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
            if value > limit:
                raise InvalidInputError(
                    f"{name} {value:g} is too large for a video: at most {limit:g}"
                )
        if round(seconds * fps) < 1:
            raise InvalidInputError(f"{seconds:g} s at {fps:g} fps is less than one frame")


def run_synth_cli(
    out: str | Path | None = None,
    subjects: int = 20,
    images_per_subject: int = 100,
    seed: int = 0,
    video: str | Path | None = None,
    seconds: float = 60.0,
    fps: float = 30.0,
) -> str:
    """Back-end of ``painmon synth``: write a dataset (``out``) and/or a video; return a summary."""
    if out is None and video is None:
        raise InvalidInputError(
            "nothing to do: give --out DIR for a dataset and/or --video PATH for a video"
        )
    check_synth_request(out, subjects, images_per_subject, video, seconds, fps)
    lines = []
    if out is not None:
        start = time.perf_counter()
        manifest = write_dataset(out, subjects, images_per_subject, seed, progress=True)
        elapsed = time.perf_counter() - start
        counts = Counter(int(row["label"]) for row in read_manifest(manifest))
        total = sum(counts.values())
        lines.append(
            f"Synthetic dataset: {total} images of {subjects} subjects (seed {seed}) "
            f"in {elapsed:.1f} s"
        )
        for cls in range(NUM_CLASSES):
            lines.append(f"  class {cls} ({DEFAULT_CLASS_NAMES[cls]}): {counts.get(cls, 0)}")
        lines.append(f"  manifest: {manifest}")
    if video is not None:
        start = time.perf_counter()
        path = write_video(video, seconds, fps, seed, progress=True)
        elapsed = time.perf_counter() - start
        n_frames = round(seconds * fps)
        lines.append(
            f"Synthetic patient video: {n_frames} frames ({seconds:g} s @ {fps:g} fps, "
            f"seed {seed}) "
            f"in {elapsed:.1f} s"
        )
        lines.append(f"  video: {path}")
        lines.append(f"  ground truth: {truth_csv_path(path)}")
    return "\n".join(lines)
