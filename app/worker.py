"""The inference worker: a QObject living in a QThread that feeds capture frames to the engine.

The worker opens the source itself (a camera can take seconds to open or fail,
which must never freeze the window), starts a :class:`CaptureThread` in real time
(files and the demo at their own rate, frames it cannot score dropped; with
``every_frame`` every frame in order, as fast as scoring goes, for analysis)
and scores every frame it takes, emitting the frozen
:class:`~painmon.core.live.engine.EngineResult` with a QImage of the frame (QPixmaps
are made in the GUI thread only). A model engine is pipelined as in ``painmon monitor``
(:class:`~painmon.core.live.pipelined.PipelinedEngine`): when the next frame is already
waiting, its face stage runs on a second thread while this one scores the frame before
it; when none is waiting the frame is finished at once, so a camera that the engine
keeps up with sees no added latency. Operator commands (acknowledge, audio pause,
settings, calibration, session start/stop) are queued with :meth:`submit` and run
on this thread between frames, because the engine and its session writer are
single-threaded.

Optional hooks mirror :func:`painmon.core.live.monitor.run_monitor` (the ward bus uses
them): ``on_result(result)`` after every scored frame, ``on_alarm_state(state)`` for the
alarm states that come without a result (ticks, commands) and ``on_poll(engine, t_s)``
on every loop, whose returned alarm states are emitted. They run on this thread; one that
raises is logged and never stops the monitor (the bed stays the primary alarm).

A session whose files cannot be written (a full disk) stops recording, not monitoring:
the engine detaches the writer and goes on (``Engine.recording_error``), and the worker
emits ``recording_failed`` once per failure so the window can say so.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QImage

from painmon.core.live.alarms import AlarmState
from painmon.core.live.capture import (
    STREAM_READ_TIMEOUT_S,
    CaptureThread,
    FrameSource,
    SourceError,
    open_source,
)
from painmon.core.live.display import END_OF_VIDEO
from painmon.core.live.engine import Engine, EngineResult, MonitorEngine
from painmon.core.live.pipelined import PipelinedEngine, take_frame
from painmon.core.live.playback import playback_text

log = logging.getLogger(__name__)

# How long one wait for a frame lasts, so commands and stop() are served promptly.
_POLL_S = 0.05
# Without a frame for this long, a live (or failed) source's alarms are advanced by tick().
_TICK_AFTER_S = 0.25

Command = Callable[[MonitorEngine, float], AlarmState | None]
ResultHook = Callable[[Any], None]
AlarmStateHook = Callable[[AlarmState], None]
PollHook = Callable[[Any, float], Iterable[AlarmState]]


def frame_to_qimage(rgb: Any) -> QImage:
    """A deep-copied RGB888 QImage of an (H, W, 3) uint8 array (safe off the GUI thread)."""
    height, width = rgb.shape[:2]
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return image.copy()  # the array may be reused by the source; the image must own its pixels


class InferenceWorker(QObject):
    """Opens the source, then loops: frame -> ``engine.process`` -> ``result_ready``."""

    #: (EngineResult, QImage of the frame)
    result_ready = Signal(object, QImage)
    #: AlarmState from ticks while no frames arrive and from operator commands
    alarm_state = Signal(object)
    #: the source opened and the engine is built: the source's display name, whether it is
    #: live, and the engine's face detector (the name a session records)
    source_opened = Signal(str, bool, str)
    #: the source could not be opened (message for the nurse)
    source_failed = Signal(str)
    #: the media ended or capture failed (reason)
    source_ended = Signal(str)
    #: a queued command failed (message); the monitor keeps running
    command_failed = Signal(str)
    #: the session's files could not be written: recording stopped, monitoring goes on
    #: (the SessionWriteError's message: what happened and what to do)
    recording_failed = Signal(str)
    #: the engine failed: monitoring of this source stopped (message)
    error = Signal(str)
    finished = Signal()

    def __init__(
        self,
        source: str | FrameSource,
        engine_factory: Callable[[], MonitorEngine],
        *,
        clock: Callable[[], float] = time.monotonic,
        every_frame: bool = False,
        on_result: ResultHook | None = None,
        on_alarm_state: AlarmStateHook | None = None,
        on_poll: PollHook | None = None,
        pipelined: bool = True,
    ) -> None:
        super().__init__()
        #: overlap the face stage of the next frame with the scoring of this one (model
        #: engines only; a face-only preview engine has nothing to overlap)
        self.pipelined = bool(pipelined)
        self.on_result = on_result
        self.on_alarm_state = on_alarm_state
        self.on_poll = on_poll
        #: hook calls that raised (each logged; the monitor went on)
        self.hook_failures = 0
        self._source_spec = source
        #: play files and the demo frame by frame (pull mode) instead of in real time
        self.every_frame = bool(every_frame)
        self._engine_factory = engine_factory
        self._clock = clock
        self._stop = threading.Event()
        self._commands: queue.SimpleQueue[tuple[Command, Callable[[Any], None] | None]] = (
            queue.SimpleQueue()
        )
        self._engine: MonitorEngine | None = None
        # The engine the factory made (inside a PipelinedEngine, if pipelined), and the
        # recording error last reported from it.
        self._base_engine: Any = None
        self._recording_error: BaseException | None = None
        self._t_s: float | None = None  # last time handed to the engine
        self.capture: CaptureThread | None = None
        #: set once the source opened and the engine was built (the loop runs, a session
        #: can be attached); before that, stopping has nothing to close and need not be waited
        self.source_opened_once = False

    def playback_text(self) -> str:
        """The status bar's playback line for the running capture ("" before it started)."""
        capture = self.capture
        return playback_text(capture.stats) if capture is not None else ""

    def stop(self) -> None:
        """Ask the loop to end (thread-safe); the thread's owner then waits for ``finished``."""
        self._stop.set()

    def submit(self, command: Command, on_done: Callable[[Any], None] | None = None) -> None:
        """Run ``command(engine, t_s)`` on the worker thread; a returned AlarmState is emitted.

        ``on_done(value)`` runs on the worker thread too; keep it to plain Python.
        """
        self._commands.put((command, on_done))

    @Slot()
    def run(self) -> None:
        """The worker's whole life: open, loop until stopped or the source ends, clean up."""
        try:
            self._run()
        except Exception as exc:
            log.exception("monitoring stopped by an error")
            self.error.emit(f"monitoring stopped: {exc}")
        finally:
            self._shutdown()
            self.finished.emit()

    def _run(self) -> None:
        try:
            source = (
                open_source(self._source_spec)
                if isinstance(self._source_spec, str)
                else self._source_spec
            )
        except (SourceError, ValueError) as exc:
            self.source_failed.emit(str(exc))
            return
        if self._stop.is_set():  # stopped while opening (a slow stream): build nothing
            source.close()
            return
        try:
            engine: MonitorEngine = self._engine_factory()
            self._base_engine = engine
            if self.pipelined and isinstance(engine, Engine):
                engine = PipelinedEngine(engine)
            self._engine = engine
        except BaseException:
            source.close()
            raise
        pipeline = engine if isinstance(engine, PipelinedEngine) else None
        self.capture = CaptureThread(source, realtime=not self.every_frame)
        tracker = engine.face_tracker
        self.source_opened_once = True
        self.source_opened.emit(
            source.name, source.is_live, str(getattr(tracker, "name", type(tracker).__name__))
        )
        self.capture.start()
        last_frame_s = self._clock()
        ended = False
        while not self._stop.is_set():
            self._drain_commands()
            self._poll(engine)
            wait_start_s = self._clock()
            frame, done = take_frame(self.capture, pipeline, _POLL_S)
            now_s = self._clock()
            if done is not None:  # no next frame was waiting: the pending one is done
                self._emit_result(done)
                continue
            if frame is None:
                if self.capture.exhausted and not ended:
                    ended = True
                    error = self.capture.error
                    damage = getattr(self.capture, "damage", None)
                    if error is not None:
                        self.source_ended.emit(f"video source failed: {error}")
                    elif damage is not None:
                        self.source_ended.emit(f"video damaged: {damage}")
                    else:
                        self.source_ended.emit(END_OF_VIDEO)
                # A silent live source, or one that failed, is a lost signal; a file that
                # simply ended is not.
                silent = source.is_live or (ended and self.capture.error is not None)
                if silent and self._t_s is not None and now_s - last_frame_s >= _TICK_AFTER_S:
                    self._t_s = max(self._t_s, self._t_s + (now_s - last_frame_s))
                    last_frame_s = now_s
                    tick_state = engine.tick(self._t_s)
                    self.alarm_state.emit(tick_state)
                    self._hook(self.on_alarm_state, tick_state)
                    self._check_recording()
                elif ended and not silent:
                    self._stop.wait(_POLL_S)
                continue
            if self._t_s is not None and frame.t_s < self._t_s:
                # Captured just before a tick advanced the clock past it: time must not run back.
                log.debug("dropping frame %d stamped before the last tick", frame.index)
                continue
            decode_ms = (now_s - wait_start_s) * 1000.0
            self._t_s = frame.t_s
            last_frame_s = now_s
            if pipeline is not None:
                self._emit_result(pipeline.submit(frame, decode_ms=decode_ms))
            else:
                self._emit_result(engine.process(frame, decode_ms=decode_ms))

    def _emit_result(self, result: EngineResult | None) -> None:
        if result is None:
            return
        self.result_ready.emit(result, frame_to_qimage(result.frame.rgb))
        self._hook(self.on_result, result)
        self._check_recording()

    def _check_recording(self) -> None:
        """Emit ``recording_failed`` once for each session write failure of the engine."""
        error = getattr(self._base_engine, "recording_error", None)
        if error is not None and error is not self._recording_error:
            self.recording_failed.emit(str(error))  # the engine logged it
        self._recording_error = error

    def _hook(self, hook: Callable[..., Any] | None, *args: Any) -> Any:
        if hook is None:
            return None
        try:
            return hook(*args)
        except Exception as exc:
            self.hook_failures += 1
            # The first failure with its traceback, then one line per hundred.
            if self.hook_failures == 1:
                log.exception("a monitor hook failed; monitoring goes on")
            elif self.hook_failures % 100 == 0:
                log.warning("monitor hooks failed %d times (last: %s)", self.hook_failures, exc)
            return None

    def _poll(self, engine: MonitorEngine) -> None:
        if self.on_poll is None:
            return
        t_s = self._t_s if self._t_s is not None else 0.0
        for state in self._hook(self.on_poll, engine, t_s) or ():
            self.alarm_state.emit(state)
        self._check_recording()

    def _drain_commands(self) -> None:
        engine = self._engine
        if engine is None:
            return
        while True:
            try:
                command, on_done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                value = command(engine, self._t_s if self._t_s is not None else 0.0)
            except Exception as exc:
                log.warning("operator command failed: %s", exc)
                self.command_failed.emit(str(exc))
                continue
            if isinstance(value, AlarmState):
                self.alarm_state.emit(value)
                self._hook(self.on_alarm_state, value)
            self._check_recording()
            if on_done is not None:
                on_done(value)

    def _shutdown(self) -> None:
        if self.capture is not None:
            # A network read can block for up to its read timeout: wait that long for the join.
            self.capture.stop(timeout_s=STREAM_READ_TIMEOUT_S + 1.0)
        # Commands queued before stop (e.g. "stop session") still run: they close files.
        engine = self._engine
        if isinstance(engine, PipelinedEngine) and engine.pending:
            try:
                # Its face stage ran: the frame gets its result and its session row.
                self._emit_result(engine.flush())
            except Exception as exc:
                log.warning("the last frame could not be scored: %s", exc)
        if engine is not None:
            self._drain_commands()
            writer = engine.session_writer
            if writer is not None:
                engine.session_writer = None
                writer.close("monitoring stopped")
            engine.close()
