"""The trend's x range: auto-range from the first sample until the window fills, then scroll."""

from __future__ import annotations

import pytest

from painmon.core.live.trend import MIN_VISIBLE_SPAN_S, visible_range

WINDOW_S = 15 * 60.0
NOW_S = 1_800_000_000.0


def test_no_data_shows_the_whole_window_ending_now():
    assert visible_range(None, NOW_S, WINDOW_S) == (NOW_S - WINDOW_S, NOW_S)


def test_the_first_minutes_fill_the_plot_from_the_left():
    first_s = NOW_S - 4 * 60.0  # 4 minutes of data in a 15-minute window
    assert visible_range(first_s, NOW_S, WINDOW_S) == (first_s, NOW_S)


def test_a_few_seconds_of_data_span_at_least_a_minute():
    first_s = NOW_S - 5.0
    assert visible_range(first_s, NOW_S, WINDOW_S) == (first_s, first_s + MIN_VISIBLE_SPAN_S)
    # A window shorter than the minimum span is never exceeded.
    assert visible_range(first_s, NOW_S, 30.0) == (first_s, first_s + 30.0)


@pytest.mark.parametrize("age_s", [WINDOW_S, WINDOW_S + 1.0, 3 * WINDOW_S])
def test_once_the_data_spans_the_window_it_scrolls(age_s):
    assert visible_range(NOW_S - age_s, NOW_S, WINDOW_S) == (NOW_S - WINDOW_S, NOW_S)


def test_a_longer_window_auto_ranges_again():
    first_s = NOW_S - 20 * 60.0  # 20 minutes of data: fills 15 min, not 60 min
    assert visible_range(first_s, NOW_S, WINDOW_S) == (NOW_S - WINDOW_S, NOW_S)
    assert visible_range(first_s, NOW_S, 60 * 60.0) == (first_s, NOW_S)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="window_s"):
        visible_range(None, NOW_S, 0.0)
    with pytest.raises(ValueError, match="now_s"):
        visible_range(None, float("nan"), WINDOW_S)
