"""Subject-wise splits: disjoint partitions, fold coverage, determinism, JSON, and the split CLI."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter

import numpy as np
import pytest

from painmon.core.research.datasets import Sample
from painmon.core.research.splits import (
    Fold,
    SplitError,
    SplitPlan,
    SubjectLeakError,
    check_subject_disjoint,
    filter_samples,
    format_split_table,
    make_splits,
    min_subjects,
    run_split_cli,
)

SHA = hashlib.sha256(b"toy manifest").hexdigest()
# Pain is rare, as in UNBC: most frames are class 0.
CLASS_WEIGHTS = (0.6, 0.15, 0.12, 0.08, 0.05)


def toy_samples(n_subjects: int = 50, per_subject: int = 20, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = []
    for s in range(n_subjects):
        labels = rng.choice(5, size=per_subject, p=CLASS_WEIGHTS)
        for i, label in enumerate(labels):
            samples.append(
                Sample(f"img/s{s:02d}_{i:03d}.png", f"s{s:02d}", int(label), None, "manifest")
            )
    return samples


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return toy_samples()


@pytest.fixture(scope="module")
def plan(samples) -> SplitPlan:
    return make_splits(samples, SHA, seed=42, folds=5)


def test_partitions_are_disjoint_and_about_72_8_20(plan, samples):
    train, val, test = set(plan.train), set(plan.val), set(plan.test)
    assert not (train & val or train & test or val & test)
    assert train | val | test == {s.subject for s in samples}
    assert 8 <= len(test) <= 12  # 20 % of 50
    assert 3 <= len(val) <= 5  # 8 %
    assert 33 <= len(train) <= 39  # 72 %
    check_subject_disjoint(plan)


def test_folds_cover_train_val_and_never_touch_test(plan):
    pool = set(plan.train) | set(plan.val)
    assert len(plan.folds) == 5
    seen_val: Counter[str] = Counter()
    for fold in plan.folds:
        assert set(fold.train) | set(fold.val) == pool
        assert not set(fold.train) & set(fold.val)
        assert not (set(fold.train) | set(fold.val)) & set(plan.test)
        assert fold["val"] == fold.val
        seen_val.update(fold.val)
    assert set(seen_val) == pool and set(seen_val.values()) == {1}  # each subject validated once


def test_split_is_roughly_stratified(plan, samples):
    overall = np.bincount([s.label for s in samples], minlength=5) / len(samples)
    for name in ("train", "test"):
        part = filter_samples(samples, plan.subjects(name))
        share = np.bincount([s.label for s in part], minlength=5) / len(part)
        assert np.abs(share - overall).max() < 0.05, (name, share, overall)


def test_same_seed_same_plan_regardless_of_sample_order(plan, samples):
    shuffled = list(samples)
    random.Random(7).shuffle(shuffled)
    assert make_splits(shuffled, SHA, seed=42, folds=5) == plan
    other = make_splits(samples, SHA, seed=123, folds=5)
    assert (other.test, other.val) != (plan.test, plan.val)
    three = make_splits(samples, SHA, seed=42, folds=3)
    assert len(three.folds) == 3 and three.test == plan.test


def test_json_round_trip_has_exactly_the_documented_keys(plan, tmp_path):
    path = plan.to_json(tmp_path / "out" / "splits.json")
    data = json.loads(path.read_text())
    assert list(data) == ["manifest_sha256", "seed", "train", "val", "test", "folds"]
    assert data["manifest_sha256"] == SHA and data["seed"] == 42
    assert all(set(f) == {"train", "val"} for f in data["folds"])
    assert SplitPlan.from_json(path) == plan


def test_check_subject_disjoint_names_the_leaking_subject():
    leaky = SplitPlan(SHA, 1, ["s01", "s02", "s07"], ["s03"], ["s04", "s07"])
    with pytest.raises(SubjectLeakError, match=r"'s07' is in both train and test"):
        check_subject_disjoint(leaky)
    fold_leak = SplitPlan(
        SHA, 1, ["a", "b", "c"], ["d"], ["e"], (Fold(["a", "b", "c", "e"], ["d"]),)
    )
    with pytest.raises(SubjectLeakError, match=r"'e' is in both fold 1 train and test"):
        check_subject_disjoint(fold_leak)
    within_fold = SplitPlan(
        SHA, 1, ["a", "b", "c"], ["d"], ["e"], (Fold(["a", "b", "c"], ["c", "d"]),)
    )
    with pytest.raises(SubjectLeakError, match=r"'c' is in both fold 1 train and fold 1 val"):
        check_subject_disjoint(within_fold)
    uncovered = SplitPlan(SHA, 1, ["a", "b", "c"], ["d"], ["e"], (Fold(["a", "b"], ["d"]),))
    with pytest.raises(SplitError, match=r"fold 1 .*missing \['c'\]"):
        check_subject_disjoint(uncovered)


def test_from_json_refuses_a_leaking_or_malformed_file(plan, tmp_path):
    data = plan.to_dict()
    data["val"].append(data["test"][0])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SubjectLeakError, match=data["test"][0]):
        SplitPlan.from_json(path)
    path.write_text(json.dumps({"train": ["a"]}))
    with pytest.raises(SplitError, match="exactly keys"):
        SplitPlan.from_json(path)


def test_plan_validation():
    with pytest.raises(SplitError, match="64 lowercase hex"):
        SplitPlan("abc", 1, ["a"], ["b"], ["c"])
    with pytest.raises(SplitError, match="'val' has no subjects"):
        SplitPlan(SHA, 1, ["a"], [], ["c"])
    with pytest.raises(SplitError, match="more than once"):
        SplitPlan(SHA, 1, ["a", "a"], ["b"], ["c"])


def test_too_few_subjects_is_a_clear_error():
    few = toy_samples(n_subjects=min_subjects(5) - 1, per_subject=5)
    with pytest.raises(ValueError, match=r"has 12 subjects.*needs at least 13") as err:
        make_splits(few, SHA, folds=2)
    # Two folds need 13 subjects as five do: the error must not advise fewer folds.
    assert "fewer folds does not lower this" in str(err.value)
    many = toy_samples(n_subjects=min_subjects(12) - 1, per_subject=5)
    with pytest.raises(ValueError, match=r"12 folds needs at least 15\. Use fewer folds"):
        make_splits(many, SHA, folds=12)
    enough = make_splits(toy_samples(n_subjects=min_subjects(5), per_subject=5), SHA, folds=5)
    check_subject_disjoint(enough)
    with pytest.raises(ValueError, match="folds must be"):
        make_splits(toy_samples(), SHA, folds=1)


def test_format_split_table_counts(plan, samples):
    text = format_split_table(plan, samples)
    lines = text.splitlines()
    assert "seed 42" in lines[0] and SHA[:12] in lines[0]
    assert lines[1].split() == [
        "partition",
        "subjects",
        "class",
        "0",
        "class",
        "1",
        "class",
        "2",
        "class",
        "3",
        "class",
        "4",
        "total",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert int(rows["test"][0]) == len(plan.test)
    test_labels = Counter(s.label for s in filter_samples(samples, plan.test))
    assert [int(v) for v in rows["test"][1:6]] == [test_labels[c] for c in range(5)]
    assert rows["all"] == [
        "50",
        *(str(sum(s.label == c for s in samples)) for c in range(5)),
        "1000",
    ]
    assert sum(line.startswith("fold") for line in lines) == 5
    stranger = [*samples, Sample("x.png", "zz99", 0, None, "manifest")]
    with pytest.raises(SplitError, match="zz99"):
        format_split_table(plan, stranger)


def test_run_split_cli_writes_the_plan(tmp_path):
    rows = ["path,subject,pspi,label,au4"]
    (tmp_path / "img").mkdir()
    for sample in toy_samples(n_subjects=15, per_subject=4):
        (tmp_path / sample.path).write_bytes(str(sample.path).encode())  # one image each
        rows.append(f"{sample.path},{sample.subject},,{sample.label},0")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "splits.json"
    text = run_split_cli(manifest, out, folds=3, seed=7)
    plan = SplitPlan.from_json(out)
    assert plan.manifest_sha256 == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert plan.seed == 7 and len(plan.folds) == 3
    assert "partition" in text and str(out) in text


def _one_per_subject(n_subjects: int, classes: int = 5) -> list[Sample]:
    """One sample per person (what `reproduce --quick` keeps), classes spread evenly."""
    return [Sample(f"img/s{s:02d}.png", f"s{s:02d}", s % classes, None, "manifest")
            for s in range(n_subjects)]  # fmt: skip


def test_a_split_stratification_cannot_meet_says_why_honestly():
    """Every class has fewer crops than the 10 validation groups: the error says so, and does
    not advise fewer folds (2 folds fail the same way) nor quote sklearn's n_splits."""
    with pytest.raises(SplitError) as err:
        make_splits(_one_per_subject(20, classes=4), SHA, folds=2)  # 5 per class: test is fine
    message = str(err.value)
    assert "validation subjects are one of 10 stratified groups of the 16 non-test" in message
    assert "fewer than 10 crops" in message and "class 4: 0" in message
    assert "fewer folds does not help" in message
    assert "n_splits" not in message and "use fewer folds" not in message.lower()


def test_a_test_split_stratification_cannot_meet_is_a_split_error():
    """(It was sklearn's bare ValueError: a traceback from `painmon split`.)"""
    with pytest.raises(SplitError, match="test subjects are one of 5 stratified groups"):
        make_splits(_one_per_subject(15), SHA, folds=2)
