"""Time-constant smoothing of per-frame pain probabilities, and the AU cross-check agreement.

Everything here runs on the media time ``t_s`` handed in by the caller and never
reads a clock, so a file processed faster than real time gives the same result
as the same file watched live.

Design choices (the specification left these open):

* Confidence is the *smoothed maximum class probability* (not 1 - normalised
  entropy): with calibrated probabilities it reads as "the chance the shown class
  is right", which is what a nurse is told it means. It is multiplied by the
  smoothed frame quality and the smoothed AU agreement, smoothed with the same
  time constant so that one bad frame dents confidence in proportion to its
  weight instead of making it flicker.
* An unknown frame gives an unknown output at once, but does not by itself erase
  the filter: a blink of a frame or two of "no face" should not restart a 3 s
  average. The filter restarts from the next valid frame only when more than
  ``max_gap_s`` passed since the last valid one (whether frames were missing or
  unknown), so stale data are never blended across a real gap.
* A repeated timestamp (dt = 0) is accepted and carries zero weight
  (alpha = 0); only time going backwards is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from painmon.core.util.labels import NUM_CLASSES, PSPI_MAX, pspi_to_class
from painmon.core.util.timeline import next_time
from painmon.core.util.validate import check_probability_rows

# Half a level is rounding noise between a continuous expected level and an integer AU class.
AGREEMENT_TOLERANCE_LEVELS = 0.5
# Width (in levels) of the Gaussian fall-off beyond the tolerance: 1 level off -> 0.88,
# 2 -> 0.32, 3 -> 0.04.
AGREEMENT_WIDTH_LEVELS = 1.0
MAX_LEVEL = float(NUM_CLASSES - 1)

REASON_OK = "ok"
REASON_RESTART = "restart"


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in 0..1, got {value!r}")
    return value


@dataclass(frozen=True)
class SmoothedScore:
    """The smoothed pain estimate at media time ``t_s``; unknown outputs carry no numbers."""

    t_s: float
    probs: tuple[float, ...] | None
    pain_class: int | None
    pain_level: float | None
    confidence: float | None
    unknown: bool
    reason: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.t_s):
            raise ValueError(f"t_s must be finite, got {self.t_s!r}")
        if not self.reason:
            raise ValueError("a SmoothedScore needs a reason (why it is what it is)")
        numbers = (self.probs, self.pain_class, self.pain_level, self.confidence)
        if self.unknown:
            if any(v is not None for v in numbers):
                raise ValueError(
                    "an unknown SmoothedScore must not carry probs/class/level/confidence"
                )
            return
        if any(v is None for v in numbers):
            raise ValueError(
                "a known SmoothedScore needs probs, pain_class, pain_level and confidence"
            )
        assert self.probs is not None and self.pain_level is not None  # for the type checker
        if len(self.probs) != NUM_CLASSES:
            raise ValueError(f"probs must have {NUM_CLASSES} entries, got {len(self.probs)}")
        check_probability_rows(self.probs)
        if not (isinstance(self.pain_class, int) and 0 <= self.pain_class < NUM_CLASSES):
            raise ValueError(
                f"pain_class must be an int 0..{NUM_CLASSES - 1}, got {self.pain_class!r}"
            )
        if not (math.isfinite(self.pain_level) and 0.0 <= self.pain_level <= MAX_LEVEL):
            raise ValueError(f"pain_level must lie in 0..{MAX_LEVEL:g}, got {self.pain_level!r}")
        _check_unit("confidence", self.confidence)  # type: ignore[arg-type]


def _validate_probs(probs: Sequence[float]) -> list[float]:
    values = [float(p) for p in probs]
    if len(values) != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} class probabilities, got {len(values)}")
    check_probability_rows(
        values,
        what="class probabilities (calibrated softmax)",
        hint="; was the model output passed before softmax?",
    )
    total = sum(values)
    return [p / total for p in values]


class ProbabilitySmoother:
    """Exponential smoothing of class probabilities with alpha = 1 - exp(-dt / tau)."""

    def __init__(self, time_constant_s: float = 3.0, max_gap_s: float = 2.0) -> None:
        if not (math.isfinite(time_constant_s) and time_constant_s > 0):
            raise ValueError(f"time_constant_s must be > 0, got {time_constant_s!r}")
        if not (math.isfinite(max_gap_s) and max_gap_s > 0):
            raise ValueError(f"max_gap_s must be > 0, got {max_gap_s!r}")
        self.time_constant_s = float(time_constant_s)
        self.max_gap_s = float(max_gap_s)
        self.reset()

    def reset(self) -> None:
        """Forget all history; the next valid frame starts the average afresh."""
        self._last_t_s: float | None = None
        self._last_valid_t_s: float | None = None
        self._probs: list[float] | None = None
        self._quality = 1.0
        self._agreement = 1.0

    def update(
        self,
        t_s: float,
        probs: Sequence[float] | None,
        quality: float = 1.0,
        agreement: float = 1.0,
        *,
        unknown_reason: str = "no valid frame",
    ) -> SmoothedScore:
        """Feed one frame (``probs=None`` for an unknown frame) and return the smoothed score."""
        t_s = next_time(t_s, self._last_t_s, "call reset() when a new source or a seek starts")
        self._last_t_s = t_s

        if probs is None:
            return SmoothedScore(t_s, None, None, None, None, True, unknown_reason or "unknown")

        frame = _validate_probs(probs)
        quality = _check_unit("quality", quality)
        agreement = _check_unit("agreement", agreement)

        restart = (
            self._probs is None
            or self._last_valid_t_s is None
            or t_s - self._last_valid_t_s > self.max_gap_s
        )
        if restart:
            self._probs = frame
            self._quality = quality
            self._agreement = agreement
        else:
            assert self._probs is not None and self._last_valid_t_s is not None
            dt_s = t_s - self._last_valid_t_s
            alpha = 1.0 - math.exp(-dt_s / self.time_constant_s)
            self._probs = [s + alpha * (p - s) for s, p in zip(self._probs, frame, strict=True)]
            self._quality += alpha * (quality - self._quality)
            self._agreement += alpha * (agreement - self._agreement)
        self._last_valid_t_s = t_s

        smoothed = tuple(self._probs)
        pain_class = max(range(NUM_CLASSES), key=smoothed.__getitem__)
        pain_level = min(MAX_LEVEL, max(0.0, sum(k * p for k, p in enumerate(smoothed))))
        confidence = min(1.0, max(smoothed) * self._quality * self._agreement)
        return SmoothedScore(
            t_s=t_s,
            probs=smoothed,
            pain_class=pain_class,
            pain_level=pain_level,
            confidence=confidence,
            unknown=False,
            reason=REASON_RESTART if restart else REASON_OK,
        )


def au_agreement(model_level: float, au_pspi: float | None) -> float:
    """Agreement 0..1 between the model's expected level and the AU PSPI estimate (None -> 1.0).

    The PSPI is clipped to 0..16 and converted with the paper's class table
    (``pspi_to_class``, which rounds) rather than a linear PSPI/4: the table is
    non-linear (7-16 is one class) and it is the scale the model was trained on.
    Up to half a level apart counts as full agreement; beyond that agreement
    falls off as a Gaussian of width 1 level.
    """
    model_level = float(model_level)
    if not (math.isfinite(model_level) and 0.0 <= model_level <= MAX_LEVEL):
        raise ValueError(f"model_level must lie in 0..{MAX_LEVEL:g}, got {model_level!r}")
    if au_pspi is None:
        return 1.0
    pspi = float(au_pspi)
    if not math.isfinite(pspi):
        raise ValueError(f"AU PSPI estimate must be finite or None, got {au_pspi!r}")
    au_level = float(pspi_to_class(min(float(PSPI_MAX), max(0.0, pspi))))
    excess = max(0.0, abs(model_level - au_level) - AGREEMENT_TOLERANCE_LEVELS)
    return math.exp(-0.5 * (excess / AGREEMENT_WIDTH_LEVELS) ** 2)
