"""Alarm tones: a deterministic generator for the shipped .wav files and the player.

The patterns follow the shape of IEC 60601-1-8 auditory alarm signals: HIGH is a
burst of 10 pulses (3 + 2, pause, 3 + 2), MEDIUM a burst of 3 pulses; each pulse
is a fundamental with four harmonics (a "melodic" tone is easier to localise than
a sine) with short ramps so it does not click. Regenerate the assets with
``python -m painmon.app.sound``.

Playback uses QtMultimedia's QSoundEffect (PySide6-Addons) to play one burst;
:class:`TonePattern` repeats it, HIGH every 5 s and MEDIUM every 10 s. Without
QtMultimedia (or its libpulse) or without an audio output device
:class:`AlarmSound` reports itself unavailable and the visual alarm carries the
alarm alone: a missing speaker must never break an alarm.
"""

from __future__ import annotations

import io
import logging
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.live.alarms import AlarmPriority

log = logging.getLogger(__name__)

_HIGH, _MEDIUM = AlarmPriority.HIGH, AlarmPriority.MEDIUM

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
SAMPLE_RATE_HZ = 8000
TONE_FILES: dict[str, str] = {_HIGH: "alarm_high.wav", _MEDIUM: "alarm_medium.wav"}
SOUND_UNAVAILABLE = "sound unavailable — visual alarms only"

# (pulse start times in s) per priority; each pulse lasts _PULSE_S.
_PULSE_STARTS_S: dict[str, tuple[float, ...]] = {
    _HIGH: (0.0, 0.2, 0.4, 0.8, 1.0, 1.8, 2.0, 2.2, 2.6, 2.8),
    _MEDIUM: (0.0, 0.3, 0.6),
}
_PULSE_S = {_HIGH: 0.15, _MEDIUM: 0.2}
_FUNDAMENTAL_HZ = {_HIGH: 660.0, _MEDIUM: 520.0}
_RAMP_S = 0.02
_TAIL_S = 0.3
# Bursts repeat every so many seconds (IEC 60601-1-8 allows 2.5-15 s for HIGH, 2.5-30 s for
# MEDIUM); the HIGH burst itself lasts 3.25 s, the MEDIUM one 1.1 s.
BURST_INTERVAL_S: dict[str, float] = {_HIGH: 5.0, _MEDIUM: 10.0}


def tone_samples(priority: str) -> np.ndarray:
    """The int16 mono samples of one alarm burst for ``priority`` ("high" or "medium")."""
    if priority not in _PULSE_STARTS_S:
        raise ValueError(f"no alarm tone for priority {priority!r}; use high or medium")
    pulse_s = _PULSE_S[priority]
    total_s = _PULSE_STARTS_S[priority][-1] + pulse_s + _TAIL_S
    signal = np.zeros(round(total_s * SAMPLE_RATE_HZ), dtype=np.float64)
    n = round(pulse_s * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    f0 = _FUNDAMENTAL_HZ[priority]
    pulse = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    ramp = np.minimum(1.0, np.minimum(t, pulse_s - t) / _RAMP_S)
    pulse = pulse * np.clip(ramp, 0.0, 1.0)
    pulse /= np.abs(pulse).max()
    for start_s in _PULSE_STARTS_S[priority]:
        i = round(start_s * SAMPLE_RATE_HZ)
        signal[i : i + n] += pulse
    return np.round(signal * 0.6 * 32767).astype(np.int16)


def wav_bytes(priority: str) -> bytes:
    """A complete .wav file (16-bit mono) of the tone for ``priority``."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE_HZ)
        out.writeframes(tone_samples(priority).astype("<i2").tobytes())
    return buffer.getvalue()


def write_alarm_tones(folder: str | Path = ASSETS_DIR) -> list[Path]:
    """Write every alarm tone into ``folder`` (byte-identical on every run)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for priority, name in TONE_FILES.items():
        path = folder / name
        path.write_bytes(wav_bytes(priority))
        written.append(path)
    return written


class TonePattern:
    """When to start the next alarm burst: at once on a new priority, then every interval.

    Pure timing (no Qt): ``update(now_s, priority)`` returns the priority whose
    burst must start now, or None.
    """

    def __init__(self, burst_interval_s: dict[str, float] | None = None) -> None:
        self.burst_interval_s = dict(
            BURST_INTERVAL_S if burst_interval_s is None else burst_interval_s
        )
        self.priority: str | None = None
        self._next_burst_s: float | None = None

    def update(self, now_s: float, priority: str | None) -> str | None:
        if priority is not None and priority not in self.burst_interval_s:
            raise ValueError(f"no alarm tone for priority {priority!r}; use high or medium")
        if priority != self.priority:
            self.priority = priority
            self._next_burst_s = None if priority is None else now_s
        if self.priority is None or self._next_burst_s is None or now_s < self._next_burst_s:
            return None
        # Bursts keep their rhythm after a late tick instead of drifting with the GUI timer.
        interval_s = self.burst_interval_s[self.priority]
        while self._next_burst_s <= now_s:
            self._next_burst_s += interval_s
        return self.priority


def _default_effect_factory() -> tuple[Callable[[Path], Any] | None, str]:
    """A QSoundEffect factory, or None and why sound cannot play here."""
    try:
        from PySide6.QtCore import QUrl
        from PySide6.QtMultimedia import QMediaDevices, QSoundEffect
    except ImportError as exc:
        # PySide6-Addons missing, or its system audio library (libpulse) missing.
        return None, f"{SOUND_UNAVAILABLE} (QtMultimedia unavailable: {exc})"
    if not QMediaDevices.audioOutputs():
        return None, f"{SOUND_UNAVAILABLE} (no audio output device)"

    def make(path: Path) -> Any:
        effect = QSoundEffect()
        effect.setSource(QUrl.fromLocalFile(str(path)))
        effect.setLoopCount(1)  # one burst; TonePattern repeats it
        return effect

    return make, ""


class AlarmSound:
    """Plays the sounding priority's burst pattern, or stays silent and says why.

    ``play(priority)`` is called on every GUI refresh with the priority whose
    audio is active (None while paused, acknowledged or quiet); it never raises,
    so the visual alarm is never affected by the audio.
    """

    def __init__(
        self,
        folder: str | Path = ASSETS_DIR,
        *,
        effect_factory: Callable[[Path], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._effects: dict[str, Any] = {}
        self._clock = clock
        self.pattern = TonePattern()
        self.bursts_started = 0
        self.reason = ""
        factory = effect_factory
        if factory is None:
            factory, self.reason = _default_effect_factory()
        if factory is None:
            log.warning("%s", self.reason)
            return
        for priority, name in TONE_FILES.items():
            path = Path(folder) / name
            if not path.is_file():
                self.reason = f"{SOUND_UNAVAILABLE} (tone file {path} missing)"
                log.warning("%s", self.reason)
                self._effects.clear()
                return
            self._effects[priority] = factory(path)

    @property
    def available(self) -> bool:
        return bool(self._effects)

    @property
    def priority(self) -> str | None:
        return self.pattern.priority

    def play(self, priority: str | None) -> None:
        """Sound ``priority``'s pattern ("high"/"medium"), or silence with None."""
        if priority != self.pattern.priority:
            self._stop_effects()
        start = self.pattern.update(self._clock(), priority)
        if start is None or start not in self._effects:
            return
        self.bursts_started += 1
        try:
            self._effects[start].play()
        except RuntimeError as exc:  # a vanished audio device must not break the alarm
            log.error("alarm sound failed: %s", exc)

    def stop(self) -> None:
        """Silence now (acknowledge, audio pause, shutdown)."""
        self.play(None)

    def _stop_effects(self) -> None:
        for effect in self._effects.values():
            try:
                effect.stop()
            except RuntimeError as exc:
                log.error("alarm sound failed to stop: %s", exc)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for written in write_alarm_tones(sys.argv[1] if len(sys.argv) > 1 else ASSETS_DIR):
        log.info("wrote %s (%d bytes)", written, written.stat().st_size)
