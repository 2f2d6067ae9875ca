import math

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
    "mouthClose": 0.01,
    "mouthFunnel": 0.01,
    "mouthPucker": 0.05,
}
# What the Face Landmarker reads on a broad laugh (measured on WolfgangLanger_Pexels.mp4).
LAUGH = {
    "mouthSmileLeft": 0.8,
    "mouthSmileRight": 0.8,
    "mouthUpperUpLeft": 0.78,
    "mouthUpperUpRight": 0.78,
    "eyeSquintLeft": 0.65,
    "eyeSquintRight": 0.65,
    "cheekSquintLeft": 0.1,
    "cheekSquintRight": 0.1,
    "jawOpen": 0.08,
}
# Brow lowerer, lid tightener and upper-lip raiser without a smile: the core pain pattern.
PAIN = {
    "browDownLeft": 0.4,
    "browDownRight": 0.4,
    "eyeSquintLeft": 0.8,
    "eyeSquintRight": 0.8,
    "mouthUpperUpLeft": 0.5,
    "mouthUpperUpRight": 0.5,
}
FPS = 30.0


def _obs(t_s, track_id=1, **changes):
    shapes = {**NEUTRAL, **changes}
    return FaceObservation(t_s, True, BOX, 1, "test", blendshapes=shapes, track_id=track_id)


def _calibrated(neutral=None):
    estimator = AUEstimator()
    estimator.calibrate_neutral([neutral or NEUTRAL] * 5)
    return estimator


def _feed(estimator, start_s, seconds, shapes_at=lambda t_s: {}, track_id=1):
    """Feed ``seconds`` of frames at 30 fps; ``shapes_at(t_s)`` gives the changes from NEUTRAL."""
    estimates = []
    for i in range(round(seconds * FPS)):
        t_s = start_s + i / FPS
        estimates.append(estimator.update(_obs(t_s, track_id, **shapes_at(t_s)), t_s))
    return estimates


def _talking(t_s):
    """Speech: the jaw and lips open and close ~4 times a second, moving the upper lip."""
    phase = math.sin(2 * math.pi * 4.0 * t_s)
    return {
        "jawOpen": 0.2 + 0.18 * phase,
        "mouthClose": 0.1 - 0.09 * phase,
        "mouthFunnel": 0.1 + 0.08 * math.sin(2 * math.pi * 2.5 * t_s),
        "mouthUpperUpLeft": 0.3 + 0.1 * phase,
        "mouthUpperUpRight": 0.3 + 0.1 * phase,
        "cheekSquintLeft": 0.2,
        "cheekSquintRight": 0.2,
    }


def test_intensity_mapping_endpoints():
    assert blendshape_delta_to_intensity(-0.3) == 0.0
    assert blendshape_delta_to_intensity(DEAD_ZONE) == 0.0
    assert blendshape_delta_to_intensity(FULL_SCALE) == 5.0
    assert blendshape_delta_to_intensity(0.9) == 5.0
    assert blendshape_delta_to_intensity((DEAD_ZONE + FULL_SCALE) / 2) == pytest.approx(2.5)


def test_a_constant_face_reads_zero_from_the_first_frame_until_the_baseline_is_final():
    estimator = AUEstimator(baseline_s=2.0, min_baseline_frames=10)
    estimates = _feed(estimator, 0.0, 4.0)
    assert all(e.pspi == 0.0 for e in estimates)
    assert set(estimates[0].intensities) == set(AU_NAMES)
    provisional = [e for e in estimates if e.baseline_provisional]
    assert provisional and all(not e.baseline_ready for e in provisional)
    progress = [e.baseline_progress for e in provisional]
    assert progress == sorted(progress) and progress[-1] < 1.0
    ready = [e for e in estimates if e.baseline_ready]
    assert ready[0].t_s == pytest.approx(2.0)
    assert all(not e.baseline_provisional and e.baseline_progress == 1.0 for e in ready)


def test_a_still_gets_a_provisional_value_against_a_typical_neutral_face():
    still = AUEstimator().update(_obs(0.0, **PAIN), 0.0)
    assert still.baseline_provisional and not still.baseline_ready
    assert still.pspi is not None and still.pspi > 6
    neutral_still = AUEstimator().update(_obs(0.0), 0.0)
    assert neutral_still.baseline_provisional and neutral_still.pspi == 0.0


def test_the_patients_own_provisional_baseline_exists_after_one_second():
    # A resting frown: the typical-face prior reads it as AU4 at first, the patient's own
    # baseline (from 1 s) reads it as 0, still provisional until the 30 s are up.
    frown = {"browDownLeft": 0.4, "browDownRight": 0.4}
    estimator = AUEstimator()
    estimates = _feed(estimator, 0.0, 1.5, lambda t_s: frown)
    assert estimates[0].intensities["AU4"] > 2
    after = [e for e in estimates if e.t_s >= 1.0]
    assert after and all(e.pspi == 0.0 and e.baseline_provisional for e in after)
    assert estimator.baseline["browDownLeft"] == pytest.approx(0.4)
    assert 0 < after[-1].baseline_progress < 0.1


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


def test_the_pain_pattern_without_a_smile_raises_pspi():
    estimate = _calibrated().update(_obs(0.0, **PAIN), 0.0)
    i = estimate.intensities
    assert i["AU4"] > 3 and i["AU7"] > 3.5 and i["AU10"] > 3
    assert estimate.pspi > 10


def test_a_smile_or_a_laugh_does_not_raise_pspi():
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
    assert smile.pspi == 0.0
    assert estimator.update(_obs(0.1, **LAUGH), 0.1).pspi == 0.0
    # Eyes shut in a laugh are not AU43 either.
    shut = estimator.update(_obs(0.2, **LAUGH, eyeBlinkLeft=0.65, eyeBlinkRight=0.65), 0.2)
    assert shut.pspi == 0.0
    # Without the smile, the same upper lip is AU10.
    sneer = estimator.update(_obs(0.3, mouthUpperUpLeft=0.6, mouthUpperUpRight=0.6), 0.3)
    assert sneer.intensities["AU10"] > 4


def test_a_smile_in_the_baseline_does_not_switch_the_smile_rule_off():
    # The old rule subtracted the smile's rise over the baseline: a patient calibrated
    # while smiling then read a broad laugh as AU10.
    smiling = {**NEUTRAL, "mouthSmileLeft": 0.6, "mouthSmileRight": 0.6}
    estimator = _calibrated(smiling)
    assert estimator.update(_obs(0.0, **LAUGH), 0.0).pspi == 0.0


def test_a_brow_lowered_grimace_is_not_taken_for_a_smile():
    # MediaPipe may read a grimace's mouth as a smile; the lowered brow marks it as pain.
    estimate = _calibrated().update(_obs(0.0, **PAIN, mouthSmileLeft=0.5, mouthSmileRight=0.5), 0.0)
    assert estimate.intensities["AU10"] > 3 and estimate.pspi > 10


def test_talking_does_not_raise_pspi():
    estimator = _calibrated()
    estimates = _feed(estimator, 0.0, 5.0, _talking)
    settled = [e.pspi for e in estimates if e.t_s >= 0.5]
    assert max(settled) < 0.5
    # Frozen in the same mouth shape (no speech), the upper-lip rise would count.
    held = AUEstimator()
    held.calibrate_neutral([NEUTRAL])
    frozen = _feed(held, 0.0, 1.0, lambda t_s: _talking(0.0625))  # sin = 1: mouth wide
    assert frozen[-1].intensities["AU10"] > 2


def test_talking_does_not_hide_pain_around_the_eyes_and_brow():
    estimator = _calibrated()
    pain_eyes = {"browDownLeft": 0.4, "browDownRight": 0.4, "eyeSquintLeft": 0.8}
    pain_eyes["eyeSquintRight"] = 0.8
    estimates = _feed(estimator, 0.0, 3.0, lambda t_s: {**_talking(t_s), **pain_eyes})
    assert min(e.pspi for e in estimates if e.t_s >= 1.0) > 6


def test_the_robust_baseline_ignores_smiling_talking_and_closed_eye_frames():
    estimator = AUEstimator(baseline_s=10.0)

    def day(t_s):
        second = int(t_s)
        if second % 3 == 0:
            return {}  # neutral one second in three
        if second % 3 == 1:
            return LAUGH
        return {**_talking(t_s), "eyeBlinkLeft": 0.8, "eyeBlinkRight": 0.8}

    estimates = _feed(estimator, 0.0, 12.0, day)
    assert estimates[-1].baseline_ready
    baseline = estimator.baseline
    assert baseline["mouthUpperUpLeft"] == pytest.approx(0.05)
    assert baseline["eyeSquintLeft"] == pytest.approx(0.35)
    assert baseline["eyeBlinkLeft"] == pytest.approx(0.1)
    assert all(e.pspi < 0.5 for e in estimates if int(e.t_s) % 3 != 2)
    # So a true upper-lip raise and squint still read (once the talking has stopped).
    after = _feed(estimator, estimates[-1].t_s + 0.1, 1.5, lambda t_s: PAIN)
    assert after[-1].pspi > 10


def test_recalibration_and_new_patient_track():
    estimator = _calibrated()
    assert estimator.update(_obs(0.0, track_id=1), 0.0).baseline_ready
    estimator.request_recalibration()
    again = estimator.update(_obs(0.1, track_id=1), 0.1)
    assert not again.baseline_ready and again.baseline_provisional
    estimator = _calibrated()
    estimator.update(_obs(0.0, track_id=1), 0.0)
    assert not estimator.update(_obs(0.1, track_id=2), 0.1).baseline_ready


def test_rebaselining_learns_the_new_resting_face():
    frown = {"browDownLeft": 0.4, "browDownRight": 0.4}
    estimator = AUEstimator(baseline_s=2.0)
    _feed(estimator, 0.0, 2.5)
    assert estimator.baseline_ready
    assert estimator.update(_obs(2.6, **frown), 2.6).intensities["AU4"] > 3
    estimator.request_recalibration()
    estimates = _feed(estimator, 3.0, 3.0, lambda t_s: frown)
    assert estimates[-1].baseline_ready and estimates[-1].pspi == 0.0
    assert estimator.baseline["browDownLeft"] == pytest.approx(0.4)


def test_unusable_frames_do_not_enter_the_baseline():
    estimator = AUEstimator(baseline_s=0.5, min_baseline_frames=3, provisional_s=0.2)
    no_face = FaceObservation(0.0, False, None, 0, "test")
    assert estimator.update(no_face, 0.0).pspi is None
    for t_s in (0.1, 0.2, 0.3, 0.9):  # a frowning, low-quality stretch
        estimate = estimator.update(
            _obs(t_s, browDownLeft=0.6, browDownRight=0.6), t_s, quality_ok=False
        )
        assert estimate.pspi is None
    assert not estimator.baseline_ready and estimator.baseline is None
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
    with pytest.raises(ValueError, match="percentile"):
        AUEstimator(percentile=120.0)


# --- real faces (../shared/media) ------------------------------------------------------


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


@pytest.fixture(scope="module")
def wolfgang_langer(shared_file, face_model_path):
    """Every 2nd frame of WolfgangLanger_Pexels.mp4 (23.976 fps): crying, calm, then laughing."""
    return _video_observations(
        shared_file("media/WolfgangLanger_Pexels.mp4"), face_model_path, step=2, limit=472
    )


@pytest.mark.slow
def test_laughing_reads_low_on_a_real_face(wolfgang_langer):
    # 12.4-16.5 s: open-mouth laugh, teeth bared, eyes narrowed (see core/tools/bench_au.py).
    # Read as the bedside engine does: one estimator from the video's first frame, which
    # opens on crying (eyes shut), so the baseline has to find the calm frames by itself.
    estimator = AUEstimator()
    estimates = [estimator.update(o, o.t_s) for o in wolfgang_langer.values()]
    laughing = [e.pspi for e in estimates if 12.4 <= e.t_s < 16.5]
    assert len(laughing) > 40 and all(p is not None for p in laughing)
    assert np.median(laughing) <= 1.0
    # The laugh alone, as a short clip, gets values at once and reads low too.
    clip = AUEstimator()
    alone = [clip.update(o, o.t_s).pspi for o in wolfgang_langer.values() if 12.4 <= o.t_s < 16.5]
    assert all(p is not None for p in alone) and np.median(alone) <= 1.0


@pytest.mark.slow
def test_distress_reads_higher_than_smiling_on_the_same_face(wolfgang_langer):
    # WolfgangLanger: frames ~0-135 distressed (eyes shut, crying), ~150-215 calm,
    # ~290-420 smiling. Same person and same baseline, so the comparison is fair.
    observations = wolfgang_langer
    assert all(o.face_found for o in observations.values())
    estimator = AUEstimator()
    estimator.calibrate_neutral(o for i, o in observations.items() if 150 <= i < 215)
    pspi = {i: estimator.update(o, o.t_s).pspi for i, o in observations.items()}

    def segment(lo, hi):
        return np.median([p for i, p in pspi.items() if lo <= i < hi])

    distressed, calm, smiling = segment(24, 135), segment(150, 215), segment(290, 420)
    assert calm < 0.5
    assert distressed > 3.0
    assert smiling <= 1.0
    assert distressed > smiling + 2.0


def test_a_steady_face_reads_low_from_its_first_frames(shared_file, face_model_path):
    observations = _video_observations(
        shared_file("media/single_face.mp4"), face_model_path, step=1, limit=72
    )
    estimator = AUEstimator()
    estimates = [estimator.update(o, o.t_s) for o in observations.values()]
    scored = [e.pspi for e in estimates if e.pspi is not None]
    assert len(scored) == len(estimates) == 72
    assert all(e.baseline_provisional for e in estimates)
    assert np.median(scored) < 1.0
