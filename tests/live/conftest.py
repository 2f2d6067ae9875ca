"""Shared fixtures of the live tests: a real TCP/HTTP MJPEG server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading

import cv2
import numpy as np
import pytest


def _grey_jpeg(height: int, width: int) -> bytes:
    return cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))[1].tobytes()


_FRAME_GAP_S = 1 / 30


class LocalServer:
    """A TCP server on 127.0.0.1. ``mode``: "silent" accepts and never answers, "backlog"
    never accepts, "mjpeg" serves an HTTP MJPEG stream: connection i sends
    ``frames_per_connection[i]`` frames (None: until closed) and then stalls, socket open;
    each frame a grey JPEG of ``size`` (height, width)."""

    def __init__(
        self,
        mode: str,
        frames_per_connection: tuple[int | None, ...] = (),
        size: tuple[int, int] = (48, 64),
    ) -> None:
        self.mode = mode
        self.jpeg = _grey_jpeg(*size)
        self.frames_per_connection = list(frames_per_connection)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.connection_count = 0
        if mode != "backlog":
            self._spawn(self._accept_loop)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/video"

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            self.connection_count += 1
            if self.mode == "mjpeg":
                frames = self.frames_per_connection.pop(0) if self.frames_per_connection else None
                self._spawn(self._serve_mjpeg, connection, frames)

    def _serve_mjpeg(self, connection: socket.socket, frames: int | None) -> None:
        try:
            connection.recv(65536)  # the HTTP request
            connection.sendall(
                b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n"
            )
            sent = 0
            while not self._stop.is_set() and (frames is None or sent < frames):
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                connection.sendall(part % len(self.jpeg) + self.jpeg + b"\r\n")
                sent += 1
                self._stop.wait(_FRAME_GAP_S)
            self._stop.wait()  # half-open: the connection stays up and says nothing
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        for sock in [self._listener, *self._connections]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(2.0)


@pytest.fixture
def server_factory():
    servers: list[LocalServer] = []

    def make(
        mode: str,
        frames_per_connection: tuple[int | None, ...] = (),
        size: tuple[int, int] = (48, 64),
    ) -> LocalServer:
        server = LocalServer(mode, frames_per_connection, size)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
