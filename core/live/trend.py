"""Downsampled history of the smoothed pain level for the bedside trend plot (no Qt).

Results arrive at up to 30 per second but a trend spans 5 to 60 minutes: points
are averaged into ``bucket_s`` buckets on wall-clock time. A bucket whose
frames were all unknown is unknown (NaN), never zero; a bucket with any known
frame averages only the known ones. The highest alarm priority seen in a
bucket is kept, so shaded alarm episodes are never shortened by averaging.

The wall clock can be stepped (NTP, an RTC correction). A step back of more than
:data:`CLOCK_STEP_BACK_S` moves the whole history back with it, so the newest bucket goes
on where the new clock says and the axis keeps showing clock times; nothing is dropped
and no alarm episode goes unshaded. A smaller step back is jitter: the point joins the
bucket still filling. A step forward leaves a gap, as time without data does.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

PRIORITY_RANK: dict[str, int] = {"none": 0, "medium": 1, "high": 2}

#: A wall clock running back by more than this (seconds) between two points was stepped:
#: the trend's history is moved back with it (less is jitter, kept in the open bucket).
CLOCK_STEP_BACK_S = 2.0


@dataclass(frozen=True)
class TrendPoint:
    """One bucket: wall-clock start (epoch s), mean level/confidence (None = unknown), priority."""

    wall_s: float
    pain_level: float | None
    confidence: float | None
    priority: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.wall_s):
            raise ValueError(f"wall_s must be finite, got {self.wall_s!r}")
        if (self.pain_level is None) != (self.confidence is None):
            raise ValueError("pain_level and confidence are known together or not at all")
        if self.priority not in PRIORITY_RANK:
            raise ValueError(f"priority must be one of {', '.join(PRIORITY_RANK)}")


@dataclass(frozen=True, eq=False)
class TrendSeries:
    """Arrays ready to plot: NaN marks unknown; spans are (start_s, end_s[, priority])."""

    wall_s: np.ndarray
    pain_level: np.ndarray
    confidence: np.ndarray
    episodes: tuple[tuple[float, float, str], ...]
    unknown_spans: tuple[tuple[float, float], ...]


class TrendBuffer:
    """Averages per-frame values into wall-clock buckets and keeps ``max_age_s`` of them."""

    def __init__(self, bucket_s: float = 1.0, max_age_s: float = 3600.0) -> None:
        if not (math.isfinite(bucket_s) and bucket_s > 0):
            raise ValueError(f"bucket_s must be > 0, got {bucket_s!r}")
        if not (math.isfinite(max_age_s) and max_age_s >= bucket_s):
            raise ValueError(f"max_age_s must be >= bucket_s, got {max_age_s!r}")
        self.bucket_s = float(bucket_s)
        self.max_age_s = float(max_age_s)
        self._points: collections.deque[TrendPoint] = collections.deque()
        self._open_key: int | None = None
        self._sums = [0.0, 0.0, 0]  # level sum, confidence sum, known count
        self._open_priority = "none"
        self._newest_wall_s = -math.inf  # the latest wall clock seen (since a step back)

    def __len__(self) -> int:
        return len(self._points) + (self._open_key is not None)

    def update(
        self, wall_s: float, pain_level: float | None, confidence: float | None, priority: str
    ) -> None:
        """Add one frame's smoothed values at wall-clock ``wall_s`` (epoch seconds)."""
        if priority not in PRIORITY_RANK:
            raise ValueError(f"priority must be one of {', '.join(PRIORITY_RANK)}")
        if not math.isfinite(wall_s):
            raise ValueError(f"wall_s must be finite, got {wall_s!r}")
        key = math.floor(wall_s / self.bucket_s)
        if self._open_key is not None and key < self._open_key:
            if self._newest_wall_s - wall_s > CLOCK_STEP_BACK_S:
                # The wall clock was stepped back (NTP, RTC): the history moves back with
                # it, to end in the bucket before this point's.
                log.info(
                    "the wall clock stepped back %.1f s: the trend's history moves with it",
                    self._newest_wall_s - wall_s,
                )
                self._shift(key - self._open_key - 1)
                self._newest_wall_s = -math.inf
            else:
                key = self._open_key  # jitter: the point joins the bucket still filling
        self._newest_wall_s = max(self._newest_wall_s, float(wall_s))
        if self._open_key is not None and key != self._open_key:
            self._close_bucket()
        if self._open_key is None:
            self._open_key = key
            self._sums = [0.0, 0.0, 0]
            self._open_priority = "none"
        if pain_level is not None and confidence is not None:
            self._sums[0] += float(pain_level)
            self._sums[1] += float(confidence)
            self._sums[2] += 1
        if PRIORITY_RANK[priority] > PRIORITY_RANK[self._open_priority]:
            self._open_priority = priority
        oldest_s = wall_s - self.max_age_s
        while self._points and self._points[0].wall_s < oldest_s:
            self._points.popleft()

    def _shift(self, buckets: int) -> None:
        """Move every bucket, the open one too, by ``buckets`` buckets in time."""
        delta_s = buckets * self.bucket_s
        self._points = collections.deque(
            dataclasses.replace(p, wall_s=p.wall_s + delta_s) for p in self._points
        )
        if self._open_key is not None:
            self._open_key += buckets

    def _open_point(self) -> TrendPoint | None:
        if self._open_key is None:
            return None
        level_sum, confidence_sum, count = self._sums
        known = count > 0
        return TrendPoint(
            self._open_key * self.bucket_s,
            level_sum / count if known else None,
            confidence_sum / count if known else None,
            self._open_priority,
        )

    def _close_bucket(self) -> None:
        point = self._open_point()
        if point is not None:
            self._points.append(point)
        self._open_key = None

    def points(self) -> list[TrendPoint]:
        """Every bucket, oldest first, including the one still filling."""
        current = self._open_point()
        return [*self._points, *([current] if current is not None else [])]

    def series(self, since_wall_s: float = -math.inf) -> TrendSeries:
        """The buckets from ``since_wall_s`` on as arrays, with alarm episodes and unknown spans."""
        points = [p for p in self.points() if p.wall_s >= since_wall_s]
        nan = math.nan
        wall = np.array([p.wall_s for p in points], dtype=np.float64)
        level = np.array([nan if p.pain_level is None else p.pain_level for p in points])
        confidence = np.array([nan if p.confidence is None else p.confidence for p in points])
        episodes: list[tuple[float, float, str]] = []
        unknown: list[tuple[float, float]] = []
        for p in points:
            end_s = p.wall_s + self.bucket_s
            if p.priority != "none":
                if episodes and episodes[-1][2] == p.priority and episodes[-1][1] >= p.wall_s:
                    episodes[-1] = (episodes[-1][0], end_s, p.priority)
                else:
                    episodes.append((p.wall_s, end_s, p.priority))
            if p.pain_level is None:
                if unknown and unknown[-1][1] >= p.wall_s:
                    unknown[-1] = (unknown[-1][0], end_s)
                else:
                    unknown.append((p.wall_s, end_s))
        return TrendSeries(wall, level, confidence, tuple(episodes), tuple(unknown))


#: While the trend holds less than this, the x axis still spans this much (a few seconds of
#: data stretched over the whole plot would look like a wild swing).
MIN_VISIBLE_SPAN_S = 60.0


def visible_range(
    first_s: float | None, now_s: float, window_s: float, min_span_s: float = MIN_VISIBLE_SPAN_S
) -> tuple[float, float]:
    """The trend's x range (wall-clock seconds): from the first sample to now until the data
    spans the chosen window, then the last ``window_s`` scrolling with now.

    The first minutes of a run fill the plot from the left instead of being squeezed into
    its right edge. The span is never shorter than ``min_span_s`` (nor than the window).
    """
    for name, value in (("now_s", now_s), ("window_s", window_s), ("min_span_s", min_span_s)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    full = (now_s - window_s, now_s)
    if first_s is None or not math.isfinite(first_s) or first_s <= now_s - window_s:
        return full
    span_s = min(window_s, max(min_span_s, 0.0))
    if now_s - first_s < span_s:
        return first_s, first_s + span_s
    return first_s, now_s
