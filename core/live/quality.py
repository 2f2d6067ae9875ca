"""Quality gates on the patient's face: size, blur, exposure and head pose.

A frame that fails a gate is not scored (the engine shows "unknown", never "no
pain"): a face too small, blurred, dark or turned away hides the very brow and
eye movements that pain shows in. ``QualityReport.score`` (0..1) dents the
displayed confidence on frames that pass but are close to a limit.

Every gate gives a component in 0..1 that is 1 well inside its limit (half the
limit for angles, twice it for size, sharpness and light), 0.5 exactly at the
limit and 0 twice as far beyond; ``score`` is the smallest component, so the
frame is as good as its worst aspect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from painmon.core.live.face import FaceObservation

REASON_NO_FACE = "no_face"
REASON_TOO_SMALL = "face_too_small"
REASON_BLURRED = "blurred"
REASON_TOO_DARK = "too_dark"
REASON_TOO_BRIGHT = "too_bright"
REASON_POSE = "extreme_pose"

REASON_TEXT = {
    REASON_NO_FACE: "no patient face in view",
    REASON_TOO_SMALL: "face too small: move the camera closer",
    REASON_BLURRED: "face blurred: check focus and clean the lens",
    REASON_TOO_DARK: "face too dark: add light",
    REASON_TOO_BRIGHT: "face over-exposed: reduce direct light",
    REASON_POSE: "head turned away from the camera",
}

# Sharpness is measured on the face resized to this side, so that it does not grow
# or shrink with the face's distance from the camera.
SHARPNESS_SIDE_PX = 128

# Nose-tip depth in front of the eye centres, in units of the distance between the
# eye centres (adult average); turns the nose's sideways shift into a yaw angle.
_NOSE_DEPTH_PER_EYE_DISTANCE = 0.6
# Where the nose tip sits between the eye line (0) and the mouth (1) on a frontal face.
_NOSE_FRONTAL_FRACTION = 0.55
_NOSE_TIP, _MOUTH_UPPER, _MOUTH_LOWER = 1, 13, 14


@dataclass(frozen=True)
class QualitySettings:
    """Limits of the quality gates (defaults calibrated on the shared real-face videos)."""

    min_face_px: float = 48.0
    # Variance of the Laplacian of the face at 128 px: the shared real 640x360 videos
    # read 198-970; a Gaussian blur of sigma 3 px brings the same frames to 15-52.
    min_sharpness: float = 60.0
    # Mean face luminance 0..255: the shared videos read 109-131.
    min_brightness: float = 40.0
    max_brightness: float = 215.0
    max_yaw_deg: float = 35.0
    max_pitch_deg: float = 30.0

    def __post_init__(self) -> None:
        for name in ("min_face_px", "min_sharpness", "max_yaw_deg", "max_pitch_deg"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0 < self.min_brightness < self.max_brightness < 255:
            raise ValueError(
                "need 0 < min_brightness < max_brightness < 255, got "
                f"{self.min_brightness} and {self.max_brightness}"
            )


@dataclass(frozen=True)
class QualityReport:
    """Whether a frame's face is good enough to score, and why not."""

    ok: bool
    score: float
    reasons: tuple[str, ...]
    face_px: float | None = None
    sharpness: float | None = None
    brightness: float | None = None
    yaw_deg: float | None = None
    pitch_deg: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"quality score must lie in 0..1, got {self.score!r}")
        unknown = [r for r in self.reasons if r not in REASON_TEXT]
        if unknown:
            raise ValueError(f"unknown quality reasons: {unknown}")
        if self.ok == bool(self.reasons):
            raise ValueError("a quality report is ok exactly when it has no reasons")

    def describe(self) -> str:
        """One line for a status bar or log."""
        if self.ok:
            return f"face quality ok ({self.score:.2f})"
        return "; ".join(REASON_TEXT[r] for r in self.reasons)


def _at_least(value: float, limit: float) -> float:
    """0 at zero, 0.5 at the limit, 1 from twice the limit."""
    return float(np.interp(value / limit, [0.0, 1.0, 2.0], [0.0, 0.5, 1.0]))


def _at_most(value: float, limit: float) -> float:
    """1 up to half the limit, 0.5 at the limit, 0 from twice the limit."""
    return float(np.interp(value / limit, [0.5, 1.0, 2.0], [1.0, 0.5, 0.0]))


def estimate_pose_from_landmarks(landmarks: np.ndarray) -> tuple[float, float] | None:
    """Rough (yaw, pitch) in degrees from face-mesh landmarks, for observations without pose."""
    if landmarks is None or len(landmarks) < 468:
        return None
    points = np.asarray(landmarks, dtype=np.float64)
    right = points[[33, 133]].mean(axis=0)
    left = points[[362, 263]].mean(axis=0)
    eye_mid = (right + left) / 2.0
    axis = left - right
    eye_distance = float(np.hypot(*axis))
    mouth = (points[_MOUTH_UPPER] + points[_MOUTH_LOWER]) / 2.0
    if eye_distance < 1e-6:
        return None
    across = axis / eye_distance
    down = np.array([-across[1], across[0]])
    nose = points[_NOSE_TIP] - eye_mid
    sideways = float(nose @ across) / eye_distance
    yaw = math.degrees(math.atan2(sideways, _NOSE_DEPTH_PER_EYE_DISTANCE))
    face_length = float((mouth - eye_mid) @ down)
    if face_length <= 1e-6:
        return None
    fraction = float(nose @ down) / face_length
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, (fraction - _NOSE_FRONTAL_FRACTION) * 2.0))))
    return yaw, pitch


def face_region(rgb: np.ndarray, observation: FaceObservation) -> np.ndarray:
    """The observation's face box cut from the frame (clipped to the image)."""
    box = observation.box
    if box is None:
        raise ValueError("the observation has no face box")
    height, width = rgb.shape[:2]
    x0, y0 = max(0, math.floor(box.x)), max(0, math.floor(box.y))
    x1 = min(width, math.ceil(box.x + box.width))
    y1 = min(height, math.ceil(box.y + box.height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"face box {box} lies outside the {width}x{height} image")
    return rgb[y0:y1, x0:x1]


def assess_quality(
    rgb: np.ndarray, observation: FaceObservation, settings: QualitySettings | None = None
) -> QualityReport:
    """Run every quality gate on the observation's face in ``rgb``."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an RGB image of shape (H, W, 3)")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {rgb.dtype}")
    settings = settings or QualitySettings()
    if not observation.face_found or observation.box is None:
        return QualityReport(ok=False, score=0.0, reasons=(REASON_NO_FACE,))
    box = observation.box
    gray = cv2.cvtColor(face_region(rgb, observation), cv2.COLOR_RGB2GRAY)
    reasons: list[str] = []
    components: list[float] = []

    face_px = float(min(box.width, box.height))
    components.append(_at_least(face_px, settings.min_face_px))
    if face_px < settings.min_face_px:
        reasons.append(REASON_TOO_SMALL)

    scale = SHARPNESS_SIDE_PX / max(gray.shape)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    normalized = cv2.resize(
        gray,
        (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))),
        interpolation=interpolation,
    )
    sharpness = float(cv2.Laplacian(normalized, cv2.CV_64F).var())
    components.append(_at_least(sharpness, settings.min_sharpness))
    if sharpness < settings.min_sharpness:
        reasons.append(REASON_BLURRED)

    brightness = float(gray.mean())
    components.append(_at_least(brightness, settings.min_brightness))
    components.append(_at_least(255.0 - brightness, 255.0 - settings.max_brightness))
    if brightness < settings.min_brightness:
        reasons.append(REASON_TOO_DARK)
    elif brightness > settings.max_brightness:
        reasons.append(REASON_TOO_BRIGHT)

    yaw = pitch = None
    if observation.head_pose_deg is not None:
        yaw, pitch = observation.head_pose_deg[0], observation.head_pose_deg[1]
    elif observation.landmarks is not None:
        estimate = estimate_pose_from_landmarks(observation.landmarks)
        if estimate is not None:
            yaw, pitch = estimate
    if yaw is not None and pitch is not None:
        components.append(_at_most(abs(yaw), settings.max_yaw_deg))
        components.append(_at_most(abs(pitch), settings.max_pitch_deg))
        if abs(yaw) > settings.max_yaw_deg or abs(pitch) > settings.max_pitch_deg:
            reasons.append(REASON_POSE)

    return QualityReport(
        ok=not reasons,
        score=float(min(components)),
        reasons=tuple(reasons),
        face_px=face_px,
        sharpness=sharpness,
        brightness=brightness,
        yaw_deg=yaw,
        pitch_deg=pitch,
    )
