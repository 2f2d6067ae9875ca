"""Pain datasets as lists of labelled samples: UNBC-McMaster, BioVid Heat Pain, or a CSV manifest.

Every loader checks the layout as it walks and fails at once, naming the layout it
expected and the first path that does not fit; it never returns an empty list.
Images are not opened here (face crops are made once by ``painmon.core.research.crops``).
"""

from __future__ import annotations

import csv
import logging
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from painmon.core.util.errors import PainmonError
from painmon.core.util.fileio import sha256_file
from painmon.core.util.labels import (
    BIOVID_LABEL_NOTE,
    BIOVID_LEVELS,
    NUM_CLASSES,
    PSPI_MAX,
    biovid_level_to_class,
    pspi_to_class,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
SOURCES = ("unbc", "biovid", "manifest")

UNBC_LAYOUT = (
    "UNBC-McMaster layout: <root>/Images/<subject>/<sequence>/<frame>.png with "
    "<root>/Frame_Labels/PSPI/<subject>/<sequence>/<frame>_facs.txt (one PSPI number each)"
)
BIOVID_LAYOUT = (
    "BioVid Heat Pain Part A layout: "
    "<root>/video/<subject>/<subject>-<BL1|PA1|PA2|PA3|PA4>-<nnn>.mp4"
)
MANIFEST_LAYOUT = (
    "manifest layout: a CSV with columns path,subject and pspi and/or label "
    "(optional frame_index; extra columns ignored; paths relative to the CSV's folder)"
)

# BioVid Part A clips are 5.5 s at 25 fps; the facial response lags heat onset by ~2 s.
BIOVID_FPS = 25.0
BIOVID_CLIP_S = 5.5
BIOVID_FRAMES_PER_CLIP = 4
BIOVID_WINDOW_S = (2.0, 4.5)
_BIOVID_NAME = re.compile(
    r"^(?P<subject>.+)-(?P<level>" + "|".join(BIOVID_LEVELS) + r")-(?P<index>\d{3})\.mp4$"
)


class DatasetLayoutError(PainmonError, ValueError):
    """A dataset folder or manifest does not have the expected layout."""


@dataclass(frozen=True)
class Sample:
    """One labelled face image, or one frame of a video (``frame_index`` set)."""

    path: Path
    subject: str
    label: int
    pspi: float | None = None
    source: str = "manifest"
    frame_index: int | None = None
    time_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not isinstance(self.subject, str) or not self.subject.strip():
            raise ValueError(f"sample {self.path}: subject must be a non-empty string")
        if isinstance(self.label, bool) or not isinstance(self.label, int):
            raise ValueError(f"sample {self.path}: label must be an int, got {self.label!r}")
        if not 0 <= self.label < NUM_CLASSES:
            raise ValueError(
                f"sample {self.path}: label must lie in 0..{NUM_CLASSES - 1}, got {self.label}"
            )
        if self.pspi is not None:
            pspi = float(self.pspi)
            if not math.isfinite(pspi) or not 0 <= pspi <= PSPI_MAX:
                raise ValueError(
                    f"sample {self.path}: PSPI must lie in 0..{PSPI_MAX}, got {self.pspi!r}"
                )
            if pspi_to_class(pspi) != self.label:
                raise ValueError(
                    f"sample {self.path}: PSPI {pspi:g} means class {pspi_to_class(pspi)}, "
                    f"but label is {self.label}"
                )
        if self.source not in SOURCES:
            raise ValueError(
                f"sample {self.path}: source must be one of {SOURCES}, got {self.source!r}"
            )
        if self.frame_index is not None and (
            isinstance(self.frame_index, bool)
            or not isinstance(self.frame_index, int)
            or self.frame_index < 0
        ):
            raise ValueError(
                f"sample {self.path}: frame_index must be an int >= 0, got {self.frame_index!r}"
            )
        if self.time_s is not None and not (math.isfinite(self.time_s) and self.time_s >= 0):
            raise ValueError(f"sample {self.path}: time_s must be >= 0, got {self.time_s!r}")

    @property
    def is_video_frame(self) -> bool:
        return self.frame_index is not None

    def describe(self) -> str:
        """Path plus frame, for messages and reports."""
        if self.frame_index is None:
            return str(self.path)
        return f"{self.path}#frame{self.frame_index}"


def subject_key(subject: str) -> str:
    """What a subject name means once case, Unicode form and surrounding spaces are set
    aside: ``S000``, ``s000`` and ``ｓ000`` are one person."""
    return unicodedata.normalize("NFKC", subject).strip().casefold()


def check_subject_spellings(subjects: Iterable[str], what: str = "dataset") -> None:
    """Refuse two spellings of one subject name (``s000`` and ``S000``, composed and
    decomposed accents, a trailing space: a manifest edited in a spreadsheet): they would
    count as two people, and the subject-wise split could put one face in training and test.
    Raises :class:`DatasetLayoutError` naming both spellings."""
    seen: dict[str, str] = {}
    for subject in sorted(set(subjects)):
        first = seen.setdefault(subject_key(subject), subject)
        if first != subject:
            raise DatasetLayoutError(
                f"{what}: subjects {first!r} and {subject!r} differ only in case, Unicode form "
                "or spaces; they would count as two people and the split could put one person "
                "in both training and test. Spell each subject one way"
            )


def _require_nonempty(samples: list[Sample], what: str, layout: str) -> list[Sample]:
    if not samples:
        raise DatasetLayoutError(f"{what} holds no samples. Expected {layout}")
    return samples


def _visible(paths: Iterator[Path]) -> list[Path]:
    return sorted(p for p in paths if not p.name.startswith("."))


def _read_pspi_file(path: Path) -> float:
    words = path.read_text(encoding="utf-8", errors="replace").split()
    try:
        # UNBC writes e.g. "   2.0000000e+00"; float() takes that once stripped.
        return float(words[0]) if len(words) == 1 else float("nan")
    except ValueError:
        return float("nan")


def load_unbc(root: str | Path) -> list[Sample]:
    """Load the UNBC-McMaster Shoulder Pain archive as distributed (PSPI per frame -> class)."""
    root = Path(root)
    images_dir = root / "Images"
    labels_dir = root / "Frame_Labels" / "PSPI"
    for needed in (images_dir, labels_dir):
        if not needed.is_dir():
            raise DatasetLayoutError(f"{needed} is not a folder. Expected {UNBC_LAYOUT}")
    samples: list[Sample] = []
    for subject_dir in _visible(images_dir.iterdir()):
        if not subject_dir.is_dir():
            raise DatasetLayoutError(
                f"{subject_dir} should be a subject folder. Expected {UNBC_LAYOUT}"
            )
        for sequence_dir in _visible(subject_dir.iterdir()):
            if not sequence_dir.is_dir():
                raise DatasetLayoutError(
                    f"{sequence_dir} should be a sequence folder. Expected {UNBC_LAYOUT}"
                )
            for image in _visible(sequence_dir.iterdir()):
                if image.is_dir():
                    raise DatasetLayoutError(f"unexpected folder {image}. Expected {UNBC_LAYOUT}")
                if image.suffix.lower() not in IMAGE_SUFFIXES:
                    log.debug("UNBC: ignoring non-image file %s", image)
                    continue
                label_file = (
                    labels_dir / subject_dir.name / sequence_dir.name / f"{image.stem}_facs.txt"
                )
                if not label_file.is_file():
                    raise DatasetLayoutError(
                        f"image {image} has no label file {label_file}. Expected {UNBC_LAYOUT}"
                    )
                pspi = _read_pspi_file(label_file)
                try:
                    label = pspi_to_class(pspi)
                except ValueError:
                    raise DatasetLayoutError(
                        f"label file {label_file} must hold one PSPI number in 0..{PSPI_MAX}, "
                        f"found {label_file.read_text(errors='replace').strip()[:60]!r}"
                    ) from None
                samples.append(Sample(image, subject_dir.name, label, pspi, "unbc"))
    _require_nonempty(samples, f"UNBC folder {root}", UNBC_LAYOUT)
    check_subject_spellings((s.subject for s in samples), f"UNBC folder {root}")
    check_no_shared_images(samples, f"UNBC folder {root}")
    log.info(
        "UNBC: %d frames from %d subjects in %s",
        len(samples),
        len({s.subject for s in samples}),
        root,
    )
    return samples


def biovid_frame_times_s(
    frames_per_clip: int = BIOVID_FRAMES_PER_CLIP, window_s: tuple[float, float] = BIOVID_WINDOW_S
) -> tuple[float, ...]:
    """Times (s after clip start) sampled per clip: evenly spaced, both window ends included."""
    if (
        isinstance(frames_per_clip, bool)
        or not isinstance(frames_per_clip, int)
        or frames_per_clip < 1
    ):
        raise ValueError(f"frames_per_clip must be an int >= 1, got {frames_per_clip!r}")
    start_s, end_s = (float(v) for v in window_s)
    if not (0.0 <= start_s <= end_s):
        raise ValueError(f"window_s must satisfy 0 <= start <= end, got {window_s!r}")
    if frames_per_clip == 1:
        return ((start_s + end_s) / 2.0,)
    if start_s == end_s:
        raise ValueError(f"window_s {window_s!r} is empty; several frames need end > start")
    step_s = (end_s - start_s) / (frames_per_clip - 1)
    return tuple(start_s + i * step_s for i in range(frames_per_clip))


def load_biovid(
    root: str | Path,
    frames_per_clip: int = BIOVID_FRAMES_PER_CLIP,
    window_s: tuple[float, float] = BIOVID_WINDOW_S,
    fps: float = BIOVID_FPS,
) -> list[Sample]:
    """Load BioVid Heat Pain Part A: several frames per clip, labelled by stimulus level.

    Each clip (5.5 s) gives ``frames_per_clip`` samples at times evenly spaced over
    ``window_s`` (seconds after clip start, both ends included; default 4 frames in
    2.0-4.5 s, because the pain response lags stimulus onset). A sample's
    ``frame_index`` is ``round(time_s * fps)`` with BioVid's 25 fps; videos are not
    opened here. Labels are stimulus levels BL1, PA1..PA4 -> 0..4, not observed PSPI
    (see ``labels.BIOVID_LABEL_NOTE``): a PA4 clip may show a neutral face.
    """
    root = Path(root)
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    times_s = biovid_frame_times_s(frames_per_clip, window_s)
    if max(times_s) > BIOVID_CLIP_S:
        log.warning("BioVid window %s reaches past the %.1f s clip length", window_s, BIOVID_CLIP_S)
    video_dir = root / "video"
    if not video_dir.is_dir():
        raise DatasetLayoutError(f"{video_dir} is not a folder. Expected {BIOVID_LAYOUT}")
    samples: list[Sample] = []
    for subject_dir in _visible(video_dir.iterdir()):
        if not subject_dir.is_dir():
            raise DatasetLayoutError(
                f"{subject_dir} should be a subject folder. Expected {BIOVID_LAYOUT}"
            )
        for clip in _visible(subject_dir.iterdir()):
            match = _BIOVID_NAME.match(clip.name)
            if clip.is_dir() or match is None or match["subject"] != subject_dir.name:
                raise DatasetLayoutError(
                    f"{clip} does not match {subject_dir.name}-<BL1|PA1..PA4>-<nnn>.mp4. "
                    f"Expected {BIOVID_LAYOUT}"
                )
            label = biovid_level_to_class(match["level"])
            for time_s in times_s:
                samples.append(
                    Sample(
                        clip,
                        subject_dir.name,
                        label,
                        None,
                        "biovid",
                        frame_index=round(time_s * fps),
                        time_s=time_s,
                    )
                )
    _require_nonempty(samples, f"BioVid folder {root}", BIOVID_LAYOUT)
    check_subject_spellings((s.subject for s in samples), f"BioVid folder {root}")
    check_no_shared_images(samples, f"BioVid folder {root}")
    log.info(
        "BioVid: %d frames (%d per clip) from %d subjects in %s. %s",
        len(samples),
        len(times_s),
        len({s.subject for s in samples}),
        root,
        BIOVID_LABEL_NOTE,
    )
    return samples


def _manifest_cell(row: dict[str, str | None], column: str) -> str:
    value = row.get(column)
    return "" if value is None else value.strip()


def load_manifest(csv_path: str | Path, allow_outside_root: bool = False) -> list[Sample]:
    """Load a CSV manifest: ``path,subject`` plus ``pspi`` and/or ``label`` (they must agree).

    Image paths must stay inside the manifest's folder (after ``..`` and symlinks are
    resolved) unless ``allow_outside_root``. A row listing the same file and frame twice, one
    file under two subjects, or the same image bytes under two subjects is refused: a face
    under two names would land in both training and test.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetLayoutError(f"manifest {csv_path} not found. Expected {MANIFEST_LAYOUT}")
    if csv_path.suffix.lower() == ".npz":
        raise DatasetLayoutError(
            f"{csv_path} is a crops file from `painmon crops`, not a dataset: this command "
            f"needs the images. Give the manifest CSV, UNBC or BioVid root it was made from"
        )
    try:
        samples = _read_manifest(csv_path, allow_outside_root)
    except UnicodeDecodeError as exc:
        raise DatasetLayoutError(
            f"manifest {csv_path} is not UTF-8 text (byte {exc.start}): is it the right file? "
            f"Expected {MANIFEST_LAYOUT}"
        ) from None
    check_subject_spellings((s.subject for s in samples), f"manifest {csv_path}")
    check_no_shared_images(samples, f"manifest {csv_path}")
    return samples


def _read_manifest(csv_path: Path, allow_outside_root: bool) -> list[Sample]:
    lines_read = [0]
    try:
        return _read_manifest_rows(csv_path, allow_outside_root, lines_read)
    except csv.Error as exc:
        # e.g. a field over csv.field_size_limit() (128 KiB) or a NUL byte: not a manifest.
        raise DatasetLayoutError(
            f"manifest {csv_path} line {lines_read[0] + 1} is not readable CSV ({exc}): is it "
            f"the right file? Expected {MANIFEST_LAYOUT}"
        ) from None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _read_manifest_rows(
    csv_path: Path, allow_outside_root: bool, lines_read: list[int]
) -> list[Sample]:
    base = csv_path.parent
    root = base.resolve()
    samples: list[Sample] = []
    # resolved file -> (line, subject) and (resolved file, frame) -> line, for duplicates
    first_subject: dict[Path, tuple[int, str]] = {}
    first_row: dict[tuple[Path, int | None], int] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        missing = [c for c in ("path", "subject") if c not in columns]
        if not ("pspi" in columns or "label" in columns):
            missing.append("pspi or label")
        if missing:
            raise DatasetLayoutError(
                f"manifest {csv_path} lacks column(s) {', '.join(missing)} "
                f"(has {', '.join(columns) or 'none'}). "
                f"Expected {MANIFEST_LAYOUT}"
            )
        for row in reader:
            lines_read[0] = reader.line_num
            where = f"manifest {csv_path} line {reader.line_num}"
            raw_path, subject = _manifest_cell(row, "path"), _manifest_cell(row, "subject")
            if not raw_path or not subject:
                raise DatasetLayoutError(f"{where}: path and subject must not be empty")
            path = Path(raw_path)
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise DatasetLayoutError(f"{where}: file {path} does not exist")
            resolved = path.resolve()
            if not allow_outside_root and not _inside(resolved, root):
                raise DatasetLayoutError(
                    f"{where}: {raw_path} is outside the manifest's folder {root}; move the "
                    "images under it, or pass --allow-outside-root if you mean it"
                )
            pspi_text, label_text = _manifest_cell(row, "pspi"), _manifest_cell(row, "label")
            frame_text = _manifest_cell(row, "frame_index")
            try:
                pspi = float(pspi_text) if pspi_text else None
                label_given = int(label_text) if label_text else None
                frame_index = int(frame_text) if frame_text else None
                if pspi is None and label_given is None:
                    raise ValueError("needs a pspi or label value")
                label = pspi_to_class(pspi) if pspi is not None else label_given
                if label_given is not None and label_given != label:
                    raise ValueError(
                        f"pspi {pspi:g} means class {label}, but label is {label_given}"
                    )
                sample = Sample(path, subject, label, pspi, "manifest", frame_index=frame_index)
            except ValueError as exc:
                raise DatasetLayoutError(f"{where} ({raw_path}): {exc}") from None
            line = reader.line_num
            earlier = first_row.setdefault((resolved, frame_index), line)
            if earlier != line:
                frame = "" if frame_index is None else f" frame {frame_index}"
                raise DatasetLayoutError(
                    f"manifest {csv_path} lines {earlier} and {line} both list {raw_path}{frame}: "
                    "remove the duplicate row"
                )
            first_line, first_name = first_subject.setdefault(resolved, (line, subject))
            if first_name != subject:
                raise DatasetLayoutError(
                    f"manifest {csv_path}: {raw_path} is listed under subject {first_name!r} "
                    f"(line {first_line}) and subject {subject!r} (line {line}); one file is one "
                    "person, or the split puts the same face in training and test"
                )
            samples.append(sample)
    return _require_nonempty(samples, f"manifest {csv_path}", MANIFEST_LAYOUT)


def check_no_shared_images(samples: Sequence[Sample], what: str = "dataset") -> None:
    """Refuse the same file content under two subjects (it would leak a face across the split).

    Cheap first: only files of equal size whose samples name more than one subject are
    hashed (SHA-256). Raises :class:`DatasetLayoutError` naming both subjects and files.
    """
    subjects_by_file: dict[Path, set[str]] = defaultdict(set)
    for sample in samples:
        subjects_by_file[sample.path].add(sample.subject)
    by_size: dict[int, list[Path]] = defaultdict(list)
    for path in subjects_by_file:
        by_size[path.stat().st_size].append(path)
    for paths in by_size.values():
        if len(set().union(*(subjects_by_file[p] for p in paths))) < 2:
            continue
        owner: dict[str, tuple[Path, str]] = {}
        for path in paths:
            digest = sha256_file(path)
            for subject in sorted(subjects_by_file[path]):
                first_path, first_subject = owner.setdefault(digest, (path, subject))
                if first_subject != subject:
                    raise DatasetLayoutError(
                        f"{what}: {first_path} (subject {first_subject!r}) and {path} (subject "
                        f"{subject!r}) are the same image (SHA-256 {digest[:12]}...); one face "
                        "under two subject names lands in both training and test. Remove the "
                        "copy or give both the same subject"
                    )


def detect_dataset_kind(path: str | Path) -> str:
    """``unbc``, ``biovid`` or ``manifest`` for a dataset path, judged by its layout."""
    path = Path(path)
    if path.is_file():
        return "manifest"
    if not path.exists():
        raise DatasetLayoutError(
            f"{path} does not exist: give a manifest CSV, a UNBC-McMaster root or a BioVid root"
        )
    if not path.is_dir():
        raise DatasetLayoutError(f"{path} is not a file or folder: give a manifest CSV")
    if (path / "Images").is_dir() and (path / "Frame_Labels").is_dir():
        return "unbc"
    if (path / "video").is_dir():
        return "biovid"
    raise DatasetLayoutError(
        f"{path} is a folder but not a dataset: a UNBC-McMaster root holds Images/ and "
        "Frame_Labels/, a BioVid root holds video/; or give a manifest CSV (columns path, "
        "subject and pspi or label)"
    )


def load_dataset(
    path: str | Path,
    kind: str = "auto",
    *,
    frames_per_clip: int = BIOVID_FRAMES_PER_CLIP,
    window_s: tuple[float, float] = BIOVID_WINDOW_S,
    allow_outside_root: bool = False,
) -> list[Sample]:
    """Load a UNBC root, BioVid root or manifest CSV; ``kind="auto"`` tells them apart by layout.

    ``allow_outside_root`` lets a manifest list images outside its own folder.
    """
    if kind not in ("auto", *SOURCES):
        raise ValueError(f"unknown dataset kind {kind!r}; use auto, {', '.join(SOURCES)}")
    resolved = detect_dataset_kind(path) if kind == "auto" else kind
    if resolved == "unbc":
        return load_unbc(path)
    if resolved == "biovid":
        return load_biovid(path, frames_per_clip=frames_per_clip, window_s=window_s)
    return load_manifest(path, allow_outside_root=allow_outside_root)
