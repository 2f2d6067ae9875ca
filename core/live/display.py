"""What the bedside window shows, decided without Qt: one :class:`DisplayState` per repaint.

:func:`display_state` turns plain values (the newest engine result, the alarm state,
monotonic times, what the source and model are doing) into the texts, colour roles,
blink phase and sounding priority the window paints. The window only renders the
result, so every branch here is testable without a display.

Colours stay in the app: a :class:`ColourRole` names what a colour means (technical,
unknown, pain priority) and the widgets map roles to colours.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from painmon.core.live.alarms import (
    SYSTEM_CONDITION_TEXT,
    AlarmPriority,
    AlarmSettings,
    AlarmState,
    TechnicalCondition,
)
from painmon.core.live.engine import EngineResult
from painmon.core.util.labels import DEFAULT_CLASS_NAMES, NUM_CLASSES

# A live source whose newest result is older than this shows NO SIGNAL (and the trend
# records the gap), before the watchdog's own SIGNAL_LOST alarm is raised.
STALE_FRAME_S = 1.0
# Older than this, the state panel stops showing the newest result's level.
STALE_RESULT_S = 2.0
# The frame rate shown is measured over the results received in this window.
FPS_WINDOW_S = 2.0
# Banner flashing: a HIGH pain alarm blinks faster than a MEDIUM one.
HIGH_BLINK_HZ = 2.0
BLINK_HZ = 0.6
# Weight of a new sample in the displayed latency (exponential moving average).
LATENCY_SMOOTHING = 0.2

NO_MODEL_TEXT = "no model loaded — load a model (File → Open model…)"
NO_MODEL_HEADLINE = "NO MODEL LOADED"
OUTPUT_UNKNOWN_HEADLINE = "Output unknown"
OUTPUT_UNKNOWN_PREFIX = "Output unknown: "
NO_VIDEO_REASON = OUTPUT_UNKNOWN_PREFIX + "no video"
NO_SIGNAL_HEADLINE = "NO SIGNAL"
NO_SIGNAL_DETAIL = "no new images from the camera"
CONNECTING_HEADLINE = "CONNECTING…"
NO_SOURCE_HEADLINE = "NO VIDEO SOURCE"
NO_SOURCE_DETAIL = "File → Open video… or Demo patient"
NO_CAMERA_HEADLINE = "NO CAMERA"
VIDEO_ENDED_HEADLINE = "VIDEO ENDED"
MONITOR_STOPPED_HEADLINE = "MONITOR STOPPED"
#: the reason the inference worker gives when a file source simply ran out
END_OF_VIDEO = "end of video"
FPS_UNKNOWN_TEXT = "fps: –"
LATENCY_UNKNOWN_TEXT = "latency: –"

#: the short name of each technical condition, as the video, panel and banner show it
CONDITION_TEXT: Mapping[str, str] = MappingProxyType(
    {
        TechnicalCondition.NO_FACE: "NO FACE",
        TechnicalCondition.SIGNAL_LOST: "NO SIGNAL",
        TechnicalCondition.FROZEN: "VIDEO FROZEN",
        TechnicalCondition.LOW_QUALITY: "LOW QUALITY",
        TechnicalCondition.OUT_OF_DOMAIN: "CANNOT SCORE THIS FACE",
    }
)
#: what the nurse can do about each condition (LOW_QUALITY: the quality report says why)
CONDITION_DETAIL: Mapping[str, str] = MappingProxyType(
    {
        TechnicalCondition.NO_FACE: "no face in view — check the camera points at the patient",
        TechnicalCondition.FROZEN: "the camera keeps sending the same image",
        TechnicalCondition.SIGNAL_LOST: NO_SIGNAL_DETAIL,
        TechnicalCondition.OUT_OF_DOMAIN: "face unlike this model's training data — no level",
    }
)
#: the state panel's reading while the model cannot score the face (the AU estimate)
AU_READING_HEADLINE = "No pain score"
AU_READING_CAPTION = "AU estimate (PSPI 0–16)"
OUT_OF_DOMAIN_REASON = (
    "The pain model cannot score this face: it is unlike the model's training data. "
    "The training-free AU estimate is shown instead; pain alarms are off."
)
AU_BASELINE_PENDING = "AU estimate: learning this patient's neutral face…"
NO_GATE_WARNING = (
    "this model has no domain gate: it cannot tell when a face is unlike its training data"
)


#: the banner's text while no pain alarm is shown or pending
NO_PAIN_ALARM_TEXT = "No pain alarm"
#: the pain alarm row while the output is unknown (a technical condition): no claim of no pain
PAIN_NOT_MONITORED_TEXT = "Pain not monitored — output unknown"
#: the state panel's caption over the number while it shows the model's reading
READING_CAPTION = "Pain level (0–4)"
#: the caption under the number saying what it is; {smoothing} names the time constant
READING_EXPLAINER = (
    "expected pain level 0–4 (probability-weighted PSPI class){smoothing}; "
    "the word is the nearest class"
)
UNKNOWN_READING_TEXT = "—"


def reading_band(level: float | None) -> int | None:
    """The class band of a level: the nearest class (x.5 rounds up), clamped to 0..4.

    None (unknown) stays None. This is the one rule that puts a word next to a level.
    """
    if level is None:
        return None
    value = float(level)
    if not math.isfinite(value):
        raise ValueError(f"a pain level must be finite or None, got {level!r}")
    return min(NUM_CLASSES - 1, max(0, math.floor(value + 0.5)))


def reading_explainer(smoothing_time_constant_s: float | None = None) -> str:
    """What the big number means, with the smoothing time constant when it is known."""
    smoothing = (
        ", smoothed"
        if smoothing_time_constant_s is None
        else f", smoothed over {smoothing_time_constant_s:g} s"
    )
    return READING_EXPLAINER.format(smoothing=smoothing)


@dataclass(frozen=True)
class Reading:
    """The state panel's reading: the number shown and the word of its band.

    ``value`` is the level as shown (rounded to one decimal), so the word is the band
    of exactly the number a nurse reads. ``most_likely`` names the arg-max class of the
    smoothed probabilities (labelled secondary information, "" when unknown) and
    ``most_likely_pct`` its probability in percent.
    """

    value: float
    text: str
    band: int
    word: str
    explainer: str
    most_likely: str = ""
    most_likely_pct: int | None = None

    def __post_init__(self) -> None:
        if self.text != f"{self.value:.1f}":
            raise ValueError(f"text {self.text!r} is not the value {self.value!r} as shown")
        if self.band != reading_band(self.value):
            raise ValueError(f"band {self.band} is not the band of {self.value:.1f}")
        if not self.word:
            raise ValueError("a reading needs a word")
        pct = self.most_likely_pct
        if pct is not None and not 0 <= pct <= 100:
            raise ValueError(f"most_likely_pct must lie in 0..100, got {pct!r}")


def class_word(band: int, class_names: Sequence[str]) -> str:
    """The display name of class ``band`` (its number when the model names fewer classes)."""
    return class_names[band] if 0 <= band < len(class_names) else str(band)


def reading(
    level: float,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    *,
    smoothing_time_constant_s: float | None = None,
    most_likely_class: int | None = None,
    confidence: float | None = None,
) -> Reading:
    """The reading of a known smoothed ``level``: number, band word and what it means."""
    text = f"{float(level):.1f}"
    value = float(text)
    band = reading_band(value)
    assert band is not None
    names = tuple(class_names) or DEFAULT_CLASS_NAMES
    return Reading(
        value=value,
        text=text,
        band=band,
        word=class_word(band, names),
        explainer=reading_explainer(smoothing_time_constant_s),
        most_likely="" if most_likely_class is None else class_word(most_likely_class, names),
        most_likely_pct=None if confidence is None else round(100 * float(confidence)),
    )


def result_reading(
    result: EngineResult | None,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    smoothing_time_constant_s: float | None = None,
) -> Reading | None:
    """The reading of a result's smoothed output; None when it is unknown or absent."""
    if result is None or result.out_of_domain:
        return None
    smoothed = result.smoothed
    if smoothed.unknown or smoothed.pain_level is None:
        return None
    return reading(
        smoothed.pain_level,
        class_names,
        smoothing_time_constant_s=smoothing_time_constant_s,
        most_likely_class=smoothed.pain_class,
        confidence=smoothed.confidence,
    )


def model_warning(model_has_gate: bool) -> str:
    """The status bar's model warning ("" when none)."""
    return "" if model_has_gate else NO_GATE_WARNING


class ColourRole(enum.StrEnum):
    """What a painted colour means; the app maps each role to its colour."""

    NORMAL = "normal"
    MEDIUM = "medium"
    HIGH = "high"
    UNKNOWN = "unknown"
    TECHNICAL = "technical"
    #: a pain alarm counting down its alarm delay: not an alarm yet (muted, no flashing)
    PENDING = "pending"


@dataclass(frozen=True)
class SourceProblem:
    """Why the video source is not delivering: a headline and a line the nurse can act on."""

    headline: str
    detail: str

    def __post_init__(self) -> None:
        if not self.headline:
            raise ValueError("a SourceProblem needs a headline")


def source_failed(source_name: str, message: str) -> SourceProblem:
    """The source could not be opened."""
    headline = NO_CAMERA_HEADLINE if source_name.startswith("camera:") else NO_SOURCE_HEADLINE
    return SourceProblem(headline, message)


def source_ended(reason: str) -> SourceProblem:
    """The media ended (a file) or capture failed (anything else)."""
    return SourceProblem(
        VIDEO_ENDED_HEADLINE if reason == END_OF_VIDEO else NO_SIGNAL_HEADLINE, reason
    )


def monitor_stopped(message: str) -> SourceProblem:
    """The engine failed and monitoring of the source stopped."""
    return SourceProblem(MONITOR_STOPPED_HEADLINE, message)


def condition_text(condition: str) -> str:
    """The short display name of a technical condition."""
    return CONDITION_TEXT[TechnicalCondition(condition)]


def technical_alarm_text(conditions: Iterable[str], system_conditions: Iterable[str] = ()) -> str:
    """The technical alarm row's text, or "" when no technical alarm is active.

    ``system_conditions`` (``AlarmState.system_conditions``, e.g. the central station not
    reached) are named after the picture's conditions; they leave the pain output known.
    """
    names = ", ".join(condition_text(c) for c in conditions)
    text = f"TECHNICAL ALARM: {names} — pain output unknown" if names else ""
    system = ", ".join(SYSTEM_CONDITION_TEXT.get(c, str(c)) for c in system_conditions)
    if system:
        text = f"{text}; {system}" if text else f"TECHNICAL ALARM: {system}"
    return text


def level_role(level: float | None, settings: AlarmSettings) -> ColourRole:
    """Colour role of a smoothed level against the alarm thresholds; unknown when None."""
    if level is None:
        return ColourRole.UNKNOWN
    if level >= settings.high_threshold:
        return ColourRole.HIGH
    if level >= settings.medium_threshold:
        return ColourRole.MEDIUM
    return ColourRole.NORMAL


def priority_role(priority: str) -> ColourRole:
    """Colour role of a pain alarm priority (medium or high)."""
    return ColourRole.HIGH if priority == AlarmPriority.HIGH else ColourRole.MEDIUM


_RANK = {AlarmPriority.NONE: 0, AlarmPriority.MEDIUM: 1, AlarmPriority.HIGH: 2}


@dataclass(frozen=True)
class BannerText:
    """The pain alarm row: its text, colour role (None: no alarm) and whether it flashes.

    A pending alarm (the alarm delay is running) has the PENDING role and never flashes.
    """

    text: str
    role: ColourRole | None
    flashing: bool = False

    def __post_init__(self) -> None:
        if not self.text:
            raise ValueError("the banner needs a text")
        if self.flashing and self.role not in (ColourRole.MEDIUM, ColourRole.HIGH):
            raise ValueError("only a MEDIUM or HIGH pain alarm flashes")


def _whole_seconds(in_s: float) -> int:
    """Seconds left, rounded up: a countdown never says 0 s before the alarm comes."""
    return max(1, math.ceil(in_s - 1e-6))


def pending_text(priority: str, in_s: float) -> str:
    """'HIGH in 4 s': the alarm an onset or escalation timer counts towards."""
    return f"{AlarmPriority(priority).value.upper()} in {_whole_seconds(in_s)} s"


def alarm_banner(state: AlarmState | None, message: str = "") -> BannerText:
    """The pain alarm row for ``state``: alarm, pending alarm ("MEDIUM pain alarm in 7 s")
    or none. ``message`` replaces the active alarm's own words. No state yet (a source
    starting, a model just switched) is "Pain not monitored": nothing is known."""
    if state is None:
        return BannerText(PAIN_NOT_MONITORED_TEXT, None)
    priority = AlarmPriority(state.pain_priority)
    pending = state.pending_priority
    if priority is AlarmPriority.NONE:
        if state.output_unknown:
            # A technical condition hides the pain output: never say "no pain alarm" then.
            return BannerText(PAIN_NOT_MONITORED_TEXT, None)
        if pending is None or state.pending_in_s is None:
            return BannerText(NO_PAIN_ALARM_TEXT, None)
        seconds = _whole_seconds(state.pending_in_s)
        return BannerText(f"{pending.upper()} pain alarm in {seconds} s", ColourRole.PENDING)
    text = message or f"{priority.value.upper()} PAIN ALARM"
    if state.latched and not state.active:
        text += " (latched — acknowledge)"
    elif state.acknowledged:
        text += " — acknowledged"
    # Escalation pending (a latched HIGH outranks any new MEDIUM: nothing to add then).
    if (
        pending is not None
        and state.pending_in_s is not None
        and _RANK[AlarmPriority(pending)] > _RANK[priority]
    ):
        text += " — " + pending_text(pending, state.pending_in_s)
    sounding = state.latched or not state.acknowledged
    return BannerText(text, priority_role(priority), flashing=sounding)


def smooth_latency_ms(previous_ms: float | None, sample_ms: float) -> float:
    """The displayed latency after one more sample (a moving average, so it does not flicker)."""
    if previous_ms is None:
        return sample_ms
    return (1.0 - LATENCY_SMOOTHING) * previous_ms + LATENCY_SMOOTHING * sample_ms


@dataclass(frozen=True, eq=False)
class DisplayState:
    """Everything one repaint of the bedside window shows, decided in :func:`display_state`.

    ``panel_result`` is the result the state panel shows (None: output unknown, with
    ``panel_headline`` and ``panel_reason``); ``sound_priority`` is the pain alarm whose
    tone plays (None: silence); ``blink_on`` is the banner's flashing phase.
    """

    video_headline: str
    video_detail: str
    video_role: ColourRole
    panel_result: EngineResult | None
    panel_headline: str
    panel_reason: str
    class_names: tuple[str, ...]
    result_stale: bool
    alarm_state: AlarmState | None
    blink_hz: float
    blink_on: bool
    sound_priority: AlarmPriority | None
    fps: float | None
    fps_text: str
    latency_text: str
    # While the model cannot score the face (out of domain) the panel shows the AU
    # estimate instead: ``au_reading`` is its PSPI (None: no baseline yet).
    out_of_domain: bool = False
    au_reading: float | None = None
    # The model's reading on the state panel (None: no known level shown) and the pain
    # alarm row (alarm, pending alarm or none).
    reading: Reading | None = None
    banner: BannerText = BannerText(PAIN_NOT_MONITORED_TEXT, None)

    @property
    def reading_value(self) -> float | None:
        """The number the state panel shows (None: unknown)."""
        return None if self.reading is None else self.reading.value

    @property
    def reading_word(self) -> str:
        """The word under the number: the band of ``reading_value`` ("" when unknown)."""
        return "" if self.reading is None else self.reading.word

    def __post_init__(self) -> None:
        if not (math.isfinite(self.blink_hz) and self.blink_hz > 0):
            raise ValueError(f"blink_hz must be > 0, got {self.blink_hz!r}")
        if self.sound_priority not in (None, AlarmPriority.MEDIUM, AlarmPriority.HIGH):
            raise ValueError(f"only a MEDIUM or HIGH alarm sounds, got {self.sound_priority!r}")
        if self.panel_result is not None and self.result_stale:
            raise ValueError("a stale result must not be shown on the state panel")
        if not self.class_names:
            raise ValueError("class_names must not be empty")
        if self.au_reading is not None and not self.out_of_domain:
            raise ValueError("the AU estimate is the reading only while out of domain")
        if self.reading is not None and (self.panel_result is None or self.out_of_domain):
            raise ValueError("a model reading needs a current, in-domain result")


def display_state(
    result: EngineResult | None,
    alarm_state: AlarmState | None,
    now_s: float,
    *,
    last_result_s: float | None,
    receive_times_s: Sequence[float] = (),
    latency_ms: float | None = None,
    source_name: str = "",
    source_live: bool = False,
    worker_running: bool = False,
    source_problem: SourceProblem | None = None,
    model_loaded: bool = True,
    class_names: Sequence[str] = (),
    model_error: str = "",
    sound_held_until_s: float | None = None,
    smoothing_time_constant_s: float | None = None,
) -> DisplayState:
    """What the window shows at monotonic time ``now_s``.

    ``last_result_s`` and ``receive_times_s`` are the monotonic times results arrived
    (None / empty before the first); ``sound_held_until_s`` mutes the tone until the
    engine answered an operator's acknowledge or audio pause;
    ``smoothing_time_constant_s`` goes into the caption saying what the number means.
    """
    headline, detail, role = _video_message(
        result,
        alarm_state,
        now_s,
        last_result_s=last_result_s,
        source_name=source_name,
        source_live=source_live,
        worker_running=worker_running,
        source_problem=source_problem,
    )
    # Once the source has ended or failed, the last reading is history, not the patient now.
    stale = (
        last_result_s is None
        or now_s - last_result_s > STALE_RESULT_S
        or source_problem is not None
    )
    if not model_loaded:
        panel_result = None
        panel_headline = NO_MODEL_HEADLINE
        panel_reason = NO_MODEL_TEXT + (f"\n\n{model_error}" if model_error else "")
        names = DEFAULT_CLASS_NAMES
    else:
        panel_headline = OUTPUT_UNKNOWN_HEADLINE
        names = tuple(class_names) or DEFAULT_CLASS_NAMES
        if stale:
            panel_result, panel_reason = None, NO_VIDEO_REASON
        else:
            panel_result, panel_reason = result, ""
            if result is not None and result.out_of_domain:
                panel_headline, panel_reason = AU_READING_HEADLINE, OUT_OF_DOMAIN_REASON
            elif result is not None and result.technical_condition:
                panel_reason = (
                    OUTPUT_UNKNOWN_PREFIX + condition_text(result.technical_condition).lower()
                )
    out_of_domain = model_loaded and not stale and result is not None and result.out_of_domain

    high = alarm_state is not None and alarm_state.pain_priority == AlarmPriority.HIGH
    blink_hz = HIGH_BLINK_HZ if high else BLINK_HZ
    held = sound_held_until_s is not None and now_s < sound_held_until_s
    sounding = alarm_state is not None and alarm_state.audio_active and not held
    fps = _fps(receive_times_s, now_s)
    return DisplayState(
        video_headline=headline,
        video_detail=detail,
        video_role=role,
        panel_result=panel_result,
        panel_headline=panel_headline,
        panel_reason=panel_reason,
        class_names=tuple(names),
        result_stale=stale,
        alarm_state=alarm_state,
        blink_hz=blink_hz,
        blink_on=int(now_s * blink_hz * 2) % 2 == 0,
        sound_priority=(
            AlarmPriority(alarm_state.pain_priority)
            if sounding and alarm_state is not None
            else None
        ),
        fps=fps,
        fps_text=FPS_UNKNOWN_TEXT if fps is None else f"{fps:4.1f} fps",
        latency_text=LATENCY_UNKNOWN_TEXT if latency_ms is None else f"latency {latency_ms:.0f} ms",
        out_of_domain=out_of_domain,
        au_reading=result.au_pspi if out_of_domain and result is not None else None,
        reading=(
            None
            if out_of_domain
            else result_reading(panel_result, names, smoothing_time_constant_s)
        ),
        banner=alarm_banner(alarm_state),
    )


def _video_message(
    result: EngineResult | None,
    alarm_state: AlarmState | None,
    now_s: float,
    *,
    last_result_s: float | None,
    source_name: str,
    source_live: bool,
    worker_running: bool,
    source_problem: SourceProblem | None,
) -> tuple[str, str, ColourRole]:
    """Headline, detail and colour role of the message over the video ("" = none)."""
    technical = alarm_state.technical_conditions if alarm_state is not None else ()
    live_stale = source_live and last_result_s is not None and now_s - last_result_s > STALE_FRAME_S
    if source_problem is not None:
        return source_problem.headline, source_problem.detail, ColourRole.TECHNICAL
    if TechnicalCondition.SIGNAL_LOST in technical or live_stale:
        return NO_SIGNAL_HEADLINE, NO_SIGNAL_DETAIL, ColourRole.TECHNICAL
    if worker_running and last_result_s is None:
        return CONNECTING_HEADLINE, source_name, ColourRole.UNKNOWN
    if result is not None and result.technical_condition is not None:
        condition = TechnicalCondition(result.technical_condition)
        if condition is TechnicalCondition.LOW_QUALITY:
            detail = result.quality.describe()
        else:
            detail = CONDITION_DETAIL[condition]
        return CONDITION_TEXT[condition], detail, ColourRole.TECHNICAL
    if not worker_running and result is None:
        return NO_SOURCE_HEADLINE, NO_SOURCE_DETAIL, ColourRole.UNKNOWN
    return "", "", ColourRole.UNKNOWN


def _fps(receive_times_s: Sequence[float], now_s: float) -> float | None:
    """Results per second over the last :data:`FPS_WINDOW_S`; None with fewer than two."""
    recent = [t for t in receive_times_s if now_s - t <= FPS_WINDOW_S]
    if len(recent) < 2:
        return None
    span_s = recent[-1] - recent[0]
    return (len(recent) - 1) / span_s if span_s > 0 else 0.0
