"""Offline retraining as child processes: train (or cv, then train), evaluate, export, register.

The bedside window must stay live while a model trains, so nothing heavy runs in its
process: :class:`RetrainJob` starts ``python -m painmon train|cv|evaluate|export`` one
after the other, sends each child's output to a log file in the run folder, and reads
progress from the ``history.csv`` the training loop rewrites after every epoch. It is a
plain class with ``update()`` (called from a GUI timer, or a loop) and an injectable clock.

history.csv changes once per epoch, after validation: an epoch of a real dataset on a CPU
takes minutes, so the epoch under way is read from the progress lines the training child
writes to its log every 30 s (``epoch 4/100: 20/44 batch (45 %), …, loss=0.812
acc=0.550``, see :class:`painmon.core.util.progress.LineProgress`), and in cross-validation
the fold under way is the last fold folder that exists, so that a new fold never shows
the numbers of the fold before it.

Which model is deployed (:func:`deployed_run`): with one split, the run trained on its train
subjects (validation subjects for early stopping and the temperature), evaluated once on its
test subjects. With cross-validation the same: after the K folds (the report's numbers), a
final run on the fixed split's train and validation subjects (``final/``) is trained,
evaluated once on the test subjects and deployed. The fold with the best validation score
is never deployed: picking the best of K noisy validation scores selects on noise.

Cancel sends SIGINT to the child's process group (CTRL_BREAK on Windows), so
:func:`painmon.core.research.train.fit` stops cleanly and keeps its best checkpoint; a child still
alive ``kill_after_s`` later is killed.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from painmon.core.research.options import AUGMENT_MODES
from painmon.core.store.registry import ModelRegistry, RegistryError
from painmon.core.util.errors import InvalidInputError

log = logging.getLogger(__name__)

TRAIN_EXTRA_COMMAND = "pip install 'painmon[train]'"
DEVICES = ("auto", "cpu", "cuda", "mps")
TRAIN_LOG = "train.log"
EVALUATE_LOG = "evaluate.log"
EXPORT_LOG = "export.log"
METRICS_JSON = "test_metrics.json"
# The run deployed after cross-validation: trained on the fixed split's train/val subjects.
FINAL_RUN = "final"
REPORT_HTML = "report.html"
PREDICTIONS_CSV = "test_predictions.csv"
_TAIL_BYTES = 64 * 1024
_ERROR_LINE = re.compile(r"(: error: |^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b)")
# A LineProgress line of the epoch bar (painmon.core.research.train.fit).
_EPOCH_LINE = re.compile(
    r"epoch (?P<epoch>\d+)/(?P<epochs>\d+): (?P<done>\d+)/(?P<total>\d+) batch\b"
    r"(?:.*?\bloss=(?P<loss>[-+\d.eE]+|nan|inf))?(?:.*?\bacc=(?P<acc>[-+\d.eE]+|nan))?"
)


def missing_training_extra() -> str | None:
    """None when torch is importable here, else the message the dialog shows instead."""
    if importlib.util.find_spec("torch") is None:
        return (
            "Training needs the training extra (PyTorch), which this installation lacks: "
            f"{TRAIN_EXTRA_COMMAND}"
        )
    return None


@dataclass(frozen=True)
class RetrainSpec:
    """What to train and where; defaults are the founding paper's recipe."""

    dataset: Path  # UNBC root, BioVid root, manifest CSV or crops.npz
    run_dir: Path
    model: str = "dacnn"
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    augment: str = "full"
    seed: int = 42
    device: str = "auto"
    splits: Path | None = None  # splits.json from `painmon split`; None makes a new split
    folds: int = 0  # 0: one train/val/test split; >= 2: K-fold CV (a splits.json's folds win)
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", Path(self.dataset))
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        if self.splits is not None:
            object.__setattr__(self, "splits", Path(self.splits))
        if not self.dataset.exists():
            raise InvalidInputError(f"dataset {self.dataset} not found: choose a folder or file")
        if self.dataset.suffix.lower() == ".npz" and self.splits is None:
            raise InvalidInputError(
                f"{self.dataset.name} holds face crops only: also choose the splits.json "
                "(`painmon split`) of the dataset the crops came from"
            )
        if self.splits is not None and not self.splits.is_file():
            raise InvalidInputError(f"split plan {self.splits} not found")
        if self.epochs < 1:
            raise InvalidInputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise InvalidInputError(f"batch size must be >= 2 (BatchNorm), got {self.batch_size}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise InvalidInputError("learning rate must be > 0 and weight decay >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InvalidInputError(
                f"label smoothing must lie in [0, 1), got {self.label_smoothing}"
            )
        if self.augment not in AUGMENT_MODES:
            raise InvalidInputError(f"augment must be one of {', '.join(AUGMENT_MODES)}")
        if self.device not in DEVICES:
            raise InvalidInputError(f"device must be one of {', '.join(DEVICES)}")
        if self.folds == 1 or self.folds < 0:
            raise InvalidInputError(
                f"cross-validation needs >= 2 folds (0 = no CV), got {self.folds}"
            )
        if self.cross_validation and self.splits is not None:
            # `painmon cv` uses the folds of the split plan it is given.
            try:
                planned = len(json.loads(self.splits.read_text()).get("folds") or [])
            except (OSError, ValueError, AttributeError) as exc:
                raise InvalidInputError(f"split plan {self.splits} is unreadable ({exc})") from exc
            if planned < 2:
                raise InvalidInputError(
                    f"split plan {self.splits} has no folds for cross-validation"
                )
            object.__setattr__(self, "folds", planned)

    @property
    def cross_validation(self) -> bool:
        return self.folds >= 2

    @property
    def epochs_total(self) -> int:
        return self.epochs * max(1, self.folds)

    def train_args(self) -> list[str]:
        """Arguments after ``painmon`` for the training child."""
        args = [
            "cv" if self.cross_validation else "train",
            "--manifest", str(self.dataset),
            "--model", self.model,
            "--epochs", str(self.epochs),
            "--batch-size", str(self.batch_size),
            "--lr", repr(self.lr),
            "--weight-decay", repr(self.weight_decay),
            "--label-smoothing", repr(self.label_smoothing),
            "--augment", self.augment,
            "--seed", str(self.seed),
            "--device", self.device,
            "--out", str(self.run_dir),
        ]  # fmt: skip
        if self.splits is not None:
            args += ["--splits", str(self.splits)]
        if self.cache_dir is not None:
            args += ["--cache-dir", str(self.cache_dir)]
        if self.cross_validation:
            args += ["--folds", str(self.folds), "--seeds", str(self.seed)]
        return args

    def split_plan(self) -> Path:
        """The split plan the training child used: the one given, or the one ``painmon cv``
        made and wrote into its folder (each fold run holds only its fold's partition; a
        cross-validation of an older painmon copied the whole plan into fold1)."""
        if self.splits is not None:
            return self.splits
        whole = self.run_dir / "splits.json"
        older = self.run_dir / f"seed{self.seed}" / "fold1" / "splits.json"
        return older if not whole.is_file() and older.is_file() else whole

    def final_train_args(self) -> list[str]:
        """Arguments for the run deployed after cross-validation: ``painmon train`` on the
        fixed split of the CV's own plan (train subjects; validation subjects for early
        stopping and the temperature), into ``run_dir/final``."""
        args = self.train_args()
        args[0] = "train"
        args[args.index("--out") + 1] = str(self.run_dir / FINAL_RUN)
        if "--folds" in args:
            del args[args.index("--folds") : args.index("--folds") + 4]  # --folds K --seeds S
        if "--splits" in args:
            args[args.index("--splits") + 1] = str(self.split_plan())
        else:
            args += ["--splits", str(self.split_plan())]
        return args

    def evaluate_args(self, run: Path) -> list[str]:
        """Arguments for scoring ``run`` on its own test subjects, with the HTML report."""
        args = [
            "evaluate", "--run", str(run), "--manifest", str(self.dataset), "--split", "test",
            "--json", str(run / METRICS_JSON), "--predictions", str(run / PREDICTIONS_CSV),
            "--report", str(run / REPORT_HTML),
        ]  # fmt: skip
        if self.cache_dir is not None:
            args += ["--cache-dir", str(self.cache_dir)]
        return args

    def history_paths(self) -> list[Path]:
        """The history.csv of the run, or of each fold run in order (cv)."""
        if not self.cross_validation:
            return [self.run_dir / "history.csv"]
        base = self.run_dir / f"seed{self.seed}"
        return [base / f"fold{k}" / "history.csv" for k in range(1, self.folds + 1)]


@dataclass(frozen=True)
class EpochRow:
    """One line of a run's history.csv."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    seconds: float

    def __post_init__(self) -> None:
        if self.epoch < 1:
            raise ValueError(f"epoch numbers start at 1, got {self.epoch}")


def read_history(path: str | Path) -> list[EpochRow]:
    """Rows of ``history.csv``; [] when it is not written yet (fit() replaces it atomically)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for record in csv.DictReader(text.splitlines()):
        try:
            rows.append(
                EpochRow(
                    epoch=int(record["epoch"]),
                    train_loss=float(record["train_loss"]),
                    train_accuracy=float(record["train_accuracy"]),
                    val_loss=float(record["val_loss"]),
                    val_accuracy=float(record["val_accuracy"]),
                    val_macro_f1=float(record["val_macro_f1"]),
                    seconds=float(record["seconds"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"{path} is not a painmon history.csv ({exc})") from exc
    return rows


def eta_seconds(rows: Sequence[EpochRow], epochs_left: int) -> float | None:
    """Time left at the mean epoch time (the first epoch, with warm-up, left out when others exist).

    An upper bound: early stopping may end the run sooner.
    """
    if not rows:
        return None
    if epochs_left <= 0:
        return 0.0
    timed = rows[1:] if len(rows) > 1 else rows
    return epochs_left * sum(r.seconds for r in timed) / len(timed)


@dataclass(frozen=True)
class EpochProgress:
    """The epoch under way, from the training child's latest progress line: batches done
    and the running training loss/accuracy over them (None before the first report)."""

    epoch: int
    epochs: int
    batches_done: int
    batches_total: int
    train_loss: float | None = None
    train_accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.epoch < 1 or self.epochs < 1 or self.batches_total < 1:
            raise ValueError("epoch, epochs and batches_total start at 1")
        if not 0 <= self.batches_done <= self.batches_total:
            raise ValueError(f"batches_done {self.batches_done} outside 0..{self.batches_total}")

    @property
    def fraction(self) -> float:
        return self.batches_done / self.batches_total


def _log_tail_lines(log_path: Path) -> list[str]:
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    # tqdm redraws with carriage returns: each redraw is its own "line".
    return [line.strip() for line in re.split(r"[\r\n]+", tail) if line.strip()]


def read_epoch_progress(log_path: str | Path) -> EpochProgress | None:
    """The latest epoch progress line of a training log, or None when it has none yet."""
    for line in reversed(_log_tail_lines(Path(log_path))):
        match = _EPOCH_LINE.search(line)
        if match is None:
            continue
        try:
            return EpochProgress(
                epoch=int(match["epoch"]),
                epochs=int(match["epochs"]),
                batches_done=int(match["done"]),
                batches_total=int(match["total"]),
                train_loss=float(match["loss"]) if match["loss"] else None,
                train_accuracy=float(match["acc"]) if match["acc"] else None,
            )
        except ValueError:
            continue
    return None


def last_error_line(log_path: str | Path) -> str:
    """The line of a child's log that best says why it failed ("" when the log is empty)."""
    lines = _log_tail_lines(Path(log_path))
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line
    return lines[-1] if lines else ""


class ChildProcess:
    """One ``python -m painmon ...`` child; its stdout and stderr go to ``log_path``."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: str | Path,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        kill_after_s: float = 10.0,
    ) -> None:
        self.command = [python, "-m", "painmon", *args]
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        # Unbuffered, so the log shows the child's last words even when it is killed.
        self.env["PYTHONUNBUFFERED"] = "1"
        self.clock = clock or time.monotonic
        self.kill_after_s = kill_after_s
        self.process: subprocess.Popen[bytes] | None = None
        self._kill_at_s: float | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            # Its own process group: a Ctrl-C in the app's terminal does not reach it, and
            # cancel reaches cv's worker processes too.
            kwargs["start_new_session"] = True
        with self.log_path.open("ab") as log_file:
            log_file.write(("$ " + " ".join(self.command) + "\n").encode())
            log_file.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                **kwargs,
            )
        log.info("started pid %d: %s", self.process.pid, " ".join(self.command))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def poll(self) -> int | None:
        """The exit code, or None while it runs; kills it once the interrupt grace is over."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None and self._kill_at_s is not None and self.clock() >= self._kill_at_s:
            log.warning("pid %d ignored the interrupt; killing it", self.process.pid)
            self.kill()
            code = self.process.poll()
        return code

    def interrupt(self) -> None:
        """Ask the child to stop (SIGINT / CTRL_BREAK); :meth:`poll` kills it after the grace."""
        if self.process is None or self.process.poll() is not None:
            return
        if self._kill_at_s is None:
            self._kill_at_s = self.clock() + self.kill_after_s
        try:
            if os.name == "nt":
                self.process.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                os.killpg(self.process.pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError) as exc:
            log.debug("interrupt of pid %d: %s", self.process.pid, exc)

    def kill(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            if os.name == "nt":
                self.process.kill()
            else:
                os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError) as exc:
            log.debug("kill of pid %d: %s", self.process.pid, exc)
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float) -> None:
        """Interrupt, wait up to ``timeout_s``, then kill: on return the child is gone."""
        if self.process is None:
            return
        self.interrupt()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def last_error_line(self) -> str:
        return last_error_line(self.log_path)


# "final": after cross-validation, training the run that is deployed (see deployed_run).
STAGES = ("train", "final", "evaluate", "export", "done")
STATES = ("idle", "running", "cancelling", "cancelled", "failed", "succeeded")


@dataclass(frozen=True)
class JobStatus:
    """What the dialog shows after each :meth:`RetrainJob.update`."""

    state: str
    stage: str
    epochs_done: int = 0
    epochs_total: int = 0
    history: tuple[EpochRow, ...] = ()  # the run being trained (the current fold in cv)
    #: the epoch under way (None between epochs, before the first report and after training)
    live: EpochProgress | None = None
    #: the fold under way, 1-based (cross-validation only)
    fold: int | None = None
    eta_s: float | None = None
    message: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    cv_summary: Mapping[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    model_id: str | None = None
    onnx_path: Path | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown job state {self.state!r}")
        if self.stage not in STAGES:
            raise ValueError(f"unknown job stage {self.stage!r}")
        if not 0 <= self.epochs_done <= max(self.epochs_total, 0):
            raise ValueError(f"epochs_done {self.epochs_done} outside 0..{self.epochs_total}")

    @property
    def finished(self) -> bool:
        return self.state in ("cancelled", "failed", "succeeded")

    @property
    def fraction(self) -> float:
        return self.epochs_done / self.epochs_total if self.epochs_total else 0.0


class RetrainJob:
    """Train (cv: folds, then the final run) → evaluate the deployed run once on the test
    subjects → export with parity check → register (inactive).

    Activation is left to the caller (:meth:`ModelRegistry.activate`), once a person saw
    the metrics.
    """

    def __init__(
        self,
        spec: RetrainSpec,
        registry: ModelRegistry,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        kill_after_s: float = 10.0,
    ) -> None:
        self.spec = spec
        self.registry = registry
        self.python = python
        self.env = env
        self.clock = clock
        self.kill_after_s = kill_after_s
        self.child: ChildProcess | None = None
        self._status = JobStatus("idle", "train", epochs_total=spec.epochs_total)
        self._deploy_run: Path | None = None
        self._model_id: str | None = None

    @property
    def status(self) -> JobStatus:
        return self._status

    def start(self) -> JobStatus:
        if self._status.state != "idle":
            raise RuntimeError("a retraining job runs once; make a new one")
        self.spec.run_dir.mkdir(parents=True, exist_ok=True)
        self._launch(self.spec.train_args(), self.spec.run_dir / TRAIN_LOG)
        self._status = JobStatus(
            "running",
            "train",
            epochs_total=self.spec.epochs_total,
            message=f"training {self.spec.model} in {self.spec.run_dir}",
            log_path=self.spec.run_dir / TRAIN_LOG,
        )
        return self._status

    def cancel(self) -> JobStatus:
        """Interrupt the running child; :meth:`update` reports ``cancelled`` once it is gone."""
        if self._status.state == "running" and self.child is not None:
            self.child.interrupt()
            self._status = self._replace(state="cancelling", message="stopping…")
        return self._status

    def close(self, timeout_s: float = 5.0) -> None:
        """Make sure no child outlives the caller (interrupt, wait, kill)."""
        if self.child is not None:
            self.child.stop(timeout_s)
        if not self._status.finished and self._status.state != "idle":
            self._status = self._replace(state="cancelled", message="closed while running")

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def update(self) -> JobStatus:
        """Poll the child and the history; start the next stage when one ends."""
        status = self._status
        if status.state not in ("running", "cancelling") or self.child is None:
            return status
        code = self.child.poll()
        if status.stage in ("train", "final"):
            status = self._with_progress(status)
        if code is None:
            self._status = status
            return status
        if status.state == "cancelling":
            if status.stage == "export":
                self._remove_empty_entry()
            self._status = dataclasses.replace(status, state="cancelled", message=self._cancelled())
            return self._status
        if code != 0:
            line = self.child.last_error_line() or f"exit code {code}"
            if status.stage == "export":
                self._remove_empty_entry()
            self._status = dataclasses.replace(
                status,
                state="failed",
                message=f"{status.stage} failed: {line} (full log: {self.child.log_path})",
            )
            return self._status
        try:
            self._status = self._next_stage(status)
        except (OSError, ValueError, KeyError, RegistryError) as exc:
            self._status = dataclasses.replace(
                status, state="failed", message=f"{status.stage} failed: {exc}"
            )
        return self._status

    # ------------------------------------------------------------------ internals
    def _launch(self, args: list[str], log_path: Path) -> None:
        self.child = ChildProcess(
            args, log_path, self.python, self.env, self.clock, self.kill_after_s
        )
        self.child.start()

    def _replace(self, **changes: Any) -> JobStatus:
        return dataclasses.replace(self._status, **changes)

    def _cancelled(self) -> str:
        if self._status.stage != "train":
            return f"cancelled during {self._status.stage}; the trained run is in {self._run()}"
        done = self._status.epochs_done
        return (
            f"training cancelled after {done} epoch(s); the best checkpoint so far is kept in "
            f"{self.spec.run_dir}"
        )

    def _run(self) -> Path:
        return self._deploy_run or self.spec.run_dir

    def _with_progress(self, status: JobStatus) -> JobStatus:
        if status.stage == "final":
            return self._with_final_progress(status)
        paths = self.spec.history_paths()
        # The fold under way is the last one whose folder exists (made when it starts): a
        # fold that has not finished its first epoch shows nothing rather than the last one.
        fold_index = max([i for i, path in enumerate(paths) if path.parent.is_dir()], default=0)
        current = read_history(paths[fold_index])
        all_rows = [row for path in paths[:fold_index] for row in read_history(path)]
        all_rows += current
        done = fold_index * self.spec.epochs + min(len(current), self.spec.epochs)
        done = min(done, self.spec.epochs_total)
        eta = eta_seconds(all_rows, self.spec.epochs_total - done)
        live = read_epoch_progress(self.spec.run_dir / TRAIN_LOG)
        if live is not None and live.epoch != len(current) + 1:
            live = None  # a line of an epoch already in the history, or of the fold before
        fold = fold_index + 1 if self.spec.cross_validation else None
        parts = []
        if live is not None:
            running = f"epoch {live.epoch}/{self.spec.epochs} running ({100 * live.fraction:.0f} %"
            if live.train_loss is not None:
                running += f", loss {live.train_loss:.3f}"
            if live.train_accuracy is not None:
                running += f", accuracy {live.train_accuracy:.3f}"
            parts.append(running + ")")
        if current:
            last = current[-1]
            parts.append(
                f"epoch {last.epoch}/{self.spec.epochs}: loss {last.train_loss:.3f}, "
                f"val accuracy {last.val_accuracy:.3f}, val macro-F1 {last.val_macro_f1:.3f}"
            )
        if not parts:
            parts.append(f"epoch 1/{self.spec.epochs} starting")
        message = "; ".join(parts)
        if fold is not None:
            message = f"fold {fold}/{self.spec.folds}, {message}"
        if status.state == "cancelling":
            message = "stopping… (the loop finishes the best checkpoint)"
        return dataclasses.replace(
            status,
            epochs_done=done,
            history=tuple(current),
            eta_s=eta,
            message=message,
            live=live,
            fold=fold,
        )

    def _with_final_progress(self, status: JobStatus) -> JobStatus:
        final = deployed_run(self.spec)
        rows = read_history(final / "history.csv")
        done = min(len(rows), self.spec.epochs)
        live = read_epoch_progress(final / TRAIN_LOG)
        if live is not None and live.epoch != len(rows) + 1:
            live = None
        parts = []
        if live is not None:
            parts.append(
                f"epoch {live.epoch}/{self.spec.epochs} running ({100 * live.fraction:.0f} %)"
            )
        if rows:
            last = rows[-1]
            parts.append(
                f"epoch {last.epoch}/{self.spec.epochs}: loss {last.train_loss:.3f}, "
                f"val accuracy {last.val_accuracy:.3f}, val macro-F1 {last.val_macro_f1:.3f}"
            )
        message = (
            FINAL_MESSAGE + ": " + ("; ".join(parts) or f"epoch 1/{self.spec.epochs} starting")
        )
        if status.state == "cancelling":
            message = "stopping… (the loop finishes the best checkpoint)"
        return dataclasses.replace(
            status,
            epochs_done=done,
            history=tuple(rows),
            eta_s=eta_seconds(rows, self.spec.epochs - done),
            message=message,
            live=live,
            fold=None,
        )

    def _next_stage(self, status: JobStatus) -> JobStatus:
        if status.stage == "train" and self.spec.cross_validation:
            # The folds are the report; the model deployed is trained next, on the fixed split.
            cv_summary = json.loads((self.spec.run_dir / "cv_summary.json").read_text())
            plan = self.spec.split_plan()
            if not plan.is_file():
                raise FileNotFoundError(f"{plan} is missing: the cross-validation's split plan")
            self._deploy_run = deployed_run(self.spec)
            log_path = self._deploy_run / TRAIN_LOG
            self._launch(self.spec.final_train_args(), log_path)
            return dataclasses.replace(
                status,
                stage="final",
                epochs_done=0,
                epochs_total=self.spec.epochs,
                eta_s=None,
                live=None,
                history=(),
                fold=None,
                cv_summary=cv_summary,
                message=f"{FINAL_MESSAGE}: epoch 1/{self.spec.epochs} starting",
                log_path=log_path,
            )
        if status.stage in ("train", "final"):
            self._deploy_run = deployed_run(self.spec)
            log_path = self._deploy_run / EVALUATE_LOG
            self._launch(self.spec.evaluate_args(self._deploy_run), log_path)
            return dataclasses.replace(
                status,
                stage="evaluate",
                epochs_done=status.epochs_total,
                eta_s=0.0,
                live=None,
                message=f"evaluating {self._deploy_run.name} once on its test subjects…",
                log_path=log_path,
            )
        run = self._run()
        if status.stage == "evaluate":
            metrics = json.loads((run / METRICS_JSON).read_text())
            self._model_id = self.registry.new_id(self.spec.model)
            onnx_path = self.registry.model_path(self._model_id)
            log_path = run / EXPORT_LOG
            self._launch(["export", "--run", str(run), "--out", str(onnx_path)], log_path)
            return dataclasses.replace(
                status,
                stage="export",
                metrics=metrics,
                report_path=run / REPORT_HTML,
                onnx_path=onnx_path,
                message="exporting to ONNX and checking parity with torch…",
                log_path=log_path,
            )
        # export succeeded: the parity check passed, the model and its sidecar exist.
        if self._model_id is None or status.onnx_path is None:
            raise RuntimeError("export finished without a model id: a bug in RetrainJob")
        model_id = self.registry.register(
            status.onnx_path, run, _headline(status.metrics), model_id=self._model_id
        )
        return dataclasses.replace(
            status,
            state="succeeded",
            stage="done",
            model_id=model_id,
            message=f"exported and registered as {model_id}; not active until you activate it",
        )

    def _remove_empty_entry(self) -> None:
        """A failed export leaves no file (export_onnx promises it) but may leave its folder."""
        if self._model_id is None:
            return
        folder = self.registry.entry_dir(self._model_id)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


FINAL_MESSAGE = "training the model to deploy on the fixed split (cross-validation is the report)"


def deployed_run(spec: RetrainSpec) -> Path:
    """The run a retraining job evaluates once on the test subjects, exports and registers.

    One split: the run itself. Cross-validation: the final run on the fixed split's train
    and validation subjects (``run_dir/final``), never a fold picked by its validation score.
    """
    return spec.run_dir / FINAL_RUN if spec.cross_validation else spec.run_dir


def best_fold_run(cv_summary: Mapping[str, Any]) -> Path:
    """The fold run with the highest validation macro-F1: for reading the report only. It is
    not deployed (:func:`deployed_run`): the best of K noisy scores is selected on noise."""
    folds = [f for f in cv_summary.get("folds", []) if f.get("val_macro_f1") is not None]
    if not folds:
        raise ValueError("the cross-validation summary lists no finished fold")
    best = max(folds, key=lambda f: (f["val_macro_f1"], -f["fold"]))
    return Path(best["run"])


HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "quadratic_kappa", "ece", "n")


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in HEADLINE_METRICS if k in metrics}


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """The headline metrics as one line of text ("n/a" where undefined)."""
    names = {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced accuracy",
        "macro_f1": "macro-F1",
        "quadratic_kappa": "quadratic kappa",
        "ece": "ECE",
    }
    parts = []
    for key, name in names.items():
        value = metrics.get(key)
        ok = isinstance(value, int | float) and math.isfinite(value)
        parts.append(f"{name} {value:.3f}" if ok else f"{name} n/a")
    if "n" in metrics:
        parts.append(f"n = {metrics['n']}")
    return ", ".join(parts)
