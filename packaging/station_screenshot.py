"""Render the central station window with 9 beds to PNG files (the README's screenshot).

    python packaging/station_screenshot.py OUTDIR     # offscreen when there is no display

A real Eclipse Mosquitto is started on a free 127.0.0.1 port, the station connects to it,
and nine simulated beds (bare paho clients publishing contract messages) join the ward:
bed3 in a HIGH pain alarm, bed6 in a MEDIUM alarm acknowledged from the station, bed5
with no face in view (technical alarm, level unknown), bed7 connected and then vanished
(its Last Will shows it OFFLINE). The ten minutes before are replayed into the station's
model first (the same payloads, through the same schema check) so that the sparklines
are full. Writes ``station.png`` (the ward) and ``station_trend.png`` (bed3's trend).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WARD = "icu"
BEDS = tuple(f"bed{i}" for i in range(1, 10))
ALARM_BED, ACKED_BED, NO_FACE_BED, OFFLINE_BED = "bed3", "bed6", "bed5", "bed7"
HISTORY_S = 600
WINDOW_PX = (1600, 640)


class _Silent:
    """A sound effect that plays nothing (a screenshot needs no speaker)."""

    def play(self) -> None:
        pass

    def stop(self) -> None:
        pass


def level_at(bed: str, t_s: float) -> float | None:
    """The simulated smoothed level of ``bed`` ``t_s`` seconds into the ten minutes."""
    index = BEDS.index(bed)
    if bed == NO_FACE_BED and t_s > HISTORY_S - 40:
        return None
    base = 0.4 + 0.25 * index % 1.6
    wave = 0.35 * math.sin(t_s / (70 + 13 * index) + index)
    if bed == ALARM_BED:  # climbs into a HIGH alarm over the last four minutes
        base += max(0.0, (t_s - HISTORY_S + 240) / 240) * 2.9
    if bed == ACKED_BED:
        base += max(0.0, (t_s - HISTORY_S + 300) / 300) * 2.3
    return round(min(4.0, max(0.0, base + wave)), 2)


def obs_message(bed: str, seq: int, level: float | None) -> Any:
    from painmon.core.ward import messages

    now = messages.utc_iso()
    if level is None:
        return messages.ObsMessage(
            WARD, bed, now, seq, False, None, None, None, None, ("NO_FACE",), "no face in view"
        )
    band = min(4, math.floor(level + 0.5))
    low = min(3, math.floor(level))
    p = [0.0] * 5
    p[low], p[low + 1] = low + 1 - level, level - low
    return messages.ObsMessage(WARD, bed, now, seq, True, level, tuple(p), 0.8, band)


def event_message(bed: str, seq: int, phase: str, priority: str, condition: str = "PAIN") -> Any:
    from painmon.core.ward import messages

    kind = "pain" if condition == "PAIN" else "technical"
    return messages.AlarmEventMessage(
        WARD,
        bed,
        messages.utc_iso(),
        messages.new_uuid(),
        seq,
        kind,
        condition,
        priority,
        phase,
        f"{priority} {kind} alarm",
        acknowledged=phase == "acknowledge",
        by="station" if phase == "acknowledge" else None,
    )


def render(outdir: Path, workdir: Path) -> list[Path]:
    """Run broker, station and beds; save the PNGs into ``outdir``; their paths."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from painmon.app.sound import AlarmSound
    from painmon.app.station_window import StationWindow
    from painmon.core.live.display import HIGH_BLINK_HZ
    from painmon.core.ward import messages, topics
    from painmon.core.ward.broker import MosquittoBroker
    from painmon.core.ward.client import (
        BrokerAddress,
        close_client,
        connect_client,
        publish_message,
    )
    from painmon.core.ward.station import BedState, StationClient, StationModel

    app = QApplication.instance() or QApplication(sys.argv[:1])
    outdir.mkdir(parents=True, exist_ok=True)
    with MosquittoBroker(workdir / "broker") as broker:
        address = BrokerAddress.parse(broker.url)
        model = StationModel("nurses")
        start_s = time.monotonic()
        for second in range(HISTORY_S):  # the ten minutes before, replayed into the model
            for bed in BEDS:
                obs = obs_message(bed, second, level_at(bed, second))
                model.on_message(
                    topics.topic(WARD, bed, topics.OBS),
                    obs.to_payload(),
                    start_s - HISTORY_S + second,
                )
        client = StationClient(address, ward=WARD, station_id="nurses")
        window = StationWindow(
            model, client, sound=AlarmSound(effect_factory=lambda _path: _Silent())
        )
        window.resize(*WINDOW_PX)
        window.show()
        client.start(wait_s=5)
        beds: dict[str, Any] = {}
        for bed in BEDS:
            offline = messages.StatusMessage(WARD, bed, messages.utc_iso(), "offline", "painmon")
            beds[bed] = connect_client(
                address,
                f"sim-{bed}",
                will=(topics.topic(WARD, bed, topics.STATUS), offline.to_payload(), 1, True),
            )
            status = messages.StatusMessage(
                WARD, bed, messages.utc_iso(), "online", "painmon", remote_ack=bed == ACKED_BED
            )
            publish_message(beds[bed], status).wait_for_publish(5)
        events = [
            (ALARM_BED, event_message(ALARM_BED, 1, "start", "medium")),
            (ALARM_BED, event_message(ALARM_BED, 2, "escalate", "high")),
            (ACKED_BED, event_message(ACKED_BED, 1, "start", "medium")),
            (ACKED_BED, event_message(ACKED_BED, 2, "acknowledge", "medium")),
            (NO_FACE_BED, event_message(NO_FACE_BED, 1, "start", "low", "NO_FACE")),
        ]
        for bed, event in events:
            publish_message(beds[bed], event).wait_for_publish(5)
        seq = HISTORY_S
        deadline = time.monotonic() + 10.0
        vanished = False
        try:
            while time.monotonic() < deadline:
                for bed, mqtt in beds.items():
                    if bed == OFFLINE_BED and vanished:
                        continue
                    publish_message(mqtt, obs_message(bed, seq, level_at(bed, HISTORY_S - 1)))
                seq += 1
                if not vanished and seq > HISTORY_S + 2:
                    beds[OFFLINE_BED].loop_stop()  # dies without DISCONNECT: the Will
                    beds[OFFLINE_BED].socket().close()
                    vanished = True
                for _ in range(5):
                    app.processEvents()
                    time.sleep(0.05)
                view = window.last_view
                if (
                    vanished
                    and view is not None
                    and len(view.beds) == len(BEDS)
                    and view.bed(WARD, OFFLINE_BED).state is BedState.OFFLINE
                    and view.bed(WARD, ALARM_BED).priority == "high"
                    and view.bed(WARD, ACKED_BED).acknowledged
                    and sum(b.state is BedState.ONLINE for b in view.beds) == len(BEDS) - 1
                ):
                    break
            else:
                raise RuntimeError("the simulated ward did not reach its states in 10 s")
            while int(time.monotonic() * HIGH_BLINK_HZ * 2) % 2:  # the alarm's bright phase
                time.sleep(0.02)
            window.refresh()
            written = [outdir / "station.png"]
            window.grab().save(str(written[0]))
            dialog = window.open_trend(WARD, ALARM_BED)
            dialog.resize(900, 520)
            app.processEvents()
            written.append(outdir / "station_trend.png")
            dialog.grab().save(str(written[1]))
        finally:
            for bed, mqtt in beds.items():
                if not (bed == OFFLINE_BED and vanished):
                    close_client(mqtt)
            window.close()
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="painmon-station-") as work:
        for path in render(Path(argv[0]), Path(work)):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
