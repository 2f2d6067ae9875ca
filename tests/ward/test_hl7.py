"""PCD-01 / PCD-04 builders: valid v2.6 structure, the codes, no names, pseudonym only if set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.ward.hl7 import (
    AlarmReport,
    PainPeriodSummary,
    alarm_control_id,
    build_alarm_report,
    build_observation_report,
    hl7_time,
    validate_er7,
)
from painmon.core.ward.mllp import _segments as mllp_segments
from painmon.core.ward.mllp import frame, message_control_id

END = datetime(2026, 11, 27, 10, 1, 0, 250000, tzinfo=UTC)


def _segments(er7: str) -> list[list[str]]:
    return [s.split("|") for s in er7.split("\r") if s]


def _seg(er7: str, name: str) -> list[list[str]]:
    return [s for s in _segments(er7) if s[0] == name]


def _summary(**kw) -> PainPeriodSummary:
    base = dict(
        ward="W1",
        bed="bed-3",
        start=END - timedelta(seconds=60),
        end=END,
        n_obs=120,
        n_unknown=20,
        median_level=2.25,
        median_confidence=0.81,
    )
    base.update(kw)
    return PainPeriodSummary(**base)


def _alarm(**kw) -> AlarmReport:
    base = dict(
        ward="W1",
        bed="bed-3",
        uuid="0b6c9a52-9b1e-4a57-8d7a-0c3f5d1f2e11",
        seq=4,
        time=END,
        kind="pain",
        condition="PAIN",
        priority="high",
        phase="start",
        message="Pain level high for 30 s",
    )
    base.update(kw)
    return AlarmReport(**base)


def test_hl7_time_is_utc_with_ms_and_offset() -> None:
    assert hl7_time(END) == "20261127100100.250+0000"
    with pytest.raises(InvalidInputError):
        hl7_time(datetime(2026, 1, 1))


@pytest.mark.parametrize("pseudonym", [None, "P-77"])
def test_pcd01_structure_is_valid_v26(pseudonym: str | None) -> None:
    control_id, er7 = build_observation_report(_summary(pseudonym=pseudonym), now=END)
    assert validate_er7(er7) == []
    msh = _seg(er7, "MSH")[0]
    assert msh[8] == "ORU^R01^ORU_R01"
    assert msh[9] == control_id == message_control_id(er7)
    assert msh[11] == "2.6"
    assert msh[2] == "PAINMON"
    assert msh[20] == "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
    assert _seg(er7, "PV1")[0][3] == "W1^^bed-3"


def test_pcd01_pain_obx_codes_value_units() -> None:
    _, er7 = build_observation_report(_summary(), now=END)
    obx = _seg(er7, "OBX")
    pain = obx[0]
    assert pain[2] == "NM"
    local, sct = pain[3].split("^")[:3], pain[3].split("^")[3:6]
    assert local == ["PAINMON-FACIAL-PAIN", "Facial pain level (painmon)", "L"]
    assert sct == ["225908003", "Pain score", "SCT"]
    assert pain[5] == "2.25"
    assert pain[6].startswith("{score}")
    assert pain[11] == "R"
    assert pain[14] == "20261127100100.250+0000"
    codes = [o[3].split("^")[0] for o in obx]
    assert codes == [
        "PAINMON-FACIAL-PAIN",
        "PAINMON-CONFIDENCE",
        "PAINMON-OBS-COUNT",
        "PAINMON-UNKNOWN-COUNT",
    ]
    assert obx[1][5] == "0.81"
    assert (obx[2][5], obx[3][5]) == ("120", "20")
    assert [o[1] for o in obx] == ["1", "2", "3", "4"]


def test_pcd01_unknown_period_has_no_number() -> None:
    summary = _summary(
        n_unknown=120, median_level=None, median_confidence=None, unknown_reason="NO_FACE"
    )
    _, er7 = build_observation_report(summary, now=END)
    assert validate_er7(er7) == []
    obx = _seg(er7, "OBX")
    pain = obx[0]
    assert pain[3].startswith("PAINMON-FACIAL-PAIN^")
    assert pain[5] == ""  # no numeric OBX-5 when the output was unknown
    assert pain[11] == "X"
    reason = [o for o in obx if o[3].startswith("PAINMON-UNKNOWN^")]
    assert len(reason) == 1 and reason[0][2] == "ST" and reason[0][5] == "NO_FACE"
    assert not any(o[3].startswith("PAINMON-CONFIDENCE") for o in obx)


def test_pseudonym_only_when_given_and_never_a_name() -> None:
    _, without = build_observation_report(_summary(), now=END)
    _, with_it = build_observation_report(_summary(pseudonym="P-77"), now=END)
    assert _seg(without, "PID")[0][3] == ""
    assert "P-77" not in without
    assert _seg(with_it, "PID")[0][3] == "P-77^^^PAINMON^ANON"
    for er7 in (without, with_it):
        pid = _seg(er7, "PID")[0]
        assert pid[5] == "^^^^^^U"  # the name field says "unknown", holds no name
        assert all(not f for f in pid[6:])  # no mother's maiden name, birth date, address …


def test_pcd04_alarm_report() -> None:
    report = _alarm(pseudonym="P-77")
    control_id, er7 = build_alarm_report(report, now=END)
    assert validate_er7(er7) == []
    msh = _seg(er7, "MSH")[0]
    assert msh[8] == "ORU^R40^ORU_R40"
    assert msh[9] == control_id
    assert msh[20].startswith("IHE_PCD_ACM_001^IHE PCD^")
    obr = _seg(er7, "OBR")[0]
    assert obr[3] == f"{report.uuid}^PAINMON"  # no alert id (an older bed): the event uuid
    assert obr[4] == "196616^MDC_EVT_ALARM^MDC"
    obx = _seg(er7, "OBX")
    assert obx[0][3].startswith("PAINMON-FACIAL-PAIN^") and "225908003" in obx[0][3]
    assert obx[0][5].startswith("PAINMON-EVT-PAIN^Pain level high")
    assert obx[0][8] == "PH~SP"
    facets = {o[3].split("^")[1]: o[5] for o in obx[1:]}
    assert facets == {
        "MDC_ATTR_EVENT_PHASE": "start",
        "MDC_ATTR_ALARM_STATE": "active",
        "MDC_ATTR_ALARM_INACTIVATION_STATE": "enabled",
    }
    assert [o[4] for o in obx] == ["1.0.0.0.1", "1.0.0.0.2", "1.0.0.0.3", "1.0.0.0.4"]


@pytest.mark.parametrize(
    ("phase", "acknowledged", "acm_phase", "state", "inactivation"),
    [
        ("escalate", False, "escalate", "active", "enabled"),
        ("acknowledge", True, "update", "active", "alert-acknowledged"),
        ("end", True, "end", "inactive", "alert-acknowledged"),
    ],
)
def test_pcd04_phases(phase, acknowledged, acm_phase, state, inactivation) -> None:
    report = _alarm(
        phase=phase, acknowledged=acknowledged, by="station" if phase == "acknowledge" else None
    )
    _, er7 = build_alarm_report(report, now=END)
    values = [o[5] for o in _seg(er7, "OBX")[1:]]
    assert values == [acm_phase, state, inactivation]


ALERT = "7a1e0c4d-2f3b-4c5d-8e9f-0a1b2c3d4e5f"


def test_pcd04_alert_id_in_obr3_and_obx21_the_same_on_every_phase() -> None:
    reports = [
        _alarm(uuid="0b6c9a52-9b1e-4a57-8d7a-0c3f5d1f2e1" + str(i), seq=i, alert_id=ALERT, **kw)
        for i, kw in enumerate(
            [
                {"phase": "start", "priority": "medium"},
                {"phase": "escalate"},
                {"phase": "acknowledge", "acknowledged": True, "by": "bed"},
                {"phase": "end", "acknowledged": True},
            ]
        )
    ]
    built = [build_alarm_report(r, now=END) for r in reports]
    for _, er7 in built:
        assert validate_er7(er7) == []
        assert _seg(er7, "OBR")[0][3] == f"{ALERT}^PAINMON"
        assert _seg(er7, "OBX")[0][21] == f"{ALERT}^PAINMON"
    assert len({control_id for control_id, _ in built}) == 4  # MSH-10: one per message


def test_pcd04_without_alert_id_names_the_event_uuid_in_obx21_too() -> None:
    report = _alarm()
    _, er7 = build_alarm_report(report, now=END)
    assert report.alert_identifier == report.uuid
    assert _seg(er7, "OBX")[0][21] == _seg(er7, "OBR")[0][3] == f"{report.uuid}^PAINMON"


def test_alarm_control_id_is_20_hex_of_the_event_uuid() -> None:
    uuid = "0b6c9a52-9b1e-4a57-8d7a-0c3f5d1f2e11"
    assert alarm_control_id(uuid) == "0b6c9a529b1e4a578d7a"
    assert alarm_control_id("1" + uuid[1:]) != alarm_control_id(uuid)
    _, er7 = build_alarm_report(_alarm(), control_id=alarm_control_id(uuid), now=END)
    assert message_control_id(er7) == "0b6c9a529b1e4a578d7a"
    for bad in ("", "not-a-uuid", uuid + "0"):
        with pytest.raises(InvalidInputError):
            alarm_control_id(bad)


# Free text with every kind of segment or frame breaker: HL7 delimiters, CR, LF (a segment
# end to Mirth and to mllp._segments), VT/FS (the MLLP block bytes), the rest of C0, DEL, NEL.
HOSTILE = "face lost | ^ & ~ \\ at bed\rPID|1\nOBX|9|ST|X||injected\x0b\x1c\x0c\t\x00\x7f\x85 end"


def _no_control_characters(er7: str) -> bool:
    return not any((ord(c) < 0x20 and c != "\r") or 0x7F <= ord(c) < 0xA0 for c in er7)


def test_pcd04_technical_alarm_and_hostile_text() -> None:
    report = _alarm(kind="technical", condition="NO_FACE", priority="low", message=HOSTILE)
    _, er7 = build_alarm_report(report, now=END)
    assert validate_er7(er7) == []
    first = _seg(er7, "OBX")[0]
    assert first[3].startswith("PAINMON-DEVICE^")
    assert first[5].startswith("PAINMON-EVT-NO_FACE^face lost")
    assert first[5].count("^") == 2  # the text's delimiters did not make new components
    assert first[8] == "PL~ST"
    assert len(_segments(er7)) == 8  # MSH PID PV1 OBR + 4 OBX: no segment injected
    assert len(mllp_segments(er7)) == 8  # nor at a receiver that also ends segments at LF
    assert _no_control_characters(er7)
    frame(er7.encode())  # no MLLP block byte: the report can be sent


def test_pcd01_unknown_reason_hostile_text() -> None:
    summary = _summary(
        n_unknown=120, median_level=None, median_confidence=None, unknown_reason=HOSTILE
    )
    _, er7 = build_observation_report(summary, now=END)
    assert validate_er7(er7) == []
    assert len(_segments(er7)) == len(mllp_segments(er7)) == 8  # MSH PID PV1 OBR + 4 OBX
    (reason,) = [o for o in _seg(er7, "OBX") if o[3].startswith("PAINMON-UNKNOWN^")]
    assert reason[5].startswith("face lost / ") and reason[5].endswith(" end")
    assert _no_control_characters(er7)
    frame(er7.encode())


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        _summary(median_level=5.0)
    with pytest.raises(InvalidInputError):
        _summary(median_level=None)  # a level-less period must be all unknown
    with pytest.raises(InvalidInputError):
        _alarm(priority="urgent")
    with pytest.raises(InvalidInputError):
        _alarm(time=datetime(2026, 1, 1))
