"""The domain gate at the bedside: out-of-domain crops give no pain, OUT_OF_DOMAIN after 1 s."""

from __future__ import annotations

import math

import pytest

from painmon.core.live.alarms import AlarmEventKind, TechnicalCondition
from painmon.core.live.domain import DomainGateSpec, DomainMonitor
from painmon.core.live.monitor import run_monitor
from painmon.core.live.scoring import OnnxPainModel
from painmon.core.live.session import read_session_csv
from painmon.core.util.errors import InvalidInputError

SPEC = DomainGateSpec(threshold=100.0, method="mahalanobis-tied", quantile=0.99)


def test_spec_from_metadata():
    assert DomainGateSpec.from_metadata(None) is None
    assert DomainGateSpec.from_metadata({"method": "none", "note": "x"}) is None
    spec = DomainGateSpec.from_metadata({"method": "m", "threshold": 12.5, "quantile": 0.99})
    assert spec == DomainGateSpec(12.5, "m", 0.99)
    assert spec.out_of_domain(12.6) and not spec.out_of_domain(12.5)
    assert spec.out_of_domain(math.nan), "a NaN score cannot vouch for the crop"
    with pytest.raises(InvalidInputError, match="threshold"):
        DomainGateSpec.from_metadata({"method": "m"})
    with pytest.raises(InvalidInputError, match="threshold"):
        DomainGateSpec.from_metadata({"method": "m", "threshold": -1})


def _feed(monitor: DomainMonitor, scores: list[float | None], fps: float = 10.0):
    return [monitor.update(i / fps, s) for i, s in enumerate(scores)]


def test_condition_after_one_second_of_out_of_domain_crops():
    statuses = _feed(DomainMonitor(SPEC), [500.0] * 15)
    assert all(s.frame_out for s in statuses), "each out-of-domain crop is flagged at once"
    # 10 fps: t = 0.0 .. 0.9 s pending, from t = 1.0 s the condition holds.
    assert [s.condition for s in statuses] == [False] * 10 + [True] * 5
    assert statuses[-1].out_for_s == pytest.approx(1.4)


def test_single_odd_frames_never_raise_the_condition():
    scores = [50.0, 50.0, 500.0] * 20  # one odd crop in three, never 1 s in a row
    statuses = _feed(DomainMonitor(SPEC), scores)
    assert not any(s.condition for s in statuses)
    assert sum(s.frame_out for s in statuses) == 20


def test_condition_clears_after_one_second_in_domain_and_gaps_say_nothing():
    monitor = DomainMonitor(SPEC)
    statuses = _feed(monitor, [500.0] * 12 + [None] * 30 + [50.0] * 12)
    assert statuses[11].condition
    assert all(s.condition for s in statuses[12:42]), "no-face frames neither clear nor extend"
    assert [s.condition for s in statuses[42:]] == [True] * 10 + [False] * 2
    assert not any(s.frame_out for s in statuses[42:])


def test_a_model_without_gate_never_flags():
    statuses = _feed(DomainMonitor(None), [1e9] * 30)
    assert not any(s.frame_out or s.condition for s in statuses)


def test_gated_model_on_a_real_face_shows_no_pain_and_says_out_of_domain(
    shared_file, face_model_path, gated_dacnn_onnx, tmp_path
):
    """A model whose domain is toy crops must not score a real person: no probabilities,
    OUT_OF_DOMAIN after 1 s, no pain alarm; the session records the scores as evidence."""
    model = OnnxPainModel(gated_dacnn_onnx, prefer="cpu")
    assert model.domain_gate is not None
    results = []
    summary = run_monitor(
        str(shared_file("media/single_face.mp4")),
        gated_dacnn_onnx,
        tmp_path,
        face_model=face_model_path,
        progress=False,
        on_result=results.append,
    )
    faces = [r for r in results if r.observation.face_found and r.quality.ok]
    assert len(faces) >= 0.9 * len(results)
    assert summary.frames_scored == 0
    assert all(r.probs is None and r.pain_level is None for r in results)
    assert all(r.out_of_domain and r.domain_score > model.domain_gate.threshold for r in faces)
    first = faces[0].frame.t_s
    conditions = [r.technical_condition for r in faces if r.frame.t_s >= first + 1.05]
    assert conditions and set(conditions) == {TechnicalCondition.OUT_OF_DOMAIN.value}
    rows = read_session_csv(tmp_path / summary.session_folder / "session.csv")
    assert all(row["p0"] is None and row["pain_class"] is None for row in rows)
    assert all(row["alarm_priority"] == "none" for row in rows)
    scored = [row for row in rows if row["domain_score"] is not None]
    assert len(scored) == len(faces)
    alarms = read_session_csv(tmp_path / summary.session_folder / "alarms.csv")
    kinds = {(a["kind"], a["priority"]) for a in alarms}
    assert (AlarmEventKind.TECHNICAL_ONSET.value, "technical") in kinds
    assert not any(a["priority"] in ("medium", "high") for a in alarms)
    assert any("OUT_OF_DOMAIN" in a["message"] for a in alarms)
