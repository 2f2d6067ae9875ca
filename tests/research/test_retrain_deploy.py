"""Which model the retraining job deploys: never the fold with the best validation score.

The job runs real child processes; a stand-in ``python`` that exits at once plays each
child, and the files a child would write (cv_summary.json, test_metrics.json) are written
by the test, so the stage logic runs without training.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from painmon.core.research.retrain_job import (
    FINAL_RUN,
    RetrainJob,
    RetrainSpec,
    best_fold_run,
    deployed_run,
)
from painmon.core.store.registry import ModelRegistry


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    npz, plan = tmp_path / "crops.npz", tmp_path / "plan.json"
    npz.write_bytes(b"")
    plan.write_text('{"folds": [["a"], ["b"], ["c"]]}')
    return npz, plan


def _summary(run_dir: Path) -> dict:
    """A cv_summary.json whose fold 2 has by far the best validation macro-F1."""
    scores = {1: 0.31, 2: 0.92, 3: 0.35}
    return {
        "folds": [
            {"fold": k, "run": str(run_dir / "seed7" / f"fold{k}"), "val_macro_f1": f1}
            for k, f1 in scores.items()
        ]
    }


def test_deployed_run_is_the_run_itself_or_the_final_run_never_a_fold(tmp_path):
    npz, plan = _inputs(tmp_path)
    single = RetrainSpec(npz, tmp_path / "one", splits=plan)
    assert deployed_run(single) == tmp_path / "one"

    cv = RetrainSpec(npz, tmp_path / "cv", splits=plan, folds=3, seed=7)
    assert deployed_run(cv) == tmp_path / "cv" / FINAL_RUN
    # The best fold by validation score is what the report may mention, not what is deployed.
    assert best_fold_run(_summary(cv.run_dir)) == cv.run_dir / "seed7" / "fold2"
    assert deployed_run(cv) != best_fold_run(_summary(cv.run_dir))


def test_final_run_trains_on_the_cv_plans_fixed_split(tmp_path):
    npz, plan = _inputs(tmp_path)
    cv = RetrainSpec(npz, tmp_path / "cv", splits=plan, folds=3, epochs=4, seed=7)
    args = cv.final_train_args()
    assert args[0] == "train" and "--folds" not in args and "--seeds" not in args
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs["--out"] == str(tmp_path / "cv" / FINAL_RUN)
    assert pairs["--splits"] == str(plan)
    # Same recipe as the folds: only the command, the output and the fold options differ.
    cv_pairs = dict(zip(cv.train_args()[1:-4:2], cv.train_args()[2:-4:2], strict=True))
    assert {k: v for k, v in pairs.items() if k != "--out"} == {
        k: v for k, v in cv_pairs.items() if k != "--out"
    }

    # Without a plan given (a manifest dataset), the plan `painmon cv` made and wrote into its
    # folder is used: the same test subjects as the folds'. (Each fold run holds only its
    # fold's partition.)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n")
    made = RetrainSpec(manifest, tmp_path / "cv2", folds=3, seed=7)
    made_pairs = dict(
        zip(made.final_train_args()[1::2], made.final_train_args()[2::2], strict=True)
    )
    assert made_pairs["--splits"] == str(tmp_path / "cv2" / "splits.json")


@pytest.fixture
def quick_python(tmp_path):
    """A stand-in for each child: it ignores its arguments and exits 0 at once."""
    if os.name != "posix":
        pytest.skip("a shell script stands in for python")
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return str(script)


def _until_stage(job: RetrainJob, stage: str, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = job.update()
        if status.stage == stage or status.finished:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job never reached {stage}: {job.status}")


def test_cv_job_deploys_the_final_run_evaluated_once_on_test(tmp_path, quick_python):
    npz, plan = _inputs(tmp_path)
    spec = RetrainSpec(npz, tmp_path / "cv", splits=plan, folds=3, epochs=4, seed=7)
    job = RetrainJob(spec, ModelRegistry(tmp_path / "registry"), python=quick_python)
    spec.run_dir.mkdir(parents=True)
    (spec.run_dir / "cv_summary.json").write_text(json.dumps(_summary(spec.run_dir)))
    final = spec.run_dir / FINAL_RUN
    try:
        job.start()
        assert job.child.command[3] == "cv"

        status = _until_stage(job, "final")
        assert status.state == "running", status.message
        assert job.child.command[3:] == spec.final_train_args()
        assert status.epochs_total == 4 and status.epochs_done == 0 and status.fold is None
        assert status.cv_summary["folds"][1]["val_macro_f1"] == 0.92  # kept for the report

        status = _until_stage(job, "evaluate")
        assert status.state == "running", status.message
        assert job.child.command[3:6] == ["evaluate", "--run", str(final)]
        (final / "test_metrics.json").write_text(json.dumps({"accuracy": 0.5, "n": 20}))

        status = _until_stage(job, "export")
        assert status.state == "running", status.message
        assert job.child.command[3:6] == ["export", "--run", str(final)]
        assert status.report_path == final / "report.html"
        assert status.metrics["accuracy"] == 0.5
        # No child ever touched the fold picked by its validation score.
        best = str(best_fold_run(status.cv_summary))
        assert all(best not in arg for arg in job.child.command)
    finally:
        job.close(timeout_s=10)


def test_single_split_job_deploys_its_own_run(tmp_path, quick_python):
    npz, plan = _inputs(tmp_path)
    spec = RetrainSpec(npz, tmp_path / "one", splits=plan, epochs=2)
    job = RetrainJob(spec, ModelRegistry(tmp_path / "registry"), python=quick_python)
    try:
        job.start()
        status = _until_stage(job, "evaluate")
        assert status.state == "running", status.message
        assert job.child.command[3:6] == ["evaluate", "--run", str(spec.run_dir)]
    finally:
        job.close(timeout_s=10)


def test_cv_job_without_its_split_plan_fails_with_one_line(tmp_path, quick_python):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n")
    spec = RetrainSpec(manifest, tmp_path / "cv", folds=3, seed=7)
    job = RetrainJob(spec, ModelRegistry(tmp_path / "registry"), python=quick_python)
    spec.run_dir.mkdir(parents=True)
    (spec.run_dir / "cv_summary.json").write_text(json.dumps(_summary(spec.run_dir)))
    try:
        job.start()
        status = _until_stage(job, "final")
        assert status.state == "failed"
        assert "splits.json is missing" in status.message and "\n" not in status.message
    finally:
        job.close(timeout_s=10)
