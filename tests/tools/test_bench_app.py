"""The app benchmark (real window, offscreen) and its display-free bookkeeping."""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest

from painmon.core.live.capture import FrameSource, RawFrame
from painmon.core.tools.bench_app import (
    APP_BENCH_KEYS,
    DisplayRecorder,
    RetimedSource,
    StallMeter,
    format_app_bench,
    percentiles,
)


class _Clip(FrameSource):
    """Three frames at 10 fps of media time."""

    def __init__(self) -> None:
        super().__init__("clip")
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        self.position = 0

    def read(self) -> RawFrame | None:
        if self.position >= 3:
            return None
        self.position += 1
        return RawFrame(np.full((4, 4, 3), self.position, np.uint8), self.position / 10.0)


def test_retimed_source_restamps_and_loops():
    clip = _Clip()
    source = RetimedSource(clip, fps=30.0, loop=True)
    source.open()
    frames = [source.read() for _ in range(7)]
    assert [f.index for f in frames] == list(range(7))
    assert [f.t_s for f in frames] == pytest.approx([i / 30.0 for i in range(7)])
    assert source.loops == 2 and clip.opens == 3
    once = RetimedSource(_Clip(), fps=30.0, loop=False)
    once.open()
    assert [once.read() is None for _ in range(4)] == [False, False, False, True]
    with pytest.raises(ValueError, match="positive"):
        RetimedSource(_Clip(), fps=0.0)


def test_display_recorder_counts_each_frame_once_after_the_start():
    recorder = DisplayRecorder(start_s=10.0)
    assert not recorder.update(0, 9.9, 10.05)  # captured during the warm-up
    assert recorder.update(1, 10.0, 10.04)
    assert not recorder.update(1, 10.0, 10.2)  # repainted: still one display
    assert recorder.update(2, 10.033, 10.1)
    assert recorder.latencies_ms() == pytest.approx([40.0, 67.0])
    with pytest.raises(ValueError, match="before it was captured"):
        recorder.update(3, 11.0, 10.5)


def test_stall_meter_measures_lateness_only_when_recording():
    meter = StallMeter(0.010)
    for now_s, record in [(0.0, True), (0.010, False), (0.060, True), (0.070, True)]:
        meter.update(now_s, record)
    assert meter.lateness_ms == pytest.approx([40.0, 0.0])
    stats = percentiles(meter.lateness_ms, (50, 99))
    assert stats["max"] == pytest.approx(40.0) and set(stats) == {"p50", "p99", "max"}
    assert percentiles([])["p95"] is None


def test_keep_singletons_alive_tops_up_what_pyside_drops(qapp):
    from PySide6.QtWidgets import QLabel

    from painmon.app.main_window import keep_singletons_alive

    label = QLabel()
    keep_singletons_alive(floor=50_000)
    for _ in range(200):
        label.setText("x")  # a void Qt call: PySide6 6.12 on 3.11 drops a ref to None here
    added = keep_singletons_alive(floor=50_000)
    if sys.version_info >= (3, 12):
        assert added == 0  # immortal singletons
    else:
        assert added >= 0
        assert min(sys.getrefcount(x) for x in (None, True, False)) >= 50_000


def test_bench_app_on_a_short_clip_returns_every_key(qapp, shared_file, face_model_path, tmp_path):
    from painmon.app.bench import bench_app

    out = tmp_path / "bench.json"
    result = bench_app(
        shared_file("media/single_face.mp4"),
        face_model=face_model_path,
        seconds=2.0,
        json_path=out,
        warmup_s=1.0,
    )
    assert set(result) == set(APP_BENCH_KEYS)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["gradcam_overlay"] is True
    assert result["face_tracker"] == "mediapipe face landmarker"
    assert result["frames_displayed"] > 0, result
    assert result["frames_displayed"] <= result["frames_read"]
    assert result["latency_ms"]["p50"] is not None and result["stall_samples"] > 0
    assert set(result["gui_ms"]) == {"refresh", "frame", "trend", "paint"}
    text = format_app_bench(result)
    assert "camera-to-display latency" in text and "event-loop stall" in text
    assert not [t for t in threading.enumerate() if t.name.startswith("painmon-capture")]
