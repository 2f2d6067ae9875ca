"""Frame capture: cameras, video files, image folders, network streams and the synthetic patient.

``open_source(spec)`` turns a spec string into an opened :class:`FrameSource`;
:class:`CaptureThread` reads it on a daemon thread into a bounded buffer;
:class:`SignalWatchdog` turns the frame stream into SIGNAL_LOST / FROZEN.

Design choices (the specification left these open):

* Time: live sources (camera, URL) stamp ``t_s`` with the capture clock relative
  to the first frame; files, folders and the synthetic patient carry their own
  media time, so smoothing and alarms give the same result at any processing
  speed.
* ``Frame.index`` is the position in the media for files, folders and the synthetic
  patient (an unreadable image or a frame passed over leaves a gap in indices and
  ``t_s``), and the count of frames read for live sources (dropped frames leave gaps).
* Media sources default to pull mode (every frame, in order, no drops); with
  ``realtime=True`` they are paced to media time into the one-slot buffer like a
  live source. Live sources are always real time.
* Real-time playback keeps media time with the wall clock: a reader that falls more than
  ``CATCH_UP_SLACK_S`` behind passes over the late frames without decoding them
  (:meth:`FrameSource.skip_until`: ``grab()`` for video, a jump in the script for the
  synthetic patient) instead of playing on in slow motion, because the alarm delay runs
  on media time. Only a reader more than ``MAX_CATCH_UP_S`` behind (the machine stalled,
  or a source that cannot skip) restarts the pacing from where it is. Frames passed over
  and frames the consumer never took are counted (:class:`CaptureStats`), with the rate
  of playback (:mod:`painmon.core.live.playback`).
* Reconnection happens only after a live source was open once: a source that
  cannot be opened at all is a configuration error the user must see at once.
* The capture thread owns the source after ``start()`` and closes it on exit.
* Every exception on the capture thread ends it with ``CaptureThread.error`` set;
  ``ended`` is then False, so a failure never looks like the end of the media.
* Image folders check each image's header before decoding it: files larger than
  ``MAX_IMAGE_FILE_BYTES``, images above ``MAX_IMAGE_PIXELS`` and files that are
  not readable PNG/JPEG/BMP images are skipped with a warning (a 1 MB PNG can
  claim 30000x30000 px: 2.7 GB decoded, and MediaPipe crashes on it).
* A video file that ends 4 or more frames (and 1 %) short of the frame count its container
  states sets ``FrameSource.damage`` (see :data:`DAMAGE_MIN_MISSING_FRAMES`): the run
  ended, but not at the end of the recording.
* Network streams are opened through FFmpeg with an open timeout
  (``STREAM_OPEN_TIMEOUT_S``) and a read timeout (``STREAM_READ_TIMEOUT_S``), so a
  silent address is refused and a stalled connection reconnected in seconds.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import logging
import math
import os
import re
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

# FFmpeg (inside OpenCV) prints its own complaints about a damaged file ("moov atom not
# found") on stderr; painmon reports the file in one line of its own. Read at first open.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2
import numpy as np

from painmon.core.live.alarms import TechnicalCondition
from painmon.core.live.playback import PLAYBACK_MODES, PlaybackMeter
from painmon.core.live.source_spec import URL_SCHEMES, SourceSpecError, check_source_spec
from painmon.core.util.errors import PainmonError
from painmon.core.util.redact import redact_source

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_VIDEO_FPS = 30.0
# Cameras often return a few empty reads while their sensor starts.
_LIVE_PROBE_READS = 5
#: Real-time playback passes over frames that came due more than this long ago (3 frames
#: at 30 fps): a little lateness is shown late, more is dropped so media time keeps up.
CATCH_UP_SLACK_S = 0.1
#: Behind media time by more than this (a stalled machine, a source that cannot skip),
#: paced playback re-anchors instead of passing over seconds of media.
MAX_CATCH_UP_S = 3.0
# Consumers poll the buffer at least this often so that stop() is never missed.
_WAIT_SLICE_S = 0.1
#: Images with more pixels are skipped unread: 40 MP (e.g. 7746x5164, beyond any camera a
#: bedside monitor uses) decodes to 120 MB of BGR; a 30000x30000 PNG of 875 KB would decode
#: to 2.7 GB and crashes MediaPipe.
MAX_IMAGE_PIXELS = 40_000_000
#: Image files larger than this are skipped unread: an uncompressed 40 MP 32-bit BMP is 160 MB.
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024
# JPEG markers read before giving up on finding the frame header (EXIF, ICC, XMP, ...).
_MAX_JPEG_SEGMENTS = 512
#: A video whose stream ends at least this many frames, and DAMAGE_MIN_MISSING_FRACTION of
#: its container's frame count, short of that count is damaged or truncated. OpenCV states
#: no duration (only a frame count: the container's, or its duration x fps), so frames it
#: is. Measured, decoded vs stated frames, intact: shared Pexels/single_face/face_noface and
#: cv2-encoded mp4v/MJPG/XVID/VP8/VP9 in mp4/mov/avi/mkv/webm, PyAV-encoded H.264 (mp4,
#: faststart mp4, mkv), HEVC, VP8/VP9 webm, MJPG and MPEG-4 part 2 avi of the shared videos
#: and 10 s stills (72-472 frames, 12-60 fps) lose 0 frames; only no_face.mp4 states 98 and
#: decodes 95 (its edit list drops 3 pre-roll frames at the start; its last frame is on
#: time). Cut to 97 % of the bytes (files that still open: mkv, webm, avi, faststart mp4)
#: they lose 2-23 frames (2-7 %: Pexels 472 -> 13-23, face_noface 169 -> 4-6, no_face
#: 95 -> 2-4, single_face 72 -> 2-5), at 95 % 2-28; MPEG-4 part 2 in AVI hides a cut (1-3
#: frames lost) as it hides a few KB of garbage. The old rule (10 frames and 5 %) flagged 0
#: of these 25 files at 97 % and 6 at 95 %; this one flags 14 and 18 (every loss >= 4-5):
#: the margin sits one frame above no_face's 3, and the fraction only tolerates rounding of
#: a duration x fps estimate in long files. Cut to 50 %, 146-228 of 300-472 are lost
#: (MP4/MOV with the index at the end no longer open at all); 10 % of the bytes overwritten
#: 9-90 %; 4 KB overwritten mid-file in H.264 26-48 %. A few KB in HEVC, MJPG or MPEG-4
#: part 2 are concealed: the frames decode (MJPG: 1 KB spoils one frame by up to 255 grey
#: levels, none lost; MPEG-4 part 2: 120-200 frames till the next key frame, 3-11 lost), read()
#: succeeds, timestamps rise, and OpenCV exposes no error (FFmpeg logs it to stderr only).
DAMAGE_MIN_MISSING_FRAMES = 4
DAMAGE_MIN_MISSING_FRACTION = 0.01
#: A network stream that does not answer within this is refused (FFmpeg's default is 30 s).
STREAM_OPEN_TIMEOUT_S = 6.0
#: A stream read that delivers nothing for this long counts as a lost connection (default 30 s);
#: with the first reconnect delay (0.5 s) a stalled stream is reopened within 3.5 s.
STREAM_READ_TIMEOUT_S = 3.0

VideoCaptureFactory = Callable[[Any], Any]
SyntheticFactory = Callable[[], Iterable[Any]]


class SourceError(PainmonError, RuntimeError):
    """A frame source could not be opened or read; the message says what to do."""


class SourceDisconnectedError(SourceError):
    """A live source stopped delivering frames after it had worked (reconnect may help)."""


@dataclass(frozen=True)
class Frame:
    """One captured RGB frame: media time ``t_s``, capture-clock stamp and where it came from."""

    index: int
    t_s: float
    rgb: np.ndarray
    captured_monotonic_s: float
    source: str

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int | np.integer):
            raise ValueError(f"frame index must be an int, got {self.index!r}")
        if self.index < 0:
            raise ValueError(f"frame index must be >= 0, got {self.index}")
        object.__setattr__(self, "index", int(self.index))
        for name in ("t_s", "captured_monotonic_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                isinstance(value, int | float | np.floating) and math.isfinite(value)
            ):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.t_s < 0:
            raise ValueError(f"t_s must be >= 0, got {self.t_s}")
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be a uint8 numpy array, got {type(rgb).__name__}")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ValueError(f"rgb must have shape (H, W, 3), got {rgb.shape}")
        if not isinstance(self.source, str) or not self.source:
            raise ValueError("a frame needs a non-empty source name")

    @property
    def height_px(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width_px(self) -> int:
        return int(self.rgb.shape[1])


class RawFrame(NamedTuple):
    """What a source read: RGB pixels, media time (None for live sources) and media index."""

    rgb: np.ndarray
    t_s: float | None = None
    index: int | None = None


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV BGR/BGRA/grey image -> contiguous RGB uint8."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _natural_key(path: Path) -> tuple[Any, ...]:
    # frame_2.png before frame_10.png even without zero padding.
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts)


def _png_size_px(header: bytes) -> tuple[int, int] | None:
    # Signature, then the IHDR chunk: length, b"IHDR", width, height (big-endian).
    if len(header) < 24 or header[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def _bmp_size_px(header: bytes) -> tuple[int, int] | None:
    if len(header) < 26:
        return None
    (dib_size,) = struct.unpack("<I", header[14:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit unsigned sizes
        width, height = struct.unpack("<HH", header[18:22])
        return width, height
    width, height = struct.unpack("<ii", header[18:26])
    return abs(width), abs(height)  # a negative height means rows stored top-down


def _jpeg_size_px(file: BinaryIO) -> tuple[int, int] | None:
    # Walk the marker segments after SOI to the first frame header (SOFn).
    file.seek(2)
    for _ in range(_MAX_JPEG_SEGMENTS):
        byte = file.read(1)
        if byte != b"\xff":
            return None  # segments follow each other directly: anything else is damage
        while byte == b"\xff":  # fill bytes
            byte = file.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue  # stand-alone markers carry no length
        if marker in (0xD9, 0xDA):
            return None  # end of image or scan data before any frame header
        length_bytes = file.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame_header = file.read(5)  # precision, height, width
            if len(frame_header) < 5:
                return None
            height, width = struct.unpack(">HH", frame_header[1:5])
            return width, height
        file.seek(length - 2, os.SEEK_CUR)
    return None


def image_size_px(file: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding the pixels.

    None when the file is none of these or its header is damaged. Reads from the start of
    ``file`` (a binary file object) and leaves its position anywhere.
    """
    file.seek(0)
    header = file.read(26)
    if header.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_size_px(header)
    if header.startswith(b"\xff\xd8"):
        return _jpeg_size_px(file)
    if header.startswith(b"BM"):
        return _bmp_size_px(header)
    return None


class _UnusableImageError(Exception):
    """An image in a folder that must be skipped; the message says why."""


def _decode_image_file(path: Path) -> np.ndarray:
    """The image at ``path`` as RGB, after checking its size on disk and in its header."""
    try:
        with path.open("rb") as file:
            size_bytes = os.fstat(file.fileno()).st_size
            if size_bytes > MAX_IMAGE_FILE_BYTES:
                raise _UnusableImageError(
                    f"the file is {size_bytes / 2**20:.0f} MiB, more than the "
                    f"{MAX_IMAGE_FILE_BYTES / 2**20:.0f} MiB an image may have"
                )
            size_px = image_size_px(file)
            if size_px is None:
                raise _UnusableImageError("it is not a PNG, JPEG or BMP image, or it is damaged")
            width_px, height_px = size_px
            if width_px < 1 or height_px < 1:
                raise _UnusableImageError(f"its header gives a size of {width_px}x{height_px} px")
            if width_px * height_px > MAX_IMAGE_PIXELS:
                raise _UnusableImageError(
                    f"it is {width_px}x{height_px} px ({width_px * height_px / 1e6:.0f} MP), "
                    f"more than the {MAX_IMAGE_PIXELS / 1e6:.0f} MP an image may have: "
                    "scale it down"
                )
            file.seek(0)
            data = np.frombuffer(file.read(), dtype=np.uint8)
        # imdecode from bytes also reads non-ASCII paths, which imread cannot on Windows.
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise _UnusableImageError("it is damaged")
        return _to_rgb(bgr)
    except OSError as exc:  # missing, a directory, permission denied, I/O error
        raise _UnusableImageError(f"it cannot be read ({exc.strerror or exc})") from exc
    except (cv2.error, MemoryError, ValueError) as exc:
        raise _UnusableImageError(f"it could not be decoded ({type(exc).__name__})") from exc


class FrameSource(abc.ABC):
    """Something that yields frames: ``open()``, then ``read()`` until None, then ``close()``."""

    #: Live sources have no media time and are reconnected when they drop out.
    is_live: bool = False
    _damage: str | None = None

    @property
    def damage(self) -> str | None:
        """Why the media ended before its end (e.g. "decoded 120 of 300 frames: the file is
        damaged or truncated"), or None when it ended normally or has not ended.

        Read it after ``read()`` returned None: a run that ended with damage must not be
        reported as a clean end of media. Kept after ``close()``; ``open()`` clears it.
        """
        return self._damage

    def __init__(self, name: str) -> None:
        self.name = name
        #: Frames the source could not decode and skipped (image folders).
        self.skipped = 0
        #: How many frames the source holds once open (None: live, endless or unknown).
        self.total_frames: int | None = None

    @abc.abstractmethod
    def open(self) -> None:
        """Open (or reopen) the source; raises SourceError with an actionable message."""

    @abc.abstractmethod
    def read(self) -> RawFrame | None:
        """Next frame, or None at the end of the media; a lost live source raises
        SourceDisconnectedError."""

    def skip_until(self, t_s: float) -> int:
        """Pass over the frames whose media time is before ``t_s`` without decoding them, so
        that the next ``read()`` returns the first frame at or after ``t_s``; returns how many
        were passed over. Sources that cannot skip pass over none (the default)."""
        return 0

    def close(self) -> None:  # noqa: B027 - sources without resources need no close
        """Release the device or file; safe to call twice."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _is_stream_url(target: object) -> bool:
    return isinstance(target, str) and urllib.parse.urlsplit(target).scheme.lower() in URL_SCHEMES


@contextlib.contextmanager
def _opencv_log_level(level_name: str) -> Iterator[None]:
    """OpenCV's own log level (e.g. ``"LOG_LEVEL_SILENT"``) for the duration, restored after."""
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None or not hasattr(logging_api, level_name):
        yield
        return
    previous = logging_api.getLogLevel()
    logging_api.setLogLevel(getattr(logging_api, level_name))
    try:
        yield
    finally:
        logging_api.setLogLevel(previous)


def open_video_capture(
    target: int | str,
    *,
    open_timeout_s: float = STREAM_OPEN_TIMEOUT_S,
    read_timeout_s: float = STREAM_READ_TIMEOUT_S,
) -> Any:
    """``cv2.VideoCapture`` for a camera index or file; stream URLs go through FFmpeg with
    open and read timeouts, so that a silent or stalled stream fails in seconds, not 30 s."""
    if isinstance(target, int):
        # An absent camera makes OpenCV print its backends' warnings (V4L2, FFmpeg) on
        # stderr; painmon says it in one line (SourceError), so they are silenced here.
        with _opencv_log_level("LOG_LEVEL_SILENT"):
            return cv2.VideoCapture(target)
    if not _is_stream_url(target):
        return cv2.VideoCapture(target)
    for name, value in (("open_timeout_s", open_timeout_s), ("read_timeout_s", read_timeout_s)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        round(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        round(read_timeout_s * 1000),
    ]
    # A stream that does not answer makes OpenCV warn twice on stderr ("Stream timeout
    # triggered", "can't be used to capture by name"); painmon says it in one line.
    with _opencv_log_level("LOG_LEVEL_ERROR"):
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)


class VideoFileSource(FrameSource):
    """A video file read frame by frame; ``t_s`` is the file's own timestamp."""

    def __init__(self, path: str | Path, video_capture: VideoCaptureFactory = cv2.VideoCapture):
        self.path = Path(path)
        super().__init__(str(self.path))
        self._video_capture = video_capture
        self._capture: Any = None
        self._pending: RawFrame | None = None
        self._next_index = 0
        self._last_t_s: float | None = None
        self._use_pos_msec = True
        self._end_judged = False
        self.fps = DEFAULT_VIDEO_FPS

    def open(self) -> None:
        self.close()
        self._damage = None
        self._end_judged = False
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist: check the path")
        capture = self._video_capture(str(self.path))
        if capture is None or not capture.isOpened():
            raise SourceError(
                f"video file {self.path} could not be opened: it is damaged or in a format "
                "OpenCV cannot decode, so convert it to H.264 MP4 and try again"
            )
        self._capture = capture
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(fps) and 0.1 <= fps <= 1000.0):
            log.warning(
                "%s reports %r frames per second; assuming %g", self.path, fps, DEFAULT_VIDEO_FPS
            )
            fps = DEFAULT_VIDEO_FPS
        self.fps = fps
        count = float(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        # Containers may not know (or misreport) their length: a progress hint only.
        self.total_frames = int(count) if math.isfinite(count) and count >= 1 else None
        self._next_index = 0
        self._last_t_s = None
        self._use_pos_msec = True
        first = self._read_next()
        if first is None:
            self.close()
            raise SourceError(
                f"video file {self.path} holds no readable frames: it is empty or damaged, "
                "so re-export or convert it and try again"
            )
        self._pending = first

    def _media_time_s(self, index: int) -> float:
        pos_ms = float(self._capture.get(cv2.CAP_PROP_POS_MSEC))
        if self._use_pos_msec:
            pos_s = pos_ms / 1000.0
            # Some backends report 0 or garbage; a timestamp is sane only if it moves forward.
            sane = math.isfinite(pos_s) and pos_s >= 0.0
            if sane and self._last_t_s is not None:
                sane = pos_s > self._last_t_s
            if sane:
                return pos_s
            self._use_pos_msec = False
            log.info("%s: container timestamps unusable from frame %d; using fps", self.path, index)
        if self._last_t_s is None:
            return index / self.fps
        return self._last_t_s + 1.0 / self.fps

    def _read_next(self) -> RawFrame | None:
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            return None
        index = self._next_index
        t_s = self._media_time_s(index)
        self._next_index += 1
        self._last_t_s = t_s
        return RawFrame(_to_rgb(bgr), t_s, index)

    def read(self) -> RawFrame | None:
        if self._capture is None:
            raise SourceError(f"video file {self.path} is not open: call open() first")
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        frame = self._read_next()
        if frame is None and not self._end_judged:
            self._end_judged = True
            self._damage = self._judge_end()
            if self._damage is not None:
                log.warning("%s: %s", self.path, self._damage)
        return frame

    def skip_until(self, t_s: float) -> int:
        """Pass over frames before ``t_s`` with ``grab()``: demuxed and decoded (inter frames
        need their predecessors) but neither converted nor copied out."""
        if self._capture is None:
            return 0
        skipped = 0
        if self._pending is not None:
            if self._pending.t_s is not None and self._pending.t_s >= t_s:
                return 0
            self._pending = None
            skipped += 1
        elif self._last_t_s is not None and self._last_t_s + 1.0 / self.fps >= t_s:
            return 0  # the next frame is due at or after t_s
        while True:
            if not self._capture.grab():
                return skipped  # the end of the media: read() says so
            index = self._next_index
            frame_t_s = self._media_time_s(index)
            self._next_index += 1
            self._last_t_s = frame_t_s
            if frame_t_s >= t_s:
                ok, bgr = self._capture.retrieve()
                if ok and bgr is not None:
                    self._pending = RawFrame(_to_rgb(bgr), frame_t_s, index)
                    return skipped
            skipped += 1

    def _judge_end(self) -> str | None:
        """The damage message when the stream ended clearly before the container says it ends."""
        stated = self.total_frames
        if stated is None:
            return None
        decoded = self._next_index
        margin_frames = max(DAMAGE_MIN_MISSING_FRAMES, DAMAGE_MIN_MISSING_FRACTION * stated)
        # Frames, not media time: a damaged MJPG/AVI stream loses frames in the middle yet
        # plays on to its stated end (measured: 272 of 300 frames, last one at 10.0 s of 10 s).
        if stated - decoded < margin_frames:
            return None
        return f"decoded {decoded} of {stated} frames: the file is damaged or truncated"

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._pending = None


class ImageFolderSource(FrameSource):
    """A folder of still images played in natural name order at ``image_fps`` of media time."""

    def __init__(self, folder: str | Path, image_fps: float = 1.0) -> None:
        if isinstance(image_fps, bool) or not (
            isinstance(image_fps, int | float) and math.isfinite(image_fps) and image_fps > 0
        ):
            raise ValueError(f"image_fps must be a positive number, got {image_fps!r}")
        self.folder = Path(folder)
        super().__init__(str(self.folder))
        self.image_fps = float(image_fps)
        self.paths: list[Path] = []
        self._position = 0
        self._pending: RawFrame | None = None

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"image folder {self.folder} does not exist: check the path")
        try:
            named_as_images = [
                p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            ]
            self.paths = sorted((p for p in named_as_images if p.is_file()), key=_natural_key)
        except OSError as exc:
            raise SourceError(
                f"image folder {self.folder} cannot be read ({exc.strerror or exc}): "
                "check that it exists and that you may read it"
            ) from exc
        for path in sorted(set(named_as_images) - set(self.paths), key=_natural_key):
            log.warning("skipping %s: it is a folder or a broken link, not an image file", path)
        if not self.paths:
            raise SourceError(
                f"image folder {self.folder} holds no .png, .jpg, .jpeg or .bmp images: "
                "choose the folder that contains the frames"
            )
        self._position = 0
        self.skipped = 0
        self.total_frames = len(self.paths)
        self._pending = self._read_next()
        if self._pending is None:
            raise SourceError(
                f"none of the {len(self.paths)} images in {self.folder} could be read: "
                "they are damaged or not really images, so re-export them"
            )

    def _read_next(self) -> RawFrame | None:
        while self._position < len(self.paths):
            index = self._position
            path = self.paths[index]
            self._position += 1
            try:
                rgb = _decode_image_file(path)
            except _UnusableImageError as exc:
                self.skipped += 1
                log.warning("skipping image %s: %s (%d skipped so far)", path, exc, self.skipped)
                continue
            return RawFrame(rgb, index / self.image_fps, index)
        return None

    def read(self) -> RawFrame | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        return self._read_next()

    def skip_until(self, t_s: float) -> int:
        """Pass over the images due before ``t_s`` without opening them."""
        skipped = 0
        if self._pending is not None:
            if self._pending.t_s is not None and self._pending.t_s >= t_s:
                return 0
            self._pending = None
            skipped += 1
        while self._position < len(self.paths) and self._position / self.image_fps < t_s:
            self._position += 1
            skipped += 1
        return skipped


class LiveVideoSource(FrameSource):
    """A camera (``cv2.VideoCapture(N)``) or network stream (FFmpeg with open and read
    timeouts, see :func:`open_video_capture`)."""

    is_live = True

    def __init__(
        self,
        target: int | str,
        video_capture: VideoCaptureFactory = open_video_capture,
    ) -> None:
        self.target = target
        if isinstance(target, int):
            name = f"camera:{target}"
            self._what = f"camera {target}"
            self._advice = "is it connected and not used by another program?"
        else:
            name = redact_source(target)
            self._what = f"stream {name}"
            self._advice = "check the address, the network and the camera's user name/password."
        super().__init__(name)
        self._video_capture = video_capture
        self._capture: Any = None
        self._pending: RawFrame | None = None

    def open(self) -> None:
        self.close()
        capture = self._video_capture(self.target)
        if capture is None or not capture.isOpened():
            if capture is not None:
                capture.release()
            raise SourceError(f"{self._what} could not be opened: {self._advice}")
        # A deep driver queue would hand out stale frames; ask for the newest (ignored by some).
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._capture = capture
        for _ in range(_LIVE_PROBE_READS):
            frame = self._grab()
            if frame is not None:
                self._pending = frame
                return
        self.close()
        raise SourceError(f"{self._what} opened but delivered no image: {self._advice}")

    def _grab(self) -> RawFrame | None:
        try:
            ok, bgr = self._capture.read()
        except cv2.error as exc:
            log.debug("%s read raised %s", self.name, exc)
            return None
        if not ok or bgr is None or bgr.size == 0:
            return None
        return RawFrame(_to_rgb(bgr))

    def read(self) -> RawFrame | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._capture is None:
            raise SourceDisconnectedError(f"{self._what} is not open")
        frame = self._grab()
        if frame is None:
            raise SourceDisconnectedError(f"{self._what} stopped delivering images")
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._pending = None


class SyntheticSource(FrameSource):
    """Frames from a generator of ``(t_s, rgb, truth)`` items, e.g. the synthetic patient.

    A factory that returns a seekable stream (``fps``, ``n_frames``, ``frame(index)``, as
    :class:`~painmon.core.synth.stream.SyntheticPatientStream` has) is read by index, so
    that real-time playback can jump over frames it cannot render in time
    (:meth:`skip_until`): the scripted patient then lives on the wall clock, not in slow
    motion. Any other iterable is read in order and cannot skip.
    """

    def __init__(self, frame_factory: SyntheticFactory, name: str = "synthetic") -> None:
        super().__init__(name)
        self._factory = frame_factory
        self._frames: Iterator[Any] | None = None
        self._stream: Any = None
        self._next_index = 0
        self._last_t_s: float | None = None

    @staticmethod
    def _seekable(frames: object) -> bool:
        return all(hasattr(frames, name) for name in ("fps", "n_frames", "frame"))

    def open(self) -> None:
        try:
            frames = self._factory()
        except ImportError as exc:
            raise SourceError(
                f"the synthetic patient is not available ({exc}): reinstall painmon"
            ) from exc
        self._stream = frames if self._seekable(frames) else None
        self._frames = None if self._stream is not None else iter(frames)
        self._next_index = 0
        self._last_t_s = None
        if self._stream is not None:
            self.total_frames = self._stream.n_frames

    def read(self) -> RawFrame | None:
        if self._stream is not None:
            n_frames = self._stream.n_frames
            if n_frames is not None and self._next_index >= n_frames:
                return None
            index = self._next_index
            item = self._stream.frame(index)
            self._next_index += 1
        elif self._frames is not None:
            index = None
            try:
                item = next(self._frames)
            except StopIteration:
                return None
        else:
            raise SourceError("the synthetic source is not open: call open() first")
        t_s, rgb = float(item[0]), item[1]
        if not math.isfinite(t_s) or (self._last_t_s is not None and t_s < self._last_t_s):
            raise SourceError(f"the synthetic generator gave t_s={t_s!r} after {self._last_t_s!r}")
        self._last_t_s = t_s
        return RawFrame(np.ascontiguousarray(rgb), t_s, index)

    def skip_until(self, t_s: float) -> int:
        """Jump the script to the first frame at or after ``t_s`` (seekable streams only)."""
        if self._stream is None:
            return 0
        index_at = getattr(self._stream, "index_at", None)
        target = (
            int(index_at(t_s))
            if index_at is not None
            else max(0, math.ceil(t_s * float(self._stream.fps) - 1e-9))
        )
        n_frames = self._stream.n_frames
        if n_frames is not None:
            target = min(target, n_frames)
        skipped = max(0, target - self._next_index)
        self._next_index += skipped
        return skipped

    def close(self) -> None:
        self._frames = None
        self._stream = None


def synthetic_patient_factory(
    seed: int = 0, fps: float = 30.0, seconds: float | None = None
) -> SyntheticFactory:
    """Factory of synthetic patient streams, imported lazily (heavy to load)."""

    def make() -> Iterable[Any]:
        from painmon.core.synth.stream import SyntheticPatientStream

        return SyntheticPatientStream(seed=seed, fps=fps, seconds=seconds)

    return make


def open_source(
    spec: str,
    image_fps: float = 1.0,
    *,
    video_capture: VideoCaptureFactory = open_video_capture,
    synthetic_factory: SyntheticFactory | None = None,
) -> FrameSource:
    """Open ``camera:N``, ``rtsp://``/``http(s)://`` URLs, a video file, an image folder or
    ``synthetic[:SEED]``; raises SourceError saying what was wrong and what to do."""
    try:
        spec = check_source_spec(spec)
    except SourceSpecError as exc:
        raise SourceError(str(exc)) from None
    lowered = spec.lower()
    source: FrameSource
    if lowered.startswith("camera:"):
        source = LiveVideoSource(int(spec.split(":", 1)[1]), video_capture)
    elif lowered == "synthetic" or lowered.startswith("synthetic:"):
        seed_text = spec.split(":", 1)[1].strip() if ":" in spec else "0"
        factory = synthetic_factory or synthetic_patient_factory(seed=int(seed_text))
        source = SyntheticSource(factory)
    elif _is_stream_url(spec):
        source = LiveVideoSource(spec, video_capture)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            source = ImageFolderSource(path, image_fps)
        elif path.is_file():
            source = VideoFileSource(path, video_capture)
        else:
            raise SourceError(
                f"no file or folder at {redact_source(str(path))}: check the path, or use "
                "camera:N for a camera, rtsp://... for a network camera or synthetic for "
                "the demo patient"
            )
    source.open()
    log.debug("opened video source %s", source.name)
    return source


#: The longest wait between reconnect attempts. A source that comes back just after a failed
#: attempt waits this long, plus the open, before frames are scored again: the target is 5 s.
#: At 5 s it was missed (`painmon bench faults`, server-death restarted just after an attempt:
#: 4.83 s with a 0.08 s local MJPEG open; an RTSP camera takes 0.5-1 s to open).
RECONNECT_MAX_DELAY_S = 3.0


class ReconnectBackoff:
    """Delays between reconnect attempts: ``initial_s`` doubling to ``max_s``; reset on success."""

    def __init__(
        self, initial_s: float = 0.5, max_s: float = RECONNECT_MAX_DELAY_S, factor: float = 2.0
    ) -> None:
        if not (0 < initial_s <= max_s and factor >= 1):
            raise ValueError(
                f"need 0 < initial_s <= max_s and factor >= 1, got {initial_s}, {max_s}, {factor}"
            )
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self._next_s = initial_s

    def next_delay_s(self) -> float:
        """Delay before the next attempt; each call lengthens the following one."""
        delay = self._next_s
        self._next_s = min(self.max_s, self._next_s * self.factor)
        return delay

    def reset(self) -> None:
        self._next_s = self.initial_s


@dataclass(frozen=True)
class CaptureStats:
    """Counters of one capture thread, and how playback keeps up (last 10 s).

    ``frames_dropped``: read but replaced in the one-slot buffer before the consumer took
    them; ``frames_passed_over``: passed over undecoded to keep real-time playback on the
    wall clock; ``frames_skipped``: unreadable images. ``mode`` is one of
    :data:`~painmon.core.live.playback.PLAYBACK_MODES`; ``playback_rate`` (media seconds per
    wall second) and ``drop_fraction`` (share of due frames never handed out) cover the last
    :data:`~painmon.core.live.playback.PLAYBACK_WINDOW_S` and are None until known.
    """

    frames_read: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0
    reconnect_attempts: int = 0
    reconnects: int = 0
    frames_passed_over: int = 0
    mode: str = "realtime"
    playback_rate: float | None = None
    drop_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "frames_read",
            "frames_dropped",
            "frames_skipped",
            "reconnect_attempts",
            "reconnects",
            "frames_passed_over",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative")
        if self.mode not in PLAYBACK_MODES:
            raise ValueError(f"mode must be one of {', '.join(PLAYBACK_MODES)}, got {self.mode!r}")
        if self.playback_rate is not None and not (
            math.isfinite(self.playback_rate) and self.playback_rate >= 0
        ):
            raise ValueError(f"playback_rate must be >= 0, got {self.playback_rate!r}")
        if self.drop_fraction is not None and not 0.0 <= self.drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must lie in [0, 1], got {self.drop_fraction!r}")

    @property
    def frames_lost(self) -> int:
        """Every frame of the media that was never handed out (dropped or passed over)."""
        return self.frames_dropped + self.frames_passed_over


class _FrameBuffer:
    """Bounded frame queue: drop mode replaces the oldest unread frame, block mode waits."""

    def __init__(self, capacity: int, drop_oldest: bool) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self._frames: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """Add a frame; False if the buffer was closed or stop was set while waiting for room."""
        with self._cond:
            if self.drop_oldest:
                while len(self._frames) >= self.capacity:
                    self._frames.popleft()
                    self.dropped += 1
            else:
                while len(self._frames) >= self.capacity and not (self._closed or stop.is_set()):
                    self._cond.wait(_WAIT_SLICE_S)
            if self._closed or (not self.drop_oldest and stop.is_set()):
                return False
            self._frames.append(frame)
            self._cond.notify_all()
            return True

    def get(self, timeout_s: float | None) -> Frame | None:
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while not self._frames and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)


class CaptureThread:
    """Reads a source on a daemon thread into a bounded buffer; ``get_latest()`` hands frames out.

    Live sources, and media sources with ``realtime=True`` (paced to media time,
    passing over frames that came due more than ``CATCH_UP_SLACK_S`` ago), fill a
    one-slot "latest frame wins" buffer: an unread frame is replaced and counted as
    dropped. Media sources with ``realtime`` False or None run in pull
    mode: every frame, in order, never dropped, reading ahead at most
    ``pull_buffer`` frames. When the media ends ``ended`` is set and the thread
    stops; a lost live source is reopened with :class:`ReconnectBackoff`.
    """

    def __init__(
        self,
        source: FrameSource,
        clock: Callable[[], float] = time.monotonic,
        realtime: bool | None = None,
        *,
        sleep: Callable[[float], object] | None = None,
        backoff: ReconnectBackoff | None = None,
        pull_buffer: int = 4,
    ) -> None:
        self.source = source
        self._clock = clock
        if source.is_live and realtime is False:
            log.info("%s is a live source and always runs in real time", source.name)
        self.realtime = True if source.is_live else bool(realtime)
        self.pull_mode = not self.realtime
        #: "live", "realtime" or "every_frame" (see painmon.core.live.playback)
        self.mode = "live" if source.is_live else ("realtime" if self.realtime else "every_frame")
        self._buffer = (
            _FrameBuffer(pull_buffer, drop_oldest=False)
            if self.pull_mode
            else _FrameBuffer(1, drop_oldest=True)
        )
        self._stop_event = threading.Event()
        self.ended_event = threading.Event()
        self._finished = threading.Event()
        # The default sleep wakes as soon as stop() is called.
        self._sleep = sleep if sleep is not None else self._stop_event.wait
        self._backoff = backoff if backoff is not None else ReconnectBackoff()
        self._lock = threading.Lock()
        self._frames_read = 0
        self._reconnect_attempts = 0
        self._reconnects = 0
        self._passed_over = 0
        self._reanchors = 0
        self._meter = PlaybackMeter()
        self._last_media_t_s: float | None = None
        self._first_capture_s: float | None = None
        self._pace_anchor: tuple[float, float] | None = None
        #: Why capture failed (any exception on the thread); None after a clean end or stop.
        self.error: BaseException | None = None
        self._damage: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"painmon-capture[{source.name}]", daemon=True
        )

    # ------------------------------------------------------------------ consumer side
    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Ask the thread to stop and join it; True if it ended within ``timeout_s``."""
        self._stop_event.set()
        self._buffer.close()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        elif self._thread.ident is None:
            self.source.close()  # never started: nobody else will close it
        if self._thread.is_alive():
            log.error(
                "capture thread for %s did not stop within %.1f s", self.source.name, timeout_s
            )
            return False
        return True

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def get_latest(self, timeout_s: float | None = 0.0) -> Frame | None:
        """Newest unread frame (pull mode: next frame in order), waiting up to ``timeout_s``.

        None on timeout, and at once when the thread finished and nothing is left.
        """
        return self._buffer.get(timeout_s)

    @property
    def ended(self) -> bool:
        """True once the media ended (files, folders, finite synthetic runs); never after an
        error. A damaged file also ends: check :attr:`damage`."""
        return self.ended_event.is_set()

    @property
    def damage(self) -> str | None:
        """The source's :attr:`FrameSource.damage` as it stood when the thread finished
        (None while it runs): a file that ended early is damaged, not a clean end of media."""
        return self._damage

    @property
    def exhausted(self) -> bool:
        """The thread finished (end of media, stop or error) and every frame was handed out."""
        return self._finished.is_set() and len(self._buffer) == 0

    @property
    def stats(self) -> CaptureStats:
        with self._lock:
            return CaptureStats(
                frames_read=self._frames_read,
                frames_dropped=self._buffer.dropped,
                frames_skipped=self.source.skipped,
                reconnect_attempts=self._reconnect_attempts,
                reconnects=self._reconnects,
                frames_passed_over=self._passed_over,
                mode=self.mode,
                playback_rate=self._meter.rate if not self.source.is_live else None,
                drop_fraction=self._meter.drop_fraction,
            )

    def __iter__(self) -> Iterator[Frame]:
        """Every frame handed out until the stream is exhausted."""
        if self._thread.ident is None:
            raise RuntimeError("start() the capture thread before iterating over it")
        while True:
            frame = self._buffer.get(None)
            if frame is None:
                return
            yield frame

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ capture side
    def _run(self) -> None:
        media_ended = False
        try:
            while not self._stop_event.is_set():
                if self.mode == "realtime":
                    self._catch_up()
                try:
                    raw = self.source.read()
                except SourceDisconnectedError as exc:
                    if not self.source.is_live:
                        raise
                    self._reconnect(exc)
                    continue
                if raw is None:
                    log.info("%s ended after %d frames", self.source.name, self._frames_read)
                    media_ended = True
                    break
                frame = self._make_frame(raw)
                with self._lock:
                    self._frames_read += 1
                if not self._buffer.put(frame, self._stop_event):
                    break
                self._count_playback(frame)
        except BaseException as exc:
            # Surface any failure to the consumer (error + exhausted, not ended) instead of
            # dying silently; the thread's own exit must still run below.
            self.error = exc
            log.exception("capture from %s failed", self.source.name)
            if not isinstance(exc, Exception):
                raise  # SystemExit/KeyboardInterrupt: recorded, but not swallowed
        finally:
            self._finish(media_ended)

    def _finish(self, media_ended: bool) -> None:
        try:
            self._damage = self.source.damage
            self.source.close()
        except Exception as exc:
            # A failing close must not leave consumers waiting for a thread that is gone.
            if self.error is None:
                self.error = exc
            log.exception("closing %s failed", self.source.name)
        finally:
            if media_ended and self.error is None:
                self.ended_event.set()
            self._finished.set()
            self._buffer.close()

    def _make_frame(self, raw: RawFrame) -> Frame:
        if self.source.is_live:
            now_s = self._clock()
            if self._first_capture_s is None:
                self._first_capture_s = now_s
            t_s = now_s - self._first_capture_s
        else:
            t_s = float(raw.t_s if raw.t_s is not None else 0.0)
            if self.realtime:
                self._pace(t_s)
            now_s = self._clock()
        index = raw.index if raw.index is not None else self._frames_read
        return Frame(index, t_s, raw.rgb, now_s, self.source.name)

    def _pace(self, t_s: float) -> None:
        now_s = self._clock()
        if self._pace_anchor is None:
            self._pace_anchor = (now_s, t_s)
            return
        anchor_clock_s, anchor_t_s = self._pace_anchor
        delay_s = anchor_clock_s + (t_s - anchor_t_s) - now_s
        if delay_s < -MAX_CATCH_UP_S:
            # Once at info level: a source that cannot skip would say it every few seconds.
            log.log(
                logging.DEBUG if self._reanchors else logging.INFO,
                "%s: playback %.1f s behind media time; continuing from here",
                self.source.name,
                -delay_s,
            )
            self._reanchors += 1
            self._pace_anchor = (now_s, t_s)
        elif delay_s > 0:
            self._sleep(delay_s)

    def _catch_up(self) -> None:
        """Pass over the frames that came due more than CATCH_UP_SLACK_S ago (real time)."""
        if self._pace_anchor is None or self._last_media_t_s is None:
            return
        anchor_clock_s, anchor_t_s = self._pace_anchor
        media_now_s = anchor_t_s + (self._clock() - anchor_clock_s)
        behind_s = media_now_s - self._last_media_t_s
        if behind_s <= CATCH_UP_SLACK_S or behind_s > MAX_CATCH_UP_S:
            return  # in time, or so far behind that _pace re-anchors
        passed_over = self.source.skip_until(media_now_s - CATCH_UP_SLACK_S)
        if passed_over:
            with self._lock:
                self._passed_over += passed_over

    def _count_playback(self, frame: Frame) -> None:
        self._last_media_t_s = frame.t_s
        with self._lock:
            offered = self._frames_read + self._passed_over
            lost = self._buffer.dropped + self._passed_over
            self._meter.update(frame.captured_monotonic_s, frame.t_s, offered, lost)

    def _reconnect(self, reason: Exception) -> None:
        self.source.close()
        log.warning("%s: %s; reconnecting", self.source.name, reason)
        while not self._stop_event.is_set():
            delay_s = self._backoff.next_delay_s()
            self._sleep(delay_s)
            if self._stop_event.is_set():
                return
            with self._lock:
                self._reconnect_attempts += 1
                attempt = self._reconnect_attempts
            try:
                self.source.open()
            except SourceError as exc:
                log.warning(
                    "reconnect attempt %d to %s failed (waited %.1f s): %s",
                    attempt,
                    self.source.name,
                    delay_s,
                    exc,
                )
                continue
            self._backoff.reset()
            with self._lock:
                self._reconnects += 1
            log.info("reconnected to %s after attempt %d", self.source.name, attempt)
            return


# FROZEN is judged on a small grey thumbnail: area averaging removes the noise a lossy codec
# adds to every decode of one still picture, and any real motion of a patient still shows.
_THUMBNAIL_SIZE_PX = (64, 36)  # (width, height)
# Larger frames are first sampled down to 4x the thumbnail: a full-frame INTER_AREA costs
# 2-15 ms at 1080p, this ~0.3 ms at any size, and it separates as well (measured).
_PRESAMPLE_SIZE_PX = (256, 144)
_CHANGE_PERCENTILE = 99.0
# Two pictures are the same while the 99th percentile of |grey difference| between their
# thumbnails is at most this many grey levels. Measured (64x36 via 256x144, 99th pct):
#   a still photo encoded for 2.5 s (10 stills, 480x480..1920x1080), any two frames:
#     mp4v <= 2, MJPG <= 2, XVID <= 2, H.264 (libx264 crf 23 and 35) <= 1, crf 45 <= 4
#     (raw pixels of consecutive decodes differ by up to 37-65 grey levels);
#   PyAV (libx264 crf 18/23/28/35 and libx265 crf 28, yuv420p, 24 and 30 fps, 10 s, mp4)
#   of 7 stills (single_face.jpg, multi_face.jpg, a frame of each shared video, a synthetic
#   face; 480x480..1000x666), largest change from the first frame: H.264 <= 3, HEVC <= 2,
#   FROZEN at 2.0 s in all 60 files; with fresh Gaussian sensor noise added to every frame
#   before encoding (a webcam filming a photo), sigma 3-10 grey levels <= 4, 15 <= 6 (FROZEN
#   at 2.0 s), 20 <= 9 (FROZEN at 2.0 s, then flickering), 30 <= 13 (never FROZEN) at
#   crf 23; crf 35 smooths the noise away (sigma 30 <= 8, FROZEN at 2.0 s);
#   shared real videos (Pexels, single_face, face_noface, no_face), minimum over all pairs:
#     consecutive frames 1-2 (near-duplicates happen), 1 s apart 38, 2 s apart 49,
#     largest change within 2 s of any frame 81 (Pexels; face_noface 93, no_face 90,
#     single_face 97); Pexels re-encoded at crf 35 is never FROZEN either.
# A real video is never FROZEN when every frame sees a change above this within frozen_after_s
# (min 81 >> 8), and a still always is (max 4 << 8, 6 with heavy sensor noise): 2x margin over
# the codec noise and 4.7x under the smallest 1 s change of a real person. Not raised for
# noisier cameras: each grey level given to sensor noise is taken from a patient holding still.
STILL_PICTURE_GREY_LEVELS = 8.0


def picture_thumbnail(rgb: np.ndarray) -> np.ndarray:
    """The 36x64 uint8 grey thumbnail on which two frames are compared (a new array)."""
    height_px, width_px = rgb.shape[:2]
    if width_px > _PRESAMPLE_SIZE_PX[0] or height_px > _PRESAMPLE_SIZE_PX[1]:
        rgb = cv2.resize(rgb, _PRESAMPLE_SIZE_PX, interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, _THUMBNAIL_SIZE_PX, interpolation=cv2.INTER_AREA)


def picture_change(previous: np.ndarray, thumbnail: np.ndarray) -> float:
    """How much the picture changed between two :func:`picture_thumbnail` results, in grey
    levels: the 99th percentile of the absolute difference (codec noise stays at 1-4)."""
    diff = cv2.absdiff(previous, thumbnail).ravel()
    k = int(_CHANGE_PERCENTILE / 100.0 * (diff.size - 1))
    return float(np.partition(diff, k)[k])


def same_image(
    previous: np.ndarray | None,
    rgb: np.ndarray,
    tolerance_grey_levels: float = STILL_PICTURE_GREY_LEVELS,
) -> bool:
    """True when ``rgb`` shows the same picture as ``previous`` up to lossy-codec noise.

    A still photo played as MJPG/MPEG-4/H.264 video decodes a little differently every frame
    (up to ~20 grey levels in single pixels), so pixel equality would never call it frozen.
    Frames of a different size are never the same picture.
    """
    if previous is None or previous.shape != rgb.shape:
        return False
    change = picture_change(picture_thumbnail(previous), picture_thumbnail(rgb))
    return change <= tolerance_grey_levels


class SignalWatchdog:
    """SIGNAL_LOST when no new frame came for ``lost_after_s``; FROZEN when frames kept
    showing the same picture (see :func:`same_image`) for ``frozen_after_s``.

    Call ``update(frame)`` with each new frame and ``update()`` when none came
    (e.g. on every GUI tick). ``now_s`` defaults to the clock; a consumer that
    processes a file faster than real time can pass ``frame.t_s`` instead.

    Each frame is compared with the reference picture (the first frame of the current run
    of same pictures), not with the previous frame, so that a slow drift adds up to a change.
    """

    def __init__(
        self,
        lost_after_s: float = 2.0,
        frozen_after_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        still_tolerance_grey_levels: float = STILL_PICTURE_GREY_LEVELS,
    ) -> None:
        for name, value in (("lost_after_s", lost_after_s), ("frozen_after_s", frozen_after_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not (math.isfinite(still_tolerance_grey_levels) and still_tolerance_grey_levels >= 0):
            raise ValueError(
                "still_tolerance_grey_levels must be a number of grey levels >= 0, "
                f"got {still_tolerance_grey_levels!r}"
            )
        self.lost_after_s = float(lost_after_s)
        self.frozen_after_s = float(frozen_after_s)
        self.still_tolerance_grey_levels = float(still_tolerance_grey_levels)
        self._clock = clock
        self.condition: TechnicalCondition | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every frame; the lost timer restarts now."""
        self._started_s = self._clock()
        self._last_frame_s: float | None = None
        self._last_key: tuple[str, int, float] | None = None
        # The reference picture's thumbnail (a new array, so a source that reuses its buffer
        # cannot make a frame look like itself) and its frame shape (a new size is a new picture).
        self._reference: np.ndarray | None = None
        self._reference_shape: tuple[int, ...] | None = None
        self._identical_since_s: float | None = None
        self.condition = None

    def update(
        self,
        frame: Frame | None = None,
        now_s: float | None = None,
        end_of_stream: bool = False,
    ) -> TechnicalCondition | None:
        """Feed the newest frame (or None) and return the technical condition now holding.

        ``end_of_stream`` (a file that ended) is not a lost signal and returns None.
        """
        now = self._clock() if now_s is None else float(now_s)
        if end_of_stream:
            return self._set(None)
        if frame is not None:
            key = (frame.source, frame.index, frame.captured_monotonic_s)
            if key != self._last_key:  # the same Frame handed in twice is not a new frame
                self._last_key = key
                if self._last_frame_s is not None and now - self._last_frame_s >= self.lost_after_s:
                    # Frames resume after a lost signal: a frozen run needs frames all along.
                    self._reference = None
                self._last_frame_s = now
                self._compare_with_reference(frame.rgb, now)
        since_frame_s = now - (
            self._last_frame_s if self._last_frame_s is not None else self._started_s
        )
        if since_frame_s >= self.lost_after_s:
            return self._set(TechnicalCondition.SIGNAL_LOST)
        if (
            self._identical_since_s is not None
            and now - self._identical_since_s >= self.frozen_after_s
        ):
            return self._set(TechnicalCondition.FROZEN)
        return self._set(None)

    def _compare_with_reference(self, rgb: np.ndarray, now: float) -> None:
        thumbnail = picture_thumbnail(rgb)
        if (
            self._reference is None
            or self._reference_shape != rgb.shape
            or picture_change(self._reference, thumbnail) > self.still_tolerance_grey_levels
        ):
            self._reference = thumbnail
            self._reference_shape = rgb.shape
            self._identical_since_s = now

    def _set(self, condition: TechnicalCondition | None) -> TechnicalCondition | None:
        if condition != self.condition:
            if condition is None:
                log.info("video signal recovered from %s", self.condition)
            else:
                log.warning("video signal: %s", condition)
            self.condition = condition
        return condition
