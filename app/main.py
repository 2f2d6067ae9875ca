"""Entry point of the bedside window: ``painmon app`` and ``painmon demo``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_SOURCE = "synthetic"


def demo_model_path() -> Path:
    """Where the shipped synthetic-data demo model lives (it may not be installed)."""
    from painmon.core.store.catalog import shipped_demo_model_path

    return shipped_demo_model_path()


def run_app(
    source: str | None = None,
    model: str | Path | None = None,
    demo: bool = False,
    face_model: str | Path | None = None,
    every_frame: bool = False,
) -> int:
    """Open the monitor window and run Qt's event loop; returns the exit code.

    ``demo`` plays the scripted synthetic patient (or ``source``) with the shipped
    demo model when it exists. Without a model the window still opens, shows the
    video and face box and says that no model is loaded. ``every_frame`` scores every
    frame of a file in order (slow motion if need be) instead of playing it in real time.
    Raises :class:`~painmon.core.tools.doctor.DisplayUnavailableError` (one line) when no
    display can show the window, before Qt starts (Qt would abort the process).
    """
    from painmon.core.tools.doctor import prepare_window_environment

    prepare_window_environment()  # cv2's Qt 5 plugin path out; no display -> one-line error
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from painmon.app.main_window import MainWindow
    from painmon.app.settings_dialog import APPLICATION, ORGANISATION

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    # The demo never writes the app's settings (``painmon app`` must not open the demo).
    window = MainWindow(face_model=face_model, every_frame=every_frame, demo=demo)
    if demo:
        chosen_model = model if model is not None else demo_model_path()
        chosen_source = source or DEMO_SOURCE
    else:
        chosen_model = model if model is not None else (window.app_settings.model_path or None)
        chosen_source = source or window.app_settings.source
    if chosen_model is not None and Path(chosen_model).is_file():
        window.load_model(chosen_model)
    elif chosen_model is not None:
        window.model_error = f"model file {chosen_model} not found"
        log.warning("%s; running without a model", window.model_error)
    window.show()
    window.start_source(chosen_source)
    # Ctrl-C, SIGTERM (a service manager, shutdown) and SIGHUP close the window cleanly, so
    # the session files are synced and closed; the timer lets Python see the signal. Exit
    # statuses as `painmon monitor` gives them (128 + the signal's number).
    stopped_by: list[int] = []

    def close_on_signal(signum: int, _frame: object) -> None:
        if not stopped_by:
            stopped_by.append(signum)
            window.close()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):  # no SIGHUP on Windows
            signum = getattr(signal, name, None)
            handler = None if signum is None else signal.getsignal(signum)
            if handler is not None and handler != signal.SIG_IGN:
                previous[signum] = signal.signal(signum, close_on_signal)
    keepalive = QTimer()
    keepalive.timeout.connect(lambda: None)
    keepalive.start(250)
    try:
        code = int(app.exec())
        return 128 + int(stopped_by[0]) if stopped_by else code
    finally:
        keepalive.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        window.shutdown()
