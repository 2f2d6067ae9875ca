"""State panel and alarm banner, offscreen: one reading, and the pending alarm (issue #13)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from painmon.app.widgets import AlarmBanner, StatePanel
from painmon.core.live.alarms import AlarmManager, AlarmSettings
from painmon.core.live.capture import Frame
from painmon.core.live.display import PAIN_NOT_MONITORED_TEXT, display_state, reading_band
from painmon.core.live.engine import STAGES, EngineResult
from painmon.core.live.face import FaceObservation
from painmon.core.live.face_detect import FaceBox
from painmon.core.live.quality import QualityReport
from painmon.core.live.smoothing import SmoothedScore
from painmon.core.util.labels import DEFAULT_CLASS_NAMES


def _result(level: float, manager: AlarmManager, t_s: float = 1.0) -> EngineResult:
    """A result at smoothed ``level`` whose arg-max class is deliberately not its band."""
    probs = np.full(5, 0.1)
    probs[4 if level < 2 else 0] = 0.6  # bimodal: arg-max far from the expected level
    frame = Frame(1, t_s, np.zeros((120, 160, 3), np.uint8), time.monotonic(), "test")
    observation = FaceObservation(t_s, True, FaceBox(40.0, 20.0, 60.0, 70.0, 0.9), 1, "test")
    pain_class = int(np.argmax(probs))
    smoothed = SmoothedScore(t_s, tuple(probs), pain_class, level, 0.6, False, "ok")
    return EngineResult(
        frame=frame,
        observation=observation,
        quality=QualityReport(True, 1.0, ()),
        probs=probs,
        gradcam=None,
        pain_class=pain_class,
        pain_level=level,
        smoothed=smoothed,
        au_pspi=None,
        alarm_state=manager.update(t_s, level),
        technical_condition=None,
        timings_ms=dict.fromkeys(STAGES, 1.0),
    )


def test_the_word_shown_is_the_band_of_the_number_shown(qtbot):
    panel = StatePanel()
    qtbot.addWidget(panel)
    settings = AlarmSettings()
    for i, level in enumerate(np.linspace(0.0, 4.0, 161)):
        manager = AlarmManager(settings)
        result = _result(float(level), manager)
        # Both ways in: with the DisplayState's reading, and from the result alone.
        display = display_state(
            result, result.alarm_state, 10.0, last_result_s=10.0, worker_running=True,
            smoothing_time_constant_s=3.0,
        )  # fmt: skip
        reading = display.reading if i % 2 else None
        panel.show_result(result, settings, DEFAULT_CLASS_NAMES, reading=reading)
        number = panel.level.text()
        assert number == f"{level:.1f}"
        assert panel.class_name.text() == DEFAULT_CLASS_NAMES[reading_band(float(number))]
        # The arg-max class is shown only as labelled secondary information.
        arg_max = DEFAULT_CLASS_NAMES[result.smoothed.pain_class]
        assert panel.confidence_caption.text() == f"Most likely class: {arg_max}"
        assert panel.confidence.value() == 60
        # What the number means, under it (with the smoothing when the window says it).
        assert "expected pain level 0–4" in panel.meaning.text()
        assert ("smoothed over 3 s" in panel.meaning.text()) == (reading is not None)


def test_unknown_output_shows_a_dash_and_no_word(qtbot):
    panel = StatePanel()
    qtbot.addWidget(panel)
    panel.show_result(None, AlarmSettings(), unknown_reason="Output unknown: no video")
    assert panel.level.text() == "—" and panel.class_name.text() == "Output unknown"
    assert panel.reading is None


def test_banner_shows_the_pending_alarm_muted_steady_and_not_acknowledgeable(qtbot):
    banner = AlarmBanner()
    qtbot.addWidget(banner)
    manager = AlarmManager(AlarmSettings())
    states = [manager.update(t / 2, 3.0) for t in range(7)]  # 3 s over MEDIUM
    for blink_on in (True, False):
        banner.show_state(states[-1], blink_on=blink_on)
        assert banner.text.text() == "MEDIUM pain alarm in 7 s"
        assert banner.pending and banner.colour == AlarmBanner.PENDING_COLOUR
    assert banner.priority == "none"
    assert not banner.acknowledge_button.isEnabled()
    # The same text when the window hands over the DisplayState's banner.
    display = display_state(None, states[-1], 5.0, last_result_s=None, worker_running=True)
    banner.show_state(display.alarm_state, blink_on=True, banner=display.banner)
    assert banner.text.text() == "MEDIUM pain alarm in 7 s"


def test_banner_shows_the_alarm_with_its_pending_escalation_and_flashes(qtbot):
    banner = AlarmBanner()
    qtbot.addWidget(banner)
    manager = AlarmManager(AlarmSettings())
    for t in range(21):
        manager.update(t / 2, 3.0)  # MEDIUM at t=10
    state = None
    for t in range(21, 29):
        state = manager.update(t / 2, 3.8)  # 3.5 s over HIGH at t=14
    assert state is not None and state.pending_in_s is not None
    banner.show_state(state, blink_on=True)
    assert banner.text.text() == f"MEDIUM PAIN ALARM — HIGH in {math.ceil(state.pending_in_s)} s"
    assert not banner.pending and banner.acknowledge_button.isEnabled()
    on_colour = banner.colour
    banner.show_state(state, blink_on=False)
    assert banner.colour != on_colour  # an unacknowledged alarm flashes; pending never does
    banner.show_state(None, blink_on=True)  # no state yet: never "No pain alarm"
    assert banner.text.text() == PAIN_NOT_MONITORED_TEXT and not banner.pending


def test_banner_shows_the_central_station_alarm_while_pain_stays_known(qtbot):
    from painmon.core.live.alarms import SystemCondition

    banner = AlarmBanner()
    qtbot.addWidget(banner)
    manager = AlarmManager(AlarmSettings())
    manager.update(0.0, 1.0)
    state = manager.set_system_condition(0.5, SystemCondition.CENTRAL_UNREACHABLE, True)
    assert not state.output_unknown
    banner.show_state(state, blink_on=True)
    assert not banner.technical_row.isHidden()
    assert "central station not reached" in banner.technical_row.text()
    assert "pain output unknown" not in banner.technical_row.text()
