"""A token used as a stream URL's user name reaches no file, log or summary (#12 item 7).

A real HTTP MJPEG server on 127.0.0.1 is opened through FFmpeg with the token in the
URL; the face tracker and the pain model are stand-ins (what is checked is where the
source's name is written: session.json, session.csv, the log, the monitor's summary).
"""

from __future__ import annotations

import logging
import socket

import pytest
from fakes import FaceEverywhere, FakeModel

from painmon.core.live import monitor as monitor_module
from painmon.core.live.capture import SourceError, open_source
from painmon.core.live.monitor import run_monitor_cli

TOKEN = "ghp_abcdEFGH1234567890xyz"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW0ifQ.c2lnbmF0dXJlX2hlcmU"


@pytest.fixture
def mjpeg_server(server_factory):
    """An endless HTTP MJPEG stream of 160x160 frames (tests/live/conftest.py)."""
    return server_factory("mjpeg", size=(160, 160))


@pytest.mark.parametrize(
    ("userinfo", "secret", "shown"),
    [(TOKEN, TOKEN, "***"), (f"{JWT}:", JWT, "***"), ("nurse:s3cret", "s3cret", "nurse:***")],
)
def test_a_url_credential_is_in_no_file_log_or_summary(
    tmp_path, caplog, capsys, monkeypatch, mjpeg_server, userinfo, secret, shown
):
    monkeypatch.setattr(monitor_module, "create_face_tracker", lambda _m: FaceEverywhere())
    url = f"http://{userinfo}@127.0.0.1:{mjpeg_server.port}/video"
    with caplog.at_level(logging.DEBUG, logger="painmon"):
        code = run_monitor_cli(
            url,
            "fake.onnx",
            tmp_path / "out",
            max_seconds=1.0,
            realtime=True,
            load_model=lambda path: FakeModel(path=path),
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
