import csv
import hashlib
from collections import Counter
from itertools import pairwise

import cv2
import numpy as np
import pytest

from painmon.core.live.face_detect import HaarFaceDetector, MediaPipeFaceDetector
from painmon.core.synth import patients as synth
from painmon.core.util.labels import NUM_CLASSES, PSPI_CLASS_RANGES, pspi_from_aus, pspi_to_class


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = synth.write_dataset(tmp_path / "a", 2, 5, seed=3, image_size_px=96)
    b = synth.write_dataset(tmp_path / "b", 2, 5, seed=3, image_size_px=96)
    c = synth.write_dataset(tmp_path / "c", 2, 5, seed=4, image_size_px=96)
    rows_a = synth.read_manifest(a)
    assert a.read_bytes() == b.read_bytes()
    for row in rows_a:
        assert _digest(a.parent / row["path"]) == _digest(b.parent / row["path"])
    rows_c = synth.read_manifest(c)
    differing = sum(
        _digest(a.parent / ra["path"]) != _digest(c.parent / rc["path"])
        for ra, rc in zip(rows_a, rows_c, strict=True)
    )
    assert differing == len(rows_a)


def test_manifest_columns_and_labels_are_consistent(tmp_path):
    manifest = synth.write_dataset(tmp_path / "ds", 3, 10, seed=1, image_size_px=128)
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
    rows = synth.read_manifest(manifest)
    assert len(rows) == 30
    assert {r["subject"] for r in rows} == {"s000", "s001", "s002"}
    for row in rows:
        aus = [int(row[name]) for name in synth.AU_NAMES]
        assert int(row["pspi"]) == pspi_from_aus(*aus)
        assert int(row["label"]) == pspi_to_class(int(row["pspi"]))
        image = cv2.imread(str(manifest.parent / row["path"]))
        assert image is not None and image.shape == (128, 128, 3)
        assert row["path"].startswith(row["subject"] + "/")


def test_classes_are_balanced_and_every_subject_has_every_class(tmp_path):
    rows = synth.read_manifest(synth.write_dataset(tmp_path, 4, 10, seed=2, image_size_px=64))
    assert Counter(int(r["label"]) for r in rows) == dict.fromkeys(range(NUM_CLASSES), 8)
    for subject in {r["subject"] for r in rows}:
        assert {int(r["label"]) for r in rows if r["subject"] == subject} == set(range(NUM_CLASSES))
    natural = synth.subject_labels(0, 0, 400, balanced=False)
    assert Counter(natural)[0] > Counter(natural)[4]


@pytest.mark.parametrize("label", range(NUM_CLASSES))
def test_sampled_aus_fall_in_the_class_pspi_range(label):
    rng = np.random.default_rng(label)
    low, high = PSPI_CLASS_RANGES[label]
    seen = set()
    for _ in range(100):
        aus = synth.sample_aus_for_class(rng, label)
        assert low <= aus.pspi <= high and aus.label == label
        seen.add(aus.pspi)
    assert seen == set(range(low, high + 1))


def _frontal_render(identity, aus):
    scene = synth.Scene(noise_sigma=0.0, blur_sigma=0.0, pillow=False)
    return synth.render_face(identity, aus, scene, (256, 256), 128.0, (128.0, 120.0)).astype(
        np.int16
    )


def _region_change(before, after, identity, x_range, y_range):
    """Mean absolute pixel change over a canonical-face box."""
    xs = np.array([x_range[0], x_range[1]]) * identity.face_width * 64 + 128
    ys = np.array([y_range[0], y_range[1]]) * identity.face_length * 64 + 120
    x0, x1 = (int(v) for v in np.sort(xs))
    y0, y1 = (int(v) for v in np.sort(ys))
    return float(np.abs(after[y0:y1, x0:x1] - before[y0:y1, x0:x1]).mean())


EYES = ((-0.65, 0.65), (-0.3, -0.05))
BROWS = ((-0.35, 0.35), (-0.65, -0.3))
MOUTH = ((-0.45, 0.45), (0.55, 0.95))
NOSE = ((-0.15, 0.15), (-0.2, 0.1))
CHIN = ((-0.3, 0.3), (1.0, 1.25))


@pytest.mark.parametrize(
    ("au", "value", "changed", "unchanged"),
    [
        ("au43", 1, EYES, MOUTH),
        ("au4", 4, BROWS, MOUTH),
        ("au10", 4, MOUTH, EYES),
        ("au9", 4, NOSE, CHIN),
        ("au7", 4, EYES, MOUTH),
        ("au6", 4, EYES, BROWS),
    ],
)
def test_each_action_unit_changes_its_own_face_region(au, value, changed, unchanged):
    identity = synth.subject_identity(0, 5)
    neutral = _frontal_render(identity, synth.ActionUnits())
    active = _frontal_render(identity, synth.ActionUnits(**{au: value}))
    inside = _region_change(neutral, active, identity, *changed)
    outside = _region_change(neutral, active, identity, *unchanged)
    assert inside > 3.0, f"{au} barely changes its region ({inside:.2f})"
    assert inside > 4 * outside, f"{au}: region {inside:.2f} vs elsewhere {outside:.2f}"


BROW_AREA = ((-0.75, 0.75), (-0.7, -0.15))


@pytest.mark.parametrize(
    ("au", "region"),
    [("au4", BROW_AREA), ("au6", EYES), ("au7", EYES), ("au9", NOSE), ("au10", MOUTH)],
)
def test_every_intensity_step_is_a_comparably_visible_change(au, region):
    # PSPI adds intensities, so neighbouring pain classes differ by single FACS steps:
    # each step A..E must change the face by a comparable, non-negligible amount.
    identity = synth.subject_identity(0, 5)
    faces = [_frontal_render(identity, synth.ActionUnits(**{au: v})) for v in range(6)]
    steps = np.array([_region_change(a, b, identity, *region) for a, b in pairwise(faces)])
    assert steps.min() > 0.4 * steps.mean(), f"{au} has a near-invisible step: {steps.round(2)}"
    assert steps.min() > 2.5, f"{au} steps are too faint: {steps.round(2)}"
    from_rest = [_region_change(faces[0], face, identity, *region) for face in faces[1:]]
    assert from_rest[-1] > from_rest[0], f"{au}: E looks no stronger than A"


def _bright_pixels(image, identity, x_range, y_range):
    xs = np.array(x_range) * identity.face_width * 64 + 128
    ys = np.array(y_range) * identity.face_length * 64 + 120
    x0, x1 = (int(v) for v in np.sort(xs))
    y0, y1 = (int(v) for v in np.sort(ys))
    return int((image[y0:y1, x0:x1] > 140).all(axis=2).sum())


def test_stronger_intensity_changes_the_face_more():
    # A darker-skinned person, so that only eye whites and teeth count as bright.
    identity = next(
        p for p in (synth.subject_identity(0, s) for s in range(50)) if p.fitzpatrick >= 5
    )
    levels = (0, 1, 3, 5)
    sclera = [
        _bright_pixels(_frontal_render(identity, synth.ActionUnits(au7=v)), identity, *EYES)
        for v in levels
    ]
    teeth = [
        _bright_pixels(_frontal_render(identity, synth.ActionUnits(au10=v)), identity, *MOUTH)
        for v in levels
    ]
    assert all(a > b for a, b in pairwise(sclera)), sclera
    assert teeth[0] == 0
    assert all(a < b for a, b in pairwise(teeth)), teeth


def _detection_set():
    # 12 identities x 5 classes, so closed eyes and strong grimaces are in.
    for subject in range(12):
        for label in range(NUM_CLASSES):
            yield synth.render_sample(11, subject, label, label)


def _hit_rate(detector):
    hits = 0
    total = 0
    for sample in _detection_set():
        total += 1
        boxes = detector.detect(sample.rgb)
        if not boxes:
            continue
        cx, cy = boxes[0].center
        # The face is drawn ~128 px wide around (128, 120): the box must sit on it.
        if abs(cx - 128) < 40 and abs(cy - 120) < 45 and 60 < boxes[0].width < 200:
            hits += 1
    return hits / total


def test_mediapipe_finds_synthetic_faces(face_model_path):
    with MediaPipeFaceDetector(face_model_path) as detector:
        assert _hit_rate(detector) >= 0.95


def test_haar_finds_synthetic_faces():
    assert _hit_rate(HaarFaceDetector()) >= 0.95


def test_identities_vary_across_the_fitzpatrick_range():
    people = [synth.subject_identity(0, s) for s in range(60)]
    assert {p.fitzpatrick for p in people} == set(range(1, 7))
    assert len({p.hair_style for p in people}) == len(synth.HAIR_STYLES)
    assert len({p.skin_rgb for p in people}) == 60


def test_episode_rises_peaks_and_recovers():
    seconds = 100.0
    pspi = [synth.episode_pspi(t, seconds) for t in np.arange(0, seconds, 0.5)]
    assert pspi[0] == 0 and pspi[-1] == 0
    assert max(pspi) >= 7
    rise = pspi[50:90]
    assert all(b >= a for a, b in pairwise(rise))
    assert synth.episode_level(57.5, seconds) == 1.0


def test_video_has_right_frame_count_and_rising_then_falling_truth(tmp_path):
    path = synth.write_video(
        tmp_path / "patient.mp4", seconds=4.0, fps=10.0, seed=2, size=(320, 180)
    )
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (180, 320, 3)
        frames += 1
    capture.release()
    assert frames == 40
    truth_path = tmp_path / "patient.truth.csv"
    assert synth.truth_csv_path(path) == truth_path
    with truth_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "frame",
        "t_s",
        "au4",
        "au6",
        "au7",
        "au9",
        "au10",
        "au43",
        "pspi",
        "label",
    ]
    assert len(rows) == 40
    pspi = [int(r["pspi"]) for r in rows]
    peak = int(np.argmax(pspi))
    assert 10 <= peak <= 30 and pspi[peak] >= 7
    assert pspi[0] <= 1 and pspi[-1] <= 1
    for row in rows:
        assert int(row["pspi"]) == pspi_from_aus(*(int(row[n]) for n in synth.AU_NAMES))


def test_stream_is_deterministic_blinks_and_unpacks():
    stream = synth.SyntheticPatientStream(seed=4, fps=10.0, seconds=20.0, size=(320, 180))
    again = synth.SyntheticPatientStream(seed=4, fps=10.0, seconds=20.0, size=(320, 180))
    t_s, rgb, truth = stream.frame(7)
    assert t_s == pytest.approx(0.7) and rgb.shape == (180, 320, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, again.frame(7).rgb)
    assert truth.frame == 7
    # Spontaneous blinks during the rest phase show as brief AU43 in the ground truth.
    closures = [stream.blink_closure(t) for t in np.arange(0.0, 5.0, 0.01)]
    assert max(closures) == 1.0 and np.mean(closures) < 0.2
    assert sum(1 for _ in stream) == 200


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_subjects"):
        synth.write_dataset(tmp_path, 0, 5, seed=0)
    with pytest.raises(ValueError, match="images_per_subject"):
        synth.write_dataset(tmp_path, 2, -1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        synth.write_dataset(tmp_path, 2, 5, seed=-1)
    with pytest.raises(ValueError, match="image_size_px"):
        synth.write_dataset(tmp_path, 2, 5, seed=0, image_size_px=8)
    with pytest.raises(ValueError, match="seconds"):
        synth.write_video(tmp_path / "v.mp4", seconds=0, fps=30, seed=0)
    with pytest.raises(ValueError, match="fps"):
        synth.write_video(tmp_path / "v.mp4", seconds=1, fps=0, seed=0)
    with pytest.raises(OSError, match="video writer"):
        synth.write_video(
            tmp_path / "v.unknown-container", seconds=0.2, fps=10, seed=0, size=(320, 180)
        )
    with pytest.raises(ValueError, match="au4"):
        synth.ActionUnits(au4=6)
    with pytest.raises(ValueError, match="au43"):
        synth.ActionUnits(au43=2)
    with pytest.raises(ValueError, match="pain class"):
        synth.sample_aus_for_class(np.random.default_rng(0), 5)
    with pytest.raises(ValueError, match="nothing to do"):
        synth.run_synth_cli()


def test_cli_summary_reports_counts_and_paths(tmp_path):
    text = synth.run_synth_cli(
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
