"""ProbabilitySmoother and au_agreement: time-constant smoothing, gaps, unknowns, confidence."""

from __future__ import annotations

import math
import random

import pytest

from painmon.core.live.smoothing import ProbabilitySmoother, SmoothedScore, au_agreement

CALM = (0.9, 0.1, 0.0, 0.0, 0.0)
PAIN = (0.0, 0.0, 0.1, 0.2, 0.7)


def _feed(smoother: ProbabilitySmoother, times: list[float], switch_t_s: float) -> SmoothedScore:
    score = None
    for t in times:
        score = smoother.update(t, CALM if t < switch_t_s else PAIN)
    assert score is not None
    return score


def test_step_response_follows_time_constant() -> None:
    smoother = ProbabilitySmoother(time_constant_s=3.0)
    smoother.update(0.0, CALM)
    score = smoother.update(3.0, PAIN)  # one step of dt = tau, no gap (max_gap raised below)
    assert score.reason == "restart"  # 3 s > default max_gap_s of 2 s
    smoother = ProbabilitySmoother(time_constant_s=3.0, max_gap_s=10.0)
    smoother.update(0.0, CALM)
    score = smoother.update(3.0, PAIN)
    expected = [p + (c - p) * math.exp(-1.0) for c, p in zip(CALM, PAIN, strict=True)]
    assert score.probs == pytest.approx(expected, abs=1e-12)
    assert score.reason == "ok"


def test_irregular_frame_times_match_regular_ones() -> None:
    regular = [round(i * 0.04, 6) for i in range(int(8.0 / 0.04) + 1)]  # 25 fps
    rng = random.Random(7)
    irregular = [0.0]
    while irregular[-1] < 8.0:
        irregular.append(irregular[-1] + rng.uniform(0.01, 0.3))  # jittery webcam, 3-100 fps
    # Where between two frames the step fell is unknowable, so both schedules share the last
    # frame before it; with the switch frame and the final time also shared they must agree.
    irregular = sorted({*(t for t in irregular if t < 8.0 and not 1.96 < t < 2.0), 1.96, 2.0, 8.0})
    a = _feed(ProbabilitySmoother(3.0), regular, switch_t_s=2.0)
    b = _feed(ProbabilitySmoother(3.0), irregular, switch_t_s=2.0)
    assert b.probs == pytest.approx(a.probs, abs=1e-9)
    assert b.pain_level == pytest.approx(a.pain_level, abs=1e-9)
    # And it is genuinely smoothed, not a copy of the last frame.
    assert a.probs != pytest.approx(PAIN, abs=1e-3)


def test_frame_rate_does_not_change_a_slow_signal() -> None:
    def run(dt_s: float) -> float:
        smoother = ProbabilitySmoother(3.0)
        t, score = 0.0, None
        while t <= 10.0 + 1e-9:
            p4 = 0.5 + 0.4 * math.sin(t / 4.0)  # slow drift of the top class
            score = smoother.update(t, (1 - p4, 0.0, 0.0, 0.0, p4))
            t += dt_s
        assert score is not None and score.pain_level is not None
        return score.pain_level

    assert run(0.04) == pytest.approx(run(0.5), abs=0.05)


def test_gap_restarts_instead_of_blending_stale_data() -> None:
    smoother = ProbabilitySmoother(3.0, max_gap_s=2.0)
    for i in range(50):
        smoother.update(i * 0.1, CALM)
    score = smoother.update(4.9 + 2.5, PAIN)  # 2.5 s without frames
    assert score.reason == "restart"
    assert score.probs == pytest.approx(PAIN)
    assert score.pain_class == 4


def test_unknown_frames_longer_than_max_gap_restart() -> None:
    smoother = ProbabilitySmoother(3.0, max_gap_s=2.0)
    smoother.update(0.0, CALM)
    for t in (0.5, 1.0, 1.5, 2.0):
        smoother.update(t, None)
    assert smoother.update(2.1, PAIN).probs == pytest.approx(PAIN)  # 2.1 s since last valid


def test_short_unknown_stretch_keeps_history() -> None:
    smoother = ProbabilitySmoother(3.0, max_gap_s=2.0)
    smoother.update(0.0, CALM)
    smoother.update(0.5, None)
    score = smoother.update(1.0, PAIN)
    assert score.reason == "ok"
    alpha = 1 - math.exp(-1.0 / 3.0)  # dt from the last valid frame
    assert score.probs[4] == pytest.approx(alpha * PAIN[4])


def test_unknown_in_gives_unknown_out_never_no_pain() -> None:
    smoother = ProbabilitySmoother()
    smoother.update(0.0, CALM)
    score = smoother.update(0.1, None, unknown_reason="no face")
    assert score.unknown
    assert score.probs is None and score.pain_level is None
    assert score.pain_class is None and score.confidence is None
    assert score.reason == "no face"
    assert ProbabilitySmoother().update(0.0, None).unknown


def test_level_class_and_confidence_of_a_known_frame() -> None:
    score = ProbabilitySmoother().update(0.0, (0.0, 0.0, 0.6, 0.4, 0.0))
    assert score.pain_level == pytest.approx(2.4)
    assert score.pain_class == 2
    assert score.confidence == pytest.approx(0.6)  # smoothed max probability
    assert not score.unknown


def test_quality_and_disagreement_reduce_confidence() -> None:
    def confidence(quality: float, agreement: float) -> float:
        score = ProbabilitySmoother().update(0.0, PAIN, quality=quality, agreement=agreement)
        assert score.confidence is not None
        return score.confidence

    full = confidence(1.0, 1.0)
    assert full == pytest.approx(0.7)
    assert confidence(0.5, 1.0) == pytest.approx(0.35)
    assert confidence(1.0, 0.25) == pytest.approx(0.175)
    assert confidence(0.5, 0.5) == pytest.approx(0.175)
    # Probabilities and level are untouched by quality: only confidence speaks of trust.
    low = ProbabilitySmoother().update(0.0, PAIN, quality=0.1)
    assert low.pain_level == pytest.approx(ProbabilitySmoother().update(0.0, PAIN).pain_level)


def test_low_quality_frames_pull_confidence_down_over_time() -> None:
    smoother = ProbabilitySmoother(3.0)
    for i in range(20):
        good = smoother.update(i * 0.1, PAIN, quality=1.0)
    for i in range(20, 80):
        bad = smoother.update(i * 0.1, PAIN, quality=0.2)
    assert good.confidence is not None and bad.confidence is not None
    assert bad.confidence < 0.5 * good.confidence


def test_time_going_backwards_raises() -> None:
    smoother = ProbabilitySmoother()
    smoother.update(5.0, CALM)
    smoother.update(5.0, CALM)  # a repeated timestamp is allowed
    with pytest.raises(ValueError, match="backwards"):
        smoother.update(4.9, CALM)
    with pytest.raises(ValueError, match="backwards"):
        smoother.update(4.9, None)


def test_reset_forgets_history_and_time() -> None:
    smoother = ProbabilitySmoother()
    smoother.update(10.0, CALM)
    smoother.reset()
    score = smoother.update(0.0, PAIN)
    assert score.reason == "restart" and score.probs == pytest.approx(PAIN)


@pytest.mark.parametrize(
    ("probs", "quality", "agreement"),
    [
        ((0.5, 0.5, 0.0, 0.0), 1.0, 1.0),
        ((0.5, 0.6, 0.0, 0.0, 0.0), 1.0, 1.0),
        ((1.5, -0.5, 0.0, 0.0, 0.0), 1.0, 1.0),
        ((math.nan, 1.0, 0.0, 0.0, 0.0), 1.0, 1.0),
        (CALM, 1.2, 1.0),
        (CALM, 1.0, -0.1),
    ],
)
def test_bad_inputs_are_refused(probs: tuple, quality: float, agreement: float) -> None:
    with pytest.raises(ValueError):
        ProbabilitySmoother().update(0.0, probs, quality=quality, agreement=agreement)


def test_smoothed_score_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        SmoothedScore(0.0, CALM, 0, 0.1, 0.9, True, "no face")
    with pytest.raises(ValueError, match="known"):
        SmoothedScore(0.0, None, None, None, None, False, "ok")
    with pytest.raises(ValueError, match="pain_level"):
        SmoothedScore(0.0, CALM, 0, 4.5, 0.9, False, "ok")
    with pytest.raises(ValueError):
        ProbabilitySmoother(time_constant_s=0.0)


def test_au_agreement() -> None:
    assert au_agreement(2.0, None) == 1.0
    assert au_agreement(2.0, 3.0) == 1.0  # PSPI 3 -> class 2
    assert au_agreement(2.4, 2.0) == 1.0  # within half a level
    one_off = au_agreement(3.0, 2.0)  # class 2 vs level 3
    two_off = au_agreement(4.0, 2.0)
    four_off = au_agreement(4.0, 0.0)
    assert 0.8 < one_off < 1.0
    assert 0.2 < two_off < 0.5
    assert four_off < 0.01
    assert au_agreement(4.0, 12.0) == 1.0  # 7-16 is class 4
    assert au_agreement(4.0, 25.0) == 1.0  # clipped to 16
    assert au_agreement(0.0, -1.0) == 1.0  # clipped to 0
    gaps = [au_agreement(0.0, pspi) for pspi in (0, 1, 2, 4, 7)]
    assert gaps == sorted(gaps, reverse=True)
    with pytest.raises(ValueError):
        au_agreement(4.5, 2.0)
    with pytest.raises(ValueError):
        au_agreement(2.0, math.nan)
