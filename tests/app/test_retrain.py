"""Offline retraining: the Qt-free job runner and the dialog (pytest-qt, offscreen).

The dialog tests train for real in child processes (`python -m painmon ...`) on a tiny
synthetic dataset, so they take tens of seconds on a slow shared machine.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("pytestqt")

from painmon.app import retrain as retrain_app
from painmon.app.retrain import RetrainDialog, rollback_model
from painmon.core.research import retrain_job
from painmon.core.research.retrain_job import (
    TRAIN_EXTRA_COMMAND,
    ChildProcess,
    EpochRow,
    RetrainJob,
    RetrainSpec,
    best_fold_run,
    eta_seconds,
    format_metrics,
    last_error_line,
    read_history,
)
from painmon.core.store.registry import ModelRegistry
from painmon.core.synth.dataset import write_dataset
from painmon.core.tools.cli import main as cli_main

TRAIN_TIMEOUT_MS = 240_000
POSIX = os.name == "posix"


@pytest.fixture(scope="module")
def crops(tmp_path_factory, face_model_path):
    """crops.npz, a 5-fold splits.json and splits2.json of 14 subjects x 5 synthetic images."""
    root = tmp_path_factory.mktemp("retrain-data")
    manifest = write_dataset(root / "ds", 14, 5, seed=3, image_size_px=160)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAINMON_FACE_MODEL", str(face_model_path))
        assert cli_main(
            ["crops", "--manifest", str(manifest), "--out", str(root / "crops.npz"),
             "--cache-dir", str(root / "cache")]
        ) == 0  # fmt: skip
        for folds in (5, 2):
            out = root / f"splits{folds}.json"
            args = ["split", "--manifest", str(manifest), "--out", str(out), "--folds", str(folds)]
            assert cli_main(args) == 0
    return root / "crops.npz", root / "splits5.json"


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- the Qt-free runner ------------------------------------------------------------------------


def test_spec_validates_and_builds_commands(tmp_path):
    npz = tmp_path / "crops.npz"
    npz.write_bytes(b"")
    splits = tmp_path / "splits.json"
    splits.write_text("{}")
    with pytest.raises(ValueError, match=r"also choose the splits\.json"):
        RetrainSpec(npz, tmp_path / "run")
    with pytest.raises(ValueError, match="not found"):
        RetrainSpec(tmp_path / "missing", tmp_path / "run")
    with pytest.raises(ValueError, match=">= 2 folds"):
        RetrainSpec(npz, tmp_path / "run", splits=splits, folds=1)
    with pytest.raises(ValueError, match="batch size"):
        RetrainSpec(npz, tmp_path / "run", splits=splits, batch_size=1)

    spec = RetrainSpec(npz, tmp_path / "run", splits=splits)
    args = spec.train_args()
    assert args[0] == "train"
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs == {
        "--manifest": str(npz), "--model": "dacnn", "--epochs": "100", "--batch-size": "32",
        "--lr": "0.0001", "--weight-decay": "0.0001", "--label-smoothing": "0.1",
        "--augment": "full", "--seed": "42", "--device": "auto", "--out": str(tmp_path / "run"),
        "--splits": str(splits),
    }  # fmt: skip
    assert spec.epochs_total == 100
    assert spec.evaluate_args(tmp_path / "run")[:8] == [
        "evaluate", "--run", str(tmp_path / "run"), "--manifest", str(npz), "--split", "test",
        "--json",
    ]  # fmt: skip

    plan = tmp_path / "plan.json"
    plan.write_text('{"folds": [["a"], ["b"], ["c"]]}')
    cv = RetrainSpec(npz, tmp_path / "cv", splits=plan, folds=5, epochs=4, seed=7)
    assert cv.train_args()[0] == "cv" and cv.train_args()[-4:] == ["--folds", "3", "--seeds", "7"]
    assert cv.epochs_total == 12
    assert cv.history_paths()[2] == tmp_path / "cv" / "seed7" / "fold3" / "history.csv"


def test_history_eta_and_error_line(tmp_path):
    history = tmp_path / "history.csv"
    assert read_history(history) == []
    history.write_text(
        "epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,val_macro_f1,val_ece,seconds\n"
        "1,2e-05,1.7,0.2,1.6,0.2,0.07,0.003,9.0\n"
        "2,4e-05,1.6,0.3,1.5,0.4,0.30,0.010,2.0\n"
        "3,6e-05,1.5,0.4,1.4,0.5,0.40,0.020,4.0\n"
    )
    rows = read_history(history)
    assert [r.epoch for r in rows] == [1, 2, 3] and rows[1].val_accuracy == 0.4
    # The first epoch (warm-up, start-up) is left out of the mean: (2 + 4) / 2 = 3 s.
    assert eta_seconds(rows, 10) == pytest.approx(30.0)
    assert eta_seconds(rows[:1], 2) == pytest.approx(18.0)
    assert eta_seconds([], 5) is None and eta_seconds(rows, 0) == 0.0
    with pytest.raises(ValueError, match="epoch numbers start at 1"):
        EpochRow(0, 1, 0, 1, 0, 0, 1)

    log = tmp_path / "train.log"
    log.write_text(
        "$ python -m painmon train\nepoch 1/3:  20%|##  | 1/5\repoch 1/3: 100%|#####| 5/5\n"
        "painmon train: error: dataset x.csv has no rows\n"
    )
    assert last_error_line(log) == "painmon train: error: dataset x.csv has no rows"
    log.write_text("Traceback (most recent call last):\n  File 'x'\nRuntimeError: boom\nbye\n")
    assert last_error_line(log) == "RuntimeError: boom"
    assert last_error_line(tmp_path / "absent.log") == ""


def test_best_fold_and_metrics_text(tmp_path):
    summary = {
        "folds": [
            {"fold": 1, "run": str(tmp_path / "f1"), "val_macro_f1": 0.4},
            {"fold": 2, "run": str(tmp_path / "f2"), "val_macro_f1": 0.6},
        ]
    }
    assert best_fold_run(summary) == tmp_path / "f2"
    with pytest.raises(ValueError, match="no finished fold"):
        best_fold_run({"folds": []})
    text = format_metrics({"accuracy": 0.5, "macro_f1": 0.25, "quadratic_kappa": None, "n": 15})
    assert "accuracy 0.500" in text and "macro-F1 0.250" in text
    assert "quadratic kappa n/a" in text and "n = 15" in text


@pytest.mark.skipif(not POSIX, reason="uses a shell script as the child")
def test_child_that_ignores_the_interrupt_is_killed(tmp_path):
    fake_python = tmp_path / "fake-python"
    fake_python.write_text("#!/bin/sh\ntrap '' INT\necho started\nsleep 60\n")
    fake_python.chmod(0o755)
    now = [0.0]
    child = ChildProcess([], tmp_path / "child.log", python=str(fake_python),
                         clock=lambda: now[0], kill_after_s=5.0)  # fmt: skip
    child.start()
    try:
        deadline_s = time.monotonic() + 30
        # Interrupt only once the trap is set, or SIGINT ends it the normal way.
        while "started" not in child.log_path.read_text() and time.monotonic() < deadline_s:
            time.sleep(0.05)
        child.interrupt()
        assert child.poll() is None  # ignored SIGINT, grace not over
        now[0] = 5.0
        code = child.poll()
        assert code == -signal.SIGKILL
        assert _pid_gone(child.pid)
    finally:
        child.kill()
    assert "fake-python -m painmon" in (tmp_path / "child.log").read_text()


@pytest.mark.slow
def test_failed_child_reports_its_last_error_line(qtbot, make_dialog, tmp_path):
    bad = tmp_path / "manifest.csv"
    bad.write_text("path,subject,pspi\n")
    dialog, registry = make_dialog()
    dialog.dataset_edit.setText(str(bad))
    dialog.model_combo.setCurrentText("micropainnet")
    dialog.device_combo.setCurrentText("cpu")
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.status.finished, timeout=TRAIN_TIMEOUT_MS)
    status = dialog.status
    assert status.state == "failed" and status.stage == "train"
    assert "painmon train: error:" in status.message and "train.log" in status.message
    assert "painmon train: error:" in dialog.stage_label.text()
    assert not dialog.activate_button.isEnabled() and not dialog.timers_active()
    assert not dialog.job.alive and registry.list_entries() == []


# --- the dialog ------------------------------------------------------------------------------


def test_dialog_says_how_to_install_training(qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(retrain_job, "missing_training_extra", lambda: f"x: {TRAIN_EXTRA_COMMAND}")
    dialog = RetrainDialog(registry=ModelRegistry(tmp_path / "r"), runs_dir=tmp_path / "runs")
    qtbot.addWidget(dialog)
    assert TRAIN_EXTRA_COMMAND == "pip install 'painmon[train]'"
    assert dialog.notice.isVisibleTo(dialog)
    assert "pip install 'painmon[train]'" in dialog.notice.text()
    assert not dialog.start_button.isEnabled() and not dialog.start()
    assert dialog.model_combo.count() == 0  # painmon.models (torch) was not asked


def test_real_missing_training_extra(monkeypatch):
    assert retrain_job.missing_training_extra() is None  # torch is installed here
    monkeypatch.setattr(retrain_job.importlib.util, "find_spec", lambda name: None)
    assert "pip install 'painmon[train]'" in retrain_job.missing_training_extra()


def test_defaults_are_the_papers_recipe(qtbot, tmp_path):
    dialog = RetrainDialog(registry=ModelRegistry(tmp_path / "r"), runs_dir=tmp_path / "runs")
    qtbot.addWidget(dialog)
    assert dialog.model_combo.currentText() == "dacnn"
    assert "micropainnet" in [
        dialog.model_combo.itemText(i) for i in range(dialog.model_combo.count())
    ]
    assert (dialog.epochs_spin.value(), dialog.batch_spin.value()) == (100, 32)
    assert dialog.lr_spin.value() == pytest.approx(1e-4)
    assert dialog.wd_spin.value() == pytest.approx(1e-4)
    assert dialog.smoothing_spin.value() == pytest.approx(0.1)
    assert dialog.augment_combo.currentText() == "full" and dialog.seed_spin.value() == 42
    assert dialog.device_combo.currentText() == "auto"
    assert not dialog.start()  # no dataset chosen
    assert "choose a dataset" in dialog.notice.text()


@pytest.fixture
def make_dialog(qtbot, tmp_path):
    """RetrainDialog factory; teardown stops any child before pytest-qt closes the dialog."""
    made: list[RetrainDialog] = []

    def make() -> tuple[RetrainDialog, ModelRegistry]:
        registry = ModelRegistry(tmp_path / "registry")
        dialog = RetrainDialog(registry=registry, runs_dir=tmp_path / "runs", poll_ms=100)
        qtbot.addWidget(dialog)
        made.append(dialog)
        return dialog, registry

    yield make
    for dialog in made:
        dialog.shutdown(timeout_s=30)


def _tiny_dialog(make_dialog, crops, epochs: int) -> tuple[RetrainDialog, ModelRegistry]:
    npz, splits = crops
    dialog, registry = make_dialog()
    dialog.dataset_edit.setText(str(npz))
    dialog.split_combo.setCurrentIndex(dialog.split_combo.findData(retrain_app.SPLIT_FILE))
    dialog.splits_edit.setText(str(splits))
    dialog.model_combo.setCurrentText("micropainnet")
    dialog.epochs_spin.setValue(epochs)
    dialog.batch_spin.setValue(8)
    dialog.device_combo.setCurrentText("cpu")
    return dialog, registry


@pytest.mark.slow
def test_dialog_trains_evaluates_exports_and_activates(qtbot, make_dialog, crops):
    dialog, registry = _tiny_dialog(make_dialog, crops, epochs=1)
    assert dialog.start()
    pid = dialog.job.child.pid
    assert not dialog.start()  # one job at a time
    assert not dialog.activate_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.status.finished, timeout=TRAIN_TIMEOUT_MS)
    status = dialog.status
    assert status.state == "succeeded", status.message
    assert dialog.progress.value() == dialog.progress.maximum() == 1
    assert [r.epoch for r in status.history] == [1]
    run = dialog.job.spec.run_dir
    for name in ("train.log", "evaluate.log", "export.log", "history.csv", "report.html"):
        assert (run / name).is_file(), name
    assert status.metrics["n"] == 15  # 3 test subjects x 5 images
    assert (
        "macro-F1" in dialog.metrics_label.text() and "Test subjects" in dialog.metrics_label.text()
    )
    assert dialog.report_button.isEnabled()
    assert status.onnx_path == registry.model_path(status.model_id)
    assert status.onnx_path.with_name("model.onnx.sha256").is_file()
    assert registry.active() is None  # exported and registered, not yet active
    assert dialog.activate_button.isEnabled()

    with qtbot.waitSignal(dialog.model_activated, timeout=30_000) as activated:
        entry = dialog.activate()
    assert activated.args == [str(status.onnx_path)]
    assert entry is not None and registry.active().model_id == status.model_id
    assert [r["action"] for r in registry.log_records()] == ["register", "activate"]
    assert "Active model" in dialog.result_label.text()
    assert rollback_model(None, registry) is None  # nothing older to roll back to

    assert not dialog.timers_active() and not dialog.job.alive and _pid_gone(pid)
    dialog.close()


@pytest.mark.slow
def test_dialog_cancel_stops_the_child(qtbot, make_dialog, crops):
    dialog, registry = _tiny_dialog(make_dialog, crops, epochs=300)
    assert dialog.start()
    pid = dialog.job.child.pid
    qtbot.waitUntil(lambda: dialog.status.epochs_done >= 1, timeout=TRAIN_TIMEOUT_MS)
    assert dialog.status.state == "running"
    assert dialog.cancel_button.isEnabled()
    assert "ETA" in dialog.eta_label.text()
    dialog.cancel_button.click()
    assert dialog.status.state == "cancelling"
    qtbot.waitUntil(lambda: dialog.status.finished, timeout=60_000)
    status = dialog.status
    assert status.state == "cancelled" and status.stage == "train"
    assert "best checkpoint so far is kept" in status.message
    assert 1 <= status.epochs_done < 300
    assert (dialog.job.spec.run_dir / "best.safetensors").is_file()
    assert not dialog.activate_button.isEnabled() and registry.list_entries() == []
    assert not dialog.timers_active() and not dialog.job.alive and _pid_gone(pid)
    assert dialog.start_button.isEnabled()


def test_shutdown_while_training_leaves_no_process(make_dialog, crops):
    dialog, _registry = _tiny_dialog(make_dialog, crops, epochs=300)
    assert dialog.start()
    pid = dialog.job.child.pid
    dialog.shutdown(timeout_s=30)  # what closing the dialog (or the main window) does
    assert _pid_gone(pid) and not dialog.job.alive and not dialog.timers_active()
    assert dialog.status.state == "cancelled"


@pytest.mark.slow
def test_dialog_cross_validation_deploys_the_final_run(qtbot, make_dialog, crops):
    _npz, splits5 = crops
    dialog, registry = _tiny_dialog(make_dialog, crops, epochs=1)
    dialog.split_combo.setCurrentIndex(dialog.split_combo.findData(retrain_app.SPLIT_CV))
    dialog.folds_spin.setValue(7)  # the split plan's two folds win
    dialog.splits_edit.setText(str(splits5.with_name("splits2.json")))
    assert dialog.start()
    assert dialog.job.spec.folds == 2 and dialog.progress.maximum() == 2
    assert dialog.job.spec.train_args()[0] == "cv"
    qtbot.waitUntil(lambda: dialog.status.finished, timeout=TRAIN_TIMEOUT_MS)
    status = dialog.status
    assert status.state == "succeeded", status.message
    # The folds give the estimate; the model offered is trained on the fixed split, never
    # the fold that happened to score best on validation (selection on noise).
    final = dialog.job.spec.run_dir / "final"
    assert status.report_path == final / "report.html"
    assert "Cross-validation macro-F1" in dialog.metrics_label.text()
    assert registry.entry(status.model_id).run_dir == str(final)
    assert dialog.activate_button.isEnabled()


# --- live progress: never stale numbers -------------------------------------------------------

_HISTORY_HEADER = (
    "epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,val_macro_f1,val_ece,seconds\n"
)


def _history_rows(*rows: tuple[int, float, float]) -> str:
    """history.csv text of (epoch, train_loss, val_accuracy) rows."""
    return _HISTORY_HEADER + "".join(
        f"{epoch},1e-4,{loss},0.5,{loss},{acc},0.3,0.01,2.0\n" for epoch, loss, acc in rows
    )


def _epoch_line(epoch: int, epochs: int, done: int, total: int, loss: float, acc: float) -> str:
    """A progress line exactly as the training child writes it into its log."""
    import io

    from painmon.core.util.progress import LineProgress

    clock = iter(range(1000))
    stream = io.StringIO()
    bar = LineProgress(
        total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
        stream=stream, interval_s=1.0, clock=lambda: float(next(clock)),
    )  # fmt: skip
    bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")
    bar.update(done)
    return stream.getvalue()


def _points(curve) -> int:
    xs = curve.getData()[0]
    return 0 if xs is None else len(xs)


@pytest.fixture
def sleeping_python(tmp_path):
    """A stand-in for the training child: it ignores its arguments and sleeps."""
    if not POSIX:
        pytest.skip("a shell script stands in for python")
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\nexec sleep 120\n")
    script.chmod(0o755)
    return str(script)


def test_read_epoch_progress_reads_the_training_childs_lines(tmp_path):
    log = tmp_path / "train.log"
    assert retrain_job.read_epoch_progress(log) is None
    log.write_text("$ python -m painmon train\n" + _epoch_line(4, 100, 20, 44, 0.8123, 0.55))
    live = retrain_job.read_epoch_progress(log)
    assert (live.epoch, live.epochs, live.batches_done, live.batches_total) == (4, 100, 20, 44)
    assert (live.train_loss, live.train_accuracy) == (0.812, 0.55)
    assert live.fraction == pytest.approx(20 / 44)
    with log.open("a") as handle:
        handle.write("unrelated output\n")
    assert retrain_job.read_epoch_progress(log).epoch == 4  # the latest progress line


def test_job_shows_the_epoch_under_way_not_the_last_finished_one(tmp_path, sleeping_python):
    npz, splits = tmp_path / "crops.npz", tmp_path / "splits.json"
    npz.write_bytes(b"")
    splits.write_text("{}")
    spec = RetrainSpec(npz, tmp_path / "run", splits=splits, epochs=3)
    job = RetrainJob(spec, ModelRegistry(tmp_path / "r"), python=sleeping_python)
    try:
        status = job.start()
        assert status.history == () and status.live is None
        status = job.update()
        assert status.message == "epoch 1/3 starting" and status.fold is None
        train_log = spec.run_dir / "train.log"
        with train_log.open("a") as handle:
            handle.write(_epoch_line(1, 3, 5, 10, 1.234, 0.25))
        status = job.update()
        assert status.live is not None and status.live.epoch == 1
        assert status.message == "epoch 1/3 running (50 %, loss 1.234, accuracy 0.250)"
        assert status.epochs_done == 0 and status.history == ()

        (spec.run_dir / "history.csv").write_text(_history_rows((1, 1.1, 0.4)))
        status = job.update()
        # The epoch-1 line is now old news: the finished epoch is shown, nothing running.
        assert status.live is None and status.epochs_done == 1
        assert status.message == "epoch 1/3: loss 1.100, val accuracy 0.400, val macro-F1 0.300"

        with train_log.open("a") as handle:
            handle.write(_epoch_line(2, 3, 2, 10, 0.9, 0.5))
        status = job.update()
        assert status.live.epoch == 2 and status.message.startswith(
            "epoch 2/3 running (20 %, loss 0.900, accuracy 0.500); epoch 1/3: loss 1.100"
        )
    finally:
        job.close(timeout_s=10)


def test_a_new_fold_does_not_show_the_previous_folds_numbers(tmp_path, sleeping_python):
    npz, plan = tmp_path / "crops.npz", tmp_path / "plan.json"
    npz.write_bytes(b"")
    plan.write_text('{"folds": [["a"], ["b"]]}')
    spec = RetrainSpec(npz, tmp_path / "cv", splits=plan, folds=2, epochs=3, seed=7)
    job = RetrainJob(spec, ModelRegistry(tmp_path / "r"), python=sleeping_python)
    try:
        job.start()
        fold1, fold2 = (path.parent for path in spec.history_paths())
        fold1.mkdir(parents=True)
        (fold1 / "history.csv").write_text(_history_rows((1, 1.5, 0.2), (2, 1.4, 0.3)))
        with (spec.run_dir / "train.log").open("a") as handle:
            handle.write(_epoch_line(2, 3, 10, 10, 1.4, 0.3))
        status = job.update()
        assert status.fold == 1 and status.epochs_done == 2 and len(status.history) == 2
        assert status.message.startswith("fold 1/2, epoch 2/3: loss 1.400")

        fold2.mkdir(parents=True)  # fold 1 stopped early after 2 epochs; fold 2 starts
        status = job.update()
        assert status.fold == 2 and status.history == () and status.live is None
        assert status.epochs_done == 3  # all of fold 1's epochs count as done
        assert status.message == "fold 2/2, epoch 1/3 starting"
        assert "1.400" not in status.message
    finally:
        job.close(timeout_s=10)


def test_dialog_clears_the_curves_of_the_previous_job(
    qtbot, tmp_path, monkeypatch, sleeping_python
):
    real_job = retrain_app.RetrainJob
    monkeypatch.setattr(
        retrain_app, "RetrainJob", lambda *a, **kw: real_job(*a, python=sleeping_python, **kw)
    )
    dataset = tmp_path / "manifest.csv"
    dataset.write_text("path,label\n")
    dialog = RetrainDialog(registry=ModelRegistry(tmp_path / "r"), runs_dir=tmp_path / "runs",
                           poll_ms=50)  # fmt: skip
    qtbot.addWidget(dialog)
    dialog.dataset_edit.setText(str(dataset))
    dialog.epochs_spin.setValue(3)
    try:
        assert dialog.start()
        run_dir = dialog.job.spec.run_dir
        (run_dir / "history.csv").write_text(_history_rows((1, 1.5, 0.2), (2, 1.4, 0.3)))
        qtbot.waitUntil(lambda: _points(dialog.train_loss_curve) == 2, timeout=5000)
        assert "epoch 2/3: loss 1.400" in dialog.stage_label.text()
        dialog.cancel()
        qtbot.waitUntil(lambda: dialog.status.finished, timeout=30_000)

        assert dialog.start()  # a second job: nothing of the first may show as its progress
        for curve in (dialog.train_loss_curve, dialog.val_loss_curve, dialog.val_accuracy_curve,
                      dialog.val_f1_curve):  # fmt: skip
            assert _points(curve) == 0
        qtbot.wait(200)  # a few polls
        assert "1.400" not in dialog.stage_label.text()
        assert "epoch 1/3 starting" in dialog.stage_label.text()
    finally:
        dialog.shutdown(timeout_s=10)
