"""Benchmark reports name a stream source without its credentials (#12 item 7).

``painmon bench soak`` and ``bench app`` accept any source spec, a camera URL included,
and write the source into the report (printed and ``--json``).
"""

from __future__ import annotations

import json

import pytest

from painmon.core.live.capture import CaptureStats
from painmon.core.tools.bench_app import (
    DisplayRecorder,
    StallMeter,
    summarize_app_bench,
    summarize_playback,
)

TOKEN = "ghp_abcdEFGH1234567890xyz"
URLS = [
    (f"https://{TOKEN}@cam.local/stream.mjpg", TOKEN, "https://***@cam.local/stream.mjpg"),
    ("rtsp://nurse:s3cret@10.0.0.5/live", "s3cret", "rtsp://nurse:***@10.0.0.5/live"),
    ("http://cam/live.mjpg?token=abc123", "abc123", "http://cam/live.mjpg?token=***"),
]


@pytest.mark.parametrize(("url", "secret", "shown"), URLS)
def test_the_app_bench_summary_names_the_source_without_credentials(url, secret, shown):
    result = summarize_app_bench(
        source=url,
        end_reason="measured",
        input_fps=30.0,
        seconds_measured=1.0,
        frames_read=30,
        frames_dropped_capture=0,
        frames_processed=30,
        recorder=DisplayRecorder(),
        stall=StallMeter(0.010),
        gui_ms={},
        gradcam_overlay=False,
        face_tracker="haar cascade",
        model="fake.onnx",
        load_average=None,
    )
    assert result["source"] == shown
    assert secret not in json.dumps(result)


@pytest.mark.parametrize(("url", "secret", "shown"), URLS)
def test_the_playback_summary_names_the_source_without_credentials(url, secret, shown):
    result = summarize_playback(
        source=url,
        mode="realtime",
        end_reason="measured",
        observations=[],
        start=CaptureStats(frames_read=0, frames_dropped=0, frames_passed_over=0),
        end=CaptureStats(frames_read=10, frames_dropped=0, frames_passed_over=0),
        frames_scored=10,
        status_text="",
        load_average=None,
    )
    assert result["source"] == shown
    assert secret not in json.dumps(result)


@pytest.mark.slow  # exports an untrained model (torch) and runs the engine for 2 s
def test_the_soak_report_names_a_token_stream_without_its_token(tmp_path, face_model_path):
    import cv2
    import numpy as np

    from painmon.core.tools.bench_faults import MjpegServer
    from painmon.core.tools.bench_pipeline import bench_soak, export_untrained_dacnn

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.jpg"), np.full((120, 160, 3), 128, np.uint8))
    model = export_untrained_dacnn(tmp_path / "model")
    out = tmp_path / "soak.json"
    with MjpegServer(frames, fps=15.0) as server:
        url = f"http://{TOKEN}@127.0.0.1:{server.port}/patient.mjpg"
        report = bench_soak(2.0, url, model, face_model_path, out)
    assert report["frames"] > 0
    assert report["source"] == f"http://***@127.0.0.1:{server.port}/patient.mjpg"
    assert TOKEN.encode() not in out.read_bytes()
