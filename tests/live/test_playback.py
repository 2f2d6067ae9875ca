"""Real-time playback: media time keeps up with the wall clock, late frames are dropped and
counted, ``every_frame`` (pull mode) still plays every frame in order."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from painmon.core.live.capture import (
    CATCH_UP_SLACK_S,
    CaptureStats,
    CaptureThread,
    ImageFolderSource,
    SyntheticSource,
    VideoFileSource,
    synthetic_patient_factory,
)
from painmon.core.live.playback import PlaybackMeter, playback_text

FPS = 25.0
N_FRAMES = 125  # 5 s


class FakeClock:
    """A monotonic clock that moves only when told (thread-safe)."""

    def __init__(self, start_s: float = 100.0) -> None:
        self.now_s = start_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now_s

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now_s += seconds


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 5 s, 25 fps MJPG clip whose frames carry their index in the pixel values."""
    path = tmp_path_factory.mktemp("playback") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(np.full((48, 64, 3), (i * 2) % 256, np.uint8))
    writer.release()
    return path


class SlowCapture:
    """cv2.VideoCapture whose reads cost fake time: a decoder slower than the media rate."""

    def __init__(self, path: str, clock: FakeClock, read_s: float, grab_s: float) -> None:
        self._inner = cv2.VideoCapture(path)
        self._clock, self._read_s, self._grab_s = clock, read_s, grab_s
        self.grabs = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def read(self):
        self._clock.advance(self._read_s)
        return self._inner.read()

    def grab(self):
        self.grabs += 1
        self._clock.advance(self._grab_s)
        return self._inner.grab()

    def retrieve(self):
        self._clock.advance(self._read_s - self._grab_s)
        return self._inner.retrieve()


def _run_paced(source, clock: FakeClock) -> tuple[CaptureThread, list[float]]:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    cap = CaptureThread(source, clock=clock, realtime=True, sleep=sleep)
    start_s = clock()
    cap.start().join(10.0)
    assert not cap.is_alive() and cap.ended and cap.error is None
    return cap, [start_s, clock()]


# ------------------------------------------------------------------ the meter and its text


def test_meter_rate_and_drop_fraction_over_the_window():
    meter = PlaybackMeter(window_s=10.0)
    assert meter.rate is None and meter.drop_fraction is None
    # 20 s of wall time at half speed, every other frame lost.
    for k in range(201):
        meter.update(100.0 + 0.1 * k, 0.05 * k, 2 * k, k)
    assert meter.rate == pytest.approx(0.5)
    assert meter.drop_fraction == pytest.approx(0.5)
    # Then 10 s at full speed with nothing lost: the window forgets the slow part.
    for k in range(1, 101):
        meter.update(120.0 + 0.1 * k, 10.0 + 0.1 * k, 400 + k, 200)
    assert meter.rate == pytest.approx(1.0, abs=0.02)
    assert meter.drop_fraction == pytest.approx(0.0, abs=0.02)


def test_meter_restarts_when_media_time_runs_back():
    meter = PlaybackMeter()
    for k in range(30):
        meter.update(0.1 * k, 0.1 * k, k, 0)
    meter.update(3.1, 0.0, 31, 0)  # a looped file starts again
    assert meter.rate is None
    with pytest.raises(ValueError, match="frames_lost"):
        meter.update(4.0, 1.0, 3, 5)


@pytest.mark.parametrize(
    ("stats", "text"),
    [
        (None, ""),
        (CaptureStats(mode="realtime"), "real time"),
        (
            CaptureStats(mode="realtime", playback_rate=1.0, drop_fraction=0.0),
            "real time, no frames dropped",
        ),
        (
            CaptureStats(mode="realtime", playback_rate=0.99, drop_fraction=0.123),
            "real time, dropped 12 % of frames",
        ),
        (
            CaptureStats(mode="realtime", playback_rate=0.87, drop_fraction=0.4),
            "playing at 0.9× real time, dropped 40 % of frames",
        ),
        (
            CaptureStats(mode="realtime", playback_rate=1.0, drop_fraction=0.003),
            "real time, no frames dropped",
        ),
        (
            CaptureStats(mode="realtime", playback_rate=1.0, drop_fraction=0.008),
            "real time, dropped <1 % of frames",
        ),
        (CaptureStats(mode="live", drop_fraction=0.25), "dropped 25 % of frames"),
        (CaptureStats(mode="live", drop_fraction=0.0), ""),
        (CaptureStats(mode="every_frame", playback_rate=0.62), "every frame, 0.6× real time"),
        (CaptureStats(mode="every_frame"), "every frame"),
    ],
)
def test_playback_text(stats, text):
    assert playback_text(stats) == text


def test_capture_stats_validate_the_playback_fields():
    with pytest.raises(ValueError, match="mode"):
        CaptureStats(mode="fast")
    with pytest.raises(ValueError, match="drop_fraction"):
        CaptureStats(drop_fraction=1.5)
    assert CaptureStats(frames_dropped=3, frames_passed_over=4).frames_lost == 7


# ------------------------------------------------------------------ sources that skip


def test_video_file_skips_to_a_media_time_without_reading_every_frame(clip):
    source = VideoFileSource(clip)
    source.open()
    assert source.skip_until(1.0) == 25  # frames 0..24 (the first one was read at open)
    frame = source.read()
    assert (frame.index, frame.t_s) == (25, pytest.approx(1.0))
    assert source.skip_until(0.5) == 0  # never backwards
    assert source.skip_until(1.03) == 0  # the next frame (1.04 s) is not before 1.03 s
    assert source.read().index == 26
    assert source.skip_until(100.0) == N_FRAMES - 27
    assert source.read() is None
    assert source.damage is None  # passed over, not lost: the end is the real end
    source.close()


def test_image_folder_skips_without_decoding(tmp_path):
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), i, np.uint8))
    (tmp_path / "f3.png").write_bytes(b"not decoded when passed over")
    source = ImageFolderSource(tmp_path, image_fps=2.0)
    source.open()
    assert source.skip_until(2.0) == 4  # images at 0, 0.5, 1.0, 1.5 s
    assert source.skipped == 0  # the damaged f3 was never opened
    assert source.read().index == 4


def test_synthetic_patient_jumps_in_its_script():
    source = SyntheticSource(synthetic_patient_factory(seed=1, fps=10.0, seconds=2.0))
    source.open()
    assert source.total_frames == 20
    first = source.read()
    assert (first.index, first.t_s) == (0, 0.0)
    assert source.skip_until(0.55) == 5  # 0.1 .. 0.5 s
    after = source.read()
    assert (after.index, after.t_s) == (6, pytest.approx(0.6))
    assert source.skip_until(50.0) == 13
    assert source.read() is None


def test_a_plain_generator_cannot_skip():
    source = SyntheticSource(lambda: ((0.1 * i, np.zeros((4, 4, 3), np.uint8)) for i in range(5)))
    source.open()
    assert source.skip_until(0.35) == 0
    assert source.read().t_s == 0.0


# ------------------------------------------------------------------ paced playback keeps up


def test_slow_decoder_drops_frames_instead_of_slow_motion(clip):
    """A decoder at 2/3 of the media rate (60 ms per 40 ms frame): playback keeps media time
    within 10 % of wall time by passing over frames, and counts them."""
    clock = FakeClock()
    holder: dict[str, SlowCapture] = {}

    def factory(path):
        holder["cap"] = SlowCapture(path, clock, read_s=0.060, grab_s=0.015)
        return holder["cap"]

    source = VideoFileSource(clip, video_capture=factory)
    source.open()
    cap, (start_s, end_s) = _run_paced(source, clock)
    stats = cap.stats
    media_s = (N_FRAMES - 1) / FPS
    wall_s = end_s - start_s
    assert media_s / wall_s == pytest.approx(1.0, rel=0.10)
    assert stats.frames_passed_over > 10 and holder["cap"].grabs >= stats.frames_passed_over
    assert stats.frames_read + stats.frames_passed_over == N_FRAMES
    assert stats.mode == "realtime"
    assert stats.playback_rate == pytest.approx(1.0, rel=0.10)
    # Without passing over, a 60 ms decoder plays 40 ms frames at 0.67x real time.
    assert stats.drop_fraction > 0.15
    assert "dropped" in playback_text(stats) and "playing at" not in playback_text(stats)


def test_synthetic_patient_follows_wall_time_in_real_time():
    """A renderer at a third of the frame rate: the script jumps ahead with the clock."""
    clock = FakeClock()

    class SlowStream:
        fps = 30.0
        n_frames = 150  # 5 s

        def frame(self, index):
            clock.advance(0.1)  # 10 fps rendering
            return index / self.fps, np.zeros((8, 8, 3), np.uint8), None

    source = SyntheticSource(SlowStream)
    source.open()
    indices: list[int] = []
    cap = CaptureThread(source, clock=clock, realtime=True, sleep=clock.advance)
    start_s = clock()
    cap.start()
    while not cap.exhausted:
        frame = cap.get_latest(timeout_s=0.05)
        if frame is not None:
            indices.append(frame.index)
    cap.stop()
    wall_s = clock() - start_s
    stats = cap.stats
    assert stats.frames_passed_over > 50
    assert stats.frames_read + stats.frames_passed_over == 150
    assert (150 - 1) / 30.0 / wall_s == pytest.approx(1.0, rel=0.10)
    assert indices == sorted(set(indices))  # in order, with gaps


def test_a_long_stall_restarts_pacing_instead_of_skipping_seconds(clip):
    clock = FakeClock()

    def factory(path):
        return SlowCapture(path, clock, read_s=0.0, grab_s=0.0)

    source = VideoFileSource(clip, video_capture=factory)
    source.open()
    original_read = source.read
    calls = {"n": 0}

    def read():
        calls["n"] += 1
        if calls["n"] == 10:
            clock.advance(30.0)  # the machine froze for 30 s
        return original_read()

    source.read = read
    cap, _ = _run_paced(source, clock)
    assert cap.stats.frames_passed_over == 0
    assert cap.stats.frames_read == N_FRAMES


def test_every_frame_mode_hands_out_every_frame_in_order(clip):
    clock = FakeClock()
    source = VideoFileSource(
        clip, video_capture=lambda p: SlowCapture(p, clock, read_s=0.060, grab_s=0.015)
    )
    source.open()
    cap = CaptureThread(source, clock=clock, realtime=False).start()
    got = [frame.index for frame in cap]
    assert got == list(range(N_FRAMES))
    stats = cap.stats
    assert stats.mode == "every_frame" and stats.frames_lost == 0
    assert playback_text(stats).startswith("every frame")
    cap.stop()


def test_slow_consumer_in_real_time_counts_what_it_never_scored(clip):
    """Real clock, a consumer at ~10 fps of a 25 fps file: frames are dropped, never
    reordered, and every frame is either handed out or counted as lost."""
    source = VideoFileSource(clip)
    source.open()
    cap = CaptureThread(source, realtime=True).start()
    got: list[int] = []
    while not cap.exhausted:
        frame = cap.get_latest(timeout_s=0.2)
        if frame is not None:
            got.append(frame.index)
            time.sleep(0.1)
    stats = cap.stats
    assert stats.frames_lost > 0
    assert len(got) + stats.frames_lost == N_FRAMES
    assert got == sorted(set(got))
    cap.stop()


def test_catch_up_slack_is_a_few_frames():
    assert 0.05 <= CATCH_UP_SLACK_S <= 0.2
