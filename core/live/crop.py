"""The one face-crop module: the live engine and the dataset crop cache frame faces alike.

Two framings exist. *Box* framing (every model trained before issue #11) squares the face
box plus a margin, optionally levelling the eye line. Its box is the landmarks' extent, and
lowered brows and closed eyes pull the extreme landmarks inward, so box crops zoom in as pain
rises and the crop's border alone predicts the class. *Stable-landmark* framing takes centre,
size and rotation from points that expression does not move (eye corners), so a grimace
changes the face inside the crop, not the crop. A model's crop metadata (``"framing"``) says
which one it was trained on; :func:`crop_for_model` frames exactly that way.

Stable framing has two versions. Version 1 (``"stable-landmarks"``, the models of early
issue #11) centres the square on the temples' midpoint. The face mesh slides that point down
as pain rises (+0.027 face widths from class 0 to 4, subject-paired, 8,000 synthetic faces),
so an outer-ring probe still read the class from the border (0.263, chance 0.20). Version 2
(``"stable-landmarks-2"``, new crop sets) centres it on the inner eye corners, which move 4x
less (+0.006); the probe on the same faces reads 0.212. Both take size from the temples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from painmon.core.live.face_detect import FaceBox
from painmon.core.util.model_cfg import check_crop
from painmon.core.util.validate import check_rgb_uint8

DEFAULT_SIZE_PX = 64
DEFAULT_MARGIN = 0.25

Point = tuple[float, float]

FRAMING_BOX = "box"
FRAMING_STABLE = "stable-landmarks"  # version 1: centred on the temples
FRAMING_STABLE_2 = "stable-landmarks-2"  # version 2: centred on the inner eye corners
STABLE_FRAMINGS = (FRAMING_STABLE, FRAMING_STABLE_2)
FRAMINGS = (FRAMING_BOX, *STABLE_FRAMINGS)

# MediaPipe face-mesh points that expression barely moves. Eye corners (subject's right eye:
# 33 outer, 133 inner; left eye: 362 inner, 263 outer) level the frame; the temples (127
# right, 356 left, on the face oval at eye height) place and size it. Brows, lids, lips and
# chin move with expression. Measured on 800 synthetic faces, subject-paired, class 0 -> 4:
# temple distance +0.9 %, outer-eye-corner distance +4.9 % (the mesh's corners follow
# squeezed lids), landmark box -5.1 %; the temple midpoint moves < 0.01 temple widths.
STABLE_RIGHT_EYE = (33, 133)
STABLE_LEFT_EYE = (362, 263)
STABLE_TEMPLES = (127, 356)
STABLE_INNER_EYE_CORNERS = (133, 362)
MIN_MESH_LANDMARKS = 468  # the face mesh without the 10 iris points

# A neutral face framed as loosely as by its landmark box plus DEFAULT_MARGIN: the crop's
# centre lies STABLE_CENTER_DOWN temple distances below the temple midpoint along the face's
# vertical axis, its side is STABLE_SIDE_SCALE temple distances. Box-equivalent values
# measured: real faces in shared/media 1.85-1.92 and 0.17-0.20, synthetic class-0 faces
# 1.67 and 0.18; the side is set between them, nearer the real faces.
STABLE_CENTER_DOWN = 0.19
STABLE_SIDE_SCALE = 1.80
# Version 2 centres the square STABLE_2_CENTER_DOWN temple distances below the inner eye
# corners' midpoint: the same square as version 1 on a neutral face (median over the class-0
# faces of the measurement above: 0.1807), side unchanged.
STABLE_2_CENTER_DOWN = 0.18


@dataclass(frozen=True)
class CropFrame:
    """A square in image pixels: centre, side and the rotation that levels it (radians).

    Output pixel ``u`` (relative to the square's centre) samples the image at
    ``center + R(angle_rad) @ u``: the square's x axis is the image direction ``angle_rad``.
    """

    center: Point
    side_px: float
    angle_rad: float = 0.0

    def __post_init__(self) -> None:
        cx, cy = (float(v) for v in self.center)
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise ValueError(f"crop centre must be finite, got {self.center!r}")
        if not (math.isfinite(self.side_px) and self.side_px > 0):
            raise ValueError(f"crop side must be > 0 px, got {self.side_px!r}")
        if not math.isfinite(self.angle_rad):
            raise ValueError(f"crop angle must be finite, got {self.angle_rad!r}")
        object.__setattr__(self, "center", (cx, cy))
        object.__setattr__(self, "side_px", float(self.side_px))
        object.__setattr__(self, "angle_rad", float(self.angle_rad))


def box_frame(
    box: FaceBox, margin: float = DEFAULT_MARGIN, eye_line: tuple[Point, Point] | None = None
) -> CropFrame:
    """The box framing: the box's longer side times ``1 + 2 * margin``, eyes levelled if given."""
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    side_px = max(1, round(max(box.width, box.height) * (1.0 + 2.0 * margin)))
    angle_rad = 0.0
    if eye_line is not None:
        (ax, ay), (bx, by) = sorted(eye_line)  # left-most eye first: angle stays in (-90°, 90°]
        if (ax, ay) != (bx, by):
            angle_rad = math.atan2(by - ay, bx - ax)
    return CropFrame(box.center, side_px, angle_rad)


def has_stable_landmarks(landmarks: np.ndarray | None) -> bool:
    """Whether ``landmarks`` is a finite MediaPipe face mesh with distinct eyes and temples."""
    if landmarks is None:
        return False
    points = np.asarray(landmarks)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < MIN_MESH_LANDMARKS:
        return False
    used = points[list(STABLE_RIGHT_EYE + STABLE_LEFT_EYE + STABLE_TEMPLES)]
    if not np.isfinite(used).all():
        return False
    right_eye, left_eye = points[list(STABLE_RIGHT_EYE)], points[list(STABLE_LEFT_EYE)]
    right_temple, left_temple = points[list(STABLE_TEMPLES)]
    eye_gap = np.hypot(*(left_eye.mean(axis=0) - right_eye.mean(axis=0)))
    return bool(eye_gap >= 1.0 and np.hypot(*(left_temple - right_temple)) >= 1.0)


def _check_stable_framing(framing: str) -> None:
    if framing not in STABLE_FRAMINGS:
        raise ValueError(
            f"stable framing must be one of {', '.join(STABLE_FRAMINGS)}, got {framing!r}"
        )


def _default_center_down(framing: str) -> float:
    return STABLE_2_CENTER_DOWN if framing == FRAMING_STABLE_2 else STABLE_CENTER_DOWN


def stable_frame(
    landmarks: np.ndarray,
    center_down: float = STABLE_CENTER_DOWN,
    side_scale: float = STABLE_SIDE_SCALE,
    framing: str = FRAMING_STABLE,
) -> CropFrame:
    """The stable-landmark framing of a face from its MediaPipe face-mesh landmarks (pixels).

    With ``d`` the distance between the temples and ``m`` the midpoint of the temples
    (``framing`` version 1) or of the inner eye corners (version 2), the square is centred
    ``center_down * d`` below ``m`` along the face's vertical axis, has side
    ``side_scale * d``, and is rotated so the eye-corner line (subject's right eye to left
    eye) is level; a face upside down comes out upright.
    """
    _check_stable_framing(framing)
    if not has_stable_landmarks(landmarks):
        raise ValueError(
            f"stable framing needs >= {MIN_MESH_LANDMARKS} finite face-mesh landmarks "
            "with distinct eyes and temples"
        )
    if not (math.isfinite(center_down) and math.isfinite(side_scale) and side_scale > 0):
        raise ValueError(
            f"center_down must be finite and side_scale > 0, got {center_down!r}, {side_scale!r}"
        )
    points = np.asarray(landmarks, dtype=np.float64)
    right_eye = points[list(STABLE_RIGHT_EYE)].mean(axis=0)
    left_eye = points[list(STABLE_LEFT_EYE)].mean(axis=0)
    right_temple, left_temple = points[list(STABLE_TEMPLES)]
    temple_distance_px = float(np.hypot(*(left_temple - right_temple)))
    # The subject's right eye is on the image's left in an upright face: right -> left is +x.
    dx, dy = left_eye - right_eye
    angle_rad = math.atan2(dy, dx)
    down = np.array([-math.sin(angle_rad), math.cos(angle_rad)])
    anchors = STABLE_TEMPLES if framing == FRAMING_STABLE else STABLE_INNER_EYE_CORNERS
    middle = points[list(anchors)].mean(axis=0)
    center = middle + center_down * temple_distance_px * down
    side_px = side_scale * temple_distance_px
    return CropFrame((float(center[0]), float(center[1])), side_px, angle_rad)


def crop_frame(rgb: np.ndarray, frame: CropFrame, size_px: int = DEFAULT_SIZE_PX) -> np.ndarray:
    """Square uint8 (size_px, size_px, 3) crop of ``frame``.

    Pixels outside the image repeat the nearest edge pixel. An unrotated frame is cut at
    whole pixels (no resampling before the final resize); downscaling uses INTER_AREA.
    """
    check_rgb_uint8(rgb, what="crop_face")
    if isinstance(size_px, bool) or not isinstance(size_px, int) or size_px < 1:
        raise ValueError(f"size_px must be a positive int, got {size_px!r}")
    center_x, center_y = frame.center
    side_px = max(1, round(frame.side_px))
    angle_rad = frame.angle_rad
    if abs(angle_rad) < 1e-6:
        # Integer crop plus edge replication: no resampling before the final resize.
        x0 = round(center_x - side_px / 2.0)
        y0 = round(center_y - side_px / 2.0)
        height, width = rgb.shape[:2]
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(width, x0 + side_px), min(height, y0 + side_px)
        if sx1 <= sx0 or sy1 <= sy0:
            raise ValueError(
                f"face crop centred at ({center_x:.0f}, {center_y:.0f}), {side_px} px wide, "
                f"lies entirely outside the {width}x{height} image"
            )
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


def crop_face(
    rgb: np.ndarray,
    box: FaceBox,
    size_px: int = DEFAULT_SIZE_PX,
    margin: float = DEFAULT_MARGIN,
    eye_line: tuple[Point, Point] | None = None,
) -> np.ndarray:
    """Square uint8 (size_px, size_px, 3) crop centred on ``box`` (the box framing).

    The square's side is the box's longer side times ``1 + 2 * margin`` (``margin``
    is added on every side). With ``eye_line`` (two eye centres in image pixels, any
    order) the crop is rotated about the box centre so the eyes lie level. Pixels
    outside the image repeat the nearest edge pixel. Downscaling uses INTER_AREA.
    """
    check_rgb_uint8(rgb, what="crop_face")
    return crop_frame(rgb, box_frame(box, margin, eye_line), size_px)


def stable_framing_meta(
    center_down: float | None = None,
    side_scale: float = STABLE_SIDE_SCALE,
    framing: str = FRAMING_STABLE_2,
) -> dict[str, Any]:
    """The crop-metadata entries that record a stable-landmark framing and its parameters.

    New crop sets are framed by version 2; ``center_down`` defaults to that version's value.
    """
    _check_stable_framing(framing)
    if center_down is None:
        center_down = _default_center_down(framing)
    if framing == FRAMING_STABLE:
        anchors = {"center_and_scale": list(STABLE_TEMPLES)}
    else:
        anchors = {"center": list(STABLE_INNER_EYE_CORNERS), "scale": list(STABLE_TEMPLES)}
    return {
        "framing": framing,
        "framing_params": {
            "landmarks": "mediapipe-face-mesh",
            "level": [*STABLE_RIGHT_EYE, *STABLE_LEFT_EYE],
            **anchors,
            "center_down": float(center_down),
            "side_scale": float(side_scale),
        },
    }


@dataclass(frozen=True)
class CropSpec:
    """How a model's training crops were framed, read from its ``"crop"`` metadata.

    Metadata without ``"framing"`` predates stable framing: box framing. ``margin`` and
    ``eye_alignment`` frame box crops, and stable-framing models fall back to them when a
    frame has no landmarks.
    """

    framing: str = FRAMING_BOX
    margin: float = DEFAULT_MARGIN
    eye_alignment: bool = False
    center_down: float = STABLE_CENTER_DOWN
    side_scale: float = STABLE_SIDE_SCALE

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(
                f"the model's crops were framed by {self.framing!r}, which this painmon "
                f"does not know ({', '.join(FRAMINGS)}): update painmon to run this model"
            )
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"crop margin must be >= 0, got {self.margin!r}")
        if not (math.isfinite(self.center_down) and math.isfinite(self.side_scale)):
            raise ValueError("stable framing parameters must be finite")
        if self.side_scale <= 0:
            raise ValueError(f"stable framing side_scale must be > 0, got {self.side_scale!r}")

    @classmethod
    def from_meta(cls, crop_meta: Mapping[str, Any] | None) -> CropSpec:
        """Parse a model's (or crop set's) crop metadata; absent keys take the old defaults."""
        meta = crop_meta or {}
        # Strict types and bounds (model_cfg's check, shared with model loading): "0.25" is
        # not a margin and "false" is not False.
        check_crop(meta)
        framing = str(meta.get("framing", FRAMING_BOX))
        params = meta.get("framing_params") or {}
        try:
            return cls(
                framing=framing,
                margin=float(meta.get("margin", DEFAULT_MARGIN)),
                eye_alignment=bool(meta.get("eye_alignment", False)),
                center_down=float(params.get("center_down", _default_center_down(framing))),
                side_scale=float(params.get("side_scale", STABLE_SIDE_SCALE)),
            )
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"unreadable crop metadata {dict(meta)!r}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class ModelCrop:
    """A model's input crop and how it was framed.

    ``fell_back`` is True when the model wants stable-landmark framing but the frame had
    no usable landmarks, so the crop was framed by the box instead (framed unlike the
    model's training crops: scores may be less accurate).
    """

    image: np.ndarray
    framing: str
    fell_back: bool = False
    # The square cut from the image (image pixels, rotation included): where the crop, and
    # so its Grad-CAM, lies in the frame.
    frame: CropFrame | None = None


def crop_for_model(
    rgb: np.ndarray,
    box: FaceBox | None,
    landmarks: np.ndarray | None,
    eye_line: tuple[Point, Point] | None,
    crop_meta: Mapping[str, Any] | CropSpec | None,
    size_px: int,
) -> ModelCrop:
    """Frame a face exactly as the model's training crops were (its ``"crop"`` metadata).

    Box framing: ``box`` plus the metadata's margin, eyes levelled when the metadata says
    so. Stable framing: :func:`stable_frame` of ``landmarks``; without usable landmarks the
    box framing is used and the result says ``fell_back``. Raises ``ValueError`` when
    there is nothing to frame by or the crop lies outside the image.
    """
    spec = crop_meta if isinstance(crop_meta, CropSpec) else CropSpec.from_meta(crop_meta)
    if spec.framing in STABLE_FRAMINGS and has_stable_landmarks(landmarks):
        frame = stable_frame(landmarks, spec.center_down, spec.side_scale, spec.framing)  # type: ignore[arg-type]
        return ModelCrop(crop_frame(rgb, frame, size_px), spec.framing, frame=frame)
    if box is None:
        raise ValueError("no face box (and no face landmarks) to crop")
    # A stable-framing model's training crops were levelled by the eyes: keep that much.
    levelled = spec.eye_alignment or spec.framing in STABLE_FRAMINGS
    frame = box_frame(box, spec.margin, eye_line if levelled else None)
    image = crop_frame(rgb, frame, size_px)
    return ModelCrop(image, FRAMING_BOX, fell_back=spec.framing != FRAMING_BOX, frame=frame)
