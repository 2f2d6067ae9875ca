"""Stable-landmark framing: expression moves the face inside the crop, never the crop."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from painmon.core.live.crop import (
    FRAMING_BOX,
    FRAMING_STABLE,
    FRAMING_STABLE_2,
    STABLE_2_CENTER_DOWN,
    STABLE_INNER_EYE_CORNERS,
    STABLE_SIDE_SCALE,
    STABLE_TEMPLES,
    CropSpec,
    box_frame,
    crop_face,
    crop_for_model,
    crop_frame,
    stable_frame,
    stable_framing_meta,
)
from painmon.core.live.face import _box_from_points, eye_line_from_landmarks
from painmon.core.live.face_detect import FaceBox

# Face-mesh points that move with expression: brows, upper/lower lids, lips, chin.
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
LIDS = (159, 145, 386, 374, 160, 144, 385, 380)
MOUTH_AND_CHIN = (13, 14, 0, 17, 61, 291, 152, 148, 377)


def _mesh(seed: int = 0) -> np.ndarray:
    """478 points of a 140 px face at (200, 200): eyes at y=180, temples at y=185, chin 270."""
    rng = np.random.default_rng(seed)
    points = np.column_stack([rng.uniform(140, 260, 478), rng.uniform(130, 260, 478)])
    points[[33, 133, 362, 263]] = [(155, 180), (185, 181), (215, 181), (245, 180)]
    points[[127, 356]] = [(135, 185), (265, 185)]
    points[list(BROWS)] = np.column_stack([np.linspace(150, 250, len(BROWS)), np.full(10, 160)])
    points[152] = (200, 270)  # chin: the lowest point
    points[10] = (200, 120)  # forehead top: the highest
    return points.astype(np.float32)


def _grimace(points: np.ndarray) -> np.ndarray:
    """Brows lowered, lids closed, mouth and chin pulled up: the landmark box shrinks."""
    moved = points.copy()
    moved[list(BROWS), 1] += 8
    moved[list(LIDS), 1] = 181
    moved[list(MOUTH_AND_CHIN), 1] -= 10
    moved[10, 1] += 6
    return moved


def test_stable_frame_ignores_brows_lids_mouth_and_chin():
    neutral = _mesh()
    pained = _grimace(neutral)
    box_a = _box_from_points(neutral, 640, 480, 0.9)
    box_b = _box_from_points(pained, 640, 480, 0.9)
    assert box_b.height < box_a.height - 10  # the old box framing zooms in with pain
    a, b = stable_frame(neutral), stable_frame(pained)
    assert a == b
    assert a.side_px == pytest.approx(STABLE_SIDE_SCALE * 130.0)
    assert a.angle_rad == pytest.approx(0.0, abs=1e-9)
    assert a.center[0] == pytest.approx(200.0) and a.center[1] > 185.0  # below the temples


@pytest.mark.parametrize("scale, shift", [(0.5, (0.0, 0.0)), (1.7, (-40.0, 25.0))])
def test_stable_frame_follows_the_face_scale_and_position(scale, shift):
    points = _mesh()
    frame = stable_frame(points)
    moved = stable_frame(points * scale + np.asarray(shift, dtype=np.float32))
    assert moved.side_px == pytest.approx(frame.side_px * scale, rel=1e-5)
    assert moved.center[0] == pytest.approx(frame.center[0] * scale + shift[0], rel=1e-5)
    assert moved.center[1] == pytest.approx(frame.center[1] * scale + shift[1], rel=1e-5)


@pytest.mark.parametrize("roll_deg", [20.0, -35.0, 180.0])
def test_stable_frame_levels_the_eye_corner_line(roll_deg):
    points = _mesh().astype(np.float64)
    rotation = cv2.getRotationMatrix2D((200.0, 200.0), -roll_deg, 1.0)  # +roll: clockwise
    rolled = points @ rotation[:, :2].T + rotation[:, 2]
    frame, level = stable_frame(rolled), stable_frame(points)
    assert math.remainder(frame.angle_rad - math.radians(roll_deg), 2 * math.pi) == pytest.approx(
        0.0, abs=1e-6
    )
    assert frame.side_px == pytest.approx(level.side_px)
    expected_center = rotation @ np.array([*level.center, 1.0])
    np.testing.assert_allclose(frame.center, expected_center, atol=1e-6)

    # Drawn eyes come out level and upright (eyes above the mouth) whatever the roll.
    canvas = np.full((400, 400, 3), 230, dtype=np.uint8)
    for x, y in rolled[[33, 263]]:
        cv2.circle(canvas, (round(x), round(y)), 6, (20, 20, 20), -1)
    mx, my = rotation @ np.array([200.0, 250.0, 1.0])
    cv2.circle(canvas, (round(mx), round(my)), 6, (200, 30, 30), -1)
    crop = crop_frame(canvas, frame, 64)
    dark = (crop.max(axis=2) < 100).astype(np.uint8)  # the eyes, not the red mouth
    count, _, stats, centroids = cv2.connectedComponentsWithStats(dark)
    eyes = [centroids[i] for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 3]
    assert len(eyes) == 2 and abs(eyes[0][1] - eyes[1][1]) < 1.0
    red = np.argwhere((crop[..., 0] > 150) & (crop[..., 1] < 100))
    assert red[:, 0].mean() > eyes[0][1] + 5  # the mouth is below the eyes


def test_crop_for_model_frames_old_metadata_the_old_way():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    points = _mesh()
    box = _box_from_points(points, 400, 400, 0.9)
    eye_line = eye_line_from_landmarks(points)
    for meta, levelled in (
        ({"margin": 0.3, "eye_alignment": True}, True),
        ({}, False),
        (None, False),
    ):
        result = crop_for_model(rgb, box, points, eye_line, meta, 64)
        margin = (meta or {}).get("margin", 0.25)
        expected = crop_face(rgb, box, 64, margin, eye_line if levelled else None)
        np.testing.assert_array_equal(result.image, expected)
        assert result.framing == FRAMING_BOX and not result.fell_back


def test_crop_for_model_frames_new_metadata_by_stable_landmarks_or_flags_the_fallback():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    points = _mesh()
    box = _box_from_points(points, 400, 400, 0.9)
    eye_line = eye_line_from_landmarks(points)
    # Version 1 metadata (the temples centre the square): framed exactly as it was trained.
    old = {"margin": 0.25, "eye_alignment": True, **stable_framing_meta(framing=FRAMING_STABLE)}
    result = crop_for_model(rgb, box, points, eye_line, old, 64)
    np.testing.assert_array_equal(result.image, crop_frame(rgb, stable_frame(points), 64))
    assert result.framing == FRAMING_STABLE and not result.fell_back
    # New crop sets record version 2 (the inner eye corners centre it).
    meta = {"margin": 0.25, "eye_alignment": True, **stable_framing_meta()}
    assert meta["framing"] == FRAMING_STABLE_2
    assert meta["framing_params"]["center"] == [133, 362]
    result = crop_for_model(rgb, box, points, eye_line, meta, 64)
    expected = stable_frame(points, STABLE_2_CENTER_DOWN, framing=FRAMING_STABLE_2)
    np.testing.assert_array_equal(result.image, crop_frame(rgb, expected, 64))
    assert result.framing == FRAMING_STABLE_2 and not result.fell_back
    # Parameters come from the metadata, not the code's constants.
    looser = dict(meta, framing_params={"center_down": 0.19, "side_scale": 2.5})
    wide = crop_for_model(rgb, box, points, eye_line, looser, 64).image
    loose = stable_frame(points, 0.19, 2.5, framing=FRAMING_STABLE_2)
    np.testing.assert_array_equal(wide, crop_frame(rgb, loose, 64))

    for landmarks in (None, points[:5]):  # Haar (no landmarks) or not a face mesh
        fallback = crop_for_model(rgb, box, landmarks, eye_line, meta, 64)
        assert fallback.fell_back and fallback.framing == FRAMING_BOX
        np.testing.assert_array_equal(fallback.image, crop_face(rgb, box, 64, 0.25, eye_line))
    with pytest.raises(ValueError, match="no face box"):
        crop_for_model(rgb, None, None, None, meta, 64)
    with pytest.raises(ValueError, match="update painmon"):
        crop_for_model(rgb, box, points, eye_line, {"framing": "hologram"}, 64)


def test_crop_spec_reads_frozen_metadata():
    from types import MappingProxyType

    meta = MappingProxyType(
        {"framing": FRAMING_STABLE, "framing_params": MappingProxyType({"side_scale": 2.0})}
    )
    spec = CropSpec.from_meta(meta)
    assert spec.framing == FRAMING_STABLE and spec.side_scale == 2.0
    assert CropSpec.from_meta(None).framing == FRAMING_BOX
    with pytest.raises(ValueError, match="needs"):
        stable_frame(np.zeros((478, 2), dtype=np.float32))  # all corners on one point


def test_box_frame_matches_crop_face():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = FaceBox(50, 30, 40, 36, 0.9)
    eye_line = ((60.0, 45.0), (85.0, 50.0))
    np.testing.assert_array_equal(
        crop_frame(rgb, box_frame(box, 0.25, eye_line), 48), crop_face(rgb, box, 48, 0.25, eye_line)
    )


def test_stable_frame_on_a_real_face_covers_brows_to_chin(shared_file, face_model_path):
    from painmon.core.live.face import LandmarkerFaceDetector

    rgb = cv2.cvtColor(cv2.imread(str(shared_file("media/single_face.jpg"))), cv2.COLOR_BGR2RGB)
    with LandmarkerFaceDetector(face_model_path) as detector:
        faces = detector.detect_with_landmarks(rgb)
    assert faces, "the Face Landmarker found no face in single_face.jpg"
    box, eye_line, landmarks = faces[0]
    frame = stable_frame(landmarks)
    old = box_frame(box, 0.25, eye_line)
    assert 0.85 < frame.side_px / old.side_px < 1.15  # as loose as today's crops
    # Every landmark (brows to chin) lies inside the square, with some room to spare.
    cos_a, sin_a = math.cos(frame.angle_rad), math.sin(frame.angle_rad)
    rel = landmarks.astype(np.float64) - np.asarray(frame.center)
    u = rel @ np.array([[cos_a, -sin_a], [sin_a, cos_a]])
    assert np.abs(u).max() < 0.47 * frame.side_px
    crop = crop_for_model(rgb, box, landmarks, eye_line, stable_framing_meta(), 64)
    assert crop.image.shape == (64, 64, 3) and not crop.fell_back


def test_version_2_is_centred_on_the_inner_eye_corners_so_a_sliding_face_oval_moves_nothing():
    """The mesh slides its temple points down as pain rises; version 2 does not follow them."""
    points = _mesh().astype(np.float64)
    slid = points.copy()
    slid[list(STABLE_TEMPLES), 1] += 6.0  # both temples 6 px lower, distance unchanged
    v1 = stable_frame(points), stable_frame(slid)
    v2 = (stable_frame(points, STABLE_2_CENTER_DOWN, framing=FRAMING_STABLE_2),
          stable_frame(slid, STABLE_2_CENTER_DOWN, framing=FRAMING_STABLE_2))  # fmt: skip
    assert v1[1].center[1] - v1[0].center[1] == pytest.approx(6.0)
    assert v2[1].center == pytest.approx(v2[0].center)
    assert v2[0].side_px == pytest.approx(v1[0].side_px)
    # The centre: the inner corners' midpoint, center_down temple distances down the face.
    inner = points[list(STABLE_INNER_EYE_CORNERS)].mean(axis=0)
    temple_distance = np.hypot(*(points[356] - points[127]))
    frame = stable_frame(points, 0.5, framing=FRAMING_STABLE_2)
    assert np.hypot(*(np.array(frame.center) - inner)) == pytest.approx(0.5 * temple_distance)
    with pytest.raises(ValueError, match="stable framing must be one of"):
        stable_frame(points, framing="box")
    # Metadata without center_down takes its version's value.
    spec = CropSpec.from_meta({"framing": FRAMING_STABLE_2, "framing_params": {}})
    assert spec.center_down == STABLE_2_CENTER_DOWN
    assert CropSpec.from_meta({"framing": FRAMING_STABLE}).center_down == 0.19
