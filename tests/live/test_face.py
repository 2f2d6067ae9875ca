import math

import cv2
import numpy as np
import pytest

from painmon.core.live.face import (
    NUM_BLENDSHAPES,
    NUM_LANDMARKS,
    FaceLandmarkerTracker,
    FaceObservation,
    HaarFaceTracker,
    PatientSelector,
    box_iou,
    create_face_tracker,
    head_pose_from_matrix,
)
from painmon.core.live.face_detect import FaceBox, FaceModelError
from painmon.core.util import paths


def _frames(path, limit):
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    try:
        for index in range(limit):
            ok, bgr = capture.read()
            if not ok:
                return
            yield index / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


@pytest.fixture(scope="module")
def single_face_observations(shared_file, face_model_path):
    with FaceLandmarkerTracker(face_model_path) as tracker:
        return [
            tracker.observe(rgb, t_s)
            for t_s, rgb in _frames(shared_file("media/single_face.mp4"), 60)
        ]


# --- FaceObservation -------------------------------------------------------------


def test_observation_without_face_carries_no_face_data():
    FaceObservation(0.0, False, None, 0, "haar")
    FaceObservation(0.0, False, None, 2, "haar")  # faces in view, none of them the patient
    with pytest.raises(ValueError, match="must not carry"):
        FaceObservation(0.0, False, FaceBox(0, 0, 10, 10, 0.5), 1, "haar")


def test_observation_is_validated_and_immutable():
    box = FaceBox(0, 0, 10, 10, 0.5)
    with pytest.raises(ValueError, match="at least one face"):
        FaceObservation(0.0, True, box, 0, "haar")
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        FaceObservation(0.0, True, box, 1, "x", landmarks=np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        FaceObservation(0.0, True, box, 1, "x", blendshapes={"browDownLeft": 1.5})
    obs = FaceObservation(
        0.0, True, box, 1, "x", landmarks=np.ones((4, 2)), blendshapes={"jawOpen": 0.2}
    )
    assert obs.landmarks.dtype == np.float32
    with pytest.raises(ValueError):
        obs.landmarks[0, 0] = 5.0
    with pytest.raises(TypeError):
        obs.blendshapes["jawOpen"] = 0.9


# --- PatientSelector -------------------------------------------------------------

PATIENT = FaceBox(200, 100, 100, 100, 0.9)


def test_selector_starts_with_the_largest_face():
    small = FaceBox(10, 10, 40, 40, 0.9)
    assert PatientSelector().update([small, PATIENT], 0.0) == 1


def _confirm(selector, box, t0=0.0, fps=30.0):
    """Feed ``box`` alone until the selector holds it as a confirmed patient; the last time."""
    t_s = t0
    for frame in range(round(selector.confirm_s * fps) + 1):
        t_s = t0 + frame / fps
        assert selector.update([box], t_s) == 0
    assert selector.confirmed
    return t_s


def test_nurse_leaning_in_does_not_take_over():
    selector = PatientSelector()
    t_s = _confirm(selector, PATIENT)
    nurse = FaceBox(280, 60, 180, 180, 0.9)  # bigger, nearer the camera, overlapping
    moved = FaceBox(204, 102, 100, 100, 0.9)
    assert selector.update([nurse, moved], t_s + 0.1) == 1
    assert selector.patient_box == moved
    # Nurse alone while the patient is hidden behind her: no patient, not the nurse.
    assert selector.update([FaceBox(420, 60, 180, 180, 0.9)], t_s + 0.2) is None
    assert selector.update([nurse, PATIENT], t_s + 0.3) == 1
    assert selector.track_id == 1


def test_selector_reacquires_after_the_patient_was_lost():
    selector = PatientSelector(lost_after_s=2.0)
    t_s = _confirm(selector, PATIENT)
    other = FaceBox(450, 200, 120, 120, 0.9)
    assert selector.update([other], t_s + 1.0) is None  # still waiting for the patient
    assert selector.update([], t_s + 1.5) is None
    assert selector.update([other], t_s + 2.5) == 0  # lost > 2 s: take the largest face
    assert selector.track_id == 2


def test_selector_rejects_time_going_backwards():
    selector = PatientSelector()
    selector.update([PATIENT], 1.0)
    with pytest.raises(ValueError, match="backwards"):
        selector.update([PATIENT], 0.5)


def test_box_iou():
    assert box_iou(PATIENT, PATIENT) == pytest.approx(1.0)
    assert box_iou(PATIENT, FaceBox(250, 100, 100, 100, 0.5)) == pytest.approx(1 / 3)
    assert box_iou(PATIENT, FaceBox(0, 0, 10, 10, 0.5)) == 0.0


def test_head_pose_from_matrix():
    assert head_pose_from_matrix(np.eye(4)) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    angle = math.radians(30)
    turned = np.eye(4)
    turned[:3, :3] = [
        [math.cos(angle), 0, math.sin(angle)],
        [0, 1, 0],
        [-math.sin(angle), 0, math.cos(angle)],
    ]
    yaw, pitch, roll = head_pose_from_matrix(turned)
    assert yaw == pytest.approx(30.0)
    assert pitch == pytest.approx(0.0, abs=1e-9)
    assert roll == pytest.approx(0.0, abs=1e-9)


# --- real faces ------------------------------------------------------------------


def test_landmarker_tracks_the_real_face(single_face_observations):
    observations = single_face_observations
    assert len(observations) == 60
    found = [o for o in observations if o.face_found]
    assert len(found) >= 58
    assert {o.track_id for o in found} == {1}
    first = found[0]
    assert first.detector == "mediapipe-landmarker"
    assert first.landmarks.shape == (NUM_LANDMARKS, 2)
    assert len(first.blendshapes) == NUM_BLENDSHAPES
    assert {"browDownLeft", "eyeSquintRight", "eyeBlinkLeft"} <= set(first.blendshapes)
    box = first.box
    assert 200 < box.center[0] < 420 and 100 < box.center[1] < 300
    # Landmarks lie on the face, and the box is their extent.
    assert box.x <= first.landmarks[:, 0].min() + 1 and first.landmarks[:, 0].max() <= 640
    (rx, ry), (lx, ly) = first.eye_line
    assert lx - rx > 30  # subject's right eye appears on the image's left
    assert abs(ly - ry) < 0.15 * (lx - rx)  # upright face: eye line roughly level
    assert abs(first.head_pose_deg[0]) < 15 and abs(first.head_pose_deg[1]) < 15


def test_landmarker_takes_the_real_face_right_after_a_one_frame_ghost(shared_file, face_model_path):
    # face_noface.mov: a face in frames 0..74 (MediaPipe finds it in 0..71), none after,
    # except a one-frame spurious face at frame 163. Played ghost first, the face must
    # not wait out lost_after_s (the old selector found it in only 17 of the 75 frames).
    frames = [rgb for _, rgb in _frames(shared_file("media/face_noface.mov"), 169)]
    order = [*range(150, 169), *range(75)]
    with FaceLandmarkerTracker(face_model_path) as tracker:
        observations = [tracker.observe(frames[i], k / 30.0) for k, i in enumerate(order)]
    face_part = observations[order.index(0) :]
    assert sum(o.face_found for o in face_part) >= 0.95 * 75
    assert len({o.track_id for o in face_part if o.face_found}) == 1


def test_landmarker_sees_no_face_in_an_empty_scene(shared_file, face_model_path):
    with FaceLandmarkerTracker(face_model_path) as tracker:
        observations = [
            tracker.observe(rgb, t_s) for t_s, rgb in _frames(shared_file("media/no_face.mp4"), 30)
        ]
    assert len(observations) == 30
    assert not any(o.face_found for o in observations)
    assert all(o.n_faces == 0 for o in observations)


def test_landmarker_counts_several_faces_and_picks_the_largest(shared_file, face_model_path):
    bgr = cv2.imread(str(shared_file("media/multi_face.jpg")))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    with FaceLandmarkerTracker(face_model_path, num_faces=5) as tracker:
        observation = tracker.observe(rgb, 0.0)
    assert observation.n_faces >= 2
    assert observation.face_found
    assert observation.box.width > 60


def test_landmarker_needs_increasing_time(shared_file, face_model_path):
    _, rgb = next(_frames(shared_file("media/single_face.mp4"), 1))
    with FaceLandmarkerTracker(face_model_path) as tracker:
        tracker.observe(rgb, 1.0)
        tracker.observe(rgb, 1.0)  # same stamp: accepted, nudged by 1 ms for MediaPipe
        tracker.observe(rgb, 1.0002)  # still forward, though the nudged stamp is ahead of it
        tracker.observe(rgb, 1.0004)
        with pytest.raises(ValueError, match="backwards"):
            tracker.observe(rgb, 0.5)


def test_haar_tracker_gives_a_box_only(shared_file):
    _, rgb = next(_frames(shared_file("media/single_face.mp4"), 1))
    with HaarFaceTracker() as tracker:
        observation = tracker.observe(rgb, 0.0)
        assert observation.face_found and observation.detector == "haar"
        assert observation.landmarks is None and observation.blendshapes is None
        assert 200 < observation.box.center[0] < 420
        assert not tracker.observe(np.full((360, 640, 3), 128, np.uint8), 0.1).face_found


def test_factory_uses_the_shipped_landmarker_by_default_and_haar_on_request(monkeypatch):
    tracker = create_face_tracker(None)
    try:
        assert tracker.name == "mediapipe-landmarker"
    finally:
        tracker.close()
    with create_face_tracker("haar") as haar:
        assert haar.name == "haar"
    monkeypatch.setenv("PAINMON_FACE_MODEL", "haar")
    with create_face_tracker(None) as haar:
        assert haar.name == "haar"


def test_factory_falls_back_to_haar_without_a_bundle(monkeypatch):
    monkeypatch.setattr(paths, "shipped_face_model_path", lambda: None)
    with create_face_tracker(None) as tracker:
        assert tracker.name == "haar"


def test_factory_uses_the_landmarker_when_the_bundle_is_found(monkeypatch, face_model_path):
    monkeypatch.setenv("PAINMON_FACE_MODEL", str(face_model_path))
    tracker = create_face_tracker(None)
    try:
        assert tracker.name == "mediapipe-landmarker"
    finally:
        tracker.close()


def test_corrupt_bundle_is_refused(tmp_path):
    bad = tmp_path / "face_landmarker.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="SHA-256"):
        FaceLandmarkerTracker(bad)
    with pytest.raises(FaceModelError, match="not found"):
        FaceLandmarkerTracker(tmp_path / "missing.task")


def test_dataset_crops_are_framed_like_the_live_tracker(shared_file, face_model_path, monkeypatch):
    from painmon.core.live.face import (
        FaceLandmarkerTracker,
        LandmarkerFaceDetector,
        create_crop_detector,
    )

    bgr = cv2.imread(str(shared_file("media/single_face.jpg")))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    with LandmarkerFaceDetector(face_model_path) as detector:
        boxes = detector.detect(rgb)
        assert detector.detect(rgb) == boxes  # IMAGE mode: no state between calls
        ((_, eye_line),) = detector.detect_with_eyes(rgb)
    with FaceLandmarkerTracker(face_model_path) as tracker:
        observation = tracker.observe(rgb, 0.0)
        live = observation.box
    assert eye_line is not None and observation.eye_line is not None
    assert np.allclose(np.array(eye_line), np.array(observation.eye_line), atol=0.03 * live.width)
    assert len(boxes) == 1 and live is not None
    for a, b in zip((boxes[0].x, boxes[0].y, boxes[0].width, boxes[0].height),
                    (live.x, live.y, live.width, live.height), strict=True):  # fmt: skip
        assert abs(a - b) <= 0.03 * live.width
    monkeypatch.setenv("PAINMON_FACE_MODEL", str(face_model_path))
    chosen = create_crop_detector()
    try:
        assert chosen.name == "mediapipe-landmarker"
    finally:
        chosen.close()
    monkeypatch.delenv("PAINMON_FACE_MODEL")
    with create_crop_detector("haar") as haar:
        assert haar.name == "haar"
