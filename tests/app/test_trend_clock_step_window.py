"""The bedside window's trend after the wall clock is stepped back (NTP, an RTC correction):
it goes on drawing, and an alarm episode in the stepped time is shaded (pytest-qt)."""

from __future__ import annotations

import time

import pytest
from fakes import engine_result

pytest.importorskip("pytestqt")

from PySide6.QtGui import QImage

from painmon.core.live.alarms import AlarmManager, AlarmSettings

T0 = 1_700_000_000.0
STEP_S = 600.0


def test_the_trend_goes_on_after_the_wall_clock_steps_back(make_window, monkeypatch):
    window = make_window()
    manager = AlarmManager(AlarmSettings(alarm_delay_s=10.0))
    image = QImage(160, 120, QImage.Format.Format_RGB888)
    wall = [T0]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    for k in range(60):  # a calm minute
        wall[0] = T0 + k
        window.on_result(engine_result(float(k), 0.5, manager), image)
    for k in range(60, 240):  # the clock is corrected 10 minutes back; severe pain
        wall[0] = T0 + k - STEP_S
        window.on_result(engine_result(float(k), 3.9, manager), image)
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
