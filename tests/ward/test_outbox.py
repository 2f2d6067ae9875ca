"""The durable outbox: written before sending, deleted after AA only, survives a kill."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from painmon.core.ward.hl7 import PainPeriodSummary, build_observation_report
from painmon.core.ward.mllp import MllpTestServer, message_control_id
from painmon.core.ward.outbox import Outbox, OutboxSender

MSG = "MSH|^~\\&|PAINMON||||20261127100000.000+0000||ORU^R01^ORU_R01|{cid}|P|2.6\rPID|||||^^^^^^U"


def _msg(cid: str) -> bytes:
    return MSG.format(cid=cid).encode()


def test_put_is_durable_ordered_and_private(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "out")
    paths = [box.put(_msg(f"C{i}")) for i in range(5)]
    assert box.pending() == paths
    assert [message_control_id(p.read_bytes()) for p in box.pending()] == [
        f"C{i}" for i in range(5)
    ]
    assert paths[0].stat().st_mode & 0o777 == 0o600
    assert not list((tmp_path / "out" / "pending").glob("*.tmp"))


def test_aa_deletes_ae_and_ar_go_to_rejected(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    answers = {"OK1": "AA", "BAD1": "AE", "BAD2": "AR", "OK2": "AA"}
    for cid in answers:
        box.put(_msg(cid))
    with MllpTestServer(answer=lambda m: answers[message_control_id(m)]) as server:
        sender = OutboxSender(box, "127.0.0.1", server.port, timeout_s=5)
        outcomes = [sender.send_next() for _ in range(5)]
        sender.stop()
    assert outcomes == ["sent", "rejected", "rejected", "sent", "empty"]
    assert box.pending() == []
    rejected = box.rejected()
    assert [message_control_id(p.read_bytes()) for p in rejected] == ["BAD1", "BAD2"]
    reasons = [Path(f"{p}.reason.txt").read_text() for p in rejected]
    assert reasons[0].startswith("MSA-1 AE") and reasons[1].startswith("MSA-1 AR")
    assert [message_control_id(m) for m in server.accepted] == ["OK1", "OK2"]


def test_dropped_connection_and_silence_are_retried_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    for cid in ("M1", "M2"):
        box.put(_msg(cid))
    with MllpTestServer(mode="drop") as server:
        sender = OutboxSender(box, "127.0.0.1", server.port, timeout_s=0.5, backoff_s=0.05)
        assert sender.send_next() == "retry"
        server.mode = "silent"
        assert sender.send_next() == "retry"
        assert len(box.pending()) == 2  # nothing deleted without an AA
        server.mode = "AA"
        sender.start()
        assert sender.wait_empty(10)
        sender.stop()
    got = [message_control_id(m) for m in server.accepted]
    assert got == ["M1", "M2"]
    assert sender.stats.retries >= 2


def test_receiver_down_then_up_is_retried_with_backoff(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put(_msg("LATE"))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens yet
    sender = OutboxSender(
        box, "127.0.0.1", port, timeout_s=0.5, backoff_s=0.05, backoff_max_s=0.2
    ).start()
    try:
        with MllpTestServer(port=port) as up:
            assert sender.wait_empty(10)
    finally:
        sender.stop()
    assert [message_control_id(m) for m in up.accepted] == ["LATE"]


_KILL_SCRIPT = """
import os, signal, sys
from painmon.core.ward.outbox import Outbox
box = Outbox(sys.argv[1])
for i in range(3):
    box.put(("MSH|^~\\\\&|PAINMON||||20261127||ORU^R01^ORU_R01|K%d|P|2.6" % i).encode())
os.kill(os.getpid(), signal.SIGKILL)  # dies between writing and sending
"""


def test_killed_between_write_and_send_is_sent_at_next_start(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(folder)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # A write cut mid-way leaves a temporary file; the next start removes it unsent.
    (folder / "pending" / "99999999999999999999-000000-HALF.hl7abc.tmp").write_bytes(b"MSH|")
    box = Outbox(folder)
    assert [message_control_id(p.read_bytes()) for p in box.pending()] == ["K0", "K1", "K2"]
    with MllpTestServer() as server:
        sender = OutboxSender(box, "127.0.0.1", server.port, timeout_s=5).start()
        assert sender.wait_empty(10)
        sender.stop()
    assert [message_control_id(m) for m in server.accepted] == ["K0", "K1", "K2"]
    assert not list((folder / "pending").iterdir())


def test_built_message_round_trip(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    control_id, er7 = build_observation_report(
        PainPeriodSummary("W1", "b1", now, now, 1, 0, 1.0, 0.9), now=now
    )
    box = Outbox(tmp_path)
    box.put(er7.encode())
    with MllpTestServer() as server:
        sender = OutboxSender(box, "127.0.0.1", server.port, timeout_s=5)
        assert sender.send_next() == "sent"
        sender.stop()
    assert server.accepted[0].decode() == er7
    assert message_control_id(server.accepted[0]) == control_id


def test_a_damaged_file_is_set_aside_not_stuck(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put(_msg("FIRST"))
    damaged = box.pending()[0].with_name("00000000000000000000-000000-X.hl7")
    damaged.write_bytes(b"not hl7 at all")
    with MllpTestServer() as server:
        sender = OutboxSender(box, "127.0.0.1", server.port, timeout_s=5)
        assert [sender.send_next() for _ in range(3)] == ["rejected", "sent", "empty"]
        sender.stop()
    assert [p.name for p in box.rejected()] == [damaged.name]
    assert [message_control_id(m) for m in server.accepted] == ["FIRST"]


class _Clock:
    """A wall clock in ns that the test steps (back, too)."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def _delivered(box: Outbox) -> list[str]:
    with MllpTestServer() as server:
        sender = OutboxSender(box, "127.0.0.1", server.port, timeout_s=5)
        while sender.send_next() != "empty":
            pass
        sender.stop()
    return [message_control_id(m) for m in server.accepted]


NOW_NS = 1_790_000_000_000_000_000


def test_clock_stepped_back_keeps_the_order(tmp_path: Path) -> None:
    clock = _Clock(NOW_NS)
    box = Outbox(tmp_path, clock_ns=clock)
    box.put(_msg("START"))
    clock.now_ns -= 2_000_000_000  # NTP steps the wall clock back 2 s
    box.put(_msg("END"))
    clock.now_ns += 5_000_000_000
    box.put(_msg("LATER"))
    assert _delivered(box) == ["START", "END", "LATER"]


def test_restart_with_an_earlier_clock_sends_the_leftovers_first(tmp_path: Path) -> None:
    clock = _Clock(NOW_NS)
    Outbox(tmp_path, clock_ns=clock).put(_msg("LEFT"))  # left pending by a crashed run
    clock.now_ns -= 2_000_000_000
    box = Outbox(tmp_path, clock_ns=clock)  # the next start, with the clock 2 s earlier
    box.put(_msg("NEW1"))
    box.put(_msg("NEW2"))
    assert _delivered(box) == ["LEFT", "NEW1", "NEW2"]
    # Nothing pending now, but a rejected file's name still counts: names stay unique and
    # a file put back into pending by a person sorts where it was made.
    rejected = Outbox(tmp_path, clock_ns=clock)
    rejected.reject(rejected.put(_msg("BAD")), "test")
    clock.now_ns -= 2_000_000_000
    box = Outbox(tmp_path, clock_ns=clock)
    assert box.put(_msg("AFTER")).name > box.rejected()[0].name


def test_old_version_names_are_read_and_kept_in_order(tmp_path: Path) -> None:
    # Pending files of an earlier version: wall-clock ns and a per-run counter, as before.
    pending = tmp_path / "pending"
    pending.mkdir()
    for i, cid in enumerate(("OLD1", "OLD2")):
        (pending / f"{NOW_NS + i:020d}-{i:06d}-{cid}.hl7").write_bytes(_msg(cid))
    (pending / "notes.hl7").write_bytes(_msg("ODD"))  # not a name the outbox made
    box = Outbox(tmp_path, clock_ns=_Clock(NOW_NS - 60_000_000_000))  # a minute earlier
    box.put(_msg("NEW"))
    assert [message_control_id(p.read_bytes()) for p in box.pending()] == [
        "OLD1",
        "OLD2",
        "NEW",
        "ODD",
    ]
