"""Render the bedside window in scripted states to PNG files (the README's screenshots).

    python packaging/screenshots.py OUTDIR            # offscreen when there is no display
    xvfb-run -a python packaging/screenshots.py OUTDIR

The window is fed synthetic :class:`EngineResult`/:class:`AlarmState` objects made by
the real alarm state machine (no camera, no worker thread), over a frame of the
synthetic patient, with the shipped demo model loaded so that the panel shows
readings. States: a normal reading, a pending alarm (when AlarmState has pending
fields), a HIGH alarm with its popup, a face the model cannot score (out of domain),
each at 1920×1080, and the normal and HIGH states at 1366×768.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

SIZES_PX = {"1920x1080": (1920, 1080), "1366x768": (1366, 768)}
#: (state name, sizes it is rendered at)
SHOTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("normal", ("1920x1080", "1366x768")),
    ("pending", ("1920x1080",)),
    ("high_alarm_popup", ("1920x1080", "1366x768")),
    ("out_of_domain", ("1920x1080",)),
)
_TREND_HISTORY_S = 8 * 60


def _qapplication() -> Any:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication(sys.argv[:1])


def has_pending_fields() -> bool:
    """True once AlarmState says which alarm is pending (issue #13 item 3)."""
    from painmon.core.live.alarms import AlarmState

    return "pending_priority" in {field.name for field in dataclasses.fields(AlarmState)}


def patient_frame(seed: int = 3, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """One RGB frame of the synthetic patient."""
    from painmon.core.synth.stream import SyntheticPatientStream

    item = next(iter(SyntheticPatientStream(seed=seed, fps=30.0, seconds=1.0, size=size)))
    return np.ascontiguousarray(item[1])


def make_result(
    t_s: float,
    level: float | None,
    manager: Any,
    rgb: np.ndarray,
    *,
    out_of_domain: bool = False,
    au_pspi: float | None = None,
) -> Any:
    """An EngineResult as the engine makes it: ``level`` None is unknown output."""
    from painmon.core.live.capture import Frame
    from painmon.core.live.engine import STAGES, EngineResult
    from painmon.core.live.face import FaceObservation
    from painmon.core.live.face_detect import FaceBox
    from painmon.core.live.quality import QualityReport
    from painmon.core.live.smoothing import SmoothedScore

    height, width = rgb.shape[:2]
    frame = Frame(round(t_s * 10), t_s, rgb, time.monotonic(), "synthetic")
    # The synthetic patient's face sits in the middle of the picture.
    box = FaceBox(width * 0.36, height * 0.14, width * 0.28, height * 0.66, 0.9)
    observation = FaceObservation(t_s, True, box, 1, "screenshot")
    timings = dict.fromkeys(STAGES, 1.0)
    if level is None:
        smoothed = SmoothedScore(t_s, None, None, None, None, True, "out of domain")
        condition = "OUT_OF_DOMAIN" if out_of_domain else None
        return EngineResult(
            frame=frame,
            observation=observation,
            quality=QualityReport(True, 1.0, ()),
            probs=None,
            gradcam=None,
            pain_class=None,
            pain_level=None,
            smoothed=smoothed,
            au_pspi=au_pspi,
            alarm_state=manager.update(t_s, None, condition),
            technical_condition=condition,
            timings_ms=timings,
            out_of_domain=out_of_domain,
        )
    low = math.floor(min(level, 3.999))
    probs = np.zeros(5)
    probs[low], probs[low + 1] = low + 1 - level, level - low
    pain_class = int(np.argmax(probs))
    smoothed = SmoothedScore(t_s, tuple(probs), pain_class, level, 0.8, False, "ok")
    yy, xx = np.mgrid[0:8, 0:8]
    gradcam = np.exp(-((xx - 3.5) ** 2 + (yy - 4.5) ** 2) / 6.0).astype(np.float32)
    return EngineResult(
        frame=frame,
        observation=observation,
        quality=QualityReport(True, 1.0, ()),
        probs=probs,
        gradcam=gradcam,
        pain_class=pain_class,
        pain_level=level,
        smoothed=smoothed,
        au_pspi=None,
        alarm_state=manager.update(t_s, level),
        technical_condition=None,
        timings_ms=timings,
    )


def _trend_history(window: Any, levels: Callable[[float], float | None]) -> None:
    """Minutes of past readings in the trend (it is 1 s buckets of wall time)."""
    now = time.time()
    for ago in range(_TREND_HISTORY_S, 0, -1):
        level = levels(ago)
        priority = "medium" if level is not None and level >= 2.5 else "none"
        window.trend.update(now - ago, level, None if level is None else 0.8, priority)


def _calm(ago: float) -> float:
    return 0.8 + 0.4 * math.sin(ago / 40.0)


def play(window: Any, state: str, rgb: np.ndarray) -> None:
    """Drive ``window`` into ``state`` (see SHOTS) with scripted results."""
    from PySide6.QtGui import QImage

    from painmon.core.live.alarms import AlarmManager, AlarmSettings

    height, width = rgb.shape[:2]
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    manager = AlarmManager(AlarmSettings(alarm_delay_s=10.0))

    def feed(script: Iterator[tuple[float, float | None]], **kwargs: Any) -> None:
        for t_s, level in script:
            window.on_result(make_result(t_s, level, manager, rgb, **kwargs), image)

    # The trend keeps wall-clock order: its history goes in before the scripted results.
    if state in ("normal", "pending"):
        _trend_history(window, _calm)
        feed((i / 10, 1.1) for i in range(30))
        if state == "pending":
            feed((3 + i / 10, 3.1) for i in range(35))  # 3.5 s of a 10 s alarm delay
    elif state == "high_alarm_popup":
        _trend_history(window, lambda ago: 1.0 + 2.6 * math.exp(-((ago - 200) ** 2) / 4000))
        feed((i / 10, 1.1) for i in range(30))
        feed((3 + i / 10, 2.9) for i in range(110))  # MEDIUM after 10 s...
        feed((14 + i / 10, 3.8) for i in range(110))  # ...escalates to HIGH
    elif state == "out_of_domain":
        _trend_history(window, lambda ago: None if ago < 60 else _calm(ago))
        feed((i / 10, 1.1) for i in range(30))
        feed(((3 + i / 10, None) for i in range(20)), out_of_domain=True, au_pspi=2.4)
    else:
        raise ValueError(f"unknown state {state!r}; known: {[name for name, _ in SHOTS]}")
    # The script plays 10 results per media second: say that rate, not the feeding speed.
    now_s = time.monotonic()
    window._receive_times.clear()
    window._receive_times.extend(now_s - (20 - i) / 10 for i in range(21))


def render(outdir: Path, shots: tuple[tuple[str, tuple[str, ...]], ...] = SHOTS) -> list[Path]:
    """Render each shot to ``outdir/<state>_<size>.png``; returns the files written."""
    from PySide6.QtCore import QSettings

    from painmon.app.main_window import MainWindow
    from painmon.app.settings_dialog import AppSettings, save_settings
    from painmon.core.store.catalog import shipped_demo_model_path

    app = _qapplication()
    outdir.mkdir(parents=True, exist_ok=True)
    rgb = patient_frame()
    model = shipped_demo_model_path()
    written: list[Path] = []
    for state, sizes in shots:
        if state == "pending" and not has_pending_fields():
            print("pending: skipped (AlarmState has no pending fields yet)")
            continue
        for size_name in sizes:
            # Throw-away settings: the screenshots never touch the app's own.
            store = QSettings(str(outdir / ".screenshots.ini"), QSettings.Format.IniFormat)
            save_settings(store, AppSettings(session_root=str(outdir / ".sessions")))
            window = MainWindow(store, demo=True)
            try:
                if model.is_file():
                    window.load_model(model)
                window.source_name = "synthetic"
                window.status_source.setText("source: synthetic (scripted screenshot)")
                window.resize(*SIZES_PX[size_name])
                window.show()
                app.processEvents()
                play(window, state, rgb)
                window.refresh()
                window.refresh_trend()
                for _ in range(5):
                    app.processEvents()
                path = outdir / f"{state}_{size_name}.png"
                if not window.grab().save(str(path)):
                    raise OSError(f"could not write {path}")
                written.append(path)
                print(path)
            finally:
                window.close()
                store.sync()
    (outdir / ".screenshots.ini").unlink(missing_ok=True)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        print("usage: python packaging/screenshots.py OUTDIR", file=sys.stderr)
        return 2
    render(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
