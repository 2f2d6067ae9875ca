"""Training-free PSPI estimate from Face Landmarker blendshapes, relative to the patient's neutral.

The estimate cross-checks the network: it needs no training data, so it cannot
share the network's dataset biases, but it is coarse. How it is built:

* Action units from MediaPipe blendshapes (mean of left and right, as pain
  expressions are mostly symmetric and the mean halves one-sided noise):
  AU4 brow lowerer = browDown*, AU6 cheek raiser = cheekSquint*, AU7 lid
  tightener = eyeSquint*, AU9 nose wrinkler = noseSneer*, AU10 upper-lip raiser =
  mouthUpperUp*, AU43 eyes closed = eyeBlink*.
* Everything is relative to a per-patient neutral baseline (per-blendshape median
  over the first ``baseline_s`` seconds, or ``calibrate_neutral``): faces differ at
  rest, and a resting frown must read 0.
* Intensity: a rise of ``delta`` over the baseline maps linearly from
  ``DEAD_ZONE`` (0.05, frame-to-frame jitter of a still face) -> 0 to
  ``FULL_SCALE`` (0.6) -> 5, clipped to 0..5. AU43 is 0/1: 1 when the eyes are
  closed (eyeBlink >= 0.5) and at least 0.3 more closed than at rest.
* A smile lifts the upper lip too (MediaPipe's mouthUpperUp reads 0.6-0.9 on a
  broad smile), so AU10 counts only the upper-lip rise beyond the smile's rise
  (mouthSmile*). Without this a laughing face reads as pain.
* PSPI = AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43, the Prkachin-Solomon
  formula on continuous intensities, so a float in 0..16 (``AUEstimate.rounded_pspi``
  gives the integer PSPI of the rounded intensities via ``labels.pspi_from_aus``).

Known limits (measured on the shared videos): cheekSquint* and noseSneer* stay
near 0 in MediaPipe's model, so AU6 and AU9 rarely contribute, and browDown*
rarely exceeds 0.1 even on a clear frown, so AU4 is under-read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from painmon.core.live.face import FaceObservation
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.labels import PSPI_MAX, pspi_from_aus
from painmon.core.util.timeline import next_time

log = logging.getLogger(__name__)

AU_BLENDSHAPES: dict[str, tuple[str, str]] = {
    "AU4": ("browDownLeft", "browDownRight"),
    "AU6": ("cheekSquintLeft", "cheekSquintRight"),
    "AU7": ("eyeSquintLeft", "eyeSquintRight"),
    "AU9": ("noseSneerLeft", "noseSneerRight"),
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU43": ("eyeBlinkLeft", "eyeBlinkRight"),
}
SMILE_BLENDSHAPES = ("mouthSmileLeft", "mouthSmileRight")
AU_NAMES: tuple[str, ...] = tuple(AU_BLENDSHAPES)
_USED_BLENDSHAPES: tuple[str, ...] = (
    *(name for pair in AU_BLENDSHAPES.values() for name in pair),
    *SMILE_BLENDSHAPES,
)

MAX_INTENSITY = 5.0
DEAD_ZONE = 0.05
FULL_SCALE = 0.6
EYES_CLOSED_MIN = 0.5
EYES_CLOSED_MIN_RISE = 0.3


def blendshape_delta_to_intensity(delta: float) -> float:
    """FACS-like intensity 0..5 from a blendshape rise over the neutral baseline."""
    fraction = (float(delta) - DEAD_ZONE) / (FULL_SCALE - DEAD_ZONE)
    return MAX_INTENSITY * min(1.0, max(0.0, fraction))


@dataclass(frozen=True)
class AUEstimate:
    """AU intensities (AU4..AU43) and the continuous PSPI at ``t_s``; None/empty when unknown."""

    t_s: float
    intensities: Mapping[str, float]
    pspi: float | None
    baseline_ready: bool
    baseline_progress: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.t_s):
            raise ValueError(f"t_s must be finite, got {self.t_s!r}")
        if not 0.0 <= self.baseline_progress <= 1.0:
            raise ValueError(f"baseline_progress must lie in 0..1, got {self.baseline_progress}")
        if self.baseline_ready != (self.baseline_progress == 1.0):
            raise ValueError("baseline_ready exactly when baseline_progress is 1")
        values = {str(k): float(v) for k, v in self.intensities.items()}
        if self.pspi is None:
            if values:
                raise ValueError("an AU estimate without PSPI must not carry intensities")
        else:
            if set(values) != set(AU_NAMES):
                raise ValueError(f"an AU estimate needs exactly {', '.join(AU_NAMES)}")
            for name, value in values.items():
                top = 1.0 if name == "AU43" else MAX_INTENSITY
                if not (math.isfinite(value) and 0.0 <= value <= top):
                    raise ValueError(f"{name} intensity must lie in 0..{top:g}, got {value!r}")
            if not (math.isfinite(self.pspi) and 0.0 <= self.pspi <= PSPI_MAX):
                raise ValueError(f"PSPI must lie in 0..{PSPI_MAX}, got {self.pspi!r}")
        object.__setattr__(self, "intensities", MappingProxyType(values))

    def rounded_pspi(self) -> int | None:
        """Integer PSPI of the rounded intensities (the UNBC coding convention)."""
        if self.pspi is None:
            return None
        levels = {name: round(value) for name, value in self.intensities.items()}
        return pspi_from_aus(
            levels["AU4"],
            levels["AU6"],
            levels["AU7"],
            levels["AU9"],
            levels["AU10"],
            levels["AU43"],
        )


def _used_scores(blendshapes: Mapping[str, float]) -> np.ndarray:
    missing = [n for n in _USED_BLENDSHAPES if n not in blendshapes]
    if missing:
        raise ValueError(f"blendshapes lack {', '.join(missing)} (not a Face Landmarker output?)")
    return np.array([float(blendshapes[n]) for n in _USED_BLENDSHAPES], dtype=np.float64)


def _pair_means(scores: np.ndarray) -> dict[str, float]:
    """Mean of each left/right pair (AUs and smile) from a _USED_BLENDSHAPES vector."""
    keys = (*AU_NAMES, "smile")
    return {key: float(scores[2 * i : 2 * i + 2].mean()) for i, key in enumerate(keys)}


class AUEstimator:
    """Per-patient AU/PSPI estimate relative to an automatically collected neutral baseline.

    The baseline is the per-blendshape median of the first ``baseline_s`` seconds
    (and at least ``min_baseline_frames`` frames) of usable observations. It is
    collected again after ``request_recalibration()`` and whenever the face tracker
    re-acquires a different track (``FaceObservation.track_id``), since that may be
    someone else.
    """

    def __init__(self, baseline_s: float = 3.0, min_baseline_frames: int = 15) -> None:
        if not (math.isfinite(baseline_s) and baseline_s >= 0):
            raise ValueError(f"baseline_s must be >= 0, got {baseline_s!r}")
        if min_baseline_frames < 1:
            raise ValueError(f"min_baseline_frames must be >= 1, got {min_baseline_frames}")
        self.baseline_s = float(baseline_s)
        self.min_baseline_frames = int(min_baseline_frames)
        self._baseline: np.ndarray | None = None
        self._baseline_track: int | None = None
        self._bind_track = False
        self._collected: list[np.ndarray] = []
        self._collect_start_s: float | None = None
        self._last_t_s: float | None = None

    @property
    def baseline_ready(self) -> bool:
        return self._baseline is not None

    @property
    def baseline(self) -> dict[str, float] | None:
        """The neutral baseline's blendshape scores (only those the AUs use)."""
        if self._baseline is None:
            return None
        return dict(zip(_USED_BLENDSHAPES, self._baseline.tolist(), strict=True))

    def request_recalibration(self) -> None:
        """Drop the baseline; a new one is collected from the next usable frames."""
        self._baseline = None
        self._baseline_track = None
        self._bind_track = False
        self._collected = []
        self._collect_start_s = None

    def calibrate_neutral(
        self, observations: Iterable[FaceObservation | Mapping[str, float]]
    ) -> None:
        """Set the baseline now from neutral frames (observations or blendshape dicts)."""
        rows = []
        for item in observations:
            shapes = item.blendshapes if isinstance(item, FaceObservation) else item
            if shapes is not None:
                rows.append(_used_scores(shapes))
        if not rows:
            raise InvalidInputError(
                "no blendshapes among the neutral frames: calibration needs the Face "
                "Landmarker (not the Haar fallback) and a visible face"
            )
        self.request_recalibration()
        self._baseline = np.median(np.stack(rows), axis=0)
        # Bound to whichever patient track the next frame belongs to.
        self._bind_track = True

    def _progress(self, t_s: float) -> float:
        if self._baseline is not None:
            return 1.0
        if self._collect_start_s is None:
            return 0.0
        by_time = 1.0 if self.baseline_s == 0 else (t_s - self._collect_start_s) / self.baseline_s
        by_count = len(self._collected) / self.min_baseline_frames
        # Never report 1.0 before the baseline exists.
        return min(0.99, max(0.0, min(by_time, by_count)))

    def update(
        self, observation: FaceObservation, t_s: float, quality_ok: bool = True
    ) -> AUEstimate:
        """The AU estimate for one observation; frames failing quality never enter the baseline."""
        t_s = next_time(t_s, self._last_t_s)
        self._last_t_s = t_s
        shapes = observation.blendshapes if observation.face_found else None
        if shapes is None or not quality_ok:
            return AUEstimate(t_s, {}, None, self.baseline_ready, self._progress(t_s))
        track = observation.track_id
        if self._bind_track:
            self._baseline_track, self._bind_track = track, False
        elif (
            track is not None and self._baseline_track is not None and track != self._baseline_track
        ):
            log.info("new patient track %s: collecting a new neutral baseline", track)
            self.request_recalibration()
        scores = _used_scores(shapes)
        if self._baseline is None:
            if self._collect_start_s is None:
                self._collect_start_s = t_s
                self._baseline_track = track
            self._collected.append(scores)
            done = (
                t_s - self._collect_start_s >= self.baseline_s
                and len(self._collected) >= self.min_baseline_frames
            )
            if not done:
                return AUEstimate(t_s, {}, None, False, self._progress(t_s))
            self._baseline = np.median(np.stack(self._collected), axis=0)
            self._collected = []
            log.info("neutral baseline ready (%.1f s of face)", t_s - self._collect_start_s)
        return self._estimate(scores, t_s)

    def _estimate(self, scores: np.ndarray, t_s: float) -> AUEstimate:
        assert self._baseline is not None
        now, rest = _pair_means(scores), _pair_means(self._baseline)
        delta = {key: now[key] - rest[key] for key in now}
        smile_rise = max(0.0, delta["smile"])
        intensities = {
            name: blendshape_delta_to_intensity(delta[name])
            for name in ("AU4", "AU6", "AU7", "AU9")
        }
        intensities["AU10"] = blendshape_delta_to_intensity(delta["AU10"] - smile_rise)
        eyes_closed = now["AU43"] >= EYES_CLOSED_MIN and delta["AU43"] >= EYES_CLOSED_MIN_RISE
        intensities["AU43"] = 1.0 if eyes_closed else 0.0
        pspi = (
            intensities["AU4"]
            + max(intensities["AU6"], intensities["AU7"])
            + max(intensities["AU9"], intensities["AU10"])
            + intensities["AU43"]
        )
        return AUEstimate(t_s, intensities, pspi, True, 1.0)
