"""crop_face: the geometry every crop (live and dataset) shares."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from painmon.core.live.crop import crop_face
from painmon.core.live.face_detect import FaceBox


def test_crop_face_shape_and_exact_inner_crop():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    original = rgb.copy()
    box = FaceBox(50, 30, 40, 40, 0.9)
    crop = crop_face(rgb, box, size_px=64, margin=0.0)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    expected = cv2.resize(rgb[30:70, 50:90], (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop, expected)
    assert crop_face(rgb, box, size_px=32).shape == (32, 32, 3)
    np.testing.assert_array_equal(rgb, original)  # pure: the frame is not touched


def test_crop_face_pads_by_edge_replication_at_borders():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
    # side = 20 * 1.5 = 30 px centred on (10, 10): 5 px hang over the top and left edges.
    crop = crop_face(rgb, FaceBox(0, 0, 20, 20, 0.9), size_px=30, margin=0.25)
    np.testing.assert_array_equal(crop[5:, 5:], rgb[0:25, 0:25])
    for row in range(5):
        np.testing.assert_array_equal(crop[row, 5:], rgb[0, 0:25])
    for col in range(5):
        np.testing.assert_array_equal(crop[5:, col], rgb[0:25, 0])
    # A box hanging off the right/bottom edges pads there too, never with black.
    bright = np.full((40, 40, 3), 200, dtype=np.uint8)
    far = crop_face(bright, FaceBox(30, 30, 20, 20, 0.9), size_px=16)
    assert far.min() == 200


def _eye_blobs_y(crop: np.ndarray) -> list[float]:
    dark = (crop.mean(axis=2) < 100).astype(np.uint8)
    count, _, stats, centroids = cv2.connectedComponentsWithStats(dark)
    blobs = [centroids[i] for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 4]
    assert len(blobs) == 2, f"expected two eye blobs, found {len(blobs)}"
    return [float(b[1]) for b in blobs]


@pytest.mark.parametrize("angle_deg", [25.0, -35.0])
def test_crop_face_levels_the_eye_line(angle_deg):
    canvas = np.full((200, 200, 3), 230, dtype=np.uint8)
    eyes = np.array([[75.0, 90.0], [125.0, 90.0]])
    for x, y in eyes:
        cv2.circle(canvas, (int(x), int(y)), 7, (20, 20, 20), -1)
    rotation = cv2.getRotationMatrix2D((100.0, 100.0), angle_deg, 1.0)
    tilted = cv2.warpAffine(canvas, rotation, (200, 200), borderValue=(230, 230, 230))
    tilted_eyes = [tuple(rotation @ np.array([x, y, 1.0])) for x, y in eyes]
    box = FaceBox(50, 50, 100, 100, 0.9)

    unlevelled = _eye_blobs_y(crop_face(tilted, box, size_px=64, margin=0.1))
    assert abs(unlevelled[0] - unlevelled[1]) > 10  # the tilt is visible without levelling

    (ax, ay), (bx, by) = tilted_eyes
    for eye_line in (((ax, ay), (bx, by)), ((bx, by), (ax, ay))):  # eye order must not matter
        levelled = crop_face(tilted, box, size_px=64, margin=0.1, eye_line=eye_line)
        left_y, right_y = _eye_blobs_y(levelled)
        assert abs(left_y - right_y) < 1.0
        assert left_y < 32  # upright, not upside down: eyes stay in the upper half


def test_crop_face_rejects_bad_input():
    rgb = np.zeros((20, 20, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        crop_face(rgb.astype(np.float32), FaceBox(0, 0, 5, 5, 0.5))
    with pytest.raises(ValueError, match="H, W, 3"):
        crop_face(rgb[..., 0], FaceBox(0, 0, 5, 5, 0.5))
    with pytest.raises(ValueError, match="outside"):
        crop_face(rgb, FaceBox(100, 100, 5, 5, 0.5), margin=0.0)
    with pytest.raises(ValueError, match="size_px"):
        crop_face(rgb, FaceBox(0, 0, 5, 5, 0.5), size_px=0)
