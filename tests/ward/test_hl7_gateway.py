"""The HL7 gateway end to end: a real mosquitto, a raw paho "bed", an MLLP listener."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.ward import topics
from painmon.core.ward.client import BrokerAddress, close_client, connect_client, publish_message
from painmon.core.ward.hl7_gateway import Hl7Gateway, ObsAggregator, parse_host_port
from painmon.core.ward.messages import (
    AlarmEventMessage,
    ObsMessage,
    StatusMessage,
    new_uuid,
    utc_iso,
)
from painmon.core.ward.mllp import MllpTestServer, message_control_id

WARD = "W1"
P = (0.1, 0.2, 0.4, 0.2, 0.1)


def _obs(bed: str, seq: int, known: bool = True, level: float = 2.0) -> ObsMessage:
    if known:
        return ObsMessage(WARD, bed, utc_iso(), seq, True, level, P, 0.8, 2)
    return ObsMessage(
        WARD, bed, utc_iso(), seq, False, None, None, None, None, ("NO_FACE",), "no face in view"
    )


def _alarm(bed: str, seq: int = 1) -> AlarmEventMessage:
    return AlarmEventMessage(
        WARD, bed, utc_iso(), new_uuid(), seq, "pain", "PAIN", "high", "start", "Pain level high"
    )


def _segments(message: bytes) -> list[list[str]]:
    return [s.split("|") for s in message.decode().split("\r") if s]


def _obx_value(message: bytes, code: str) -> str | None:
    for seg in _segments(message):
        if seg[0] == "OBX" and seg[3].startswith(code + "^"):
            return seg[5]
    return None


def _by_type(messages: list[bytes], message_type: str) -> list[bytes]:
    return [m for m in messages if _segments(m)[0][8] == message_type]


def _bed_of(message: bytes) -> str:
    pv1 = next(s for s in _segments(message) if s[0] == "PV1")
    return pv1[3].split("^")[2]


def _wait(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _bed_client(url: str):
    return connect_client(BrokerAddress.parse(url), "test-bed-publisher")


def _subscribed(gateway: Hl7Gateway, bed: str) -> bool:
    # The retained status arrives on subscribe: once it is in, the subscriptions are live.
    return (WARD, bed) in gateway.pseudonyms


def _publish_obs(client, beds: list[str], seconds: float, hz: float = 10.0, start_seq=0):
    sent = dict.fromkeys(beds, 0)
    seq = start_seq
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for bed in beds:
            known = seq % 5 != 0
            publish_message(client, _obs(bed, seq, known, level=1.0 + (seq % 3)))
            sent[bed] += 1
        seq += 1
        time.sleep(1.0 / hz)
    return sent


def _offline_gateway(outbox: Path, mllp_port: int = 9, **kwargs) -> Hl7Gateway:
    """A gateway fed through ``handle``/``tick`` by the test: no broker (nor receiver)."""
    return Hl7Gateway(
        "mqtt://127.0.0.1:1", "127.0.0.1", mllp_port, outbox, clock=lambda: 0.0, **kwargs
    )


def _pending_segments(gateway: Hl7Gateway) -> list[list[list[str]]]:
    return [_segments(p.read_bytes()) for p in gateway.outbox.pending()]


def test_parse_host_port_and_aggregator_refusals() -> None:
    assert parse_host_port("127.0.0.1:2575") == ("127.0.0.1", 2575)
    assert parse_host_port("[::1]:2575") == ("::1", 2575)
    for bad in ("host", "host:0", "host:x", ":2575"):
        with pytest.raises(InvalidInputError):
            parse_host_port(bad)
    with pytest.raises(InvalidInputError):
        ObsAggregator(0)


def test_aggregator_median_and_unknown_counts() -> None:
    agg = ObsAggregator(60)
    for i, level in enumerate([1.0, 3.0, 2.0]):
        agg.add(_obs("b1", i, level=level), now_s=float(i))
    agg.add(_obs("b1", 3, known=False), now_s=3.0)
    agg.add(_obs("b2", 0, known=False), now_s=3.0)
    assert agg.due(59.9) == []
    (b1,) = agg.due(60.0)
    assert (b1.bed, b1.n_obs, b1.n_unknown, b1.median_level) == ("b1", 4, 1, 2.0)
    assert b1.unknown_reason is None
    (b2,) = agg.flush({(WARD, "b2"): "P-9"})
    assert (b2.median_level, b2.n_unknown, b2.unknown_reason, b2.pseudonym) == (
        None,
        1,
        "no face in view",
        "P-9",
    )


def test_gateway_sends_pcd01_per_bed_per_period_and_one_pcd04_per_alarm(
    tmp_path: Path, broker
) -> None:
    beds = ["bed-1", "bed-2"]
    bed = _bed_client(broker.url)
    try:
        publish_message(
            bed, StatusMessage(WARD, "bed-1", utc_iso(), "online", "test", pseudonym="P-1")
        ).wait_for_publish(5)
        with MllpTestServer() as listener:
            gateway = Hl7Gateway(
                broker.url, "127.0.0.1", listener.port, tmp_path / "outbox", ward=WARD, every_s=1.0
            )
            gateway.start()
            try:
                assert _wait(lambda: _subscribed(gateway, "bed-1"))
                sent = _publish_obs(bed, beds, seconds=2.5)
                alarm = _alarm("bed-2")
                publish_message(bed, alarm).wait_for_publish(5)
                publish_message(bed, alarm).wait_for_publish(5)  # the bed's re-send
                assert _wait(lambda: len(_by_type(listener.accepted, "ORU^R40^ORU_R40")) >= 1)
            finally:
                gateway.stop(drain_s=5)
            accepted = list(listener.accepted)
    finally:
        close_client(bed)

    reports = _by_type(accepted, "ORU^R01^ORU_R01")
    for name in beds:
        mine = [m for m in reports if _bed_of(m) == name]
        assert len(mine) >= 2, f"{name}: one report per 1 s period over 2.5 s"
        counted = sum(int(_obx_value(m, "PAINMON-OBS-COUNT")) for m in mine)
        assert counted == sent[name]  # QoS 0 on loopback: every obs is in some period
        unknown = sum(int(_obx_value(m, "PAINMON-UNKNOWN-COUNT")) for m in mine)
        assert 0 < unknown < counted
        pids = {next(s for s in _segments(m) if s[0] == "PID")[3] for m in mine}
        assert pids == ({"P-1^^^PAINMON^ANON"} if name == "bed-1" else {""})
    alarms = _by_type(accepted, "ORU^R40^ORU_R40")
    assert len(alarms) == 1  # de-duplicated by uuid
    obr = next(s for s in _segments(alarms[0]) if s[0] == "OBR")
    assert obr[3] == f"{alarm.uuid}^PAINMON"
    assert _bed_of(alarms[0]) == "bed-2"
    assert gateway.outbox.pending() == []


@pytest.mark.slow
def test_gateway_restart_loses_no_message(tmp_path: Path, broker) -> None:
    outbox = tmp_path / "outbox"
    bed = _bed_client(broker.url)
    alarms = []
    try:
        publish_message(
            bed, StatusMessage(WARD, "bed-1", utc_iso(), "online", "test", pseudonym="P-1")
        ).wait_for_publish(5)
        with MllpTestServer(mode="drop") as listener:  # the record is down at first
            first = Hl7Gateway(
                broker.url,
                "127.0.0.1",
                listener.port,
                outbox,
                ward=WARD,
                every_s=1.0,
                backoff_s=0.05,
                backoff_max_s=0.2,
                mllp_timeout_s=0.5,
            ).start()
            assert _wait(lambda: _subscribed(first, "bed-1"))
            _publish_obs(bed, ["bed-1"], seconds=1.5)
            alarms.append(_alarm("bed-1", 1))
            publish_message(bed, alarms[-1]).wait_for_publish(5)
            assert _wait(lambda: len(first.produced) >= 2)
            first.stop(drain_s=0)  # a restart mid-run, messages still waiting
            left = len(first.outbox.pending())
            assert left >= 2

            listener.mode = "AA"  # the record is back; a new gateway on the same outbox
            # The second gateway starts with the saved pseudonyms: a new one shows when the
            # bus is live again.
            publish_message(
                bed, StatusMessage(WARD, "bed-1", utc_iso(), "online", "test", pseudonym="P-2")
            ).wait_for_publish(5)
            second = Hl7Gateway(
                broker.url,
                "127.0.0.1",
                listener.port,
                outbox,
                ward=WARD,
                every_s=1.0,
                backoff_s=0.05,
                backoff_max_s=0.2,
            ).start()
            try:
                assert _wait(lambda: second.pseudonyms.get((WARD, "bed-1")) == "P-2")
                _publish_obs(bed, ["bed-1"], seconds=1.5, start_seq=1000)
                alarms.append(_alarm("bed-1", 2))
                publish_message(bed, alarms[-1]).wait_for_publish(5)
                assert _wait(lambda: len(_by_type(listener.accepted, "ORU^R40^ORU_R40")) >= 2)
            finally:
                second.stop(drain_s=5)
            accepted = list(listener.accepted)
    finally:
        close_client(bed)

    produced = first.produced + second.produced
    got = {message_control_id(m) for m in accepted}
    assert set(produced) <= got, "every message made by either gateway reached the record"
    assert second.outbox.pending() == []
    alarm_ids = {
        next(s for s in _segments(m) if s[0] == "OBR")[3].split("^")[0]
        for m in _by_type(accepted, "ORU^R40^ORU_R40")
    }
    assert alarm_ids == {a.uuid for a in alarms}
    # Duplicates are allowed (a message answered just before a stop) but carry the same id.
    assert len(accepted) >= len(produced)


def test_cli_bad_input_is_one_line(capsys) -> None:
    from painmon.core.tools.cli import main

    assert main(["hl7-gateway", "--broker", "mqtt://127.0.0.1:1", "--mllp", "nohost"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HOST:PORT" in err[0] and "Traceback" not in err[0]
    code = main(["hl7-gateway", "--broker", "mqtt://u:s3cret@127.0.0.1:1", "--mllp", "h:1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "s3cret" not in err
    assert "--mqtt-password-file" in err  # a password on a command line is refused


def test_cli_names_the_ward_extra_when_missing(capsys, monkeypatch) -> None:
    import importlib.util

    from painmon.core.tools.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "hl7apy" else real(name, *a)
    )
    assert main(["hl7-gateway", "--broker", "mqtt://127.0.0.1:1", "--mllp", "h:1"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'painmon[ward]'" in err and "hl7apy" in err


@pytest.mark.slow
def test_cli_runs_until_interrupted(tmp_path: Path, broker) -> None:
    import signal
    import subprocess
    import sys

    with MllpTestServer() as listener:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from painmon.core.tools.cli import main; sys.exit(main())",
                "hl7-gateway",
                "--broker",
                broker.url,
                "--mllp",
                listener.address,
                "--ward",
                WARD,
                "--every-s",
                "1",
                "--outbox",
                str(tmp_path / "outbox"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        bed = _bed_client(broker.url)
        try:
            deadline = time.monotonic() + 20
            while not listener.accepted and time.monotonic() < deadline:
                _publish_obs(bed, ["bed-9"], seconds=0.5)
        finally:
            close_client(bed)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert listener.accepted and _bed_of(listener.accepted[0]) == "bed-9"


def test_gateway_runs_as_a_read_only_user(tmp_path: Path, mosquitto_binary) -> None:
    from painmon.core.ward.broker import MosquittoBroker
    from painmon.core.ward.security import write_acl, write_password_file

    secrets = {"bed-1": "bed-pw", "station": "st-pw", "hl7gw": "gw-pw"}
    pw = write_password_file(tmp_path / "passwd", secrets)
    acl = write_acl(tmp_path / "acl", WARD, ["bed-1"], "station", readers=["hl7gw"])
    with (
        MosquittoBroker(tmp_path / "broker", password_file=pw, acl_file=acl) as broker,
        MllpTestServer() as listener,
    ):
        bed = connect_client(
            BrokerAddress.parse(broker.url), "bed-1", username="bed-1", password="bed-pw"
        )
        gateway = Hl7Gateway(
            broker.url,
            "127.0.0.1",
            listener.port,
            tmp_path / "outbox",
            ward=WARD,
            every_s=1.0,
            username="hl7gw",
            password="gw-pw",
        ).start()
        try:
            publish_message(
                bed, StatusMessage(WARD, "bed-1", utc_iso(), "online", "test", pseudonym="P-1")
            ).wait_for_publish(5)
            assert _wait(lambda: _subscribed(gateway, "bed-1"))
            alarm = _alarm("bed-1")
            publish_message(bed, alarm).wait_for_publish(5)
            assert _wait(lambda: len(listener.accepted) >= 1)
        finally:
            gateway.stop(drain_s=5)
            close_client(bed)
    (report,) = listener.accepted
    assert f"{alarm.uuid}^PAINMON" in report.decode()
    log_text = "".join(
        p.read_text(errors="replace") for p in (tmp_path / "outbox").rglob("*") if p.is_file()
    )
    assert "gw-pw" not in log_text


def test_gateway_resubscribes_after_a_broker_restart(tmp_path: Path, broker) -> None:
    with MllpTestServer() as listener:
        gateway = Hl7Gateway(
            broker.url, "127.0.0.1", listener.port, tmp_path / "outbox", ward=WARD, every_s=60
        ).start()
        try:
            broker.restart()  # SIGTERM + start: the gateway reconnects on its own
            bed = _bed_client(broker.url)
            try:
                deadline = time.monotonic() + 15
                while not listener.accepted and time.monotonic() < deadline:
                    publish_message(bed, _alarm("bed-7")).wait_for_publish(5)
                    time.sleep(0.5)
            finally:
                close_client(bed)
        finally:
            gateway.stop(drain_s=5)
    assert listener.accepted, "alarm events reached the record after the broker came back"


def test_a_payload_naming_another_bed_is_refused(tmp_path: Path, caplog) -> None:
    gateway = _offline_gateway(tmp_path / "outbox", every_s=60)
    try:
        own = StatusMessage(WARD, "bed-2", utc_iso(), "online", "test", pseudonym="P-2")
        gateway.handle(topics.topic(WARD, "bed-2", topics.STATUS), own.to_payload(), 0.0)
        # bed-1 may publish on its own topics only (the ACL), but names bed-2 in the payload.
        spoofed = {
            topics.ALARM_EVENT: _alarm("bed-2"),
            topics.OBS: _obs("bed-2", 0),
            topics.STATUS: StatusMessage(
                WARD, "bed-2", utc_iso(), "online", "test", pseudonym="OTHER-PATIENT"
            ),
        }
        with caplog.at_level(logging.WARNING, logger="painmon.core.ward.hl7_gateway"):
            for leaf, message in spoofed.items():
                gateway.handle(topics.topic(WARD, "bed-1", leaf), message.to_payload(), 0.0)
        gateway.tick(61.0)
        assert gateway.outbox.pending() == []  # nothing written into bed-2's record
        assert gateway.pseudonyms == {(WARD, "bed-2"): "P-2"}
        assert gateway.decode_errors == 3
        assert caplog.text.count("not the topic's bed") == 3
        # The bed's own messages still reach the record.
        gateway.handle(
            topics.topic(WARD, "bed-1", topics.ALARM_EVENT), _alarm("bed-1").to_payload(), 0.0
        )
        (report,) = [p.read_bytes() for p in gateway.outbox.pending()]
        assert _bed_of(report) == "bed-1" and gateway.decode_errors == 3
    finally:
        gateway.sender.client.close()


def test_bad_messages_are_logged_as_warnings_up_to_a_limit(tmp_path: Path, caplog) -> None:
    from painmon.core.ward.hl7_gateway import INVALID_WARNINGS_MAX

    gateway = _offline_gateway(tmp_path / "outbox")
    try:
        topic = topics.topic(WARD, "bed-1", topics.ALARM_EVENT)
        with caplog.at_level(logging.DEBUG, logger="painmon.core.ward.hl7_gateway"):
            for _ in range(INVALID_WARNINGS_MAX + 5):
                gateway.handle(topic, b"{not json", 0.0)
        assert gateway.decode_errors == INVALID_WARNINGS_MAX + 5
        levels = [r.levelno for r in caplog.records if "ignored a bad message" in r.message]
        assert levels.count(logging.WARNING) == INVALID_WARNINGS_MAX
        assert levels.count(logging.DEBUG) == 5
    finally:
        gateway.sender.client.close()


def test_control_characters_in_bus_text_neither_split_nor_block_a_report(tmp_path: Path) -> None:
    from painmon.core.ward.mllp import _segments as mllp_segments

    # Schema-valid text: the bus allows any character in a message or an unknown reason.
    alarm = AlarmEventMessage(
        WARD, "bed-1", utc_iso(), new_uuid(), 1, "pain", "PAIN", "high", "start", "high\x1c"
    )
    split = AlarmEventMessage(
        WARD, "bed-1", utc_iso(), new_uuid(), 2, "pain", "PAIN", "high", "end", "a\nOBX|9"
    )
    obs = ObsMessage(
        WARD, "bed-1", utc_iso(), 0, False, None, None, None, None, (), "no face\nretrying"
    )
    with MllpTestServer() as listener:
        gateway = _offline_gateway(tmp_path / "outbox", listener.port, every_s=60)
        try:
            for leaf, message in ((topics.ALARM_EVENT, alarm), (topics.ALARM_EVENT, split)):
                gateway.handle(topics.topic(WARD, "bed-1", leaf), message.to_payload(), 0.0)
            gateway.handle(topics.topic(WARD, "bed-1", topics.OBS), obs.to_payload(), 0.0)
            gateway.tick(61.0)
            assert gateway.decode_errors == 0
            outcomes = [gateway.sender.send_next() for _ in range(4)]
        finally:
            gateway.sender.client.close()
    assert outcomes == ["sent", "sent", "sent", "empty"]
    assert gateway.outbox.rejected() == []
    for message in listener.accepted:
        text = message.decode()
        assert "\n" not in text
        assert len(mllp_segments(text)) == len(_segments(message)) == 8


def _pid3_of_alarm(gateway: Hl7Gateway, bed: str, seq: int) -> str:
    gateway.handle(topics.topic(WARD, bed, topics.ALARM_EVENT), _alarm(bed, seq).to_payload(), 0.0)
    report = gateway.outbox.pending()[-1].read_bytes()
    return next(s for s in _segments(report) if s[0] == "PID")[3]


def _status(bed: str, pseudonym: str | None, state: str = "online") -> tuple[str, bytes]:
    message = StatusMessage(WARD, bed, utc_iso(), state, "test", pseudonym=pseudonym)
    return topics.topic(WARD, bed, topics.STATUS), message.to_payload()


def test_pseudonyms_survive_a_restart_and_their_clearing_too(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    first = _offline_gateway(outbox)
    try:
        first.handle(*_status("bed-1", "PSN-42"), 0.0)
        first.handle(*_status("bed-2", "PSN-7"), 0.0)
    finally:
        first.sender.client.close()
    table = outbox / "pseudonyms.json"
    assert table.stat().st_mode & 0o777 == 0o600

    # The restart: an event queued at the broker comes before the retained status.
    second = _offline_gateway(outbox)
    try:
        assert second.pseudonyms == {(WARD, "bed-1"): "PSN-42", (WARD, "bed-2"): "PSN-7"}
        assert _pid3_of_alarm(second, "bed-1", 1) == "PSN-42^^^PAINMON^ANON"
        second.handle(*_status("bed-1", None), 0.0)  # a new patient, no pseudonym yet
        second.handle(*_status("bed-2", None, state="offline"), 0.0)  # e.g. the last will
    finally:
        second.sender.client.close()

    third = _offline_gateway(outbox)
    try:
        assert third.pseudonyms == {(WARD, "bed-2"): "PSN-7"}
        assert _pid3_of_alarm(third, "bed-1", 2) == ""
        assert _pid3_of_alarm(third, "bed-2", 3) == "PSN-7^^^PAINMON^ANON"
    finally:
        third.sender.client.close()


def test_an_unreadable_pseudonym_table_is_not_fatal(tmp_path: Path, caplog) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    table = outbox / "pseudonyms.json"
    for text in ("{cut short", '{"beds": 3}'):
        table.write_text(text)
        with caplog.at_level(logging.WARNING, logger="painmon.core.ward.hl7_gateway"):
            gateway = _offline_gateway(outbox)
        gateway.sender.client.close()
        assert gateway.pseudonyms == {}
    table.write_text(
        '{"beds": [{"ward": "W1", "bed": "bed-1", "pseudonym": "P-1"},'
        ' {"ward": "W1", "bed": "../x", "pseudonym": "P-2"}, {"ward": "W1"}]}'
    )
    gateway = _offline_gateway(outbox)
    gateway.sender.client.close()
    assert gateway.pseudonyms == {(WARD, "bed-1"): "P-1"}
    assert "pseudonym table" in caplog.text


def test_restarted_gateway_names_the_pseudonym_of_events_queued_at_the_broker(
    tmp_path: Path, broker
) -> None:
    bed = _bed_client(broker.url)
    try:
        publish_message(
            bed, StatusMessage(WARD, "bed-1", utc_iso(), "online", "test", pseudonym="PSN-42")
        ).wait_for_publish(5)
        with MllpTestServer() as listener:

            def gateway() -> Hl7Gateway:
                return Hl7Gateway(
                    broker.url, "127.0.0.1", listener.port, tmp_path / "outbox", ward=WARD
                ).start()

            first = gateway()
            try:
                assert _wait(lambda: _subscribed(first, "bed-1"))
                publish_message(bed, _alarm("bed-1", 1)).wait_for_publish(5)
                assert _wait(lambda: len(listener.accepted) >= 1)
            finally:
                first.stop()
            publish_message(bed, _alarm("bed-1", 2)).wait_for_publish(5)  # while it is down
            second = gateway()
            try:
                assert _wait(lambda: len(listener.accepted) >= 2)
            finally:
                second.stop()
            accepted = list(listener.accepted)
    finally:
        close_client(bed)
    pids = {next(s for s in _segments(m) if s[0] == "PID")[3] for m in accepted}
    assert pids == {"PSN-42^^^PAINMON^ANON"}


# -- alert identity: one OBR-3 per alarm, from the bed's mapper to the record -------------------


def _bed_alarm_events(bed: str) -> list[AlarmEventMessage]:
    """A real AlarmManager and the bed's mapper: two pain alarms (the first escalated,
    acknowledged from the station and ended), FROZEN twice and CENTRAL_UNREACHABLE."""
    from datetime import UTC, datetime

    from painmon.core.live.alarms import AlarmManager, AlarmSettings, TechnicalCondition
    from painmon.core.ward.bed import CENTRAL_UNREACHABLE, AlarmEventMapper

    now = datetime(2026, 11, 27, 9, 30, 0, tzinfo=UTC)
    alarms = AlarmManager(AlarmSettings(alarm_delay_s=2.0), utc_clock=lambda: now)
    mapper = AlarmEventMapper(WARD, bed, utc_clock=lambda: now)
    sent: list[AlarmEventMessage] = []
    t = 0.0

    def levels(values, condition=None) -> None:
        nonlocal t
        for level in values:
            sent.extend(mapper.map(alarms.update(t, level, condition))[0])
            t += 0.25

    levels([3.0] * 12 + [3.8] * 12)
    sent.extend(mapper.map(alarms.acknowledge(t), acknowledged_by="station")[0])
    levels([0.5] * 40)
    levels([3.0] * 12 + [0.5] * 40)
    levels([None], TechnicalCondition.FROZEN)
    sent.extend(mapper.map(alarms.set_system_condition(t, CENTRAL_UNREACHABLE, True))[0])
    levels([1.0])
    levels([None], TechnicalCondition.FROZEN)
    levels([1.0])
    sent.extend(mapper.map(alarms.set_system_condition(t, CENTRAL_UNREACHABLE, False))[0])
    return sent


def _obr3(message: bytes) -> str:
    return next(s for s in _segments(message) if s[0] == "OBR")[3]


def test_every_report_of_one_alarm_carries_its_alert_id_in_obr3(tmp_path: Path) -> None:
    events = _bed_alarm_events("bed-1")
    gateway = _offline_gateway(tmp_path / "outbox")
    try:
        for event in events:
            gateway.handle(topics.topic(WARD, "bed-1", topics.ALARM_EVENT), event.to_payload(), 0.0)
        reports = [p.read_bytes() for p in gateway.outbox.pending()]
    finally:
        gateway.sender.client.close()
    assert gateway.decode_errors == 0
    rows = [(e.condition, e.phase, _obr3(r)) for e, r in zip(events, reports, strict=True)]
    assert [row[:2] for row in rows] == [
        ("PAIN", "start"),
        ("PAIN", "escalate"),
        ("PAIN", "acknowledge"),
        ("PAIN", "end"),
        ("PAIN", "start"),
        ("PAIN", "end"),
        ("FROZEN", "start"),
        ("CENTRAL_UNREACHABLE", "start"),
        ("FROZEN", "end"),
        ("FROZEN", "start"),
        ("FROZEN", "end"),
        ("CENTRAL_UNREACHABLE", "end"),
    ]
    obr3 = [row[2] for row in rows]
    alarms = [obr3[0:4], obr3[4:6], [obr3[6], obr3[8]], [obr3[9], obr3[10]], [obr3[7], obr3[11]]]
    for one_alarm in alarms:
        assert len(set(one_alarm)) == 1, one_alarm  # the record links its phases
    assert len({one_alarm[0] for one_alarm in alarms}) == 5  # and tells alarms apart
    for event, report in zip(events, reports, strict=True):
        ident = next(s for s in _segments(report) if s[0] == "OBX")
        assert _obr3(report) == ident[21] == f"{event.alert_id}^PAINMON"
    control_ids = [message_control_id(r) for r in reports]
    assert len(set(control_ids)) == len(reports) == len(gateway.produced)  # MSH-10: unique


def test_a_ward_mid_upgrade_older_beds_events_are_reported_under_their_uuid(
    tmp_path: Path,
) -> None:
    # bed-1 runs this version (alert ids), bed-2 an older one: its events lack the field.
    start, escalate = _bed_alarm_events("bed-1")[:2]
    old = _alarm("bed-2")
    document = json.loads(old.to_payload())
    assert "alert_id" not in document  # what a bed older than the field sends
    gateway = _offline_gateway(tmp_path / "outbox")
    try:
        for event in (start, escalate):
            gateway.handle(topics.topic(WARD, "bed-1", topics.ALARM_EVENT), event.to_payload(), 0.0)
        gateway.handle(
            topics.topic(WARD, "bed-2", topics.ALARM_EVENT), json.dumps(document).encode(), 0.0
        )
        reports = [p.read_bytes() for p in gateway.outbox.pending()]
    finally:
        gateway.sender.client.close()
    assert gateway.decode_errors == 0
    assert [_bed_of(r) for r in reports] == ["bed-1", "bed-1", "bed-2"]
    assert _obr3(reports[0]) == _obr3(reports[1]) == f"{start.alert_id}^PAINMON"
    assert _obr3(reports[2]) == f"{old.uuid}^PAINMON"


def test_an_event_reported_again_by_a_restarted_gateway_keeps_its_msh10(tmp_path: Path) -> None:
    # The bed re-sends until the station's receipt; a restarted gateway has forgotten the
    # uuids it saw, so the record must be able to drop the copy by MSH-10.
    start, escalate = _bed_alarm_events("bed-1")[:2]
    topic = topics.topic(WARD, "bed-1", topics.ALARM_EVENT)
    produced = []
    for run in ("first", "second"):
        gateway = _offline_gateway(tmp_path / run)
        try:
            for event in (start, escalate, start):  # the second start: a re-send, dropped
                gateway.handle(topic, event.to_payload(), 0.0)
        finally:
            gateway.sender.client.close()
        produced.append(gateway.produced)
    assert produced[0] == produced[1]
    assert len(set(produced[0])) == 2
