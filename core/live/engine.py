"""The real-time engine: one frame in, one :class:`EngineResult` out.

:class:`Engine` ties the stages together on one thread (the capture thread is
separate): signal watchdog -> face tracker -> quality gates -> crop -> DA-CNN
(ONNX Runtime) -> AU cross-check -> probability smoothing -> alarm state
machine -> session files. :func:`painmon.core.live.monitor.run_monitor` drives it from a source.

Design choices (the specification left these open):

* Unknown is never "no pain": a frame without a face, failing a quality gate or
  under a signal condition gets no probabilities, no level and no AU PSPI, and the
  smoothed level (what alarms see) turns unknown too.
* Precedence of the frame's technical condition: SIGNAL_LOST/FROZEN (the camera
  itself) before NO_FACE before LOW_QUALITY before OUT_OF_DOMAIN. NO_FACE is only a
  candidate here; the alarm manager raises it after its own ``no_face_delay_s``.
* The domain gate (:mod:`painmon.core.live.domain`): a crop whose domain score lies
  beyond the model's threshold gets no pain output on that frame; after 1 s of such
  crops the frame's condition is OUT_OF_DOMAIN. The AU estimate (training-free) is
  still computed and carried, so the window can show it instead of the model's level.
* Timings: ``decode`` is the time the consumer waited for the frame from the
  capture buffer (decoding runs on the capture thread); ``dacnn`` includes the
  Grad-CAM, which the exported graph computes in the same ONNX Runtime call, so
  ``gradcam`` is reported as 0.0 ms (fused).
* A failure of the model's own call (ONNX Runtime raising, or outputs that are not
  probabilities) raises :class:`ModelRunError`, so a monitor can end the session as a
  model error rather than mistake it for a bug of the engine or the end of the media.
* Crops are framed the way the model's training crops were (its metadata: square
  box + margin, eye line levelled when the training crops were), so the network sees
  faces framed as it was trained on.
* A session write that fails (a full disk: :class:`SessionWriteError`) stops recording,
  never monitoring: the engine detaches the writer, keeps the error in
  :attr:`Engine.recording_error`, raises the system condition RECORDING_FAILED (a
  technical alarm, in the alarm state it returns; cleared when a new writer is attached)
  and returns the frame's result (alarms included) as usual. The caller decides what
  ends: the bedside window shows the failure and goes on; ``painmon monitor``, whose
  purpose is the recording, ends as a session write error.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np

from painmon.core.live.alarms import (
    AlarmEvent,
    AlarmManager,
    AlarmSettings,
    AlarmState,
    SystemCondition,
    TechnicalCondition,
)
from painmon.core.live.au import AUEstimator
from painmon.core.live.capture import Frame, SignalWatchdog
from painmon.core.live.crop import CropFrame, CropSpec, ModelCrop, crop_for_model
from painmon.core.live.domain import DomainMonitor
from painmon.core.live.face import FaceObservation, FaceTracker
from painmon.core.live.quality import QualityReport, assess_quality
from painmon.core.live.scoring import PainScorer
from painmon.core.live.session import SessionRow, SessionWriteError, SessionWriter
from painmon.core.live.smoothing import ProbabilitySmoother, SmoothedScore, au_agreement
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.labels import pspi_to_class
from painmon.core.util.timeline import utc_now
from painmon.core.util.validate import check_probability_rows

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("decode", "face", "crop", "dacnn", "gradcam", "au", "total")
# Good-quality observations kept for calibrate_neutral(): about 2 s at 25-30 fps.
_NEUTRAL_FRAMES = 60
# ONNX Runtime intra-op threads for the engine's batch-1 DA-CNN call. The face landmarker
# and the capture thread's decoder already keep the cores busy; a 2-thread ORT pool on a
# loaded 2-core machine waits for its descheduled second thread (measured median 11 ms
# vs 2.7 ms with one thread); at a quiet moment one thread was ~0.9 ms slower.
ENGINE_ORT_THREADS = 1


class ModelRunError(PainmonError, RuntimeError):
    """The pain model failed while scoring a frame (it loaded, but its call raised or gave
    outputs that are not probabilities); monitoring with this model cannot go on."""


def one_line(text: object, max_chars: int = 200) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``max_chars`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= max_chars else flat[: max_chars - 1] + "…"


@dataclass(frozen=True, eq=False)
class EngineResult:
    """Everything the monitor shows for one processed frame.

    ``probs``/``pain_class``/``pain_level`` are the frame's own outputs (None when
    unknown); ``smoothed`` is what alarms act on; ``timings_ms`` holds every
    :data:`STAGES` key in milliseconds.
    """

    frame: Frame
    observation: FaceObservation
    quality: QualityReport
    probs: np.ndarray | None
    gradcam: np.ndarray | None
    pain_class: int | None
    pain_level: float | None
    smoothed: SmoothedScore
    au_pspi: float | None
    alarm_state: AlarmState
    technical_condition: str | None
    timings_ms: Mapping[str, float]
    # The crop's domain gate score (None: no crop scored, or the model has no gate) and
    # whether the crop lay beyond the gate's threshold (its pain output is then unknown).
    domain_score: float | None = None
    out_of_domain: bool = False
    # The square the model's crop was cut from (frame pixels, rotation included): where the
    # Grad-CAM lies on the frame. None when no crop was made.
    crop_square: CropFrame | None = None

    def __post_init__(self) -> None:
        known = self.probs is not None
        if known and self.technical_condition is not None:
            raise ValueError("a frame under a technical condition must not carry probabilities")
        if known and self.out_of_domain:
            raise ValueError("an out-of-domain crop must not carry probabilities")
        if known != (self.pain_level is not None) or known != (self.pain_class is not None):
            raise ValueError("probs, pain_class and pain_level are given together or not at all")
        if not known and self.gradcam is not None:
            raise ValueError("an unknown frame must not carry a Grad-CAM")
        # The AU estimate needs no training data: it stands in when the model cannot know.
        if not known and self.au_pspi is not None and not self.out_of_domain:
            raise ValueError("an unknown frame carries an AU PSPI only when out of domain")
        if self.probs is not None:
            if self.probs.ndim != 1:
                raise ValueError(f"probs must be a 1-D array, got shape {self.probs.shape}")
            check_probability_rows(self.probs)
        if self.technical_condition is not None:
            TechnicalCondition(self.technical_condition)
        missing = [k for k in STAGES if k not in self.timings_ms]
        if missing:
            raise ValueError(f"timings_ms lacks {', '.join(missing)}")
        object.__setattr__(
            self, "timings_ms", MappingProxyType({k: float(v) for k, v in self.timings_ms.items()})
        )

    @property
    def output_known(self) -> bool:
        return self.probs is not None

    @property
    def network_ran(self) -> bool:
        """The pain model scored this frame's crop (its output may still be withheld as
        out of domain): the crop and network timings are real."""
        return self.output_known or self.out_of_domain


@dataclass(frozen=True)
class FaceStage:
    """One frame after the face half of the engine (:meth:`Engine.observe`): what the
    scoring half (:meth:`Engine.finish`) needs. ``face_ms`` is the tracker and quality
    gates' time, ``observe_ms`` the whole half's (watchdog included)."""

    frame: Frame
    observation: FaceObservation
    quality: QualityReport
    condition: TechnicalCondition | None
    face_ms: float
    observe_ms: float

    def __post_init__(self) -> None:
        if self.condition is None and not self.observation.face_found:
            raise ValueError("a frame without a face must carry a technical condition")
        if not (self.face_ms >= 0 and self.observe_ms >= 0):
            raise ValueError("stage times must be non-negative")


@runtime_checkable
class MonitorEngine(Protocol):
    """What the bedside window and its worker call on an engine, with or without a model.

    :class:`Engine` and :class:`painmon.core.live.preview.FaceOnlyEngine` both satisfy it.
    Single-threaded: every call comes from the thread that processes the frames.
    """

    face_tracker: FaceTracker
    #: the running session's files (None: not recording); attached and detached by the caller
    session_writer: SessionWriter | None

    def process(self, frame: Frame, decode_ms: float = 0.0) -> EngineResult: ...

    def tick(self, now_s: float) -> AlarmState: ...

    def change_settings(
        self,
        t_s: float,
        alarm_settings: AlarmSettings,
        smoothing_time_constant_s: float | None = None,
    ) -> AlarmState: ...

    def acknowledge(self, t_s: float) -> AlarmState: ...

    def audio_pause(self, t_s: float) -> AlarmState: ...

    def calibrate_neutral(self) -> None: ...

    def close(self) -> None: ...


class Engine:
    """Scores frames one at a time; single-threaded, owns the face tracker it is given."""

    def __init__(
        self,
        model: PainScorer,
        face_tracker: FaceTracker,
        alarm_settings: AlarmSettings | None = None,
        smoothing_time_constant_s: float = 3.0,
        session_writer: SessionWriter | None = None,
        *,
        utc_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        _channels, height, width = model.input_size
        if height != width:
            raise InvalidInputError(
                f"the engine feeds square face crops; model input is {height}x{width}"
            )
        self.model = model
        self.face_tracker = face_tracker
        self._session_writer = session_writer  # no alarm can be active yet
        self._crop_px = int(height)
        # Frame live crops the way the model's training crops were framed (metadata).
        try:
            self._crop_spec = CropSpec.from_meta(model.metadata.get("crop"))
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        self._crop_fallback_warned = False
        self.framing_warning = framing_warning(model, getattr(face_tracker, "name", None))
        if self.framing_warning is not None:
            log.warning("%s", self.framing_warning)
        self._utc_clock = utc_clock
        self.alarms = AlarmManager(alarm_settings)
        self.smoother = ProbabilitySmoother(smoothing_time_constant_s)
        self.domain = DomainMonitor(getattr(model, "domain_gate", None))
        self.au = AUEstimator()
        self._media_now_s = 0.0
        # Files are processed faster than real time: the watchdog runs on media time.
        self.watchdog = SignalWatchdog(clock=lambda: self._media_now_s)
        self._neutral: collections.deque[FaceObservation] = collections.deque(
            maxlen=_NEUTRAL_FRAMES
        )
        self._closed = False
        #: why the last session stopped recording (its files could not be written), else
        #: None; reset when a new writer is attached. Monitoring goes on without a writer.
        self.recording_error: SessionWriteError | None = None
        # Alarm events made outside a returned state (the RECORDING_FAILED clear when a
        # writer is attached): delivered, and logged, with the next state.
        self._undelivered: tuple[AlarmEvent, ...] = ()

    @property
    def session_writer(self) -> SessionWriter | None:
        """The running session's files (None: not recording); attached by the caller.

        Attaching a writer while an alarm is active first logs each active alarm in the
        new session's alarms.csv (``active_at_session_start``, with its original onset),
        so a session started mid-alarm does not begin with a silent alarm log.
        """
        return self._session_writer

    @session_writer.setter
    def session_writer(self, writer: SessionWriter | None) -> None:
        if writer is not None and writer is not self._session_writer:
            failed = self.recording_error is not None
            if failed:  # recording resumes; the clear goes to the new session's log
                self._set_recording_failed(False)
            try:
                # Written before attaching: a writer that cannot write is not attached.
                writer.write_events(self.alarms.active_alarm_events())
            except BaseException:
                if failed:
                    self._set_recording_failed(True)
                raise
            self.recording_error = None
        self._session_writer = writer

    def _set_recording_failed(self, active: bool) -> None:
        state = self.alarms.set_system_condition(
            self._media_now_s, SystemCondition.RECORDING_FAILED, active
        )
        self._undelivered += state.new_events

    def crop(self, frame: Frame, observation: FaceObservation) -> np.ndarray:
        """The model's input crop of the observed face, framed like its training crops.

        Raises ``ValueError`` when there is no face box or the face cannot be cropped.
        """
        return self.model_crop(frame, observation).image

    def model_crop(self, frame: Frame, observation: FaceObservation) -> ModelCrop:
        """:meth:`crop` with the square it was cut from (see :class:`ModelCrop`)."""
        if observation.box is None:
            raise ValueError("no face box to crop")
        result = crop_for_model(
            frame.rgb,
            observation.box,
            observation.landmarks,
            observation.eye_line,
            self._crop_spec,
            self._crop_px,
        )
        if result.fell_back and not self._crop_fallback_warned:
            log.warning(
                "the model was trained on stable-landmark crops but this face tracker gives no "
                "landmarks: crops are framed by the face box and scores may be less accurate"
            )
            self._crop_fallback_warned = True
        return result

    def process(self, frame: Frame, decode_ms: float = 0.0) -> EngineResult:
        """Run every stage on ``frame``; ``decode_ms`` is the wait for it (see module doc)."""
        return self.finish(self.observe(frame), decode_ms)

    def observe(self, frame: Frame) -> FaceStage:
        """The face half of :meth:`process`: signal watchdog, face tracker, quality gates.

        It touches only the watchdog and the face tracker, which :meth:`finish` never
        does, so a pipelined caller may run it for the next frame on another thread
        while :meth:`finish` scores this one (:mod:`painmon.core.live.pipelined`). Frames
        must be observed, and then finished, in order.
        """
        if self._closed:
            raise RuntimeError("the engine was closed; start a new one")
        start = time.perf_counter()
        observation, quality, condition, face_ms = observe_frame(
            self.watchdog, self.face_tracker, frame
        )
        return FaceStage(frame, observation, quality, condition, face_ms, ms_since(start))

    def finish(self, stage: FaceStage, decode_ms: float = 0.0) -> EngineResult:
        """The scoring half of :meth:`process` for an observed frame: crop, DA-CNN, AU,
        smoothing, alarms and the session row. ``timings_ms["total"]`` adds the face
        half's own time and ``decode_ms``, not any wait between the halves."""
        if self._closed:
            raise RuntimeError("the engine was closed; start a new one")
        start = time.perf_counter()
        frame, observation, quality = stage.frame, stage.observation, stage.quality
        condition = stage.condition
        timings = dict.fromkeys(STAGES, 0.0)
        timings["decode"] = float(decode_ms)
        timings["face"] = stage.face_ms
        self._media_now_s = frame.t_s

        probs = gradcam = None
        domain_score: float | None = None
        crop_square: CropFrame | None = None
        if condition is None:
            assert observation.box is not None
            mark = time.perf_counter()
            try:
                model_crop = self.model_crop(frame, observation)
                crop, crop_square = model_crop.image, model_crop.frame
            except ValueError as exc:
                log.warning("frame %d: face could not be cropped (%s)", frame.index, exc)
                condition = TechnicalCondition.LOW_QUALITY
            timings["crop"] = ms_since(mark)
            if condition is None:
                mark = time.perf_counter()
                probs, gradcam, domain_score = self._score(crop, frame.index)
                timings["dacnn"] = ms_since(mark)
        domain = self.domain.update(frame.t_s, domain_score)
        out_of_domain = condition is None and (domain.frame_out or domain.condition)
        if out_of_domain:
            probs = gradcam = None
            if domain.condition:
                condition = TechnicalCondition.OUT_OF_DOMAIN

        mark = time.perf_counter()
        face_ok = condition is None or condition is TechnicalCondition.OUT_OF_DOMAIN
        au_estimate = self.au.update(observation, frame.t_s, quality_ok=face_ok)
        timings["au"] = ms_since(mark)
        if face_ok:
            self._neutral.append(observation)

        pain_class = pain_level = au_pspi = None
        if probs is None:
            if condition is not None:
                reason = condition.value
            else:
                reason = "out of domain" if out_of_domain else "unknown"
            if out_of_domain:
                au_pspi = au_estimate.pspi
            smoothed = self.smoother.update(frame.t_s, None, unknown_reason=reason)
        else:
            pain_class = int(np.argmax(probs))
            pain_level = float(np.clip(np.dot(np.arange(probs.size), probs), 0.0, 4.0))
            au_pspi = au_estimate.pspi
            smoothed = self.smoother.update(
                frame.t_s,
                probs.tolist(),
                quality=quality.score,
                agreement=au_agreement(pain_level, au_pspi),
            )
        alarm_level = smoothed.pain_level
        if out_of_domain and self.alarms.settings.au_alarms_out_of_domain:
            # The AU estimate stands in for alarms (a setting, off by default); the alarm
            # manager's delay is its smoothing.
            alarm_level = None if au_pspi is None else float(pspi_to_class(au_pspi))
        alarm_state = self.alarms.update(frame.t_s, alarm_level, condition)
        timings["total"] = ms_since(start) + stage.observe_ms + timings["decode"]

        result = EngineResult(
            frame=frame,
            observation=observation,
            quality=quality,
            probs=probs,
            gradcam=gradcam,
            pain_class=pain_class,
            pain_level=pain_level,
            smoothed=smoothed,
            au_pspi=au_pspi,
            alarm_state=alarm_state,
            technical_condition=condition.value if condition is not None else None,
            timings_ms=timings,
            domain_score=domain_score,
            out_of_domain=out_of_domain,
            crop_square=crop_square,
        )
        return self._record(result)

    def _score(
        self, crop: np.ndarray, frame_index: int
    ) -> tuple[np.ndarray, np.ndarray, float | None]:
        """The model's probabilities, Grad-CAM and domain score for one crop.

        Anything the model's call raises, or outputs that are not one probability row,
        becomes :class:`ModelRunError` (a model fault, not the engine's).
        """
        try:
            prediction = self.model.predict(crop[np.newaxis])
            probs = np.asarray(prediction.probs[0], dtype=np.float64)
            # The model's probabilities sit at its training sampler's priors; the ward's
            # prevalence (default: the training data's) is what the nurse should see.
            correction = getattr(self.model, "prevalence", None)
            if correction is not None:
                probs = correction.apply(probs)
            gradcam = np.asarray(prediction.gradcam[0], dtype=np.float32)
            check_probability_rows(probs)
            domain_score = (
                None if prediction.domain_score is None else float(prediction.domain_score[0])
            )
        except Exception as exc:  # any failure inside the model's own call is a model fault
            message = one_line(exc) or type(exc).__name__
            raise ModelRunError(
                f"the pain model failed on frame {frame_index} ({type(exc).__name__}: "
                f"{message}); check the model file or export it again"
            ) from exc
        return probs, gradcam, domain_score

    def tick(self, now_s: float) -> AlarmState:
        """Advance without a new frame (live source silent): may raise SIGNAL_LOST."""
        self._media_now_s = max(self._media_now_s, float(now_s))
        condition = self.watchdog.update(None, now_s=self._media_now_s)
        return self._log_events(self.alarms.update(self._media_now_s, None, condition))

    def change_settings(
        self,
        t_s: float,
        alarm_settings: AlarmSettings,
        smoothing_time_constant_s: float | None = None,
    ) -> AlarmState:
        """Apply new alarm settings (and smoothing time constant) from ``t_s`` on; logged.

        The running session's settings file is updated too, so a session always says
        which thresholds its alarms were raised against.
        """
        if smoothing_time_constant_s is not None:
            tau_s = float(smoothing_time_constant_s)
            if not (math.isfinite(tau_s) and tau_s > 0):
                raise InvalidInputError(
                    f"smoothing time constant must be a positive number of seconds, got "
                    f"{smoothing_time_constant_s!r}"
                )
        state = self.alarms.change_settings(t_s, alarm_settings)
        if smoothing_time_constant_s is not None:
            self.smoother.time_constant_s = tau_s
        if self.session_writer is not None:
            try:
                self.session_writer.update_settings(alarm_settings)
            except SessionWriteError as exc:
                state = self._recording_failed(exc, state)
        return self._log_events(state)

    def acknowledge(self, t_s: float) -> AlarmState:
        """Operator acknowledgement of the active alarm (logged)."""
        return self._log_events(self.alarms.acknowledge(t_s))

    def audio_pause(self, t_s: float) -> AlarmState:
        """Silence pain alarm audio for the configured pause (logged)."""
        return self._log_events(self.alarms.audio_pause(t_s))

    @property
    def media_now_s(self) -> float:
        """The media time the engine has reached (last frame or tick): the ``t_s`` to give
        operator actions that come from outside the frame loop."""
        return self._media_now_s

    def set_system_condition(
        self, condition: SystemCondition | str, active: bool, t_s: float | None = None
    ) -> AlarmState:
        """Raise or clear a system technical alarm (e.g. CENTRAL_UNREACHABLE) at ``t_s``
        (default: :attr:`media_now_s`); logged, the pain output stays as it is."""
        when = self._media_now_s if t_s is None else float(t_s)
        return self._log_events(self.alarms.set_system_condition(when, condition, active))

    def calibrate_neutral(self) -> None:
        """Take the last ~2 s of good-quality faces as this patient's neutral AU baseline."""
        self.au.calibrate_neutral(list(self._neutral))

    def close(self) -> None:
        """Close the face tracker; the session writer stays the caller's to close."""
        if not self._closed:
            self._closed = True
            self.face_tracker.close()

    def _log_events(self, state: AlarmState) -> AlarmState:
        """``state`` (with any undelivered events first), its new events logged."""
        if self._undelivered:
            events, self._undelivered = self._undelivered, ()
            state = dataclasses.replace(state, new_events=events + state.new_events)
        writer = self._session_writer
        if writer is not None and state.new_events:
            try:
                writer.write_events(state.new_events)
            except SessionWriteError as exc:
                state = self._recording_failed(exc, state)
        return state

    def _recording_failed(self, error: SessionWriteError, state: AlarmState) -> AlarmState:
        """The session's files could not be written: detach the writer (its owner closes
        it), keep the error for the caller and go on monitoring without recording.

        Returns ``state`` with the technical alarm RECORDING_FAILED raised in it.
        """
        self._session_writer = None
        self.recording_error = error
        log.error("session recording stopped; pain monitoring goes on: %s", error)
        raised = self.alarms.set_system_condition(state.t_s, SystemCondition.RECORDING_FAILED, True)
        return dataclasses.replace(raised, new_events=state.new_events + raised.new_events)

    def _record(self, result: EngineResult) -> EngineResult:
        """Log the result's alarm events and its session row; the result as returned."""
        state = self._log_events(result.alarm_state)
        writer = self._session_writer
        if writer is not None:
            try:
                writer.write_row(self._session_row(result))
            except SessionWriteError as exc:
                state = self._recording_failed(exc, state)
        if state is result.alarm_state:
            return result
        return dataclasses.replace(result, alarm_state=state)

    def _session_row(self, result: EngineResult) -> SessionRow:
        known = result.output_known
        return SessionRow(
            utc_time=self._utc_clock().isoformat(),
            t_s=result.frame.t_s,
            frame=result.frame.index,
            face_found=result.observation.face_found,
            quality_ok=result.quality.ok and result.observation.face_found,
            probabilities=tuple(result.probs.tolist()) if result.probs is not None else None,
            pain_class=result.pain_class,
            pain_level=result.pain_level,
            pain_level_smoothed=result.smoothed.pain_level if known else None,
            confidence=result.smoothed.confidence if known else None,
            au_pspi=result.au_pspi,
            alarm_priority=result.alarm_state.pain_priority,
            technical_condition=result.technical_condition,
            domain_score=result.domain_score,
        )


def framing_warning(model: PainScorer, tracker_name: str | None) -> str | None:
    """Why scores may be off: the model's training crops came from another face detector."""
    trained_on = (model.metadata.get("crop") or {}).get("detector")
    if trained_on and tracker_name and trained_on != tracker_name:
        return (
            f"the model was trained on {trained_on} face crops but the live tracker is "
            f"{tracker_name}: crops are framed differently and scores may be less accurate"
        )
    return None


def observe_frame(
    watchdog: SignalWatchdog, face_tracker: FaceTracker, frame: Frame
) -> tuple[FaceObservation, QualityReport, TechnicalCondition | None, float]:
    """Signal watchdog, face and quality gates for one frame: what every engine does first.

    Returns the observation, the quality report, the technical condition (watchdog
    first, then no face, then low quality) and the face stage's time in ms.
    """
    condition = watchdog.update(frame, now_s=frame.t_s)
    mark = time.perf_counter()
    observation = face_tracker.observe(frame.rgb, frame.t_s)
    quality = assess_quality(frame.rgb, observation)
    face_ms = ms_since(mark)
    if condition is None and not observation.face_found:
        condition = TechnicalCondition.NO_FACE
    elif condition is None and not quality.ok:
        condition = TechnicalCondition.LOW_QUALITY
    return observation, quality, condition, face_ms


def ms_since(mark: float) -> float:
    return (time.perf_counter() - mark) * 1000.0
