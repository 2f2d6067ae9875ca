"""The bedside window publishes to the ward (issue 14, "the same in the app's settings").

Offscreen MainWindow on the demo synthetic patient against a real Mosquitto (the
``broker`` fixture of this folder's conftest); the station side is a raw paho client.
"""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings

from painmon.app.main_window import DEMO_SOURCE, MainWindow
from painmon.app.settings_dialog import (
    AppSettings,
    SettingsDialog,
    WardSettings,
    load_settings,
    save_settings,
)
from painmon.core.live.alarms import AlarmSettings
from painmon.core.store.catalog import shipped_demo_model_path
from painmon.core.ward import topics
from painmon.core.ward.bed import APPLIED, CENTRAL_UNREACHABLE, REMOTE_ACK_OFF_REASON
from painmon.core.ward.client import BrokerAddress, close_client, connect_client
from painmon.core.ward.messages import (
    CommandMessage,
    ReceiptMessage,
    decode,
    new_uuid,
    utc_iso,
)

WARD, BED = "icu", "bed-12"
WAIT_MS = 20000
# Alarms at once on the demo patient: any level, any missing face.
EAGER_ALARMS = AlarmSettings(
    medium_threshold=0.1,
    hysteresis=0.05,
    high_threshold=0.2,
    alarm_delay_s=0.0,
    no_face_delay_s=0.0,
    technical_delay_s=0.0,
)


class Station:
    """A raw station-side subscriber of one bed; answers alarm events with receipts if asked."""

    def __init__(self, address, *, bed: str = BED, auto_receipt: bool = False) -> None:
        self.bed = bed
        self.auto_receipt = auto_receipt
        self.messages: list[SimpleNamespace] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        # One client id each: the broker would take a shared id over from the other.
        client_id = f"test-station-{bed}-{new_uuid()[:8]}"
        self.client = connect_client(address, client_id, on_message=self._on_message)
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.subscribe(f"{topics.PREFIX}/{WARD}/{bed}/#", qos=1)
        assert self._subscribed.wait(5), "the station's subscription was not acknowledged"

    def _on_message(self, client, _userdata, message) -> None:
        _ward, _bed, leaf = topics.parse_topic(message.topic)
        body = decode(leaf, message.payload)
        with self._lock:
            self.messages.append(SimpleNamespace(leaf=leaf, body=body, retain=message.retain))
        if self.auto_receipt and leaf == topics.ALARM_EVENT:
            self.send(ReceiptMessage(WARD, self.bed, utc_iso(), body.uuid, "station-1"))

    def send(self, message) -> None:
        topic = topics.topic(WARD, self.bed, message.LEAF)
        self.client.publish(topic, message.to_payload(), qos=1)

    def of(self, leaf: str) -> list:
        with self._lock:
            return [m.body for m in self.messages if m.leaf == leaf]

    def status(self) -> list[str]:
        return [body.state for body in self.of(topics.STATUS)]

    def close(self) -> None:
        close_client(self.client)


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "painmon.ini"


def _store(path) -> QSettings:
    return QSettings(str(path), QSettings.Format.IniFormat)


def _ward(broker, **changes) -> WardSettings:
    values = {"publish": True, "broker_url": broker.url, "ward": WARD, "bed": BED, "obs_hz": 10.0}
    return WardSettings(**{**values, **changes})


@pytest.fixture
def make_window(qtbot, store_path, face_model_path):
    windows = []

    def make(settings: AppSettings, **kwargs) -> MainWindow:
        store = _store(store_path)
        save_settings(store, settings)
        window = MainWindow(store, face_model=face_model_path, **kwargs)
        qtbot.addWidget(window)
        windows.append(window)
        assert window.load_model(shipped_demo_model_path())
        return window

    yield make
    for window in windows:
        window.close()
        assert window.threads_finished() and not window.timers_active()
        assert window.bed_publisher is None
    assert not [t for t in threading.enumerate() if t.name.startswith("painmon-capture")]


@pytest.fixture
def station(broker):
    made = []

    def make(**kwargs) -> Station:
        made.append(Station(BrokerAddress.parse(broker.url), **kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


# --------------------------------------------------------------------- settings


def test_ward_settings_round_trip_without_the_password(tmp_path, store_path):
    secret = tmp_path / "bed.pw"
    secret.write_text("s3cret-never-stored\n")
    ward = WardSettings(
        publish=True,
        broker_url="mqtt://127.0.0.1:1883",
        ward=WARD,
        bed=BED,
        obs_hz=5.0,
        remote_ack=True,
        mqtt_user="bed12",
        password_file=str(secret),
    )
    save_settings(_store(store_path), AppSettings(ward=ward))
    assert load_settings(_store(store_path)).ward == ward
    text = store_path.read_text()
    assert "s3cret" not in text and str(secret) in text
    # Off by default: a fresh installation publishes nothing and refuses remote acknowledges.
    assert load_settings(_store(tmp_path / "fresh.ini")).ward == WardSettings()
    assert not WardSettings().publish and not WardSettings().remote_ack


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bed": "bed/12"}, "bed 'bed/12' is not valid"),
        ({"ward": "icu+"}, "ward 'icu+' is not valid"),
        ({"obs_hz": 11.0}, "1..10 Hz"),
        ({"obs_hz": 0.5}, "1..10 Hz"),
        ({"broker_url": "http://h:1"}, "must start with mqtt:// or mqtts://"),
        ({"broker_url": "mqtt://u:pw@h:1"}, "must not carry a password"),
        ({"broker_url": "mqtts://h:8883"}, "give the ward's CA file"),
        ({"bed": ""}, "needs the bed"),
        ({"password_file": "/x"}, "needs an MQTT user"),
        ({"tls_cert": "/c.pem"}, "need the ward's CA"),
    ],
)
def test_ward_settings_say_what_is_wrong(changes, message):
    base = {"publish": True, "broker_url": "mqtt://127.0.0.1:1883", "ward": WARD, "bed": BED}
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace(".", r"\.")):
        WardSettings(**{**base, **changes})


def test_broken_stored_ward_settings_mean_not_publishing(store_path):
    store = _store(store_path)
    save_settings(store, AppSettings(ward=WardSettings(broker_url="mqtt://h:1", ward=WARD)))
    store.setValue("ward/bed", "bed 12")  # a space: not a label
    store.setValue("ward/publish", True)
    store.sync()
    loaded = load_settings(_store(store_path))
    assert not loaded.ward.publish and loaded.source == AppSettings().source


def test_the_dialog_edits_and_validates_the_ward_group(qtbot, tmp_path):
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    assert dialog.ward_available and dialog.ward_hint.isHidden()
    dialog._ward_publish.setChecked(True)
    dialog._ward_url.setText("mqtt://127.0.0.1:1883")
    dialog._ward_name.setText(WARD)
    dialog._ward_bed.setText("bed 12")
    dialog.accept()
    assert "bed 'bed 12' is not valid" in dialog._error.text()
    dialog._ward_bed.setText(BED)
    dialog._ward_password_file.setText(str(tmp_path / "missing.pw"))
    dialog._ward_user.setText("bed12")
    dialog.accept()
    assert "password file" in dialog._error.text() and "no such file" in dialog._error.text()
    dialog._ward_password_file.setText("")
    dialog._ward_hz.setValue(4.0)
    dialog._ward_remote_ack.setChecked(True)
    assert dialog.settings().ward == WardSettings(
        publish=True,
        broker_url="mqtt://127.0.0.1:1883",
        ward=WARD,
        bed=BED,
        obs_hz=4.0,
        remote_ack=True,
        mqtt_user="bed12",
    )


def test_without_the_ward_extra_the_group_says_how_to_get_it(qtbot, monkeypatch):
    from painmon.app import settings_dialog

    monkeypatch.setattr(settings_dialog, "ward_available", lambda: False)
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    assert "pip install 'painmon[ward]'" in dialog.ward_hint.text()
    assert not dialog._ward_publish.isEnabled() and not dialog._ward_publish.isChecked()
    with pytest.raises(ValueError, match=r"pip install 'painmon\[ward\]'"):
        WardSettings(publish=True, broker_url="mqtt://h:1", ward=WARD, bed=BED)


# --------------------------------------------------------------------- the window on the bus


@pytest.mark.slow
def test_the_window_publishes_obs_and_status_and_goes_offline_at_stop(
    qtbot, broker, station, make_window
):
    bus = station()
    window = make_window(AppSettings(source="camera:0", ward=_ward(broker)))
    window.start_source(DEMO_SOURCE)
    publisher = window.bed_publisher
    assert publisher is not None and publisher.obs_hz == 10.0
    qtbot.waitUntil(lambda: len(bus.of(topics.OBS)) >= 5, timeout=WAIT_MS)
    assert bus.status()[0] == "online"
    assert all(obs.ward == WARD and obs.bed == BED for obs in bus.of(topics.OBS))
    seqs = [obs.seq for obs in bus.of(topics.OBS)]
    assert seqs == sorted(seqs)
    window.refresh()
    assert not window.status_ward.isHidden()
    assert window.status_ward.text() == f"ward: {WARD}/{BED} connected"
    window.stop_source()
    qtbot.waitUntil(lambda: bus.status()[-1:] == ["offline"], timeout=WAIT_MS)
    assert window.bed_publisher is None and window.status_ward.isHidden()
    # The offline status is retained: a station that comes later sees it at once.
    late = station()
    qtbot.waitUntil(lambda: late.status() == ["offline"], timeout=WAIT_MS)


@pytest.mark.slow
def test_an_alarm_event_reaches_the_station_and_its_receipt_empties_the_tracker(
    qtbot, broker, station, make_window
):
    bus = station(auto_receipt=True)
    window = make_window(AppSettings(alarm=EAGER_ALARMS, ward=_ward(broker)))
    window.start_source(DEMO_SOURCE)
    publisher = window.bed_publisher
    qtbot.waitUntil(lambda: len(bus.of(topics.ALARM_EVENT)) >= 1, timeout=WAIT_MS)
    first = bus.of(topics.ALARM_EVENT)[0]
    assert first.phase == "start" and first.kind in ("pain", "technical")
    qtbot.waitUntil(lambda: publisher.delivery.receipted >= 1, timeout=WAIT_MS)
    assert publisher.delivery.sends(first.uuid) == 0  # confirmed: no longer re-sent
    qtbot.waitUntil(lambda: publisher.delivery.pending == 0, timeout=WAIT_MS)
    # The retained alarm state names the alarm the station was told of.
    qtbot.waitUntil(
        lambda: any(state.alarms for state in bus.of(topics.ALARM_STATE)), timeout=WAIT_MS
    )


@pytest.mark.slow
@pytest.mark.parametrize("remote_ack", [False, True])
def test_a_remote_acknowledge_is_applied_only_when_the_bed_allows_it(
    qtbot, broker, station, make_window, remote_ack
):
    bus = station()
    window = make_window(AppSettings(ward=_ward(broker, remote_ack=remote_ack)))
    window.start_source(DEMO_SOURCE)
    publisher = window.bed_publisher
    qtbot.waitUntil(lambda: publisher.connected, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: bus.status() == ["online"], timeout=WAIT_MS)
    command = CommandMessage(WARD, BED, utc_iso(), new_uuid(), "station-1")
    bus.send(command)
    qtbot.waitUntil(lambda: bool(bus.of(topics.CMD_REPLY)), timeout=WAIT_MS)
    reply = bus.of(topics.CMD_REPLY)[0]
    assert reply.cmd_id == command.cmd_id and reply.ok is remote_ack
    if remote_ack:  # applied by the engine on the worker thread
        assert reply.reason == APPLIED and publisher.commands_applied == 1
    else:  # the default: the bed stays the primary alarm
        assert reply.reason == REMOTE_ACK_OFF_REASON
        assert publisher.commands_refused == 1 and publisher.commands_applied == 0


@pytest.mark.slow
def test_nothing_is_published_when_disabled_or_by_the_demo(qtbot, broker, station, make_window):
    bus, bed_13 = station(), station(bed="bed-13")
    off = dataclasses.replace(_ward(broker), publish=False)
    window = make_window(AppSettings(ward=off))
    window.start_source(DEMO_SOURCE)
    qtbot.waitUntil(lambda: window.results_received >= 5, timeout=WAIT_MS)
    assert window.bed_publisher is None and window.status_ward.isHidden()
    window.close()
    # The demo never publishes the nurse's stored ward...
    demo = make_window(AppSettings(ward=_ward(broker)), demo=True)
    demo.start_source(DEMO_SOURCE)
    qtbot.waitUntil(lambda: demo.results_received >= 5, timeout=WAIT_MS)
    assert demo.bed_publisher is None
    qtbot.wait(500)
    assert bus.messages == [] and bed_13.messages == []
    # ...only a ward configured in this session, which restarts the running source.
    demo.apply_settings(dataclasses.replace(demo.app_settings, ward=_ward(broker, bed="bed-13")))
    assert demo.bed_publisher is not None and demo.bed_publisher.bed == "bed-13"
    qtbot.waitUntil(lambda: len(bed_13.of(topics.OBS)) >= 2, timeout=WAIT_MS)
    assert bus.messages == []  # bed-13 is another bed's topic


@pytest.mark.slow
def test_a_broker_out_of_reach_is_shown_and_raises_central_unreachable(
    qtbot, make_window, mosquitto_binary
):
    from painmon.core.ward.broker import free_port

    ward = WardSettings(
        publish=True, broker_url=f"mqtt://127.0.0.1:{free_port()}", ward=WARD, bed=BED
    )
    window = make_window(AppSettings(ward=ward))
    window.start_source(DEMO_SOURCE)
    qtbot.waitUntil(lambda: window.results_received >= 2, timeout=WAIT_MS)
    window.refresh()
    assert window.status_ward.text() == "ward: broker not reached"
    # After 5 s without the broker the bed raises its own technical alarm (on_poll).
    qtbot.waitUntil(
        lambda: (
            window.alarm_state is not None
            and CENTRAL_UNREACHABLE in window.alarm_state.system_conditions
        ),
        timeout=WAIT_MS,
    )
    window.refresh()
    assert "central station not reached" in window.banner.technical_row.text().lower()


def test_a_ward_that_cannot_start_is_shown_and_monitoring_goes_on(qtbot, tmp_path, make_window):
    # Publishing on, but the password file vanished since it was configured.
    ward = WardSettings(
        publish=True,
        broker_url="mqtt://127.0.0.1:9",
        ward=WARD,
        bed=BED,
        mqtt_user="bed12",
        password_file=str(tmp_path / "gone.pw"),
    )
    window = make_window(AppSettings(ward=ward))
    window.start_source(DEMO_SOURCE)
    assert window.bed_publisher is None
    assert window.status_ward.text() == "ward: not published"
    assert "gone.pw" in window.status_ward.toolTip()
    qtbot.waitUntil(lambda: window.results_received >= 2, timeout=WAIT_MS)


def test_a_failing_hook_never_stops_the_monitor(qtbot, make_window):
    window = make_window(AppSettings())
    window.start_source(DEMO_SOURCE)
    qtbot.waitUntil(lambda: window.results_received >= 1, timeout=WAIT_MS)

    def broken(_result) -> None:
        raise RuntimeError("the ward link broke")

    window._worker.on_result = broken  # as a publisher failing on the worker thread
    seen = window.results_received
    qtbot.waitUntil(lambda: window.results_received >= seen + 5, timeout=WAIT_MS)
    assert window._worker.hook_failures >= 1 and window.threads_finished() is False
