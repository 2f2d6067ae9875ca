"""Subject-wise splits: train/val/test 72/8/20 and K folds over train+val, never sharing a subject.

A face seen in training must never be scored in validation or test: every training
entry point calls :func:`check_subject_disjoint` on the plan it was given.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.research.datasets import Sample, load_dataset
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import atomic_write_json, sha256_file
from painmon.core.util.labels import NUM_CLASSES
from painmon.core.util.validate import is_sha256_hex

PARTITIONS = ("train", "val", "test")
TEST_SPLITS = 5  # test = one fold of 5 over all subjects -> 20 %
VAL_SPLITS = 10  # val = one fold of 10 over the rest -> 8 %, train 72 %
DEFAULT_FOLDS = 5
DEFAULT_SEED = 42


class SplitError(PainmonError, ValueError):
    """A split plan is malformed or does not fit the dataset."""


class SubjectLeakError(SplitError):
    """One subject appears in two partitions that must be disjoint."""


def _subject_tuple(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str | bytes | dict) or not isinstance(values, Iterable):
        raise SplitError(f"{what} must be a list of subject names, got {values!r:.60}")
    subjects = tuple(str(v) for v in values)
    duplicates = sorted(s for s, n in Counter(subjects).items() if n > 1)
    if duplicates:
        raise SplitError(f"{what} lists subject {duplicates[0]!r} more than once")
    return tuple(sorted(subjects))


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold over the train+val subjects (also readable as fold["train"])."""

    train: tuple[str, ...]
    val: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", _subject_tuple(self.train, "fold train"))
        object.__setattr__(self, "val", _subject_tuple(self.val, "fold val"))
        if not self.train or not self.val:
            raise SplitError("every fold needs at least one train and one val subject")

    def __getitem__(self, partition: str) -> tuple[str, ...]:
        if partition not in ("train", "val"):
            raise KeyError(partition)
        return self.train if partition == "train" else self.val

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val)}


@dataclass(frozen=True)
class SplitPlan:
    """Which subjects train, validate and test, and the K folds, for one manifest and seed."""

    manifest_sha256: str
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    folds: tuple[Fold, ...] = ()

    def __post_init__(self) -> None:
        if not is_sha256_hex(self.manifest_sha256):
            raise SplitError(
                f"manifest_sha256 must be 64 lowercase hex digits, got {self.manifest_sha256!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SplitError(f"seed must be an int, got {self.seed!r}")
        for name in PARTITIONS:
            subjects = _subject_tuple(getattr(self, name), name)
            if not subjects:
                raise SplitError(f"split partition {name!r} has no subjects")
            object.__setattr__(self, name, subjects)
        folds = tuple(f if isinstance(f, Fold) else Fold(f["train"], f["val"]) for f in self.folds)
        object.__setattr__(self, "folds", folds)

    def subjects(self, partition: str, fold: int | None = None) -> tuple[str, ...]:
        """Subjects of ``train``/``val``/``test``, or of a fold's ``train``/``val``."""
        if fold is None:
            if partition not in PARTITIONS:
                raise KeyError(f"unknown partition {partition!r}; use {', '.join(PARTITIONS)}")
            return getattr(self, partition)
        if not 0 <= fold < len(self.folds):
            raise IndexError(f"fold {fold} does not exist; the plan has {len(self.folds)} folds")
        return self.folds[fold][partition]

    def fold_plan(self, fold: int) -> SplitPlan:
        """The plan one cross-validation fold's model is trained on: the fold's train and
        val subjects, the plan's test subjects, no folds (what its run folder records)."""
        train, val = self.subjects("train", fold), self.subjects("val", fold)
        return SplitPlan(self.manifest_sha256, self.seed, train, val, self.test)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_sha256": self.manifest_sha256,
            "seed": self.seed,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "folds": [f.to_dict() for f in self.folds],
        }

    def to_json(self, path: str | Path) -> Path:
        """Write the plan as JSON (atomically) and return the path."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> SplitPlan:
        """Read a plan written by :meth:`to_json` and check it is subject-disjoint."""
        path = Path(path)
        if not path.exists():
            raise SplitError(f"split plan {path} does not exist: make one with `painmon split`")
        if path.is_dir():
            raise SplitError(f"split plan {path} is a folder: give the splits.json inside it")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError
            raise SplitError(
                f"cannot read split plan {path} ({type(exc).__name__}: {exc}); make one with "
                "`painmon split`"
            ) from exc
        expected = {"manifest_sha256", "seed", "train", "val", "test", "folds"}
        if not isinstance(data, dict) or set(data) != expected:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise SplitError(
                f"split plan {path} must have exactly keys {sorted(expected)}, found {found}"
            )
        try:
            folds = tuple(Fold(f["train"], f["val"]) for f in data["folds"])
        except (KeyError, TypeError, IndexError) as exc:
            raise SplitError(f"split plan {path}: each fold needs 'train' and 'val' lists") from exc
        try:
            plan = cls(
                data["manifest_sha256"], data["seed"], data["train"], data["val"], data["test"],
                folds,
            )  # fmt: skip
            check_subject_disjoint(plan)
        except SplitError as exc:
            raise type(exc)(f"split plan {path}: {exc}") from None
        return plan


def check_partitions_disjoint(partitions: dict[str, Iterable[str]]) -> None:
    """Raise :class:`SubjectLeakError` naming the first subject found in two named partitions."""
    seen: dict[str, str] = {}
    for name, subjects in partitions.items():
        for subject in sorted(set(subjects)):
            if subject in seen:
                raise SubjectLeakError(f"subject {subject!r} is in both {seen[subject]} and {name}")
            seen[subject] = name


def check_subject_disjoint(plan: SplitPlan) -> None:
    """Raise :class:`SubjectLeakError` if any subject sits in two partitions, or a fold is off.

    Checks train/val/test pairwise, each fold's train vs val and vs test, and that
    each fold's train+val are exactly the plan's train+val subjects.
    """
    groups: list[tuple[str, set[str]]] = [(name, set(getattr(plan, name))) for name in PARTITIONS]
    for k, fold in enumerate(plan.folds, start=1):
        groups.append((f"fold {k} train", set(fold.train)))
        groups.append((f"fold {k} val", set(fold.val)))
    pairs = [(0, 1), (0, 2), (1, 2)]
    for k in range(len(plan.folds)):
        train_i, val_i = 3 + 2 * k, 4 + 2 * k
        pairs += [(train_i, val_i), (train_i, 2), (val_i, 2)]
    for a, b in pairs:
        (name_a, set_a), (name_b, set_b) = groups[a], groups[b]
        shared = sorted(set_a & set_b)
        if shared:
            raise SubjectLeakError(
                f"subject {shared[0]!r} is in both {name_a} and {name_b}"
                + (f" (and {len(shared) - 1} more)" if len(shared) > 1 else "")
            )
    pool = set(plan.train) | set(plan.val)
    for k, fold in enumerate(plan.folds, start=1):
        covered = set(fold.train) | set(fold.val)
        if covered != pool:
            missing, extra = sorted(pool - covered), sorted(covered - pool)
            raise SplitError(
                f"fold {k} train+val differ from the plan's train+val subjects "
                f"(missing {missing[:5]}, not in train+val {extra[:5]})"
            )


def _sorted_arrays(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    # Sort first so the plan depends on the samples, not on the order they were listed in.
    ordered = sorted(
        samples,
        key=lambda s: (s.subject, str(s.path), -1 if s.frame_index is None else s.frame_index),
    )
    labels = np.array([s.label for s in ordered], dtype=np.int64)
    subjects = np.array([s.subject for s in ordered], dtype=str)
    return labels, subjects


def _first_fold_subjects(
    labels: np.ndarray, subjects: np.ndarray, n_splits: int, seed: int
) -> set[str]:
    from sklearn.model_selection import StratifiedGroupKFold  # slow to import: only to split

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held_out = next(splitter.split(np.zeros(len(labels)), labels, subjects))
    return set(subjects[held_out].tolist())


def _folds(labels: np.ndarray, subjects: np.ndarray, n_splits: int, seed: int) -> list[Fold]:
    from sklearn.model_selection import StratifiedGroupKFold  # slow to import: only to split

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = []
    for train_idx, val_idx in splitter.split(np.zeros(len(labels)), labels, subjects):
        folds.append(Fold(set(subjects[train_idx].tolist()), set(subjects[val_idx].tolist())))
    return folds


def min_subjects(folds: int = DEFAULT_FOLDS) -> int:
    """Fewest subjects make_splits accepts: ~20 % test must leave max(10, folds) subjects."""
    rest = max(VAL_SPLITS, folds)
    return rest + math.ceil(rest / (TEST_SPLITS - 1))


def _too_few_per_class(
    labels: np.ndarray, what: str, groups: int, n_subjects: int, folds: int
) -> SplitError:
    """Why a stratified split into ``groups`` failed: every pain class has fewer samples
    than groups (StratifiedGroupKFold needs one class with at least that many)."""
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    shown = ", ".join(f"class {c}: {int(n)}" for c, n in enumerate(counts))
    pool = f"{n_subjects} {'' if what == 'test' else 'non-test '}subjects"
    if what == "cross-validation":
        split = f"the {groups} folds are stratified groups of the {pool}"
        advice = "Use fewer folds (down to 2) or add crops" if folds > 2 else "Add crops"
    else:
        split = f"the {what} subjects are one of {groups} stratified groups of the {pool}"
        advice = f"Add crops; fewer folds does not help (the {what} split is always 1 of {groups})"
    return SplitError(
        f"cannot stratify the subject-wise split: {split}, and every pain class has fewer "
        f"than {groups} crops among them ({shown}). {advice}."
    )


def make_splits(
    samples: Sequence[Sample],
    manifest_sha256: str,
    seed: int = DEFAULT_SEED,
    folds: int = DEFAULT_FOLDS,
) -> SplitPlan:
    """Subject-wise stratified 72/8/20 split plus ``folds`` folds over the train+val subjects.

    Test is one fold of 5 (StratifiedGroupKFold) over all subjects, val one fold of
    10 over the rest; the K folds split train+val only, so test subjects are never
    in any fold. The same samples and seed always give the same plan.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise SplitError(f"folds must be an int >= 2, got {folds!r}")
    if not samples:
        raise SplitError("cannot split an empty dataset")
    labels, subjects = _sorted_arrays(samples)
    n_subjects = len(set(subjects.tolist()))
    needed = min_subjects(folds)
    if n_subjects < needed:
        # Fewer folds lowers the minimum only while folds, not the 10 validation splits,
        # sets it: say so rather than send the user off to try 2 folds in vain.
        advice = (
            f"Use fewer folds (down to {VAL_SPLITS}, which needs {min_subjects(VAL_SPLITS)}) "
            "or more subjects."
            if folds > VAL_SPLITS
            else f"Add subjects: fewer folds does not lower this (the validation subjects are "
            f"one of {VAL_SPLITS} groups of the non-test subjects)."
        )
        raise SplitError(
            f"the dataset has {n_subjects} subjects; a subject-wise 72/8/20 split with "
            f"{folds} folds needs at least {needed}. {advice}"
        )
    with warnings.catch_warnings():
        # Rare pain classes have fewer members than splits; stratification is then best-effort.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        try:
            test = _first_fold_subjects(labels, subjects, TEST_SPLITS, seed)
        except ValueError as exc:
            raise _too_few_per_class(labels, "test", TEST_SPLITS, n_subjects, folds) from exc
        rest = ~np.isin(subjects, list(test))
        try:
            val = _first_fold_subjects(labels[rest], subjects[rest], VAL_SPLITS, seed)
        except ValueError as exc:
            raise _too_few_per_class(labels[rest], "validation", VAL_SPLITS, n_subjects - len(test),
                                     folds) from exc  # fmt: skip
        try:
            fold_list = _folds(labels[rest], subjects[rest], folds, seed)
        except ValueError as exc:
            raise _too_few_per_class(labels[rest], "cross-validation", folds,
                                     n_subjects - len(test), folds) from exc  # fmt: skip
    train = set(subjects[rest].tolist()) - val
    plan = SplitPlan(manifest_sha256, seed, train, val, test, tuple(fold_list))
    check_subject_disjoint(plan)
    return plan


def filter_samples(samples: Iterable[Sample], subjects: Iterable[str]) -> list[Sample]:
    """The samples whose subject is in ``subjects``, in their original order."""
    wanted = set(subjects)
    return [s for s in samples if s.subject in wanted]


def format_split_table(plan: SplitPlan, samples: Sequence[Sample]) -> str:
    """Per-partition subject and class counts (and each fold's val), as ``painmon split`` prints."""
    counts: dict[str, np.ndarray] = {}
    for sample in samples:
        counts.setdefault(sample.subject, np.zeros(NUM_CLASSES, dtype=np.int64))[sample.label] += 1
    planned = set(plan.train) | set(plan.val) | set(plan.test)
    unplanned = sorted(set(counts) - planned)
    if unplanned:
        raise SplitError(
            f"subject {unplanned[0]!r} of the dataset is in no partition: the plan was made "
            "for another manifest"
        )
    rows: list[tuple[str, Sequence[str]]] = [(name, getattr(plan, name)) for name in PARTITIONS]
    rows.append(("all", sorted(planned)))
    rows += [(f"fold {k} val", fold.val) for k, fold in enumerate(plan.folds, start=1)]
    header = ["partition", "subjects", *(f"class {c}" for c in range(NUM_CLASSES)), "total"]
    body = []
    for name, subjects in rows:
        total = sum(
            (counts.get(s, np.zeros(NUM_CLASSES, dtype=np.int64)) for s in subjects),
            np.zeros(NUM_CLASSES, dtype=np.int64),
        )
        body.append(
            [name, str(len(subjects)), *(str(int(v)) for v in total), str(int(total.sum()))]
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    title = (
        f"subject-wise split, seed {plan.seed}, {len(plan.folds)} folds, "
        f"manifest sha256 {plan.manifest_sha256[:12]}"
    )
    return "\n".join([title, line(header), *(line(r) for r in body)])


def dataset_sha256(path: str | Path, samples: Sequence[Sample] | None = None) -> str:
    """SHA-256 of a manifest file; for a dataset folder, of its sorted sample listing."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if samples is None:
        samples = load_dataset(path)
    digest = hashlib.sha256()
    for sample in sorted(
        samples, key=lambda s: (str(s.path), -1 if s.frame_index is None else s.frame_index)
    ):
        relative = Path(os.path.relpath(sample.path, path)).as_posix()
        digest.update(f"{relative},{sample.frame_index},{sample.subject},{sample.label}\n".encode())
    return digest.hexdigest()


def run_split_cli(
    manifest: str | Path,
    out: str | Path,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    allow_outside_root: bool = False,
) -> str:
    """``painmon split``: load the dataset, make the plan, write JSON, return the table text.

    A crops file from ``painmon crops`` works too: the plan is made from the crops it holds
    and carries the hash of the dataset they came from. ``allow_outside_root`` lets a
    manifest list images outside its own folder.
    """
    if Path(manifest).suffix.lower() == ".npz":
        from painmon.core.research.crops import CropSet

        crops, source_sha = CropSet.load_npz(manifest)
        samples = crops.as_samples()
        if not source_sha:
            raise InvalidInputError(
                f"crops file {manifest} does not record which dataset it came from"
            )
    else:
        samples = load_dataset(manifest, allow_outside_root=allow_outside_root)
        source_sha = dataset_sha256(manifest, samples)
    plan = make_splits(samples, source_sha, seed=seed, folds=folds)
    written = plan.to_json(out)
    return f"{format_split_table(plan, samples)}\nwrote {written}"
