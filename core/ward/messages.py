"""The ward bus messages: one frozen dataclass per topic leaf, checked against the shipped schema.

Every message is compact UTF-8 JSON with a stable key order, ``"v": 1``, the ward and bed
labels and a UTC time (ISO 8601, ``Z``, milliseconds). :func:`decode` is the only way a
payload off the bus becomes a message: bad JSON or a schema violation is an
:class:`InvalidInputError` naming the field. No patient names travel: the bed label and, only
when configured, a pseudonym in :class:`StatusMessage`.
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid as uuid_module
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from importlib import resources
from typing import Any, ClassVar

import jsonschema
from jsonschema.exceptions import best_match

from painmon.core.util.errors import InvalidInputError
from painmon.core.ward import topics

VERSION = 1
SCHEMA_FILE = "painmon-v1.schema.json"

# The schema's $defs entry of each leaf (a "/" in a $defs key would need JSON-pointer escapes).
DEF_OF_LEAF = {
    topics.OBS: "obs",
    topics.ALARM_EVENT: "alarm_event",
    topics.ALARM_STATE: "alarm_state",
    topics.STATUS: "status",
    topics.CMD_RECEIPT: "cmd_receipt",
    topics.CMD_ACKNOWLEDGE: "cmd_acknowledge",
    topics.CMD_REPLY: "cmd_reply",
}

# IEEE 11073-10201 alert model: our priority and kind beside theirs.
ALERT_PRIORITY_11073 = {"high": "Hi", "medium": "Me", "low": "Lo", "none": "None"}
ALERT_KIND_11073 = {"pain": "PHY", "technical": "TEC"}
PHASES = ("start", "escalate", "acknowledge", "end")
_MIRROR_FIELDS = (
    "alert_condition_kind",
    "alert_condition_priority",
    "presence",
    "determination_time",
)
PAIN_CONDITION = "PAIN"
CENTRAL_UNREACHABLE = "CENTRAL_UNREACHABLE"

# Sum of the five class probabilities may drift from 1 by rounding in the sender.
_P_SUM_TOLERANCE = 0.01
PRIORITIES = ("high", "medium", "low", "none")
KINDS = ("pain", "technical")
_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CONDITION_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_PSEUDONYM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,31}$")


def utc_iso(moment: datetime | float | None = None) -> str:
    """``moment`` (a datetime, a POSIX time, or now) as the bus's UTC time string."""
    if moment is None:
        moment = datetime.now(UTC)
    elif isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, UTC)
    elif moment.tzinfo is None:
        raise InvalidInputError(f"time {moment!r} has no timezone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.astimezone(UTC).microsecond // 1000:03d}Z"
    )


def parse_utc(text: str) -> datetime:
    """The datetime of a bus time string."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"time {text!r} is not UTC ISO 8601 (e.g. {utc_iso()})") from exc


def new_uuid() -> str:
    """A fresh uuid4 string for an alarm event or a command."""
    return str(uuid_module.uuid4())


@functools.cache
def schema() -> dict[str, Any]:
    """The shipped JSON Schema (Draft 2020-12)."""
    text = resources.files("painmon.core.ward").joinpath("schema", SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)


@functools.cache
def _validator(def_name: str) -> jsonschema.protocols.Validator:
    whole = schema()
    sub = {"$schema": whole["$schema"], "$defs": whole["$defs"], "$ref": f"#/$defs/{def_name}"}
    cls = jsonschema.validators.validator_for(sub)
    cls.check_schema(sub)
    return cls(sub)


def _field_of(error: jsonschema.ValidationError) -> str:
    path = [str(part) for part in error.absolute_path]
    if error.validator == "required":
        # "'seq' is a required property": the missing field is the quoted name.
        path.append(str(error.message).split("'")[1])
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        # Name the unexpected field itself (e.g. a patient name someone tried to send).
        known = error.schema.get("properties", {})
        path.append(",".join(sorted(k for k in error.instance if k not in known)))
    return "/".join(path) or "(top level)"


def validate(leaf: str, document: Any) -> None:
    """InvalidInputError naming the field when ``document`` breaks the schema of ``leaf``."""
    def_name = DEF_OF_LEAF.get(leaf)
    if def_name is None:
        raise InvalidInputError(
            f"unknown topic leaf {leaf!r}: expected one of {sorted(DEF_OF_LEAF)}"
        )
    error = best_match(_validator(def_name).iter_errors(document))
    if error is not None:
        raise InvalidInputError(f"{leaf} message: field '{_field_of(error)}': {error.message}")


def _sequence(name: str, value: Any) -> list | tuple:
    if not isinstance(value, list | tuple):
        raise _bad(name, value, "is not a list")
    return value


def _bad(name: str, value: Any, why: str) -> InvalidInputError:
    return InvalidInputError(f"field '{name}': {value!r} {why}")


def _label(name: str, value: Any) -> None:
    if not isinstance(value, str) or not topics.LABEL_RE.fullmatch(value):
        raise _bad(name, value, "is not a label (1-32 of A-Z a-z 0-9 _ . -)")


def _time(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise _bad(name, value, "is not UTC ISO 8601 with milliseconds and Z")
    parse_utc(value)


def _uuid(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        raise _bad(name, value, "is not a lower-case uuid")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _bad(name, value, "is not true/false")


def _int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(name, value, f"is not an integer >= {low}")
    if high is not None and value > high:
        raise _bad(name, value, f"is greater than the maximum of {high}")


def _number(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, value, "is not a finite number")
    if not low <= value <= high:
        raise _bad(name, value, f"is outside {low}-{high}")


def _one_of(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
        raise _bad(name, value, f"is not one of {list(allowed)}")


def _text(name: str, value: Any, max_len: int, min_len: int = 0) -> None:
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise _bad(name, value, f"is not a string of {min_len}-{max_len} characters")


def _condition(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _CONDITION_RE.fullmatch(value):
        raise _bad(name, value, "is not a condition name (e.g. PAIN, NO_FACE)")


class _Message:
    """Shared behaviour: to_dict/to_payload in field order, schema check after construction."""

    LEAF: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": VERSION}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in self._OMIT_WHEN_NONE:
                continue
            out[f.name] = _plain(value)
        return out

    _OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    def to_payload(self) -> bytes:
        """Compact UTF-8 JSON, keys in a stable order."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def _check(self) -> None:
        # Plain Python checks, the schema's rules for values we build ourselves: the schema
        # itself (jsonschema, ~0.3 ms a message) runs in decode(), on what comes off the bus.
        _label("ward", self.ward)  # type: ignore[attr-defined]
        _label("bed", self.bed)  # type: ignore[attr-defined]
        _time("time", self.time)  # type: ignore[attr-defined]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, AlarmEntry):
        return value.to_dict()
    return value


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class ObsMessage(_Message):
    """One observation of a bed (QoS 0, expires after 2 s): the level or why it is unknown."""

    LEAF: ClassVar[str] = topics.OBS

    ward: str
    bed: str
    time: str
    seq: int
    known: bool
    level: float | None
    p: tuple[float, ...] | None
    confidence: float | None
    band: int | None
    technical: tuple[str, ...] = ()
    unknown_reason: str | None = None

    def __post_init__(self) -> None:
        _set(self, "level", _as_float(self.level))
        _set(self, "confidence", _as_float(self.confidence))
        if self.p is not None:
            _set(self, "p", tuple(_as_float(x) for x in _sequence("p", self.p)))
        _set(self, "technical", tuple(_sequence("technical", self.technical)))
        self._check()
        _int("seq", self.seq, 0)
        _bool("known", self.known)
        if self.level is not None:
            _number("level", self.level, 0.0, 4.0)
        if self.p is not None:
            if len(self.p) != 5:
                raise _bad("p", self.p, "is not 5 class probabilities")
            for i, x in enumerate(self.p):
                _number(f"p/{i}", x, 0.0, 1.0)
        if self.confidence is not None:
            _number("confidence", self.confidence, 0.0, 1.0)
        if self.band is not None:
            _int("band", self.band, 0, 4)
        for i, name in enumerate(self.technical):
            _condition(f"technical/{i}", name)
        if len(set(self.technical)) != len(self.technical):
            raise _bad("technical", self.technical, "names a condition twice")
        if self.unknown_reason is not None:
            _text("unknown_reason", self.unknown_reason, 200)
        if self.known != (self.level is not None):
            raise InvalidInputError("field 'level': must be a number exactly when known is true")
        if not self.known and (self.p, self.confidence, self.band) != (None, None, None):
            raise InvalidInputError("field 'p': p, confidence and band must be null when unknown")
        if self.known and self.unknown_reason is not None:
            raise InvalidInputError("field 'unknown_reason': must be null when known is true")
        if self.p is not None and abs(sum(self.p) - 1.0) > _P_SUM_TOLERANCE:
            raise InvalidInputError(f"field 'p': sums to {sum(self.p):.4f}, not 1")


@dataclass(frozen=True)
class AlarmEventMessage(_Message):
    """One alarm event (QoS 1), confirmed by the station's receipt of its uuid.

    ``uuid`` names this one event (receipts, de-duplication); ``alert_id`` names the alarm
    it belongs to, the same on every phase of that alarm from its start to its end (the
    IHE ACM alert identifier). ``alert_id`` is optional on the bus: beds older than it
    leave it out, and a receiver then takes the event's ``uuid``
    (:attr:`alert_identifier`). The IEEE 11073-10201 mirror fields are derived when left
    out and checked when given.
    """

    LEAF: ClassVar[str] = topics.ALARM_EVENT
    _OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"alert_id"})

    ward: str
    bed: str
    time: str
    uuid: str
    seq: int
    kind: str
    condition: str
    priority: str
    phase: str
    message: str
    acknowledged: bool = False
    by: str | None = None
    alert_condition_kind: str | None = None
    alert_condition_priority: str | None = None
    presence: bool | None = None
    determination_time: str | None = None
    alert_id: str | None = None

    def __post_init__(self) -> None:
        derived = {
            "alert_condition_kind": ALERT_KIND_11073.get(self.kind),
            "alert_condition_priority": ALERT_PRIORITY_11073.get(self.priority),
            "presence": self.phase != "end",
            "determination_time": self.time,
        }
        for name, value in derived.items():
            if getattr(self, name) is None:
                _set(self, name, value)
        self._check()
        _uuid("uuid", self.uuid)
        if self.alert_id is not None:
            _uuid("alert_id", self.alert_id)
        _int("seq", self.seq, 0)
        _one_of("kind", self.kind, KINDS)
        _condition("condition", self.condition)
        _one_of("priority", self.priority, PRIORITIES)
        _one_of("phase", self.phase, PHASES)
        _text("message", self.message, 500)
        _bool("acknowledged", self.acknowledged)
        _one_of("by", self.by, ("bed", "station", None))
        _time("determination_time", self.determination_time)
        _bool("presence", self.presence)
        for name, value in derived.items():
            if getattr(self, name) != value:
                raise InvalidInputError(
                    f"field '{name}': {getattr(self, name)!r} disagrees with the event ({value!r})"
                )
        if (self.kind == "pain") != (self.condition == PAIN_CONDITION):
            raise InvalidInputError(
                f"field 'condition': {self.condition!r} does not fit kind {self.kind!r} "
                f"(a pain alarm's condition is {PAIN_CONDITION}, a technical one's is not)"
            )
        if self.phase == "acknowledge" and self.by is None:
            raise InvalidInputError("field 'by': an acknowledge event says who acknowledged")

    @property
    def alert_identifier(self) -> str:
        """The alarm this event belongs to: ``alert_id``, or (a bed older than that field)
        the event's own ``uuid``."""
        return self.alert_id or self.uuid


@dataclass(frozen=True)
class AlarmEntry:
    """One active alarm inside :class:`AlarmStateMessage`."""

    kind: str
    condition: str
    priority: str
    since: str
    acknowledged: bool = False
    latched: bool = False
    audio_paused: bool = False

    def __post_init__(self) -> None:
        _one_of("alarms/kind", self.kind, KINDS)
        _condition("alarms/condition", self.condition)
        _one_of("alarms/priority", self.priority, PRIORITIES)
        _time("alarms/since", self.since)
        for name in ("acknowledged", "latched", "audio_paused"):
            _bool(f"alarms/{name}", getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class AlarmStateMessage(_Message):
    """The bed's active alarms (retained; an empty tuple when none)."""

    LEAF: ClassVar[str] = topics.ALARM_STATE

    ward: str
    bed: str
    time: str
    seq: int
    alarms: tuple[AlarmEntry, ...] = ()

    def __post_init__(self) -> None:
        entries = tuple(
            a if isinstance(a, AlarmEntry) else _entry(a) for a in _sequence("alarms", self.alarms)
        )
        _set(self, "alarms", entries)
        self._check()
        _int("seq", self.seq, 0)


def _entry(raw: Any) -> AlarmEntry:
    if not isinstance(raw, dict):
        raise InvalidInputError(f"field 'alarms': {raw!r} is not an object")
    try:
        return AlarmEntry(**raw)
    except TypeError as exc:
        raise InvalidInputError(f"field 'alarms': {exc}") from exc


@dataclass(frozen=True)
class StatusMessage(_Message):
    """Online/offline of a bed (retained; the offline one is its Last Will)."""

    LEAF: ClassVar[str] = topics.STATUS
    _OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"pseudonym"})

    ward: str
    bed: str
    time: str
    state: str
    software: str
    remote_ack: bool = False
    obs_hz: float = 2.0
    pseudonym: str | None = None

    def __post_init__(self) -> None:
        _set(self, "obs_hz", _as_float(self.obs_hz))
        self._check()
        _one_of("state", self.state, ("online", "offline"))
        _text("software", self.software, 64, 1)
        _bool("remote_ack", self.remote_ack)
        _number("obs_hz", self.obs_hz, 1.0, 10.0)
        if self.pseudonym is not None and (
            not isinstance(self.pseudonym, str) or not _PSEUDONYM_RE.fullmatch(self.pseudonym)
        ):
            raise _bad("pseudonym", self.pseudonym, "is not 1-32 of A-Z a-z 0-9 space _ . -")


@dataclass(frozen=True)
class ReceiptMessage(_Message):
    """The station confirms it holds the alarm event ``uuid``."""

    LEAF: ClassVar[str] = topics.CMD_RECEIPT

    ward: str
    bed: str
    time: str
    uuid: str
    station: str

    def __post_init__(self) -> None:
        self._check()
        _uuid("uuid", self.uuid)
        _label("station", self.station)


@dataclass(frozen=True)
class CommandMessage(_Message):
    """A station's request to acknowledge at a bed (applied only if the bed allows it)."""

    LEAF: ClassVar[str] = topics.CMD_ACKNOWLEDGE
    _OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"alarm_uuid"})

    ward: str
    bed: str
    time: str
    cmd_id: str
    station: str
    command: str = "acknowledge"
    alarm_uuid: str | None = None

    def __post_init__(self) -> None:
        self._check()
        _uuid("cmd_id", self.cmd_id)
        _label("station", self.station)
        _one_of("command", self.command, ("acknowledge",))
        if self.alarm_uuid is not None:
            _uuid("alarm_uuid", self.alarm_uuid)


@dataclass(frozen=True)
class CommandReplyMessage(_Message):
    """The bed's answer to a command: applied, or why not."""

    LEAF: ClassVar[str] = topics.CMD_REPLY

    ward: str
    bed: str
    time: str
    cmd_id: str
    ok: bool
    reason: str

    def __post_init__(self) -> None:
        self._check()
        _uuid("cmd_id", self.cmd_id)
        _bool("ok", self.ok)
        _text("reason", self.reason, 200, 1)


Message = (
    ObsMessage
    | AlarmEventMessage
    | AlarmStateMessage
    | StatusMessage
    | ReceiptMessage
    | CommandMessage
    | CommandReplyMessage
)

MESSAGE_OF_LEAF: dict[str, type] = {
    topics.OBS: ObsMessage,
    topics.ALARM_EVENT: AlarmEventMessage,
    topics.ALARM_STATE: AlarmStateMessage,
    topics.STATUS: StatusMessage,
    topics.CMD_RECEIPT: ReceiptMessage,
    topics.CMD_ACKNOWLEDGE: CommandMessage,
    topics.CMD_REPLY: CommandReplyMessage,
}


@functools.cache
def _keys(def_name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(required, allowed) keys of a $defs object, read from the shipped schema."""
    entry = schema()["$defs"][def_name]
    return frozenset(entry["required"]), frozenset(entry["properties"])


def _check_keys(def_name: str, document: Any, where: str = "") -> None:
    if not isinstance(document, dict):
        raise InvalidInputError(f"field '{where or '(top level)'}': {document!r} is not an object")
    required, allowed = _keys(def_name)
    missing = required - document.keys()
    if missing:
        raise InvalidInputError(f"field '{where}{sorted(missing)[0]}': is a required property")
    extra = document.keys() - allowed
    if extra:
        raise InvalidInputError(f"field '{where}{','.join(sorted(extra))}': is not allowed")
    for name in document.keys() - required:  # optional fields are left out, never null
        if document[name] is None:
            raise InvalidInputError(f"field '{where}{name}': leave it out rather than null")


def _build(leaf: str, document: Any) -> Message:
    def_name = DEF_OF_LEAF.get(leaf)
    if def_name is None:
        raise InvalidInputError(
            f"unknown topic leaf {leaf!r}: expected one of {sorted(DEF_OF_LEAF)}"
        )
    _check_keys(def_name, document)
    fields_ = dict(document)
    version = fields_.pop("v")
    if type(version) is not int or version != VERSION:
        raise InvalidInputError(f"field 'v': {version!r} is not {VERSION}")
    if leaf == topics.ALARM_EVENT:
        for name in _MIRROR_FIELDS:  # derived when we build an event; required on the bus
            if fields_[name] is None:
                raise InvalidInputError(f"field '{name}': must not be null")
    if leaf == topics.ALARM_STATE:
        alarms = _sequence("alarms", fields_["alarms"])
        for i, entry in enumerate(alarms):
            _check_keys("alarm_entry", entry, f"alarms/{i}/")
        fields_["alarms"] = tuple(AlarmEntry(**entry) for entry in alarms)
    return MESSAGE_OF_LEAF[leaf](**fields_)


def decode(leaf: str, payload: bytes | bytearray | str, *, strict: bool = False) -> Message:
    """The message of ``leaf`` in ``payload``; InvalidInputError naming the field if invalid.

    Every field passes the schema's rules as plain Python checks (keys from the shipped
    schema; tests/ward/test_messages.py holds the two in agreement on fuzzed payloads), so a
    station keeps up with a ward: jsonschema costs ~0.5 ms a message, ~30 % of a core at 64
    beds x 10 Hz. The JSON Schema itself runs on every refusal (to name the field) and on
    every message with ``strict=True``.
    """
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{leaf} message is not UTF-8 JSON: {exc}") from exc
    if strict:
        validate(leaf, document)
    try:
        return _build(leaf, document)
    except (InvalidInputError, TypeError, ValueError) as refused:
        validate(leaf, document)  # the schema's own words when it refuses too
        raise InvalidInputError(f"{leaf} message: {refused}") from None
