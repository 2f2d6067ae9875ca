"""MLLP, the HL7 v2 Minimal Lower Layer Protocol: frames, a client that waits for the ACK,
and a small listener for tests, the README's "try it" and benchmarks.

A frame is ``0x0b`` + message + ``0x1c 0x0d``. TCP may split a frame or join several, so
:class:`MllpDecoder` is incremental. The client sends one message and reads one ACK; the
ACK's MSA-1 (AA accept, AE error, AR reject; enhanced-mode CA/CE/CR read the same) and
MSA-2 (must equal the sent MSH-10) decide what the outbox does with the message.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from painmon.core.util.errors import InvalidInputError, PainmonError

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_FRAME_BYTES = 4 * 1024 * 1024
ACK_CODES = ("AA", "AE", "AR")
_ENHANCED = {"CA": "AA", "CE": "AE", "CR": "AR"}


class MllpError(PainmonError, ConnectionError):
    """The MLLP peer could not be reached, closed early, stayed silent or sent garbage."""


def frame(message: bytes) -> bytes:
    """``message`` wrapped in MLLP start/end blocks."""
    if START_BLOCK in message or b"\x1c" in message:
        raise InvalidInputError("an HL7 message may not contain the MLLP block bytes 0x0b/0x1c")
    return START_BLOCK + message + END_BLOCK


class MllpDecoder:
    """Feed bytes as they arrive; get whole messages back (bytes outside frames dropped)."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            start = self._buffer.find(START_BLOCK)
            if start < 0:
                self._buffer.clear()  # noise between frames
                return messages
            if start:
                del self._buffer[:start]
            end = self._buffer.find(END_BLOCK, 1)
            if end < 0:
                # A second start block before any end: the first frame was cut; resync on it.
                again = self._buffer.find(START_BLOCK, 1)
                if again > 0:
                    del self._buffer[:again]
                    continue
                if len(self._buffer) > self._max:
                    self._buffer.clear()
                    raise MllpError(f"MLLP frame larger than {self._max} bytes")
                return messages
            body = bytes(self._buffer[1:end])
            del self._buffer[: end + len(END_BLOCK)]
            again = body.rfind(START_BLOCK)
            if again >= 0:  # a cut frame followed by a whole one: keep the whole one
                body = body[again + 1 :]
            messages.append(body)

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)


@dataclass(frozen=True)
class Ack:
    """The receiver's answer: MSA-1 code, MSA-2 control id, MSA-3 / ERR text."""

    code: str
    control_id: str
    text: str = ""

    @property
    def accepted(self) -> bool:
        return self.code == "AA"


def _segments(message: str) -> list[str]:
    return [s for s in message.replace("\n", "\r").split("\r") if s]


def message_control_id(message: str | bytes) -> str:
    """MSH-10 of an ER7 message."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    for segment in _segments(message):
        if segment.startswith("MSH") and len(segment) > 3:
            fields = segment.split(segment[3])
            # MSH-1 is the separator itself, so MSH-n sits at index n-1.
            if len(fields) > 9:
                return fields[9]
    raise InvalidInputError("not an HL7 message: no MSH-10 (message control id)")


def parse_ack(message: str | bytes) -> Ack:
    """MSA-1/MSA-2/MSA-3 of an ACK; a reply without an MSA segment is an error."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    separator = "|"
    for segment in _segments(message):
        if segment.startswith("MSH") and len(segment) > 3:
            separator = segment[3]
        if segment.startswith("MSA"):
            fields = segment.split(separator)
            code = fields[1].strip() if len(fields) > 1 else ""
            code = _ENHANCED.get(code, code)
            if code not in ACK_CODES:
                raise MllpError(f"ACK with unknown MSA-1 {code!r}")
            control_id = fields[2].strip() if len(fields) > 2 else ""
            text = fields[3].strip() if len(fields) > 3 else ""
            err = [s for s in _segments(message) if s.startswith("ERR")]
            if not text and err:
                text = err[0]
            return Ack(code, control_id, text)
    raise MllpError("reply is not an HL7 ACK (no MSA segment)")


class MllpClient:
    """One TCP connection to the receiver, opened on demand, kept between messages."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._decoder = MllpDecoder()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection((self.host, self.port), self.timeout_s)
            except OSError as exc:
                raise MllpError(
                    f"MLLP receiver {self.host}:{self.port} not reached: {exc}"
                ) from exc
            self._sock.settimeout(self.timeout_s)
            self._decoder = MllpDecoder()
        return self._sock

    def send(self, message: bytes) -> Ack:
        """Send one ER7 message, wait for its ACK; a wrong MSA-2 is an :class:`MllpError`."""
        control_id = message_control_id(message)
        sock = self._connect()
        try:
            sock.sendall(frame(message))
            while True:
                data = sock.recv(65536)
                if not data:
                    raise MllpError("MLLP receiver closed the connection before its ACK")
                replies = self._decoder.feed(data)
                if replies:
                    ack = parse_ack(replies[-1])
                    break
        except (OSError, MllpError) as exc:
            self.close()
            if isinstance(exc, MllpError):
                raise
            raise MllpError(f"MLLP exchange with {self.host}:{self.port} failed: {exc}") from exc
        if ack.control_id != control_id:
            self.close()  # out of step with the receiver: start a fresh connection
            raise MllpError(
                f"ACK for control id {ack.control_id!r}, expected {control_id!r}: not ours"
            )
        return ack

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_ack(message: bytes, code: str = "AA", text: str = "") -> bytes:
    """An HL7 v2.6 ACK (hl7apy) answering ``message`` with MSA-1 ``code``."""
    from hl7apy.core import Message

    if code not in ACK_CODES:
        raise InvalidInputError(f"ACK code {code!r} is not one of {ACK_CODES}")
    ack = Message("ACK", version="2.6")
    ack.msh.msh_3 = "PAINMON-TEST-RECEIVER"
    ack.msh.msh_9 = "ACK^R01^ACK"
    ack.msh.msh_10 = f"ACK{message_control_id(message)}"[:20]
    ack.msh.msh_11 = "P"
    ack.msa.msa_1 = code
    ack.msa.msa_2 = message_control_id(message)
    if text:
        ack.msa.msa_3 = text.translate(str.maketrans("|^&~\\", "/    "))
    return ack.to_er7().encode("utf-8")


class MllpTestServer:
    """A threaded MLLP receiver on 127.0.0.1 (tests, README "try it", benchmarks).

    ``mode`` (changeable while running): ``"AA"``/``"AE"``/``"AR"`` answer with that
    code, ``"drop"`` closes the connection without answering, ``"silent"`` reads and never
    answers. ``answer`` may instead be a function ``(message) -> mode`` per message.
    ``received`` holds every message read, ``accepted`` those answered AA.
    """

    def __init__(
        self,
        port: int = 0,
        mode: str = "AA",
        answer: Callable[[bytes], str] | None = None,
    ) -> None:
        self.mode = mode
        self.answer = answer
        self.received: list[bytes] = []
        self.accepted: list[bytes] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> MllpTestServer:
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._accept_thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server.close()

    def __enter__(self) -> MllpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.2)
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        decoder = MllpDecoder()
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                for message in decoder.feed(data):
                    mode = self.answer(message) if self.answer else self.mode
                    with self._lock:
                        self.received.append(message)
                        if mode == "AA":
                            self.accepted.append(message)
                    if mode == "drop":
                        return
                    if mode == "silent":
                        continue
                    conn.sendall(frame(build_ack(message, mode, f"test receiver says {mode}")))
        except OSError:
            return
        finally:
            conn.close()
