import math

from painmon.core.live.au import AUEstimator
from painmon.core.live.face import FaceObservation
from painmon.core.live.face_detect import FaceBox
from painmon.core.tools.bench_au import (
    MEDIA_STRETCHES,
    format_media,
    format_synth,
    read_truth_pspi,
    run_estimator,
)

NEUTRAL = {
    name: 0.0
    for side in ("Left", "Right")
    for name in (
        f"browDown{side}",
        f"cheekSquint{side}",
        f"eyeSquint{side}",
        f"noseSneer{side}",
        f"mouthUpperUp{side}",
        f"eyeBlink{side}",
        f"mouthSmile{side}",
    )
} | {"jawOpen": 0.0, "mouthClose": 0.0, "mouthFunnel": 0.0, "mouthPucker": 0.0}


def test_stretches_are_ranges_with_reasons():
    kinds = {s.kind for s in MEDIA_STRETCHES}
    assert {"laughing", "smiling", "talking"} <= kinds
    for stretch in MEDIA_STRETCHES:
        assert 0 <= stretch.start_s < stretch.end_s and stretch.reason


def test_truth_reading_estimates_and_tables(tmp_path):
    truth = tmp_path / "x.truth.csv"
    truth.write_text("frame,t_s,pspi\n0,0.0,0\n1,0.033,3\n")
    assert read_truth_pspi(truth) == {0: 0.0, 1: 3.0}
    box = FaceBox(1, 1, 10, 10, 0.5)
    observations = [
        FaceObservation(i / 30, True, box, 1, "test", blendshapes=NEUTRAL) for i in range(3)
    ]
    assert [e.pspi for e in run_estimator(observations, AUEstimator())] == [0.0] * 3
    media = format_media(
        [
            {
                "item": "a.mp4 1-2 s",
                "kind": "laughing",
                "frames": 3,
                "stream_median": 0.5,
                "stream_known": 1.0,
                "clip_median": math.nan,
                "clip_known": 0.0,
            }
        ]
    )
    assert "a.mp4 1-2 s" in media and "0.50" in media
    synth = format_synth(
        [{"seed": 1, "frames": 9, "known": 1.0, "pearson_r": 0.9, "truth_max": 8.0, "au_max": 5.0}]
    )
    assert "0.900" in synth and "mean r 0.900" in synth
