"""The station's model: beds, de-duplication with receipts, no data, OFFLINE, alarms (#14).

Fed with real bus payloads (core.ward.messages) and a fake clock: no broker, no Qt.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from painmon.core.live.display import ColourRole
from painmon.core.ward import messages, topics
from painmon.core.ward.station import (
    COMMAND_APPLIED_TEXT,
    COMMAND_NO_REPLY_TEXT,
    COMMAND_SENT_TEXT,
    NO_DATA_AFTER_S,
    SPARKLINE_S,
    STATION_LOST_TEXT,
    BedState,
    StationModel,
)

WARD = "icu"
T0 = "2026-11-27T10:00:00.000Z"


def _model() -> StationModel:
    return StationModel(
        "nurses", clock=lambda: 0.0, utc_clock=lambda: datetime(2026, 11, 27, tzinfo=UTC)
    )


def _obs(
    bed: str, seq: int, level: float | None, technical: tuple[str, ...] = ()
) -> tuple[str, bytes]:
    if level is None:
        message = messages.ObsMessage(
            WARD, bed, T0, seq, False, None, None, None, None, technical, "no face in view"
        )
    else:
        band = min(4, int(level + 0.5))
        p = [0.0] * 5
        p[band] = 1.0
        message = messages.ObsMessage(WARD, bed, T0, seq, True, level, tuple(p), 0.9, band)
    return topics.topic(WARD, bed, topics.OBS), message.to_payload()


def _status(bed: str, state: str, remote_ack: bool = False) -> tuple[str, bytes]:
    message = messages.StatusMessage(WARD, bed, T0, state, "painmon 1.0", remote_ack, 2.0)
    return topics.topic(WARD, bed, topics.STATUS), message.to_payload()


def _event(
    bed: str,
    seq: int,
    phase: str,
    priority: str = "medium",
    *,
    uuid: str | None = None,
    kind: str = "pain",
    condition: str = "PAIN",
    by: str | None = None,
) -> tuple[str, bytes, str]:
    uuid = uuid or messages.new_uuid()
    message = messages.AlarmEventMessage(
        WARD,
        bed,
        T0,
        uuid,
        seq,
        kind,
        condition,
        priority,
        phase,
        f"{priority} {phase}",
        acknowledged=phase == "acknowledge",
        by=by or ("station" if phase == "acknowledge" else None),
    )
    return topics.topic(WARD, bed, topics.ALARM_EVENT), message.to_payload(), uuid


def _state(bed: str, seq: int, *entries: messages.AlarmEntry) -> tuple[str, bytes]:
    message = messages.AlarmStateMessage(WARD, bed, T0, seq, tuple(entries))
    return topics.topic(WARD, bed, topics.ALARM_STATE), message.to_payload()


def test_beds_appear_with_their_first_message_in_label_order():
    model = _model()
    assert model.view(0.0).beds == ()
    for i, bed in enumerate(("bed10", "bed2", "bed1")):
        model.on_message(*_obs(bed, 0, 1.0 + i), now_s=0.1 * i)
    view = model.view(0.5)
    assert [b.bed for b in view.beds] == ["bed1", "bed2", "bed10"]
    bed10 = view.bed(WARD, "bed10")
    assert bed10.state is BedState.ONLINE
    assert bed10.headline == "1.0" and bed10.level == 1.0 and bed10.band == 1
    assert bed10.detail == "Mild" and bed10.role is ColourRole.NORMAL
    assert view.bed(WARD, "bed1").role is ColourRole.MEDIUM  # 3.0 >= the default 2.5


def test_alarm_events_are_deduplicated_by_uuid_but_every_copy_gets_a_receipt():
    model = _model()
    topic, start, uuid = _event("b1", 1, "start", "high")
    end_topic, end, end_uuid = _event("b1", 2, "end", "high")
    receipts = [model.on_message(topic, start, 1.0)]
    assert model.view(1.0).bed(WARD, "b1").priority == "high"
    receipts.append(model.on_message(end_topic, end, 1.1))
    # The bed did not get our first receipt and re-sends the start: confirm it again, but it
    # must not bring back the alarm that already ended.
    receipts.append(model.on_message(topic, start, 2.0))
    assert [r.uuid for r in receipts] == [uuid, end_uuid, uuid]
    assert all(isinstance(r, messages.ReceiptMessage) for r in receipts)
    assert {(r.ward, r.bed, r.station) for r in receipts} == {(WARD, "b1", "nurses")}
    assert model.view(2.0).bed(WARD, "b1").alarms == ()
    assert (model.events_received, model.duplicate_events) == (3, 1)
    assert len(model.recent_events(WARD, "b1")) == 2
    assert len(model.new_events) == 2


def test_no_data_when_obs_stop_for_1_5_s_although_the_bed_is_online():
    model = _model()
    model.on_message(*_status("b1", "online"), now_s=0.0)
    model.on_message(*_obs("b1", 0, 1.0), now_s=0.0)
    assert model.tick(NO_DATA_AFTER_S - 0.05).bed(WARD, "b1").state is BedState.ONLINE
    late = model.tick(NO_DATA_AFTER_S + 0.05).bed(WARD, "b1")
    assert late.state is BedState.NO_DATA
    assert late.headline == "NO DATA" and late.role is ColourRole.TECHNICAL
    assert late.level is None
    assert model.state_since(WARD, "b1") == (None, NO_DATA_AFTER_S + 0.05)
    model.on_message(*_obs("b1", 1, 1.0), now_s=3.0)
    assert model.tick(3.0).bed(WARD, "b1").state is BedState.ONLINE
    assert model.state_since(WARD, "b1") == (None, None)


def test_a_bed_that_sent_only_its_status_shows_no_data_after_1_5_s():
    model = _model()
    model.on_message(*_status("b1", "online"), now_s=10.0)
    assert model.view(10.5).bed(WARD, "b1").state is BedState.ONLINE
    assert model.view(12.0).bed(WARD, "b1").state is BedState.NO_DATA


def test_offline_from_the_retained_last_will_and_back_online():
    model = _model()
    model.on_message(*_obs("b1", 0, 3.0), now_s=0.0)
    model.on_message(*_event("b1", 1, "start", "medium")[:2], now_s=0.0)
    model.on_message(*_status("b1", "offline"), now_s=0.5)
    offline = model.tick(0.5).bed(WARD, "b1")
    assert offline.state is BedState.OFFLINE and offline.headline == "OFFLINE"
    assert offline.role is ColourRole.TECHNICAL
    assert "last known alarms" in offline.detail
    assert offline.sounding is None and not offline.can_acknowledge
    assert model.state_since(WARD, "b1")[0] == 0.5
    model.on_message(*_status("b1", "online", remote_ack=True), now_s=5.0)
    model.on_message(*_obs("b1", 0, 1.0), now_s=5.0)  # a restarted bed counts from 0
    back = model.view(5.0).bed(WARD, "b1")
    assert back.state is BedState.ONLINE and back.headline == "1.0" and back.remote_ack


def test_alarm_start_escalate_acknowledge_end_are_reflected_on_the_tile():
    model = _model()
    model.on_message(*_obs("b1", 0, 3.0), now_s=0.0)
    model.on_message(*_event("b1", 1, "start", "medium")[:2], now_s=0.0)
    view = model.view(0.0).bed(WARD, "b1")
    assert (view.priority, view.role, view.sounding) == ("medium", ColourRole.MEDIUM, "medium")
    assert view.alarm_text == "MEDIUM PAIN ALARM" and view.can_acknowledge
    model.on_message(*_event("b1", 2, "escalate", "high")[:2], now_s=0.5)
    view = model.view(0.5).bed(WARD, "b1")
    assert (view.priority, view.role, view.sounding) == ("high", ColourRole.HIGH, "high")
    assert model.view(0.5).sound_priority == "high"
    model.on_message(*_event("b1", 3, "acknowledge", "high")[:2], now_s=1.0)
    view = model.view(1.0).bed(WARD, "b1")
    assert view.acknowledged and view.sounding is None and not view.can_acknowledge
    assert view.alarm_text == "HIGH PAIN ALARM — acknowledged"
    assert view.role is ColourRole.HIGH  # still an alarm, only silenced
    model.on_message(*_event("b1", 4, "end", "high")[:2], now_s=1.2)
    view = model.view(1.2).bed(WARD, "b1")
    assert view.alarms == () and view.priority == "none" and view.role is ColourRole.MEDIUM


def test_technical_alarm_and_unknown_level_say_why():
    model = _model()
    model.on_message(*_obs("b1", 0, None, ("NO_FACE",)), now_s=0.0)
    model.on_message(
        *_event("b1", 1, "start", "low", kind="technical", condition="NO_FACE")[:2], now_s=0.0
    )
    view = model.view(0.2).bed(WARD, "b1")
    assert view.headline == "unknown" and view.detail == "unknown — no face"
    assert view.role is ColourRole.TECHNICAL and view.sounding is None
    assert view.alarm_text == "TECHNICAL: NO FACE"
    model.on_message(
        *_event("b1", 2, "start", "low", kind="technical", condition="CENTRAL_UNREACHABLE")[:2],
        now_s=0.3,
    )
    assert "CENTRAL STATION NOT REACHED" in model.view(0.3).bed(WARD, "b1").alarm_text
    model.on_message(
        *_event("b1", 3, "start", "low", kind="technical", condition="RECORDING_FAILED")[:2],
        now_s=0.4,
    )  # the bed's disk is full: its words, not the bare condition name
    assert "SESSION NOT RECORDED" in model.view(0.4).bed(WARD, "b1").alarm_text


def test_the_retained_alarm_state_replaces_the_table_and_older_events_do_not_win():
    model = _model()
    entry = messages.AlarmEntry("pain", "PAIN", "high", T0, acknowledged=False, latched=True)
    model.on_message(*_state("b1", 7, entry), now_s=0.0)
    view = model.view(0.0).bed(WARD, "b1")
    assert view.priority == "high" and view.alarms[0].latched
    assert view.alarm_text == "HIGH PAIN ALARM (latched)"
    # An event counted before the state (a late re-send) changes nothing but is confirmed.
    receipt = model.on_message(*_event("b1", 6, "end", "high")[:2], now_s=0.1)
    assert receipt is not None
    assert model.view(0.1).bed(WARD, "b1").priority == "high"
    model.on_message(*_state("b1", 8), now_s=0.2)
    assert model.view(0.2).bed(WARD, "b1").alarms == ()
    # A bed that restarted counts from 0: its (lower) state is taken as it is.
    model.on_message(*_state("b1", 0, entry), now_s=0.3)
    model.on_message(*_event("b1", 1, "end", "high")[:2], now_s=0.4)
    assert model.view(0.4).bed(WARD, "b1").alarms == ()


def test_the_sparkline_holds_ten_minutes_of_one_second_buckets():
    model = _model()
    model.on_message(*_obs("b1", 0, 1.0), now_s=0.2)
    model.on_message(*_obs("b1", 1, 2.0), now_s=0.7)  # the same second: the highest stays
    model.on_message(*_obs("b1", 2, 0.5), now_s=300.0)
    model.on_message(*_obs("b1", 3, None, ("NO_FACE",)), now_s=400.0)
    model.on_message(*_obs("b1", 4, 3.0), now_s=599.5)
    spark = model.view(599.5).bed(WARD, "b1").sparkline
    assert len(spark) == SPARKLINE_S
    assert spark[0] == 2.0 and spark[300] == 0.5 and spark[400] is None and spark[-1] == 3.0
    assert sum(v is not None for v in spark) == 3
    model.on_message(*_obs("b1", 5, 4.0), now_s=601.0)
    spark = model.view(601.0).bed(WARD, "b1").sparkline
    assert len(spark) == SPARKLINE_S and spark[-1] == 4.0
    assert 2.0 not in spark  # second 0 slid out of the ten minutes
    assert spark[300 - 2] == 0.5
    trend = model.trend(WARD, "b1", 601.0)
    assert [level for _, level in trend] == [2.0, 0.5, None, 3.0, 4.0]
    assert trend[0][0] < -590 and trend[-1][0] > -5


def test_obs_seq_gaps_are_counted_and_old_obs_never_win():
    model = _model()
    for seq, level in ((0, 1.0), (1, 1.0), (4, 2.0), (3, 3.5)):
        model.on_message(*_obs("b1", seq, level), now_s=0.1 * seq)
    assert model.obs_counts() == {(WARD, "b1"): (3, 2)}
    assert model.view(0.5).bed(WARD, "b1").level == 2.0


def test_acknowledge_command_and_the_beds_reply():
    model = _model()
    assert model.acknowledge(WARD, "nobody", 0.0) is None
    model.on_message(*_obs("b1", 0, 3.8), now_s=0.0)
    assert model.acknowledge(WARD, "b1", 0.0) is None  # nothing to acknowledge
    _, start, start_uuid = _event("b1", 1, "start", "high")
    model.on_message(topics.topic(WARD, "b1", topics.ALARM_EVENT), start, now_s=0.0)
    command = model.acknowledge(WARD, "b1", 1.0)
    assert isinstance(command, messages.CommandMessage)
    assert (command.ward, command.bed, command.station) == (WARD, "b1", "nurses")
    assert command.alarm_uuid == start_uuid and command.command == "acknowledge"
    assert model.view(1.0).bed(WARD, "b1").command_text == COMMAND_SENT_TEXT
    reply = messages.CommandReplyMessage(
        WARD, "b1", T0, command.cmd_id, False, "remote acknowledgement is off at this bed"
    )
    model.on_message(topics.topic(WARD, "b1", topics.CMD_REPLY), reply.to_payload(), 1.3)
    assert model.view(1.3).bed(WARD, "b1").command_text == (
        "refused: remote acknowledgement is off at this bed"
    )
    assert list(model.ack_round_trips_s) == [pytest.approx(0.3)]
    second = model.acknowledge(WARD, "b1", 2.0)
    ok = messages.CommandReplyMessage(WARD, "b1", T0, second.cmd_id, True, "applied")
    model.on_message(topics.topic(WARD, "b1", topics.CMD_REPLY), ok.to_payload(), 2.1)
    assert model.tick(2.1).bed(WARD, "b1").command_text == COMMAND_APPLIED_TEXT
    model.acknowledge(WARD, "b1", 3.0)
    assert model.tick(7.9).bed(WARD, "b1").command_text == COMMAND_SENT_TEXT
    assert model.tick(8.1).bed(WARD, "b1").command_text == COMMAND_NO_REPLY_TEXT


def test_bad_messages_are_dropped_without_raising():
    model = _model()
    topic, payload = _obs("b1", 0, 1.0)
    assert model.on_message(topic, b"{not json", 0.0) is None
    assert model.on_message(topic, b'{"v": 1}', 0.0) is None
    assert model.on_message("painmon/v1/icu/b+/obs", payload, 0.0) is None
    assert model.on_message("other/topic", payload, 0.0) is None
    # A payload naming another bed than its topic (spoofing past the ACL) is refused.
    assert model.on_message(topics.topic(WARD, "b2", topics.OBS), payload, 0.0) is None
    assert model.on_message(topic, b"", 0.0) is None  # a retained message cleared
    assert model.invalid_messages == 5
    assert model.view(0.0).beds == ()


def test_station_broker_loss_is_a_station_technical_alarm():
    model = _model()
    assert model.view(0.0).station_alarm == "connecting to the broker…"
    model.set_connection(True, 0.0)
    assert model.view(0.0).station_alarm == "" and model.view(0.0).connected
    model.set_connection(False, 1.0, "connection lost")
    view = model.view(1.0)
    assert not view.connected
    assert (
        view.station_alarm.startswith(STATION_LOST_TEXT) and "connection lost" in view.station_alarm
    )
    model.set_connection(True, 2.0)
    assert model.view(2.0).station_alarm == ""


def test_a_station_that_never_reaches_its_broker_says_so_after_5_s():
    model = _model()  # created at 0.0 on its clock
    assert model.view(4.9).station_alarm == "connecting to the broker…"
    assert model.view(5.1).station_alarm.startswith(
        "TECHNICAL ALARM: the station cannot reach the broker"
    )


def test_station_sound_is_the_highest_unacknowledged_alarm_of_online_beds():
    model = _model()
    for bed in ("b1", "b2", "b3"):
        model.on_message(*_obs(bed, 0, 3.0), now_s=0.0)
    model.on_message(*_event("b1", 1, "start", "medium")[:2], now_s=0.0)
    assert model.view(0.0).sound_priority == "medium"
    model.on_message(*_event("b2", 1, "start", "high")[:2], now_s=0.0)
    assert model.view(0.0).sound_priority == "high"
    model.on_message(*_status("b2", "offline"), now_s=0.1)
    assert model.view(0.1).sound_priority == "medium"
    model.on_message(*_event("b1", 2, "acknowledge", "medium", by="bed")[:2], now_s=0.2)
    assert model.view(0.2).sound_priority is None


def test_station_id_must_be_a_label():
    with pytest.raises(messages.InvalidInputError):
        StationModel("nurses station")
