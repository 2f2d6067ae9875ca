"""The installed PySide6 must not leak references to None/True (the monitor runs for days).

PySide6 6.12.0 drops one reference to None on every void Qt call and one to True on every
Signal.emit; on Python 3.11 (where those objects are not immortal) the window then aborts
with "Fatal Python error: none_dealloc" after a minute or two. Run in a child process so a
bad build fails this test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
label = QLabel()
class Emitter(QObject):
    fired = Signal(int)
emitter = Emitter()
emitter.fired.connect(lambda value: None)
none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
for _ in range(500):
    label.setText("x")
    emitter.fired.emit(1)
print(sys.getrefcount(None) - none_before, sys.getrefcount(True) - true_before)
"""


def test_pyside_keeps_references_to_none_and_true():
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    none_delta, true_delta = (int(v) for v in proc.stdout.split())
    if sys.version_info < (3, 12):  # immortal from 3.12: counts there say nothing
        assert none_delta > -50 and true_delta > -50, (none_delta, true_delta)
