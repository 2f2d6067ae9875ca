"""Two-stage pipelined engine: the face stage of frame n+1 runs while frame n is scored.

On a 2-core bedside the face stage (MediaPipe landmarker + patient selection + quality
gates) is the slowest stage and the scoring stage (crop, ONNX Runtime DA-CNN + Grad-CAM,
AU, smoothing, alarms, session row) the next; both spend their time in native code that
releases the GIL. :class:`PipelinedEngine` runs :meth:`Engine.observe` on one worker
thread and :meth:`Engine.finish` on the caller's thread, so a frame's throughput cost is
about the slower stage rather than their sum.

Why the results equal the serial engine's for the same frames: ``observe`` touches only
the watchdog and the face tracker, ``finish`` never touches them; each half sees the
frames in the same order as :meth:`Engine.process` would, so every stateful part (tracker,
watchdog, smoother, domain monitor, AU, alarms, session files) sees the same inputs in the
same order. Operator actions (acknowledge, settings, system conditions) run on the
caller's thread between results, as with the serial engine.

The hand-off is bounded: at most one frame waits in the face stage while the caller scores
the one before it (``submit`` waits for frame n's face stage before it returns frame n's
result). Results therefore come one ``submit`` late; a caller that has no next frame at
hand calls :meth:`PipelinedEngine.flush` so an idle source adds no latency.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from painmon.core.live.alarms import AlarmSettings, AlarmState, SystemCondition
from painmon.core.live.capture import Frame
from painmon.core.live.engine import Engine, EngineResult, FaceStage
from painmon.core.live.face import FaceTracker
from painmon.core.live.session import SessionWriter

log = logging.getLogger(__name__)

# The worker's join on close: the face stage of one frame takes milliseconds; a tracker
# that hangs longer than this is logged rather than waited for forever.
_CLOSE_JOIN_S = 10.0


class FrameSource(Protocol):
    def get_latest(self, timeout_s: float | None = 0.0) -> Frame | None: ...


def take_frame(
    capture: FrameSource, pipeline: PipelinedEngine | None, wait_s: float
) -> tuple[Frame | None, EngineResult | None]:
    """One step of a frame loop: the next frame, or the pending frame's result.

    With a frame pending in ``pipeline`` the loop must not wait: if a next frame is already
    there it is returned (to be submitted, so the two overlap), otherwise the pending frame
    is finished now and its result returned, so an idle source adds no latency. With
    nothing pending (or no pipeline) it waits up to ``wait_s`` for a frame. Returns
    ``(frame, None)``, ``(None, result)``, or ``(None, None)`` when no frame came.
    """
    if pipeline is None or not pipeline.pending:
        return capture.get_latest(timeout_s=wait_s), None
    frame = capture.get_latest(timeout_s=0.0)
    if frame is None:
        return None, pipeline.flush()
    return frame, None


@dataclass(frozen=True)
class _Pending:
    frame: Frame
    decode_ms: float
    face: Future[FaceStage]


class PipelinedEngine:
    """An :class:`Engine` with its face stage one frame ahead on a worker thread.

    ``submit(frame)`` returns the previous frame's result (None for the first);
    ``flush()`` returns the last one. Exceptions of either stage surface from the
    ``submit``/``flush`` that would have returned that frame's result. Use as a context
    manager or call :meth:`close`: it joins the worker and closes the engine.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="painmon-face-stage")
        self._pending: _Pending | None = None
        self._closed = False

    # -- frames ---------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """A frame was submitted whose result has not been returned yet."""
        return self._pending is not None

    def submit(self, frame: Frame, decode_ms: float = 0.0) -> EngineResult | None:
        """Start ``frame``'s face stage and score the frame submitted before it.

        Returns that earlier frame's result, or None when none was pending.
        """
        if self._closed:
            raise RuntimeError("the pipelined engine was closed; start a new one")
        previous = self._pending
        # Queued behind the previous frame's face stage on the one worker: in order.
        self._pending = _Pending(
            frame, float(decode_ms), self._worker.submit(self.engine.observe, frame)
        )
        if previous is None:
            return None
        try:
            return self.engine.finish(previous.face.result(), previous.decode_ms)
        except BaseException:
            # The frame just submitted is dropped with the failure: its result would
            # follow a frame that has none.
            self._drop_pending()
            raise

    def flush(self) -> EngineResult | None:
        """The pending frame's result (waits for its face stage); None when none is pending."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        return self.engine.finish(pending.face.result(), pending.decode_ms)

    def process(self, frame: Frame, decode_ms: float = 0.0) -> EngineResult:
        """Serial processing of one frame (no overlap), for callers that need its result
        now; the pipeline must be flushed first."""
        self._require_flushed("process")
        return self.engine.process(frame, decode_ms)

    # -- everything else acts on the engine on the caller's thread ------------------------

    @property
    def face_tracker(self) -> FaceTracker:
        return self.engine.face_tracker

    @property
    def session_writer(self) -> SessionWriter | None:
        return self.engine.session_writer

    @session_writer.setter
    def session_writer(self, writer: SessionWriter | None) -> None:
        self.engine.session_writer = writer

    @property
    def media_now_s(self) -> float:
        return self.engine.media_now_s

    def tick(self, now_s: float) -> AlarmState:
        """As :meth:`Engine.tick`; the watchdog belongs to the face stage, so flush first."""
        self._require_flushed("tick")
        return self.engine.tick(now_s)

    def change_settings(
        self,
        t_s: float,
        alarm_settings: AlarmSettings,
        smoothing_time_constant_s: float | None = None,
    ) -> AlarmState:
        return self.engine.change_settings(t_s, alarm_settings, smoothing_time_constant_s)

    def acknowledge(self, t_s: float) -> AlarmState:
        return self.engine.acknowledge(t_s)

    def audio_pause(self, t_s: float) -> AlarmState:
        return self.engine.audio_pause(t_s)

    def set_system_condition(
        self, condition: SystemCondition | str, active: bool, t_s: float | None = None
    ) -> AlarmState:
        return self.engine.set_system_condition(condition, active, t_s)

    def calibrate_neutral(self) -> None:
        self.engine.calibrate_neutral()

    def close(self) -> None:
        """Drop any pending frame, join the worker thread, close the engine."""
        if self._closed:
            return
        self._closed = True
        try:
            self._drop_pending()
            self._worker.shutdown(wait=True, cancel_futures=True)
        finally:
            self.engine.close()

    def __enter__(self) -> PipelinedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None or pending.face.cancel():
            return
        try:
            # Its face stage is running: let it end before the tracker is closed.
            pending.face.result(timeout=_CLOSE_JOIN_S)
        except Exception as exc:  # the frame is being dropped; its failure changes nothing
            log.debug("dropped frame %d: face stage failed (%s)", pending.frame.index, exc)

    def _require_flushed(self, what: str) -> None:
        if self._closed:
            raise RuntimeError("the pipelined engine was closed; start a new one")
        if self._pending is not None:
            raise RuntimeError(f"flush() the pipelined engine before {what}()")
