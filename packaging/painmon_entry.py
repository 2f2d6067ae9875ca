"""Entry point of the PyInstaller bundle: the ``painmon`` command line, frozen.

Two things only a frozen build needs:

* ``painmon doctor`` tests the Qt import in a child process started as
  ``sys.executable -c "import PySide6.QtWidgets"``; in a bundle ``sys.executable``
  is this program, so that one form of ``-c`` (``import`` of dotted module names) is
  answered here instead of by the argument parser.
* The bundle leaves out ONNX Runtime's CUDA provider unless built with it, so it then
  asks for the CPU provider (``PAINMON_ORT_PROVIDER=cpu`` unless the user set one)
  instead of warning at every start that CUDA failed to load.
* ``PAINMON_STARTUP_PROBE_T0=<epoch seconds>`` makes the window report the time from
  that moment to its first paint on stderr and quit: the bundle's time-to-window,
  measured by packaging/ci_bundle.sh.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

_IMPORT_PROBE = re.compile(r"import [A-Za-z_][\w.]*(, *[A-Za-z_][\w.]*)*")


def _answer_import_probe(argv: list[str]) -> int | None:
    """Run ``-c "import a.b, c"`` like Python would; None when argv is not that."""
    if len(argv) != 3 or argv[1] != "-c" or not _IMPORT_PROBE.fullmatch(argv[2].strip()):
        return None
    import importlib

    for name in argv[2].strip()[len("import ") :].split(","):
        importlib.import_module(name.strip())
    return 0


def _default_to_cpu_provider() -> None:
    """Ask for ONNX Runtime's CPU provider when the bundle carries no CUDA provider."""
    bundle_dir = Path(getattr(sys, "_MEIPASS", ""))
    if not getattr(sys, "frozen", False) or not bundle_dir.is_dir():
        return
    capi = bundle_dir / "onnxruntime" / "capi"
    if not any(capi.glob("*onnxruntime_providers_cuda*")):
        os.environ.setdefault("PAINMON_ORT_PROVIDER", "cpu")


def _install_startup_probe(t0_epoch_s: float) -> None:
    """Create the QApplication early so a first-paint filter sees the main window."""
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication, QMainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])

    class _FirstPaint(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802  (Qt API)
            if event.type() == QEvent.Type.Paint and isinstance(watched, QMainWindow):
                elapsed_s = time.time() - t0_epoch_s
                sys.stderr.write(f"painmon startup probe: first paint after {elapsed_s:.3f} s\n")
                app.removeEventFilter(self)
                QTimer.singleShot(0, app.quit)
            return False

    probe = _FirstPaint(app)
    app.installEventFilter(probe)


def main() -> int:
    answered = _answer_import_probe(sys.argv)
    if answered is not None:
        return answered
    _default_to_cpu_provider()
    t0 = os.environ.get("PAINMON_STARTUP_PROBE_T0")
    if t0 and len(sys.argv) > 1 and sys.argv[1] in ("app", "demo"):
        _install_startup_probe(float(t0))
    from painmon.core.tools.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
