import cv2
import numpy as np
import pytest

from painmon.core.live.face_detect import (
    FaceBox,
    FaceModelError,
    HaarFaceDetector,
    MediaPipeFaceDetector,
    create_face_detector,
)


def _rgb(path):
    bgr = cv2.imread(str(path))
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_mediapipe_finds_the_real_face(shared_file, face_model_path):
    image = _rgb(shared_file("media/single_face.jpg"))
    with MediaPipeFaceDetector(face_model_path) as detector:
        boxes = detector.detect(image)
    assert len(boxes) == 1
    cx, cy = boxes[0].center
    assert 200 < cx < 380 and 200 < cy < 400
    assert boxes[0].score > 0.5


def test_haar_finds_the_real_face(shared_file):
    boxes = HaarFaceDetector().detect(_rgb(shared_file("media/single_face.jpg")))
    assert len(boxes) >= 1
    assert 200 < boxes[0].center[0] < 380


def test_blank_image_has_no_face(face_model_path):
    blank = np.full((240, 320, 3), 128, np.uint8)
    with MediaPipeFaceDetector(face_model_path) as detector:
        assert detector.detect(blank) == []
    assert HaarFaceDetector().detect(blank) == []


def test_auto_falls_back_to_haar_without_bundle():
    detector = create_face_detector(None)
    assert detector.name == "haar"


def test_auto_uses_mediapipe_when_env_points_at_bundle(monkeypatch, face_model_path):
    monkeypatch.setenv("PAINMON_FACE_MODEL", str(face_model_path))
    detector = create_face_detector(None)
    try:
        assert detector.name == "mediapipe"
    finally:
        detector.close()


def test_corrupt_bundle_is_refused_with_a_clear_message(tmp_path):
    bad = tmp_path / "face_landmarker.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="SHA-256"):
        MediaPipeFaceDetector(bad)
    with pytest.raises(FileNotFoundError, match="models download"):
        create_face_detector(tmp_path / "missing.task")


def test_face_box_validates():
    with pytest.raises(ValueError):
        FaceBox(0, 0, 0, 10, 0.5)
    with pytest.raises(ValueError):
        FaceBox(0, 0, 10, 10, 1.5)
