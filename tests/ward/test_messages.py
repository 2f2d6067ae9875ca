"""Ward messages: every leaf round-trips, matches the shipped schema, and bad fields are named."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.ward import messages as m
from painmon.core.ward import topics

REPO = Path(__file__).resolve().parents[2]
T = "2026-11-27T10:00:00.123Z"
U1 = "0b7f3c1e-54a2-4c1e-9d53-0a1b2c3d4e5f"
U2 = "1c8f3c1e-54a2-4c1e-9d53-0a1b2c3d4e5f"
U3 = "2d9f3c1e-54a2-4c1e-9d53-0a1b2c3d4e5f"


def examples() -> dict[str, m.Message]:
    return {
        "obs": m.ObsMessage("w1", "b1", T, 7, True, 2.5, (0.1, 0.1, 0.2, 0.3, 0.3), 0.8, 3),
        "obs-unknown": m.ObsMessage(
            "w1", "b1", T, 8, False, None, None, None, None, ("NO_FACE",), "no face in view"
        ),
        "alarm/event": m.AlarmEventMessage(
            "w1", "b1", T, U1, 4, "pain", "PAIN", "high", "start", "pain level high"
        ),
        "alarm/event-alert": m.AlarmEventMessage(
            "w1", "b1", T, U2, 5, "pain", "PAIN", "high", "escalate", "escalated", alert_id=U3
        ),
        "alarm/event-ack": m.AlarmEventMessage(
            "w1",
            "b1",
            T,
            U2,
            5,
            "technical",
            "NO_FACE",
            "low",
            "acknowledge",
            "ack",
            True,
            "station",
        ),
        "alarm/state": m.AlarmStateMessage(
            "w1",
            "b1",
            T,
            5,
            (m.AlarmEntry("pain", "PAIN", "high", T, True, True, False),),
        ),
        "alarm/state-empty": m.AlarmStateMessage("w1", "b1", T, 0),
        "status": m.StatusMessage("w1", "b1", T, "online", "0.1.0", True, 10, "Mr X7"),
        "status-offline": m.StatusMessage("w1", "b1", T, "offline", "0.1.0"),
        "cmd/receipt": m.ReceiptMessage("w1", "b1", T, U1, "station-1"),
        "cmd/acknowledge": m.CommandMessage("w1", "b1", T, U2, "station-1", alarm_uuid=U1),
        "cmd/acknowledge-bare": m.CommandMessage("w1", "b1", T, U2, "station-1"),
        "cmd_reply": m.CommandReplyMessage(
            "w1", "b1", T, U2, False, "remote acknowledgement is off at this bed"
        ),
    }


@pytest.mark.parametrize("name", list(examples()))
def test_round_trip_and_schema(name):
    message = examples()[name]
    leaf = message.LEAF
    payload = message.to_payload()
    document = json.loads(payload)
    assert list(document)[:4] == ["v", "ward", "bed", "time"] and document["v"] == 1
    assert b" " not in payload.replace(b"pain level high", b"").replace(b"Mr X7", b"").replace(
        b"remote acknowledgement is off at this bed", b""
    ).replace(b"no face in view", b"")  # compact
    m.validate(leaf, document)  # what we build always passes the shipped schema
    assert m.decode(leaf, payload) == message
    assert m.decode(leaf, payload).to_payload() == payload  # stable key order


def test_alarm_event_carries_the_11073_mirror():
    event = json.loads(examples()["alarm/event"].to_payload())
    assert event["alert_condition_kind"] == "PHY"
    assert event["alert_condition_priority"] == "Hi"
    assert event["presence"] is True and event["determination_time"] == event["time"]
    end = replace(examples()["alarm/event"], phase="end", presence=None)
    assert end.presence is False
    tech = json.loads(examples()["alarm/event-ack"].to_payload())
    assert (tech["alert_condition_kind"], tech["alert_condition_priority"]) == ("TEC", "Lo")


def test_optional_fields_left_out_when_absent():
    assert "pseudonym" not in json.loads(examples()["status-offline"].to_payload())
    assert "alarm_uuid" not in json.loads(examples()["cmd/acknowledge-bare"].to_payload())
    assert "alert_id" not in json.loads(examples()["alarm/event"].to_payload())


def test_alarm_event_alert_id_is_optional_and_falls_back_to_the_event_uuid():
    with_id = examples()["alarm/event-alert"]
    document = json.loads(with_id.to_payload())
    assert document["alert_id"] == U3 and document["uuid"] == U2
    assert "alert_id" in m.schema()["$defs"]["alarm_event"]["properties"]
    assert "alert_id" not in m.schema()["$defs"]["alarm_event"]["required"]
    assert m.decode(with_id.LEAF, with_id.to_payload(), strict=True).alert_identifier == U3
    # An event from a bed older than the field: valid, and its uuid names the alarm.
    del document["alert_id"]
    old = m.decode(with_id.LEAF, json.dumps(document).encode(), strict=True)
    assert old.alert_id is None and old.alert_identifier == U2


def _mutated(name: str, **changes) -> bytes:
    document = json.loads(examples()[name].to_payload())
    for key, value in changes.items():
        if value is KeyError:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("name", "changes", "field"),
    [
        ("obs", {"level": 5.0}, "level"),
        ("obs", {"seq": -1}, "seq"),
        ("obs", {"seq": KeyError}, "seq"),
        ("obs", {"p": [0.5, 0.5]}, "p"),
        ("obs", {"band": 7}, "band"),
        ("obs", {"time": "2026-11-27 10:00:00"}, "time"),
        ("obs", {"bed": "b/2"}, "bed"),
        ("obs", {"v": 2}, "v"),
        ("obs", {"patient_name": "Jane Doe"}, "patient_name"),
        ("alarm/event", {"priority": "urgent"}, "priority"),
        ("alarm/event", {"uuid": "not-a-uuid"}, "uuid"),
        ("alarm/event", {"phase": "pause"}, "phase"),
        ("alarm/event-alert", {"alert_id": "not-a-uuid"}, "alert_id"),
        ("alarm/event-alert", {"alert_id": U3.upper()}, "alert_id"),
        ("alarm/event-alert", {"alert_id": None}, "alert_id"),
        ("alarm/state", {"alarms": [{"kind": "pain"}]}, "alarms/0/condition"),
        ("status", {"obs_hz": 20}, "obs_hz"),
        ("status", {"pseudonym": "Jane/Doe"}, "pseudonym"),
        ("cmd/acknowledge", {"command": "silence"}, "command"),
        ("cmd_reply", {"ok": "yes"}, "ok"),
    ],
)
def test_schema_refusals_name_the_field(name, changes, field):
    leaf = examples()[name].LEAF
    with pytest.raises(InvalidInputError, match=f"field '{field}'"):
        m.decode(leaf, _mutated(name, **changes))


@pytest.mark.parametrize(
    ("name", "changes", "field"),
    [
        ("obs", {"known": False}, "level"),  # level given while unknown
        ("obs", {"p": [0.5, 0.5, 0.5, 0.5, 0.5]}, "p"),  # does not sum to 1
        ("obs", {"unknown_reason": "x"}, "unknown_reason"),
        ("alarm/event", {"condition": "NO_FACE"}, "condition"),  # pain kind, technical name
        ("alarm/event", {"presence": False}, "presence"),  # start with presence false
        ("alarm/event", {"alert_condition_priority": "Lo"}, "alert_condition_priority"),
        ("alarm/event-ack", {"by": None}, "by"),
    ],
)
def test_cross_field_refusals(name, changes, field):
    leaf = examples()[name].LEAF
    with pytest.raises(InvalidInputError, match=f"field '{field}'"):
        m.decode(leaf, _mutated(name, **changes))


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (m.ObsMessage, {"level": float("nan")}, "level"),
        (m.ObsMessage, {"seq": True}, "seq"),
        (m.ObsMessage, {"ward": "w+"}, "ward"),
        (m.ObsMessage, {"time": "2026-13-40T10:00:00.123Z"}, None),
    ],
)
def test_constructor_checks(cls, kwargs, field):
    base = {
        "ward": "w",
        "bed": "b",
        "time": T,
        "seq": 0,
        "known": True,
        "level": 1.0,
        "p": None,
        "confidence": None,
        "band": None,
    }
    with pytest.raises(InvalidInputError, match=f"field '{field}'" if field else "time"):
        cls(**(base | kwargs))


@pytest.mark.parametrize("payload", [b"", b"{", b"\xff\xfe", b"[]", b"null"])
def test_garbage_payloads_refused(payload):
    with pytest.raises(InvalidInputError):
        m.decode("obs", payload)


def test_unknown_leaf_refused():
    with pytest.raises(InvalidInputError, match="unknown topic leaf"):
        m.decode("alarm/other", b"{}")


def test_every_leaf_has_a_schema_entry_and_a_class():
    defs = m.schema()["$defs"]
    for leaf in topics.LEAVES:
        assert m.DEF_OF_LEAF[leaf] in defs
        assert leaf == m.MESSAGE_OF_LEAF[leaf].LEAF


def test_schema_ships_in_the_wheel():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "schema/*.json" in config["package-data"]["painmon.core.ward"]
    assert (REPO / "core" / "ward" / "schema" / m.SCHEMA_FILE).is_file()


def test_utc_iso_format():
    assert m.utc_iso(0) == "1970-01-01T00:00:00.000Z"
    assert m.utc_iso(1.2345) == "1970-01-01T00:00:01.234Z"
    assert m.parse_utc(m.utc_iso(1.5)).timestamp() == 1.5


_FUZZ_VALUES = [
    None, True, False, 0, -1, 1, 2, 4, 5, 7, 10, 11, 0.5, 1.0, 2.5, 4.5, 1e9, float("nan"),
    "", "x", "b/2", "NO_FACE", "PAIN", "high", "start", "online", "acknowledge", "station",
    T, "2026-11-27T10:00:00Z", U1, U1.upper(), [], [0.2] * 5, [0.2] * 4, ["NO_FACE"],
    ["NO_FACE", "NO_FACE"], ["x"], {}, {"kind": "pain"}, "y" * 600,
]  # fmt: skip


@pytest.mark.parametrize("seed", [14, 15, 16])
def test_fast_decode_never_accepts_what_the_schema_refuses(seed):
    """decode() checks fields in Python; it must be at least as strict as the schema."""
    import random

    rng = random.Random(seed)
    accepted = refused = 0
    for _ in range(1500):
        name = rng.choice(list(examples()))
        message = examples()[name]
        document = json.loads(message.to_payload())
        for _ in range(rng.choice((1, 1, 2))):
            key = rng.choice([*document, "extra"])
            if rng.random() < 0.1:
                document.pop(key, None)
            else:
                document[key] = rng.choice(_FUZZ_VALUES)
        payload = json.dumps(document).encode()
        try:
            m.decode(message.LEAF, payload)
        except InvalidInputError:
            refused += 1
            continue
        accepted += 1
        m.validate(message.LEAF, document)  # raises if the fast path let a bad field through
    assert accepted > 40 and refused > 400  # both sides exercised


def test_strict_decode_runs_the_schema(monkeypatch):
    payload = examples()["obs"].to_payload()
    calls = []
    monkeypatch.setattr(m, "validate", lambda leaf, doc: calls.append(leaf))
    m.decode("obs", payload)
    assert calls == []
    m.decode("obs", payload, strict=True)
    assert calls == ["obs"]
