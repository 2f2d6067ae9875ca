"""nuisances: non-pain expressions, accessories, light and JPEG at their rates, label-free."""

from collections import Counter

import numpy as np
import pytest

from painmon.core.synth.dataset import render_sample, sample_spec, subject_identity
from painmon.core.synth.render import (
    BEARD_RATE,
    BLINK_RATE,
    CORNER_DEPRESS_RATE,
    GAZE_SHIFT_RATE,
    GLASSES_RATE,
    HAND_RATE,
    NEUTRAL,
    SMILE_RATE_BY_CLASS,
    SPEECH_RATE,
    STUBBLE_RATE,
    YAWN_RATE_BY_CLASS,
    ActionUnits,
    Expression,
    Scene,
    render_face,
    sample_expression,
)
from painmon.core.synth.stream import NUISANCE_COLUMNS, SyntheticPatientStream, episode_pspi
from painmon.core.util.labels import NUM_CLASSES

REST = ActionUnits()
N_PER_CLASS = 1500  # binomial sd at p=0.25 is ~1.1 points: 4.5 points is a 4-sigma band


def _specs(label: int, n: int = N_PER_CLASS):
    return [sample_spec(5, i % 50, i, label) for i in range(n)]


@pytest.fixture(scope="module")
def specs_by_class():
    return {label: _specs(label) for label in range(NUM_CLASSES)}


def _rate(specs, predicate) -> float:
    return sum(1 for s in specs if predicate(s)) / len(specs)


def test_smiles_and_yawns_follow_their_class_rates(specs_by_class):
    for label, specs in specs_by_class.items():
        smile = _rate(specs, lambda s: s.expression.smiling)
        yawn = _rate(specs, lambda s: s.expression.yawning)
        assert smile == pytest.approx(SMILE_RATE_BY_CLASS[label], abs=0.04), (label, smile)
        assert yawn == pytest.approx(YAWN_RATE_BY_CLASS[label], abs=0.02), (label, yawn)
    assert SMILE_RATE_BY_CLASS[0] > SMILE_RATE_BY_CLASS[1] > SMILE_RATE_BY_CLASS[4] == 0.0
    # Broad smiles carry a Duchenne cheek raise that stays below FACS A: PSPI is untouched.
    cheeks = [s.expression.cheek_raise for s in specs_by_class[0] if s.expression.cheek_raise]
    assert cheeks and max(cheeks) < 0.5
    assert all(s.aus.au6 == 0 for s in specs_by_class[0])


@pytest.mark.parametrize(
    ("name", "predicate", "rate"),
    [
        ("speech", lambda s: s.expression.speaking, SPEECH_RATE),
        (
            "half-blink",
            lambda s: s.expression.lid_closure > 0 and not s.expression.yawning,
            BLINK_RATE,
        ),
        ("gaze shift", lambda s: s.expression.gaze_x != 0.0, GAZE_SHIFT_RATE),
        ("hand near face", lambda s: s.scene.hand != "none", HAND_RATE),
        ("down-turned corners", lambda s: s.expression.corner_depress > 0, CORNER_DEPRESS_RATE),
    ],
)
def test_label_free_nuisances_have_the_same_rate_in_every_class(
    specs_by_class, name, predicate, rate
):
    rates = [_rate(specs_by_class[label], predicate) for label in range(NUM_CLASSES)]
    for label, value in enumerate(rates):
        # A yawn can hide a half-blink, only in classes 0-1: a small allowance for it.
        assert value == pytest.approx(rate, abs=0.045), (name, label, rates)
    assert max(rates) - min(rates) < 0.06, (name, rates)


def test_label_free_draws_do_not_depend_on_the_label():
    # Same image index, different class: identical scene, framing, JPEG quality, speech, gaze.
    for i in range(40):
        a, b = sample_spec(9, 3, i, 0), sample_spec(9, 3, i, 4)
        assert a.scene == b.scene and a.jpeg_quality == b.jpeg_quality
        assert a.face_width_px == b.face_width_px and a.center_px == b.center_px
        ea, eb = a.expression, b.expression
        assert (ea.jaw_drop, ea.gaze_x, ea.gaze_y) == (eb.jaw_drop, eb.gaze_x, eb.gaze_y)
        assert ea.corner_depress == eb.corner_depress
        assert eb.smile == 0.0 and eb.yawn == 0.0
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    sample_expression(rng_a, 0)
    sample_expression(rng_b, 3)
    assert rng_a.random() == rng_b.random()  # the same draws whatever the label


def test_accessories_are_identity_traits_at_their_rates():
    people = [subject_identity(2, s) for s in range(1500)]
    counts = Counter(p.glasses != "none" for p in people)
    assert counts[True] / len(people) == pytest.approx(GLASSES_RATE, abs=0.035)
    beards = Counter(p.beard for p in people)
    assert beards["beard"] / len(people) == pytest.approx(BEARD_RATE, abs=0.03)
    assert beards["stubble"] / len(people) == pytest.approx(STUBBLE_RATE, abs=0.03)
    assert {p.glasses for p in people} == {"none", "thin", "thick"}


def test_light_colour_hard_light_and_jpeg_quality_vary(specs_by_class):
    specs = specs_by_class[2]
    tints = np.array([s.scene.tint for s in specs])
    assert (tints[:, 2] < 0.9).mean() > 0.15 and (tints[:, 2] > 1.05).mean() > 0.1
    assert np.mean([abs(s.scene.light_azimuth_deg) > 28 for s in specs]) == pytest.approx(
        0.3, abs=0.05
    )
    qualities = [s.jpeg_quality for s in specs]
    assert min(qualities) == 40 and max(qualities) == 95
    gains = [s.scene.light_gain for s in specs]
    assert min(gains) < 0.75 and max(gains) > 1.18


def test_still_faces_span_the_sizes_the_videos_show(specs_by_class):
    # The renderer draws a face differently by its size in pixels: a model that only saw
    # 119-137 px faces read the videos' 151-px resting faces as Mild (issue #11).
    video_face_px = SyntheticPatientStream(seed=1, seconds=1).face_width_px
    assert 140 < video_face_px < 160
    for label, specs in specs_by_class.items():
        widths = np.array([s.face_width_px for s in specs])
        assert widths.min() < 110 and widths.max() > 160, (label, widths.min(), widths.max())
        assert 0.15 < (widths > video_face_px).mean() < 0.35, label


def _face(expression=NEUTRAL, aus=REST, scene=None, identity=None):
    identity = identity or subject_identity(0, 5)
    scene = scene or Scene(noise_sigma=0.0, blur_sigma=0.0, pillow=False)
    return render_face(
        identity, aus, scene, (256, 256), 128.0, (128.0, 120.0), expression=expression
    )


def _box_change(a, b, identity, x_range, y_range):
    xs = np.array(x_range) * identity.face_width * 64 + 128
    ys = np.array(y_range) * identity.face_length * 64 + 120
    x0, x1 = (int(v) for v in np.sort(xs))
    y0, y1 = (int(v) for v in np.sort(ys))
    return float(np.abs(a[y0:y1, x0:x1].astype(int) - b[y0:y1, x0:x1].astype(int)).mean())


MOUTH = ((-0.5, 0.5), (0.55, 1.0))
BROWS = ((-0.35, 0.35), (-0.65, -0.3))


@pytest.mark.parametrize(
    "expression",
    [Expression(smile=1.0, cheek_raise=0.45), Expression(jaw_drop=1.0), Expression(yawn=1.0)],
)
def test_expressions_move_the_mouth_and_leave_the_brows(expression):
    identity = subject_identity(0, 5)
    neutral, active = _face(identity=identity), _face(expression, identity=identity)
    assert _box_change(neutral, active, identity, *MOUTH) > 4.0
    assert _box_change(neutral, active, identity, *BROWS) < 0.5


def test_au15_pulls_the_mouth_corners_down_more_with_strength_and_leaves_the_brows():
    identity = subject_identity(0, 5)
    neutral = _face(identity=identity)
    changes = []
    for strength in (0.15, 0.5, 1.0):
        active = _face(Expression(corner_depress=strength), identity=identity)
        changes.append(_box_change(neutral, active, identity, *MOUTH))
        assert _box_change(neutral, active, identity, *BROWS) == 0.0
    assert changes[0] > 0.2 and changes == sorted(changes) and changes[-1] > 2.0
    # Full strength changes the mouth less than one AU10 step, which also shows the teeth.
    au10 = _face(aus=ActionUnits(au10=1), identity=identity)
    assert changes[-1] < _box_change(neutral, au10, identity, *MOUTH)


def test_a_neutral_expression_draws_the_face_as_before_and_gaze_moves_the_iris():
    identity = subject_identity(0, 5)
    assert np.array_equal(_face(Expression(), identity=identity), _face(identity=identity))
    eyes = ((-0.65, 0.65), (-0.3, -0.05))
    moved = _face(Expression(gaze_x=0.06), identity=identity)
    assert _box_change(_face(identity=identity), moved, identity, *eyes) > 1.0


def test_bad_expressions_are_refused():
    with pytest.raises(ValueError, match="cheek_raise"):
        Expression(cheek_raise=0.5)  # would round up to AU6 = A and change the PSPI
    with pytest.raises(ValueError, match="lid_closure"):
        Expression(lid_closure=0.6)
    with pytest.raises(ValueError, match="smile"):
        Expression(smile=1.5)
    with pytest.raises(ValueError, match="corner_depress"):
        Expression(corner_depress=-0.2)
    with pytest.raises(ValueError, match="hand"):
        Scene(hand="foot")


def test_stills_are_jpeg_compressed_and_deterministic():
    a = render_sample(4, 1, 2, 0)
    b = render_sample(4, 1, 2, 0)
    assert np.array_equal(a.rgb, b.rgb) and a.jpeg_quality == b.jpeg_quality
    assert 40 <= a.jpeg_quality <= 95
    # 8x8 JPEG blocks leave larger jumps across block borders than inside blocks.
    grey = a.rgb.astype(float).mean(axis=2)
    jumps = np.abs(np.diff(grey, axis=1)).mean(axis=0)
    assert jumps[7::8].mean() > jumps[3::8].mean()


def test_video_talks_and_smiles_at_rest_only_and_keeps_the_truth():
    stream = SyntheticPatientStream(seed=1, fps=10.0, seconds=60.0, size=(320, 180))
    truths = [stream.truth_at(i)[1] for i in range(600)]
    rest = [t for t in truths if episode_pspi(t.t_s, 60.0) == 0 and not 15.0 <= t.t_s < 54.0]
    pain = [t for t in truths if 15.0 <= t.t_s < 54.0]
    assert any(t.speaking for t in rest) and any(t.smile > 0 for t in rest)
    assert max(t.mouth_open for t in rest) > 0.5
    assert not any(t.speaking or t.smile for t in pain)
    assert len({(t.gaze_x, t.gaze_y) for t in truths}) > 5  # glances throughout
    assert min(t.light_gain for t in truths) < 0.97 < 1.03 < max(t.light_gain for t in truths)
    for t in truths:  # the pain truth is the scripted episode plus blinks, as before
        blink = stream.blink_closure(t.t_s)
        if blink < 0.5:
            assert t.pspi == episode_pspi(t.t_s, 60.0)
    assert set(NUISANCE_COLUMNS) <= set(truths[0]._fields)
