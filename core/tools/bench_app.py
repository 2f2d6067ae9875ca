"""Display benchmark, the Qt-free half: paced input, latency and stall bookkeeping, summary.

``painmon bench app`` (painmon.app.bench) runs the real bedside window on a file
played in real time and measures, for each frame that reaches the screen, the
time from its capture stamp to the moment its pixmap was painted, plus how late a
10 ms GUI timer fires (the event-loop stall). This module holds everything that
does not need Qt: the input re-timing, the recorders and the summary dict.

Design choices:

* Input rate: the issue's target is stated at 30 fps input; a file recorded at
  another rate is re-stamped to ``input_fps`` (every frame kept, played faster or
  slower) and looped so that any duration can be measured.
* Dropped frames: everything read from the source that never reached the screen,
  whether the capture buffer replaced it (worker busy) or the GUI painted a newer
  result first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from painmon.core.live.capture import FrameSource, RawFrame
from painmon.core.util.redact import redact_source

DEFAULT_INPUT_FPS = 30.0
LATENCY_TARGET_P95_MS = 150.0
STALL_TARGET_P99_MS = 100.0
STALL_TIMER_INTERVAL_MS = 10
APP_BENCH_KEYS: tuple[str, ...] = (
    "source",
    "end_reason",
    "input_fps",
    "seconds_measured",
    "frames_read",
    "frames_dropped_capture",
    "frames_processed",
    "frames_displayed",
    "frames_dropped",
    "displayed_fps",
    "latency_ms",
    "stall_ms",
    "stall_samples",
    "gui_ms",
    "latency_target_p95_ms",
    "latency_target_met",
    "stall_target_p99_ms",
    "stall_target_met",
    "gradcam_overlay",
    "face_tracker",
    "model",
    "pipelined",
    "load_average",
)


class RetimedSource(FrameSource):
    """A media source re-stamped to ``t_s = n / fps``; with ``loop`` it restarts at the end."""

    def __init__(self, inner: FrameSource, fps: float = DEFAULT_INPUT_FPS, loop: bool = True):
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"input fps must be a positive number, got {fps!r}")
        if inner.is_live:
            raise ValueError(f"{inner.name} is live: only files can be re-timed")
        super().__init__(inner.name)
        self.inner = inner
        self.fps = float(fps)
        self.loop = loop
        self.loops = 0
        self._count = 0

    def open(self) -> None:
        self.inner.open()
        self._count = 0
        self.loops = 0

    def read(self) -> RawFrame | None:
        raw = self.inner.read()
        if raw is None and self.loop and self._count > 0:
            self.inner.open()
            self.loops += 1
            raw = self.inner.read()
        if raw is None:
            return None
        index = self._count
        self._count += 1
        return RawFrame(raw.rgb, index / self.fps, index)

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class DisplaySample:
    """One frame that reached the screen: capture stamp and paint time (monotonic seconds)."""

    frame_index: int
    captured_monotonic_s: float
    painted_monotonic_s: float

    def __post_init__(self) -> None:
        if not (
            math.isfinite(self.captured_monotonic_s) and math.isfinite(self.painted_monotonic_s)
        ):
            raise ValueError("display stamps must be finite")
        if self.painted_monotonic_s < self.captured_monotonic_s:
            raise ValueError(
                f"frame {self.frame_index} painted before it was captured "
                f"({self.painted_monotonic_s} < {self.captured_monotonic_s})"
            )

    @property
    def latency_ms(self) -> float:
        return (self.painted_monotonic_s - self.captured_monotonic_s) * 1000.0


class DisplayRecorder:
    """Collects display samples after ``start_s``; each frame counts once (first paint)."""

    def __init__(self, start_s: float = -math.inf) -> None:
        self.start_s = start_s
        self.samples: list[DisplaySample] = []
        self._seen: set[int] = set()

    def update(self, frame_index: int, captured_monotonic_s: float, painted_s: float) -> bool:
        """Record a paint; False when the frame was already shown or came before ``start_s``."""
        if captured_monotonic_s < self.start_s or frame_index in self._seen:
            return False
        self._seen.add(frame_index)
        self.samples.append(DisplaySample(frame_index, captured_monotonic_s, painted_s))
        return True

    def latencies_ms(self) -> list[float]:
        return [sample.latency_ms for sample in self.samples]


class StallMeter:
    """Lateness of a periodic timer: how far each tick came after ``interval_s`` past the last."""

    def __init__(self, interval_s: float) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self.lateness_ms: list[float] = []
        self._last_s: float | None = None

    def update(self, now_s: float, record: bool = True) -> None:
        if self._last_s is not None and record:
            self.lateness_ms.append(max(0.0, (now_s - self._last_s - self.interval_s) * 1000.0))
        self._last_s = now_s


def percentiles(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, Any]:
    """``{"p50": .., "p95": .., "p99": .., "max": ..}`` (None when there are no values)."""
    out: dict[str, Any] = {f"p{q}": float(np.percentile(values, q)) if values else None for q in qs}
    out["max"] = float(max(values)) if values else None
    return out


def summarize_app_bench(
    *,
    source: str,
    end_reason: str,
    input_fps: float,
    seconds_measured: float,
    frames_read: int,
    frames_dropped_capture: int,
    frames_processed: int,
    recorder: DisplayRecorder,
    stall: StallMeter,
    gui_ms: Mapping[str, list[float]],
    gradcam_overlay: bool,
    face_tracker: str,
    model: str,
    load_average: tuple[float, float, float] | None,
    pipelined: bool = True,
) -> dict[str, Any]:
    """The result dict of one run (every key of :data:`APP_BENCH_KEYS`)."""
    latency = percentiles(recorder.latencies_ms())
    stall_ms = percentiles(stall.lateness_ms, (50, 99))
    displayed = len(recorder.samples)
    result = {
        "source": redact_source(source),
        "end_reason": end_reason,
        "input_fps": float(input_fps),
        "seconds_measured": float(seconds_measured),
        "frames_read": int(frames_read),
        "frames_dropped_capture": int(frames_dropped_capture),
        "frames_processed": int(frames_processed),
        "frames_displayed": displayed,
        "frames_dropped": max(0, int(frames_read) - displayed),
        "displayed_fps": displayed / seconds_measured if seconds_measured > 0 else 0.0,
        "latency_ms": latency,
        "stall_ms": stall_ms,
        "stall_samples": len(stall.lateness_ms),
        "gui_ms": {name: percentiles(values, (50, 95)) for name, values in gui_ms.items()},
        "latency_target_p95_ms": LATENCY_TARGET_P95_MS,
        "latency_target_met": latency["p95"] is not None
        and latency["p95"] <= LATENCY_TARGET_P95_MS,
        "stall_target_p99_ms": STALL_TARGET_P99_MS,
        "stall_target_met": stall_ms["p99"] is not None and stall_ms["p99"] < STALL_TARGET_P99_MS,
        "gradcam_overlay": bool(gradcam_overlay),
        "face_tracker": face_tracker,
        "model": model,
        "pipelined": bool(pipelined),
        "load_average": list(load_average) if load_average is not None else None,
    }
    return result


def format_app_bench(result: Mapping[str, Any]) -> str:
    """Plain-text lines of one run, for the CLI."""

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    latency, stall = result["latency_ms"], result["stall_ms"]
    load = result.get("load_average")
    return "\n".join(
        [
            f"source {result['source']} at {result['input_fps']:g} fps input, "
            f"{result['seconds_measured']:.1f} s measured, tracker {result['face_tracker']}, "
            f"Grad-CAM overlay {'on' if result['gradcam_overlay'] else 'off'}, "
            f"{'pipelined' if result.get('pipelined', True) else 'serial'} worker",
            f"frames: read {result['frames_read']}, processed {result['frames_processed']}, "
            f"displayed {result['frames_displayed']} ({result['displayed_fps']:.1f} fps), "
            f"dropped {result['frames_dropped']}",
            f"camera-to-display latency ms: p50 {ms(latency['p50'])}, p95 {ms(latency['p95'])}, "
            f"p99 {ms(latency['p99'])} (target p95 <= {result['latency_target_p95_ms']:g}: "
            f"{'met' if result['latency_target_met'] else 'MISSED'})",
            f"event-loop stall ms: p50 {ms(stall['p50'])}, p99 {ms(stall['p99'])}, "
            f"max {ms(stall['max'])} (target p99 < {result['stall_target_p99_ms']:g}: "
            f"{'met' if result['stall_target_met'] else 'MISSED'})",
            "load average: " + (" ".join(f"{x:.2f}" for x in load) if load else "–"),
        ]
    )


# --------------------------------------------------------------------------- playback mode
#: Keys of ``painmon bench app --playback`` (see :func:`summarize_playback`).
PLAYBACK_BENCH_KEYS: tuple[str, ...] = (
    "source",
    "mode",
    "pipelined",
    "end_reason",
    "wall_s",
    "media_s",
    "playback_rate",
    "frames_due",
    "frames_read",
    "frames_passed_over",
    "frames_dropped",
    "frames_scored",
    "drop_fraction",
    "scored_fps",
    "alarm_pending_to_raise_wall_s",
    "alarm_pending_to_raise_media_s",
    "status_text",
    "load_average",
)


@dataclass(frozen=True)
class PlaybackObservation:
    """The newest scored frame as the window showed it: wall clock, media time, alarm."""

    wall_s: float
    media_s: float
    pending_priority: str | None
    pain_priority: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.wall_s) and math.isfinite(self.media_s)):
            raise ValueError("playback observation times must be finite")


def alarm_delay(
    observations: list[PlaybackObservation],
) -> tuple[float, float] | None:
    """(wall s, media s) from the first frame with a pain alarm pending to the first frame
    with it raised; None when no episode went from pending to raised in the run."""
    pending: PlaybackObservation | None = None
    for obs in observations:
        if pending is None:
            if obs.pending_priority is not None and obs.pain_priority == "none":
                pending = obs
        elif obs.pain_priority != "none":
            return obs.wall_s - pending.wall_s, obs.media_s - pending.media_s
        elif obs.pending_priority is None:
            pending = None  # the level fell back before the delay ran out
    return None


def summarize_playback(
    *,
    source: str,
    mode: str,
    end_reason: str,
    observations: list[PlaybackObservation],
    start: Any,
    end: Any,
    frames_scored: int,
    status_text: str,
    load_average: tuple[float, float, float] | None,
    pipelined: bool = True,
) -> dict[str, Any]:
    """The result dict of one playback run (every key of :data:`PLAYBACK_BENCH_KEYS`).

    ``start``/``end`` are :class:`~painmon.core.live.capture.CaptureStats` at the two ends
    of the measured span; the rate is media time over wall time of the frames shown.
    """
    wall_s = media_s = 0.0
    if len(observations) >= 2:
        wall_s = observations[-1].wall_s - observations[0].wall_s
        media_s = observations[-1].media_s - observations[0].media_s
    read = passed = dropped = 0
    if start is not None and end is not None:
        read = end.frames_read - start.frames_read
        passed = end.frames_passed_over - start.frames_passed_over
        dropped = end.frames_dropped - start.frames_dropped
    else:
        # No measured span (a timed-out run): nothing was read in it, so nothing was scored.
        frames_scored = 0
    due = read + passed
    delay = alarm_delay(observations)
    return {
        "source": redact_source(source),
        "mode": mode,
        "pipelined": bool(pipelined),
        "end_reason": end_reason,
        "wall_s": wall_s,
        "media_s": media_s,
        "playback_rate": media_s / wall_s if wall_s > 0 else None,
        "frames_due": due,
        "frames_read": read,
        "frames_passed_over": passed,
        "frames_dropped": dropped,
        "frames_scored": int(frames_scored),
        "drop_fraction": (passed + dropped) / due if due > 0 else None,
        "scored_fps": frames_scored / wall_s if wall_s > 0 else 0.0,
        "alarm_pending_to_raise_wall_s": delay[0] if delay is not None else None,
        "alarm_pending_to_raise_media_s": delay[1] if delay is not None else None,
        "status_text": status_text,
        "load_average": list(load_average) if load_average is not None else None,
    }


def format_playback(result: Mapping[str, Any]) -> str:
    """Plain-text lines of one playback run, for the CLI."""
    rate, drop = result["playback_rate"], result["drop_fraction"]
    wall_delay, media_delay = (
        result["alarm_pending_to_raise_wall_s"],
        result["alarm_pending_to_raise_media_s"],
    )
    load = result.get("load_average")
    return "\n".join(
        [
            f"source {result['source']} ({result['mode']}, "
            f"{'pipelined' if result.get('pipelined', True) else 'serial'}), "
            f"{result['wall_s']:.1f} s wall, "
            f"{result['media_s']:.1f} s media: "
            + (f"{rate:.2f} media s per wall s" if rate is not None else "rate unknown"),
            f"frames: due {result['frames_due']}, read {result['frames_read']}, passed over "
            f"{result['frames_passed_over']}, dropped {result['frames_dropped']}, scored "
            f"{result['frames_scored']} ({result['scored_fps']:.1f} fps); "
            + (f"{100 * drop:.0f} % not scored" if drop is not None else "drops unknown"),
            "alarm delay (pending to raised): "
            + (
                f"{wall_delay:.1f} s wall for {media_delay:.1f} s media"
                if wall_delay is not None
                else "no alarm episode in the run"
            ),
            f"status bar: {result['status_text'] or '–'}",
            "load average: " + (" ".join(f"{x:.2f}" for x in load) if load else "–"),
        ]
    )
