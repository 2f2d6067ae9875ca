"""Real people, not in pain, through `painmon monitor` with the shipped demo model (#11).

The demo model knows only drawn synthetic patients. On a real face it must not show a
pain level it cannot know: no pain alarm, and no frame shows a known pain level >= 2
(Moderate or worse). The domain gate is what makes that true: such faces are out of
its domain, so their output is unknown and the window shows the AU estimate instead.
"""

from __future__ import annotations

import pytest

from painmon.core.live.monitor import run_monitor
from painmon.core.live.scoring import OnnxPainModel
from painmon.core.live.session import read_session_csv
from painmon.core.store.catalog import shipped_demo_model_path

REAL_FACE_FILES = [
    "media/single_face.mp4",
    "media/face_noface.mov",
    "media/single_face.jpg",
    "media/multi_face.jpg",
    pytest.param("media/WolfgangLanger_Pexels.mp4", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def demo_model():
    path = shipped_demo_model_path()
    model = OnnxPainModel(path, prefer="cpu")
    assert model.is_demo and model.domain_gate is not None, "the demo model ships with a gate"
    return path


@pytest.mark.parametrize("name", REAL_FACE_FILES)
def test_demo_model_shows_no_pain_on_real_faces(name, shared_file, demo_model, tmp_path):
    results = []
    summary = run_monitor(
        str(shared_file(name)),
        demo_model,
        tmp_path,
        progress=False,
        on_result=results.append,
    )
    faces = [r for r in results if r.observation.face_found]
    assert faces, f"no face found in {name}"
    assert summary.pain_alarm_episodes == 0
    shown = [r.pain_class for r in results if r.pain_class is not None]
    assert all(c <= 1 for c in shown), f"pain classes shown on {name}: {sorted(set(shown))}"
    assert all(r.smoothed.unknown or r.smoothed.pain_class <= 1 for r in results), (
        "the smoothed level (what alarms see) stays below Moderate too"
    )
    # Every face frame is either out of the model's domain or scored at most Mild.
    assert all(r.out_of_domain or (r.pain_class or 0) <= 1 for r in faces)
    rows = read_session_csv(tmp_path / summary.session_folder / "session.csv")
    assert all(row["alarm_priority"] == "none" for row in rows)
    assert all((row["pain_class"] or 0) <= 1 for row in rows)
