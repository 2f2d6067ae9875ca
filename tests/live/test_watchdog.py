"""FROZEN on real media: a still photo played as lossy video freezes, real videos never do.

Stills in H.264 and HEVC are encoded with PyAV (a dev dependency, whose wheel bundles libx264
and libx265): OpenCV's pip wheel cannot write them.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from painmon.core.live.alarms import TechnicalCondition
from painmon.core.live.capture import Frame, SignalWatchdog, open_source

STILL_FPS = 25.0
STILL_SECONDS = 3.0
# The requirement: a still is FROZEN within this much media time (frozen_after_s is 2 s).
FROZEN_WITHIN_S = 2.5

# (fourcc, container) OpenCV writes; H.264 and HEVC below, through PyAV.
CODECS = [("mp4v", ".mp4"), ("MJPG", ".avi"), ("XVID", ".avi")]
REAL_VIDEOS = [
    "media/WolfgangLanger_Pexels.mp4",
    "media/single_face.mp4",
    "media/face_noface.mov",
    "media/no_face.mp4",
]


def _watch(spec: str) -> tuple[list[tuple[float, TechnicalCondition | None]], int]:
    """Every frame of ``spec`` through painmon's own source and the watchdog on media time,
    as the engine runs it: (t_s, condition) per frame, and how many frames were not
    bit-identical to the frame before."""
    watchdog = SignalWatchdog(clock=lambda: 0.0)
    source = open_source(spec)
    results = []
    not_bit_identical = 0
    previous = None
    try:
        while (raw := source.read()) is not None:
            frame = Frame(raw.index, raw.t_s, raw.rgb, 0.0, source.name)
            results.append((frame.t_s, watchdog.update(frame, now_s=frame.t_s)))
            not_bit_identical += previous is not None and not np.array_equal(previous, raw.rgb)
            previous = raw.rgb
    finally:
        source.close()
    return results, not_bit_identical


@pytest.fixture(scope="module")
def still_bgr(shared_file):
    """A 640x360 crop of the single-face photo: the picture someone might hold up."""
    photo = cv2.imread(str(shared_file("media/single_face.jpg")))
    assert photo is not None
    return cv2.resize(photo[100:460], (640, 360), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize(("fourcc", "suffix"), CODECS, ids=[c for c, _ in CODECS])
def test_still_photo_encoded_as_lossy_video_becomes_frozen(still_bgr, tmp_path, fourcc, suffix):
    path = tmp_path / f"still_{fourcc}{suffix}"
    height_px, width_px = still_bgr.shape[:2]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*fourcc), STILL_FPS, (width_px, height_px)
    )
    assert writer.isOpened(), f"this OpenCV build cannot write {fourcc} video"
    try:
        for _ in range(int(STILL_FPS * STILL_SECONDS)):
            writer.write(still_bgr)
    finally:
        writer.release()

    results, not_bit_identical = _watch(str(path))
    assert len(results) >= STILL_FPS * FROZEN_WITHIN_S
    if fourcc == "mp4v":  # the case that pixel equality missed: every decode differs a little
        assert not_bit_identical > len(results) // 2
    frozen_t_s = [t_s for t_s, condition in results if condition == TechnicalCondition.FROZEN]
    assert frozen_t_s, f"{fourcc}: a still photo was never FROZEN"
    assert frozen_t_s[0] <= FROZEN_WITHIN_S
    # Once frozen it stays frozen: the picture never changes.
    assert all(c == TechnicalCondition.FROZEN for t_s, c in results if t_s >= frozen_t_s[0])


@pytest.mark.parametrize("relative", REAL_VIDEOS, ids=lambda r: r.split("/")[-1])
def test_real_videos_are_never_frozen(shared_file, relative):
    results, _ = _watch(str(shared_file(relative)))
    assert len(results) > 60
    frozen = [t_s for t_s, condition in results if condition == TechnicalCondition.FROZEN]
    assert not frozen, f"{relative} FROZEN at {frozen[:5]} s of media time"


# -- H.264 and HEVC (PyAV) -----------------------------------------------------------------


def encode_still(
    path: Path,
    rgb: np.ndarray,
    codec: str,
    crf: int,
    fps: int = 25,
    seconds: float = STILL_SECONDS,
    noise_sigma: float = 0.0,
) -> Path:
    """``rgb`` held for ``seconds`` as yuv420p video, optionally with fresh Gaussian sensor noise
    (grey levels) in every frame: a webcam pointed at a photo."""
    rng = np.random.default_rng(0)
    options = {"crf": str(crf)}
    if codec == "libx265":
        options["x265-params"] = "log-level=error"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = rgb.shape[1], rgb.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        for _ in range(round(fps * seconds)):
            image = rgb
            if noise_sigma:
                noise = rng.standard_normal(rgb.shape, dtype=np.float32) * noise_sigma
                image = np.clip(rgb + noise, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def assert_frozen_in_time(results: list[tuple[float, TechnicalCondition | None]]) -> float:
    frozen_t_s = [t_s for t_s, condition in results if condition == TechnicalCondition.FROZEN]
    assert frozen_t_s, "a still picture was never FROZEN"
    assert 2.0 - 1e-6 <= frozen_t_s[0] <= FROZEN_WITHIN_S  # not before frozen_after_s either
    # Once frozen it stays frozen: the picture never changes.
    assert all(c == TechnicalCondition.FROZEN for t_s, c in results if t_s >= frozen_t_s[0])
    return frozen_t_s[0]


@pytest.fixture(scope="module")
def still_rgb(still_bgr) -> np.ndarray:
    return cv2.cvtColor(still_bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize(
    ("codec", "crf", "suffix"),
    [("libx264", 23, ".mp4"), ("libx264", 35, ".mkv"), ("libx265", 28, ".mp4")],
    ids=["h264-crf23", "h264-crf35", "hevc-crf28"],
)
def test_still_photo_in_h264_and_hevc_becomes_frozen(still_rgb, tmp_path, codec, crf, suffix):
    path = encode_still(tmp_path / f"still{suffix}", still_rgb, codec, crf)
    results, _ = _watch(str(path))
    assert len(results) == 75
    assert_frozen_in_time(results)


def test_still_photo_with_sensor_noise_becomes_frozen(still_rgb, tmp_path):
    """A webcam pointed at a photo: fresh noise (sigma 6 grey levels) in every frame survives
    H.264 (no two decoded frames equal), yet the picture is the same."""
    path = encode_still(tmp_path / "noisy.mp4", still_rgb, "libx264", 23, noise_sigma=6.0)
    results, changed = _watch(str(path))
    assert changed == len(results) - 1  # pixel equality would never call this frozen
    assert_frozen_in_time(results)


@pytest.mark.slow
def test_real_video_heavily_compressed_is_never_frozen(shared_file, tmp_path):
    """crf 35 smooths away fine motion; a real person must still never look frozen."""
    path = tmp_path / "pexels_crf35.mp4"
    with av.open(str(shared_file("media/WolfgangLanger_Pexels.mp4"))) as source:
        stream_in = source.streams.video[0]
        with av.open(str(path), "w") as target:
            stream = target.add_stream("libx264", rate=stream_in.average_rate)
            stream.width, stream.height = stream_in.width, stream_in.height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "35"}
            for frame in source.decode(stream_in):
                for packet in stream.encode(frame.reformat(format="yuv420p")):
                    target.mux(packet)
            for packet in stream.encode():
                target.mux(packet)
    results, _ = _watch(str(path))
    assert len(results) == 472
    assert not [t for t, c in results if c == TechnicalCondition.FROZEN]
