"""The central station window: one tile per bed, painted from core.ward.station's views.

Every decision (state, texts, colour role, what sounds, what may be acknowledged) is made
by :class:`~painmon.core.ward.station.StationModel`; this module paints its
:class:`~painmon.core.ward.station.StationView`. A fast timer drains the MQTT queue into
the model (receipts leave at once), a 4 Hz timer ticks the model and repaints.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QGridLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from painmon.app.sound import AlarmSound
from painmon.app.widgets import (
    COLOUR_BACKGROUND,
    COLOUR_HIGH,
    COLOUR_MEDIUM,
    COLOUR_TECHNICAL,
    COLOUR_TEXT,
    ROLE_COLOUR,
)
from painmon.core.live.display import BLINK_HZ, HIGH_BLINK_HZ, ColourRole
from painmon.core.ward.station import (
    SPARKLINE_S,
    BedState,
    BedView,
    StationModel,
    StationView,
)

log = logging.getLogger(__name__)

WINDOW_TITLE = "painmon — central station"
TILE_SIZE = QSize(300, 250)
REPAINT_MS = 250
DRAIN_MS = 20
ACKNOWLEDGE_TEXT = "Acknowledge"
_TILE_BACKGROUND = "#1f242b"
_BLINK_OFF = {ColourRole.HIGH: "#5d1a1a", ColourRole.MEDIUM: "#6b4a10"}


def _font(point_size: int, *, bold: bool = False) -> QFont:
    """The application's own font family at ``point_size`` (QFont("") picks a serif)."""
    font = QFont()
    font.setPointSize(point_size)
    font.setBold(bold)
    return font


class Sparkline(QWidget):
    """The last ten minutes as a polyline on the 0..4 scale; gaps stay gaps."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: tuple[float | None, ...] = ()
        self.colour = QColor(COLOUR_TEXT)
        self.setMinimumHeight(44)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def show_values(self, values: tuple[float | None, ...], colour: str) -> None:
        if values != self.values or QColor(colour) != self.colour:
            self.values, self.colour = values, QColor(colour)
            self.update()

    @property
    def points_shown(self) -> int:
        return sum(v is not None for v in self.values)

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        width, height = self.width(), self.height()
        painter.fillRect(self.rect(), QColor("#11151a"))
        painter.setPen(QPen(QColor("#37474f"), 1, Qt.PenStyle.DotLine))
        for level in (1, 2, 3):
            y = height - 2 - level / 4 * (height - 4)
            painter.drawLine(QPointF(0, y), QPointF(width, y))
        count = len(self.values) or SPARKLINE_S
        painter.setPen(QPen(self.colour, 2))
        run: list[QPointF] = []
        for i, value in enumerate((*self.values, None)):
            if value is None:
                if len(run) == 1:
                    painter.drawPoint(run[0])
                elif run:
                    painter.drawPolyline(run)
                run = []
                continue
            x = i / max(1, count - 1) * (width - 1)
            run.append(QPointF(x, height - 2 - value / 4 * (height - 4)))
        painter.end()


class BedTile(QFrame):
    """One bed: label, level or why unknown, sparkline, alarm line, acknowledge button."""

    clicked = Signal(str, str)
    acknowledge_requested = Signal(str, str)

    def __init__(self, ward: str, bed: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = (ward, bed)
        self.view: BedView | None = None
        self.setObjectName("bedTile")
        self.setFixedSize(TILE_SIZE)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 8)
        layout.setSpacing(2)
        self.label = QLabel(bed)
        self.label.setFont(_font(13, bold=True))
        self.headline = QLabel("")
        self.headline.setFont(_font(30, bold=True))
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        self.sparkline = Sparkline()
        self.alarm = QLabel("")
        self.alarm.setWordWrap(True)
        self.alarm.setFont(_font(10, bold=True))
        self.command = QLabel("")
        self.command.setWordWrap(True)
        self.acknowledge = QPushButton(ACKNOWLEDGE_TEXT)
        self.acknowledge.setCursor(Qt.CursorShape.ArrowCursor)
        self.acknowledge.clicked.connect(lambda: self.acknowledge_requested.emit(*self.key))
        for widget in (
            self.label,
            self.headline,
            self.detail,
            self.sparkline,
            self.alarm,
            self.command,
        ):
            layout.addWidget(widget)
        layout.addStretch(1)
        layout.addWidget(self.acknowledge)

    def show_view(self, view: BedView, blink_on: bool) -> None:
        self.view = view
        colour = ROLE_COLOUR[view.role]
        label = view.bed if view.pseudonym is None else f"{view.bed} · {view.pseudonym}"
        self.label.setText(label)
        self.headline.setText(view.headline)
        self.detail.setText(view.detail)
        self.alarm.setText(view.alarm_text)
        self.alarm.setVisible(bool(view.alarm_text))
        self.command.setText(view.command_text)
        self.command.setVisible(bool(view.command_text))
        self.acknowledge.setVisible(view.can_acknowledge)
        self.sparkline.show_values(view.sparkline, colour)
        border = colour
        if view.sounding is not None and not blink_on:
            border = _BLINK_OFF.get(view.role, colour)
        background = _TILE_BACKGROUND
        if view.state is not BedState.ONLINE:
            background = "#0d2a2f"  # the technical colour, dimmed: never mistaken for pain
        self.setStyleSheet(
            f"QFrame#bedTile {{ background: {background}; border: 4px solid {border};"
            " border-radius: 8px; }"
            f" QLabel {{ color: {COLOUR_TEXT}; }}"
        )
        self.headline.setStyleSheet(f"color: {colour};")
        alarm_colour = COLOUR_HIGH if view.priority == "high" else COLOUR_MEDIUM
        if view.priority == "none":
            alarm_colour = COLOUR_TECHNICAL
        self.alarm.setStyleSheet(f"color: {alarm_colour};")

    def mouseReleaseEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(*self.key)
        super().mouseReleaseEvent(event)


class TrendDialog(QDialog):
    """A bed's full trend (24 h of 5 s buckets) and its last alarm events."""

    def __init__(self, ward: str, bed: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = (ward, bed)
        self.setWindowTitle(f"{bed} — trend")
        self.resize(820, 520)
        layout = QVBoxLayout(self)
        self.plot = pg.PlotWidget(background=COLOUR_BACKGROUND)
        self.plot.setYRange(0, 4, padding=0.02)
        self.plot.setLabel("left", "pain level")
        self.plot.setLabel("bottom", "minutes before now")
        self.plot.setMouseEnabled(x=True, y=False)
        self.curve = self.plot.plot(pen=pg.mkPen("#ffffff", width=2), connect="finite")
        layout.addWidget(self.plot, 3)
        layout.addWidget(QLabel("Alarm events (newest last)"))
        self.events = QListWidget()
        layout.addWidget(self.events, 1)
        self.points_shown = 0

    def show_trend(self, points: list[tuple[float, float | None]], events: list[Any]) -> None:
        xs = [t_s / 60.0 for t_s, _ in points]
        ys = [math.nan if level is None else level for _, level in points]
        self.curve.setData(xs, ys)
        self.points_shown = sum(level is not None for _, level in points)
        lines = [f"{e.time}  {e.phase:<11} {e.kind} {e.condition} {e.priority}" for e in events]
        if [self.events.item(i).text() for i in range(self.events.count())] != lines:
            self.events.clear()
            self.events.addItems(lines)


class StationWindow(QMainWindow):
    """The ward at a glance; ``client`` (a StationClient) is None when fed by hand (tests)."""

    def __init__(
        self,
        model: StationModel,
        client: Any = None,
        *,
        sound: AlarmSound | None = None,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.client = client
        self.clock = clock
        self.sound = sound if sound is not None else AlarmSound()
        self._send = send
        self.tiles: dict[tuple[str, str], BedTile] = {}
        self.trends: dict[tuple[str, str], TrendDialog] = {}
        self.last_view: StationView | None = None
        self.commands_sent: list[Any] = []
        self.setWindowTitle(WINDOW_TITLE)
        self.setStyleSheet(
            f"QMainWindow, QScrollArea, #tileArea {{ background: {COLOUR_BACKGROUND}; }}"
        )
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 8, 8, 8)
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setFont(_font(14, bold=True))
        self.banner.setStyleSheet(
            f"background: {COLOUR_TECHNICAL}; color: #000; padding: 8px; border-radius: 4px;"
        )
        self.banner.hide()
        layout.addWidget(self.banner)
        self.summary = QLabel("")
        self.summary.setStyleSheet(f"color: {COLOUR_TEXT};")
        layout.addWidget(self.summary)
        self.area = QScrollArea()
        self.area.setWidgetResizable(True)
        self.grid_host = QWidget()
        self.grid_host.setObjectName("tileArea")
        self.grid = QGridLayout(self.grid_host)
        self.grid.setSpacing(10)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.area.setWidget(self.grid_host)
        layout.addWidget(self.area, 1)
        self.setCentralWidget(central)
        self.resize(4 * (TILE_SIZE.width() + 10) + 40, 2 * (TILE_SIZE.height() + 10) + 120)
        self._columns = 0
        self.drain_timer = QTimer(self)
        self.drain_timer.timeout.connect(self.drain)
        self.repaint_timer = QTimer(self)
        self.repaint_timer.timeout.connect(self.refresh)
        if client is not None:
            self.drain_timer.start(DRAIN_MS)
        self.repaint_timer.start(REPAINT_MS)
        self.refresh()

    # -- feeding ------------------------------------------------------------------------
    def drain(self) -> None:
        if self.client is not None:
            self.client.drain(self.model)

    def refresh(self) -> None:
        """Tick the model and paint its view."""
        self.drain()
        now_s = self.clock()
        view = self.model.tick(now_s)
        self.last_view = view
        self.banner.setText(view.station_alarm)
        self.banner.setVisible(bool(view.station_alarm))
        alarming = sum(1 for b in view.beds if b.priority != "none")
        offline = sum(1 for b in view.beds if b.state is not BedState.ONLINE)
        self.summary.setText(
            f"{len(view.beds)} beds · {alarming} in pain alarm · {offline} offline or no data"
        )
        if {b.key for b in view.beds} != set(self.tiles):
            for bed in view.beds:
                if bed.key not in self.tiles:
                    tile = BedTile(bed.ward, bed.bed)
                    tile.clicked.connect(self.open_trend)
                    tile.acknowledge_requested.connect(self.acknowledge)
                    self.tiles[bed.key] = tile
            self._columns = 0  # re-flow
        self._reflow([b.key for b in view.beds])
        for bed in view.beds:
            hz = HIGH_BLINK_HZ if bed.priority == "high" else BLINK_HZ
            self.tiles[bed.key].show_view(bed, int(now_s * hz * 2) % 2 == 0)
        for key, dialog in self.trends.items():
            if dialog.isVisible():
                dialog.show_trend(self.model.trend(*key, now_s), self.model.recent_events(*key))
        self.sound.play(view.sound_priority)

    def _reflow(self, order: list[tuple[str, str]]) -> None:
        width = self.area.viewport().width() if self.area.isVisible() else self.width() - 40
        columns = max(1, width // (TILE_SIZE.width() + self.grid.spacing()))
        if columns == self._columns:
            return
        self._columns = columns
        for i, key in enumerate(order):
            self.grid.addWidget(self.tiles[key], i // columns, i % columns)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        if self.last_view is not None:
            self._reflow([b.key for b in self.last_view.beds])

    # -- operator actions ---------------------------------------------------------------
    def open_trend(self, ward: str, bed: str) -> TrendDialog:
        dialog = self.trends.get((ward, bed))
        if dialog is None:
            dialog = self.trends[(ward, bed)] = TrendDialog(ward, bed, self)
        dialog.show_trend(self.model.trend(ward, bed), self.model.recent_events(ward, bed))
        dialog.show()
        dialog.raise_()
        return dialog

    def acknowledge(self, ward: str, bed: str) -> Any:
        """Ask the bed to acknowledge; the bed's reply appears on the tile."""
        if self.client is not None:
            command = self.client.acknowledge(self.model, ward, bed)
        else:
            command = self.model.acknowledge(ward, bed, self.clock())
            if command is not None and self._send is not None:
                self._send(command)
        if command is not None:
            self.commands_sent.append(command)
            log.info("acknowledge sent to %s/%s (%s)", ward, bed, command.cmd_id)
        self.refresh()
        return command

    def shutdown(self) -> None:
        self.drain_timer.stop()
        self.repaint_timer.stop()
        self.sound.stop()
        for dialog in self.trends.values():
            dialog.close()
        if self.client is not None:
            self.client.stop()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        self.shutdown()
        super().closeEvent(event)


def run_station(client: Any, model: StationModel) -> int:
    """Open the station window on a started-to-be ``client`` and run Qt's event loop."""
    import signal
    import threading

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = StationWindow(model, client)
    client.start()
    window.show()
    stopped_by: list[int] = []

    def close_on_signal(signum: int, _frame: object) -> None:
        if not stopped_by:
            stopped_by.append(signum)
            window.close()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM"):
            signum = getattr(signal, name)
            previous[signum] = signal.signal(signum, close_on_signal)
    try:
        code = int(app.exec())
        return 128 + stopped_by[0] if stopped_by else code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        window.shutdown()
