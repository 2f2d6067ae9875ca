"""The bedside window (pytest-qt, offscreen) and its display-free helpers (trend, tones)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import threading
import time

import numpy as np
import pytest
from fakes import engine_result

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings
from PySide6.QtGui import QImage

from painmon.app import sound
from painmon.app.main_window import NO_MODEL_TEXT, MainWindow
from painmon.app.settings_dialog import (
    AppSettings,
    SettingsDialog,
    load_settings,
    save_settings,
)
from painmon.core.live.alarms import AlarmManager, AlarmSettings
from painmon.core.live.capture import (
    FrameSource,
    RawFrame,
    SourceDisconnectedError,
    SourceError,
)
from painmon.core.live.engine import EngineResult
from painmon.core.live.session import SESSION_COLUMNS
from painmon.core.live.trend import TrendBuffer
from painmon.core.synth.stream import SyntheticPatientStream

WAIT_MS = 20000


@pytest.fixture(scope="module")
def model_path(untrained_dacnn_onnx):
    """A freshly initialised DA-CNN exported to ONNX (shared by the session)."""
    return untrained_dacnn_onnx


@pytest.fixture(scope="module")
def patient_frames():
    """A few frames of the synthetic patient for hand-made sources."""
    stream = iter(SyntheticPatientStream(seed=1, fps=30.0, seconds=1.0))
    return [np.ascontiguousarray(item[1]) for item in stream][:12]


@pytest.fixture
def store(tmp_path):
    """QSettings in an INI file under tmp_path; sessions go to tmp_path/sessions."""
    settings = QSettings(str(tmp_path / "painmon.ini"), QSettings.Format.IniFormat)
    save_settings(settings, AppSettings(session_root=str(tmp_path / "sessions")))
    return settings


def _capture_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("painmon-capture")]


@pytest.fixture
def make_window(qtbot, store, face_model_path):
    windows = []

    def make(**kwargs) -> MainWindow:
        window = MainWindow(store, face_model=face_model_path, **kwargs)
        qtbot.addWidget(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()
        # No dangling QThread, QTimer or capture thread after close.
        assert window.threads_finished()
        assert not window.timers_active()
    assert not _capture_threads()


# --------------------------------------------------------------------- display-free helpers


def test_alarm_tones_are_deterministic_small_and_shipped():
    for priority, name in sound.TONE_FILES.items():
        data = sound.wav_bytes(priority)
        assert data == sound.wav_bytes(priority)
        shipped = sound.ASSETS_DIR / name
        assert shipped.read_bytes() == data, f"regenerate {name}: python -m painmon.app.sound"
        assert len(data) < 100_000
    high, medium = sound.tone_samples("high"), sound.tone_samples("medium")
    assert high.dtype == np.int16 and np.abs(high).max() > 10_000
    assert len(high) > len(medium)  # HIGH is the longer, 10-pulse burst
    with pytest.raises(ValueError, match="high or medium"):
        sound.tone_samples("low")


def test_trend_buffer_averages_buckets_and_keeps_unknown_and_episodes():
    trend = TrendBuffer(bucket_s=1.0, max_age_s=10.0)
    for i in range(30):  # 30 frames in one second: one bucket
        trend.update(100.0 + i / 30, 2.0 + (i % 2) * 0.2, 0.5, "none")
    trend.update(101.2, None, None, "medium")  # an unknown bucket inside an episode
    trend.update(102.5, 3.0, 0.8, "high")
    trend.update(103.1, None, None, "none")
    series = trend.series()
    assert series.wall_s.tolist() == [100.0, 101.0, 102.0, 103.0]
    assert series.pain_level[0] == pytest.approx(2.1)
    assert math.isnan(series.pain_level[1]) and math.isnan(series.confidence[3])
    assert series.episodes == ((101.0, 102.0, "medium"), (102.0, 103.0, "high"))
    assert series.unknown_spans == ((101.0, 102.0), (103.0, 104.0))
    trend.update(120.0, 1.0, 0.5, "none")  # older buckets than max_age_s are dropped
    assert trend.series().wall_s.tolist() == [120.0]


def test_settings_round_trip_and_broken_values_fall_back(store, qtbot):
    wanted = AppSettings(
        alarm=AlarmSettings(medium_threshold=2.0, high_threshold=3.0, alarm_delay_s=4.0),
        smoothing_time_constant_s=5.0,
        source="synthetic:3",
        show_landmarks=True,
        trend_window_min=60,
        session_root="/tmp/x",
    )
    save_settings(store, wanted)
    assert load_settings(store) == wanted
    store.setValue("alarm/high_threshold", 1.0)  # below medium: inconsistent
    store.setValue("trend_window_min", "banana")
    loaded = load_settings(store)
    assert loaded.alarm == AlarmSettings()
    assert loaded.trend_window_min == AppSettings().trend_window_min
    # One bad value falls back alone: the source, model and session folder are kept.
    store.setValue("model_path", "/models/ward.onnx")
    store.setValue("overlay/gradcam_opacity", "1.5")
    loaded = load_settings(store)
    assert loaded.gradcam_opacity == AppSettings().gradcam_opacity
    kept = (loaded.source, loaded.model_path, loaded.session_root)
    assert kept == ("synthetic:3", "/models/ward.onnx", "/tmp/x")
    assert (loaded.smoothing_time_constant_s, loaded.show_landmarks) == (5.0, True)
    dialog = SettingsDialog(wanted)
    qtbot.addWidget(dialog)
    dialog._spins["medium_threshold"].setValue(1.0)
    dialog._spins["hysteresis"].setValue(1.5)  # >= medium threshold: refused with a reason
    dialog.accept()
    assert "hysteresis" in dialog._error.text()
    dialog._spins["hysteresis"].setValue(0.3)
    assert dialog.settings().alarm == dataclasses.replace(
        wanted.alarm, medium_threshold=1.0, hysteresis=0.3
    )


# --------------------------------------------------------------------- the window


@pytest.mark.slow
def test_window_monitors_synthetic_patient_frames_flow_and_trend_grows(
    qtbot, make_window, model_path
):
    window = make_window()
    assert window.load_model(model_path)
    seen: list[EngineResult] = []
    window.on_result_received = seen.append  # the benchmarks' hook sees every counted result
    window.start_source("synthetic")
    qtbot.waitUntil(lambda: window.results_received >= 10, timeout=WAIT_MS)
    assert len(seen) == window.results_received and seen[-1] is window._latest
    first_len = len(window.trend)
    qtbot.waitUntil(lambda: len(window.trend) >= first_len + 1, timeout=WAIT_MS)
    window.refresh()
    window.refresh_trend()
    assert window.trend_plot.points_shown >= 2 or first_len >= 1
    assert window.status_source.text() == "source: synthetic"
    assert "fps" in window.status_fps.text() and "ms" in window.status_latency.text()
    assert window.model.sha256[:8] in window.status_model.text()
    assert window.status_provider.text() == "CPU"
    assert not window.state_panel.demo_badge.isVisibleTo(window)  # not a demo export
    result = window._latest
    assert isinstance(result, EngineResult) and result.output_known
    assert result.observation.face_found and result.gradcam is not None
    assert window.state_panel.level.text() == f"{result.smoothed.pain_level:.1f}"


def test_no_source_offers_demo_and_no_model_shows_video_only(qtbot, make_window):
    window = make_window()
    window.start_source("/nonexistent/clip.mp4")
    qtbot.waitUntil(lambda: window.video_stack.currentIndex() == 1, timeout=WAIT_MS)
    assert "no file" in window.prompt_detail.text()
    # (The prompt's demo button also loads the demo model: see test_window_settings.py.)
    window.start_source("synthetic")
    qtbot.waitUntil(lambda: window.results_received >= 5, timeout=WAIT_MS)
    window.refresh()
    assert window.video_stack.currentIndex() == 0
    assert window._latest.observation.face_found  # the face box is still drawn
    assert not window._latest.output_known
    assert window.state_panel.class_name.text() == "NO MODEL LOADED"
    assert NO_MODEL_TEXT in window.state_panel.reason.text()
    assert window.state_panel.level.text() == "—"


def test_broken_model_is_reported_and_window_keeps_running(make_window, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    window = make_window()
    assert not window.load_model(bad)
    window.refresh()
    assert window.model is None
    assert "cannot be verified" in window.state_panel.reason.text()


def test_scripted_episode_raises_banner_and_exactly_one_popup(make_window):
    window = make_window()
    manager = AlarmManager(AlarmSettings(alarm_delay_s=2.0, clear_hold_s=1.0))
    image = QImage(160, 120, QImage.Format.Format_RGB888)
    script = [(i / 10, 0.5) for i in range(0, 30)]  # 3 s calm
    script += [(3 + i / 10, 2.9) for i in range(30)]  # MEDIUM after the 2 s delay...
    script += [(6 + i / 10, 3.8) for i in range(30)]  # ...escalating to HIGH: same episode
    script += [(9 + i / 10, 0.4) for i in range(30)]  # clears -> HIGH latches
    priorities, popups = [], []
    for t_s, level in script:
        window.on_result(engine_result(t_s, level, manager), image)
        window.refresh()
        priorities.append(window.banner.priority)
        popups.append(window.popup_count)
    assert priorities[:50] == ["none"] * 50  # nothing before 3 s + 2 s delay
    assert popups[:50] == [0] * 50 and popups[50] == 1
    assert "medium" in priorities and priorities[-1] == "high"
    assert window.popup_count == 1  # onset and escalation: one popup per episode
    # In the window, not a window of its own: it cannot take focus or block anything.
    assert window.popup.isVisibleTo(window) and not window.popup.isWindow()
    assert window.popup.priority == "high"  # it followed the escalation
    assert window.alarm_state.latched
    assert "latched" in window.banner.text.text()
    assert window.banner.acknowledge_button.isEnabled()
    kinds = [e.kind for e in manager.events]
    assert kinds == ["onset", "escalation", "latch"]


def test_alarm_acknowledge_pause_session_and_export(
    qtbot, make_window, model_path, store, tmp_path
):
    # Thresholds so low that the untrained model's level (~2) is a HIGH pain episode.
    settings = load_settings(store)
    alarm = AlarmSettings(
        medium_threshold=0.1, high_threshold=0.2, hysteresis=0.05, alarm_delay_s=0.5
    )
    save_settings(store, dataclasses.replace(settings, alarm=alarm))
    window = make_window()
    assert window.load_model(model_path)
    window.start_source("synthetic")
    qtbot.waitUntil(lambda: window.results_received >= 1, timeout=WAIT_MS)
    folder = window.start_session("bed-7")
    assert folder is not None and folder.parent.parent == tmp_path / "sessions"
    qtbot.waitUntil(
        lambda: window.alarm_state is not None and window.alarm_state.pain_priority == "high",
        timeout=WAIT_MS,
    )
    window.refresh()
    assert window.banner.priority == "high" and window.popup_count == 1
    assert window.alarm_state.audio_active

    assert window.popup.isVisibleTo(window)
    window.acknowledge()
    qtbot.waitUntil(lambda: window.alarm_state.acknowledged, timeout=WAIT_MS)
    window.refresh()
    assert "acknowledged" in window.banner.text.text()
    assert not window.popup.isVisibleTo(window)  # acknowledged through the engine: the popup closed
    assert not window.banner.acknowledge_button.isEnabled()
    window.audio_pause()
    qtbot.waitUntil(
        lambda: window.alarm_state.audio_paused_remaining_s is not None, timeout=WAIT_MS
    )
    window.refresh()
    assert window.banner.audio_pause_button.text().startswith("Audio paused 2:0")
    window.apply_settings(
        dataclasses.replace(
            window.app_settings, alarm=dataclasses.replace(alarm, reminder_interval_s=60.0)
        )
    )
    assert load_settings(store).alarm.reminder_interval_s == 60.0  # persisted
    assert window.popup_count == 1

    exported = tmp_path / "export.csv"
    with qtbot.waitSignal(window.export_finished, timeout=WAIT_MS) as blocker:
        window.export_csv(exported)
    assert blocker.args == [str(exported)]
    with exported.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == SESSION_COLUMNS and len(rows) > 1
    window.stop_session()
    window.stop_source()
    alarm_log = (folder / "alarms.csv").read_text()
    for kind in ("onset", "acknowledge", "audio_pause", "settings_change"):
        assert f",{kind}," in alarm_log, kind
    assert "reminder_interval_s 300.0 -> 60.0" in alarm_log
    # session.json as open_session writes it for the headless monitor too.
    meta = _session_meta(folder)
    model = window.model
    assert meta["pseudonym"] == "bed-7" and meta["source"] == "synthetic"
    assert meta["model_id"] == str(model.metadata.get("architecture") or model.path.stem)
    assert meta["model_sha256"] == model.sha256
    assert meta["face_detector"] == "mediapipe-landmarker"  # the engine's tracker
    assert meta["thresholds"]["medium_threshold"] == 0.1
    assert meta["thresholds"]["reminder_interval_s"] == 60.0  # the change reached the file
    assert meta["thresholds"]["model_sha256"] == model.sha256
    assert meta["status"] == "ended" and meta["end_reason"] == "stopped by the operator"
    assert meta["frames_written"] > 0


def _session_meta(folder) -> dict:
    return json.loads((folder / "session.json").read_text(encoding="utf-8"))


def _running_window(qtbot, make_window, model_path) -> MainWindow:
    window = make_window()
    assert window.load_model(model_path)
    window.start_source("synthetic")
    qtbot.waitUntil(lambda: window.results_received >= 1, timeout=WAIT_MS)
    return window


def test_session_not_started_says_why(qtbot, make_window, model_path, tmp_path):
    window = make_window()
    assert window.start_session("bed-1") is None
    assert "load a model" in window.statusBar().currentMessage()
    assert window.load_model(model_path)
    assert window.start_session("bed-1") is None
    assert "start a video source" in window.statusBar().currentMessage()
    window.start_source("synthetic")
    # The engine (and so its face detector) is built on the worker thread: not yet.
    assert window.start_session("bed-1") is None
    assert "still opening" in window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: window.results_received >= 1, timeout=WAIT_MS)

    assert window.start_session("../bed-1") is None  # not a safe folder name
    message = window.statusBar().currentMessage()
    assert message.startswith("session not started:") and "pseudonym" in message
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    window.app_settings = dataclasses.replace(
        window.app_settings, session_root=str(blocker / "sessions")
    )
    assert window.start_session("bed-1") is None  # the root cannot be made
    assert window.statusBar().currentMessage().startswith("session not started:")
    assert not window.session_active and window.session_folder is None
    assert not (tmp_path / "sessions").exists()


def test_session_files_are_closed_when_the_source_stops_first(qtbot, make_window, model_path):
    window = _running_window(qtbot, make_window, model_path)
    folder = window.start_session("bed-2")
    assert _session_meta(folder)["status"] == "running"
    window.stop_source()  # no stop_session: the worker closes the files
    assert not window.session_active
    meta = _session_meta(folder)
    assert meta["status"] == "ended" and meta["end_reason"] == "monitoring stopped"


def test_session_writer_is_closed_when_the_worker_ended_before_attaching(
    qtbot, make_window, model_path
):
    window = _running_window(qtbot, make_window, model_path)
    thread = window._thread
    window._worker.stop()  # as after an engine error: the worker is gone, the window not told
    qtbot.waitUntil(thread.isFinished, timeout=WAIT_MS)
    first = window.start_session("bed-3")  # its attach command never runs
    assert first is not None and _session_meta(first)["status"] == "running"
    second = window.start_session("bed-3")  # stops the first: closed here, not by the worker
    meta = _session_meta(first)
    assert meta["status"] == "ended" and meta["end_reason"] == "stopped by the operator"
    window.stop_source()
    meta = _session_meta(second)
    assert meta["status"] == "ended" and meta["end_reason"] == "monitoring stopped"


class FlakyCamera(FrameSource):
    """A live source that stops delivering while ``dead`` is set and recovers after."""

    is_live = True

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__("camera:flaky")
        self.frames = frames
        self.dead = threading.Event()
        self._count = 0

    def open(self) -> None:
        if self.dead.is_set():
            raise SourceError("camera:flaky could not be opened: unplugged")

    def read(self) -> RawFrame:
        if self.dead.is_set():
            raise SourceDisconnectedError("camera:flaky stopped delivering images")
        time.sleep(1 / 30)
        self._count += 1
        return RawFrame(self.frames[self._count % len(self.frames)])


@pytest.mark.slow
def test_source_that_dies_shows_technical_alarm_and_recovers(qtbot, make_window, patient_frames):
    window = make_window()
    camera = FlakyCamera(patient_frames)
    window.start_source(camera)
    qtbot.waitUntil(lambda: window.results_received >= 5, timeout=WAIT_MS)
    camera.dead.set()
    qtbot.waitUntil(
        lambda: (
            window.alarm_state is not None
            and "SIGNAL_LOST" in window.alarm_state.technical_conditions
        ),
        timeout=WAIT_MS,
    )
    window.refresh()
    assert window.video.message == "NO SIGNAL"
    assert not window.banner.technical_row.isHidden()
    assert "NO SIGNAL" in window.banner.technical_row.text()
    received = window.results_received
    camera.dead.clear()
    qtbot.waitUntil(
        lambda: (
            window.results_received > received + 3
            and "SIGNAL_LOST" not in window.alarm_state.technical_conditions
        ),
        timeout=WAIT_MS,
    )
    window.refresh()
    assert window.video.message != "NO SIGNAL"
    assert window.banner.technical_row.isHidden()


def test_retrain_dialog_opens_once_from_the_menu_and_closes_with_the_window(
    make_window, tmp_path, monkeypatch
):
    monkeypatch.setenv("PAINMON_DATA", str(tmp_path / "data"))
    window = make_window()
    window.action_retrain.trigger()
    dialog = window._retrain_dialog
    assert dialog.isVisible()
    window.open_retrain()
    assert window._retrain_dialog is not None
    window.shutdown()
    assert not dialog.timers_active()


RUN_APP_SCRIPT = """
import json, sys
from pathlib import Path
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication
from painmon.app import main as app_main
from painmon.app.main_window import MainWindow

tmp, face_model, with_model = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
    QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp / "config"))
if not with_model:
    app_main.demo_model_path = lambda: tmp / "missing.onnx"
app = QApplication([])
seen = {}

def close_when_running():
    windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
    window = windows[-1] if windows else None
    if window is None or window.results_received < 3:
        QTimer.singleShot(100, close_when_running)
        return
    window.refresh()
    seen.update(reason=window.state_panel.reason.text(), source=window.source_name,
                demo=window.model is not None and window.model.is_demo)
    window.close()
    seen["finished"] = window.threads_finished()
    QApplication.instance().quit()

QTimer.singleShot(100, close_when_running)
seen["code"] = app_main.run_app(demo=True, face_model=face_model)
print(json.dumps(seen))
"""


@pytest.mark.parametrize("with_model", [pytest.param(True, marks=pytest.mark.slow), False])
def test_run_app_demo_opens_and_closes(tmp_path, face_model_path, with_model):
    """`painmon demo` end to end in its own process (app.exec() owns the event loop)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", RUN_APP_SCRIPT, str(tmp_path), str(face_model_path),
         "1" if with_model else "0"],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen", "PAINMON_DATA": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["code"] == 0 and seen["source"] == "synthetic" and seen["finished"]
    if with_model:
        assert seen["demo"], "painmon demo must load the shipped demo model"
    else:
        assert NO_MODEL_TEXT in seen["reason"] and "missing.onnx" in seen["reason"]


# --------------------------------------------------------------------- alarm sound


class _FakeEffect:
    """Stands in for QSoundEffect; ``broken`` raises like a vanished audio device."""

    def __init__(self, path, log, broken=False):
        self.name, self.log, self.broken = path.name, log, broken

    def play(self):
        self.log.append(("play", self.name))
        if self.broken:
            raise RuntimeError("audio device vanished")

    def stop(self):
        self.log.append(("stop", self.name))


def test_tone_pattern_repeats_high_faster_than_medium_and_restarts_on_change():
    pattern = sound.TonePattern()
    started = {
        t / 10: pattern.update(t / 10, "high" if t < 120 else "medium") for t in range(0, 240)
    }
    assert [t for t, p in started.items() if p == "high"] == [0.0, 5.0, 10.0]
    assert [t for t, p in started.items() if p == "medium"] == [12.0, 22.0]
    assert pattern.update(30.0, None) is None and pattern.priority is None
    assert pattern.update(30.1, "medium") == "medium"  # a new alarm sounds at once
    with pytest.raises(ValueError, match="high or medium"):
        pattern.update(31.0, "low")


def test_sound_unavailable_is_said_in_the_status_bar(make_window, tmp_path):
    window = make_window()
    if window.sound.available:  # a machine with speakers and QtMultimedia
        assert window.status_sound.text() == "sound: on"
    else:
        assert window.status_sound.text().startswith(sound.SOUND_UNAVAILABLE)
        assert "visual alarms only" in window.status_sound.text()
    missing = sound.AlarmSound(tmp_path, effect_factory=lambda path: None)
    assert not missing.available and "tone file" in missing.reason
    missing.play("high")  # silent, never raises
    assert missing.bursts_started == 0


def _high_episode(window, effects_log):
    manager = AlarmManager(AlarmSettings(alarm_delay_s=1.0))
    image = QImage(160, 120, QImage.Format.Format_RGB888)
    priorities = []
    for i in range(30):  # 3 s at level 3.8: HIGH after 1 s
        window.on_result(engine_result(i / 10, 3.8, manager), image)
        window.refresh()
        priorities.append(window.banner.priority)
    return manager, priorities


@pytest.mark.parametrize("audio", ["working", "broken", "missing"])
def test_visual_alarm_is_the_same_whatever_the_audio_does(make_window, audio, tmp_path):
    window = make_window()
    log = []
    folder = sound.ASSETS_DIR if audio != "missing" else tmp_path
    window.sound = sound.AlarmSound(
        folder, effect_factory=lambda path: _FakeEffect(path, log, broken=audio == "broken")
    )
    manager, priorities = _high_episode(window, log)
    assert priorities[:9] == ["none"] * 9 and priorities[-1] == "high"
    assert window.alarm_state.audio_active
    if audio == "missing":
        assert log == [] and not window.sound.available
        return
    assert ("play", "alarm_high.wav") in log  # the burst started (or tried to)
    # Acknowledge silences the tone; the banner still shows the alarm.
    played = len(log)
    window.on_alarm_state(manager.acknowledge(3.0))
    window.refresh()
    assert ("stop", "alarm_high.wav") in log[played:] and window.sound.priority is None
    assert all(action == "stop" for action, _name in log[played:])
    assert window.banner.priority == "high"


def test_audio_pause_mutes_the_tone_until_it_ends(make_window):
    window = make_window()
    log = []
    window.sound = sound.AlarmSound(effect_factory=lambda path: _FakeEffect(path, log))
    manager, _ = _high_episode(window, log)
    plays = log.count(("play", "alarm_high.wav"))
    assert plays == 1  # one burst so far: the next is due 5 s after the first
    played = len(log)
    window.on_alarm_state(manager.audio_pause(3.0, duration_s=60.0))
    for _ in range(3):
        window.refresh()
    assert window.sound.priority is None
    assert ("stop", "alarm_high.wav") in log[played:]
    assert all(action == "stop" for action, _name in log[played:])
    assert window.banner.priority == "high"


def test_haar_framing_mismatch_is_shown_in_the_window(qtbot, store):
    """The demo model was trained on Face Landmarker crops: choosing Haar says so on screen."""
    from painmon.core.store.catalog import shipped_demo_model_path

    window = MainWindow(store, face_model="haar")
    qtbot.addWidget(window)
    try:
        assert window.load_model(shipped_demo_model_path())
        window.start_source("synthetic")
        qtbot.waitUntil(lambda: window.face_detector == "haar", timeout=WAIT_MS)
        assert "crops unlike training" in window.status_face.text()
        assert "framed differently" in window.status_face.toolTip()
        window.stop_source()
        window.app_settings = dataclasses.replace(window.app_settings, face_model="")
        window.start_source("synthetic")
        qtbot.waitUntil(lambda: window.face_detector == "mediapipe-landmarker", timeout=WAIT_MS)
        assert window.status_face.text() == "face: mediapipe-landmarker"
    finally:
        window.close()
    assert window.threads_finished()


def test_a_face_the_model_cannot_score_shows_the_au_estimate(
    qtbot, make_window, gated_dacnn_onnx, shared_file
):
    """#11: on a real person a model trained on other faces says it cannot score the face,
    shows the AU estimate as the reading, and raises no pain alarm."""
    from painmon.core.live.display import AU_READING_CAPTION, AU_READING_HEADLINE

    window = make_window()
    assert window.load_model(gated_dacnn_onnx)
    assert "no domain gate" not in window.status_model.text()
    window.start_source(str(shared_file("media/single_face.mp4")))
    qtbot.waitUntil(
        lambda: (
            window._latest is not None and window._latest.technical_condition == "OUT_OF_DOMAIN"
        ),
        timeout=WAIT_MS,
    )
    window.refresh()
    assert window.video.message == "CANNOT SCORE THIS FACE"
    assert "unlike this model's training data" in window.video.sub_message
    panel = window.state_panel
    assert panel.class_name.text() == AU_READING_HEADLINE
    assert panel.caption.text() == AU_READING_CAPTION
    au = window._latest.au_pspi
    assert panel.level.text() == ("—" if au is None else f"{au:.1f}")
    assert "pain alarms are off" in panel.reason.text()
    assert panel.confidence.format() == "n/a"
    assert "CANNOT SCORE THIS FACE" in window.banner.technical_row.text()
    assert window.alarm_state.pain_priority == "none"


def test_a_model_without_domain_gate_is_marked(make_window, model_path):
    window = make_window()
    assert window.load_model(model_path)
    assert window.status_model.text().endswith("— no domain gate")
    assert "cannot tell when a face is unlike its training data" in window.status_model.toolTip()
