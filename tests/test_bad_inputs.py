"""Bad inputs to every ``painmon`` command: a clean one-line error, exit 2, disk untouched.

Issue #12. Each case runs ``python -m painmon ...`` in a subprocess of its own (cwd: an
empty folder of its own, HOME and every cache inside it, no network, Qt offscreen) and
must:

* exit with status 2;
* print exactly one line on stderr, ``painmon CMD: error: ...``, holding the case's
  expected words (a misleading message fails too), and no traceback anywhere;
* leave the disk as it was: its own folder gains nothing (unless the case names an
  expected artefact) and the prepared inputs (the shared "zoo" of bad files, and files
  a case's setup made) keep their names, sizes, mtimes and modes.

The table is data: add a :class:`Case` to :data:`CASES`. Placeholders in argv: ``{z}`` is
the zoo folder (see :func:`_build_zoo` for what it holds). Output paths are relative, so
they land in the case's own folder. ``setup`` names a function of :data:`SETUPS` that
prepares the case's folder first (e.g. existing outputs for the overwrite refusals).

All cases run once, two at a time, in a session fixture; each parametrized test then
checks its own result, so failures keep per-case ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = 14  # the fewest a subject-wise split with 5 folds accepts is 13
CASE_TIMEOUT_S = float(os.environ.get("PAINMON_BAD_INPUT_TIMEOUT_S", "180"))
WORKERS = int(os.environ.get("PAINMON_BAD_INPUT_WORKERS", "2"))
ERROR_LINE = re.compile(r"^painmon [a-z]+( [a-z]+)?: error: \S")
# Lines other programs print on stderr that painmon cannot stop: MediaPipe's glog and
# TensorFlow Lite's start-up lines, written by C++ straight to the file descriptor whatever
# GLOG_minloglevel says (only a case that runs the face detector sees them).
THIRD_PARTY_NOISE: tuple[re.Pattern[str], ...] = (
    re.compile(r"^WARNING: Logging before InitGoogle\(\) is written to STDERR$"),
    re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\] "),
    re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"),
)


@dataclass(frozen=True)
class Case:
    """One bad input: ``painmon ARGV`` must exit ``exit_code`` saying ``message``."""

    id: str
    argv: tuple[str, ...]
    message: str  # a substring of the error line (case-insensitive)
    setup: str = ""  # a key of SETUPS, run in the case's folder before the command
    exit_code: int = 2
    artefacts: tuple[str, ...] = ()  # files the command may leave (documented, relative)

    @property
    def command(self) -> str:
        return self.argv[0]


# --- the table ----------------------------------------------------------------------------

CASES: list[Case] = []


def case(case_id: str, argv: str | list[str], message: str, **kwargs) -> None:
    """Add a case; ``argv`` as one string is split on spaces (use a list for odd values)."""
    parts = tuple(argv.split()) if isinstance(argv, str) else tuple(argv)
    CASES.append(Case(case_id, parts, message, **kwargs))


# Files of the zoo that are not what a command expects, by what the command wants.
NOT_A_FILE = {
    "nonexistent": ("{z}/nope/missing", "does not exist"),
    "folder": ("{z}/folder", ""),
}
GARBAGE_FILES = ("empty", "garbage", "text")

# --- models ---
case("models-no-action", "models", "choose")
case("models-unknown-action", "models frobnicate", "invalid choice")
case("models-list-extra-arg", "models list extra", "unrecognized arguments")
for value, words in (
    ("-1", "> 0"),
    ("0", "> 0"),
    ("nan", "finite"),
    ("inf", "finite"),
    ("abc", "invalid"),
    ("", "invalid"),
):
    case(
        f"models-download-timeout-{value or 'blank'}",
        ["models", "download", "--timeout", value],
        words,
    )

# --- doctor ---
for value, words in (("-1", ">= 0"), ("abc", "invalid"), ("1.5", "invalid"), ("", "invalid")):
    case(f"doctor-camera-{value or 'blank'}", ["doctor", "--camera", value], words)
case("doctor-unknown-option", "doctor --frobnicate", "unrecognized arguments")
case("doctor-positional", "doctor now", "unrecognized arguments")

# --- synth ---
case("synth-nothing-to-do", "synth", "--out")
case("synth-unknown-option", "synth --out d --frobnicate 3", "unrecognized arguments")
for option in ("--subjects", "--images-per-subject"):
    name = option.strip("-")
    for value, words in (
        ("0", ">= 1"),
        ("-3", ">= 1"),
        ("abc", "invalid"),
        ("2.5", "invalid"),
        ("1e3", "invalid"),
    ):
        case(f"synth-{name}-{value}", ["synth", "--out", "d", option, value], words)
case("synth-subjects-huge", "synth --out d --subjects 100000000", "too many")
case("synth-images-huge", "synth --out d --images-per-subject 100000000", "too many")
for option in ("--seconds", "--fps"):
    name = option.strip("-")
    for value, words in (
        ("0", "> 0"),
        ("-1", "> 0"),
        ("nan", "finite"),
        ("inf", "finite"),
        ("1e400", "finite"),
        ("abc", "invalid"),
        ("", "invalid"),
    ):
        case(
            f"synth-video-{name}-{value or 'blank'}",
            ["synth", "--video", "v.mp4", option, value],
            words,
        )
case("synth-video-too-short", "synth --video v.mp4 --seconds 0.01 --fps 10", "less than one frame")
case("synth-video-too-long", "synth --video v.mp4 --seconds 10000000", "at most 86400")
case("synth-both-bad-seconds", "synth --out d --video v.mp4 --seconds -1", "> 0")
case("synth-both-bad-fps", "synth --out d --video v.mp4 --fps 0", "> 0")
for value, words in (("-1", "from 0 to"), ("abc", "invalid"), ("1.5", "invalid")):
    case(f"synth-seed-{value}", ["synth", "--out", "d", "--seed", value], words)
case("synth-out-existing", "synth --out existing_dir", "refusing to overwrite", setup="existing")
case("synth-out-is-file", "synth --out existing.json", "refusing to overwrite", setup="existing")
case("synth-out-is-zoo-file", "synth --out {z}/text.txt --force", "not a folder")
case("synth-video-existing", "synth --video video.mp4", "refusing to overwrite", setup="existing")
case("synth-video-truth-existing", "synth --video clip.mp4", "ground truth", setup="existing")
case(
    "synth-video-is-folder", "synth --video existing_dir", "refusing to overwrite", setup="existing"
)
case("synth-video-is-empty-folder", "synth --video {z}/folder", "folder")
for ext in ("txt", "png", "csv", ""):
    case(
        f"synth-video-ext-{ext or 'none'}", ["synth", "--video", f"v.{ext}" if ext else "v"], ".mp4"
    )
case(
    "synth-out-existing-video-bad",
    "synth --out d --video video.mp4",
    "refusing to overwrite",
    setup="existing",
)

# --- split ---
BAD_MANIFESTS = {
    # name: (words of the error)
    "nonexistent": ("{z}/nope/manifest.csv", "does not exist"),
    "folder": ("{z}/folder", "not a"),
    "folder-csv": ("{z}/folder.csv", "not a"),
    "empty": ("{z}/empty.csv", "lacks column"),
    "garbage": ("{z}/garbage.csv", "not UTF-8"),
    "text": ("{z}/text.txt", "lacks column"),
    "png": ("{z}/ds/s000/img.png", "not UTF-8"),
    "header-only": ("{z}/ds/m_header_only.csv", "holds no samples"),
    "no-path-column": ("{z}/ds/m_no_path.csv", "lacks column(s) path"),
    "no-label-columns": ("{z}/ds/m_no_label.csv", "pspi or label"),
    "label-7": ("{z}/ds/m_label7.csv", "label must lie in 0..4"),
    "label-text": ("{z}/ds/m_label_text.csv", "invalid literal"),
    "pspi-negative": ("{z}/ds/m_pspi_neg.csv", "PSPI must lie in 0..16"),
    "pspi-17": ("{z}/ds/m_pspi_17.csv", "PSPI must lie in 0..16"),
    "pspi-nan": ("{z}/ds/m_pspi_nan.csv", "finite"),
    "pspi-inf": ("{z}/ds/m_pspi_inf.csv", "finite"),
    "pspi-text": ("{z}/ds/m_pspi_text.csv", "could not convert"),
    "pspi-label-disagree": ("{z}/ds/m_disagree.csv", "but label is"),
    "frame-negative": ("{z}/ds/m_frame_neg.csv", "frame_index"),
    "missing-image": ("{z}/ds/m_missing_img.csv", "does not exist"),
    "image-is-folder": ("{z}/ds/m_img_folder.csv", "does not exist"),
    "outside-dotdot": ("{z}/ds/m_outside.csv", "outside the manifest's folder"),
    "outside-absolute": ("{z}/ds/m_outside_abs.csv", "outside the manifest's folder"),
    "outside-symlink": ("{z}/ds/m_outside_link.csv", "outside the manifest's folder"),
    "duplicate-row": ("{z}/ds/m_dup.csv", "remove the duplicate row"),
    "one-file-two-subjects": ("{z}/ds/m_two_subjects.csv", "one file is one person"),
    "same-bytes-two-subjects": ("{z}/ds/m_same_bytes.csv", "are the same image"),
    "empty-subject": ("{z}/ds/m_empty_subject.csv", "must not be empty"),
    "huge-field": ("{z}/ds/m_huge_field.csv", "not readable CSV"),
    "nul-byte": ("{z}/ds/m_nul.csv", "does not exist"),
    "latin1": ("{z}/ds/m_latin1.csv", "not UTF-8"),
    "formula-subject-bad-pspi": ("{z}/ds/m_formula.csv", "PSPI must lie in 0..16"),
    "crops-npz": ("{z}/crops.npz", "crops file"),
    "tab-separated": ("{z}/ds/m_tabs.csv", "lacks column"),
    "header-whitespace-only": ("{z}/ds/m_blank_lines.csv", "lacks column"),
}
CROPS_ONLY_ERRORS = {
    "empty-npz": ("{z}/empty.npz", "not a painmon crops file"),
    "garbage-npz": ("{z}/garbage.npz", "not a painmon crops file"),
    "npy-as-npz": ("{z}/crops_npy.npz", "single .npy array"),
    "truncated-npz": ("{z}/crops_truncated.npz", "cannot read crops file"),
    "zip-not-crops": ("{z}/crops_zip.npz", "crops file"),
    "crops-no-dataset-hash": ("{z}/crops_nohash.npz", "does not record which dataset"),
    "crops-bad-labels": ("{z}/crops_badlabels.npz", "labels"),
}
for name, (path, words) in BAD_MANIFESTS.items():
    if name != "crops-npz":
        case(f"split-manifest-{name}", ["split", "--manifest", path, "--out", "s.json"], words)
for name, (path, words) in CROPS_ONLY_ERRORS.items():
    case(f"split-manifest-{name}", ["split", "--manifest", path, "--out", "s.json"], words)
for value, words in (
    ("0", ">= 2"),
    ("1", ">= 2"),
    ("-2", ">= 2"),
    ("abc", "invalid"),
    ("2.5", "invalid"),
    ("1000", "needs at least"),
):
    case(
        f"split-folds-{value}",
        ["split", "--manifest", "{z}/ds/manifest.csv", "--out", "s.json", "--folds", value],
        words,
    )
for value, words in (("-1", "from 0 to"), ("abc", "invalid"), ("4294967296", "seed")):
    case(
        f"split-seed-{value}",
        ["split", "--manifest", "{z}/ds/manifest.csv", "--out", "s.json", "--seed", value],
        words,
    )
case(
    "split-out-existing",
    "split --manifest {z}/ds/manifest.csv --out existing.json",
    "refusing to overwrite",
    setup="existing",
)
case(
    "split-out-existing-folder",
    "split --manifest {z}/ds/manifest.csv --out existing_dir",
    "refusing to overwrite",
    setup="existing",
)
case("split-out-empty-folder", "split --manifest {z}/ds/manifest.csv --out {z}/folder", "folder")
case("split-missing-out", "split --manifest {z}/ds/manifest.csv", "required: --out")
case("split-missing-manifest", "split --out s.json", "required: --manifest")
case(
    "split-outside-needs-flag",
    "split --manifest {z}/ds/m_outside.csv --out s.json",
    "--allow-outside-root",
)

# --- crops ---
for name in (
    "nonexistent",
    "folder",
    "empty",
    "garbage",
    "label-7",
    "pspi-nan",
    "missing-image",
    "outside-dotdot",
    "duplicate-row",
    "same-bytes-two-subjects",
    "latin1",
    "crops-npz",
):
    path, words = BAD_MANIFESTS[name]
    case(f"crops-manifest-{name}", ["crops", "--manifest", path, "--out", "c.npz"], words)
# The crop cache remembers that the image is unreadable (so a rerun does not decode it again).
case(
    "crops-no-faces",
    "crops --manifest {z}/ds/m_garbage_images.csv --out c.npz",
    "no face",
    artefacts=("painmon-cache", "painmon-cache/*"),
)
case(
    "crops-out-existing",
    "crops --manifest {z}/ds/manifest.csv --out existing.npz",
    "refusing to overwrite",
    setup="existing",
)
case(
    "crops-out-folder",
    "crops --manifest {z}/ds/manifest.csv --out existing_dir",
    "refusing to overwrite",
    setup="existing",
)
case("crops-out-empty-folder", "crops --manifest {z}/ds/manifest.csv --out {z}/folder", ".npz")
case("crops-out-not-npz", "crops --manifest {z}/ds/manifest.csv --out c.csv", ".npz")
case(
    "crops-out-empty-folder-npz",
    "crops --manifest {z}/ds/manifest.csv --out {z}/folder.npz",
    "is a folder",
)
case(
    "crops-cache-dir-is-file",
    "crops --manifest {z}/ds/manifest.csv --out c.npz --cache-dir {z}/text.txt",
    "not a folder",
)

# --- train and cv (shared options) ---
TRAINING_NUMBERS = {
    "--epochs": (("0", ">= 1"), ("-5", ">= 1"), ("abc", "invalid"), ("1.5", "invalid")),
    "--batch-size": (("0", ">= 2"), ("1", ">= 2"), ("-4", ">= 2"), ("abc", "invalid")),
    "--lr": (
        ("0", "> 0"),
        ("=-1e-4", "> 0"),
        ("nan", "finite"),
        ("inf", "finite"),
        ("abc", "invalid"),
    ),
    "--weight-decay": (("-1", ">= 0"), ("nan", "finite"), ("inf", "finite"), ("x", "invalid")),
    "--label-smoothing": (("-0.1", "0"), ("1", "0"), ("nan", "finite"), ("x", "invalid")),
    "--patience": (("0", ">= 1"), ("-1", ">= 1"), ("x", "invalid")),
    "--warmup-epochs": (("-1", ">= 0"), ("x", "invalid")),
    "--seed": (("-1", "from 0 to"), ("x", "invalid"), ("4294967296", "seed")),
}
for command in ("train", "cv"):
    base = [command, "--manifest", "{z}/crops.npz", "--out", "run"]
    # cv shares train's code path for these: a sample of them is enough there.
    sample = command == "cv"
    for option, values in TRAINING_NUMBERS.items():
        for value, words in values[:1] if sample else values:
            case(
                f"{command}{option}-{value.lstrip('=')}",
                [*base, option + value] if value.startswith("=") else [*base, option, value],
                words,
            )
    for name in (
        ("nonexistent", "garbage", "pspi-17")
        if sample
        else (
            "nonexistent",
            "folder",
            "empty",
            "garbage",
            "pspi-17",
            "missing-image",
            "outside-absolute",
            "one-file-two-subjects",
            "huge-field",
        )
    ):
        path, words = BAD_MANIFESTS[name]
        case(f"{command}-manifest-{name}", [command, "--manifest", path, "--out", "run"], words)
    for name in (
        ("garbage-npz",) if sample else ("garbage-npz", "truncated-npz", "crops-no-dataset-hash")
    ):
        path, words = CROPS_ONLY_ERRORS[name]
        case(f"{command}-manifest-{name}", [command, "--manifest", path, "--out", "run"], words)
    case(f"{command}-device-tpu", [*base, "--device", "tpu"], "device")
    case(f"{command}-device-cuda-absent", [*base, "--device", "cuda"], "cuda")
    case(f"{command}-model-unknown", [*base, "--model", "resnet9000"], "unknown model")
    if not sample:
        case(f"{command}-augment-bad", [*base, "--augment", "lots"], "invalid choice")
        case(f"{command}-compile-bad", [*base, "--compile", "max"], "invalid choice")
    for name, words in (
        ("nope/missing.json", "does not exist"),
        ("garbage.json", "split plan"),
        ("empty.json", "split plan"),
        ("splits_list.json", "keys"),
        ("splits_keys.json", "keys"),
        ("splits_types.json", "split plan"),
        ("splits_leak.json", "in both"),
        ("splits_other.json", "names none"),
        ("folder", "split plan"),
    ):
        label = name.split("/")[0].removesuffix(".json")
        if sample and label not in ("nope", "garbage", "splits_leak", "splits_other"):
            continue
        case(f"{command}-splits-{label}", [*base, "--splits", f"{{z}}/{name}"], words)
    case(
        f"{command}-splits-with-csv-manifest",
        [
            command,
            "--manifest",
            "{z}/ds/manifest.csv",
            "--out",
            "run",
            "--splits",
            "{z}/garbage.json",
        ],
        "split plan",
    )
    case(
        f"{command}-out-existing",
        [*base[:-1], "existing_dir"],
        "refusing to overwrite",
        setup="existing",
    )
    case(
        f"{command}-out-is-file",
        [*base[:-1], "existing.json"],
        "refusing to overwrite",
        setup="existing",
    )
    case(
        f"{command}-cache-dir-is-file",
        [
            command,
            "--manifest",
            "{z}/ds/manifest.csv",
            "--out",
            "run",
            "--cache-dir",
            "{z}/text.txt",
        ],
        "not a folder",
    )
    case(f"{command}-missing-out", [command, "--manifest", "{z}/crops.npz"], "required: --out")
case(
    "train-out-is-zoo-file",
    "train --manifest {z}/crops.npz --out {z}/text.txt",
    "refusing to overwrite",
)
for value, words in (("0", ">= 2"), ("1", ">= 2"), ("x", "invalid"), ("1000", "needs at least")):
    case(
        f"cv--folds-{value}",
        ["cv", "--manifest", "{z}/crops.npz", "--out", "run", "--folds", value],
        words,
    )
# A split plan's folds are what is cross-validated: an explicit --folds that differs is refused.
case(
    "cv--folds-differs-from-splits",
    ["cv", "--manifest", "{z}/crops.npz", "--out", "run", "--splits", "{z}/splits.json",
     "--folds", "3"],
    "--folds 3 differs from the 2 folds of --splits",
)  # fmt: skip
for value, words in (
    ("", "at least one"),
    (",", "at least one"),
    ("a,b", "integers"),
    ("1,,x", "integers"),
    ("1.5", "integers"),
    ("-1", ">= 0"),
    ("1,1", "twice"),
):
    case(
        f"cv--seeds-{value or 'blank'}",
        ["cv", "--manifest", "{z}/crops.npz", "--out", "run", "--seeds", value],
        words,
    )
for value, words in (("0", ">= 1"), ("-1", ">= 1"), ("x", "invalid")):
    case(
        f"cv--jobs-{value}",
        ["cv", "--manifest", "{z}/crops.npz", "--out", "run", "--jobs", value],
        words,
    )
# --resume continues the run in --out on its own split, data and recipe, or not at all: the
# weights of a run must never go on training on people its split holds out (issue: leak).
RESUME = ["train", "--manifest", "{z}/crops.npz", "--out", "run", "--resume", "--model",
          "micropainnet", "--device", "cpu", "--batch-size", "8", "--warmup-epochs", "0",
          "--epochs", "2"]  # fmt: skip
for case_id, argv, words in (
    ("other-split-seed", [*RESUME, "--split-seed", "7"], "--split-seed 7 is not the split seed"),
    ("other-splits", [*RESUME, "--splits", "{z}/splits.json"], "is not the split of the run"),
    ("other-model", [*RESUME[:7], "simplecnn", *RESUME[8:]], "'micropainnet' -> 'simplecnn'"),
    ("other-seed", [*RESUME, "--seed", "7"], "seed 42 -> 7"),
    ("other-dataset", [RESUME[0], RESUME[1], "{z}/crops_other_dataset.npz", *RESUME[3:]],
     "the run was split on dataset"),
    ("other-crops", [RESUME[0], RESUME[1], "{z}/crops_recropped.npz", *RESUME[3:]],
     "crops data_sha256"),
):  # fmt: skip
    case(f"train-resume-{case_id}", argv, words, setup="resumable")
case("train-resume-nothing", RESUME, "nothing to resume")

# --- evaluate ---
BAD_RUNS = {
    "nonexistent": ("{z}/nope/run", "not found"),
    "empty-folder": ("{z}/folder", "not found"),
    "text-file": ("{z}/text.txt", "not found"),
    "garbage-safetensors": ("{z}/garbage.safetensors", "garbage.json is not valid JSON"),
    "no-hash": ("{z}/run_nohash", "records no valid weights_sha256"),
    "bad-hash": ("{z}/run_badhash", "does not match the SHA-256"),
    "no-json": ("{z}/run_nojson", "not found"),
    "bad-json": ("{z}/run_badjson", "not valid JSON"),
    "json-list": ("{z}/run_jsonlist", "JSON object"),
    "truncated-weights": ("{z}/run_truncated", "unreadable"),
    "misfit-weights": ("{z}/run_misfit", "does not fit the 'dacnn' model"),
}
EVAL_BASE = ["evaluate", "--run", "{z}/run", "--manifest", "{z}/crops.npz"]
for name, (path, words) in BAD_RUNS.items():
    if name in ("text-file", "garbage-safetensors"):
        words = "give the run folder"
    case(f"evaluate-run-{name}", ["evaluate", "--run", path, "--manifest", "{z}/crops.npz"], words)
    # train --init-from reads a run folder as evaluate does, before any crop is made.
    case(
        f"train-init-from-{name}",
        ["train", "--manifest", "{z}/crops.npz", "--out", "run", "--init-from", path],
        words,
    )
    if name in ("nonexistent", "no-hash", "bad-json"):
        case(
            f"evaluate-run-{name}-csv-manifest",
            ["evaluate", "--run", path, "--manifest", "{z}/ds/manifest.csv"],
            words,
        )
for name in ("nonexistent", "folder", "empty", "garbage", "pspi-inf", "outside-symlink"):
    path, words = BAD_MANIFESTS[name]
    case(f"evaluate-manifest-{name}", ["evaluate", "--run", "{z}/run", "--manifest", path], words)
for name in ("garbage-npz", "crops-no-dataset-hash", "npy-as-npz"):
    path, words = CROPS_ONLY_ERRORS[name]
    case(f"evaluate-manifest-{name}", ["evaluate", "--run", "{z}/run", "--manifest", path], words)
case("evaluate-split-bad", [*EVAL_BASE, "--split", "holdout"], "invalid choice")
# One person spelt two ways (an Excel-edited manifest) would be split as two people.
for command in ("split", "crops"):
    out = "s.json" if command == "split" else "c.npz"
    case(
        f"{command}-manifest-subject-spelt-two-ways",
        [command, "--manifest", "{z}/ds/m_case.csv", "--out", out],
        "'S000' and 's000' differ only in case",
    )
# A run whose splits.json is not the split it trained on (a CV fold of an older painmon):
# its val and test subjects hold people its weights learnt from.
for split in ("val", "test"):
    case(
        f"evaluate-split-{split}-learnt-from",
        ["evaluate", "--run", "{z}/run_leaky", "--manifest", "{z}/crops.npz", "--split", split,
         "--json", "ev.json"],
        "people its weights learnt from",
    )  # fmt: skip
for option, what in (
    ("--json", "a metrics file"),
    ("--predictions", "a predictions file"),
    ("--report", "a report"),
):
    name = option.strip("-")
    case(
        f"evaluate-{name}-existing",
        [*EVAL_BASE, option, "existing.json"],
        f"refusing to overwrite existing.json ({what})",
        setup="existing",
    )
    case(
        f"evaluate-{name}-existing-folder",
        [*EVAL_BASE, option, "existing_dir"],
        "refusing to overwrite",
        setup="existing",
    )
case("evaluate-missing-run", "evaluate --manifest {z}/crops.npz", "required: --run")

# --- export ---
EXPORT_BASE = ["export", "--run", "{z}/run", "--out", "m.onnx"]
for name, (path, words) in BAD_RUNS.items():
    case(
        f"export-run-{name}",
        ["export", "--run", path, "--out", "m.onnx", "--no-domain-gate"],
        words,
    )
for value, words in (
    ("0", "opset"),
    ("-1", "opset"),
    ("6", "opset"),
    ("99", "opset"),
    ("abc", "invalid"),
):
    case(f"export-opset-{value}", [*EXPORT_BASE, "--no-domain-gate", "--opset", value], words)
for value, words in (
    ("0", "[0.5, 1)"),
    ("1", "[0.5, 1)"),
    ("-0.5", "[0.5, 1)"),
    ("1.5", "[0.5, 1)"),
    ("nan", "finite"),
    ("inf", "finite"),
    ("abc", "invalid"),
):
    case(f"export-gate-quantile-{value}", [*EXPORT_BASE, "--gate-quantile", value], words)
case(
    "export-out-existing",
    [*EXPORT_BASE[:-1], "existing.onnx", "--no-domain-gate"],
    "refusing to overwrite",
    setup="existing",
)
case(
    "export-sidecar-existing",
    [*EXPORT_BASE[:-1], "lonely.onnx", "--no-domain-gate"],
    "checksum",
    setup="existing",
)
case(
    "export-out-folder",
    [*EXPORT_BASE[:-1], "models.onnx", "--no-domain-gate"],
    "refusing to overwrite",
    setup="existing",
)
case("export-out-empty-folder", [*EXPORT_BASE[:-1], "{z}/folder", "--no-domain-gate"], ".onnx")
case(
    "export-out-empty-folder-onnx",
    [*EXPORT_BASE[:-1], "{z}/folder.onnx", "--no-domain-gate"],
    "is a folder",
)
for ext in ("txt", "pt", "safetensors"):
    case(f"export-out-ext-{ext}", [*EXPORT_BASE[:-1], f"m.{ext}", "--no-domain-gate"], ".onnx")
case(
    "export-no-gate-with-manifest",
    [*EXPORT_BASE, "--no-domain-gate", "--manifest", "{z}/crops.npz"],
    "--no-domain-gate",
)
case(
    "export-no-gate-with-quantile",
    [*EXPORT_BASE, "--no-domain-gate", "--gate-quantile", "0.9"],
    "--no-domain-gate",
)
case(
    "export-no-gate-with-ring-swap",
    [*EXPORT_BASE, "--no-domain-gate", "--gate-ring-swap"],
    "--gate-ring-swap",
)
case(
    "export-no-gate-with-threshold",
    [*EXPORT_BASE, "--no-domain-gate", "--gate-threshold", "cross-fit"],
    "--gate-threshold",
)
case("export-gate-threshold-unknown", [*EXPORT_BASE, "--gate-threshold", "median"], "invalid")
for name in ("nonexistent", "garbage", "label-7"):
    path, words = BAD_MANIFESTS[name]
    case(f"export-manifest-{name}", [*EXPORT_BASE, "--manifest", path], words)
for name in ("garbage-npz", "truncated-npz"):
    path, words = CROPS_ONLY_ERRORS[name]
    case(f"export-manifest-{name}", [*EXPORT_BASE, "--manifest", path], words)
case("export-gate-no-dataset", EXPORT_BASE, "dataset")
case("export-missing-out", "export --run {z}/run", "required: --out")

# --- sources (monitor, app, demo, bench pipeline/soak/app) ---
BAD_SOURCES = {
    "camera-letters": ("camera:x", "camera number"),
    "camera-empty": ("camera:", "camera number"),
    "camera-negative": ("camera:-1", "camera number"),
    "camera-superscript": ("camera:\u00b2", "camera number"),
    "camera-absent": ("camera:63", "camera 63"),
    "synthetic-letters": ("synthetic:abc", "whole-number seed"),
    "synthetic-negative": ("synthetic:-1", "whole-number seed"),
    "synthetic-fraction": ("synthetic:1.5", "whole-number seed"),
    "synthetic-superscript": ("synthetic:\u00b3", "whole-number seed"),
    "rtsp-port-too-big": ("rtsp://127.0.0.1:99999/stream", "port"),
    "rtsp-port-letters": ("rtsp://127.0.0.1:abc/stream", "port"),
    "rtsp-port-zero": ("rtsp://127.0.0.1:0/stream", "port"),
    "rtsp-no-host": ("rtsp:///stream", "host"),
    "http-no-host": ("http://:8080/x", "host"),
    "ftp-scheme": ("ftp://example.org/video.mp4", "ftp"),
    "file-scheme": ("file:///tmp/video.mp4", "file"),
    "udp-scheme": ("udp://239.0.0.1:1234", "udp"),
    "blank": ("", "no video source"),
    "spaces": ("   ", "no video source"),
    "nonexistent": ("{z}/nope/video.mp4", "no file or folder"),
    "text-file": ("{z}/text.txt", "could not be opened"),
    "garbage-video": ("{z}/garbage.mp4", "could not be opened"),
    "empty-video": ("{z}/empty.mp4", "could not be opened"),
    "truncated-video": ("{z}/clip_truncated.mp4", "could not be opened"),
    "empty-image-folder": ("{z}/folder", "holds no .png"),
    "folder-of-text": ("{z}/textfolder", "holds no .png"),
}
for name, (source, words) in BAD_SOURCES.items():
    case(
        f"monitor-source-{name}",
        ["monitor", "--source", source, "--model", "{z}/model.onnx", "--out", "sessions"],
        words,
    )
BAD_MODELS = {
    "nonexistent": ("{z}/nope/model.onnx", "not found"),
    "text-file": ("{z}/text.txt", "is not a model"),
    "empty": ("{z}/empty.onnx", "onnx"),
    "garbage": ("{z}/garbage.onnx", "onnx"),
    "truncated": ("{z}/truncated.onnx", "onnx"),
    "no-metadata": ("{z}/nometa.onnx", "metadata"),
    "bad-metadata": ("{z}/badmeta.onnx", "metadata"),
    "external-data": ("{z}/external.onnx", "external"),
    "external-data-missing": ("{z}/external_missing.onnx", "external"),
    "folder-onnx": ("{z}/folder.onnx", "folder"),
    "empty-folder": ("{z}/folder", "folder"),
    "run-no-hash": ("{z}/run_nohash", "records no valid weights_sha256"),
    "run-bad-hash": ("{z}/run_badhash", "does not match the SHA-256"),
    "garbage-safetensors": ("{z}/garbage.safetensors", "garbage.json is not valid JSON"),
    "no-sidecar": ("{z}/nosidecar.onnx", "nosidecar.onnx.sha256 is missing"),
    "sidecar-mismatch": ("{z}/mismatch.onnx", "sha256"),
}
for name, (model, words) in BAD_MODELS.items():
    case(
        f"monitor-model-{name}",
        ["monitor", "--source", "synthetic", "--model", model, "--out", "sessions"],
        words,
    )
MONITOR_BASE = [
    "monitor",
    "--source",
    "synthetic",
    "--model",
    "{z}/model.onnx",
    "--out",
    "sessions",
]
for value, words in (
    ("0", "> 0"),
    ("-1", "> 0"),
    ("nan", "finite"),
    ("inf", "finite"),
    ("abc", "invalid"),
):
    case(f"monitor-max-seconds-{value}", [*MONITOR_BASE, "--max-seconds", value], words)
BAD_FACE_MODELS = {
    "nonexistent": ("{z}/nope/face.task", "not found"),
    "empty": ("{z}/empty.task", "--face-model"),
    "garbage": ("{z}/garbage.task", "--face-model"),
    "folder": ("{z}/folder", "--face-model"),
    "text": ("{z}/text.txt", "--face-model"),
}
for name, (face, words) in BAD_FACE_MODELS.items():
    case(f"monitor-face-model-{name}", [*MONITOR_BASE, "--face-model", face], words)
case("monitor-out-is-file", [*MONITOR_BASE[:-1], "existing.json"], "not a folder", setup="existing")
case("monitor-out-is-zoo-file", [*MONITOR_BASE[:-1], "{z}/text.txt"], "not a folder")
for value, label in (("", "blank"), ("a/b", "slash"), ("line\nbreak", "newline"), ("..", "dots")):
    case(f"monitor-pseudonym-{label}", [*MONITOR_BASE, "--pseudonym", value], "pseudonym")
case("monitor-missing-source", "monitor --out sessions", "required: --source")
case("monitor-realtime-value", [*MONITOR_BASE, "--realtime", "yes"], "unrecognized arguments")

for command in ("app", "demo"):
    # demo shares app's checks: a sample of them is enough there.
    sample = command == "demo"
    for name in (
        ("camera-letters", "rtsp-port-too-big", "nonexistent")
        if sample
        else (
            "camera-letters",
            "camera-superscript",
            "synthetic-letters",
            "rtsp-port-too-big",
            "rtsp-no-host",
            "ftp-scheme",
            "nonexistent",
            "blank",
            "text-file",
        )
    ):
        source, words = BAD_SOURCES[name]
        case(
            f"{command}-source-{name}",
            [command, "--source", source, "--model", "{z}/model.onnx"],
            words,
        )
    for name in (
        ("nonexistent", "garbage")
        if sample
        else ("nonexistent", "folder-onnx", "garbage", "truncated", "no-metadata")
    ):
        model, words = BAD_MODELS[name]
        case(f"{command}-model-{name}", [command, "--source", "synthetic", "--model", model], words)
    for name in ("nonexistent",) if sample else ("nonexistent", "garbage", "folder"):
        face, words = BAD_FACE_MODELS[name]
        case(
            f"{command}-face-model-{name}",
            [command, "--source", "synthetic", "--model", "{z}/model.onnx", "--face-model", face],
            words,
        )
    case(f"{command}-unknown-option", [command, "--camera", "0"], "unrecognized arguments")

# --- bench ---
case("bench-no-what", "bench", "choose")
case("bench-unknown-what", "bench frobnicate", "invalid choice")
BENCH_TRAIN = ["bench", "train", "--device", "cpu"]
for option, values in (
    ("--epochs", (("0", ">= 1"), ("-1", ">= 1"), ("x", "invalid"))),
    ("--batch-size", (("0", ">= 2"), ("1", ">= 2"), ("x", "invalid"))),
    ("--jobs", (("0", ">= 1"), ("-2", ">= 1"), ("x", "invalid"))),
):
    for value, words in values:
        case(f"bench-train{option}-{value}", [*BENCH_TRAIN, option, value], words)
case("bench-train-device-tpu", "bench train --device tpu", "device")
case("bench-train-device-cuda-absent", "bench train --device cuda", "cuda")
case("bench-train-model-unknown", [*BENCH_TRAIN, "--model", "resnet9000"], "unknown model")
case("bench-train-compile-bad", [*BENCH_TRAIN, "--compile", "max"], "invalid choice")
case("bench-train-engine-bad", [*BENCH_TRAIN, "--engine", "threads"], "invalid choice")
case("bench-train-members-0", [*BENCH_TRAIN, "--engine", "stacked", "--members", "0"], ">= 1")
case("bench-train-members-without-stacked", [*BENCH_TRAIN, "--members", "15"], "--engine stacked")
case("bench-train-stacked-jobs", [*BENCH_TRAIN, "--engine", "stacked-bmm", "--jobs", "2"],
     "--jobs 2")  # fmt: skip
case(
    "bench-train-json-existing",
    [*BENCH_TRAIN, "--json", "existing.json"],
    "refusing to overwrite",
    setup="existing",
)

PIPE = ["bench", "pipeline", "--model", "{z}/model.onnx"]
for name in (
    "camera-letters",
    "synthetic-letters",
    "rtsp-port-letters",
    "udp-scheme",
    "nonexistent",
    "garbage-video",
    "truncated-video",
    "empty-image-folder",
):
    source, words = BAD_SOURCES[name]
    case(f"bench-pipeline-source-{name}", [*PIPE, "--source", source], words)
for name in ("nonexistent", "garbage", "no-metadata", "folder-onnx"):
    model, words = BAD_MODELS[name]
    case(
        f"bench-pipeline-model-{name}",
        ["bench", "pipeline", "--source", "synthetic", "--model", model],
        words,
    )
for value, words in (("0", ">= 1"), ("-1", ">= 1"), ("x", "invalid"), ("1.5", "invalid")):
    case(
        f"bench-pipeline-max-frames-{value}",
        [*PIPE, "--source", "{z}/clip.mp4", "--max-frames", value],
        words,
    )
case(
    "bench-pipeline-face-model-garbage",
    [*PIPE, "--source", "{z}/clip.mp4", "--face-model", "{z}/garbage.task"],
    "--face-model",
)
case(
    "bench-pipeline-json-existing",
    [*PIPE, "--source", "{z}/clip.mp4", "--json", "existing.json"],
    "refusing to overwrite",
    setup="existing",
)
case("bench-pipeline-missing-source", "bench pipeline", "required: --source")

SOAK = ["bench", "soak", "--model", "{z}/model.onnx"]
for value, words in (
    ("0", "> 0"),
    ("-5", "> 0"),
    ("nan", "finite"),
    ("inf", "finite"),
    ("x", "invalid"),
):
    case(f"bench-soak-seconds-{value}", [*SOAK, "--seconds", value], words)
for name in ("synthetic-letters", "ftp-scheme", "nonexistent"):
    source, words = BAD_SOURCES[name]
    case(f"bench-soak-source-{name}", [*SOAK, "--source", source], words)
case("bench-soak-model-garbage", "bench soak --model {z}/garbage.onnx", "onnx")
case(
    "bench-soak-json-existing",
    [*SOAK, "--json", "existing.json"],
    "refusing to overwrite",
    setup="existing",
)

BAPP = ["bench", "app", "--model", "{z}/model.onnx"]
for value, words in (
    ("0", "> 0"),
    ("-1", "> 0"),
    ("nan", "finite"),
    ("inf", "finite"),
    ("x", "invalid"),
):
    case(
        f"bench-app-seconds-{value}", [*BAPP, "--source", "{z}/clip.mp4", "--seconds", value], words
    )
for name in ("nonexistent", "garbage-video", "camera-letters"):
    source, words = BAD_SOURCES[name]
    case(f"bench-app-source-{name}", [*BAPP, "--source", source], words)
case("bench-app-source-camera-absent", [*BAPP, "--source", "camera:63"], "camera 63")
case(
    "bench-app-model-nonexistent",
    "bench app --source {z}/clip.mp4 --model {z}/nope/m.onnx",
    "not found",
)
case("bench-app-model-garbage", "bench app --source {z}/clip.mp4 --model {z}/garbage.onnx", "onnx")
case(
    "bench-app-json-existing",
    [*BAPP, "--source", "{z}/clip.mp4", "--json", "existing.json"],
    "refusing to overwrite",
    setup="existing",
)

AU = ["bench", "au", "--skip-media"]
for value, words in (
    ("", "at least one"),
    ("a,b", "integers"),
    ("1.5", "integers"),
    ("-1", ">= 0"),
):
    case(f"bench-au-seeds-{value or 'blank'}", [*AU, "--seeds", value], words)
for option in ("--seconds", "--fps"):
    for value, words in (("0", "> 0"), ("-1", "> 0"), ("nan", "finite"), ("x", "invalid")):
        case(f"bench-au{option}-{value}", [*AU, option, value], words)
case("bench-au-nothing-to-do", "bench au --skip-media --skip-synth", "nothing to do")
case(
    "bench-au-synth-dir-existing",
    [*AU, "--synth-dir", "existing_dir"],
    "refusing to overwrite",
    setup="existing",
)
case("bench-au-synth-dir-is-file", [*AU, "--synth-dir", "{z}/text.txt"], "refusing to overwrite")
case("bench-au-media-nonexistent", "bench au --skip-synth --media {z}/nope", "not found")
case("bench-au-media-file", "bench au --skip-synth --media {z}/text.txt", "not found")
case("bench-au-face-model-haar", [*AU, "--face-model", "haar"], "not Haar")
case("bench-au-face-model-nonexistent", [*AU, "--face-model", "{z}/nope/f.task"], "not found")

GATE = ["bench", "gate", "--model", "{z}/gated.onnx"]
case("bench-gate-nothing-to-measure", GATE, "nothing to measure")
case(
    "bench-gate-model-ungated",
    "bench gate --model {z}/model.onnx --crops {z}/crops.npz",
    "no domain gate",
)
for name in ("nonexistent", "garbage", "truncated", "folder-onnx"):
    model, words = BAD_MODELS[name]
    case(
        f"bench-gate-model-{name}",
        ["bench", "gate", "--model", model, "--crops", "{z}/crops.npz"],
        words,
    )
for name in ("garbage-npz", "truncated-npz", "npy-as-npz"):
    path, words = CROPS_ONLY_ERRORS[name]
    case(f"bench-gate-crops-{name}", [*GATE, "--crops", path], words)
case("bench-gate-crops-nonexistent", [*GATE, "--crops", "{z}/nope/c.npz"], "not found")
case(
    "bench-gate-splits-without-crops",
    [*GATE, "--real", "{z}/clip.mp4", "--splits", "{z}/splits_other.json"],
    "--crops",
)
case(
    "bench-gate-splits-garbage",
    [*GATE, "--crops", "{z}/crops.npz", "--splits", "{z}/garbage.json"],
    "split plan",
)
case("bench-gate-real-nonexistent", [*GATE, "--real", "{z}/nope/v.mp4"], "no file or folder")
case("bench-gate-real-garbage", [*GATE, "--real", "{z}/garbage.mp4"], "could not be opened")
case(
    "bench-gate-json-existing",
    [*GATE, "--crops", "{z}/crops.npz", "--json", "existing.json"],
    "refusing to overwrite",
    setup="existing",
)

# --- reproduce ---
REP = ["reproduce", "--manifest", "{z}/crops.npz", "--out", "rep"]
for name in ("nonexistent", "folder", "empty", "garbage", "label-7", "outside-dotdot"):
    path, words = BAD_MANIFESTS[name]
    case(f"reproduce-manifest-{name}", ["reproduce", "--manifest", path, "--out", "rep"], words)
for name in ("garbage-npz", "crops-no-dataset-hash"):
    path, words = CROPS_ONLY_ERRORS[name]
    case(f"reproduce-manifest-{name}", ["reproduce", "--manifest", path, "--out", "rep"], words)
for option, values in (
    ("--epochs", (("0", ">= 1"), ("x", "invalid"))),
    ("--batch-size", (("1", ">= 2"), ("x", "invalid"))),
    ("--lr", (("0", "> 0"), ("nan", "finite"), ("inf", "finite"))),
    ("--jobs", (("0", ">= 1"), ("x", "invalid"))),
    ("--folds", (("1", ">= 2"), ("x", "invalid"))),
    ("--seeds", (("a", "integers"), ("", "at least one"))),
):
    for value, words in values:
        case(f"reproduce{option}-{value or 'blank'}", [*REP, option, value], words)
case("reproduce-device-tpu", [*REP, "--device", "tpu"], "device")
case("reproduce-splits-garbage", [*REP, "--splits", "{z}/garbage.json"], "split plan")
case("reproduce-splits-nonexistent", [*REP, "--splits", "{z}/nope/s.json"], "does not exist")
case(
    "reproduce-out-existing", [*REP[:-1], "existing_dir"], "refusing to overwrite", setup="existing"
)
case("reproduce-missing-manifest", "reproduce --out rep", "required: --manifest")

# --- every command: an unknown option ---
REQUIRED = {
    "split": "--manifest {z}/ds/manifest.csv --out s.json",
    "crops": "--manifest {z}/ds/manifest.csv --out c.npz",
    "train": "--manifest {z}/crops.npz --out run",
    "cv": "--manifest {z}/crops.npz --out run",
    "evaluate": "--run {z}/run --manifest {z}/crops.npz",
    "export": "--run {z}/run --out m.onnx",
    "reproduce": "--manifest {z}/crops.npz --out rep",
}
for command, required in REQUIRED.items():
    case(
        f"{command}-unknown-option", f"{command} {required} --frobnicate", "unrecognized arguments"
    )
    case(f"{command}-stray-value", f"{command} {required} extra", "unrecognized arguments: extra")


# Bad inputs that are not clean yet, left out of the table until the files they need are
# free (another engineer is editing core/live/scoring.py): id -> what is wrong today.
PENDING: dict[str, str] = {}  # case id -> why it is not clean yet (none today)
CASES = [c for c in CASES if c.id not in PENDING]


# --- per-case setups ---------------------------------------------------------------------


def _setup_existing(folder: Path) -> None:
    """Outputs that are already there: the overwrite refusals must leave them as they are."""
    (folder / "existing.json").write_text('{"kept": true}\n')
    (folder / "existing.npz").write_bytes(b"PK kept")
    (folder / "existing.onnx").write_bytes(b"kept model")
    (folder / "lonely.onnx.sha256").write_text("0" * 64 + "  lonely.onnx\n")
    (folder / "video.mp4").write_bytes(b"kept video")
    (folder / "clip.truth.csv").write_text("t_s,pspi\n0,0\n")
    (folder / "existing_dir").mkdir()
    (folder / "existing_dir" / "kept.txt").write_text("kept\n")
    (folder / "models.onnx").mkdir()
    (folder / "models.onnx" / "kept.txt").write_text("kept\n")


_ZOO: list[Path] = []  # the zoo folder, once built (setups copy prepared runs from it)


def _setup_resumable(folder: Path) -> None:
    """A run of `painmon train` that --resume could continue, in ``run``."""
    shutil.copytree(_ZOO[0] / "resumable", folder / "run")


SETUPS: dict[str, Callable[[Path], None]] = {
    "": lambda folder: None,
    "existing": _setup_existing,
    "resumable": _setup_resumable,
}


# --- the zoo of bad files (built once) -----------------------------------------------------


def _write_manifest(path: Path, header: str, rows: list[str]) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


def _build_zoo(zoo: Path, onnx_path: Path, gated_path: Path) -> None:
    """Every bad file the table names, plus a few good ones for the other arguments."""
    from painmon.core.research.crops import CropSet
    from painmon.core.research.datasets import load_dataset
    from painmon.core.research.splits import make_splits
    from painmon.core.synth.dataset import write_dataset
    from painmon.core.synth.stream import write_video

    rng = np.random.default_rng(12)
    garbage = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for ext in ("csv", "onnx", "npz", "json", "mp4", "task", "safetensors", "bin"):
        (zoo / f"empty.{ext}").write_bytes(b"")
        (zoo / f"garbage.{ext}").write_bytes(garbage)
    (zoo / "text.txt").write_text("hello, this is not what you are looking for\n")
    for name in ("folder", "folder.csv", "folder.onnx", "folder.npz"):
        (zoo / name).mkdir()
    (zoo / "textfolder").mkdir()
    (zoo / "textfolder" / "notes.txt").write_text("no images here\n")

    # A small synthetic dataset and manifests with one defect each.
    ds = zoo / "ds"
    write_dataset(ds, SUBJECTS, 5, seed=0, image_size_px=64)
    good = (ds / "manifest.csv").read_text().splitlines()
    header, rows = good[0], good[1:]
    cols = header.split(",")
    first = dict(zip(cols, rows[0].split(","), strict=True))
    img = first["path"]
    (ds / "s000" / "img.png").write_bytes((ds / img).read_bytes())
    (ds / "s000" / "dir.png").mkdir()
    (ds / "garbage.png").write_bytes(garbage)
    (zoo / "outside.png").write_bytes((ds / img).read_bytes()[:-1] + b"\x00")
    (ds / "link.png").symlink_to(zoo / "outside.png")
    simple = "path,subject,pspi"
    _write_manifest(ds / "m_header_only.csv", simple, [])
    _write_manifest(ds / "m_no_path.csv", "file,subject,pspi", [f"{img},s000,0"])
    _write_manifest(ds / "m_no_label.csv", "path,subject", [f"{img},s000"])
    _write_manifest(ds / "m_label7.csv", "path,subject,label", [f"{img},s000,7"])
    _write_manifest(ds / "m_label_text.csv", "path,subject,label", [f"{img},s000,high"])
    _write_manifest(ds / "m_pspi_neg.csv", simple, [f"{img},s000,-1"])
    _write_manifest(ds / "m_pspi_17.csv", simple, [f"{img},s000,17"])
    _write_manifest(ds / "m_pspi_nan.csv", simple, [f"{img},s000,nan"])
    _write_manifest(ds / "m_pspi_inf.csv", simple, [f"{img},s000,1e400"])
    _write_manifest(ds / "m_pspi_text.csv", simple, [f"{img},s000,ouch"])
    _write_manifest(ds / "m_disagree.csv", "path,subject,pspi,label", [f"{img},s000,0,3"])
    _write_manifest(ds / "m_frame_neg.csv", "path,subject,pspi,frame_index", [f"{img},s000,0,-2"])
    _write_manifest(ds / "m_missing_img.csv", simple, ["s000/missing.png,s000,0"])
    _write_manifest(ds / "m_img_folder.csv", simple, ["s000/dir.png,s000,0"])
    _write_manifest(ds / "m_outside.csv", simple, [f"{img},s000,0", "../outside.png,s001,0"])
    _write_manifest(ds / "m_outside_abs.csv", simple, [f"{zoo / 'outside.png'},s001,0"])
    _write_manifest(ds / "m_outside_link.csv", simple, ["link.png,s001,0"])
    _write_manifest(ds / "m_dup.csv", simple, [f"{img},s000,0", f"{img},s000,0"])
    _write_manifest(
        ds / "m_two_subjects.csv",
        "path,subject,pspi,frame_index",
        [f"{img},s000,0,0", f"{img},s001,0,1"],
    )
    _write_manifest(ds / "m_same_bytes.csv", simple, [f"{img},s000,0", "s000/img.png,s001,0"])
    _write_manifest(ds / "m_empty_subject.csv", simple, [f"{img}, ,0"])
    other_img = next(r.split(",")[0] for r in rows if r.split(",")[1] == "s001")
    _write_manifest(ds / "m_case.csv", simple, [f"{img},s000,0", f"{other_img},S000,0"])
    _write_manifest(ds / "m_huge_field.csv", simple, [f"{img},{'s' * 200_000},0"])
    (ds / "m_nul.csv").write_bytes(f"{simple}\n{img}\x00,s000,0\n".encode())
    (ds / "m_latin1.csv").write_bytes(f"{simple}\n{img},Jos\xe9,0\n".encode("latin-1"))
    _write_manifest(ds / "m_formula.csv", simple, [f'{img},"=HYPERLINK(""x"")",99'])
    _write_manifest(ds / "m_tabs.csv", "path\tsubject\tpspi", [f"{img}\ts000\t0"])
    (ds / "m_blank_lines.csv").write_text("\n\n\n")
    _write_manifest(
        ds / "m_garbage_images.csv", simple, [f"garbage.png,s{i:03d},0" for i in range(1)]
    )

    # Crops files: a good one (toy crops, 12 subjects) and broken ones.
    n = SUBJECTS * 5
    images = rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    labels = np.arange(n) % 5
    subjects = np.array([f"s{i % SUBJECTS:03d}" for i in range(n)])
    crops = CropSet(
        images,
        labels,
        subjects,
        tuple(f"img{i}.png" for i in range(n)),
        (None,) * n,
        {"detector": "test"},
    )
    crops.save_npz(zoo / "crops.npz", dataset_sha256="ab" * 32)
    # The same crops said to come from another dataset; other crops of the same dataset.
    crops.save_npz(zoo / "crops_other_dataset.npz", dataset_sha256="cd" * 32)
    recropped = CropSet(255 - images, labels, subjects, crops.paths, crops.frame_indices,
                        {"detector": "test"})  # fmt: skip
    recropped.save_npz(zoo / "crops_recropped.npz", dataset_sha256="ab" * 32)
    crops.save_npz(zoo / "crops_nohash.npz")
    np.save(zoo / "crops_npy.npy", images[:2])
    (zoo / "crops_npy.npy").rename(zoo / "crops_npy.npz")
    whole = (zoo / "crops.npz").read_bytes()
    (zoo / "crops_truncated.npz").write_bytes(whole[: len(whole) // 2])
    with zipfile.ZipFile(zoo / "crops_zip.npz", "w") as archive:
        archive.writestr("readme.txt", "not crops")
    with np.load(zoo / "crops.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["labels"] = np.full(n, 9, dtype=np.int64)
    np.savez(zoo / "crops_badlabels.npz", **arrays)

    # Split plans.
    plan = make_splits(crops.as_samples(), "ab" * 32, folds=2)
    plan_data = json.loads(plan.to_json(zoo / "splits.json").read_text())
    (zoo / "splits_list.json").write_text("[]\n")
    (zoo / "splits_keys.json").write_text('{"train": []}\n')
    (zoo / "splits_types.json").write_text(json.dumps({**plan_data, "train": 5}))
    leak = {**plan_data, "test": [*plan_data["test"], plan_data["train"][0]]}
    (zoo / "splits_leak.json").write_text(json.dumps(leak))
    rename = {s: f"x{s}" for s in (f"s{i:03d}" for i in range(SUBJECTS))}
    other = {
        **plan_data,
        **{k: [rename[s] for s in plan_data[k]] for k in ("train", "val", "test")},
        "folds": [
            {k: [rename[s] for s in f[k]] for k in ("train", "val")} for f in plan_data["folds"]
        ],
    }
    (zoo / "splits_other.json").write_text(json.dumps(other))
    assert load_dataset(ds / "manifest.csv")  # the good manifest is good

    # Video: a short clip, a truncated copy.
    write_video(zoo / "clip.mp4", 1.0, 10.0, 0, size=(160, 120))
    clip = (zoo / "clip.mp4").read_bytes()
    (zoo / "clip_truncated.mp4").write_bytes(clip[:600])

    # Models: good ones, broken ones; each with a matching .sha256 sidecar (so that what is
    # tested is the damage, not the missing checksum), but for the model that lacks one.
    shutil.copy(onnx_path, zoo / "model.onnx")
    shutil.copy(gated_path, zoo / "gated.onnx")
    shutil.copy(onnx_path, zoo / "nosidecar.onnx")
    model_bytes = (zoo / "model.onnx").read_bytes()
    (zoo / "truncated.onnx").write_bytes(model_bytes[: len(model_bytes) // 2])
    (zoo / "mismatch.onnx").write_bytes(model_bytes)
    (zoo / "mismatch.onnx.sha256").write_text(f"{'0' * 64}  mismatch.onnx\n")
    import onnx

    proto = onnx.load(str(zoo / "model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(zoo / "nometa.onnx"))
    proto = onnx.load(str(zoo / "model.onnx"))
    for prop in proto.metadata_props:
        prop.value = "{not json" if prop.value.startswith(("{", "[")) else "\u2603 bad"
    onnx.save(proto, str(zoo / "badmeta.onnx"))
    proto = onnx.load(str(zoo / "model.onnx"))
    onnx.save(
        proto,
        str(zoo / "external.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external.onnx.data",
        size_threshold=0,
    )
    proto = onnx.load(str(zoo / "model.onnx"))
    onnx.save(
        proto,
        str(zoo / "external_missing.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="gone.data",
        size_threshold=0,
    )
    (zoo / "gone.data").unlink()
    for name in (
        "model",
        "gated",
        "truncated",
        "nometa",
        "badmeta",
        "external",
        "external_missing",
        "garbage",
        "empty",
    ):
        path = zoo / f"{name}.onnx"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (zoo / f"{name}.onnx.sha256").write_text(f"{digest}  {path.name}\n")

    # Run folders (checkpoint + JSON sidecar): a good one and broken ones.
    run = zoo / "run"
    run.mkdir()
    for name in ("best.safetensors", "best.json"):
        shutil.copy(onnx_path.parent / name, run / name)
    shutil.copy(zoo / "splits.json", run / "splits.json")
    meta = json.loads((run / "best.json").read_text())
    # The subjects a trained run records (export fits its domain gate on them).
    meta.update(train_subjects=plan_data["train"], val_subjects=plan_data["val"])
    (run / "best.json").write_text(json.dumps(meta))
    weights = (run / "best.safetensors").read_bytes()
    for name, meta_text, weight_bytes in (
        (
            "run_nohash",
            json.dumps({k: v for k, v in meta.items() if k != "weights_sha256"}),
            weights,
        ),
        ("run_badhash", json.dumps({**meta, "weights_sha256": "0" * 64}), weights),
        ("run_nojson", None, weights),
        ("run_badjson", '{"weights_sha256": ', weights),
        ("run_jsonlist", "[1, 2]", weights),
        (
            "run_truncated",
            json.dumps({**meta, "weights_sha256": hashlib.sha256(weights[:100]).hexdigest()}),
            weights[:100],
        ),
    ):
        folder = zoo / name
        folder.mkdir()
        (folder / "best.safetensors").write_bytes(weight_bytes)
        if meta_text is not None:
            (folder / "best.json").write_text(meta_text)

    # Weights of another network than best.json describes (the hash matches: they are the
    # bytes it records, just not a dacnn's).
    from safetensors.torch import save_file

    from painmon.models import create_model

    misfit = zoo / "run_misfit"
    misfit.mkdir()
    state = {k: v.contiguous() for k, v in create_model("micropainnet").state_dict().items()}
    save_file(state, str(misfit / "best.safetensors"))
    digest = hashlib.sha256((misfit / "best.safetensors").read_bytes()).hexdigest()
    (misfit / "best.json").write_text(json.dumps({**meta, "weights_sha256": digest}))
    shutil.copy(zoo / "splits.json", misfit / "splits.json")

    # A run that trained on people its splits.json puts in val and test.
    leaky = zoo / "run_leaky"
    shutil.copytree(run, leaky)
    every = plan_data["train"] + plan_data["val"] + plan_data["test"]
    (leaky / "best.json").write_text(json.dumps({**meta, "train_subjects": every}))

    # A run --resume could continue: one epoch of micropainnet on crops.npz's default split.
    from painmon.core.research.experiment import prepare_data, resolve_plan, train_on_plan
    from painmon.core.research.train import TrainConfig

    data = prepare_data(zoo / "crops.npz", progress=False)
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=8, warmup_epochs=0, device="cpu")
    train_on_plan(data, resolve_plan(data, None), cfg, zoo / "resumable", progress=False)


# --- running -------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its type, size, mtime and mode (links not followed)."""
    result = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        result[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return result


@dataclass
class Outcome:
    case: Case
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    before: dict[str, tuple] = field(default_factory=dict)
    after: dict[str, tuple] = field(default_factory=dict)


def _environment(folder: Path) -> dict[str, str]:
    """painmon's own settings and caches inside the case's folder (so the snapshot sees any
    write); HOME and the generic cache in a folder the cases share, outside the snapshots:
    third-party libraries write there on first use whatever painmon does (matplotlib, imported
    by MediaPipe, builds a font cache; ONNX Runtime writes a telemetry device id)."""
    third_party = folder.parent / "third-party-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAINMON_", "XDG_"))}
    env.update(
        HOME=str(third_party),
        XDG_CACHE_HOME=str(third_party / ".cache"),
        MPLCONFIGDIR=str(third_party / "matplotlib"),
        XDG_CONFIG_HOME=str(folder / ".config"),
        XDG_DATA_HOME=str(folder / ".local" / "share"),
        PAINMON_CACHE=str(folder / "painmon-cache"),
        QT_QPA_PLATFORM="offscreen",
        PYTHONDONTWRITEBYTECODE="1",
        # No network: a proxy that does not exist, for every library that honours one.
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        no_proxy="",
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _run_case(item: Case, root: Path, zoo: Path) -> Outcome:
    folder = root / item.id.replace("/", "_")
    folder.mkdir()
    SETUPS[item.setup](folder)
    argv = [arg.replace("{z}", str(zoo)) for arg in item.argv]
    before = snapshot(folder)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "painmon", *argv],
            cwd=folder,
            env=_environment(folder),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=CASE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
    return Outcome(item, code, out, err, time.perf_counter() - start, before, snapshot(folder))


@pytest.fixture(scope="session")
def bad_input_zoo(tmp_path_factory, untrained_dacnn_onnx, gated_dacnn_onnx) -> Path:
    zoo = tmp_path_factory.mktemp("zoo")
    _build_zoo(zoo, untrained_dacnn_onnx, gated_dacnn_onnx)
    _ZOO[:] = [zoo]
    return zoo


@pytest.fixture(scope="session")
def outcomes(request, tmp_path_factory, bad_input_zoo) -> dict[str, Outcome]:
    """Run the selected cases (all at once, ``WORKERS`` at a time); keyed by case id."""
    selected = {
        item.callspec.params["item"].id
        for item in request.session.items
        if hasattr(item, "callspec") and "item" in item.callspec.params
    }
    chosen = [c for c in CASES if c.id in selected]
    root = tmp_path_factory.mktemp("cases")
    zoo_before = snapshot(bad_input_zoo)
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda c: _run_case(c, root, bad_input_zoo), chosen))
    elapsed = time.perf_counter() - start
    print(f"\n{len(chosen)} bad-input cases in {elapsed:.0f} s wall ({WORKERS} at a time)")
    by_id = {r.case.id: r for r in results}
    by_id["__zoo__"] = (zoo_before, snapshot(bad_input_zoo))  # type: ignore[assignment]
    return by_id


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len(CASES) >= 300


def _painmon_lines(stderr: str) -> tuple[list[str], list[str]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    noise = [line for line in lines if any(p.search(line) for p in THIRD_PARTY_NOISE)]
    return [line for line in lines if line not in noise], noise


@pytest.mark.parametrize("item", CASES, ids=[c.id for c in CASES])
def test_bad_input(item: Case, outcomes: dict[str, Outcome]) -> None:
    result = outcomes[item.id]
    shown = (
        f"painmon {' '.join(item.argv)}\nexit {result.returncode} after {result.seconds:.1f} s\n"
        f"--- stderr ---\n{result.stderr[-3000:]}\n--- stdout ---\n{result.stdout[-1500:]}"
    )
    assert "Traceback" not in result.stderr + result.stdout, shown
    assert result.returncode == item.exit_code, shown
    lines, _noise = _painmon_lines(result.stderr)
    assert len(lines) == 1, shown
    assert ERROR_LINE.match(lines[0]), shown
    assert lines[0].startswith(f"painmon {item.command}"), shown
    assert item.message.lower() in lines[0].lower(), f"expected {item.message!r}\n{shown}"
    assert len(lines[0]) < 600, f"error line too long ({len(lines[0])})\n{shown}"
    before, after = result.before, result.after
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    removed = sorted(before.keys() - after.keys())
    added = sorted(
        k for k in after.keys() - before.keys() if not any(fnmatch(k, p) for p in item.artefacts)
    )
    assert not (changed or removed or added), (
        f"disk changed: added {added}, changed {changed}, removed {removed}\n{shown}"
    )


def test_zoo_unchanged(outcomes: dict[str, Outcome]) -> None:
    """No case wrote into (or changed) the prepared bad inputs."""
    before, after = outcomes["__zoo__"]  # type: ignore[misc]
    assert before == after
