"""One reading on the state panel: the word is the band of the number shown (issue #13, 1)."""

from __future__ import annotations

import numpy as np
import pytest

from painmon.core.live.alarms import AlarmManager
from painmon.core.live.capture import Frame
from painmon.core.live.display import (
    Reading,
    display_state,
    reading,
    reading_band,
    reading_explainer,
    result_reading,
)
from painmon.core.live.engine import STAGES, EngineResult
from painmon.core.live.face import FaceObservation
from painmon.core.live.face_detect import FaceBox
from painmon.core.live.quality import QualityReport
from painmon.core.live.smoothing import SmoothedScore
from painmon.core.util.labels import DEFAULT_CLASS_NAMES

NOW_S = 50.0


@pytest.mark.parametrize(
    ("level", "band"),
    [
        (0.0, 0),
        (0.49, 0),
        (0.5, 1),
        (1.49, 1),
        (1.5, 2),
        (2.4999, 2),
        (2.5, 3),
        (3.5, 4),
        (4.0, 4),
        (-0.2, 0),  # clamped
        (4.7, 4),  # clamped
    ],
)
def test_band_edges_round_half_up_and_clamp(level, band):
    assert reading_band(level) == band


def test_unknown_has_no_band_and_nan_is_refused():
    assert reading_band(None) is None
    with pytest.raises(ValueError, match="finite"):
        reading_band(float("nan"))


def _result(level: float, probs: tuple[float, ...]) -> EngineResult:
    frame = Frame(1, 1.0, np.zeros((120, 160, 3), np.uint8), NOW_S - 0.05, "test")
    observation = FaceObservation(1.0, True, FaceBox(40.0, 20.0, 60.0, 70.0, 0.9), 1, "test")
    pain_class = int(np.argmax(probs))
    smoothed = SmoothedScore(1.0, probs, pain_class, level, max(probs), False, "ok")
    return EngineResult(
        frame=frame,
        observation=observation,
        quality=QualityReport(True, 1.0, ()),
        probs=np.array(probs),
        gradcam=None,
        pain_class=pain_class,
        pain_level=level,
        smoothed=smoothed,
        au_pspi=None,
        alarm_state=AlarmManager().update(1.0, level),
        technical_condition=None,
        timings_ms=dict.fromkeys(STAGES, 1.0),
    )


def test_the_word_is_the_band_of_the_number_as_shown():
    """1.46 is shown as "1.5", so its word is Moderate (band 2), not Mild."""
    for level in np.linspace(0.0, 4.0, 401):
        shown = reading(float(level))
        assert shown.text == f"{level:.1f}"
        assert shown.word == DEFAULT_CLASS_NAMES[reading_band(float(shown.text))]
    assert reading(1.46).word == "Moderate" and reading(1.44).word == "Mild"
    # The examples: 2.1 is Moderate, 1.1 is Mild, 2.0 is Moderate.
    assert [reading(x).word for x in (2.1, 1.1, 2.0)] == ["Moderate", "Mild", "Moderate"]


def test_the_model_class_names_are_used_and_a_short_list_falls_back_to_the_number():
    names = ("none", "a little", "some", "much", "worst")
    assert reading(3.6, names).word == "worst"
    assert reading(3.6, names[:3]).word == "4"


def test_reading_of_a_result_names_the_arg_max_only_as_secondary_information():
    # Expected level 2.1 while the arg-max class is 3 (a bimodal distribution).
    result = _result(2.1, (0.2, 0.0, 0.1, 0.6, 0.1))
    shown = result_reading(result, DEFAULT_CLASS_NAMES, 3.0)
    assert shown is not None
    assert (shown.text, shown.word) == ("2.1", "Moderate")
    assert (shown.most_likely, shown.most_likely_pct) == ("Strong", 60)
    assert "smoothed over 3 s" in shown.explainer and "0–4" in shown.explainer


def test_display_state_carries_the_reading_and_explainer():
    result = _result(1.5, (0.1, 0.3, 0.3, 0.2, 0.1))
    display = display_state(
        result, result.alarm_state, NOW_S, last_result_s=NOW_S, worker_running=True,
        smoothing_time_constant_s=2.5,
    )  # fmt: skip
    assert display.reading_value == 1.5 and display.reading_word == "Moderate"
    assert display.reading is not None
    assert display.reading.explainer == reading_explainer(2.5)
    stale = display_state(result, result.alarm_state, NOW_S, last_result_s=NOW_S - 10)
    assert stale.reading is None and stale.reading_value is None and stale.reading_word == ""


def test_reading_refuses_a_word_that_is_not_the_band_of_its_number():
    with pytest.raises(ValueError, match="band"):
        Reading(value=2.1, text="2.1", band=3, word="Strong", explainer="x")
    with pytest.raises(ValueError, match="as shown"):
        Reading(value=2.1, text="2.10", band=2, word="Moderate", explainer="x")
