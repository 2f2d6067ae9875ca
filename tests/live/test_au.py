import cv2
import numpy as np
import pytest

from painmon.core.live.au import (
    AU_NAMES,
    DEAD_ZONE,
    FULL_SCALE,
    AUEstimate,
    AUEstimator,
    blendshape_delta_to_intensity,
)
from painmon.core.live.face import FaceLandmarkerTracker, FaceObservation
from painmon.core.live.face_detect import FaceBox

BOX = FaceBox(100, 100, 120, 140, 0.5)
NEUTRAL = {
    "browDownLeft": 0.02,
    "browDownRight": 0.02,
    "cheekSquintLeft": 0.0,
    "cheekSquintRight": 0.0,
    "eyeSquintLeft": 0.35,
    "eyeSquintRight": 0.35,
    "noseSneerLeft": 0.0,
    "noseSneerRight": 0.0,
    "mouthUpperUpLeft": 0.05,
    "mouthUpperUpRight": 0.05,
    "eyeBlinkLeft": 0.1,
    "eyeBlinkRight": 0.1,
    "mouthSmileLeft": 0.01,
    "mouthSmileRight": 0.01,
    "jawOpen": 0.02,
}


def _obs(t_s, track_id=1, **changes):
    shapes = {**NEUTRAL, **changes}
    return FaceObservation(t_s, True, BOX, 1, "test", blendshapes=shapes, track_id=track_id)


def _calibrated(neutral=None):
    estimator = AUEstimator()
    estimator.calibrate_neutral([neutral or NEUTRAL] * 5)
    return estimator


def test_intensity_mapping_endpoints():
    assert blendshape_delta_to_intensity(-0.3) == 0.0
    assert blendshape_delta_to_intensity(DEAD_ZONE) == 0.0
    assert blendshape_delta_to_intensity(FULL_SCALE) == 5.0
    assert blendshape_delta_to_intensity(0.9) == 5.0
    assert blendshape_delta_to_intensity((DEAD_ZONE + FULL_SCALE) / 2) == pytest.approx(2.5)


def test_automatic_baseline_then_constant_face_reads_zero():
    estimator = AUEstimator(baseline_s=2.0, min_baseline_frames=10)
    estimates = [estimator.update(_obs(i / 10), i / 10) for i in range(40)]
    waiting = [e for e in estimates if not e.baseline_ready]
    assert waiting and all(e.pspi is None and not e.intensities for e in waiting)
    progress = [e.baseline_progress for e in waiting]
    assert progress == sorted(progress) and progress[-1] < 1.0
    ready = [e for e in estimates if e.baseline_ready]
    assert ready[0].t_s == pytest.approx(2.0)
    assert all(e.pspi == 0.0 for e in ready)
    assert set(ready[0].intensities) == set(AU_NAMES)


def test_brow_lowering_raises_au4():
    estimator = _calibrated()
    estimate = estimator.update(_obs(0.0, browDownLeft=0.52, browDownRight=0.52), 0.0)
    assert estimate.intensities["AU4"] > 3.5
    assert estimate.pspi == pytest.approx(estimate.intensities["AU4"])


def test_a_resting_frown_reads_zero_after_calibration():
    frowning = {**NEUTRAL, "browDownLeft": 0.45, "browDownRight": 0.45}
    uncalibrated = _calibrated().update(_obs(0.0, browDownLeft=0.45, browDownRight=0.45), 0.0)
    assert uncalibrated.intensities["AU4"] > 3
    estimator = _calibrated(frowning)
    assert estimator.update(_obs(0.0, browDownLeft=0.45, browDownRight=0.45), 0.0).pspi == 0.0
    harder = estimator.update(_obs(0.1, browDownLeft=0.75, browDownRight=0.75), 0.1)
    assert 1.5 < harder.intensities["AU4"] < 3


def test_pspi_formula_and_eyes_closed():
    estimator = _calibrated()
    pain = estimator.update(
        _obs(
            0.0,
            browDownLeft=0.4,
            browDownRight=0.4,
            cheekSquintLeft=0.2,
            cheekSquintRight=0.2,
            eyeSquintLeft=0.8,
            eyeSquintRight=0.8,
            noseSneerLeft=0.3,
            noseSneerRight=0.3,
            eyeBlinkLeft=0.9,
            eyeBlinkRight=0.8,
        ),
        0.0,
    )
    i = pain.intensities
    assert i["AU43"] == 1.0
    expected = i["AU4"] + max(i["AU6"], i["AU7"]) + max(i["AU9"], i["AU10"]) + i["AU43"]
    assert pain.pspi == pytest.approx(expected)
    assert pain.rounded_pspi() == round(i["AU4"]) + 4 + round(i["AU9"]) + 1
    # A blink of a half-closed eye is not AU43.
    half = estimator.update(_obs(0.1, eyeBlinkLeft=0.45, eyeBlinkRight=0.45), 0.1)
    assert half.intensities["AU43"] == 0.0


def test_a_smile_is_not_an_upper_lip_raise():
    estimator = _calibrated()
    smile = estimator.update(
        _obs(
            0.0,
            mouthUpperUpLeft=0.7,
            mouthUpperUpRight=0.7,
            mouthSmileLeft=0.8,
            mouthSmileRight=0.8,
        ),
        0.0,
    )
    assert smile.intensities["AU10"] == 0.0
    sneer = estimator.update(_obs(0.1, mouthUpperUpLeft=0.6, mouthUpperUpRight=0.6), 0.1)
    assert sneer.intensities["AU10"] > 4


def test_recalibration_and_new_patient_track():
    estimator = _calibrated()
    assert estimator.update(_obs(0.0, track_id=1), 0.0).baseline_ready
    estimator.request_recalibration()
    assert not estimator.update(_obs(0.1, track_id=1), 0.1).baseline_ready
    estimator = _calibrated()
    estimator.update(_obs(0.0, track_id=1), 0.0)
    assert not estimator.update(_obs(0.1, track_id=2), 0.1).baseline_ready


def test_unusable_frames_do_not_enter_the_baseline():
    estimator = AUEstimator(baseline_s=0.5, min_baseline_frames=3)
    no_face = FaceObservation(0.0, False, None, 0, "test")
    assert estimator.update(no_face, 0.0).pspi is None
    for t_s in (0.1, 0.2, 0.3, 0.9):  # a frowning, low-quality stretch
        estimator.update(_obs(t_s, browDownLeft=0.6, browDownRight=0.6), t_s, quality_ok=False)
    assert not estimator.baseline_ready
    for t_s in (1.0, 1.2, 1.4, 1.6):
        estimate = estimator.update(_obs(t_s), t_s)
    assert estimate.baseline_ready and estimate.pspi == 0.0
    assert estimator.baseline["browDownLeft"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="backwards"):
        estimator.update(_obs(1.0), 1.0)


def test_calibration_needs_blendshapes_and_estimates_are_validated():
    with pytest.raises(ValueError, match="Face Landmarker"):
        AUEstimator().calibrate_neutral([FaceObservation(0.0, True, BOX, 1, "haar")])
    with pytest.raises(ValueError, match="lack"):
        AUEstimator().calibrate_neutral([{"browDownLeft": 0.1}])
    with pytest.raises(ValueError, match="without PSPI"):
        AUEstimate(0.0, {"AU4": 1.0}, None, False, 0.5)
    with pytest.raises(ValueError, match="AU43"):
        AUEstimate(0.0, dict.fromkeys(AU_NAMES, 2.0), 8.0, True, 1.0)


def _video_observations(path, model, step, limit):
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    observations = {}
    with FaceLandmarkerTracker(model) as tracker:
        for index in range(limit):
            ok, bgr = capture.read()
            if not ok:
                break
            if index % step == 0:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                observations[index] = tracker.observe(rgb, index / fps)
    capture.release()
    return observations


def test_distress_reads_higher_than_smiling_on_the_same_face(shared_file, face_model_path):
    # WolfgangLanger: frames ~0-135 distressed (eyes shut, crying), ~150-215 calm,
    # ~290-420 smiling. Same person and same baseline, so the comparison is fair.
    observations = _video_observations(
        shared_file("media/WolfgangLanger_Pexels.mp4"), face_model_path, step=3, limit=420
    )
    assert all(o.face_found for o in observations.values())
    estimator = AUEstimator()
    estimator.calibrate_neutral(o for i, o in observations.items() if 150 <= i < 215)
    pspi = {i: estimator.update(o, o.t_s).pspi for i, o in observations.items()}

    def segment(lo, hi):
        return np.median([p for i, p in pspi.items() if lo <= i < hi])

    distressed, calm, smiling = segment(24, 135), segment(150, 215), segment(290, 420)
    assert calm < 0.5
    assert distressed > 3.0
    assert distressed > smiling + 1.0


def test_a_steady_face_reads_low_after_its_own_baseline(shared_file, face_model_path):
    observations = _video_observations(
        shared_file("media/single_face.mp4"), face_model_path, step=1, limit=72
    )
    estimator = AUEstimator(baseline_s=1.0, min_baseline_frames=15)
    estimates = [estimator.update(o, o.t_s) for o in observations.values()]
    scored = [e.pspi for e in estimates if e.pspi is not None]
    assert len(scored) > 30
    assert np.median(scored) < 1.0
