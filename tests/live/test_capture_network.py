"""Network streams against real sockets on 127.0.0.1: silent servers, stalls, reconnection."""

from __future__ import annotations

import functools
import time

import cv2
import numpy as np
import pytest

from painmon.core.live.capture import (
    STREAM_OPEN_TIMEOUT_S,
    STREAM_READ_TIMEOUT_S,
    CaptureThread,
    LiveVideoSource,
    ReconnectBackoff,
    SourceError,
    open_source,
    open_video_capture,
)


def test_stream_urls_get_ffmpeg_open_and_read_timeouts(monkeypatch):
    calls = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda *args: calls.append(args) or "capture")
    assert open_video_capture("rtsp://cam/stream") == "capture"
    open_video_capture(0)
    open_video_capture("/videos/clip.mp4")
    open_video_capture("http://cam/video", open_timeout_s=1.5, read_timeout_s=0.25)
    assert calls == [
        (
            "rtsp://cam/stream",
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 6000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 3000],
        ),
        (0,),
        ("/videos/clip.mp4",),
        (
            "http://cam/video",
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 1500, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 250],
        ),
    ]
    with pytest.raises(ValueError, match="read_timeout_s"):
        open_video_capture("http://cam/video", read_timeout_s=0.0)


def test_default_timeouts_meet_the_reliability_targets():
    # A silent address is refused within 10 s; a stall is reopened within 5 s.
    assert STREAM_OPEN_TIMEOUT_S <= 8.0
    assert STREAM_READ_TIMEOUT_S + ReconnectBackoff().initial_s <= 5.0


@pytest.mark.parametrize(
    ("mode", "scheme"), [("silent", "http"), ("silent", "rtsp"), ("backlog", "http")]
)
def test_silent_address_is_refused_within_the_open_timeout(server_factory, capfd, mode, scheme):
    server = server_factory(mode)
    capture = functools.partial(open_video_capture, open_timeout_s=1.0, read_timeout_s=1.0)
    start_s = time.monotonic()
    with pytest.raises(SourceError, match="could not be opened"):
        open_source(server.url(scheme), video_capture=capture)
    elapsed_s = time.monotonic() - start_s
    assert 0.9 <= elapsed_s < 2.5
    if mode == "silent":
        assert server.connection_count >= 1  # it really connected, then heard nothing
    # painmon says it in one line (SourceError); OpenCV's own warnings stay off stderr.
    assert "WARN" not in capfd.readouterr().err


def test_stalled_stream_is_detected_and_reconnected(server_factory):
    # First connection: 15 frames, then silence with the socket open; second: a live stream.
    server = server_factory("mjpeg", frames_per_connection=(15, None))
    read_timeout_s = 0.8
    capture = functools.partial(
        open_video_capture, open_timeout_s=2.0, read_timeout_s=read_timeout_s
    )
    source = LiveVideoSource(server.url(), video_capture=capture)
    source.open()
    cap = CaptureThread(source).start()
    try:
        stamps_s = []
        deadline_s = time.monotonic() + 4.0
        while time.monotonic() < deadline_s and (cap.stats.reconnects == 0 or len(stamps_s) < 20):
            frame = cap.get_latest(timeout_s=0.05)
            if frame is not None:
                stamps_s.append(frame.captured_monotonic_s)
        assert cap.stats.reconnects == 1 and server.connection_count == 2
        assert len(stamps_s) >= 20  # frames flow again on the new connection
        stall_s = max(np.diff(stamps_s))
        # read timeout + first backoff (0.5 s) + reopening, with room for a busy CPU
        assert read_timeout_s <= stall_s <= read_timeout_s + 0.5 + 1.5
        assert cap.error is None and not cap.ended
    finally:
        assert cap.stop(timeout_s=3.0)
