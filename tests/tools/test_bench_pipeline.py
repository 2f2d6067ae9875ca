"""Engine benchmarks: report shape and sanity on a short real clip, and the memory soak.

Never a timing assertion: the machine is shared and its speed varies.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from painmon.core.live.engine import STAGES
from painmon.core.live.scoring import OnnxPainModel
from painmon.core.tools.bench_pipeline import (
    ORT_VS_TORCH_CALLS,
    bench_pipeline,
    bench_soak,
    export_untrained_dacnn,
    ort_vs_torch,
    rss_mib,
)


@pytest.fixture(scope="module")
def untrained_onnx(tmp_path_factory):
    return export_untrained_dacnn(tmp_path_factory.mktemp("bench-model"))


@pytest.mark.slow
def test_bench_pipeline_reports_every_stage(shared_file, face_model_path, tmp_path):
    out = tmp_path / "bench.json"
    report = bench_pipeline(
        shared_file("media/single_face.mp4"),
        face_model=face_model_path,
        max_frames=40,
        json_path=out,
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["frames"] == 40
    # The untrained model's gate was fitted on random crops: a real face is out of its
    # domain, so the network runs on every face but no frame shows a level.
    network = report["frames_scored"] + report["frames_out_of_domain"]
    assert 0 < network <= report["frames_with_face"] <= 40
    assert report["model_untrained"] is True and "untrained" in report["model"]
    assert report["source_fps"] == pytest.approx(30.0, abs=0.5)
    assert set(report["latency_ms"]) == set(STAGES)
    for key, stats in report["latency_ms"].items():
        assert 0.0 <= stats["p50"] <= stats["p95"], key
        assert math.isfinite(stats["p95"]), key
    assert report["latency_ms"]["total"]["n"] == 40
    assert report["latency_ms"]["dacnn"]["n"] == network
    assert report["latency_ms"]["total"]["p50"] >= report["latency_ms"]["dacnn"]["p50"] > 0
    assert report["fps"] > 0 and report["realtime_factor"] > 0
    assert report["realtime_factor"] == pytest.approx(report["fps"] / report["source_fps"])
    comparison = report["ort_vs_torch"]
    assert report["ort_vs_torch_latency_ratio"] == comparison["ratio"] > 0
    assert comparison["calls_each"] >= 50
    assert comparison["ort_median_ms"] > 0 and comparison["torch_median_ms"] > 0
    assert "Grad-CAM" in comparison["ort_computes"] and "gradcam" in comparison["torch_computes"]
    assert comparison["torch_threads"] == comparison["ort_intra_op_threads"] == 1
    # Torch ran the exported weights, so it computed what the ONNX graph computes.
    assert comparison["outputs_compared"] is True
    assert comparison["max_abs_diff"]["probs"] < 1e-4
    assert report["provider"] == "CPUExecutionProvider" or report["provider"].endswith("Provider")
    assert report["face_detector"] == "mediapipe-landmarker"
    assert report["cpu_count"] >= 1
    assert {"onnxruntime", "torch", "mediapipe", "opencv", "numpy"} <= set(report["versions"])


def test_bench_pipeline_without_a_scored_face_says_why(shared_file, untrained_onnx):
    with pytest.raises(RuntimeError, match="visible face"):
        bench_pipeline(shared_file("media/no_face.mp4"), model_path=untrained_onnx, max_frames=5)


def test_bench_pipeline_rejects_zero_frames(untrained_onnx):
    with pytest.raises(ValueError, match="max_frames"):
        bench_pipeline("synthetic", model_path=untrained_onnx, max_frames=0)


def test_ort_vs_torch_needs_enough_calls(untrained_onnx):
    model = OnnxPainModel(untrained_onnx)
    crops = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=">= 50"):
        ort_vs_torch(model, crops, calls=10)
    assert ORT_VS_TORCH_CALLS >= 50


def test_rss_follows_allocation():
    import mmap

    size = 64 * 1024 * 1024
    before = rss_mib()
    # Fresh anonymous pages, every one touched. (np.ones could be served from freed heap
    # memory that is still resident after the rest of the suite, and RSS would not move.)
    with mmap.mmap(-1, size) as block:
        block.write(b"\x01" * size)
        grown = rss_mib()
    assert before > 0
    assert grown - before > 40


def test_bench_soak_reports_memory(face_model_path, untrained_onnx, tmp_path):
    out = tmp_path / "soak.json"
    report = bench_soak(
        seconds_wall=3.0,
        model_path=untrained_onnx,
        face_model=face_model_path,
        json_path=out,
    )
    assert json.loads(out.read_text())["rss_end_mib"] == report["rss_end_mib"]
    assert report["source"] == "synthetic"
    assert report["frames"] > 0 and report["end_reason"] == "time"
    assert 2.5 <= report["wall_seconds"] < 30
    for key in ("rss_before_engine_mib", "rss_start_mib", "rss_end_mib", "rss_peak_sampled_mib"):
        assert report[key] > 0, key
    assert report["rss_peak_sampled_mib"] == max(
        [s[1] for s in report["rss_samples"]] + [report["rss_end_mib"]]
    )
    assert report["rss_growth_mib"] == pytest.approx(
        report["rss_end_mib"] - report["rss_start_mib"]
    )
    assert report["rss_growth_pct"] == pytest.approx(
        100 * report["rss_growth_mib"] / report["rss_start_mib"]
    )
    assert report["rss_samples"] and report["rss_samples"][0][0] >= 0


def test_bench_soak_rejects_non_positive_duration():
    with pytest.raises(ValueError, match="seconds_wall"):
        bench_soak(seconds_wall=0)


def test_bench_pipeline_on_a_bedside_install_leaves_out_the_torch_comparison(
    untrained_onnx, monkeypatch
):
    """No torch (no `train` extra): the engine is timed, the comparison is said to be absent."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real_find_spec(name, *a),
    )
    report = bench_pipeline("synthetic", model_path=untrained_onnx, max_frames=12)
    assert report["frames"] == 12 and report["fps"] > 0
    assert report["ort_vs_torch_latency_ratio"] is None
    assert report["ort_vs_torch"] == "not measured: torch is not installed"
