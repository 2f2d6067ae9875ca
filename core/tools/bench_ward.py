"""``painmon bench ward``: N simulated beds against a real Eclipse Mosquitto and one station.

The beds are child processes (``python -m painmon.core.tools.bench_ward bed ...``; several
beds may share a process with ``--procs``, each keeping its own MQTT connection, client id and
Last Will). They publish the contract's messages with synthetic scores: ``obs`` at ``--hz``
(QoS 0, 2 s expiry), alarm events (QoS 1) every ``--alarm-every-s`` with the retained alarm
state, and re-send every event each second until the station's receipt comes back. The
station runs here: it decodes every message against the shipped schema, de-duplicates
events by uuid and answers each with a receipt, like ``painmon station`` does.

Latency is the time from the bed's publish call to the station's paho callback, stamped with
``time.time_ns()`` in an MQTT 5 User Property (beds and station share the host's clock); the
"handled" latency adds the station's decode (every field checked, see messages.decode).

Fault runs (``--faults`` or ``--fault NAME``) follow the normal run, against a fresh broker
with persistence on: the station side is then the real StationModel fed by the real
StationClient (fixed id, persistent session), and the beds run until told to stop and
honour remote acknowledge commands. Each fault is timed and gets a window (the fault, its
recovery and SETTLE_S of normal traffic) in which alarm events first sent are checked
against what the station received (lost must be 0; duplicates are counted) and obs are
counted by send second: broker SIGTERM + restart, broker SIGKILL + restart (the store is a
1 s autosave; the beds' re-sends until receipt carry the loss), station restart (stop, 2 s,
start with the same model and id), bed SIGKILL (time to OFFLINE through its Last Will) and
bed SIGSTOP (time to "no data", then SIGCONT). Then the station acknowledges every bed's
alarm for a few seconds: the command → the bed's reply round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import os
import platform
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from painmon import __version__
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import atomic_write_json
from painmon.core.ward import messages as m
from painmon.core.ward import topics
from painmon.core.ward.broker import MosquittoBroker, find_mosquitto
from painmon.core.ward.client import (
    BrokerAddress,
    close_client,
    connect_client,
    publish_message,
    user_properties,
)

log = logging.getLogger(__name__)

STAMP = "t_ns"  # User Property: the bed's time.time_ns() at its publish call
RESEND_S = 1.0  # un-receipted alarm events are re-sent this often (the contract)
GRACE_S = 3.0  # after the run, beds wait this long for their last receipts
STATION_ID = "bench-station"

# Issue #14's acceptance targets for the normal run.
TARGETS = {
    "obs_delivered_pct": (">=", 99.9),
    "obs_latency_p99_ms": ("<=", 100.0),
    "alarm_latency_p99_ms": ("<=", 250.0),
    "alarm_events_lost": ("<=", 0),
}


class BenchError(PainmonError, RuntimeError):
    """The ward benchmark could not run (a bed process failed, the broker would not start)."""


# --- synthetic bed (child process) ----------------------------------------------------------


class _SimBed:
    """One simulated bed: a random-walk pain level, alarm events, receipts and re-sends."""

    def __init__(self, ward: str, bed: str, hz: float, rng: random.Random) -> None:
        self.ward, self.bed, self.hz, self.rng = ward, bed, hz, rng
        self.level = rng.uniform(0.0, 4.0)
        self.obs_seq = 0
        self.event_seq = 0
        self.alarm_on = False
        self.alarm_acked = False
        self.alarm_since = ""
        self.events: list[str] = []
        self.event_times: list[float] = []  # time.time() of each event's first send
        self.obs_by_s: dict[int, int] = {}  # obs sent per whole second of time.time()
        self.pending: dict[str, tuple[m.AlarmEventMessage, float]] = {}
        self.resends = 0
        self.client: Any = None

    def obs(self) -> m.ObsMessage:
        self.level = min(4.0, max(0.0, self.level + self.rng.gauss(0.0, 0.1)))
        seq = self.obs_seq
        self.obs_seq += 1
        now = m.utc_iso()
        if seq % 200 < 10:  # half a second of every 20 s: no face, output unknown
            return m.ObsMessage(
                self.ward, self.bed, now, seq, False, None, None, None, None,
                ("NO_FACE",), "no face in view",
            )  # fmt: skip
        weights = [math.exp(-((k - self.level) ** 2) / 0.5) for k in range(5)]
        total = sum(weights)
        p = tuple(w / total for w in weights)
        return m.ObsMessage(
            self.ward, self.bed, now, seq, True, round(self.level, 3), p, max(p),
            min(4, round(self.level)),
        )  # fmt: skip

    def alarm_event(self) -> tuple[m.AlarmEventMessage, m.AlarmStateMessage]:
        self.alarm_on = not self.alarm_on
        self.alarm_acked = False
        now = m.utc_iso()
        if self.alarm_on:
            self.alarm_since = now
        event = m.AlarmEventMessage(
            self.ward, self.bed, now, m.new_uuid(), self.event_seq, "pain", m.PAIN_CONDITION,
            "high", "start" if self.alarm_on else "end", "pain level high (synthetic)",
        )  # fmt: skip
        alarms = (
            (m.AlarmEntry("pain", m.PAIN_CONDITION, "high", self.alarm_since, latched=True),)
            if self.alarm_on
            else ()
        )
        state = m.AlarmStateMessage(self.ward, self.bed, now, self.event_seq, alarms)
        self.event_seq += 1
        self.events.append(event.uuid)
        return event, state

    def acknowledge(self) -> tuple[m.AlarmEventMessage, m.AlarmStateMessage] | None:
        """A remote acknowledge of the active alarm (None: nothing to acknowledge)."""
        if not self.alarm_on or self.alarm_acked:
            return None
        self.alarm_acked = True
        now = m.utc_iso()
        event = m.AlarmEventMessage(
            self.ward, self.bed, now, m.new_uuid(), self.event_seq, "pain", m.PAIN_CONDITION,
            "high", "acknowledge", "pain alarm acknowledged from the station", True, "station",
        )  # fmt: skip
        entry = m.AlarmEntry(
            "pain", m.PAIN_CONDITION, "high", self.alarm_since, acknowledged=True, latched=True
        )
        state = m.AlarmStateMessage(self.ward, self.bed, now, self.event_seq, (entry,))
        self.event_seq += 1
        self.events.append(event.uuid)
        return event, state


def _stamp() -> dict[str, str]:
    return {STAMP: str(time.time_ns())}


def run_bed_process(
    url: str, ward: str, beds: Sequence[str], hz: float, seconds: float, alarm_every_s: float,
    seed: int, out: Callable[[str], None] = print, read_go: Callable[[], str] = sys.stdin.readline,
    until_stopped: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The child's work: connect ``beds``, say ready, wait for "go <epoch>", run, report.

    ``until_stopped`` (the fault runs): run until a "stop" line (or the end of input) instead
    of ``seconds``. Remote acknowledge commands are always honoured (the beds say so).
    """
    address = BrokerAddress.parse(url)
    receipts: queue.Queue[str] = queue.Queue()
    commands: queue.Queue[tuple[str, str]] = queue.Queue()  # (bed, cmd_id)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        # paho's thread: hand receipts and commands over, never touch the bed state here.
        try:
            _ward, bed, leaf = topics.parse_topic(message.topic)
            if leaf == topics.CMD_RECEIPT:
                receipts.put(m.decode(leaf, message.payload).uuid)
            elif leaf == topics.CMD_ACKNOWLEDGE:
                commands.put((bed, m.decode(leaf, message.payload).cmd_id))
        except InvalidInputError as exc:
            log.warning("bad command payload: %s", exc)

    def on_connect_of(bed: str) -> Callable[..., None]:
        # Every (re)connect: a clean session, so subscribe again, and say online again (a
        # broker that went down may have sent this bed's Will meanwhile).
        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                return
            client.subscribe(topics.bed_subscriptions(ward, bed)[0], qos=1)
            online = m.StatusMessage(ward, bed, m.utc_iso(), "online", __version__, True, hz)
            publish_message(client, online)

        return on_connect

    sims = []
    for i, bed in enumerate(beds):
        sim = _SimBed(ward, bed, hz, random.Random(seed * 1000 + i))
        will = m.StatusMessage(ward, bed, m.utc_iso(), "offline", __version__, True, hz)
        sim.client = connect_client(
            address, f"bench-{ward}-{bed}", on_message=on_message, wait_s=30,
            on_connect=on_connect_of(bed),
            will=(topics.topic(ward, bed, topics.STATUS), will.to_payload(), 1, True),
        )  # fmt: skip
        sims.append(sim)
    warm = _SimBed(ward, beds[0], hz, random.Random(seed))
    warm.obs(), warm.alarm_event()  # warm the code paths (lazy imports, regexes) before timing
    out("ready")
    start = float(read_go().split()[1])
    stopped = threading.Event()
    if until_stopped:

        def wait_for_stop() -> None:
            while (line := read_go()) and line.strip() != "stop":
                pass
            stopped.set()

        threading.Thread(target=wait_for_stop, name="bench-bed-stop", daemon=True).start()
        seconds = math.inf
    by_bed = {sim.bed: sim for sim in sims}
    period = 1.0 / hz
    due: list[tuple[float, int, int]] = []  # (time, 0 obs | 1 alarm, bed index)
    for i, sim in enumerate(sims):
        heapq.heappush(due, (start + sim.rng.uniform(0, period), 0, i))
        heapq.heappush(due, (start + sim.rng.uniform(0, alarm_every_s), 1, i))
    end = start + seconds
    by_uuid: dict[str, _SimBed] = {}

    def service(now: float) -> None:
        while True:
            try:
                uuid = receipts.get_nowait()
            except queue.Empty:
                break
            sim = by_uuid.get(uuid)
            if sim is not None:
                sim.pending.pop(uuid, None)
        while True:
            try:
                bed, cmd_id = commands.get_nowait()
            except queue.Empty:
                break
            sim = by_bed[bed]
            acked = sim.acknowledge()
            reply = m.CommandReplyMessage(
                ward, bed, m.utc_iso(), cmd_id, acked is not None,
                "applied" if acked is not None else "no unacknowledged alarm at this bed",
            )  # fmt: skip
            publish_message(sim.client, reply)
            if acked is not None:
                event, state = acked
                send_event(sim, event, state)
        for sim in sims:
            for uuid, (event, sent_at) in list(sim.pending.items()):
                if now - sent_at >= RESEND_S:
                    publish_message(sim.client, event, user_properties=_stamp())
                    sim.pending[uuid] = (event, now)
                    sim.resends += 1

    def send_event(sim: _SimBed, event: m.AlarmEventMessage, state: m.AlarmStateMessage) -> None:
        by_uuid[event.uuid] = sim
        publish_message(sim.client, event, user_properties=_stamp())
        sim.pending[event.uuid] = (event, time.time())
        sim.event_times.append(time.time())
        publish_message(sim.client, state)

    while due and due[0][0] < end and not stopped.is_set():
        when, what, i = due[0]
        now = time.time()
        if when > now:
            time.sleep(min(when - now, 0.05))
            service(time.time())
            continue
        heapq.heappop(due)
        sim = sims[i]
        if what == 0:
            stamp = _stamp()
            publish_message(sim.client, sim.obs(), user_properties=stamp)
            second = int(stamp[STAMP]) // 1_000_000_000  # the station bins by this stamp too
            sim.obs_by_s[second] = sim.obs_by_s.get(second, 0) + 1
            heapq.heappush(due, (when + period, 0, i))
        else:
            send_event(sim, *sim.alarm_event())
            heapq.heappush(due, (when + alarm_every_s, 1, i))
    grace_end = time.time() + GRACE_S
    while any(sim.pending for sim in sims) and time.time() < grace_end:
        time.sleep(0.05)
        service(time.time())
    result = {}
    for sim in sims:
        offline = m.StatusMessage(ward, sim.bed, m.utc_iso(), "offline", __version__, False, hz)
        publish_message(sim.client, offline).wait_for_publish(5)
        close_client(sim.client)
        result[sim.bed] = {
            "obs_sent": sim.obs_seq,
            "events": sim.events,
            "event_times": [round(t, 3) for t in sim.event_times],
            "obs_by_s": sim.obs_by_s,
            "resends": sim.resends,
            "unreceipted": sorted(sim.pending),
        }
    out("result " + json.dumps(result))
    return result


# --- station (this process) -----------------------------------------------------------------


class _BenchStation:
    """Counts, de-duplicates and receipts like the real station; times every arrival."""

    def __init__(self, url: str, ward: str) -> None:
        self.ward = ward
        self.inbox: queue.Queue[tuple[str, bytes, int, int] | None] = queue.Queue()
        self.obs_seen: set[tuple[str, int]] = set()
        self.obs_latency_ns: list[int] = []
        self.obs_handled_ns: list[int] = []
        self.events_seen: set[str] = set()
        self.alarm_latency_ns: list[int] = []
        self.duplicates = 0
        self.receipts_sent = 0
        self.invalid = 0
        self.counts: dict[str, int] = {}
        self.subscribed = threading.Event()
        for leaf in topics.LEAVES:  # build every schema validator now, not on the first message
            m._validator(m.DEF_OF_LEAF[leaf])
        self.client = connect_client(
            BrokerAddress.parse(url), STATION_ID, on_message=self._on_message, wait_s=10
        )
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.subscribe([(f, 1) for f in topics.station_subscriptions(ward)])
        if not self.subscribed.wait(10):
            raise BenchError("the bench station's subscription was not acknowledged")
        self.worker = threading.Thread(target=self._work, name="bench-station", daemon=True)
        self.worker.start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        arrived = time.time_ns()
        stamp = user_properties(message).get(STAMP)
        sent = int(stamp) if stamp is not None else arrived
        self.inbox.put((message.topic, bytes(message.payload), sent, arrived))

    def _work(self) -> None:
        while (item := self.inbox.get()) is not None:
            topic, payload, sent, arrived = item
            try:
                _ward, bed, leaf = topics.parse_topic(topic)
                message = m.decode(leaf, payload)
            except InvalidInputError as exc:
                self.invalid += 1
                log.warning("station: %s", exc)
                continue
            self.counts[leaf] = self.counts.get(leaf, 0) + 1
            if isinstance(message, m.ObsMessage):
                self.obs_seen.add((bed, message.seq))
                self.obs_latency_ns.append(arrived - sent)
                self.obs_handled_ns.append(time.time_ns() - sent)
            elif isinstance(message, m.AlarmEventMessage):
                if message.uuid in self.events_seen:
                    self.duplicates += 1
                else:
                    self.events_seen.add(message.uuid)
                    self.alarm_latency_ns.append(arrived - sent)
                receipt = m.ReceiptMessage(message.ward, bed, m.utc_iso(), message.uuid, STATION_ID)
                publish_message(self.client, receipt)
                self.receipts_sent += 1

    def stop(self) -> None:
        self.inbox.put(None)
        self.worker.join(timeout=30)
        close_client(self.client)


# --- the benchmark --------------------------------------------------------------------------


def _percentiles_ms(values_ns: Sequence[int]) -> dict[str, float | None]:
    if not values_ns:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ms = np.asarray(values_ns, dtype=np.float64) / 1e6
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "max": round(float(ms.max()), 2),
        "n": len(values_ns),
    }


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # no load average on Windows
        return None


def _mosquitto_version() -> str:
    proc = subprocess.run(
        [str(find_mosquitto()), "-h"], capture_output=True, text=True, check=False
    )
    first = (proc.stdout or proc.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def _split(labels: Sequence[str], procs: int) -> list[list[str]]:
    groups: list[list[str]] = [[] for _ in range(procs)]
    for i, label in enumerate(labels):
        groups[i % procs].append(label)
    return [g for g in groups if g]


def bench_ward(
    beds: int,
    hz: float,
    seconds: float,
    *,
    procs: int | None = None,
    alarm_every_s: float = 2.0,
    ward: str = "bench",
    seed: int = 0,
    workdir: Path | None = None,
    faults: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the ward benchmark; the record (numbers, targets met) as a dict.

    ``faults`` (names from :data:`FAULTS`) run after the normal run, against a fresh broker
    with persistence on, the real StationModel/StationClient and ``beds`` new bed processes.
    """
    faults = select_faults(faults, every=False)
    if not 1 <= hz <= 10:
        raise InvalidInputError(f"--hz must be 1-10 (the contract's obs rate), got {hz:g}")
    if beds < 1 or seconds <= 0:
        raise InvalidInputError("--beds and --seconds must be positive")
    procs = min(beds, procs or beds)
    labels = [f"bed-{i:03d}" for i in range(1, beds + 1)]
    load_at_start = _load_1m()
    with tempfile.TemporaryDirectory(prefix="painmon-bench-ward-") as scratch:
        root = Path(workdir) if workdir is not None else Path(scratch)
        broker = MosquittoBroker(root / "broker", persistence=True).start()
        children: list[subprocess.Popen[str]] = []
        station = None
        wall_start = time.monotonic()
        try:
            station = _BenchStation(broker.url, ward)
            for n, group in enumerate(_split(labels, procs)):
                errors = (root / f"bed-proc-{n}.log").open("w")
                children.append(
                    subprocess.Popen(
                        [
                            sys.executable, "-m", "painmon.core.tools.bench_ward", "bed",
                            "--url", broker.url, "--ward", ward, "--beds", ",".join(group),
                            "--hz", str(hz), "--seconds", str(seconds),
                            "--alarm-every-s", str(alarm_every_s), "--seed", str(seed + n),
                        ],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True,
                    )
                )  # fmt: skip
                errors.close()
            for n, child in enumerate(children):
                line = child.stdout.readline().strip()  # type: ignore[union-attr]
                if line != "ready":
                    raise BenchError(
                        f"bed process {n} did not start: "
                        + (root / f"bed-proc-{n}.log").read_text()[-1500:]
                    )
            start = time.time() + 0.5
            for child in children:
                child.stdin.write(f"go {start}\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
            sent: dict[str, Any] = {}
            for n, child in enumerate(children):
                out, _ = child.communicate(timeout=seconds + GRACE_S + 60)
                lines = [x for x in out.splitlines() if x.startswith("result ")]
                if child.returncode != 0 or not lines:
                    raise BenchError(
                        f"bed process {n} failed (exit {child.returncode}): "
                        + (root / f"bed-proc-{n}.log").read_text()[-1500:]
                    )
                sent.update(json.loads(lines[-1][len("result ") :]))
            time.sleep(0.5)  # the last obs in flight
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            if station is not None:
                station.stop()
            broker.stop()
        wall_s = time.monotonic() - wall_start
        fault_record = None
        if faults:
            fault_broker = MosquittoBroker(root / "broker-faults", persistence=True).start()
            fault_start = time.monotonic()
            try:
                fault_record = run_faults(
                    fault_broker, root, faults, beds=beds, hz=hz, procs=procs,
                    alarm_every_s=alarm_every_s, ward=ward, seed=seed,
                )  # fmt: skip
            finally:
                fault_broker.stop()
            fault_record["wall_s"] = round(time.monotonic() - fault_start, 1)

    obs_sent = sum(b["obs_sent"] for b in sent.values())
    event_ids = {u for b in sent.values() for u in b["events"]}
    obs_latency = _percentiles_ms(station.obs_latency_ns)
    alarm_latency = _percentiles_ms(station.alarm_latency_ns)
    record: dict[str, Any] = {
        "benchmark": "ward",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "broker": _mosquitto_version(),
            "painmon": __version__,
            # Other work on the machine shows here: the numbers mean little under a high load.
            "load_avg_1m_at_start": load_at_start,
            "load_avg_1m_at_end": _load_1m(),
        },
        "beds": beds,
        "bed_processes": len(children),
        "hz": hz,
        "seconds": seconds,
        "alarm_every_s": alarm_every_s,
        "obs_sent": obs_sent,
        "obs_received": len(station.obs_seen),
        "obs_delivered_pct": round(100.0 * len(station.obs_seen) / max(obs_sent, 1), 3),
        "obs_latency_ms": obs_latency,
        "obs_handled_latency_ms": _percentiles_ms(station.obs_handled_ns),
        "alarm_events_sent": len(event_ids),
        "alarm_events_received": len(station.events_seen & event_ids),
        "alarm_events_lost": len(event_ids - station.events_seen),
        "alarm_duplicates": station.duplicates,
        "alarm_latency_ms": alarm_latency,
        "alarm_resends": sum(b["resends"] for b in sent.values()),
        "alarm_unreceipted_at_end": sum(len(b["unreceipted"]) for b in sent.values()),
        "receipts_sent": station.receipts_sent,
        "invalid_messages": station.invalid,
        "messages_by_leaf": dict(sorted(station.counts.items())),
        "wall_s": round(wall_s, 1),
    }
    measured = {
        "obs_delivered_pct": record["obs_delivered_pct"],
        "obs_latency_p99_ms": obs_latency["p99"],
        "alarm_latency_p99_ms": alarm_latency["p99"],
        "alarm_events_lost": record["alarm_events_lost"],
    }
    record["targets"] = {
        name: {
            "target": f"{op} {limit:g}",
            "value": measured[name],
            "met": _met(measured[name], op, limit),
        }
        for name, (op, limit) in TARGETS.items()
    }
    record["passed"] = all(t["met"] for t in record["targets"].values())
    if fault_record is not None:
        record["fault_runs"] = fault_record
        record["passed"] = record["passed"] and fault_record["passed"]
    return record


def _met(value: float | None, op: str, limit: float) -> bool:
    if value is None:
        return False
    return value >= limit if op == ">=" else value <= limit


def format_record(record: dict[str, Any]) -> str:
    """The human summary printed by ``painmon bench ward``."""
    obs, alarm = record["obs_latency_ms"], record["alarm_latency_ms"]
    handled = record["obs_handled_latency_ms"]
    machine = record["machine"]
    lines = [
        f"machine: {machine['cpus']} CPUs, {machine['platform']}, {machine['broker']}; "
        f"load average {machine.get('load_avg_1m_at_start')} at start, "
        f"{machine.get('load_avg_1m_at_end')} at end",
        f"{record['beds']} beds in {record['bed_processes']} processes x {record['hz']:g} Hz "
        f"for {record['seconds']:g} s (alarm event every {record['alarm_every_s']:g} s a bed)",
        f"obs delivered: {record['obs_received']}/{record['obs_sent']} "
        f"= {record['obs_delivered_pct']:.3f} %",
        f"obs latency: p50 {obs['p50']} ms, p99 {obs['p99']} ms, max {obs['max']} ms "
        f"(after the station's decode: p99 {handled['p99']} ms)",
        f"alarm events: {record['alarm_events_received']}/{record['alarm_events_sent']} "
        f"delivered, {record['alarm_events_lost']} lost, {record['alarm_duplicates']} duplicates, "
        f"{record['alarm_resends']} re-sends; latency p50 {alarm['p50']} ms, "
        f"p99 {alarm['p99']} ms",
    ]
    for name, target in record["targets"].items():
        verdict = "PASS" if target["met"] else "FAIL"
        lines.append(f"  {verdict} {name} {target['value']} (target {target['target']})")
    if "fault_runs" in record:
        lines.extend(format_faults(record["fault_runs"]))
    return "\n".join(lines)


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write the record as JSON (atomically)."""
    atomic_write_json(path, record)


# --- fault runs -------------------------------------------------------------------------------

FAULTS = ("broker-sigterm", "broker-sigkill", "station-restart", "bed-sigkill", "bed-sigstop")
FAULT_STATION_ID = "bench-faults"
KILL_VICTIM, STOP_VICTIM = "victim-kill", "victim-stop"
WARMUP_S = 3.0  # beds running and alarm events flowing before the first fault
SETTLE_S = 3.0  # after a fault recovers: re-sends (1 s) and reconnects (<= 2 s) catch up
STATION_DOWN_S = 2.0  # the station restart's pause (the "wait 2 s")
# The fault station's tick (a whole StationView: ~4 ms at 66 beds on the loaded 2-core box):
# at the window's 4 Hz, and every 20 ms while a "no data" onset is being timed.
TICK_S, FINE_TICK_S = 0.25, 0.02
FAULT_TARGETS = {
    "alarm_events_lost": ("<=", 0),
    "offline_s": ("<=", 5.0),
    "no_data_s": ("<=", 1.5),
    "ack_round_trip_p99_ms": ("<=", 500.0),
}


def select_faults(names: Sequence[str] | None, every: bool) -> list[str]:
    """The fault runs asked for, in the canonical order (``--faults`` = all of them)."""
    chosen = set(FAULTS) if every else set(names or ())
    unknown = sorted(chosen - set(FAULTS))
    if unknown:
        raise InvalidInputError(
            f"unknown fault {', '.join(unknown)}: choose from {', '.join(FAULTS)}"
        )
    return [name for name in FAULTS if name in chosen]


def bins_between(bins: dict[int, int], start: float, end: float) -> int:
    """The counts of the whole seconds of ``bins`` from ``start``'s second to ``end``'s."""
    return sum(n for second, n in bins.items() if math.floor(start) <= second <= math.floor(end))


def window_report(
    start: float,
    end: float,
    event_times: dict[str, float],
    received: set[str],
    obs_sent_by_s: dict[int, int],
    obs_received_by_s: dict[int, int],
) -> dict[str, Any]:
    """Alarm events sent (first send) in [start, end] and lost, and obs delivered, in a window.

    Times are ``time.time()`` seconds; obs are counted by the bed's send second, so a window
    is widened to whole seconds.
    """
    sent = [uuid for uuid, t in event_times.items() if start <= t <= end]
    lost = sorted(uuid for uuid in sent if uuid not in received)
    obs_sent = bins_between(obs_sent_by_s, start, end)
    obs_received = bins_between(obs_received_by_s, start, end)
    return {
        "alarm_events_sent": len(sent),
        "alarm_events_lost": len(lost),
        "lost_uuids": lost[:20],
        "obs_sent": obs_sent,
        "obs_received": obs_received,
        "obs_delivered_pct": round(100.0 * obs_received / obs_sent, 3) if obs_sent else None,
    }


def fault_targets(faults: dict[str, dict[str, Any]], ack_ms: dict[str, Any]) -> dict[str, Any]:
    """Each fault's targets (0 events lost; OFFLINE/no-data times) and the acknowledge p99."""
    out: dict[str, Any] = {}
    for name, fault in faults.items():
        checks = {"alarm_events_lost": fault.get("alarm_events_lost")}
        if name == "bed-sigkill":
            checks["offline_s"] = fault.get("offline_s")
        if name == "bed-sigstop":
            checks["no_data_s"] = fault.get("no_data_s")
        for key, value in checks.items():
            op, limit = FAULT_TARGETS[key]
            out[f"{name}: {key}"] = {
                "target": f"{op} {limit:g}",
                "value": value,
                "met": _met(value, op, limit),
            }
    op, limit = FAULT_TARGETS["ack_round_trip_p99_ms"]
    out["acknowledge: round trip p99 ms"] = {
        "target": f"{op} {limit:g}",
        "value": ack_ms.get("p99"),
        "met": _met(ack_ms.get("p99"), op, limit),
    }
    return out


class _FaultStation:
    """The real StationModel fed by the real StationClient, served on one thread.

    Also counts obs by the bed's send second (the stamp User Property) for per-fault
    delivery. The model is touched under a lock: the serving thread drains and ticks,
    the fault driver acknowledges and reads ``state_since``.
    """

    def __init__(self, url: str, ward: str) -> None:
        from painmon.core.ward.station import StationModel

        self.address = BrokerAddress.parse(url)
        self.ward = ward
        self.model = StationModel(FAULT_STATION_ID)
        self.lock = threading.Lock()
        self.obs_by_s: dict[str, dict[int, int]] = {}  # bed -> send second -> obs received
        self.client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.starts = 0
        self.tick_s = TICK_S

    def start(self, wait_s: float = 10.0) -> None:
        from painmon.core.ward.station import StationClient

        station = self

        class _Counting(StationClient):
            def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
                super()._on_message(client, userdata, message)
                stamp = user_properties(message).get(STAMP)
                if stamp is not None and message.topic.endswith("/" + topics.OBS):
                    bins = station.obs_by_s.setdefault(message.topic.split("/")[-2], {})
                    second = int(stamp) // 1_000_000_000
                    bins[second] = bins.get(second, 0) + 1

        self.client = _Counting(self.address, ward=self.ward, station_id=FAULT_STATION_ID)
        self.client.start(wait_s=wait_s)
        self.starts += 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="bench-fault-station", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        last_tick = 0.0
        while not self._stop.is_set():
            with self.lock:
                count = self.client.drain(self.model)
                now = time.monotonic()
                if now - last_tick >= self.tick_s:
                    self.model.tick(now)
                    last_tick = now
            if count == 0:
                self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self.lock:
            self.client.drain(self.model)
        self.client.stop()

    def wait_connected(self, timeout_s: float) -> bool:
        return self.client.connected.wait(timeout_s)

    def state_since(self, bed: str) -> tuple[float | None, float | None]:
        with self.lock:
            try:
                return self.model.state_since(self.ward, bed)
            except KeyError:
                return None, None

    def acknowledge_all(self, beds: Sequence[str]) -> int:
        """Ask every bed with an unacknowledged pain alarm and no command waiting to ack."""
        from painmon.core.ward.station import COMMAND_SENT_TEXT

        sent = 0
        with self.lock:
            for bed in beds:
                view = self.model.bed_view(self.ward, bed)
                waiting = view is not None and view.command_text == COMMAND_SENT_TEXT
                if view is None or not view.can_acknowledge or waiting:
                    continue
                if self.client.acknowledge(self.model, self.ward, bed) is not None:
                    sent += 1
        return sent


def _after(since: float | None, t0: float) -> float | None:
    """``since`` when it is an onset at or after ``t0`` (a stale one from before is not)."""
    return since if since is not None and since >= t0 else None


def _wait_until(predicate: Callable[[], Any], timeout_s: float, step_s: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step_s)


def _spawn(
    root: Path, url: str, ward: str, beds: Sequence[str], hz: float, alarm_every_s: float,
    seed: int, tag: str,
) -> subprocess.Popen[str]:  # fmt: skip
    errors = (root / f"{tag}.log").open("w")
    try:
        return subprocess.Popen(
            [
                sys.executable, "-m", "painmon.core.tools.bench_ward", "bed", "--url", url,
                "--ward", ward, "--beds", ",".join(beds), "--hz", str(hz), "--seconds", "1",
                "--alarm-every-s", str(alarm_every_s), "--seed", str(seed), "--until-stopped",
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True,
        )  # fmt: skip
    finally:
        errors.close()


def run_faults(
    broker: MosquittoBroker,
    root: Path,
    names: Sequence[str],
    *,
    beds: int,
    hz: float,
    procs: int,
    alarm_every_s: float,
    ward: str,
    seed: int,
) -> dict[str, Any]:
    """The fault runs against a started ``broker`` (persistence on): the faults' record."""
    labels = [f"bed-{i:03d}" for i in range(1, beds + 1)]
    groups = _split(labels, procs)
    tags = [f"fault-beds-{n}" for n in range(len(groups))]
    victims = {}
    if "bed-sigkill" in names:
        victims[KILL_VICTIM] = len(groups)
        groups.append([KILL_VICTIM])
        tags.append("fault-victim-kill")
    if "bed-sigstop" in names:
        victims[STOP_VICTIM] = len(groups)
        groups.append([STOP_VICTIM])
        tags.append("fault-victim-stop")
    station = _FaultStation(broker.url, ward)
    # The model logs each bed appearing and each alarm table reset at INFO: noise here.
    station_log = logging.getLogger("painmon.core.ward.station")
    station_level = station_log.level
    station_log.setLevel(logging.WARNING)
    children: list[subprocess.Popen[str]] = []
    faults: dict[str, dict[str, Any]] = {}
    windows: dict[str, tuple[float, float]] = {}
    dup_before: dict[str, int] = {}
    results: dict[str, Any] = {}
    killed: set[int] = set()
    try:
        station.start()
        for n, group in enumerate(groups):
            children.append(
                _spawn(root, broker.url, ward, group, hz, alarm_every_s, seed + 100 + n, tags[n])
            )
        for n, child in enumerate(children):
            if child.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise BenchError(
                    f"bed process {tags[n]} did not start: "
                    + (root / f"{tags[n]}.log").read_text()[-1500:]
                )
        go = time.time() + 0.3
        for child in children:
            child.stdin.write(f"go {go}\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
        time.sleep(WARMUP_S)
        for name in names:
            log.info("fault run: %s", name)
            started = time.time()
            with station.lock:
                dup_before[name] = station.model.duplicate_events
            fault: dict[str, Any] = {}
            t0 = time.monotonic()
            if name in ("broker-sigterm", "broker-sigkill"):
                broker.stop() if name == "broker-sigterm" else broker.kill()
                _wait_until(lambda: not station.client.connected.is_set(), 2.0)
                broker.start(timeout_s=10)
                fault["broker_down_s"] = round(time.monotonic() - t0, 3)
                back = station.wait_connected(15)
                fault["station_reconnected_s"] = round(time.monotonic() - t0, 3) if back else None
            elif name == "station-restart":
                station.stop()
                time.sleep(STATION_DOWN_S)
                station.start()
                fault["station_down_s"] = round(time.monotonic() - t0, 3)
            elif name == "bed-sigkill":
                child = children[victims[KILL_VICTIM]]
                child.kill()
                child.wait()
                killed.add(victims[KILL_VICTIM])
                since = _wait_until(
                    lambda t0=t0: _after(station.state_since(KILL_VICTIM)[0], t0), 15
                )
                fault["offline_s"] = round(since - t0, 3) if since else None
            elif name == "bed-sigstop":
                child = children[victims[STOP_VICTIM]]
                station.tick_s = FINE_TICK_S
                os.kill(child.pid, signal.SIGSTOP)
                since = _wait_until(
                    lambda t0=t0: _after(station.state_since(STOP_VICTIM)[1], t0), 10
                )
                fault["no_data_s"] = round(since - t0, 3) if since else None
                os.kill(child.pid, signal.SIGCONT)
                t1 = time.monotonic()
                live = _wait_until(lambda: station.state_since(STOP_VICTIM)[1] is None, 10.0)
                fault["data_again_s"] = round(time.monotonic() - t1, 3) if live else None
                station.tick_s = TICK_S
            time.sleep(SETTLE_S)
            windows[name] = (started, time.time())
            with station.lock:
                fault["duplicates"] = station.model.duplicate_events - dup_before[name]
            faults[name] = fault
        # Acknowledge round trips: the station asks, the bed applies and replies.
        ack_until = time.monotonic() + max(6.0, 3 * alarm_every_s)
        acks_sent = 0
        while time.monotonic() < ack_until:
            acks_sent += station.acknowledge_all(labels)
            time.sleep(0.25)
        time.sleep(1.0)
        for n, child in enumerate(children):
            if n in killed:
                continue
            child.stdin.write("stop\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
        for n, child in enumerate(children):
            if n in killed:
                continue
            out, _ = child.communicate(timeout=GRACE_S + 60)
            lines = [x for x in out.splitlines() if x.startswith("result ")]
            if child.returncode != 0 or not lines:
                raise BenchError(
                    f"bed process {tags[n]} failed (exit {child.returncode}): "
                    + (root / f"{tags[n]}.log").read_text()[-1500:]
                )
            results.update(json.loads(lines[-1][len("result ") :]))
        time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signal.SIGCONT)
                child.kill()
                child.wait()
        if station.client is not None:
            station.stop()
        station_log.setLevel(station_level)

    # Only beds that reported count (not the SIGKILLed one: what it sent died with it).
    event_times: dict[str, float] = {}
    obs_sent_by_s: dict[int, int] = {}
    obs_received_by_s: dict[int, int] = {}
    for label, bed in results.items():
        event_times.update(zip(bed["events"], bed["event_times"], strict=True))
        for second, n in bed["obs_by_s"].items():
            obs_sent_by_s[int(second)] = obs_sent_by_s.get(int(second), 0) + n
        for second, n in station.obs_by_s.get(label, {}).items():
            obs_received_by_s[second] = obs_received_by_s.get(second, 0) + n
    received = {uuid for _w, _b, uuid, _t in station.model.new_events}
    for name, (start, end) in windows.items():
        faults[name].update(
            window_report(start, end, event_times, received, obs_sent_by_s, obs_received_by_s)
        )
    ack_ms = _percentiles_ms([round(s * 1e9) for s in station.model.ack_round_trips_s])
    total_lost = sorted(set(event_times) - received)
    record = {
        "faults": faults,
        "fault_beds": beds,
        "victims": sorted(victims),
        "acknowledge_commands": acks_sent,
        "ack_round_trip_ms": ack_ms,
        "alarm_events_sent": len(event_times),
        "alarm_events_lost": len(total_lost),
        "alarm_duplicates": station.model.duplicate_events,
        "alarm_unreceipted_at_end": sum(len(b["unreceipted"]) for b in results.values()),
        "station_starts": station.starts,
        "invalid_messages": station.model.invalid_messages,
    }
    record["targets"] = fault_targets(faults, ack_ms)
    record["passed"] = all(t["met"] for t in record["targets"].values())
    return record


def format_faults(record: dict[str, Any]) -> list[str]:
    """The fault runs' lines of the printed summary."""
    lines = [
        f"fault runs ({record['fault_beds']} beds + victims {', '.join(record['victims']) or '-'}):"
        f" {record['alarm_events_sent']} alarm events, {record['alarm_events_lost']} lost,"
        f" {record['alarm_duplicates']} duplicates (de-duplicated)"
    ]
    for name, fault in record["faults"].items():
        times = ", ".join(
            f"{key} {value}"
            for key, value in fault.items()
            if key.endswith("_s") and value is not None
        )
        pct = fault["obs_delivered_pct"]
        lines.append(
            f"  {name}: {fault['alarm_events_lost']}/{fault['alarm_events_sent']} alarm events "
            f"lost, {fault['duplicates']} duplicates, obs delivered "
            f"{'n/a' if pct is None else f'{pct:.2f} %'}; {times}"
        )
    ack = record["ack_round_trip_ms"]
    lines.append(
        f"  acknowledge round trip: p50 {ack['p50']} ms, p99 {ack['p99']} ms "
        f"(n {ack['n']}, {record['acknowledge_commands']} commands)"
    )
    for name, target in record["targets"].items():
        verdict = "PASS" if target["met"] else "FAIL"
        lines.append(f"  {verdict} {name} {target['value']} (target {target['target']})")
    return lines


def _child_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m painmon.core.tools.bench_ward")
    parser.add_argument("role", choices=["bed"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ward", required=True)
    parser.add_argument("--beds", required=True, help="comma-separated bed labels")
    parser.add_argument("--hz", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--alarm-every-s", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--until-stopped", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_bed_process(
        args.url, args.ward, args.beds.split(","), args.hz, args.seconds, args.alarm_every_s,
        args.seed, out=lambda line: print(line, flush=True), until_stopped=args.until_stopped,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
