"""The window plays files and the demo in real time (status bar says how well it keeps up);
``every_frame`` scores every frame in order for analysis (pytest-qt, offscreen)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings

from painmon.app.main_window import MainWindow
from painmon.app.settings_dialog import AppSettings, save_settings
from painmon.core.live.display import END_OF_VIDEO
from painmon.core.synth.stream import write_video

WAIT_MS = 60_000
CLIP_FRAMES = 20  # 2 s at 10 fps


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("playback-window")
    return write_video(folder / "patient.mp4", seconds=2.0, fps=10.0, seed=2, size=(320, 180))


@pytest.fixture
def make_window(qtbot, tmp_path, face_model_path):
    store = QSettings(str(tmp_path / "painmon.ini"), QSettings.Format.IniFormat)
    save_settings(store, AppSettings(session_root=str(tmp_path / "sessions")))
    windows: list[MainWindow] = []

    def make(**kwargs) -> MainWindow:
        window = MainWindow(store, face_model=face_model_path, **kwargs)
        qtbot.addWidget(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()
        assert window.threads_finished() and not window.timers_active()
    assert not [t for t in threading.enumerate() if t.name.startswith("painmon-capture")]


def test_every_frame_scores_every_frame_of_a_file(qtbot, make_window, clip):
    window = make_window(every_frame=True)
    window.start_source(str(clip))
    qtbot.waitUntil(lambda: window.source_ended_reason is not None, timeout=WAIT_MS)
    assert window.source_ended_reason == END_OF_VIDEO
    qtbot.waitUntil(lambda: window.results_received == CLIP_FRAMES, timeout=WAIT_MS)
    stats = window.capture_stats()
    assert stats.mode == "every_frame" and stats.frames_lost == 0
    assert stats.frames_read == CLIP_FRAMES
    assert window._latest.frame.index == CLIP_FRAMES - 1  # the last frame, in order
    window.refresh()
    assert window.status_playback.text().startswith("every frame")


def test_the_demo_plays_in_real_time_and_says_so(qtbot, make_window):
    window = make_window()
    assert not window.every_frame
    window.start_source("synthetic")
    qtbot.waitUntil(lambda: window.results_received >= 3, timeout=WAIT_MS)
    assert window.capture_stats().mode == "realtime"
    # The rate needs a second of playback; the label is computed by core.live.playback.
    qtbot.waitUntil(
        lambda: window.refresh() is None and window.status_playback.text() != "",
        timeout=WAIT_MS,
    )
    text = window.status_playback.text()
    assert text.startswith(("real time", "playing at")), text
    assert window.statusBar().isAncestorOf(window.status_playback)


def test_trend_plot_fills_from_the_left_then_scrolls(qtbot):
    from painmon.app.widgets import TrendPlot
    from painmon.core.live.trend import TrendBuffer

    plot = TrendPlot()
    qtbot.addWidget(plot)
    plot.window_s = 15 * 60.0
    buffer = TrendBuffer(bucket_s=1.0, max_age_s=3600.0)
    start_s = 1_800_000_000.0
    for k in range(240):  # 4 minutes of data
        buffer.update(start_s + k, 1.0, 0.9, "none")
    now_s = start_s + 240.0
    plot.show_series(buffer.series(now_s - plot.window_s), now_s)
    assert plot.x_range == (start_s, now_s)  # not squeezed into the right edge
    low, high = plot.level_plot.viewRange()[0]
    assert low == pytest.approx(start_s, abs=1.0) and high == pytest.approx(now_s, abs=1.0)
    for k in range(240, 1200):  # 20 minutes: the window is full, the axis scrolls
        buffer.update(start_s + k, 1.0, 0.9, "none")
    now_s = start_s + 1200.0
    plot.show_series(buffer.series(now_s - plot.window_s), now_s)
    assert plot.x_range == (now_s - plot.window_s, now_s)
