"""paho against a real mosquitto: publish/subscribe, Last Will, message expiry, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.ward import messages as m
from painmon.core.ward import topics
from painmon.core.ward.client import (
    BrokerAddress,
    BrokerConnectError,
    close_client,
    connect_client,
    publish_message,
    read_secret,
)


def test_parse_addresses():
    plain = BrokerAddress.parse("mqtt://10.0.0.5:1884")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("10.0.0.5", 1884, False, None)
    assert BrokerAddress.parse("mqtts://broker.ward").port == 8883
    assert BrokerAddress.parse("mqtt://h").port == 1883
    secret = BrokerAddress.parse("mqtt://bed-1:s3cr%40t@h:1")
    assert (secret.username, secret.password) == ("bed-1", "s3cr@t")
    assert "s3cr" not in repr(secret) and "s3cr" not in str(secret)


@pytest.mark.parametrize(
    "url", ["http://h:1", "mqtt://:1883", "mqtt://h:99999", "mqtt://h:1/path", "h:1883"]
)
def test_bad_addresses_refused(url):
    with pytest.raises(InvalidInputError, match="broker address"):
        BrokerAddress.parse(url)


def test_bad_address_error_hides_the_password():
    with pytest.raises(InvalidInputError) as caught:
        BrokerAddress.parse("http://bed:topsecret@h:1")
    assert "topsecret" not in str(caught.value)


def test_read_secret(tmp_path):
    (tmp_path / "pw").write_text("hunter2\n")
    assert read_secret(tmp_path / "pw") == "hunter2"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InvalidInputError, match="empty"):
        read_secret(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_secret(tmp_path / "missing")


def test_publish_and_subscribe_a_ward_message(broker, subscriber):
    station = subscriber(broker.url, "station")
    assert station.subscribe(topics.station_subscriptions()[0], qos=0) == [0]
    bed = connect_client(BrokerAddress.parse(broker.url), "bed-1")
    try:
        obs = m.ObsMessage("w1", "bed-1", m.utc_iso(), 0, True, 1.5, None, 0.9, 2)
        publish_message(bed, obs)
        got = station.wait_for()
    finally:
        close_client(bed)
    assert got is not None
    topic, payload, _retain = got
    assert topics.parse_topic(topic) == ("w1", "bed-1", "obs")
    assert m.decode("obs", payload) == obs


_DYING_BED = """
import sys, time
from painmon.core.ward import messages as m, topics
from painmon.core.ward.client import BrokerAddress, connect_client
url = sys.argv[1]
will = m.StatusMessage("w1", "bed-9", m.utc_iso(), "offline", "test").to_payload()
client = connect_client(
    BrokerAddress.parse(url), "bed-9", will=(topics.topic("w1", "bed-9", "status"), will, 1, True)
)
print("ready", flush=True)
time.sleep(60)
"""


def test_last_will_delivered_when_a_bed_process_is_killed(broker, subscriber):
    station = subscriber(broker.url, "station")
    station.subscribe("painmon/v1/w1/+/status")
    bed = subprocess.Popen(
        [sys.executable, "-c", _DYING_BED, broker.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert bed.stdout.readline().strip() == "ready"
        killed_at = time.monotonic()
        bed.kill()
        got = station.wait_for(timeout_s=5)
        will_after_s = time.monotonic() - killed_at
    finally:
        bed.kill()
        bed.wait()
    assert got is not None, "no Last Will within 5 s of the bed's death"
    topic, payload, _retain = got
    assert topic == "painmon/v1/w1/bed-9/status"
    assert m.decode("status", payload).state == "offline"
    print(f"Last Will after {will_after_s * 1000:.0f} ms")
    # Retained: a station that starts later still sees the bed OFFLINE.
    late = subscriber(broker.url, "late-station")
    late.subscribe("painmon/v1/w1/+/status")
    assert late.wait_for(lambda t, p, r: r and json.loads(p)["state"] == "offline") is not None


def test_message_expiry_honoured(broker, subscriber):
    bed = connect_client(BrokerAddress.parse(broker.url), "bed-1")
    try:
        for name, expiry in (("old", 1), ("kept", None)):
            bed.publish(
                f"test/{name}", b"x", qos=1, retain=True, properties=_expiry(expiry)
            ).wait_for_publish(5)
        time.sleep(1.6)  # past the 1 s expiry
    finally:
        close_client(bed)
    late = subscriber(broker.url, "late")
    late.subscribe("test/#")
    got = {topic for topic, _payload, _retain in late.drain(0.5)}
    assert got == {"test/kept"}


def _expiry(seconds):
    if seconds is None:
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


def test_retained_state_survives_a_broker_restart(broker, subscriber):
    bed = connect_client(BrokerAddress.parse(broker.url), "bed-1")
    status = m.StatusMessage("w1", "bed-1", m.utc_iso(), "online", "test")
    publish_message(bed, status).wait_for_publish(5)
    close_client(bed)
    broker.stop()  # SIGTERM: mosquitto saves its store
    broker.start()
    late = subscriber(broker.url, "late")
    late.subscribe(topics.topic("w1", "bed-1", "status"))
    got = late.wait_for()
    assert got is not None and m.decode("status", got[1]) == status


def test_unreachable_broker_is_a_clear_error(broker):
    url = broker.url
    broker.stop()
    with pytest.raises(BrokerConnectError, match="cannot reach the MQTT broker"):
        connect_client(BrokerAddress.parse(url), "bed-1", wait_s=2)


def test_background_client_connects_when_the_broker_comes_up(broker, subscriber):
    url = broker.url
    broker.stop()
    bed = connect_client(BrokerAddress.parse(url), "bed-1", wait_s=None)
    try:
        broker.start()
        deadline = time.monotonic() + 5
        while not bed.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bed.is_connected()
    finally:
        close_client(bed)
