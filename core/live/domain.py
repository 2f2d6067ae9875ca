"""Is the face in front of the camera like the faces the model was trained on?

The exported model carries a domain gate (fitted at export, see
:mod:`painmon.core.research.domain_gate`): an output ``domain_score`` per crop and, in
its metadata, the threshold above which a crop is unlike the training crops. This module
is the bedside half:

* :class:`DomainGateSpec` — the gate as the model file describes it (parsed, validated).
* :class:`DomainMonitor` — per frame, whether the crop is out of domain, and whether that
  has lasted long enough (``persist_s``, default 1 s) to be the technical condition
  OUT_OF_DOMAIN ("face unlike this model's training data").

Design choices:

* A crop beyond the threshold gets **no pain output** on that very frame (the model cannot
  know; unknown is never "no pain" and never a guess). The technical alarm is raised only
  once out-of-domain frames have lasted ``persist_s`` (the alarm manager's own delay), so a
  single odd frame (a blink, a motion blur) does not post a banner.
* The condition clears after ``clear_s`` (default 1 s) of in-domain frames, so a face on
  the border does not toggle the banner every frame.
* Frames without a face crop (no face, low quality, a camera condition) neither extend nor
  clear the out-of-domain stretch: they say nothing about the face.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from painmon.core.util.errors import InvalidInputError

DEFAULT_PERSIST_S = 1.0
DEFAULT_CLEAR_S = 1.0
OUT_OF_DOMAIN_TEXT = "face unlike this model's training data"


@dataclass(frozen=True)
class DomainGateSpec:
    """The gate recorded in a model's ``domain_gate`` metadata: flag when score > threshold."""

    threshold: float
    method: str
    quantile: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise InvalidInputError(
                f"domain gate threshold must be a finite number > 0, got {self.threshold!r}"
            )
        if not self.method:
            raise InvalidInputError("domain gate needs a method name")
        if self.quantile is not None and not (0.0 < self.quantile < 1.0):
            raise InvalidInputError(
                f"domain gate quantile must lie strictly between 0 and 1, got {self.quantile!r}"
            )

    def out_of_domain(self, score: float) -> bool:
        """True when ``score`` lies beyond the threshold (NaN counts as out of domain)."""
        return not (float(score) <= self.threshold)

    @classmethod
    def from_metadata(cls, entry: Mapping[str, Any] | None) -> DomainGateSpec | None:
        """The spec from a parsed ``domain_gate`` entry; None when the model has no gate."""
        if entry is None:
            return None
        if not isinstance(entry, Mapping):
            raise InvalidInputError(
                f"domain_gate metadata must be an object, got {type(entry).__name__}"
            )
        if not entry or entry.get("method") in (None, "none"):
            return None
        try:
            threshold = float(entry["threshold"])
            quantile = entry.get("quantile")
            quantile = float(quantile) if quantile is not None else None
        except (KeyError, TypeError, ValueError):
            shown = repr(dict(entry))
            if len(shown) > 120:
                shown = shown[:117] + "..."
            raise InvalidInputError(
                f"domain_gate metadata needs a numeric threshold (and quantile): {shown}"
            ) from None
        return cls(threshold=threshold, method=str(entry["method"]), quantile=quantile)


@dataclass(frozen=True)
class DomainStatus:
    """One frame's domain verdict.

    ``frame_out`` — this crop lies beyond the threshold (its output must be unknown);
    ``condition`` — out-of-domain has lasted ``persist_s`` (the technical condition);
    ``out_for_s`` — how long the current out-of-domain stretch has lasted (0 when in domain).
    """

    score: float | None
    frame_out: bool
    condition: bool
    out_for_s: float


class DomainMonitor:
    """Turns per-crop domain scores into the OUT_OF_DOMAIN condition (media time)."""

    def __init__(
        self,
        spec: DomainGateSpec | None,
        persist_s: float = DEFAULT_PERSIST_S,
        clear_s: float = DEFAULT_CLEAR_S,
    ) -> None:
        for name, value in (("persist_s", persist_s), ("clear_s", clear_s)):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidInputError(f"{name} must be a number of seconds >= 0, got {value!r}")
        self.spec = spec
        self.persist_s = float(persist_s)
        self.clear_s = float(clear_s)
        self.reset()

    def reset(self) -> None:
        """Forget the current stretch (a new patient or source)."""
        self._out_since: float | None = None
        self._in_since: float | None = None
        self._condition = False

    @property
    def active(self) -> bool:
        """The OUT_OF_DOMAIN condition holds now."""
        return self._condition

    def update(self, t_s: float, score: float | None) -> DomainStatus:
        """Feed the frame's domain score (None: no crop was scored on this frame)."""
        if self.spec is None or score is None:
            out_for = 0.0 if self._out_since is None else max(0.0, t_s - self._out_since)
            return DomainStatus(score, False, self._condition, out_for)
        frame_out = self.spec.out_of_domain(score)
        if frame_out:
            self._in_since = None
            if self._out_since is None:
                self._out_since = t_s
            if t_s - self._out_since >= self.persist_s:
                self._condition = True
        else:
            self._out_since = None
            if self._in_since is None:
                self._in_since = t_s
            if self._condition and t_s - self._in_since >= self.clear_s:
                self._condition = False
        out_for = 0.0 if self._out_since is None else t_s - self._out_since
        return DomainStatus(float(score), frame_out, self._condition, out_for)
