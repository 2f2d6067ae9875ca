"""MQTT topic names of the ward bus: ``painmon/v1/<ward>/<bed>/<leaf>``.

Labels are checked before they reach a topic: an MQTT wildcard (``+``, ``#``), a level
separator or a leading ``$`` in a bed label would let one bed publish or read another's
topics, so they are refused here, once, for every user of the bus.
"""

from __future__ import annotations

import re

from painmon.core.util.errors import InvalidInputError

PREFIX = "painmon/v1"

OBS = "obs"
ALARM_EVENT = "alarm/event"
ALARM_STATE = "alarm/state"
STATUS = "status"
CMD_RECEIPT = "cmd/receipt"
CMD_ACKNOWLEDGE = "cmd/acknowledge"
CMD_REPLY = "cmd_reply"

# Every leaf with its QoS and retained flag (the contract's table).
LEAVES: dict[str, tuple[int, bool]] = {
    OBS: (0, False),
    ALARM_EVENT: (1, False),
    ALARM_STATE: (1, True),
    STATUS: (1, True),
    CMD_RECEIPT: (1, False),
    CMD_ACKNOWLEDGE: (1, False),
    CMD_REPLY: (1, False),
}

# MQTT5 Message Expiry Interval of an obs: a stale level is worse than none.
OBS_EXPIRY_S = 2

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def check_label(label: str, what: str = "label") -> str:
    """``label`` when it is a valid ward or bed label, else InvalidInputError."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise InvalidInputError(
            f"{what} {label!r} is not valid: use 1-32 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no spaces, '/', '+', '#' or '$')"
        )
    return label


def qos_of(leaf: str) -> int:
    """The QoS the contract gives ``leaf``."""
    return LEAVES[_check_leaf(leaf)][0]


def retained(leaf: str) -> bool:
    """Whether messages on ``leaf`` are retained."""
    return LEAVES[_check_leaf(leaf)][1]


def _check_leaf(leaf: str) -> str:
    if leaf not in LEAVES:
        raise InvalidInputError(f"unknown topic leaf {leaf!r}: expected one of {sorted(LEAVES)}")
    return leaf


def topic(ward: str, bed: str, leaf: str) -> str:
    """The topic of ``leaf`` for one bed."""
    check_label(ward, "ward")
    check_label(bed, "bed")
    return f"{PREFIX}/{ward}/{bed}/{_check_leaf(leaf)}"


def parse_topic(name: str) -> tuple[str, str, str]:
    """``(ward, bed, leaf)`` of a ward-bus topic; InvalidInputError for any other topic."""
    head = PREFIX + "/"
    if not isinstance(name, str) or not name.startswith(head):
        raise InvalidInputError(f"topic {name!r} is not a painmon ward topic ({PREFIX}/...)")
    parts = name[len(head) :].split("/", 2)
    if len(parts) != 3:
        raise InvalidInputError(f"topic {name!r} lacks <ward>/<bed>/<leaf>")
    ward, bed, leaf = parts
    check_label(ward, "ward")
    check_label(bed, "bed")
    return ward, bed, _check_leaf(leaf)


def bed_subscriptions(ward: str, bed: str) -> list[str]:
    """What a bed subscribes to: its own commands only."""
    return [f"{PREFIX}/{check_label(ward, 'ward')}/{check_label(bed, 'bed')}/cmd/#"]


def station_subscriptions(ward: str = "+") -> list[str]:
    """What a station (or the HL7 gateway) subscribes to: every bed of ``ward`` (``+``: all)."""
    if ward != "+":
        check_label(ward, "ward")
    base = f"{PREFIX}/{ward}/+"
    return [f"{base}/{OBS}", f"{base}/alarm/#", f"{base}/{STATUS}", f"{base}/{CMD_REPLY}"]
