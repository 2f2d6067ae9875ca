"""The bed side of the ward bus: observations, alarm events the station must confirm, commands.

:class:`BedPublisher` publishes what one bedside engine produces under
``painmon/v1/<ward>/<bed>/…`` and listens to its own ``cmd/#``. The bed stays the primary
alarm: the bus only reports, and :class:`DeliveryTracker` makes the report trustworthy.

Design choices (the contract left these open):

* Threads: paho's network thread only decodes, queues and publishes replies/status; the
  engine is touched only from the engine thread, through :meth:`BedPublisher.service`
  (the monitor's ``on_poll`` hook) or the callables of :meth:`BedPublisher.poll`.
* Delivery: every alarm event is kept until the station's receipt names its uuid and is
  re-sent every 1 s while the link is up (not while it is down: paho would only pile up
  copies; every pending event goes out again on reconnect). The bed raises its own
  technical alarm CENTRAL_UNREACHABLE while any event waited more than 5 s for its
  receipt, and also while the broker has been out of reach for more than 5 s (a bed
  that cannot reach the broker cannot reach the station; without this a quiet patient
  would hide a dead link until the first alarm). It clears once the link is up and every
  pending event, its own start included, has its receipt.
* Bounded memory: at most :data:`MAX_PENDING_EVENTS` events wait for receipts; beyond it
  the oldest is dropped (logged, counted in ``DeliveryTracker.dropped``). By then
  CENTRAL_UNREACHABLE has long been raised, and the retained ``alarm/state`` tells a
  returning station which alarms are active.
* Events published: onset -> start, escalation -> escalate, acknowledge -> acknowledge,
  clear -> end, technical onset/clear -> start/end. A latched HIGH stays active (no
  event: the retained state says ``latched``) until acknowledged; if an acknowledge
  removes the last pain alarm an ``end`` follows it. Reminders, audio pause and
  settings changes are not events on the bus; the retained ``alarm/state`` shows them.
  Technical alarms have priority ``low`` (visual only, IEC 60601-1-8).
* Alarm identity: every event has its own ``uuid`` (receipts, de-duplication) and the
  ``alert_id`` of the alarm it belongs to, one uuid for every phase of that alarm (the IHE
  ACM alert identifier the HL7 gateway puts in OBR-3). A pain alarm runs from its start to
  its end while the bed shows it: escalate and acknowledge keep its id, and so does a new
  onset while a latched HIGH is still shown (the bed never stopped showing that alarm);
  the next start after an end is a new alarm. Each technical or system condition is its
  own alarm, from its start to its end.
* Obs: at most ``obs_hz`` per second of wall time, the newest result wins; scheduled on
  a fixed grid so that 25 fps frames give 10 Hz, not 8.3 Hz.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from painmon.core.live.alarms import (
    AlarmEvent,
    AlarmEventKind,
    AlarmPriority,
    AlarmState,
    SystemCondition,
)
from painmon.core.live.display import reading_band
from painmon.core.live.engine import EngineResult
from painmon.core.util.errors import InvalidInputError
from painmon.core.ward import topics
from painmon.core.ward.messages import (
    PAIN_CONDITION,
    AlarmEntry,
    AlarmEventMessage,
    AlarmStateMessage,
    CommandMessage,
    CommandReplyMessage,
    ObsMessage,
    ReceiptMessage,
    StatusMessage,
    decode,
    new_uuid,
    utc_iso,
)

if TYPE_CHECKING:  # paho is imported only when a bed connects
    from painmon.core.ward.client import BrokerAddress
    from painmon.core.ward.security import TlsFiles

log = logging.getLogger(__name__)

RESEND_S = 1.0
UNREACHABLE_AFTER_S = 5.0
MAX_PENDING_EVENTS = 1000
MIN_OBS_HZ, MAX_OBS_HZ = 1.0, 10.0
REMOTE_ACK_OFF_REASON = "remote acknowledgement is off at this bed"
APPLIED = "applied"
CENTRAL_UNREACHABLE = SystemCondition.CENTRAL_UNREACHABLE.value
# How long stop() waits for the offline status to leave.
_STOP_WAIT_S = 2.0
_MAX_MESSAGE_CHARS = 500
_TECHNICAL_NAME = re.compile(r"^technical alarm ([A-Z][A-Z0-9_]*)")

T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    item: T
    first_sent_s: float
    last_sent_s: float
    sends: int = 1


class DeliveryTracker(Generic[T]):
    """Alarm events sent and not yet receipted; single-threaded, injectable clock.

    ``add`` when an event is first sent, ``receipt`` when the station confirms it,
    ``due()`` for the events to send again (every ``resend_s``); ``unreachable`` while
    any event has waited more than ``unreachable_after_s`` for its receipt.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        resend_s: float = RESEND_S,
        unreachable_after_s: float = UNREACHABLE_AFTER_S,
        max_pending: int = MAX_PENDING_EVENTS,
    ) -> None:
        for name, value in (("resend_s", resend_s), ("unreachable_after_s", unreachable_after_s)):
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"{name} must be > 0 s, got {value!r}")
        if max_pending < 1:
            raise InvalidInputError(f"max_pending must be >= 1, got {max_pending!r}")
        self._clock = clock
        self.resend_s = float(resend_s)
        self.unreachable_after_s = float(unreachable_after_s)
        self.max_pending = int(max_pending)
        # Oldest first: the first entry decides ``unreachable``.
        self._pending: OrderedDict[str, _Pending[T]] = OrderedDict()
        self.dropped = 0
        self.receipted = 0

    def add(self, uuid: str, item: T) -> None:
        """``item`` (what to send again) was just sent under ``uuid``."""
        now_s = self._clock()
        if uuid in self._pending:
            return
        if len(self._pending) >= self.max_pending:
            old_uuid, _ = self._pending.popitem(last=False)
            self.dropped += 1
            log.warning(
                "more than %d alarm events wait for the central station's receipt: the oldest "
                "(%s) is no longer re-sent (%d dropped so far)",
                self.max_pending,
                old_uuid,
                self.dropped,
            )
        self._pending[uuid] = _Pending(item, now_s, now_s)

    def receipt(self, uuid: str) -> bool:
        """The station confirmed ``uuid``; False when it was not pending (a duplicate)."""
        if self._pending.pop(uuid, None) is None:
            return False
        self.receipted += 1
        return True

    def due(self, *, sent_before_s: float | None = None) -> list[T]:
        """Items to send again now (each is then counted as sent): those last sent
        ``resend_s`` ago, and every one last sent before ``sent_before_s`` (a reconnect)."""
        now_s = self._clock()
        out = []
        for entry in self._pending.values():
            stale = sent_before_s is not None and entry.last_sent_s < sent_before_s
            if stale or now_s - entry.last_sent_s >= self.resend_s:
                entry.last_sent_s = now_s
                entry.sends += 1
                out.append(entry.item)
        return out

    @property
    def pending(self) -> int:
        """How many events wait for a receipt."""
        return len(self._pending)

    def waiting_s(self) -> float:
        """How long the oldest pending event has waited (0 when none)."""
        if not self._pending:
            return 0.0
        oldest = next(iter(self._pending.values()))
        return self._clock() - oldest.first_sent_s

    @property
    def unreachable(self) -> bool:
        """Some event waited more than ``unreachable_after_s`` for its receipt."""
        return self.waiting_s() > self.unreachable_after_s

    def sends(self, uuid: str) -> int:
        """How many times ``uuid`` was sent (0: not pending)."""
        entry = self._pending.get(uuid)
        return 0 if entry is None else entry.sends


def bus_time(iso: str | None, fallback: str) -> str:
    """An AlarmManager ISO time (``+00:00``) in the bus format (``Z``, ms); ``fallback`` if None."""
    if not iso:
        return fallback
    return utc_iso(datetime.fromisoformat(iso))


def bus_priority(priority: str) -> str:
    """Our alarm priority on the bus: technical alarms are low priority (visual only)."""
    value = AlarmPriority(priority)
    return "low" if value is AlarmPriority.TECHNICAL else value.value


_PHASES = {
    AlarmEventKind.ONSET: ("pain", "start"),
    AlarmEventKind.ESCALATION: ("pain", "escalate"),
    AlarmEventKind.ACKNOWLEDGE: ("pain", "acknowledge"),
    AlarmEventKind.CLEAR: ("pain", "end"),
    AlarmEventKind.TECHNICAL_ONSET: ("technical", "start"),
    AlarmEventKind.TECHNICAL_CLEAR: ("technical", "end"),
}


def event_phase(kind: str) -> tuple[str, str] | None:
    """(bus kind, phase) of an AlarmEventKind, or None when it is not sent on the bus."""
    return _PHASES.get(AlarmEventKind(kind))


class AlarmEventMapper:
    """Turns the engine's AlarmStates into bus events and the retained alarm state (pure).

    Keeps the per-bed event counter, when each technical condition began, the alert id of
    each open alarm (pain, and each technical condition) and the last alarm list
    published, so ``alarm/state`` is sent only when it changed.
    """

    def __init__(
        self,
        ward: str,
        bed: str,
        *,
        utc_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        uuid_factory: Callable[[], str] = new_uuid,
    ) -> None:
        self.ward = topics.check_label(ward, "ward")
        self.bed = topics.check_label(bed, "bed")
        self._utc_clock = utc_clock
        self._uuid = uuid_factory
        self.seq = 0
        self._pain_shown = False
        self._technical_since: dict[str, str] = {}
        # The alert id of the open pain alarm and of each open technical condition.
        self._pain_alert: str | None = None
        self._technical_alert: dict[str, str] = {}
        self._last_entries: tuple[AlarmEntry, ...] | None = None

    def map(
        self, state: AlarmState, acknowledged_by: str = "bed"
    ) -> tuple[list[AlarmEventMessage], AlarmStateMessage | None]:
        """The events of ``state.new_events`` and the new alarm state (None: unchanged)."""
        now = utc_iso(self._utc_clock())
        active_technical = list(state.technical_conditions) + list(state.system_conditions)
        events: list[AlarmEventMessage] = []
        pain_ended = False
        for event in state.new_events:
            mapped = event_phase(event.kind)
            if mapped is None:
                continue
            kind, phase = mapped
            time_text = bus_time(event.utc_time, now)
            if kind == "pain":
                condition = PAIN_CONDITION
                pain_ended = pain_ended or phase == "end"
                alert_id = self._pain_alert_id(phase)
            else:
                condition = self._technical_condition(event, active_technical)
                if phase == "start":
                    self._technical_since[condition] = time_text
                    alert_id = self._technical_alert[condition] = self._uuid()
                else:
                    self._technical_since.pop(condition, None)
                    # An end whose start this mapper never saw is an alarm of its own.
                    alert_id = self._technical_alert.pop(condition, None) or self._uuid()
            events.append(
                self._event(event, kind, condition, phase, time_text, acknowledged_by, alert_id)
            )
        shown = state.pain_priority != AlarmPriority.NONE.value
        if self._pain_shown and not shown and not pain_ended:
            # An acknowledge removed a latched HIGH: the alarm is over, say so.
            time_text = events[-1].time if events else now
            events.append(
                self._make(
                    "pain",
                    PAIN_CONDITION,
                    "none",
                    "end",
                    "pain alarm ended (latched alarm acknowledged)",
                    time_text,
                    alert_id=self._pain_alert_id("end"),
                )
            )
        self._pain_shown = shown
        if not shown:
            self._pain_alert = None  # e.g. an acknowledge pressed with no alarm shown
        entries = self._entries(state, now)
        if entries == self._last_entries:
            return events, None
        self._last_entries = entries
        return events, AlarmStateMessage(self.ward, self.bed, now, self.seq, entries)

    def _pain_alert_id(self, phase: str) -> str:
        """The alert id of the pain alarm a ``phase`` event belongs to (opened at its start,
        or at the first event this mapper sees of an alarm already running; closed at its
        end). A start while the previous alarm is still shown (latched) continues it."""
        if self._pain_alert is None or (phase == "start" and not self._pain_shown):
            self._pain_alert = self._uuid()
        alert_id = self._pain_alert
        if phase == "end":
            self._pain_alert = None
        return alert_id

    def _technical_condition(self, event: AlarmEvent, active: list[str]) -> str:
        match = _TECHNICAL_NAME.match(event.message)
        if match:
            return match.group(1)
        # Not one of ours: name the active condition it most likely concerns.
        return active[0] if active else "TECHNICAL"

    def _event(
        self,
        event: AlarmEvent,
        kind: str,
        condition: str,
        phase: str,
        time_text: str,
        acknowledged_by: str,
        alert_id: str,
    ) -> AlarmEventMessage:
        return self._make(
            kind,
            condition,
            bus_priority(event.priority),
            phase,
            event.message,
            time_text,
            by=acknowledged_by if phase == "acknowledge" else None,
            alert_id=alert_id,
        )

    def _make(
        self,
        kind: str,
        condition: str,
        priority: str,
        phase: str,
        message: str,
        time_text: str,
        by: str | None = None,
        *,
        alert_id: str,
    ) -> AlarmEventMessage:
        self.seq += 1
        return AlarmEventMessage(
            ward=self.ward,
            bed=self.bed,
            time=time_text,
            uuid=self._uuid(),
            seq=self.seq,
            kind=kind,
            condition=condition,
            priority=priority,
            phase=phase,
            message=message[:_MAX_MESSAGE_CHARS],
            acknowledged=phase == "acknowledge",
            by=by,
            alert_id=alert_id,
        )

    def _entries(self, state: AlarmState, now: str) -> tuple[AlarmEntry, ...]:
        entries = []
        if state.pain_priority != AlarmPriority.NONE.value:
            entries.append(
                AlarmEntry(
                    kind="pain",
                    condition=PAIN_CONDITION,
                    priority=state.pain_priority,
                    since=bus_time(state.last_trigger_utc, now),
                    acknowledged=state.acknowledged,
                    latched=state.latched,
                    audio_paused=state.audio_paused_remaining_s is not None,
                )
            )
        for name in list(state.technical_conditions) + list(state.system_conditions):
            since = self._technical_since.setdefault(name, now)
            entries.append(AlarmEntry("technical", name, "low", since))
        return tuple(entries)


def obs_message(ward: str, bed: str, seq: int, result: EngineResult, time_text: str) -> ObsMessage:
    """The bus observation of one engine result: the smoothed level alarms act on."""
    smoothed = result.smoothed
    state = result.alarm_state
    technical = tuple(dict.fromkeys(state.technical_conditions + state.system_conditions))
    if smoothed.pain_level is None:
        reason = result.technical_condition or smoothed.reason or "unknown"
        return ObsMessage(
            ward, bed, time_text, seq, False, None, None, None, None, technical, reason[:200]
        )
    level = min(4.0, max(0.0, float(smoothed.pain_level)))
    probs = tuple(min(1.0, max(0.0, float(x))) for x in smoothed.probs or ())
    return ObsMessage(
        ward,
        bed,
        time_text,
        seq,
        True,
        level,
        probs,
        None if smoothed.confidence is None else min(1.0, max(0.0, float(smoothed.confidence))),
        reading_band(level),
        technical,
        None,
    )


def _software() -> str:
    from painmon import __version__

    return f"painmon {__version__}"[:64]


EngineCommand = Callable[[Any, float], AlarmState]


class BedPublisher:
    """One bed on the ward bus (paho MQTT 5 through :mod:`painmon.core.ward.client`).

    Call :meth:`publish_result` and :meth:`publish_alarm_state` from the engine thread with
    what the engine produced, and :meth:`service` there regularly (the monitor's
    ``on_poll`` hook does it after every frame and at least every 0.1 s).
    """

    def __init__(
        self,
        address: BrokerAddress,
        ward: str,
        bed: str,
        *,
        obs_hz: float = 2.0,
        remote_ack: bool = False,
        pseudonym: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        clock: Callable[[], float] = time.monotonic,
        utc_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        connect: Callable[..., Any] | None = None,
    ) -> None:
        self.ward = topics.check_label(ward, "ward")
        self.bed = topics.check_label(bed, "bed")
        hz = float(obs_hz)
        if not (math.isfinite(hz) and MIN_OBS_HZ <= hz <= MAX_OBS_HZ):
            raise InvalidInputError(
                f"obs rate must lie in {MIN_OBS_HZ:g}..{MAX_OBS_HZ:g} Hz, got {obs_hz!r}"
            )
        if not isinstance(remote_ack, bool):
            raise InvalidInputError(f"remote_ack must be True or False, got {remote_ack!r}")
        self.address = address
        self.obs_hz = hz
        self.remote_ack = remote_ack
        self.pseudonym = pseudonym
        self._username, self._password, self._tls = username, password, tls
        self._clock = clock
        self._utc_clock = utc_clock
        self._connect = connect
        self.delivery: DeliveryTracker[tuple[str, bytes]] = DeliveryTracker(clock)
        self.mapper = AlarmEventMapper(self.ward, self.bed, utc_clock=utc_clock)
        self.obs_seq = 0
        self._obs_period_s = 1.0 / hz
        self._next_obs_s: float | None = None
        self._client: Any = None
        self._connected = threading.Event()
        # When the link last came up: events last sent before it go out again at once.
        self._connected_at_s: float | None = None
        # Since when the broker is out of reach (wall clock; from start()); None while connected.
        self._link_down_since: float | None = None
        self._receipts: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue[CommandMessage] = queue.SimpleQueue()
        self._alarm_state_payload: bytes | None = None
        self._unreachable_raised = False
        self._stopped = False
        self.commands_refused = 0
        self.commands_applied = 0

    # -- topics and lifecycle -----------------------------------------------------------------

    def topic(self, leaf: str) -> str:
        return topics.topic(self.ward, self.bed, leaf)

    def _status(self, state: str) -> bytes:
        return StatusMessage(
            self.ward,
            self.bed,
            utc_iso(self._utc_clock()),
            state,
            _software(),
            self.remote_ack,
            self.obs_hz,
            self.pseudonym,
        ).to_payload()

    def start(self) -> None:
        """Connect (in the background: an absent broker is retried, never fatal)."""
        if self._client is not None:
            return
        connect = self._connect
        if connect is None:
            from painmon.core.ward.client import connect_client

            connect = connect_client
        will = (self.topic(topics.STATUS), self._status("offline"), 1, True)
        self._link_down_since = self._clock()
        self._client = connect(
            self.address,
            f"painmon-bed-{self.ward}-{self.bed}",
            username=self._username,
            password=self._password,
            tls=self._tls,
            will=will,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_message=self._on_message,
            wait_s=None,
        )
        log.info(
            "ward bus: bed %s/%s connecting to %s in the background",
            self.ward,
            self.bed,
            getattr(self.address, "url", "the broker"),
        )

    def stop(self, reason: str = "stopped") -> None:
        """Publish the retained offline status, then disconnect cleanly."""
        if self._client is None or self._stopped:
            return
        self._stopped = True
        client = self._client
        try:
            if self._connected.is_set():
                info = client.publish(
                    self.topic(topics.STATUS), self._status("offline"), qos=1, retain=True
                )
                info.wait_for_publish(timeout=_STOP_WAIT_S)
                log.info("ward bus: bed %s/%s offline (%s)", self.ward, self.bed, reason)
            else:
                # The broker keeps the Last Will (offline) of a bed it knew.
                log.info("ward bus: stopped without the broker (%s)", reason)
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("ward bus: the offline status was not sent (%s)", exc)
        finally:
            client.disconnect()
            client.loop_stop()

    # -- paho's thread: decode and queue, never touch the engine ------------------------------

    def _on_connect(
        self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("ward bus: the broker refused bed %s/%s: %s", self.ward, self.bed, reason)
            return
        client.publish(self.topic(topics.STATUS), self._status("online"), qos=1, retain=True)
        for sub in topics.bed_subscriptions(self.ward, self.bed):
            client.subscribe(sub, qos=1)
        if self._alarm_state_payload is not None:
            client.publish(
                self.topic(topics.ALARM_STATE), self._alarm_state_payload, qos=1, retain=True
            )
        self._link_down_since = None
        self._connected_at_s = self._clock()
        self._connected.set()
        log.info("ward bus: bed %s/%s connected", self.ward, self.bed)

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if self._connected.is_set() and not self._stopped:
            self._link_down_since = self._clock()
            log.warning("ward bus: bed %s/%s lost the broker (%s)", self.ward, self.bed, reason)
        self._connected.clear()

    def _on_message(self, client: Any, _userdata: Any, message: Any) -> None:
        try:
            ward, bed, leaf = topics.parse_topic(message.topic)
            if (ward, bed) != (self.ward, self.bed):
                raise InvalidInputError(f"topic {message.topic!r} is not this bed's")
            decoded = decode(leaf, message.payload)
        except InvalidInputError as exc:
            log.warning("ward bus: ignored a command: %s", exc)
            return
        if isinstance(decoded, ReceiptMessage):
            self._receipts.put(decoded.uuid)
        elif isinstance(decoded, CommandMessage):
            if self.remote_ack:
                self._commands.put(decoded)
            else:
                self.commands_refused += 1
                self._reply(decoded, False, REMOTE_ACK_OFF_REASON)

    def _reply(self, command: CommandMessage, ok: bool, reason: str) -> None:
        payload = CommandReplyMessage(
            self.ward, self.bed, utc_iso(self._utc_clock()), command.cmd_id, ok, reason
        ).to_payload()
        if self._client is not None:
            self._client.publish(self.topic(topics.CMD_REPLY), payload, qos=1)

    # -- the engine thread ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def unreachable(self) -> bool:
        """An alarm event went unconfirmed > 5 s, or the broker is out of reach > 5 s."""
        if self.delivery.unreachable:
            return True
        since = self._link_down_since
        return since is not None and self._clock() - since > UNREACHABLE_AFTER_S

    def publish_result(self, result: EngineResult) -> bool:
        """Publish ``result`` as an obs if one is due (obs_hz); True when it was sent."""
        now_s = self._clock()
        if self._next_obs_s is not None and now_s < self._next_obs_s:
            return False
        # A fixed grid, but never a burst to catch up after a gap.
        base = self._next_obs_s if self._next_obs_s is not None else now_s
        if now_s - base >= self._obs_period_s:
            base = now_s
        self._next_obs_s = base + self._obs_period_s
        if not self._connected.is_set() or self._client is None:
            return False
        from painmon.core.ward.client import publish_message

        message = obs_message(self.ward, self.bed, self.obs_seq, result, utc_iso(self._utc_clock()))
        publish_message(self._client, message)  # QoS 0, Message Expiry Interval 2 s
        self.obs_seq += 1
        return True

    def publish_alarm_state(self, state: AlarmState, acknowledged_by: str = "bed") -> int:
        """Send ``state.new_events`` as alarm events (kept until receipted) and the retained
        alarm state when it changed; returns how many events were sent."""
        events, alarm_state = self.mapper.map(state, acknowledged_by)
        event_topic = self.topic(topics.ALARM_EVENT)
        for event in events:
            payload = event.to_payload()
            self.delivery.add(event.uuid, (event_topic, payload))
            self._send(event_topic, payload, retain=False)
        if alarm_state is not None:
            self._alarm_state_payload = alarm_state.to_payload()
            self._send(self.topic(topics.ALARM_STATE), self._alarm_state_payload, retain=True)
        return len(events)

    def _send(self, topic_name: str, payload: bytes, *, retain: bool) -> None:
        # While the link is down the tracker re-sends on reconnect; paho would only queue copies.
        if self._client is not None and self._connected.is_set():
            self._client.publish(topic_name, payload, qos=1, retain=retain)

    def poll(self) -> list[EngineCommand]:
        """Commands for the engine thread: call each as ``command(engine, t_s)``."""
        out: list[EngineCommand] = []
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return out
            out.append(self._acknowledge_command(command))

    def _acknowledge_command(self, command: CommandMessage) -> EngineCommand:
        def apply(engine: Any, t_s: float) -> AlarmState:
            state = engine.acknowledge(t_s)
            self.publish_alarm_state(state, acknowledged_by="station")
            self.commands_applied += 1
            self._reply(command, True, APPLIED)
            log.info("ward bus: acknowledge from station %s applied", command.station)
            return state

        return apply

    def service(self, engine: Any, t_s: float) -> list[AlarmState]:
        """The engine thread's regular call: receipts, commands, the CENTRAL_UNREACHABLE
        technical alarm and re-sends; returns the alarm states it produced."""
        while True:
            try:
                self.delivery.receipt(self._receipts.get_nowait())
            except queue.Empty:
                break
        states = [command(engine, t_s) for command in self.poll()]
        if self._unreachable_raised:
            # Cleared only once the station confirmed everything (this alarm's own start
            # included): a link that merely came back has not reached the station yet.
            unreachable = not (self.connected and self.delivery.pending == 0)
        else:
            unreachable = self.unreachable
        if unreachable != self._unreachable_raised:
            self._unreachable_raised = unreachable
            if unreachable:
                why = (
                    f"{self.delivery.pending} alarm event(s) without the station's receipt"
                    if self.delivery.unreachable
                    else "the broker is out of reach"
                )
                log.warning("ward bus: central station not reached (%s); retrying", why)
            else:
                log.info("ward bus: central station reached again")
            state = engine.set_system_condition(CENTRAL_UNREACHABLE, unreachable, t_s)
            self.publish_alarm_state(state)
            states.append(state)
        if self._connected.is_set():
            for topic_name, payload in self.delivery.due(sent_before_s=self._connected_at_s):
                self._send(topic_name, payload, retain=False)
        return states


@dataclass(frozen=True)
class MonitorHooks:
    """What :func:`painmon.core.live.monitor.run_monitor` needs to publish a bed (plain
    callables: core.live never imports the ward bus)."""

    on_result: Callable[[EngineResult], None]
    on_poll: Callable[[Any, float], list[AlarmState]]
    on_alarm_state: Callable[[AlarmState], None]


def monitor_hooks(publisher: BedPublisher) -> MonitorHooks:
    """Hooks that feed ``publisher`` from the monitor's engine thread."""

    def on_result(result: EngineResult) -> None:
        publisher.publish_result(result)
        publisher.publish_alarm_state(result.alarm_state)

    def on_alarm_state(state: AlarmState) -> None:
        publisher.publish_alarm_state(state)

    return MonitorHooks(on_result, publisher.service, on_alarm_state)


def bed_publisher_from_options(
    url: str,
    ward: str | None,
    bed: str | None,
    *,
    obs_hz: float = 2.0,
    remote_ack: bool = False,
    username: str | None = None,
    password_file: Path | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> BedPublisher:
    """A :class:`BedPublisher` from ``painmon monitor --publish`` options (not started).

    Every bad option is one InvalidInputError line; the password is read from its file
    and never logged.
    """
    from painmon.core.ward.client import BrokerAddress, read_secret
    from painmon.core.ward.security import TlsFiles

    if not ward or not bed:
        raise InvalidInputError("--publish needs --ward W and --bed B (the bed's labels)")
    address = BrokerAddress.parse_option(url, "--publish")
    password = read_secret(password_file) if password_file is not None else None
    if password is not None and not (username or address.username):
        raise InvalidInputError("--mqtt-password-file needs --mqtt-user")
    tls = None
    if tls_ca is not None or tls_cert is not None or tls_key is not None:
        if tls_ca is None:
            raise InvalidInputError("--tls-cert/--tls-key need --tls-ca (the ward's CA)")
        given = (("--tls-ca", tls_ca), ("--tls-cert", tls_cert), ("--tls-key", tls_key))
        for option, path in given:
            if path is not None and not Path(path).is_file():
                raise InvalidInputError(f"{option} {path}: no such file")
        tls = TlsFiles(Path(tls_ca), tls_cert, tls_key)
    elif address.tls:
        raise InvalidInputError(f"{address.url} is TLS: give the ward's CA with --tls-ca")
    return BedPublisher(
        address,
        ward,
        bed,
        obs_hz=obs_hz,
        remote_ack=remote_ack,
        username=username,
        password=password,
        tls=tls,
    )
