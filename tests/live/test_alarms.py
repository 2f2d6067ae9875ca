"""AlarmManager driven on media time with a fake UTC clock through every alarm rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from painmon.core.live.alarms import (
    AlarmEvent,
    AlarmManager,
    AlarmSettings,
    AlarmState,
    TechnicalCondition,
)
from painmon.core.util.errors import InvalidInputError

SHA = "ab" * 32
DT_S = 0.5  # two smoothed levels per second is enough to exercise every timer


class FakeUtcClock:
    """A UTC clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeUtcClock:
    return FakeUtcClock()


@pytest.fixture
def manager(clock: FakeUtcClock) -> AlarmManager:
    return AlarmManager(AlarmSettings(model_sha256=SHA), utc_clock=clock)


def feed(
    manager: AlarmManager,
    start_s: float,
    end_s: float,
    level: float | None,
    condition: str | None = None,
) -> list[AlarmState]:
    """Feed one level every DT_S from start_s to end_s inclusive; return every state."""
    states = []
    steps = round((end_s - start_s) / DT_S)
    for i in range(steps + 1):
        states.append(manager.update(start_s + i * DT_S, level, condition))
    return states


def kinds(states: list[AlarmState]) -> list[str]:
    return [event.kind for state in states for event in state.new_events]


def raise_medium(manager: AlarmManager) -> AlarmState:
    """Level 3.0 from t=0 to t=10: a MEDIUM alarm at exactly t=10."""
    states = feed(manager, 0.0, 10.0, 3.0)
    assert kinds(states) == ["onset"]
    return states[-1]


def raise_high(manager: AlarmManager) -> AlarmState:
    states = feed(manager, 0.0, 10.0, 3.8)
    assert kinds(states) == ["onset"]
    assert states[-1].pain_priority == "high"
    return states[-1]


# -- onset delay ------------------------------------------------------------------------------


def test_nine_second_excursion_raises_nothing(manager: AlarmManager) -> None:
    states = feed(manager, 0.0, 9.0, 3.0) + feed(manager, 9.5, 40.0, 1.0)
    assert kinds(states) == []
    assert all(s.pain_priority == "none" and not s.audio_active for s in states)


def test_eleven_second_excursion_raises_after_the_delay(manager: AlarmManager) -> None:
    states = feed(manager, 0.0, 11.0, 3.0)
    onset = [s for s in states if s.new_events]
    assert len(onset) == 1 and onset[0].t_s == pytest.approx(10.0)
    assert all(s.pain_priority == "none" for s in states if s.t_s < 10.0)
    last = states[-1]
    assert last.pain_priority == "medium" and last.active and last.audio_active
    assert last.last_trigger_t_s == pytest.approx(10.0)


def test_a_dip_restarts_the_onset_timer(manager: AlarmManager) -> None:
    states = feed(manager, 0.0, 8.0, 3.0) + feed(manager, 8.5, 8.5, 2.4)
    states += feed(manager, 9.0, 17.0, 3.0)
    assert kinds(states) == []
    assert kinds(feed(manager, 17.5, 19.0, 3.0)) == ["onset"]


def test_direct_high_onset(manager: AlarmManager) -> None:
    state = raise_high(manager)
    event = state.new_events[0]
    assert event.priority == "high" and event.threshold == 3.5


# -- hysteresis, clear hold, episodes ---------------------------------------------------------


def test_dip_above_threshold_minus_hysteresis_does_not_clear(manager: AlarmManager) -> None:
    raise_medium(manager)
    states = feed(manager, 10.5, 60.0, 2.3)  # below 2.5 but above 2.5 - 0.3
    assert kinds(states) == []
    assert states[-1].active and states[-1].pain_priority == "medium"


def test_clear_needs_the_hold_time(manager: AlarmManager) -> None:
    raise_medium(manager)
    below_4s = feed(manager, 10.5, 14.5, 2.0)  # 4 s below 2.2
    assert kinds(below_4s) == [] and below_4s[-1].active
    back = feed(manager, 15.0, 16.0, 2.3)  # back above 2.2: the hold restarts
    assert kinds(back) == [] and back[-1].active
    below_5s = feed(manager, 16.5, 21.5, 2.0)
    assert kinds(below_5s) == ["clear"]
    assert below_5s[-1].t_s == pytest.approx(21.5)
    cleared = below_5s[-1]
    assert not cleared.active and not cleared.latched and cleared.pain_priority == "none"
    assert not cleared.audio_active
    assert cleared.new_events[0].threshold == pytest.approx(2.2)


def test_one_alarm_per_episode(manager: AlarmManager) -> None:
    raise_medium(manager)
    wobble = []
    for k in range(6):  # dips below threshold (not below clear level) and returns, repeatedly
        start = 10.5 + k * 20.0
        wobble += feed(manager, start, start + 4.0, 2.3)
        wobble += feed(manager, start + 4.5, start + 19.5, 3.0)
    assert kinds(wobble) == []
    assert len([e for e in manager.events if e.kind == "onset"]) == 1
    # After a real clear a new episode raises again, after the full delay.
    assert kinds(feed(manager, 200.0, 205.0, 1.0)) == ["clear"]
    again = feed(manager, 205.5, 215.5, 3.0)
    assert kinds(again) == ["onset"] and again[-1].t_s == pytest.approx(215.5)


# -- latching ---------------------------------------------------------------------------------


def test_medium_is_non_latching(manager: AlarmManager) -> None:
    raise_medium(manager)
    states = feed(manager, 10.5, 15.5, 1.0)
    assert kinds(states) == ["clear"]
    assert states[-1].pain_priority == "none" and not states[-1].latched


def test_high_latches_until_acknowledged(manager: AlarmManager) -> None:
    raise_high(manager)
    states = feed(manager, 10.5, 60.0, 0.5)
    assert kinds(states) == ["latch"]
    latched = states[-1]
    assert latched.latched and not latched.active and latched.pain_priority == "high"
    assert latched.audio_active  # a latched signal keeps sounding until the operator acts
    assert latched.last_trigger_t_s == pytest.approx(10.0)
    assert latched.last_trigger_utc == "2024-05-01T08:00:00+00:00"
    ack = manager.acknowledge(60.2)
    assert [e.kind for e in ack.new_events] == ["acknowledge"]
    assert ack.pain_priority == "none" and not ack.latched and not ack.audio_active
    assert ack.last_trigger_t_s is None
    assert manager.update(61.0, 0.5, None).pain_priority == "none"


def test_latch_stays_shown_through_a_new_medium_episode(manager: AlarmManager) -> None:
    raise_high(manager)
    assert kinds(feed(manager, 10.5, 15.5, 0.5)) == ["latch"]
    states = feed(manager, 16.0, 26.0, 3.0)
    assert kinds(states) == ["onset"]
    assert states[-1].new_events[0].priority == "medium"
    both = states[-1]
    assert both.pain_priority == "high" and both.latched and both.active
    ack = manager.acknowledge(26.5)
    assert ack.pain_priority == "medium" and not ack.latched and ack.acknowledged
    assert "latched HIGH alarm removed" in ack.new_events[0].message


def test_acknowledged_high_clears_without_latching(manager: AlarmManager) -> None:
    raise_high(manager)
    manager.acknowledge(10.2)
    states = feed(manager, 10.5, 16.0, 0.5)
    assert kinds(states) == ["clear"] and states[-1].pain_priority == "none"


# -- escalation -------------------------------------------------------------------------------


def test_escalation_needs_the_high_condition_for_the_delay(manager: AlarmManager) -> None:
    raise_medium(manager)
    short = feed(manager, 10.5, 19.5, 3.8) + feed(manager, 20.0, 20.0, 3.0)  # 9 s high
    assert kinds(short) == []
    assert short[-1].pain_priority == "medium"
    states = feed(manager, 20.5, 31.0, 3.8)
    assert kinds(states) == ["escalation"]
    escalation = next(s for s in states if s.new_events)
    assert escalation.t_s == pytest.approx(30.5)
    assert escalation.pain_priority == "high" and escalation.audio_active
    assert escalation.new_events[0].threshold == 3.5
    assert escalation.last_trigger_t_s == pytest.approx(30.5)


def test_escalation_needs_a_new_acknowledgement(manager: AlarmManager) -> None:
    raise_medium(manager)
    assert manager.acknowledge(10.2).acknowledged
    states = feed(manager, 10.5, 21.0, 3.8)
    assert kinds(states) == ["escalation"]
    assert not states[-1].acknowledged and states[-1].audio_active


def test_no_de_escalation_within_an_episode(manager: AlarmManager) -> None:
    raise_high(manager)
    states = feed(manager, 10.5, 100.0, 3.0)  # back to the medium band
    assert kinds(states) == []
    assert states[-1].pain_priority == "high" and states[-1].active


# -- acknowledgement and reminder -------------------------------------------------------------


def test_acknowledge_silences_and_reminder_re_alarms(manager: AlarmManager) -> None:
    raise_medium(manager)
    ack = manager.acknowledge(10.0)
    assert ack.acknowledged and not ack.audio_active and ack.active
    assert [e.kind for e in ack.new_events] == ["acknowledge"]
    quiet = feed(manager, 10.5, 309.5, 3.0)
    assert kinds(quiet) == [] and not quiet[-1].audio_active
    reminder = feed(manager, 310.0, 310.0, 3.0)[0]
    assert [e.kind for e in reminder.new_events] == ["reminder"]
    assert reminder.audio_active and not reminder.acknowledged
    # Only one reminder per acknowledgement; a new ack restarts the interval.
    assert kinds(feed(manager, 310.5, 320.0, 3.0)) == []
    manager.acknowledge(320.0)
    assert kinds(feed(manager, 320.5, 619.5, 3.0)) == []
    assert kinds(feed(manager, 620.0, 620.0, 3.0)) == ["reminder"]


def test_no_reminder_once_the_condition_clears(manager: AlarmManager) -> None:
    raise_medium(manager)
    manager.acknowledge(10.0)
    assert kinds(feed(manager, 10.5, 400.0, 1.0)) == ["clear"]


def test_acknowledge_with_nothing_to_acknowledge_is_logged(manager: AlarmManager) -> None:
    state = manager.acknowledge(1.0)
    assert [e.kind for e in state.new_events] == ["acknowledge"]
    assert "no unacknowledged alarm" in state.new_events[0].message
    assert state.pain_priority == "none"


# -- audio pause ------------------------------------------------------------------------------


def test_audio_pause_counts_down_and_expires(manager: AlarmManager) -> None:
    raise_medium(manager)
    paused = manager.audio_pause(10.0)
    assert [e.kind for e in paused.new_events] == ["audio_pause"]
    assert paused.audio_paused_remaining_s == pytest.approx(120.0)
    assert not paused.audio_active and paused.active
    mid = feed(manager, 10.5, 70.0, 3.0)
    assert mid[-1].audio_paused_remaining_s == pytest.approx(60.0)
    assert not any(s.audio_active for s in mid)
    end = feed(manager, 70.5, 130.0, 3.0)
    assert kinds(end) == ["audio_pause_end"]
    assert end[-1].audio_paused_remaining_s is None and end[-1].audio_active


def test_custom_pause_and_pause_over_180_s_refused(manager: AlarmManager) -> None:
    assert manager.audio_pause(0.0, duration_s=30.0).audio_paused_remaining_s == 30.0
    with pytest.raises(ValueError, match="180"):
        manager.audio_pause(1.0, duration_s=181.0)
    with pytest.raises(ValueError, match="180"):
        AlarmSettings(audio_pause_s=181.0)
    AlarmSettings(audio_pause_s=180.0)


def test_escalation_breaks_through_an_audio_pause(manager: AlarmManager) -> None:
    raise_medium(manager)
    manager.audio_pause(10.0)
    states = feed(manager, 10.5, 21.0, 3.8)
    assert kinds(states) == ["escalation", "audio_pause_end"]
    assert states[-1].audio_active and states[-1].audio_paused_remaining_s is None


def test_pause_started_on_a_high_alarm_is_not_broken(manager: AlarmManager) -> None:
    raise_high(manager)
    manager.audio_pause(10.0)
    assert kinds(feed(manager, 10.5, 16.0, 1.0)) == ["latch"]
    states = feed(manager, 16.5, 27.0, 3.8)  # a new HIGH episode during the same pause
    assert kinds(states) == ["onset"]
    assert not states[-1].audio_active and states[-1].audio_paused_remaining_s is not None


def test_high_onset_breaks_a_pause_started_with_nothing_shown(manager: AlarmManager) -> None:
    manager.audio_pause(0.0)
    states = feed(manager, 0.5, 10.5, 3.8)
    assert kinds(states) == ["onset", "audio_pause_end"]
    assert states[-1].audio_active


def test_new_medium_episode_after_pause_expiry_sounds(manager: AlarmManager) -> None:
    raise_medium(manager)
    manager.audio_pause(10.0, duration_s=20.0)
    assert kinds(feed(manager, 10.5, 16.0, 1.0)) == ["clear"]
    silent = feed(manager, 16.5, 29.5, 1.0)
    assert all(s.audio_paused_remaining_s is not None for s in silent)
    states = feed(manager, 30.0, 40.0, 3.0)
    assert kinds(states) == ["audio_pause_end", "onset"]
    assert states[-1].audio_active


def test_new_medium_episode_during_a_pause_stays_silent(manager: AlarmManager) -> None:
    manager.audio_pause(0.0)  # pre-emptive pause, e.g. while repositioning the patient
    states = feed(manager, 0.5, 10.5, 3.0)
    assert kinds(states) == ["onset"]
    assert states[-1].active and not states[-1].audio_active


# -- technical alarms -------------------------------------------------------------------------


# Their producers already waited (watchdog lost/frozen timers, domain monitor persistence).
@pytest.mark.parametrize("condition", ["SIGNAL_LOST", "FROZEN", "OUT_OF_DOMAIN"])
def test_immediate_technical_alarms_give_unknown_output(
    manager: AlarmManager, condition: str
) -> None:
    state = manager.update(0.0, 3.9, condition)
    assert [e.kind for e in state.new_events] == ["technical_onset"]
    event = state.new_events[0]
    assert event.priority == "technical" and event.value is None
    assert state.technical_conditions == (condition,)
    assert state.output_unknown and state.pain_level is None
    assert state.pain_priority == "none"
    cleared = manager.update(1.0, 1.0, None)
    assert [e.kind for e in cleared.new_events] == ["technical_clear"]
    assert cleared.technical_conditions == () and not cleared.output_unknown
    assert cleared.pain_level == 1.0


def test_technical_conditions_never_raise_a_pain_alarm(manager: AlarmManager) -> None:
    states = feed(manager, 0.0, 60.0, 3.9, TechnicalCondition.FROZEN)
    assert kinds(states) == ["technical_onset"]
    assert all(s.pain_priority == "none" and s.output_unknown for s in states)


def test_technical_condition_never_clears_a_pain_alarm(manager: AlarmManager) -> None:
    raise_medium(manager)
    states = feed(manager, 10.5, 60.0, 0.0, "SIGNAL_LOST")
    assert kinds(states) == ["technical_onset"]
    assert all(s.active and s.pain_priority == "medium" for s in states)
    assert all(s.output_unknown and s.pain_level is None for s in states)


def test_pain_timers_are_frozen_during_technical_conditions(manager: AlarmManager) -> None:
    # Onset: 6 s of pain, 30 s unknown, 3.5 s of pain = 9.5 s < 10 s -> still nothing.
    states = feed(manager, 0.0, 6.0, 3.0) + feed(manager, 6.5, 36.0, 3.0, "LOW_QUALITY")
    states += feed(manager, 36.5, 40.0, 3.0)
    assert "onset" not in kinds(states)
    # The frozen 6 s are kept: one more second completes the delay.
    assert kinds(feed(manager, 40.5, 41.0, 3.0)) == ["onset"]
    # Clear: 3 s below, unknown stretch, 2 s below -> clears only when the valid time reaches 5 s.
    low = feed(manager, 41.5, 44.5, 1.0) + feed(manager, 45.0, 80.0, 1.0, "FROZEN")
    low += feed(manager, 80.5, 82.0, 1.0)
    assert "clear" not in kinds(low)
    assert kinds(feed(manager, 82.5, 82.5, 1.0)) == ["clear"]


def test_a_long_unknown_stretch_restarts_the_onset_and_clear_timers(
    manager: AlarmManager,
) -> None:
    # 9.5 s of pain, then ten minutes without a face: the face is back, in pain. Its first
    # frames must not complete the old 10 s; a new 10 s of pain raises the alarm.
    feed(manager, 0.0, 9.5, 3.8)
    feed(manager, 10.0, 610.0, None, "NO_FACE")
    back = feed(manager, 610.5, 620.0, 3.8)
    assert "onset" not in kinds(back)
    assert back[-1].pending_priority == "high" and back[-1].pending_in_s == pytest.approx(0.5)
    (onset,) = feed(manager, 620.5, 620.5, 3.8)
    assert [e.kind for e in onset.new_events] == ["onset"] and onset.pain_priority == "high"
    # Ending too: 4.5 s below the clear level, an hour unknown, then one low frame. The
    # episode ends (a HIGH one into its latch) only after 5 s of new low levels.
    feed(manager, 621.0, 625.5, 1.0)
    feed(manager, 626.0, 4226.0, None, "FROZEN")
    assert kinds(feed(manager, 4226.5, 4231.0, 1.0)) == ["technical_clear"]
    assert kinds(feed(manager, 4231.5, 4231.5, 1.0)) == ["latch"]


def test_valid_levels_far_apart_do_not_count_the_time_between(manager: AlarmManager) -> None:
    # Two scored frames 15 s apart (a paused variable-rate file, skipped frames): the 15 s
    # between them is unknown, not 15 s of pain.
    manager.update(0.0, 3.8)
    assert manager.update(15.0, 3.8).new_events == ()
    # Frames 1 s apart (a slow source) do count: the alarm comes after 10 s of them.
    states = [manager.update(15.0 + k, 3.8) for k in range(1, 11)]
    assert kinds(states) == ["onset"] and states[-1].new_events[0].t_s == 25.0


def test_flickering_conditions_raise_one_technical_alarm(manager: AlarmManager) -> None:
    # A face found on some frames and too dark on others: NO_FACE and LOW_QUALITY change
    # every 3 frames (25 fps), faster than either delay. The output is unknown all along,
    # so a technical alarm must be shown, once, and stay until a level is known again.
    states = []
    for i in range(25 * 60):
        condition = "NO_FACE" if (i // 3) % 2 == 0 else "LOW_QUALITY"
        states.append(manager.update(i / 25, None, condition))
    onsets = [e for st in states for e in st.new_events]
    assert [e.kind for e in onsets] == ["technical_onset"]
    # NO_FACE had most frames (each cycle starts with it): raised after its 5 s delay.
    assert onsets[0].t_s == pytest.approx(5.0, abs=0.2)
    assert onsets[0].message.startswith("technical alarm NO_FACE: pain output unknown for 5")
    assert "changing conditions (NO_FACE, LOW_QUALITY)" in onsets[0].message
    shown_from = next(i for i, st in enumerate(states) if st.technical_conditions)
    assert all(st.technical_conditions for st in states[shown_from:])
    assert all(st.output_unknown for st in states)
    assert kinds(feed(manager, 60.0, 61.0, 1.0)) == ["technical_clear"]


def test_a_rare_other_condition_does_not_name_the_technical_alarm(
    manager: AlarmManager,
) -> None:
    # No face, and now and then a dark false detection (LOW_QUALITY): the alarm says NO_FACE.
    states = [manager.update(i / 10, None, "LOW_QUALITY" if i % 20 == 7 else "NO_FACE")
              for i in range(100)]  # fmt: skip
    onsets = [e for st in states for e in st.new_events]
    assert [e.kind for e in onsets] == ["technical_onset"]
    assert states[-1].technical_conditions == ("NO_FACE",)
    assert 5.0 < onsets[0].t_s <= 5.2


def test_a_steady_condition_replaces_a_shown_one_after_the_technical_delay(
    manager: AlarmManager,
) -> None:
    feed(manager, 0.0, 1.0, None, "LOW_QUALITY")
    assert manager.update(1.0, None, "LOW_QUALITY").technical_conditions == ("LOW_QUALITY",)
    # The face leaves for good: NO_FACE replaces LOW_QUALITY after 1 s, not after 5 s, and
    # LOW_QUALITY is never cleared into nothing while the output is unknown.
    states = feed(manager, 1.5, 3.0, None, "NO_FACE")
    assert all(st.technical_conditions for st in states)
    assert kinds(states) == ["technical_clear", "technical_onset"]
    assert states[-1].technical_conditions == ("NO_FACE",)
    onset = [e for st in states for e in st.new_events][-1]
    assert onset.message.startswith("technical alarm NO_FACE: no face for 1 s;")  # not "5 s"
    assert onset.threshold == 1.0


def test_a_new_episode_escalating_under_a_latched_high_is_no_crash(
    manager: AlarmManager,
) -> None:
    # The demo patient's second episode: a HIGH alarm ended unacknowledged (latched), a new
    # MEDIUM episode opens and climbs towards HIGH. Its pending escalation ranks no higher
    # than the latched HIGH shown: the state used to be refused ("a pending high alarm
    # must rank above the active high one"), which stopped monitoring at 92 s of the demo.
    raise_high(manager)
    assert kinds(feed(manager, 10.5, 16.0, 1.0)) == ["latch"]
    assert kinds(feed(manager, 16.5, 26.5, 3.0)) == ["onset"]
    climbing = feed(manager, 27.0, 36.5, 3.8)
    assert all(st.latched and st.pain_priority == "high" for st in climbing)
    assert all(st.pending_priority is None for st in climbing)
    assert kinds(climbing) == [] and kinds(feed(manager, 37.0, 37.0, 3.8)) == ["escalation"]


def test_the_demo_patients_repeating_episodes_run_unacknowledged(manager: AlarmManager) -> None:
    # The scripted synthetic patient (painmon demo, monitor --source synthetic, bench soak)
    # repeats its episode every 60 s; nobody acknowledges. Five episodes at 30 fps.
    from painmon.core.synth.stream import episode_level

    states = [manager.update(i / 30, 4.0 * episode_level(i / 30, 60.0)) for i in range(30 * 300)]
    events = kinds(states)
    assert events[:3] == ["onset", "escalation", "latch"]
    # Every later episode opens under the latch and escalates; none of it is refused.
    assert events.count("onset") == 5 and events.count("escalation") == 5
    assert all(st.latched for st in states[-30:])


def test_unknown_level_without_condition_freezes_without_technical_alarm(
    manager: AlarmManager,
) -> None:
    states = feed(manager, 0.0, 30.0, None)
    assert kinds(states) == []
    assert all(s.output_unknown and s.technical_conditions == () for s in states)


def test_no_face_alarm_only_after_its_delay(manager: AlarmManager) -> None:
    pending = feed(manager, 0.0, 5.0, None, "NO_FACE")
    assert kinds(pending) == []
    assert all(s.output_unknown and s.technical_conditions == () for s in pending)
    raised = manager.update(5.5, None, "NO_FACE")
    assert [e.kind for e in raised.new_events] == ["technical_onset"]
    assert raised.technical_conditions == ("NO_FACE",)
    assert kinds(feed(manager, 6.0, 8.0, None, "NO_FACE")) == []
    assert kinds(feed(manager, 8.5, 8.5, 1.0)) == ["technical_clear"]
    # A short face loss that ends before the delay logs nothing at all.
    assert kinds(feed(manager, 9.0, 12.0, None, "NO_FACE") + feed(manager, 12.5, 13.0, 1.0)) == []


FRAME_S = 1 / 24  # a camera frame: one LOW_QUALITY verdict per frame


def test_one_low_quality_frame_raises_no_technical_alarm(manager: AlarmManager) -> None:
    manager.update(0.0, 1.0)
    blip = manager.update(FRAME_S, None, "LOW_QUALITY")
    assert blip.new_events == () and blip.technical_conditions == ()
    assert blip.output_unknown  # the frame itself still has no pain output
    after = manager.update(2 * FRAME_S, 1.0)
    assert after.new_events == () and not after.output_unknown
    assert manager.events == ()


def test_flickering_low_quality_never_raises(manager: AlarmManager) -> None:
    # Every other frame fails the quality gate for 20 s: no banner, no log chatter.
    for i in range(480):
        bad_frame = i % 2 == 0
        level, condition = (None, "LOW_QUALITY") if bad_frame else (1.0, None)
        state = manager.update(i * FRAME_S, level, condition)
        assert state.technical_conditions == ()
    assert manager.events == ()


def test_low_quality_is_raised_after_its_condition_delay(
    manager: AlarmManager, clock: FakeUtcClock
) -> None:
    manager.update(0.0, 1.0)
    frames = [i * FRAME_S for i in range(1, 40)]
    onset_t_s = None
    for t_s in frames:
        clock.now += timedelta(seconds=FRAME_S)
        state = manager.update(t_s, None, "LOW_QUALITY")
        if state.new_events:
            onset_t_s = t_s
            (event,) = state.new_events
            break
        assert state.technical_conditions == ()
    # LOW_QUALITY started at the first frame: raised on the first frame 1 s later.
    assert onset_t_s == pytest.approx(FRAME_S * 25)
    assert event.kind == "technical_onset" and event.threshold == 1.0
    assert event.message.startswith("technical alarm LOW_QUALITY for 1 s")
    assert event.utc_time == clock.now.isoformat()
    assert state.technical_conditions == ("LOW_QUALITY",)
    cleared = manager.update(onset_t_s + FRAME_S, 1.0)
    assert [e.kind for e in cleared.new_events] == ["technical_clear"]
    assert cleared.technical_conditions == ()


def test_technical_delay_is_a_setting(clock: FakeUtcClock) -> None:
    immediate = AlarmManager(AlarmSettings(technical_delay_s=0.0), utc_clock=clock)
    assert immediate.update(0.0, None, "LOW_QUALITY").technical_conditions == ("LOW_QUALITY",)
    slow = AlarmManager(AlarmSettings(technical_delay_s=3.0), utc_clock=clock)
    assert kinds(feed(slow, 0.0, 2.5, None, "LOW_QUALITY")) == []
    assert kinds(feed(slow, 3.0, 3.0, None, "LOW_QUALITY")) == ["technical_onset"]
    # Changing it applies to a condition still waiting.
    waiting = AlarmManager(AlarmSettings(technical_delay_s=5.0), utc_clock=clock)
    feed(waiting, 0.0, 2.0, None, "LOW_QUALITY")
    waiting.change_settings(2.0, AlarmSettings(technical_delay_s=1.0))
    assert kinds(feed(waiting, 2.5, 2.5, None, "LOW_QUALITY")) == ["technical_onset"]


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), 10.5])
def test_technical_delay_is_validated(bad: float) -> None:
    with pytest.raises(InvalidInputError, match="technical_delay_s"):
        AlarmSettings(technical_delay_s=bad)


def test_a_pending_low_quality_does_not_delay_other_conditions(manager: AlarmManager) -> None:
    manager.update(0.0, None, "LOW_QUALITY")
    frozen = manager.update(0.5, None, "FROZEN")
    assert [e.kind for e in frozen.new_events] == ["technical_onset"]  # nothing to clear
    # FROZEN gone, LOW_QUALITY again: the output stays unknown, so FROZEN stays shown
    # until LOW_QUALITY has held for its delay, then gives way to it.
    back = feed(manager, 1.0, 1.5, None, "LOW_QUALITY")
    assert kinds(back) == [] and back[-1].technical_conditions == ("FROZEN",)
    switched = manager.update(2.0, None, "LOW_QUALITY")
    assert [(e.kind, e.message) for e in switched.new_events] == [
        ("technical_clear", "technical alarm FROZEN cleared; LOW_QUALITY follows"),
        ("technical_onset", "technical alarm LOW_QUALITY for 1 s; pain output unknown, "
         "pain alarms frozen"),
    ]  # fmt: skip
    assert switched.technical_conditions == ("LOW_QUALITY",)


def test_switching_technical_conditions_logs_both(manager: AlarmManager) -> None:
    manager.update(0.0, None, "FROZEN")
    state = manager.update(1.0, None, "SIGNAL_LOST")
    assert [(e.kind, e.message) for e in state.new_events] == [
        ("technical_clear", "technical alarm FROZEN cleared; SIGNAL_LOST follows"),
        ("technical_onset", "technical alarm SIGNAL_LOST; pain output unknown, pain alarms frozen"),
    ]
    assert state.technical_conditions == ("SIGNAL_LOST",)


def test_unknown_condition_name_refused(manager: AlarmManager) -> None:
    with pytest.raises(ValueError, match="NO_FACE"):
        manager.update(0.0, 1.0, "CAMERA_ON_FIRE")


# -- settings, events, time -------------------------------------------------------------------


def test_settings_change_is_logged_and_applied(manager: AlarmManager, clock: FakeUtcClock) -> None:
    clock.now += timedelta(minutes=3)
    new = AlarmSettings(medium_threshold=2.0, model_sha256=SHA)
    state = manager.change_settings(1.0, new)
    (event,) = state.new_events
    assert event.kind == "settings_change"
    assert "medium_threshold 2.5 -> 2.0" in event.message
    assert event.utc_time == "2024-05-01T08:03:00+00:00"
    assert manager.settings == new
    assert kinds(feed(manager, 1.5, 11.5, 2.2)) == ["onset"]  # 2.2 now alarms


def test_event_fields(manager: AlarmManager, clock: FakeUtcClock) -> None:
    feed(manager, 0.0, 9.5, 3.0)
    # A clock in local time (UTC+2) is still logged in UTC.
    clock.now = datetime(2024, 5, 1, 10, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    state = manager.update(10.0, 3.0, None)
    (event,) = state.new_events
    assert isinstance(event, AlarmEvent)
    assert event.utc_time == "2024-05-01T08:00:05+00:00"  # stored in UTC
    assert datetime.fromisoformat(event.utc_time).tzinfo is not None
    assert event.t_s == 10.0
    assert event.kind == "onset" and event.priority == "medium"
    assert event.value == 3.0 and event.threshold == 2.5
    assert event.model_sha256 == SHA
    assert "MEDIUM" in event.message
    assert state.last_trigger_utc == event.utc_time
    assert manager.events[-1] is event
    # Events go out exactly once.
    assert manager.update(10.5, 3.0, None).new_events == ()


def test_every_event_is_in_the_log_in_order(manager: AlarmManager) -> None:
    delivered = []
    delivered += [e for s in feed(manager, 0.0, 10.0, 3.8) for e in s.new_events]
    delivered += manager.audio_pause(11.0).new_events
    delivered += manager.acknowledge(12.0).new_events
    delivered += [e for s in feed(manager, 12.5, 20.0, 0.0) for e in s.new_events]
    assert tuple(delivered) == manager.events
    assert [e.kind for e in delivered] == ["onset", "audio_pause", "acknowledge", "clear"]
    assert [e.t_s for e in delivered] == sorted(e.t_s for e in delivered)


def test_naive_utc_clock_refused() -> None:
    manager = AlarmManager(AlarmSettings(), utc_clock=lambda: datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone"):
        manager.acknowledge(0.0)


def test_time_going_backwards_raises(manager: AlarmManager) -> None:
    manager.update(5.0, 1.0, None)
    with pytest.raises(ValueError, match="backwards"):
        manager.update(4.0, 1.0, None)
    with pytest.raises(ValueError, match="backwards"):
        manager.acknowledge(4.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"medium_threshold": 3.6},
        {"high_threshold": 4.5},
        {"alarm_delay_s": -1.0},
        {"hysteresis": 2.5},
        {"audio_pause_s": 0.0},
        {"reminder_interval_s": 0.0},
        {"model_sha256": "not-a-sha"},
        {"clear_hold_s": float("nan")},
    ],
)
def test_bad_settings_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AlarmSettings(**kwargs)


def test_bad_levels_and_states_refused(manager: AlarmManager) -> None:
    with pytest.raises(ValueError):
        manager.update(0.0, 4.2, None)
    with pytest.raises(ValueError):
        manager.update(0.0, float("nan"), None)
    with pytest.raises(ValueError, match="latches"):
        AlarmState(0.0, "medium", False, True, False, True, None, None, None, (), True, ())
    with pytest.raises(ValueError, match="timezone"):
        AlarmEvent("2024-05-01T08:00:00", 0.0, "onset", "high", 3.6, 3.5, "", "x")


# -- the AU estimate while the model cannot score the face (OUT_OF_DOMAIN) ---------------------


def test_out_of_domain_levels_raise_nothing_by_default(manager: AlarmManager) -> None:
    """Off by default: a face the model cannot score never raises a pain alarm."""
    states = feed(manager, 0.0, 60.0, 3.9, TechnicalCondition.OUT_OF_DOMAIN)
    assert kinds(states) == ["technical_onset"]
    assert states[0].new_events[0].message.startswith("technical alarm OUT_OF_DOMAIN")
    assert all(s.pain_priority == "none" for s in states)


def test_au_alarms_setting_lets_the_au_estimate_raise_pain_alarms(clock: FakeUtcClock) -> None:
    settings = AlarmSettings(model_sha256=SHA, au_alarms_out_of_domain=True)
    manager = AlarmManager(settings, utc_clock=clock)
    states = feed(manager, 0.0, 12.0, 3.0, TechnicalCondition.OUT_OF_DOMAIN)
    assert kinds(states) == ["technical_onset", "onset"]
    assert states[-1].pain_priority == "medium"
    assert states[-1].technical_conditions == ("OUT_OF_DOMAIN",)
    # Every other condition still freezes the pain state, setting or not.
    frozen = feed(manager, 12.5, 40.0, 0.0, TechnicalCondition.NO_FACE)
    assert all(s.active and s.pain_priority == "medium" for s in frozen)
    with pytest.raises(ValueError, match="True or False"):
        AlarmSettings(au_alarms_out_of_domain="yes")  # type: ignore[arg-type]
