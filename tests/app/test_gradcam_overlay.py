"""The Grad-CAM overlay lies where the network's crop came from: its framing (stable
landmarks or box + margin) and its rotation (eyes levelled), on a tilted real face too."""

from __future__ import annotations

import math
import types

import cv2
import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtGui import QImage

from painmon.app.widgets import VideoView
from painmon.core.live.alarms import AlarmSettings
from painmon.core.live.capture import Frame
from painmon.core.live.crop import CropFrame
from painmon.core.live.engine import Engine
from painmon.core.live.face import create_face_tracker
from painmon.core.live.scoring import OnnxPainModel
from painmon.core.store.catalog import shipped_demo_model_path

CELLS = 8
TOLERANCE = 0.35  # of a Grad-CAM cell


def _painted_hot_spot(qtbot, rgb: np.ndarray, result) -> tuple[float, float]:
    """Paint ``result`` over ``rgb`` (black) in a VideoView of the frame's size; the centre
    of the red (hot) pixels, in frame pixels."""
    h, w = rgb.shape[:2]
    view = VideoView()
    qtbot.addWidget(view)
    view.resize(w, h)
    view.message = ""
    view.gradcam_opacity = 1.0
    black = QImage(
        np.zeros((h, w, 3), np.uint8).tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888
    )
    view.set_frame(black.copy(), result)
    out = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    row_bytes = out.bytesPerLine()
    arr = np.frombuffer(out.constBits(), np.uint8).reshape(out.height(), row_bytes)
    arr = arr[:, : 3 * out.width()].reshape(out.height(), out.width(), 3)
    red = (arr[..., 0] > 100) & (arr[..., 1] < 80) & (arr[..., 2] < 80)
    ys, xs = np.nonzero(red)
    assert len(xs), "no hot cell painted"
    return float(xs.mean()) * w / out.width(), float(ys.mean()) * h / out.height()


def _cell_in_frame(square: CropFrame, row: int, col: int) -> tuple[float, float]:
    """Where Grad-CAM cell (row, col) of a crop cut from ``square`` lies in the frame."""
    u = ((col + 0.5) / CELLS - 0.5) * square.side_px
    v = ((row + 0.5) / CELLS - 0.5) * square.side_px
    ca, sa = math.cos(square.angle_rad), math.sin(square.angle_rad)
    return square.center[0] + ca * u - sa * v, square.center[1] + sa * u + ca * v


def _one_hot(row: int, col: int) -> np.ndarray:
    cam = np.zeros((CELLS, CELLS), np.float32)
    cam[row, col] = 1.0
    return cam


@pytest.mark.parametrize("degrees", [0.0, 25.0, -40.0])
def test_the_heat_map_is_painted_on_the_rotated_square_the_crop_came_from(qtbot, degrees):
    rgb = np.zeros((240, 320, 3), np.uint8)
    square = CropFrame((170.0, 110.0), 120.0, math.radians(degrees))
    box = types.SimpleNamespace(x=130.0, y=70.0, width=80.0, height=80.0, center=(170.0, 110.0))
    for row, col in ((0, 0), (1, 6), (7, 7)):
        result = types.SimpleNamespace(
            observation=types.SimpleNamespace(box=box, landmarks=None),
            gradcam=_one_hot(row, col),
            output_known=True,
            crop_square=square,
        )
        painted = _painted_hot_spot(qtbot, rgb, result)
        want = _cell_in_frame(square, row, col)
        # Within a third of a cell (15 px cells; the smoothed image's edge pulls a corner
        # cell's centre outwards by ~3 px): the cell itself, not a neighbour.
        assert math.dist(painted, want) < TOLERANCE * square.side_px / CELLS, (row, col, painted)


def test_on_a_tilted_real_face_the_overlay_covers_the_stable_landmark_crop(
    qtbot, shared_file, face_model_path
):
    # The shipped model frames crops by stable landmarks (eye corners, temples), levelled:
    # on a head tilted 25° on the pillow its square is turned and off the face box.
    image = cv2.imread(str(shared_file("media/single_face.jpg")))
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 25.0, 1.0)
    bgr = cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    engine = Engine(
        OnnxPainModel(shipped_demo_model_path()),
        create_face_tracker(face_model_path),
        AlarmSettings(),
    )
    try:
        result = engine.process(Frame(0, 0.0, rgb, 0.0, "tilted"))
    finally:
        engine.close()
    square = result.crop_square
    assert square is not None and abs(abs(math.degrees(square.angle_rad)) - 25.0) < 6.0
    for row, col in ((0, 0), (7, 7)):
        shown = types.SimpleNamespace(
            observation=result.observation,
            gradcam=_one_hot(row, col),
            output_known=True,
            crop_square=square,
        )
        painted = _painted_hot_spot(qtbot, rgb, shown)
        want = _cell_in_frame(square, row, col)
        assert math.dist(painted, want) < TOLERANCE * square.side_px / CELLS, (row, col, painted)
