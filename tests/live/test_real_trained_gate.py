"""A model trained on real faces scores real faces at the bedside (the gate's other side).

The shipped demo model knows only drawn patients, so its domain gate flags every real face
(test_real_faces.py). A user who trains on a licensed real dataset must get the mirror
image: the gate is fitted around *their* faces, and a real face like them is scored, while
a drawn patient is what lies outside. This is also the one end-to-end check that the
training crops (`painmon crops` on video frames) and the bedside crops (capture, face
tracker, framing, colour order, normalisation) are the same crops: a mismatch in any of
them moves every real face out of the gate's domain.

No pain-labelled real faces can ship, so the labels here are random: this checks the
domain gate and the crop path, not the pain classes. Pseudo-subjects are pieces of the
real videos in ../shared/media (one file per subject, as the manifest rule wants).
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from painmon.core.live.monitor import run_monitor
from painmon.core.research.splits import SplitPlan, dataset_sha256
from painmon.core.tools.cli import main as cli_main

pytestmark = pytest.mark.slow

TRAIN = ("wl0", "wl1", "wl2", "wl3", "wl4", "sf0")
VAL = ("wl5",)
TEST = ("wl6", "wl7", "sf1")


def _write_clips(source, tag: str, pieces: int, out_dir) -> list[tuple[str, str, int]]:
    """Cut a video into ``pieces`` MJPG clips; (clip name, subject, frame) per frame."""
    cap = cv2.VideoCapture(str(source))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert frames, f"cannot read {source}"
    height, width = frames[0].shape[:2]
    rows = []
    for k in range(pieces):
        piece = frames[k * len(frames) // pieces : (k + 1) * len(frames) // pieces]
        name = f"{tag}{k}.avi"
        writer = cv2.VideoWriter(
            str(out_dir / name), cv2.VideoWriter_fourcc(*"MJPG"), 24, (width, height)
        )
        for frame in piece:
            writer.write(frame)
        writer.release()
        rows += [(name, f"{tag}{k}", i) for i in range(0, len(piece), 2)]
    return rows


@pytest.fixture(scope="module")
def real_trained_model(tmp_path_factory, shared_file):
    """`painmon crops` → `train` → `export` on real-video pseudo-subjects, as a user runs them."""
    work = tmp_path_factory.mktemp("real-trained")
    clips = work / "clips"
    clips.mkdir()
    rows = _write_clips(shared_file("media/WolfgangLanger_Pexels.mp4"), "wl", 8, clips)
    rows += _write_clips(shared_file("media/single_face.mp4"), "sf", 2, clips)
    rng = random.Random(0)
    manifest = clips / "manifest.csv"
    manifest.write_text(
        "path,subject,label,frame_index\n"
        + "".join(f"{name},{subject},{rng.randrange(5)},{i}\n" for name, subject, i in rows)
    )
    face_model = shared_file("models/face_landmarker.task")
    crops = work / "crops.npz"
    base = ["--cache-dir", str(work / "cache")]
    assert cli_main(["crops", "--manifest", str(manifest), "--out", str(crops), *base]) == 0
    # Eight pieces of one person are not eight people: the split is written by hand so that
    # every piece the bedside is checked on below was held out of training.
    splits = work / "splits.json"
    SplitPlan(dataset_sha256(crops), 42, TRAIN, VAL, TEST).to_json(splits)
    run = work / "run"
    train = ["train", "--manifest", str(crops), "--splits", str(splits), "--model", "dacnn"]
    assert cli_main([*train, "--epochs", "2", "--device", "cpu", "--out", str(run)]) == 0
    model = work / "real.onnx"
    assert cli_main(["export", "--run", str(run), "--out", str(model)]) == 0
    return model, clips, face_model


def _monitor(source, model, face_model, out, max_seconds=None):
    results = []
    summary = run_monitor(
        str(source), model, out, max_seconds=max_seconds, face_model=face_model,
        progress=False, on_result=results.append,
    )  # fmt: skip
    faces = [r for r in results if r.observation.face_found]
    return summary, faces


def test_a_real_face_held_out_of_training_is_scored_not_flagged(real_trained_model, tmp_path):
    model, clips, face_model = real_trained_model
    # The second half of single_face.mp4: the same person and room as a training piece,
    # neither in training nor in the validation subjects that set the threshold.
    summary, faces = _monitor(clips / "sf1.avi", model, face_model, tmp_path)
    assert len(faces) >= 30, "the face is found in the held-out real clip"
    flagged = [r for r in faces if r.out_of_domain]
    assert not flagged, f"{len(flagged)} of {len(faces)} real frames flagged out of domain"
    assert all(r.pain_class is not None for r in faces), "every real face frame is scored"
    assert not summary.technical_condition_frames.get("OUT_OF_DOMAIN")


def test_a_drawn_patient_lies_outside_a_real_trained_gate(real_trained_model, tmp_path):
    model, _clips, face_model = real_trained_model
    summary, faces = _monitor("synthetic", model, face_model, tmp_path, max_seconds=4.0)
    assert len(faces) >= 60
    assert np.mean([r.out_of_domain for r in faces]) > 0.95
    assert all(r.pain_class is None for r in faces if r.out_of_domain)
    assert summary.pain_alarm_episodes == 0
