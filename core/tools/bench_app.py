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
) -> dict[str, Any]:
    """The result dict of one run (every key of :data:`APP_BENCH_KEYS`)."""
    latency = percentiles(recorder.latencies_ms())
    stall_ms = percentiles(stall.lateness_ms, (50, 99))
    displayed = len(recorder.samples)
    result = {
        "source": source,
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
            f"Grad-CAM overlay {'on' if result['gradcam_overlay'] else 'off'}",
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
