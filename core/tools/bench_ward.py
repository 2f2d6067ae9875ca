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
Only the normal run is here; the fault runs (broker SIGTERM/SIGKILL, station restart, bed
SIGKILL/SIGSTOP) are a later slice.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import os
import platform
import queue
import random
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
        self.alarm_since = ""
        self.events: list[str] = []
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


def _stamp() -> dict[str, str]:
    return {STAMP: str(time.time_ns())}


def run_bed_process(
    url: str, ward: str, beds: Sequence[str], hz: float, seconds: float, alarm_every_s: float,
    seed: int, out: Callable[[str], None] = print, read_go: Callable[[], str] = sys.stdin.readline,
) -> dict[str, Any]:  # fmt: skip
    """The child's work: connect ``beds``, say ready, wait for "go <epoch>", run, report."""
    address = BrokerAddress.parse(url)
    receipts: queue.Queue[str] = queue.Queue()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        # paho's thread: hand the receipt over, never touch the bed state here.
        try:
            if topics.parse_topic(message.topic)[2] == topics.CMD_RECEIPT:
                receipts.put(m.decode(topics.CMD_RECEIPT, message.payload).uuid)
        except InvalidInputError as exc:
            log.warning("bad command payload: %s", exc)

    sims = []
    for i, bed in enumerate(beds):
        sim = _SimBed(ward, bed, hz, random.Random(seed * 1000 + i))
        will = m.StatusMessage(ward, bed, m.utc_iso(), "offline", __version__, False, hz)
        sim.client = connect_client(
            address, f"bench-{ward}-{bed}", on_message=on_message, wait_s=30,
            will=(topics.topic(ward, bed, topics.STATUS), will.to_payload(), 1, True),
        )  # fmt: skip
        sim.client.subscribe(topics.bed_subscriptions(ward, bed)[0], qos=1)
        online = m.StatusMessage(ward, bed, m.utc_iso(), "online", __version__, False, hz)
        publish_message(sim.client, online)
        sims.append(sim)
    warm = _SimBed(ward, beds[0], hz, random.Random(seed))
    warm.obs(), warm.alarm_event()  # warm the code paths (lazy imports, regexes) before timing
    out("ready")
    start = float(read_go().split()[1])
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
        for sim in sims:
            for uuid, (event, sent_at) in list(sim.pending.items()):
                if now - sent_at >= RESEND_S:
                    publish_message(sim.client, event, user_properties=_stamp())
                    sim.pending[uuid] = (event, now)
                    sim.resends += 1

    while due and due[0][0] < end:
        when, what, i = due[0]
        now = time.time()
        if when > now:
            time.sleep(min(when - now, 0.05))
            service(time.time())
            continue
        heapq.heappop(due)
        sim = sims[i]
        if what == 0:
            publish_message(sim.client, sim.obs(), user_properties=_stamp())
            heapq.heappush(due, (when + period, 0, i))
        else:
            event, state = sim.alarm_event()
            by_uuid[event.uuid] = sim
            publish_message(sim.client, event, user_properties=_stamp())
            sim.pending[event.uuid] = (event, time.time())
            publish_message(sim.client, state)
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
) -> dict[str, Any]:
    """Run the normal ward benchmark; the record (numbers, targets met) as a dict."""
    if not 1 <= hz <= 10:
        raise InvalidInputError(f"--hz must be 1-10 (the contract's obs rate), got {hz:g}")
    if beds < 1 or seconds <= 0:
        raise InvalidInputError("--beds and --seconds must be positive")
    procs = min(beds, procs or beds)
    labels = [f"bed-{i:03d}" for i in range(1, beds + 1)]
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
        f"machine: {machine['cpus']} CPUs, {machine['platform']}, {machine['broker']}",
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
    return "\n".join(lines)


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write the record as JSON (atomically)."""
    atomic_write_json(path, record)


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_bed_process(
        args.url, args.ward, args.beds.split(","), args.hz, args.seconds, args.alarm_every_s,
        args.seed, out=lambda line: print(line, flush=True),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
