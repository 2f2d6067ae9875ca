"""The domain gate's threshold: from the validation subjects, or cross-fitted over every
training and validation subject when the validation subjects are few (UNBC leaves 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from painmon.core.research.domain_gate import (
    THRESHOLD_CROSS_FIT,
    THRESHOLD_VALIDATION,
    _fit_gaussians,
    cross_fit_folds,
    cross_fit_scores,
    fit_domain_gate,
    mahalanobis_scores,
)
from painmon.core.util.errors import InvalidInputError


def _people(rng, n: int, per: int = 40, dims: int = 16, spread: float = 1.0):
    """Crops' features of ``n`` people: each person an offset, each crop noise around it."""
    offsets = rng.normal(0.0, spread, (n, dims))
    feats = np.concatenate([o + rng.normal(0.0, 1.0, (per, dims)) for o in offsets])
    subjects = np.repeat([f"p{i:02d}" for i in range(n)], per)
    return feats, rng.integers(0, 5, len(feats)), subjects


def test_folds_cover_every_subject_once_and_repeat():
    subjects = np.array(["b", "a", "c", "a", "d", "e", "f", "g"])
    folds = cross_fit_folds(subjects, folds=5, seed=0)
    assert sorted(folds) == ["a", "b", "c", "d", "e", "f", "g"]
    assert sorted(set(folds.values())) == [0, 1, 2, 3, 4]
    assert cross_fit_folds(subjects[::-1], folds=5, seed=0) == folds  # order-free, seeded
    assert set(cross_fit_folds(np.array(["a", "b", "c"]), folds=5).values()) == {0, 1, 2}
    with pytest.raises(InvalidInputError, match="at least 2 subjects"):
        cross_fit_folds(np.array(["a", "a"]))


def test_each_crop_is_scored_by_a_fit_without_its_fold():
    rng = np.random.default_rng(1)
    feats, labels, subjects = _people(rng, 10, per=30)
    scores, k = cross_fit_scores(feats, labels, subjects, feats, subjects, folds=5, seed=3)
    assert k == 5 and len(scores) == len(feats)
    folds = cross_fit_folds(subjects, 5, seed=3)
    fold = np.array([folds[s] for s in subjects])
    expected = []
    for f in range(5):
        centre, whiten, means, _, _ = _fit_gaussians(feats[fold != f], labels[fold != f])
        expected.append(mahalanobis_scores(centre, whiten, means, feats[fold == f]))
    np.testing.assert_allclose(scores, np.concatenate(expected))
    # Out of fold, a person lies further from the fit than in it.
    centre, whiten, means, _, _ = _fit_gaussians(feats, labels)
    assert np.median(scores) > np.median(mahalanobis_scores(centre, whiten, means, feats))


def test_a_fold_with_too_few_crops_left_is_refused():
    rng = np.random.default_rng(2)
    feats, labels, subjects = _people(rng, 3, per=8)
    with pytest.raises(InvalidInputError, match="leaves 16 crops to fit on"):
        cross_fit_scores(feats, labels, subjects, feats, subjects)
    with pytest.raises(InvalidInputError, match="its subject"):
        cross_fit_scores(feats, labels, subjects[:-1], feats, subjects)


def test_cross_fitted_threshold_is_recorded_as_such():
    rng = np.random.default_rng(4)
    feats, labels, subjects = _people(rng, 12)
    train, val = subjects < "p10", subjects >= "p10"
    plain = fit_domain_gate(feats[train], labels[train], feats[val], val_subjects=2)
    scores = np.linspace(1.0, 100.0, 1000)
    cross = fit_domain_gate(
        feats[train], labels[train], feats[val], val_subjects=2,
        threshold_scores=scores, threshold_subjects=12, threshold_folds=5,
    )  # fmt: skip
    assert plain.threshold_source == THRESHOLD_VALIDATION and plain.threshold_subjects == 2
    assert cross.threshold_source == THRESHOLD_CROSS_FIT
    assert cross.threshold == pytest.approx(np.quantile(scores, 0.99))
    np.testing.assert_array_equal(cross.whiten, plain.whiten)  # the same fit, another threshold
    meta = json.loads(json.dumps(cross.metadata()))
    assert meta["threshold_fit"] == {
        "source": "cross-fit", "subjects": 12, "crops": 1000, "folds": 5,
    }  # fmt: skip
    text = meta["threshold_from"]
    assert "out-of-fold scores of 1000 crops of 12 training and validation" in text
    assert "80 crops of 2 validation subjects" in plain.metadata()["threshold_from"]
    with pytest.raises(InvalidInputError, match="not finite"):
        fit_domain_gate(feats[train], labels[train], feats[val], threshold_scores=[np.nan])


def test_two_validation_people_make_a_chance_threshold_and_cross_fitting_does_not():
    # People differ (an offset each); the gate is fitted on 18 and the 0.99 quantile should
    # flag about 1 % of a new person's crops. Set on 2 validation people, the rate on 100
    # new people is whatever those 2 happen to be; cross-fitted over all 20, it is near 1 %.
    from_val, cross_fitted = [], []
    for rep in range(20):
        rng = np.random.default_rng(rep)
        feats, labels, subjects = _people(rng, 20)
        new, _, _ = _people(rng, 100)
        train, val = subjects < "p18", subjects >= "p18"
        gate = fit_domain_gate(feats[train], labels[train], feats[val], val_subjects=2)
        scores, k = cross_fit_scores(feats[train], labels[train], subjects[train], feats, subjects)
        cross = fit_domain_gate(
            feats[train], labels[train], feats[val], threshold_scores=scores,
            threshold_subjects=20, threshold_folds=k,
        )  # fmt: skip
        from_val.append((gate.score(new) > gate.threshold).mean())
        cross_fitted.append((cross.score(new) > cross.threshold).mean())
    from_val, cross_fitted = np.array(from_val), np.array(cross_fitted)
    # Measured: from 2 people 0.6-10.6 % (median 2.9 %); cross-fitted 0.4-1.6 % (median 0.95 %).
    assert from_val.max() > 0.08 and np.median(from_val) > 0.02
    assert cross_fitted.max() < 0.025 and abs(np.median(cross_fitted) - 0.01) < 0.004
    assert np.abs(cross_fitted - 0.01).mean() < np.abs(from_val - 0.01).mean() / 4
