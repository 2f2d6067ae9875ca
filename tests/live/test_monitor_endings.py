"""How a headless run ends: signals, faults, exit statuses, and no password in what it writes.

Fake sources, trackers and models (no ONNX, no face model) keep the in-process tests fast;
the signal tests run the real ``python -m painmon monitor`` on a video made here.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import fakes
import numpy as np
import pytest
from fakes import FaceEverywhere

from painmon.core.live import monitor as monitor_module
from painmon.core.live.capture import FrameSource, RawFrame, SourceError
from painmon.core.live.monitor import (
    EXIT_CLEAN,
    EXIT_FAULT,
    EXIT_HANGUP,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    MONITOR_EXIT_CODES,
    StopSignals,
    run_monitor,
    run_monitor_cli,
)
from painmon.core.live.scoring import OnnxPrediction
from painmon.core.live.session import SessionWriter
from painmon.core.tools.cli import build_parser
from painmon.core.util.errors import InvalidInputError

SECRET_URL = "rtsp://user:secret@127.0.0.1:9/x"
POSIX = os.name == "posix"


class FakeSource(FrameSource):
    """``frames`` noisy grey frames at 10 fps of media time; may fail, dawdle or be damaged."""

    def __init__(
        self,
        frames: int = 20,
        *,
        fail_at: int | None = None,
        failure: str = "the decoder crashed",
        damage: str | None = None,
        read_s: float = 0.0,
        name: str = "fake.mp4",
    ) -> None:
        super().__init__(name)
        self.frames, self.fail_at, self.failure = frames, fail_at, failure
        self.planned_damage, self.read_s = damage, read_s
        self.reported_damage: str | None = None
        self.total_frames = frames
        self.closed = False
        self.sent = 0
        self.rng = np.random.default_rng(7)

    def open(self) -> None:
        self.sent = 0

    def read(self) -> RawFrame | None:
        if self.fail_at is not None and self.sent == self.fail_at:
            raise RuntimeError(self.failure)
        if self.sent >= self.frames:
            self.reported_damage = self.planned_damage  # as a video file ending early would
            return None
        if self.read_s:
            time.sleep(self.read_s)
        rgb = self.rng.integers(40, 215, size=(160, 160, 3), dtype=np.uint8)
        self.sent += 1
        return RawFrame(rgb, (self.sent - 1) / 10.0, self.sent - 1)

    @property
    def damage(self) -> str | None:  # FrameSource.damage: set once a file ended early
        return self.reported_damage

    def close(self) -> None:
        self.closed = True


class FakeModel(fakes.FakeModel):
    """The shared stand-in, failing on call ``fail_on_call`` or taking non-square crops."""

    def __init__(self, fail_on_call: int | None = None, square: bool = True) -> None:
        super().__init__()
        self.fail_on_call = fail_on_call
        if not square:
            self.input_size = (3, 64, 48)

    def predict(self, crops_uint8: np.ndarray) -> OnnxPrediction:
        if self.calls + 1 == self.fail_on_call:
            self.calls += 1
            raise RuntimeError("ONNXRuntimeError: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION\n"
                               "Non-zero status code returned while running Conv node")  # fmt: skip
        return super().predict(crops_uint8)


def _run(tmp_path, source: FrameSource, model: FakeModel | None = None, **kwargs):
    model = model or FakeModel()
    tracker = kwargs.pop("tracker", None) or FaceEverywhere()
    return run_monitor(
        kwargs.pop("spec", "fake.mp4"),
        "fake.onnx",
        tmp_path / "out",
        progress=False,
        load_model=lambda _path: model,
        open_source_fn=lambda _spec: source,
        make_face_tracker=lambda _face_model: tracker,
        **kwargs,
    )


def _meta(folder: Path) -> dict:
    return json.loads((folder / "session.json").read_text(encoding="utf-8"))


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "session.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- faults end the run with a reason and exit status 3 ---------------------------------------


def test_a_clean_end_exits_zero(tmp_path):
    summary = _run(tmp_path, FakeSource(frames=12))
    assert (summary.end_reason, summary.exit_code) == ("end of media", EXIT_CLEAN)
    assert summary.frames == summary.frames_scored == 12
    assert "exit status" not in summary.format()
    assert _meta(summary.session_folder)["end_reason"] == "end of media"


def test_a_model_failing_mid_run_closes_the_session_as_a_model_error(tmp_path):
    model = FakeModel(fail_on_call=5)
    tracker = FaceEverywhere()
    summary = _run(tmp_path, FakeSource(frames=40), model, tracker=tracker)
    assert summary.end_reason.startswith("model error: the pain model failed on frame 4 ")
    assert "RuntimeError: ONNXRuntimeError" in summary.end_reason
    assert "\n" not in summary.end_reason  # one line
    assert summary.exit_code == EXIT_FAULT and summary.faulted
    assert summary.frames == 4  # the four frames before the failure were scored and kept
    meta = _meta(summary.session_folder)
    assert meta["status"] == "ended" and meta["end_reason"] == summary.end_reason
    assert meta["frames_written"] == len(_rows(summary.session_folder)) == 4
    assert tracker.closed
    text = summary.format()
    assert f"ended: {summary.end_reason}" in text
    assert "exit status 3: the run ended on a fault" in text


def test_the_cli_front_end_exits_with_the_fault_status(tmp_path, capsys, monkeypatch):
    source = FakeSource(frames=30)
    monkeypatch.setattr(monitor_module, "open_source", lambda _spec: source)
    monkeypatch.setattr(monitor_module, "create_face_tracker", lambda _m: FaceEverywhere())
    code = run_monitor_cli("fake.mp4", "fake.onnx", tmp_path,
                           load_model=lambda _p: FakeModel(fail_on_call=3))  # fmt: skip
    assert code == EXIT_FAULT
    out = capsys.readouterr().out
    assert "ended: model error: the pain model failed on frame 2" in out
    assert "exit status 3" in out


def test_an_engine_refusing_the_model_releases_tracker_and_source_and_leaves_no_session(
    tmp_path,
):
    source, tracker = FakeSource(), FaceEverywhere()
    with pytest.raises(InvalidInputError, match="square"):
        _run(tmp_path, source, FakeModel(square=False), tracker=tracker)
    assert tracker.closed and source.closed
    assert not (tmp_path / "out").exists()


def test_a_capture_thread_failure_ends_as_a_source_error(tmp_path):
    summary = _run(tmp_path, FakeSource(frames=40, fail_at=6, failure="device went away"))
    assert summary.end_reason == "source error: device went away"
    assert summary.exit_code == EXIT_FAULT
    assert summary.frames == 6
    assert _meta(summary.session_folder)["end_reason"] == "source error: device went away"


def test_a_file_ending_before_its_length_ends_as_damaged_media(tmp_path):
    damage = "decoded 8 of 300 frames: the file is damaged or truncated"
    summary = _run(tmp_path, FakeSource(frames=8, damage=damage))
    assert summary.end_reason == f"damaged media: {damage}"
    assert summary.exit_code == EXIT_FAULT
    assert _meta(summary.session_folder)["end_reason"] == summary.end_reason


def test_a_full_disk_ends_as_a_session_write_error(tmp_path, monkeypatch):
    real = SessionWriter.write_row

    def write_row(self, row):
        if row.frame == 5:
            raise self._fail(OSError(errno.ENOSPC, "No space left on device"))
        real(self, row)

    monkeypatch.setattr(SessionWriter, "write_row", write_row)
    summary = _run(tmp_path, FakeSource(frames=40))
    assert summary.end_reason.startswith("session write error: Could not write to the session")
    assert "No space left on device" in summary.end_reason
    assert summary.exit_code == EXIT_FAULT


class LiveFakeSource(FakeSource):
    """A 20 fps camera: frames carry no media time, the capture thread stamps them."""

    is_live = True

    def read(self) -> RawFrame | None:
        raw = super().read()
        return None if raw is None else RawFrame(raw.rgb)


def test_a_live_frame_stamped_before_a_tick_is_dropped_not_a_crash(tmp_path, monkeypatch):
    # The capture thread reads the clock, then is descheduled before it hands the frame
    # over; the loop's wait times out meanwhile and ticks the alarm clock past the stamp.
    # That frame used to end the run: "time went backwards" (a ValueError, exit 3).
    from painmon.core.live import capture as capture_module

    stamp = capture_module.CaptureThread._make_frame
    made = {"n": 0}

    def stamp_then_stall(self, raw):
        frame = stamp(self, raw)
        made["n"] += 1
        if made["n"] == 10:
            time.sleep(0.4)  # several of the loop's 0.1 s waits: it ticks meanwhile
        return frame

    monkeypatch.setattr(capture_module.CaptureThread, "_make_frame", stamp_then_stall)
    summary = _run(tmp_path, LiveFakeSource(frames=20, read_s=0.05), spec="camera:0")
    assert summary.exit_code == EXIT_CLEAN, summary.end_reason
    assert summary.frames >= 19  # the late frame may be dropped, nothing else
    assert _meta(summary.session_folder)["status"] == "ended"


def test_max_seconds_wins_over_damage_it_never_reached(tmp_path):
    summary = _run(tmp_path, FakeSource(frames=30, damage="truncated"), max_seconds=1.0)
    assert (summary.end_reason, summary.exit_code) == ("max_seconds (1 s)", EXIT_CLEAN)


def test_a_bug_still_propagates_after_the_session_was_closed_with_its_reason(tmp_path):
    def explode(result):
        if result.frame.index == 3:
            raise KeyError("bug")

    with pytest.raises(KeyError):
        _run(tmp_path, FakeSource(frames=20), on_result=explode)
    (folder,) = (tmp_path / "out" / "anonymous").iterdir()
    meta = _meta(folder)
    assert meta["status"] == "ended" and meta["end_reason"] == "error: KeyError: 'bug'"
    assert meta["frames_written"] == 4


# -- signals: in-process (exact) ---------------------------------------------------------------


class RowCount:
    """Rows handed to any SessionWriter in this test (see the ``count_rows`` fixture)."""

    rows = 0


@pytest.fixture
def count_rows(monkeypatch):
    RowCount.rows = 0
    real = SessionWriter.write_row

    def write_row(self, row):
        real(self, row)
        RowCount.rows += 1

    monkeypatch.setattr(SessionWriter, "write_row", write_row)


def _signal_when_rows(signums: list[int], min_rows: int = 5) -> threading.Thread:
    """Send ``signums`` to this process once ``min_rows`` rows were written."""

    def send() -> None:
        deadline = time.monotonic() + 10
        while RowCount.rows < min_rows and time.monotonic() < deadline:
            time.sleep(0.01)
        for signum in signums:
            os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _skip_if_ignored(*signums: int) -> None:
    # Under nohup or as a background job the signal is ignored, and the monitor keeps it so.
    for signum in signums:
        if signal.getsignal(signum) == signal.SIG_IGN:
            pytest.skip(f"{signal.Signals(signum).name} is ignored in this test process")


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
@pytest.mark.parametrize(
    ("signame", "reason", "code"),
    [("SIGTERM", "terminated", EXIT_TERMINATED), ("SIGHUP", "hangup", EXIT_HANGUP),
     ("SIGINT", "interrupted", EXIT_INTERRUPTED)],
)  # fmt: skip
def test_a_stop_signal_closes_the_session_and_restores_the_handlers(
    tmp_path, count_rows, signame, reason, code
):
    signum = getattr(signal, signame)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    _skip_if_ignored(signum)
    sender = _signal_when_rows([signum])
    summary = _run(tmp_path, FakeSource(frames=10_000, read_s=0.02))
    sender.join(5)
    assert (summary.end_reason, summary.exit_code) == (reason, code)
    meta = _meta(summary.session_folder)
    assert meta["status"] == "ended" and meta["end_reason"] == reason
    assert meta["frames_written"] == len(_rows(summary.session_folder)) == summary.frames >= 5
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_signals_while_closing_cannot_abort_the_close(tmp_path, count_rows, monkeypatch):
    real_close = SessionWriter.close

    def close_under_fire(self, reason="closed"):
        os.kill(os.getpid(), signal.SIGINT)  # the operator presses Ctrl-C again...
        os.kill(os.getpid(), signal.SIGTERM)  # ...and a service manager insists
        time.sleep(0.05)  # the handlers run here, in the middle of the close
        real_close(self, reason)

    monkeypatch.setattr(SessionWriter, "close", close_under_fire)
    _skip_if_ignored(signal.SIGINT, signal.SIGTERM)
    sender = _signal_when_rows([signal.SIGINT])
    summary = _run(tmp_path, FakeSource(frames=10_000, read_s=0.02))
    sender.join(5)
    assert (summary.end_reason, summary.exit_code) == ("interrupted", EXIT_INTERRUPTED)
    assert _meta(summary.session_folder)["status"] == "ended"


def test_stop_signals_are_left_alone_off_the_main_thread_and_when_ignored(monkeypatch):
    installed: list[tuple[int, ...]] = []

    def enter() -> None:
        with StopSignals() as stop:
            installed.append(stop.installed)

    worker = threading.Thread(target=enter)
    worker.start()
    worker.join()
    assert installed == [()]
    if POSIX:
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        try:
            with StopSignals() as stop:
                assert signal.SIGHUP not in stop.installed
                assert signal.SIGTERM in stop.installed
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        finally:
            signal.signal(signal.SIGHUP, previous)


# -- signals: the real command line ------------------------------------------------------------


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """60 s of changing dark blotches at 10 fps (no face, never FROZEN)."""
    path = tmp_path_factory.mktemp("video") / "long.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(600):
        blotches = rng.integers(0, 30, size=(12, 16, 3), dtype=np.uint8)
        writer.write(blotches.repeat(10, axis=0).repeat(10, axis=1))
    writer.release()
    return path


def _rows_on_disk(out: Path) -> int:
    found = list(out.glob("*/*/session.csv"))
    if not found:
        return 0
    return max(0, found[0].read_text(encoding="utf-8").count("\n") - 1)


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
@pytest.mark.parametrize(
    ("signames", "reason", "code"),
    [(["SIGTERM"], "terminated", EXIT_TERMINATED), (["SIGHUP"], "hangup", EXIT_HANGUP),
     (["SIGINT", "SIGINT"], "interrupted", EXIT_INTERRUPTED)],
)  # fmt: skip
def test_painmon_monitor_ends_cleanly_on_a_signal(long_video, tmp_path, signames, reason, code):
    _skip_if_ignored(*(getattr(signal, name) for name in signames))
    out = tmp_path / "sessions"
    command = [sys.executable, "-m", "painmon", "monitor", "--source", str(long_video),
               "--realtime", "--face-model", "haar", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while _rows_on_disk(out) == 0 and process.poll() is None:
            assert time.monotonic() < deadline, "no rows reached the disk within 10 s"
            time.sleep(0.05)
        time.sleep(0.5)  # mid-way between the writer's 1 s syncs, on average
        signalled = datetime.now(UTC)
        for signame in signames:
            process.send_signal(getattr(signal, signame))
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr
    (folder,) = (out / "anonymous").iterdir()
    meta = _meta(folder)
    assert meta["status"] == "ended" and meta["end_reason"] == reason
    rows = _rows(folder)
    assert meta["frames_written"] == len(rows) > 0
    # Every row scored before the signal reached the disk (the writer syncs only once a
    # second, so without a clean close about 0.5-1 s of rows would be missing).
    last_row = datetime.fromisoformat(rows[-1]["utc_time"])
    assert (signalled - last_row).total_seconds() < 0.35
    assert f"ended: {reason}" in stdout
    assert f"exit status {code}" in stdout


# -- exit statuses are documented where the user looks ------------------------------------------


def test_the_monitor_help_lists_every_exit_status():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    epilog = subparsers.choices["monitor"].epilog
    for code in MONITOR_EXIT_CODES:
        assert f"\n  {code} " in epilog, code
    assert MONITOR_EXIT_CODES[EXIT_FAULT].startswith("the run ended on a fault")


# -- credentials never leave the process ------------------------------------------------------


def test_a_stream_password_is_in_no_file_log_or_summary(tmp_path, caplog, capsys, monkeypatch):
    # A library error that quotes the address it was given, password and all.
    source = FakeSource(frames=40, fail_at=5, failure=f"lost {SECRET_URL} (timeout)",
                        name="rtsp://user:***@127.0.0.1:9/x")  # fmt: skip
    monkeypatch.setattr(monitor_module, "open_source", lambda _spec: source)
    monkeypatch.setattr(monitor_module, "create_face_tracker", lambda _m: FaceEverywhere())
    with caplog.at_level(logging.DEBUG, logger="painmon"):
        code = run_monitor_cli(SECRET_URL, "fake.onnx", tmp_path, load_model=lambda _p: FakeModel())
    assert code == EXIT_FAULT
    out = capsys.readouterr()
    assert "ended: source error: lost rtsp://user:***@127.0.0.1:9/x (timeout)" in out.out
    (folder,) = (tmp_path / "anonymous").iterdir()
    meta = _meta(folder)
    assert meta["source"] == "rtsp://user:***@127.0.0.1:9/x"
    assert "secret" not in meta["end_reason"]
    for path in folder.rglob("*"):
        if path.is_file():
            assert b"secret" not in path.read_bytes(), path
    assert "secret" not in out.out + out.err
    assert caplog.records
    for record in caplog.records:
        assert "secret" not in record.getMessage(), record.getMessage()


def test_a_source_that_cannot_open_is_reported_without_its_password(tmp_path):
    def refuse(spec: str) -> FrameSource:
        raise SourceError(f"no file or folder at {spec}: check the path")

    with pytest.raises(SourceError) as caught:
        run_monitor(SECRET_URL, "fake.onnx", tmp_path, progress=False,
                    load_model=lambda _p: FakeModel(), open_source_fn=refuse)  # fmt: skip
    assert str(caught.value) == "no file or folder at rtsp://user:***@127.0.0.1:9/x: check the path"
    assert not any(tmp_path.iterdir())


def test_a_session_that_cannot_be_opened_releases_tracker_and_source(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the session root should be")
    source, tracker = FakeSource(), FaceEverywhere()
    with pytest.raises(OSError):
        _run(tmp_path, source, tracker=tracker)
    assert tracker.closed and source.closed


def test_the_source_opens_before_the_model_and_is_released_when_the_model_is_refused(tmp_path):
    # An absent camera is reported before the model loads (one line, no provider chatter);
    # a model refused after the source opened releases the source and writes nothing.
    from painmon.core.live.scoring import ModelLoadError

    order: list[str] = []
    source = FakeSource(frames=5)

    def open_source(_spec: str) -> FakeSource:
        order.append("source")
        return source

    def refuse_model(_path: object) -> FakeModel:
        order.append("model")
        raise ModelLoadError("fake.onnx is not a painmon export")

    with pytest.raises(ModelLoadError, match="not a painmon export"):
        run_monitor("fake.mp4", "fake.onnx", tmp_path / "out", progress=False,
                    load_model=refuse_model, open_source_fn=open_source)  # fmt: skip
    assert order == ["source", "model"]
    assert source.closed
    assert not (tmp_path / "out").exists()
