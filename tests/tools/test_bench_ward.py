"""``painmon bench ward``: its arithmetic, its CLI refusals, and a short real run."""

from __future__ import annotations

import json
import shutil

import pytest

from painmon.core.tools import bench_ward as bw
from painmon.core.tools.cli import main


def test_percentiles_in_ms():
    assert bw._percentiles_ms([]) == {"p50": None, "p99": None, "max": None, "n": 0}
    stats = bw._percentiles_ms([i * 1_000_000 for i in range(1, 101)])  # 1..100 ms
    assert stats["p50"] == pytest.approx(50.5) and stats["max"] == 100.0 and stats["n"] == 100
    assert 99.0 <= stats["p99"] <= 100.0


def test_beds_are_spread_over_processes():
    groups = bw._split([f"b{i}" for i in range(10)], 4)
    assert [len(g) for g in groups] == [3, 3, 2, 2]
    assert sorted(x for g in groups for x in g) == sorted(f"b{i}" for i in range(10))
    assert bw._split(["a", "b"], 5) == [["a"], ["b"]]


def test_targets():
    assert bw._met(99.95, ">=", 99.9) and not bw._met(99.8, ">=", 99.9)
    assert bw._met(0, "<=", 0) and not bw._met(1, "<=", 0) and not bw._met(None, "<=", 1)


def test_synthetic_bed_messages_are_valid():
    import random

    sim = bw._SimBed("w", "bed-1", 10.0, random.Random(0))
    for _ in range(400):
        obs = sim.obs()  # validated on construction
    assert obs.seq == 399 and sim.obs_seq == 400
    start, state_on = sim.alarm_event()
    end, state_off = sim.alarm_event()
    assert (start.phase, end.phase) == ("start", "end") and (start.seq, end.seq) == (0, 1)
    assert len(state_on.alarms) == 1 and state_off.alarms == ()
    assert sim.events == [start.uuid, end.uuid]


@pytest.mark.parametrize(
    "argv", [["--hz", "20"], ["--hz", "0.5"], ["--beds", "0"], ["--seconds", "-1"]]
)
def test_cli_refuses_bad_options(argv, capsys):
    assert main(["bench", "ward", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("painmon bench ward: error: argument") and "Traceback" not in err


def test_cli_refuses_to_overwrite_a_result(tmp_path, capsys):
    out = tmp_path / "out.json"
    out.write_text("{}")
    assert main(["bench", "ward", "--json", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.slow
def test_short_run_delivers_everything(tmp_path, capsys):
    if shutil.which("mosquitto") is None and shutil.which("mosquitto", path="/usr/sbin") is None:
        pytest.skip("Eclipse Mosquitto is not installed")
    out = tmp_path / "ward.json"
    argv = ["bench", "ward", "--beds", "3", "--procs", "2", "--hz", "5", "--seconds", "2",
            "--alarm-every-s", "0.5", "--json", str(out)]  # fmt: skip
    code = main(argv)
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert code == (0 if record["passed"] else 1)  # latency targets depend on the machine
    assert record["beds"] == 3 and record["bed_processes"] == 2
    assert record["obs_sent"] >= 3 * 5 * 2 - 3
    assert record["obs_received"] == record["obs_sent"]
    assert record["alarm_events_sent"] >= 3 * 3 and record["alarm_events_lost"] == 0
    assert record["alarm_unreceipted_at_end"] == 0 and record["invalid_messages"] == 0
    assert record["receipts_sent"] >= record["alarm_events_sent"]
    assert set(record["targets"]) == set(bw.TARGETS)
    assert record["messages_by_leaf"]["status"] >= 6  # online and offline per bed
    assert "obs delivered" in printed and "alarm events" in printed
