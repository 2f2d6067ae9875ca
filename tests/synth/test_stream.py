"""stream: the scripted pain episode, the live patient stream and the episode video."""

import csv
from itertools import pairwise

import cv2
import numpy as np
import pytest

from painmon.core.synth.render import AU_NAMES
from painmon.core.synth.stream import (
    SyntheticPatientStream,
    episode_level,
    episode_pspi,
    truth_csv_path,
    write_video,
)
from painmon.core.util.labels import pspi_from_aus


def test_episode_rises_peaks_and_recovers():
    seconds = 100.0
    pspi = [episode_pspi(t, seconds) for t in np.arange(0, seconds, 0.5)]
    assert pspi[0] == 0 and pspi[-1] == 0
    assert max(pspi) >= 7
    rise = pspi[50:90]
    assert all(b >= a for a, b in pairwise(rise))
    assert episode_level(57.5, seconds) == 1.0


def test_video_has_right_frame_count_and_rising_then_falling_truth(tmp_path):
    path = write_video(tmp_path / "patient.mp4", seconds=4.0, fps=10.0, seed=2, size=(320, 180))
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (180, 320, 3)
        frames += 1
    capture.release()
    assert frames == 40
    truth_path = tmp_path / "patient.truth.csv"
    assert truth_csv_path(path) == truth_path
    with truth_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "frame",
        "t_s",
        "au4",
        "au6",
        "au7",
        "au9",
        "au10",
        "au43",
        "pspi",
        "label",
        # What the face does besides pain (issue #11): appended, the pain columns unchanged.
        "smile",
        "mouth_open",
        "speaking",
        "gaze_x",
        "gaze_y",
        "light_gain",
    ]
    assert len(rows) == 40
    pspi = [int(r["pspi"]) for r in rows]
    peak = int(np.argmax(pspi))
    assert 10 <= peak <= 30 and pspi[peak] >= 7
    assert pspi[0] <= 1 and pspi[-1] <= 1
    for row in rows:
        assert int(row["pspi"]) == pspi_from_aus(*(int(row[n]) for n in AU_NAMES))


def test_stream_is_deterministic_blinks_and_unpacks():
    stream = SyntheticPatientStream(seed=4, fps=10.0, seconds=20.0, size=(320, 180))
    again = SyntheticPatientStream(seed=4, fps=10.0, seconds=20.0, size=(320, 180))
    t_s, rgb, truth = stream.frame(7)
    assert t_s == pytest.approx(0.7) and rgb.shape == (180, 320, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, again.frame(7).rgb)
    assert truth.frame == 7
    # Spontaneous blinks during the rest phase show as brief AU43 in the ground truth.
    closures = [stream.blink_closure(t) for t in np.arange(0.0, 5.0, 0.01)]
    assert max(closures) == 1.0 and np.mean(closures) < 0.2
    assert sum(1 for _ in stream) == 200


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="seconds"):
        write_video(tmp_path / "v.mp4", seconds=0, fps=30, seed=0)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "v.mp4", seconds=1, fps=0, seed=0)
    with pytest.raises(OSError, match="video writer"):
        write_video(tmp_path / "v.unknown-container", seconds=0.2, fps=10, seed=0, size=(320, 180))


def test_index_at_is_the_first_frame_at_or_after_a_time():
    stream = SyntheticPatientStream(seed=0, fps=30.0, seconds=2.0, size=(160, 120))
    assert stream.index_at(0.0) == 0 and stream.index_at(-1.0) == 0
    assert stream.index_at(1.0) == 30  # exactly on a frame
    assert stream.index_at(1.001) == 31
    assert stream.index_at(stream.frame(17).t_s) == 17  # round trip despite float error
    with pytest.raises(ValueError, match="finite"):
        stream.index_at(float("nan"))
