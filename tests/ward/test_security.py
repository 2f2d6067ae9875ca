"""Ward security against a real mosquitto: anonymous refused, beds kept apart by the ACL,
passwords hashed, TLS verified with a throwaway CA (openssl)."""

from __future__ import annotations

import shutil
import stat
import threading

import pytest

from painmon.core.ward import topics
from painmon.core.ward.broker import MosquittoBroker
from painmon.core.ward.client import (
    BrokerAddress,
    BrokerConnectError,
    close_client,
    connect_client,
)
from painmon.core.ward.security import (
    TlsFiles,
    acl_text,
    make_ca,
    make_cert,
    write_acl,
    write_password_file,
)

WARD = "w1"
BEDS = ("bed-1", "bed-2")
USERS = {"bed-1": "pw-bed-1", "bed-2": "pw-bed-2", "station": "pw-station", "hl7": "pw-hl7"}
NOT_AUTHORIZED = 0x87

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")


def _secured(tmp_path, **kwargs) -> MosquittoBroker:
    password_file = write_password_file(tmp_path / "passwd", USERS)
    acl = write_acl(tmp_path / "acl", WARD, BEDS, "station", readers=["hl7"])
    return MosquittoBroker(
        tmp_path / "broker", password_file=password_file, acl_file=acl, **kwargs
    ).start()


@pytest.fixture
def secured(tmp_path, mosquitto_binary):
    running = _secured(tmp_path)
    yield running
    running.stop()


class Publisher:
    """A connected user whose PUBACK reason codes are recorded per message id."""

    def __init__(self, url: str, user: str, **kwargs) -> None:
        self.acks: dict[int, int] = {}
        self._acked = threading.Condition()
        self.client = connect_client(
            BrokerAddress.parse(url), f"{user}-pub", username=user, password=USERS[user], **kwargs
        )
        self.client.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._acked:
            self.acks[mid] = int(reason_code.value)
            self._acked.notify_all()

    def publish(self, topic: str, qos: int = 1) -> int:
        """Publish; the PUBACK reason code for QoS 1 (0 success, 0x87 not authorized)."""
        info = self.client.publish(topic, b'{"probe":1}', qos=qos)
        if qos == 0:
            return 0
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.acks, timeout=5)
            return self.acks[info.mid]

    def close(self) -> None:
        close_client(self.client)


def _as(user: str) -> dict:
    return {"username": user, "password": USERS[user]}


def test_acl_text_is_what_the_contract_says():
    text = acl_text(WARD, ["bed-1"], "station", readers=["hl7"])
    assert "user station\ntopic read painmon/v1/#\ntopic write painmon/v1/+/+/cmd/#" in text
    assert "user hl7\ntopic read painmon/v1/#\n" in text
    for line in (
        "topic write painmon/v1/w1/bed-1/obs",
        "topic write painmon/v1/w1/bed-1/alarm/#",
        "topic write painmon/v1/w1/bed-1/status",
        "topic write painmon/v1/w1/bed-1/cmd_reply",
        "topic read painmon/v1/w1/bed-1/cmd/#",
    ):
        assert line in text
    with pytest.raises(ValueError, match="not valid"):
        acl_text(WARD, ["bed+1"], "station")


def test_password_file_holds_no_password(tmp_path):
    path = write_password_file(tmp_path / "passwd", USERS)
    text = path.read_text()
    assert all(secret not in text for secret in USERS.values())
    assert all(line.split(":", 1)[1].startswith("$7$") for line in text.splitlines())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_anonymous_and_wrong_password_refused(secured):
    address = BrokerAddress.parse(secured.url)
    with pytest.raises(BrokerConnectError, match="refused an anonymous client"):
        connect_client(address, "anon")
    with pytest.raises(BrokerConnectError, match="refused user 'bed-1'"):
        connect_client(address, "bed-1", username="bed-1", password="wrong")
    with pytest.raises(BrokerConnectError, match="refused user 'nobody'"):
        connect_client(address, "x", username="nobody", password="pw-bed-1")
    close_client(connect_client(address, "bed-1", **_as("bed-1")))  # the right one gets in


def test_bed_cannot_publish_under_another_bed(secured, subscriber):
    station = subscriber(secured.url, "station", **_as("station"))
    assert station.subscribe("painmon/v1/#") == [1]
    bed1 = Publisher(secured.url, "bed-1")
    try:
        own = {leaf: topics.topic(WARD, "bed-1", leaf) for leaf in topics.LEAVES}
        other = {leaf: topics.topic(WARD, "bed-2", leaf) for leaf in topics.LEAVES}
        refused_codes = {
            "obs": bed1.publish(other["obs"]),
            "alarm/event": bed1.publish(other["alarm/event"]),
            "status": bed1.publish(other["status"]),
            "own cmd (a bed writing a command)": bed1.publish(own["cmd/acknowledge"]),
            "station's cmd": bed1.publish(other["cmd/receipt"]),
        }
        bed1.publish(other["obs"], qos=0)
        assert bed1.publish(own["obs"]) == 0
        assert bed1.publish(own["alarm/event"]) == 0
        got = station.drain(0.7)
    finally:
        bed1.close()
    print(f"PUBACK reason codes for refused QoS 1 publishes: {refused_codes}")
    assert set(refused_codes.values()) <= {0, NOT_AUTHORIZED}
    received = [topic for topic, _payload, _retain in got]
    assert sorted(received) == sorted([own["obs"], own["alarm/event"]])


def test_bed_reads_only_its_own_commands(secured, subscriber):
    bed1 = subscriber(secured.url, "bed-1", **_as("bed-1"))
    suback_other = bed1.subscribe(f"painmon/v1/{WARD}/bed-2/cmd/#")
    suback_all = bed1.subscribe("painmon/v1/#")
    assert bed1.subscribe(topics.bed_subscriptions(WARD, "bed-1")[0]) == [1]
    print(f"SUBACK codes: other bed's commands {suback_other}, everything {suback_all}")
    bed2 = subscriber(secured.url, "bed-2", **_as("bed-2"))
    bed2.subscribe(topics.bed_subscriptions(WARD, "bed-2")[0])
    station = Publisher(secured.url, "station")
    try:
        assert station.publish(topics.topic(WARD, "bed-2", "cmd/acknowledge")) == 0
        assert station.publish(topics.topic(WARD, "bed-1", "cmd/receipt")) == 0
        assert station.publish(topics.topic(WARD, "bed-2", "obs")) == NOT_AUTHORIZED
    finally:
        station.close()
    to_bed1 = [topic for topic, _p, _r in bed1.drain(0.7)]
    to_bed2 = [topic for topic, _p, _r in bed2.drain(0.2)]
    # Overlapping subscriptions (cmd/# and the granted part of #) may each deliver a copy.
    assert set(to_bed1) == {topics.topic(WARD, "bed-1", "cmd/receipt")}
    assert to_bed2 == [topics.topic(WARD, "bed-2", "cmd/acknowledge")]


def test_read_only_user_cannot_command(secured, subscriber):
    hl7 = Publisher(secured.url, "hl7")
    try:
        assert hl7.publish(topics.topic(WARD, "bed-1", "cmd/acknowledge")) == NOT_AUTHORIZED
    finally:
        hl7.close()


def test_bed_cannot_leave_a_will_under_another_bed(secured, subscriber):
    station = subscriber(secured.url, "station", **_as("station"))
    station.subscribe("painmon/v1/#")
    target = topics.topic(WARD, "bed-2", "status")
    # bed-1 forges bed-2's Will; bed-2's own Will is the control that Wills do fire here.
    dying = []
    for user in ("bed-1", "bed-2"):
        will = (target, f'{{"from":"{user}"}}'.encode(), 1, False)
        client = connect_client(
            BrokerAddress.parse(secured.url), f"{user}-dying", will=will, **_as(user)
        )
        client.loop_stop()  # no reconnect: this client dies
        client._sock.close()  # without DISCONNECT, so the broker publishes the Will
        dying.append(client)
    got = station.drain(1.0)
    assert [(topic, payload) for topic, payload, _r in got] == [(target, b'{"from":"bed-2"}')]


@pytest.fixture
def pki(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl missing")
    ca = make_ca(tmp_path / "ca")
    server = make_cert(ca, tmp_path / "server", "127.0.0.1", server=True)
    bed1 = make_cert(ca, tmp_path / "clients", "bed-1", server=False)
    return ca, server, bed1


def test_tls_with_the_ward_ca_works_and_without_it_fails(tmp_path, mosquitto_binary, pki):
    ca, server, _bed1 = pki
    running = _secured(tmp_path, tls=TlsFiles(ca.cert, server.cert, server.key))
    try:
        assert running.url.startswith("mqtts://")
        address = BrokerAddress.parse(running.url)
        good = connect_client(address, "bed-1", tls=TlsFiles(ca.cert), **_as("bed-1"))
        assert good.is_connected()
        close_client(good)
        stranger = make_ca(tmp_path / "other-ca", "some other CA")
        with pytest.raises(BrokerConnectError, match="TLS verification"):
            connect_client(address, "bed-1", tls=TlsFiles(stranger.cert), **_as("bed-1"))
        with pytest.raises(BrokerConnectError, match="TLS verification"):
            connect_client(address, "bed-1", **_as("bed-1"))  # system CAs only
        with pytest.raises(BrokerConnectError):
            # plain MQTT against the TLS listener is no way round it
            connect_client(BrokerAddress("127.0.0.1", running.port), "bed-1", **_as("bed-1"))
    finally:
        running.stop()


def test_client_certificates_name_the_bed(tmp_path, mosquitto_binary, pki, subscriber):
    ca, server, bed1_cert = pki
    acl = write_acl(tmp_path / "acl", WARD, BEDS, "station")
    running = MosquittoBroker(
        tmp_path / "broker",
        acl_file=acl,
        tls=TlsFiles(ca.cert, server.cert, server.key),
        require_client_cert=True,
    ).start()
    try:
        address = BrokerAddress.parse(running.url)
        station_cert = make_cert(ca, tmp_path / "clients", "station", server=False)
        station = subscriber(address, "station", tls=TlsFiles(ca.cert, *_pair(station_cert)))
        station.subscribe("painmon/v1/#")
        with pytest.raises(BrokerConnectError):
            connect_client(address, "anon", tls=TlsFiles(ca.cert))  # no client certificate
        bed1 = connect_client(address, "bed-1", tls=TlsFiles(ca.cert, *_pair(bed1_cert)))
        try:
            bed1.publish(topics.topic(WARD, "bed-2", "obs"), b"{}", qos=1).wait_for_publish(5)
            bed1.publish(topics.topic(WARD, "bed-1", "obs"), b"{}", qos=1).wait_for_publish(5)
        finally:
            close_client(bed1)
        received = [topic for topic, _p, _r in station.drain(0.7)]
        assert received == [topics.topic(WARD, "bed-1", "obs")]
    finally:
        running.stop()


def _pair(pair):
    return pair.cert, pair.key
