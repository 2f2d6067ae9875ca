"""Persistent MQTT sessions: QoS 1 messages published while a subscriber is away wait for it."""

from __future__ import annotations

import time

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.ward import messages as m
from painmon.core.ward.client import BrokerAddress, close_client, connect_client, publish_message
from painmon.core.ward.station import StationClient, StationModel

TOPIC = "painmon/v1/w1/bed-1/alarm/event"


def _away_and_back(broker, subscriber, client_id: str, session_expiry_s: int):
    """Subscribe, go away cleanly, publish QoS 1 meanwhile, come back: what arrives."""
    first = subscriber(broker.url, client_id, session_expiry_s=session_expiry_s)
    assert first.subscribe(TOPIC, qos=1) == [1]
    close_client(first.client)
    publisher = connect_client(BrokerAddress.parse(broker.url), "test-publisher")
    try:
        publisher.publish(TOPIC, b"while-away", qos=1).wait_for_publish(5)
    finally:
        close_client(publisher)
    back = subscriber(broker.url, client_id, session_expiry_s=session_expiry_s)
    return back.wait_for(lambda topic, payload, retain: payload == b"while-away", 2.0)


def test_persistent_subscriber_gets_what_was_published_while_it_was_down(broker, subscriber):
    got = _away_and_back(broker, subscriber, "painmon-station-s1", session_expiry_s=300)
    assert got is not None and got[0] == TOPIC


def test_clean_start_subscriber_misses_it(broker, subscriber):
    assert _away_and_back(broker, subscriber, "painmon-station-s2", session_expiry_s=0) is None


def test_negative_session_expiry_is_refused(broker):
    with pytest.raises(InvalidInputError, match="session_expiry_s"):
        connect_client(BrokerAddress.parse(broker.url), "x", session_expiry_s=-1)


def test_station_client_uses_a_fixed_id_and_a_persistent_session(broker):
    model = StationModel("s3")
    station = StationClient(BrokerAddress.parse(broker.url), station_id="s3").start(wait_s=5)
    try:
        assert station._client._client_id == b"painmon-station-s3"
        assert station.session_expiry_s > 0
    finally:
        station.stop()
    publisher = connect_client(BrokerAddress.parse(broker.url), "test-publisher")
    event = m.AlarmEventMessage(
        "w1", "bed-1", m.utc_iso(), m.new_uuid(), 0, "pain", m.PAIN_CONDITION, "high", "start",
        "pain level high",
    )  # fmt: skip
    publish_message(publisher, event).wait_for_publish(5)
    close_client(publisher)
    station = StationClient(BrokerAddress.parse(broker.url), station_id="s3").start(wait_s=5)
    try:
        deadline = time.monotonic() + 3
        while model.events_received == 0 and time.monotonic() < deadline:
            station.drain(model)
            time.sleep(0.02)
    finally:
        station.stop()
    assert [e[2] for e in model.new_events] == [event.uuid]
