"""MLLP framing, the incremental decoder, ACK parsing and the client against a real listener."""

from __future__ import annotations

import socket

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.ward.mllp import (
    END_BLOCK,
    START_BLOCK,
    MllpClient,
    MllpDecoder,
    MllpError,
    MllpTestServer,
    build_ack,
    frame,
    message_control_id,
    parse_ack,
)

MSG = (
    b"MSH|^~\\&|PAINMON||||20261127100000.000+0000||ORU^R01^ORU_R01|CTRL0001|P|2.6\rPID|||||^^^^^^U"
)


def _msg(control_id: str) -> bytes:
    return MSG.replace(b"CTRL0001", control_id.encode())


def test_frame_wraps_and_refuses_block_bytes() -> None:
    assert frame(b"abc") == b"\x0babc\x1c\x0d"
    with pytest.raises(InvalidInputError):
        frame(b"a\x0bb")
    with pytest.raises(InvalidInputError):
        frame(b"a\x1cb")


def test_decoder_split_byte_by_byte() -> None:
    decoder = MllpDecoder()
    out: list[bytes] = []
    for byte in frame(MSG):
        out += decoder.feed(bytes([byte]))
    assert out == [MSG]
    assert decoder.pending_bytes == 0


def test_decoder_joined_frames_and_noise() -> None:
    decoder = MllpDecoder()
    data = b"noise" + frame(b"one") + b"\r\n" + frame(b"two") + frame(b"three")[:4]
    assert decoder.feed(data) == [b"one", b"two"]
    assert decoder.feed(b"ee" + END_BLOCK) == [b"three"]


def test_decoder_end_block_split_between_reads() -> None:
    decoder = MllpDecoder()
    assert decoder.feed(START_BLOCK + b"abc\x1c") == []
    assert decoder.feed(b"\x0d") == [b"abc"]


def test_decoder_resyncs_on_a_cut_frame() -> None:
    decoder = MllpDecoder()
    # A sender died mid-frame and reconnected: the cut frame is dropped, the next one kept.
    assert decoder.feed(START_BLOCK + b"cut-off" + frame(b"whole")) == [b"whole"]


def test_decoder_refuses_oversized_frames() -> None:
    decoder = MllpDecoder(max_frame_bytes=16)
    with pytest.raises(MllpError):
        decoder.feed(START_BLOCK + b"x" * 32)
    assert decoder.feed(frame(b"ok")) == [b"ok"]


@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_parse_ack_codes(code: str) -> None:
    ack = parse_ack(build_ack(MSG, code, "why"))
    assert ack.code == code
    assert ack.control_id == "CTRL0001"
    assert ack.accepted == (code == "AA")
    assert ack.text == "why"


def test_parse_ack_enhanced_mode_and_garbage() -> None:
    ack = parse_ack("MSH|^~\\&|X||||20260101||ACK|9|P|2.5\rMSA|CA|CTRL0001")
    assert (ack.code, ack.control_id) == ("AA", "CTRL0001")
    with pytest.raises(MllpError, match="no MSA"):
        parse_ack(b"MSH|^~\\&|X\rPID|1")
    with pytest.raises(MllpError, match="unknown MSA-1"):
        parse_ack("MSH|^~\\&|X\rMSA|ZZ|1")


def test_message_control_id() -> None:
    assert message_control_id(MSG) == "CTRL0001"
    with pytest.raises(InvalidInputError):
        message_control_id(b"PID|1")


@pytest.mark.parametrize("mode", ["AA", "AE", "AR"])
def test_client_reads_each_answer(mode: str) -> None:
    with MllpTestServer(mode=mode) as server, MllpClient("127.0.0.1", server.port, 5) as client:
        ack = client.send(_msg("A1"))
        assert ack.code == mode
        assert ack.control_id == "A1"
        # The connection is kept: a second message on the same socket.
        assert client.send(_msg("A2")).control_id == "A2"
    assert [message_control_id(m) for m in server.received] == ["A1", "A2"]


def test_client_control_id_mismatch_is_an_error() -> None:
    # A receiver that answers with another message's control id is out of step.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    import threading

    def answer_wrong() -> None:
        conn, _ = listener.accept()
        decoder = MllpDecoder()
        while not decoder.feed(conn.recv(4096)):
            pass
        conn.sendall(frame(build_ack(_msg("SOMEONE-ELSE"), "AA")))
        conn.close()

    thread = threading.Thread(target=answer_wrong, daemon=True)
    thread.start()
    with MllpClient("127.0.0.1", port, 5) as client, pytest.raises(MllpError, match="expected"):
        client.send(_msg("MINE"))
    thread.join(5)
    listener.close()


def test_client_errors_on_drop_silence_and_no_listener() -> None:
    with (
        MllpTestServer(mode="drop") as server,
        MllpClient("127.0.0.1", server.port, 2) as client,
        pytest.raises(MllpError, match="closed"),
    ):
        client.send(_msg("D1"))
    with (
        MllpTestServer(mode="silent") as server,
        MllpClient("127.0.0.1", server.port, 0.3) as client,
        pytest.raises(MllpError, match="failed"),
    ):
        client.send(_msg("S1"))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on that port now
    with MllpClient("127.0.0.1", port, 1) as client, pytest.raises(MllpError, match="not reached"):
        client.send(_msg("N1"))
