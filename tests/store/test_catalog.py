"""Face model download against a loopback HTTP server (127.0.0.1 only), and the installed list."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from painmon.core.store import catalog
from painmon.core.store.catalog import (
    ModelDownloadError,
    download_face_model,
    format_installed_models,
    installed_models,
    models_dir,
)
from painmon.core.util import paths
from painmon.core.util.fileio import sha256_file
from painmon.core.util.paths import (
    FACE_LANDMARKER_FILENAME,
    FACE_LANDMARKER_SHA256,
    find_face_model,
    shipped_face_model_path,
)


class _Server:
    """A one-file HTTP server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

        self._httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/{FACE_LANDMARKER_FILENAME}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator:
    servers: list[_Server] = []

    def start(body: bytes) -> _Server:
        servers.append(_Server(body))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FACE_LANDMARKER_FILENAME}"


def test_download_verifies_and_places_the_bundle(serve, face_model_path: Path, tmp_path: Path):
    server = serve(face_model_path.read_bytes())
    calls: list[tuple[int, int | None]] = []
    dest = tmp_path / "models"
    path = download_face_model(
        dest, url=server.url, timeout_s=5, progress=lambda d, t: calls.append((d, t))
    )
    assert path == dest / FACE_LANDMARKER_FILENAME
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FACE_LANDMARKER_SHA256
    assert server.requests == 1
    size = face_model_path.stat().st_size
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert [p.name for p in dest.iterdir()] == [FACE_LANDMARKER_FILENAME]  # no .part left


def test_default_destination_is_the_user_models_folder(serve, face_model_path: Path):
    server = serve(face_model_path.read_bytes())
    path = download_face_model(url=server.url, timeout_s=5)
    assert path == models_dir() / FACE_LANDMARKER_FILENAME
    face = installed_models()[0]
    assert face.status == "installed" and face.verified is True and face.active is True


def test_wrong_bytes_are_deleted_and_the_error_names_both_hashes(serve, tmp_path: Path):
    body = b"<html>captive portal login</html>"
    server = serve(body)
    dest = tmp_path / "models"
    with pytest.raises(ModelDownloadError) as info:
        download_face_model(dest, url=server.url, timeout_s=5)
    message = str(info.value)
    assert FACE_LANDMARKER_SHA256 in message
    assert hashlib.sha256(body).hexdigest() in message
    assert "deleted" in message and "painmon models download" in message
    assert list(dest.iterdir()) == []


def test_no_network_says_haar_keeps_working(tmp_path: Path):
    dest = tmp_path / "models"
    with pytest.raises(ModelDownloadError) as info:
        download_face_model(dest, url=_closed_port_url(), timeout_s=5)
    message = str(info.value)
    assert "Haar" in message
    assert "painmon models download" in message
    assert str(dest / FACE_LANDMARKER_FILENAME) in message  # where to put it by hand
    assert list(dest.iterdir()) == []


def test_timeout_is_a_clear_error(tmp_path: Path):
    def opener(url: str, timeout: float):
        raise TimeoutError("timed out")

    with pytest.raises(ModelDownloadError, match="Haar"):
        download_face_model(tmp_path, url="http://127.0.0.1:9/x", opener=opener, timeout_s=1)


def test_verified_file_is_not_downloaded_again_unless_forced(
    serve, face_model_path: Path, tmp_path: Path
):
    server = serve(face_model_path.read_bytes())
    first = download_face_model(tmp_path, url=server.url, timeout_s=5)
    again = download_face_model(tmp_path, url=server.url, timeout_s=5)
    assert again == first and server.requests == 1
    download_face_model(tmp_path, url=server.url, timeout_s=5, force=True)
    assert server.requests == 2


def test_corrupt_existing_file_is_replaced(serve, face_model_path: Path, tmp_path: Path):
    (tmp_path / FACE_LANDMARKER_FILENAME).write_bytes(b"truncated")
    server = serve(face_model_path.read_bytes())
    path = download_face_model(tmp_path, url=server.url, timeout_s=5)
    assert server.requests == 1
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FACE_LANDMARKER_SHA256


def test_bad_expected_hash_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="64 hex"):
        download_face_model(tmp_path, expected_sha256="abc")


def test_a_fresh_install_tracks_with_the_shipped_face_model():
    rows = installed_models()
    face, haar = rows[0], rows[1]
    shipped = shipped_face_model_path()
    assert shipped is not None and shipped.parent.name == "face"
    assert sha256_file(shipped) == FACE_LANDMARKER_SHA256
    assert face.status == "installed" and face.active and face.path == str(shipped)
    assert "shipped with painmon" in face.detail
    assert not haar.active and haar.path.endswith("haarcascade_frontalface_default.xml")
    text = format_installed_models(rows)
    assert "Active face detector: mediapipe" in text


def test_haar_is_an_explicit_choice(monkeypatch):
    monkeypatch.setenv("PAINMON_FACE_MODEL", "haar")
    assert find_face_model() is None and find_face_model("HAAR") is None
    face, haar = installed_models()[:2]
    assert not face.active and haar.active and "PAINMON_FACE_MODEL=haar" in haar.detail
    assert "Active face detector: haar" in format_installed_models()


def test_without_a_shipped_bundle_the_tracker_falls_back_to_haar(monkeypatch):
    monkeypatch.setattr(catalog, "shipped_face_model_path", lambda: None)
    monkeypatch.setattr(paths, "shipped_face_model_path", lambda: None)
    face, haar = installed_models()[:2]
    assert face.status == "not installed" and not face.active
    assert haar.active and "models download" in face.detail


def test_corrupt_bundle_is_reported_as_mismatch(monkeypatch, tmp_path: Path):
    bundle = tmp_path / FACE_LANDMARKER_FILENAME
    bundle.write_bytes(b"not the release")
    monkeypatch.setenv("PAINMON_FACE_MODEL", str(bundle))
    face = installed_models()[0]
    assert face.status == "hash mismatch" and face.verified is False
    assert face.active  # create_face_tracker would pick it (and then refuse it)


def test_missing_env_bundle_is_reported(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PAINMON_FACE_MODEL", str(tmp_path / "nowhere.task"))
    face = installed_models()[0]
    assert face.status == "missing" and "PAINMON_FACE_MODEL" in face.detail


def test_user_onnx_models_are_checked_against_their_sidecars():
    folder = models_dir()
    folder.mkdir(parents=True)
    good, bad, bare = folder / "good.onnx", folder / "bad.onnx", folder / "bare.onnx"
    for path in (good, bad, bare):
        path.write_bytes(path.name.encode())
    (folder / "good.onnx.sha256").write_text(
        f"{hashlib.sha256(b'good.onnx').hexdigest()}  good.onnx\n"
    )
    (folder / "bad.onnx.sha256").write_text(f"{'0' * 64}  bad.onnx\n")
    rows = {r.name: r for r in installed_models() if r.kind == "pain model"}
    assert rows["good.onnx"].verified is True and rows["good.onnx"].status == "installed"
    assert rows["bad.onnx"].verified is False and rows["bad.onnx"].status == "hash mismatch"
    assert rows["bare.onnx"].verified is None and rows["bare.onnx"].status == "unverified"
    text = format_installed_models()
    assert "good.onnx" in text and "hash mismatch" in text
