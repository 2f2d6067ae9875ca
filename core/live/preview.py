"""Face-only monitoring for when no pain model is loaded: video, face box and technical alarms.

:class:`FaceOnlyEngine` has the interface of :class:`painmon.core.live.engine.Engine`
(:class:`~painmon.core.live.engine.MonitorEngine`, plus ``alarms`` and ``smoother``)
so the bedside window runs the same loop with or without a model. Every result is
unknown (never "no pain"): there is no network to score the face, so pain alarms
can never be raised; signal and face alarms still are, so a nurse sees a dead
camera even before a model is chosen.
"""

from __future__ import annotations

import logging
import time

from painmon.core.live.alarms import AlarmManager, AlarmSettings, AlarmState
from painmon.core.live.capture import Frame, SignalWatchdog
from painmon.core.live.engine import STAGES, EngineResult, observe_frame
from painmon.core.live.face import FaceTracker
from painmon.core.live.session import SessionWriter
from painmon.core.live.smoothing import ProbabilitySmoother

log = logging.getLogger(__name__)

NO_MODEL_REASON = "no model loaded"


class FaceOnlyEngine:
    """Engine stand-in without a model: every output unknown, technical alarms still raised."""

    model = None
    session_writer: SessionWriter | None = None

    def __init__(
        self, face_tracker: FaceTracker, alarm_settings: AlarmSettings | None = None
    ) -> None:
        self.face_tracker = face_tracker
        self.alarms = AlarmManager(alarm_settings)
        # Kept so that settings changes apply uniformly to both engines.
        self.smoother = ProbabilitySmoother()
        self._media_now_s = 0.0
        self.watchdog = SignalWatchdog(clock=lambda: self._media_now_s)
        self._closed = False

    def process(self, frame: Frame, decode_ms: float = 0.0) -> EngineResult:
        """Track the face and check signal and quality; the pain output stays unknown."""
        if self._closed:
            raise RuntimeError("the engine was closed; start a new one")
        start = time.perf_counter()
        timings = dict.fromkeys(STAGES, 0.0)
        timings["decode"] = float(decode_ms)
        self._media_now_s = frame.t_s
        observation, quality, condition, timings["face"] = observe_frame(
            self.watchdog, self.face_tracker, frame
        )
        reason = condition.value if condition is not None else NO_MODEL_REASON
        smoothed = self.smoother.update(frame.t_s, None, unknown_reason=reason)
        alarm_state = self.alarms.update(frame.t_s, None, condition)
        timings["total"] = (time.perf_counter() - start) * 1000.0 + timings["decode"]
        return EngineResult(
            frame=frame,
            observation=observation,
            quality=quality,
            probs=None,
            gradcam=None,
            pain_class=None,
            pain_level=None,
            smoothed=smoothed,
            au_pspi=None,
            alarm_state=alarm_state,
            technical_condition=condition.value if condition is not None else None,
            timings_ms=timings,
        )

    def tick(self, now_s: float) -> AlarmState:
        """Advance without a new frame (live source silent): may raise SIGNAL_LOST."""
        self._media_now_s = max(self._media_now_s, float(now_s))
        condition = self.watchdog.update(None, now_s=self._media_now_s)
        return self.alarms.update(self._media_now_s, None, condition)

    def change_settings(
        self,
        t_s: float,
        alarm_settings: AlarmSettings,
        smoothing_time_constant_s: float | None = None,
    ) -> AlarmState:
        """Apply new alarm settings from ``t_s`` on (logged by the alarm manager).

        The smoothing time constant is accepted and ignored: nothing is scored, so
        there is nothing to smooth.
        """
        del smoothing_time_constant_s
        return self.alarms.change_settings(t_s, alarm_settings)

    def acknowledge(self, t_s: float) -> AlarmState:
        return self.alarms.acknowledge(t_s)

    def audio_pause(self, t_s: float) -> AlarmState:
        return self.alarms.audio_pause(t_s)

    def calibrate_neutral(self) -> None:
        """Nothing to calibrate without a model's AU cross-check in use."""
        log.info("neutral calibration skipped: %s", NO_MODEL_REASON)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.face_tracker.close()
