"""Temperature scaling: recovers a known over-confidence factor and never worsens NLL."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from painmon.core.research.calibration import (
    TEMPERATURE_MAX,
    TEMPERATURE_MIN,
    CalibrationResult,
    apply_temperature,
    calibrate,
    fit_temperature,
    softmax,
)

C = 5


def _calibrated_logits(seed: int, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution (labels sampled from it)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, C))
    probs = softmax(logits)
    cumulative = probs.cumsum(axis=1)
    labels = (rng.uniform(size=(n, 1)) > cumulative).sum(axis=1)
    return logits, np.minimum(labels, C - 1)


def test_recovers_overconfidence_factor_and_reduces_ece():
    logits, labels = _calibrated_logits(0)
    result = calibrate(logits * 3.0, labels)
    assert result.temperature == pytest.approx(3.0, rel=0.1)
    assert result.ece_after < result.ece_before / 2
    assert result.ece_after < 0.03
    assert result.nll_after < result.nll_before
    assert result.n == logits.shape[0]


def test_underconfident_logits_get_temperature_below_one():
    logits, labels = _calibrated_logits(1)
    assert fit_temperature(logits / 2.0, labels) == pytest.approx(0.5, rel=0.1)


def test_calibrated_logits_keep_temperature_near_one():
    logits, labels = _calibrated_logits(2)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.08)


@pytest.mark.parametrize("seed", range(6))
def test_nll_never_increases(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 60))
    logits = rng.normal(0, rng.uniform(0.1, 8), size=(n, C))
    labels = rng.integers(0, C, size=n)
    result = calibrate(logits, labels)
    assert result.nll_after <= result.nll_before
    assert TEMPERATURE_MIN <= result.temperature <= TEMPERATURE_MAX


def test_fit_is_deterministic():
    logits, labels = _calibrated_logits(3, n=500)
    assert fit_temperature(logits * 2, labels) == fit_temperature(logits * 2, labels)


def test_temperature_respects_bounds_on_separable_data(caplog):
    # Every sample right: NLL keeps falling as T -> 0, so T runs to the floor (small margin
    # so that the NLL is still resolvable in float64 there).
    labels = np.arange(20) % C
    logits = np.eye(C)[labels] * 0.2
    assert fit_temperature(logits, labels) == pytest.approx(TEMPERATURE_MIN, abs=1e-3)
    with caplog.at_level(logging.WARNING, logger="painmon.core.research.calibration"):
        fit_temperature(logits[:4], labels[:4])
    assert "only 4 samples" in caplog.text


def test_single_class_fits_but_warns(caplog):
    logits = np.random.default_rng(4).normal(size=(30, C))
    with caplog.at_level(logging.WARNING, logger="painmon.core.research.calibration"):
        t = fit_temperature(logits, np.zeros(30, dtype=int))
    assert TEMPERATURE_MIN <= t <= TEMPERATURE_MAX
    assert "all 30 validation labels are class 0" in caplog.text


def test_softmax_is_stable_on_extreme_logits():
    logits = np.array([[1e4, -1e4, 0, 0, 0], [-1e308, 1e308, 0, 0, 0], [7.0] * C])
    probs = softmax(logits)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[0], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(probs[2], np.full(C, 0.2))
    cold = softmax(logits[:1], temperature=1e-3)
    assert np.all(np.isfinite(cold))
    one = softmax(np.array([1.0, 2.0, 3.0]))
    assert one.shape == (3,) and one.sum() == pytest.approx(1.0)


def test_apply_temperature_softens_without_changing_the_argmax():
    logits = np.random.default_rng(5).normal(0, 3, size=(50, C))
    hot = apply_temperature(logits, 3.0)
    assert np.array_equal(hot.argmax(axis=1), logits.argmax(axis=1))
    assert np.all(hot.max(axis=1) <= softmax(logits).max(axis=1) + 1e-12)
    np.testing.assert_allclose(apply_temperature(logits, 1.0), softmax(logits))


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((1, C)), [0], "at least 2"),
        (np.array([[np.nan] * C] * 3), [0, 1, 2], "NaN"),
        (np.array([[np.inf] + [0.0] * (C - 1)] * 3), [0, 1, 2], "NaN or infinity"),
        (np.zeros((3, C)), [0, 1], "one entry per logit row"),
        (np.zeros((3, C)), [0, 1, 5], "0..4"),
        (np.zeros(C), [0], "2-D"),
        (np.zeros((3, 1)), [0, 0, 0], "C >= 2"),
    ],
)
def test_invalid_fit_inputs(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(logits, np.asarray(labels))


def test_bad_temperature_rejected():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            softmax(np.zeros((2, C)), bad)


def test_calibration_result_is_frozen_and_validated():
    result = CalibrationResult(1.5, 0.1, 0.05, 1.2, 1.1, 100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.temperature = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="temperature"):
        CalibrationResult(50.0, 0.1, 0.05, 1.2, 1.1, 100)
    with pytest.raises(ValueError, match="nll_after"):
        CalibrationResult(1.5, 0.1, 0.05, 1.2, float("nan"), 100)
    with pytest.raises(ValueError, match="n must be"):
        CalibrationResult(1.5, 0.1, 0.05, 1.2, 1.1, 1)
