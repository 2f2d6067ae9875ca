"""Media time as the real-time stages see it: finite and never going backwards."""

from __future__ import annotations

import math


def next_time(t_s: float, last_t_s: float | None, remedy: str = "") -> float:
    """``t_s`` as a float after checking it against the stage's previous stamp.

    A repeated stamp is fine (frames can share a millisecond); NaN/inf or a stamp earlier
    than ``last_t_s`` raise ``ValueError`` naming both, plus ``remedy`` when given.
    """
    t = float(t_s)
    if not math.isfinite(t):
        raise ValueError(f"t_s must be finite, got {t_s!r}")
    if last_t_s is not None and t < last_t_s:
        message = f"time went backwards: t_s={t:.3f} s after {last_t_s:.3f} s"
        raise ValueError(f"{message}; {remedy}" if remedy else message)
    return t
