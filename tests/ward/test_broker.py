"""The real-mosquitto helper: config, start/stop/kill/restart, clear errors."""

from __future__ import annotations

import socket

import pytest

from painmon.core.ward import broker as broker_module
from painmon.core.ward.broker import BrokerError, MosquittoBroker, find_mosquitto, free_port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_fixture_broker_runs_and_stops(broker):
    assert broker.running and broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert _accepts(broker.port)
    text = broker.config_path.read_text()
    assert f"listener {broker.port} 127.0.0.1" in text
    assert "persistence true" in text and "autosave_interval 1" in text
    assert "allow_anonymous true" in text
    broker.stop()
    assert not broker.running and not _accepts(broker.port)
    assert "terminating" in broker.log_tail()


def test_kill_and_restart_on_the_same_port(broker):
    first_pid = broker.pid
    broker.kill()
    assert not broker.running
    broker.start()
    assert broker.running and broker.pid != first_pid and _accepts(broker.port)
    broker.restart()
    assert broker.running and _accepts(broker.port)


def test_bad_config_fails_with_the_log_tail(tmp_path, mosquitto_binary):
    bad = MosquittoBroker(tmp_path, extra_config=["no_such_option 1"])
    with pytest.raises(BrokerError, match="no_such_option"):
        bad.start()
    assert not bad.running


def test_port_in_use_fails_clearly(tmp_path, broker):
    clash = MosquittoBroker(tmp_path / "second", port=broker.port)
    with pytest.raises(BrokerError, match="already in use"):
        clash.start(timeout_s=3)


def test_credentials_turn_anonymous_off(tmp_path):
    secured = MosquittoBroker(tmp_path, password_file=tmp_path / "passwd")
    assert "allow_anonymous false" in secured.config_text()
    assert f"password_file {(tmp_path / 'passwd').resolve()}" in secured.config_text()


def test_missing_binary_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(broker_module, "_EXTRA_DIRS", ())
    with pytest.raises(BrokerError, match="apt-get install mosquitto"):
        find_mosquitto()


def test_free_port_is_free():
    port = free_port()
    assert 1024 <= port <= 65535 and not _accepts(port)
