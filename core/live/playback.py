"""How well playback keeps up: media seconds per wall second and the share of frames dropped.

A file or the demo patient played "in real time" must move at the speed of the wall clock,
because the alarm delay (e.g. 10 s) runs on media time: at 0.5x real time a 10 s delay
takes 20 s at the bedside. :class:`PlaybackMeter` is fed by the capture thread after every
frame and summarises the last :data:`PLAYBACK_WINDOW_S` seconds; :func:`playback_text` is
the one line the status bar shows (computed here, so the window only sets a label).

Modes (``CaptureStats.mode``): ``live`` (camera, stream: real time by nature),
``realtime`` (files and the demo paced to their own rate, frames the monitor cannot score
are dropped) and ``every_frame`` (``--every-frame``: every frame in order, as fast as the
scoring goes, for analysis).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from painmon.core.live.capture import CaptureStats

PLAYBACK_MODES: tuple[str, ...] = ("live", "realtime", "every_frame")
#: The rate and drop share are judged over this much recent wall time.
PLAYBACK_WINDOW_S = 10.0
#: Below this many media seconds per wall second a paced file says it plays slower.
SLOW_PLAYBACK_RATE = 0.95
#: Drops under this share of frames (0.5 %) are not worth a nurse's attention.
MIN_DROP_FRACTION_SHOWN = 0.005
# A rate needs at least this much wall time between the oldest and newest sample.
_MIN_SPAN_S = 1.0


@dataclass(frozen=True)
class PlaybackSample:
    """Counters after one frame: wall clock, its media time, frames offered and lost so far."""

    wall_s: float
    media_s: float
    frames_offered: int
    frames_lost: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.wall_s) and math.isfinite(self.media_s)):
            raise ValueError("playback sample times must be finite")
        if not 0 <= self.frames_lost <= self.frames_offered:
            raise ValueError(
                f"frames_lost ({self.frames_lost}) must lie in 0..frames_offered "
                f"({self.frames_offered})"
            )


class PlaybackMeter:
    """Media seconds per wall second and share of frames lost over the last ``window_s``.

    ``update(...)`` after each frame with cumulative counters: ``frames_offered`` is every
    frame of the media that came due (read, or passed over to catch up), ``frames_lost`` the
    ones that were never scored (passed over, or replaced in the buffer before the monitor
    took them). A media source that restarts its time (a looped file) restarts the meter.
    """

    def __init__(self, window_s: float = PLAYBACK_WINDOW_S) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
        self.window_s = float(window_s)
        self._samples: collections.deque[PlaybackSample] = collections.deque()

    def reset(self) -> None:
        self._samples.clear()

    def update(self, wall_s: float, media_s: float, frames_offered: int, frames_lost: int) -> None:
        sample = PlaybackSample(
            float(wall_s), float(media_s), int(frames_offered), int(frames_lost)
        )
        if self._samples and (
            sample.media_s < self._samples[-1].media_s or sample.wall_s < self._samples[-1].wall_s
        ):
            self._samples.clear()  # media time ran back (a new loop): a new playback
        self._samples.append(sample)
        # Keep one sample older than the window so the span covers the whole window.
        while len(self._samples) > 2 and self._samples[1].wall_s <= wall_s - self.window_s:
            self._samples.popleft()

    @property
    def rate(self) -> float | None:
        """Media seconds per wall second over the window; None before ``_MIN_SPAN_S`` of data."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        span_s = last.wall_s - first.wall_s
        if span_s < _MIN_SPAN_S:
            return None
        return (last.media_s - first.media_s) / span_s

    @property
    def drop_fraction(self) -> float | None:
        """Share of the frames that came due in the window and were never scored."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        offered = last.frames_offered - first.frames_offered
        if offered <= 0:
            return None
        return max(0.0, min(1.0, (last.frames_lost - first.frames_lost) / offered))


def _rate_text(rate: float) -> str:
    return f"{rate:.1f}"


def _drop_text(fraction: float) -> str:
    percent = 100.0 * fraction
    return "dropped <1 % of frames" if percent < 1.0 else f"dropped {percent:.0f} % of frames"


def playback_text(stats: CaptureStats | None) -> str:
    """The status bar's playback line, e.g. "real time, dropped 12 % of frames",
    "playing at 0.8× real time, dropped 40 % of frames", "every frame, 0.6× real time";
    "" when nothing plays or a live source drops nothing."""
    if stats is None:
        return ""
    rate, dropped = stats.playback_rate, stats.drop_fraction
    if stats.mode == "every_frame":
        return "every frame" + (f", {_rate_text(rate)}× real time" if rate is not None else "")
    parts: list[str] = []
    if stats.mode == "realtime":
        if rate is not None and rate < SLOW_PLAYBACK_RATE:
            parts.append(f"playing at {_rate_text(rate)}× real time")
        else:
            parts.append("real time")
    if dropped is not None and dropped >= MIN_DROP_FRACTION_SHOWN:
        parts.append(_drop_text(dropped))
    elif parts and dropped is not None:
        parts.append("no frames dropped")
    return ", ".join(parts)
