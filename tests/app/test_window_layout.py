"""The window fits any screen from 1280×720 to 4K: nothing clipped, nothing over the video (#13)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QRect, QSettings
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QComboBox,
    QLabel,
    QProgressBar,
    QWidget,
)

from painmon.app.main_window import MIN_TREND_HEIGHT_PX, MainWindow
from painmon.app.settings_dialog import AppSettings, save_settings
from painmon.app.widgets import ElidedLabel
from painmon.core.store.catalog import shipped_demo_model_path

SCRIPT = Path(__file__).resolve().parents[2] / "packaging" / "screenshots.py"
SIZES = [(1280, 720), (1366, 768), (1920, 1080), (3840, 2160)]
# A window manager's frame (title bar and borders) around the client area.
FRAME_PX = (16, 40)


@pytest.fixture(scope="module")
def screenshots():
    """packaging/screenshots.py, imported by path (``packaging`` is also a PyPI name)."""
    spec = importlib.util.spec_from_file_location("painmon_screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def make_window(qtbot, tmp_path):
    def make() -> MainWindow:
        store = QSettings(str(tmp_path / "painmon.ini"), QSettings.Format.IniFormat)
        save_settings(store, AppSettings(session_root=str(tmp_path / "sessions")))
        window = MainWindow(store, demo=True)
        qtbot.addWidget(window)
        model = shipped_demo_model_path()
        if model.is_file():
            assert window.load_model(model)
        return window

    return make


def _rect(widget: QWidget, window: QWidget) -> QRect:
    return QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())


def _controls(window: MainWindow) -> list[QWidget]:
    kinds = (QAbstractButton, QComboBox, QLabel, QProgressBar)
    found = [w for w in window.findChildren(QWidget) if isinstance(w, kinds) and w.isVisible()]
    return [*found, window.banner, window.trend_plot, window.popup]


def _clipped(label: QLabel) -> str:
    """Why ``label``'s text does not fit ("" when it does, or is elided with a tooltip)."""
    text = label.text()
    if not text or not label.isVisible():
        return ""
    if isinstance(label, ElidedLabel):
        if label.is_elided() and text not in label.toolTip():
            return f"elided {text!r} without the full text as tooltip"
        return ""
    if label.wordWrap():
        needed = label.heightForWidth(label.width())
        return f"needs {needed} px high, has {label.height()}" if needed > label.height() else ""
    needed = label.sizeHint().width()
    return f"needs {needed} px wide, has {label.width()}" if needed > label.width() else ""


def _check_layout(window: MainWindow, size: tuple[int, int]) -> None:
    for _ in range(3):  # let the layouts take in the new texts (LayoutRequest events)
        QApplication.processEvents()
    assert (window.width(), window.height()) == size, "the window refused the size"
    central = window.centralWidget()
    hint = central.minimumSizeHint()
    assert hint.width() <= central.width() and hint.height() <= central.height(), (size, hint)
    inside = window.rect()
    video = _rect(window.video_stack, window)
    for control in _controls(window):
        if not control.isVisible():
            continue
        where = _rect(control, window)
        text = control.text() if isinstance(control, QLabel | QAbstractButton) else ""
        name = f"{type(control).__name__} {text!r}"
        assert inside.contains(where), f"{name} at {where} is outside the {size} window"
        if not window.video_stack.isAncestorOf(control):
            assert not where.intersects(video), f"{name} at {where} overlaps the video {video}"
        if isinstance(control, QLabel):
            assert not _clipped(control), f"{name} clipped at {size}: {_clipped(control)}"
    assert window.trend_plot.height() >= MIN_TREND_HEIGHT_PX
    level = window.state_panel.level
    assert level.isVisible() and level.sizeHint().height() <= level.height()


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_control_fits_and_the_video_stays_clear(make_window, screenshots, qtbot, size):
    window = make_window()
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    screenshots.play(window, "normal", screenshots.patient_frame())
    window.refresh()
    _check_layout(window, size)
    normal_level_px = window.state_panel.level.font().pixelSize()
    window.close()

    window = make_window()  # a HIGH alarm with its popup, the longest banner texts
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    screenshots.play(window, "high_alarm_popup", screenshots.patient_frame())
    window.refresh()
    assert window.popup.isVisible()
    _check_layout(window, size)
    window.close()
    # The big level scales with the window (clamped), readable across the room.
    assert 60 <= normal_level_px <= 260


def test_minimum_size_fits_a_1280x720_screen_with_its_frame(make_window, qtbot):
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    window.resize(1280 - FRAME_PX[0], 720 - FRAME_PX[1])
    qtbot.wait(10)
    assert window.width() <= 1280 - FRAME_PX[0] and window.height() <= 720 - FRAME_PX[1]
    _check_layout(window, (window.width(), window.height()))


def test_level_font_grows_with_the_window(make_window, qtbot):
    window = make_window()
    window.show()
    sizes = []
    for size in ((1280, 720), (1920, 1080), (3840, 2160)):
        window.resize(*size)
        qtbot.wait(1)
        sizes.append(window.state_panel.level.font().pixelSize())
    assert sizes[0] < sizes[1] < sizes[2]


def test_screenshots_script_renders_the_states(screenshots, tmp_path, make_window):
    make_window()  # the QApplication exists (pytest-qt)
    shots = (("normal", ("1366x768", "1920x1080")), ("high_alarm_popup", ("1366x768",)))
    written = screenshots.render(tmp_path / "shots", shots)
    names = sorted(path.name for path in written)
    assert names == [
        "high_alarm_popup_1366x768.png",
        "normal_1366x768.png",
        "normal_1920x1080.png",
    ]
    for path in written:
        image = QImage(str(path))
        width, height = (int(n) for n in path.stem.rsplit("_", 1)[1].split("x"))
        assert (image.width(), image.height()) == (width, height)
    # The demo never writes the app's settings, the screenshots neither leave theirs.
    assert not (tmp_path / "shots" / ".screenshots.ini").exists()


def test_screenshots_script_skips_pending_without_the_field(
    screenshots, monkeypatch, capsys, tmp_path, make_window
):
    make_window()
    monkeypatch.setattr(screenshots, "has_pending_fields", lambda: False)
    assert screenshots.render(tmp_path, (("pending", ("1366x768",)),)) == []
    assert "pending: skipped" in capsys.readouterr().out


@pytest.mark.parametrize("size", [(1280, 720), (1366, 768)], ids=["1280x720", "1366x768"])
def test_the_tallest_states_fit_a_small_screen(make_window, screenshots, qtbot, size):
    """Out of domain (the longest panel texts) with its technical alarm row: the panel's
    texts are not cut off and the level trend keeps a readable height."""
    window = make_window()
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    screenshots.play(window, "out_of_domain", screenshots.patient_frame())
    window.refresh()
    assert window.banner.technical_row.isVisible()
    assert window.state_panel.reason.isVisible() and window.state_panel.reason.text()
    _check_layout(window, size)
    panel = _rect(window.state_panel, window)
    for label in window.state_panel.findChildren(QLabel):
        if label.isVisible() and label.text():
            assert panel.contains(_rect(label, window)), f"{label.text()!r} outside the panel"
            assert label.height() >= min(label.sizeHint().height(), 12), label.text()
    level_plot = window.trend_plot.level_plot.sceneBoundingRect()
    assert level_plot.height() >= MIN_TREND_HEIGHT_PX * 0.8, level_plot
    window.close()


def test_a_short_trend_keeps_the_level_plot_and_drops_the_confidence_strip(qtbot):
    from painmon.app.widgets import COMPACT_TREND_PX, TrendPlot

    plot = TrendPlot()
    qtbot.addWidget(plot)
    plot.resize(900, COMPACT_TREND_PX - 60)
    plot.show()
    qtbot.waitExposed(plot)
    QApplication.processEvents()
    assert plot.compact and not plot.confidence_plot.isVisible()
    assert plot.level_plot.sceneBoundingRect().height() >= COMPACT_TREND_PX - 80
    plot.resize(900, COMPACT_TREND_PX + 200)
    QApplication.processEvents()
    assert not plot.compact and plot.confidence_plot.isVisible()
    level = plot.level_plot.sceneBoundingRect()
    confidence = plot.confidence_plot.sceneBoundingRect()
    assert level.height() > 2 * confidence.height() > 0  # 3:1, the level first
    plot.resize(900, COMPACT_TREND_PX - 60)  # and back
    QApplication.processEvents()
    assert plot.compact and not plot.confidence_plot.isVisible()
