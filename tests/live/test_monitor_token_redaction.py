"""A token used as a stream URL's user name reaches no file, log or summary (#12 item 7).

A real HTTP MJPEG server on 127.0.0.1 is opened through FFmpeg with the token in the
URL; the face tracker and the pain model are stand-ins (what is checked is where the
source's name is written: session.json, session.csv, the log, the monitor's summary).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

import cv2
import numpy as np
import pytest

from painmon.core.live import monitor as monitor_module
from painmon.core.live.capture import SourceError, open_source
from painmon.core.live.face import FaceObservation
from painmon.core.live.face_detect import FaceBox
from painmon.core.live.monitor import run_monitor_cli
from painmon.core.live.scoring import OnnxPrediction

TOKEN = "ghp_abcdEFGH1234567890xyz"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW0ifQ.c2lnbmF0dXJlX2hlcmU"
_JPEG = cv2.imencode(".jpg", np.full((160, 160, 3), 128, np.uint8))[1].tobytes()


class _MjpegServer:
    """An endless HTTP MJPEG stream on 127.0.0.1 at about 30 fps."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n"
            )
            while not self._stop.is_set():
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                connection.sendall(part % len(_JPEG) + _JPEG + b"\r\n")
                self._stop.wait(1 / 30)
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


class _FaceEverywhere:
    name = "fake-face"

    def observe(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        return FaceObservation(t_s, True, FaceBox(20.0, 20.0, 120.0, 120.0, 0.99), 1, self.name)

    def close(self) -> None:
        pass


class _Model:
    input_size = (3, 64, 64)
    sha256 = "ab" * 32
    is_demo = False
    providers = ["CPUExecutionProvider"]  # noqa: RUF012 - read only
    domain_gate = None
    metadata = {"architecture": "fake-dacnn"}  # noqa: RUF012 - read only

    def __init__(self, path) -> None:
        self.path = path

    def predict(self, crops_uint8: np.ndarray) -> OnnxPrediction:
        batch = len(crops_uint8)
        probs = np.tile(np.array([0.6, 0.2, 0.1, 0.05, 0.05]), (batch, 1))
        return OnnxPrediction(probs, np.zeros((batch, 8, 8)), np.ones((batch, 1, 8, 8)))


@pytest.fixture
def mjpeg_server():
    server = _MjpegServer()
    yield server
    server.close()


@pytest.mark.parametrize(
    ("userinfo", "secret", "shown"),
    [(TOKEN, TOKEN, "***"), (f"{JWT}:", JWT, "***"), ("nurse:s3cret", "s3cret", "nurse:***")],
)
def test_a_url_credential_is_in_no_file_log_or_summary(
    tmp_path, caplog, capsys, monkeypatch, mjpeg_server, userinfo, secret, shown
):
    monkeypatch.setattr(monitor_module, "create_face_tracker", lambda _m: _FaceEverywhere())
    url = f"http://{userinfo}@127.0.0.1:{mjpeg_server.port}/video"
    with caplog.at_level(logging.DEBUG, logger="painmon"):
        code = run_monitor_cli(
            url, "fake.onnx", tmp_path / "out", max_seconds=1.0, realtime=True, load_model=_Model
        )
    assert code == 0
    out = capsys.readouterr()
    (folder,) = (tmp_path / "out" / "anonymous").iterdir()
    session_json = (folder / "session.json").read_text(encoding="utf-8")
    assert f'"http://{shown}@127.0.0.1:{mjpeg_server.port}/video"' in session_json
    written = [path for path in folder.rglob("*") if path.is_file()]
    assert len(written) >= 2  # session.json and session.csv at least
    for path in written:
        assert secret.encode() not in path.read_bytes(), path.name
    assert secret not in out.out + out.err
    assert caplog.records
    for record in caplog.records:
        assert secret not in record.getMessage(), record.getMessage()


def test_a_stream_that_cannot_open_is_named_without_its_token():
    # Nothing listens on the port: refused at once; the error names the host, not the token.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceError) as caught:
        open_source(f"http://{TOKEN}@127.0.0.1:{port}/video")
    assert TOKEN not in str(caught.value)
    assert f"http://***@127.0.0.1:{port}/video" in str(caught.value)
