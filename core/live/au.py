"""Training-free PSPI estimate from Face Landmarker blendshapes, relative to the patient's neutral.

The estimate cross-checks the network: it needs no training data, so it cannot
share the network's dataset biases, but it is coarse. How it is built:

* Action units from MediaPipe blendshapes (mean of left and right, as pain
  expressions are mostly symmetric and the mean halves one-sided noise):
  AU4 brow lowerer = browDown*, AU6 cheek raiser = cheekSquint*, AU7 lid
  tightener = eyeSquint*, AU9 nose wrinkler = noseSneer*, AU10 upper-lip raiser =
  mouthUpperUp*, AU43 eyes closed = eyeBlink*.
* Everything is relative to a per-patient neutral baseline: faces differ at rest,
  and a resting frown must read 0.
* Intensity: a rise of ``delta`` over the baseline maps linearly from
  ``DEAD_ZONE`` (0.05, frame-to-frame jitter of a still face) -> 0 to
  ``FULL_SCALE`` (0.6) -> 5, clipped to 0..5. AU43 is 0/1: 1 when the eyes are
  closed (eyeBlink >= 0.5) and at least 0.3 more closed than at rest.
* PSPI = AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43, the Prkachin-Solomon
  formula on continuous intensities, so a float in 0..16 (``AUEstimate.rounded_pspi``
  gives the integer PSPI of the rounded intensities via ``labels.pspi_from_aus``).

Smiles, laughter and speech (the rule, and why)
-----------------------------------------------
Three of the four PSPI terms are also moved by happy faces and by talking. In
MediaPipe's model a broad smile lifts mouthUpperUp to 0.6-0.9 (a full "AU10"), a
Duchenne smile raises the cheeks (AU6) and, in a laugh, narrows the eyes by
0.2-0.35 of eyeSquint (AU7); speech moves the upper lip and cheeks frame to frame.
Measured on the shared real videos, a smile-blind estimate read a laughing face as
PSPI 4-5. So, per frame:

* ``smile`` = ramp of the *absolute* mouthSmile* level (AU12, the lip-corner pull)
  from ``SMILE_START`` (0.1; neutral faces read 0-0.05) to ``SMILE_FULL`` (0.35).
  Absolute, not a rise over the baseline: a baseline that already held a smile must
  not switch the correction off (the old rise-based correction clipped to zero there
  and laughter read PSPI 4.4). The cheek raise (AU6) is not smile evidence on its
  own: pain raises the cheeks too; only with the lip-corner pull is it a smile
  (AU6+AU12), and then it is discounted below.
* ``speech`` = ramp of the short-term variability of the mouth (the largest standard
  deviation of jawOpen, mouthClose, mouthFunnel, mouthPucker over the last
  ``SPEECH_WINDOW_S``) from ``SPEECH_STD_START`` to ``SPEECH_STD_FULL``. Talking is
  the mouth opening and closing several times a second; a pain grimace holds.
* ``laugh`` = ``smile`` times the teeth showing (absolute mouthUpperUp* ramping
  0.2 -> 0.5). This separates laughter from crying, which MediaPipe also reads as a
  "smile" but with the upper lip down.
* A lowered brow (AU4) is part of no smile, so a brow rise (browDown* 0.1 -> 0.3
  over the baseline) marks the mouth as a grimace and withdraws the smile and laugh
  discounts in proportion (``grimace``). Speech keeps its discount.
* Then the rises the happy or talking face explains are taken out before the
  intensity mapping: AU6 and AU10 rises are scaled by ``1 - max(smile * (1 -
  grimace), speech)``; the AU7 rise loses ``LAUGH_SQUINT`` (0.35, the squint of a
  laugh) times ``laugh * (1 - grimace)``, so a squeeze beyond a laugh's still counts;
  and eyes shut in a laugh (``laugh`` above 0.5, no grimace) are not AU43.
  AU4 and AU9 are never discounted: no smile or speech produces them.

The neutral baseline
--------------------
It is a low percentile (``BASELINE_PERCENTILE``) per blendshape over *neutral
candidate* frames: quality-passing frames without a smile, speech or closed eyes.
A low percentile, not the median, because pain, smiles and talking only ever raise
these blendshapes: the resting face is the low end of what the patient shows.
Until ``provisional_s`` (1 s) of collection has passed with at least 5 candidates
(so from the first frame, and for a still image from its only frame) the baseline is
the element-wise minimum of
``POPULATION_NEUTRAL`` (typical Face Landmarker scores of a neutral adult face) and
the low percentile of the frames seen so far, so a still or a clip that starts in
pain is measured against a typical neutral face rather than against itself. After
that it is the patient's own, still provisional and refined until ``baseline_s``
(30 s) of collection with ``min_baseline_frames`` candidates, when it is frozen
(``baseline_ready``).
``request_recalibration()`` starts over; ``calibrate_neutral`` sets it at once (the
median of the given frames, which the caller says are neutral); a new face track
starts over too, as it may be someone else.

Known limits (measured on the shared videos): cheekSquint* and noseSneer* stay
near 0 in MediaPipe's model, so AU6 and AU9 rarely contribute, and browDown*
rarely exceeds 0.1 even on a clear frown, so AU4 is under-read. A pain grimace
that MediaPipe reads as a toothy smile (without a brow rise it can see) loses
AU7/AU10 to the smile rule: the cross-check errs low on ambiguous smiles.
"""

from __future__ import annotations

import logging
import math
from collections import deque
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
SPEECH_BLENDSHAPES = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker")
AU_NAMES: tuple[str, ...] = tuple(AU_BLENDSHAPES)
_USED_BLENDSHAPES: tuple[str, ...] = (
    *(name for pair in AU_BLENDSHAPES.values() for name in pair),
    *SMILE_BLENDSHAPES,
    *SPEECH_BLENDSHAPES,
)
_SPEECH_COLUMNS = slice(len(_USED_BLENDSHAPES) - len(SPEECH_BLENDSHAPES), None)

MAX_INTENSITY = 5.0
DEAD_ZONE = 0.05
FULL_SCALE = 0.6
EYES_CLOSED_MIN = 0.5
EYES_CLOSED_MIN_RISE = 0.3

SMILE_START = 0.1
SMILE_FULL = 0.35
TEETH_START = 0.2
TEETH_FULL = 0.5
GRIMACE_BROW_START = 0.1
GRIMACE_BROW_FULL = 0.3
LAUGH_SQUINT = 0.35
SPEECH_WINDOW_S = 1.0
SPEECH_STD_START = 0.03
SPEECH_STD_FULL = 0.08
# A neutral candidate: no smile, no speech, eyes open.
NEUTRAL_MAX_SMILE = 0.1
NEUTRAL_MAX_SPEECH = 0.1
NEUTRAL_MAX_EYES_CLOSED = 0.4
BASELINE_PERCENTILE = 25.0
# Most frames kept while collecting a baseline (about 60 s at 30 fps).
_MAX_COLLECTED = 1800
_REFIT_EVERY_S = 0.2
# Fewest neutral candidates for a patient's own (provisional) baseline.
_MIN_OWN_FRAMES = 5

# Typical Face Landmarker scores of a neutral adult face, on the high side of what neutral
# faces show, so that a provisional baseline (min of this and the frames seen) errs low.
POPULATION_NEUTRAL: dict[str, float] = {
    "browDownLeft": 0.05,
    "browDownRight": 0.05,
    "cheekSquintLeft": 0.05,
    "cheekSquintRight": 0.05,
    "eyeSquintLeft": 0.35,
    "eyeSquintRight": 0.35,
    "noseSneerLeft": 0.05,
    "noseSneerRight": 0.05,
    "mouthUpperUpLeft": 0.1,
    "mouthUpperUpRight": 0.1,
    "eyeBlinkLeft": 0.15,
    "eyeBlinkRight": 0.15,
    "mouthSmileLeft": 0.05,
    "mouthSmileRight": 0.05,
    "jawOpen": 0.05,
    "mouthClose": 0.05,
    "mouthFunnel": 0.05,
    "mouthPucker": 0.1,
}


def blendshape_delta_to_intensity(delta: float) -> float:
    """FACS-like intensity 0..5 from a blendshape rise over the neutral baseline."""
    fraction = (float(delta) - DEAD_ZONE) / (FULL_SCALE - DEAD_ZONE)
    return MAX_INTENSITY * min(1.0, max(0.0, fraction))


def _ramp(value: float, start: float, full: float) -> float:
    """0 at or below ``start``, 1 at or above ``full``, linear between."""
    return min(1.0, max(0.0, (float(value) - start) / (full - start)))


@dataclass(frozen=True)
class AUEstimate:
    """AU intensities (AU4..AU43) and the continuous PSPI at ``t_s``; None/empty when unknown.

    ``baseline_ready`` is True once the patient's neutral baseline is final; an estimate
    made before that is measured against a provisional baseline (``baseline_provisional``).
    """

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

    @property
    def baseline_provisional(self) -> bool:
        """True when this PSPI is measured against a provisional (not yet final) baseline."""
        return self.pspi is not None and not self.baseline_ready

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


_POPULATION_NEUTRAL = _used_scores(POPULATION_NEUTRAL)


def _pair_means(scores: np.ndarray) -> dict[str, float]:
    """Mean of each left/right pair (AUs and smile) from a _USED_BLENDSHAPES vector."""
    keys = (*AU_NAMES, "smile")
    return {key: float(scores[2 * i : 2 * i + 2].mean()) for i, key in enumerate(keys)}


def smile_level(now: Mapping[str, float]) -> float:
    """0..1: how much of a smile (the lip-corner pull, AU12) the face shows, absolute."""
    return _ramp(now["smile"], SMILE_START, SMILE_FULL)


def speech_level(mouth_std: float) -> float:
    """0..1: how much the mouth's short-term variability looks like talking."""
    return _ramp(mouth_std, SPEECH_STD_START, SPEECH_STD_FULL)


def _is_neutral_candidate(now: Mapping[str, float], speech: float) -> bool:
    return (
        smile_level(now) <= NEUTRAL_MAX_SMILE
        and speech <= NEUTRAL_MAX_SPEECH
        and now["AU43"] < NEUTRAL_MAX_EYES_CLOSED
    )


def estimate_intensities(
    scores: np.ndarray, baseline: np.ndarray, speech: float
) -> dict[str, float]:
    """AU intensities of one frame against a baseline, smile-, laugh- and speech-aware."""
    now, rest = _pair_means(scores), _pair_means(baseline)
    delta = {key: now[key] - rest[key] for key in now}
    smile = smile_level(now)
    grimace = _ramp(delta["AU4"], GRIMACE_BROW_START, GRIMACE_BROW_FULL)
    laugh = smile * _ramp(now["AU10"], TEETH_START, TEETH_FULL) * (1.0 - grimace)
    mouth_discount = max(smile * (1.0 - grimace), speech)
    intensities = {
        "AU4": blendshape_delta_to_intensity(delta["AU4"]),
        "AU6": blendshape_delta_to_intensity(delta["AU6"] * (1.0 - mouth_discount)),
        "AU7": blendshape_delta_to_intensity(delta["AU7"] - LAUGH_SQUINT * laugh),
        "AU9": blendshape_delta_to_intensity(delta["AU9"]),
        "AU10": blendshape_delta_to_intensity(delta["AU10"] * (1.0 - mouth_discount)),
    }
    eyes_closed = now["AU43"] >= EYES_CLOSED_MIN and delta["AU43"] >= EYES_CLOSED_MIN_RISE
    intensities["AU43"] = 1.0 if eyes_closed and laugh <= 0.5 else 0.0
    return intensities


def pspi_from_intensities(intensities: Mapping[str, float]) -> float:
    """Prkachin-Solomon PSPI of continuous AU intensities."""
    return (
        intensities["AU4"]
        + max(intensities["AU6"], intensities["AU7"])
        + max(intensities["AU9"], intensities["AU10"])
        + intensities["AU43"]
    )


class AUEstimator:
    """Per-patient AU/PSPI estimate relative to an automatically collected neutral baseline.

    See the module docstring for the baseline (provisional from the first frame, the
    patient's own after ``provisional_s``, final after ``baseline_s`` with at least
    ``min_baseline_frames`` neutral candidates). It is collected again after
    ``request_recalibration()`` and whenever the face tracker re-acquires a different
    track (``FaceObservation.track_id``), since that may be someone else.
    """

    def __init__(
        self,
        baseline_s: float = 30.0,
        min_baseline_frames: int = 15,
        provisional_s: float = 1.0,
        percentile: float = BASELINE_PERCENTILE,
    ) -> None:
        if not (math.isfinite(baseline_s) and baseline_s >= 0):
            raise ValueError(f"baseline_s must be >= 0, got {baseline_s!r}")
        if min_baseline_frames < 1:
            raise ValueError(f"min_baseline_frames must be >= 1, got {min_baseline_frames}")
        if not (math.isfinite(provisional_s) and provisional_s >= 0):
            raise ValueError(f"provisional_s must be >= 0, got {provisional_s!r}")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must lie in 0..100, got {percentile!r}")
        self.baseline_s = float(baseline_s)
        self.min_baseline_frames = int(min_baseline_frames)
        self.provisional_s = min(float(provisional_s), self.baseline_s)
        self.percentile = float(percentile)
        self._baseline: np.ndarray | None = None
        self._baseline_final = False
        self._baseline_track: int | None = None
        self._bind_track = False
        self._all: deque[np.ndarray] = deque(maxlen=_MAX_COLLECTED)
        self._candidates: deque[np.ndarray] = deque(maxlen=_MAX_COLLECTED)
        self._collect_start_s: float | None = None
        self._refit_t_s: float | None = None
        self._baseline_own = False
        self._mouth: deque[tuple[float, np.ndarray]] = deque()
        self._last_t_s: float | None = None

    @property
    def baseline_ready(self) -> bool:
        """True once the neutral baseline is final (not provisional)."""
        return self._baseline_final

    @property
    def baseline(self) -> dict[str, float] | None:
        """The current neutral baseline's blendshape scores (only those the AUs use)."""
        if self._baseline is None:
            return None
        return dict(zip(_USED_BLENDSHAPES, self._baseline.tolist(), strict=True))

    def request_recalibration(self) -> None:
        """Drop the baseline; a new one is collected from the next usable frames."""
        self._baseline = None
        self._baseline_final = False
        self._baseline_track = None
        self._bind_track = False
        self._all.clear()
        self._candidates.clear()
        self._collect_start_s = None
        self._refit_t_s = None
        self._baseline_own = False

    def calibrate_neutral(
        self, observations: Iterable[FaceObservation | Mapping[str, float]]
    ) -> None:
        """Set the final baseline now from neutral frames (observations or blendshape dicts).

        The median of the given frames, leaving out smiling or eyes-closed ones when any
        others remain.
        """
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
        calm = [row for row in rows if _is_neutral_candidate(_pair_means(row), 0.0)]
        self.request_recalibration()
        self._baseline = np.median(np.stack(calm or rows), axis=0)
        self._baseline_final = True
        # Bound to whichever patient track the next frame belongs to.
        self._bind_track = True

    def _progress(self, t_s: float) -> float:
        if self._baseline_final:
            return 1.0
        if self._collect_start_s is None:
            return 0.0
        by_time = 1.0 if self.baseline_s == 0 else (t_s - self._collect_start_s) / self.baseline_s
        by_count = len(self._candidates) / self.min_baseline_frames
        # Never report 1.0 before the baseline is final.
        return min(0.99, max(0.0, min(by_time, by_count)))

    def _mouth_std(self, scores: np.ndarray, t_s: float) -> float:
        """Largest standard deviation of the speech blendshapes over the last window."""
        self._mouth.append((t_s, scores[_SPEECH_COLUMNS]))
        while self._mouth and self._mouth[0][0] < t_s - SPEECH_WINDOW_S:
            self._mouth.popleft()
        if len(self._mouth) < 3:
            return 0.0
        return float(np.stack([m for _, m in self._mouth]).std(axis=0).max())

    def _collect(self, scores: np.ndarray, candidate: bool, t_s: float) -> None:
        if self._collect_start_s is None:
            self._collect_start_s = t_s
        self._all.append(scores)
        if candidate:
            self._candidates.append(scores)
        elapsed = t_s - self._collect_start_s
        enough = len(self._candidates) >= min(_MIN_OWN_FRAMES, self.min_baseline_frames)
        own = elapsed >= self.provisional_s and enough
        final = elapsed >= self.baseline_s and len(self._candidates) >= self.min_baseline_frames
        # Refitting every frame is wasted work (the percentile moves slowly), except when the
        # baseline first exists, turns into the patient's own, or becomes final.
        stale = self._refit_t_s is None or t_s - self._refit_t_s >= _REFIT_EVERY_S
        if not (stale or final or own != self._baseline_own or self._baseline is None):
            return
        self._refit_t_s, self._baseline_own = t_s, own
        if own:
            self._baseline = np.percentile(np.stack(self._candidates), self.percentile, axis=0)
        else:
            seen = np.percentile(np.stack(self._all), self.percentile, axis=0)
            self._baseline = np.minimum(_POPULATION_NEUTRAL, seen)
        if final:
            self._baseline_final = True
            self._all.clear()
            self._candidates.clear()
            log.info("neutral baseline ready (%.1f s of face)", elapsed)

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
            self._mouth.clear()
        if self._baseline_track is None and not self._baseline_final:
            self._baseline_track = track
        scores = _used_scores(shapes)
        speech = speech_level(self._mouth_std(scores, t_s))
        if not self._baseline_final:
            candidate = _is_neutral_candidate(_pair_means(scores), speech)
            self._collect(scores, candidate, t_s)
        assert self._baseline is not None
        intensities = estimate_intensities(scores, self._baseline, speech)
        return AUEstimate(
            t_s,
            intensities,
            pspi_from_intensities(intensities),
            self.baseline_ready,
            self._progress(t_s),
        )
