"""IEC 60601-1-8-style pain alarm state machine (pure logic, no Qt, no threads).

All timing runs on the media time ``t_s`` handed in; the injectable UTC clock is
read only to stamp events for the log.

Design choices (the specification left these open):

* Episodes: an episode opens when the smoothed level stays >= medium_threshold
  for alarm_delay_s (HIGH straight away if it also stayed >= high_threshold that
  long) and ends when it stays below ``medium_threshold - hysteresis`` for
  clear_hold_s. An episode raises one onset; it may escalate MEDIUM -> HIGH
  (which also needs the high condition for alarm_delay_s) but never
  de-escalates: quietly turning a latching HIGH into a non-latching MEDIUM while
  the patient is still in pain would hide it.
* Onset timers use no hysteresis (a dip below the threshold restarts them); the
  clear timer does.
* Timers count only time covered by valid levels: during a technical condition
  or an unknown level (None) the pain state is frozen, onset/clear/reminder
  timers keep what they had and resume when valid levels return; the unknown
  stretch itself never counts. Two valid levels more than MAX_LEVEL_GAP_S apart
  (frames missing between them) are an unknown stretch too: the smoother restarts
  after the same gap. After an unknown stretch longer than STALE_EVIDENCE_S the
  onset and clear timers start again: what the face showed before it no longer
  describes the patient (a face back after ten minutes must not raise an alarm
  "for 10 s" on its first frames). The audio-pause countdown and the technical
  condition delays run on plain t_s.
* A latched HIGH keeps sounding (unless paused) until acknowledged, as IEC
  latching signals do. A new episode during a latch keeps the latch shown.
* Technical alarms are visual and logged, no tone (IEC allows visual-only
  low-priority alarms): ``audio_active`` concerns the pain alarm. Each has a
  condition delay, so that one odd frame does not post a banner that clears 40 ms
  later: LOW_QUALITY (judged per frame) is raised once it has held for
  technical_delay_s, NO_FACE once it has held for more than no_face_delay_s.
  SIGNAL_LOST, FROZEN and OUT_OF_DOMAIN are raised at once because their
  producers already waited: the signal watchdog reports SIGNAL_LOST after
  lost_after_s without frames and FROZEN after frozen_after_s of one picture, the
  domain monitor reports OUT_OF_DOMAIN after persist_s of unfamiliar faces and
  holds it for clear_s; a second delay would only hide them longer. While a
  condition waits for its delay the pain state is frozen all the same (output
  unknown) and no technical alarm is shown. The delays also run on the whole
  unknown stretch: a face found on some frames and too dark on others (NO_FACE and
  LOW_QUALITY changing faster than either delay) raises the condition seen on most
  of the stretch's frames once the stretch has lasted that condition's delay, and
  its message says the conditions changed. A shown technical alarm gives way to
  another condition at once if that one's producer already waited (SIGNAL_LOST,
  FROZEN, OUT_OF_DOMAIN), else once it has held for technical_delay_s; so
  flickering conditions neither flood the log (and the ward's bus and record) nor
  clear the alarm while the output is unknown.
* System conditions (:class:`SystemCondition`, e.g. CENTRAL_UNREACHABLE: the ward's
  central station did not confirm alarm events) are technical alarms of the bed itself:
  raised and cleared through :meth:`AlarmManager.set_system_condition`, logged like the
  others, listed in ``AlarmState.system_conditions``; they neither make the pain output
  unknown nor freeze pain alarms, because the bed stays the primary alarm.
* Audio pause silences every pain alarm; only a HIGH onset/escalation breaks
  through, and only if the pause was not started while a HIGH was shown.
* Acknowledge silences the active alarm and starts the reminder timer; pressing
  it with nothing to acknowledge is still logged (operator action audit).
* Settings changes restart the onset and clear timers (they measured against the
  old thresholds) but keep an open episode.
* ``new_events`` of every returned AlarmState holds the events produced since the
  previously returned state (from update, acknowledge, audio_pause or
  change_settings), so each event is delivered exactly once.
* Pending: while an onset or escalation timer runs on a known level, the state says
  which priority would be raised next and in how many seconds if the condition keeps
  holding (``pending_priority``/``pending_in_s``). It is not an alarm (no tone, no
  event); it vanishes when the level falls or turns unknown (timers do not run then).
* A session that starts mid-alarm: :meth:`AlarmManager.active_alarm_events` describes
  every alarm active at that moment (kind ``active_at_session_start``, with its
  original onset time) so the new session's alarm log does not begin silently.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from painmon.core.util.errors import InvalidInputError
from painmon.core.util.timeline import next_time, utc_now
from painmon.core.util.validate import is_sha256_hex

log = logging.getLogger(__name__)

MAX_AUDIO_PAUSE_S = 180.0
MAX_LEVEL = 4.0
# A longer technical condition delay would leave a bad picture unexplained on screen too long.
MAX_TECHNICAL_DELAY_S = 10.0
_TIME_TOLERANCE_S = 1e-9
# Valid levels further apart than this have an unknown stretch between them (as the
# smoother's default max_gap_s: it restarts after the same gap).
MAX_LEVEL_GAP_S = 2.0
# After an unknown stretch this long the onset and clear timers start again. Shorter
# stretches (a head turned away, a hand over the face, care at the bedside) keep them, so
# a patient in pain who keeps moving out of view still alarms.
STALE_EVIDENCE_S = 60.0


class TechnicalCondition(enum.StrEnum):
    """Conditions under which the pain level cannot be trusted."""

    SIGNAL_LOST = "SIGNAL_LOST"
    FROZEN = "FROZEN"
    NO_FACE = "NO_FACE"
    LOW_QUALITY = "LOW_QUALITY"
    # The face is unlike the model's training data (its domain gate, for > 1 s).
    OUT_OF_DOMAIN = "OUT_OF_DOMAIN"


class SystemCondition(enum.StrEnum):
    """Technical alarms about the bed's own system, not the picture: unlike a
    :class:`TechnicalCondition` they leave the pain output known and pain alarms running."""

    # Alarm events went unconfirmed by the central station (the ward's MQTT link) for > 5 s.
    CENTRAL_UNREACHABLE = "CENTRAL_UNREACHABLE"
    # The session's files could not be written (a full disk): recording stopped, the
    # monitoring and its alarms go on.
    RECORDING_FAILED = "RECORDING_FAILED"


#: what each system condition means, in the words the bedside shows
SYSTEM_CONDITION_TEXT: dict[str, str] = {
    SystemCondition.CENTRAL_UNREACHABLE: "central station not reached",
    SystemCondition.RECORDING_FAILED: "session not recorded (files cannot be written)",
}


# Conditions judged frame by frame, raised only after AlarmSettings.technical_delay_s.
# (NO_FACE has its own no_face_delay_s; the others were debounced by their producers.)
_DELAYED_CONDITIONS = frozenset({TechnicalCondition.LOW_QUALITY})


class AlarmPriority(enum.StrEnum):
    """Priority names used in states and events."""

    NONE = "none"
    MEDIUM = "medium"
    HIGH = "high"
    TECHNICAL = "technical"


class AlarmEventKind(enum.StrEnum):
    """Every kind of logged alarm event."""

    ONSET = "onset"
    ESCALATION = "escalation"
    ACKNOWLEDGE = "acknowledge"
    AUDIO_PAUSE = "audio_pause"
    AUDIO_PAUSE_END = "audio_pause_end"
    CLEAR = "clear"
    LATCH = "latch"
    REMINDER = "reminder"
    TECHNICAL_ONSET = "technical_onset"
    TECHNICAL_CLEAR = "technical_clear"
    SETTINGS_CHANGE = "settings_change"
    #: an alarm already active when a session's files were opened (logged once, at attach)
    ACTIVE_AT_SESSION_START = "active_at_session_start"


_PAIN_RANK = {AlarmPriority.NONE: 0, AlarmPriority.MEDIUM: 1, AlarmPriority.HIGH: 2}


def _finite(name: str, value: float, minimum: float = 0.0) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= minimum):
        raise InvalidInputError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")


@dataclass(frozen=True)
class AlarmSettings:
    """Alarm thresholds (on the 0..4 smoothed pain level) and timings in seconds."""

    medium_threshold: float = 2.5
    high_threshold: float = 3.5
    alarm_delay_s: float = 10.0
    hysteresis: float = 0.3
    clear_hold_s: float = 5.0
    audio_pause_s: float = 120.0
    reminder_interval_s: float = 300.0
    no_face_delay_s: float = 5.0
    # LOW_QUALITY must hold this long before its technical alarm is raised (condition delay).
    technical_delay_s: float = 1.0
    model_sha256: str = ""
    # While the pain model cannot score the face (OUT_OF_DOMAIN), raise pain alarms on the
    # training-free AU estimate? Off by default: the estimate is coarse (see live/au.py).
    au_alarms_out_of_domain: bool = False

    def __post_init__(self) -> None:
        for name in (
            "medium_threshold",
            "high_threshold",
            "alarm_delay_s",
            "hysteresis",
            "clear_hold_s",
            "audio_pause_s",
            "reminder_interval_s",
            "no_face_delay_s",
            "technical_delay_s",
        ):
            _finite(name, getattr(self, name))
        if not 0.0 < self.medium_threshold < self.high_threshold <= MAX_LEVEL:
            raise InvalidInputError(
                "need 0 < medium_threshold < high_threshold <= 4, got "
                f"medium={self.medium_threshold:g}, high={self.high_threshold:g}"
            )
        if self.hysteresis >= self.medium_threshold:
            raise InvalidInputError(
                f"hysteresis ({self.hysteresis:g}) must be smaller than medium_threshold "
                f"({self.medium_threshold:g}), or an alarm could never clear"
            )
        if not 0.0 < self.audio_pause_s <= MAX_AUDIO_PAUSE_S:
            raise InvalidInputError(
                f"audio_pause_s must lie in (0, {MAX_AUDIO_PAUSE_S:g}] s (IEC 60601-1-8 "
                f"bedside limit), got {self.audio_pause_s:g}"
            )
        if self.technical_delay_s > MAX_TECHNICAL_DELAY_S:
            raise InvalidInputError(
                f"technical_delay_s must lie in [0, {MAX_TECHNICAL_DELAY_S:g}] s, "
                f"got {self.technical_delay_s:g}"
            )
        if self.reminder_interval_s <= 0:
            raise InvalidInputError(
                f"reminder_interval_s must be > 0, got {self.reminder_interval_s:g}"
            )
        if not isinstance(self.au_alarms_out_of_domain, bool):
            raise InvalidInputError(
                "au_alarms_out_of_domain must be True or False, got "
                f"{self.au_alarms_out_of_domain!r}"
            )
        if self.model_sha256 and not is_sha256_hex(self.model_sha256):
            raise InvalidInputError(
                f"model_sha256 must be empty or 64 lowercase hex digits, got {self.model_sha256!r}"
            )


@dataclass(frozen=True)
class AlarmEvent:
    """One logged alarm event; ``utc_time`` is ISO-8601 with a UTC offset."""

    utc_time: str
    t_s: float
    kind: str
    priority: str
    value: float | None
    threshold: float | None
    model_sha256: str
    message: str

    def __post_init__(self) -> None:
        try:
            stamp = datetime.fromisoformat(self.utc_time)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"utc_time must be ISO-8601, got {self.utc_time!r}") from exc
        if stamp.tzinfo is None:
            raise ValueError(f"utc_time must carry a timezone, got {self.utc_time!r}")
        if not math.isfinite(self.t_s):
            raise ValueError(f"t_s must be finite, got {self.t_s!r}")
        object.__setattr__(self, "kind", AlarmEventKind(self.kind).value)
        object.__setattr__(self, "priority", AlarmPriority(self.priority).value)
        for name in ("value", "threshold"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(number):
                raise ValueError(f"{name} must be finite or None, got {number!r}")
        if not self.message:
            raise ValueError("an AlarmEvent needs a message")


@dataclass(frozen=True)
class AlarmState:
    """What the monitor shows and sounds at media time ``t_s``."""

    t_s: float
    pain_priority: str
    active: bool
    latched: bool
    acknowledged: bool
    audio_active: bool
    audio_paused_remaining_s: float | None
    last_trigger_t_s: float | None
    last_trigger_utc: str | None
    technical_conditions: tuple[str, ...]
    output_unknown: bool
    new_events: tuple[AlarmEvent, ...]
    pain_level: float | None = None
    #: the pain priority an onset/escalation timer is counting towards (None: nothing
    #: pending) and the seconds until it is raised if the condition keeps holding
    pending_priority: str | None = None
    pending_in_s: float | None = None
    #: active :class:`SystemCondition` alarms (e.g. CENTRAL_UNREACHABLE); the pain output
    #: stays known under them, so they are kept apart from ``technical_conditions``
    system_conditions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        priority = AlarmPriority(self.pain_priority)
        if priority is AlarmPriority.TECHNICAL:
            raise ValueError("pain_priority cannot be 'technical'; see technical_conditions")
        object.__setattr__(self, "pain_priority", priority.value)
        if (self.active or self.latched) != (priority is not AlarmPriority.NONE):
            raise ValueError(
                "pain_priority must be none exactly when no alarm is active or latched"
            )
        if self.latched and priority is not AlarmPriority.HIGH:
            raise ValueError("only a HIGH alarm latches")
        if self.acknowledged and not self.active:
            raise ValueError("only an active alarm can be acknowledged")
        remaining = self.audio_paused_remaining_s
        if remaining is not None and not (math.isfinite(remaining) and remaining > 0):
            raise ValueError(f"audio_paused_remaining_s must be > 0 or None, got {remaining!r}")
        for name in self.technical_conditions:
            TechnicalCondition(name)
        for name in self.system_conditions:
            SystemCondition(name)
        if self.output_unknown != (self.pain_level is None):
            raise ValueError("output_unknown must be set exactly when pain_level is None")
        self._check_pending(priority)

    def _check_pending(self, shown: AlarmPriority) -> None:
        if (self.pending_priority is None) != (self.pending_in_s is None):
            raise ValueError("pending_priority and pending_in_s are given together or not at all")
        if self.pending_priority is None:
            return
        pending = AlarmPriority(self.pending_priority)
        if pending not in (AlarmPriority.MEDIUM, AlarmPriority.HIGH):
            raise ValueError(f"only a MEDIUM or HIGH alarm can be pending, got {pending.value!r}")
        object.__setattr__(self, "pending_priority", pending.value)
        remaining = self.pending_in_s
        if not (isinstance(remaining, int | float) and math.isfinite(remaining) and remaining > 0):
            raise ValueError(f"pending_in_s must be > 0 s, got {remaining!r}")
        if self.output_unknown:
            raise ValueError("nothing can be pending while the pain output is unknown")
        if self.active and _PAIN_RANK[pending] <= _PAIN_RANK[shown]:
            raise ValueError(
                f"a pending {pending.value} alarm must rank above the active {shown.value} one"
            )


class AlarmTally:
    """Alarm counts as a session summary reports them: episodes, not onsets plus escalations.

    A pain episode runs from its onset to its clear; a MEDIUM -> HIGH escalation inside
    it is counted apart. An alarm active when the session started counts once.
    """

    def __init__(self) -> None:
        self.pain_episodes = 0
        self.escalations = 0
        self.technical = 0

    def add(self, event: AlarmEvent) -> None:
        """Count one logged event (kinds that open nothing are ignored)."""
        kind = AlarmEventKind(event.kind)
        if kind is AlarmEventKind.ONSET:
            self.pain_episodes += 1
        elif kind is AlarmEventKind.ESCALATION:
            self.escalations += 1
        elif kind is AlarmEventKind.TECHNICAL_ONSET:
            self.technical += 1
        elif kind is AlarmEventKind.ACTIVE_AT_SESSION_START:
            if event.priority == AlarmPriority.TECHNICAL:
                self.technical += 1
            else:
                self.pain_episodes += 1

    def pain_text(self) -> str:
        """'pain alarm episodes: 1 (1 escalation to HIGH)'."""
        return pain_episodes_text(self.pain_episodes, self.escalations)


def pain_episodes_text(episodes: int, escalations: int) -> str:
    """'pain alarm episodes: 1 (1 escalation to HIGH)'; escalations are not extra alarms."""
    text = f"pain alarm episodes: {episodes}"
    if escalations:
        text += f" ({escalations} escalation{'' if escalations == 1 else 's'} to HIGH)"
    return text


class AlarmManager:
    """Pain and technical alarm state machine driven by ``update(t_s, level, condition)``."""

    def __init__(
        self,
        settings: AlarmSettings | None = None,
        utc_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings if settings is not None else AlarmSettings()
        self._utc_clock = utc_clock
        self._events: list[AlarmEvent] = []
        self._pending: list[AlarmEvent] = []
        self._last_t_s: float | None = None
        self._last_level: float | None = None
        # Pain episode.
        self._episode = AlarmPriority.NONE
        self._acknowledged = False
        self._latched = False
        self._last_trigger_t_s: float | None = None
        self._last_trigger_utc: str | None = None
        # When the open episode was raised (its first onset, before any escalation).
        self._episode_onset_t_s: float | None = None
        self._episode_onset_utc: str | None = None
        # Timers, in seconds of valid-level time; None = condition not holding.
        self._last_valid_t_s: float | None = None
        self._unknown_since_valid = False  # an unknown stretch since the last valid level
        self._medium_held_s: float | None = None
        self._high_held_s: float | None = None
        self._below_held_s: float | None = None
        self._since_ack_s: float | None = None
        # Audio pause.
        self._pause_until_t_s: float | None = None
        self._pause_started_at_high = False
        # Technical condition.
        # The condition shown (when active) or waiting for its delay, and since when it holds.
        self._condition: TechnicalCondition | None = None
        self._condition_since_t_s: float | None = None
        # The whole unknown stretch: when it began and how many frames each condition had.
        self._unknown_since_t_s: float | None = None
        self._stretch_frames: dict[TechnicalCondition, int] = {}
        # Another condition while one is shown: it takes over once it held for its delay.
        self._challenger: TechnicalCondition | None = None
        self._challenger_since_t_s: float | None = None
        self._technical_active = False
        self._technical_onset_t_s: float | None = None
        self._technical_onset_utc: str | None = None
        # System conditions: condition -> (onset t_s, onset UTC).
        self._system: dict[SystemCondition, tuple[float, str]] = {}

    @property
    def events(self) -> tuple[AlarmEvent, ...]:
        """Every event since construction, oldest first."""
        return tuple(self._events)

    # -- public operations -------------------------------------------------------------------

    def update(
        self,
        t_s: float,
        pain_level_smoothed: float | None,
        technical_condition: TechnicalCondition | str | None = None,
    ) -> AlarmState:
        """Advance to ``t_s`` with the smoothed level (None = unknown) and any technical alarm.

        Under OUT_OF_DOMAIN a level is the AU estimate's, and counts only when the
        ``au_alarms_out_of_domain`` setting is on; under every other condition it is ignored.
        """
        self._advance_clock(t_s)
        level = self._check_level(pain_level_smoothed)
        condition = None if technical_condition is None else self._parse(technical_condition)
        self._update_technical(t_s, condition)

        au_stands_in = (
            condition is TechnicalCondition.OUT_OF_DOMAIN and self.settings.au_alarms_out_of_domain
        )
        if level is not None and (condition is None or au_stands_in):
            self._update_pain(t_s, level)
            self._last_level = level
        else:
            # Frozen: the unknown stretch must not count towards onset, clear or reminder.
            self._unknown_since_valid = True
            self._last_level = None
        return self._state(t_s)

    def acknowledge(self, t_s: float) -> AlarmState:
        """Operator acknowledgement: silences the active alarm, removes a latched HIGH."""
        self._advance_clock(t_s)
        level = self._last_level
        if self._latched or (self._episode is not AlarmPriority.NONE and not self._acknowledged):
            shown = self._shown_priority()
            parts = []
            if self._latched:
                parts.append("latched HIGH alarm removed")
                self._latched = False
            if self._episode is not AlarmPriority.NONE and not self._acknowledged:
                self._acknowledged = True
                self._since_ack_s = 0.0
                parts.append(
                    f"{self._episode.value.upper()} alarm acknowledged; reminder in "
                    f"{self.settings.reminder_interval_s:g} s if pain persists"
                )
            self._emit(t_s, AlarmEventKind.ACKNOWLEDGE, shown, level, None, "; ".join(parts))
        else:
            self._emit(
                t_s,
                AlarmEventKind.ACKNOWLEDGE,
                self._shown_priority(),
                level,
                None,
                "acknowledge pressed with no unacknowledged alarm",
            )
        return self._state(t_s)

    def audio_pause(self, t_s: float, duration_s: float | None = None) -> AlarmState:
        """Silence pain alarm audio for ``duration_s`` (default audio_pause_s, at most 180 s)."""
        duration = self.settings.audio_pause_s if duration_s is None else float(duration_s)
        if not (math.isfinite(duration) and 0.0 < duration <= MAX_AUDIO_PAUSE_S):
            raise ValueError(
                f"audio pause must last more than 0 and at most {MAX_AUDIO_PAUSE_S:g} s, "
                f"got {duration:g} s"
            )
        self._advance_clock(t_s)
        self._pause_until_t_s = t_s + duration
        self._pause_started_at_high = self._shown_priority() is AlarmPriority.HIGH
        self._emit(
            t_s,
            AlarmEventKind.AUDIO_PAUSE,
            self._shown_priority(),
            self._last_level,
            None,
            f"alarm audio paused for {duration:g} s",
        )
        return self._state(t_s)

    def set_system_condition(
        self, t_s: float, condition: SystemCondition | str, active: bool
    ) -> AlarmState:
        """Raise or clear a system technical alarm at ``t_s`` (logged; no condition delay:
        its producer already waited). The pain output and pain alarms carry on as before."""
        self._advance_clock(t_s)
        try:
            name = SystemCondition(condition)
        except ValueError:
            names = ", ".join(c.value for c in SystemCondition)
            raise ValueError(
                f"unknown system condition {condition!r}; use one of {names}"
            ) from None
        text = SYSTEM_CONDITION_TEXT[name]
        if active and name not in self._system:
            event = self._emit(
                t_s,
                AlarmEventKind.TECHNICAL_ONSET,
                AlarmPriority.TECHNICAL,
                None,
                None,
                f"technical alarm {name.value}: {text}; pain monitoring goes on at the bed",
            )
            self._system[name] = (float(t_s), event.utc_time)
        elif not active and name in self._system:
            del self._system[name]
            self._technical_clear(t_s, f"technical alarm {name.value} cleared")
        return self._state(t_s)

    def change_settings(self, t_s: float, new_settings: AlarmSettings) -> AlarmState:
        """Apply new settings from ``t_s`` on and log what changed."""
        if not isinstance(new_settings, AlarmSettings):
            raise TypeError(f"expected AlarmSettings, got {type(new_settings).__name__}")
        self._advance_clock(t_s)
        old = self.settings
        changes = [
            f"{field.name} {getattr(old, field.name)!r} -> {getattr(new_settings, field.name)!r}"
            for field in dataclasses.fields(AlarmSettings)
            if getattr(old, field.name) != getattr(new_settings, field.name)
        ]
        self.settings = new_settings
        # The running timers measured against the old thresholds; start them afresh.
        self._medium_held_s = self._high_held_s = self._below_held_s = None
        self._emit(
            t_s,
            AlarmEventKind.SETTINGS_CHANGE,
            AlarmPriority.NONE,
            None,
            None,
            "settings changed: " + ("; ".join(changes) if changes else "no difference"),
        )
        return self._state(t_s)

    def active_alarm_events(self) -> tuple[AlarmEvent, ...]:
        """One ``active_at_session_start`` event per alarm active now (pain, then technical).

        For a session attached mid-alarm: the events are returned, not delivered through
        ``new_events`` (nothing changed in the alarm state), and carry the original onset
        time in their message.
        """
        t_s = 0.0 if self._last_t_s is None else self._last_t_s
        kind = AlarmEventKind.ACTIVE_AT_SESSION_START
        events = []
        shown = self._shown_priority()
        if shown is not AlarmPriority.NONE:
            if self._episode is not AlarmPriority.NONE:
                onset = _onset_text(self._episode_onset_utc, self._episode_onset_t_s)
                message = f"{self._episode.value.upper()} pain alarm active at session start"
                message += f" (raised {onset}"
                if self._last_trigger_t_s != self._episode_onset_t_s:
                    escalated = _onset_text(self._last_trigger_utc, self._last_trigger_t_s)
                    message += f", escalated to HIGH {escalated}"
                message += ")"
                if self._acknowledged:
                    message += "; acknowledged"
                if self._latched:
                    message += "; an earlier HIGH alarm is latched until acknowledged"
                threshold = self._threshold()
            else:
                onset = _onset_text(self._last_trigger_utc, self._last_trigger_t_s)
                message = (
                    f"latched HIGH pain alarm active at session start (raised {onset}); "
                    "latched until acknowledged"
                )
                threshold = self.settings.high_threshold
            events.append(self._make_event(t_s, kind, shown, self._last_level, threshold, message))
        if self._condition is not None and self._technical_active:
            onset = _onset_text(self._technical_onset_utc, self._technical_onset_t_s)
            message = (
                f"technical alarm {self._condition.value} active at session start "
                f"(raised {onset}); pain output unknown"
            )
            events.append(self._make_event(t_s, kind, AlarmPriority.TECHNICAL, None, None, message))
        for name, (onset_t_s, onset_utc) in sorted(self._system.items()):
            onset = _onset_text(onset_utc, onset_t_s)
            message = (
                f"technical alarm {name.value} active at session start (raised {onset}): "
                f"{SYSTEM_CONDITION_TEXT[name]}"
            )
            events.append(self._make_event(t_s, kind, AlarmPriority.TECHNICAL, None, None, message))
        for event in events:
            log.info("alarm %s at t=%.2f s: %s", kind.value, t_s, event.message)
        return tuple(events)

    # -- internals ---------------------------------------------------------------------------

    def _advance_clock(self, t_s: float) -> None:
        t_s = next_time(t_s, self._last_t_s, "start a new AlarmManager for a new source")
        self._last_t_s = t_s
        if self._pause_until_t_s is not None and t_s >= self._pause_until_t_s:
            self._end_pause(t_s, "audio pause elapsed")

    @staticmethod
    def _check_level(level: float | None) -> float | None:
        if level is None:
            return None
        value = float(level)
        if not (math.isfinite(value) and 0.0 <= value <= MAX_LEVEL):
            raise ValueError(
                f"smoothed pain level must lie in 0..{MAX_LEVEL:g} or be None, got {level!r}"
            )
        return value

    @staticmethod
    def _parse(condition: TechnicalCondition | str) -> TechnicalCondition:
        try:
            return TechnicalCondition(condition)
        except ValueError:
            names = ", ".join(c.value for c in TechnicalCondition)
            raise ValueError(
                f"unknown technical condition {condition!r}; use one of {names}"
            ) from None

    def _update_technical(self, t_s: float, condition: TechnicalCondition | None) -> None:
        if condition is None:
            if self._condition is not None and self._technical_active:
                self._technical_clear(t_s, f"technical alarm {self._condition.value} cleared")
            self._condition = self._condition_since_t_s = self._unknown_since_t_s = None
            self._challenger = self._challenger_since_t_s = None
            self._stretch_frames = {}
            self._technical_active = False
            return
        if self._unknown_since_t_s is None:
            self._unknown_since_t_s = t_s
        self._stretch_frames[condition] = self._stretch_frames.get(condition, 0) + 1
        if self._technical_active:
            assert self._condition is not None
            if condition == self._condition:
                self._challenger = self._challenger_since_t_s = None
                return
            if condition != self._challenger:
                self._challenger, self._challenger_since_t_s = condition, t_s
            assert self._challenger_since_t_s is not None
            if not self._delay_passed(condition, t_s - self._challenger_since_t_s, switching=True):
                return
            self._technical_clear(
                t_s, f"technical alarm {self._condition.value} cleared; {condition.value} follows"
            )
            self._condition, self._condition_since_t_s = condition, self._challenger_since_t_s
            self._challenger = self._challenger_since_t_s = None
            self._raise_technical(t_s, condition, changing=False, switching=True)
            return
        if condition != self._condition:
            self._condition, self._condition_since_t_s = condition, t_s
        assert self._condition_since_t_s is not None
        if self._delay_passed(condition, t_s - self._condition_since_t_s):
            self._raise_technical(t_s, condition, changing=False)
            return
        # Changing conditions: the one on most frames (the first seen of a tie) is raised
        # once the whole stretch has lasted its delay.
        most = max(self._stretch_frames, key=self._stretch_frames.__getitem__)
        if self._delay_passed(most, t_s - self._unknown_since_t_s):
            self._condition, self._condition_since_t_s = most, self._unknown_since_t_s
            self._raise_technical(t_s, most, changing=True)

    def _technical_clear(self, t_s: float, message: str) -> None:
        self._emit(
            t_s, AlarmEventKind.TECHNICAL_CLEAR, AlarmPriority.TECHNICAL, None, None, message
        )

    def _delay_passed(
        self, condition: TechnicalCondition, held_s: float, switching: bool = False
    ) -> bool:
        """Whether ``condition`` holding for ``held_s`` raises its technical alarm, or, with
        ``switching``, replaces the one shown. NO_FACE's longer delay keeps a brief face loss
        from posting an alarm at all; once one is shown, it replaces it after the
        technical delay, as LOW_QUALITY does."""
        if condition is TechnicalCondition.NO_FACE and not switching:
            return held_s > self.settings.no_face_delay_s
        if condition in _DELAYED_CONDITIONS or condition is TechnicalCondition.NO_FACE:
            # Frame stamps are sums of floats: 25/24 - 1/24 s must count as the 1 s it is.
            return held_s >= self.settings.technical_delay_s - _TIME_TOLERANCE_S
        return True

    def _raise_technical(
        self, t_s: float, condition: TechnicalCondition, changing: bool, switching: bool = False
    ) -> None:
        """Raise ``condition``'s technical alarm; its message says what held how long
        (``switching``: it replaced a shown one after the technical delay)."""
        threshold: float | None = None
        if condition is TechnicalCondition.NO_FACE and switching:
            threshold = self.settings.technical_delay_s
            message = f"technical alarm NO_FACE: no face for {threshold:g} s"
        elif condition is TechnicalCondition.NO_FACE:
            threshold = self.settings.no_face_delay_s
            message = f"technical alarm NO_FACE: no face for more than {threshold:g} s"
        elif condition in _DELAYED_CONDITIONS:
            threshold = self.settings.technical_delay_s
            message = f"technical alarm {condition.value} for {threshold:g} s"
        else:
            message = f"technical alarm {condition.value}"
        if changing:
            assert self._unknown_since_t_s is not None
            seen = ", ".join(c.value for c in self._stretch_frames)
            message = (
                f"technical alarm {condition.value}: pain output unknown for "
                f"{t_s - self._unknown_since_t_s:.1f} s under changing conditions ({seen})"
            )
        self._technical_active = True
        event = self._emit(
            t_s,
            AlarmEventKind.TECHNICAL_ONSET,
            AlarmPriority.TECHNICAL,
            None,
            threshold,
            message + "; pain output unknown, pain alarms frozen",
        )
        self._technical_onset_t_s, self._technical_onset_utc = t_s, event.utc_time

    def _update_pain(self, t_s: float, level: float) -> None:
        s = self.settings
        gap_s = None if self._last_valid_t_s is None else t_s - self._last_valid_t_s
        dt_s = 0.0 if gap_s is None else gap_s
        if gap_s is not None and (self._unknown_since_valid or gap_s > MAX_LEVEL_GAP_S):
            dt_s = 0.0  # the unknown stretch never counts
            if gap_s > STALE_EVIDENCE_S and any(
                held is not None
                for held in (self._medium_held_s, self._high_held_s, self._below_held_s)
            ):
                log.info(
                    "pain level known again after %.0f s unknown: onset and clear timers "
                    "start again", gap_s,
                )  # fmt: skip
                self._medium_held_s = self._high_held_s = self._below_held_s = None
        self._last_valid_t_s = t_s
        self._unknown_since_valid = False

        def held(previous: float | None, holds: bool) -> float | None:
            if not holds:
                return None
            return 0.0 if previous is None else previous + dt_s

        self._medium_held_s = held(self._medium_held_s, level >= s.medium_threshold)
        self._high_held_s = held(self._high_held_s, level >= s.high_threshold)
        clear_below = s.medium_threshold - s.hysteresis
        self._below_held_s = held(self._below_held_s, level < clear_below)
        high_due = self._high_held_s is not None and self._high_held_s >= s.alarm_delay_s

        if self._episode is AlarmPriority.NONE:
            if self._medium_held_s is not None and self._medium_held_s >= s.alarm_delay_s:
                priority = AlarmPriority.HIGH if high_due else AlarmPriority.MEDIUM
                self._raise(t_s, level, priority, AlarmEventKind.ONSET)
            return

        if self._episode is AlarmPriority.MEDIUM and high_due:
            self._raise(t_s, level, AlarmPriority.HIGH, AlarmEventKind.ESCALATION)
            return

        if self._below_held_s is not None and self._below_held_s >= s.clear_hold_s:
            self._clear(t_s, level, clear_below)
            return

        if self._acknowledged and self._since_ack_s is not None:
            self._since_ack_s += dt_s
            if self._since_ack_s >= s.reminder_interval_s:
                self._acknowledged = False
                self._since_ack_s = None
                self._emit(
                    t_s,
                    AlarmEventKind.REMINDER,
                    self._episode,
                    level,
                    self._threshold(),
                    f"reminder: {self._episode.value.upper()} pain alarm still present "
                    f"{s.reminder_interval_s:g} s after acknowledgement",
                )

    def _raise(
        self, t_s: float, level: float, priority: AlarmPriority, kind: AlarmEventKind
    ) -> None:
        self._episode = priority
        self._acknowledged = False
        self._since_ack_s = None
        self._below_held_s = None
        threshold = self._threshold()
        what = (
            f"{priority.value.upper()} pain alarm raised"
            if kind is AlarmEventKind.ONSET
            else f"pain alarm escalated to {priority.value.upper()}"
        )
        event = self._emit(
            t_s,
            kind,
            priority,
            level,
            threshold,
            f"{what}: level {level:.2f} >= {threshold:g} for {self.settings.alarm_delay_s:g} s",
        )
        self._last_trigger_t_s = t_s
        self._last_trigger_utc = event.utc_time
        if kind is AlarmEventKind.ONSET:
            self._episode_onset_t_s, self._episode_onset_utc = t_s, event.utc_time
        if (
            priority is AlarmPriority.HIGH
            and self._pause_until_t_s is not None
            and not self._pause_started_at_high
        ):
            self._end_pause(t_s, "audio pause broken through by a HIGH pain alarm")

    def _clear(self, t_s: float, level: float, clear_below: float) -> None:
        priority = self._episode
        held_for = f"level {level:.2f} below {clear_below:g} for {self.settings.clear_hold_s:g} s"
        if priority is AlarmPriority.HIGH and not self._acknowledged:
            self._latched = True
            self._emit(
                t_s,
                AlarmEventKind.LATCH,
                priority,
                level,
                clear_below,
                f"HIGH pain condition cleared ({held_for}); alarm latched until acknowledged",
            )
        else:
            self._emit(
                t_s,
                AlarmEventKind.CLEAR,
                priority,
                level,
                clear_below,
                f"{priority.value.upper()} pain alarm cleared ({held_for})",
            )
        self._episode = AlarmPriority.NONE
        self._acknowledged = False
        self._since_ack_s = None
        self._below_held_s = None

    def _end_pause(self, t_s: float, reason: str) -> None:
        self._pause_until_t_s = None
        self._pause_started_at_high = False
        self._emit(t_s, AlarmEventKind.AUDIO_PAUSE_END, self._shown_priority(), None, None, reason)

    def _threshold(self) -> float | None:
        if self._episode is AlarmPriority.HIGH:
            return self.settings.high_threshold
        if self._episode is AlarmPriority.MEDIUM:
            return self.settings.medium_threshold
        return None

    def _shown_priority(self) -> AlarmPriority:
        if self._latched:
            return AlarmPriority.HIGH
        return self._episode

    def _utc_iso(self) -> str:
        stamp = self._utc_clock()
        if stamp.tzinfo is None:
            raise ValueError("utc_clock must return a timezone-aware datetime")
        return stamp.astimezone(UTC).isoformat()

    def _make_event(
        self,
        t_s: float,
        kind: AlarmEventKind,
        priority: AlarmPriority,
        value: float | None,
        threshold: float | None,
        message: str,
    ) -> AlarmEvent:
        return AlarmEvent(
            utc_time=self._utc_iso(),
            t_s=float(t_s),
            kind=kind.value,
            priority=priority.value,
            value=value,
            threshold=threshold,
            model_sha256=self.settings.model_sha256,
            message=message,
        )

    def _emit(
        self,
        t_s: float,
        kind: AlarmEventKind,
        priority: AlarmPriority,
        value: float | None,
        threshold: float | None,
        message: str,
    ) -> AlarmEvent:
        event = self._make_event(t_s, kind, priority, value, threshold, message)
        self._events.append(event)
        self._pending.append(event)
        log_level = (
            logging.WARNING
            if kind in (AlarmEventKind.ONSET, AlarmEventKind.ESCALATION)
            else logging.INFO
        )
        log.log(log_level, "alarm %s at t=%.2f s: %s", kind.value, t_s, message)
        return event

    def _pending_alarm(self) -> tuple[AlarmPriority | None, float | None]:
        """The priority an onset/escalation timer counts towards, and the seconds left."""
        if self._last_level is None:
            return None, None  # the timers are frozen: nothing counts down
        delay_s = self.settings.alarm_delay_s
        high, medium = self._high_held_s, self._medium_held_s
        if self._episode is AlarmPriority.MEDIUM and high is not None:
            return AlarmPriority.HIGH, delay_s - high
        if self._episode is not AlarmPriority.NONE or medium is None:
            return None, None
        # The onset comes when the medium timer is due; it is HIGH only if the high timer
        # (which started no earlier) is due by then too.
        if high is not None and high >= medium:
            return AlarmPriority.HIGH, delay_s - high
        return AlarmPriority.MEDIUM, delay_s - medium

    def _state(self, t_s: float) -> AlarmState:
        pending, pending_in_s = self._pending_alarm()
        if pending_in_s is not None and pending_in_s <= 0:
            pending = pending_in_s = None  # due on the next valid level: not a countdown
        shown = self._shown_priority()
        active = self._episode is not AlarmPriority.NONE
        if active and pending is not None and _PAIN_RANK[pending] <= _PAIN_RANK[shown]:
            # A MEDIUM episode escalating while an earlier HIGH is latched: the header
            # already shows HIGH, so "HIGH in 4 s" would announce nothing new (the
            # escalation itself is still raised and logged when due).
            pending = pending_in_s = None
        sounding = (active and not self._acknowledged) or self._latched
        paused = self._pause_until_t_s is not None
        remaining = self._pause_until_t_s - t_s if self._pause_until_t_s is not None else None
        new_events = tuple(self._pending)
        self._pending.clear()
        technical = (self._condition.value,) if self._condition and self._technical_active else ()
        return AlarmState(
            t_s=float(t_s),
            pain_priority=shown.value,
            active=active,
            latched=self._latched,
            acknowledged=active and self._acknowledged,
            audio_active=sounding and not paused,
            audio_paused_remaining_s=remaining,
            last_trigger_t_s=self._last_trigger_t_s if shown is not AlarmPriority.NONE else None,
            last_trigger_utc=self._last_trigger_utc if shown is not AlarmPriority.NONE else None,
            technical_conditions=technical,
            output_unknown=self._last_level is None,
            new_events=new_events,
            pain_level=self._last_level,
            pending_priority=None if pending is None else pending.value,
            pending_in_s=pending_in_s,
            system_conditions=tuple(sorted(self._system)),
        )


def _onset_text(utc_time: str | None, t_s: float | None) -> str:
    """When an alarm was raised, as the session-start event message says it."""
    if t_s is None:
        return "at an unknown time"
    return f"at {utc_time or 'unknown UTC'} (t {t_s:.2f} s)"
