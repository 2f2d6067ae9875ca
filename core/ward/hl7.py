"""HL7 v2.6 messages for the hospital record, built with hl7apy (no segment strings by hand).

Two messages leave the gateway:

* :func:`build_observation_report` — ORU^R01^ORU_R01 after IHE PCD-01 (Communicate PCD
  Data): one per bed per period, the period's median facial pain level in an ``NM`` OBX
  under a local code with SNOMED CT 225908003 "Pain score" as the alternate coding in OBX-3
  (no LOINC code fits an *observed facial* pain level; the LOINC pain codes are
  self-report scales), the median confidence beside it, and the counts of observations and
  of unknown ones. A period with no known output carries the pain OBX with result status
  ``X`` ("results cannot be obtained") and no value, plus an OBX saying why.
* :func:`build_alarm_report` — ORU^R40^ORU_R40 after IHE PCD-04 (Report Alert, profile
  ACM): the alert identifier in OBR-3 and OBX-21, the same on every report of one alarm
  (start, escalate, acknowledge, end: the bus event's ``alert_id``; for an event from a
  bed older than that field, the event's own uuid) so a receiver links the phases of one
  alarm, while each report is one message of its own: MSH-10 is derived from the bus
  event's uuid (:func:`alarm_control_id`), so a bus event reported twice (the bed re-sends
  until the station's receipt; a restarted gateway forgets what it saw) carries the same
  MSH-10 and the receiver drops the copy. OBR-4 ``196616^MDC_EVT_ALARM^MDC``, and the alert
  "facets" as OBX segments told apart by a dotted OBX-4: 1 = source and event
  identification with priority and kind in OBX-8 (``PH``/``PM``/``PL``/``PN`` and
  ``SP`` physiological or ``ST`` technical), 2 = event phase, 3 = alert state, 4 =
  inactivation state (``alert-acknowledged`` after an acknowledge).
  hl7apy 1.3.5 has no ORU_R40 grammar for v2.6 (the structure was pre-adopted by IHE from
  v2.7); ORU_R40 shares ORU_R01's segment grammar for every segment used here, so the tree
  is built and validated as ORU_R01 and MSH-9 is then stamped ``ORU^R40^ORU_R40``.

No patient name is ever written: PID-5 is ``^^^^^^U`` (name unknown, as IHE PCD asks when
the device does not know it) and PID-3 carries the bed's pseudonym only if one is
configured (identifier type ``ANON``); otherwise PID-3 stays empty and the receiver binds
the data to its patient through the bed location in PV1-3 (ward^^bed).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

from painmon.core.util.errors import InvalidInputError

HL7_VERSION = "2.6"
SENDING_APPLICATION = "PAINMON"
PCD01_PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
PCD04_PROFILE = "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO"
MONITORING_SERVICE = "182777000^monitoring of patient^SCT"
ALARM_SERVICE = "196616^MDC_EVT_ALARM^MDC"
# The facial pain level: our own code first, SNOMED CT "Pain score" as the alternate coding.
PAIN_LEVEL_CODE = "PAINMON-FACIAL-PAIN^Facial pain level (painmon)^L^225908003^Pain score^SCT"
PAIN_LEVEL_UNITS = "{score}^score 0-4^UCUM"
PAIN_LEVEL_RANGE = "0-4"
CONFIDENCE_CODE = "PAINMON-CONFIDENCE^Confidence of the facial pain level (painmon)^L"
OBS_COUNT_CODE = "PAINMON-OBS-COUNT^Observations in the period (painmon)^L"
UNKNOWN_COUNT_CODE = "PAINMON-UNKNOWN-COUNT^Observations with unknown output (painmon)^L"
UNKNOWN_REASON_CODE = "PAINMON-UNKNOWN^Facial pain level unknown, reason (painmon)^L"
DEVICE_SOURCE_CODE = "PAINMON-DEVICE^painmon bedside monitor^L"
EVENT_PHASE_CODE = "68481^MDC_ATTR_EVENT_PHASE^MDC"
ALERT_STATE_CODE = "68482^MDC_ATTR_ALARM_STATE^MDC"
INACTIVATION_STATE_CODE = "68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC"
AUTO_MEASUREMENT = "AMEAS^auto-measurement^MDC"
RESULT_UNVERIFIED = "R"  # device data, not validated by a clinician (IHE PCD-01)
RESULT_NOT_OBTAINED = "X"

PRIORITY_FLAGS = {"high": "PH", "medium": "PM", "low": "PL", "none": "PN"}
KIND_FLAGS = {"pain": "SP", "technical": "ST"}
# Our phases → IHE ACM event phase; an acknowledge is an update whose inactivation state
# becomes "alert-acknowledged".
ACM_PHASES = {"start": "start", "escalate": "escalate", "acknowledge": "update", "end": "end"}

# HL7 v2 delimiters that free text must not carry (hl7apy escapes some, not all, of them
# in a "varies" field): human alarm text loses them instead of corrupting the message.
# Every control character becomes a space too: LF (and VT, FF) ends a segment at receivers
# that split on any line break (Mirth does, so does mllp._segments), and 0x0b/0x1c are the
# MLLP block bytes (a message holding one is refused before it is sent). C1 controls go as
# well (U+0085 is a line break to some readers).
_DELIMITER_SWAP = str.maketrans(
    {"|": "/", "^": " ", "&": "+", "~": "-", "\\": "/"}
    | {chr(code): " " for code in (*range(0x20), *range(0x7F, 0xA0))}
)


def new_control_id() -> str:
    """A unique MSH-10 (20 hex characters: fits every receiver's length limit)."""
    return uuid.uuid4().hex[:20]


def alarm_control_id(event_uuid: str) -> str:
    """The MSH-10 of the ORU^R40 of one bus alarm event: 20 hex characters of its uuid, so
    the same event reported again is recognisably the same message (a different event, even
    a later phase of the same alarm, gets a different one)."""
    digits = event_uuid.replace("-", "").lower()
    if len(digits) != 32 or any(c not in "0123456789abcdef" for c in digits):
        raise InvalidInputError(f"alarm event uuid {event_uuid!r} is not a uuid")
    return digits[:20]


def hl7_time(moment: datetime) -> str:
    """``YYYYMMDDHHMMSS.fff+0000`` (HL7 DTM in UTC, milliseconds, explicit offset)."""
    if moment.tzinfo is None:
        raise InvalidInputError("HL7 times must be timezone-aware (UTC)")
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%d%H%M%S") + f".{moment.microsecond // 1000:03d}+0000"


def _plain_text(text: str, limit: int = 199) -> str:
    return text.translate(_DELIMITER_SWAP)[:limit]


def _number(value: float) -> str:
    return f"{round(value, 2):g}"


@dataclass(frozen=True)
class PainPeriodSummary:
    """One bed's observations over one reporting period (what one ORU^R01 carries)."""

    ward: str
    bed: str
    start: datetime
    end: datetime
    n_obs: int
    n_unknown: int
    median_level: float | None
    median_confidence: float | None = None
    unknown_reason: str | None = None
    pseudonym: str | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvalidInputError("period start/end must be timezone-aware")
        if self.end < self.start:
            raise InvalidInputError("period end is before its start")
        if self.n_obs < 0 or not 0 <= self.n_unknown <= self.n_obs:
            raise InvalidInputError("n_unknown must lie between 0 and n_obs")
        if self.median_level is not None and not (
            math.isfinite(self.median_level) and 0.0 <= self.median_level <= 4.0
        ):
            raise InvalidInputError(f"median_level {self.median_level} is outside 0-4")
        if self.median_confidence is not None and not 0.0 <= self.median_confidence <= 1.0:
            raise InvalidInputError(f"median_confidence {self.median_confidence} is outside 0-1")
        if self.median_level is None and self.n_unknown != self.n_obs:
            raise InvalidInputError("a period without a level must have only unknown obs")


@dataclass(frozen=True)
class AlarmReport:
    """One alarm event from the bus, as one PCD-04 message carries it.

    ``uuid`` is the event's, ``alert_id`` the alarm's (the same on all its phases); without
    an ``alert_id`` (a bed older than that field) the event's uuid stands in for it.
    """

    ward: str
    bed: str
    uuid: str
    seq: int
    time: datetime
    kind: str
    condition: str
    priority: str
    phase: str
    message: str = ""
    acknowledged: bool = False
    by: str | None = None
    pseudonym: str | None = None
    alert_id: str | None = None

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise InvalidInputError("alarm time must be timezone-aware")
        if self.kind not in KIND_FLAGS:
            raise InvalidInputError(f"alarm kind {self.kind!r} is not one of {list(KIND_FLAGS)}")
        if self.priority not in PRIORITY_FLAGS:
            raise InvalidInputError(f"alarm priority {self.priority!r} is not known")
        if self.phase not in ACM_PHASES:
            raise InvalidInputError(f"alarm phase {self.phase!r} is not known")
        if not self.uuid or not self.condition:
            raise InvalidInputError("an alarm needs its uuid and condition")

    @property
    def alert_identifier(self) -> str:
        """OBR-3 / OBX-21: the alarm's id, or the event's uuid when the bed sent none."""
        return self.alert_id or self.uuid


def _new_message(message_type: str, control_id: str, now: datetime, profile: str) -> Message:
    msg = Message("ORU_R01", version=HL7_VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msg.msh.msh_3 = SENDING_APPLICATION
    msg.msh.msh_7 = hl7_time(now)
    msg.msh.msh_9 = message_type
    msg.msh.msh_10 = control_id
    msg.msh.msh_11 = "P"
    msg.msh.msh_15 = "AL"  # accept acknowledgement: always (the outbox waits for MSA|AA)
    msg.msh.msh_16 = "NE"
    msg.msh.msh_18 = "UNICODE UTF-8"
    msg.msh.msh_21 = profile
    return msg


def _patient_and_visit(result, ward: str, bed: str, pseudonym: str | None) -> None:
    patient = result.add_group("ORU_R01_PATIENT")
    if pseudonym:
        patient.pid.pid_3 = f"{_plain_text(pseudonym, 64)}^^^PAINMON^ANON"
    patient.pid.pid_5 = "^^^^^^U"  # name unknown: painmon never carries a patient name
    visit = patient.add_group("ORU_R01_VISIT")
    visit.pv1.pv1_2 = "I"
    visit.pv1.pv1_3 = f"{_plain_text(ward, 32)}^^{_plain_text(bed, 32)}"


def _obx(order, set_id: int, value_type: str, code: str, sub_id: str, when: datetime):
    obs = order.add_group("ORU_R01_OBSERVATION")
    obs.obx.obx_1 = str(set_id)
    obs.obx.obx_2 = value_type
    obs.obx.obx_3 = code
    obs.obx.obx_4 = sub_id
    obs.obx.obx_11 = RESULT_UNVERIFIED
    obs.obx.obx_14 = hl7_time(when)
    return obs.obx


def build_observation_report(
    summary: PainPeriodSummary, *, control_id: str | None = None, now: datetime | None = None
) -> tuple[str, str]:
    """``(control_id, ER7 text)`` of the PCD-01 ORU^R01 for one bed's period."""
    control_id = control_id or new_control_id()
    now = now or datetime.now(UTC)
    msg = _new_message("ORU^R01^ORU_R01", control_id, now, PCD01_PROFILE)
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    _patient_and_visit(result, summary.ward, summary.bed, summary.pseudonym)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_1 = "1"
    order.obr.obr_3 = f"{control_id}^{SENDING_APPLICATION}"
    order.obr.obr_4 = MONITORING_SERVICE
    order.obr.obr_7 = hl7_time(summary.start)
    order.obr.obr_8 = hl7_time(summary.end)
    set_id = 1
    pain = _obx(order, set_id, "NM", PAIN_LEVEL_CODE, "1.0.1.1", summary.end)
    pain.obx_6 = PAIN_LEVEL_UNITS
    pain.obx_7 = PAIN_LEVEL_RANGE
    pain.obx_17 = AUTO_MEASUREMENT
    if summary.median_level is None:
        pain.obx_11 = RESULT_NOT_OBTAINED  # no number when the output was unknown
    else:
        pain.obx_5 = _number(summary.median_level)
    if summary.median_confidence is not None and summary.median_level is not None:
        set_id += 1
        conf = _obx(order, set_id, "NM", CONFIDENCE_CODE, "1.0.1.2", summary.end)
        conf.obx_5 = _number(summary.median_confidence)
        conf.obx_6 = "1^ratio^UCUM"
        conf.obx_7 = "0-1"
    set_id += 1
    count = _obx(order, set_id, "NM", OBS_COUNT_CODE, "1.0.1.3", summary.end)
    count.obx_5 = str(summary.n_obs)
    set_id += 1
    unknown = _obx(order, set_id, "NM", UNKNOWN_COUNT_CODE, "1.0.1.4", summary.end)
    unknown.obx_5 = str(summary.n_unknown)
    if summary.median_level is None:
        set_id += 1
        reason = _obx(order, set_id, "ST", UNKNOWN_REASON_CODE, "1.0.1.5", summary.end)
        reason.obx_5 = _plain_text(summary.unknown_reason or "unknown")
    return control_id, msg.to_er7()


def build_alarm_report(
    report: AlarmReport, *, control_id: str | None = None, now: datetime | None = None
) -> tuple[str, str]:
    """``(control_id, ER7 text)`` of the PCD-04 ORU^R40 for one alarm event."""
    control_id = control_id or new_control_id()
    now = now or datetime.now(UTC)
    msg = _new_message("ORU^R40^ORU_R40", control_id, now, PCD04_PROFILE)
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    _patient_and_visit(result, report.ward, report.bed, report.pseudonym)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_1 = "1"
    alert = f"{_plain_text(report.alert_identifier, 64)}^{SENDING_APPLICATION}"
    order.obr.obr_3 = alert
    order.obr.obr_4 = ALARM_SERVICE
    order.obr.obr_7 = hl7_time(report.time)
    condition = _plain_text(report.condition, 40)
    source = PAIN_LEVEL_CODE if report.kind == "pain" else DEVICE_SOURCE_CODE
    ident = _obx(order, 1, "CWE", source, "1.0.0.0.1", report.time)
    text = _plain_text(report.message or condition, 120)
    ident.obx_5 = f"PAINMON-EVT-{condition}^{text}^L"
    ident.obx_8 = PRIORITY_FLAGS[report.priority]
    ident.add_field("obx_8").value = KIND_FLAGS[report.kind]
    ident.obx_21 = alert
    phase = _obx(order, 2, "ST", EVENT_PHASE_CODE, "1.0.0.0.2", report.time)
    phase.obx_5 = ACM_PHASES[report.phase]
    state = _obx(order, 3, "ST", ALERT_STATE_CODE, "1.0.0.0.3", report.time)
    state.obx_5 = "inactive" if report.phase == "end" else "active"
    inactivation = _obx(order, 4, "ST", INACTIVATION_STATE_CODE, "1.0.0.0.4", report.time)
    inactivation.obx_5 = "alert-acknowledged" if report.acknowledged else "enabled"
    return control_id, msg.to_er7()


def validate_er7(er7: str) -> list[str]:
    """hl7apy's strict structure check of one built message: the problems, empty if none.

    ORU^R40 is checked against the ORU_R01 grammar it shares. A missing PID-3 is allowed
    (no pseudonym configured: the receiver binds by the bed location in PV1-3).
    """
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message

    text = er7.replace("ORU^R40^ORU_R40", "ORU^R01^ORU_R01", 1)
    try:
        msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    except HL7apyException as exc:
        return [str(exc)]
    problems: list[str] = []
    patient = msg.oru_r01_patient_result.oru_r01_patient
    if not patient.pid.pid_3.value:
        patient.pid.pid_3 = "placeholder"  # only for the check, never sent
    try:
        msg.validate()
    except HL7apyException as exc:
        problems.append(str(exc))
    return problems
