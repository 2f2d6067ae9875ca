"""core.research.subject_stats: subject-bootstrap CIs, synthetic subgroups, the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from painmon.core.research.metrics import calibration_errors, classification_metrics
from painmon.core.research.subject_stats import (
    METRICS,
    PREDICTIONS_HEADER,
    SUBGROUPS,
    main,
    read_predictions_csv,
    subgroup_table,
    subject_bootstrap_ci,
    synthetic_subgroups,
)
from painmon.core.synth.dataset import subject_identity
from painmon.core.util.errors import InvalidInputError

N_BOOT = 500


def _fake_data(n_subjects: int, per_subject: int = 12, seed: int = 0):
    """Labels, preds, probs, subjects; each subject has its own accuracy (0.3..0.9)."""
    rng = np.random.default_rng(seed)
    n = n_subjects * per_subject
    subjects = np.repeat([f"s{i:03d}" for i in range(n_subjects)], per_subject)
    skill = np.repeat(rng.uniform(0.3, 0.9, n_subjects), per_subject)
    labels = rng.integers(0, 5, n)
    preds = np.where(rng.random(n) < skill, labels, rng.integers(0, 5, n))
    probs = rng.dirichlet(np.ones(5), n)
    return labels, preds, probs, subjects


def _write_predictions(path, labels, preds, probs, subjects):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTIONS_HEADER)
        for i, (y, p, prob, s) in enumerate(zip(labels, preds, probs, subjects, strict=True)):
            writer.writerow([f"crops/{s}/{i}.png", s, int(y), int(p), *(f"{x:.6f}" for x in prob)])
    return path


def _width(ci: dict) -> float:
    return ci["ci_high"] - ci["ci_low"]


@pytest.mark.parametrize("metric", METRICS)
def test_ci_contains_estimate_and_matches_project_metrics(metric):
    labels, preds, probs, subjects = _fake_data(20)
    ci = subject_bootstrap_ci(labels, preds, subjects, metric, N_BOOT, probs=probs)
    assert ci["ci_low"] <= ci["estimate"] <= ci["ci_high"]
    assert (ci["n_subjects"], ci["n_samples"], ci["n_boot"]) == (20, 240, N_BOOT)
    expected = _project_metric(metric, labels, preds, probs)
    assert ci["estimate"] == pytest.approx(expected, abs=1e-12)


def _project_metric(metric, labels, preds, probs):
    if metric == "accuracy":
        return np.mean(preds == labels)
    if metric == "within_one":
        return np.mean(np.abs(preds - labels) <= 1)
    if metric in ("macro_f1", "quadratic_kappa"):
        return classification_metrics(labels, np.eye(5)[preds])[metric]
    return calibration_errors(labels, probs)[0]


@pytest.mark.parametrize("metric", METRICS)
def test_replicates_agree_with_project_metrics(metric):
    # Two subjects A, B: every replicate pools AA, AB or BB, and with 2000 replicates each
    # of those is > 2.5 % of them, so the interval ends are exactly the extreme pooled values
    # as the project's own metric functions compute them.
    labels, preds, probs, subjects = _fake_data(2, per_subject=30, seed=5)
    ci = subject_bootstrap_ci(labels, preds, subjects, metric, 2000, probs=probs)
    a, b = subjects == "s000", subjects == "s001"
    values = [_project_metric(metric, labels[m], preds[m], probs[m]) for m in (a, b, a | b)]
    assert ci["ci_low"] == pytest.approx(min(values), abs=1e-9)
    assert ci["ci_high"] == pytest.approx(max(values), abs=1e-9)


def test_duplicated_subjects_match_pooled_metric():
    # Two identical subjects: any replicate pools copies of the same data -> same metric.
    labels, preds, probs, _ = _fake_data(1, per_subject=30)
    labels2, preds2 = np.tile(labels, 2), np.tile(preds, 2)
    subjects = np.repeat(["a", "b"], 30)
    for metric in ("accuracy", "macro_f1", "within_one"):
        ci = subject_bootstrap_ci(labels2, preds2, subjects, metric, 50)
        assert ci["ci_low"] == pytest.approx(ci["estimate"])
        assert ci["ci_high"] == pytest.approx(ci["estimate"])
    ci = subject_bootstrap_ci(labels2, preds2, subjects, "ece", 50, probs=np.tile(probs, (2, 1)))
    assert _width(ci) == pytest.approx(0.0, abs=1e-9)


def test_ci_shrinks_with_more_subjects():
    few = subject_bootstrap_ci(*_pick(_fake_data(8)), "accuracy", N_BOOT)
    many = subject_bootstrap_ci(*_pick(_fake_data(200)), "accuracy", N_BOOT)
    assert _width(many) < 0.5 * _width(few)


def _pick(data):
    labels, preds, _, subjects = data
    return labels, preds, subjects


def test_resampling_is_by_subject():
    # Ten subjects of 20 samples; one gets every sample wrong, the others every sample right.
    subjects = np.repeat([f"s{i:03d}" for i in range(10)], 20)
    labels = np.zeros(200, dtype=int)
    preds = np.where(subjects == "s003", 2, 0)
    by_subject = subject_bootstrap_ci(labels, preds, subjects, "accuracy", 2000, seed=1)
    by_sample = subject_bootstrap_ci(labels, preds, np.arange(200), "accuracy", 2000, seed=1)
    assert by_subject["estimate"] == by_sample["estimate"] == pytest.approx(0.9)
    # 0..3 copies of the bad subject: accuracy 1.0 .. 0.7; per sample about 0.86 .. 0.94.
    assert by_subject["ci_high"] == 1.0
    assert by_subject["ci_low"] <= 0.8
    assert _width(by_subject) > 2 * _width(by_sample)


def test_bootstrap_is_seeded():
    labels, preds, _, subjects = _fake_data(15)
    a = subject_bootstrap_ci(labels, preds, subjects, n_boot=200, seed=3)
    assert a == subject_bootstrap_ci(labels, preds, subjects, n_boot=200, seed=3)
    assert a != subject_bootstrap_ci(labels, preds, subjects, n_boot=200, seed=4)


def test_bad_inputs_are_refused():
    labels, preds, _, subjects = _fake_data(3)
    with pytest.raises(InvalidInputError, match="needs the class probabilities"):
        subject_bootstrap_ci(labels, preds, subjects, "ece")
    with pytest.raises(InvalidInputError, match="unknown metric"):
        subject_bootstrap_ci(labels, preds, subjects, "auc")
    with pytest.raises(InvalidInputError, match="one entry per sample"):
        subject_bootstrap_ci(labels, preds[:-1], subjects)
    with pytest.raises(InvalidInputError, match="outside the classes"):
        subject_bootstrap_ci(labels, preds + 5, subjects)
    with pytest.raises(InvalidInputError, match="sum to 1"):
        subject_bootstrap_ci(labels, preds, subjects, "ece", probs=np.ones((labels.size, 5)))


def test_synthetic_subgroups_match_subject_identity():
    subjects = ["s000", "s017", "s003", "s017"]
    groups = synthetic_subgroups(subjects, seed=7)
    assert list(groups) == ["s000", "s017", "s003"]
    for subject, attributes in groups.items():
        identity = subject_identity(7, int(subject[1:]))
        assert set(attributes) == set(SUBGROUPS)
        age = identity.age_years
        assert attributes["age"] == ("<40" if age < 40 else "40-64" if age < 65 else ">=65")
        assert attributes["fitzpatrick"] == {1: "I-II", 2: "I-II", 3: "III-IV", 4: "III-IV"}.get(
            identity.fitzpatrick, "V-VI"
        )
        assert (attributes["fringe"] == "fringe") == (identity.hair_style == "fringe")
        assert (attributes["glasses"] == "glasses") == (identity.glasses != "none")
        assert (attributes["beard"] == "beard") == (identity.beard != "none")
    assert synthetic_subgroups(["s017"], seed=7)["s017"] == groups["s017"]


@pytest.mark.parametrize("subject", ["patient-01", "S001", "s", "s12a", "bv_071309_w_21"])
def test_non_synthetic_subjects_are_refused(subject):
    with pytest.raises(InvalidInputError, match="not a painmon synthetic subject"):
        synthetic_subgroups(["s000", subject], seed=0)


def test_subgroup_table_rows():
    labels, preds, _, subjects = _fake_data(12)
    groups = synthetic_subgroups(subjects, seed=0)
    rows = subgroup_table(labels, preds, subjects, groups, n_boot=200)
    assert [r.attribute for r in rows] == sorted(
        (r.attribute for r in rows), key=list(SUBGROUPS).index
    )
    for attribute in SUBGROUPS:
        mine = [r for r in rows if r.attribute == attribute]
        assert sum(r.subjects for r in mine) == 12
        assert sum(r.samples for r in mine) == labels.size
        for row in mine:
            in_group = np.array([groups[s][attribute] == row.group for s in subjects])
            assert row.accuracy == pytest.approx(np.mean(preds[in_group] == labels[in_group]))
            assert row.ci_low <= row.accuracy <= row.ci_high
    with pytest.raises(InvalidInputError, match="no subgroup for subject"):
        subgroup_table(labels, preds, subjects, {"s000": groups["s000"]})


def test_read_predictions_csv(tmp_path):
    labels, preds, probs, subjects = _fake_data(3, per_subject=4)
    path = _write_predictions(tmp_path / "preds.csv", labels, preds, probs, subjects)
    table = read_predictions_csv(path)
    np.testing.assert_array_equal(table.labels, labels)
    np.testing.assert_array_equal(table.preds, preds)
    np.testing.assert_array_equal(table.subjects, subjects)
    np.testing.assert_allclose(table.probs, probs, atol=1e-6)
    assert table.paths[0] == "crops/s000/0.png"


def test_read_predictions_csv_refuses_bad_files(tmp_path):
    wrong_header = tmp_path / "wrong.csv"
    wrong_header.write_text("path,subject,label\nx,s000,1\n")
    with pytest.raises(InvalidInputError, match="not a predictions file"):
        read_predictions_csv(wrong_header)
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(PREDICTIONS_HEADER) + "\n")
    with pytest.raises(InvalidInputError, match="no predictions"):
        read_predictions_csv(empty)
    bad_row = tmp_path / "bad.csv"
    bad_row.write_text(",".join(PREDICTIONS_HEADER) + "\nx,s000,high,1,1,0,0,0,0\n")
    with pytest.raises(InvalidInputError, match="line 2"):
        read_predictions_csv(bad_row)


def test_cli_prints_markdown_and_writes_json(tmp_path, capsys):
    labels, preds, probs, subjects = _fake_data(10, per_subject=6)
    path = _write_predictions(tmp_path / "preds.csv", labels, preds, probs, subjects)
    out = tmp_path / "stats.json"
    argv = ["--predictions", str(path), "--synth-seed", "0", "--json", str(out), "--n-boot", "200"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for name in ("accuracy", "macro-F1", "within-one accuracy", "ECE (15 bins)"):
        assert f"| {name} |" in text
    assert "| attribute | group | subjects | samples | accuracy | 95 % CI |" in text
    assert "| fitzpatrick |" in text
    one_subject = [r for r in summary_rows(out) if r["subjects"] == 1]
    assert text.count("n/a (1 subject)") == len(one_subject)
    summary = json.loads(out.read_text())
    assert [row["metric"] for row in summary["overall"]] == list(METRICS)
    assert summary["overall"][0]["estimate"] == pytest.approx(np.mean(preds == labels))
    assert {row["attribute"] for row in summary["subgroups"]} == set(SUBGROUPS)


def summary_rows(path):
    return json.loads(path.read_text())["subgroups"]


def test_cli_without_synth_seed_has_no_subgroups(tmp_path, capsys):
    labels, preds, probs, _ = _fake_data(4, per_subject=5)
    subjects = np.repeat([f"patient-{i}" for i in range(4)], 5)
    path = _write_predictions(tmp_path / "preds.csv", labels, preds, probs, subjects)
    assert main(["--predictions", str(path), "--n-boot", "100"]) == 0
    text = capsys.readouterr().out
    assert "| accuracy |" in text
    assert "subgroup" not in text
    # Real subjects and --synth-seed: one line on stderr, exit 2, no traceback.
    assert main(["--predictions", str(path), "--synth-seed", "0", "--n-boot", "100"]) == 2
    assert "not a painmon synthetic subject" in capsys.readouterr().err
