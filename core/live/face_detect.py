"""Face boxes: the ``FaceBox``/``FaceDetector`` types and OpenCV's Haar cascade.

The product finds faces with the MediaPipe Face Landmarker (:mod:`painmon.core.live.face`:
``create_face_tracker`` live, ``create_crop_detector`` for dataset crops). Its bundle is
not shipped (users fetch it with ``painmon models download``); without it painmon still
runs on the Haar cascade that ships with OpenCV, and says which detector is active.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from painmon.core.util.errors import PainmonError
from painmon.core.util.validate import check_rgb_uint8


class FaceModelError(PainmonError, RuntimeError):
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
        gray = cv2.cvtColor(check_rgb_uint8(rgb), cv2.COLOR_RGB2GRAY)
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
