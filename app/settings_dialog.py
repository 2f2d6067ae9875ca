"""Monitor settings: the :class:`AppSettings` record, its QSettings persistence and the dialog."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.redact import (
    redact_source,
    strip_url_password,
    url_lacks_password,
    url_lacks_user,
)
from painmon.core.ward.topics import check_label

if TYPE_CHECKING:  # paho comes with the ward extra, imported only when a bed publishes
    from painmon.core.ward.bed import BedPublisher

log = logging.getLogger(__name__)

ORGANISATION = "painmon"
APPLICATION = "painmon"
TREND_WINDOWS_MIN: tuple[int, ...] = (5, 15, 60)
# Numeric alarm settings (spin boxes); the one switch is stored apart.
_AU_ALARMS = "au_alarms_out_of_domain"
_ALARM_FIELDS = tuple(
    f.name for f in dataclasses.fields(AlarmSettings) if f.name not in ("model_sha256", _AU_ALARMS)
)


WARD_EXTRA_HINT = "publishing to the ward needs the ward extra: pip install 'painmon[ward]'"
#: when changes to the ward group take effect (as MainWindow.apply_settings does it)
WARD_RESTART_HINT = (
    "A change to what this bed publishes restarts the video source at once, except while "
    "a pain alarm is active or a session is recording: then it is used at the next start "
    "of the source (the status bar says so). Nothing restarts while publishing stays off."
)
MIN_OBS_HZ, MAX_OBS_HZ = 1.0, 10.0  # as core.ward.bed (imported only with the ward extra)
#: shown when the stored stream URL names a user but its password was not stored
PASSWORD_NOT_STORED_TEXT = "Stream password is not stored: enter it in Settings → Source"
SOURCE_PASSWORD_HINT = "Password not stored: type it again (rtsp://user:password@host/…)"
#: as above, when the stored URL's user name was a token and went with the password
CREDENTIALS_NOT_STORED_TEXT = (
    "Stream user name and password (or token) are not stored: enter them in Settings → Source"
)
SOURCE_CREDENTIALS_HINT = (
    "User name and password (or token) not stored: type them again "
    "(rtsp://user:password@host/… or https://token@host/…)"
)
#: shown once when settings saved by an older painmon still held a stream credential
SOURCE_MIGRATED_TEXT = (
    "An old stream password was removed from the settings file; "
    "enter it in Settings → Source after a restart"
)


def credentials_not_stored_text(source: str) -> str:
    """What the window says when ``source`` lacks its stored credentials; "" when it does not."""
    if url_lacks_user(source):
        return CREDENTIALS_NOT_STORED_TEXT
    if url_lacks_password(source):
        return PASSWORD_NOT_STORED_TEXT
    return ""


def source_hint_text(source: str) -> str:
    """The Settings dialog's hint under Source for ``source``; "" when nothing is missing."""
    if url_lacks_user(source):
        return SOURCE_CREDENTIALS_HINT
    if url_lacks_password(source):
        return SOURCE_PASSWORD_HINT
    return ""


def ward_available() -> bool:
    """True when the ``ward`` extra (paho-mqtt, jsonschema) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("paho", "jsonschema"))


@dataclass(frozen=True)
class WardSettings:
    """Publishing this bed to the ward's MQTT broker (issue 14); off by default.

    Only the password FILE's path is kept, never the password: a broker URL carrying one
    is refused. Labels and the URL are checked whenever given, everything needed to
    publish only when publishing is on.
    """

    publish: bool = False
    broker_url: str = ""
    ward: str = ""
    bed: str = ""
    obs_hz: float = 2.0
    remote_ack: bool = False
    mqtt_user: str = ""
    password_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def __post_init__(self) -> None:
        hz = self.obs_hz
        if not (isinstance(hz, int | float) and math.isfinite(hz)):
            raise InvalidInputError(f"ward obs rate must be a number of Hz, got {hz!r}")
        if not MIN_OBS_HZ <= hz <= MAX_OBS_HZ:
            raise InvalidInputError(
                f"ward obs rate must lie in {MIN_OBS_HZ:g}..{MAX_OBS_HZ:g} Hz, got {hz!r}"
            )
        if self.ward:
            check_label(self.ward, "ward")
        if self.bed:
            check_label(self.bed, "bed")
        if (self.tls_cert or self.tls_key) and not self.tls_ca:
            raise InvalidInputError("the TLS certificate and key need the ward's CA file")
        if self.password_file and not self.mqtt_user:
            raise InvalidInputError("the MQTT password file needs an MQTT user")
        if self.broker_url and ward_available():
            address = _broker_address(self.broker_url)
            if address.password is not None:
                raise InvalidInputError(
                    "the broker URL must not carry a password: give the MQTT user and a "
                    "password file instead"
                )
            if address.tls and not self.tls_ca:
                raise InvalidInputError(f"{address.url} is TLS: give the ward's CA file")
        if not self.publish:
            return
        if not ward_available():
            raise InvalidInputError(WARD_EXTRA_HINT)
        missing = [
            what
            for what, value in (
                ("the broker URL", self.broker_url),
                ("the ward", self.ward),
                ("the bed", self.bed),
            )
            if not value
        ]
        if missing:
            raise InvalidInputError(f"publishing to the ward needs {', '.join(missing)}")

    @property
    def label(self) -> str:
        """``ward/bed`` as the status bar names this bed."""
        return f"{self.ward}/{self.bed}"

    def check_files(self) -> None:
        """InvalidInputError when a password or TLS file named here is not a readable file."""
        for what, path in (
            ("password file", self.password_file),
            ("TLS CA file", self.tls_ca),
            ("TLS certificate", self.tls_cert),
            ("TLS key", self.tls_key),
        ):
            if path and not Path(path).is_file():
                raise InvalidInputError(f"{what} {path}: no such file")


def _broker_address(url: str):  # -> BrokerAddress (paho is imported with it)
    from painmon.core.ward.client import BrokerAddress

    return BrokerAddress.parse(url)


def bed_publisher(ward: WardSettings) -> BedPublisher:
    """A (not started) publisher for ``ward``; InvalidInputError (one line) when it cannot be."""
    if not ward_available():
        raise InvalidInputError(WARD_EXTRA_HINT)
    from painmon.core.ward.bed import bed_publisher_from_options

    def path(text: str) -> Path | None:
        return Path(text) if text else None

    return bed_publisher_from_options(
        ward.broker_url,
        ward.ward,
        ward.bed,
        obs_hz=ward.obs_hz,
        remote_ack=ward.remote_ack,
        username=ward.mqtt_user or None,
        password_file=path(ward.password_file),
        tls_ca=path(ward.tls_ca),
        tls_cert=path(ward.tls_cert),
        tls_key=path(ward.tls_key),
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
    ward: WardSettings = field(default_factory=WardSettings)

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


_WARD_TEXT = (
    "broker_url",
    "ward",
    "bed",
    "mqtt_user",
    "password_file",
    "tls_ca",
    "tls_cert",
    "tls_key",
)


def load_ward_settings(store: QSettings) -> WardSettings:
    """The stored ward settings; broken ones (or publishing without the extra) mean off, logged."""
    defaults = WardSettings()
    try:
        values: dict[str, object] = {
            name: str(store.value(f"ward/{name}", getattr(defaults, name))) for name in _WARD_TEXT
        }
        values["obs_hz"] = float(store.value("ward/obs_hz", defaults.obs_hz))
        values["remote_ack"] = _as_bool(store.value("ward/remote_ack", defaults.remote_ack))
        values["publish"] = _as_bool(store.value("ward/publish", defaults.publish))
    except (TypeError, ValueError) as exc:
        log.warning("stored ward settings are unreadable (%s); not publishing to the ward", exc)
        return defaults
    try:
        return WardSettings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        log.warning("stored ward settings are invalid (%s); not publishing to the ward", exc)
    try:
        # Keep what the nurse typed, only switched off.
        return WardSettings(**{**values, "publish": False})  # type: ignore[arg-type]
    except ValueError:
        return defaults


def save_ward_settings(store: QSettings, ward: WardSettings) -> None:
    """Write ``ward`` (the password file's path, never a password)."""
    for name in _WARD_TEXT:
        store.setValue(f"ward/{name}", getattr(ward, name))
    store.setValue("ward/obs_hz", float(ward.obs_hz))
    store.setValue("ward/remote_ack", bool(ward.remote_ack))
    store.setValue("ward/publish", bool(ward.publish))


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
    ward = load_ward_settings(store)
    alarm_values[_AU_ALARMS] = _as_bool(
        store.value(f"alarm/{_AU_ALARMS}", getattr(defaults.alarm, _AU_ALARMS))
    )
    try:
        alarm = AlarmSettings(**alarm_values)
    except ValueError as exc:
        log.warning("stored alarm settings are invalid (%s); using the defaults", exc)
        alarm = defaults.alarm
    # Field by field: one broken display value must not cost the source, the model path
    # or the session folder (the window would start without its model and save that).
    values: dict[str, Any] = {}
    for name, (key, convert) in _STORED_FIELDS.items():
        default = getattr(defaults, name)
        raw = store.value(key, default)
        try:
            value = convert(raw)
            dataclasses.replace(defaults, **{name: value})  # this field's own checks
        except (TypeError, ValueError) as exc:
            log.warning("ignoring stored %s=%r (%s); using %r", key, raw, exc, default)
            continue
        values[name] = value
    return AppSettings(alarm=alarm, ward=ward, **values)


# AppSettings field -> (settings key, how the stored value is read)
_STORED_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "smoothing_time_constant_s": ("smoothing_time_constant_s", float),
    "source": ("source", str),
    "model_path": ("model_path", str),
    "face_model": ("face_model", str),
    "show_gradcam": ("overlay/show_gradcam", _as_bool),
    "gradcam_opacity": ("overlay/gradcam_opacity", float),
    "show_landmarks": ("overlay/show_landmarks", _as_bool),
    "trend_window_min": ("trend_window_min", int),
    "session_root": ("session_root", str),
}


def migrate_stored_source(store: QSettings) -> bool:
    """Rewrite a stored source that still holds a credential without it; True when it did.

    Settings saved before stream passwords were kept out of them (#12) may still hold
    one (or a token user name, or a secret query value). The file is rewritten at once;
    the caller keeps the full URL from :func:`load_settings` for its running session only.
    """
    stored = store.value("source")
    if not isinstance(stored, str):
        return False
    stripped = strip_url_password(stored)
    if stripped == stored:
        return False
    store.setValue("source", stripped)
    store.sync()
    if store.status() != QSettings.Status.NoError:
        log.error(
            "the settings file %s still holds a stream password: it could not be rewritten (%s)",
            store.fileName(),
            store.status().name,
        )
        return False
    log.warning(
        "removed a stream password from the settings file %s (source now %s)",
        store.fileName(),
        redact_source(stripped),
    )
    return True


def save_settings(store: QSettings, settings: AppSettings) -> None:
    """Write ``settings`` to ``store`` and sync it to disk; a stream password never is.

    The source URL is stored without its password (the settings file is plain text);
    the running window keeps the full URL in memory until it closes.
    """
    for name in _ALARM_FIELDS:
        store.setValue(f"alarm/{name}", float(getattr(settings.alarm, name)))
    store.setValue(f"alarm/{_AU_ALARMS}", bool(getattr(settings.alarm, _AU_ALARMS)))
    store.setValue("smoothing_time_constant_s", settings.smoothing_time_constant_s)
    store.setValue("source", strip_url_password(settings.source))
    store.setValue("model_path", settings.model_path)
    store.setValue("face_model", settings.face_model)
    store.setValue("overlay/show_gradcam", settings.show_gradcam)
    store.setValue("overlay/gradcam_opacity", settings.gradcam_opacity)
    store.setValue("overlay/show_landmarks", settings.show_landmarks)
    store.setValue("trend_window_min", settings.trend_window_min)
    store.setValue("session_root", settings.session_root)
    save_ward_settings(store, settings.ward)
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
        self.source_password_hint = QLabel(SOURCE_PASSWORD_HINT)
        self.source_password_hint.setStyleSheet("color: #c0392b;")
        self._show_source_hint(current.source)
        self._source.textChanged.connect(self._show_source_hint)
        form.addRow("", self.source_password_hint)
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
        layout.addWidget(self._build_ward_group(current.ward))

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

    def _build_ward_group(self, ward: WardSettings) -> QGroupBox:
        """The "Ward (MQTT)" group: publish this bed to the nursing station's broker."""
        group = QGroupBox("Ward (MQTT)")
        group.setObjectName("ward_group")
        form = QFormLayout(group)
        self.ward_available = ward_available()
        self._ward_publish = QCheckBox("Publish this bed to the ward")
        self._ward_publish.setToolTip(WARD_RESTART_HINT)
        self._ward_publish.setChecked(ward.publish and self.ward_available)
        self._ward_url = QLineEdit(ward.broker_url)
        self._ward_url.setPlaceholderText("mqtt://broker:1883 or mqtts://broker:8883")
        self._ward_name = QLineEdit(ward.ward)
        self._ward_name.setPlaceholderText("ward label, e.g. icu")
        self._ward_bed = QLineEdit(ward.bed)
        self._ward_bed.setPlaceholderText("bed label, e.g. bed-12 (no patient names)")
        self._ward_hz = QDoubleSpinBox()
        self._ward_hz.setRange(MIN_OBS_HZ, MAX_OBS_HZ)
        self._ward_hz.setDecimals(1)
        self._ward_hz.setSuffix(" Hz")
        self._ward_hz.setValue(ward.obs_hz)
        self._ward_remote_ack = QCheckBox("Allow acknowledgement from the central station")
        self._ward_remote_ack.setToolTip(
            "Off by default: the bed stays the primary alarm. When on, an acknowledge sent "
            "from the nursing station is applied at this bed."
        )
        self._ward_remote_ack.setChecked(ward.remote_ack)
        self._ward_user = QLineEdit(ward.mqtt_user)
        self._ward_password_file = QLineEdit(ward.password_file)
        self._ward_password_file.setPlaceholderText("file holding the password (never stored)")
        self._ward_ca = QLineEdit(ward.tls_ca)
        self._ward_cert = QLineEdit(ward.tls_cert)
        self._ward_key = QLineEdit(ward.tls_key)
        for edit in (self._ward_ca, self._ward_cert, self._ward_key):
            edit.setPlaceholderText("PEM file (TLS only)")
        form.addRow(self._ward_publish)
        self.ward_restart_hint = QLabel(WARD_RESTART_HINT)
        self.ward_restart_hint.setWordWrap(True)
        self.ward_restart_hint.setStyleSheet("color: #607d8b;")
        form.addRow(self.ward_restart_hint)
        form.addRow("Broker", self._ward_url)
        form.addRow("Ward", self._ward_name)
        form.addRow("Bed", self._ward_bed)
        form.addRow("Observations", self._ward_hz)
        form.addRow(self._ward_remote_ack)
        form.addRow("MQTT user", self._ward_user)
        form.addRow("Password file", self._ward_password_file)
        form.addRow("TLS CA", self._ward_ca)
        form.addRow("TLS certificate", self._ward_cert)
        form.addRow("TLS key", self._ward_key)
        self.ward_hint = QLabel("" if self.ward_available else WARD_EXTRA_HINT)
        self.ward_hint.setWordWrap(True)
        self.ward_hint.setVisible(not self.ward_available)
        form.addRow(self.ward_hint)
        if not self.ward_available:
            self._ward_publish.setEnabled(False)
        return group

    def _ward_settings(self) -> WardSettings:
        ward = WardSettings(
            publish=self._ward_publish.isChecked(),
            broker_url=self._ward_url.text().strip(),
            ward=self._ward_name.text().strip(),
            bed=self._ward_bed.text().strip(),
            obs_hz=self._ward_hz.value(),
            remote_ack=self._ward_remote_ack.isChecked(),
            mqtt_user=self._ward_user.text().strip(),
            password_file=self._ward_password_file.text().strip(),
            tls_ca=self._ward_ca.text().strip(),
            tls_cert=self._ward_cert.text().strip(),
            tls_key=self._ward_key.text().strip(),
        )
        if ward.publish:
            ward.check_files()
        return ward

    def _show_source_hint(self, text: str) -> None:
        hint = source_hint_text(text)
        if hint:
            self.source_password_hint.setText(hint)
        self.source_password_hint.setVisible(bool(hint))

    def _show_path(self, edit: QLineEdit, text: str) -> None:
        # A tooltip is shown on hover, to anyone near the screen: no stream password in it.
        edit.setToolTip(redact_source(text) if edit is self._source else text)
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
            ward=self._ward_settings(),
        )

    def accept(self) -> None:
        try:
            self.settings()
        except ValueError as exc:
            self._error.setText(str(exc))  # keep the dialog open so the nurse can fix it
            return
        super().accept()
