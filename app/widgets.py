"""Bedside widgets: video view with overlays, state panel, trend plot and alarm banner.

Everything here paints what it is given; none of it decides anything (the engine
and the alarm manager in painmon.core do). Sizes and colours are chosen to be
read from across a dark room: the level is huge, colours follow the alarm
priority (green / amber / red, grey when unknown), technical alarms are cyan so
they are never mistaken for pain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from painmon.core.live.alarms import AlarmPriority, AlarmSettings, AlarmState
from painmon.core.live.crop import DEFAULT_MARGIN, box_frame
from painmon.core.live.display import (
    AU_BASELINE_PENDING,
    AU_READING_CAPTION,
    OUTPUT_UNKNOWN_HEADLINE,
    READING_CAPTION,
    UNKNOWN_READING_TEXT,
    BannerText,
    ColourRole,
    Reading,
    alarm_banner,
    level_role,
    priority_role,
    reading_explainer,
    result_reading,
    technical_alarm_text,
)
from painmon.core.live.engine import EngineResult
from painmon.core.live.trend import TrendSeries, visible_range
from painmon.core.util.labels import DEFAULT_CLASS_NAMES

COLOUR_OK = "#2ecc71"
COLOUR_MEDIUM = "#f5a623"
COLOUR_HIGH = "#e53935"
COLOUR_UNKNOWN = "#8a8f98"
COLOUR_TECHNICAL = "#00bcd4"
COLOUR_BACKGROUND = "#15181d"
COLOUR_TEXT = "#eceff1"

#: the colour of each role painmon.core.live.display names
ROLE_COLOUR: dict[ColourRole, str] = {
    ColourRole.NORMAL: COLOUR_OK,
    ColourRole.MEDIUM: COLOUR_MEDIUM,
    ColourRole.HIGH: COLOUR_HIGH,
    ColourRole.UNKNOWN: COLOUR_UNKNOWN,
    ColourRole.TECHNICAL: COLOUR_TECHNICAL,
}
# The pain alarm row's colour in the dark phase of its blinking.
_BLINK_OFF_COLOUR: dict[ColourRole, str] = {
    ColourRole.HIGH: "#5d1a1a",
    ColourRole.MEDIUM: "#6b4a10",
}
_NO_ALARM_COLOUR = "#263238"


def level_colour(level: float | None, settings: AlarmSettings) -> str:
    """Colour of a smoothed level against the alarm thresholds; grey when unknown."""
    return ROLE_COLOUR[level_role(level, settings)]


def _heatmap_image(cam: np.ndarray) -> QImage:
    """A small ARGB image of a 0..1 Grad-CAM map (jet-like, transparent where cold)."""
    values = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4 * values - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * values - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * values - 1), 0, 1)
    alpha = np.clip(values * 1.4, 0, 1)
    argb = (np.stack([blue, green, red, alpha], axis=-1) * 255).astype(np.uint8)
    height, width = values.shape
    # Format_ARGB32 is BGRA in memory on little-endian machines.
    image = QImage(argb.tobytes(), width, height, 4 * width, QImage.Format.Format_ARGB32)
    return image.copy()


class VideoView(QWidget):
    """The live frame, the face box, Grad-CAM and landmarks, and a large state message."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._pixmap: QPixmap | None = None
        self._result: EngineResult | None = None
        self.message = "starting…"
        self.sub_message = ""
        self.message_colour = ROLE_COLOUR[ColourRole.UNKNOWN]
        self.show_gradcam = True
        self.gradcam_opacity = 0.4
        self.show_landmarks = False
        #: called as (result, monotonic time) when a new frame's first paint finished
        self.on_frame_painted: Callable[[EngineResult, float], None] | None = None
        self._frame_new = False

    def set_frame(self, image: QImage, result: EngineResult | None) -> None:
        self._pixmap = QPixmap.fromImage(image)
        self._result = result
        self._frame_new = True
        self.update()

    def set_message(
        self, text: str, sub_text: str = "", role: ColourRole = ColourRole.UNKNOWN
    ) -> None:
        colour = ROLE_COLOUR[role]
        if (text, sub_text, colour) != (self.message, self.sub_message, self.message_colour):
            self.message, self.sub_message, self.message_colour = text, sub_text, colour
            self.update()

    def clear(self) -> None:
        self._pixmap = None
        self._result = None
        self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.fillRect(self.rect(), QColor("#000000"))
        if self._pixmap is not None and not self._pixmap.isNull():
            size = self._pixmap.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRectF(
                (self.width() - size.width()) / 2,
                (self.height() - size.height()) / 2,
                size.width(),
                size.height(),
            )
            painter.drawPixmap(target, self._pixmap, QRectF(self._pixmap.rect()))
            if self._result is not None:
                self._paint_overlays(painter, target, self._pixmap.width())
        if self.message:
            self._paint_message(painter)
        painter.end()
        if self._frame_new and self._result is not None and self.on_frame_painted is not None:
            self.on_frame_painted(self._result, time.monotonic())
        self._frame_new = False

    def _paint_overlays(self, painter: QPainter, target: QRectF, frame_width_px: int) -> None:
        result = self._result
        assert result is not None
        scale = target.width() / max(1, frame_width_px)

        def to_view(x: float, y: float) -> QPointF:
            return QPointF(target.x() + x * scale, target.y() + y * scale)

        box = result.observation.box
        if box is None:
            return
        if self.show_gradcam and result.gradcam is not None:
            # The Grad-CAM covers the square the network's crop was cut from (its framing:
            # stable landmarks or box + margin, turned to level the eyes), not the box.
            square = getattr(result, "crop_square", None) or box_frame(box, DEFAULT_MARGIN)
            side = square.side_px * scale
            painter.save()
            painter.setClipRect(target)
            painter.setOpacity(self.gradcam_opacity)
            painter.translate(to_view(*square.center))
            painter.rotate(math.degrees(square.angle_rad))  # crop x axis -> image direction
            heat = _heatmap_image(result.gradcam)
            painter.drawImage(QRectF(-side / 2, -side / 2, side, side), heat)
            painter.restore()
        colour = QColor(COLOUR_OK if result.output_known else COLOUR_UNKNOWN)
        pen = QPen(colour, 3)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        top_left = to_view(box.x, box.y)
        painter.drawRect(QRectF(top_left.x(), top_left.y(), box.width * scale, box.height * scale))
        landmarks = result.observation.landmarks
        if self.show_landmarks and landmarks is not None:
            painter.setPen(QPen(QColor("#80deea"), 2))
            painter.drawPoints([to_view(float(x), float(y)) for x, y in landmarks[::2]])

    def _paint_message(self, painter: QPainter) -> None:
        height = min(180, max(90, self.height() // 4))
        band = QRectF(0, (self.height() - height) / 2, self.width(), height)
        painter.fillRect(band, QColor(0, 0, 0, 170))
        font = QFont(self.font())
        font.setBold(True)
        font.setPixelSize(max(28, int(height * (0.42 if self.sub_message else 0.55))))
        painter.setFont(font)
        painter.setPen(QColor(self.message_colour))
        main_rect = QRectF(band)
        if self.sub_message:
            main_rect.setHeight(band.height() * 0.62)
        painter.drawText(main_rect, Qt.AlignmentFlag.AlignCenter, self.message)
        if self.sub_message:
            font.setBold(False)
            font.setPixelSize(max(16, int(height * 0.18)))
            painter.setFont(font)
            painter.setPen(QColor(COLOUR_TEXT))
            sub_rect = QRectF(band.x(), main_rect.bottom(), band.width(), band.height() * 0.34)
            painter.drawText(
                sub_rect,
                Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
                self.sub_message,
            )


def _label(pixel_size: int, bold: bool = False, colour: str = COLOUR_TEXT) -> QLabel:
    label = QLabel()
    font = label.font()
    font.setPixelSize(pixel_size)
    font.setBold(bold)
    label.setFont(font)
    label.setStyleSheet(f"color: {colour};")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    return label


class StatePanel(QFrame):
    """The pain level, class, confidence and AU cross-check in large type."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedWidth(380)
        self.setStyleSheet(f"StatePanel {{ background: {COLOUR_BACKGROUND}; border-radius: 8px; }}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        self.demo_badge = _label(22, bold=True, colour="#000000")
        self.demo_badge.setText("DEMO — NOT FOR CLINICAL USE")
        self.demo_badge.setWordWrap(True)
        self.demo_badge.setStyleSheet("background: #ffb300; color: #000; border-radius: 6px;")
        self.demo_badge.hide()
        layout.addWidget(self.demo_badge)
        self.caption = _label(20, colour=COLOUR_UNKNOWN)
        self.caption.setText(READING_CAPTION)
        layout.addWidget(self.caption)
        self.level = _label(150, bold=True, colour=COLOUR_UNKNOWN)
        self.level.setText(UNKNOWN_READING_TEXT)
        layout.addWidget(self.level)
        self.class_name = _label(38, bold=True, colour=COLOUR_UNKNOWN)
        self.class_name.setWordWrap(True)
        layout.addWidget(self.class_name)
        # What the number means, under it (the word is the band of the number shown).
        self.meaning = _label(15, colour=COLOUR_UNKNOWN)
        self.meaning.setWordWrap(True)
        self.meaning.setText(reading_explainer())
        layout.addWidget(self.meaning)
        layout.addSpacing(12)
        confidence_row = QHBoxLayout()
        # Secondary information, labelled as such: the arg-max class and its probability.
        self.confidence_caption = _label(20, colour=COLOUR_TEXT)
        self.confidence_caption.setText("Most likely class")
        self.confidence_caption.setWordWrap(True)
        confidence_row.addWidget(self.confidence_caption)
        self.confidence = QProgressBar()
        self.confidence.setRange(0, 100)
        self.confidence.setTextVisible(True)
        self.confidence.setFormat("%p %")
        self.confidence.setFixedHeight(30)
        self.confidence.setStyleSheet(
            "QProgressBar { font-size: 18px; color: #fff; background: #2a2f36; border: none; "
            "border-radius: 4px; text-align: center; } "
            "QProgressBar::chunk { background: #5c9ded; border-radius: 4px; }"
        )
        confidence_row.addWidget(self.confidence, 1)
        layout.addLayout(confidence_row)
        self.reading: Reading | None = None
        self.au_check = _label(20, colour=COLOUR_TEXT)
        self.au_check.setWordWrap(True)
        layout.addWidget(self.au_check)
        layout.addStretch(1)
        self.reason = _label(20, colour=COLOUR_UNKNOWN)
        self.reason.setWordWrap(True)
        layout.addWidget(self.reason)

    def show_result(
        self,
        result: EngineResult | None,
        settings: AlarmSettings,
        class_names: tuple[str, ...] | list[str] = DEFAULT_CLASS_NAMES,
        unknown_reason: str = "",
        unknown_headline: str = OUTPUT_UNKNOWN_HEADLINE,
        *,
        out_of_domain: bool = False,
        au_reading: float | None = None,
        reading: Reading | None = None,
    ) -> None:
        """Show the smoothed output of ``result``; unknown output shows a dash and why.

        ``reading`` (from :class:`painmon.core.live.display.DisplayState`) is the number and
        the word of its band; without it, it is derived from ``result`` by the same rule.
        ``out_of_domain``: the model cannot score this face; the AU estimate
        (``au_reading``, PSPI) is shown as the reading, in neutral colour (no alarms).
        """
        smoothed = None if result is None else result.smoothed
        if reading is None and not out_of_domain:
            reading = result_reading(result, class_names)
        self.reading = None if out_of_domain else reading
        self.confidence.setFormat("%p %")
        self.confidence_caption.setText("Most likely class")
        self.caption.setText(AU_READING_CAPTION if out_of_domain else READING_CAPTION)
        self.meaning.setText(
            "" if out_of_domain else (reading.explainer if reading else reading_explainer())
        )
        if out_of_domain:
            self.level.setText("—" if au_reading is None else f"{au_reading:.1f}")
            self.level.setStyleSheet(f"color: {COLOUR_TEXT};")
            self.class_name.setText(unknown_headline)
            self.class_name.setStyleSheet(f"color: {COLOUR_TECHNICAL};")
            # No model confidence exists for a face the model cannot score: no row for it.
            self.confidence.setValue(0)
            self.confidence.setFormat("n/a")
            self._show_confidence(False)
            self.au_check.setText(AU_BASELINE_PENDING if au_reading is None else "")
            self.reason.setText(unknown_reason)
            return
        if reading is None or smoothed is None or smoothed.unknown:
            self.level.setText(UNKNOWN_READING_TEXT)
            self.level.setStyleSheet(f"color: {COLOUR_UNKNOWN};")
            self.class_name.setText(unknown_headline)
            self.class_name.setStyleSheet(f"color: {COLOUR_UNKNOWN};")
            self.confidence.setValue(0)
            self._show_confidence(False)
            self.au_check.setText("")
            self.reason.setText(unknown_reason or (smoothed.reason if smoothed else ""))
            return
        colour = level_colour(smoothed.pain_level, settings)
        self.level.setText(reading.text)
        self.level.setStyleSheet(f"color: {colour};")
        self.class_name.setText(reading.word)
        self.class_name.setStyleSheet(f"color: {colour};")
        self._show_confidence(True)
        if reading.most_likely:
            self.confidence_caption.setText(f"Most likely class: {reading.most_likely}")
        self.confidence.setValue(reading.most_likely_pct or 0)
        if result is not None and result.au_pspi is not None:
            self.au_check.setText(f"AU cross-check: PSPI {result.au_pspi:.1f}")
        else:
            self.au_check.setText("AU cross-check: n/a (needs Face Landmarker)")
        self.reason.setText("")

    def _show_confidence(self, visible: bool) -> None:
        # Hidden while the output is unknown: an empty "n/a" bar only takes the room the
        # explanation needs on a small screen.
        self.confidence_caption.setVisible(visible)
        self.confidence.setVisible(visible)


class AlarmBanner(QFrame):
    """Pain alarm row (priority colour, Acknowledge, Audio pause) and a technical alarm row."""

    acknowledge_clicked = Signal()
    audio_pause_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(4)
        self.pain_row = QFrame()
        row = QHBoxLayout(self.pain_row)
        row.setContentsMargins(16, 6, 16, 6)
        self.text = _label(34, bold=True, colour="#ffffff")
        self.text.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.text, 1)
        self.acknowledge_button = QPushButton("Acknowledge (F2)")
        self.audio_pause_button = QPushButton("Audio pause (F3)")
        for button in (self.acknowledge_button, self.audio_pause_button):
            button.setMinimumSize(190, 54)
            button.setStyleSheet(
                "QPushButton { font-size: 22px; font-weight: bold; background: #fafafa; "
                "color: #111; border-radius: 6px; padding: 4px 12px; } "
                "QPushButton:disabled { background: #777; color: #333; }"
            )
            row.addWidget(button)
        self.acknowledge_button.clicked.connect(self.acknowledge_clicked)
        self.audio_pause_button.clicked.connect(self.audio_pause_clicked)
        outer.addWidget(self.pain_row)
        self.technical_row = _label(26, bold=True, colour="#000000")
        self.technical_row.setStyleSheet(
            f"background: {COLOUR_TECHNICAL}; color: #000; border-radius: 6px; padding: 6px;"
        )
        self.technical_row.hide()
        outer.addWidget(self.technical_row)
        self.priority = AlarmPriority.NONE
        #: a pain alarm is counting down its alarm delay (shown muted, never flashing)
        self.pending = False
        self.colour = _NO_ALARM_COLOUR
        self.show_state(None, blink_on=True)

    #: the pain row while an alarm delay runs: muted blue-grey, distinct from every alarm
    PENDING_COLOUR = "#455a64"

    def show_state(
        self,
        state: AlarmState | None,
        blink_on: bool,
        message: str = "",
        *,
        banner: BannerText | None = None,
    ) -> None:
        """Paint ``state``; ``blink_on`` is the flashing phase for unacknowledged alarms.

        ``banner`` (from :class:`painmon.core.live.display.DisplayState`) is the pain row's
        text and role; without it, it is derived from ``state`` by the same function.
        """
        priority = AlarmPriority.NONE if state is None else AlarmPriority(state.pain_priority)
        self.priority = priority
        if banner is None:
            banner = alarm_banner(state, message)
        self.pending = banner.role is ColourRole.PENDING
        if banner.role is None:
            colour = _NO_ALARM_COLOUR
        elif self.pending:
            colour = self.PENDING_COLOUR
        else:
            colour = ROLE_COLOUR[banner.role]
            if banner.flashing and not blink_on:
                colour = _BLINK_OFF_COLOUR[banner.role]
        self.colour = colour
        self.pain_row.setStyleSheet(f"background: {colour}; border-radius: 6px;")
        self.text.setText(banner.text)
        can_ack = state is not None and (state.latched or (state.active and not state.acknowledged))
        self.acknowledge_button.setEnabled(can_ack)
        remaining = None if state is None else state.audio_paused_remaining_s
        if remaining is not None:
            minutes, seconds = divmod(math.ceil(remaining), 60)
            self.audio_pause_button.setText(f"Audio paused {minutes}:{seconds:02d}")
        else:
            self.audio_pause_button.setText("Audio pause (F3)")
        technical = (
            ""
            if state is None
            else technical_alarm_text(state.technical_conditions, state.system_conditions)
        )
        if technical:
            self.technical_row.setText(technical)
            self.technical_row.show()
        else:
            self.technical_row.hide()


#: below this height the trend shows the level alone (two plots would be too thin to read)
COMPACT_TREND_PX = 240


class TrendPlot(pg.GraphicsLayoutWidget):
    """Smoothed level and confidence against wall-clock time, alarms shaded, unknown grey."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground(COLOUR_BACKGROUND)
        self.window_s = 15 * 60.0
        self.level_plot = self.addPlot(row=0, col=0, axisItems={"bottom": pg.DateAxisItem()})
        self.level_plot.setYRange(0, 4, padding=0.02)
        self.level_plot.setLabel("left", "pain level")
        self.level_plot.setMouseEnabled(x=False, y=False)
        self.level_plot.hideButtons()
        self.level_curve = self.level_plot.plot(pen=pg.mkPen("#ffffff", width=3), connect="finite")
        self.confidence_plot = self.addPlot(row=1, col=0, axisItems={"bottom": pg.DateAxisItem()})
        self.confidence_plot.setYRange(0, 1, padding=0.02)
        self.confidence_plot.setLabel("left", "confidence")
        self.confidence_plot.setMouseEnabled(x=False, y=False)
        self.confidence_plot.hideButtons()
        self.confidence_plot.setXLink(self.level_plot)
        self.ci.layout.setRowStretchFactor(0, 3)
        self.ci.layout.setRowStretchFactor(1, 1)
        self.confidence_curve = self.confidence_plot.plot(
            pen=pg.mkPen("#5c9ded", width=2), connect="finite"
        )
        self.medium_line = pg.InfiniteLine(
            angle=0, pen=pg.mkPen(COLOUR_MEDIUM, width=1, style=Qt.PenStyle.DashLine)
        )
        self.high_line = pg.InfiniteLine(
            angle=0, pen=pg.mkPen(COLOUR_HIGH, width=1, style=Qt.PenStyle.DashLine)
        )
        self.level_plot.addItem(self.medium_line)
        self.level_plot.addItem(self.high_line)
        self._regions: list[pg.LinearRegionItem] = []
        self.points_shown = 0
        #: wall-clock time of the oldest sample ever shown: until the data spans the window,
        #: the x axis runs from it to now (core.live.trend.visible_range)
        self.first_sample_s: float | None = None
        self.x_range: tuple[float, float] | None = None

        self.compact: bool | None = None
        self._set_compact(False)

    def _set_compact(self, compact: bool) -> None:
        """Below COMPACT_TREND_PX the confidence strip goes (the panel shows the most likely
        class) and the level plot keeps the height; above, one time axis under both."""
        if compact == self.compact:
            return
        was_compact, self.compact = self.compact, compact
        if compact:
            self.ci.removeItem(self.confidence_plot)
        elif was_compact:
            self.ci.addItem(self.confidence_plot, row=1, col=0)
            self.ci.layout.setRowStretchFactor(1, 1)
        self.confidence_plot.setVisible(not compact)
        self.level_plot.showAxis("bottom", compact)

    def resizeEvent(self, event: object) -> None:  # noqa: N802 - Qt override
        if hasattr(self, "compact"):  # not during the base class's construction
            self._set_compact(self.height() < COMPACT_TREND_PX)
        super().resizeEvent(event)

    def set_thresholds(self, settings: AlarmSettings) -> None:
        self.medium_line.setValue(settings.medium_threshold)
        self.high_line.setValue(settings.high_threshold)

    def show_series(self, series: TrendSeries, now_wall_s: float) -> None:
        """Draw ``series`` up to ``now_wall_s``: from the first sample until the data fills
        ``window_s``, then the last ``window_s`` seconds."""
        self.points_shown = int(series.wall_s.size)
        if series.wall_s.size:
            oldest_s = float(series.wall_s[0])
            if self.first_sample_s is None or oldest_s < self.first_sample_s:
                self.first_sample_s = oldest_s
        self.level_curve.setData(series.wall_s, series.pain_level)
        self.confidence_curve.setData(series.wall_s, series.confidence)
        spans = [
            (start, end, QColor(ROLE_COLOUR[priority_role(priority)]))
            for start, end, priority in series.episodes
        ] + [(start, end, QColor(COLOUR_UNKNOWN)) for start, end in series.unknown_spans]
        while len(self._regions) < len(spans):
            region = pg.LinearRegionItem(movable=False)
            for line in region.lines:
                line.setPen(pg.mkPen(None))
            region.setZValue(-10)
            self.level_plot.addItem(region)
            self._regions.append(region)
        for region, (start, end, colour) in zip(self._regions, spans, strict=False):
            colour.setAlpha(90 if colour.name() != COLOUR_UNKNOWN else 120)
            region.setBrush(colour)
            region.setRegion((start, end))
            region.show()
        for region in self._regions[len(spans) :]:
            region.hide()
        self.x_range = visible_range(self.first_sample_s, now_wall_s, self.window_s)
        self.level_plot.setXRange(*self.x_range, padding=0)


class ElidedLabel(QLabel):
    """One line of text elided in the middle when too narrow; the full text is its tooltip.

    ``text()`` returns the full text, ``shown_text()`` what is painted. A tooltip set
    with ``setToolTip`` (an explanation) is kept and follows the full text when elided.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full_text = ""
        self._extra_tip = ""
        self.setWordWrap(False)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        if text != self._full_text or not super().text():
            self._full_text = text
            self._elide()
            self.updateGeometry()

    def text(self) -> str:
        return self._full_text

    def shown_text(self) -> str:
        """The text as painted (with "…" in the middle when elided)."""
        return super().text()

    def is_elided(self) -> bool:
        return super().text() != self._full_text

    def setToolTip(self, tip: str) -> None:  # noqa: N802 - Qt override
        self._extra_tip = tip
        self._update_tip()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        hint = super().sizeHint()
        metrics = self.fontMetrics()
        extra = metrics.horizontalAdvance(self._full_text) - metrics.horizontalAdvance(
            super().text()
        )
        return QSize(hint.width() + max(0, extra), hint.height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt override
        hint = super().minimumSizeHint()
        margins = self.contentsMargins()
        width = self.fontMetrics().horizontalAdvance("xx…xx") + margins.left() + margins.right()
        return QSize(min(width, self.sizeHint().width()), hint.height())

    def resizeEvent(self, event: object) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = self.contentsRect().width() - 2 * self.margin()
        shown = self.fontMetrics().elidedText(
            self._full_text, Qt.TextElideMode.ElideMiddle, max(0, width)
        )
        if shown != super().text():
            super().setText(shown)
        self._update_tip()

    def _update_tip(self) -> None:
        parts = [self._full_text] if self.is_elided() else []
        if self._extra_tip:
            parts.append(self._extra_tip)
        super().setToolTip("\n\n".join(parts))
