"""render: action units change the right face regions, identities vary, detectors find faces."""

from itertools import pairwise

import numpy as np
import pytest

from painmon.core.live.face import create_crop_detector
from painmon.core.live.face_detect import HaarFaceDetector
from painmon.core.synth.dataset import render_sample, subject_identity
from painmon.core.synth.render import (
    HAIR_STYLES,
    ActionUnits,
    Scene,
    render_face,
    sample_aus_for_class,
)
from painmon.core.util.labels import NUM_CLASSES, PSPI_CLASS_RANGES


@pytest.mark.parametrize("label", range(NUM_CLASSES))
def test_sampled_aus_fall_in_the_class_pspi_range(label):
    rng = np.random.default_rng(label)
    low, high = PSPI_CLASS_RANGES[label]
    seen = set()
    for _ in range(100):
        aus = sample_aus_for_class(rng, label)
        assert low <= aus.pspi <= high and aus.label == label
        seen.add(aus.pspi)
    assert seen == set(range(low, high + 1))


def _frontal_render(identity, aus):
    scene = Scene(noise_sigma=0.0, blur_sigma=0.0, pillow=False)
    return render_face(identity, aus, scene, (256, 256), 128.0, (128.0, 120.0)).astype(np.int16)


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
    identity = subject_identity(0, 5)
    neutral = _frontal_render(identity, ActionUnits())
    active = _frontal_render(identity, ActionUnits(**{au: value}))
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
    identity = subject_identity(0, 5)
    faces = [_frontal_render(identity, ActionUnits(**{au: v})) for v in range(6)]
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
    identity = next(p for p in (subject_identity(0, s) for s in range(50)) if p.fitzpatrick >= 5)
    levels = (0, 1, 3, 5)
    sclera = [
        _bright_pixels(_frontal_render(identity, ActionUnits(au7=v)), identity, *EYES)
        for v in levels
    ]
    teeth = [
        _bright_pixels(_frontal_render(identity, ActionUnits(au10=v)), identity, *MOUTH)
        for v in levels
    ]
    assert all(a > b for a, b in pairwise(sclera)), sclera
    assert teeth[0] == 0
    assert all(a < b for a, b in pairwise(teeth)), teeth


def _detection_set():
    # 12 identities x 5 classes, so closed eyes and strong grimaces are in.
    for subject in range(12):
        for label in range(NUM_CLASSES):
            yield render_sample(11, subject, label, label)


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
    with create_crop_detector(face_model_path) as detector:
        assert _hit_rate(detector) >= 0.95


def test_haar_finds_synthetic_faces():
    assert _hit_rate(HaarFaceDetector()) >= 0.95


def test_identities_vary_across_the_fitzpatrick_range():
    people = [subject_identity(0, s) for s in range(60)]
    assert {p.fitzpatrick for p in people} == set(range(1, 7))
    assert len({p.hair_style for p in people}) == len(HAIR_STYLES)
    assert len({p.skin_rgb for p in people}) == 60


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="au4"):
        ActionUnits(au4=6)
    with pytest.raises(ValueError, match="au43"):
        ActionUnits(au43=2)
    with pytest.raises(ValueError, match="pain class"):
        sample_aus_for_class(np.random.default_rng(0), 5)
