"""The offline retraining dialog: pick data, model and recipe; watch training; activate.

All work happens in child processes run by :class:`painmon.core.research.retrain_job.RetrainJob`,
so the monitor behind this dialog keeps scoring. A QTimer polls the job (and the run's
history.csv) and repaints; there is no thread here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QCloseEvent, QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from painmon.core.research import retrain_job
from painmon.core.research.retrain_job import (
    AUGMENT_MODES,
    DEVICES,
    EpochRow,
    JobStatus,
    RetrainJob,
    RetrainSpec,
    format_metrics,
)
from painmon.core.store.registry import ModelRegistry, RegistryEntry, RegistryError
from painmon.core.util.paths import user_data_dir
from painmon.core.util.timeline import utc_now

log = logging.getLogger(__name__)

POLL_MS = 500
SPLIT_NEW = "new"
SPLIT_FILE = "file"
SPLIT_CV = "cv"
_CLOSE_WAIT_S = 10.0
# fit() still calibrates and writes the card after an interrupt; a slow machine needs time.
CANCEL_GRACE_S = 30.0
_ERROR_STYLE = "color: #e53935; font-weight: bold;"
_OK_STYLE = "color: #2ecc71; font-weight: bold;"


def default_runs_dir() -> Path:
    """Where the dialog's training runs go: ``user_data_dir()/runs``."""
    return user_data_dir() / "runs"


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "ETA: after the first epoch"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
    return f"ETA: ≤ {text} (early stopping may end sooner)"


class RetrainDialog(QDialog):
    """Retrain a pain model offline; the model is used only after export, parity and a click."""

    #: the path of the model.onnx just activated (the main window loads it)
    model_activated = Signal(str)

    def __init__(
        self,
        parent: QWidget | None = None,
        registry: ModelRegistry | None = None,
        runs_dir: str | Path | None = None,
        poll_ms: int = POLL_MS,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Retrain model (offline)")
        self.registry = registry if registry is not None else ModelRegistry()
        #: set by the main window: why the model cannot be switched now (None: it can)
        self.switch_refusal: Callable[[], str | None] | None = None
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.job: RetrainJob | None = None
        self.status: JobStatus | None = None
        self.unavailable_reason = retrain_job.missing_training_extra()
        self._close_armed = False
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)
        self._build_ui()
        self._on_split_mode()
        if self.unavailable_reason:
            self.notice.setText(self.unavailable_reason)
            self.notice.setStyleSheet(_ERROR_STYLE)
            self.notice.setVisible(True)
            self.start_button.setEnabled(False)

    # ------------------------------------------------------------------ construction
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notice.setVisible(False)
        layout.addWidget(self.notice)

        data_box = QGroupBox("Data")
        data_form = QFormLayout(data_box)
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("UNBC or BioVid folder, manifest.csv or crops.npz")
        data_form.addRow("Dataset", self._with_browse(self.dataset_edit, dataset=True))
        self.split_combo = QComboBox()
        self.split_combo.addItem("New subject-wise train/val/test split", SPLIT_NEW)
        self.split_combo.addItem("Train/val/test from a splits.json", SPLIT_FILE)
        self.split_combo.addItem("Cross-validation (K folds)", SPLIT_CV)
        self.split_combo.currentIndexChanged.connect(self._on_split_mode)
        data_form.addRow("Split", self.split_combo)
        self.splits_edit = QLineEdit()
        self.splits_edit.setPlaceholderText(
            "splits.json from `painmon split` (needed for crops.npz)"
        )
        data_form.addRow("splits.json", self._with_browse(self.splits_edit, dataset=False))
        self.folds_spin = QSpinBox()
        self.folds_spin.setRange(2, 20)
        self.folds_spin.setValue(5)
        data_form.addRow("Folds", self.folds_spin)
        layout.addWidget(data_box)

        recipe_box = QGroupBox("Model and recipe (defaults: the founding paper's)")
        form = QFormLayout(recipe_box)
        self.model_combo = QComboBox()
        if not self.unavailable_reason:
            from painmon.models import list_models  # imports torch: only when it is there

            self.model_combo.addItems(list_models())
            index = self.model_combo.findText("dacnn")
            self.model_combo.setCurrentIndex(max(index, 0))
        form.addRow("Model", self.model_combo)
        self.epochs_spin = self._int_spin(1, 10000, 100)
        form.addRow("Epochs", self.epochs_spin)
        self.batch_spin = self._int_spin(2, 4096, 32)
        form.addRow("Batch size", self.batch_spin)
        self.lr_spin = self._float_spin(1e-7, 1.0, 1e-4, decimals=7, step=1e-5)
        form.addRow("Learning rate", self.lr_spin)
        self.wd_spin = self._float_spin(0.0, 1.0, 1e-4, decimals=7, step=1e-5)
        form.addRow("Weight decay", self.wd_spin)
        self.smoothing_spin = self._float_spin(0.0, 0.99, 0.1, decimals=3, step=0.05)
        form.addRow("Label smoothing", self.smoothing_spin)
        self.augment_combo = QComboBox()
        self.augment_combo.addItems(list(AUGMENT_MODES))
        form.addRow("Augmentation", self.augment_combo)
        self.seed_spin = self._int_spin(0, 2**31 - 1, 42)
        form.addRow("Seed", self.seed_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        form.addRow("Device", self.device_combo)
        layout.addWidget(recipe_box)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)

        self.progress = QProgressBar()
        self.progress.setFormat("epoch %v / %m")
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.stage_label = QLabel("Not started. Training runs in a separate process.")
        self.stage_label.setWordWrap(True)
        layout.addWidget(self.stage_label)
        self.eta_label = QLabel("")
        layout.addWidget(self.eta_label)

        curves = QHBoxLayout()
        self.loss_plot = pg.PlotWidget(title="loss")
        self.loss_plot.addLegend(offset=(-10, 10))
        self.loss_plot.setLabel("bottom", "epoch")
        self.train_loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#4C78A8", width=2),
                                                    name="train loss")  # fmt: skip
        self.val_loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#F58518", width=2),
                                                  name="val loss")  # fmt: skip
        self.accuracy_plot = pg.PlotWidget(title="validation")
        self.accuracy_plot.addLegend(offset=(-10, 10))
        self.accuracy_plot.setLabel("bottom", "epoch")
        self.accuracy_plot.setYRange(0.0, 1.0)
        self.val_accuracy_curve = self.accuracy_plot.plot(
            [], [], pen=pg.mkPen("#54A24B", width=2), name="accuracy"
        )
        self.val_f1_curve = self.accuracy_plot.plot(
            [], [], pen=pg.mkPen("#B279A2", width=2), name="macro-F1"
        )
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.setMinimumHeight(180)
            curves.addWidget(plot)
        layout.addLayout(curves)

        result_box = QGroupBox("Result (test subjects: never seen in training)")
        result_layout = QVBoxLayout(result_box)
        self.metrics_label = QLabel("–")
        self.metrics_label.setWordWrap(True)
        result_layout.addWidget(self.metrics_label)
        result_buttons = QHBoxLayout()
        self.report_button = QPushButton("Open report.html")
        self.report_button.setEnabled(False)
        self.report_button.clicked.connect(self.open_report)
        self.activate_button = QPushButton("Activate this model")
        self.activate_button.setEnabled(False)
        self.activate_button.setToolTip("offered only after ONNX export and its parity check pass")
        self.activate_button.clicked.connect(self.activate)
        result_buttons.addWidget(self.report_button)
        result_buttons.addWidget(self.activate_button)
        result_buttons.addStretch(1)
        result_layout.addLayout(result_buttons)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        result_layout.addWidget(self.result_label)
        layout.addWidget(result_box)
        self.resize(900, 860)

    def _with_browse(self, edit: QLineEdit, dataset: bool) -> QWidget:
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit, 1)
        file_button = QPushButton("File…")
        box.addWidget(file_button)
        if dataset:
            folder_button = QPushButton("Folder…")
            folder_button.clicked.connect(self._choose_dataset_folder)
            box.addWidget(folder_button)
            file_button.clicked.connect(
                lambda: self._choose_file(edit, "Manifest or crops (*.csv *.npz);;All files (*)")
            )
        else:
            file_button.clicked.connect(lambda: self._choose_file(edit, "Split plan (*.json)"))
        return row

    @staticmethod
    def _int_spin(low: int, high: int, value: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        return spin

    @staticmethod
    def _float_spin(
        low: float, high: float, value: float, decimals: int, step: float
    ) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setDecimals(decimals)
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setValue(value)
        return spin

    def _choose_dataset_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "UNBC or BioVid folder")
        if path:
            self.dataset_edit.setText(path)

    def _choose_file(self, edit: QLineEdit, filters: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a file", "", filters)
        if path:
            edit.setText(path)

    @Slot()
    def _on_split_mode(self) -> None:
        mode = self.split_combo.currentData()
        self.splits_edit.setEnabled(mode != SPLIT_NEW)
        self.folds_spin.setEnabled(mode == SPLIT_CV)

    # ------------------------------------------------------------------ the job
    def spec(self) -> RetrainSpec:
        """The form as a :class:`RetrainSpec` (raises ValueError with a readable reason)."""
        dataset = self.dataset_edit.text().strip()
        if not dataset:
            raise ValueError("choose a dataset: a UNBC/BioVid folder, manifest.csv or crops.npz")
        mode = self.split_combo.currentData()
        splits_text = self.splits_edit.text().strip()
        if mode == SPLIT_FILE and not splits_text:
            raise ValueError("choose the splits.json to train with, or pick a new split")
        model = self.model_combo.currentText()
        stamp = utc_now().strftime("%Y%m%d-%H%M%S")
        run_dir = self.runs_dir / f"{model}-{stamp}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = self.runs_dir / f"{model}-{stamp}-{n}"
        return RetrainSpec(
            dataset=Path(dataset),
            run_dir=run_dir,
            model=model,
            epochs=self.epochs_spin.value(),
            batch_size=self.batch_spin.value(),
            lr=self.lr_spin.value(),
            weight_decay=self.wd_spin.value(),
            label_smoothing=self.smoothing_spin.value(),
            augment=self.augment_combo.currentText(),
            seed=self.seed_spin.value(),
            device=self.device_combo.currentText(),
            splits=Path(splits_text) if splits_text and mode != SPLIT_NEW else None,
            folds=self.folds_spin.value() if mode == SPLIT_CV else 0,
        )

    @Slot()
    def start(self) -> bool:
        """Start training in a child process; False (reason shown) when the form is not valid."""
        if self.unavailable_reason or self.running:
            return False
        try:
            spec = self.spec()
            job = RetrainJob(spec, self.registry, kill_after_s=CANCEL_GRACE_S)
            status = job.start()
        except (OSError, ValueError) as exc:
            self._show_error(str(exc))
            return False
        self.job, self.status = job, status
        self._close_armed = False
        self.metrics_label.setText("–")
        self.result_label.setText("")
        self.report_button.setEnabled(False)
        self.activate_button.setEnabled(False)
        self.notice.setVisible(False)
        self.progress.setRange(0, spec.epochs_total)
        self.progress.setValue(0)
        self._set_form_enabled(False)
        self._show(status)
        self._timer.start()
        return True

    @property
    def running(self) -> bool:
        return self.status is not None and self.status.state in ("running", "cancelling")

    @property
    def awaiting_activation(self) -> bool:
        """A job succeeded and its model, registered, has not been activated yet."""
        return self.activate_button.isEnabled()

    @Slot()
    def cancel(self) -> None:
        """Interrupt the child (it keeps the best checkpoint); killed if it does not stop."""
        if self.job is not None:
            self.status = self.job.cancel()
            self._show(self.status)

    @Slot()
    def poll(self) -> None:
        """Timer tick: advance the job and repaint."""
        if self.job is None:
            self._timer.stop()
            return
        status = self.job.update()
        self.status = status
        self._show(status)
        if status.finished:
            self._timer.stop()
            self._set_form_enabled(True)

    def _show(self, status: JobStatus) -> None:
        self.cancel_button.setEnabled(status.state == "running")
        # The final run after cross-validation counts its own epochs.
        if self.progress.maximum() != status.epochs_total:
            self.progress.setRange(0, status.epochs_total)
        self.progress.setValue(status.epochs_done)
        stage = {
            "train": "Training",
            "final": "Training the model to deploy",
            "evaluate": "Evaluating",
            "export": "Exporting",
        }.get(status.stage, "Finished")
        self.stage_label.setText(f"{stage}: {status.message}")
        self.stage_label.setStyleSheet(_ERROR_STYLE if status.state == "failed" else "")
        self.eta_label.setText(
            _format_duration(status.eta_s)
            if status.state == "running" and status.stage in ("train", "final")
            else ""
        )  # fmt: skip
        self._show_history(status.history)
        if status.metrics:
            text = f"Test subjects: {format_metrics(status.metrics)}"
            cv = status.cv_summary.get("val", {}) if status.cv_summary else {}
            if "macro_f1" in cv:
                f1 = cv["macro_f1"]
                low, high = f1["ci95"]
                text += (
                    f"\nCross-validation macro-F1 {f1['mean']:.3f} (95% CI {low:.3f}–{high:.3f}, "
                    f"{f1['n']} folds, for this estimate only); the model offered was trained "
                    "on the fixed split's train and validation subjects and scored once on the "
                    "test subjects above"
                )
            self.metrics_label.setText(text)
        has_report = status.report_path is not None and status.report_path.is_file()
        self.report_button.setEnabled(has_report)
        if status.state == "succeeded":
            self.activate_button.setEnabled(True)
            self.result_label.setText(
                f"Export and ONNX parity check passed: {status.onnx_path}. "
                "The monitor keeps its current model until you activate this one."
            )
        elif status.state in ("failed", "cancelled"):
            self.result_label.setText(
                f"No model to activate. Log: {status.log_path}" if status.log_path else ""
            )

    def _show_history(self, rows: tuple[EpochRow, ...]) -> None:
        """The curves of the run (the fold) under way: empty until its first epoch ends, never
        the previous job's or fold's (they would read as this run's loss and accuracy)."""
        epochs = [r.epoch for r in rows]
        self.train_loss_curve.setData(epochs, [r.train_loss for r in rows])
        self.val_loss_curve.setData(epochs, [r.val_loss for r in rows])
        self.val_accuracy_curve.setData(epochs, [r.val_accuracy for r in rows])
        self.val_f1_curve.setData(epochs, [r.val_macro_f1 for r in rows])

    def _set_form_enabled(self, enabled: bool) -> None:
        for widget in (
            self.dataset_edit,
            self.split_combo,
            self.model_combo,
            self.epochs_spin,
            self.batch_spin,
            self.lr_spin,
            self.wd_spin,
            self.smoothing_spin,
            self.augment_combo,
            self.seed_spin,
            self.device_combo,
        ):
            widget.setEnabled(enabled)
        if enabled:
            self._on_split_mode()
        else:
            self.splits_edit.setEnabled(False)
            self.folds_spin.setEnabled(False)
        self.start_button.setEnabled(enabled and not self.unavailable_reason)

    def _show_error(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setStyleSheet(_ERROR_STYLE)
        self.notice.setVisible(True)

    # ------------------------------------------------------------------ results
    @Slot()
    def open_report(self) -> None:
        if self.status is not None and self.status.report_path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.status.report_path)))

    @Slot()
    def activate(self) -> RegistryEntry | None:
        """Activate the exported model (verified again) and tell the main window."""
        status = self.status
        if status is None or status.state != "succeeded" or status.model_id is None:
            return None
        refusal = self.switch_refusal() if self.switch_refusal is not None else None
        if refusal is not None:  # the registry is left as it was
            self._show_error(refusal)
            return None
        try:
            entry = self.registry.activate(status.model_id)
        except RegistryError as exc:
            self._show_error(str(exc))
            return None
        self.activate_button.setEnabled(False)
        self.result_label.setText(
            f"Active model: {entry.describe()}. Roll back with Monitor → Roll back model."
        )
        self.result_label.setStyleSheet(_OK_STYLE)
        self.model_activated.emit(str(entry.onnx_path))
        return entry

    # ------------------------------------------------------------------ shutdown
    def timers_active(self) -> bool:
        return self._timer.isActive()

    def shutdown(self, timeout_s: float = _CLOSE_WAIT_S) -> None:
        """Stop polling and make sure no child process is left (interrupt, then kill)."""
        self._timer.stop()
        if self.job is not None:
            self.job.close(timeout_s)
            self.status = self.job.status
            self._set_form_enabled(True)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        # No modal question here: a second close confirms, so nothing can block the app.
        if self.running and not self._close_armed:
            self._close_armed = True
            self._show_error(
                "Training is still running. Close again to stop it (the best checkpoint so far "
                "is kept in the run folder), or keep this window open."
            )
            event.ignore()
            return
        self.shutdown()
        super().closeEvent(event)


def rollback_model(
    parent: QWidget | None = None, registry: ModelRegistry | None = None
) -> RegistryEntry | None:
    """Roll the registry back to the previously active model (logged); None if refused."""
    registry = registry if registry is not None else ModelRegistry()
    try:
        entry = registry.rollback()
    except RegistryError as exc:
        log.warning("rollback refused: %s", exc)
        if parent is not None:
            QMessageBox.warning(parent, "Roll back model", str(exc))
        return None
    log.info("rolled back to %s", entry.describe())
    return entry
