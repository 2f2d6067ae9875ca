"""Alarm tones: a deterministic generator for the shipped .wav files and the player.

The patterns follow the shape of IEC 60601-1-8 auditory alarm signals: HIGH is a
burst of 10 pulses (3 + 2, pause, 3 + 2), MEDIUM a burst of 3 pulses; each pulse
is a fundamental with four harmonics (a "melodic" tone is easier to localise than
a sine) with short ramps so it does not click. Regenerate the assets with
``python -m painmon.app.sound``.

Playback uses QtMultimedia's QSoundEffect only when PySide6-Addons is installed;
without it (or without an audio device) :class:`AlarmSound` reports itself
unavailable and the visual alarm carries the alarm alone: a missing speaker must
never break an alarm.
"""

from __future__ import annotations

import io
import logging
import sys
import wave
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
SAMPLE_RATE_HZ = 8000
TONE_FILES: dict[str, str] = {"high": "alarm_high.wav", "medium": "alarm_medium.wav"}
SOUND_UNAVAILABLE = "sound unavailable — visual alarms only"

# (pulse start times in s) per priority; each pulse lasts _PULSE_S.
_PULSE_STARTS_S: dict[str, tuple[float, ...]] = {
    "high": (0.0, 0.2, 0.4, 0.8, 1.0, 1.8, 2.0, 2.2, 2.6, 2.8),
    "medium": (0.0, 0.3, 0.6),
}
_PULSE_S = {"high": 0.15, "medium": 0.2}
_FUNDAMENTAL_HZ = {"high": 660.0, "medium": 520.0}
_RAMP_S = 0.02
_TAIL_S = 0.3


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


class AlarmSound:
    """Loops the tone of the sounding priority, or stays silent and says why."""

    def __init__(self, folder: str | Path = ASSETS_DIR) -> None:
        self._effects: dict[str, object] = {}
        self.priority: str | None = None
        self.reason = ""
        try:
            from PySide6.QtCore import QUrl
            from PySide6.QtMultimedia import QSoundEffect
        except ImportError:
            self.reason = SOUND_UNAVAILABLE + " (QtMultimedia is not installed)"
            log.warning("%s", self.reason)
            return
        for priority, name in TONE_FILES.items():
            path = Path(folder) / name
            if not path.is_file():
                self.reason = f"{SOUND_UNAVAILABLE} (tone file {path} missing)"
                log.warning("%s", self.reason)
                self._effects.clear()
                return
            effect = QSoundEffect()
            effect.setSource(QUrl.fromLocalFile(str(path)))
            effect.setLoopCount(QSoundEffect.Loop.Infinite.value)
            self._effects[priority] = effect

    @property
    def available(self) -> bool:
        return bool(self._effects)

    def play(self, priority: str | None) -> None:
        """Sound ``priority``'s pattern ("high"/"medium"), or silence with None."""
        if priority == self.priority:
            return
        self.priority = priority
        for name, effect in self._effects.items():
            try:
                if name == priority:
                    effect.play()  # type: ignore[attr-defined]
                else:
                    effect.stop()  # type: ignore[attr-defined]
            except RuntimeError as exc:  # a vanished audio device must not break the alarm
                log.error("alarm sound failed: %s", exc)

    def stop(self) -> None:
        self.play(None)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for written in write_alarm_tones(sys.argv[1] if len(sys.argv) > 1 else ASSETS_DIR):
        log.info("wrote %s (%d bytes)", written, written.stat().st_size)
