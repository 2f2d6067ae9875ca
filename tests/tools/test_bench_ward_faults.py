"""``painmon bench ward --faults``: the per-fault arithmetic, and a short real fault run."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from painmon.core.tools import bench_ward as bw
from painmon.core.tools.cli import main
from painmon.core.util.errors import InvalidInputError


def test_fault_selection_keeps_the_canonical_order():
    assert bw.select_faults(None, every=True) == list(bw.FAULTS)
    assert bw.select_faults(["bed-sigstop", "broker-sigkill"], every=False) == [
        "broker-sigkill",
        "bed-sigstop",
    ]
    assert bw.select_faults([], every=False) == []
    with pytest.raises(InvalidInputError, match="unknown fault broker-sighup"):
        bw.select_faults(["broker-sighup"], every=False)


def test_bins_are_counted_by_whole_seconds():
    bins = {99: 5, 100: 10, 101: 10, 102: 10, 103: 7}
    assert bw.bins_between(bins, 100.9, 102.1) == 30  # seconds 100, 101, 102
    assert bw.bins_between(bins, 100.0, 100.0) == 10
    assert bw.bins_between({}, 0, 10) == 0


def test_window_report_counts_losses_inside_the_window_only():
    events = {"a": 10.0, "b": 11.5, "c": 12.0, "d": 20.0}
    received = {"a", "c"}  # b lost inside the window, d lost outside it
    report = bw.window_report(
        10.5, 12.5, events, received, {10: 10, 11: 10, 12: 10, 13: 10}, {10: 10, 11: 4, 12: 10}
    )
    assert report["alarm_events_sent"] == 2 and report["alarm_events_lost"] == 1
    assert report["lost_uuids"] == ["b"]
    assert (report["obs_sent"], report["obs_received"]) == (30, 24)
    assert report["obs_delivered_pct"] == 80.0
    empty = bw.window_report(0.0, 1.0, {}, set(), {}, {})
    assert empty["obs_delivered_pct"] is None and empty["alarm_events_lost"] == 0


def test_fault_targets():
    faults = {
        "broker-sigkill": {"alarm_events_lost": 0},
        "bed-sigkill": {"alarm_events_lost": 0, "offline_s": 5.2},
        "bed-sigstop": {"alarm_events_lost": 1, "no_data_s": 1.45},
    }
    targets = bw.fault_targets(faults, {"p99": 120.0})
    met = {name: t["met"] for name, t in targets.items()}
    assert met == {
        "broker-sigkill: alarm_events_lost": True,
        "bed-sigkill: alarm_events_lost": True,
        "bed-sigkill: offline_s": False,  # 5.2 s > 5 s
        "bed-sigstop: alarm_events_lost": False,
        "bed-sigstop: no_data_s": True,
        "acknowledge: round trip p99 ms": True,
    }
    # A time never measured (None) misses its target, as does no acknowledge round trip.
    targets = bw.fault_targets({"bed-sigkill": {"alarm_events_lost": 0, "offline_s": None}}, {})
    assert not targets["bed-sigkill: offline_s"]["met"]
    assert not targets["acknowledge: round trip p99 ms"]["met"]


def test_after_ignores_stale_onsets():
    assert bw._after(None, 5.0) is None
    assert bw._after(4.0, 5.0) is None  # OFFLINE from an earlier fault is no measurement
    assert bw._after(5.5, 5.0) == 5.5


def test_synthetic_bed_acknowledges_only_an_active_unacknowledged_alarm():
    sim = bw._SimBed("w", "bed-1", 10.0, random.Random(0))
    assert sim.acknowledge() is None  # no alarm yet
    start, _ = sim.alarm_event()
    acked = sim.acknowledge()
    assert acked is not None
    event, state = acked
    assert event.phase == "acknowledge" and event.by == "station" and event.acknowledged
    assert event.seq == start.seq + 1 and state.seq == event.seq
    assert state.alarms[0].acknowledged
    assert sim.acknowledge() is None  # already acknowledged
    end, _ = sim.alarm_event()
    assert end.phase == "end" and sim.acknowledge() is None
    assert sim.events == [start.uuid, event.uuid, end.uuid]


def test_format_faults_prints_every_fault_and_verdict():
    record = {
        "fault_beds": 2,
        "victims": ["victim-kill"],
        "alarm_events_sent": 10,
        "alarm_events_lost": 0,
        "alarm_duplicates": 3,
        "faults": {
            "bed-sigkill": {
                "alarm_events_lost": 0,
                "alarm_events_sent": 4,
                "duplicates": 1,
                "obs_delivered_pct": 100.0,
                "offline_s": 0.01,
            },
        },
        "ack_round_trip_ms": {"p50": 40.0, "p99": 60.0, "max": 61.0, "n": 5},
        "acknowledge_commands": 5,
    }
    record["targets"] = bw.fault_targets(record["faults"], record["ack_round_trip_ms"])
    text = "\n".join(bw.format_faults(record))
    assert "bed-sigkill: 0/4 alarm events lost" in text and "offline_s 0.01" in text
    assert "PASS bed-sigkill: offline_s 0.01" in text and "p99 60.0 ms" in text


def test_cli_refuses_an_unknown_fault(capsys):
    assert main(["bench", "ward", "--fault", "broker-sighup"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err


@pytest.mark.slow
def test_short_fault_run_loses_no_alarm_event(tmp_path, capsys):
    if shutil.which("mosquitto") is None and shutil.which("mosquitto", path="/usr/sbin") is None:
        pytest.skip("Eclipse Mosquitto is not installed")
    out = tmp_path / "ward.json"
    argv = ["bench", "ward", "--beds", "2", "--procs", "1", "--hz", "5", "--seconds", "1",
            "--alarm-every-s", "0.5", "--fault", "broker-sigkill", "--fault", "bed-sigkill",
            "--json", str(out)]  # fmt: skip
    code = main(argv)
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert code == (0 if record["passed"] else 1)  # times depend on the machine
    faults = record["fault_runs"]
    assert list(faults["faults"]) == ["broker-sigkill", "bed-sigkill"]
    sigkill = faults["faults"]["broker-sigkill"]
    assert sigkill["alarm_events_sent"] > 0  # alarm events were flowing across the crash
    assert sigkill["alarm_events_lost"] == 0 and faults["alarm_events_lost"] == 0
    assert sigkill["station_reconnected_s"] is not None
    assert faults["alarm_unreceipted_at_end"] == 0
    offline_s = faults["faults"]["bed-sigkill"]["offline_s"]
    assert offline_s is not None and offline_s >= 0  # measured through the Last Will
    assert faults["ack_round_trip_ms"]["n"] > 0
    assert "fault runs" in printed and "broker-sigkill:" in printed
