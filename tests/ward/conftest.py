"""Ward fixtures: a real Eclipse Mosquitto per test on a free 127.0.0.1 port."""

from __future__ import annotations

import queue
import shutil
import time

import pytest

from painmon.core.ward.broker import MosquittoBroker, find_mosquitto
from painmon.core.ward.client import BrokerAddress, close_client, connect_client


@pytest.fixture
def mosquitto_binary():
    """The mosquitto binary; the ward tests need the real broker (.ci/run installs it)."""
    try:
        return find_mosquitto()
    except Exception as exc:  # the clear "not found" message, as a skip reason locally
        if shutil.which("apt-get") is None:
            pytest.skip(str(exc))
        raise


@pytest.fixture
def broker(tmp_path, mosquitto_binary):
    """A fresh mosquitto (anonymous, persistence in tmp_path), stopped at teardown.

    A failing start raises BrokerError carrying the broker's log tail.
    """
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running
    running.kill()  # no-op when stopped; a hung broker never outlives its test


class Collector:
    """A subscriber that files every message (topic, payload, properties) in a queue."""

    def __init__(self, client) -> None:
        self.client = client
        self.messages: queue.Queue = queue.Queue()
        self.subscribed: queue.Queue = queue.Queue()

    def on_message(self, client, userdata, message) -> None:
        self.messages.put((message.topic, bytes(message.payload), message.retain))

    def on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed.put([int(code.value) for code in reason_codes])

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        """Subscribe and wait for the SUBACK; its reason codes (0-2 granted, >= 0x80 refused)."""
        self.client.subscribe(topic, qos=qos)
        return self.subscribed.get(timeout=5)

    def wait_for(self, predicate=lambda topic, payload, retain: True, timeout_s: float = 5.0):
        """The first message matching ``predicate`` within ``timeout_s``, else None."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.messages.get(timeout=left)
            except queue.Empty:
                return None
            if predicate(*item):
                return item
        return None

    def drain(self, settle_s: float = 0.5) -> list:
        """Every message that arrives until ``settle_s`` passes quietly."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=settle_s))
            except queue.Empty:
                return out


@pytest.fixture
def subscriber():
    """Factory: ``subscriber(url_or_address, client_id, **connect_kwargs) -> Collector``."""
    made = []

    def make(address, client_id="test-subscriber", **kwargs) -> Collector:
        if isinstance(address, str):
            address = BrokerAddress.parse(address)
        collector = Collector(None)
        collector.client = connect_client(
            address, client_id, on_message=collector.on_message, **kwargs
        )
        collector.client.on_subscribe = collector.on_subscribe
        made.append(collector.client)
        return collector

    yield make
    for client in made:
        close_client(client)
