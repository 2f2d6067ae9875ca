"""The bedside window: live video, state panel, trend and alarms over painmon.core's engine.

Threads: the capture thread (painmon.core.live.capture), one :class:`InferenceWorker`
in a QThread running the engine, and this GUI thread, which only stores what the
worker emits and repaints on QTimers (new frames at up to 30 Hz, state panel and
banner at 10 Hz, trend at 1 Hz).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QThread, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QGuiApplication,
    QImage,
    QKeySequence,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

from painmon.app.alarm_popup import (
    ACKNOWLEDGE_KEY,
    AUDIO_PAUSE_KEY,
    AlarmPopup,
    PopupTracker,
)
from painmon.app.settings_dialog import (
    APPLICATION,
    ORGANISATION,
    SOURCE_MIGRATED_TEXT,
    TREND_WINDOWS_MIN,
    AppSettings,
    SettingsDialog,
    bed_publisher,
    credentials_not_stored_text,
    load_settings,
    migrate_stored_source,
    save_settings,
)
from painmon.app.sound import AlarmSound
from painmon.app.widgets import (
    COLOUR_BACKGROUND,
    COLOUR_HIGH,
    COLOUR_MEDIUM,
    COLOUR_TECHNICAL,
    COLOUR_TEXT,
    COLOUR_UNKNOWN,
    AlarmBanner,
    ElidedLabel,
    StatePanel,
    TrendPlot,
    VideoView,
)
from painmon.app.worker import Command, InferenceWorker
from painmon.core.live.alarms import AlarmEventKind, AlarmSettings, AlarmState, SystemCondition
from painmon.core.live.capture import (
    STREAM_OPEN_TIMEOUT_S,
    STREAM_READ_TIMEOUT_S,
    CaptureStats,
    FrameSource,
)
from painmon.core.live.display import NO_MODEL_TEXT as NO_MODEL_TEXT  # re-exported
from painmon.core.live.display import (
    NO_SOURCE_HEADLINE,
    STALE_FRAME_S,
    SourceProblem,
    display_state,
    model_warning,
    monitor_stopped,
    smooth_latency_ms,
    source_ended,
    source_failed,
)
from painmon.core.live.engine import (
    ENGINE_ORT_THREADS,
    Engine,
    EngineResult,
    MonitorEngine,
    framing_warning,
)
from painmon.core.live.monitor import open_session
from painmon.core.live.scoring import ModelLoadError, OnnxPainModel, ProviderError
from painmon.core.live.session import SESSION_CSV, SessionWriteError, SessionWriter
from painmon.core.live.trend import TrendBuffer
from painmon.core.util.errors import PainmonError
from painmon.core.util.redact import redact_source
from painmon.core.util.timeline import utc_now

log = logging.getLogger(__name__)


def _import_face_backend_here() -> None:
    """Import MediaPipe (and the matplotlib it pulls in) on the GUI thread, once.

    Its first import otherwise happens inside the inference thread, where it deadlocked
    against the GUI thread's garbage collection (seen in a CI run: the worker inside
    mediapipe's import, the GUI thread "Garbage-collecting" in a wait). Haar-only installs
    have no MediaPipe: nothing to import then.
    """
    with contextlib.suppress(ImportError):
        import mediapipe  # noqa: F401


VIDEO_REFRESH_MS = 100
# New frames reach the screen at up to 30 fps on their own timer: waiting for the 10 Hz panel
# refresh showed a 30 fps camera at 10 fps and added up to 100 ms of display latency.
FRAME_REFRESH_MS = 33
TREND_REFRESH_MS = 1000
# How long a source switch waits for a running worker to stop (its session files closed)
# before it detaches the thread and lets it finish on its own; an opening source is not
# waited for (an unreachable stream blocks in its open for STREAM_OPEN_TIMEOUT_S).
_THREAD_JOIN_MS = 5000
# Closing the window waits this long for every worker thread, the longest a worker can
# take: a stream's open, then a blocked read while the capture stops (and some margin).
# A QThread destroyed while running aborts the process.
_CLOSE_JOIN_MS = int((STREAM_OPEN_TIMEOUT_S + STREAM_READ_TIMEOUT_S + 1.0) * 1000) + 10_000
# Set on a worker's QThread once its ``finished`` was handled on the GUI thread.
_FINISHED_SEEN = "painmon_finished_seen"
# Worker threads still running when their window closed past _CLOSE_JOIN_MS: never destroyed.
_UNFINISHED_THREADS: list[tuple[Any, QThread]] = []
# keep_singletons_alive() keeps their reference counts above this: minutes of losses at the
# measured worst (~1000/s) would still leave them far from zero.
SINGLETON_REFS_FLOOR = 200_000
_py_incref = ctypes.pythonapi.Py_IncRef
_py_incref.argtypes = [ctypes.py_object]
_py_incref.restype = None
# A failed or lost command must not mute the alarm for longer than this.
_SOUND_HOLD_MAX_S = 1.0
_SILENCING_KINDS = frozenset({AlarmEventKind.ACKNOWLEDGE, AlarmEventKind.AUDIO_PAUSE})
_STATUS_KINDS = frozenset({AlarmEventKind.TECHNICAL_ONSET, AlarmEventKind.ONSET})
#: what to do, on the banner's technical row, while a session's files cannot be written
RECORDING_FAILED_ACTION = "free disk space, then start a new session"
#: the same row without the technical alarm RECORDING_FAILED (a state before it came)
RECORDING_FAILED_TEXT = (
    f"RECORDING STOPPED: session files could not be written — {RECORDING_FAILED_ACTION}; "
    "pain monitoring goes on"
)
# Window sizes: the default on a large screen, and the trend plot's floor.
DEFAULT_SIZE_PX = (1560, 960)
MIN_TREND_HEIGHT_PX = 120
# Fits a 1280×720 screen with the window frame; the fonts scale down to fit it (resizeEvent).
MIN_SIZE_PX = (1024, 640)
#: the status bar when ward settings that need a restart were saved during an alarm/session
WARD_DEFERRED_TEXT = (
    "Ward settings saved: used at the next start of the video source "
    "(not now: a restart would end the active alarm or the recording session)"
)
#: why a model is not switched now (activate, roll back)
MODEL_SWITCH_REFUSED_TEXT = (
    "Model not switched: switching restarts monitoring, which would end the active pain "
    "alarm or the recording session. Acknowledge the alarm and stop the session, then "
    "switch again."
)
DEMO_SOURCE = "synthetic"
DEMO_TITLE = "painmon — DEMO (synthetic patient, not for clinical use)"
WINDOW_TITLE = "painmon — bedside pain monitor"


def _clamp(value: float, low: int, high: int) -> int:
    return int(max(low, min(high, value)))


class ElidingStatusBar(QStatusBar):
    """A status bar whose messages are elided in the middle, the full text as tooltip.

    ``showMessage``/``currentMessage``/``clearMessage`` keep QStatusBar's meaning; the
    message lives in an :class:`ElidedLabel` instead of being painted (and cut off).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message_label = ElidedLabel()
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.message_label.setMinimumWidth(160)
        self.addWidget(self.message_label, 1)
        self._clear_timer = QTimer(self)
        self._clear_timer.setSingleShot(True)
        self._clear_timer.timeout.connect(self.clearMessage)

    def showMessage(self, text: str, timeout: int = 0) -> None:  # noqa: N802 - Qt API
        self._clear_timer.stop()
        self.message_label.setText(text)
        if timeout > 0:
            self._clear_timer.start(timeout)

    def clearMessage(self) -> None:  # noqa: N802 - Qt API
        self._clear_timer.stop()
        self.message_label.setText("")

    def currentMessage(self) -> str:  # noqa: N802 - Qt API
        return self.message_label.text()

    def stop(self) -> None:
        self._clear_timer.stop()


#: below this window width the status bar folds its least important labels
NARROW_STATUS_PX = 1700


def keep_singletons_alive(floor: int = SINGLETON_REFS_FLOOR) -> int:
    """Give None, True and False back the references PySide6 drops; returns how many.

    PySide6 6.12 on Python 3.11 loses one reference to None on every call of a void
    Qt method and one to True on every ``Signal.emit`` (measured: -100 per 100
    ``QLabel.setText`` / ``emit`` calls, 0 for getters). These objects are immortal
    only from Python 3.12 on, so the monitor would abort with "Fatal Python error:
    none_dealloc" (or bool_dealloc) after a minute or two. Called on every refresh.
    """
    if sys.version_info >= (3, 12):
        return 0
    added = 0
    for singleton in (None, True, False):
        missing = max(0, floor - sys.getrefcount(singleton))
        for _ in range(missing):
            _py_incref(singleton)
        added += missing
    return added


@dataclasses.dataclass
class _RetiredWorker:
    """A stopped worker and its thread, kept until the thread's ``finished`` was handled.

    Kept alive so that signals it queued before stopping are still recognised as stale
    (``sender()`` of a deleted worker is None, and its address may be reused), and so that
    a thread still running (a stream still opening) is never destroyed.
    """

    worker: InferenceWorker
    thread: QThread
    #: session writers the window opened for it; closed once its thread has ended
    writers: list[SessionWriter]


def default_session_root() -> Path:
    from painmon.core.util.paths import default_sessions_dir

    return default_sessions_dir()


class MainWindow(QMainWindow):
    """The monitor window; every action a nurse can take is also a public method."""

    #: emitted (on any thread) when an Export CSV finished: destination path, or "" on failure
    export_finished = Signal(str)

    def __init__(
        self,
        settings_store: QSettings | None = None,
        face_model: str | Path | None = None,
        parent: QWidget | None = None,
        *,
        demo: bool = False,
        every_frame: bool = False,
        pipelined: bool = True,
    ) -> None:
        super().__init__(parent)
        _import_face_backend_here()
        #: ``--every-frame``: files and the demo frame by frame, for analysis (not real time)
        self.every_frame = every_frame
        #: the worker overlaps the next frame's face stage with this frame's scoring
        #: (False: serial, for comparison in ``painmon bench app --playback --serial``)
        self.pipelined = pipelined
        #: playing the demo: nothing is written to the app's settings (``painmon app``
        #: must open what the nurse last used, not the demo)
        self.demo = demo
        self.setWindowTitle(DEMO_TITLE if demo else WINDOW_TITLE)
        self.store = (
            settings_store if settings_store is not None else QSettings(ORGANISATION, APPLICATION)
        )
        self.app_settings = load_settings(self.store)
        # Settings saved by an older painmon may hold a stream password: out of the file
        # now, the full URL kept in memory for this session only (#12).
        source_migrated = migrate_stored_source(self.store)
        if face_model is not None:
            self.app_settings = dataclasses.replace(self.app_settings, face_model=str(face_model))
        self.model: OnnxPainModel | None = None
        self.model_error = ""
        self.source_spec: str | FrameSource | None = None
        self.source_name = ""
        self.source_live = False
        self._thread: QThread | None = None
        self._worker: InferenceWorker | None = None
        #: stopped workers whose threads may still run or have signals queued
        self._retired: list[_RetiredWorker] = []
        self._latest: EngineResult | None = None
        self._latest_image: QImage | None = None
        self._frame_dirty = False
        self._last_result_mono_s: float | None = None
        self.alarm_state: AlarmState | None = None
        self._source_problem: SourceProblem | None = None
        #: why the running source ended (end of video, capture error), None while it runs
        self.source_ended_reason: str | None = None
        self._receive_times: collections.deque[float] = collections.deque(maxlen=120)
        self._latency_ms: float | None = None
        self.results_received = 0
        #: called with each result the window takes (after it is counted); for the benchmarks
        self.on_result_received: Callable[[EngineResult], None] | None = None
        self._popup_tracker = PopupTracker()
        self.session_folder: Path | None = None
        self.session_active = False
        #: why recording stopped (the session's files could not be written: a full disk),
        #: shown until a new session or source starts; monitoring went on regardless
        self.recording_error: str | None = None
        #: the running engine's face detector (as session.json records it); None until it is built
        self.face_detector: str | None = None
        # Writers this window opened for the running worker; closed for certain once it stopped.
        self._session_writers: list[SessionWriter] = []
        self.trend = TrendBuffer(bucket_s=1.0, max_age_s=max(TREND_WINDOWS_MIN) * 60.0)
        self.sound = AlarmSound()
        self._sound_held_until_s: float | None = None

        self._build_ui()
        self._build_menus()
        self.export_finished.connect(self._on_export_finished)
        self._video_timer = QTimer(self)
        self._video_timer.setInterval(VIDEO_REFRESH_MS)
        self._video_timer.timeout.connect(self.refresh)
        self._frame_timer = QTimer(self)
        self._frame_timer.setInterval(FRAME_REFRESH_MS)
        self._frame_timer.timeout.connect(self.show_new_frame)
        self._trend_timer = QTimer(self)
        self._trend_timer.setInterval(TREND_REFRESH_MS)
        self._trend_timer.timeout.connect(self.refresh_trend)
        self._video_timer.start()
        self._frame_timer.start()
        self._trend_timer.start()
        self._apply_display_settings()
        self._update_model_labels()
        self.refresh()
        self._warn_password_not_stored(self.app_settings.source)
        if source_migrated:
            self.statusBar().showMessage(SOURCE_MIGRATED_TEXT)

    # ------------------------------------------------------------------ construction
    def _build_ui(self) -> None:
        central = QWidget()
        central.setObjectName("central")
        central.setStyleSheet(
            f"QWidget#central {{ background: #0d0f12; }} QLabel {{ color: {COLOUR_TEXT}; }}"
        )
        outer = QVBoxLayout(central)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.setSpacing(8)
        self.banner = AlarmBanner()
        self.banner.acknowledge_clicked.connect(self.acknowledge)
        self.banner.audio_pause_clicked.connect(self.audio_pause)
        # A long alarm text wraps instead of pushing the buttons out of a small window.
        self.banner.text.setWordWrap(True)
        self.banner.text.setMinimumWidth(200)
        for button in (self.banner.acknowledge_button, self.banner.audio_pause_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        outer.addWidget(self.banner)

        middle = QHBoxLayout()
        self.video_stack = QStackedWidget()
        self.video = VideoView()
        self.video_stack.addWidget(self.video)
        self.video_stack.addWidget(self._build_source_prompt())
        middle.addWidget(self.video_stack, 1)
        self.state_panel = StatePanel()
        middle.addWidget(self.state_panel)
        outer.addLayout(middle, 3)

        trend_box = QWidget()
        self.trend_box = trend_box
        trend_box.setStyleSheet(f"background: {COLOUR_BACKGROUND}; border-radius: 8px;")
        trend_layout = QVBoxLayout(trend_box)
        trend_layout.setContentsMargins(8, 4, 8, 4)
        header = QHBoxLayout()
        title = ElidedLabel("Trend (smoothed level; red/amber = alarm, grey = output unknown)")
        title.setStyleSheet("font-size: 16px;")
        self.trend_title = title
        header.addWidget(title, 1)
        self.window_combo = QComboBox()
        for minutes in TREND_WINDOWS_MIN:
            self.window_combo.addItem(f"{minutes} min", minutes)
        self.window_combo.setStyleSheet(
            f"font-size: 16px; background: #2a2f36; color: {COLOUR_TEXT}; padding: 2px 8px;"
        )
        self.window_combo.currentIndexChanged.connect(self._on_trend_window)
        header.addWidget(self.window_combo)
        trend_layout.addLayout(header)
        self.trend_plot = TrendPlot()
        self.trend_plot.setMinimumHeight(MIN_TREND_HEIGHT_PX)
        trend_layout.addWidget(self.trend_plot)
        outer.addWidget(trend_box, 2)
        self.setCentralWidget(central)
        # In the window, over the trend's oldest minutes: never over the video or the level.
        self.popup = AlarmPopup(central)
        self.popup.acknowledge_clicked.connect(self.acknowledge)
        self.popup.audio_pause_clicked.connect(self.audio_pause)

        status = ElidingStatusBar()
        self.setStatusBar(status)
        status.setStyleSheet(
            "QStatusBar { font-size: 14px; } QStatusBar QLabel { padding: 0 8px; }"
        )
        # Long texts (paths, model names, reasons) elide in the middle, full text as tooltip.
        self.status_source = ElidedLabel("source: none")
        self.status_face = ElidedLabel("")
        self.status_fps = QLabel("fps: –")
        self.status_latency = QLabel("latency: –")
        self.status_playback = ElidedLabel("")  # real time / dropped frames (core.live.playback)
        self.status_model = ElidedLabel("model: none")
        self.status_provider = QLabel("")
        self.status_session = ElidedLabel("no session")
        self.status_sound = ElidedLabel("sound: on")
        # The ward link (issue 14): hidden unless this bed publishes or tried to.
        self.status_ward = ElidedLabel("")
        self.status_ward.setVisible(False)
        self._bed_publisher: Any = None  # core.ward.bed.BedPublisher while publishing
        self._ward_problem = ""  # why publishing was asked for and did not start
        self._ward_configured_here = False  # the demo publishes only when set in this session
        self._ward_shown: tuple[bool, str, str, str] | None = None  # the label's last content
        if not self.sound.available:
            # The short verdict in the bar; the technical cause in its tooltip.
            verdict, _, cause = self.sound.reason.partition(" (")
            self.status_sound.setText(verdict)
            self.status_sound.setToolTip(self.sound.reason if cause else "")
            self.status_sound.setStyleSheet(f"color: {COLOUR_MEDIUM};")
        for label in (
            self.status_source,
            self.status_face,
            self.status_fps,
            self.status_latency,
            self.status_playback,
            self.status_model,
            self.status_provider,
            self.status_session,
            self.status_sound,
            self.status_ward,
        ):
            status.addPermanentWidget(label)
        # Elided, but never to a stub that says nothing ("n…n"): each keeps a readable width.
        for label, width_px in (
            (self.status_source, 180),
            (self.status_face, 130),
            (self.status_playback, 150),
            (self.status_model, 170),
            (self.status_session, 90),
            (self.status_sound, 130),
        ):
            label.setMinimumWidth(width_px)
        self.setMinimumSize(*MIN_SIZE_PX)
        self.resize(*self._initial_size())

    def _initial_size(self) -> tuple[int, int]:
        """The default size, shrunk to the screen's available area (task bars excluded)."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        width, height = DEFAULT_SIZE_PX
        if screen is None:
            return width, height
        available = screen.availableGeometry()
        # Leave room for the window frame the window manager adds.
        return min(width, available.width() - 16), min(height, available.height() - 40)

    def _build_source_prompt(self) -> QWidget:
        page = QWidget()
        page.setStyleSheet("background: #000;")
        layout = QVBoxLayout(page)
        layout.addStretch(1)
        self.prompt_title = QLabel(NO_SOURCE_HEADLINE)
        self.prompt_title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.prompt_title.setStyleSheet(
            f"color: {COLOUR_TECHNICAL}; font-size: 48px; font-weight: bold;"
        )
        layout.addWidget(self.prompt_title)
        self.prompt_detail = QLabel()
        self.prompt_detail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.prompt_detail.setWordWrap(True)
        self.prompt_detail.setStyleSheet(f"color: {COLOUR_TEXT}; font-size: 20px;")
        layout.addWidget(self.prompt_detail)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        style = (
            "QPushButton { font-size: 18px; padding: 10px 14px; background: #eceff1; "
            "color: #111; border-radius: 6px; }"
        )
        self.demo_button = QPushButton("Run the demo patient")
        self.file_button = QPushButton("Open a video file…")
        self.camera_button = QPushButton("Try the camera again")
        for button in (self.demo_button, self.file_button, self.camera_button):
            button.setStyleSheet(style)
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.demo_button.clicked.connect(self.run_demo_patient)
        self.file_button.clicked.connect(self._choose_video)
        self.camera_button.clicked.connect(lambda: self.start_source(self.app_settings.source))
        layout.addLayout(buttons)
        layout.addStretch(1)
        return page

    def _build_menus(self) -> None:
        menu_file = self.menuBar().addMenu("&File")
        self.action_open_video = self._action(menu_file, "Open video…", self._choose_video)
        self._action(menu_file, "Use camera", lambda: self.start_source("camera:0"))
        self._action(menu_file, "Demo patient", self.run_demo_patient)
        self.action_open_model = self._action(menu_file, "Open model…", self._choose_model)
        menu_file.addSeparator()
        self.action_start_session = self._action(
            menu_file, "Start session…", self._ask_start_session
        )
        self.action_stop_session = self._action(menu_file, "Stop session", self.stop_session)
        self.action_export = self._action(menu_file, "Export CSV…", self._ask_export_csv)
        self.action_open_folder = self._action(
            menu_file, "Open session folder", self.open_session_folder
        )
        menu_file.addSeparator()
        self._action(menu_file, "Quit", self.close)

        menu_monitor = self.menuBar().addMenu("&Monitor")
        self.action_acknowledge = self._action(menu_monitor, "Acknowledge alarm", self.acknowledge)
        self.action_audio_pause = self._action(menu_monitor, "Audio pause", self.audio_pause)
        # Application-wide: they work whatever has the focus (a dialog of this window too).
        for action, key in (
            (self.action_acknowledge, ACKNOWLEDGE_KEY),
            (self.action_audio_pause, AUDIO_PAUSE_KEY),
        ):
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self._action(menu_monitor, "Calibrate neutral face", self.calibrate_neutral)
        menu_monitor.addSeparator()
        self._action(menu_monitor, "Settings…", self.open_settings)
        self.action_retrain = self._action(menu_monitor, "Retrain model…", self.open_retrain)
        self.action_rollback = self._action(menu_monitor, "Roll back model", self.rollback_model)

        menu_view = self.menuBar().addMenu("&View")
        self.action_gradcam = self._action(menu_view, "Grad-CAM overlay", self._toggle_overlays)
        self.action_gradcam.setCheckable(True)
        self.action_landmarks = self._action(menu_view, "Face landmarks", self._toggle_overlays)
        self.action_landmarks.setCheckable(True)
        self._update_session_actions()

    def _action(self, menu: Any, text: str, slot: Any) -> QAction:
        action = QAction(text, self)
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    # ------------------------------------------------------------------ model and source
    def load_model(self, path: str | Path | None, *, restart: bool = True) -> bool:
        """Load an exported model; on failure the window says why and keeps running.

        A model that cannot be loaded changes nothing: the previous model (if any) stays
        active, in the engine and in the settings, and the status bar says so. No path
        unloads the model (the running source restarts without one: the window never says
        "no model" while an engine still scores). ``restart=False``: the caller restarts.
        """
        previous = self.model
        if not path:
            self.model, self.model_error = None, ""
            self._update_model_labels()
            if previous is None:
                return False
            self.app_settings = dataclasses.replace(self.app_settings, model_path="")
            self._persist()
            self.statusBar().showMessage("model unloaded: pain is not scored", 15000)
            if restart:
                self._restart_engine()
            return False
        try:
            model = OnnxPainModel(path, intra_op_num_threads=ENGINE_ORT_THREADS)
        except (ModelLoadError, ProviderError, OSError, ValueError) as exc:
            log.error("model %s not loaded: %s", path, exc)
            text = f"model {Path(path).name} not loaded ({exc})"
            if previous is not None:
                text += f", still using {previous.path.name}"
            else:
                self.model_error = str(exc)
            self._update_model_labels()
            self.statusBar().showMessage(text, 30000)
            return False
        self.model, self.model_error = model, ""
        self.app_settings = dataclasses.replace(self.app_settings, model_path=str(path))
        self._persist()
        self._update_model_labels()
        if restart:
            self._restart_engine()
        return True

    def _restart_engine(self) -> None:
        """Rebuild the running source's engine around the window's model."""
        if self._worker is not None and isinstance(self.source_spec, str):
            self.start_source(self.source_spec)

    def _update_model_labels(self) -> None:
        model = self.model
        if model is None:
            self.status_model.setText("model: none")
            self.status_provider.setText("")
        else:
            name = model.metadata.get("architecture") or model.path.stem
            self.status_model.setText(f"model: {model.path.name} ({name}) {model.sha256[:8]}")
            self.status_provider.setText(model.providers[0].replace("ExecutionProvider", ""))
        # A model without a domain gate cannot tell an unfamiliar face: say so, persistently.
        warning = model_warning(model is None or model.domain_gate is not None)
        self.status_model.setToolTip(warning)
        self.status_model.setStyleSheet(f"color: {COLOUR_MEDIUM};" if warning else "")
        if warning:
            self.status_model.setText(self.status_model.text() + " — no domain gate")
        self.state_panel.demo_badge.setVisible(model is not None and model.is_demo)
        self.trend_plot.set_thresholds(self.app_settings.alarm)

    def _alarm_settings(self) -> AlarmSettings:
        sha = self.model.sha256 if self.model is not None else ""
        return dataclasses.replace(self.app_settings.alarm, model_sha256=sha)

    def _engine_factory(self) -> Callable[[], MonitorEngine]:
        model = self.model
        alarm = self._alarm_settings()
        tau = self.app_settings.smoothing_time_constant_s
        face_model = self.app_settings.face_model or None

        def make() -> MonitorEngine:
            # Runs on the worker thread: loading the face tracker must not freeze the window.
            from painmon.core.live.face import create_face_tracker

            tracker = create_face_tracker(face_model)
            if model is None:
                from painmon.core.live.preview import FaceOnlyEngine

                return FaceOnlyEngine(tracker, alarm)
            return Engine(model, tracker, alarm, tau)

        return make

    @property
    def persist_settings(self) -> bool:
        """False in demo mode: the demo never writes the app's settings."""
        return not self.demo

    def _persist(self) -> None:
        if self.persist_settings:
            save_settings(self.store, self.app_settings)

    def run_demo_patient(self) -> None:
        """Play the synthetic patient, with the shipped demo model when none is loaded.

        The window is in demo mode from here on: the demo is never saved as the
        source or model ``painmon app`` opens next time.
        """
        self.demo = True
        self.setWindowTitle(DEMO_TITLE)
        self.stop_source()
        if self.model is None:
            from painmon.core.store.catalog import shipped_demo_model_path

            try:
                path = shipped_demo_model_path()
            except ModuleNotFoundError as exc:
                path, self.model_error = None, str(exc)
            if path is not None and path.is_file():
                self.load_model(path)
            elif path is not None:
                self.model_error = f"demo model {path} not found"
                self.statusBar().showMessage(self.model_error, 15000)
        self.start_source(DEMO_SOURCE)

    def start_source(self, source: str | FrameSource) -> None:
        """(Re)start monitoring ``source`` (a spec such as camera:0, a path, synthetic)."""
        self.stop_source()
        self.source_spec = source
        # A stream URL's password never reaches the window or the session it records.
        self.source_name = redact_source(source if isinstance(source, str) else source.name)
        self._source_problem = None
        self.source_ended_reason = None
        self.recording_error = None
        self.face_detector = None
        self._latest = None
        self._latest_image = None
        self._last_result_mono_s = None
        self.alarm_state = None
        self._receive_times.clear()
        self.video.clear()
        self.video_stack.setCurrentIndex(0)
        self.status_source.setText(f"source: {self.source_name} (opening…)")
        if isinstance(source, str):
            self._warn_password_not_stored(source)
        self._popup_tracker.update(None)
        self.popup.show_view(None)
        if isinstance(source, str) and source != self.app_settings.source:
            self.app_settings = dataclasses.replace(self.app_settings, source=source)
            self._persist()
        hooks = self._start_bed_publisher()
        worker = InferenceWorker(
            source,
            self._engine_factory(),
            every_frame=self.every_frame,
            pipelined=self.pipelined,
            on_result=hooks.on_result if hooks is not None else None,
            on_alarm_state=hooks.on_alarm_state if hooks is not None else None,
            on_poll=hooks.on_poll if hooks is not None else None,
        )
        # No parent: a thread still running when the window goes (a stream still opening)
        # must never be destroyed with it; the window holds it until it has finished.
        thread = QThread()
        thread.setObjectName("painmon-inference")
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # Direct: the GUI thread may be blocked in wait() and could not run a queued quit().
        worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)
        worker.result_ready.connect(self._on_worker_result)
        worker.alarm_state.connect(self._on_worker_alarm_state)
        worker.source_opened.connect(self._on_source_opened)
        worker.source_failed.connect(self._on_source_failed)
        worker.source_ended.connect(self._on_source_ended)
        worker.command_failed.connect(self._on_command_failed)
        worker.recording_failed.connect(self._on_recording_failed)
        worker.error.connect(self._on_worker_error)
        self._worker, self._thread = worker, thread
        thread.start()

    def _warn_password_not_stored(self, source: str) -> None:
        # Saved settings never hold a stream password: after a restart the URL names the
        # user only, and the nurse must type the password again.
        text = credentials_not_stored_text(source)
        if text:
            self.statusBar().showMessage(text)

    def stop_source(self) -> None:
        """Stop the worker and capture threads (the session closes too).

        A running worker is waited for (up to ``_THREAD_JOIN_MS``) so that its session files
        are closed on return; one still opening its source is not (it holds no session, and
        an unreachable stream can block for seconds). A thread that has not ended is
        detached: kept, never destroyed, until it has finished.
        """
        self._retire(self._worker, self._thread, _THREAD_JOIN_MS)
        self._worker = self._thread = None
        if self.session_active:
            self.session_active = False
            self._update_session_actions()
        self.face_detector = None
        publisher, self._bed_publisher = self._bed_publisher, None
        if publisher is not None:
            publisher.stop("monitoring stopped")  # the retained offline status
        self._show_ward_link()

    def _retire(self, worker: InferenceWorker | None, thread: QThread | None, wait_ms: int) -> None:
        """Stop ``worker``; wait for its thread if it runs its loop; keep both as retired."""
        writers, self._session_writers = self._session_writers, []
        if worker is not None:
            worker.stop()
        if thread is not None:
            thread.quit()
            # Only a worker whose loop runs can hold a session; one still opening is not waited.
            running = worker is None or worker.source_opened_once
            if running and not thread.wait(wait_ms):
                log.error(
                    "the inference thread did not stop within %d ms; it goes on alone "
                    "and closes its session files when it ends",
                    wait_ms,
                )
        finished = thread is None or thread.isFinished()
        if finished:
            # The worker closes the writer it holds; one whose attach never ran (the worker
            # ended first) is closed here. Closing twice is harmless.
            self._close_writers(writers, "monitoring stopped")
            writers = []
        if worker is not None and thread is not None:
            self._retired.append(_RetiredWorker(worker, thread, writers))
        self._prune_retired()

    @Slot()
    def _on_thread_finished(self) -> None:
        """A worker thread ended: all the signals its worker queued have been handled."""
        thread = self.sender()
        if not isinstance(thread, QThread):
            return
        thread.setProperty(_FINISHED_SEEN, True)
        for retired in self._retired:
            if retired.thread is thread:
                self._close_writers(retired.writers, "monitoring stopped")
                retired.writers = []

    def _prune_retired(self) -> None:
        """Forget retired workers whose threads ended and whose ``finished`` was handled."""
        self._retired = [
            r
            for r in self._retired
            if not (r.thread.property(_FINISHED_SEEN) and r.thread.isFinished())
        ]

    def _join_all_threads(self, wait_ms: int) -> None:
        """On close: wait for every worker thread; one that never ends is never destroyed."""
        deadline_s = time.monotonic() + wait_ms / 1000.0
        if not all(r.thread.isFinished() for r in self._retired):
            self.hide()  # closing: not a frozen window while a stream's open times out
        for retired in self._retired:
            remaining_ms = max(0, int((deadline_s - time.monotonic()) * 1000))
            if not retired.thread.wait(remaining_ms):
                log.error("an inference thread did not stop within %d ms of closing", wait_ms)
                _UNFINISHED_THREADS.append((retired.worker, retired.thread))
                continue
            self._close_writers(retired.writers, "monitoring stopped")
            retired.writers = []

    @property
    def bed_publisher(self) -> Any:
        """The running source's ward publisher (core.ward.bed.BedPublisher), else None."""
        return self._bed_publisher

    def _start_bed_publisher(self) -> Any:
        """Start publishing to the ward when configured; the hooks for the worker, or None.

        The demo publishes only when the ward was configured in this session (it never
        reads the nurse's ward as a reason to put a synthetic patient on the bus).
        """
        self._ward_problem = ""
        ward = self.app_settings.ward
        if not ward.publish or (self.demo and not self._ward_configured_here):
            self._show_ward_link()
            return None
        try:
            publisher = bed_publisher(ward)
            from painmon.core.ward.bed import monitor_hooks

            publisher.start()
        except PainmonError as exc:
            self._ward_problem = str(exc)
            log.warning("not publishing to the ward: %s", exc)
            self.statusBar().showMessage(f"not publishing to the ward: {exc}", 15000)
            self._show_ward_link()
            return None
        self._bed_publisher = publisher
        self._show_ward_link()
        return monitor_hooks(publisher)

    def _show_ward_link(self) -> None:
        """The status bar's ward label: connected, broker not reached, or why not published."""
        publisher = self._bed_publisher
        warn = f"color: {COLOUR_MEDIUM};"
        if publisher is None:
            problem = self._ward_problem
            shown = (bool(problem), "ward: not published" if problem else "", problem, warn)
        else:
            where = f"{publisher.ward}/{publisher.bed}"
            tip = f"{where} on {publisher.address.url}"
            if publisher.connected:
                shown = (True, f"ward: {where} connected", tip, "")
            else:
                shown = (True, "ward: broker not reached", tip, warn)
        # Called on every refresh: touch the label (and its style) only when it changes.
        if shown == self._ward_shown:
            return
        self._ward_shown = shown
        visible, text, tip, style = shown
        label = self.status_ward
        label.setVisible(visible)
        label.setText(text)
        label.setToolTip(tip)
        label.setStyleSheet(style)

    def timed_slots(self) -> list[tuple[QTimer, str, Any]]:
        """(timer, name, slot) of the GUI thread's periodic work, for the app benchmark."""
        return [
            (self._video_timer, "refresh", self.refresh),
            (self._frame_timer, "frame", self.show_new_frame),
            (self._trend_timer, "trend", self.refresh_trend),
        ]

    def capture_stats(self) -> CaptureStats | None:
        """Counters of the running source's capture thread (None before it opened)."""
        capture = self._worker.capture if self._worker is not None else None
        return capture.stats if capture is not None else None

    def threads_finished(self) -> bool:
        """True when no worker or capture thread of this window is running."""
        return (
            self._thread is None
            and self._worker is None
            and all(r.thread.isFinished() for r in self._retired)
        )

    def _from_current_worker(self) -> bool:
        """True in a slot called by a signal of the running worker.

        Signals queued by a worker that was since stopped must not paint over the new one:
        retired workers are kept alive until their thread's ``finished`` was handled (after
        every signal they queued), so a stale signal's sender is a retired worker, never
        None; None (no sender at all) is refused too.
        """
        sender = self.sender()
        return sender is not None and sender is self._worker

    @Slot(str, bool, str)
    def _on_source_opened(self, name: str, live: bool, face_detector: str) -> None:
        if not self._from_current_worker():
            return
        self.source_name, self.source_live = redact_source(name), live
        self.face_detector = face_detector
        self.status_source.setText(f"source: {self.source_name}")
        warning = framing_warning(self.model, face_detector) if self.model is not None else None
        self.status_face.setText(
            f"face: {face_detector}" + (" — crops unlike training" if warning else "")
        )
        self.status_face.setToolTip(warning or "")
        self.status_face.setStyleSheet(f"color: {COLOUR_MEDIUM};" if warning else "")
        if warning is not None:
            self.statusBar().showMessage(warning[0].upper() + warning[1:], 30000)

    @Slot(str)
    def _on_source_failed(self, message: str) -> None:
        if not self._from_current_worker():
            return
        message = redact_source(message)
        self.status_source.setText(f"source: {self.source_name} (failed)")
        self._source_problem = source_failed(self.source_name, message)
        self.prompt_title.setText(self._source_problem.headline)
        spec = self.source_spec
        missing = credentials_not_stored_text(spec) if isinstance(spec, str) else ""
        if missing:
            message = f"{message}\n\n{missing}."
        self.prompt_detail.setText(
            f"{message}\n\nRun the demo patient, open a video file, or connect a camera."
        )
        self.video_stack.setCurrentIndex(1)

    @Slot(str)
    def _on_source_ended(self, reason: str) -> None:
        if not self._from_current_worker():
            return
        reason = redact_source(reason)  # a capture error may quote the stream's URL
        self._source_problem = source_ended(reason)
        self.source_ended_reason = reason
        self.status_source.setText(f"source: {self.source_name} ({reason})")

    @Slot(str)
    def _on_command_failed(self, message: str) -> None:
        if not self._from_current_worker():
            return
        self.statusBar().showMessage(redact_source(message), 15000)

    @Slot(str)
    def _on_recording_failed(self, message: str) -> None:
        """The session's files could not be written: recording stopped, monitoring and
        alarms go on. Shown in the banner and the status bar until a new session starts."""
        if not self._from_current_worker():
            return
        self.recording_error = redact_source(message)
        self.session_active = False  # the engine detached the writer; the window closes it
        self._update_session_actions()
        self.statusBar().showMessage(
            f"Recording stopped, monitoring goes on: {self.recording_error}"
        )
        self._show_recording_problem()

    @Slot(str)
    def _on_worker_error(self, message: str) -> None:
        if not self._from_current_worker():
            return
        message = redact_source(message)
        self._source_problem = monitor_stopped(message)
        self.statusBar().showMessage(message)
        if self.session_active:
            # The worker closes the session's files as it ends: no longer recording.
            self.session_active = False
            self._update_session_actions()

    # ------------------------------------------------------------------ results
    @Slot(object, QImage)
    def _on_worker_result(self, result: EngineResult, image: QImage) -> None:
        if self._from_current_worker():
            self.on_result(result, image)

    @Slot(object)
    def _on_worker_alarm_state(self, state: AlarmState) -> None:
        if self._from_current_worker():
            self.on_alarm_state(state)

    def on_result(self, result: EngineResult, image: QImage) -> None:
        """Store the newest result (cheap); painting happens on the refresh timer."""
        now_s = time.monotonic()
        self._latest, self._latest_image, self._frame_dirty = result, image, True
        self._last_result_mono_s = now_s
        self._receive_times.append(now_s)
        self.results_received += 1
        if self.on_result_received is not None:
            self.on_result_received(result)
        known = result.output_known
        wall_s = time.time() - (now_s - result.frame.captured_monotonic_s)
        self.trend.update(
            wall_s,
            result.smoothed.pain_level if known else None,
            result.smoothed.confidence if known else None,
            result.alarm_state.pain_priority,
        )
        self._take_alarm_state(result.alarm_state)

    def on_alarm_state(self, state: AlarmState) -> None:
        """An alarm state from a tick (no frames) or an operator command."""
        if not self.source_live or self._last_result_mono_s is None:
            pass
        elif time.monotonic() - self._last_result_mono_s > STALE_FRAME_S:
            self.trend.update(time.time(), None, None, state.pain_priority)
        self._take_alarm_state(state)

    def _take_alarm_state(self, state: AlarmState) -> None:
        self.alarm_state = state
        if any(event.kind in _SILENCING_KINDS for event in state.new_events):
            self._sound_held_until_s = None
        for event in state.new_events:
            if event.kind in _STATUS_KINDS:
                self.statusBar().showMessage(event.message, 10000)
        # The popup follows the alarm: opens with an episode, shows escalations, closes
        # once acknowledged (from wherever) or ended.
        view = self._popup_tracker.update(state)
        self.popup.show_view(view)
        if view is not None:
            self._place_popup()

    @property
    def popup_count(self) -> int:
        """Alarm episodes that opened a popup."""
        return self._popup_tracker.episodes

    def _place_popup(self) -> None:
        """Over the trend's oldest minutes (bottom left), inside the window, never the video."""
        if self.popup.isHidden():
            return
        box = self.trend_box.geometry()
        width = min(box.width() - 16, max(560, int(box.width() * 0.55)))
        height = (
            self.popup.heightForWidth(width)
            if self.popup.hasHeightForWidth()
            else self.popup.sizeHint().height()
        )
        height = max(1, min(max(height, self.popup.minimumSizeHint().height()), box.height() - 8))
        self.popup.setGeometry(box.x() + 8, box.bottom() - height - 3, width, height)
        self.popup.raise_()

    def _scale_to_window(self) -> None:
        """Scale the big texts and the state panel with the window (clamped)."""
        height, width = self.height(), self.width()
        # The panel's texts keep their designed proportions (designed for ~1000 px high).
        factor = max(0.72, min(1.5, height / 1000.0))
        sizes = {
            label: round(self._base_font_px(label) * factor)
            for label in self.state_panel.findChildren(QLabel)
            if self._base_font_px(label) > 0
        }
        sizes[self.state_panel.level] = _clamp(0.17 * height - 50, 64, 260)
        sizes[self.banner.text] = _clamp(height * 0.032, 22, 48)
        for label, pixel_size in sizes.items():
            font = label.font()
            if font.pixelSize() != pixel_size:
                font.setPixelSize(pixel_size)
                label.setFont(font)
        layout = self.state_panel.layout()
        if layout is not None:
            layout.setSpacing(2 if height < 800 else 6)
        # A narrow window folds latency into the fps label and drops the provider label
        # (the model's tooltip and `painmon doctor` still say it).
        narrow = width < NARROW_STATUS_PX
        self.status_latency.setVisible(not narrow)
        self.status_provider.setVisible(not narrow)
        self._narrow_status = narrow
        panel_width = _clamp(width * 0.26, 380, 640)
        if self.state_panel.width() != panel_width:
            self.state_panel.setFixedWidth(panel_width)
        self._fit_state_panel()

    def _fit_state_panel(self) -> None:
        """Reserve the height the panel's wrapped texts need at its width.

        A horizontal layout does not pass word-wrapped heights on, so without this the
        trend would take the room and the level would be squeezed.
        """
        layout = self.state_panel.layout()
        if layout is None or not layout.hasHeightForWidth():
            return
        needed = layout.totalHeightForWidth(self.state_panel.width())
        if needed > 0 and self.state_panel.minimumHeight() != needed:
            self.state_panel.setMinimumHeight(needed)

    def _base_font_px(self, label: QLabel) -> int:
        """The pixel size a label was built with (remembered before the first scaling)."""
        base = label.property("painmon_base_font_px")
        if base is None:
            base = label.font().pixelSize()
            label.setProperty("painmon_base_font_px", base)
        return int(base)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        self._scale_to_window()
        super().resizeEvent(event)
        self._place_popup()

    def showEvent(self, event: object) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self._place_popup()

    # ------------------------------------------------------------------ painting
    @Slot()
    def refresh(self) -> None:
        """Repaint video, state panel, banner and status bar from the newest stored data."""
        keep_singletons_alive()
        self.show_new_frame()
        display = display_state(
            self._latest,
            self.alarm_state,
            time.monotonic(),
            last_result_s=self._last_result_mono_s,
            receive_times_s=self._receive_times,
            latency_ms=self._latency_ms,
            source_name=self.source_name,
            source_live=self.source_live,
            worker_running=self._worker is not None,
            source_problem=self._source_problem,
            model_loaded=self.model is not None,
            class_names=tuple(self.model.class_names) if self.model is not None else (),
            model_error=self.model_error,
            sound_held_until_s=self._sound_held_until_s,
            smoothing_time_constant_s=self.app_settings.smoothing_time_constant_s,
        )
        self.video.set_message(display.video_headline, display.video_detail, display.video_role)
        self.state_panel.show_result(
            display.panel_result,
            self.app_settings.alarm,
            display.class_names,
            display.panel_reason,
            display.panel_headline,
            out_of_domain=display.out_of_domain,
            au_reading=display.au_reading,
            reading=display.reading,
        )
        self.banner.show_state(
            display.alarm_state, blink_on=display.blink_on, banner=display.banner
        )
        self._show_source_problem()
        self._show_recording_problem()
        self._fit_state_panel()
        self.sound.play(display.sound_priority)
        narrow = getattr(self, "_narrow_status", False)
        # Narrow: the face detector only when it warns (Haar: crops unlike training).
        self.status_face.setVisible(not narrow or bool(self.status_face.toolTip()))
        self.status_fps.setText(
            f"{display.fps_text} · {display.latency_text}" if narrow else display.fps_text
        )
        self.status_latency.setText(display.latency_text)
        self.status_playback.setText(self._worker.playback_text() if self._worker else "")
        self._show_ward_link()

    def _show_source_problem(self) -> None:
        """No video (no camera, video ended…): a technical state, never "No pain alarm"."""
        problem = self._source_problem
        if problem is None:
            return
        state = self.alarm_state
        if state is None or not (state.active or state.latched):
            self.banner.text.setText("Pain not monitored")
        self.banner.technical_row.setText(f"{problem.headline}: pain not monitored")
        self.banner.technical_row.show()

    def _show_recording_problem(self) -> None:
        """Recording failed (full disk): the technical row says so and what to do."""
        if self.recording_error is None:
            return
        row = self.banner.technical_row
        shown = "" if row.isHidden() else row.text()
        if RECORDING_FAILED_ACTION in shown:
            return
        state = self.alarm_state
        named = state is not None and SystemCondition.RECORDING_FAILED in state.system_conditions
        if shown and named:
            text = f"{shown} — {RECORDING_FAILED_ACTION}"  # the technical alarm names it
        else:
            text = f"{shown}; {RECORDING_FAILED_TEXT}" if shown else RECORDING_FAILED_TEXT
        row.setText(text)
        row.show()

    @Slot()
    def show_new_frame(self) -> None:
        """Hand the newest frame to the video view if it changed (cheap when it did not)."""
        result = self._latest
        if not self._frame_dirty or self._latest_image is None:
            return
        self._frame_dirty = False
        self.video.set_frame(self._latest_image, result)
        if result is not None:
            latency_ms = (time.monotonic() - result.frame.captured_monotonic_s) * 1000.0
            self._latency_ms = smooth_latency_ms(self._latency_ms, latency_ms)

    @Slot()
    def refresh_trend(self) -> None:
        """Redraw the trend (1 Hz: the buckets are 1 s wide)."""
        now_wall_s = time.time()
        window_s = self.app_settings.trend_window_min * 60.0
        self.trend_plot.window_s = window_s
        self.trend_plot.show_series(self.trend.series(now_wall_s - window_s), now_wall_s)

    # ------------------------------------------------------------------ operator actions
    def _worker_ended(self) -> bool:
        """True once the current worker's thread has ended (source failed, engine error)."""
        return self._thread is not None and self._thread.isFinished()

    def _submit(self, command: Command, on_done: Callable[[Any], None] | None = None) -> bool:
        if self._worker is None:
            self.statusBar().showMessage("no video source is running", 5000)
            return False
        self._worker.submit(command, on_done)
        return True

    def _monitor_running(self) -> bool:
        """True while an engine can take an operator command; else the status bar says so."""
        if self._worker is not None and self._worker_ended():
            # The source failed to open or the engine stopped: nothing would run it.
            self.statusBar().showMessage("monitoring has stopped: nothing to acknowledge", 5000)
            return False
        return True

    def acknowledge(self) -> None:
        """Acknowledge the active (or latched) alarm; logged in the alarm log."""
        if self._monitor_running() and self._submit(lambda engine, t_s: engine.acknowledge(t_s)):
            self._silence_until_next_state()

    def audio_pause(self) -> None:
        """Silence pain alarm audio for the configured pause; logged."""
        if self._monitor_running() and self._submit(lambda engine, t_s: engine.audio_pause(t_s)):
            self._silence_until_next_state()

    def _silence_until_next_state(self) -> None:
        # The tone stops at the press; the engine's next state (which has the press in it)
        # decides whether anything still sounds, e.g. a HIGH breaking through a pause.
        self._sound_held_until_s = time.monotonic() + _SOUND_HOLD_MAX_S
        self.sound.stop()

    def calibrate_neutral(self) -> None:
        """Use the last ~2 s of good faces as this patient's neutral AU baseline."""

        def calibrate(engine: MonitorEngine, _t_s: float) -> None:
            engine.calibrate_neutral()

        if self._submit(calibrate):
            self.statusBar().showMessage("neutral face calibration requested", 5000)

    def apply_settings(self, new: AppSettings, *, restarting: bool = False) -> None:
        """Persist ``new`` and apply alarm and smoothing changes now (logged as settings_change).

        Ward changes that change what is published restart the running source, unless a
        pain alarm is active or latched or a session is recording: then they are used at
        the next start of the source, and the status bar says so (a restart would drop the
        alarm and end the session). ``restarting``: the caller restarts the source anyway.
        """
        old = self.app_settings
        publishing_before = self._publishing()
        self.app_settings = new
        self._persist()
        self._apply_display_settings()
        self.trend_plot.set_thresholds(new.alarm)
        if new.ward != old.ward:
            self._ward_configured_here = True
            changed = self._publishing() != publishing_before
            if changed and not restarting and self._worker is not None:
                if self._restart_would_drop():
                    self.statusBar().showMessage(WARD_DEFERRED_TEXT)
                elif self.source_spec is not None:
                    self.start_source(self.source_spec)
        if (
            old.alarm == new.alarm
            and old.smoothing_time_constant_s == new.smoothing_time_constant_s
        ):
            return
        alarm = self._alarm_settings()
        tau = new.smoothing_time_constant_s

        def change(engine: MonitorEngine, t_s: float) -> AlarmState:
            # The face-only preview (no model) applies only what concerns it: the alarms.
            return engine.change_settings(t_s, alarm, tau)

        self._submit(change)

    def _publishing(self) -> Any:
        """What the running source would publish to the ward at a start (None: nothing)."""
        ward = self.app_settings.ward
        if not ward.publish or (self.demo and not self._ward_configured_here):
            return None
        return ward

    def model_switch_refusal(self) -> str | None:
        """Why the model cannot be switched now, or None: a switch restarts monitoring,
        which would drop an active or latched pain alarm or end the recording session."""
        if self._worker is None or not self._restart_would_drop():
            return None
        return MODEL_SWITCH_REFUSED_TEXT

    def _restart_would_drop(self) -> bool:
        """True while a restart would end a pain alarm (active or latched) or a recording."""
        state = self.alarm_state
        alarm = state is not None and state.pain_priority != "none"
        return alarm or self.session_active

    def _apply_display_settings(self) -> None:
        s = self.app_settings
        self.video.show_gradcam = s.show_gradcam
        self.video.gradcam_opacity = s.gradcam_opacity
        self.video.show_landmarks = s.show_landmarks
        self.action_gradcam.setChecked(s.show_gradcam)
        self.action_landmarks.setChecked(s.show_landmarks)
        index = self.window_combo.findData(s.trend_window_min)
        if index >= 0 and index != self.window_combo.currentIndex():
            self.window_combo.setCurrentIndex(index)
        self.video.update()

    def _toggle_overlays(self) -> None:
        self.apply_settings(
            dataclasses.replace(
                self.app_settings,
                show_gradcam=self.action_gradcam.isChecked(),
                show_landmarks=self.action_landmarks.isChecked(),
            )
        )

    def _on_trend_window(self, index: int) -> None:
        minutes = self.window_combo.itemData(index)
        if minutes and minutes != self.app_settings.trend_window_min:
            self.apply_settings(dataclasses.replace(self.app_settings, trend_window_min=minutes))
            self.refresh_trend()

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.app_settings, self)
        if dialog.exec() != SettingsDialog.DialogCode.Accepted:
            return
        new = dialog.settings()
        old = self.app_settings
        model_changed = new.model_path != old.model_path
        # The model first: one that cannot be loaded leaves the old one, in the settings too.
        loaded = model_changed and self.load_model(new.model_path, restart=False)
        if model_changed and not loaded and new.model_path:
            new = dataclasses.replace(new, model_path=old.model_path)
            model_changed = False
        source_changed = (new.source, new.face_model) != (old.source, old.face_model)
        running_model_changed = model_changed and self._worker is not None
        restart = source_changed or (running_model_changed and isinstance(self.source_spec, str))
        self.apply_settings(new, restarting=restart)
        if source_changed:
            self.start_source(new.source)
        elif restart:
            self._restart_engine()

    def open_retrain(self) -> None:
        """The offline retraining dialog; training itself runs in a separate process."""
        from painmon.app.retrain import RetrainDialog

        existing = getattr(self, "_retrain_dialog", None)
        # A closed dialog whose model waits to be activated comes back as it was: this dialog
        # is the only way to activate that model.
        if existing is not None and (existing.running or existing.awaiting_activation):
            existing.show()
            existing.raise_()
            return
        self._retrain_dialog = RetrainDialog(parent=self)
        self._retrain_dialog.switch_refusal = self.model_switch_refusal
        self._retrain_dialog.model_activated.connect(self.load_model)
        self._retrain_dialog.show()

    def rollback_model(self) -> None:
        """Re-activate the previously active retrained model (logged in the registry)."""
        from painmon.app.retrain import rollback_model

        refusal = self.model_switch_refusal()
        if refusal is not None:
            self.statusBar().showMessage(refusal, 30000)
            log.warning("roll back refused: %s", refusal)
            return
        entry = rollback_model(self)
        if entry is not None and self.load_model(entry.onnx_path):
            self.statusBar().showMessage(f"rolled back to {entry.describe()}", 10000)

    # ------------------------------------------------------------------ sessions
    def start_session(self, pseudonym: str) -> Path | None:
        """Record a session for ``pseudonym``; returns its folder, or None (reason in status).

        The folder and its files are made here, through :func:`open_session` as the
        headless monitor makes them; the worker thread then attaches the writer to the
        engine between frames.
        """
        if self.model is None:
            self.statusBar().showMessage("load a model before starting a session", 10000)
            return None
        if self._worker is None:
            self.statusBar().showMessage("start a video source before a session", 10000)
            return None
        if self.face_detector is None:
            self.statusBar().showMessage(
                "the video source is still opening: start the session once it shows video",
                10000,
            )
            return None
        self.stop_session()
        root = Path(self.app_settings.session_root or default_session_root())
        try:
            writer = open_session(
                root,
                pseudonym,
                self.model,
                self._alarm_settings(),
                source=self.source_name,
                face_detector=self.face_detector,
                utc_now=utc_now(),
            )
        except (OSError, PainmonError) as exc:
            self.statusBar().showMessage(f"session not started: {exc}", 15000)
            return None

        def attach(engine: MonitorEngine, _t_s: float) -> None:
            try:
                previous, engine.session_writer = engine.session_writer, writer
            except BaseException:
                writer.close("session could not be attached")
                raise
            if previous is not None and previous is not writer:
                previous.close("replaced by a new session")

        if not self._submit(attach):
            writer.close("session could not be attached")
            return None
        self._session_writers.append(writer)
        self.session_folder = writer.folder
        self.session_active = True
        self.recording_error = None
        self._update_session_actions()
        return writer.folder

    def stop_session(self) -> None:
        """Close the running session's files (they stay in the session folder)."""
        if not self.session_active:
            return

        def detach(engine: MonitorEngine, _t_s: float) -> None:
            writer, engine.session_writer = engine.session_writer, None
            if writer is not None:
                writer.close("stopped by the operator")

        self._submit(detach)
        self.session_active = False
        self._update_session_actions()
        if self._thread is None or self._thread.isFinished():
            # The worker has ended (an engine error): no command will run, close here.
            self._close_session_writers("stopped by the operator")

    def _close_session_writers(self, reason: str) -> None:
        """Close the writers this window opened; only once the worker thread has ended."""
        writers, self._session_writers = self._session_writers, []
        self._close_writers(writers, reason)

    @staticmethod
    def _close_writers(writers: list[SessionWriter], reason: str) -> None:
        for writer in writers:
            try:
                writer.close(reason)
            except SessionWriteError as exc:
                log.error("session %s not closed cleanly: %s", writer.folder, exc)

    def export_csv(self, destination: str | Path) -> None:
        """Copy the session's session.csv to ``destination``; ``export_finished`` reports."""
        if self.session_folder is None:
            self.statusBar().showMessage("no session to export: start a session first", 10000)
            self.export_finished.emit("")
            return
        source = self.session_folder / SESSION_CSV
        destination = Path(destination)

        def copy(engine: MonitorEngine | None = None, _t_s: float = 0.0) -> None:
            try:
                writer = engine.session_writer if engine is not None else None
                if writer is not None:
                    writer.flush()  # the last second of rows, too
                shutil.copyfile(source, destination)
            except (OSError, SessionWriteError) as exc:
                log.error("export of %s failed: %s", source, exc)
                self.export_finished.emit("")
                return
            self.export_finished.emit(str(destination))

        # The worker flushes and copies between frames; once it has ended (an engine error)
        # nothing would run the command: copy here (its files are closed).
        if not (self.session_active and not self._worker_ended() and self._submit(copy)):
            copy()

    @Slot(str)
    def _on_export_finished(self, path: str) -> None:
        self.statusBar().showMessage(
            f"exported {path}" if path else "export failed (see the log)", 10000
        )

    def open_session_folder(self) -> bool:
        """Open the session folder in the file manager; without one, say where it is."""
        folder = self.session_folder
        if folder is None:
            self.statusBar().showMessage("no session yet", 5000)
            return False
        launcher = not (sys.platform.startswith("linux") and shutil.which("xdg-open") is None)
        if launcher and QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            return True
        clipboard = QApplication.clipboard()
        if clipboard is not None:
            clipboard.setText(str(folder))
        self.statusBar().showMessage(
            f"no file manager to open the session folder; its path (copied): {folder}", 60000
        )
        return False

    def _update_session_actions(self) -> None:
        self.action_start_session.setEnabled(not self.session_active)
        self.action_stop_session.setEnabled(self.session_active)
        self.action_export.setEnabled(self.session_folder is not None)
        self.action_open_folder.setEnabled(self.session_folder is not None)
        if self.session_active and self.session_folder is not None:
            self.status_session.setText(f"recording: {self.session_folder.name}")
            self.status_session.setStyleSheet(f"color: {COLOUR_HIGH};")
            self.status_session.setToolTip("")
        elif self.recording_error is not None:
            name = self.session_folder.name if self.session_folder is not None else "session"
            self.status_session.setText(f"recording FAILED: {name}")
            self.status_session.setStyleSheet(f"color: {COLOUR_HIGH}; font-weight: bold;")
            self.status_session.setToolTip(self.recording_error)
        else:
            self.status_session.setToolTip("")
            self.status_session.setText("no session")
            self.status_session.setStyleSheet(f"color: {COLOUR_UNKNOWN};")

    # ------------------------------------------------------------------ dialogs
    def _choose_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open video", "", "Video (*.mp4 *.avi *.mov *.mkv);;All files (*)"
        )
        if path:
            self.start_source(path)

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model", "", "ONNX model (*.onnx)")
        if path:
            self.load_model(path)

    def _ask_start_session(self) -> None:
        pseudonym, ok = QInputDialog.getText(
            self, "Start session", "Patient pseudonym (no names):", text="bed-1"
        )
        if ok and pseudonym.strip():
            self.start_session(pseudonym.strip())

    def _ask_export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export CSV", "session.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop timers, sound and threads; safe to call twice."""
        self._video_timer.stop()
        self._frame_timer.stop()
        self._trend_timer.stop()
        self.stop_source()
        # Every worker thread, a detached one still opening a stream too, ends before the
        # window goes: a QThread destroyed while running aborts the process.
        self._join_all_threads(_CLOSE_JOIN_MS)
        self.sound.stop()
        self.popup.show_view(None)
        status = self.statusBar()
        if isinstance(status, ElidingStatusBar):
            status.stop()
        if getattr(self, "_retrain_dialog", None) is not None:
            self._retrain_dialog.shutdown()
        self._persist()

    def timers_active(self) -> bool:
        return any(
            timer.isActive() for timer in (self._video_timer, self._frame_timer, self._trend_timer)
        )

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)
