"""Crash-safe session files: per-frame scores, the alarm log and the session metadata.

A session folder holds ``session.csv`` (one row per scored frame), ``alarms.csv``
(one row per :class:`~painmon.core.live.alarms.AlarmEvent`) and ``session.json``
(who, which model, which thresholds, when, how it ended). Optionally ``media/``
holds JPEG frames, only when the operator asked for them.

Design choices (the specification left these open):

* Rows go through Python's buffered file; they are flushed and ``os.fsync``-ed
  whenever ``flush_interval_s`` (1 s) of the injectable monotonic clock passed
  since the last sync, on every alarm event and on close. The check runs on each
  write, so a ``kill -9`` loses at most the last second of rows written before
  it; an engine that stalls should call :meth:`SessionWriter.flush` itself.
* ``session.json`` is rewritten atomically (temporary file, fsync, rename) at
  start, on a settings change and at close; its ``frames_written`` is final only
  once ``status`` is ``"ended"``. A session whose json still says ``"running"``
  after its process is gone crashed; :func:`recover_session` reports that. Like
  ``frames_written``, its alarm counts (``pain_alarm_episodes``, escalations counted
  apart in ``pain_alarm_escalations``, ``technical_alarms``) are final at close.
* A session attached while an alarm is active starts its ``alarms.csv`` with one
  ``active_at_session_start`` row per active alarm (the engine writes them on attach),
  so a log never begins in the middle of an alarm it does not mention.
* The writer holds an ``flock`` on ``session.csv`` while it is open (POSIX; the
  kernel drops it when the process dies, ``kill -9`` included), so a reader can
  tell a session still being recorded from a crashed one (:func:`writer_alive`).
* Line breaks inside text cells are replaced by spaces so that one physical line
  is one record: a torn last line is then always recognisable (no final newline)
  and dropped by the readers.
* Text cells starting with ``= + - @ TAB CR`` get a leading ``'`` (OWASP CSV
  injection); the readers return text cells as stored, quote included.
* The writer is not thread-safe: the engine thread that scores frames owns it.
* Patient data is private to the user running the monitor: session folders (and the
  folders made above them) are created ``0700`` and their files ``0600``, set explicitly
  whatever the umask. The source is recorded with any URL password replaced by ``***``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no flock, so a reader cannot tell a live writer from a crash
    fcntl = None  # type: ignore[assignment]

from painmon.core.live.alarms import (
    AlarmEvent,
    AlarmPriority,
    AlarmSettings,
    AlarmTally,
    TechnicalCondition,
)
from painmon.core.util.csvsafe import text_cell
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import atomic_write
from painmon.core.util.labels import NUM_CLASSES, PSPI_MAX
from painmon.core.util.redact import redact_source
from painmon.core.util.timeline import utc_now
from painmon.core.util.validate import check_probability_rows, is_sha256_hex

log = logging.getLogger(__name__)

SESSION_CSV = "session.csv"
ALARMS_CSV = "alarms.csv"
SESSION_JSON = "session.json"
MEDIA_DIR = "media"
# 2: session.csv gained the domain_score column (version 1 files are still read).
SESSION_FORMAT_VERSION = 2

SESSION_COLUMNS: tuple[str, ...] = (
    "utc_time",
    "t_s",
    "frame",
    "face_found",
    "quality_ok",
    "p0",
    "p1",
    "p2",
    "p3",
    "p4",
    "pain_class",
    "pain_level",
    "pain_level_smoothed",
    "confidence",
    "au_pspi",
    "alarm_priority",
    "technical_condition",
    "domain_score",
)
ALARM_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AlarmEvent))
# session.csv of format version 1 (before the domain gate).
SESSION_COLUMNS_V1: tuple[str, ...] = SESSION_COLUMNS[:-1]

#: Permissions of session folders and of the files in them (owner only).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

MAX_PSEUDONYM_CHARS = 64
DEFAULT_FLUSH_INTERVAL_S = 1.0

STATUS_RUNNING = "running"
STATUS_ENDED = "ended"

#: What :func:`recover_session` says of a session (its ``state``): closed by its writer;
#: still open in a live painmon process; "running" in its json with no process writing
#: it (the recording crashed); "running" where no writer lock can be checked (Windows,
#: an unreadable session.csv); no readable session.json.
STATE_ENDED = "ended"
STATE_RECORDING = "recording"
STATE_CRASHED = "crashed"
STATE_NOT_CLOSED = "not closed"
STATE_UNKNOWN = "unknown"

_ROW_PRIORITIES = frozenset(
    p.value for p in (AlarmPriority.NONE, AlarmPriority.MEDIUM, AlarmPriority.HIGH)
)
# Letters/digits first, then letters, digits, '_', '-', '.'; \w would also admit '_' first.
_PSEUDONYM_RE = re.compile(r"^[^\W_][\w.-]*$")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
_PSEUDONYM_RULE = (
    f"use 1 to {MAX_PSEUDONYM_CHARS} letters, digits, '_', '-' or '.', starting with a "
    "letter or digit (no spaces, slashes, '..' or control characters), e.g. 'P-0042'"
)

_BOOL_COLUMNS = frozenset({"face_found", "quality_ok"})
_INT_COLUMNS = frozenset({"frame", "pain_class"})
_FLOAT_COLUMNS = frozenset(
    {
        "t_s",
        "p0",
        "p1",
        "p2",
        "p3",
        "p4",
        "pain_level",
        "pain_level_smoothed",
        "confidence",
        "au_pspi",
        "domain_score",
        "value",
        "threshold",
    }
)


class SessionWriteError(PainmonError, RuntimeError):
    """Recording stopped because the session files could not be written."""


# -- validation helpers ----------------------------------------------------------------------


def validate_pseudonym(pseudonym: str) -> str:
    """Return ``pseudonym`` if safe as a folder name and a file cell, else raise ValueError."""
    if not isinstance(pseudonym, str):
        raise InvalidInputError(f"patient pseudonym must be text; {_PSEUDONYM_RULE}")
    problem = None
    if not pseudonym:
        problem = "is empty"
    elif len(pseudonym) > MAX_PSEUDONYM_CHARS:
        problem = f"has {len(pseudonym)} characters"
    elif "/" in pseudonym or "\\" in pseudonym:
        problem = "contains a path separator"
    elif ".." in pseudonym:
        problem = "contains '..'"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in pseudonym):
        problem = "contains a control character"
    elif not _PSEUDONYM_RE.match(pseudonym):
        problem = "contains a character that is not allowed or does not start with one"
    elif pseudonym.split(".")[0].upper() in _WINDOWS_RESERVED or pseudonym.endswith("."):
        problem = "is not a valid folder name on Windows"
    if problem is not None:
        raise InvalidInputError(f"patient pseudonym {pseudonym!r} {problem}; {_PSEUDONYM_RULE}")
    return pseudonym


def _utc_iso(name: str, value: str) -> str:
    try:
        stamp = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be ISO-8601 text, got {value!r}") from exc
    if stamp.tzinfo is None:
        raise ValueError(f"{name} must carry a timezone, got {value!r}")
    return value


def _optional_range(name: str, value: float | None, low: float, high: float) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"{name} must lie in {low:g}..{high:g} or be None, got {value!r}")
    return number


@dataclass(frozen=True)
class SessionRow:
    """One scored frame as written to ``session.csv``; unknown outputs are None, never 0.

    ``probabilities`` are the frame's own calibrated class probabilities (not smoothed).
    """

    utc_time: str
    t_s: float
    frame: int
    face_found: bool
    quality_ok: bool
    probabilities: tuple[float, ...] | None = None
    pain_class: int | None = None
    pain_level: float | None = None
    pain_level_smoothed: float | None = None
    confidence: float | None = None
    au_pspi: float | None = None
    alarm_priority: str = AlarmPriority.NONE.value
    technical_condition: str | None = None
    # The domain gate's score of the frame's crop (None: no crop scored or no gate); kept
    # out of domain too, as the evidence for OUT_OF_DOMAIN.
    domain_score: float | None = None

    def __post_init__(self) -> None:
        _utc_iso("utc_time", self.utc_time)
        t_s = float(self.t_s)
        if not math.isfinite(t_s):
            raise ValueError(f"t_s must be finite, got {self.t_s!r}")
        object.__setattr__(self, "t_s", t_s)
        if isinstance(self.frame, bool) or int(self.frame) != self.frame or self.frame < 0:
            raise ValueError(f"frame must be a whole number >= 0, got {self.frame!r}")
        object.__setattr__(self, "frame", int(self.frame))
        object.__setattr__(self, "face_found", bool(self.face_found))
        object.__setattr__(self, "quality_ok", bool(self.quality_ok))
        if self.quality_ok and not self.face_found:
            raise ValueError("quality_ok cannot be set for a frame without a face")

        priority = str(self.alarm_priority)
        if priority not in _ROW_PRIORITIES:
            raise ValueError(
                f"alarm_priority must be one of {sorted(_ROW_PRIORITIES)}, got {priority!r}"
            )
        object.__setattr__(self, "alarm_priority", priority)
        condition = self.technical_condition or None
        if condition is not None:
            try:
                condition = TechnicalCondition(condition).value
            except ValueError:
                names = ", ".join(c.value for c in TechnicalCondition)
                raise ValueError(
                    f"technical_condition must be empty or one of {names}, got {condition!r}"
                ) from None
        object.__setattr__(self, "technical_condition", condition)

        probs = self.probabilities
        if probs is not None:
            probs = tuple(float(p) for p in probs)
            if len(probs) != NUM_CLASSES:
                raise ValueError(f"need {NUM_CLASSES} probabilities, got {len(probs)}")
            check_probability_rows(probs, what="probabilities")
        object.__setattr__(self, "probabilities", probs)
        if self.pain_class is not None:
            if isinstance(self.pain_class, bool) or int(self.pain_class) != self.pain_class:
                raise ValueError(f"pain_class must be a whole number, got {self.pain_class!r}")
            if not 0 <= int(self.pain_class) < NUM_CLASSES:
                raise ValueError(
                    f"pain_class must lie in 0..{NUM_CLASSES - 1} or be None, "
                    f"got {self.pain_class!r}"
                )
            object.__setattr__(self, "pain_class", int(self.pain_class))
        max_level = float(NUM_CLASSES - 1)
        for name, high in (
            ("pain_level", max_level),
            ("pain_level_smoothed", max_level),
            ("confidence", 1.0),
            ("au_pspi", float(PSPI_MAX)),
        ):
            object.__setattr__(self, name, _optional_range(name, getattr(self, name), 0.0, high))

        if self.domain_score is not None:
            score = float(self.domain_score)
            if not (math.isfinite(score) and score >= 0):
                raise ValueError(f"domain_score must be a finite number >= 0, got {score!r}")
            object.__setattr__(self, "domain_score", score)
        outputs = {
            "probabilities": self.probabilities,
            "pain_class": self.pain_class,
            "pain_level": self.pain_level,
            "pain_level_smoothed": self.pain_level_smoothed,
            "confidence": self.confidence,
        }
        # The training-free AU estimate stands in while the model is out of its domain.
        if condition != TechnicalCondition.OUT_OF_DOMAIN.value:
            outputs["au_pspi"] = self.au_pspi
        if not self.output_known:
            given = [name for name, value in outputs.items() if value is not None]
            if given:
                raise ValueError(
                    "output is unknown (no face, low quality or a technical condition) but "
                    f"{', '.join(given)} were given; unknown outputs must be None"
                )
        elif self.probabilities is None and (
            self.pain_class is not None or self.pain_level is not None
        ):
            raise ValueError("pain_class and pain_level need the frame's probabilities")

    @property
    def output_known(self) -> bool:
        """True when the frame may carry a pain estimate (face, good quality, no condition)."""
        return self.face_found and self.quality_ok and self.technical_condition is None

    def cells(self) -> list[str]:
        """The CSV cells in :data:`SESSION_COLUMNS` order."""
        probs = self.probabilities or (None,) * NUM_CLASSES
        return [
            text_cell(self.utc_time),
            _time_cell(self.t_s),
            str(self.frame),
            "1" if self.face_found else "0",
            "1" if self.quality_ok else "0",
            *(_number_cell(p) for p in probs),
            "" if self.pain_class is None else str(self.pain_class),
            _number_cell(self.pain_level),
            _number_cell(self.pain_level_smoothed),
            _number_cell(self.confidence),
            _number_cell(self.au_pspi),
            text_cell(self.alarm_priority),
            text_cell(self.technical_condition),
            _number_cell(self.domain_score),
        ]


# -- cell formatting -------------------------------------------------------------------------


def _number_cell(value: float | None) -> str:
    return "" if value is None else format(float(value), ".6g")


def _time_cell(t_s: float) -> str:
    return f"{t_s:.3f}"


def _event_cells(event: AlarmEvent) -> list[str]:
    cells = []
    for name in ALARM_COLUMNS:
        value = getattr(event, name)
        if name == "t_s":
            cells.append(_time_cell(value))
        elif name in _FLOAT_COLUMNS:
            cells.append(_number_cell(value))
        else:
            cells.append(text_cell(value))
    return cells


def _csv_line(cells: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(list(cells))
    return buffer.getvalue()


# -- folders ---------------------------------------------------------------------------------


def make_session_folder(root: str | os.PathLike[str], pseudonym: str, utc_now: datetime) -> Path:
    """Create and return a new, empty ``root/<pseudonym>/<YYYYmmdd-HHMMSS>Z`` folder."""
    validate_pseudonym(pseudonym)
    if utc_now.tzinfo is None:
        raise ValueError("utc_now must be timezone-aware (e.g. datetime.now(UTC))")
    stem = utc_now.astimezone(UTC).strftime("%Y%m%d-%H%M%S") + "Z"
    parent = Path(root) / pseudonym
    _make_private_dirs(parent)
    # Two sessions started within the same second get -2, -3... rather than sharing a folder.
    for attempt in range(1, 100):
        folder = parent / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue
        folder.chmod(PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask
        return folder
    raise FileExistsError(f"too many sessions started at {stem} under {parent}")


def _make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents as owner-only folders; existing ones stay."""
    missing: list[Path] = []
    for level in (folder, *folder.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another session: leave it as it is
        level.chmod(PRIVATE_DIR_MODE)
    if not folder.is_dir():
        raise FileExistsError(f"{folder} is not a folder; choose another session folder")


def _prepare_folder(folder: Path) -> None:
    if folder.exists():
        if not folder.is_dir():
            raise FileExistsError(
                f"session folder {folder} is a file; choose a new or empty folder"
            )
        if any(folder.iterdir()):
            raise FileExistsError(
                f"session folder {folder} is not empty; an earlier session is never "
                "overwritten — choose a new or empty folder"
            )
        try:
            folder.chmod(PRIVATE_DIR_MODE)
        except PermissionError:
            # An empty folder someone else owns (but lets us write to): the files in it
            # are still private.
            log.warning("session folder %s could not be made private (not its owner)", folder)
    else:
        _make_private_dirs(folder)


def _open_new_private(path: Path) -> int:
    # O_EXCL refuses an existing file (a second writer can never truncate a session), and
    # the file is private from its first byte; the chmod makes 0600 exact whatever the umask.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        path.chmod(PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_new_text(path: Path) -> IO[str]:
    return open(_open_new_private(path), "w", encoding="utf-8", newline="")


def _hold_writer_lock(handle: IO[str]) -> None:
    # Released by the kernel when the file is closed or the process dies (kill -9 too).
    if fcntl is None:
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (OSError, AttributeError, ValueError) as exc:
        # An injected file without a descriptor, or a filesystem without locks: the session
        # is recorded all the same, only a reader cannot tell a crash from a live run.
        log.debug("session.csv writer lock not taken: %s", exc)


def writer_alive(folder: str | os.PathLike[str]) -> bool | None:
    """Whether a :class:`SessionWriter` on this machine has ``folder`` open right now.

    None when it cannot be told: no ``flock`` (Windows), or no readable ``session.csv``.
    """
    if fcntl is None:
        return None
    try:
        fd = os.open(Path(folder) / SESSION_CSV, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the writer ------------------------------------------------------------------------------


class SessionWriter:
    """Writes one session folder incrementally; a context manager, closed cleanly on exit."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        pseudonym: str,
        model_id: str,
        model_sha256: str,
        settings: AlarmSettings,
        source: str,
        face_detector: str,
        store_media: bool = False,
        clock: Callable[[], float] = time.monotonic,
        *,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        utc_clock: Callable[[], datetime] = utc_now,
        opener: Callable[[Path], IO[str]] = _open_new_text,
    ) -> None:
        validate_pseudonym(pseudonym)
        if not model_id or not isinstance(model_id, str):
            raise ValueError("model_id must be non-empty text (the registry name of the model)")
        if not is_sha256_hex(model_sha256):
            raise ValueError(f"model_sha256 must be 64 lowercase hex digits, got {model_sha256!r}")
        self._check_settings(settings, model_sha256)
        if not (math.isfinite(flush_interval_s) and 0.0 < flush_interval_s <= 1.0):
            raise ValueError(
                f"flush_interval_s must lie in (0, 1] s so a crash loses at most a second, "
                f"got {flush_interval_s!r}"
            )
        self.folder = Path(folder)
        self.store_media = bool(store_media)
        self._clock = clock
        self._utc_clock = utc_clock
        self._flush_interval_s = float(flush_interval_s)
        self._frames_written = 0
        self._events_written = 0
        self._tally = AlarmTally()
        self._failed: SessionWriteError | None = None
        self._closed = False
        self._rows_file: IO[str] | None = None
        self._alarms_file: IO[str] | None = None

        from painmon import __version__

        self._meta: dict[str, Any] = {
            "format_version": SESSION_FORMAT_VERSION,
            "pseudonym": pseudonym,
            "model_id": text_cell(model_id),
            "model_sha256": model_sha256,
            "thresholds": dataclasses.asdict(settings),
            "software_version": __version__,
            "source": text_cell(redact_source(source)),
            "face_detector": text_cell(face_detector),
            "store_media": self.store_media,
            "start_utc": self._now_iso(),
            "end_utc": None,
            "end_reason": None,
            "frames_written": 0,
            "alarm_events_written": 0,
            # Counted from the events written (AlarmTally): an escalation is not a new alarm.
            "pain_alarm_episodes": 0,
            "pain_alarm_escalations": 0,
            "technical_alarms": 0,
            "status": STATUS_RUNNING,
        }
        _prepare_folder(self.folder)
        try:
            self._rows_file = opener(self.folder / SESSION_CSV)
            _hold_writer_lock(self._rows_file)
            self._alarms_file = opener(self.folder / ALARMS_CSV)
            for name in (SESSION_CSV, ALARMS_CSV):  # also for an injected opener
                (self.folder / name).chmod(PRIVATE_FILE_MODE)
            self._rows_file.write(_csv_line(SESSION_COLUMNS))
            self._alarms_file.write(_csv_line(ALARM_COLUMNS))
            self._sync_files()
            self._write_meta()
            _fsync_dir(self.folder)
        except OSError as exc:
            raise self._fail(exc) from exc
        self._last_sync_s = self._clock()
        log.info("session recording started in %s", self.folder)

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        reason = "closed" if exc_type is None else f"error: {exc_type.__name__}"
        if exc_type is None:
            self.close(reason)
            return
        try:
            self.close(reason)
        except SessionWriteError:
            # Do not hide the exception that ended the session behind a follow-on write error.
            log.exception("could not close session %s cleanly", self.folder)

    # -- public API ------------------------------------------------------------------------

    @property
    def frames_written(self) -> int:
        """Rows handed to ``session.csv`` so far."""
        return self._frames_written

    def write_row(self, row: SessionRow) -> None:
        """Append one scored frame; syncs to disk once ``flush_interval_s`` has passed."""
        if not isinstance(row, SessionRow):
            raise TypeError(f"expected SessionRow, got {type(row).__name__}")
        self._check_open()
        try:
            assert self._rows_file is not None
            self._rows_file.write(_csv_line(row.cells()))
            self._frames_written += 1
            if self._clock() - self._last_sync_s >= self._flush_interval_s:
                self._sync_files()
        except OSError as exc:
            raise self._fail(exc) from exc

    def write_events(self, events: Iterable[AlarmEvent]) -> None:
        """Append alarm events to ``alarms.csv`` and sync both files at once."""
        events = list(events)
        for event in events:
            if not isinstance(event, AlarmEvent):
                raise TypeError(f"expected AlarmEvent, got {type(event).__name__}")
        if not events:
            return
        self._check_open()
        try:
            assert self._alarms_file is not None
            for event in events:
                self._alarms_file.write(_csv_line(_event_cells(event)))
                self._events_written += 1
                self._tally.add(event)
            self._sync_files()
        except OSError as exc:
            raise self._fail(exc) from exc

    def update_settings(self, settings: AlarmSettings) -> None:
        """Record new alarm thresholds in ``session.json`` (the change itself is in alarms.csv)."""
        self._check_settings(settings, self._meta["model_sha256"])
        self._check_open()
        self._meta["thresholds"] = dataclasses.asdict(settings)
        try:
            self._sync_files()
            self._write_meta()
        except OSError as exc:
            raise self._fail(exc) from exc

    def flush(self) -> None:
        """Flush and fsync both CSV files now (call when frames stop arriving)."""
        self._check_open()
        try:
            self._sync_files()
        except OSError as exc:
            raise self._fail(exc) from exc

    def write_frame_jpeg(self, frame_index: int, rgb: Any) -> Path:
        """Store one RGB uint8 frame as ``media/frame_<index>.jpg`` (only with store_media)."""
        if not self.store_media:
            raise RuntimeError(
                "this session stores no images (store_media=False); start the session with "
                "image storage enabled if the protocol allows it"
            )
        self._check_open()
        import cv2  # only sessions that store media need OpenCV
        import numpy as np

        image = np.asarray(rgb)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {image.dtype} {image.shape}")
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"OpenCV could not encode frame {frame_index} as JPEG")
        media = self.folder / MEDIA_DIR
        path = media / f"frame_{int(frame_index):08d}.jpg"
        try:
            if not media.is_dir():
                media.mkdir(mode=PRIVATE_DIR_MODE)
                media.chmod(PRIVATE_DIR_MODE)
            with open(_open_new_private(path), "wb") as handle:
                handle.write(encoded.tobytes())
        except OSError as exc:
            raise self._fail(exc) from exc
        return path

    def close(self, reason: str = "closed") -> None:
        """Sync and close both files and mark the session ended in ``session.json``."""
        if self._closed:
            return
        self._closed = True
        if self._failed is not None:
            self._release_files()
            return
        try:
            self._sync_files()
            self._release_files()
            self._meta.update(
                end_utc=self._now_iso(),
                end_reason=text_cell(redact_source(reason)),
                status=STATUS_ENDED,
            )
            self._write_meta()
        except OSError as exc:
            raise self._fail(exc) from exc
        log.info(
            "session %s ended: %d frames, %d alarm events",
            self.folder,
            self._frames_written,
            self._events_written,
        )

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _check_settings(settings: AlarmSettings, model_sha256: str) -> None:
        if not isinstance(settings, AlarmSettings):
            raise TypeError(f"expected AlarmSettings, got {type(settings).__name__}")
        if settings.model_sha256 and settings.model_sha256 != model_sha256:
            raise ValueError(
                "the alarm settings were made for another model "
                f"({settings.model_sha256[:12]}…) than the one recorded ({model_sha256[:12]}…)"
            )

    def _now_iso(self) -> str:
        stamp = self._utc_clock()
        if stamp.tzinfo is None:
            raise ValueError("utc_clock must return a timezone-aware datetime")
        return stamp.astimezone(UTC).isoformat()

    def _check_open(self) -> None:
        if self._failed is not None:
            raise SessionWriteError(str(self._failed))
        if self._closed:
            raise RuntimeError(f"session {self.folder} is already closed; start a new session")

    def _sync_files(self) -> None:
        for handle in (self._rows_file, self._alarms_file):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
        self._meta["frames_written"] = self._frames_written
        self._meta["alarm_events_written"] = self._events_written
        self._meta["pain_alarm_episodes"] = self._tally.pain_episodes
        self._meta["pain_alarm_escalations"] = self._tally.escalations
        self._meta["technical_alarms"] = self._tally.technical
        self._last_sync_s = self._clock()

    def _write_meta(self) -> None:
        def write(handle: IO[Any]) -> None:
            json.dump(self._meta, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())

        # Atomic on POSIX and Windows: a reader sees the old or the new json, never half.
        atomic_write(self.folder / SESSION_JSON, write, mkdir=False, mode=PRIVATE_FILE_MODE)
        _fsync_dir(self.folder)

    def _release_files(self) -> None:
        for name in ("_rows_file", "_alarms_file"):
            handle = getattr(self, name)
            setattr(self, name, None)
            if handle is None:
                continue
            try:
                handle.close()
            except OSError as exc:
                # Closing re-flushes a buffer the full disk already refused; it is lost anyway.
                log.warning("closing %s failed: %s", name.strip("_"), exc)

    def _fail(self, exc: OSError) -> SessionWriteError:
        reason = exc.strerror or str(exc) or type(exc).__name__
        error = SessionWriteError(
            f"Could not write to the session folder {self.folder} ({reason}). Recording has "
            "stopped; rows saved up to the last second before the error are kept. Free disk "
            "space or choose another session folder, then start a new session."
        )
        if self._failed is None:
            self._failed = error
            log.error("%s", error)
            self._release_files()
        return error


# -- readers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvReadResult:
    """Parsed rows of a session or alarm CSV plus what had to be dropped."""

    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    torn_last_line: bool
    dropped_rows: int
    problems: tuple[str, ...]


def _parse_cell(column: str, cell: str) -> Any:
    if cell == "":
        return None
    if column in _BOOL_COLUMNS:
        if cell not in ("0", "1"):
            raise ValueError(f"{column} must be 0 or 1, got {cell!r}")
        return cell == "1"
    if column in _INT_COLUMNS:
        return int(cell)
    if column in _FLOAT_COLUMNS:
        number = float(cell)
        if not math.isfinite(number):
            raise ValueError(f"{column} is not finite: {cell!r}")
        return number
    return cell


def read_csv_checked(path: str | os.PathLike[str]) -> CsvReadResult:
    """Parse ``session.csv`` or ``alarms.csv``, dropping a torn last line and broken rows."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    # A complete file ends with "\n", leaving an empty last piece; anything else is torn.
    tail = lines.pop()
    torn = tail != ""
    problems: list[str] = []
    if torn:
        problems.append(f"{path.name}: incomplete last line dropped (written when it stopped)")
    if not lines:
        raise InvalidInputError(f"{path} has no header line; it is not a painmon session file")
    columns = tuple(next(csv.reader([lines[0]])))
    if columns not in (SESSION_COLUMNS, SESSION_COLUMNS_V1, ALARM_COLUMNS):
        raise InvalidInputError(
            f"{path} has an unexpected header {columns!r}; not a painmon session file"
        )
    rows: list[dict[str, Any]] = []
    dropped = 0
    for number, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]), [])
        try:
            if len(cells) != len(columns):
                raise ValueError(f"{len(cells)} cells instead of {len(columns)}")
            rows.append({c: _parse_cell(c, cell) for c, cell in zip(columns, cells, strict=True)})
        except ValueError as exc:
            dropped += 1
            problems.append(f"{path.name} line {number} dropped: {exc}")
    for problem in problems:
        log.warning("%s", problem)
    return CsvReadResult(columns, rows, torn, dropped + int(torn), tuple(problems))


def read_session_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of ``session.csv`` (or ``alarms.csv``) as dicts: empty -> None, numbers -> int/float.

    A torn last line or a broken row is dropped and logged as a warning; text cells
    come back as stored (with any protective leading quote).
    """
    return read_csv_checked(path).rows


def row_from_record(record: dict[str, Any]) -> SessionRow:
    """Rebuild (and so re-validate) a :class:`SessionRow` from a parsed session.csv record."""
    probs = [record[f"p{i}"] for i in range(NUM_CLASSES)]
    return SessionRow(
        utc_time=record["utc_time"],
        t_s=record["t_s"],
        frame=record["frame"],
        face_found=record["face_found"],
        quality_ok=record["quality_ok"],
        probabilities=None if all(p is None for p in probs) else tuple(probs),
        pain_class=record["pain_class"],
        pain_level=record["pain_level"],
        pain_level_smoothed=record["pain_level_smoothed"],
        confidence=record["confidence"],
        au_pspi=record["au_pspi"],
        alarm_priority=record["alarm_priority"] or AlarmPriority.NONE.value,
        technical_condition=record["technical_condition"],
        domain_score=record.get("domain_score"),
    )


def recover_session(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Report what a (possibly crashed) session folder holds; reads only, repairs nothing.

    ``status`` is what session.json says; ``state`` (``STATE_*``) also says whether a
    "running" session is still being recorded or crashed (see :func:`writer_alive`).
    """
    folder = Path(folder)
    problems: list[str] = []
    meta: dict[str, Any] | None = None
    meta_path = folder / SESSION_JSON
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{SESSION_JSON} is missing")
    except (OSError, ValueError) as exc:
        problems.append(f"{SESSION_JSON} could not be read: {exc}")

    rows: list[dict[str, Any]] = []
    torn = False
    dropped = 0
    try:
        result = read_csv_checked(folder / SESSION_CSV)
        rows, torn, dropped = result.rows, result.torn_last_line, result.dropped_rows
        problems.extend(result.problems)
    except FileNotFoundError:
        problems.append(f"{SESSION_CSV} is missing")
    except (OSError, ValueError) as exc:
        problems.append(f"{SESSION_CSV} could not be read: {exc}")
    # A row that parses but breaks SessionRow's rules is not intact either.
    intact: list[dict[str, Any]] = []
    for record in rows:
        try:
            row_from_record(record)
        except (KeyError, TypeError, ValueError) as exc:
            dropped += 1
            problems.append(f"{SESSION_CSV} frame {record.get('frame')} invalid: {exc}")
        else:
            intact.append(record)

    alarm_events = 0
    alarms_torn = False
    try:
        alarms = read_csv_checked(folder / ALARMS_CSV)
        alarm_events, alarms_torn = len(alarms.rows), alarms.torn_last_line
        problems.extend(alarms.problems)
    except FileNotFoundError:
        problems.append(f"{ALARMS_CSV} is missing")
    except (OSError, ValueError) as exc:
        problems.append(f"{ALARMS_CSV} could not be read: {exc}")

    status = meta.get("status") if meta else None
    frames_recorded = meta.get("frames_written") if meta else None
    clean_end = bool(
        meta
        and status == STATUS_ENDED
        and meta.get("end_utc")
        and not torn
        and not alarms_torn
        and dropped == 0
        and frames_recorded == len(intact)
    )
    state = STATE_UNKNOWN
    if meta and status == STATUS_ENDED:
        state = STATE_ENDED
    elif meta and status == STATUS_RUNNING:
        alive = writer_alive(folder)
        if alive:
            state = STATE_RECORDING
        elif alive is None:
            state = STATE_NOT_CLOSED
            problems.append(
                "session.json still says 'running': the recording did not end cleanly, "
                "unless it is still being recorded"
            )
        else:
            state = STATE_CRASHED
            problems.append(
                "session.json still says 'running' but no painmon process is recording it: "
                "the recording crashed (killed, a fault or a full disk) and did not end cleanly"
            )
    if state == STATE_ENDED and frames_recorded != len(intact):
        problems.append(
            f"session.json records {frames_recorded} frames but {len(intact)} rows are intact"
        )
    return {
        "folder": str(folder),
        "metadata": meta,
        "status": status,
        "state": state,
        "clean_end": clean_end,
        "rows_intact": len(intact),
        "rows_dropped": dropped,
        "torn_last_line": torn,
        "first_t_s": intact[0]["t_s"] if intact else None,
        "last_t_s": intact[-1]["t_s"] if intact else None,
        "last_utc_time": intact[-1]["utc_time"] if intact else None,
        "frames_recorded": frames_recorded,
        "alarm_events": alarm_events,
        "problems": problems,
    }
