"""Frame capture: sources, the capture thread, the signal watchdog and reconnection."""

from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np
import pytest

from painmon.core.live.alarms import TechnicalCondition
from painmon.core.live.capture import (
    CaptureThread,
    Frame,
    FrameSource,
    ImageFolderSource,
    RawFrame,
    ReconnectBackoff,
    SignalWatchdog,
    SourceDisconnectedError,
    SourceError,
    SyntheticSource,
    VideoFileSource,
    open_source,
    same_image,
    synthetic_patient_factory,
)

VIDEO_FRAMES = 72
VIDEO_FPS = 30.0


def _rgb(value: int, size: tuple[int, int] = (8, 12)) -> np.ndarray:
    return np.full((*size, 3), value % 256, dtype=np.uint8)


class FakeClock:
    def __init__(self, start_s: float = 100.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class ScriptedLiveSource(FrameSource):
    """Live source replaying a script: an int gives a frame, "drop" a disconnect, "end" the end.

    ``open_failures`` lists how many open() attempts fail before each reconnect succeeds.
    """

    is_live = True

    def __init__(self, script, open_failures=(), read_delay_s: float = 0.0) -> None:
        super().__init__("fake-live")
        self.script = list(script)
        self.open_failures = list(open_failures)
        self.read_delay_s = read_delay_s
        self.opened = False
        self.closed_count = 0

    def open(self) -> None:
        if self.open_failures and self.open_failures[0] > 0:
            self.open_failures[0] -= 1
            raise SourceError("fake camera could not be opened")
        if self.open_failures:
            self.open_failures.pop(0)
        self.opened = True

    def read(self) -> RawFrame | None:
        if self.read_delay_s:
            time.sleep(self.read_delay_s)
        if not self.opened:
            raise SourceDisconnectedError("fake camera is not open")
        if not self.script:
            return RawFrame(_rgb(np.random.randint(256)))  # endless
        step = self.script.pop(0)
        if step == "end":
            return None
        if step == "drop":
            self.opened = False
            raise SourceDisconnectedError("fake camera stopped delivering images")
        return RawFrame(_rgb(step))

    def close(self) -> None:
        self.opened = False
        self.closed_count += 1


class FakeMediaSource(FrameSource):
    """A finite media source of ``n_frames`` at ``fps``."""

    def __init__(self, n_frames: int, fps: float = 30.0) -> None:
        super().__init__("fake-media")
        self.n_frames = n_frames
        self.fps = fps
        self.position = 0

    def open(self) -> None:
        self.position = 0

    def read(self) -> RawFrame | None:
        if self.position >= self.n_frames:
            return None
        index = self.position
        self.position += 1
        return RawFrame(_rgb(index), index / self.fps, index)


class FakeCapture:
    """Stand-in for cv2.VideoCapture."""

    def __init__(self, opened: bool = True, frames: int = 0, pos_msec: float | None = None):
        self.opened = opened
        self.frames = frames
        self.pos_msec = pos_msec
        self.read_count = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self):
        if self.read_count >= self.frames:
            return False, None
        self.read_count += 1
        return True, np.zeros((6, 8, 3), np.uint8)

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            return 25.0
        if prop == cv2.CAP_PROP_POS_MSEC:
            return 0.0 if self.pos_msec is None else self.pos_msec
        return 0.0

    def set(self, prop: int, value: float) -> bool:
        return True

    def release(self) -> None:
        self.released = True


def _write_images(folder, names, size=(24, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        bgr = np.full((*size, 3), (10 * i, 50, 200), np.uint8)
        assert cv2.imwrite(str(folder / name), bgr)


def _stopped(cap: CaptureThread) -> None:
    assert cap.stop(timeout_s=2.0)
    assert not cap.is_alive()


# ---------------------------------------------------------------- Frame


def test_frame_validates_its_fields():
    frame = Frame(3, 0.1, _rgb(1), 5.0, "camera:0")
    assert (frame.index, frame.width_px, frame.height_px) == (3, 12, 8)
    bad = [
        dict(index=-1),
        dict(index=True),
        dict(t_s=-0.1),
        dict(t_s=float("nan")),
        dict(captured_monotonic_s=float("inf")),
        dict(rgb=np.zeros((8, 12), np.uint8)),
        dict(rgb=np.zeros((8, 12, 4), np.uint8)),
        dict(rgb=np.zeros((8, 12, 3), np.float32)),
        dict(source=""),
    ]
    base = dict(index=0, t_s=0.0, rgb=_rgb(0), captured_monotonic_s=1.0, source="x")
    for change in bad:
        with pytest.raises(ValueError):
            Frame(**{**base, **change})


# ---------------------------------------------------------------- media sources


def test_video_file_pull_mode_gives_every_frame_at_media_time(shared_file):
    source = open_source(str(shared_file("media/single_face.mp4")))
    assert isinstance(source, VideoFileSource) and not source.is_live
    assert source.total_frames == VIDEO_FRAMES  # open_source opened it: the length is known
    cap = CaptureThread(source).start()
    assert cap.pull_mode
    frames = list(cap)
    cap.join(2.0)
    assert not cap.is_alive()
    assert source.total_frames == len(frames) == VIDEO_FRAMES
    assert [f.index for f in frames] == list(range(VIDEO_FRAMES))
    t_s = np.array([f.t_s for f in frames])
    np.testing.assert_allclose(t_s, np.arange(VIDEO_FRAMES) / VIDEO_FPS, atol=2e-3)
    assert frames[0].rgb.shape == (360, 640, 3)
    assert cap.ended and cap.exhausted and cap.error is None
    stats = cap.stats
    assert (stats.frames_read, stats.frames_dropped, stats.reconnects) == (VIDEO_FRAMES, 0, 0)
    assert cap.get_latest(timeout_s=1.0) is None  # end of stream answers at once


def test_video_timestamps_fall_back_to_fps_when_the_container_has_none(tmp_path):
    path = tmp_path / "clip.avi"
    path.write_bytes(b"not read: the capture is faked")
    source = VideoFileSource(path, video_capture=lambda _p: FakeCapture(frames=4, pos_msec=0.0))
    source.open()
    t_s = [source.read().t_s for _ in range(4)]
    assert source.read() is None
    np.testing.assert_allclose(t_s, [0.0, 0.04, 0.08, 0.12])  # 25 fps
    assert source.total_frames is None  # the fake container does not know its length


def test_image_folder_plays_at_image_fps_in_natural_order(tmp_path):
    folder = tmp_path / "frames"
    _write_images(folder, ["img10.png", "img2.jpg", "img1.bmp", "img3.jpeg"])
    (folder / "notes.txt").write_text("not an image")
    source = open_source(str(folder), image_fps=2.0)
    assert isinstance(source, ImageFolderSource)
    assert [p.name for p in source.paths] == ["img1.bmp", "img2.jpg", "img3.jpeg", "img10.png"]
    assert source.total_frames == 4
    cap = CaptureThread(source).start()
    frames = list(cap)
    assert [f.t_s for f in frames] == [0.0, 0.5, 1.0, 1.5]
    assert all(f.rgb.shape == (24, 32, 3) for f in frames)
    # img1.bmp was written third as BGR (20, 50, 200): the frame holds it as RGB.
    assert tuple(int(v) for v in frames[0].rgb[0, 0]) == (200, 50, 20)
    assert cap.ended
    _stopped(cap)


def test_unreadable_image_is_skipped_logged_and_counted(tmp_path, caplog):
    folder = tmp_path / "frames"
    _write_images(folder, ["a0.png", "a2.png"])
    (folder / "a1.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with caplog.at_level(logging.WARNING, logger="painmon.core.live.capture"):
        cap = CaptureThread(open_source(str(folder), image_fps=2.0)).start()
        frames = list(cap)
    assert [(f.index, f.t_s) for f in frames] == [(0, 0.0), (2, 1.0)]
    assert cap.stats.frames_skipped == 1
    assert any("a1.jpg" in r.getMessage() for r in caplog.records)
    _stopped(cap)


def test_image_fps_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="image_fps"):
        ImageFolderSource(tmp_path, image_fps=0)


def test_synthetic_source_uses_the_generator_time():
    def fake_patient():
        for i in range(5):
            yield 0.2 * i, _rgb(i), {"pspi": i}

    source = open_source("synthetic", synthetic_factory=fake_patient)
    assert isinstance(source, SyntheticSource) and not source.is_live
    cap = CaptureThread(source).start()
    frames = list(cap)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([f.t_s for f in frames], [0.0, 0.2, 0.4, 0.6, 0.8])
    assert all(f.source == "synthetic" for f in frames)
    assert cap.ended
    _stopped(cap)


def test_synthetic_adapter_drives_the_real_synthetic_patient():
    source = SyntheticSource(synthetic_patient_factory(seed=1, fps=10.0, seconds=0.2))
    source.open()
    first, second = source.read(), source.read()
    assert source.read() is None
    assert (first.t_s, second.t_s) == (0.0, 0.1)
    assert first.rgb.shape == (360, 640, 3) and first.rgb.dtype == np.uint8


# ---------------------------------------------------------------- SourceError cases


def _source_error(spec, **kwargs) -> str:
    with pytest.raises(SourceError) as info:
        open_source(spec, **kwargs)
    return str(info.value)


def test_missing_path_says_to_check_it(tmp_path):
    message = _source_error(str(tmp_path / "nope.mp4"))
    assert "no file or folder" in message and "check the path" in message


def test_empty_image_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    assert "holds no .png" in _source_error(str(tmp_path))


def test_folder_of_only_unreadable_images(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    assert "none of the 1 images" in _source_error(str(tmp_path))


def test_unreadable_video(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"this is not a video" * 10)
    message = _source_error(str(path))
    assert "could not be opened" in message and "convert" in message


def test_video_without_frames(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"x")
    fake = FakeCapture(frames=0)
    message = _source_error(str(path), video_capture=lambda _p: fake)
    assert "no readable frames" in message
    assert fake.released


def test_camera_that_cannot_be_opened():
    fake = FakeCapture(opened=False)
    message = _source_error("camera:0", video_capture=lambda _i: fake)
    assert message == (
        "camera 0 could not be opened: is it connected and not used by another program?"
    )


def test_camera_that_opens_but_gives_no_image():
    message = _source_error("camera:1", video_capture=lambda _i: FakeCapture(frames=0))
    assert message.startswith("camera 1 opened but delivered no image")


def test_stream_url_that_cannot_be_opened_hides_the_password():
    seen = []

    def fake(target):
        seen.append(target)
        return FakeCapture(opened=False)

    message = _source_error("rtsp://nurse:secret@10.0.0.5:554/ward3", video_capture=fake)
    assert seen == ["rtsp://nurse:secret@10.0.0.5:554/ward3"]  # the real URL is used
    assert "secret" not in message
    assert message.startswith("stream rtsp://nurse:***@10.0.0.5:554/ward3 could not be opened")


@pytest.mark.parametrize("spec", ["camera:front", "synthetic:abc", "  "])
def test_malformed_specs(spec):
    assert _source_error(spec)


def test_working_camera_and_url_specs_open_live_sources():
    camera = open_source("camera:2", video_capture=lambda _i: FakeCapture(frames=3))
    stream = open_source("https://cam.local/video", video_capture=lambda _u: FakeCapture(frames=3))
    assert camera.is_live and camera.name == "camera:2"
    assert stream.is_live and stream.name == "https://cam.local/video"
    assert camera.read().rgb.shape == (6, 8, 3)
    camera.close()
    stream.close()


# ---------------------------------------------------------------- capture thread


def test_one_slot_buffer_keeps_only_the_newest_frame():
    source = ScriptedLiveSource([*range(20), "end"])
    source.open()
    cap = CaptureThread(source).start()
    cap.join(2.0)
    assert not cap.is_alive()
    latest = cap.get_latest(timeout_s=0.5)
    assert latest is not None and latest.index == 19
    assert cap.get_latest(timeout_s=0.05) is None
    stats = cap.stats
    assert (stats.frames_read, stats.frames_dropped) == (20, 19)
    assert cap.exhausted


def test_slow_consumer_sees_drops_and_increasing_frames():
    source = ScriptedLiveSource([*range(60), "end"], read_delay_s=0.002)
    source.open()
    cap = CaptureThread(source).start()
    got = []
    while not cap.exhausted:
        frame = cap.get_latest(timeout_s=0.2)
        if frame is not None:
            got.append(frame.index)
        time.sleep(0.02)
    stats = cap.stats
    assert stats.frames_read == 60
    assert stats.frames_dropped > 0
    assert len(got) + stats.frames_dropped == stats.frames_read
    assert got == sorted(set(got))
    _stopped(cap)


def test_pull_mode_never_drops_for_a_slow_consumer():
    cap = CaptureThread(FakeMediaSource(25), realtime=False, pull_buffer=2).start()
    got = []
    for frame in cap:
        got.append(frame.index)
        time.sleep(0.002)
    assert got == list(range(25))
    assert cap.stats.frames_dropped == 0
    _stopped(cap)


def test_realtime_playback_paces_media_time():
    clock = FakeClock()
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock.advance(seconds)

    cap = CaptureThread(FakeMediaSource(11, fps=50.0), clock=clock, realtime=True, sleep=sleep)
    assert not cap.pull_mode
    cap.start().join(2.0)
    assert sum(sleeps) == pytest.approx(10 / 50.0)
    assert len(sleeps) == 10
    last = cap.get_latest()
    assert last.index == 10 and last.captured_monotonic_s == pytest.approx(100.2)


def test_live_time_is_clock_time_since_the_first_frame():
    clock = FakeClock()
    source = ScriptedLiveSource([1, 2, 3, "end"])
    source.open()

    def ticking():
        clock.advance(0.25)
        return clock.now_s

    cap = CaptureThread(source, clock=ticking, realtime=False).start()  # live: real time anyway
    assert not cap.pull_mode
    cap.join(2.0)
    last = cap.get_latest()
    assert (last.index, last.t_s) == (2, pytest.approx(0.5))


def test_stop_joins_a_running_live_capture():
    source = ScriptedLiveSource([], read_delay_s=0.001)  # endless
    source.open()
    cap = CaptureThread(source).start()
    assert cap.get_latest(timeout_s=1.0) is not None
    start = time.monotonic()
    _stopped(cap)
    assert time.monotonic() - start < 1.0
    assert source.closed_count >= 1 and not cap.ended


def test_stop_interrupts_a_reconnect_wait():
    source = ScriptedLiveSource(["drop"], open_failures=[0, 1000])
    source.open()
    cap = CaptureThread(source, backoff=ReconnectBackoff(initial_s=5.0, max_s=5.0)).start()
    time.sleep(0.05)
    start = time.monotonic()
    _stopped(cap)
    assert time.monotonic() - start < 1.0


def test_stop_releases_a_pull_thread_waiting_for_room():
    cap = CaptureThread(FakeMediaSource(1000), pull_buffer=1).start()
    time.sleep(0.05)  # the reader is now blocked on the full buffer
    _stopped(cap)
    assert cap.stats.frames_read < 1000


def test_stop_before_start_closes_the_source():
    source = ScriptedLiveSource([])
    source.open()
    assert CaptureThread(source).stop()
    assert source.closed_count == 1


def test_source_failure_is_reported_not_swallowed():
    class Broken(FakeMediaSource):
        def read(self):
            raise SourceError("disk went away")

    cap = CaptureThread(Broken(3)).start()
    cap.join(2.0)
    assert isinstance(cap.error, SourceError)
    assert cap.exhausted and not cap.ended


# ---------------------------------------------------------------- reconnection


def test_backoff_doubles_to_three_seconds_and_resets():
    backoff = ReconnectBackoff()
    # A camera back just after a failed attempt waits 3 s + the open: within the 5 s target.
    assert [backoff.next_delay_s() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay_s() == 0.5


def test_capture_thread_reconnects_with_backoff(caplog):
    # 5 failed opens then success, later 1 failed open then success.
    source = ScriptedLiveSource([1, 2, "drop", 3, "drop", 4, "end"], open_failures=[0, 5, 1])
    source.open()
    sleeps = []
    with caplog.at_level(logging.WARNING, logger="painmon.core.live.capture"):
        cap = CaptureThread(source, sleep=sleeps.append).start()
        cap.join(2.0)
    assert not cap.is_alive()
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 0.5, 1.0]
    stats = cap.stats
    assert (stats.reconnect_attempts, stats.reconnects, stats.frames_read) == (8, 2, 4)
    assert sum("reconnect attempt" in r.getMessage() for r in caplog.records) == 6
    assert cap.ended and cap.get_latest().index == 3


# ---------------------------------------------------------------- watchdog


def _frame(index: int, rgb: np.ndarray, clock: FakeClock) -> Frame:
    return Frame(index, index * 0.1, rgb, clock.now_s, "camera:0")


def test_watchdog_signal_lost_after_two_seconds_and_recovery():
    clock = FakeClock()
    watchdog = SignalWatchdog(clock=clock)
    assert watchdog.update(_frame(0, _rgb(0), clock)) is None
    clock.advance(1.875)  # binary-exact steps: no float drift around the 2 s edge
    assert watchdog.update() is None
    clock.advance(0.125)
    assert watchdog.update() == TechnicalCondition.SIGNAL_LOST
    assert watchdog.condition is TechnicalCondition.SIGNAL_LOST
    assert watchdog.update(_frame(1, _rgb(1), clock)) is None


def test_watchdog_lost_without_any_frame_and_same_frame_twice_is_not_new():
    clock = FakeClock()
    watchdog = SignalWatchdog(clock=clock)
    clock.advance(2.0)
    assert watchdog.update() == "SIGNAL_LOST"
    frame = _frame(0, _rgb(0), clock)
    assert watchdog.update(frame) is None
    clock.advance(2.0)
    assert watchdog.update(frame) == TechnicalCondition.SIGNAL_LOST


def test_watchdog_frozen_after_two_seconds_of_identical_frames_and_recovery():
    clock = FakeClock()
    watchdog = SignalWatchdog(clock=clock)
    stuck = np.random.default_rng(0).integers(0, 256, (36, 64, 3), dtype=np.uint8)
    results = []
    for i in range(17):  # 0.0 .. 2.0 s, one identical frame every 125 ms
        results.append(watchdog.update(_frame(i, stuck.copy(), clock)))
        clock.advance(0.125)
    assert results[:16] == [None] * 16
    assert results[16] == TechnicalCondition.FROZEN
    moved = np.roll(stuck, 3, axis=1)  # the picture moved: FROZEN clears at once
    assert watchdog.update(_frame(17, moved, clock)) is None


def test_watchdog_noisy_frames_never_freeze_and_end_of_stream_is_not_lost():
    clock = FakeClock()
    watchdog = SignalWatchdog(clock=clock)
    rng = np.random.default_rng(1)
    for i in range(50):
        rgb = rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)
        assert watchdog.update(_frame(i, rgb, clock)) is None
        clock.advance(0.1)
    clock.advance(10.0)
    assert watchdog.update(end_of_stream=True) is None


def test_watchdog_can_run_on_media_time():
    watchdog = SignalWatchdog(clock=lambda: 0.0)
    same = _rgb(7)
    for i in range(30):  # a file processed instantly: 1.0..3.9 s of media time
        condition = watchdog.update(Frame(i, 1.0 + i * 0.1, same, 0.0, "f"), now_s=1.0 + i * 0.1)
    assert condition == TechnicalCondition.FROZEN


def test_watchdog_rejects_nonpositive_limits():
    with pytest.raises(ValueError):
        SignalWatchdog(lost_after_s=0)


def test_capture_thread_is_a_daemon():
    cap = CaptureThread(FakeMediaSource(1))
    assert cap._thread.daemon
    assert isinstance(cap._thread, threading.Thread)
    cap.stop()


def test_watchdog_compares_pixels_not_buffers():
    # A source that reuses one buffer for every frame must not look frozen while the
    # pixels change, and a new size is a new image.
    clock = FakeClock()
    watchdog = SignalWatchdog(clock=clock)
    buffer = np.zeros((36, 64, 3), dtype=np.uint8)
    for i in range(25):  # 0 .. 3 s, the same array object every time, a bar moving across
        buffer[:] = 0
        buffer[:, 2 * i : 2 * i + 2] = 255
        assert watchdog.update(_frame(i, buffer, clock)) is None
        clock.advance(0.125)
    still = buffer.copy()
    for i in range(25, 42):
        condition = watchdog.update(_frame(i, still, clock))
        clock.advance(0.125)
    assert condition == TechnicalCondition.FROZEN
    assert watchdog.update(_frame(42, np.zeros((18, 32, 3), np.uint8), clock)) is None


def test_same_image_tolerates_codec_noise_but_not_a_changed_picture():
    rng = np.random.default_rng(2)
    image = cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), (9, 9), 0)
    assert same_image(image, image.copy())
    assert not same_image(None, image)
    assert not same_image(image[:, :320], image[:, 320:].copy())
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert ok and np.abs(decoded.astype(int) - image).max() > 4  # far from bit-exact
    assert same_image(image, decoded)
    changed = image.copy()
    changed[-1, -1, -1] ^= 1  # one grey level in one pixel is codec noise, not a new picture
    assert same_image(image, changed)
    assert not same_image(image, np.roll(image, 12, axis=1))  # the scene moved
    patch = image.copy()
    patch[100:200, 300:400] = 255 - patch[100:200, 300:400]  # 4% of the frame changed
    assert not same_image(image, patch)
