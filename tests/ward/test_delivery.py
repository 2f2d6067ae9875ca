"""Delivery you can trust, without a broker: the receipt tracker on a fake clock, the bed's
own CENTRAL_UNREACHABLE technical alarm, and how engine alarm states become bus events."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

from painmon.core.live.alarms import (
    AlarmEventKind,
    AlarmManager,
    AlarmPriority,
    AlarmSettings,
    AlarmTally,
    SystemCondition,
    TechnicalCondition,
)
from painmon.core.live.display import technical_alarm_text
from painmon.core.util.errors import InvalidInputError
from painmon.core.ward.bed import (
    CENTRAL_UNREACHABLE,
    MAX_PENDING_EVENTS,
    AlarmEventMapper,
    DeliveryTracker,
    event_phase,
)
from painmon.core.ward.messages import decode

NOW = datetime(2026, 11, 27, 9, 30, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


# -- DeliveryTracker -----------------------------------------------------------------------------


def test_an_event_is_due_again_every_second_until_its_receipt():
    clock = FakeClock()
    tracker: DeliveryTracker[str] = DeliveryTracker(clock)
    tracker.add("u1", "payload-1")
    assert tracker.due() == []  # just sent
    clock.advance(0.99)
    assert tracker.due() == []
    clock.advance(0.01)
    assert tracker.due() == ["payload-1"]
    clock.advance(0.5)
    assert tracker.due() == []  # the re-send restarted its second
    clock.advance(0.5)
    assert tracker.due() == ["payload-1"]
    assert tracker.sends("u1") == 3
    assert tracker.receipt("u1") is True
    clock.advance(5.0)
    assert tracker.due() == [] and tracker.pending == 0
    assert tracker.receipt("u1") is False  # a duplicate receipt is harmless


def test_unreachable_after_more_than_five_seconds_without_receipt_and_clears_on_receipts():
    clock = FakeClock()
    tracker: DeliveryTracker[str] = DeliveryTracker(clock)
    assert not tracker.unreachable  # nothing waits
    tracker.add("u1", "a")
    clock.advance(3.0)
    tracker.add("u2", "b")
    clock.advance(2.0)
    assert not tracker.unreachable  # exactly 5 s is not more than 5 s
    clock.advance(0.01)
    assert tracker.unreachable
    tracker.receipt("u1")
    assert not tracker.unreachable  # u2 has waited 2.01 s only
    clock.advance(3.0)
    assert tracker.unreachable
    tracker.receipt("u2")
    assert not tracker.unreachable and tracker.receipted == 2


def test_events_sent_before_a_reconnect_go_out_again_at_once():
    clock = FakeClock()
    tracker: DeliveryTracker[str] = DeliveryTracker(clock)
    tracker.add("u1", "a")
    tracker.add("u2", "b")
    clock.advance(0.2)
    reconnected_s = clock()
    tracker.add("u3", "c")  # sent over the new link
    clock.advance(0.1)
    assert tracker.due(sent_before_s=reconnected_s) == ["a", "b"]
    assert tracker.due(sent_before_s=reconnected_s) == []


def test_memory_is_bounded_by_dropping_the_oldest_pending_event(caplog):
    clock = FakeClock()
    tracker: DeliveryTracker[int] = DeliveryTracker(clock, max_pending=3)
    for i in range(5):
        tracker.add(f"u{i}", i)
    assert tracker.pending == 3 and tracker.dropped == 2
    clock.advance(1.0)
    assert tracker.due() == [2, 3, 4]
    assert "no longer re-sent" in caplog.text
    assert MAX_PENDING_EVENTS >= 100  # a ward outage of minutes fits


def test_adding_the_same_uuid_twice_keeps_one_entry_and_its_first_send_time():
    clock = FakeClock()
    tracker: DeliveryTracker[str] = DeliveryTracker(clock)
    tracker.add("u1", "a")
    clock.advance(4.0)
    tracker.add("u1", "a")
    clock.advance(1.5)
    assert tracker.pending == 1 and tracker.unreachable


@pytest.mark.parametrize(
    "kwargs", [{"resend_s": 0}, {"unreachable_after_s": float("nan")}, {"max_pending": 0}]
)
def test_tracker_refuses_nonsense_settings(kwargs):
    with pytest.raises(InvalidInputError):
        DeliveryTracker(FakeClock(), **kwargs)


# -- CENTRAL_UNREACHABLE in the alarm manager -------------------------------------------------


def _manager() -> AlarmManager:
    return AlarmManager(AlarmSettings(alarm_delay_s=2.0), utc_clock=lambda: NOW)


def test_central_unreachable_is_a_logged_technical_alarm_that_leaves_pain_known():
    alarms = _manager()
    alarms.update(0.0, 1.0)
    state = alarms.set_system_condition(0.5, CENTRAL_UNREACHABLE, True)
    assert state.system_conditions == ("CENTRAL_UNREACHABLE",)
    assert state.technical_conditions == ()  # not a picture problem
    assert not state.output_unknown and state.pain_level == 1.0
    (event,) = state.new_events
    assert event.kind == AlarmEventKind.TECHNICAL_ONSET
    assert event.priority == AlarmPriority.TECHNICAL
    assert "central station not reached" in event.message
    # Raising it again changes nothing and logs nothing.
    assert alarms.set_system_condition(0.6, "CENTRAL_UNREACHABLE", True).new_events == ()
    tally = AlarmTally()
    tally.add(event)
    assert tally.technical == 1


def test_pain_alarms_keep_running_while_the_central_station_is_unreachable():
    alarms = _manager()
    alarms.set_system_condition(0.0, SystemCondition.CENTRAL_UNREACHABLE, True)
    kinds = []
    for t in np.arange(0.0, 3.01, 0.25):
        state = alarms.update(float(t), 3.0)
        kinds += [e.kind for e in state.new_events]
    assert AlarmEventKind.ONSET in kinds  # the pain alarm was raised as usual
    assert state.pain_priority == "medium" and state.system_conditions == ("CENTRAL_UNREACHABLE",)
    cleared = alarms.set_system_condition(3.5, CENTRAL_UNREACHABLE, False)
    assert cleared.system_conditions == ()
    assert [e.kind for e in cleared.new_events] == [AlarmEventKind.TECHNICAL_CLEAR]
    assert cleared.pain_priority == "medium"  # clearing it touches no pain alarm


def test_a_picture_condition_and_central_unreachable_are_shown_together():
    alarms = _manager()
    alarms.set_system_condition(0.0, CENTRAL_UNREACHABLE, True)
    state = alarms.update(0.1, None, TechnicalCondition.SIGNAL_LOST)
    assert state.technical_conditions == ("SIGNAL_LOST",)
    assert state.system_conditions == ("CENTRAL_UNREACHABLE",)
    text = technical_alarm_text(state.technical_conditions, state.system_conditions)
    assert text == "TECHNICAL ALARM: NO SIGNAL — pain output unknown; central station not reached"
    only = technical_alarm_text((), state.system_conditions)
    assert only == "TECHNICAL ALARM: central station not reached"
    assert "unknown" not in only


def test_a_session_started_while_unreachable_logs_it_as_active():
    alarms = _manager()
    alarms.set_system_condition(1.0, CENTRAL_UNREACHABLE, True)
    (event,) = alarms.active_alarm_events()
    assert event.kind == AlarmEventKind.ACTIVE_AT_SESSION_START
    assert "CENTRAL_UNREACHABLE" in event.message and event.priority == "technical"


def test_unknown_system_conditions_and_frame_use_are_refused():
    alarms = _manager()
    with pytest.raises(ValueError, match="unknown system condition"):
        alarms.set_system_condition(0.0, "NO_FACE", True)
    with pytest.raises(ValueError, match="unknown technical condition"):
        alarms.update(0.1, 1.0, "CENTRAL_UNREACHABLE")  # never a frame's condition


# -- engine alarm states -> bus events ---------------------------------------------------------


def _mapper() -> AlarmEventMapper:
    counter = itertools.count()
    return AlarmEventMapper(
        "W1",
        "bed-3",
        utc_clock=lambda: NOW,
        uuid_factory=lambda: f"00000000-0000-4000-8000-{next(counter):012d}",
    )


def _round_trip(message):
    """Every message the mapper makes passes the shipped schema on the way back in."""
    return decode(message.LEAF, message.to_payload())


def test_pain_episode_becomes_start_escalate_acknowledge_end_with_increasing_seq():
    alarms, mapper = _manager(), _mapper()
    sent, states = [], []
    levels = [3.0] * 12 + [3.8] * 12
    t = 0.0
    for level in levels:
        events, state_msg = mapper.map(alarms.update(t, level))
        sent += events
        states += [state_msg] if state_msg else []
        t += 0.25
    events, _ = mapper.map(alarms.acknowledge(t), acknowledged_by="station")
    sent += events
    for _ in range(40):
        t += 0.25
        events, state_msg = mapper.map(alarms.update(t, 0.5))
        sent += events
        states += [state_msg] if state_msg else []
    assert [(e.phase, e.priority) for e in sent] == [
        ("start", "medium"),
        ("escalate", "high"),
        ("acknowledge", "high"),
        ("end", "high"),
    ]
    assert [e.seq for e in sent] == [1, 2, 3, 4]
    assert len({e.uuid for e in sent}) == 4
    ack = sent[2]
    assert ack.by == "station" and ack.acknowledged
    assert ack.alert_condition_kind == "PHY" and ack.alert_condition_priority == "Hi"
    assert sent[3].presence is False and sent[0].presence is True
    for message in sent + states:
        assert _round_trip(message) == message
    assert states[-1].alarms == ()  # the retained state says: nothing active
    assert states[-1].seq == 4


def test_latched_high_acknowledged_is_followed_by_an_end():
    alarms, mapper = _manager(), _mapper()
    sent = []
    t = 0.0
    for level in [3.9] * 12 + [0.5] * 30:
        sent += mapper.map(alarms.update(t, level))[0]
        t += 0.25
    assert [e.phase for e in sent] == ["start"]  # latched: still active, no end yet
    events, state_msg = mapper.map(alarms.acknowledge(t))
    assert [(e.phase, e.by) for e in events] == [("acknowledge", "bed"), ("end", None)]
    assert state_msg is not None and state_msg.alarms == ()


def test_technical_alarms_become_low_priority_technical_events_with_their_condition():
    alarms, mapper = _manager(), _mapper()
    mapper.map(alarms.update(0.0, 1.0))
    events, state_msg = mapper.map(alarms.update(0.1, None, TechnicalCondition.FROZEN))
    (start,) = events
    assert (start.kind, start.condition, start.phase, start.priority) == (
        "technical",
        "FROZEN",
        "start",
        "low",
    )
    assert start.alert_condition_kind == "TEC"
    assert [(a.kind, a.condition) for a in state_msg.alarms] == [("technical", "FROZEN")]
    events, _ = mapper.map(alarms.set_system_condition(0.2, CENTRAL_UNREACHABLE, True))
    assert [(e.condition, e.phase) for e in events] == [("CENTRAL_UNREACHABLE", "start")]
    events, state_msg = mapper.map(alarms.update(0.3, 1.0))
    assert [(e.condition, e.phase) for e in events] == [("FROZEN", "end")]
    assert [a.condition for a in state_msg.alarms] == ["CENTRAL_UNREACHABLE"]
    for message in [*events, state_msg]:
        assert _round_trip(message) == message


def test_the_retained_state_is_republished_only_when_it_changes():
    alarms, mapper = _manager(), _mapper()
    _, first = mapper.map(alarms.update(0.0, 1.0))
    assert first is not None and first.alarms == () and first.seq == 0
    for t in (0.1, 0.2, 0.3):
        assert mapper.map(alarms.update(t, 1.0)) == ([], None)
    # An audio pause is no bus event, but it changes what the retained state says.
    for t in np.arange(0.5, 3.0, 0.25):
        mapper.map(alarms.update(float(t), 3.0))
    events, state_msg = mapper.map(alarms.audio_pause(3.0))
    assert events == [] and state_msg is not None and state_msg.alarms[0].audio_paused


@pytest.mark.parametrize("kind", list(AlarmEventKind))
def test_every_alarm_event_kind_has_a_decided_fate(kind):
    sent = {
        AlarmEventKind.ONSET,
        AlarmEventKind.ESCALATION,
        AlarmEventKind.ACKNOWLEDGE,
        AlarmEventKind.CLEAR,
        AlarmEventKind.TECHNICAL_ONSET,
        AlarmEventKind.TECHNICAL_CLEAR,
    }
    assert (event_phase(kind) is not None) == (kind in sent)


def test_mapper_refuses_bad_labels():
    with pytest.raises(InvalidInputError):
        AlarmEventMapper("W1", "bed/3")


# -- alert ids: one per alarm, the same on all its phases --------------------------------------


def _run(mapper, alarms, t: float, levels, condition=None) -> tuple[float, list]:
    sent = []
    for level in levels:
        sent += mapper.map(alarms.update(t, level, condition))[0]
        t += 0.25
    return t, sent


def test_one_pain_alarm_keeps_one_alert_id_from_start_to_end_and_the_next_gets_another():
    alarms, mapper = _manager(), _mapper()
    t, sent = _run(mapper, alarms, 0.0, [3.0] * 12 + [3.8] * 12)
    sent += mapper.map(alarms.acknowledge(t), acknowledged_by="station")[0]
    t, more = _run(mapper, alarms, t + 0.25, [0.5] * 40)
    sent += more
    t, second = _run(mapper, alarms, t, [3.0] * 12 + [0.5] * 40)
    assert [e.phase for e in sent] == ["start", "escalate", "acknowledge", "end"]
    assert [e.phase for e in second] == ["start", "end"]
    (first_id,) = {e.alert_id for e in sent}
    (second_id,) = {e.alert_id for e in second}
    assert first_id != second_id
    events = sent + second
    # The event uuid still names each event alone (receipts, de-duplication) ...
    assert len({e.uuid for e in events}) == 6
    # ... and no alert id is the uuid of some event.
    assert not {first_id, second_id} & {e.uuid for e in events}
    for message in events:
        decoded = _round_trip(message)
        assert decoded == message and decoded.alert_identifier == message.alert_id


def test_a_latched_alarm_keeps_its_alert_id_through_a_new_onset_to_its_end():
    alarms, mapper = _manager(), _mapper()
    t, sent = _run(mapper, alarms, 0.0, [3.9] * 12 + [0.5] * 30)
    assert [e.phase for e in sent] == ["start"]  # latched, still shown
    t, more = _run(mapper, alarms, t, [3.0] * 12)  # a new onset while the latch is shown
    sent += more
    sent += mapper.map(alarms.acknowledge(t))[0]
    t, more = _run(mapper, alarms, t + 0.25, [0.5] * 40)
    sent += more
    assert [e.phase for e in sent] == ["start", "start", "acknowledge", "end"]
    assert len({e.alert_id for e in sent}) == 1
    # A latched HIGH acknowledged: the acknowledge and the end that follows it share the id.
    t, again = _run(mapper, alarms, t, [3.9] * 12 + [0.5] * 30)
    again += mapper.map(alarms.acknowledge(t))[0]
    assert [e.phase for e in again] == ["start", "acknowledge", "end"]
    assert len({e.alert_id for e in again}) == 1
    assert again[0].alert_id != sent[0].alert_id


def test_each_technical_condition_is_an_alarm_of_its_own_with_one_alert_id():
    alarms, mapper = _manager(), _mapper()
    mapper.map(alarms.update(0.0, 1.0))
    sent = mapper.map(alarms.update(0.1, None, TechnicalCondition.FROZEN))[0]
    sent += mapper.map(alarms.set_system_condition(0.2, CENTRAL_UNREACHABLE, True))[0]
    sent += mapper.map(alarms.update(0.3, 1.0))[0]  # FROZEN ends
    sent += mapper.map(alarms.update(0.4, None, TechnicalCondition.FROZEN))[0]  # again
    sent += mapper.map(alarms.set_system_condition(0.5, CENTRAL_UNREACHABLE, False))[0]
    sent += mapper.map(alarms.update(0.6, 1.0))[0]
    assert [(e.condition, e.phase) for e in sent] == [
        ("FROZEN", "start"),
        ("CENTRAL_UNREACHABLE", "start"),
        ("FROZEN", "end"),
        ("FROZEN", "start"),
        ("CENTRAL_UNREACHABLE", "end"),
        ("FROZEN", "end"),
    ]
    frozen_1, unreachable, frozen_2 = (sent[0], sent[2]), (sent[1], sent[4]), (sent[3], sent[5])
    ids = []
    for start, end in (frozen_1, unreachable, frozen_2):
        assert start.alert_id == end.alert_id
        ids.append(start.alert_id)
    assert len(set(ids)) == 3
    assert all(_round_trip(e) == e for e in sent)
