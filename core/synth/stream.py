"""Synthetic patients, video: one scripted patient living through pain episodes, frame by frame.

An episode runs rest, rise, peak, recovery, rest (``_EPISODE_PHASES``, fractions of its length),
with the eyes squeezed shut at the height of the peak and spontaneous blinks adding brief AU43 on
top. Like a real patient the face is never still: the head sways and nods, the eyes glance
about, the light drifts, and while at rest the patient talks (the mouth opening and closing at
syllable rate) and smiles. None of that changes the pain ground truth, which stays the scripted
episode plus blinks; the truth CSV also says what the face was doing (``NUISANCE_COLUMNS``).
:class:`SyntheticPatientStream` renders frames live from :mod:`painmon.core.synth.render` (a pure
function of seed and frame index that never sleeps: the consumer paces it, and in real time
jumps over frames it cannot render in time), e.g. as the camera stand-in of
``core.live.capture``; :func:`write_video` writes one episode as an mp4 with its
per-frame ground truth in ``<stem>.truth.csv`` (``TRUTH_COLUMNS``).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from painmon.core.synth.render import (
    AU_NAMES,
    ActionUnits,
    Expression,
    Scene,
    _clip01,
    _wall,
    render_face,
    sample_identity,
    sample_scene,
)
from painmon.core.util.errors import InvalidInputError

log = logging.getLogger(__name__)

# What the face does besides pain: smile 0..1, mouth opening 0..1, speaking 0/1, gaze offset
# (face half-width units), light gain relative to the patient's base light.
NUISANCE_COLUMNS: tuple[str, ...] = (
    "smile",
    "mouth_open",
    "speaking",
    "gaze_x",
    "gaze_y",
    "light_gain",
)
TRUTH_COLUMNS: tuple[str, ...] = ("frame", "t_s", *AU_NAMES, "pspi", "label", *NUISANCE_COLUMNS)
_SPELL_MARGIN_S = 0.6  # no talking or smiling this close to the rise or after the recovery
_EPISODE_PHASES = (0.25, 0.45, 0.70, 0.90)  # rest ends, rise ends, peak ends, recovery ends


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- pain episode video


def _smoothstep(value: float) -> float:
    v = _clip01(value)
    return v * v * (3 - 2 * v)


def episode_level(t_s: float, seconds: float) -> float:
    """Scripted pain level 0..1: rest, rise, peak, recovery, rest (fractions of ``seconds``)."""
    if seconds <= 0:
        raise ValueError(f"episode length must be positive, got {seconds}")
    phase = (t_s % seconds) / seconds
    rest_end, rise_end, peak_end, recovery_end = _EPISODE_PHASES
    if phase < rest_end:
        return 0.0
    if phase < rise_end:
        return _smoothstep((phase - rest_end) / (rise_end - rest_end))
    if phase < peak_end:
        return 1.0
    if phase < recovery_end:
        return 1.0 - _smoothstep((phase - peak_end) / (recovery_end - peak_end))
    return 0.0


def episode_aus(t_s: float, seconds: float) -> ActionUnits:
    """Scripted action units at ``t_s`` (no blinks): smooth, with eyes squeezed shut mid-peak."""
    level = episode_level(t_s, seconds)
    phase = (t_s % seconds) / seconds
    peak_mid = (_EPISODE_PHASES[1] + _EPISODE_PHASES[2]) / 2
    # Eyes shut for ~8% of the episode at the height of the peak, eased in and out.
    squeeze = _clip01(1.0 - abs(phase - peak_mid) / 0.04) * 2.0 if level >= 1.0 else 0.0
    return ActionUnits(
        au4=4.0 * level,
        au6=3.6 * level,
        au7=4.0 * level,
        au9=2.6 * level,
        au10=4.0 * level,
        au43=_clip01(squeeze),
    )


def episode_pspi(t_s: float, seconds: float) -> int:
    """Scripted PSPI at ``t_s`` (no blinks): 0 at rest, 13 at the peak with eyes shut."""
    return episode_aus(t_s, seconds).pspi


class FrameTruth(NamedTuple):
    """Ground truth of one video frame (integer FACS intensities, as written to the truth CSV)."""

    frame: int
    t_s: float
    au4: int
    au6: int
    au7: int
    au9: int
    au10: int
    au43: int
    pspi: int
    label: int
    smile: float = 0.0
    mouth_open: float = 0.0
    speaking: int = 0
    gaze_x: float = 0.0
    gaze_y: float = 0.0
    light_gain: float = 1.0


class SyntheticFrame(NamedTuple):
    """One frame of the synthetic patient; unpacks as ``t_s, rgb, truth``."""

    t_s: float
    rgb: np.ndarray
    truth: FrameTruth


class SyntheticPatientStream:
    """One synthetic patient living through pain episodes, rendered live frame by frame.

    ``seconds=None`` streams forever (the episode repeats every ``episode_s``).
    Frames are a pure function of (seed, frame index); iteration never sleeps —
    the consumer paces it. A real-time consumer reads by index (:meth:`frame`,
    :meth:`index_at`) and jumps over the frames it cannot render in time, so the scripted
    timeline follows the wall clock (see ``core.live.capture.SyntheticSource``).
    """

    _BLINK_BLOCK_S = 30.0

    def __init__(
        self,
        seed: int = 0,
        fps: float = 30.0,
        seconds: float | None = None,
        episode_s: float | None = None,
        size: tuple[int, int] = (640, 360),
    ) -> None:
        if not (math.isfinite(fps) and 1.0 <= fps <= 240.0):
            raise InvalidInputError(f"fps must lie in 1..240, got {fps}")
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise InvalidInputError(f"seconds must be positive, got {seconds}")
        width, height = size
        if width < 160 or height < 120:
            raise ValueError(f"frame must be at least 160x120 px, got {width}x{height}")
        self.seed = _check_positive_int("seed", seed, minimum=0)
        self.fps = float(fps)
        self.seconds = seconds
        self.episode_s = float(episode_s if episode_s is not None else (seconds or 60.0))
        if self.episode_s <= 0:
            raise ValueError("episode_s must be positive")
        self.size = (int(width), int(height))
        rng = np.random.default_rng([self.seed, 0x51DE0])
        self.identity = sample_identity(rng)
        base = sample_scene(rng)
        self._scene = Scene(
            roll_deg=0.0,
            yaw_deg=0.0,
            light_azimuth_deg=base.light_azimuth_deg * 0.6,
            light_elevation_deg=base.light_elevation_deg,
            light_gain=base.light_gain,
            ambient=base.ambient,
            tint=base.tint,
            wall_top_rgb=base.wall_top_rgb,
            wall_bottom_rgb=base.wall_bottom_rgb,
            pillow=True,
            gaze_x=0.0,
            noise_sigma=0.0,
            blur_sigma=0.6,
            noise_seed=0,
        )
        self._sway = rng.uniform(0, 2 * math.pi, 6)
        self._background = _wall(self.size, self._scene)
        # Sensor noise from a small bank: fresh Gaussian noise per frame costs more than the face.
        noise_rng = np.random.default_rng([self.seed, 0x0015E])
        self._noise = noise_rng.normal(0, 2.5, (4, height, width, 3)).astype(np.float32)
        self.face_width_px = 0.42 * height
        self._blinks: dict[int, np.ndarray] = {}
        self._spells: dict[int, list[tuple[str, float, float, float, float]]] = {}
        self._glances: dict[int, np.ndarray] = {}
        self._drift = np.random.default_rng([self.seed, 0x11D7]).uniform(0, 2 * math.pi, 4)

    @property
    def n_frames(self) -> int | None:
        return None if self.seconds is None else round(self.seconds * self.fps)

    def index_at(self, t_s: float) -> int:
        """The first frame index whose time ``index / fps`` is at or after ``t_s``."""
        if not math.isfinite(t_s):
            raise ValueError(f"t_s must be finite, got {t_s!r}")
        return max(0, math.ceil(t_s * self.fps - 1e-9))

    def _blink_starts(self, block: int) -> np.ndarray:
        if block not in self._blinks:
            rng = np.random.default_rng([self.seed, 0xB11, block])
            gaps = rng.uniform(2.0, 6.0, 16)
            starts = block * self._BLINK_BLOCK_S + np.cumsum(gaps) - gaps[0] * rng.uniform(0, 1)
            self._blinks[block] = starts[starts < (block + 1) * self._BLINK_BLOCK_S]
        return self._blinks[block]

    def blink_closure(self, t_s: float) -> float:
        """Eyelid closure 0..1 from spontaneous blinks (close 80 ms, shut 80 ms, open 120 ms)."""
        block = int(t_s // self._BLINK_BLOCK_S)
        closure = 0.0
        for b in (block - 1, block):
            if b < 0:
                continue
            for start in self._blink_starts(b):
                dt = t_s - start
                if 0 <= dt < 0.08:
                    closure = max(closure, dt / 0.08)
                elif 0.08 <= dt < 0.16:
                    closure = 1.0
                elif 0.16 <= dt < 0.28:
                    closure = max(closure, 1 - (dt - 0.16) / 0.12)
        return closure

    def _episode_spells(self, episode: int) -> list[tuple[str, float, float, float, float]]:
        """Talking and smiling spells in the rest phases of one episode: (kind, start, end,
        strength, phase), times in seconds from the start of the stream."""
        if episode not in self._spells:
            rng = np.random.default_rng([self.seed, 0x5BEEC, episode])
            length = self.episode_s
            rest_end, _, _, recovery_end = _EPISODE_PHASES
            windows = (
                (0.0, rest_end * length - _SPELL_MARGIN_S),
                (recovery_end * length + _SPELL_MARGIN_S, length),
            )
            spells = []
            for start, stop in windows:
                cursor = start + rng.uniform(0.3, 1.2)
                while cursor + 1.0 < stop:
                    kind = "speech" if rng.random() < 0.6 else "smile"
                    end = min(stop, cursor + rng.uniform(1.5, 3.5))
                    strength, phase = rng.uniform(0.5, 1.0), rng.uniform(0, 2 * math.pi)
                    offset = episode * length
                    spells.append((kind, offset + cursor, offset + end, strength, phase))
                    cursor = end + rng.uniform(0.6, 2.0)
            self._spells[episode] = spells
        return self._spells[episode]

    def _glance_at(self, t_s: float) -> tuple[float, float]:
        """Gaze offset: fixations of 0.8-3 s, half of them straight ahead, 50 ms saccades."""
        block = int(t_s // self._BLINK_BLOCK_S)
        if block not in self._glances:
            rng = np.random.default_rng([self.seed, 0x6A2E, block])
            times = block * self._BLINK_BLOCK_S + np.cumsum(rng.uniform(0.8, 3.0, 40))
            targets = np.stack([rng.uniform(-0.06, 0.06, 40), rng.uniform(-0.02, 0.02, 40)], 1)
            targets[rng.random(40) < 0.5] = 0.0
            self._glances[block] = np.concatenate([times[:, None], targets], 1)
        table = self._glances[block]
        i = int(np.searchsorted(table[:, 0], t_s, side="right")) - 1
        previous = table[i - 1, 1:] if i >= 1 else np.zeros(2)
        if i < 0:
            return 0.0, 0.0
        ease = _clip01((t_s - table[i, 0]) / 0.05)
        gaze = previous + (table[i, 1:] - previous) * ease
        return float(gaze[0]), float(gaze[1])

    def expression_at(self, t_s: float) -> Expression:
        """Non-pain behaviour at ``t_s``: speech and smiles at rest, glances throughout."""
        episode = int(t_s // self.episode_s)
        smile = jaw = cheek = 0.0
        for kind, start, end, strength, phase in self._episode_spells(episode):
            if not start <= t_s < end:
                continue
            envelope = _smoothstep((t_s - start) / 0.3) * _smoothstep((end - t_s) / 0.3)
            if kind == "smile":
                smile = strength * envelope
                cheek = 0.4 * smile if strength > 0.75 else 0.0  # broad ones are Duchenne
            else:
                # Syllables at ~4 Hz, louder and softer words at ~1 Hz.
                syllable = max(0.0, math.sin(2 * math.pi * 4.2 * (t_s - start) + phase))
                word = 0.55 + 0.45 * math.sin(2 * math.pi * 0.9 * (t_s - start) + 2 * phase) ** 2
                jaw = strength * envelope * syllable**1.5 * word
        gaze_x, gaze_y = self._glance_at(t_s)
        return Expression(
            smile=float(smile),
            cheek_raise=float(min(cheek, 0.45)),
            jaw_drop=float(jaw),
            gaze_x=gaze_x,
            gaze_y=gaze_y,
        )

    def _speaking(self, t_s: float) -> bool:
        episode = int(t_s // self.episode_s)
        return any(
            kind == "speech" and start <= t_s < end
            for kind, start, end, _, _ in self._episode_spells(episode)
        )

    def light_drift(self, t_s: float) -> tuple[float, float]:
        """Light gain factor and azimuth offset (degrees) drifting slowly (clouds, a lamp)."""
        ph = self._drift
        gain = (
            1.0
            + 0.05 * math.sin(2 * math.pi * t_s / 17.0 + ph[0])
            + 0.03 * math.sin(2 * math.pi * t_s / 7.3 + ph[1])
        )
        azimuth = 6.0 * math.sin(2 * math.pi * t_s / 23.0 + ph[2])
        return gain, azimuth

    def truth_at(self, index: int) -> tuple[ActionUnits, FrameTruth]:
        t_s = index / self.fps
        scripted = episode_aus(t_s, self.episode_s)
        closure = max(scripted.au43, self.blink_closure(t_s))
        aus = ActionUnits(
            scripted.au4, scripted.au6, scripted.au7, scripted.au9, scripted.au10, closure
        )
        rounded = aus.rounded()
        expr = self.expression_at(t_s)
        gain, _ = self.light_drift(t_s)
        truth = FrameTruth(
            index,
            round(t_s, 4),
            *rounded,
            aus.pspi,
            aus.label,
            smile=round(expr.smile, 3),
            mouth_open=round(expr.jaw_drop, 3),
            speaking=int(self._speaking(t_s)),
            gaze_x=round(expr.gaze_x, 4),
            gaze_y=round(expr.gaze_y, 4),
            light_gain=round(gain, 4),
        )
        return aus, truth

    def frame(self, index: int) -> SyntheticFrame:
        """Render frame ``index`` (pure: same seed and index, same pixels)."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        aus, truth = self.truth_at(index)
        t_s = index / self.fps
        level = episode_level(t_s, self.episode_s)
        ph = self._sway
        motion = 1.0 + 0.8 * level  # patients in pain move more
        roll = motion * (
            3.0 * math.sin(2 * math.pi * 0.11 * t_s + ph[0])
            + 1.5 * math.sin(2 * math.pi * 0.37 * t_s + ph[1])
        )
        yaw = motion * (
            5.0 * math.sin(2 * math.pi * 0.07 * t_s + ph[2])
            + 2.0 * math.sin(2 * math.pi * 0.29 * t_s + ph[3])
        )
        width, height = self.size
        dx = motion * 0.015 * width * math.sin(2 * math.pi * 0.05 * t_s + ph[4])
        dy = motion * 0.012 * height * math.sin(2 * math.pi * 0.09 * t_s + ph[5])
        expr = self.expression_at(t_s)
        # A talking head nods with its words and tilts a little while smiling.
        dy += 0.006 * height * expr.jaw_drop
        roll += 2.0 * expr.smile * math.sin(ph[0])
        gain, azimuth = self.light_drift(t_s)
        scene = Scene(
            **{
                **self._scene.__dict__,
                "roll_deg": float(np.clip(roll, -12, 12)),
                "yaw_deg": float(np.clip(yaw, -14, 14)),
                "light_gain": float(np.clip(self._scene.light_gain * gain, 0.2, 2.0)),
                "light_azimuth_deg": self._scene.light_azimuth_deg + azimuth,
            }
        )
        rgb = render_face(
            self.identity,
            aus,
            scene,
            self.size,
            self.face_width_px,
            (width * 0.5 + dx, height * 0.47 + dy),
            self._background,
            add_noise=False,
            expression=expr,
        )
        noisy = rgb.astype(np.float32)
        noisy += self._noise[index % len(self._noise)]
        return SyntheticFrame(t_s, np.clip(noisy, 0, 255).astype(np.uint8), truth)

    def __iter__(self) -> Iterator[SyntheticFrame]:
        index = 0
        while self.n_frames is None or index < self.n_frames:
            yield self.frame(index)
            index += 1


def episode_window(seconds: float) -> tuple[float, float]:
    """When the scripted pain episode runs in a video of ``seconds``: rise start, recovery end."""
    return _EPISODE_PHASES[0] * seconds, _EPISODE_PHASES[3] * seconds


def truth_csv_path(video_path: str | Path) -> Path:
    """Per-frame ground truth of a synthetic video: ``<stem>.truth.csv`` beside it."""
    path = Path(video_path)
    return path.with_name(path.stem + ".truth.csv")


def write_video(
    path: str | Path,
    seconds: float,
    fps: float,
    seed: int,
    size: tuple[int, int] = (640, 360),
    progress: bool = False,
) -> Path:
    """Write an mp4 of one synthetic patient through one pain episode, plus ``<stem>.truth.csv``."""
    path = Path(path)
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise InvalidInputError(f"seconds must be positive, got {seconds!r}")
    stream = SyntheticPatientStream(seed=seed, fps=fps, seconds=seconds, size=size)
    if stream.n_frames is None or stream.n_frames < 1:
        raise InvalidInputError(f"{seconds} s at {fps} fps is less than one frame")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), stream.size)
    if not writer.isOpened():
        raise OSError(
            f"could not open a video writer for {path} (mp4v, {stream.size[0]}x{stream.size[1]} "
            f"@ {fps:g} fps): check the folder is writable and that OpenCV was built with FFmpeg"
        )
    frames: Iterator[SyntheticFrame] | SyntheticPatientStream = stream
    if progress:
        from painmon.core.util.progress import progress_bar

        frames = progress_bar(stream, total=stream.n_frames, desc="synthetic video", unit="frame")
    truth_path = truth_csv_path(path)
    try:
        with truth_path.open("w", newline="") as handle:
            sink = csv.writer(handle)
            sink.writerow(TRUTH_COLUMNS)
            for frame in frames:
                writer.write(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
                sink.writerow(frame.truth)
    finally:
        writer.release()
    log.info(
        "wrote %d-frame synthetic patient video %s and %s", stream.n_frames, path, truth_path.name
    )
    return path


def bench_stream(
    seconds: float = 3.0, fps: float = 30.0, seed: int = 0, size: tuple[int, int] = (640, 360)
) -> dict[str, float | int]:
    """Render ``seconds`` of the live stream as fast as possible; returns frames per second."""
    stream = SyntheticPatientStream(seed=seed, fps=fps, seconds=seconds, size=size)
    start = time.perf_counter()
    count = sum(1 for _ in stream)
    elapsed = time.perf_counter() - start
    return {
        "frames": count,
        "size": f"{size[0]}x{size[1]}",
        "seconds": round(elapsed, 3),
        "render_fps": round(count / elapsed, 1) if elapsed > 0 else float("inf"),
    }
