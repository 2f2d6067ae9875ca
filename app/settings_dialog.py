"""Monitor settings: the :class:`AppSettings` record, its QSettings persistence and the dialog."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from painmon.app.widgets import ElidedLabel
from painmon.core.live.alarms import MAX_AUDIO_PAUSE_S, AlarmSettings

log = logging.getLogger(__name__)

ORGANISATION = "painmon"
APPLICATION = "painmon"
TREND_WINDOWS_MIN: tuple[int, ...] = (5, 15, 60)
# Numeric alarm settings (spin boxes); the one switch is stored apart.
_AU_ALARMS = "au_alarms_out_of_domain"
_ALARM_FIELDS = tuple(
    f.name for f in dataclasses.fields(AlarmSettings) if f.name not in ("model_sha256", _AU_ALARMS)
)


@dataclass(frozen=True)
class AppSettings:
    """Everything the bedside window remembers between runs."""

    alarm: AlarmSettings = field(default_factory=AlarmSettings)
    smoothing_time_constant_s: float = 3.0
    source: str = "camera:0"
    model_path: str = ""
    face_model: str = ""
    show_gradcam: bool = True
    gradcam_opacity: float = 0.4
    show_landmarks: bool = False
    trend_window_min: int = 15
    session_root: str = ""  # empty: ~/painmon-sessions

    def __post_init__(self) -> None:
        if self.alarm.model_sha256:
            # Thresholds are kept per installation; the model hash is stamped at load time.
            object.__setattr__(self, "alarm", dataclasses.replace(self.alarm, model_sha256=""))
        tau = self.smoothing_time_constant_s
        if not (math.isfinite(tau) and 0.1 <= tau <= 60.0):
            raise ValueError(f"smoothing time constant must lie in 0.1..60 s, got {tau!r}")
        if not 0.0 <= self.gradcam_opacity <= 1.0:
            raise ValueError(f"Grad-CAM opacity must lie in 0..1, got {self.gradcam_opacity!r}")
        if self.trend_window_min not in TREND_WINDOWS_MIN:
            raise ValueError(
                f"trend window must be one of {TREND_WINDOWS_MIN} minutes, "
                f"got {self.trend_window_min!r}"
            )


def _as_bool(value: object) -> bool:
    # QSettings' INI backend hands booleans back as the strings "true"/"false".
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def load_settings(store: QSettings) -> AppSettings:
    """Read :class:`AppSettings` from ``store``; a missing or broken value falls back (logged)."""
    defaults = AppSettings()
    alarm_values = {}
    for name in _ALARM_FIELDS:
        raw = store.value(f"alarm/{name}", getattr(defaults.alarm, name))
        try:
            alarm_values[name] = float(raw)
        except (TypeError, ValueError):
            log.warning("ignoring stored alarm/%s=%r (not a number)", name, raw)
    alarm_values[_AU_ALARMS] = _as_bool(
        store.value(f"alarm/{_AU_ALARMS}", getattr(defaults.alarm, _AU_ALARMS))
    )
    try:
        alarm = AlarmSettings(**alarm_values)
    except ValueError as exc:
        log.warning("stored alarm settings are invalid (%s); using the defaults", exc)
        alarm = defaults.alarm
    try:
        return AppSettings(
            alarm=alarm,
            smoothing_time_constant_s=float(
                store.value("smoothing_time_constant_s", defaults.smoothing_time_constant_s)
            ),
            source=str(store.value("source", defaults.source)),
            model_path=str(store.value("model_path", defaults.model_path)),
            face_model=str(store.value("face_model", defaults.face_model)),
            show_gradcam=_as_bool(store.value("overlay/show_gradcam", defaults.show_gradcam)),
            gradcam_opacity=float(store.value("overlay/gradcam_opacity", defaults.gradcam_opacity)),
            show_landmarks=_as_bool(store.value("overlay/show_landmarks", defaults.show_landmarks)),
            trend_window_min=int(store.value("trend_window_min", defaults.trend_window_min)),
            session_root=str(store.value("session_root", defaults.session_root)),
        )
    except (TypeError, ValueError) as exc:
        log.warning("stored display settings are invalid (%s); using the defaults", exc)
        return dataclasses.replace(defaults, alarm=alarm)


def save_settings(store: QSettings, settings: AppSettings) -> None:
    """Write ``settings`` to ``store`` and sync it to disk."""
    for name in _ALARM_FIELDS:
        store.setValue(f"alarm/{name}", float(getattr(settings.alarm, name)))
    store.setValue(f"alarm/{_AU_ALARMS}", bool(getattr(settings.alarm, _AU_ALARMS)))
    store.setValue("smoothing_time_constant_s", settings.smoothing_time_constant_s)
    store.setValue("source", settings.source)
    store.setValue("model_path", settings.model_path)
    store.setValue("face_model", settings.face_model)
    store.setValue("overlay/show_gradcam", settings.show_gradcam)
    store.setValue("overlay/gradcam_opacity", settings.gradcam_opacity)
    store.setValue("overlay/show_landmarks", settings.show_landmarks)
    store.setValue("trend_window_min", settings.trend_window_min)
    store.setValue("session_root", settings.session_root)
    store.sync()


# (field, label, minimum, maximum, step, decimals, suffix)
_ALARM_SPINS: tuple[tuple[str, str, float, float, float, int, str], ...] = (
    ("medium_threshold", "MEDIUM alarm at level ≥", 0.1, 4.0, 0.1, 2, ""),
    ("high_threshold", "HIGH alarm at level ≥", 0.2, 4.0, 0.1, 2, ""),
    ("alarm_delay_s", "Alarm delay", 0.0, 600.0, 1.0, 1, " s"),
    ("hysteresis", "Clear hysteresis", 0.0, 2.0, 0.05, 2, ""),
    ("clear_hold_s", "Clear after below for", 0.0, 600.0, 1.0, 1, " s"),
    ("audio_pause_s", "Audio pause", 1.0, MAX_AUDIO_PAUSE_S, 10.0, 0, " s"),
    ("reminder_interval_s", "Reminder after acknowledge", 1.0, 3600.0, 30.0, 0, " s"),
    ("no_face_delay_s", "NO FACE alarm after", 0.0, 600.0, 1.0, 1, " s"),
    ("technical_delay_s", "Technical alarm after", 0.0, 10.0, 0.5, 1, " s"),
)


class SettingsDialog(QDialog):
    """Edits :class:`AppSettings`; ``settings()`` returns the validated result."""

    def __init__(self, current: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Monitor settings")
        self._current = current
        layout = QVBoxLayout(self)

        alarms = QGroupBox("Alarms (smoothed pain level 0–4)")
        form = QFormLayout(alarms)
        self._spins: dict[str, QDoubleSpinBox] = {}
        for name, label, low, high, step, decimals, suffix in _ALARM_SPINS:
            spin = QDoubleSpinBox()
            spin.setRange(low, high)
            spin.setSingleStep(step)
            spin.setDecimals(decimals)
            spin.setSuffix(suffix)
            spin.setValue(float(getattr(current.alarm, name)))
            spin.setObjectName(name)
            form.addRow(label, spin)
            self._spins[name] = spin
        self._tau = QDoubleSpinBox()
        self._tau.setRange(0.1, 60.0)
        self._tau.setDecimals(1)
        self._tau.setSuffix(" s")
        self._tau.setValue(current.smoothing_time_constant_s)
        form.addRow("Smoothing time constant", self._tau)
        self._au_alarms = QCheckBox(
            "Pain alarms on the AU estimate when the model cannot score the face"
        )
        self._au_alarms.setToolTip(
            "Off by default: the training-free AU estimate is coarse. When on, a face the "
            "model cannot score (OUT_OF_DOMAIN) still raises pain alarms from the AU estimate."
        )
        self._au_alarms.setChecked(bool(getattr(current.alarm, _AU_ALARMS)))
        form.addRow(self._au_alarms)
        layout.addWidget(alarms)

        inputs = QGroupBox("Video and model (used at the next start)")
        form = QFormLayout(inputs)
        self._source = QLineEdit(current.source)
        self._source.setPlaceholderText("camera:0, a video file, rtsp://…, synthetic")
        self._model = QLineEdit(current.model_path)
        self._model.setPlaceholderText("model.onnx from painmon export")
        self._face_model = QLineEdit(current.face_model)
        self._face_model.setPlaceholderText("face_landmarker.task (empty: search, else Haar)")
        # Paths are long: the fields are wide, show the file name end, and carry the full
        # path as tooltip; under the model field its path elided in the middle.
        self.model_path_label = ElidedLabel()
        self.model_path_label.setStyleSheet("color: #607d8b;")
        self.model_path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for edit in (self._source, self._model, self._face_model):
            edit.setMinimumWidth(self.fontMetrics().horizontalAdvance("x" * 48))
            edit.textChanged.connect(lambda text, edit=edit: self._show_path(edit, text))
            self._show_path(edit, edit.text())
        form.addRow("Source", self._source)
        form.addRow("Model", self._model)
        form.addRow("", self.model_path_label)
        form.addRow("Face model", self._face_model)
        layout.addWidget(inputs)

        overlay = QGroupBox("Video overlay")
        form = QFormLayout(overlay)
        self._gradcam = QCheckBox("Show Grad-CAM heat map")
        self._gradcam.setChecked(current.show_gradcam)
        self._opacity = QDoubleSpinBox()
        self._opacity.setRange(0.0, 1.0)
        self._opacity.setSingleStep(0.1)
        self._opacity.setValue(current.gradcam_opacity)
        self._landmarks = QCheckBox("Show face landmarks")
        self._landmarks.setChecked(current.show_landmarks)
        form.addRow(self._gradcam)
        form.addRow("Grad-CAM opacity", self._opacity)
        form.addRow(self._landmarks)
        layout.addWidget(overlay)

        self._error = QLabel()
        self._error.setStyleSheet("color: #c0392b; font-weight: bold;")
        self._error.setWordWrap(True)
        layout.addWidget(self._error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _show_path(self, edit: QLineEdit, text: str) -> None:
        edit.setToolTip(text)
        if edit is self._model:
            self.model_path_label.setText(text)

    def settings(self) -> AppSettings:
        """The edited settings; raises ValueError with a readable message when inconsistent."""
        # replace(), not a fresh AlarmSettings: fields the dialog does not edit (the model's
        # hash, future settings) keep their values instead of falling back to defaults.
        alarm = dataclasses.replace(
            self._current.alarm,
            **{name: spin.value() for name, spin in self._spins.items()},
            **{_AU_ALARMS: self._au_alarms.isChecked()},
        )
        return dataclasses.replace(
            self._current,
            alarm=alarm,
            smoothing_time_constant_s=self._tau.value(),
            source=self._source.text().strip() or self._current.source,
            model_path=self._model.text().strip(),
            face_model=self._face_model.text().strip(),
            show_gradcam=self._gradcam.isChecked(),
            gradcam_opacity=self._opacity.value(),
            show_landmarks=self._landmarks.isChecked(),
        )

    def accept(self) -> None:
        try:
            self.settings()
        except ValueError as exc:
            self._error.setText(str(exc))  # keep the dialog open so the nurse can fix it
            return
        super().accept()
