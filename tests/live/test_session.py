"""Session files: exact layout, CSV injection guard, flush cadence, kill -9, full disk, recovery."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fakes import FullDiskFile

from painmon.core.live.alarms import AlarmEvent, AlarmSettings
from painmon.core.live.session import (
    ALARM_COLUMNS,
    SESSION_COLUMNS,
    SessionRow,
    SessionWriteError,
    SessionWriter,
    make_session_folder,
    read_csv_checked,
    read_session_csv,
    recover_session,
    row_from_record,
    validate_pseudonym,
    writer_alive,
)

SHA = "ab" * 32
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
PROBS = (0.05, 0.1, 0.2, 0.4, 0.25)


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def utc(offset_s: float = 0.0) -> str:
    return (T0 + timedelta(seconds=offset_s)).isoformat()


def known_row(frame: int, t_s: float | None = None, **changes) -> SessionRow:
    t_s = frame / 10 if t_s is None else t_s
    fields = dict(
        utc_time=utc(t_s),
        t_s=t_s,
        frame=frame,
        face_found=True,
        quality_ok=True,
        probabilities=PROBS,
        pain_class=3,
        pain_level=2.7,
        pain_level_smoothed=2.5,
        confidence=0.4,
        au_pspi=5.0,
        alarm_priority="medium",
    )
    fields.update(changes)
    return SessionRow(**fields)


def unknown_row(frame: int, condition: str | None = "NO_FACE") -> SessionRow:
    return SessionRow(
        utc_time=utc(frame / 10),
        t_s=frame / 10,
        frame=frame,
        face_found=False,
        quality_ok=False,
        technical_condition=condition,
    )


def event(message: str = "MEDIUM pain alarm raised", **changes) -> AlarmEvent:
    fields = dict(
        utc_time=utc(),
        t_s=12.5,
        kind="onset",
        priority="medium",
        value=2.7,
        threshold=2.5,
        model_sha256=SHA,
        message=message,
    )
    fields.update(changes)
    return AlarmEvent(**fields)


def open_writer(folder: Path, clock: FakeClock | None = None, **kwargs) -> SessionWriter:
    args = dict(
        pseudonym="P-0042",
        model_id="dacnn",
        model_sha256=SHA,
        settings=AlarmSettings(model_sha256=SHA),
        source="webcam 0 (640x480 @ 30 fps)",
        face_detector="mediapipe",
        clock=clock or FakeClock(),
        utc_clock=lambda: T0,
    )
    args.update(kwargs)
    return SessionWriter(folder, **args)


def raw_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# -- layout ----------------------------------------------------------------------------------


def test_headers_and_metadata_are_exact(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        running = json.loads((folder / "session.json").read_text())
        writer.write_row(known_row(0))
    assert raw_lines(folder / "session.csv")[0] == (
        "utc_time,t_s,frame,face_found,quality_ok,p0,p1,p2,p3,p4,pain_class,pain_level,"
        "pain_level_smoothed,confidence,au_pspi,alarm_priority,technical_condition,domain_score"
    )
    assert raw_lines(folder / "alarms.csv")[0] == (
        "utc_time,t_s,kind,priority,value,threshold,model_sha256,message"
    )
    assert running["status"] == "running"
    assert running["end_utc"] is None
    from painmon import __version__

    meta = json.loads((folder / "session.json").read_text())
    assert meta["status"] == "ended"
    assert meta["end_utc"] == T0.isoformat()
    assert meta["frames_written"] == 1
    assert meta["pseudonym"] == "P-0042"
    assert meta["model_id"] == "dacnn"
    assert meta["model_sha256"] == SHA
    assert meta["software_version"] == __version__
    assert meta["face_detector"] == "mediapipe"
    assert meta["thresholds"]["medium_threshold"] == 2.5
    assert set(meta["thresholds"]) == set(AlarmSettings.__dataclass_fields__)
    assert sorted(p.name for p in folder.iterdir()) == ["alarms.csv", "session.csv", "session.json"]


def test_known_row_is_compact_and_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    row = known_row(7, t_s=1.23456, probabilities=(0.123456789, 0.2, 0.2, 0.2, 0.276543211))
    with open_writer(folder) as writer:
        writer.write_row(row)
    cells = raw_lines(folder / "session.csv")[1].split(",")
    assert cells[1] == "1.235"  # t_s in milliseconds
    assert cells[2:5] == ["7", "1", "1"]
    assert cells[5] == "0.123457"  # 6 significant digits
    assert datetime.fromisoformat(cells[0]).tzinfo is not None
    [record] = read_session_csv(folder / "session.csv")
    assert record["frame"] == 7 and record["pain_class"] == 3
    assert record["face_found"] is True
    assert record["p0"] == pytest.approx(0.123457)
    rebuilt = row_from_record(record)
    assert rebuilt.pain_level == row.pain_level and rebuilt.alarm_priority == "medium"


@pytest.mark.parametrize("condition", ["NO_FACE", "SIGNAL_LOST", "FROZEN", None])
def test_unknown_output_cells_are_empty_not_zero(tmp_path: Path, condition: str | None) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        writer.write_row(unknown_row(3, condition))
    cells = raw_lines(folder / "session.csv")[1].split(",")
    by_name = dict(zip(SESSION_COLUMNS, cells, strict=True))
    for name in ("p0", "p1", "p2", "p3", "p4", "pain_class", "pain_level"):
        assert by_name[name] == "", name
    for name in ("pain_level_smoothed", "confidence", "au_pspi"):
        assert by_name[name] == "", name
    assert by_name["face_found"] == "0"
    assert by_name["technical_condition"] == (condition or "")
    [record] = read_session_csv(folder / "session.csv")
    assert record["p0"] is None and record["pain_level"] is None


def test_low_quality_row_with_face_is_unknown_too() -> None:
    row = SessionRow(utc(), 0.0, 0, face_found=True, quality_ok=False)
    assert not row.output_known
    assert row.cells()[5:15] == [""] * 10


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"probabilities": (0.5, 0.5, 0.5, 0.0, 0.0)}, "sum to 1"),
        ({"probabilities": (0.5, 0.5)}, "need 5"),
        ({"probabilities": (1.5, -0.5, 0.0, 0.0, 0.0)}, "0..1"),
        ({"pain_class": 5}, "pain_class"),
        ({"pain_level": 4.5}, "pain_level"),
        ({"alarm_priority": "technical"}, "alarm_priority"),
        ({"technical_condition": "SMOKE"}, "technical_condition"),
        ({"technical_condition": "FROZEN"}, "unknown outputs must be None"),
        ({"quality_ok": False}, "unknown outputs must be None"),
        ({"face_found": False}, "quality_ok"),
        ({"utc_time": "2024-05-01T08:00:00"}, "timezone"),
        ({"t_s": float("nan")}, "finite"),
        ({"frame": -1}, "frame"),
        ({"probabilities": None}, "need the frame's probabilities"),
    ],
)
def test_session_row_validation(changes: dict, fragment: str) -> None:
    base = known_row(0)
    with pytest.raises(ValueError, match=fragment):
        dataclasses.replace(base, **changes)


# -- CSV injection ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_injection_in_alarm_messages_is_quoted(tmp_path: Path, prefix: str) -> None:
    folder = tmp_path / "s"
    payload = prefix + 'HYPERLINK("http://x","click")'
    with open_writer(folder) as writer:
        writer.write_events(
            [
                event(payload),
                event(
                    "technical alarm FROZEN",
                    kind="technical_onset",
                    priority="technical",
                    value=None,
                    threshold=None,
                ),
            ]
        )
    [first, second] = read_session_csv(folder / "alarms.csv")
    # A carriage return becomes a space (one line per row): nothing left to run.
    want = " " if prefix == "\r" else "'" + prefix
    assert first["message"].startswith(want)
    assert first["message"].endswith('HYPERLINK("http://x","click")')
    assert second["message"] == "technical alarm FROZEN"
    assert second["value"] is None


def test_source_description_is_guarded_in_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder, source="=cmd|' /C calc'!A0", face_detector="@haar"):
        pass
    meta = json.loads((folder / "session.json").read_text())
    assert meta["source"] == "'=cmd|' /C calc'!A0"
    assert meta["face_detector"] == "'@haar"


def test_negative_numbers_are_not_quoted(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        writer.write_row(known_row(0, t_s=-0.5))
        writer.write_events([event(t_s=-2.25, value=-1.0, message="-5 is text")])
    row_cells = raw_lines(folder / "session.csv")[1].split(",")
    assert row_cells[1] == "-0.500"
    alarm_cells = raw_lines(folder / "alarms.csv")[1].split(",")
    assert alarm_cells[1] == "-2.250"
    assert alarm_cells[4] == "-1"
    assert alarm_cells[7] == "'-5 is text"
    [record] = read_session_csv(folder / "alarms.csv")
    assert record["value"] == -1.0 and record["t_s"] == -2.25


def test_line_breaks_inside_text_never_split_a_record(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        writer.write_events([event("line one\nline two\r\nthree")])
    assert len(raw_lines(folder / "alarms.csv")) == 2
    [record] = read_session_csv(folder / "alarms.csv")
    assert record["message"] == "line one line two three"


# -- flushing --------------------------------------------------------------------------------


def test_rows_reach_disk_once_a_second_with_fake_clock(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    clock = FakeClock()
    csv_path = folder / "session.csv"
    on_disk: list[int] = []
    with open_writer(folder, clock) as writer:
        for frame, step_s in enumerate([0.0, 0.3, 0.3, 0.3, 0.2, 0.5, 0.4, 0.1]):
            clock.now_s += step_s
            writer.write_row(known_row(frame))
            on_disk.append(len(read_session_csv(csv_path)))
        # Frames 0-2 wait in the buffer; frame 3 at +0.9 s still waits; frame 4 at +1.1 s
        # syncs 5 rows; frame 7 at +2.1 s (1.0 s after the last sync) syncs 8.
        assert on_disk == [0, 0, 0, 0, 5, 5, 5, 8]
        clock.now_s += 0.2
        writer.write_row(known_row(8))
        assert len(read_session_csv(csv_path)) == 8
        writer.write_events([event()])  # every alarm event syncs both files at once
        assert len(read_session_csv(csv_path)) == 9
        assert len(read_session_csv(folder / "alarms.csv")) == 1
        writer.write_row(known_row(9))
        writer.flush()
        assert len(read_session_csv(csv_path)) == 10
    assert len(read_session_csv(csv_path)) == 10


def test_flush_interval_over_a_second_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most a second"):
        open_writer(tmp_path / "s", flush_interval_s=2.0)


KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from painmon.core.live.alarms import AlarmSettings
    from painmon.core.live.session import SessionRow, SessionWriter

    # A 1 MiB buffer: rows reach the disk only through the writer's own timed flushes.
    def opener(path: Path):
        return path.open("x", encoding="utf-8", newline="", buffering=1 << 20)

    writer = SessionWriter(sys.argv[1], "P-1", "dacnn", "ab" * 32, AlarmSettings(),
                           "video file", "haar", opener=opener)
    start_s = time.monotonic()
    frame = 0
    while True:
        writer.write_row(SessionRow(datetime.now(UTC).isoformat(), time.monotonic() - start_s,
                                    frame, True, True, (0.2,) * 5, 2, 2.0, 2.0, 0.2, 3.0))
        if frame == 0:
            print("ready", flush=True)
        frame += 1
        time.sleep(0.003)
    """
)


@pytest.fixture(scope="module")
def killed_session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    """A session whose writer process got SIGKILLed after about 1.5 s of recording."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("SIGKILL is POSIX only")
    folder = tmp_path_factory.mktemp("killed") / "session"
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = child.stdout.readline()
        assert ready.strip() == "ready", child.stderr.read()
        time.sleep(1.5)
        killed_at = datetime.now(UTC)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=5)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return folder, killed_at


def test_kill_9_loses_at_most_the_last_second(killed_session: tuple[Path, datetime]) -> None:
    folder, killed_at = killed_session
    records = read_session_csv(folder / "session.csv")
    assert len(records) > 10
    for record in records:
        row_from_record(record)  # every complete row is valid
    assert [r["frame"] for r in records] == list(range(len(records)))
    last_utc = datetime.fromisoformat(records[-1]["utc_time"])
    lost_s = (killed_at - last_utc).total_seconds()
    assert 0.0 <= lost_s <= 1.35, f"lost {lost_s:.3f} s of rows"


def test_recover_killed_session_reports_unclean_end(killed_session: tuple[Path, datetime]) -> None:
    folder, _ = killed_session
    report = recover_session(folder)
    assert report["status"] == "running"
    assert report["clean_end"] is False
    assert report["rows_intact"] == len(read_session_csv(folder / "session.csv"))
    assert report["last_t_s"] > 0.3
    assert any("did not end cleanly" in p for p in report["problems"])
    if os.name == "posix":  # the writer's flock died with it: not "running" forever
        assert report["state"] == "crashed"


def test_torn_last_line_is_dropped_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        for frame in range(5):
            writer.write_row(known_row(frame))
    csv_path = folder / "session.csv"
    text = csv_path.read_text()
    # Cut the last row in the middle of a cell, as a partial write leaves it.
    csv_path.write_text(text[: len(text) - 25])
    result = read_csv_checked(csv_path)
    assert result.torn_last_line and result.dropped_rows == 1
    assert [r["frame"] for r in result.rows] == [0, 1, 2, 3]
    assert len(read_session_csv(csv_path)) == 4
    report = recover_session(folder)
    assert report["rows_intact"] == 4 and report["torn_last_line"]
    assert report["last_t_s"] == pytest.approx(0.3)
    assert report["clean_end"] is False  # json says 5 frames; one was lost


def test_recover_clean_session(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        writer.write_row(known_row(0))
        writer.write_row(unknown_row(1))
        writer.write_events([event()])
        writer.write_row(known_row(2))
    report = recover_session(folder)
    assert report["clean_end"] is True
    assert report["status"] == "ended"
    assert report["rows_intact"] == 3 and report["rows_dropped"] == 0
    assert report["last_t_s"] == pytest.approx(0.2)
    assert report["alarm_events"] == 1
    assert report["problems"] == []


# -- errors ----------------------------------------------------------------------------------


def test_full_disk_stops_recording_with_actionable_error(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    clock = FakeClock()
    files: dict[str, FullDiskFile] = {}

    def opener(path: Path) -> FullDiskFile:
        files[path.name] = FullDiskFile(path)
        return files[path.name]

    writer = open_writer(folder, clock, opener=opener)
    for frame in range(6):
        clock.now_s += 0.25
        writer.write_row(known_row(frame))  # frame 3 at +1.0 s syncs frames 0-3
    files["session.csv"].full = True
    clock.now_s += 1.0
    with pytest.raises(SessionWriteError) as caught:
        writer.write_row(known_row(6))
    message = str(caught.value)
    assert str(folder) in message
    assert "Recording has stopped" in message
    assert "Free disk space or choose another session folder" in message
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(SessionWriteError):
        writer.write_row(known_row(7))
    with pytest.raises(SessionWriteError):
        writer.write_events([event()])
    writer.close()  # must not raise a second time
    records = read_session_csv(folder / "session.csv")
    assert [r["frame"] for r in records][:4] == [0, 1, 2, 3]
    for record in records:
        row_from_record(record)
    report = recover_session(folder)
    assert report["clean_end"] is False and report["rows_intact"] >= 4


@pytest.mark.parametrize(
    ("pseudonym", "fragment"),
    [
        ("", "is empty"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("p..1", "'..'"),
        ("bed\n7", "control character"),
        ("x" * 65, "65 characters"),
        ("=cmd|' /C calc'!A0", "path separator"),
        ("=cmd", "not allowed"),
        ("-rf", "not allowed"),
        ("bed 7", "not allowed"),
        ("con", "Windows"),
    ],
)
def test_bad_pseudonyms_are_refused(pseudonym: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        validate_pseudonym(pseudonym)
    assert "letters, digits" in str(caught.value)  # says what is allowed


@pytest.mark.parametrize("pseudonym", ["P-0042", "bed7_left", "x" * 64, "Zoë.2"])
def test_good_pseudonyms_pass(pseudonym: str) -> None:
    assert validate_pseudonym(pseudonym) == pseudonym


def test_writer_refuses_bad_pseudonym_before_touching_disk(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pseudonym"):
        open_writer(tmp_path / "s", pseudonym="=cmd|' /C calc'!A0")
    assert not (tmp_path / "s").exists()


def test_make_session_folder_layout_and_same_second(tmp_path: Path) -> None:
    first = make_session_folder(tmp_path, "P-0042", T0)
    second = make_session_folder(tmp_path, "P-0042", T0)
    assert first == tmp_path / "P-0042" / "20240501-080000Z"
    assert second == tmp_path / "P-0042" / "20240501-080000Z-2"
    assert first.is_dir() and not any(first.iterdir())
    open_writer(first).close()  # an empty folder is accepted
    with pytest.raises(ValueError, match="pseudonym"):
        make_session_folder(tmp_path, "../up", T0)
    with pytest.raises(ValueError, match="timezone"):
        make_session_folder(tmp_path, "P-0042", datetime(2024, 5, 1))


def test_earlier_session_is_never_overwritten(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        writer.write_row(known_row(0))
    before = (folder / "session.csv").read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        open_writer(folder)
    assert (folder / "session.csv").read_bytes() == before
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        open_writer(a_file)


def test_settings_update_and_model_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        writer.update_settings(AlarmSettings(medium_threshold=2.0, model_sha256=SHA))
        assert (
            json.loads((folder / "session.json").read_text())["thresholds"]["medium_threshold"]
            == 2.0
        )
        with pytest.raises(ValueError, match="another model"):
            writer.update_settings(AlarmSettings(model_sha256="cd" * 32))
    with pytest.raises(ValueError, match="model_sha256"):
        open_writer(tmp_path / "t", model_sha256="not-a-hash")


def test_exception_inside_session_still_closes_files(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with pytest.raises(KeyError), open_writer(folder) as writer:
        writer.write_row(known_row(0))
        raise KeyError("engine failed")
    meta = json.loads((folder / "session.json").read_text())
    assert meta["status"] == "ended" and meta["end_reason"] == "error: KeyError"
    with pytest.raises(RuntimeError, match="already closed"):
        writer.write_row(known_row(1))


def test_media_only_when_asked(tmp_path: Path) -> None:
    import cv2

    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0] = 200  # red, to catch an RGB/BGR swap
    with open_writer(tmp_path / "off") as writer, pytest.raises(RuntimeError, match="no images"):
        writer.write_frame_jpeg(0, rgb)
    assert not (tmp_path / "off" / "media").exists()
    with open_writer(tmp_path / "on", store_media=True) as writer:
        path = writer.write_frame_jpeg(12, rgb)
    assert path == tmp_path / "on" / "media" / "frame_00000012.jpg"
    bgr = cv2.imread(str(path))
    assert bgr.shape == (16, 24, 3)
    assert bgr[..., 2].mean() > 150 and bgr[..., 0].mean() < 50
    assert json.loads((tmp_path / "on" / "session.json").read_text())["store_media"] is True


def test_alarm_columns_follow_alarm_event() -> None:
    assert tuple(AlarmEvent.__dataclass_fields__) == ALARM_COLUMNS


def test_version_1_session_files_are_still_read(tmp_path: Path) -> None:
    """Files written before the domain gate lack the domain_score column; they still load."""
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        writer.write_row(known_row(0))
    path = folder / "session.csv"
    lines = raw_lines(path)
    old = [line.rsplit(",", 1)[0] for line in lines if line]
    path.write_text("\n".join(old) + "\n")
    rows = read_session_csv(path)
    assert len(rows) == 1 and "domain_score" not in rows[0]
    assert row_from_record(rows[0]).domain_score is None


def test_out_of_domain_rows_carry_the_au_estimate_but_no_pain_output() -> None:
    row = SessionRow(
        utc_time=T0.isoformat(),
        t_s=2.0,
        frame=60,
        face_found=True,
        quality_ok=True,
        au_pspi=0.4,
        technical_condition="OUT_OF_DOMAIN",
        domain_score=4321.0,
    )
    assert not row.output_known and row.cells()[-1] == "4321"
    with pytest.raises(ValueError, match="unknown outputs must be None"):
        dataclasses.replace(row, pain_level=1.0)
    with pytest.raises(ValueError, match="au_pspi"):
        dataclasses.replace(row, technical_condition="NO_FACE")
    with pytest.raises(ValueError, match="domain_score"):
        dataclasses.replace(row, domain_score=-1.0)


# -- privacy ---------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    """A umask that leaves new files readable by everyone (the common default)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_session_folders_and_files_are_private_whatever_the_umask(
    tmp_path: Path, umask_022: None
) -> None:
    root = tmp_path / "sessions"  # made by the session, like the folders below it
    folder = make_session_folder(root, "P-0042", T0)
    assert _mode(root) == _mode(root / "P-0042") == _mode(folder) == 0o700
    writer = open_writer(folder, store_media=True)
    writer.write_row(known_row(0))
    writer.write_frame_jpeg(0, np.zeros((8, 8, 3), np.uint8))
    writer.update_settings(AlarmSettings(model_sha256=SHA))  # rewrites session.json
    writer.close("end of media")
    assert _mode(folder / "media") == 0o700
    for name in ("session.csv", "alarms.csv", "session.json", "media/frame_00000000.jpg"):
        assert _mode(folder / name) == 0o600, name
    # A folder the caller made for the session becomes private too.
    given = tmp_path / "given"
    given.mkdir(mode=0o755)
    open_writer(given).close()
    assert _mode(given) == 0o700
    assert {_mode(p) for p in given.iterdir()} == {0o600}
    # An existing root is the user's own choice and is left as it was.
    shared_root = tmp_path / "shared"
    shared_root.mkdir(mode=0o755)
    make_session_folder(shared_root, "P-7", T0)
    assert _mode(shared_root) == 0o755 and _mode(shared_root / "P-7") == 0o700


def test_a_stream_password_is_not_recorded(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "s", source="rtsp://nurse:s3cret@10.0.0.5:554/live?token=abc")
    writer.close("stream rtsp://nurse:s3cret@10.0.0.5:554/live lost")
    meta = json.loads((tmp_path / "s" / "session.json").read_text(encoding="utf-8"))
    assert meta["source"] == "rtsp://nurse:***@10.0.0.5:554/live?token=***"
    for path in (tmp_path / "s").iterdir():
        assert b"s3cret" not in path.read_bytes(), path.name


@pytest.mark.skipif(os.name != "posix", reason="flock is POSIX only")
def test_recover_tells_a_session_being_recorded_from_an_ended_one(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    writer = open_writer(folder)
    writer.write_row(known_row(0))
    writer.flush()
    assert writer_alive(folder) is True
    report = recover_session(folder)
    assert (report["status"], report["state"], report["clean_end"]) == (
        "running",
        "recording",
        False,
    )
    assert not any("did not end cleanly" in p for p in report["problems"])
    writer.close("end of media")
    assert writer_alive(folder) is False
    assert recover_session(folder)["state"] == "ended"
    assert writer_alive(tmp_path / "nothing here") is None


# -- session truth: alarms active when the session starts, episodes in session.json -------------


class _NoFaceTracker:
    name = "no-face stub"

    def observe(self, rgb: np.ndarray, t_s: float):
        from painmon.core.live.face import FaceObservation

        return FaceObservation(t_s, False, None, 0, self.name)

    def close(self) -> None:
        pass


class _UnusedModel:
    input_size = (3, 64, 64)
    metadata: dict = {}  # noqa: RUF012 - read only

    def predict(self, crops_uint8: np.ndarray):
        raise AssertionError("no face, so nothing to score")


def _engine():
    from painmon.core.live.engine import Engine

    return Engine(_UnusedModel(), _NoFaceTracker(), AlarmSettings(model_sha256=SHA))


def test_a_session_started_mid_alarm_logs_the_active_alarm_first(tmp_path: Path) -> None:
    engine = _engine()
    for i in range(21):  # 3.8 for 10 s: HIGH raised at t=10, no session yet
        engine.alarms.update(i * 0.5, 3.8)
    onset = engine.alarms.events[-1]
    assert onset.kind == "onset" and onset.priority == "high"
    writer = open_writer(tmp_path / "s")
    engine.session_writer = writer
    engine.session_writer = writer  # re-attaching the same writer logs nothing more
    writer.close()
    rows = read_session_csv(tmp_path / "s" / "alarms.csv")
    assert [(r["kind"], r["priority"]) for r in rows] == [("active_at_session_start", "high")]
    assert f"raised at {onset.utc_time} (t 10.00 s)" in rows[0]["message"]
    meta = json.loads((tmp_path / "s" / "session.json").read_text())
    assert meta["pain_alarm_episodes"] == 1 and meta["technical_alarms"] == 0


def test_a_session_started_during_a_technical_alarm_logs_it(tmp_path: Path) -> None:
    engine = _engine()
    for i in range(14):  # no face for 6.5 s: NO_FACE raised after 5 s
        engine.alarms.update(i * 0.5, None, "NO_FACE")
    with open_writer(tmp_path / "s") as writer:
        engine.session_writer = writer
        engine.session_writer = None
    rows = read_session_csv(tmp_path / "s" / "alarms.csv")
    assert [(r["kind"], r["priority"]) for r in rows] == [("active_at_session_start", "technical")]
    assert "NO_FACE" in rows[0]["message"]


def test_a_session_without_active_alarms_starts_with_an_empty_log(tmp_path: Path) -> None:
    engine = _engine()
    engine.alarms.update(0.0, 1.0)
    with open_writer(tmp_path / "s") as writer:
        engine.session_writer = writer
    assert read_session_csv(tmp_path / "s" / "alarms.csv") == []


def test_session_json_counts_episodes_not_escalations(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_writer(folder) as writer:
        writer.write_events([event(kind="onset", priority="medium")])
        writer.write_events([event("HIGH escalation", kind="escalation", priority="high")])
        writer.write_events([event("cleared", kind="clear", priority="high")])
        writer.write_events([event("again", kind="onset", priority="medium")])
        writer.write_events([event("no face", kind="technical_onset", priority="technical")])
        running = json.loads((folder / "session.json").read_text())
    meta = json.loads((folder / "session.json").read_text())
    assert meta["alarm_events_written"] == 5
    assert meta["pain_alarm_episodes"] == 2
    assert meta["pain_alarm_escalations"] == 1
    assert meta["technical_alarms"] == 1
    assert running["status"] == "running"
