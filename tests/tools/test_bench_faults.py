"""``painmon bench faults``: the measuring helpers, the MJPEG server, and one short real run."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from painmon.core.live.capture import open_video_capture
from painmon.core.tools import bench_faults as bf
from painmon.core.tools.cli import main
from painmon.core.util.errors import InvalidInputError

T0 = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)
SESSION_HEAD = "utc_time,t_s,frame,pain_level,technical_condition\n"
ALARM_HEAD = "utc_time,t_s,kind,message\n"


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def session_text(*rows: tuple[float, float, int, str, str]) -> str:
    return SESSION_HEAD + "".join(f"{stamp(u)},{t},{f},{p},{c}\n" for u, t, f, p, c in rows)


# -- choosing scenarios -------------------------------------------------------------------------


def test_every_scenario_by_default_and_by_name_or_prefix_in_bench_order():
    assert bf.select_scenarios(None) == list(bf.SCENARIOS)
    assert bf.select_scenarios(["disk-full", "sigterm"]) == ["sigterm", "disk-full"]
    assert bf.select_scenarios(["frozen"]) == ["frozen-mp4v", "frozen-mjpg", "frozen-h264"]
    assert bf.select_scenarios(["kill-9", "kill-9"]) == ["kill-9"]


def test_an_unknown_scenario_is_refused_with_the_names():
    with pytest.raises(InvalidInputError, match="sigterm"):
        bf.select_scenarios(["sigkill"])
    with pytest.raises(InvalidInputError):
        bf.select_scenarios(["froz"])  # a prefix must end at a '-'


# -- measuring ----------------------------------------------------------------------------------


def test_rows_lost_is_the_gap_from_the_last_row_to_the_fault_never_negative():
    assert bf.rows_lost_s(T0 + timedelta(seconds=1.25), T0) == pytest.approx(1.25)
    assert bf.rows_lost_s(T0, T0 + timedelta(seconds=0.03)) == 0.0  # finished after the signal
    assert bf.rows_lost_s(T0, None) is None


def test_rows_of_a_file_being_written_leave_out_the_torn_line():
    text = session_text((0.0, 0.0, 0, "1.5", ""), (0.1, 0.1, 1, "", "NO_FACE"))
    rows = bf.parse_rows(text + stamp(0.2) + ",0.2,2,1.")
    assert [r["frame"] for r in rows] == ["0", "1"]
    assert rows[1]["technical_condition"] == "NO_FACE"
    assert bf.parse_rows("") == [] and bf.parse_rows(SESSION_HEAD[:-3]) == []


def test_read_rows_of_a_missing_file_is_empty(tmp_path):
    assert bf.read_rows(tmp_path / "session.csv") == []


def test_parse_utc_needs_a_timezone_and_ignores_the_formula_guard():
    assert bf.parse_utc("'" + stamp(1)) == T0 + timedelta(seconds=1)
    with pytest.raises(ValueError, match="timezone"):
        bf.parse_utc("2026-11-27T09:00:00")


def test_signal_lost_onset_after_the_fault_from_the_alarm_log():
    alarms = bf.parse_rows(
        ALARM_HEAD
        + f"{stamp(0.5)},0.5,technical_onset,technical alarm SIGNAL_LOST; pain output unknown\n"
        + f"{stamp(3.0)},3.0,technical_clear,technical alarm SIGNAL_LOST cleared\n"
        + f"{stamp(9.0)},9.0,technical_onset,technical alarm NO_FACE: no face for 5 s\n"
        + f"{stamp(12.1)},12.1,technical_onset,technical alarm SIGNAL_LOST; pain output unknown\n"
    )
    assert bf.condition_onset_utc(alarms, "SIGNAL_LOST") == T0 + timedelta(seconds=0.5)
    after = T0 + timedelta(seconds=10)
    assert bf.condition_onset_utc(alarms, "SIGNAL_LOST", after) == T0 + timedelta(seconds=12.1)
    assert bf.condition_onset_utc(alarms, "FROZEN") is None
    assert bf.condition_onset_utc(alarms, "NO_FACE", after) is None


def test_recovery_is_the_first_scored_row_after_the_restart():
    rows = bf.parse_rows(
        session_text(
            (1.0, 1.0, 30, "0.4", ""),
            (5.0, 5.0, 150, "", "NO_FACE"),
            (5.2, 5.2, 156, "0.5", "LOW_QUALITY"),
            (5.4, 5.4, 162, "0.6", ""),
        )
    )
    restart = T0 + timedelta(seconds=4)
    assert bf.first_row_at_or_after(rows, restart)["frame"] == "150"
    assert bf.first_row_at_or_after(rows, restart, bf.is_scored)["frame"] == "162"
    assert bf.first_row_at_or_after(rows, T0 + timedelta(seconds=6)) is None


def test_media_time_to_frozen_counts_from_the_first_row():
    rows = bf.parse_rows(
        session_text(
            (0, 10.0, 0, "", "NO_FACE"), (0, 11.0, 30, "", ""), (0, 12.05, 62, "", "FROZEN")
        )
    )
    assert bf.media_time_to_condition_s(rows, "FROZEN") == pytest.approx(2.05)
    assert bf.media_time_to_condition_s(rows, "SIGNAL_LOST") is None
    assert bf.media_time_to_condition_s([], "FROZEN") is None


def test_frames_contiguous_from_zero():
    assert bf.frames_contiguous([{"frame": "0"}, {"frame": "1"}, {"frame": 2}])
    assert not bf.frames_contiguous([{"frame": "0"}, {"frame": "2"}])
    assert not bf.frames_contiguous([{"frame": "1"}])
    assert bf.frames_contiguous([])


def test_summary_line_of_the_monitor_output():
    out = "t 1.0 s ...\nsession folder: /x\nended: session write error: Could not\nframes: 80, x\n"
    assert bf.summary_line(out, "ended") == "session write error: Could not"
    assert bf.summary_line(out, "frames") == "80, x"
    assert bf.summary_line(out, "alarms raised") is None


# -- results ------------------------------------------------------------------------------------


def test_a_scenario_passes_only_when_every_check_does():
    ok = bf.Check("rows lost", 0.04, "<= 0.1 s", True)
    late = bf.Check("time to SIGNAL_LOST", 2.7, "<= 2.5 s", False)
    passed = bf.ScenarioResult("sigterm", "exit 143", (ok,))
    failed = bf.ScenarioResult("half-open", "slow", (ok, late), {"signal_lost_s": 2.7})
    skipped = bf.ScenarioResult("frozen-h264", "", skipped="no avc1 encoder")
    assert [r.verdict for r in (passed, failed, skipped)] == ["PASS", "FAIL", "SKIP"]
    assert passed.format().startswith("PASS  sigterm")
    assert failed.format().endswith("[failed: time to SIGNAL_LOST]")
    assert "no avc1 encoder" in skipped.format()
    record = failed.record()
    assert record["verdict"] == "FAIL" and record["details"] == {"signal_lost_s": 2.7}
    assert record["checks"][1] == {
        "name": "time to SIGNAL_LOST",
        "measured": 2.7,
        "target": "<= 2.5 s",
        "ok": False,
    }


def test_results_are_validated():
    with pytest.raises(ValueError, match="unknown scenario"):
        bf.ScenarioResult("sigkill", "x", (bf.Check("a", 1, "b", True),))
    with pytest.raises(ValueError, match="at least one check"):
        bf.ScenarioResult("sigterm", "x")
    with pytest.raises(ValueError, match="name and a target"):
        bf.Check("", 1, "", True)


def test_at_most_fails_a_missing_measurement():
    assert bf._at_most("x", 0.5, 1.0).ok
    assert not bf._at_most("x", 1.5, 1.0).ok
    assert not bf._at_most("x", None, 1.0).ok


# -- the MJPEG server and the small filesystem ----------------------------------------------------


@pytest.fixture
def jpeg_frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        image = np.full((48, 64, 3), 60 * index, np.uint8)
        (folder / f"{index:05d}.jpg").write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
    return folder


def test_mjpeg_server_streams_to_opencv_and_a_fresh_one_takes_a_stalled_port(jpeg_frames):
    with bf.MjpegServer(jpeg_frames, fps=30.0) as server:
        capture = open_video_capture(server.url, open_timeout_s=5.0, read_timeout_s=1.0)
        try:
            assert capture.isOpened()
            assert all(capture.read()[0] for _ in range(3))
            server.stall()  # the connection stays open and silent: the read times out
            reads = [capture.read()[0] for _ in range(40)]
            assert not reads[-1]
        finally:
            capture.release()
        with bf.MjpegServer(jpeg_frames, fps=30.0, port=server.port) as fresh:
            assert fresh.port == server.port
            capture = open_video_capture(fresh.url, open_timeout_s=5.0, read_timeout_s=1.0)
            try:
                ok, image = capture.read()
                assert ok and image.shape == (48, 64, 3)
            finally:
                capture.release()


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None,
    reason="mounting a tmpfs needs root",
)
def test_small_filesystem_leaves_the_room_asked_for_and_is_unmounted(tmp_path):
    mount_point = tmp_path / "fs"
    with bf.small_filesystem(mount_point, 24 * 1024) as how:
        if how is None:
            pytest.skip("mount refused in this container")
        stats = os.statvfs(mount_point)
        assert 16 * 1024 <= stats.f_bavail * stats.f_frsize <= 32 * 1024
        big = mount_point / "big"
        with pytest.raises(OSError, match="No space"), big.open("wb") as handle:
            handle.write(b"x" * 64 * 1024)
            handle.flush()
    mounts = subprocess.run(["mount"], capture_output=True, text=True, check=True).stdout
    assert str(mount_point) not in mounts


def test_shared_media_dir_follows_painmon_shared(monkeypatch, tmp_path):
    monkeypatch.setenv("PAINMON_SHARED", str(tmp_path))
    assert bf.shared_media_dir() == tmp_path / "media"


# -- the command line ---------------------------------------------------------------------------


def test_cli_refuses_to_overwrite_a_json_and_unknown_names_before_any_run(tmp_path, capsys):
    existing = tmp_path / "faults.json"
    existing.write_text("{}")
    assert main(["bench", "faults", "--only", "sigterm", "--json", str(existing)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert existing.read_text() == "{}"
    assert main(["bench", "faults", "--only", "no-such-thing"]) == 2
    assert "no fault scenario 'no-such-thing'" in capsys.readouterr().err


# -- one short real run -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_silent_start_and_frozen_mp4v_pass_against_real_monitor_processes(tmp_path, capsys):
    out = tmp_path / "faults.json"
    names = ["sigterm", "silent-start", "frozen-mp4v"]
    code = main(["bench", "faults", "--only", *names, "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = [line for line in printed.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]
    assert [line.split()[:2] for line in lines] == [["PASS", name] for name in names]
    import json

    record = json.loads(out.read_text())
    assert record["passed"] and record["counts"] == {"PASS": 3, "FAIL": 0, "SKIP": 0}
    sigterm, silent, frozen = record["scenarios"]
    assert sigterm["details"]["exit"] == 143
    assert sigterm["details"]["rows_lost_s"] <= bf.STOP_ROWS_LOST_MAX_S
    assert silent["details"]["exit"] == 2
    assert silent["details"]["refused_s"] <= bf.SILENT_START_REFUSED_MAX_S
    assert "could not be opened" in silent["details"]["error"]
    assert frozen["details"]["frozen_media_s"] <= bf.FROZEN_MAX_MEDIA_S


def test_h264_still_is_encoded_through_pyav_where_opencv_cannot(tmp_path):
    """OpenCV's wheels have no H.264 encoder; the bench's frozen-h264 still then comes from
    PyAV's libx264 (a dev dependency): a real H.264 file, every frame the same picture."""
    import cv2
    import numpy as np

    ws = bf.Workspace(tmp_path, tmp_path / "unused.onnx", None)
    video = ws.still_video("avc1", ".mp4")
    assert video is not None and video.suffix == ".mp4"
    capture = cv2.VideoCapture(str(video))
    try:
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
        frames = []
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frames.append(image.astype(np.int16))
    finally:
        capture.release()
    assert fourcc.lower() in ("avc1", "h264")
    assert len(frames) == round(bf.STILL_SECONDS * bf.PATIENT_FPS)
    # One still through a lossy codec: every decoded frame within a few grey levels.
    assert max(int(np.abs(f - frames[0]).max()) for f in frames) <= 8
