"""The central station: what it shows per bed (:class:`StationModel`) and its MQTT link.

:class:`StationModel` is plain logic with the time handed in (no Qt, no threads, no
network): it turns the bus's messages into one frozen :class:`BedView` per bed and a
:class:`StationView` per repaint, de-duplicates alarm events by uuid and says which
receipt to send for each (duplicates too: a lost receipt makes the bed re-send, and
that re-sent event must be confirmed again), and decides "no data", OFFLINE, colours,
texts and the station's alarm tone. The window only paints a StationView.

:class:`StationClient` is the paho connection. Paho's network thread only puts what
arrives on a queue; the model's owner (the window's timer, a benchmark thread) calls
:meth:`StationClient.drain`, which feeds the model and publishes the receipts.

Design choices (the issue left these open):

* Time is the station's monotonic clock at reception, not the bed's stamp: "no data"
  must not depend on the bed's clock being right.
* Alarm events and the retained ``alarm/state`` come from one publisher at QoS 1, so
  they arrive in order. An event applies only when its ``seq`` is newer than what was
  applied; a state message replaces the bed's alarm table when its ``seq`` is at least
  that (a lower one means the bed restarted and counts from 0 again).
* A bed that is OFFLINE keeps its last alarms on the tile (marked as last known) but
  does not sound at the station: nobody can acknowledge it remotely; the cyan OFFLINE
  tile is the call to go and look.
* The level colour uses the default alarm thresholds (the station does not know each
  bed's settings); an active pain alarm's colour always wins.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from painmon.core.live.alarms import (
    SYSTEM_CONDITION_TEXT,
    AlarmPriority,
    AlarmSettings,
    TechnicalCondition,
)
from painmon.core.live.display import CONDITION_TEXT, ColourRole, level_role, priority_role
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.labels import DEFAULT_CLASS_NAMES
from painmon.core.ward import messages, topics
from painmon.core.ward.security import TlsFiles

if TYPE_CHECKING:
    from painmon.core.ward.client import BrokerAddress

log = logging.getLogger(__name__)

#: a bed whose obs stop this long shows NO DATA although it is online (issue #14)
NO_DATA_AFTER_S = 1.5
#: the tile's sparkline: 10 minutes of 1 s buckets
SPARKLINE_S = 600
SPARKLINE_BUCKET_S = 1.0
#: the full trend (click a tile): 24 h of 5 s buckets
TREND_BUCKET_S = 5.0
TREND_S = 24 * 3600.0
#: an acknowledge command with no reply after this long says so on the tile
COMMAND_TIMEOUT_S = 5.0
#: alarm event uuids remembered for de-duplication (oldest forgotten first)
MAX_SEEN_UUIDS = 100_000
#: alarm events kept per bed for the trend dialog's list
RECENT_EVENTS = 50
#: the broker keeps a stopped station's session (subscriptions, QoS 1 messages) this long
STATION_SESSION_EXPIRY_S = 300
#: receipts and commands published from one drain at most (the rest wait for the next)
DRAIN_LIMIT = 5000

OFFLINE_HEADLINE = "OFFLINE"
NO_DATA_HEADLINE = "NO DATA"
WAITING_DETAIL = "connected, no observation yet"
UNKNOWN_HEADLINE = "unknown"
STATION_LOST_TEXT = (
    "TECHNICAL ALARM: the station lost its broker connection — beds are not monitored here"
)
STATION_CONNECTING_TEXT = "connecting to the broker…"
STATION_NEVER_CONNECTED_TEXT = (
    "TECHNICAL ALARM: the station cannot reach the broker — beds are not monitored here"
)
#: a station that has not connected after this long says so as a technical alarm
CONNECT_GRACE_S = 5.0
COMMAND_SENT_TEXT = "acknowledge sent — waiting for the bed"
COMMAND_APPLIED_TEXT = "acknowledged at the bed"
COMMAND_NO_REPLY_TEXT = "no reply from the bed — go and check it"
UNREACHABLE_TEXT = "CENTRAL STATION NOT REACHED"

_DEFAULT_SETTINGS = AlarmSettings()
_PAIN_RANK = {"none": 0, "low": 0, "medium": 1, "high": 2}


class BedState(enum.StrEnum):
    """What a tile says about the bed's connection and data."""

    ONLINE = "online"
    NO_DATA = "no data"
    OFFLINE = "offline"


@dataclass(frozen=True)
class ActiveAlarm:
    """One alarm active at a bed, as its events and retained alarm state say."""

    kind: str
    condition: str
    priority: str
    since: str
    acknowledged: bool = False
    latched: bool = False
    audio_paused: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("pain", "technical"):
            raise InvalidInputError(f"alarm kind must be pain or technical, got {self.kind!r}")
        if self.priority not in _PAIN_RANK:
            raise InvalidInputError(f"unknown alarm priority {self.priority!r}")

    def text(self) -> str:
        """'HIGH PAIN ALARM — acknowledged', 'TECHNICAL: NO FACE'."""
        if self.kind == "pain":
            words = f"{self.priority.upper()} PAIN ALARM"
            if self.latched and self.acknowledged is False:
                words += " (latched)"
        else:
            words = f"TECHNICAL: {condition_name(self.condition)}"
        return words + (" — acknowledged" if self.acknowledged else "")


@dataclass(frozen=True)
class BedView:
    """Everything one tile shows about a bed at one repaint.

    ``sparkline`` holds the last :data:`SPARKLINE_S` one-second buckets, oldest first
    (None: no known level that second); ``priority`` is the highest active pain alarm
    priority ("none" when none), ``sounding`` the pain alarm priority this bed asks the
    station to sound (None: silent).
    """

    ward: str
    bed: str
    state: BedState
    headline: str
    detail: str
    role: ColourRole
    level: float | None
    band: int | None
    technical: tuple[str, ...]
    alarms: tuple[ActiveAlarm, ...]
    priority: str
    acknowledged: bool
    sounding: str | None
    sparkline: tuple[float | None, ...]
    last_obs_age_s: float | None
    remote_ack: bool | None
    pseudonym: str | None
    command_text: str

    def __post_init__(self) -> None:
        if len(self.sparkline) != SPARKLINE_S:
            raise ValueError(f"a sparkline holds {SPARKLINE_S} buckets, got {len(self.sparkline)}")
        if self.sounding not in (None, AlarmPriority.MEDIUM, AlarmPriority.HIGH):
            raise ValueError(f"only a MEDIUM or HIGH alarm sounds, got {self.sounding!r}")
        if self.level is not None and not (math.isfinite(self.level) and 0 <= self.level <= 4):
            raise ValueError(f"level must lie in 0..4 or be None, got {self.level!r}")

    @property
    def key(self) -> tuple[str, str]:
        return (self.ward, self.bed)

    @property
    def label(self) -> str:
        return self.bed

    @property
    def alarm_text(self) -> str:
        """The tile's alarm line ('' when no alarm is active)."""
        return " · ".join(a.text() for a in self.alarms)

    @property
    def can_acknowledge(self) -> bool:
        """An unacknowledged pain alarm the station may ask the bed to acknowledge."""
        return self.state is not BedState.OFFLINE and any(
            a.kind == "pain" and not a.acknowledged for a in self.alarms
        )


@dataclass(frozen=True)
class StationView:
    """One repaint of the station window: the beds in label order, the station's own alarm."""

    beds: tuple[BedView, ...]
    connected: bool
    station_alarm: str
    sound_priority: str | None

    def bed(self, ward: str, bed: str) -> BedView | None:
        return next((v for v in self.beds if v.key == (ward, bed)), None)


def condition_name(condition: str) -> str:
    """The display name of a technical condition name sent on the bus."""
    if condition == "CENTRAL_UNREACHABLE":
        return UNREACHABLE_TEXT
    if condition in SYSTEM_CONDITION_TEXT:  # the bed's own system, e.g. RECORDING_FAILED
        return SYSTEM_CONDITION_TEXT[condition].upper()
    try:
        return CONDITION_TEXT[TechnicalCondition(condition)]
    except ValueError:
        return condition.replace("_", " ")


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key putting bed2 before bed10."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text))


class _Buckets:
    """The highest known level per time bucket, oldest dropped after ``span_s``."""

    def __init__(self, bucket_s: float, span_s: float) -> None:
        self.bucket_s = bucket_s
        self.count = round(span_s / bucket_s)
        self.items: deque[tuple[int, float | None]] = deque(maxlen=self.count)
        self._version = 0
        self._cached: tuple[tuple[int, int], tuple[float | None, ...]] | None = None

    def add(self, now_s: float, level: float | None) -> None:
        index = math.floor(now_s / self.bucket_s)
        if self.items and self.items[-1][0] == index:
            old = self.items[-1][1]
            if level is not None and (old is None or level > old):
                self.items[-1] = (index, level)
                self._version += 1
            return
        self.items.append((index, level))
        self._version += 1

    def window(self, now_s: float) -> tuple[float | None, ...]:
        """The last ``count`` buckets up to ``now_s``, oldest first, None where empty."""
        last = math.floor(now_s / self.bucket_s)
        key = (last, self._version)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]  # repaints come 4 times a second, buckets once
        first = last - self.count + 1
        values: list[float | None] = [None] * self.count
        for index, level in self.items:
            if first <= index <= last:
                values[index - first] = level
        result = tuple(values)
        self._cached = (key, result)
        return result

    def points(self, now_s: float) -> list[tuple[float, float | None]]:
        """(seconds before ``now_s``, level) of every stored bucket, oldest first."""
        return [((index + 1) * self.bucket_s - now_s, level) for index, level in self.items]


@dataclass
class _Command:
    cmd_id: str
    sent_s: float
    text: str = COMMAND_SENT_TEXT
    replied: bool = False


class _Bed:
    """What the station knows about one bed (mutable; only the model touches it)."""

    def __init__(self, ward: str, bed: str, now_s: float) -> None:
        self.ward, self.bed = ward, bed
        self.first_seen_s = now_s
        self.last_seen_s = now_s
        self.status: str | None = None
        self.remote_ack: bool | None = None
        self.pseudonym: str | None = None
        self.software = ""
        self.obs_hz: float | None = None
        self.last_obs: Any = None
        self.last_obs_s: float | None = None
        self.last_obs_seq: int | None = None
        self.obs_received = 0
        self.obs_missed = 0
        self.alarms: dict[tuple[str, str], ActiveAlarm] = {}
        self.alarm_uuids: dict[tuple[str, str], str] = {}
        self.applied_seq: int | None = None
        self.spark = _Buckets(SPARKLINE_BUCKET_S, SPARKLINE_S * SPARKLINE_BUCKET_S)
        self.trend = _Buckets(TREND_BUCKET_S, TREND_S)
        self.events: deque[Any] = deque(maxlen=RECENT_EVENTS)
        self.command: _Command | None = None
        self.offline_since_s: float | None = None
        self.no_data_since_s: float | None = None


class StationModel:
    """The station's view of the ward, fed message by message (pure logic, one thread).

    ``on_message(topic, payload, now_s)`` returns the :class:`messages.ReceiptMessage`
    to publish for an alarm event (every one, duplicates included) and None otherwise;
    ``tick(now_s)`` expires commands and returns the :class:`StationView` to paint.
    """

    def __init__(
        self,
        station_id: str = "station",
        *,
        clock: Callable[[], float] = time.monotonic,
        utc_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.station_id = topics.check_label(station_id, "station id")
        self._clock = clock
        self._utc_clock = utc_clock
        self._created_s = clock()
        self._beds: dict[tuple[str, str], _Bed] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.connected = False
        self.ever_connected = False
        self.disconnect_reason = ""
        self.invalid_messages = 0
        self.events_received = 0
        self.duplicate_events = 0
        #: acknowledge command round trips in seconds (send → the bed's reply)
        self.ack_round_trips_s: deque[float] = deque(maxlen=10_000)
        #: (ward, bed, uuid, station receive time) of each new alarm event, for benchmarks
        self.new_events: deque[tuple[str, str, str, float]] = deque(maxlen=100_000)

    # -- input ----------------------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes, now_s: float | None = None) -> Any:
        """Apply one message; the receipt to send for an alarm event, else None.

        A topic or payload that breaks the contract is logged and dropped (it never
        reaches a tile); it never raises.
        """
        now_s = self._clock() if now_s is None else now_s
        try:
            ward, bed, leaf = topics.parse_topic(topic)
        except InvalidInputError as exc:
            return self._invalid(topic, str(exc))
        if not payload:
            return None  # a retained message being cleared
        try:
            message = messages.decode(leaf, payload)
        except InvalidInputError as exc:
            return self._invalid(topic, str(exc))
        if (message.ward, message.bed) != (ward, bed):
            return self._invalid(
                topic, f"payload names {message.ward}/{message.bed}, not the topic's bed"
            )
        if leaf in (topics.CMD_RECEIPT, topics.CMD_ACKNOWLEDGE):
            return None  # our own commands (a station subscribed to cmd/# sees them)
        record = self._bed(ward, bed, now_s)
        record.last_seen_s = now_s
        if leaf == topics.OBS:
            self._on_obs(record, message, now_s)
        elif leaf == topics.STATUS:
            self._on_status(record, message, now_s)
        elif leaf == topics.ALARM_EVENT:
            return self._on_event(record, message, now_s)
        elif leaf == topics.ALARM_STATE:
            self._on_state(record, message)
        elif leaf == topics.CMD_REPLY:
            self._on_reply(record, message, now_s)
        return None

    def set_connection(self, connected: bool, now_s: float | None = None, reason: str = "") -> None:
        """The station's own broker link went up or down."""
        if connected != self.connected:
            log.log(
                logging.INFO if connected else logging.WARNING,
                "station broker connection %s%s",
                "up" if connected else "lost",
                f": {reason}" if reason else "",
            )
        self.connected = connected
        self.ever_connected = self.ever_connected or connected
        self.disconnect_reason = "" if connected else reason

    def acknowledge(self, ward: str, bed: str, now_s: float | None = None) -> Any:
        """The acknowledge command for a bed (None: unknown bed or nothing to acknowledge)."""
        now_s = self._clock() if now_s is None else now_s
        record = self._beds.get((ward, bed))
        if record is None:
            return None
        pain = [
            (key, a) for key, a in record.alarms.items() if a.kind == "pain" and not a.acknowledged
        ]
        if not pain:
            return None
        key, _ = max(pain, key=lambda item: _PAIN_RANK[item[1].priority])
        command = messages.CommandMessage(
            ward=ward,
            bed=bed,
            time=self._now_utc(),
            cmd_id=messages.new_uuid(),
            command="acknowledge",
            station=self.station_id,
            alarm_uuid=record.alarm_uuids.get(key),
        )
        record.command = _Command(command.cmd_id, now_s)
        return command

    # -- output ---------------------------------------------------------------------------
    def tick(self, now_s: float | None = None) -> StationView:
        """Expire unanswered commands, note no-data/offline onsets; the view to paint."""
        now_s = self._clock() if now_s is None else now_s
        for record in self._beds.values():
            command = record.command
            if (
                command is not None
                and not command.replied
                and now_s - command.sent_s > COMMAND_TIMEOUT_S
            ):
                command.text, command.replied = COMMAND_NO_REPLY_TEXT, True
            state = self._state(record, now_s)
            if state is BedState.NO_DATA and record.no_data_since_s is None:
                record.no_data_since_s = now_s
            elif state is not BedState.NO_DATA:
                record.no_data_since_s = None
        return self.view(now_s)

    def view(self, now_s: float | None = None) -> StationView:
        """The station as it should be painted at ``now_s``."""
        now_s = self._clock() if now_s is None else now_s
        beds = tuple(
            self._view(self._beds[key], now_s)
            for key in sorted(self._beds, key=lambda k: (natural_key(k[0]), natural_key(k[1])))
        )
        if self.connected:
            banner = ""
        elif self.ever_connected:
            reason = f" ({self.disconnect_reason})" if self.disconnect_reason else ""
            banner = STATION_LOST_TEXT + reason
        elif now_s - self._created_s > CONNECT_GRACE_S:
            reason = f" ({self.disconnect_reason})" if self.disconnect_reason else ""
            banner = STATION_NEVER_CONNECTED_TEXT + reason
        else:
            banner = STATION_CONNECTING_TEXT
        sounding = [v.sounding for v in beds if v.sounding is not None]
        sound = max(sounding, key=lambda p: _PAIN_RANK[p]) if sounding else None
        return StationView(beds, self.connected, banner, sound)

    def bed_view(self, ward: str, bed: str, now_s: float | None = None) -> BedView | None:
        record = self._beds.get((ward, bed))
        if record is None:
            return None
        return self._view(record, self._clock() if now_s is None else now_s)

    def trend(
        self, ward: str, bed: str, now_s: float | None = None
    ) -> list[tuple[float, float | None]]:
        """The bed's full trend: (seconds before now, highest level in 5 s) oldest first."""
        record = self._beds.get((ward, bed))
        if record is None:
            return []
        return record.trend.points(self._clock() if now_s is None else now_s)

    def recent_events(self, ward: str, bed: str) -> list[Any]:
        """The bed's last alarm events (AlarmEventMessage), oldest first."""
        record = self._beds.get((ward, bed))
        return [] if record is None else list(record.events)

    def obs_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(received, missed by seq gaps) obs per bed."""
        return {k: (b.obs_received, b.obs_missed) for k, b in self._beds.items()}

    def state_since(self, ward: str, bed: str) -> tuple[float | None, float | None]:
        """(offline since, no data since) in the model's clock: for benchmarks."""
        record = self._beds[(ward, bed)]
        return record.offline_since_s, record.no_data_since_s

    @property
    def beds(self) -> list[tuple[str, str]]:
        return list(self._beds)

    # -- internals ------------------------------------------------------------------------
    def _invalid(self, topic: str, why: str) -> None:
        self.invalid_messages += 1
        # One line per bad message; a flood of them is the sender's fault, logged at debug.
        level = logging.WARNING if self.invalid_messages <= 20 else logging.DEBUG
        log.log(level, "ignored a message on %s: %s", topic, why)
        return None

    def _now_utc(self) -> str:
        return messages.utc_iso(self._utc_clock())

    def _bed(self, ward: str, bed: str, now_s: float) -> _Bed:
        record = self._beds.get((ward, bed))
        if record is None:
            record = self._beds[(ward, bed)] = _Bed(ward, bed, now_s)
            log.info("bed %s/%s appeared", ward, bed)
        return record

    def _on_obs(self, record: _Bed, obs: Any, now_s: float) -> None:
        if record.last_obs_seq is not None and obs.seq <= record.last_obs_seq:
            if obs.seq < record.last_obs_seq - 1000:
                record.last_obs_seq = None  # the bed restarted its counter
            else:
                return  # QoS 0 does not duplicate, but an old one must never win
        if record.last_obs_seq is not None and obs.seq > record.last_obs_seq + 1:
            record.obs_missed += obs.seq - record.last_obs_seq - 1
        record.last_obs_seq = obs.seq
        record.obs_received += 1
        record.last_obs, record.last_obs_s = obs, now_s
        if record.status is None:
            record.status = "online"  # its obs prove it, before the retained status arrives
        level = obs.level if obs.known else None
        record.spark.add(now_s, level)
        record.trend.add(now_s, level)

    def _on_status(self, record: _Bed, status: Any, now_s: float) -> None:
        if status.state == "offline" and record.status != "offline":
            record.offline_since_s = now_s
        elif status.state == "online":
            record.offline_since_s = None
        record.status = status.state
        record.remote_ack = status.remote_ack
        record.obs_hz = status.obs_hz
        record.software = status.software
        record.pseudonym = getattr(status, "pseudonym", None)
        if status.state == "online" and record.last_obs_s is not None:
            # A bed back online starts a new obs count (it may have restarted).
            record.last_obs_seq = None

    def _on_event(self, record: _Bed, event: Any, now_s: float) -> Any:
        receipt = messages.ReceiptMessage(
            ward=record.ward,
            bed=record.bed,
            time=self._now_utc(),
            uuid=event.uuid,
            station=self.station_id,
        )
        self.events_received += 1
        if event.uuid in self._seen:
            self.duplicate_events += 1
            self._seen.move_to_end(event.uuid)
            return receipt
        self._seen[event.uuid] = None
        while len(self._seen) > MAX_SEEN_UUIDS:
            self._seen.popitem(last=False)
        self.new_events.append((record.ward, record.bed, event.uuid, now_s))
        record.events.append(event)
        if record.applied_seq is not None and event.seq <= record.applied_seq:
            return receipt  # older than the alarm state already shown
        record.applied_seq = event.seq
        key = (event.kind, event.condition)
        current = record.alarms.get(key)
        if event.phase == "end":
            record.alarms.pop(key, None)
        elif event.phase == "acknowledge":
            if current is not None:
                record.alarms[key] = replace(current, acknowledged=True)
        else:  # start or escalate
            record.alarms[key] = ActiveAlarm(
                kind=event.kind,
                condition=event.condition,
                priority=event.priority,
                since=current.since if current is not None else event.time,
                acknowledged=False,
                latched=current.latched if current is not None else False,
            )
            record.alarm_uuids[key] = event.uuid
        return receipt

    def _on_state(self, record: _Bed, state: Any) -> None:
        if record.applied_seq is not None and state.seq < record.applied_seq:
            log.info("bed %s/%s counts alarm events anew (restarted?)", record.ward, record.bed)
        record.applied_seq = state.seq
        alarms: dict[tuple[str, str], ActiveAlarm] = {}
        for item in state.alarms:
            alarm = _alarm_from(item)
            alarms[(alarm.kind, alarm.condition)] = alarm
        record.alarms = alarms

    def _on_reply(self, record: _Bed, reply: Any, now_s: float) -> None:
        command = record.command
        if command is None or command.cmd_id != reply.cmd_id:
            log.info(
                "reply to an unknown command %s from %s/%s", reply.cmd_id, record.ward, record.bed
            )
            return
        if not command.replied:
            self.ack_round_trips_s.append(now_s - command.sent_s)
        command.replied = True
        command.text = COMMAND_APPLIED_TEXT if reply.ok else f"refused: {reply.reason}"

    def _state(self, record: _Bed, now_s: float) -> BedState:
        if record.status == "offline":
            return BedState.OFFLINE
        since = record.last_obs_s if record.last_obs_s is not None else record.first_seen_s
        if now_s - since > NO_DATA_AFTER_S:
            return BedState.NO_DATA
        return BedState.ONLINE

    def _view(self, record: _Bed, now_s: float) -> BedView:
        state = self._state(record, now_s)
        obs = record.last_obs
        age = None if record.last_obs_s is None else max(0.0, now_s - record.last_obs_s)
        alarms = tuple(
            sorted(
                record.alarms.values(),
                key=lambda a: (a.kind != "pain", -_PAIN_RANK[a.priority], a.condition),
            )
        )
        pain = [a for a in alarms if a.kind == "pain"]
        top = max(pain, key=lambda a: _PAIN_RANK[a.priority]) if pain else None
        priority = top.priority if top is not None else "none"
        technical: tuple[str, ...] = tuple(obs.technical) if obs is not None else ()
        level = band = None
        if state is BedState.OFFLINE:
            headline, detail = OFFLINE_HEADLINE, "the bed left the network (its last will)"
            if alarms:
                detail += " — last known alarms shown"
        elif state is BedState.NO_DATA:
            headline = NO_DATA_HEADLINE
            detail = WAITING_DETAIL if age is None else f"no observation for {age:.0f} s"
        elif obs is None:
            headline, detail = UNKNOWN_HEADLINE, WAITING_DETAIL
        elif obs.known and obs.level is not None:
            level = float(obs.level)
            band = obs.band if obs.band is not None else min(4, max(0, math.floor(level + 0.5)))
            headline = f"{level:.1f}"
            detail = DEFAULT_CLASS_NAMES[band]
        else:
            headline = UNKNOWN_HEADLINE
            if technical:
                why = ", ".join(condition_name(c).lower() for c in technical)
            else:
                why = obs.unknown_reason or "output unknown"
            detail = f"unknown — {why}"
        if state is not BedState.ONLINE:
            role = ColourRole.TECHNICAL
        elif top is not None and _PAIN_RANK[priority] > 0:
            role = priority_role(priority)
        elif any(a.kind == "technical" for a in alarms) or technical:
            role = ColourRole.TECHNICAL
        else:
            role = level_role(level, _DEFAULT_SETTINGS)
        sounding = None
        if (
            state is not BedState.OFFLINE
            and top is not None
            and priority in (AlarmPriority.MEDIUM, AlarmPriority.HIGH)
            and not top.acknowledged
            and not top.audio_paused
        ):
            sounding = priority
        return BedView(
            ward=record.ward,
            bed=record.bed,
            state=state,
            headline=headline,
            detail=detail,
            role=role,
            level=level,
            band=band,
            technical=technical,
            alarms=alarms,
            priority=priority,
            acknowledged=top.acknowledged if top is not None else False,
            sounding=sounding,
            sparkline=record.spark.window(now_s),
            last_obs_age_s=age,
            remote_ack=record.remote_ack,
            pseudonym=record.pseudonym,
            command_text=record.command.text if record.command is not None else "",
        )


def _alarm_from(entry: Any) -> ActiveAlarm:
    """An ActiveAlarm from one :class:`messages.AlarmEntry` of an alarm state."""
    return ActiveAlarm(
        kind=entry.kind,
        condition=entry.condition,
        priority=entry.priority,
        since=entry.since,
        acknowledged=entry.acknowledged,
        latched=entry.latched,
        audio_paused=entry.audio_paused,
    )


class StationClient:
    """The station's MQTT connection: paho's thread queues, :meth:`drain` feeds the model.

    ``start()`` connects (automatic reconnects) and subscribes to the station topics of
    ``ward`` ("+": every ward); subscriptions are renewed on every reconnect (the broker
    keeps the session ``session_expiry_s``, but a crashed broker may have lost it). The
    client id is fixed, ``painmon-station-<station_id>``: two stations need two ids.
    By default ``start`` does not wait for the broker: a station
    started before its broker shows the broker loss until it connects.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        ward: str = "+",
        station_id: str = "station",
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        clock: Callable[[], float] = time.monotonic,
        session_expiry_s: int = STATION_SESSION_EXPIRY_S,
    ) -> None:
        self.address = address
        self.session_expiry_s = session_expiry_s
        self.ward = ward
        self.subscriptions = topics.station_subscriptions(ward)
        self.station_id = topics.check_label(station_id, "station id")
        self._username, self._password, self._tls = username, password, tls
        self._clock = clock
        self._queue: queue.SimpleQueue[tuple[str, str, bytes, float]] = queue.SimpleQueue()
        self._client: Any = None
        self._stopping = False
        self.connected = threading.Event()
        self.receipts_sent = 0
        self.commands_sent = 0

    def start(self, wait_s: float | None = None) -> StationClient:
        """Connect in the background (``wait_s``: or wait that long for the first CONNACK)."""
        from painmon.core.ward.client import connect_client

        self._stopping = False
        self._client = connect_client(
            self.address,
            # A fixed id and a persistent session: QoS 1 alarm events published while the
            # station restarts wait at the broker (the beds' re-sends cover a broker crash).
            f"painmon-station-{self.station_id}",
            username=self._username,
            password=self._password,
            tls=self._tls,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_message=self._on_message,
            wait_s=wait_s,
            session_expiry_s=self.session_expiry_s,
        )
        return self

    def stop(self) -> None:
        """Disconnect cleanly and stop paho's thread (idempotent)."""
        from painmon.core.ward.client import close_client

        client, self._client = self._client, None
        self._stopping = True  # our own DISCONNECT is no broker loss
        if client is not None:
            close_client(client)
        self.connected.clear()

    # paho's network thread: only queue, never touch the model.
    def _on_connect(
        self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any = None
    ) -> None:
        if reason_code.is_failure:
            self._queue.put(("down", str(reason_code), b"", self._clock()))
            return
        client.subscribe([(name, 1) for name in self.subscriptions])
        self.connected.set()
        self._queue.put(("up", "", b"", self._clock()))

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any = None
    ) -> None:
        self.connected.clear()
        if not self._stopping:
            self._queue.put(("down", str(reason_code), b"", self._clock()))

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        self._queue.put(("msg", message.topic, bytes(message.payload), self._clock()))

    # the model's owner thread
    def drain(self, model: StationModel, limit: int = DRAIN_LIMIT) -> int:
        """Feed what arrived into ``model`` and publish the receipts; the number of messages."""
        count = 0
        while count < limit:
            try:
                kind, text, payload, at_s = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "up":
                model.set_connection(True, at_s)
            elif kind == "down":
                model.set_connection(False, at_s, text)
            else:
                count += 1
                receipt = model.on_message(text, payload, at_s)
                if receipt is not None and self.publish(receipt):
                    self.receipts_sent += 1
        return count

    def serve(self, model: StationModel, stop: threading.Event, idle_s: float = 0.005) -> None:
        """Drain until ``stop`` is set (a benchmark's or a headless station's thread)."""
        while not stop.is_set():
            if self.drain(model) == 0:
                model.tick()
                stop.wait(idle_s)

    def acknowledge(self, model: StationModel, ward: str, bed: str) -> Any:
        """Send an acknowledge command for the bed's alarm; the command (None: nothing to send)."""
        command = model.acknowledge(ward, bed)
        if command is not None and self.publish(command):
            self.commands_sent += 1
        return command

    def publish(self, message: Any) -> bool:
        """Publish a receipt or command (QoS 1); False while there is no client."""
        from painmon.core.ward.client import publish_message

        client = self._client
        if client is None:
            return False
        publish_message(client, message)
        return True


def station_client(
    broker: str,
    *,
    ward: str = "+",
    station_id: str = "station",
    username: str | None = None,
    password_file: Path | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> StationClient:
    """A StationClient from command-line options (InvalidInputError when one is wrong)."""
    from painmon.core.ward.client import BrokerAddress, read_secret

    address = BrokerAddress.parse_option(broker, "--broker")
    if ward != "+":
        topics.check_label(ward, "ward")
    password = read_secret(password_file) if password_file is not None else None
    if password is not None and username is None and address.username is None:
        raise InvalidInputError("--mqtt-password-file needs --mqtt-user")
    tls = None
    if tls_ca is not None:
        for path in (tls_ca, tls_cert, tls_key):
            if path is not None and not Path(path).is_file():
                raise InvalidInputError(f"TLS file {path} not found")
        tls = TlsFiles(tls_ca, tls_cert, tls_key)
    elif tls_cert is not None or tls_key is not None:
        raise InvalidInputError("--tls-cert/--tls-key need --tls-ca (the ward's CA)")
    return StationClient(
        address,
        ward=ward,
        station_id=station_id,
        username=username,
        password=password,
        tls=tls,
    )
