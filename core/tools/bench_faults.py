"""``painmon bench faults``: issue #12's fault scenarios against real ``painmon monitor`` processes.

Every scenario starts ``python -m painmon monitor`` as a subprocess, does the fault to it for
real and measures what the session folder and the exit status show afterwards:

=================  =================================================================  ==========
scenario           what is done                                                        target
=================  =================================================================  ==========
kill-9             SIGKILL mid-run: session still readable, reader says "crashed"      <= 1 s lost
sigterm            SIGTERM: exit 143, session closed as "terminated"                   <= 0.1 s lost
sighup             SIGHUP: exit 129, "hangup"                                          <= 0.1 s lost
sigint-twice       two Ctrl-C: exit 130, "interrupted"                                 <= 0.1 s lost
server-death       the MJPEG server on 127.0.0.1 is killed, restarted on the same port  2.5 s / 5 s
half-open          the server stops sending (socket open); a fresh one takes the port  2.5 s / 5 s
silent-start       the stream's address accepts TCP and never answers: refused (exit 2)  <= 10 s
frozen-<codec>     a still picture encoded as video (mp4v, MJPG, H.264 if encodable)   <= 2.5 s
real-not-frozen    the shared real videos                                              no FROZEN
disk-full          the session folder on a tmpfs that fills up (else injected ENOSPC)  exit 3
=================  =================================================================  ==========

"rows lost" is the wall-clock time between the last row on disk and the fault. Times to
SIGNAL_LOST come from the TECHNICAL_ONSET event in ``alarms.csv`` (its UTC stamp), recovery
from the first scored row of ``session.csv`` after the fresh server listened, FROZEN from
the first FROZEN row's media time. The patient is the synthetic patient video (written
here), the model the shipped demo model unless another is given.

POSIX only (signals, tmpfs); the tmpfs needs root, else the disk-full scenario injects
ENOSPC into the session writer of the subprocess and says so. The MJPEG server runs as
``python -m painmon.core.tools.bench_faults serve-mjpeg``, so that killing it is a real
process death.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import IO, Any

from painmon.core.live.session import (
    ALARMS_CSV,
    SESSION_CSV,
    SESSION_JSON,
    STATE_CRASHED,
    recover_session,
)
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_write_json
from painmon.core.util.timeline import utc_now

log = logging.getLogger(__name__)

# -- targets (issue #12) ------------------------------------------------------------------------

KILL_ROWS_LOST_MAX_S = 1.0
STOP_ROWS_LOST_MAX_S = 0.1
SIGNAL_LOST_MAX_S = 2.5
RECOVERY_MAX_S = 5.0
FROZEN_MAX_MEDIA_S = 2.5
SILENT_START_REFUSED_MAX_S = 10.0

# -- how the scenarios are run ------------------------------------------------------------------

PATIENT_FPS = 30.0
PATIENT_SECONDS = 10.0
PATIENT_SEED = 3
STILL_SECONDS = 4.0
# The killed server comes back this long after the monitor's last failed reconnect attempt
# once its backoff has grown to the longest delay: the worst moment to come back, whatever
# the outage (attempts are timed from the kill: a dead server's socket fails at once).
_RESTART_AFTER_ATTEMPT_S = 0.25
# A monitor process (Python, ONNX Runtime, MediaPipe) must have rows on disk within this.
_STARTUP_TIMEOUT_S = 40.0
# Rows of a running session reach the disk once a second: after the first sync, a fault
# this much later lands mid-way between two syncs.
_FAULT_AFTER_FIRST_ROWS_S = 0.5
_EXIT_TIMEOUT_S = 20.0
_FILE_RUN_TIMEOUT_S = 120.0
_POLL_S = 0.1
# How long after the fault/restart a scenario waits for what it measures (targets + margin).
_SIGNAL_LOST_WAIT_S = 6.0
_RECOVERY_WAIT_S = 12.0
# The tmpfs of the disk-full scenario, and the room left on it when the run starts: a few
# pages for session.json (and its temporary copy), the CSV headers and ~2 s of rows.
_TMPFS_SIZE = "256k"
_DISK_ROOM_BYTES = 24 * 1024
_INJECTED_DISK_BYTES = 12 * 1024

MONITOR_EXIT = {"sigterm": 143, "sighup": 129, "sigint-twice": 130}
_STOP_SCENARIOS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("sigterm", ("SIGTERM",), "terminated"),
    ("sighup", ("SIGHUP",), "hangup"),
    ("sigint-twice", ("SIGINT", "SIGINT"), "interrupted"),
)
# (scenario, fourcc, container suffix); H.264 where this OpenCV build or PyAV can encode it.
STILL_CODECS: tuple[tuple[str, str, str], ...] = (
    ("frozen-mp4v", "mp4v", ".mp4"),
    ("frozen-mjpg", "MJPG", ".avi"),
    ("frozen-h264", "avc1", ".mp4"),
)
SCENARIOS: tuple[str, ...] = (
    "kill-9",
    *(name for name, _, _ in _STOP_SCENARIOS),
    "server-death",
    "half-open",
    "silent-start",
    *(name for name, _, _ in STILL_CODECS),
    "real-not-frozen",
    "disk-full",
)
REAL_VIDEO_SUFFIXES = (".mp4", ".mov")

_ONSET = "technical_onset"


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One measured number or fact against its target."""

    name: str
    measured: float | int | str | bool | None
    target: str
    ok: bool

    def __post_init__(self) -> None:
        if not self.name or not self.target:
            raise ValueError("a check needs a name and a target")


@dataclass(frozen=True)
class ScenarioResult:
    """What one scenario measured: its checks, a one-line summary and the full details."""

    name: str
    summary: str
    checks: tuple[Check, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    #: why the scenario did not run (no encoder, no shared media); None when it ran
    skipped: str | None = None

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}")
        if self.skipped is None and not self.checks:
            raise ValueError("a scenario that ran needs at least one check")
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @property
    def verdict(self) -> str:
        if self.skipped is not None:
            return "SKIP"
        return "PASS" if all(c.ok for c in self.checks) else "FAIL"

    def format(self) -> str:
        """``PASS  name  summary`` (failed checks named after the summary)."""
        text = self.summary if self.skipped is None else self.skipped
        failed = [c.name for c in self.checks if not c.ok]
        if failed:
            text += f"  [failed: {', '.join(failed)}]"
        return f"{self.verdict:<4}  {self.name:<15}  {text}"

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "summary": self.summary,
            "skipped": self.skipped,
            "checks": [
                {"name": c.name, "measured": c.measured, "target": c.target, "ok": c.ok}
                for c in self.checks
            ],
            "details": dict(self.details),
        }


# -- measuring helpers (pure) -------------------------------------------------------------------


def select_scenarios(only: Sequence[str] | None) -> list[str]:
    """The scenarios to run, in :data:`SCENARIOS` order: all, or those named (a name or the
    start of names before a '-': ``frozen`` selects every ``frozen-*``)."""
    if not only:
        return list(SCENARIOS)
    chosen: set[str] = set()
    for name in only:
        matches = [s for s in SCENARIOS if s == name or s.startswith(name + "-")]
        if not matches:
            raise InvalidInputError(
                f"no fault scenario {name!r}; choose from {', '.join(SCENARIOS)}"
            )
        chosen.update(matches)
    return [s for s in SCENARIOS if s in chosen]


def parse_utc(text: str) -> datetime:
    """A session file's ISO-8601 UTC stamp as an aware datetime."""
    stamp = datetime.fromisoformat(text.lstrip("'"))
    if stamp.tzinfo is None:
        raise ValueError(f"UTC stamp without a timezone: {text!r}")
    return stamp


def seconds_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def rows_lost_s(fault_utc: datetime, last_row_utc: datetime | None) -> float | None:
    """Time between the last row on disk and the fault, >= 0 (a row finished after the
    fault lost nothing); None when no row reached the disk at all."""
    if last_row_utc is None:
        return None
    return max(0.0, seconds_between(last_row_utc, fault_utc))


def complete_lines(text: str) -> list[str]:
    """The complete lines of a CSV being written (a torn last line is left out)."""
    lines = text.split("\n")
    lines.pop()  # "" after a final newline, else the torn line
    return lines


def parse_rows(text: str) -> list[dict[str, str]]:
    """Rows of a session.csv/alarms.csv text as str dicts: complete lines only, no warnings
    (polling a file that is being written sees torn lines all the time)."""
    lines = complete_lines(text)
    if not lines:
        return []
    return list(csv.DictReader(lines))


def read_rows(path: Path) -> list[dict[str, str]]:
    try:
        return parse_rows(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []


def is_scored(row: Mapping[str, str]) -> bool:
    """A session.csv row with the model's pain output (a face, good quality, no condition)."""
    return bool(row.get("pain_level")) and not row.get("technical_condition")


def first_row_at_or_after(
    rows: Sequence[Mapping[str, str]],
    after_utc: datetime,
    accept: Callable[[Mapping[str, str]], bool] = lambda _row: True,
) -> Mapping[str, str] | None:
    for row in rows:
        if parse_utc(row["utc_time"]) >= after_utc and accept(row):
            return row
    return None


def condition_onset_utc(
    alarm_rows: Sequence[Mapping[str, str]], condition: str, after_utc: datetime | None = None
) -> datetime | None:
    """UTC stamp of the first TECHNICAL_ONSET of ``condition`` (at or after ``after_utc``)."""
    pattern = re.compile(rf"\btechnical alarm {re.escape(condition)}\b")
    for row in alarm_rows:
        if row.get("kind") != _ONSET or not pattern.search(row.get("message", "")):
            continue
        stamp = parse_utc(row["utc_time"])
        if after_utc is None or stamp >= after_utc:
            return stamp
    return None


def media_time_to_condition_s(rows: Sequence[Mapping[str, str]], condition: str) -> float | None:
    """Media time from the first row to the first row under ``condition`` (None: never)."""
    if not rows:
        return None
    start_s = float(rows[0]["t_s"])
    for row in rows:
        if row.get("technical_condition") == condition:
            return float(row["t_s"]) - start_s
    return None


def frames_contiguous(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Frame numbers 0, 1, 2 ... without a gap (pull mode on a file writes every frame)."""
    return [int(r["frame"]) for r in rows] == list(range(len(rows)))


def summary_line(stdout: str, key: str) -> str | None:
    """The text after ``key: `` on the monitor summary's line that starts with it."""
    for line in stdout.splitlines():
        if line.startswith(key + ": "):
            return line[len(key) + 2 :]
    return None


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _at_most(name: str, value: float | None, limit_s: float) -> Check:
    return Check(name, value, f"<= {limit_s:g} s", value is not None and value <= limit_s)


def _equal(name: str, value: Any, expected: Any) -> Check:
    return Check(name, value, f"== {expected!r}", value == expected)


# -- processes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _session_log_quiet() -> Iterator[None]:
    """The session reader warns about the torn last line a kill leaves: expected here."""
    logger = logging.getLogger("painmon.core.live.session")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _stop_process(process: subprocess.Popen[Any], timeout_s: float = _EXIT_TIMEOUT_S) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


class MonitorRun:
    """One ``painmon monitor`` subprocess; its stdout/stderr go to files beside its sessions."""

    def __init__(
        self,
        folder: Path,
        source: str,
        model: Path,
        face_model: str | None = None,
        realtime: bool = False,
        launcher: Sequence[str] | None = None,
        out: Path | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.out = out if out is not None else folder / "sessions"
        self._stdout_path = folder / "monitor.stdout"
        self._stderr_path = folder / "monitor.stderr"
        command = [*(launcher or (sys.executable, "-m", "painmon")), "monitor"]
        command += ["--source", source, "--model", str(model), "--out", str(self.out)]
        if realtime:
            command.append("--realtime")
        if face_model:
            command += ["--face-model", face_model]
        self.command = command
        self._stdout: IO[bytes] = self._stdout_path.open("wb")
        self._stderr: IO[bytes] = self._stderr_path.open("wb")
        # A session of its own: a Ctrl-C at the bench's terminal does not reach it.
        self.process = subprocess.Popen(
            command, stdout=self._stdout, stderr=self._stderr, start_new_session=True
        )

    def __enter__(self) -> MonitorRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(_EXIT_TIMEOUT_S)
        self._stdout.close()
        self._stderr.close()

    @property
    def session_folder(self) -> Path | None:
        found = sorted(self.out.glob(f"*/*/{SESSION_JSON}"))
        return found[0].parent if found else None

    def rows(self) -> list[dict[str, str]]:
        folder = self.session_folder
        return [] if folder is None else read_rows(folder / SESSION_CSV)

    def alarm_rows(self) -> list[dict[str, str]]:
        folder = self.session_folder
        return [] if folder is None else read_rows(folder / ALARMS_CSV)

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``condition`` until it holds (True), the time is up or the process ended."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.process.poll() is not None:
                return condition()
            time.sleep(_POLL_S)
        return condition()

    def rows_on_disk(self) -> int:
        """Complete rows in session.csv now (cheaper than parsing them)."""
        folder = self.session_folder
        try:
            data = (folder / SESSION_CSV).read_bytes() if folder is not None else b""
        except FileNotFoundError:
            return 0
        return max(0, data.count(b"\n") - 1)

    def wait_rows(self, count: int = 1, timeout_s: float = _STARTUP_TIMEOUT_S) -> bool:
        return self.wait_until(lambda: self.rows_on_disk() >= count, timeout_s)

    def send(self, *signames: str) -> datetime:
        """Send the signals (in order); returns the UTC time just before the first."""
        sent_utc = utc_now()
        for name in signames:
            self.process.send_signal(getattr(signal, name))
        return sent_utc

    def wait(self, timeout_s: float = _EXIT_TIMEOUT_S) -> int | None:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        _stop_process(self.process)
        return self.process.returncode

    def stdout(self) -> str:
        self._stdout.flush()
        return self._stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr_tail(self, lines: int = 5) -> str:
        self._stderr.flush()
        text = self._stderr_path.read_text(encoding="utf-8", errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])


class MjpegServer:
    """``serve-mjpeg`` in a subprocess on 127.0.0.1: an endless HTTP MJPEG stream
    (``multipart/x-mixed-replace``, the classic IP-camera format) of the JPEGs in a folder.

    :meth:`kill` is a real server death; :meth:`stall` (SIGUSR1) stops every stream while
    keeping its connection open and frees the port for a fresh server.
    """

    def __init__(self, frames_dir: Path, fps: float, port: int = 0, deferred: bool = False) -> None:
        command = [sys.executable, "-m", __name__, "serve-mjpeg", str(frames_dir)]
        command += ["--port", str(port), "--fps", f"{fps:g}"]
        if deferred:
            command.append("--bind-on-sigusr2")
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.port = port
        #: when it listened (UTC); None while a deferred server waits for :meth:`listen`
        self.listening_utc: datetime | None = None
        if deferred:
            self._expect("ready")
        else:
            self._listened()

    def _expect(self, word: str) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], _STARTUP_TIMEOUT_S)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line.startswith(word):
            self.kill()
            raise RuntimeError(f"the MJPEG server did not start (it said {line!r})")
        return line

    def _listened(self) -> None:
        line = self._expect("listening ")
        self.listening_utc = utc_now()
        self.port = int(line.split()[1])

    def listen(self) -> datetime:
        """Let a deferred server bind its port now; returns when it listened (UTC)."""
        self.process.send_signal(signal.SIGUSR2)
        self._listened()
        assert self.listening_utc is not None
        return self.listening_utc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/patient.mjpg"

    def kill(self) -> datetime:
        killed_utc = utc_now()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(_EXIT_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return killed_utc

    def stall(self) -> datetime:
        stalled_utc = utc_now()
        self.process.send_signal(signal.SIGUSR1)
        return stalled_utc

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def serve_mjpeg(frames_dir: Path, port: int, fps: float, bind_on_sigusr2: bool = False) -> None:
    """Serve the JPEGs of ``frames_dir`` in a loop as an HTTP MJPEG stream on 127.0.0.1:port.

    Prints ``listening PORT`` once bound; with ``bind_on_sigusr2`` it loads its frames,
    prints ``ready`` and binds only on SIGUSR2 (a restart timed to the millisecond).
    SIGUSR1 stalls it: the listener closes (the port is free again) and every connection
    stays open without another byte.
    """
    if bind_on_sigusr2:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})  # kept pending until sigwait
    frames = [p.read_bytes() for p in sorted(frames_dir.glob("*.jpg"))]
    if not frames:
        raise InvalidInputError(f"no .jpg frames in {frames_dir}")
    if bind_on_sigusr2:
        print("ready", flush=True)
        signal.sigwait({signal.SIGUSR2})
    stalled = threading.Event()

    def on_stall(_signum: int, _frame: FrameType | None) -> None:
        stalled.set()

    signal.signal(signal.SIGUSR1, on_stall)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # The half-open scenario binds a fresh server while the stalled connection holds the port.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    listener.settimeout(_POLL_S)
    print(f"listening {listener.getsockname()[1]}", flush=True)

    def stream(connection: socket.socket) -> None:
        try:
            connection.recv(65536)  # the request; any path gets the stream
            connection.sendall(
                b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n"
                b"Cache-Control: no-cache\r\n\r\n"
            )
            gap_s = 1.0 / fps
            next_s = time.monotonic()
            index = 0
            while not stalled.is_set():
                jpeg = frames[index % len(frames)]
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                connection.sendall(head % len(jpeg) + jpeg + b"\r\n")
                index += 1
                next_s += gap_s
                time.sleep(max(0.0, next_s - time.monotonic()))
        except OSError:
            return  # the client went away
        threading.Event().wait()  # half-open: the connection stays up and says nothing

    while not stalled.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        threading.Thread(target=stream, args=(connection,), daemon=True).start()
    listener.close()
    threading.Event().wait()


@contextlib.contextmanager
def _native_stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 (where native libraries write) goes to ``path`` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with path.open("wb") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


# -- the workspace: media made once per bench ---------------------------------------------------


class Workspace:
    """A temporary folder with the media the scenarios share (made on first use)."""

    def __init__(self, root: Path, model: Path, face_model: str | None) -> None:
        self.root = root
        self.model = model
        self.face_model = face_model
        self._patient: Path | None = None
        self._frames_dir: Path | None = None
        self._still_rgb: Any = None

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def patient_video(self) -> Path:
        """The synthetic patient, 640x360 mp4v at 30 fps (as ``painmon synth --video``)."""
        if self._patient is None:
            from painmon.core.synth.stream import write_video

            path = self.root / "media" / "patient.mp4"
            log.info("writing the synthetic patient video %s", path)
            self._patient = write_video(path, PATIENT_SECONDS, PATIENT_FPS, PATIENT_SEED)
        return self._patient

    @property
    def frames_dir(self) -> Path:
        """The patient video's frames as JPEGs, for the MJPEG server."""
        if self._frames_dir is None:
            import cv2

            folder = self.folder("media/frames")
            capture = cv2.VideoCapture(str(self.patient_video))
            index = 0
            try:
                while True:
                    ok, bgr = capture.read()
                    if not ok:
                        break
                    encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
                    (folder / f"{index:05d}.jpg").write_bytes(encoded.tobytes())
                    index += 1
            finally:
                capture.release()
            if index == 0:
                raise RuntimeError(f"could not read back {self.patient_video}")
            self._frames_dir = folder
        return self._frames_dir

    def still_video(self, fourcc: str, suffix: str) -> Path | None:
        """One still frame of the patient encoded for STILL_SECONDS; None without an encoder."""
        import cv2
        import numpy as np

        if self._still_rgb is None:
            from painmon.core.synth.stream import SyntheticPatientStream

            stream = SyntheticPatientStream(seed=PATIENT_SEED, fps=PATIENT_FPS)
            self._still_rgb = stream.frame(0).rgb
        bgr = cv2.cvtColor(np.asarray(self._still_rgb), cv2.COLOR_RGB2BGR)
        path = self.folder("media") / f"still_{fourcc}{suffix}"
        height, width = bgr.shape[:2]
        # FFmpeg reports a missing encoder on the process's stderr: kept out of the bench's lines.
        with _native_stderr_to(path.with_suffix(".encoder.log")):
            writer = cv2.VideoWriter(
                str(path), cv2.VideoWriter_fourcc(*fourcc), PATIENT_FPS, (width, height)
            )
        try:
            if not writer.isOpened():
                writer.release()
                # OpenCV's wheels carry no H.264 encoder: PyAV's (libx264), where installed.
                return _encode_still_pyav(path, bgr) if fourcc == "avc1" else None
            for _ in range(round(STILL_SECONDS * PATIENT_FPS)):
                writer.write(bgr)
        finally:
            writer.release()
        return path if path.is_file() and path.stat().st_size > 0 else None

    def monitor(self, name: str, source: str | Path, realtime: bool = False, **kw: Any):
        return MonitorRun(
            self.folder(name), str(source), self.model, self.face_model, realtime, **kw
        )


#: libx264's default quality, as a phone or a screen recorder would write a still.
_STILL_H264_CRF = 23


def _encode_still_pyav(path: Path, bgr: Any) -> Path | None:
    """``bgr`` held for STILL_SECONDS as H.264 (libx264, yuv420p) through PyAV; None when
    PyAV or its libx264 is not installed (``pip install av``)."""
    try:
        import av
    except ImportError:
        return None
    if "libx264" not in av.codecs_available:
        return None
    height, width = bgr.shape[:2]
    path.unlink(missing_ok=True)
    with av.open(str(path), mode="w") as container:
        rate = Fraction(PATIENT_FPS).limit_denominator(1001)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(_STILL_H264_CRF)}
        frame = av.VideoFrame.from_ndarray(
            bgr[: stream.height, : stream.width].copy(), format="bgr24"
        )
        for index in range(round(STILL_SECONDS * PATIENT_FPS)):
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path if path.is_file() and path.stat().st_size > 0 else None


def shared_media_dir() -> Path:
    """The shared real videos: $PAINMON_SHARED/media, else ../shared/media beside the repo
    (as the tests find them)."""
    repo_root = Path(__file__).resolve().parents[2]  # the painmon package is the repo root
    shared = Path(os.environ.get("PAINMON_SHARED", repo_root.parent / "shared"))
    return shared / "media"


# -- scenarios ----------------------------------------------------------------------------------


def _no_rows(name: str, run: MonitorRun, what: str) -> ScenarioResult:
    return ScenarioResult(
        name,
        f"no rows reached the disk {what} (exit {run.process.poll()}): {run.stderr_tail()}",
        (Check("rows on disk", 0, ">= 1", False),),
    )


def _recover(folder: Path | None) -> dict[str, Any]:
    if folder is None:
        return {"state": None, "status": None, "rows_intact": 0, "problems": ["no session"]}
    with _session_log_quiet():
        return recover_session(folder)


def _last_row_utc(folder: Path | None) -> datetime | None:
    rows = [] if folder is None else read_rows(folder / SESSION_CSV)
    return parse_utc(rows[-1]["utc_time"]) if rows else None


def scenario_kill_9(ws: Workspace) -> ScenarioResult:
    name = "kill-9"
    with ws.monitor(name, ws.patient_video, realtime=True) as run:
        if not run.wait_rows():
            return _no_rows(name, run, "before the kill")
        time.sleep(_FAULT_AFTER_FIRST_ROWS_S)
        killed_utc = run.send("SIGKILL")
        code = run.wait()
        folder = run.session_folder
    report = _recover(folder)
    lost_s = rows_lost_s(killed_utc, _last_row_utc(folder))
    readable = report["rows_intact"] > 0 and report.get("rows_dropped", 0) <= 1
    checks = (
        _at_most("rows lost", lost_s, KILL_ROWS_LOST_MAX_S),
        Check("session readable", readable, "rows read, at most a torn last line", readable),
        _equal("reader state", report["state"], STATE_CRASHED),
    )
    summary = (
        f"rows lost {_fmt_s(lost_s)} (<= {KILL_ROWS_LOST_MAX_S:g} s), "
        f"{report['rows_intact']} rows readable, reader: {report['state']!r} "
        f"(session.json status {report['status']!r}), exit {code}"
    )
    details = {"exit": code, "rows_lost_s": lost_s, "killed_utc": killed_utc.isoformat()}
    details["recover_session"] = {k: v for k, v in report.items() if k != "metadata"}
    return ScenarioResult(name, summary, checks, details)


def scenario_stop_signal(ws: Workspace, name: str) -> ScenarioResult:
    signames, reason = next((s, r) for n, s, r in _STOP_SCENARIOS if n == name)
    expected_exit = MONITOR_EXIT[name]
    with ws.monitor(name, ws.patient_video, realtime=True) as run:
        if not run.wait_rows():
            return _no_rows(name, run, "before the signal")
        time.sleep(_FAULT_AFTER_FIRST_ROWS_S)
        signalled_utc = run.send(*signames)
        code = run.wait()
        folder = run.session_folder
        stdout = run.stdout()
    report = _recover(folder)
    meta = report.get("metadata") or {}
    lost_s = rows_lost_s(signalled_utc, _last_row_utc(folder))
    checks = (
        _equal("exit status", code, expected_exit),
        _equal("session.json status", meta.get("status"), "ended"),
        _equal("end_reason", meta.get("end_reason"), reason),
        Check(
            "clean end", report.get("clean_end"), "all rows intact", bool(report.get("clean_end"))
        ),
        _at_most("rows lost", lost_s, STOP_ROWS_LOST_MAX_S),
    )
    summary = (
        f"exit {code} (want {expected_exit}), status {meta.get('status')!r}, end_reason "
        f"{meta.get('end_reason')!r}, rows lost {_fmt_s(lost_s)} (<= {STOP_ROWS_LOST_MAX_S:g} s)"
    )
    details = {
        "signals": list(signames),
        "exit": code,
        "rows_lost_s": lost_s,
        "frames_written": meta.get("frames_written"),
        "rows_intact": report.get("rows_intact"),
        "ended_line": summary_line(stdout, "ended"),
    }
    return ScenarioResult(name, summary, checks, details)


def scenario_stream_fault(ws: Workspace, name: str) -> ScenarioResult:
    """server-death: kill the server, restart it on the same port at the worst moment
    (:func:`worst_restart_delay_s`).
    half-open: stall the server (connection open, silent); a fresh one takes the port as
    soon as SIGNAL_LOST was raised."""
    frames_dir = ws.frames_dir
    servers: list[MjpegServer] = [MjpegServer(frames_dir, PATIENT_FPS)]
    try:
        first = servers[0]
        with ws.monitor(name, first.url) as run:
            if not run.wait_rows():
                return _no_rows(name, run, "from the stream")
            scored_before = run.wait_until(lambda: any(map(is_scored, run.rows())), 5.0)
            time.sleep(_FAULT_AFTER_FIRST_ROWS_S)
            fresh = MjpegServer(frames_dir, PATIENT_FPS, port=first.port, deferred=True)
            servers.append(fresh)
            if name == "server-death":
                fault_utc = first.kill()
                outage_s = worst_restart_delay_s()
                time.sleep(max(0.0, outage_s - seconds_between(fault_utc, utc_now())))
            else:
                fault_utc = first.stall()
                run.wait_until(
                    lambda: (
                        condition_onset_utc(run.alarm_rows(), "SIGNAL_LOST", fault_utc) is not None
                    ),
                    _SIGNAL_LOST_WAIT_S,
                )
            restart_utc = fresh.listen()
            outage_s = seconds_between(fault_utc, restart_utc)

            def recovered() -> bool:
                rows = run.rows()
                back = first_row_at_or_after(
                    rows, restart_utc, is_scored if scored_before else bool
                )
                return back is not None

            run.wait_until(recovered, _RECOVERY_WAIT_S)
            # Rows reach the disk once a second: stop cleanly so every row is there.
            code = run.stop()
            rows = run.rows()
            alarm_rows = run.alarm_rows()
    finally:
        for server in servers:
            server.kill()
    lost_utc = condition_onset_utc(alarm_rows, "SIGNAL_LOST", fault_utc)
    to_lost_s = None if lost_utc is None else seconds_between(fault_utc, lost_utc)
    back_row = first_row_at_or_after(rows, restart_utc)
    scored_row = first_row_at_or_after(rows, restart_utc, is_scored)
    frames_back_s = (
        None if back_row is None else seconds_between(restart_utc, parse_utc(back_row["utc_time"]))
    )
    scored_s = (
        None
        if scored_row is None
        else seconds_between(restart_utc, parse_utc(scored_row["utc_time"]))
    )
    recovery_s = scored_s if scored_before else frames_back_s
    # Frames already in the socket and decoder buffers are still scored after the fault: on a
    # starved CPU that backlog delays SIGNAL_LOST (counted from the last frame that arrived).
    before_lost = [r for r in rows if lost_utc is None or parse_utc(r["utc_time"]) < lost_utc]
    backlog_s = (
        max(0.0, seconds_between(fault_utc, parse_utc(before_lost[-1]["utc_time"])))
        if before_lost
        else None
    )
    what = "scored" if scored_before else "frames back (the model scored none before)"
    checks = (
        _at_most("time to SIGNAL_LOST", to_lost_s, SIGNAL_LOST_MAX_S),
        _at_most("time to recovery", recovery_s, RECOVERY_MAX_S),
    )
    fault = "server killed" if name == "server-death" else "server stalled"
    summary = (
        f"{fault}, back after {outage_s:.1f} s: SIGNAL_LOST after {_fmt_s(to_lost_s)} "
        f"(<= {SIGNAL_LOST_MAX_S:g} s); "
        f"fresh server -> {what} after {_fmt_s(recovery_s)} (<= {RECOVERY_MAX_S:g} s)"
    )
    if backlog_s is not None and backlog_s > 0.2:
        summary += f"; buffered frames still scored {backlog_s:.2f} s after the fault"
    details = {
        "fault_utc": fault_utc.isoformat(),
        "restart_utc": restart_utc.isoformat(),
        "outage_s": outage_s,
        "signal_lost_s": to_lost_s,
        "last_frame_after_fault_s": backlog_s,
        "frames_back_s": frames_back_s,
        "scored_again_s": scored_s,
        "scored_before_fault": scored_before,
        "exit": code,
        "rows": len(rows),
    }
    return ScenarioResult(name, summary, checks, details)


def worst_restart_delay_s() -> float:
    """When, after a server death, a restart waits longest for the monitor's next attempt:
    just after the attempt that follows the first backoff delay of ``max_s``."""
    from painmon.core.live.capture import ReconnectBackoff

    backoff = ReconnectBackoff()
    attempt_s = 0.0
    while (delay_s := backoff.next_delay_s()) < backoff.max_s:
        attempt_s += delay_s
    # The attempt at attempt_s failed; the next one comes max_s later.
    return attempt_s + _RESTART_AFTER_ATTEMPT_S


def _run_file(
    ws: Workspace, name: str, source: Path
) -> tuple[int | None, list[dict[str, str]], list[dict[str, str]], str]:
    with ws.monitor(name, source) as run:
        code = run.wait(_FILE_RUN_TIMEOUT_S)
        if code is None:
            code = run.stop()
        return code, run.rows(), run.alarm_rows(), run.stdout()


def scenario_silent_start(ws: Workspace) -> ScenarioResult:
    """The stream's address takes the TCP connection (the kernel's backlog) and never says a
    word: ``painmon monitor`` must refuse it in one line, exit 2, within 10 s of starting."""
    name = "silent-start"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepted: connections complete and hang in the backlog
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/video"
        started = time.monotonic()
        with ws.monitor(name, url) as run:
            code = run.wait(SILENT_START_REFUSED_MAX_S + _EXIT_TIMEOUT_S)
            refused_s = time.monotonic() - started if code is not None else None
            if code is None:
                code = run.stop()
            stderr = [
                line
                for line in run.stderr_tail(50).split(" | ")
                if line.startswith("painmon monitor: error:")
            ]
            session = run.session_folder
    finally:
        listener.close()
    checks = (
        _at_most("refused after", refused_s, SILENT_START_REFUSED_MAX_S),
        _equal("exit", code, 2),
        Check("error line", len(stderr), "one 'painmon monitor: error:' line", len(stderr) == 1),
        Check("session folder", session is not None, "none written", session is None),
    )
    summary = (
        f"no answer from {url}: refused after {_fmt_s(refused_s)} "
        f"(<= {SILENT_START_REFUSED_MAX_S:g} s, process start included), exit {code}"
        + (f": {stderr[0]}" if stderr else "")
    )
    details = {"refused_s": refused_s, "exit": code, "error": stderr[0] if stderr else None}
    return ScenarioResult(name, summary, checks, details)


def scenario_frozen(ws: Workspace, name: str) -> ScenarioResult:
    fourcc, suffix = next((f, s) for n, f, s in STILL_CODECS if n == name)
    video = ws.still_video(fourcc, suffix)
    if video is None:
        return ScenarioResult(
            name,
            "",
            skipped=(
                f"this OpenCV build has no {fourcc} encoder for {suffix}"
                + (" and PyAV is not installed (pip install av)" if fourcc == "avc1" else "")
            ),
        )
    code, rows, alarm_rows, _stdout = _run_file(ws, name, video)
    frozen_s = media_time_to_condition_s(rows, "FROZEN")
    onset = condition_onset_utc(alarm_rows, "FROZEN")
    checks = (
        _equal("exit status", code, 0),
        _at_most("media time to FROZEN", frozen_s, FROZEN_MAX_MEDIA_S),
        Check("FROZEN alarm logged", onset is not None, "in alarms.csv", onset is not None),
    )
    summary = (
        f"still picture, {fourcc}: FROZEN after {_fmt_s(frozen_s)} of media "
        f"(<= {FROZEN_MAX_MEDIA_S:g} s), alarm {'logged' if onset else 'missing'}"
    )
    details = {"video": str(video), "frozen_media_s": frozen_s, "rows": len(rows), "exit": code}
    return ScenarioResult(name, summary, checks, details)


def scenario_real_not_frozen(ws: Workspace) -> ScenarioResult:
    name = "real-not-frozen"
    media = shared_media_dir()
    videos = sorted(p for p in media.glob("*") if p.suffix.lower() in REAL_VIDEO_SUFFIXES)
    if not videos:
        return ScenarioResult(name, "", skipped=f"no shared real videos in {media}")
    checks: list[Check] = []
    per_video: dict[str, Any] = {}
    for video in videos:
        code, rows, alarm_rows, _stdout = _run_file(ws, f"{name}/{video.stem}", video)
        frozen_rows = sum(r.get("technical_condition") == "FROZEN" for r in rows)
        alarmed = condition_onset_utc(alarm_rows, "FROZEN") is not None
        per_video[video.name] = {"exit": code, "rows": len(rows), "frozen_rows": frozen_rows}
        checks.append(_equal(f"{video.name} exit status", code, 0))
        checks.append(Check(f"{video.name} rows", len(rows), ">= 1", len(rows) > 0))
        checks.append(_equal(f"{video.name} FROZEN rows", frozen_rows, 0))
        checks.append(_equal(f"{video.name} FROZEN alarm", alarmed, False))
    frozen = sum(v["frozen_rows"] for v in per_video.values())
    rows_total = sum(v["rows"] for v in per_video.values())
    summary = (
        f"{len(videos)} real videos, {rows_total} frames: FROZEN on {frozen} frames (want 0) — "
        + ", ".join(f"{n} {v['rows']}" for n, v in per_video.items())
    )
    return ScenarioResult(name, summary, checks, {"videos": per_video, "media": str(media)})


# Run in the monitor subprocess when no tmpfs can be mounted: every session file's bytes
# count against a budget; past it, writes fail with ENOSPC as on a full disk.
_INJECT_ENOSPC = """
import errno, functools, io, os, sys
from painmon.core.live import monitor, session
budget = [int(sys.argv.pop(1))]
class FullDisk(io.FileIO):
    def write(self, data):
        if len(data) > budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(data)
        return super().write(data)
def opener(path):
    raw = FullDisk(session._open_new_private(path), "w")
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", newline="")
monitor.SessionWriter = functools.partial(session.SessionWriter, opener=opener)
from painmon.core.tools.cli import main
sys.exit(main(sys.argv[1:]))
"""


@contextlib.contextmanager
def small_filesystem(mount_point: Path, room_bytes: int) -> Iterator[str | None]:
    """A tmpfs at ``mount_point`` with about ``room_bytes`` free (a filler file takes the
    rest); yields None when it cannot be mounted (not root), else how it was made."""
    mount_point.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={_TMPFS_SIZE},mode=0700", "painmon-bench"]
    if shutil.which("mount") is None or os.name != "posix":
        yield None
        return
    result = subprocess.run(
        [*command, str(mount_point)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        log.info("no tmpfs for the disk-full scenario: %s", result.stderr.strip())
        yield None
        return
    try:
        stats = os.statvfs(mount_point)
        free_bytes = stats.f_bavail * stats.f_frsize
        with (mount_point / "filler").open("wb") as filler:
            filler.write(b"\0" * max(0, free_bytes - room_bytes))
        yield f"tmpfs size={_TMPFS_SIZE}, {room_bytes // 1024} KiB left free"
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)


def scenario_disk_full(ws: Workspace) -> ScenarioResult:
    name = "disk-full"
    base = ws.folder(name)
    with small_filesystem(base / "fs", _DISK_ROOM_BYTES) as how:
        if how is None:
            how = f"INJECTED ENOSPC after {_INJECTED_DISK_BYTES // 1024} KiB (no tmpfs: not root?)"
            launcher: list[str] = [sys.executable, "-c", _INJECT_ENOSPC, str(_INJECTED_DISK_BYTES)]
            out = base / "sessions"
        else:
            launcher = [sys.executable, "-m", "painmon"]
            out = base / "fs" / "sessions"
        with ws.monitor(name, ws.patient_video, launcher=launcher, out=out) as run:
            seen_rows = 0
            deadline = time.monotonic() + _FILE_RUN_TIMEOUT_S
            while run.process.poll() is None and time.monotonic() < deadline:
                seen_rows = max(seen_rows, run.rows_on_disk())
                time.sleep(_POLL_S / 4)
            code = run.wait()
            stdout = run.stdout()
            folder = run.session_folder
            report = _recover(folder)
            intact = [] if folder is None else read_rows(folder / SESSION_CSV)
    ended = summary_line(stdout, "ended") or ""
    frames_line = summary_line(stdout, "frames") or ""
    frames_match = re.match(r"(\d+)", frames_line)
    frames_processed = int(frames_match.group(1)) if frames_match else None
    rows_intact = report["rows_intact"]
    checks = (
        _equal("exit status", code, 3),
        Check(
            "end reason",
            ended,
            "starts 'session write error: '",
            ended.startswith("session write error: "),
        ),
        Check(
            "rows seen on disk kept", rows_intact, f">= {seen_rows}", rows_intact >= seen_rows > 0
        ),
        Check(
            "rows in order, no gap",
            frames_contiguous(intact),
            "frames 0..n-1",
            frames_contiguous(intact),
        ),
    )
    unsynced = None if frames_processed is None else frames_processed - rows_intact
    why = re.search(r"\(([^()]*)\)", ended)
    shown = "session write error" + (f" ({why.group(1)})" if why else "") if ended else "?"
    summary = (
        f"{how}: exit {code}, ended {shown!r}; {rows_intact} rows intact >= {seen_rows} "
        f"seen on disk before the fault; {unsynced} unsynced rows lost at the fault; "
        f"session.json {report['status']!r} (reader: {report['state']!r})"
    )
    details = {
        "filesystem": how,
        "exit": code,
        "ended": ended,
        "frames_processed": frames_processed,
        "rows_seen_before_exit": seen_rows,
        "recover_session": {k: v for k, v in report.items() if k != "metadata"},
    }
    return ScenarioResult(name, summary, checks, details)


def _run_scenario(ws: Workspace, name: str) -> ScenarioResult:
    if name == "kill-9":
        return scenario_kill_9(ws)
    if name in MONITOR_EXIT:
        return scenario_stop_signal(ws, name)
    if name in ("server-death", "half-open"):
        return scenario_stream_fault(ws, name)
    if name == "silent-start":
        return scenario_silent_start(ws)
    if name.startswith("frozen-"):
        return scenario_frozen(ws, name)
    if name == "real-not-frozen":
        return scenario_real_not_frozen(ws)
    if name == "disk-full":
        return scenario_disk_full(ws)
    raise ValueError(f"unknown scenario {name!r}")


@contextlib.contextmanager
def _stop_signals_unwind() -> Iterator[None]:
    """SIGTERM/SIGHUP to the bench unwind it like Ctrl-C does, through the ``finally`` blocks
    that stop every monitor and server it started (they run in sessions of their own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, unwind) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bench_faults(
    only: Sequence[str] | None = None,
    model: str | Path | None = None,
    face_model: str | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Run the chosen scenarios one after another; returns the full record.

    ``on_result`` gets each :class:`ScenarioResult` as soon as it is measured. The
    subprocesses' files are kept under ``keep`` when given, else removed.
    """
    if os.name != "posix":
        raise InvalidInputError("painmon bench faults needs POSIX signals (Linux or macOS)")
    names = select_scenarios(only)
    if model is None:
        from painmon.core.store.catalog import shipped_demo_model_path

        model = shipped_demo_model_path()
    model = Path(model)
    if not model.is_file():
        raise InvalidInputError(f"no model at {model}: pass --model model.onnx")
    import cv2

    from painmon import __version__

    started_utc = utc_now()
    start_s = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="painmon-bench-faults-", dir=keep))
    results: list[ScenarioResult] = []
    try:
        with _stop_signals_unwind():
            ws = Workspace(root, model, face_model)
            for name in names:
                log.info("fault scenario %s", name)
                result = _run_scenario(ws, name)
                results.append(result)
                if on_result is not None:
                    on_result(result)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    verdicts = [r.verdict for r in results]
    return {
        "painmon_version": __version__,
        "started_utc": started_utc.isoformat(),
        "wall_s": round(time.perf_counter() - start_s, 1),
        "model": str(model),
        "face_model": face_model or "default",
        "opencv": cv2.__version__,
        "cpu_count": os.cpu_count(),
        "work_folder": str(root) if keep is not None else None,
        "passed": "FAIL" not in verdicts,
        "counts": {v: verdicts.count(v) for v in ("PASS", "FAIL", "SKIP")},
        "scenarios": [r.record() for r in results],
    }


def write_record(record: Mapping[str, Any], path: str | Path) -> Path:
    return atomic_write_json(path, dict(record))


def _serve_main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="bench_faults serve-mjpeg")
    parser.add_argument("frames_dir", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fps", type=float, default=PATIENT_FPS)
    parser.add_argument("--bind-on-sigusr2", action="store_true")
    args = parser.parse_args(argv)
    try:
        serve_mjpeg(args.frames_dir, args.port, args.fps, args.bind_on_sigusr2)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"port {args.port} is in use", flush=True)
            return 2
        raise
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve-mjpeg"]:
        raise SystemExit("usage: python -m painmon.core.tools.bench_faults serve-mjpeg DIR")
    raise SystemExit(_serve_main(sys.argv[2:]))
