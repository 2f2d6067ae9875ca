"""``painmon monitor --publish``: the headless monitor feeding a real Mosquitto.

In process (fake source, tracker and model, as tests/live does) for the hooks; the real
command line on a short made-up video for the end to end and the Last Will.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from fakes import SEVERE, FaceEverywhere, FakeModel

from painmon.core.live.capture import FrameSource, RawFrame
from painmon.core.live.monitor import run_monitor
from painmon.core.tools.cli import main
from painmon.core.ward import topics
from painmon.core.ward.bed import BedPublisher, monitor_hooks
from painmon.core.ward.client import BrokerAddress, close_client, connect_client
from painmon.core.ward.messages import ReceiptMessage, decode, new_uuid, utc_iso

WARD, BED = "W2", "bed-12"
POSIX = os.name == "posix"


class SlowSource(FrameSource):
    """``frames`` noisy frames at 10 fps of media time, each read taking ``read_s`` of wall."""

    def __init__(self, frames: int, read_s: float) -> None:
        super().__init__("fake.mp4")
        self.frames, self.read_s, self.sent = frames, read_s, 0
        self.total_frames = frames
        self.rng = np.random.default_rng(3)

    def open(self) -> None:
        self.sent = 0

    def read(self) -> RawFrame | None:
        if self.sent >= self.frames:
            return None
        time.sleep(self.read_s)
        rgb = self.rng.integers(40, 215, size=(160, 160, 3), dtype=np.uint8)
        self.sent += 1
        return RawFrame(rgb, (self.sent - 1) / 10.0, self.sent - 1)

    def close(self) -> None:
        pass


class Station:
    """A raw subscriber that receipts every alarm event, as the central station does."""

    def __init__(self, url: str) -> None:
        self.messages: list[SimpleNamespace] = []
        self._lock = threading.Lock()
        self.client = connect_client(
            BrokerAddress.parse(url),
            f"test-station-{new_uuid()[:8]}",
            on_connect=self._on_connect,
            on_message=self._on_message,
        )

    def _on_connect(self, client, _userdata, _flags, _reason, _props) -> None:
        for sub in topics.station_subscriptions(WARD):
            client.subscribe(sub, qos=1)

    def _on_message(self, client, _userdata, message) -> None:
        _ward, bed, leaf = topics.parse_topic(message.topic)
        body = decode(leaf, message.payload)
        with self._lock:
            self.messages.append(SimpleNamespace(leaf=leaf, body=body, retain=message.retain))
        if leaf == topics.ALARM_EVENT:
            receipt = ReceiptMessage(WARD, bed, utc_iso(), body.uuid, "station-1")
            client.publish(topics.topic(WARD, bed, topics.CMD_RECEIPT), receipt.to_payload(), qos=1)

    def of(self, leaf: str) -> list:
        with self._lock:
            return [m.body for m in self.messages if m.leaf == leaf]

    def close(self) -> None:
        close_client(self.client)


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def station(broker):
    running = Station(broker.url)
    yield running
    running.close()


def test_the_monitor_hooks_publish_obs_and_a_pain_alarm_that_the_station_receipts(
    broker, station, tmp_path
):
    publisher = BedPublisher(BrokerAddress.parse(broker.url), WARD, BED, obs_hz=10)
    publisher.start()
    assert wait_until(lambda: publisher.connected, 5)
    hooks = monitor_hooks(publisher)
    try:
        # 14 s of media (the alarm delay is 10 s) in about 1.5 s of wall time.
        summary = run_monitor(
            "fake.mp4",
            "fake.onnx",
            tmp_path / "out",
            progress=False,
            load_model=lambda _path: FakeModel(SEVERE, sha256="cd" * 32),
            open_source_fn=lambda _spec: SlowSource(140, 0.01),
            make_face_tracker=lambda _m: FaceEverywhere(),
            on_result=hooks.on_result,
            on_poll=hooks.on_poll,
            on_alarm_state=hooks.on_alarm_state,
        )
        assert summary.pain_alarm_episodes == 1
        assert wait_until(
            lambda: publisher.delivery.pending == 0 and station.of(topics.ALARM_EVENT), 3
        )
    finally:
        publisher.stop("test over")
    obs = station.of(topics.OBS)
    assert len(obs) >= 5
    assert [o.seq for o in obs] == list(range(len(obs)))
    assert obs[-1].known and obs[-1].level > 3.5 and obs[-1].band == 4
    (event,) = station.of(topics.ALARM_EVENT)
    assert (event.kind, event.condition, event.phase) == ("pain", "PAIN", "start")
    assert event.priority == "high" and event.alert_condition_priority == "Hi"
    assert station.of(topics.ALARM_STATE)[-1].alarms[0].priority == "high"
    # The offline status is published at stop: the station receives it a moment later.
    assert wait_until(
        lambda: [s.state for s in station.of(topics.STATUS)] == ["online", "offline"], 3
    ), [s.state for s in station.of(topics.STATUS)]
    assert not publisher.unreachable
    # Alarms.csv has the event the bus carried; nothing about the bus made pain unknown.
    alarms_csv = (summary.session_folder / "alarms.csv").read_text(encoding="utf-8")
    assert "onset" in alarms_csv and "CENTRAL_UNREACHABLE" not in alarms_csv


@pytest.mark.slow
def test_an_unconfirmed_bus_raises_central_unreachable_in_the_session_log(broker, tmp_path):
    """No station: the bed logs its own technical alarm and keeps scoring pain."""
    publisher = BedPublisher(BrokerAddress.parse(broker.url), WARD, BED)
    publisher.start()
    assert wait_until(lambda: publisher.connected, 5)
    hooks = monitor_hooks(publisher)
    results = []

    def on_result(result):
        results.append(result)
        hooks.on_result(result)

    try:
        # 16 s of media in ~8 s of wall time: the alarm comes at media 10 s (wall ~5 s),
        # its receipt never does, so CENTRAL_UNREACHABLE follows about 5 s later.
        summary = run_monitor(
            "fake.mp4",
            "fake.onnx",
            tmp_path / "out",
            progress=False,
            load_model=lambda _path: FakeModel(SEVERE, sha256="cd" * 32),
            open_source_fn=lambda _spec: SlowSource(230, 0.05),
            make_face_tracker=lambda _m: FaceEverywhere(),
            on_result=on_result,
            on_poll=hooks.on_poll,
            on_alarm_state=hooks.on_alarm_state,
        )
    finally:
        publisher.stop("test over")
    assert summary.technical_alarms_raised == 1
    alarms_csv = (summary.session_folder / "alarms.csv").read_text(encoding="utf-8")
    assert "CENTRAL_UNREACHABLE: central station not reached" in alarms_csv
    late = [r for r in results if r.alarm_state.system_conditions]
    assert late and all(r.output_known for r in late)  # pain output stayed known
    assert late[-1].alarm_state.pain_priority == "high"


# -- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--ward", "W"], "need --publish"),
        (["--remote-ack"], "need --publish"),
        (["--publish", "mqtt://127.0.0.1:1883"], "--ward W and --bed B"),
        (["--publish", "mqtt://127.0.0.1:1883", "--ward", "W", "--bed", "a/b"], "bed 'a/b'"),
        (["--publish", "mqtt://127.0.0.1:1883", "--ward", "W", "--bed", "B", "--obs-hz", "20"],
         "obs rate"),
        (["--publish", "tcp://u:pw-secret@127.0.0.1:1", "--ward", "W", "--bed", "B"], "mqtt://"),
        (["--publish", "mqtt://u:pw-secret@127.0.0.1:1", "--ward", "W", "--bed", "B"],
         "--mqtt-password-file"),
    ],
)  # fmt: skip
def test_bad_ward_options_are_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    code = main(["monitor", "--source", "synthetic", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "pw-secret" not in err


def test_a_bed_without_the_ward_extra_is_told_which_extra(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "paho" else real(name, *a)
    )
    argv = ["--publish", "mqtt://127.0.0.1:1883", "--ward", "W", "--bed", "B"]
    code = main(["monitor", "--source", "synthetic", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'painmon[ward]'" in err and "paho" in err


@pytest.fixture(scope="module")
def no_face_video(tmp_path_factory) -> Path:
    """30 s of changing dark blotches at 10 fps: no face, never FROZEN."""
    path = tmp_path_factory.mktemp("video") / "blotches.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(300):
        blotches = rng.integers(0, 30, size=(12, 16, 3), dtype=np.uint8)
        writer.write(blotches.repeat(10, axis=0).repeat(10, axis=1))
    writer.release()
    return path


@pytest.mark.slow
@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_painmon_monitor_publish_end_to_end_and_last_will_when_killed(
    broker, station, no_face_video, tmp_path
):
    command = [sys.executable, "-m", "painmon", "monitor", "--source", str(no_face_video),
               "--realtime", "--face-model", "haar", "--out", str(tmp_path / "sessions"),
               "--publish", broker.url, "--ward", WARD, "--bed", BED, "--obs-hz", "5"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # NO_FACE is a technical alarm after 5 s without a face: an alarm event on the bus.
        assert wait_until(lambda: station.of(topics.ALARM_EVENT), 20), process.poll()
        (status,) = station.of(topics.STATUS)
        assert status.state == "online" and status.software.startswith("painmon")
        obs = station.of(topics.OBS)
        assert len(obs) >= 10 and [o.seq for o in obs] == list(range(len(obs)))
        assert not obs[-1].known and obs[-1].unknown_reason == "NO_FACE"
        event = station.of(topics.ALARM_EVENT)[0]
        assert (event.kind, event.condition, event.phase) == ("technical", "NO_FACE", "start")
        killed = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
        # The broker publishes the Last Will after 1.5 keep-alives (3 s): OFFLINE within 5 s.
        assert wait_until(lambda: len(station.of(topics.STATUS)) >= 2, 6)
        assert station.of(topics.STATUS)[-1].state == "offline"
        print(f"bed SIGKILL -> offline at the station in {time.monotonic() - killed:.2f} s")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # A station that starts later still sees the bed offline (retained).
    late = Station(broker.url)
    try:
        assert wait_until(lambda: late.of(topics.STATUS), 3)
        assert late.of(topics.STATUS)[-1].state == "offline"
    finally:
        late.close()
