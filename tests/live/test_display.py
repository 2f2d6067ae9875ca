"""What the bedside window shows, decided without Qt: every branch of display_state()."""

from __future__ import annotations

import numpy as np
import pytest

from painmon.core.live.alarms import (
    AlarmPriority,
    AlarmSettings,
    AlarmState,
    TechnicalCondition,
)
from painmon.core.live.capture import Frame
from painmon.core.live.display import (
    AU_READING_HEADLINE,
    BLINK_HZ,
    CONDITION_DETAIL,
    CONDITION_TEXT,
    CONNECTING_HEADLINE,
    END_OF_VIDEO,
    HIGH_BLINK_HZ,
    NO_GATE_WARNING,
    NO_MODEL_HEADLINE,
    NO_MODEL_TEXT,
    NO_SIGNAL_DETAIL,
    NO_SIGNAL_HEADLINE,
    NO_SOURCE_DETAIL,
    NO_SOURCE_HEADLINE,
    NO_VIDEO_REASON,
    OUT_OF_DOMAIN_REASON,
    OUTPUT_UNKNOWN_HEADLINE,
    STALE_FRAME_S,
    STALE_RESULT_S,
    ColourRole,
    DisplayState,
    SourceProblem,
    display_state,
    level_role,
    model_warning,
    monitor_stopped,
    priority_role,
    smooth_latency_ms,
    source_ended,
    source_failed,
    technical_alarm_text,
)
from painmon.core.live.engine import STAGES, EngineResult
from painmon.core.live.face import FaceObservation
from painmon.core.live.face_detect import FaceBox
from painmon.core.live.quality import REASON_BLURRED, REASON_TOO_DARK, QualityReport
from painmon.core.live.smoothing import SmoothedScore
from painmon.core.util.labels import DEFAULT_CLASS_NAMES

NOW_S = 100.0


def _result(
    condition: TechnicalCondition | None = None,
    quality: QualityReport | None = None,
    level: float = 1.5,
    *,
    out_of_domain: bool = False,
    au_pspi: float | None = None,
) -> EngineResult:
    """An EngineResult as an engine makes it: scored, or unknown under ``condition``."""
    frame = Frame(1, 1.0, np.zeros((120, 160, 3), np.uint8), NOW_S - 0.05, "test")
    face = condition is not TechnicalCondition.NO_FACE
    box = FaceBox(40.0, 20.0, 60.0, 70.0, 0.9) if face else None
    observation = FaceObservation(1.0, face, box, int(face), "test")
    out_of_domain = out_of_domain or condition is TechnicalCondition.OUT_OF_DOMAIN
    known = condition is None and not out_of_domain
    if known:
        probs = np.array([0.0, 0.5, 0.5, 0.0, 0.0])
        smoothed = SmoothedScore(1.0, tuple(probs), 1, level, 0.8, False, "ok")
    else:
        probs = None
        smoothed = SmoothedScore(1.0, None, None, None, None, True, str(condition))
    return EngineResult(
        frame=frame,
        observation=observation,
        quality=quality or QualityReport(True, 1.0, ()),
        probs=probs,
        gradcam=np.full((8, 8), 0.5, np.float32) if known else None,
        pain_class=1 if known else None,
        pain_level=level if known else None,
        smoothed=smoothed,
        au_pspi=au_pspi,
        alarm_state=_state(),
        technical_condition=None if condition is None else str(condition),
        timings_ms=dict.fromkeys(STAGES, 1.0),
        domain_score=5000.0 if out_of_domain else 10.0,
        out_of_domain=out_of_domain,
    )


def _state(
    priority: AlarmPriority = AlarmPriority.NONE,
    *,
    audio_active: bool = False,
    acknowledged: bool = False,
    technical: tuple[str, ...] = (),
) -> AlarmState:
    """An AlarmState as the alarm manager returns it."""
    active = priority is not AlarmPriority.NONE
    level = None if technical else (3.8 if active else 0.5)
    return AlarmState(
        t_s=1.0,
        pain_priority=priority,
        active=active,
        latched=False,
        acknowledged=acknowledged,
        audio_active=audio_active,
        audio_paused_remaining_s=None,
        last_trigger_t_s=0.5 if active else None,
        last_trigger_utc=None,
        technical_conditions=technical,
        output_unknown=level is None,
        new_events=(),
        pain_level=level,
    )


def _show(result: EngineResult | None = None, **kwargs) -> DisplayState:
    """display_state() for a running source whose newest result just arrived."""
    arguments = {
        "last_result_s": NOW_S - 0.1,
        "worker_running": True,
        "source_name": "camera:0",
        "class_names": DEFAULT_CLASS_NAMES,
    }
    arguments.update(kwargs)
    state = arguments.pop("alarm_state", None)
    now_s = arguments.pop("now_s", NOW_S)
    return display_state(result, state, now_s, **arguments)


# --------------------------------------------------------------------- video message


def test_scored_result_shows_no_message_and_the_result():
    result = _result()
    display = _show(result)
    assert (display.video_headline, display.video_detail) == ("", "")
    assert display.video_role is ColourRole.UNKNOWN
    assert display.panel_result is result and display.panel_reason == ""
    assert display.panel_headline == OUTPUT_UNKNOWN_HEADLINE
    assert not display.result_stale
    assert display.class_names == tuple(DEFAULT_CLASS_NAMES)


@pytest.mark.parametrize("condition", list(TechnicalCondition))
def test_each_technical_condition_names_itself_on_video_and_panel(condition):
    quality = (
        QualityReport(False, 0.2, (REASON_BLURRED, REASON_TOO_DARK))
        if condition is TechnicalCondition.LOW_QUALITY
        else None
    )
    result = _result(condition, quality)
    display = _show(result)
    assert display.video_headline == CONDITION_TEXT[condition]
    assert display.video_role is ColourRole.TECHNICAL
    if condition is TechnicalCondition.LOW_QUALITY:
        assert display.video_detail == result.quality.describe()
        assert "blurred" in display.video_detail and "dark" in display.video_detail
    else:
        assert display.video_detail == CONDITION_DETAIL[condition]
    if condition is TechnicalCondition.OUT_OF_DOMAIN:
        assert display.panel_reason == OUT_OF_DOMAIN_REASON
        assert display.panel_headline == AU_READING_HEADLINE
    else:
        assert display.panel_reason == "Output unknown: " + CONDITION_TEXT[condition].lower()
    assert display.panel_result is result  # shown: its smoothed output is unknown


def test_condition_texts_cover_every_condition():
    assert set(CONDITION_TEXT) == set(TechnicalCondition)
    assert CONDITION_TEXT["NO_FACE"] == "NO FACE"  # looked up by the strings results carry
    assert set(CONDITION_DETAIL) == set(TechnicalCondition) - {TechnicalCondition.LOW_QUALITY}


def test_signal_lost_alarm_shows_no_signal_over_a_scored_result():
    state = _state(technical=(TechnicalCondition.SIGNAL_LOST,))
    display = _show(_result(), alarm_state=state)
    assert (display.video_headline, display.video_detail) == (NO_SIGNAL_HEADLINE, NO_SIGNAL_DETAIL)
    assert display.video_role is ColourRole.TECHNICAL


def test_stale_live_video_shows_no_signal_before_the_watchdog_alarm():
    last_s = NOW_S - STALE_FRAME_S - 0.1
    live = _show(_result(), last_result_s=last_s, source_live=True)
    assert live.video_headline == NO_SIGNAL_HEADLINE
    assert live.video_role is ColourRole.TECHNICAL
    # A file is not a camera: a pause between its frames is no lost signal.
    file = _show(_result(), last_result_s=last_s, source_live=False)
    assert file.video_headline == ""
    fresh = _show(_result(), last_result_s=NOW_S - STALE_FRAME_S + 0.1, source_live=True)
    assert fresh.video_headline == ""


def test_connecting_until_the_first_result():
    display = _show(None, last_result_s=None, source_name="camera:2")
    assert (display.video_headline, display.video_detail) == (CONNECTING_HEADLINE, "camera:2")
    assert display.video_role is ColourRole.UNKNOWN
    assert display.panel_result is None and display.panel_reason == NO_VIDEO_REASON


def test_no_source():
    display = _show(None, last_result_s=None, worker_running=False)
    assert (display.video_headline, display.video_detail) == (NO_SOURCE_HEADLINE, NO_SOURCE_DETAIL)
    assert display.video_role is ColourRole.UNKNOWN


def test_a_stopped_source_keeps_its_last_frame_without_message():
    display = _show(_result(), worker_running=False)
    assert display.video_headline == ""


def test_source_problem_comes_first():
    problem = SourceProblem("NO CAMERA", "camera:0 could not be opened")
    state = _state(technical=(TechnicalCondition.SIGNAL_LOST,))
    display = _show(_result(), alarm_state=state, source_problem=problem, source_live=True)
    assert (display.video_headline, display.video_detail) == (problem.headline, problem.detail)
    assert display.video_role is ColourRole.TECHNICAL


def test_source_problems_are_named_for_what_went_wrong():
    assert source_failed("camera:0", "unplugged") == SourceProblem("NO CAMERA", "unplugged")
    assert source_failed("clip.mp4", "no file").headline == NO_SOURCE_HEADLINE
    assert source_ended(END_OF_VIDEO) == SourceProblem("VIDEO ENDED", END_OF_VIDEO)
    assert source_ended("video source failed: gone").headline == NO_SIGNAL_HEADLINE
    assert monitor_stopped("boom") == SourceProblem("MONITOR STOPPED", "boom")
    with pytest.raises(ValueError, match="headline"):
        SourceProblem("", "detail")


# --------------------------------------------------------------------- state panel


def test_no_model_says_so_with_the_load_error():
    display = _show(_result(), model_loaded=False, class_names=(), model_error="bad.onnx: broken")
    assert display.panel_result is None
    assert display.panel_headline == NO_MODEL_HEADLINE
    assert display.panel_reason == NO_MODEL_TEXT + "\n\nbad.onnx: broken"
    assert display.class_names == tuple(DEFAULT_CLASS_NAMES)
    plain = _show(_result(), model_loaded=False)
    assert plain.panel_reason == NO_MODEL_TEXT


def test_stale_result_is_not_shown():
    result = _result()
    stale = _show(result, last_result_s=NOW_S - STALE_RESULT_S - 0.1)
    assert stale.result_stale and stale.panel_result is None
    assert stale.panel_reason == NO_VIDEO_REASON
    recent = _show(result, last_result_s=NOW_S - STALE_RESULT_S + 0.1)
    assert not recent.result_stale and recent.panel_result is result


def test_an_ended_source_shows_no_reading_at_once():
    """VIDEO ENDED (or a failed camera): the last reading is history, not shown as now."""
    result = _result()
    ended = _show(result, source_problem=source_ended(END_OF_VIDEO), last_result_s=NOW_S)
    assert ended.result_stale and ended.panel_result is None
    assert ended.panel_reason == NO_VIDEO_REASON
    assert _show(result, last_result_s=NOW_S).panel_result is result


def test_model_class_names_are_used():
    names = ("a", "b", "c", "d", "e")
    assert _show(_result(), class_names=names).class_names == names


# --------------------------------------------------------------------- banner and sound


@pytest.mark.parametrize(
    ("priority", "hz"),
    [(AlarmPriority.HIGH, HIGH_BLINK_HZ), (AlarmPriority.MEDIUM, BLINK_HZ), (None, BLINK_HZ)],
)
def test_high_priority_blinks_faster(priority, hz):
    state = None if priority is None else _state(priority, audio_active=True)
    display = _show(_result(), alarm_state=state)
    assert display.blink_hz == hz
    assert display.alarm_state is state


def test_blink_phase_follows_the_clock():
    state = _state(AlarmPriority.HIGH, audio_active=True)
    # 2 Hz: on for the first quarter second of each half second, off for the second.
    assert _show(_result(), alarm_state=state, now_s=10.0).blink_on
    assert not _show(_result(), alarm_state=state, now_s=10.3).blink_on
    assert _show(_result(), alarm_state=state, now_s=10.5).blink_on
    medium = _state(AlarmPriority.MEDIUM, audio_active=True)
    assert _show(_result(), alarm_state=medium, now_s=10.0).blink_on
    assert not _show(_result(), alarm_state=medium, now_s=10.9).blink_on


def test_sounding_alarm_plays_its_priority():
    for priority in (AlarmPriority.HIGH, AlarmPriority.MEDIUM):
        display = _show(_result(), alarm_state=_state(priority, audio_active=True))
        assert display.sound_priority is priority


def test_audio_held_after_an_operator_press_until_the_engine_answers():
    state = _state(AlarmPriority.HIGH, audio_active=True)
    held = _show(_result(), alarm_state=state, sound_held_until_s=NOW_S + 0.5)
    assert held.sound_priority is None
    expired = _show(_result(), alarm_state=state, sound_held_until_s=NOW_S - 0.01)
    assert expired.sound_priority is AlarmPriority.HIGH


def test_silent_when_acknowledged_or_no_alarm():
    acknowledged = _state(AlarmPriority.MEDIUM, audio_active=False, acknowledged=True)
    assert _show(_result(), alarm_state=acknowledged).sound_priority is None
    assert _show(_result(), alarm_state=_state()).sound_priority is None
    assert _show(_result(), alarm_state=None).sound_priority is None


# --------------------------------------------------------------------- status bar


def test_fps_over_the_last_two_seconds():
    times = [NOW_S - 5.0] + [NOW_S - 1.0 + i * 0.1 for i in range(11)]
    display = _show(_result(), receive_times_s=times)
    assert display.fps == pytest.approx(10.0)
    assert display.fps_text == "10.0 fps"
    assert _show(_result(), receive_times_s=[NOW_S - 0.5]).fps_text == "fps: –"
    assert _show(_result(), receive_times_s=[NOW_S, NOW_S]).fps == 0.0


def test_latency_text_and_smoothing():
    assert _show(_result()).latency_text == "latency: –"
    assert _show(_result(), latency_ms=42.4).latency_text == "latency 42 ms"
    assert smooth_latency_ms(None, 50.0) == 50.0
    assert smooth_latency_ms(50.0, 100.0) == pytest.approx(60.0)


# --------------------------------------------------------------------- helpers


def test_technical_alarm_text():
    assert technical_alarm_text(()) == ""
    assert technical_alarm_text(["NO_FACE"]) == "TECHNICAL ALARM: NO FACE — pain output unknown"


def test_colour_roles():
    settings = AlarmSettings()
    assert level_role(None, settings) is ColourRole.UNKNOWN
    assert level_role(1.0, settings) is ColourRole.NORMAL
    assert level_role(settings.medium_threshold, settings) is ColourRole.MEDIUM
    assert level_role(settings.high_threshold, settings) is ColourRole.HIGH
    assert priority_role("high") is ColourRole.HIGH
    assert priority_role(AlarmPriority.MEDIUM) is ColourRole.MEDIUM


def test_display_state_rejects_inconsistent_values():
    good = _show(_result())
    fields = {name: getattr(good, name) for name in good.__dataclass_fields__}
    with pytest.raises(ValueError, match="blink_hz"):
        DisplayState(**{**fields, "blink_hz": 0.0})
    with pytest.raises(ValueError, match="MEDIUM or HIGH"):
        DisplayState(**{**fields, "sound_priority": AlarmPriority.NONE})
    with pytest.raises(ValueError, match="stale"):
        DisplayState(**{**fields, "result_stale": True})


# --------------------------------------------------------------------- domain gate


def test_out_of_domain_shows_the_au_estimate_as_the_reading():
    display = _show(_result(TechnicalCondition.OUT_OF_DOMAIN, au_pspi=0.7))
    assert display.out_of_domain and display.au_reading == 0.7
    assert display.video_headline == "CANNOT SCORE THIS FACE"
    assert "unlike this model's training data" in display.video_detail
    assert display.panel_headline == AU_READING_HEADLINE
    assert "AU estimate" in display.panel_reason and "alarms are off" in display.panel_reason


def test_an_out_of_domain_crop_before_the_condition_already_shows_no_level():
    """The first second of an unfamiliar face: no banner yet, but no pain level either."""
    display = _show(_result(out_of_domain=True, au_pspi=None))
    assert display.video_headline == ""
    assert display.out_of_domain and display.au_reading is None
    assert display.panel_headline == AU_READING_HEADLINE


def test_in_domain_and_stale_results_show_no_au_reading():
    assert not _show(_result()).out_of_domain
    stale = _show(_result(out_of_domain=True, au_pspi=1.0), last_result_s=NOW_S - 10)
    assert not stale.out_of_domain and stale.au_reading is None
    with pytest.raises(ValueError, match="only while out of domain"):
        DisplayState(**{**_show(_result()).__dict__, "au_reading": 1.0})


def test_model_warning_names_a_missing_gate():
    assert model_warning(True) == ""
    assert model_warning(False) == NO_GATE_WARNING
