"""BedPublisher against a real Eclipse Mosquitto: obs rate and expiry, alarm events re-sent
until the station's receipt, the bed's own CENTRAL_UNREACHABLE alarm, remote acknowledge.

The test plays the engine thread (it calls ``service``) and the station (a paho client).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from painmon.core.live.alarms import AlarmManager, AlarmSettings, AlarmState
from painmon.core.util.errors import InvalidInputError
from painmon.core.ward import topics
from painmon.core.ward.bed import (
    APPLIED,
    CENTRAL_UNREACHABLE,
    REMOTE_ACK_OFF_REASON,
    BedPublisher,
    bed_publisher_from_options,
)
from painmon.core.ward.broker import MosquittoBroker, free_port
from painmon.core.ward.client import BrokerAddress, close_client, connect_client
from painmon.core.ward.messages import (
    CommandMessage,
    ReceiptMessage,
    decode,
    new_uuid,
    utc_iso,
)

WARD, BED = "W1", "bed-3"


class FakeEngine:
    """The engine calls a BedPublisher makes: acknowledge and the system condition."""

    def __init__(self) -> None:
        self.alarms = AlarmManager(AlarmSettings(alarm_delay_s=1.0))
        self.media_now_s = 0.0
        self.acknowledged = 0

    def update(self, level: float | None) -> AlarmState:
        self.media_now_s += 0.25
        return self.alarms.update(self.media_now_s, level)

    def acknowledge(self, t_s: float) -> AlarmState:
        self.acknowledged += 1
        return self.alarms.acknowledge(t_s)

    def set_system_condition(self, condition: str, active: bool, t_s: float) -> AlarmState:
        return self.alarms.set_system_condition(t_s, condition, active)


class Station:
    """A raw paho subscriber standing in for the central station: records every message."""

    def __init__(
        self, url: str, subscriptions: list[str] | None = None, *, auto_receipt: bool = False
    ) -> None:
        self.messages: list[SimpleNamespace] = []
        self.auto_receipt = auto_receipt
        self._lock = threading.Lock()
        self._subscriptions = subscriptions or topics.station_subscriptions(WARD)
        self.client = connect_client(
            BrokerAddress.parse(url),
            f"test-station-{new_uuid()[:8]}",
            on_connect=self._on_connect,
            on_message=self._on_message,
        )

    def _on_connect(self, client, _userdata, _flags, _reason, _props) -> None:
        for sub in self._subscriptions:
            client.subscribe(sub, qos=1)

    def _on_message(self, _client, _userdata, message) -> None:
        _ward, _bed, leaf = topics.parse_topic(message.topic)
        entry = SimpleNamespace(
            leaf=leaf,
            body=decode(leaf, message.payload),
            retain=message.retain,
            properties=message.properties,
            arrived_s=time.monotonic(),
        )
        with self._lock:
            self.messages.append(entry)
        if self.auto_receipt and leaf == topics.ALARM_EVENT:
            receipt = ReceiptMessage(WARD, BED, utc_iso(), entry.body.uuid, "station-1")
            self.client.publish(
                topics.topic(WARD, BED, topics.CMD_RECEIPT), receipt.to_payload(), qos=1
            )

    def of(self, leaf: str) -> list[SimpleNamespace]:
        with self._lock:
            return [m for m in self.messages if m.leaf == leaf]

    def send(self, message) -> None:
        leaf = message.LEAF
        self.client.publish(
            topics.topic(WARD, BED, leaf), message.to_payload(), qos=1
        ).wait_for_publish(timeout=2)

    def receipt(self, uuid: str) -> None:
        self.send(ReceiptMessage(WARD, BED, utc_iso(), uuid, "station-1"))

    def close(self) -> None:
        close_client(self.client)


def wait_until(
    condition: Callable[[], bool], timeout_s: float, tick: Callable[[], object] | None = None
):
    """Poll ``condition`` (calling ``tick`` between polls, as the engine thread would)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def station(broker):
    running = Station(broker.url)
    yield running
    running.close()


def _publisher(url: str, **kwargs) -> BedPublisher:
    publisher = BedPublisher(BrokerAddress.parse(url), WARD, BED, **kwargs)
    publisher.start()
    return publisher


@pytest.fixture
def bed(broker, station):
    publishers: list[BedPublisher] = []

    def make(**kwargs) -> BedPublisher:
        publisher = _publisher(broker.url, **kwargs)
        publishers.append(publisher)
        assert wait_until(lambda: publisher.connected, 5)
        # The station sees it online before the test starts.
        assert wait_until(lambda: station.of(topics.STATUS), 5)
        return publisher

    yield make
    for publisher in publishers:
        publisher.stop("test over")


def _result(state: AlarmState, level: float = 1.2) -> SimpleNamespace:
    """What obs_message reads of an EngineResult."""
    smoothed = SimpleNamespace(
        pain_level=level, probs=(0.1, 0.6, 0.2, 0.05, 0.05), confidence=0.6, reason="known"
    )
    return SimpleNamespace(smoothed=smoothed, alarm_state=state, technical_condition=None)


def _onset(engine: FakeEngine) -> AlarmState:
    """Drive the engine into a MEDIUM pain alarm; the state that carries the onset."""
    for _ in range(20):
        state = engine.update(3.0)
        if state.new_events:
            return state
    raise AssertionError("no onset")


# -- obs ----------------------------------------------------------------------------------------


def test_obs_are_published_at_the_configured_rate_with_seq_and_expiry(bed, station):
    publisher = bed(obs_hz=5)
    (status,) = station.of(topics.STATUS)
    assert status.body.state == "online" and status.body.obs_hz == 5.0 and status.retain is False
    assert status.body.remote_ack is False and status.body.pseudonym is None
    engine = FakeEngine()
    state = engine.update(1.2)
    start = time.monotonic()
    while time.monotonic() - start < 2.0:  # results at ~50 fps, newest wins
        publisher.publish_result(_result(state))
        time.sleep(0.02)
    assert wait_until(lambda: len(station.of(topics.OBS)) >= publisher.obs_seq, 2)
    obs = station.of(topics.OBS)
    assert 8 <= len(obs) <= 12, len(obs)  # 5 Hz for 2 s
    assert [m.body.seq for m in obs] == list(range(len(obs)))
    for message in obs:
        assert message.body.known and message.body.level == pytest.approx(1.2)
        assert message.body.band == 1 and message.body.technical == ()
        assert not message.retain
        assert 0 < message.properties.MessageExpiryInterval <= topics.OBS_EXPIRY_S


def test_obs_rate_is_checked():
    for hz in (0.5, 11, float("nan")):
        with pytest.raises(InvalidInputError, match="obs rate"):
            BedPublisher(BrokerAddress.parse("mqtt://127.0.0.1:1"), WARD, BED, obs_hz=hz)
    with pytest.raises(InvalidInputError):
        BedPublisher(BrokerAddress.parse("mqtt://127.0.0.1:1"), WARD, "bed+1")


# -- alarm events and receipts --------------------------------------------------------------


def test_an_alarm_event_is_resent_every_second_until_its_receipt(bed, station):
    publisher = bed()
    engine = FakeEngine()
    assert publisher.publish_alarm_state(_onset(engine)) == 1

    def service():
        publisher.service(engine, engine.media_now_s)

    assert wait_until(lambda: len(station.of(topics.ALARM_EVENT)) >= 3, 4, service)
    copies = station.of(topics.ALARM_EVENT)
    assert len({m.body.uuid for m in copies}) == 1  # the same event, re-sent
    first = copies[0].body
    assert (first.kind, first.condition, first.phase, first.priority) == (
        "pain",
        "PAIN",
        "start",
        "medium",
    )
    gaps = [b.arrived_s - a.arrived_s for a, b in itertools.pairwise(copies)]
    assert all(gap > 0.8 for gap in gaps), gaps  # every ~1 s, not a burst
    # The retained alarm state says what is active.
    (alarm_state,) = station.of(topics.ALARM_STATE)[-1:]
    assert alarm_state.retain is False  # live delivery; the retained copy is for late joiners
    assert [a.condition for a in alarm_state.body.alarms] == ["PAIN"]

    station.receipt(first.uuid)
    assert wait_until(lambda: publisher.delivery.pending == 0, 3, service)
    sent = len(station.of(topics.ALARM_EVENT))
    wait_until(lambda: False, 2.0, service)
    assert len(station.of(topics.ALARM_EVENT)) == sent  # no more copies after the receipt
    assert not publisher.unreachable


@pytest.mark.slow
def test_no_receipt_for_five_seconds_raises_central_unreachable_until_receipts(bed, station):
    publisher = bed()
    engine = FakeEngine()
    onset = _onset(engine)
    published = time.monotonic()
    publisher.publish_alarm_state(onset)
    states: list[AlarmState] = []

    def service():
        states.extend(publisher.service(engine, engine.media_now_s))

    assert wait_until(lambda: publisher.unreachable, 7, service)
    assert time.monotonic() - published > 5.0
    service()
    (raised,) = [s for s in states if s.system_conditions]
    assert raised.system_conditions == (CENTRAL_UNREACHABLE,)
    assert raised.pain_priority == "medium" and not raised.output_unknown  # pain goes on

    def technical(phase):
        return [
            m.body
            for m in station.of(topics.ALARM_EVENT)
            if m.body.condition == CENTRAL_UNREACHABLE and m.body.phase == phase
        ]

    assert wait_until(lambda: technical("start"), 2, service)
    # The station answers everything it holds: the bed clears its technical alarm.
    for uuid in {m.body.uuid for m in station.of(topics.ALARM_EVENT)}:
        station.receipt(uuid)
    assert wait_until(lambda: not states[-1].system_conditions, 3, service)
    assert wait_until(lambda: technical("end"), 2, service)
    assert not publisher.unreachable


# -- remote acknowledge ---------------------------------------------------------------------


def _command() -> CommandMessage:
    return CommandMessage(WARD, BED, utc_iso(), new_uuid(), "station-1")


def test_remote_acknowledge_is_refused_when_the_bed_does_not_allow_it(bed, station):
    publisher = bed(remote_ack=False)
    engine = FakeEngine()
    publisher.publish_alarm_state(_onset(engine))
    command = _command()
    station.send(command)
    assert wait_until(
        lambda: station.of(topics.CMD_REPLY),
        3,
        lambda: publisher.service(engine, engine.media_now_s),
    )
    (reply,) = station.of(topics.CMD_REPLY)
    assert (reply.body.cmd_id, reply.body.ok, reply.body.reason) == (
        command.cmd_id,
        False,
        REMOTE_ACK_OFF_REASON,
    )
    assert engine.acknowledged == 0 and publisher.commands_refused == 1


def test_remote_acknowledge_is_applied_on_the_engine_thread_and_reflected_back(bed, station):
    publisher = bed(remote_ack=True)
    assert station.of(topics.STATUS)[-1].body.remote_ack is True
    engine = FakeEngine()
    publisher.publish_alarm_state(_onset(engine))
    command = _command()
    station.send(command)
    # Nothing happens to the engine until its own thread polls.
    time.sleep(0.3)
    assert engine.acknowledged == 0
    assert wait_until(
        lambda: station.of(topics.CMD_REPLY),
        3,
        lambda: publisher.service(engine, engine.media_now_s),
    )
    (reply,) = station.of(topics.CMD_REPLY)
    assert (reply.body.cmd_id, reply.body.ok, reply.body.reason) == (command.cmd_id, True, APPLIED)
    assert engine.acknowledged == 1
    assert wait_until(
        lambda: any(m.body.phase == "acknowledge" for m in station.of(topics.ALARM_EVENT)), 2
    )
    (ack,) = [m.body for m in station.of(topics.ALARM_EVENT) if m.body.phase == "acknowledge"]
    assert ack.by == "station" and ack.acknowledged
    assert wait_until(lambda: station.of(topics.ALARM_STATE)[-1].body.alarms[0].acknowledged, 2)


# -- status ---------------------------------------------------------------------------------


def test_a_clean_stop_leaves_a_retained_offline_status(broker, station):
    publisher = _publisher(broker.url, obs_hz=3)
    assert wait_until(lambda: publisher.connected, 5)
    publisher.stop("test")
    late = Station(broker.url, [topics.topic(WARD, BED, topics.STATUS)])
    try:
        assert wait_until(lambda: late.of(topics.STATUS), 3)
        (status,) = late.of(topics.STATUS)
        assert status.retain and status.body.state == "offline"
    finally:
        late.close()


@pytest.mark.slow
def test_a_broker_absent_at_start_raises_central_unreachable_then_clears(tmp_path):
    port = free_port()
    started = time.monotonic()
    publisher = _publisher(f"mqtt://127.0.0.1:{port}")
    engine = FakeEngine()
    states: list[AlarmState] = []

    def service():
        states.extend(publisher.service(engine, engine.media_now_s))

    try:
        assert wait_until(lambda: publisher.unreachable, 7, service)
        assert time.monotonic() - started > 5.0
        service()
        assert states[-1].system_conditions == (CENTRAL_UNREACHABLE,)
        with MosquittoBroker(tmp_path / "late-broker", port) as late_broker:
            station = Station(late_broker.url, auto_receipt=True)
            try:
                assert wait_until(lambda: publisher.connected, 6, service)
                # Cleared once the station confirmed the alarm's own start; then its end
                # is delivered and confirmed too.
                assert wait_until(lambda: not states[-1].system_conditions, 4, service)
                assert wait_until(lambda: publisher.delivery.pending == 0, 3, service)
                events = [m.body for m in station.of(topics.ALARM_EVENT)]
                assert {(e.condition, e.phase) for e in events} == {
                    (CENTRAL_UNREACHABLE, "start"),
                    (CENTRAL_UNREACHABLE, "end"),
                }
                assert station.of(topics.STATUS)[-1].body.state == "online"
            finally:
                publisher.stop("test over")
                station.close()
    finally:
        publisher.stop("test over")


# -- options --------------------------------------------------------------------------------


def test_options_are_checked_and_the_password_is_read_from_its_file(tmp_path, caplog):
    secret = tmp_path / "bed.pw"
    secret.write_text("s3cret-pw\n", encoding="utf-8")
    publisher = bed_publisher_from_options(
        "mqtt://127.0.0.1:1883", WARD, BED, username=BED, password_file=secret, obs_hz=4
    )
    assert publisher.obs_hz == 4.0 and publisher._password == "s3cret-pw"
    assert "s3cret" not in repr(publisher.address)
    with pytest.raises(InvalidInputError, match="--ward"):
        bed_publisher_from_options("mqtt://127.0.0.1:1883", None, BED)
    with pytest.raises(InvalidInputError, match="mqtt://"):
        bed_publisher_from_options("http://127.0.0.1:1883", WARD, BED)
    with pytest.raises(InvalidInputError, match="--tls-ca"):
        bed_publisher_from_options("mqtts://127.0.0.1:8883", WARD, BED)
    with pytest.raises(InvalidInputError, match="no such file"):
        bed_publisher_from_options(
            "mqtts://127.0.0.1:8883", WARD, BED, tls_ca=tmp_path / "missing-ca.pem"
        )
    assert "s3cret" not in caplog.text


def test_an_event_raised_while_the_broker_is_down_arrives_after_it_restarts(broker):
    station = Station(broker.url, auto_receipt=True)
    publisher = _publisher(broker.url)
    engine = FakeEngine()

    def service():
        publisher.service(engine, engine.media_now_s)

    try:
        assert wait_until(lambda: publisher.connected and station.of(topics.STATUS), 5)
        broker.kill()  # the crash case
        assert wait_until(lambda: not publisher.connected, 5, service)
        publisher.publish_alarm_state(_onset(engine))  # nothing can carry it now
        assert publisher.delivery.pending == 1
        broker.start()
        assert wait_until(lambda: publisher.connected, 5, service)
        assert wait_until(lambda: publisher.delivery.pending == 0, 5, service)
        (event,) = {m.body.uuid for m in station.of(topics.ALARM_EVENT)}
        assert event and not publisher.unreachable
        # On reconnecting the bed announced itself online again.
        assert [m.body.state for m in station.of(topics.STATUS)][-1] == "online"
    finally:
        publisher.stop("test over")
        station.close()
