import dataclasses

import cv2
import numpy as np
import pytest

from painmon.core.live.face import FaceLandmarkerTracker, FaceObservation
from painmon.core.live.face_detect import FaceBox
from painmon.core.live.quality import (
    REASON_BLURRED,
    REASON_NO_FACE,
    REASON_POSE,
    REASON_TOO_BRIGHT,
    REASON_TOO_DARK,
    REASON_TOO_SMALL,
    QualityReport,
    QualitySettings,
    assess_quality,
    estimate_pose_from_landmarks,
)


def _read_frames(path, indices):
    capture = cv2.VideoCapture(str(path))
    frames, index = {}, 0
    try:
        while index <= max(indices):
            ok, bgr = capture.read()
            if not ok:
                break
            if index in indices:
                frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    return [frames[i] for i in indices]


@pytest.fixture(scope="module")
def real_faces(shared_file, face_model_path):
    """(rgb, observation) pairs from both real-face videos."""
    pairs = []
    for name, indices in (
        ("media/single_face.mp4", [0, 30, 60]),
        ("media/WolfgangLanger_Pexels.mp4", [0, 200, 400]),
    ):
        with FaceLandmarkerTracker(face_model_path) as tracker:
            for i, rgb in enumerate(_read_frames(shared_file(name), indices)):
                observation = tracker.observe(rgb, float(i))
                assert observation.face_found
                pairs.append((rgb, observation))
    return pairs


def test_real_faces_pass(real_faces):
    for rgb, observation in real_faces:
        report = assess_quality(rgb, observation)
        assert report.ok, report.describe()
        assert report.score > 0.6
        assert report.face_px > 100 and 90 < report.brightness < 160
        assert report.sharpness > 2 * QualitySettings().min_sharpness


def test_blurred_copy_is_flagged(real_faces):
    for rgb, observation in real_faces:
        report = assess_quality(cv2.GaussianBlur(rgb, (0, 0), 4), observation)
        assert report.reasons == (REASON_BLURRED,)
        assert not report.ok and report.score < 0.5


def test_darkened_and_overexposed_copies_are_flagged(real_faces):
    rgb, observation = real_faces[0]
    dark = (rgb.astype(np.float32) * 0.25).astype(np.uint8)
    assert REASON_TOO_DARK in assess_quality(dark, observation).reasons
    bright = np.clip(rgb.astype(np.float32) * 2.5, 0, 255).astype(np.uint8)
    assert REASON_TOO_BRIGHT in assess_quality(bright, observation).reasons


def test_tiny_face_is_flagged(real_faces):
    rgb, observation = real_faces[0]
    scale = 0.25
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    box = observation.box
    tiny = dataclasses.replace(
        observation,
        box=FaceBox(box.x * scale, box.y * scale, box.width * scale, box.height * scale, 0.5),
        landmarks=observation.landmarks * scale,
        eye_line=None,
    )
    report = assess_quality(small, tiny)
    assert REASON_TOO_SMALL in report.reasons
    assert report.face_px < QualitySettings().min_face_px


def test_turned_head_is_flagged(real_faces):
    rgb, observation = real_faces[0]
    turned = dataclasses.replace(observation, head_pose_deg=(60.0, 0.0, 0.0))
    report = assess_quality(rgb, turned)
    assert report.reasons == (REASON_POSE,)
    assert report.yaw_deg == 60.0


def test_landmark_pose_estimate_agrees_with_the_landmarker(real_faces):
    for _, observation in real_faces:
        yaw, pitch = estimate_pose_from_landmarks(observation.landmarks)
        assert abs(yaw - observation.head_pose_deg[0]) < 20
        assert abs(pitch - observation.head_pose_deg[1]) < 20
    # Without a pose from the landmarker the gate still runs on landmarks.
    rgb, observation = real_faces[0]
    report = assess_quality(rgb, dataclasses.replace(observation, head_pose_deg=None))
    assert report.ok and report.yaw_deg is not None


def test_no_face_is_not_ok():
    frame = np.zeros((120, 160, 3), np.uint8)
    report = assess_quality(frame, FaceObservation(0.0, False, None, 0, "haar"))
    assert report.reasons == (REASON_NO_FACE,) and report.score == 0.0
    assert "no patient face" in report.describe()


def test_haar_observation_skips_the_pose_gate(real_faces):
    rgb, observation = real_faces[0]
    boxed = FaceObservation(0.0, True, observation.box, 1, "haar")
    report = assess_quality(rgb, boxed)
    assert report.ok and report.yaw_deg is None


def test_report_and_settings_are_validated():
    with pytest.raises(ValueError, match="no reasons"):
        QualityReport(ok=True, score=1.0, reasons=(REASON_BLURRED,))
    with pytest.raises(ValueError, match="unknown"):
        QualityReport(ok=False, score=0.0, reasons=("bad_vibes",))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        QualityReport(ok=True, score=1.5, reasons=())
    with pytest.raises(ValueError, match="brightness"):
        QualitySettings(min_brightness=200, max_brightness=100)
