"""``painmon hl7-gateway``: the ward bus → the hospital record (HL7 v2.6 over MLLP).

The gateway subscribes like a station but only listens: it sends no receipts (the station
confirms alarms to the beds) and no commands. Per bed it gathers the period's observations
(``--every-s``, default 60 s) into one PCD-01 ORU^R01 (median level of the known ones,
median confidence, counts of observations and of unknown ones), and turns every alarm
event it has not seen before (by uuid) into one PCD-04 ORU^R40: the event's alert id
(the same on every phase of one alarm; an older bed's events have none, and their uuid
stands in) in OBR-3, an MSH-10 derived from the event's uuid. Each message goes into the
durable :class:`~painmon.core.ward.outbox.Outbox` first; the sender delivers it until the
receiver's ``MSA|AA``.

Threads: paho's network thread only puts ``(topic, payload, t)`` on a queue; one worker
thread decodes, aggregates and writes the outbox; the outbox sender has its own thread.
A clean stop writes the partial periods too, so a restart loses nothing; a crash loses at
most the current, unwritten period of observations — never a written message. The MQTT
session is persistent (fixed client id, session expiry) when the client module offers it,
so alarm events published while the gateway restarts wait at the broker. Those arrive
before the retained status messages that carry the beds' pseudonyms, so the bed →
pseudonym table is kept in ``<outbox>/pseudonyms.json`` (private, written atomically on
every change, read at start). Every message must name the ward and bed of the topic it
came on (a bed may publish only there): one that names another bed is refused.
"""

from __future__ import annotations

import json
import logging
import queue
import statistics
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_write
from painmon.core.ward import topics
from painmon.core.ward.hl7 import (
    AlarmReport,
    PainPeriodSummary,
    alarm_control_id,
    build_alarm_report,
    build_observation_report,
)
from painmon.core.ward.messages import (
    AlarmEventMessage,
    ObsMessage,
    StatusMessage,
    decode,
    parse_utc,
)
from painmon.core.ward.outbox import Outbox, OutboxSender

log = logging.getLogger(__name__)

DEFAULT_EVERY_S = 60.0
SEEN_ALARMS_MAX = 100_000
PSEUDONYMS_FILE = "pseudonyms.json"  # beside the outbox's pending/ and rejected/
INVALID_WARNINGS_MAX = 20  # bad messages logged as warnings; the rest at debug


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of the MLLP receiver."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"--mllp {text!r} is not HOST:PORT (e.g. 10.1.2.3:2575)")
    return host.strip("[]"), int(port)


@dataclass
class _Period:
    start_s: float
    first_time: datetime
    last_time: datetime
    levels: list[float] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    unknown_reasons: Counter[str] = field(default_factory=Counter)
    n_obs: int = 0


class ObsAggregator:
    """Per-bed periods of ``every_s`` seconds (injectable clock: pass ``now_s``)."""

    def __init__(self, every_s: float = DEFAULT_EVERY_S) -> None:
        if not every_s > 0:
            raise InvalidInputError(f"--every-s must be positive, not {every_s}")
        self.every_s = float(every_s)
        self._periods: dict[tuple[str, str], _Period] = {}

    def add(self, obs: ObsMessage, now_s: float) -> None:
        key = (obs.ward, obs.bed)
        moment = parse_utc(obs.time)
        period = self._periods.get(key)
        if period is None:
            period = self._periods[key] = _Period(now_s, moment, moment)
        period.first_time = min(period.first_time, moment)
        period.last_time = max(period.last_time, moment)
        period.n_obs += 1
        if obs.known and obs.level is not None:
            period.levels.append(obs.level)
            if obs.confidence is not None:
                period.confidences.append(obs.confidence)
        else:
            reason = obs.unknown_reason or ",".join(obs.technical) or "unknown"
            period.unknown_reasons[reason] += 1

    def due(self, now_s: float, pseudonyms: dict[tuple[str, str], str] | None = None):
        """The summaries of the periods that have ended by ``now_s`` (and forget them)."""
        ended = [k for k, p in self._periods.items() if now_s - p.start_s >= self.every_s]
        return [self._summary(k, self._periods.pop(k), pseudonyms) for k in sorted(ended)]

    def flush(self, pseudonyms: dict[tuple[str, str], str] | None = None):
        """Every open period, ended now (a clean stop)."""
        keys = sorted(self._periods)
        return [self._summary(k, self._periods.pop(k), pseudonyms) for k in keys]

    def _summary(self, key, period: _Period, pseudonyms) -> PainPeriodSummary:
        ward, bed = key
        n_unknown = period.n_obs - len(period.levels)
        reason = period.unknown_reasons.most_common(1)[0][0] if period.unknown_reasons else None
        return PainPeriodSummary(
            ward=ward,
            bed=bed,
            start=period.first_time,
            end=max(period.last_time, period.first_time),
            n_obs=period.n_obs,
            n_unknown=n_unknown,
            median_level=statistics.median(period.levels) if period.levels else None,
            median_confidence=(
                statistics.median(period.confidences) if period.confidences else None
            ),
            unknown_reason=reason if not period.levels else None,
            pseudonym=(pseudonyms or {}).get(key),
        )


class Hl7Gateway:
    """Bus in, outbox out. ``start()``/``stop()``; ``produced`` lists the control ids made."""

    def __init__(
        self,
        broker_url: str,
        mllp_host: str,
        mllp_port: int,
        outbox_dir: str | Path,
        *,
        ward: str = "+",
        every_s: float = DEFAULT_EVERY_S,
        username: str | None = None,
        password: str | None = None,
        tls: Any = None,
        client_id: str | None = None,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        mllp_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ward != "+":
            topics.check_label(ward, "ward")
        self.broker_url = broker_url
        self.ward = ward
        self.username = username
        self._password = password
        self.tls = tls
        self.client_id = client_id or f"painmon-hl7-gateway-{ward.replace('+', 'all')}"
        self.clock = clock
        self.aggregator = ObsAggregator(every_s)
        self.outbox = Outbox(outbox_dir)
        self.sender = OutboxSender(
            self.outbox,
            mllp_host,
            mllp_port,
            timeout_s=mllp_timeout_s,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
        )
        self.produced: list[str] = []
        # Kept beside the outbox: after a restart the alarm events queued at the broker
        # arrive before the retained status that names the bed's pseudonym.
        self.pseudonyms_path = self.outbox.folder / PSEUDONYMS_FILE
        self.pseudonyms: dict[tuple[str, str], str] = _load_pseudonyms(self.pseudonyms_path)
        self._seen_alarms: OrderedDict[str, None] = OrderedDict()
        self._inbox: queue.Queue[tuple[str, bytes, float]] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._client: Any = None
        self.decode_errors = 0

    # -- paho's thread: hand over only -------------------------------------------------
    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        self._inbox.put((message.topic, bytes(message.payload), self.clock()))

    def _on_connect(
        self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        # Subscribe on every (re)connect: a clean-start session forgets subscriptions.
        if not reason.is_failure:
            for pattern in topics.station_subscriptions(self.ward):
                client.subscribe(pattern, qos=1)

    def start(self) -> Hl7Gateway:
        """Send what a previous run left in the outbox, then subscribe."""
        from painmon.core.ward.client import BrokerAddress, connect_client

        address = BrokerAddress.parse(self.broker_url)
        self.sender.start()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="hl7-gateway", daemon=True)
        self._worker.start()
        try:
            self._client = connect_client(
                address,
                self.client_id,
                username=self.username,
                password=self._password,
                tls=self.tls,
                on_connect=self._on_connect,
                on_message=self._on_message,
                **_session_kwargs(connect_client),
            )
        except BaseException:
            self.stop(drain_s=0)
            raise
        return self

    def stop(self, drain_s: float = 2.0) -> None:
        """Unsubscribe, write every open period, give the sender ``drain_s`` to deliver."""
        if self._client is not None:
            from painmon.core.ward.client import close_client

            client, self._client = self._client, None
            close_client(client)
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=10)
            self._worker = None
        self._process_queue()
        for summary in self.aggregator.flush(self.pseudonyms):
            self._emit(build_observation_report(summary))
        if drain_s > 0:
            self.sender.wait_empty(drain_s)
        self.sender.stop()

    def __enter__(self) -> Hl7Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the worker thread --------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            self._process_queue(block_s=0.1)
            self.tick(self.clock())

    def tick(self, now_s: float) -> None:
        """Write the periods that have ended by ``now_s``."""
        for summary in self.aggregator.due(now_s, self.pseudonyms):
            self._emit(build_observation_report(summary))

    def _process_queue(self, block_s: float = 0.0) -> None:
        try:
            item = self._inbox.get(timeout=block_s) if block_s else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self.handle(*item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def handle(self, topic_name: str, payload: bytes, now_s: float) -> None:
        """One bus message (the worker calls this; tests may too)."""
        try:
            ward, bed, leaf = topics.parse_topic(topic_name)
            if leaf not in (topics.OBS, topics.ALARM_EVENT, topics.STATUS):
                return
            message = decode(leaf, payload)
        except InvalidInputError as exc:
            self._invalid(topic_name, str(exc))
            return
        if (message.ward, message.bed) != (ward, bed):
            # A bed may publish only on its own topics (the ACL), but the payload is its own
            # word: one naming another bed must not write into that bed's record (PV1-3) or
            # replace its pseudonym. The station refuses the same messages.
            self._invalid(
                topic_name, f"payload names {message.ward}/{message.bed}, not the topic's bed"
            )
            return
        if isinstance(message, ObsMessage):
            self.aggregator.add(message, now_s)
        elif isinstance(message, StatusMessage):
            self._on_status(message)
        elif isinstance(message, AlarmEventMessage):
            self._on_alarm(message)

    def _on_status(self, status: StatusMessage) -> None:
        key = (status.ward, status.bed)
        before = self.pseudonyms.get(key)
        if status.pseudonym:
            self.pseudonyms[key] = status.pseudonym
        elif status.state == "online":  # a bed online without one: no (or a new) patient
            self.pseudonyms.pop(key, None)
        if self.pseudonyms.get(key) != before:
            _save_pseudonyms(self.pseudonyms_path, self.pseudonyms)

    def _invalid(self, topic_name: str, why: str) -> None:
        self.decode_errors += 1
        # One line per bad message; a flood of them is the sender's fault, logged at debug.
        level = logging.WARNING if self.decode_errors <= INVALID_WARNINGS_MAX else logging.DEBUG
        log.log(level, "ignored a bad message on %s: %s", topic_name, why)

    def _on_alarm(self, event: AlarmEventMessage) -> None:
        if event.uuid in self._seen_alarms:
            return  # the bed re-sends until the station's receipt: one report is enough
        self._seen_alarms[event.uuid] = None
        while len(self._seen_alarms) > SEEN_ALARMS_MAX:
            self._seen_alarms.popitem(last=False)
        report = AlarmReport(
            ward=event.ward,
            bed=event.bed,
            uuid=event.uuid,
            seq=event.seq,
            time=parse_utc(event.time),
            kind=event.kind,
            condition=event.condition,
            priority=event.priority,
            phase=event.phase,
            message=event.message,
            acknowledged=event.acknowledged,
            by=event.by,
            pseudonym=self.pseudonyms.get((event.ward, event.bed)),
            alert_id=event.alert_identifier,
        )
        self._emit(build_alarm_report(report, control_id=alarm_control_id(event.uuid)))

    def _emit(self, built: tuple[str, str]) -> None:
        control_id, er7 = built
        self.outbox.put(er7.encode("utf-8"))
        self.produced.append(control_id)
        self.sender.notify()


def _load_pseudonyms(path: Path) -> dict[tuple[str, str], str]:
    """The bed → pseudonym table a previous run saved; empty if none (or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("pseudonym table %s is unreadable (%s); starting without it", path, exc)
        return {}
    entries = data.get("beds") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        log.warning("pseudonym table %s holds no list of beds; starting without it", path)
        return {}
    table: dict[tuple[str, str], str] = {}
    for entry in entries:
        try:
            ward, bed, pseudonym = entry["ward"], entry["bed"], entry["pseudonym"]
            topics.check_label(ward, "ward")
            topics.check_label(bed, "bed")
            if not isinstance(pseudonym, str) or not pseudonym:
                raise InvalidInputError("the pseudonym is not a text")
        except (InvalidInputError, KeyError, TypeError) as exc:
            log.warning("pseudonym table %s: skipped an entry (%s)", path, exc)
            continue
        table[(ward, bed)] = pseudonym
    return table


def _save_pseudonyms(path: Path, table: dict[tuple[str, str], str]) -> None:
    beds = [{"ward": w, "bed": b, "pseudonym": p} for (w, b), p in sorted(table.items())]
    text = json.dumps({"version": 1, "beds": beds}, indent=2) + "\n"
    try:
        # Private, like the outbox's messages; atomic: a crash leaves the old table or the new.
        atomic_write(path, lambda handle: handle.write(text), mode=0o600)
    except OSError as exc:  # the table in memory still holds; the next change writes again
        log.error("could not save the pseudonym table %s: %s", path, exc)


def _session_kwargs(connect_client: Callable[..., Any]) -> dict[str, Any]:
    """Ask for a persistent MQTT session when the client module offers one."""
    import inspect

    params = inspect.signature(connect_client).parameters
    if "session_expiry_s" in params:
        return {"session_expiry_s": 3600}
    return {}


def run_gateway_cli(
    broker_url: str,
    mllp: str,
    outbox_dir: Path,
    *,
    ward: str = "+",
    every_s: float = DEFAULT_EVERY_S,
    username: str | None = None,
    password: str | None = None,
    tls: Any = None,
    stop: threading.Event | None = None,
) -> int:
    """Run until Ctrl+C (or ``stop``); 0 on a clean stop."""
    from painmon.core.ward.client import BrokerAddress

    BrokerAddress.parse_option(broker_url, "--broker")
    host, port = parse_host_port(mllp)
    gateway = Hl7Gateway(
        broker_url,
        host,
        port,
        outbox_dir,
        ward=ward,
        every_s=every_s,
        username=username,
        password=password,
        tls=tls,
    )
    waiting = len(gateway.outbox.pending())
    log.info(
        "hl7-gateway: ward %s, one ORU^R01 per bed per %g s, outbox %s (%d waiting)",
        ward,
        every_s,
        outbox_dir,
        waiting,
    )
    stop = stop or threading.Event()
    gateway.start()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        log.info("hl7-gateway: stopping")
    finally:
        gateway.stop()
    left = len(gateway.outbox.pending())
    if left:
        log.warning(
            "hl7-gateway: %d message(s) still in %s, sent at the next start",
            left,
            gateway.outbox.pending_dir,
        )
    return 0


__all__ = [
    "DEFAULT_EVERY_S",
    "Hl7Gateway",
    "ObsAggregator",
    "parse_host_port",
    "run_gateway_cli",
]
