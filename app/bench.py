"""``painmon bench app``: the real bedside window on a file played in real time.

:func:`bench_playback` (``--playback``) instead plays a file or the demo patient at its own
rate, as the bedside does, and reports how well playback keeps up with the wall clock
(media seconds per wall second), how many frames were dropped, and the wall time from a
pain alarm's pending state to its raise (the alarm delay runs on media time).

Measures camera-to-display latency (capture stamp -> end of the paint that first
showed the frame), displayed fps, dropped frames, and the GUI event-loop stall (a
10 ms precise QTimer measuring its own lateness) while scoring runs on the worker
thread. Runs offscreen when there is no display. The bookkeeping lives in
:mod:`painmon.core.tools.bench_app`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from painmon.core.live.capture import open_source
from painmon.core.tools.bench_app import (
    DEFAULT_INPUT_FPS,
    STALL_TIMER_INTERVAL_MS,
    DisplayRecorder,
    PlaybackObservation,
    RetimedSource,
    StallMeter,
    format_app_bench,
    format_playback,
    summarize_app_bench,
    summarize_playback,
)
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_write_json
from painmon.core.util.redact import redact_source

log = logging.getLogger(__name__)

# Frames captured in the first moments (model warm-up, face tracker start) are not measured.
WARMUP_S = 2.0
# The window is closed this long after the measured span even if frames are still queued.
_WINDOW_TIMEOUT_S = 30.0


def _qapplication() -> Any:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication(sys.argv[:1])


def _timed(store: list[float], slot: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        start = time.perf_counter()
        slot()
        store.append((time.perf_counter() - start) * 1000.0)

    return run


class _SpanResults:
    """Counts the window's results of frames captured inside a measured span.

    Frames already read when the span began (still in the pipeline) are scored after it,
    but the span's read counter does not include them, so they are not counted either:
    scored <= read always holds. ``start()`` right after the span's capture-stats snapshot
    (a frame captured from then on was read after it); ``stop()`` at the span's end.
    """

    def __init__(self) -> None:
        self.n = 0
        self._from_s: float | None = None
        self._stopped = False

    def start(self) -> None:
        self._from_s = time.monotonic()

    def stop(self) -> None:
        self._stopped = True

    def __call__(self, result: Any) -> None:
        if self._from_s is None or self._stopped:
            return
        if result.frame.captured_monotonic_s >= self._from_s:
            self.n += 1


def bench_app(
    source: str | Path,
    model: str | Path | None = None,
    face_model: str | Path | None = None,
    seconds: float = 20.0,
    json_path: str | Path | None = None,
    *,
    input_fps: float = DEFAULT_INPUT_FPS,
    warmup_s: float = WARMUP_S,
    serial: bool = False,
) -> dict[str, Any]:
    """Run MainWindow on ``source`` (a video file, re-timed to ``input_fps`` and looped) for
    ``warmup_s + seconds`` of real time with the Grad-CAM overlay on; returns the summary dict.

    ``model`` defaults to the shipped demo model; ``face_model`` (a Face Landmarker bundle)
    selects MediaPipe, else the tracker painmon finds by itself.
    """
    from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer

    from painmon.app.main_window import MainWindow
    from painmon.app.settings_dialog import AppSettings, save_settings
    from painmon.core.store.catalog import shipped_demo_model_path
    from painmon.core.util.paths import find_face_model

    if not (seconds > 0 and warmup_s >= 0):
        raise InvalidInputError(f"seconds must be > 0 and warmup_s >= 0, got {seconds}, {warmup_s}")
    model_path = Path(model) if model is not None else shipped_demo_model_path()
    if not model_path.is_file():
        raise FileNotFoundError(
            f"model {model_path} not found: pass --model with an exported .onnx model"
        )
    bundle = find_face_model(face_model)
    tracker_name = "mediapipe face landmarker" if bundle is not None else "haar cascade"
    inner = open_source(str(source))
    if inner.is_live:
        inner.close()
        raise InvalidInputError(
            f"{redact_source(str(source))} is live: "
            "the app benchmark plays a video file in real time"
        )
    retimed = RetimedSource(inner, input_fps, loop=True)

    app = _qapplication()
    recorder = DisplayRecorder()
    stall = StallMeter(STALL_TIMER_INTERVAL_MS / 1000.0)
    gui_ms: dict[str, list[float]] = {"refresh": [], "frame": [], "trend": [], "paint": []}
    processed: dict[str, Any] = {"first_paint_s": None}
    measure: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="painmon-bench-app-") as tmp:
        store = QSettings(str(Path(tmp) / "painmon.ini"), QSettings.Format.IniFormat)
        save_settings(store, AppSettings(session_root=str(Path(tmp) / "sessions")))
        window = MainWindow(store, face_model=face_model, pipelined=not serial)
        window.apply_settings(dataclasses.replace(window.app_settings, show_gradcam=True))
        if not window.load_model(model_path):
            window.close()
            retimed.close()
            # The window says why (a damaged or unverified model): the user's to fix.
            raise InvalidInputError(f"model {model_path} could not be loaded: {window.model_error}")
        # Time the GUI thread's periodic work (replaces the window's own connections).
        for timer, name, slot in window.timed_slots():
            timer.timeout.disconnect()
            timer.timeout.connect(_timed(gui_ms[name], slot))
        video = window.video
        paint_event = video.paintEvent

        def timed_paint(event: object) -> None:
            start = time.perf_counter()
            paint_event(event)
            gui_ms["paint"].append((time.perf_counter() - start) * 1000.0)

        video.paintEvent = timed_paint  # type: ignore[method-assign]

        def painted(result: Any, now_s: float) -> None:
            if processed["first_paint_s"] is None:
                processed["first_paint_s"] = now_s
                recorder.start_s = now_s + warmup_s
                measure["start_s"] = now_s + warmup_s
            frame = result.frame
            recorder.update(frame.index, frame.captured_monotonic_s, now_s)

        video.on_frame_painted = painted

        stall_timer = QTimer()
        stall_timer.setTimerType(Qt.TimerType.PreciseTimer)
        stall_timer.setInterval(STALL_TIMER_INTERVAL_MS)

        def stall_tick() -> None:
            now_s = time.monotonic()
            stall.update(now_s, record="start_s" in measure and now_s >= measure["start_s"])

        stall_timer.timeout.connect(stall_tick)
        stats_at: dict[str, Any] = {}

        def check_done() -> None:
            now_s = time.monotonic()
            start_s = measure.get("start_s")
            if start_s is not None and "stats" not in stats_at and now_s >= start_s:
                stats_at["stats"] = window.capture_stats()
                measure["span_start_s"] = now_s
                span_results.start()
            ended = window.source_ended_reason
            if (start_s is not None and now_s >= start_s + seconds) or ended is not None:
                measure["end_s"] = now_s
                stats_at["reason"] = "measured" if ended is None else f"source ended: {ended}"
                stats_at["end"] = window.capture_stats()
                span_results.stop()

        span_results = _SpanResults()
        window.on_result_received = span_results
        done_timer = QTimer()
        done_timer.setInterval(50)
        done_timer.timeout.connect(check_done)
        window.show()
        window.start_source(retimed)
        stall_timer.start()
        done_timer.start()
        deadline_s = time.monotonic() + warmup_s + seconds + _WINDOW_TIMEOUT_S
        # Not QEventLoop.exec(): once the application was asked to quit (a window of earlier
        # code closing, or quit() after QApplication.exec() returned) every new exec()
        # returns at once. Waiting for events in a loop of our own runs the same dispatch.
        quit_on_last = app.quitOnLastWindowClosed()
        app.setQuitOnLastWindowClosed(False)
        try:
            while "end_s" not in measure and time.monotonic() < deadline_s:
                app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
            if "end_s" not in measure:
                stats_at["reason"] = (
                    f"timed out after {window.results_received} results and "
                    f"{len(gui_ms['paint'])} video paints"
                )
        finally:
            span_results.stop()
            stall_timer.stop()
            done_timer.stop()
            window.close()
            app.processEvents()
            app.setQuitOnLastWindowClosed(quit_on_last)
    start, end = stats_at.get("stats"), stats_at.get("end")
    frames_read = frames_dropped = 0
    if start is not None and end is not None:
        frames_read = end.frames_read - start.frames_read
        frames_dropped = end.frames_dropped - start.frames_dropped
    measured_s = max(0.0, measure.get("end_s", 0.0) - measure.get("start_s", 0.0))
    # frames_read counts captures between the two stats snapshots: keep exactly the frames
    # captured in that span (a warm-up frame painted late is not one of them).
    span_start_s = measure.get("span_start_s", measure.get("start_s", 0.0))
    recorder.samples = [
        s
        for s in recorder.samples
        if span_start_s <= s.captured_monotonic_s < measure.get("end_s", 0.0)
    ]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = summarize_app_bench(
        source=str(source),
        end_reason=stats_at["reason"],
        input_fps=input_fps,
        seconds_measured=measured_s,
        frames_read=frames_read,
        frames_dropped_capture=frames_dropped,
        # A timed-out span has no end snapshot, so frames_read is 0: so is what it processed.
        frames_processed=span_results.n if end is not None else 0,
        recorder=recorder,
        stall=stall,
        gui_ms=gui_ms,
        gradcam_overlay=True,
        face_tracker=tracker_name,
        model=str(model_path),
        load_average=load,
        pipelined=not serial,
    )
    if json_path is not None:
        atomic_write_json(Path(json_path), result)
    return result


def bench_app_cli(
    source: str,
    seconds: float = 20.0,
    face_model: str | Path | None = None,
    model: str | Path | None = None,
    json_path: str | Path | None = None,
    serial: bool = False,
) -> int:
    """``painmon bench app``: run the benchmark, print the summary and the JSON; returns 0."""
    result = bench_app(source, model, face_model, seconds, json_path, serial=serial)
    sys.stdout.write(format_app_bench(result) + "\n" + json.dumps(result, indent=2) + "\n")
    sys.stdout.flush()
    return 0


def bench_playback(
    source: str | Path = "synthetic",
    model: str | Path | None = None,
    face_model: str | Path | None = None,
    seconds: float = 30.0,
    json_path: str | Path | None = None,
    *,
    every_frame: bool = False,
    warmup_s: float = WARMUP_S,
    serial: bool = False,
) -> dict[str, Any]:
    """Run MainWindow on ``source`` at its own rate (or ``every_frame``) for ``warmup_s +
    seconds``; returns :func:`~painmon.core.tools.bench_app.summarize_playback`'s dict."""
    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from painmon.app.main_window import MainWindow
    from painmon.app.settings_dialog import AppSettings, save_settings
    from painmon.core.store.catalog import shipped_demo_model_path

    if not (seconds > 0 and warmup_s >= 0):
        raise InvalidInputError(f"seconds must be > 0 and warmup_s >= 0, got {seconds}, {warmup_s}")
    model_path = Path(model) if model is not None else shipped_demo_model_path()
    if not model_path.is_file():
        raise FileNotFoundError(
            f"model {model_path} not found: pass --model with an exported .onnx model"
        )
    app = _qapplication()
    observations: list[PlaybackObservation] = []
    state: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="painmon-bench-playback-") as tmp:
        store = QSettings(str(Path(tmp) / "painmon.ini"), QSettings.Format.IniFormat)
        save_settings(store, AppSettings(session_root=str(Path(tmp) / "sessions")))
        window = MainWindow(
            store, face_model=face_model, every_frame=every_frame, pipelined=not serial
        )
        if not window.load_model(model_path):
            window.close()
            raise InvalidInputError(f"model {model_path} could not be loaded: {window.model_error}")

        def painted(result: Any, now_s: float) -> None:
            if "start_s" not in state:
                state["start_s"] = now_s + warmup_s
            if now_s < state["start_s"]:
                return
            if "stats" not in state:
                state["stats"] = window.capture_stats()
                scored.start()
            alarm = result.alarm_state
            observations.append(
                PlaybackObservation(
                    now_s, result.frame.t_s, alarm.pending_priority, str(alarm.pain_priority)
                )
            )

        window.video.on_frame_painted = painted
        scored = _SpanResults()
        window.on_result_received = scored

        def check_done() -> None:
            now_s = time.monotonic()
            ended = window.source_ended_reason
            start_s = state.get("start_s")
            if ended is not None or (start_s is not None and now_s >= start_s + seconds):
                state["end_s"] = now_s
                state["reason"] = "measured" if ended is None else f"source ended: {ended}"
                state["end"] = window.capture_stats()
                scored.stop()
                window.refresh()
                state["status_text"] = window.status_playback.text()

        done_timer = QTimer()
        done_timer.setInterval(50)
        done_timer.timeout.connect(check_done)
        window.show()
        window.start_source(str(source))
        done_timer.start()
        deadline_s = time.monotonic() + warmup_s + seconds + _WINDOW_TIMEOUT_S
        quit_on_last = app.quitOnLastWindowClosed()
        app.setQuitOnLastWindowClosed(False)
        try:
            while "end_s" not in state and time.monotonic() < deadline_s:
                app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents, 50)
            if "end_s" not in state:
                state["reason"] = f"timed out after {window.results_received} results"
        finally:
            scored.stop()
            done_timer.stop()
            window.close()
            app.processEvents()
            app.setQuitOnLastWindowClosed(quit_on_last)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = summarize_playback(
        source=str(source),
        mode="every_frame" if every_frame else "realtime",
        end_reason=state["reason"],
        observations=observations,
        start=state.get("stats"),
        end=state.get("end"),
        frames_scored=scored.n,
        status_text=state.get("status_text", ""),
        load_average=load,
        pipelined=not serial,
    )
    if json_path is not None:
        atomic_write_json(Path(json_path), result)
    return result


def bench_playback_cli(
    source: str = "synthetic",
    seconds: float = 30.0,
    face_model: str | Path | None = None,
    model: str | Path | None = None,
    json_path: str | Path | None = None,
    every_frame: bool = False,
    serial: bool = False,
) -> int:
    """``painmon bench app --playback``: print the playback summary and the JSON; returns 0."""
    result = bench_playback(
        source, model, face_model, seconds, json_path, every_frame=every_frame, serial=serial
    )
    sys.stdout.write(format_playback(result) + "\n" + json.dumps(result, indent=2) + "\n")
    sys.stdout.flush()
    return 0
