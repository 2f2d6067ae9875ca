"""`painmon bench gate`: the domain gate's flagged fractions and AUROC, measured for a card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from painmon.core.research.crops import CropSet
from painmon.core.tools.bench_gate import format_gate_report, gate_report
from painmon.core.tools.cli import main


def test_gate_report_separates_real_faces_from_the_domain(
    gated_dacnn_onnx, shared_file, face_model_path, toy_crops, tmp_path, capsys
):
    """The toy-domain gate: toy crops of new draws are in, a real person is out."""
    images, labels = toy_crops(40, 7)
    subjects = np.array([f"s{i % 4}" for i in range(40)])
    crops = CropSet(images, labels, subjects, tuple(f"x{i}" for i in range(40)), (None,) * 40)
    crops_path = crops.save_npz(tmp_path / "crops.npz", dataset_sha256="ef" * 32)
    real = str(shared_file("media/single_face.jpg"))
    report = gate_report(
        gated_dacnn_onnx, real=[real], crops=crops_path, face_model=str(face_model_path)
    )
    stills = report["in_domain_stills"]
    assert stills["crops"] == 40 and stills["flagged_fraction"] <= 0.2
    # Each person's share too: the crops' average is the subjects' average here (10 each).
    shares = stills["flagged_fraction_by_subject"]
    assert sorted(shares) == ["s0", "s1", "s2", "s3"] and stills["subjects"] == 4
    assert np.mean(list(shares.values())) == pytest.approx(stills["flagged_fraction"])
    assert stills["worst_subject_flagged_fraction"] == max(shares.values())
    assert shares[stills["worst_subject"]] == max(shares.values())
    assert stills["subjects_over_10_percent"] == sum(v > 0.1 for v in shares.values())
    [face] = report["files"]
    assert face["group"] == "real" and face["face_frames"] >= 1
    assert face["flagged_fraction"] == 1.0 and face["scored_by_class"] == {}
    assert face["pain_alarms"] == 0
    assert report["auroc_real_vs_in_domain"] == 1.0
    text = format_gate_report(report)
    assert "AUROC real vs in-domain: 1.0000" in text and "single_face.jpg" in text
    median = 100 * stills["subject_median_flagged_fraction"]
    assert f"per subject (4): median {median:.1f} % flagged, worst" in text

    out_json = tmp_path / "gate.json"
    code = main(["bench", "gate", "--model", str(gated_dacnn_onnx), "--real", real,
                 "--crops", str(crops_path), "--face-model", str(face_model_path),
                 "--json", str(out_json)])  # fmt: skip
    assert code == 0
    assert "AUROC real vs in-domain" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["auroc_real_vs_in_domain"] == 1.0


def test_gate_report_refuses_a_model_without_gate(untrained_dacnn_onnx, shared_file, capsys):
    real = str(shared_file("media/single_face.jpg"))
    assert main(["bench", "gate", "--model", str(untrained_dacnn_onnx), "--real", real]) == 2
    assert "has no domain gate" in capsys.readouterr().err


def test_gate_report_with_nothing_to_measure_is_refused(gated_dacnn_onnx, capsys):
    assert main(["bench", "gate", "--model", str(gated_dacnn_onnx)]) == 2
    assert "nothing to measure" in capsys.readouterr().err


def test_in_domain_videos_are_scored_against_their_truth(
    untrained_dacnn_onnx, face_model_path, tmp_path
):
    """A synthetic video's truth CSV gives frame accuracy and the alarm check (gateless model:
    every face frame is scored)."""
    from painmon.core.synth.stream import write_video
    from painmon.core.tools.bench_gate import _monitor_file

    video = tmp_path / "v.mp4"
    write_video(video, seconds=3.0, fps=10.0, seed=2)
    report = _monitor_file(video, untrained_dacnn_onnx, "in-domain", str(face_model_path))
    truth = report.truth
    assert truth is not None and truth["frames"] == report.frames == 30
    assert truth["scored"] == sum(report.scored_by_class.values()) > 0
    assert 0.0 <= truth["accuracy_all_frames"] <= truth["accuracy_scored"] <= 1.0
    assert truth["within_one_scored"] >= truth["accuracy_scored"]
    assert truth["episode_s"] == [0.75, 2.7]
    assert truth["pain_alarm_onsets_s"] == [] and truth["alarms_only_in_episode"]
