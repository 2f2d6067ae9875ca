"""Time as the real-time stages see it: media time (finite, never going backwards) and UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from painmon.core.util.validate import check_finite


def utc_now() -> datetime:
    """Now, timezone-aware in UTC: the default wall clock of alarms, sessions and the registry."""
    return datetime.now(UTC)


def next_time(t_s: float, last_t_s: float | None, remedy: str = "") -> float:
    """``t_s`` as a float after checking it against the stage's previous stamp.

    A repeated stamp is fine (frames can share a millisecond); NaN/inf or a stamp earlier
    than ``last_t_s`` raise ``ValueError`` naming both, plus ``remedy`` when given.
    """
    t = check_finite(float(t_s), "t_s")
    if last_t_s is not None and t < last_t_s:
        message = f"time went backwards: t_s={t:.3f} s after {last_t_s:.3f} s"
        raise ValueError(f"{message}; {remedy}" if remedy else message)
    return t
