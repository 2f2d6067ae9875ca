"""A durable outbox for HL7 messages: on disk before sending, gone only after ``MSA|AA``.

Each message is one file in ``<outbox>/pending/`` written atomically (temporary file,
fsync, rename), named ``<sequence>-<n>-<MSH-10>.hl7`` so that names sort in the order the
messages were made: the 20-digit sequence is the wall clock in nanoseconds or one more than
the largest sequence already used, whichever is larger, and at start the outbox reads the
largest sequence among its files (older versions named them the same way). A clock stepped
back (NTP, a restart with an earlier clock) thus never puts a new message before an older
one. The sender takes the oldest, sends it over MLLP and deletes it only when the receiver
answers AA. AE and AR answers move the file to ``<outbox>/rejected/`` with a
``.reason.txt`` beside it (logged; a person must look). No answer, a dropped connection or
a wrong control id: the same file is sent again after a backoff that doubles up to
``backoff_max_s``, and the files behind it wait (order kept). A gateway that dies at any
point finds its pending files at the next start and sends them first: duplicates are
possible (a message answered AA just before the crash), losses are not; the receiver drops
duplicates by MSH-10.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_path, atomic_write_text
from painmon.core.ward.mllp import Ack, MllpClient, MllpError, message_control_id

log = logging.getLogger(__name__)

SUFFIX = ".hl7"
SEQUENCE_DIGITS = 20


def _sequence(name: str) -> int | None:
    """The sequence a file name starts with, None for a name the outbox did not make."""
    head = name.partition("-")[0]
    if len(head) != SEQUENCE_DIGITS or not head.isdigit():
        return None
    return int(head)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Outbox:
    """The on-disk queue: ``put`` durably, ``pending`` oldest first, ``done``/``reject``."""

    def __init__(self, folder: str | Path, *, clock_ns: Callable[[], int] | None = None) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InvalidInputError(f"outbox {self.folder} is a file, not a folder")
        self.pending_dir = self.folder / "pending"
        self.rejected_dir = self.folder / "rejected"
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.pending_dir.glob("*.tmp"):  # a write cut by a crash: never renamed
            stale.unlink(missing_ok=True)
        self._clock_ns = clock_ns
        # Files made by an earlier run (pending, or set aside) are older than anything put
        # now, whatever the clock says.
        made = (
            _sequence(path.name)
            for folder in (self.pending_dir, self.rejected_dir)
            for path in folder.glob(f"*{SUFFIX}")
        )
        self._last_sequence = max((n for n in made if n is not None), default=0)
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def put(self, message: bytes) -> Path:
        """Write ``message`` durably; returns its file. Its MSH-10 is part of the name."""
        control_id = message_control_id(message)
        if not control_id.replace("-", "").isalnum():
            raise InvalidInputError(f"control id {control_id!r} is not a safe file name")
        with self._lock:
            now_ns = self._clock_ns() if self._clock_ns is not None else time.time_ns()
            self._last_sequence = sequence = max(now_ns, self._last_sequence + 1)
            name = f"{sequence:0{SEQUENCE_DIGITS}d}-{next(self._counter):06d}-{control_id}{SUFFIX}"
        path = self.pending_dir / name
        with atomic_path(path, mode=0o600) as tmp, tmp.open("wb") as handle:
            handle.write(message)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(self.pending_dir)
        return path

    def pending(self) -> list[Path]:
        return sorted(self.pending_dir.glob(f"*{SUFFIX}"))

    def rejected(self) -> list[Path]:
        return sorted(self.rejected_dir.glob(f"*{SUFFIX}"))

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _fsync_dir(self.pending_dir)

    def reject(self, path: Path, reason: str) -> Path:
        target = self.rejected_dir / path.name
        atomic_write_text(target.with_name(target.name + ".reason.txt"), reason + "\n")
        path.replace(target)
        _fsync_dir(self.pending_dir)
        return target


@dataclass
class SenderStats:
    sent: int = 0
    rejected: int = 0
    retries: int = 0


class OutboxSender:
    """Sends an :class:`Outbox` over MLLP in order, in its own thread (or step by step)."""

    def __init__(
        self,
        outbox: Outbox,
        host: str,
        port: int,
        *,
        timeout_s: float = 10.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        client_factory: Callable[[str, int, float], MllpClient] = MllpClient,
    ) -> None:
        self.outbox = outbox
        self.client = client_factory(host, port, timeout_s)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stats = SenderStats()
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delay_s = 0.0

    def send_next(self) -> str:
        """Try the oldest pending file once: ``empty``, ``sent``, ``rejected`` or ``retry``."""
        pending = self.outbox.pending()
        if not pending:
            return "empty"
        path = pending[0]
        try:
            ack: Ack = self.client.send(path.read_bytes())
        except InvalidInputError as exc:  # a damaged file: set it aside, keep the queue moving
            self.outbox.reject(path, f"not sent: {exc}")
            self.stats.rejected += 1
            log.error(
                "outbox file %s is not an HL7 message (%s); moved to %s",
                path.name,
                exc,
                self.outbox.rejected_dir,
            )
            return "rejected"
        except (MllpError, OSError) as exc:
            self.stats.retries += 1
            if self.last_error != str(exc):
                log.warning("HL7 receiver: %s; will retry %s", exc, path.name)
            self.last_error = str(exc)
            return "retry"
        self.last_error = None
        if ack.accepted:
            self.outbox.done(path)
            self.stats.sent += 1
            return "sent"
        reason = f"MSA-1 {ack.code}: {ack.text or 'no reason given'}"
        self.outbox.reject(path, reason)
        self.stats.rejected += 1
        log.error(
            "HL7 receiver refused %s (%s); kept in %s", path.name, reason, self.outbox.rejected_dir
        )
        return "rejected"

    def notify(self) -> None:
        """A new file was put: wake the sender thread."""
        self._wake.set()

    def start(self) -> OutboxSender:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hl7-outbox", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            outcome = self.send_next()
            if outcome == "retry":
                self._delay_s = min(
                    self.backoff_max_s, self._delay_s * 2 if self._delay_s else self.backoff_s
                )
                self._stop.wait(self._delay_s)
                continue
            self._delay_s = 0.0
            if outcome == "empty":
                self._wake.wait(1.0)
                self._wake.clear()

    def wait_empty(self, timeout_s: float) -> bool:
        """True once nothing is pending (for tests and a clean shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.outbox.pending():
                return True
            time.sleep(0.05)
        return not self.outbox.pending()
