"""Stand-ins for the bedside path's heavy parts, shared by the tests (``from fakes import …``;
pytest puts ``tests/`` on the import path): a face tracker that always sees one face, a pain
model with fixed probabilities, noisy frames, a file that runs out of disk and the engine
result of a face at a given level."""

from __future__ import annotations

import errno
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.live.capture import Frame
from painmon.core.live.face import FaceObservation
from painmon.core.live.face_detect import FaceBox
from painmon.core.live.scoring import OnnxPrediction

SHA = "ab" * 32
# Class probabilities (No pain … Strong) and the expected level each gives.
MILD = np.array([0.6, 0.2, 0.1, 0.05, 0.05])  # level ~0.7: no alarm
HIGH = np.array([0.02, 0.03, 0.05, 0.2, 0.7])  # level ~3.5: a HIGH alarm after its delay
SEVERE = np.array([0.0, 0.0, 0.02, 0.08, 0.9])  # level ~3.9


class FaceEverywhere:
    """A face tracker that sees one sharp, well-lit 120 px face in every frame."""

    name = "fake-face"

    def __init__(self) -> None:
        self.closed = False

    def observe(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        return FaceObservation(t_s, True, FaceBox(20.0, 20.0, 120.0, 120.0, 0.99), 1, self.name)

    def close(self) -> None:
        self.closed = True


class FakeModel:
    """Enough of a pain model for the engine and the session: every crop gets ``probs``."""

    input_size = (3, 64, 64)
    is_demo = False
    providers = ("CPUExecutionProvider",)
    domain_gate = None

    def __init__(
        self, probs: np.ndarray = MILD, *, sha256: str = SHA, path: str | Path = "fake.onnx"
    ) -> None:
        self.probs = np.asarray(probs, dtype=float)
        self.sha256 = sha256
        self.path = Path(path)
        self.metadata = {"architecture": "fake-dacnn"}
        self.calls = 0

    def predict(self, crops_uint8: np.ndarray) -> OnnxPrediction:
        self.calls += 1
        batch = len(crops_uint8)
        return OnnxPrediction(
            np.tile(self.probs, (batch, 1)), np.zeros((batch, 8, 8)), np.ones((batch, 1, 8, 8))
        )


_RNG = np.random.default_rng(3)


def noise_frame(index: int, fps: float = 10.0) -> Frame:
    """Frame ``index`` at ``fps``: sharp mid-grey noise (passes the quality gates, never
    FROZEN)."""
    rgb = _RNG.integers(40, 215, size=(160, 160, 3), dtype=np.uint8)
    return Frame(index, index / fps, rgb, index / fps, "fake")


class FullDiskFile:
    """A real text file that starts refusing writes with ENOSPC once ``full`` is set."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("x", encoding="utf-8", newline="")
        self.full = False

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


def engine_result(
    t_s: float, level: float, manager: Any, *, source: str = "s", gradcam: bool = True
) -> Any:
    """An EngineResult as the engine makes it for a face at smoothed ``level`` (its
    probabilities split between the two classes around it), with ``manager``'s alarm state."""
    from painmon.core.live.engine import STAGES, EngineResult
    from painmon.core.live.quality import QualityReport
    from painmon.core.live.smoothing import SmoothedScore

    low = math.floor(min(level, 3.999))
    probs = np.zeros(5)
    probs[low], probs[low + 1] = low + 1 - level, level - low
    frame = Frame(round(t_s * 10), t_s, np.zeros((120, 160, 3), np.uint8), time.monotonic(), source)
    smoothed = SmoothedScore(t_s, tuple(probs), int(np.argmax(probs)), level, 0.8, False, "ok")
    return EngineResult(
        frame=frame,
        observation=FaceObservation(t_s, True, FaceBox(40.0, 20.0, 60.0, 70.0, 0.9), 1, "test"),
        quality=QualityReport(True, 1.0, ()),
        probs=probs,
        gradcam=np.full((8, 8), 0.5, np.float32) if gradcam else None,
        pain_class=smoothed.pain_class,
        pain_level=level,
        smoothed=smoothed,
        au_pspi=None,
        alarm_state=manager.update(t_s, level),
        technical_condition=None,
        timings_ms=dict.fromkeys(STAGES, 1.0),
    )
