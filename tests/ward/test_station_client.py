"""The station over a real Mosquitto: beds seen, receipts, acknowledge, Last Will, broker loss.

The bed here is a raw paho client (core.ward.client) publishing contract payloads, so the
station is tested against the bus, not against the bed module.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import pytest

from painmon.core.ward import messages, topics
from painmon.core.ward.broker import MosquittoBroker
from painmon.core.ward.client import BrokerAddress, close_client, connect_client, publish_message
from painmon.core.ward.security import write_acl, write_password_file
from painmon.core.ward.station import (
    COMMAND_APPLIED_TEXT,
    STATION_LOST_TEXT,
    BedState,
    StationClient,
    StationModel,
    station_client,
)

WARD = "icu"


class RawBed:
    """A bed made of a bare paho client: publishes what it is told, records its commands."""

    def __init__(self, url: str, bed: str, *, will: bool = True) -> None:
        self.bed = bed
        self.commands: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        offline = messages.StatusMessage(WARD, bed, messages.utc_iso(), "offline", "painmon test")
        self.client = connect_client(
            BrokerAddress.parse(url),
            f"raw-{bed}",
            will=(topics.topic(WARD, bed, topics.STATUS), offline.to_payload(), 1, True)
            if will
            else None,
            on_message=lambda _c, _u, m: self.commands.put((m.topic, bytes(m.payload))),
        )
        done = self.client.subscribe([(t, 1) for t in topics.bed_subscriptions(WARD, bed)])
        assert done[0] == 0
        self.obs_seq = 0

    def status(self, state: str = "online", remote_ack: bool = False) -> None:
        self._publish(
            messages.StatusMessage(
                WARD, self.bed, messages.utc_iso(), state, "painmon test", remote_ack
            )
        )

    def obs(self, level: float) -> None:
        band = min(4, int(level + 0.5))
        p = tuple(1.0 if i == band else 0.0 for i in range(5))
        self._publish(
            messages.ObsMessage(
                WARD, self.bed, messages.utc_iso(), self.obs_seq, True, level, p, 0.9, band
            )
        )
        self.obs_seq += 1

    def event(self, seq: int, phase: str, priority: str, uuid: str | None = None) -> str:
        uuid = uuid or messages.new_uuid()
        self._publish(
            messages.AlarmEventMessage(
                WARD,
                self.bed,
                messages.utc_iso(),
                uuid,
                seq,
                "pain",
                "PAIN",
                priority,
                phase,
                f"{priority} pain alarm",
                acknowledged=phase == "acknowledge",
                by="station" if phase == "acknowledge" else None,
            )
        )
        return uuid

    def reply(self, cmd_id: str, ok: bool, reason: str) -> None:
        self._publish(
            messages.CommandReplyMessage(WARD, self.bed, messages.utc_iso(), cmd_id, ok, reason)
        )

    def next_command(
        self, client: StationClient, model: StationModel, timeout_s: float = 5.0
    ) -> tuple[str, messages.Message]:
        """The next command for this bed, draining the station meanwhile (it sends them)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            client.drain(model)
            try:
                topic, payload = self.commands.get(timeout=0.01)
            except queue.Empty:
                continue
            leaf = topics.parse_topic(topic)[2]
            return leaf, messages.decode(leaf, payload)
        raise AssertionError(f"no command reached {self.bed} in {timeout_s} s")

    def _publish(self, message: object) -> None:
        publish_message(self.client, message).wait_for_publish(5)

    def vanish(self) -> None:
        """Die without DISCONNECT (a crash, a pulled cable): the broker sends the Will."""
        self.client.loop_stop()
        self.client.socket().close()

    def close(self) -> None:
        close_client(self.client)


def _until(client: StationClient, model: StationModel, check: Callable[[], bool], timeout_s=5.0):
    """Drain on this thread (the model's owner) until ``check()`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        client.drain(model)
        model.tick()
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s")


@pytest.fixture
def station(broker):
    model = StationModel("nurses")
    client = StationClient(BrokerAddress.parse(broker.url), ward=WARD, station_id="nurses")
    client.start(wait_s=5)
    _until(client, model, lambda: model.connected)
    yield client, model
    client.stop()


def test_a_bed_appears_and_every_alarm_event_gets_a_receipt_on_its_topic(broker, station):
    client, model = station
    bed = RawBed(broker.url, "bed1")
    try:
        bed.status("online")
        bed.obs(1.5)
        _until(client, model, lambda: model.bed_view(WARD, "bed1") is not None)
        _until(client, model, lambda: model.bed_view(WARD, "bed1").headline == "1.5")
        assert model.bed_view(WARD, "bed1").state is BedState.ONLINE
        uuid = bed.event(1, "start", "high")
        leaf, receipt = bed.next_command(client, model)
        assert leaf == topics.CMD_RECEIPT
        assert isinstance(receipt, messages.ReceiptMessage)
        assert (receipt.uuid, receipt.station, receipt.bed) == (uuid, "nurses", "bed1")
        assert model.bed_view(WARD, "bed1").priority == "high"
        # The bed missed the receipt and re-sends: a second receipt, no second alarm.
        bed.event(1, "start", "high", uuid=uuid)
        leaf, again = bed.next_command(client, model)
        assert (leaf, again.uuid) == (topics.CMD_RECEIPT, uuid)
        assert (model.events_received, model.duplicate_events) == (2, 1)
        assert len(model.bed_view(WARD, "bed1").alarms) == 1
        assert client.receipts_sent == 2
    finally:
        bed.close()


def test_acknowledge_goes_to_the_bed_and_its_reply_comes_back(broker, station):
    client, model = station
    bed = RawBed(broker.url, "bed2")
    try:
        bed.status("online", remote_ack=True)
        bed.obs(3.9)
        uuid = bed.event(1, "start", "high")
        assert bed.next_command(client, model)[0] == topics.CMD_RECEIPT
        _until(client, model, lambda: model.bed_view(WARD, "bed2").can_acknowledge)
        command = client.acknowledge(model, WARD, "bed2")
        leaf, received = bed.next_command(client, model)
        assert leaf == topics.CMD_ACKNOWLEDGE
        assert isinstance(received, messages.CommandMessage)
        assert (received.cmd_id, received.alarm_uuid) == (command.cmd_id, uuid)
        assert received.station == "nurses"
        bed.reply(received.cmd_id, True, "applied")
        bed.event(2, "acknowledge", "high")  # what a bed publishes when it applied it
        _until(
            client,
            model,
            lambda: (
                model.bed_view(WARD, "bed2").command_text == COMMAND_APPLIED_TEXT
                and model.bed_view(WARD, "bed2").acknowledged
            ),
        )
        assert len(model.ack_round_trips_s) == 1
    finally:
        bed.close()


def test_a_vanished_bed_shows_offline_through_its_last_will(broker, station):
    client, model = station
    bed = RawBed(broker.url, "bed3")
    bed.status("online")
    bed.obs(0.5)
    _until(client, model, lambda: model.bed_view(WARD, "bed3") is not None)
    bed.vanish()
    # keepalive 3 s: the broker notices a silent death within 1.5 x keepalive; a closed
    # socket it notices at once.
    _until(
        client, model, lambda: model.bed_view(WARD, "bed3").state is BedState.OFFLINE, timeout_s=6
    )
    # A station started later sees the retained Last Will straight away.
    late_model = StationModel("late")
    late = StationClient(BrokerAddress.parse(broker.url), ward=WARD, station_id="late").start(5)
    try:
        _until(
            late,
            late_model,
            lambda: (
                (v := late_model.bed_view(WARD, "bed3")) is not None and v.state is BedState.OFFLINE
            ),
        )
    finally:
        late.stop()


def test_broker_loss_is_a_station_technical_alarm_and_recovers(broker, station):
    client, model = station
    bed = RawBed(broker.url, "bed4", will=False)
    bed.status("online")
    bed.obs(1.0)
    _until(client, model, lambda: model.bed_view(WARD, "bed4") is not None)
    bed.close()
    broker.stop()
    _until(client, model, lambda: not model.connected)
    view = model.tick()
    assert view.station_alarm.startswith(STATION_LOST_TEXT)
    assert not view.connected
    broker.start()
    _until(client, model, lambda: model.connected, timeout_s=10)
    assert model.tick().station_alarm == ""
    # Subscriptions were renewed on the new session: a new bed is seen.
    late_bed = RawBed(broker.url, "bed5")
    try:
        late_bed.status("online")
        late_bed.obs(2.0)
        _until(client, model, lambda: model.bed_view(WARD, "bed5") is not None)
        # bed4's retained online status came back from the broker's persistence.
        assert model.bed_view(WARD, "bed4") is not None
    finally:
        late_bed.close()


def test_station_works_under_the_ward_acl_with_its_own_user(tmp_path, mosquitto_binary):
    """Password + ACL: the station reads every bed and may send its receipts and commands."""
    users = {"nurses": "station-secret", "bed7": "bed-secret"}
    password_file = write_password_file(tmp_path / "passwd", users)
    acl = write_acl(tmp_path / "acl", WARD, ["bed7"], "nurses")
    (tmp_path / "secret").write_text("station-secret\n")
    with MosquittoBroker(tmp_path / "b", password_file=password_file, acl_file=acl) as broker:
        model = StationModel("nurses")
        client = station_client(
            broker.url,
            ward=WARD,
            station_id="nurses",
            username="nurses",
            password_file=tmp_path / "secret",
        ).start(wait_s=5)
        bed = RawBed(broker.url.replace("://", "://bed7:bed-secret@"), "bed7")
        try:
            _until(client, model, lambda: model.connected)
            bed.status("online")
            uuid = bed.event(1, "start", "medium")
            leaf, receipt = bed.next_command(client, model)
            assert (leaf, receipt.uuid) == (topics.CMD_RECEIPT, uuid)
            assert model.bed_view(WARD, "bed7").priority == "medium"
        finally:
            bed.close()
            client.stop()


def test_station_client_options_are_checked(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    client = station_client(
        "mqtt://127.0.0.1:1883", ward=WARD, username="nurses", password_file=secret
    )
    assert client.subscriptions == topics.station_subscriptions(WARD)
    with pytest.raises(messages.InvalidInputError, match="needs --mqtt-user"):
        station_client("mqtt://127.0.0.1:1883", password_file=secret)
    with pytest.raises(messages.InvalidInputError, match="mqtt://"):
        station_client("http://127.0.0.1:1883")
    with pytest.raises(messages.InvalidInputError, match="ward"):
        station_client("mqtt://127.0.0.1:1883", ward="a/b")
    with pytest.raises(messages.InvalidInputError, match="not found"):
        station_client("mqtts://127.0.0.1:8883", tls_ca=tmp_path / "missing.pem")
    with pytest.raises(messages.InvalidInputError, match="need --tls-ca"):
        station_client("mqtt://127.0.0.1:1883", tls_cert=secret, tls_key=secret)


def test_painmon_station_refuses_bad_options_in_one_line(capsys):
    from painmon.core.tools.cli import main

    assert main(["station", "--broker", "http://127.0.0.1:1883"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mqtt://" in err[0] and err[0].startswith("painmon station: error:")
    assert main(["station", "--broker", "mqtt://u:hunter2@127.0.0.1:1", "--ward", "a/b"]) == 2
    err = capsys.readouterr().err
    assert "--mqtt-password-file" in err and "hunter2" not in err  # never on a command line
    assert main(["station", "--broker", "mqtt://u@127.0.0.1:1", "--ward", "a/b"]) == 2
    assert "ward 'a/b'" in capsys.readouterr().err


def test_painmon_station_without_the_ward_extra_names_it(monkeypatch, capsys):
    import importlib.util

    from painmon.core.tools.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "paho" else real(name, *a)
    )
    assert main(["station", "--broker", "mqtt://127.0.0.1:1883"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'painmon[ward]'" in err and "paho" in err


def test_with_the_real_bed_publisher_receipts_clear_its_delivery_and_acknowledge_applies(
    broker, station
):
    """End to end with core.ward.bed: a real AlarmManager's HIGH alarm reaches the station,
    its receipts empty the bed's delivery tracker, the station's acknowledge is applied."""
    from painmon.core.live.alarms import AlarmManager, AlarmSettings
    from painmon.core.ward.bed import BedPublisher

    class Engine:
        def __init__(self) -> None:
            self.alarms = AlarmManager(AlarmSettings(alarm_delay_s=0.5))

        def acknowledge(self, t_s):
            return self.alarms.acknowledge(t_s)

        def set_system_condition(self, condition, active, t_s):
            return self.alarms.set_system_condition(t_s, condition, active)

    client, model = station
    engine = Engine()
    bed = BedPublisher(BrokerAddress.parse(broker.url), WARD, "bed8", remote_ack=True)
    bed.start()
    t_s = [0.0]

    def engine_step() -> bool:
        t_s[0] += 0.1
        bed.publish_alarm_state(engine.alarms.update(t_s[0], 3.9))
        for state in bed.service(engine, t_s[0]):
            assert state is not None
        return True

    try:

        def high_and_receipted() -> bool:
            engine_step()
            view = model.bed_view(WARD, "bed8")
            return view is not None and view.priority == "high" and bed.delivery.pending == 0

        _until(client, model, high_and_receipted, timeout_s=10)
        assert model.bed_view(WARD, "bed8").can_acknowledge
        command = client.acknowledge(model, WARD, "bed8")
        assert command is not None

        def acknowledged() -> bool:
            engine_step()
            view = model.bed_view(WARD, "bed8")
            return view.acknowledged and view.command_text == COMMAND_APPLIED_TEXT

        _until(client, model, acknowledged, timeout_s=10)
        assert model.invalid_messages == 0  # every bed message passed the schema
    finally:
        bed.stop()
    _until(client, model, lambda: model.bed_view(WARD, "bed8").state is BedState.OFFLINE)
