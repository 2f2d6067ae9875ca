"""dataset: deterministic PNG datasets, manifest and class balance, `painmon synth` back-end."""

import csv
import hashlib
from collections import Counter

import cv2
import pytest

from painmon.core.synth.dataset import read_manifest, run_synth_cli, subject_labels, write_dataset
from painmon.core.synth.render import AU_NAMES
from painmon.core.util.labels import NUM_CLASSES, pspi_from_aus, pspi_to_class


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = write_dataset(tmp_path / "a", 2, 5, seed=3, image_size_px=96)
    b = write_dataset(tmp_path / "b", 2, 5, seed=3, image_size_px=96)
    c = write_dataset(tmp_path / "c", 2, 5, seed=4, image_size_px=96)
    rows_a = read_manifest(a)
    assert a.read_bytes() == b.read_bytes()
    for row in rows_a:
        assert _digest(a.parent / row["path"]) == _digest(b.parent / row["path"])
    rows_c = read_manifest(c)
    differing = sum(
        _digest(a.parent / ra["path"]) != _digest(c.parent / rc["path"])
        for ra, rc in zip(rows_a, rows_c, strict=True)
    )
    assert differing == len(rows_a)


def test_manifest_columns_and_labels_are_consistent(tmp_path):
    manifest = write_dataset(tmp_path / "ds", 3, 10, seed=1, image_size_px=128)
    with manifest.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header == [
        "path",
        "subject",
        "pspi",
        "label",
        "au4",
        "au6",
        "au7",
        "au9",
        "au10",
        "au43",
    ]
    rows = read_manifest(manifest)
    assert len(rows) == 30
    assert {r["subject"] for r in rows} == {"s000", "s001", "s002"}
    for row in rows:
        aus = [int(row[name]) for name in AU_NAMES]
        assert int(row["pspi"]) == pspi_from_aus(*aus)
        assert int(row["label"]) == pspi_to_class(int(row["pspi"]))
        image = cv2.imread(str(manifest.parent / row["path"]))
        assert image is not None and image.shape == (128, 128, 3)
        assert row["path"].startswith(row["subject"] + "/")


def test_classes_are_balanced_and_every_subject_has_every_class(tmp_path):
    rows = read_manifest(write_dataset(tmp_path, 4, 10, seed=2, image_size_px=64))
    assert Counter(int(r["label"]) for r in rows) == dict.fromkeys(range(NUM_CLASSES), 8)
    for subject in {r["subject"] for r in rows}:
        assert {int(r["label"]) for r in rows if r["subject"] == subject} == set(range(NUM_CLASSES))
    natural = subject_labels(0, 0, 400, balanced=False)
    assert Counter(natural)[0] > Counter(natural)[4]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_subjects"):
        write_dataset(tmp_path, 0, 5, seed=0)
    with pytest.raises(ValueError, match="images_per_subject"):
        write_dataset(tmp_path, 2, -1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        write_dataset(tmp_path, 2, 5, seed=-1)
    with pytest.raises(ValueError, match="image_size_px"):
        write_dataset(tmp_path, 2, 5, seed=0, image_size_px=8)
    with pytest.raises(ValueError, match="nothing to do"):
        run_synth_cli()


def test_cli_summary_reports_counts_and_paths(tmp_path):
    text = run_synth_cli(
        out=tmp_path / "ds",
        subjects=2,
        images_per_subject=5,
        seed=0,
        video=tmp_path / "v.mp4",
        seconds=1.0,
        fps=10.0,
    )
    assert "10 images of 2 subjects" in text
    assert "class 0 (No pain): 2" in text
    assert str(tmp_path / "ds" / "manifest.csv") in text
    assert "10 frames" in text and str(tmp_path / "v.mp4") in text
    assert (tmp_path / "v.truth.csv").is_file()
