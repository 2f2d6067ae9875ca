"""The one face-crop function: the live engine and the dataset crop cache frame faces alike."""

from __future__ import annotations

import math

import cv2
import numpy as np

from painmon.core.live.face_detect import FaceBox
from painmon.core.util.validate import check_rgb_uint8

DEFAULT_SIZE_PX = 64
DEFAULT_MARGIN = 0.25

Point = tuple[float, float]


def crop_face(
    rgb: np.ndarray,
    box: FaceBox,
    size_px: int = DEFAULT_SIZE_PX,
    margin: float = DEFAULT_MARGIN,
    eye_line: tuple[Point, Point] | None = None,
) -> np.ndarray:
    """Square uint8 (size_px, size_px, 3) crop centred on ``box``.

    The square's side is the box's longer side times ``1 + 2 * margin`` (``margin``
    is added on every side). With ``eye_line`` (two eye centres in image pixels, any
    order) the crop is rotated about the box centre so the eyes lie level. Pixels
    outside the image repeat the nearest edge pixel. Downscaling uses INTER_AREA.
    """
    check_rgb_uint8(rgb, what="crop_face")
    if isinstance(size_px, bool) or not isinstance(size_px, int) or size_px < 1:
        raise ValueError(f"size_px must be a positive int, got {size_px!r}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    center_x, center_y = box.center
    side_px = max(1, round(max(box.width, box.height) * (1.0 + 2.0 * margin)))
    angle_rad = 0.0
    if eye_line is not None:
        (ax, ay), (bx, by) = sorted(eye_line)  # left-most eye first: angle stays in (-90°, 90°]
        if (ax, ay) != (bx, by):
            angle_rad = math.atan2(by - ay, bx - ax)
    if abs(angle_rad) < 1e-6:
        # Integer crop plus edge replication: no resampling before the final resize.
        x0 = round(center_x - side_px / 2.0)
        y0 = round(center_y - side_px / 2.0)
        height, width = rgb.shape[:2]
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(width, x0 + side_px), min(height, y0 + side_px)
        if sx1 <= sx0 or sy1 <= sy0:
            raise ValueError(f"face box {box} lies entirely outside the {width}x{height} image")
        patch = rgb[sy0:sy1, sx0:sx1]
        pads = (sy0 - y0, y0 + side_px - sy1, sx0 - x0, x0 + side_px - sx1)
        if any(pads):
            patch = cv2.copyMakeBorder(patch, *pads, borderType=cv2.BORDER_REPLICATE)
    else:
        # Output pixel u (relative to the patch centre) samples the source at c + R(angle)·u,
        # so the eye direction maps onto the patch's horizontal axis.
        cos_a, sin_a = math.cos(angle_rad), math.sin(angle_rad)
        half = (side_px - 1) / 2.0
        matrix = np.array(
            [
                [cos_a, -sin_a, center_x - 0.5 - cos_a * half + sin_a * half],
                [sin_a, cos_a, center_y - 0.5 - sin_a * half - cos_a * half],
            ],
            dtype=np.float64,
        )
        patch = cv2.warpAffine(
            rgb,
            matrix,
            (side_px, side_px),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    if patch.shape[0] != size_px or patch.shape[1] != size_px:
        patch = cv2.resize(patch, (size_px, size_px), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(patch, dtype=np.uint8)
