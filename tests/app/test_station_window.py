"""The station window (offscreen): tiles for 8+ beds, trend on click, acknowledge (#14)."""

from __future__ import annotations

import queue
from datetime import UTC, datetime

import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("paho")

from PySide6.QtCore import Qt

from painmon.app.sound import AlarmSound
from painmon.app.station_window import StationWindow, TrendDialog
from painmon.core.ward import messages, topics
from painmon.core.ward.station import BedState, StationClient, StationModel

WARD = "icu"
T0 = "2026-11-27T10:00:00.000Z"


class _Effect:
    def __init__(self, path, played):
        self.name, self.played = path.name, played

    def play(self):
        self.played.append(self.name)

    def stop(self):
        pass


def _sound(played: list[str]) -> AlarmSound:
    return AlarmSound(effect_factory=lambda path: _Effect(path, played), clock=lambda: 0.0)


def _obs(bed: str, seq: int, level: float | None) -> tuple[str, bytes]:
    if level is None:
        message = messages.ObsMessage(
            WARD, bed, T0, seq, False, None, None, None, None, ("NO_FACE",), "no face"
        )
    else:
        band = min(4, int(level + 0.5))
        p = tuple(1.0 if i == band else 0.0 for i in range(5))
        message = messages.ObsMessage(WARD, bed, T0, seq, True, level, p, 0.9, band)
    return topics.topic(WARD, bed, topics.OBS), message.to_payload()


def _status(bed: str, state: str) -> tuple[str, bytes]:
    message = messages.StatusMessage(WARD, bed, T0, state, "painmon test", True)
    return topics.topic(WARD, bed, topics.STATUS), message.to_payload()


def _event(bed: str, seq: int, phase: str, priority: str) -> tuple[str, bytes]:
    message = messages.AlarmEventMessage(
        WARD, bed, T0, messages.new_uuid(), seq, "pain", "PAIN", priority, phase, "pain alarm"
    )
    return topics.topic(WARD, bed, topics.ALARM_EVENT), message.to_payload()


@pytest.fixture
def fed(qtbot):
    """A window over a model fed with 9 beds for 60 s: bed3 in HIGH alarm, bed7 offline."""
    clock = [1000.0]
    model = StationModel("nurses", clock=lambda: clock[0])
    model.set_connection(True, clock[0])
    beds = [f"bed{i}" for i in range(1, 10)]
    for bed in beds:
        model.on_message(*_status(bed, "online"), now_s=clock[0])
    for second in range(60):
        clock[0] = 1000.0 + second
        for i, bed in enumerate(beds):
            level = None if bed == "bed5" else (3.8 if bed == "bed3" else 0.3 * i % 2.4)
            model.on_message(*_obs(bed, second, level), now_s=clock[0])
    model.on_message(*_event("bed3", 1, "start", "high"), now_s=clock[0])
    model.on_message(*_status("bed7", "offline"), now_s=clock[0])
    played: list[str] = []
    sent: list[messages.CommandMessage] = []
    window = StationWindow(model, sound=_sound(played), clock=lambda: clock[0], send=sent.append)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.refresh()
    yield window, model, played, sent
    window.close()


def test_tiles_show_every_bed_the_alarm_and_the_offline_one(fed):
    window, _model, played, _sent = fed
    assert len(window.tiles) == 9
    tile3 = window.tiles[(WARD, "bed3")]
    assert tile3.headline.text() == "3.8"
    assert tile3.alarm.text() == "HIGH PAIN ALARM"
    assert tile3.acknowledge.isVisibleTo(window)
    assert tile3.sparkline.points_shown == 60
    tile7 = window.tiles[(WARD, "bed7")]
    assert tile7.headline.text() == "OFFLINE" and tile7.view.state is BedState.OFFLINE
    assert not tile7.acknowledge.isVisibleTo(window)
    tile5 = window.tiles[(WARD, "bed5")]
    assert tile5.headline.text() == "unknown" and "no face" in tile5.detail.text()
    assert not window.tiles[(WARD, "bed1")].acknowledge.isVisibleTo(window)
    assert not window.banner.isVisibleTo(window)
    assert "9 beds · 1 in pain alarm · 1 offline" in window.summary.text()
    # The station sounds the HIGH alarm (the fake effect stands in for the speaker).
    assert played == ["alarm_high.wav"]
    # Tiles re-flow into a grid: several per row, none on top of another.
    positions = {(t.x(), t.y()) for t in window.tiles.values()}
    assert len(positions) == 9 and len({y for _, y in positions}) < 9


def test_clicking_a_tile_opens_its_full_trend(fed, qtbot):
    window, _model, _played, _sent = fed
    tile = window.tiles[(WARD, "bed3")]
    qtbot.mouseClick(tile, Qt.MouseButton.LeftButton)
    dialog = window.trends[(WARD, "bed3")]
    assert isinstance(dialog, TrendDialog) and dialog.isVisible()
    assert dialog.points_shown == 12  # 60 s in 5 s buckets
    assert dialog.events.count() == 1 and "start" in dialog.events.item(0).text()


def test_acknowledge_button_sends_the_command_and_shows_the_reply(fed, qtbot):
    window, model, _played, sent = fed
    tile = window.tiles[(WARD, "bed3")]
    qtbot.mouseClick(tile.acknowledge, Qt.MouseButton.LeftButton)
    assert len(sent) == 1 and sent[0].bed == "bed3" and sent[0].command == "acknowledge"
    assert "waiting for the bed" in tile.command.text()
    reply = messages.CommandReplyMessage(
        WARD, "bed3", T0, sent[0].cmd_id, False, "remote acknowledgement is off at this bed"
    )
    model.on_message(topics.topic(WARD, "bed3", topics.CMD_REPLY), reply.to_payload())
    window.refresh()
    assert tile.command.text() == "refused: remote acknowledgement is off at this bed"


def test_broker_loss_shows_the_station_banner(fed):
    window, model, _played, _sent = fed
    model.set_connection(False, reason="connection lost")
    window.refresh()
    assert window.banner.isVisibleTo(window)
    assert window.banner.text().startswith("TECHNICAL ALARM")


def test_the_window_over_a_real_broker_sends_the_acknowledge_to_the_bed(qtbot, tmp_path):
    """Bus → window → bus: a bed's alarm appears, the button's command reaches the bed."""
    from painmon.core.ward.broker import MosquittoBroker, find_mosquitto
    from painmon.core.ward.client import (
        BrokerAddress,
        close_client,
        connect_client,
        publish_message,
    )

    try:
        find_mosquitto()
    except Exception as exc:
        pytest.skip(str(exc))
    with MosquittoBroker(tmp_path / "broker") as broker:
        model = StationModel("nurses")
        client = StationClient(BrokerAddress.parse(broker.url), ward=WARD, station_id="nurses")
        window = StationWindow(model, client, sound=_sound([]))
        qtbot.addWidget(window)
        client.start(wait_s=5)
        received: queue.SimpleQueue = queue.SimpleQueue()
        bed = connect_client(
            BrokerAddress.parse(broker.url),
            "raw-bed1",
            on_message=lambda _c, _u, m: received.put((m.topic, bytes(m.payload))),
        )
        try:
            bed.subscribe(topics.bed_subscriptions(WARD, "bed1")[0], qos=1)
            now = messages.utc_iso(datetime.now(UTC))
            status = messages.StatusMessage(WARD, "bed1", now, "online", "painmon test", True)
            publish_message(bed, status).wait_for_publish(5)
            event = messages.AlarmEventMessage(
                WARD, "bed1", now, messages.new_uuid(), 1, "pain", "PAIN", "high", "start", "pain"
            )
            publish_message(bed, event).wait_for_publish(5)
            qtbot.waitUntil(lambda: (WARD, "bed1") in window.tiles, timeout=5000)
            tile = window.tiles[(WARD, "bed1")]
            qtbot.waitUntil(lambda: tile.acknowledge.isVisibleTo(window), timeout=5000)
            qtbot.mouseClick(tile.acknowledge, Qt.MouseButton.LeftButton)
            leaves = []
            while len(leaves) < 2:  # the receipt and the command, in either order
                topic, payload = received.get(timeout=5)
                leaf = topics.parse_topic(topic)[2]
                leaves.append(leaf)
                if leaf == topics.CMD_ACKNOWLEDGE:
                    command = messages.decode(leaf, payload)
                    assert command.alarm_uuid == event.uuid and command.station == "nurses"
            assert sorted(leaves) == [topics.CMD_ACKNOWLEDGE, topics.CMD_RECEIPT]
        finally:
            close_client(bed)
            window.close()
        assert not window.drain_timer.isActive() and not window.repaint_timer.isActive()


@pytest.mark.slow
def test_station_screenshot_script_renders_nine_beds(tmp_path, qtbot):
    """packaging/station_screenshot.py: real broker, 9 beds, one alarming, one offline."""
    import importlib.util
    from pathlib import Path

    from PySide6.QtGui import QImage

    from painmon.core.ward.broker import find_mosquitto

    try:
        find_mosquitto()
    except Exception as exc:
        pytest.skip(str(exc))
    script = Path(__file__).resolve().parents[2] / "packaging" / "station_screenshot.py"
    spec = importlib.util.spec_from_file_location("station_screenshot", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.render(tmp_path / "out", tmp_path / "work")
    assert [p.name for p in written] == ["station.png", "station_trend.png"]
    image = QImage(str(written[0]))
    assert (image.width(), image.height()) == module.WINDOW_PX
