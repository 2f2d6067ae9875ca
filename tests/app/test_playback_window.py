"""The window plays files and the demo in real time (status bar says how well it keeps up);
``every_frame`` scores every frame in order for analysis (pytest-qt, offscreen)."""

from __future__ import annotations

import threading

import numpy as np
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


def _worker_results(clip, face_model_path, *, pipelined: bool):
    """Every result an every-frame worker emits for ``clip``, run on a plain thread."""
    import time

    from painmon.app.worker import InferenceWorker
    from painmon.core.live.engine import Engine
    from painmon.core.live.face import create_face_tracker
    from painmon.core.live.scoring import OnnxPainModel
    from painmon.core.store.catalog import shipped_demo_model_path

    def make_engine():
        model = OnnxPainModel(shipped_demo_model_path(), intra_op_num_threads=1)
        return Engine(model, create_face_tracker(str(face_model_path)))

    results = []
    worker = InferenceWorker(
        str(clip), make_engine, every_frame=True, on_result=results.append, pipelined=pipelined
    )
    thread = threading.Thread(target=worker.run, name="test-inference")
    thread.start()
    deadline = time.monotonic() + WAIT_MS / 1000
    while len(results) < CLIP_FRAMES and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    worker.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return results, isinstance(worker._engine, Engine)


def test_the_window_worker_pipelines_with_the_serial_engines_results(clip, face_model_path):
    """The face stage of the next frame overlaps the scoring of this one; nothing else changes:
    every frame, in order, with the serial engine's classes and probabilities."""
    serial, serial_plain = _worker_results(clip, face_model_path, pipelined=False)
    piped, piped_plain = _worker_results(clip, face_model_path, pipelined=True)
    assert serial_plain and not piped_plain  # the pipelined worker wrapped its engine
    assert [r.frame.index for r in piped] == list(range(CLIP_FRAMES))
    assert [r.frame.index for r in serial] == list(range(CLIP_FRAMES))
    assert [r.pain_class for r in piped] == [r.pain_class for r in serial]
    assert [r.technical_condition for r in piped] == [r.technical_condition for r in serial]
    assert sum(r.domain_score is not None for r in piped) >= CLIP_FRAMES // 2  # faces scored
    for a, b in zip(piped, serial, strict=True):
        assert (a.probs is None) == (b.probs is None)
        assert (a.domain_score is None) == (b.domain_score is None)
        if a.probs is not None:
            assert np.allclose(a.probs, b.probs, atol=1e-5)
        if a.domain_score is not None:
            assert a.domain_score == pytest.approx(b.domain_score, rel=1e-5)
    assert not [t for t in threading.enumerate() if t.name.startswith("painmon-face-stage")]
