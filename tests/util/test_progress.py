"""Progress output: tqdm on a terminal, a few whole lines in a log file."""

from __future__ import annotations

import io

import pytest

from painmon.core.util.progress import LineProgress, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_a_line_per_interval_and_a_summary():
    stream, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=100, desc="face crops", unit="sample", stream=stream,
                       interval_s=10.0, clock=clock)  # fmt: skip
    for _ in range(100):
        clock.t += 0.5  # 50 s in all: a line at 10, 20, 30, 40 and 50 s
        bar.update(1)
    bar.close()
    bar.close()  # a second close writes nothing more
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 6, lines
    assert lines[0].startswith("face crops: 20/100 sample (20 %), after 10 s, 2 sample/s")
    assert "about 40 s left" in lines[0]
    assert lines[-1].startswith("face crops: 100/100 sample (100 %), in 50 s")
    assert "left" not in lines[-1]


def test_postfix_and_unknown_total():
    stream, clock = io.StringIO(), FakeClock()
    with LineProgress(desc="epoch 3/40", unit="batch", stream=stream, interval_s=1.0,
                      clock=clock) as bar:  # fmt: skip
        bar.set_postfix(loss="1.234", acc="0.500")
        clock.t += 2.0
        bar.update(4)
    first = stream.getvalue().splitlines()[0]
    assert first == "epoch 3/40: 4 batch, after 2 s, 2 batch/s, loss=1.234 acc=0.500"


def test_leave_false_writes_no_summary_and_iteration_counts():
    stream, clock = io.StringIO(), FakeClock()
    items = list(LineProgress(range(5), leave=False, stream=stream, clock=clock))
    assert items == [0, 1, 2, 3, 4]
    assert stream.getvalue() == ""
    counted = LineProgress(range(3), stream=stream, clock=clock)
    assert counted.total == 3
    assert list(counted) == [0, 1, 2] and counted.n == 3
    assert stream.getvalue().splitlines() == ["3/3 it (100 %), in 0 s"]


def test_closed_log_does_not_stop_the_job():
    stream, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=2, stream=stream, interval_s=1.0, clock=clock)
    stream.close()
    clock.t += 5
    bar.update(2)  # writing to the closed stream fails quietly
    bar.close()
    assert bar.n == 2 and bar.lines_written == 0


def test_progress_bar_picks_by_stream():
    log_file = io.StringIO()
    assert isinstance(progress_bar(total=3, stream=log_file), LineProgress)
    terminal = TtyStream()
    bar = progress_bar(total=3, desc="synthetic faces", stream=terminal)
    assert not isinstance(bar, LineProgress)
    bar.update(3)
    bar.close()
    assert "synthetic faces" in terminal.getvalue() and "\r" in terminal.getvalue()
    silent = io.StringIO()
    assert list(progress_bar([1, 2], enabled=False, stream=silent)) == [1, 2]
    assert silent.getvalue() == ""


def test_bad_interval_is_refused():
    with pytest.raises(ValueError, match="interval_s"):
        LineProgress(total=1, interval_s=0)
