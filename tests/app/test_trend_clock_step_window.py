"""The bedside window's trend after the wall clock is stepped back (NTP, an RTC correction):
it goes on drawing, and an alarm episode in the stepped time is shaded (pytest-qt)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtGui import QImage

from painmon.core.live.alarms import AlarmManager, AlarmSettings
from painmon.core.live.capture import Frame
from painmon.core.live.engine import STAGES, EngineResult
from painmon.core.live.face import FaceObservation
from painmon.core.live.face_detect import FaceBox
from painmon.core.live.quality import QualityReport
from painmon.core.live.smoothing import SmoothedScore

T0 = 1_700_000_000.0
STEP_S = 600.0


def _result(t_s: float, level: float, manager: AlarmManager) -> EngineResult:
    low = math.floor(min(level, 3.999))
    probs = np.zeros(5)
    probs[low], probs[low + 1] = low + 1 - level, level - low
    frame = Frame(round(t_s), t_s, np.zeros((120, 160, 3), np.uint8), time.monotonic(), "s")
    smoothed = SmoothedScore(t_s, tuple(probs), int(np.argmax(probs)), level, 0.8, False, "ok")
    return EngineResult(
        frame=frame,
        observation=FaceObservation(t_s, True, FaceBox(40.0, 20.0, 60.0, 70.0, 0.9), 1, "t"),
        quality=QualityReport(True, 1.0, ()),
        probs=probs,
        gradcam=np.full((8, 8), 0.5, np.float32),
        pain_class=smoothed.pain_class,
        pain_level=level,
        smoothed=smoothed,
        au_pspi=None,
        alarm_state=manager.update(t_s, level),
        technical_condition=None,
        timings_ms=dict.fromkeys(STAGES, 1.0),
    )


def test_the_trend_goes_on_after_the_wall_clock_steps_back(make_window, monkeypatch):
    window = make_window()
    manager = AlarmManager(AlarmSettings(alarm_delay_s=10.0))
    image = QImage(160, 120, QImage.Format.Format_RGB888)
    wall = [T0]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    for k in range(60):  # a calm minute
        wall[0] = T0 + k
        window.on_result(_result(float(k), 0.5, manager), image)
    for k in range(60, 240):  # the clock is corrected 10 minutes back; severe pain
        wall[0] = T0 + k - STEP_S
        window.on_result(_result(float(k), 3.9, manager), image)
    assert window.alarm_state.pain_priority == "high"
    window.refresh_trend()
    plot = window.trend_plot
    assert plot.points_shown == 240  # nothing dropped, all within the last 15 minutes
    series = window.trend.series()
    assert series.pain_level[-1] == pytest.approx(3.9)
    assert [priority for _start, _end, priority in series.episodes] == ["high"]
    _start_s, end_s, _ = series.episodes[0]
    assert end_s == pytest.approx(wall[0] + 1.0, abs=1.0)  # up to the new clock's now
    assert plot.x_range[1] == pytest.approx(wall[0])  # the axis: the clock's time now
