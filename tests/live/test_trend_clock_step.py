"""The bedside trend when the wall clock is stepped (NTP, an RTC correction).

The window feeds :class:`TrendBuffer` wall-clock times; a step back must neither blank the
trend nor leave an alarm episode unshaded, and the axis keeps showing clock times.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from painmon.core.live.trend import CLOCK_STEP_BACK_S, TrendBuffer

T0 = 1_700_000_000.0
STEP_S = 600.0  # the clock is corrected 10 minutes backwards


def test_a_clock_stepped_back_moves_the_history_and_the_trend_goes_on():
    trend = TrendBuffer(bucket_s=1.0, max_age_s=3600.0)
    for k in range(60):  # one minute at level 1
        trend.update(T0 + k, 1.0, 0.9, "none")
    for k in range(60, 360):  # five more minutes, on the stepped clock; HIGH from minute 2
        trend.update(T0 + k - STEP_S, 3.8, 0.9, "high" if k >= 120 else "none")
    series = trend.series()
    # Nothing was dropped: the newest bucket is where the (new) clock says now is.
    assert series.wall_s[-1] == T0 + 359 - STEP_S
    assert series.pain_level[-1] == pytest.approx(3.8)
    assert len(series.wall_s) == 360
    assert np.all(series.pain_level[60:] == 3.8)
    # The minute before the step is kept, ending just before the new clock's first point.
    assert np.all(series.pain_level[:60] == 1.0)
    assert np.all(np.diff(series.wall_s) == 1.0)  # one bucket after another
    assert series.wall_s[0] == T0 - STEP_S
    # The HIGH episode during the stepped time is shaded, for its whole 4 minutes.
    assert series.episodes == ((T0 + 120 - STEP_S, T0 + 360 - STEP_S, "high"),)
    # What the window shows for "the last 15 minutes" on the new clock holds it all.
    now_s = T0 + 360 - STEP_S
    assert len(trend.series(now_s - 15 * 60).wall_s) == len(series.wall_s)


def test_jitter_back_within_a_bucket_edge_joins_the_open_bucket():
    trend = TrendBuffer(bucket_s=1.0, max_age_s=60.0)
    trend.update(T0 + 5.01, 2.0, 0.5, "none")
    trend.update(T0 + 4.99, 4.0, 0.5, "medium")  # 20 ms back across the bucket's edge
    trend.update(T0 + 5.5, 3.0, 0.5, "none")
    (point,) = trend.points()
    assert point.wall_s == T0 + 5.0  # nothing moved
    assert point.pain_level == pytest.approx(3.0) and point.priority == "medium"
    # Just within the tolerance it is still jitter; beyond it, a step.
    trend.update(T0 + 5.5 - CLOCK_STEP_BACK_S, 1.0, 0.5, "none")
    assert [p.wall_s for p in trend.points()] == [T0 + 5.0]
    trend.update(T0 + 5.4 - CLOCK_STEP_BACK_S - 1.0, 1.0, 0.5, "none")
    # The history moved back to end just before the new point's bucket.
    assert [p.wall_s for p in trend.points()] == [T0 + 1.0, T0 + 2.0]


def test_a_clock_stepped_forward_leaves_a_gap():
    trend = TrendBuffer(bucket_s=1.0, max_age_s=3600.0)
    trend.update(T0, 1.0, 0.5, "none")
    trend.update(T0 + 600.0, 2.0, 0.5, "none")
    assert [p.wall_s for p in trend.points()] == [T0, T0 + 600.0]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_time_that_is_not_finite_is_refused(bad):
    with pytest.raises(ValueError, match="wall_s"):
        TrendBuffer().update(bad, 1.0, 0.5, "none")
