"""A run folder scored through torch is corrected to the ward's prevalence exactly as its
ONNX export is: same training priors, same defaults, same options, one function."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from painmon.core.live.engine import Engine
from painmon.core.live.face import FaceObservation
from painmon.core.live.scoring import PREVALENCE_ENV, ModelLoadError, OnnxPainModel, prior_shift
from painmon.core.research.export import GateData, export_onnx
from painmon.core.research.torch_scoring import TorchPainModel
from painmon.core.research.train import TrainConfig, fit

# Imbalanced training crops, as a ward's are: 20 / 8 / 6 / 4 / 2 of 40.
COUNTS = [20, 8, 6, 4, 2]
NATURAL = (0.5, 0.2, 0.15, 0.1, 0.05)
UNIFORM = (0.2,) * 5
WARD = "0.7,0.1,0.1,0.05,0.05"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A one-epoch class-balanced run on imbalanced crops, and its ONNX export (domain gate
    fitted on the run's own training crops, as `painmon export` does)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), COUNTS)
    images = (rng.integers(0, 60, (40, 64, 64, 3)) + labels[:, None, None, None] * 40).astype(
        np.uint8
    )
    val_labels = np.tile(np.arange(5), 2)
    val = (rng.integers(0, 60, (10, 64, 64, 3)) + val_labels[:, None, None, None] * 40).astype(
        np.uint8
    )
    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(model="dacnn", epochs=1, batch_size=8, device="cpu", warmup_epochs=0)
    fit(cfg, images, labels, val, val_labels, run, progress=False)
    out = run / "m.onnx"
    export_onnx(run, out, parity_samples=2, gate_data=GateData(images, labels, val, 4, 1))
    return run, out


def _crops(n: int = 4) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def _corrected(model, crops: np.ndarray) -> np.ndarray:
    return model.prevalence.apply(model.predict(crops).probs)


def test_the_run_records_its_training_priors(exported):
    run, out = exported
    entry = json.loads((run / "best.json").read_text())["class_prevalence"]
    assert entry["natural"] == pytest.approx(NATURAL)
    assert entry["trained_prior"] == pytest.approx(UNIFORM)  # class-balanced sampling
    # The export carries the same priors, and says how they were counted.
    onnx = OnnxPainModel(out, prefer="cpu", env={})
    metadata = onnx.metadata["class_prevalence"]
    assert metadata["natural"] == pytest.approx(NATURAL)
    assert metadata["trained_prior"] == pytest.approx(UNIFORM)
    assert metadata["sampling"] == "class_balanced" and metadata["train_crops"] == 40


def test_torch_and_onnx_agree_at_the_training_prevalence_by_default(exported):
    run, out = exported
    torch_model = TorchPainModel(run, device="cpu", env={})
    onnx = OnnxPainModel(out, prefer="cpu", env={})
    assert torch_model.prevalence == onnx.prevalence
    assert torch_model.prevalence.source == "training data"
    assert torch_model.prevalence.target == pytest.approx(NATURAL)
    crops = _crops()
    a, b = _corrected(torch_model, crops), _corrected(onnx, crops)
    assert np.allclose(a, b, atol=1e-4)
    raw = torch_model.predict(crops).probs
    # A real correction (not the identity): the training data's 50 % no-pain moves mass to 0.
    assert np.allclose(a, prior_shift(raw, NATURAL, UNIFORM), atol=1e-9)
    assert np.all(a[:, 0] > raw[:, 0])


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_torch_and_onnx_agree_at_a_stated_ward_prevalence(exported, how):
    run, out = exported
    kwargs = {"prevalence": WARD, "env": {}} if how == "argument" else {
        "env": {PREVALENCE_ENV: WARD}}  # fmt: skip
    torch_model = TorchPainModel(run, device="cpu", **kwargs)
    onnx = OnnxPainModel(out, prefer="cpu", **kwargs)
    assert torch_model.prevalence == onnx.prevalence
    assert torch_model.prevalence.target == pytest.approx((0.7, 0.1, 0.1, 0.05, 0.05))
    assert torch_model.prevalence.source == (
        "prevalence argument" if how == "argument" else f"${PREVALENCE_ENV}"
    )
    crops = _crops()
    assert np.allclose(_corrected(torch_model, crops), _corrected(onnx, crops), atol=1e-4)


def test_the_engine_shows_the_same_probabilities_through_either_backend(exported):
    run, out = exported

    class _NoFace:
        name = "no-face stub"

        def observe(self, rgb, t_s):
            return FaceObservation(t_s, False, None, 0, self.name)

        def close(self):
            pass

    crop = _crops(1)[0]
    shown = []
    for model in (TorchPainModel(run, device="cpu", prevalence=WARD, env={}),
                  OnnxPainModel(out, prefer="cpu", prevalence=WARD, env={})):  # fmt: skip
        engine = Engine(model, _NoFace())
        try:
            probs, _cam, _gate = engine._score(crop, 0)
        finally:
            engine.close()
        shown.append(probs)
    raw = TorchPainModel(run, device="cpu", env={}).predict(crop[None]).probs[0]
    assert np.allclose(shown[0], shown[1], atol=1e-4)
    assert not np.allclose(shown[0], raw, atol=1e-3)  # corrected, not the raw output


def test_a_bad_prevalence_is_refused_at_load_by_both(exported):
    run, out = exported
    for load in (lambda **kw: TorchPainModel(run, device="cpu", **kw),
                 lambda **kw: OnnxPainModel(out, prefer="cpu", **kw)):  # fmt: skip
        with pytest.raises(ModelLoadError, match="sum to 1"):
            load(prevalence="0.5,0.5,0.5,0,0", env={})
        with pytest.raises(ModelLoadError, match="sum to 1"):
            load(env={PREVALENCE_ENV: "0.5,0.5,0.5,0,0"})


def test_an_older_run_without_priors_says_so(exported, tmp_path, caplog):
    run, _ = exported
    for name in ("best.safetensors", "config.json"):
        (tmp_path / name).write_bytes((run / name).read_bytes())
    meta = json.loads((run / "best.json").read_text())
    del meta["class_prevalence"]  # as checkpoints were written before they recorded it
    (tmp_path / "best.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        model = TorchPainModel(tmp_path, device="cpu", env={})
    assert model.prevalence is None
    assert "not prevalence-corrected" in caplog.text
    with pytest.raises(ModelLoadError, match="records no training class frequencies"):
        TorchPainModel(tmp_path, device="cpu", prevalence=WARD, env={})


def test_an_export_keeps_the_runs_priors_over_other_gate_crops(exported, tmp_path, caplog):
    run, _ = exported
    rng = np.random.default_rng(2)
    other = np.tile(np.arange(5), 6)  # balanced: not the crops the run was trained on
    images = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING):
        result = export_onnx(run, tmp_path / "other.onnx", parity_samples=2,
                             gate_data=GateData(images, other, images[:6], 4, 1))  # fmt: skip
    assert "the export keeps the run's" in caplog.text
    entry = json.loads(result.metadata["class_prevalence"])
    assert entry["natural"] == pytest.approx(NATURAL)
    assert entry["trained_prior"] == pytest.approx(UNIFORM)
    assert entry["train_crops"] is None  # not counted from these crops
    torch_model = TorchPainModel(run, device="cpu", env={})
    assert OnnxPainModel(tmp_path / "other.onnx", prefer="cpu", env={}).prevalence == (
        torch_model.prevalence
    )
