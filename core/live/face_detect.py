"""Face detection: MediaPipe Tasks (BlazeFace from the Face Landmarker bundle) or OpenCV Haar.

The Face Landmarker bundle is not shipped (users fetch it with ``painmon models
download``); without it painmon still runs on the Haar cascade that ships with
OpenCV, and says which detector is active.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from painmon.core.util.fileio import sha256_file
from painmon.core.util.paths import FACE_LANDMARKER_SHA256, find_face_model

log = logging.getLogger(__name__)


class FaceModelError(RuntimeError):
    """The face model file is missing, corrupt or not the pinned release."""


@dataclass(frozen=True)
class FaceBox:
    """One detected face in pixel coordinates of the image it was found in."""

    x: float
    y: float
    width: float
    height: float
    score: float

    def __post_init__(self) -> None:
        if not (self.width > 0 and self.height > 0):
            raise ValueError(f"face box needs a positive size, got {self.width}x{self.height}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"face score must lie in 0..1, got {self.score}")

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.width / 2.0, self.y + self.height / 2.0)


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[FaceBox]: ...

    def close(self) -> None: ...


def read_bundle_member(
    bundle: str | Path, member: str, expected_sha256: str | None = FACE_LANDMARKER_SHA256
) -> bytes:
    """Read one .tflite out of the Face Landmarker bundle after checking the bundle's hash."""
    path = Path(bundle)
    if not path.is_file():
        raise FaceModelError(f"face model not found: {path}. Run `painmon models download`.")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise FaceModelError(
                f"face model {path} has SHA-256 {actual[:12]}…, expected {expected_sha256[:12]}… "
                "(corrupt or a different release). Delete it and run `painmon models download`."
            )
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FaceModelError(f"face model {path} is not a Face Landmarker bundle ({exc}).") from exc


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.ndim != 3
        or rgb.shape[2] != 3
        or rgb.dtype != np.uint8
    ):
        raise ValueError("expected an RGB uint8 image of shape (H, W, 3)")
    return np.ascontiguousarray(rgb)


class MediaPipeFaceDetector:
    """BlazeFace short-range through the MediaPipe Tasks API (image mode)."""

    name = "mediapipe"

    def __init__(
        self,
        bundle: str | Path,
        min_confidence: float = 0.5,
        expected_sha256: str | None = FACE_LANDMARKER_SHA256,
    ) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        buffer = read_bundle_member(bundle, "face_detector.tflite", expected_sha256)
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=buffer),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_confidence,
        )
        self._detector = vision.FaceDetector.create_from_options(options)
        self.bundle = Path(bundle)

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        import mediapipe as mp

        image = _check_rgb(rgb)
        height, width = image.shape[:2]
        result = self._detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
        boxes = []
        for detection in result.detections:
            bb = detection.bounding_box
            x0, y0 = max(0, bb.origin_x), max(0, bb.origin_y)
            x1, y1 = min(width, bb.origin_x + bb.width), min(height, bb.origin_y + bb.height)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            score = float(detection.categories[0].score) if detection.categories else 0.0
            boxes.append(
                FaceBox(
                    float(x0), float(y0), float(x1 - x0), float(y1 - y0), min(1.0, max(0.0, score))
                )
            )
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    def close(self) -> None:
        detector, self._detector = getattr(self, "_detector", None), None
        if detector is not None:
            detector.close()

    def __enter__(self) -> MediaPipeFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade: always available, coarser than MediaPipe."""

    name = "haar"

    def __init__(
        self, min_size_px: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5
    ) -> None:
        cascade_path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(cascade_path))
        if self._cascade.empty():
            raise FaceModelError(f"OpenCV's Haar cascade could not be loaded from {cascade_path}")
        self.min_size_px = min_size_px
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        gray = cv2.cvtColor(_check_rgb(rgb), cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        found = self._cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size_px, self.min_size_px),
        )
        # Haar gives no calibrated score; report a fixed mid confidence rather than pretend.
        boxes = [FaceBox(float(x), float(y), float(w), float(h), 0.5) for (x, y, w, h) in found]
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> HaarFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_face_detector(
    face_model: str | Path | None = None, backend: str = "auto"
) -> FaceDetector:
    """The best detector available: MediaPipe when its bundle is found, else Haar.

    ``backend`` is ``auto``, ``mediapipe`` (the bundle must exist) or ``haar``.
    """
    if backend not in ("auto", "mediapipe", "haar"):
        raise ValueError(f"unknown face backend {backend!r}; use auto, mediapipe or haar")
    if backend == "haar":
        return HaarFaceDetector()
    bundle = find_face_model(face_model)
    if bundle is None:
        if backend == "mediapipe":
            raise FaceModelError(
                "MediaPipe face model not found. "
                "Run `painmon models download` or pass --face-model."
            )
        log.info("face detector: OpenCV Haar cascade (no MediaPipe bundle found)")
        return HaarFaceDetector()
    log.info("face detector: MediaPipe BlazeFace from %s", bundle)
    return MediaPipeFaceDetector(bundle)
