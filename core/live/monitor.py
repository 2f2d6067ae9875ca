"""The headless monitor: a frame source through the engine into a session folder.

:func:`run_monitor` drives :class:`~painmon.core.live.engine.Engine` from a capture
thread until the media ends, ``max_seconds`` of media pass, the operator stops it or a
fault ends it, always closing the session files with the reason; :class:`FrameTally`
counts what the run did, as the benchmarks also report it.

How a run ends, its session's ``end_reason`` and the exit status of ``painmon monitor``
(:data:`MONITOR_EXIT_CODES`, the one place they are defined):

=====================================  ==========================================  ====
what happened                          end_reason                                  exit
=====================================  ==========================================  ====
the media ended                        ``end of media``                            0
``max_seconds`` of media passed        ``max_seconds (N s)``                       0
SIGHUP (the terminal closed)           ``hangup``                                  129
Ctrl-C (SIGINT)                        ``interrupted``                             130
SIGTERM (``kill``, a service manager)  ``terminated``                              143
the capture thread failed              ``source error: <why>``                     3
a video file ended before its length   ``damaged media: <why>``                    3
the model failed while scoring         ``model error: <why>``                      3
the session files could not be written ``session write error: <why>``              3
=====================================  ==========================================  ====

A stop signal only asks the loop to stop: the frame being scored is finished and
written, then the capture stops and the session files are synced and closed. Further
signals while closing are ignored, so a second Ctrl-C cannot leave a session
"running". Any other exception (a bug) still propagates, after the session was closed
as ``error: <type>: <message>``.
"""

from __future__ import annotations

import collections
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType, MappingProxyType, TracebackType
from typing import Any

import numpy as np

from painmon.core.live.alarms import (
    AlarmSettings,
    AlarmState,
    AlarmTally,
    pain_episodes_text,
)
from painmon.core.live.capture import CaptureThread, FrameSource, open_source
from painmon.core.live.display import reading
from painmon.core.live.engine import (
    ENGINE_ORT_THREADS,
    STAGES,
    Engine,
    EngineResult,
    ModelRunError,
    ms_since,
    one_line,
)
from painmon.core.live.face import FaceTracker, create_face_tracker
from painmon.core.live.pipelined import PipelinedEngine, take_frame
from painmon.core.live.scoring import ModelLoadError, OnnxPainModel, PainScorer, is_checkpoint
from painmon.core.live.session import SessionWriteError, SessionWriter, make_session_folder
from painmon.core.util import timeline
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.progress import LOG_INTERVAL_S
from painmon.core.util.redact import redact_source

log = logging.getLogger(__name__)

# The live status line is redrawn at most this often.
_STATUS_INTERVAL_S = 0.25
# How long the headless loop waits for a frame before it looks for a stop request and
# advances a silent live source's clock: a stop signal is acted on within this time.
_POLL_S = 0.1

# -- how a run ends (see the module docstring's table) ------------------------------------------

EXIT_CLEAN = 0
EXIT_FAULT = 3
EXIT_HANGUP = 128 + 1
EXIT_INTERRUPTED = 128 + 2
EXIT_TERMINATED = 128 + 15
#: Every exit status of ``painmon monitor`` and what it means (the CLI's help lists them).
MONITOR_EXIT_CODES: Mapping[int, str] = MappingProxyType(
    {
        EXIT_CLEAN: "the run ended cleanly (end of media, or --max-seconds)",
        EXIT_FAULT: (
            "the run ended on a fault: source error, damaged media, model error or session "
            "files that could not be written (the summary's 'ended:' line says which)"
        ),
        EXIT_HANGUP: "hangup (SIGHUP: the terminal closed)",
        EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGINT)",
        EXIT_TERMINATED: "terminated (SIGTERM)",
    }
)
# Signal name -> (end_reason, exit status); SIGHUP does not exist on Windows.
_STOP_SIGNALS: tuple[tuple[str, str, int], ...] = (
    ("SIGINT", "interrupted", EXIT_INTERRUPTED),
    ("SIGTERM", "terminated", EXIT_TERMINATED),
    ("SIGHUP", "hangup", EXIT_HANGUP),
)


@dataclass(frozen=True)
class StopRequest:
    """Why the operator or the system asked the run to stop, and the exit status it gives."""

    reason: str
    exit_code: int


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP become a :class:`StopRequest` while the ``with`` block runs.

    The handlers only record the first request (``request``); the run loop looks for it
    between frames, so no exception lands in the middle of a file write. Later signals
    are ignored: nothing may interrupt closing the session. Handlers are installed only
    in the main thread (Python allows no other), never over a signal the parent process
    set to be ignored (``nohup``, a background job), and the previous ones come back on
    exit.
    """

    def __init__(self) -> None:
        self.request: StopRequest | None = None
        self.signals_seen = 0
        self._previous: dict[int, Any] = {}
        self._meaning: dict[int, StopRequest] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for name, reason, exit_code in _STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            previous = signal.getsignal(signum)
            # None: a handler set outside Python, which could not be put back.
            if previous is None or previous == signal.SIG_IGN:
                continue
            signal.signal(signum, self._handle)
            self._previous[signum] = previous
            self._meaning[signum] = StopRequest(reason, exit_code)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._previous:
            signum, previous = self._previous.popitem()
            signal.signal(signum, previous)

    @property
    def installed(self) -> tuple[int, ...]:
        """The signals handled now."""
        return tuple(self._previous)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signals_seen += 1
        if self.request is None:
            self.request = self._meaning[signum]


class FrameTally:
    """Frame counts and per-stage latencies of a run, as the monitor and the benchmarks report.

    Crop and network times exist only for scored frames, so only those frames add them.
    """

    def __init__(self) -> None:
        self.counts = {
            "frames": 0,
            "frames_with_face": 0,
            "frames_scored": 0,
            "frames_out_of_domain": 0,
        }
        self.class_frames: dict[int, int] = {}
        self.timings: dict[str, list[float]] = {k: [] for k in STAGES}

    def add(self, result: EngineResult) -> None:
        self.counts["frames"] += 1
        self.counts["frames_with_face"] += int(result.observation.face_found)
        self.counts["frames_scored"] += int(result.output_known)
        self.counts["frames_out_of_domain"] += int(result.out_of_domain)
        if result.pain_class is not None:
            self.class_frames[result.pain_class] = self.class_frames.get(result.pain_class, 0) + 1
        for key in STAGES:
            if result.network_ran or key not in ("crop", "dacnn", "gradcam"):
                self.timings[key].append(result.timings_ms[key])


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def format_status(result: EngineResult, total_frames: int | None = None) -> str:
    """One-line live status; with ``total_frames`` (a file) it starts with how far it got."""
    if result.output_known:
        # As the window shows it: the level to one decimal and its band (the class whose
        # word goes with it), then the arg-max class apart, labelled as such.
        shown = reading(result.smoothed.pain_level)
        score = (
            f"level {shown.text} band {shown.band} (most likely class "
            f"{result.smoothed.pain_class} p {result.smoothed.confidence:4.2f})"
        )
    elif result.out_of_domain:
        au = "-" if result.au_pspi is None else f"{result.au_pspi:.1f}"
        score = f"unknown (face unlike the training data; AU estimate PSPI {au})"
    else:
        score = f"unknown ({result.technical_condition or 'no score'})"
    state = result.alarm_state
    technical = ",".join(state.technical_conditions + state.system_conditions) or "-"
    done = ""
    if total_frames:
        done = f"{min(100.0, 100.0 * (result.frame.index + 1) / total_frames):5.1f} %  "
    return (
        f"{done}t {result.frame.t_s:7.2f} s  frame {result.frame.index:6d}  "
        f"face {'yes' if result.observation.face_found else 'no '}  {score}  "
        f"alarm {result.alarm_state.pain_priority}  technical {technical}  "
        f"{result.timings_ms['total']:6.1f} ms"
    )


@dataclass(frozen=True)
class StageLatency:
    """Median and 95th percentile of one engine stage, in ms (None: no frame had it)."""

    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class MonitorSummary:
    """What one headless monitoring run did, as ``painmon monitor`` prints it."""

    session_folder: Path
    source: str
    end_reason: str
    frames: int
    frames_with_face: int
    frames_scored: int
    technical_condition_frames: Mapping[str, int]
    #: pain alarm episodes (onset to clear) and MEDIUM -> HIGH escalations within them
    pain_alarm_episodes: int
    pain_escalations: int
    technical_alarms_raised: int
    media_seconds: float
    wall_seconds: float
    latency_ms: Mapping[str, StageLatency]
    model_is_demo: bool
    providers: tuple[str, ...]
    # Crops beyond the model's domain gate (no pain output), scored frames per pain class,
    # and whether the model has a gate at all.
    frames_out_of_domain: int = 0
    class_frames: Mapping[int, int] = field(default_factory=dict)
    domain_gate: bool = True
    #: the exit status of ``painmon monitor`` for this run (:data:`MONITOR_EXIT_CODES`)
    exit_code: int = EXIT_CLEAN

    def __post_init__(self) -> None:
        if self.exit_code not in MONITOR_EXIT_CODES:
            raise ValueError(
                f"exit_code must be one of {sorted(MONITOR_EXIT_CODES)}, got {self.exit_code!r}"
            )
        if not 0 <= self.frames_scored <= self.frames_with_face <= self.frames:
            raise ValueError(
                f"frame counts out of order: scored {self.frames_scored}, "
                f"with a face {self.frames_with_face}, frames {self.frames}"
            )
        if self.frames_scored + self.frames_out_of_domain > self.frames_with_face:
            raise ValueError("scored and out-of-domain frames are frames with a face")
        if not 0 <= self.pain_escalations <= self.pain_alarm_episodes:
            raise ValueError(
                f"escalations ({self.pain_escalations}) happen within pain alarm episodes "
                f"({self.pain_alarm_episodes})"
            )
        if sum(self.class_frames.values()) != self.frames_scored:
            raise ValueError("class_frames must add up to the scored frames")
        object.__setattr__(self, "class_frames", MappingProxyType(dict(self.class_frames)))
        object.__setattr__(
            self,
            "technical_condition_frames",
            MappingProxyType(dict(self.technical_condition_frames)),
        )
        object.__setattr__(self, "latency_ms", MappingProxyType(dict(self.latency_ms)))

    @property
    def fps(self) -> float:
        """Frames processed per wall-clock second."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def format(self) -> str:
        """The end-of-session summary as plain text lines."""
        conditions = ", ".join(
            f"{k} {v}" for k, v in sorted(self.technical_condition_frames.items())
        )
        lines = [
            f"session folder: {self.session_folder}",
            f"ended: {self.end_reason} after {self.media_seconds:.2f} s of media "
            f"({self.wall_seconds:.2f} s wall, {self.fps:.1f} frames/s)",
            f"frames: {self.frames}, with a face: {self.frames_with_face}, "
            f"scored: {self.frames_scored}, out of domain: {self.frames_out_of_domain}",
            "scored frames by pain class: "
            + (", ".join(f"{k}: {v}" for k, v in sorted(self.class_frames.items())) or "none"),
            f"technical conditions (frames): {conditions or 'none'}",
            self._tally_text(),
        ]
        if not self.domain_gate:
            lines.append(
                "the model has no domain gate: it cannot tell a face unlike its training data"
            )
        total = self.latency_ms.get("total")
        if total is not None and total.p50 is not None:
            lines.append(f"latency per frame: median {total.p50:.1f} ms, p95 {total.p95:.1f} ms")
        if self.exit_code != EXIT_CLEAN:
            lines.append(f"exit status {self.exit_code}: {MONITOR_EXIT_CODES[self.exit_code]}")
        return "\n".join(lines)

    def _tally_text(self) -> str:
        pain = pain_episodes_text(self.pain_alarm_episodes, self.pain_escalations)
        return f"{pain}; technical alarms: {self.technical_alarms_raised}"

    @property
    def faulted(self) -> bool:
        """The run ended on a fault (source, media, model or session files), not on request."""
        return self.exit_code == EXIT_FAULT


def open_session(
    root: str | Path,
    pseudonym: str,
    model: PainScorer,
    settings: AlarmSettings,
    source: str,
    face_detector: str,
    utc_now: datetime | None = None,
) -> SessionWriter:
    """A new session folder under ``root/<pseudonym>/`` with its files open for writing.

    The headless monitor and the window both start sessions here, so both record the
    same model identity (architecture, else the model file's name) and settings.
    """
    folder = make_session_folder(root, pseudonym, utc_now or timeline.utc_now())
    return SessionWriter(
        folder,
        pseudonym,
        model_id=str(model.metadata.get("architecture") or Path(model.path).stem),
        model_sha256=model.sha256,
        settings=settings,
        source=redact_source(source),
        face_detector=face_detector,
    )


def load_onnx_model(model_path: str | Path) -> OnnxPainModel:
    """An exported .onnx through ONNX Runtime, as the bedside runs it.

    A research run folder needs the torch backend (``painmon[train]``): the CLI passes
    :func:`painmon.core.research.torch_scoring.load_pain_model` as ``load_model`` for those.
    """
    if is_checkpoint(model_path):
        raise ModelLoadError(
            f"{model_path} is a research checkpoint, not an exported model: export it with "
            "`painmon export --run RUN --out model.onnx`, or monitor through the `painmon` CLI "
            "with the training extra installed."
        )
    return OnnxPainModel(model_path, intra_op_num_threads=ENGINE_ORT_THREADS)


def run_monitor(
    source_spec: str,
    model_path: str | Path,
    out_dir: str | Path,
    max_seconds: float | None = None,
    realtime: bool = False,
    face_model: str | Path | None = None,
    pseudonym: str = "anonymous",
    progress: bool = True,
    *,
    on_status: Callable[[str], None] | None = None,
    on_result: Callable[[EngineResult], None] | None = None,
    on_poll: Callable[[Engine, float], Iterable[AlarmState]] | None = None,
    on_alarm_state: Callable[[AlarmState], None] | None = None,
    load_model: Callable[[str | Path], Any] = load_onnx_model,
    open_source_fn: Callable[[str], FrameSource] | None = None,
    make_face_tracker: Callable[[str | Path | None], FaceTracker] | None = None,
    pipelined: bool = False,
) -> MonitorSummary:
    """Monitor ``source_spec`` headless into a new session folder under ``out_dir``.

    Files run in pull mode (every frame, as fast as possible) unless ``realtime``.
    The run ends as the module docstring's table says, always with the session files
    synced and closed and the reason in the summary and in ``session.json``; in the main
    thread, SIGINT/SIGTERM/SIGHUP stop it cleanly. With ``progress``, ``on_status``
    receives a status line at most every 0.25 s. ``open_source_fn`` and
    ``make_face_tracker`` replace :func:`open_source` and :func:`create_face_tracker`
    (tests, other sources). Bad sources or models raise before a session is opened.
    ``on_poll(engine, t_s)`` runs on the engine thread after every frame and every empty
    wait (at least every 0.1 s): it may act on the engine (a remote acknowledge, a system
    technical alarm) at media time ``t_s`` and returns the alarm states it produced, so
    their events are counted here (it must publish or show them itself).
    ``on_alarm_state`` receives the alarm states that come without a result (a silent
    live source's ticks), so a listener of ``on_result`` misses no alarm event.
    With ``pipelined`` the face stage of the next frame runs on a worker thread while
    this one is scored (:class:`PipelinedEngine`: the same results, in order); a frame is
    finished at once when no next frame is waiting, so an idle source adds no latency.
    """
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise InvalidInputError(
            f"max_seconds must be a positive number of seconds, got {max_seconds!r}"
        )
    source_name = redact_source(str(source_spec))
    # The source first: an absent camera or a bad path is one line, before the model loads
    # (and logs its providers).
    try:
        source = (open_source_fn or open_source)(str(source_spec))
    except PainmonError as exc:
        # Its message is printed to the user: it must not quote a password either.
        redacted = redact_source(str(exc))
        if redacted != str(exc):
            exc.args = (redacted,)
        raise
    try:
        model = load_model(model_path)
    except BaseException:
        source.close()
        raise
    settings = AlarmSettings(model_sha256=model.sha256)
    # The engine (which then owns the tracker) is built before the session opens: a model
    # the engine refuses leaves no session behind, and the tracker and source are released.
    tracker: FaceTracker | None = None
    try:
        tracker = (make_face_tracker or create_face_tracker)(face_model)
        engine = Engine(model, tracker, settings)
    except BaseException:
        if tracker is not None:
            tracker.close()
        source.close()
        raise

    pipeline = PipelinedEngine(engine) if pipelined else None
    tally = FrameTally()
    conditions: collections.Counter[str] = collections.Counter()
    alarms = AlarmTally()
    first_t_s: float | None = None
    last_t_s = 0.0

    def count_events(state: AlarmState) -> None:
        for event in state.new_events:
            alarms.add(event)

    def poll() -> None:
        if on_poll is not None:
            for state in on_poll(engine, engine.media_now_s):
                count_events(state)
        check_recording()

    def check_recording() -> None:
        # The engine goes on monitoring when its session files cannot be written (the
        # bedside window does); a headless run exists to record, so it ends here.
        if engine.recording_error is not None:
            raise engine.recording_error

    def frame_loop(capture: CaptureThread, stop: StopSignals) -> str:
        """Score frames until something ends the run; says what: stop, max_seconds, exhausted."""
        nonlocal first_t_s, last_t_s
        # A silent live source is measured from the last frame's arrival (or from the
        # start): SIGNAL_LOST must come lost_after_s after that frame, whatever the poll.
        last_frame_mono_s = time.monotonic()
        last_status_s = -math.inf
        wait_start: float | None = None

        def handle(result: EngineResult | None) -> None:
            nonlocal last_t_s, last_status_s
            if result is None:
                return
            last_t_s = result.frame.t_s
            count_events(result.alarm_state)
            tally.add(result)
            if result.technical_condition is not None:
                conditions[result.technical_condition] += 1
            if on_result is not None:
                on_result(result)
            poll()
            now_s = time.monotonic()
            if progress and on_status is not None and now_s - last_status_s >= _STATUS_INTERVAL_S:
                last_status_s = now_s
                on_status(format_status(result, source.total_frames))

        def finished(reason: str) -> str:
            if pipeline is not None:
                handle(pipeline.flush())  # its face stage ran: the frame gets its result
            return reason

        while True:
            if stop.request is not None:
                log.info("%s: closing the session files", stop.request.reason)
                return finished("stop")
            if wait_start is None:
                wait_start = time.perf_counter()
            frame, done = take_frame(capture, pipeline, _POLL_S)
            if done is not None:  # no next frame was waiting: the pending one is done
                handle(done)
                wait_start = None
                continue
            if frame is None:
                poll()
                if capture.exhausted:
                    return "exhausted"
                if source.is_live:
                    silent_s = time.monotonic() - last_frame_mono_s
                    tick_state = engine.tick(last_t_s + silent_s)
                    count_events(tick_state)
                    if on_alarm_state is not None:
                        on_alarm_state(tick_state)
                    check_recording()
                continue
            if frame.t_s < engine.media_now_s:
                # Stamped just before a tick advanced the clock past it (a live source's
                # capture thread was descheduled between its clock read and the hand-over):
                # time must not run back, so the frame is dropped, as the window's worker does.
                log.debug("dropping frame %d stamped before the last tick", frame.index)
                continue
            last_frame_mono_s = time.monotonic()
            if first_t_s is None:
                first_t_s = frame.t_s
            if max_seconds is not None and frame.t_s - first_t_s >= max_seconds:
                return finished("max_seconds")
            decode_ms = ms_since(wait_start)
            wait_start = None
            if pipeline is not None:
                handle(pipeline.submit(frame, decode_ms=decode_ms))
            else:
                handle(engine.process(frame, decode_ms=decode_ms))

    wall_start = time.perf_counter()
    ending: tuple[str, int] | None = None
    with StopSignals() as stop:
        try:
            capture = CaptureThread(source, realtime=realtime)
            writer = open_session(
                out_dir,
                pseudonym,
                model,
                settings,
                source=source_name,
                face_detector=getattr(tracker, "name", type(tracker).__name__),
            )
        except BaseException:
            (pipeline or engine).close()
            source.close()
            raise
        engine.session_writer = writer
        loop_end = "exhausted"
        try:
            capture.start()
            loop_end = frame_loop(capture, stop)
        except ModelRunError as exc:
            ending = (f"model error: {one_line(exc)}", EXIT_FAULT)
        except SessionWriteError as exc:
            ending = (f"session write error: {one_line(exc)}", EXIT_FAULT)
        except KeyboardInterrupt:
            # Only where no handler could be installed (not the main thread).
            ending = ("interrupted", EXIT_INTERRUPTED)
        except BaseException as exc:
            ending = (f"error: {type(exc).__name__}: {one_line(exc)}", EXIT_FAULT)
            raise
        finally:
            try:
                capture.stop()
            finally:
                try:
                    (pipeline or engine).close()
                finally:
                    if ending is None:
                        ending = _how_it_ended(loop_end, stop, capture, source, max_seconds)
                    writer.close(redact_source(ending[0]))
        if stop.signals_seen > 1:
            log.info("%d stop signals while closing were ignored", stop.signals_seen - 1)

    end_reason, exit_code = redact_source(ending[0]), ending[1]
    if exit_code == EXIT_FAULT:
        log.error("monitoring of %s ended on a fault: %s", source_name, end_reason)
    elif exit_code != EXIT_CLEAN:
        log.info("monitoring %s: the session was closed", end_reason)
    media_s = 0.0 if first_t_s is None else last_t_s - first_t_s
    return MonitorSummary(
        session_folder=writer.folder,
        source=source_name,
        end_reason=end_reason,
        frames=tally.counts["frames"],
        frames_with_face=tally.counts["frames_with_face"],
        frames_scored=tally.counts["frames_scored"],
        technical_condition_frames=dict(conditions),
        pain_alarm_episodes=alarms.pain_episodes,
        pain_escalations=alarms.escalations,
        technical_alarms_raised=alarms.technical,
        media_seconds=media_s,
        wall_seconds=time.perf_counter() - wall_start,
        latency_ms={
            key: StageLatency(_percentile(values, 50), _percentile(values, 95))
            for key, values in tally.timings.items()
        },
        model_is_demo=model.is_demo,
        providers=tuple(model.providers),
        frames_out_of_domain=tally.counts["frames_out_of_domain"],
        class_frames=dict(tally.class_frames),
        domain_gate=getattr(model, "domain_gate", None) is not None,
        exit_code=exit_code,
    )


def _how_it_ended(
    loop_end: str,
    stop: StopSignals,
    capture: CaptureThread,
    source: FrameSource,
    max_seconds: float | None,
) -> tuple[str, int]:
    """End reason and exit status of a loop that returned ``loop_end`` (capture stopped)."""
    if loop_end == "stop" and stop.request is not None:
        return stop.request.reason, stop.request.exit_code
    if loop_end == "max_seconds":
        return f"max_seconds ({max_seconds:g} s)", EXIT_CLEAN
    error = getattr(capture, "error", None)
    if error is not None:
        text = one_line(error) or type(error).__name__
        return f"source error: {text}", EXIT_FAULT
    # A file that ended before its container's frame count (set by the capture thread or
    # the source; read with getattr so older sources without it still work).
    damage = getattr(capture, "damage", None) or getattr(source, "damage", None)
    if damage:
        return f"damaged media: {one_line(damage)}", EXIT_FAULT
    return "end of media", EXIT_CLEAN


def run_monitor_cli(
    source: str,
    model: str | Path,
    out: str | Path,
    max_seconds: float | None = None,
    realtime: bool = False,
    face_model: str | Path | None = None,
    pseudonym: str = "anonymous",
    load_model: Callable[[str | Path], Any] = load_onnx_model,
    *,
    on_result: Callable[[EngineResult], None] | None = None,
    on_poll: Callable[[Engine, float], Iterable[AlarmState]] | None = None,
    on_alarm_state: Callable[[AlarmState], None] | None = None,
    pipelined: bool = False,
) -> int:
    """``painmon monitor``: live status line on stdout, then the summary; returns the exit
    status of the run (:data:`MONITOR_EXIT_CODES`: 0 clean, 3 fault, 129/130/143 signals).

    On a terminal the status line is redrawn in place; into a file or pipe it is written
    as a whole line at most every :data:`painmon.core.util.progress.LOG_INTERVAL_S` seconds.
    Bad sources or models raise (SourceError, ModelLoadError...) for the CLI to report.
    """
    terminal = sys.stdout.isatty()
    last_line_s = -math.inf
    stdout_gone = False

    def write(text: str) -> None:
        nonlocal stdout_gone
        if stdout_gone:
            return
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as exc:
            # The terminal closed (SIGHUP) or the pipe reader left: the session files are
            # what matter, so monitoring goes on without the status line.
            stdout_gone = True
            log.debug("status output stopped: %s", exc)

    def status(line: str) -> None:
        nonlocal last_line_s
        if terminal:
            write("\r" + line)
        else:
            now_s = time.monotonic()
            if now_s - last_line_s < LOG_INTERVAL_S:
                return
            last_line_s = now_s
            write(line + "\n")

    summary = run_monitor(
        source,
        model,
        out,
        max_seconds=max_seconds,
        realtime=realtime,
        face_model=face_model,
        pseudonym=pseudonym,
        progress=True,
        on_status=status,
        on_result=on_result,
        on_poll=on_poll,
        on_alarm_state=on_alarm_state,
        load_model=load_model,
        pipelined=pipelined,
    )
    write(("\n" if terminal else "") + summary.format() + "\n")
    return summary.exit_code
