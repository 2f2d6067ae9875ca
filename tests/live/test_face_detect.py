import cv2
import numpy as np
import pytest

from painmon.core.live.face import create_crop_detector
from painmon.core.live.face_detect import FaceBox, FaceModelError, HaarFaceDetector


def _rgb(path):
    bgr = cv2.imread(str(path))
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_crop_detector_finds_the_real_face(shared_file, face_model_path):
    image = _rgb(shared_file("media/single_face.jpg"))
    detector = create_crop_detector(face_model_path)
    try:
        assert detector.name == "mediapipe-landmarker"
        boxes = detector.detect(image)
    finally:
        detector.close()
    assert len(boxes) == 1
    cx, cy = boxes[0].center
    assert 200 < cx < 380 and 200 < cy < 400
    assert boxes[0].score >= 0.5


def test_haar_finds_the_real_face(shared_file):
    boxes = HaarFaceDetector().detect(_rgb(shared_file("media/single_face.jpg")))
    assert len(boxes) >= 1
    assert 200 < boxes[0].center[0] < 380


def test_blank_image_has_no_face(face_model_path):
    blank = np.full((240, 320, 3), 128, np.uint8)
    detector = create_crop_detector(face_model_path)
    try:
        assert detector.detect(blank) == []
    finally:
        detector.close()
    assert HaarFaceDetector().detect(blank) == []


def test_haar_rejects_a_non_rgb_image():
    with pytest.raises(ValueError, match=r"RGB uint8 image of shape \(H, W, 3\)"):
        HaarFaceDetector().detect(np.zeros((8, 8), np.uint8))


def test_corrupt_bundle_is_refused_with_a_clear_message(tmp_path):
    bad = tmp_path / "face_landmarker.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="SHA-256"):
        create_crop_detector(bad)
    with pytest.raises(FileNotFoundError, match=r"face_landmarker\.task"):
        create_crop_detector(tmp_path / "missing.task")


def test_face_box_validates():
    with pytest.raises(ValueError):
        FaceBox(0, 0, 0, 10, 0.5)
    with pytest.raises(ValueError):
        FaceBox(0, 0, 10, 10, 1.5)
