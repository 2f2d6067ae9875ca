"""Capture under bad input: huge or unreadable images, damaged videos, failing threads."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from painmon.core.live.capture import (
    MAX_IMAGE_PIXELS,
    CaptureThread,
    FrameSource,
    ImageFolderSource,
    RawFrame,
    SourceError,
    VideoFileSource,
    image_size_px,
    open_source,
)

LOGGER = "painmon.core.live.capture"


# ---------------------------------------------------------------- helpers


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_header_only(width_px: int, height_px: int) -> bytes:
    """A PNG whose valid IHDR claims the size; no pixel data follows (a few dozen bytes)."""
    ihdr = struct.pack(">IIBBBBB", width_px, height_px, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + idat + _png_chunk(b"IEND", b"")


def _jpeg_header_only(width_px: int, height_px: int) -> bytes:
    """SOI, a JFIF APP0 segment, then a baseline frame header claiming the size."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = struct.pack(">BHHB", 8, height_px, width_px, 3) + bytes(9)
    return (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", len(app0) + 2)
        + app0
        + b"\xff\xc0"
        + struct.pack(">H", len(sof0) + 2)
        + sof0
        + b"\xff\xd9"
    )


def _write_image(path: Path, value: int, size_px: tuple[int, int] = (24, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*size_px, 3), value, np.uint8))


def _messages(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """Byte counts handed to cv2.imdecode: nothing oversized may ever reach the decoder."""
    sizes: list[int] = []
    real = cv2.imdecode

    def spy(buf, flags):
        sizes.append(int(np.asarray(buf).size))
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    return sizes


# ---------------------------------------------------------------- image headers


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
@pytest.mark.parametrize("size_px", [(1, 1), (37, 5), (640, 480)])
def test_image_size_is_read_from_the_header(tmp_path, ext, size_px):
    width_px, height_px = size_px
    path = tmp_path / f"img{ext}"
    assert cv2.imwrite(str(path), np.zeros((height_px, width_px, 3), np.uint8))
    with path.open("rb") as file:
        assert image_size_px(file) == (width_px, height_px)


def test_progressive_jpeg_and_headers_without_pixels(tmp_path):
    path = tmp_path / "progressive.jpg"
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    assert cv2.imwrite(str(path), np.zeros((50, 70, 3), np.uint8), params)
    with path.open("rb") as file:
        assert image_size_px(file) == (70, 50)
    for data, expected in (
        (_png_header_only(30000, 30000), (30000, 30000)),
        (_jpeg_header_only(65000, 40000), (65000, 40000)),
        (b"\x89PNG\r\n\x1a\n", None),  # truncated header
        (b"\xff\xd8\xff\xe0\x00", None),  # truncated JPEG segment
        (b"\xff\xd8 not a marker", None),
        (b"GIF89a........................", None),  # a format the folder does not play
    ):
        (tmp_path / "x").write_bytes(data)
        with (tmp_path / "x").open("rb") as file:
            assert image_size_px(file) == expected


# ---------------------------------------------------------------- image folders


def test_huge_png_is_skipped_before_decoding(tmp_path, caplog, decoded):
    folder = tmp_path / "frames"
    _write_image(folder / "f0.png", 10)
    huge = folder / "f1.png"
    huge.write_bytes(_png_header_only(30000, 30000))
    _write_image(folder / "f2.png", 30)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cap = CaptureThread(open_source(str(folder), image_fps=2.0)).start()
        frames = list(cap)
    assert [f.index for f in frames] == [0, 2]
    assert cap.stats.frames_skipped == 1 and cap.ended and cap.error is None
    message = _messages(caplog)
    assert "f1.png" in message and "30000x30000" in message and "40 MP" in message
    assert len(decoded) == 2  # the two small images only: the huge one was never decoded
    cap.stop()


def test_huge_jpeg_is_skipped_and_the_limit_is_inclusive(tmp_path, caplog, decoded):
    folder = tmp_path / "frames"
    (folder).mkdir()
    (folder / "a.jpg").write_bytes(_jpeg_header_only(8000, 5001))  # 40.008 MP
    side = int(MAX_IMAGE_PIXELS**0.5)
    (folder / "b.png").write_bytes(_png_header_only(side, side))  # at the limit: decoded
    _write_image(folder / "c.png", 50)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        source = ImageFolderSource(folder)
        source.open()
        frames = [source.read(), source.read()]
    assert frames[0].index == 2 and frames[1] is None
    assert source.skipped == 2
    text = _messages(caplog)
    assert "a.jpg: it is 8000x5001 px" in text
    assert "b.png: it is damaged" in text  # passed the size check, then failed to decode
    assert len(decoded) == 2  # b.png (a few bytes) and c.png


def test_unreadable_files_are_skipped_and_the_capture_goes_on(tmp_path, caplog):
    folder = tmp_path / "frames"
    _write_image(folder / "f0.png", 10)
    good = (folder / "f0.png").read_bytes()
    (folder / "f1.png").write_bytes(good[:60] + b"\x00" * 200)  # valid header, corrupt data
    (folder / "f2.png").write_text("just text with an image name")
    with (folder / "f3.png").open("wb") as file:
        file.truncate(8 * 2**30)  # 8 GiB, sparse: nothing is written or read
    _write_image(folder / "f4.png", 40)
    vanishing = folder / "f5.png"
    _write_image(vanishing, 50)
    becomes_dir = folder / "f6.png"
    _write_image(becomes_dir, 60)
    _write_image(folder / "f7.png", 70)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        source = open_source(str(folder))
        vanishing.unlink()  # removed between listing and reading
        becomes_dir.unlink()
        becomes_dir.mkdir()  # a directory named like an image
        cap = CaptureThread(source).start()
        frames = list(cap)
    assert [f.index for f in frames] == [0, 4, 7]
    assert cap.stats.frames_skipped == 5 and cap.ended and cap.error is None
    text = _messages(caplog)
    assert "f1.png: it is damaged" in text
    assert "f2.png: it is not a PNG, JPEG or BMP image" in text
    assert "f3.png: the file is 8192 MiB" in text
    assert "f5.png: it cannot be read" in text
    assert "f6.png: it cannot be read" in text
    cap.stop()


def test_folders_named_like_images_are_skipped_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "frames"
    (folder / "b.png").mkdir(parents=True)
    (folder / "c.jpg").symlink_to(tmp_path / "nowhere.jpg")
    _write_image(folder / "a.png", 10)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        source = open_source(str(folder))
    assert [p.name for p in source.paths] == ["a.png"]
    text = _messages(caplog)
    assert "b.png: it is a folder or a broken link" in text
    assert "c.jpg: it is a folder or a broken link" in text


def test_unreadable_folder_is_a_source_error(tmp_path, monkeypatch):
    # Denied by a patched listing, not chmod: tests run as root under CI, and root reads any
    # folder; the refusal path is what is under test.
    folder = tmp_path / "frames"
    _write_image(folder / "a.png", 10)
    real_iterdir = Path.iterdir

    def denying_iterdir(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", denying_iterdir)
    with pytest.raises(SourceError, match=r"cannot be read \(Permission denied\)"):
        open_source(str(folder))


def test_permission_denied_image_is_skipped_even_as_root(tmp_path, caplog, monkeypatch):
    folder = tmp_path / "frames"
    _write_image(folder / "a.png", 10)
    _write_image(folder / "b.png", 20)
    real_open = Path.open

    def denying_open(self, *args, **kwargs):
        if self.name == "a.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denying_open)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        source = open_source(str(folder))
    assert source.read().index == 1 and source.skipped == 1
    assert "a.png: it cannot be read (Permission denied)" in _messages(caplog)


# ---------------------------------------------------------------- the capture thread


class _ListSource(FrameSource):
    """A media source replaying RawFrames, then calling ``fail`` (if any) instead of ending."""

    def __init__(self, frames, fail=None, close_error=None) -> None:
        super().__init__("list")
        self.frames = list(frames)
        self.fail = fail
        self.close_error = close_error
        self.closed = 0

    def open(self) -> None:
        pass

    def read(self) -> RawFrame | None:
        if self.frames:
            return self.frames.pop(0)
        if self.fail is not None:
            self.fail()
        return None

    def close(self) -> None:
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error


def _ok(index: int) -> RawFrame:
    return RawFrame(np.zeros((4, 4, 3), np.uint8), index / 10, index)


def _finish(cap: CaptureThread) -> list:
    frames = list(cap)
    cap.join(2.0)
    assert not cap.is_alive()
    return frames


def _boom() -> None:
    raise ZeroDivisionError("not a SourceError")


@pytest.mark.parametrize(
    "source",
    [
        _ListSource([_ok(0), _ok(1)], fail=_boom),  # any exception from read()
        _ListSource([_ok(0), _ok(1), RawFrame(np.zeros((4, 4), np.float32), 0.2, 2)]),
        _ListSource([_ok(0), _ok(1)], fail=lambda: (_ for _ in ()).throw(MemoryError())),
    ],
    ids=["read-raises", "bad-frame", "memory-error"],
)
def test_any_exception_is_recorded_and_is_not_an_end_of_media(source, caplog):
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        cap = CaptureThread(source).start()
        frames = _finish(cap)
    assert [f.index for f in frames] == [0, 1]  # what was read before the failure still counts
    assert cap.error is not None and cap.exhausted
    assert not cap.ended and cap.damage is None
    assert source.closed == 1
    assert "capture from list failed" in caplog.text


def test_a_failing_close_is_recorded_and_the_thread_still_finishes():
    source = _ListSource([_ok(0)], close_error=OSError("device busy"))
    cap = CaptureThread(source).start()
    assert len(_finish(cap)) == 1
    assert isinstance(cap.error, OSError) and cap.exhausted and not cap.ended


def test_clean_end_sets_ended_without_error():
    cap = CaptureThread(_ListSource([_ok(0), _ok(1)])).start()
    assert len(_finish(cap)) == 2
    assert cap.ended and cap.error is None and cap.damage is None


# ---------------------------------------------------------------- damaged videos


class _CountingCapture:
    """cv2.VideoCapture stand-in whose container states ``stated`` frames but gives ``frames``."""

    def __init__(self, frames: int, stated: float, fps: float = 25.0) -> None:
        self.frames, self.stated, self.fps = frames, stated, fps
        self.position = 0

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def read(self):
        if self.position >= self.frames:
            return False, None
        self.position += 1
        return True, np.zeros((4, 6, 3), np.uint8)

    def get(self, prop: int) -> float:
        return {
            cv2.CAP_PROP_FPS: self.fps,
            cv2.CAP_PROP_FRAME_COUNT: self.stated,
            cv2.CAP_PROP_POS_MSEC: self.position * 1000.0 / self.fps,
        }.get(prop, 0.0)

    def release(self) -> None:
        pass


def _play(source: FrameSource) -> tuple[int, CaptureThread]:
    cap = CaptureThread(source).start()
    count = len(_finish(cap))
    return count, cap


@pytest.mark.parametrize(
    ("frames", "stated", "damaged"),
    [
        (300, 300, False),
        (297, 300, False),  # 3 missing: under the 4-frame margin
        (296, 300, True),  # 4 missing
        (95, 98, False),  # no_face.mp4 (healthy) decodes 95 of its stated 98
        (94, 98, True),  # 4 missing
        (69, 72, False),
        (68, 72, True),
        (285, 300, True),  # 15 missing
        (1981, 2000, False),  # 19 missing: under 1 % of a long file (a duration x fps estimate)
        (1980, 2000, True),  # 20 missing: 1 %
        (1900, 2000, True),
        (120, 300, True),
        (5, 0, False),  # the container does not know its length
    ],
)
def test_damage_is_judged_on_the_stated_frame_count(tmp_path, frames, stated, damaged, caplog):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"faked")
    source = VideoFileSource(path, video_capture=lambda _p: _CountingCapture(frames, stated))
    source.open()
    assert source.damage is None
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        count, cap = _play(source)
    assert count == frames and cap.ended and cap.error is None
    if damaged:
        expected = f"decoded {frames} of {stated} frames: the file is damaged or truncated"
        assert cap.damage == source.damage == expected
        assert expected in caplog.text
    else:
        assert cap.damage is None and source.damage is None


def test_reopening_clears_the_damage(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"faked")
    captures = iter([_CountingCapture(120, 300), _CountingCapture(300, 300)])
    source = VideoFileSource(path, video_capture=lambda _p: next(captures))
    source.open()
    while source.read() is not None:
        pass
    assert source.damage is not None
    source.close()
    assert source.damage is not None  # kept for whoever reads it after the thread closed it
    source.open()
    assert source.damage is None


def _encode(path: Path, fourcc: str, n_frames: int = 300) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30.0, (160, 120))
    assert writer.isOpened()
    for i in range(n_frames):
        image = np.full((120, 160, 3), (3 * i) % 256, np.uint8)
        cv2.circle(image, (i % 160, 60), 20, (0, 255, 0), -1)
        writer.write(image)
    writer.release()
    return path.read_bytes()


@pytest.mark.parametrize(("fourcc", "suffix"), [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_healthy_encoded_videos_have_no_damage(tmp_path, fourcc, suffix):
    path = tmp_path / f"healthy{suffix}"
    _encode(path, fourcc)
    count, cap = _play(open_source(str(path)))
    assert count == 300 and cap.ended and cap.damage is None


@pytest.mark.parametrize(
    "shared", ["single_face.mp4", "no_face.mp4", "face_noface.mov", "WolfgangLanger_Pexels.mp4"]
)
def test_shared_videos_have_no_damage(shared_file, shared):
    source = open_source(str(shared_file(f"media/{shared}")))
    count, cap = _play(source)
    assert cap.ended and cap.error is None and cap.damage is None
    assert count >= source.total_frames - 3


def test_truncated_video_is_damaged(tmp_path):
    path = tmp_path / "cut.avi"
    data = _encode(path, "MJPG")
    path.write_bytes(data[: len(data) // 2])
    count, cap = _play(open_source(str(path)))
    assert 100 < count < 200 and cap.ended and cap.error is None
    assert cap.damage == f"decoded {count} of 300 frames: the file is damaged or truncated"


def test_garbage_in_the_middle_of_a_video_is_damage(tmp_path):
    for fourcc, suffix in (("MJPG", ".avi"), ("mp4v", ".mp4")):
        path = tmp_path / f"garbage{suffix}"
        data = bytearray(_encode(path, fourcc))
        start, length = len(data) // 3, len(data) // 10
        data[start : start + length] = np.random.default_rng(7).bytes(length)
        path.write_bytes(bytes(data))
        count, cap = _play(open_source(str(path)))
        assert count < 290, fourcc
        assert cap.damage is not None and cap.damage.startswith(f"decoded {count} of 300 frames")


def test_mp4_cut_before_its_index_is_refused_at_open(tmp_path):
    path = tmp_path / "cut.mp4"
    data = _encode(path, "mp4v")
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="could not be opened"):
        open_source(str(path))
