"""The alarm popup: one in-window notice per pain alarm episode that follows the alarm.

:class:`PopupTracker` (plain Python, no Qt) decides from each :class:`AlarmState`
whether the popup shows and what it says; :class:`AlarmPopup` paints that. The popup
is a child frame floating over the trend area of the window, never a separate
top-level window: it cannot cover the video, take the keyboard focus from whatever
has it, or sit between the nurse and the menus.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from painmon.core.live.alarms import AlarmEventKind, AlarmPriority, AlarmState

#: application-wide shortcuts (IEC 60601-1-8 wants the alarm controls reachable at once)
ACKNOWLEDGE_KEY = "F2"
AUDIO_PAUSE_KEY = "F3"
ACKNOWLEDGE_TEXT = f"Acknowledge ({ACKNOWLEDGE_KEY})"
AUDIO_PAUSE_TEXT = f"Audio pause ({AUDIO_PAUSE_KEY})"

_POPUP_COLOURS = {AlarmPriority.HIGH: "#e53935", AlarmPriority.MEDIUM: "#f5a623"}
# Events whose message says best why the popup is up (newest wins).
_EXPLAINING_KINDS = frozenset(
    {AlarmEventKind.ONSET, AlarmEventKind.ESCALATION, AlarmEventKind.REMINDER, AlarmEventKind.LATCH}
)


def needs_attention(state: AlarmState | None) -> bool:
    """True while the pain alarm waits for the nurse: active and unacknowledged, or latched."""
    return state is not None and (state.latched or (state.active and not state.acknowledged))


def _local_time(utc_iso: str | None) -> str:
    if not utc_iso:
        return ""
    try:
        return datetime.fromisoformat(utc_iso).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return ""


@dataclass(frozen=True)
class PopupView:
    """What the popup shows: its priority, a title line and the reason."""

    priority: AlarmPriority
    title: str
    detail: str

    def __post_init__(self) -> None:
        if self.priority not in (AlarmPriority.MEDIUM, AlarmPriority.HIGH):
            raise ValueError(f"a popup is for a MEDIUM or HIGH pain alarm, got {self.priority!r}")
        if not self.title:
            raise ValueError("a popup needs a title")


class PopupTracker:
    """Follows the alarm states: which popup to show (None: none) and how many episodes had one.

    The popup shows while the alarm needs attention (:func:`needs_attention`), so it
    closes on acknowledge however it was given and when the episode ends, and it comes
    back for an escalation or a reminder of the same episode without counting a new one.
    """

    def __init__(self) -> None:
        #: episodes that opened a popup
        self.episodes = 0
        self._counted = False
        self._detail = ""
        self.view: PopupView | None = None

    def update(self, state: AlarmState | None) -> PopupView | None:
        """The popup for ``state`` (None: hidden)."""
        if state is None or state.pain_priority == AlarmPriority.NONE:
            self._counted, self._detail, self.view = False, "", None
            return None
        onset = False
        for event in state.new_events:
            if event.kind in _EXPLAINING_KINDS:
                self._detail = event.message
            if event.kind == AlarmEventKind.ONSET:
                onset = True
        if onset:
            self._counted = False  # a new episode (also one during a latched HIGH)
        if not needs_attention(state):
            self.view = None
            return None
        if not self._counted:
            self._counted = True
            self.episodes += 1
        priority = AlarmPriority(state.pain_priority)
        title = f"{priority.upper()} PAIN ALARM"
        if state.latched and not state.active:
            title += " — latched"
        facts = []
        since = _local_time(state.last_trigger_utc)
        if since:
            facts.append(f"since {since}")
        if state.pain_level is not None:
            facts.append(f"level now {state.pain_level:.1f}")
        detail = " · ".join(facts)
        detail = "\n".join(part for part in (detail, self._detail) if part)
        self.view = PopupView(priority, title, detail or title)
        return self.view


class AlarmPopup(QFrame):
    """The in-window popup: priority colour, what happened, Acknowledge and Audio pause."""

    acknowledge_clicked = Signal()
    audio_pause_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("alarmPopup")
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(14, 8, 10, 8)
        layout.setSpacing(10)
        texts = QVBoxLayout()
        texts.setSpacing(2)
        self.title = QLabel()
        self.title.setStyleSheet("color: #fff; font-size: 22px; font-weight: bold;")
        self.title.setWordWrap(True)
        self.detail = QLabel()
        self.detail.setStyleSheet("color: #fff; font-size: 15px;")
        self.detail.setWordWrap(True)
        texts.addWidget(self.title)
        texts.addWidget(self.detail)
        layout.addLayout(texts, 1)
        self.acknowledge_button = QPushButton(ACKNOWLEDGE_TEXT)
        self.audio_pause_button = QPushButton(AUDIO_PAUSE_TEXT)
        for button in (self.acknowledge_button, self.audio_pause_button):
            # Clicking must not move the focus away from where the nurse left it.
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.setStyleSheet(
                "QPushButton { font-size: 17px; font-weight: bold; background: #fafafa; "
                "color: #111; border-radius: 6px; padding: 6px 10px; }"
            )
            layout.addWidget(button)
        self.acknowledge_button.clicked.connect(self.acknowledge_clicked)
        self.audio_pause_button.clicked.connect(self.audio_pause_clicked)
        self.priority: AlarmPriority | None = None
        self.hide()

    def show_view(self, view: PopupView | None) -> None:
        """Show ``view`` (updating the popup already up) or hide the popup for None."""
        if view is None:
            self.priority = None
            self.hide()
            return
        if view.priority != self.priority:
            self.priority = view.priority
            self.setStyleSheet(
                f"QFrame#alarmPopup {{ background: {_POPUP_COLOURS[view.priority]}; "
                "border: 3px solid #fff; border-radius: 8px; }"
            )
        if self.title.text() != view.title:
            self.title.setText(view.title)
        if self.detail.text() != view.detail:
            self.detail.setText(view.detail)
        if self.isHidden():
            self.show()
        self.raise_()
