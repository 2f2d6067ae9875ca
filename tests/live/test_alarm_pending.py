"""The pending alarm during the alarm delay, episodes vs escalations, and alarms active at
session start (issue #13, items 3 and 7), on media time with an injected UTC clock."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from painmon.core.live.alarms import (
    AlarmEventKind,
    AlarmManager,
    AlarmPriority,
    AlarmSettings,
    AlarmState,
    AlarmTally,
    TechnicalCondition,
)
from painmon.core.live.display import (
    NO_PAIN_ALARM_TEXT,
    PAIN_NOT_MONITORED_TEXT,
    ColourRole,
    alarm_banner,
    display_state,
)

DT_S = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(clock: Clock) -> AlarmManager:
    return AlarmManager(AlarmSettings(), utc_clock=clock)


def feed(manager: AlarmManager, start_s: float, end_s: float, level, condition=None, clock=None):
    states = []
    for i in range(round((end_s - start_s) / DT_S) + 1):
        if clock is not None:
            clock.now += timedelta(seconds=DT_S)
        states.append(manager.update(start_s + i * DT_S, level, condition))
    return states


def test_pending_medium_appears_at_the_first_frame_over_threshold_and_counts_down(manager):
    calm = feed(manager, 0.0, 5.0, 1.0)
    assert all(s.pending_priority is None and s.pending_in_s is None for s in calm)
    rising = feed(manager, 5.5, 15.5, 3.0)  # 2.5 <= 3.0 < 3.5: MEDIUM after 10 s
    first = rising[0]
    assert first.pending_priority == AlarmPriority.MEDIUM and first.pending_in_s == 10.0
    assert first.pain_priority == AlarmPriority.NONE and not first.audio_active
    remaining = [s.pending_in_s for s in rising[:-1]]
    assert remaining == [10.0 - DT_S * i for i in range(len(remaining))]
    assert all(s.pending_priority == "medium" for s in rising[:-1])
    # At the delay it is the alarm itself, no longer pending.
    raised = rising[-1]
    assert raised.pain_priority == AlarmPriority.MEDIUM and raised.active
    assert raised.pending_priority is None and raised.pending_in_s is None
    assert [e.kind for e in raised.new_events] == [AlarmEventKind.ONSET]


def test_pending_disappears_when_the_level_falls_and_restarts_from_the_full_delay(manager):
    up = feed(manager, 0.0, 4.0, 3.0)
    assert up[-1].pending_in_s == 6.0
    down = manager.update(4.5, 2.0)
    assert down.pending_priority is None and down.pending_in_s is None
    again = manager.update(5.0, 3.0)
    assert again.pending_priority == "medium" and again.pending_in_s == 10.0


def test_pending_is_high_when_the_level_is_over_high_from_the_start(manager):
    states = feed(manager, 0.0, 10.0, 3.8)
    assert states[0].pending_priority == "high" and states[0].pending_in_s == 10.0
    assert states[-1].pain_priority == "high" and states[-1].pending_priority is None


def test_escalation_pending_while_medium_is_active(manager):
    feed(manager, 0.0, 10.0, 3.0)  # MEDIUM raised at t=10
    states = feed(manager, 10.5, 20.5, 3.8)
    assert states[0].pain_priority == "medium"
    assert states[0].pending_priority == "high" and states[0].pending_in_s == 10.0
    assert states[-2].pending_in_s == DT_S
    assert states[-1].pain_priority == "high" and states[-1].pending_priority is None


def test_nothing_is_pending_while_the_output_is_unknown(manager):
    feed(manager, 0.0, 3.0, 3.0)
    frozen = manager.update(3.5, None)
    assert frozen.output_unknown and frozen.pending_priority is None
    technical = manager.update(4.0, 3.0, TechnicalCondition.LOW_QUALITY)
    assert technical.pending_priority is None
    # The onset timer kept its 3 s: the countdown resumes where it was.
    resumed = manager.update(4.5, 3.0)
    assert resumed.pending_priority == "medium" and resumed.pending_in_s == 7.0


def test_alarm_state_refuses_inconsistent_pending_values(manager):
    state = feed(manager, 0.0, 1.0, 3.0)[-1]
    with pytest.raises(ValueError, match="together"):
        dataclasses.replace(state, pending_in_s=None)
    with pytest.raises(ValueError, match="MEDIUM or HIGH"):
        dataclasses.replace(state, pending_priority="none")
    with pytest.raises(ValueError, match="> 0"):
        dataclasses.replace(state, pending_in_s=0.0)
    with pytest.raises(ValueError, match="unknown"):
        dataclasses.replace(state, pain_level=None, output_unknown=True)
    high = feed(manager, 1.5, 12.0, 3.8)[-1]
    assert high.pain_priority == "high"
    with pytest.raises(ValueError, match="rank above"):
        dataclasses.replace(high, pending_priority="high", pending_in_s=3.0)


# -- display: banner text -----------------------------------------------------------------------


def _display(state: AlarmState, now_s: float = 100.0):
    return display_state(None, state, now_s, last_result_s=None, worker_running=True)


def test_pending_banner_counts_down_is_muted_and_silent(manager):
    states = feed(manager, 0.0, 9.5, 3.0)
    display = _display(states[6])  # 3 s held: 7 s to go
    assert display.banner.text == "MEDIUM pain alarm in 7 s"
    assert display.banner.role is ColourRole.PENDING and not display.banner.flashing
    assert display.sound_priority is None
    # Rounded up: never "in 0 s" before the alarm is raised.
    assert _display(states[-1]).banner.text == "MEDIUM pain alarm in 1 s"
    assert alarm_banner(dataclasses.replace(states[-1], pending_in_s=0.2)).text.endswith("1 s")


def test_banner_with_an_active_alarm_and_a_pending_escalation(manager):
    feed(manager, 0.0, 10.0, 3.0)
    state = feed(manager, 10.5, 13.5, 3.8)[-1]  # 3 s over HIGH: 7 s to go
    banner = _display(state).banner
    assert banner.text == "MEDIUM PAIN ALARM — HIGH in 7 s"
    assert banner.role is ColourRole.MEDIUM and banner.flashing
    acked = manager.acknowledge(14.0)
    text = alarm_banner(acked).text
    assert text.startswith("MEDIUM PAIN ALARM — acknowledged") and text.endswith("HIGH in 7 s")
    assert not alarm_banner(acked).flashing


def test_banner_without_alarm_or_pending_and_latched_high_outranks_a_pending_medium(manager):
    # No state yet (a source starting, a model switched mid-alarm): nothing is known.
    assert alarm_banner(None).text == PAIN_NOT_MONITORED_TEXT
    assert _display(feed(manager, 0.0, 2.0, 1.0)[-1]).banner.role is None
    feed(manager, 2.5, 12.5, 3.8)  # HIGH
    feed(manager, 13.0, 18.0, 1.0)  # clears unacknowledged: latched
    state = feed(manager, 18.5, 20.0, 3.0)[-1]  # a new MEDIUM is pending under the latch
    assert state.latched and state.pending_priority == "medium"
    assert alarm_banner(state).text == "HIGH PAIN ALARM (latched — acknowledge)"


# -- session truth: episodes and alarms active at session start ---------------------------------


def test_tally_counts_an_escalation_inside_its_episode(manager):
    tally = AlarmTally()
    states = feed(manager, 0.0, 10.0, 3.0) + feed(manager, 10.5, 20.5, 3.8)
    states += feed(manager, 21.0, 40.0, 1.0, condition=None)
    states += feed(manager, 40.5, 46.0, None, TechnicalCondition.NO_FACE)
    for state in states:
        for event in state.new_events:
            tally.add(event)
    kinds = [e.kind for s in states for e in s.new_events]
    assert kinds == ["onset", "escalation", "latch", "technical_onset"]
    assert (tally.pain_episodes, tally.escalations, tally.technical) == (1, 1, 1)
    assert tally.pain_text() == "pain alarm episodes: 1 (1 escalation to HIGH)"


def test_active_alarm_events_name_each_active_alarm_with_its_onset(manager, clock):
    assert manager.active_alarm_events() == ()
    feed(manager, 0.0, 10.0, 3.0, clock=clock)  # MEDIUM onset at t=10
    onset_utc = manager.events[-1].utc_time
    feed(manager, 10.5, 20.5, 3.8, clock=clock)  # escalation at t=20.5
    before = len(manager.events)
    (event,) = manager.active_alarm_events()
    assert event.kind == AlarmEventKind.ACTIVE_AT_SESSION_START and event.priority == "high"
    assert event.t_s == 20.5 and event.threshold == 3.5 and event.value == 3.8
    assert f"raised at {onset_utc} (t 10.00 s)" in event.message
    assert "escalated to HIGH" in event.message and "t 20.50 s" in event.message
    # A description for a new session's log, not a state change: not delivered again.
    assert len(manager.events) == before
    assert manager.update(21.0, 3.8).new_events == ()


def test_active_alarm_events_cover_latched_and_technical_alarms(manager):
    feed(manager, 0.0, 10.0, 3.8)
    feed(manager, 10.5, 16.0, 1.0)  # cleared unacknowledged: latched
    feed(manager, 16.5, 22.5, None, TechnicalCondition.NO_FACE)  # NO_FACE after > 5 s
    latched, technical = manager.active_alarm_events()
    assert latched.priority == "high" and "latched" in latched.message
    assert "t 10.00 s" in latched.message
    assert technical.priority == "technical" and "NO_FACE" in technical.message
    tally = AlarmTally()
    for event in (latched, technical):
        tally.add(event)
    assert (tally.pain_episodes, tally.technical) == (1, 1)


def test_banner_never_says_no_pain_alarm_while_the_output_is_unknown(manager):
    from painmon.core.live.display import PAIN_NOT_MONITORED_TEXT

    calm = feed(manager, 0.0, 2.0, 1.0)[-1]
    assert alarm_banner(calm).text == NO_PAIN_ALARM_TEXT
    unknown = feed(manager, 2.5, 8.0, None, TechnicalCondition.NO_FACE)[-1]
    assert unknown.output_unknown and unknown.pain_priority == AlarmPriority.NONE
    assert alarm_banner(unknown).text == PAIN_NOT_MONITORED_TEXT
    assert alarm_banner(unknown).role is None and not alarm_banner(unknown).flashing
