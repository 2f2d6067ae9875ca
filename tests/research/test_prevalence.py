"""Calibration at the ward's prevalence: prior shift (Saerens et al. 2002), the training
priors an export records, and ECE at a stated prevalence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from painmon.core.live.scoring import (
    PREVALENCE_ENV,
    ModelLoadError,
    OnnxPainModel,
    model_prevalence_correction,
    parse_metadata,
    parse_prevalence,
    prevalence_correction,
    prior_shift,
)
from painmon.core.research.calibration import (
    ece_at_prevalence,
    format_prevalence,
    prevalence_report,
    prevalence_weights,
    training_priors,
)
from painmon.core.research.metrics import calibration_errors
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.model_cfg import PainModelCfg

UNIFORM = (0.2,) * 5
# UNBC-like: most frames show no pain.
WARD = (0.56, 0.2, 0.12, 0.08, 0.04)


def _cfg(**kwargs) -> PainModelCfg:
    base = dict(
        architecture="dacnn",
        model_kwargs={},
        input_size=(3, 64, 64),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        class_names=("0", "1", "2", "3", "4"),
    )
    return PainModelCfg(**(base | kwargs))


# --- the formula ------------------------------------------------------------------------------


def test_prior_shift_by_hand():
    # Two classes fitted at 50/50, corrected to 80/20: an undecided 0.5/0.5 becomes 0.8/0.2.
    assert prior_shift(np.array([0.5, 0.5]), [0.8, 0.2], [0.5, 0.5]) == pytest.approx([0.8, 0.2])
    # Weights 0.5/(1/3) = 1.5, 0.25/(1/3) = 0.75, 0.75: [0.3, 0.225, 0.375] / 0.9.
    shifted = prior_shift(np.array([0.2, 0.3, 0.5]), [0.5, 0.25, 0.25], [1 / 3] * 3)
    assert shifted == pytest.approx([1 / 3, 0.25, 0.375 / 0.9])
    # Row-wise on a batch, and the rows still sum to 1.
    batch = prior_shift(np.array([[0.5, 0.5], [0.9, 0.1]]), [0.8, 0.2], [0.5, 0.5])
    assert batch[1] == pytest.approx([0.9 * 0.8 / (0.72 + 0.02), 0.02 / 0.74])
    assert batch.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_prior_shift_is_the_identity_when_the_target_is_the_trained_prior():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=50)
    assert np.allclose(prior_shift(probs, UNIFORM, UNIFORM), probs, atol=1e-12)
    assert np.allclose(prior_shift(probs, WARD, WARD), probs, atol=1e-12)
    correction = prevalence_correction(_cfg(class_prevalence=WARD, trained_prior=WARD), None, "")
    assert correction is not None and correction.is_identity
    assert np.array_equal(correction.apply(probs), probs)


def test_prior_shift_refuses_a_class_the_model_never_trained_on():
    with pytest.raises(InvalidInputError, match="never trained on"):
        prior_shift(np.array([0.5, 0.5, 0.0]), [0.4, 0.4, 0.2], [0.5, 0.5, 0.0])
    # A class absent from training and from the target stays at 0.
    shifted = prior_shift(np.array([0.5, 0.5, 0.0]), [0.75, 0.25, 0.0], [0.5, 0.5, 0.0])
    assert shifted == pytest.approx([0.75, 0.25, 0.0])


def test_training_priors_follow_the_sampler():
    labels = np.array([0] * 56 + [1] * 20 + [2] * 12 + [3] * 12)  # class 4 absent
    natural, balanced = training_priors(labels, 5, class_weighted_sampling=True)
    assert natural == pytest.approx([0.56, 0.2, 0.12, 0.12, 0.0])
    # Every class present drawn equally often, the absent one never (sample_epoch_indices).
    assert balanced == pytest.approx([0.25, 0.25, 0.25, 0.25, 0.0])
    assert training_priors(labels, 5, class_weighted_sampling=False) == (natural, natural)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        training_priors(np.array([0, 5]), 5, True)


@pytest.mark.slow  # torch's import alone takes seconds on a shared machine
def test_the_balanced_sampler_really_has_those_priors():
    torch = pytest.importorskip("torch")
    from painmon.core.research.train import sample_epoch_indices

    labels = torch.tensor([0] * 560 + [1] * 200 + [2] * 120 + [3] * 80 + [4] * 40)
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([labels[sample_epoch_indices(labels, True, gen)] for _ in range(20)])
    shares = torch.bincount(drawn, minlength=5).double() / drawn.numel()
    _natural, balanced = training_priors(labels.numpy(), 5, True)
    assert shares.numpy() == pytest.approx(balanced, abs=0.01)


# --- the setting ------------------------------------------------------------------------------


def test_parse_prevalence():
    assert parse_prevalence("0.56, 0.2,0.12,0.08,0.04", 5) == pytest.approx(WARD)
    for bad, match in [
        ("0.5,0.5", "one value per class"),
        ("0.5,0.2,0.1,0.1,x", "comma-separated shares"),
        ("0.6,0.2,0.12,0.08,0.04", "sum to 1"),
        ("1.1,-0.1,0,0,0", ">= 0"),
        ("nan,0,0,0,1", "finite"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            parse_prevalence(bad, 5)


def test_prevalence_correction_defaults_to_the_training_data():
    cfg = _cfg(class_prevalence=WARD, trained_prior=UNIFORM)
    default = prevalence_correction(cfg, None, "unused")
    assert default.target == pytest.approx(WARD) and default.trained_prior == UNIFORM
    assert default.source == "training data" and not default.is_identity
    ward = prevalence_correction(cfg, "0.7,0.1,0.1,0.05,0.05", "$PAINMON_PREVALENCE")
    assert ward.target == pytest.approx((0.7, 0.1, 0.1, 0.05, 0.05))
    assert ward.source == "$PAINMON_PREVALENCE"
    # A model exported before the priors were recorded: no correction, unless one is asked for.
    assert prevalence_correction(_cfg(), None, "") is None
    with pytest.raises(InvalidInputError, match="records no training priors"):
        prevalence_correction(_cfg(), WARD, "the ward")


def test_only_a_real_shift_is_announced_at_load(caplog, tmp_path):
    path = tmp_path / "m.onnx"
    balanced = _cfg(class_prevalence=UNIFORM, trained_prior=UNIFORM)
    with caplog.at_level("INFO", logger="painmon.core.live.scoring"):
        same = model_prevalence_correction(balanced, path, env={})
        assert same.is_identity and not [r for r in caplog.records if r.levelname == "INFO"]
        shifted = model_prevalence_correction(
            balanced, path, env={"PAINMON_PREVALENCE": "0.7,0.1,0.1,0.05,0.05"}
        )
    assert not shifted.is_identity
    said = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert said == [
        "m.onnx: probabilities corrected from the trained priors 0.20/0.20/0.20/0.20/0.20 to "
        "the prevalence 0.70/0.10/0.10/0.05/0.05 ($PAINMON_PREVALENCE)"
    ]


# --- metadata ---------------------------------------------------------------------------------


def test_prevalence_metadata_round_trip():
    cfg = _cfg(class_prevalence=WARD, trained_prior=UNIFORM, temperature=1.3)
    onnx = {k: json.dumps(v) if not isinstance(v, str) else v
            for k, v in cfg.to_onnx_metadata().items()}  # fmt: skip
    back = PainModelCfg.from_onnx_metadata(parse_metadata(onnx))
    assert back == cfg and back.class_prevalence == pytest.approx(WARD)
    assert back.trained_prior == pytest.approx(UNIFORM)
    assert PainModelCfg.from_checkpoint_meta(cfg.to_checkpoint_meta()) == cfg

    # Old models and checkpoints have no entry: they load, with no priors.
    old = _cfg()
    assert "class_prevalence" not in old.to_onnx_metadata()
    assert "class_prevalence" not in old.to_checkpoint_meta()
    assert PainModelCfg.from_checkpoint_meta(old.to_checkpoint_meta()).class_prevalence is None


@pytest.mark.parametrize(
    ("natural", "trained", "match"),
    [
        (WARD, None, "come together"),
        (None, UNIFORM, "come together"),
        (WARD[:4], UNIFORM, "one value per class"),
        ((0.5, 0.2, 0.12, 0.08, 0.04), UNIFORM, "sum to 1"),
        (WARD, (0.25, 0.25, 0.25, 0.25, 0.0), "trained_prior is 0 for class"),
        ("0.56", UNIFORM, "list of 5 numbers"),
        ((True, 0, 0, 0, 0), UNIFORM, "list of 5 numbers"),
    ],
)
def test_prevalence_metadata_is_strict(natural, trained, match):
    with pytest.raises(InvalidInputError, match=match):
        _cfg(class_prevalence=natural, trained_prior=trained)


def test_a_malformed_prevalence_entry_is_refused():
    meta = _cfg().to_checkpoint_meta() | {"class_prevalence": [0.2] * 5}
    with pytest.raises(InvalidInputError, match="'natural' and 'trained_prior'"):
        PainModelCfg.from_checkpoint_meta(meta)


# --- ECE at a prevalence ----------------------------------------------------------------------


def _balanced_trained_posteriors(labels: np.ndarray, seed: int) -> np.ndarray:
    """Exact posteriors of a perfectly fitted model trained under uniform priors.

    Ordinal classes, as pain levels are: x | c ~ N(c, 1) on one axis, so neighbours
    overlap. The model outputs softmax(log N(x; c, 1) + log 0.2), the Bayes posterior at
    balanced priors; at prevalence pi the true posterior has log pi_c in place of log 0.2,
    which is what prior shift restores. (Well-separated classes in many dimensions hide
    the shift from top-label ECE: over- and under-confident classes cancel within a bin.)
    """
    rng = np.random.default_rng(seed)
    centres = np.arange(5.0)
    x = centres[labels] + rng.standard_normal(labels.size)
    log_lik = -0.5 * (x[:, None] - centres[None]) ** 2
    z = log_lik - log_lik.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_ece_at_prevalence_improves_after_correction():
    rng = np.random.default_rng(1)
    labels = rng.choice(5, size=40_000, p=WARD)  # a ward at UNBC-like prevalence
    probs = _balanced_trained_posteriors(labels, seed=2)
    uncorrected = ece_at_prevalence(labels, probs, WARD)
    corrected = ece_at_prevalence(labels, prior_shift(probs, WARD, UNIFORM), WARD)
    assert corrected < 0.01 < 0.05 < uncorrected
    # At the evaluation set's own prevalence the weights are 1: the plain ECE.
    shares = np.bincount(labels, minlength=5) / labels.size
    assert ece_at_prevalence(labels, probs, shares) == pytest.approx(
        calibration_errors(labels, probs)[0], abs=1e-12
    )
    report = prevalence_report(labels, probs, WARD, UNIFORM)
    assert report["ece_uncorrected"] == pytest.approx(uncorrected)
    assert report["ece_corrected"] == pytest.approx(corrected)
    assert format_prevalence(report["prevalence"]) == "0.56/0.20/0.12/0.08/0.04"


def test_ece_at_prevalence_reweights_a_balanced_test_set():
    # A test set with every class equally often says what a ward at WARD would see once
    # each class is weighted by its share there.
    labels = np.repeat(np.arange(5), 8_000)
    probs = _balanced_trained_posteriors(labels, seed=3)
    assert calibration_errors(labels, probs)[0] < 0.01  # calibrated where it was trained
    assert ece_at_prevalence(labels, probs, WARD) > 0.05
    assert ece_at_prevalence(labels, prior_shift(probs, WARD, UNIFORM), WARD) < 0.01
    weights = prevalence_weights(labels, WARD)
    assert weights[labels == 0] == pytest.approx(0.56 / 0.2)


def test_ece_at_prevalence_ignores_classes_absent_from_the_labels(caplog):
    labels = np.array([0, 0, 1, 1])
    with caplog.at_level("WARNING"):
        weights = prevalence_weights(labels, WARD)
    assert "absent from the evaluation set" in caplog.text
    assert weights == pytest.approx([0.56 / 0.76 / 0.5] * 2 + [0.2 / 0.76 / 0.5] * 2)


# --- the export records them, the bedside reads them -------------------------------------------


@pytest.mark.slow
def test_export_records_the_training_priors_and_the_bedside_corrects(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from painmon.core.research.export import GateData, export_onnx
    from painmon.core.research.train import checkpoint_meta, save_checkpoint
    from painmon.models import create_model

    torch.manual_seed(0)
    model = create_model("dacnn").eval()
    run = tmp_path / "run"
    meta = checkpoint_meta(model, temperature=1.0, data_sha256="cd" * 32, epoch=0)
    save_checkpoint(model, run / "best.safetensors", meta)
    # Imbalanced training crops: 28 / 10 / 6 / 4 / 2 of 50.
    labels = np.repeat(np.arange(5), [28, 10, 6, 4, 2])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
    val = rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    out = run / "m.onnx"
    result = export_onnx(run / "best.safetensors", out, parity_samples=2,
                         gate_data=GateData(images, labels, val, 5, 1))  # fmt: skip
    entry = json.loads(result.metadata["class_prevalence"])
    assert entry["natural"] == pytest.approx([0.56, 0.2, 0.12, 0.08, 0.04])
    assert entry["trained_prior"] == pytest.approx(UNIFORM)  # no config.json: the default
    assert entry["sampling"] == "class_balanced" and entry["train_crops"] == 50

    monkeypatch.delenv(PREVALENCE_ENV, raising=False)
    bedside = OnnxPainModel(out, prefer="cpu")
    assert bedside.cfg.class_prevalence == pytest.approx(WARD)
    assert bedside.prevalence.source == "training data"
    crops = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    raw = bedside.predict(crops).probs
    assert bedside.prevalence.apply(raw) == pytest.approx(prior_shift(raw, WARD, UNIFORM))

    ward = OnnxPainModel(out, prefer="cpu", env={PREVALENCE_ENV: "0.2,0.2,0.2,0.2,0.2"})
    assert ward.prevalence.is_identity and ward.prevalence.source == f"${PREVALENCE_ENV}"
    with pytest.raises(ModelLoadError, match="sum to 1"):
        OnnxPainModel(out, prefer="cpu", env={PREVALENCE_ENV: "0.5,0.5,0.5,0,0"})


@pytest.mark.slow
def test_evaluate_reports_ece_at_the_training_prevalence(toy_crops, tmp_path):
    pytest.importorskip("torch")
    from pathlib import Path

    from painmon.core.research.crops import CropReport, CropSet
    from painmon.core.research.experiment import (
        PreparedData,
        evaluate_partition,
        format_evaluation,
        train_on_plan,
    )
    from painmon.core.research.splits import make_splits
    from painmon.core.research.train import TrainConfig

    images, labels = toy_crops(100, 7)
    labels = np.resize(np.repeat(np.arange(5), [10, 4, 3, 2, 1]), 100)  # 50/20/15/10/5 %
    subjects = np.repeat([f"s{i:02d}" for i in range(20)], 5)
    crops = CropSet(images, labels, subjects, tuple(f"{i}.png" for i in range(100)),
                    (None,) * 100)  # fmt: skip
    data = PreparedData(Path("toy.npz"), (), crops, CropReport(100, 100, 100, 0), "ab" * 32)
    plan = make_splits(crops.as_samples(), data.dataset_sha256, seed=0, folds=2)
    cfg = TrainConfig(model="micropainnet", epochs=1, batch_size=16, device="cpu")
    train_on_plan(data, plan, cfg, tmp_path / "run", progress=False)
    result = evaluate_partition(tmp_path / "run", data, "test", n_boot=20)

    entry = result["prevalence"]
    train_labels = labels[np.isin(subjects, plan.train)]
    expected = np.bincount(train_labels, minlength=5) / train_labels.size
    assert entry["prevalence"] == pytest.approx(expected)
    assert entry["trained_prior"] == pytest.approx(UNIFORM)  # config.json: balanced sampler
    assert entry["source"] == "training data"
    assert 0 <= entry["ece_corrected"] <= 1 and 0 <= entry["ece_uncorrected"] <= 1
    line = format_evaluation(result).splitlines()[-1]
    assert line.startswith(f"ECE at prevalence {format_prevalence(expected)} (training data): ")


class _NoTracker:
    """The engine's face tracker, never asked for a face here (crops are scored directly)."""

    def close(self) -> None:
        pass


@pytest.mark.slow  # the exported model fixture takes seconds to build
def test_the_engine_scores_at_the_wards_prevalence(untrained_dacnn_onnx):
    from painmon.core.live.engine import Engine
    from painmon.core.live.scoring import PrevalenceCorrection

    model = OnnxPainModel(untrained_dacnn_onnx, prefer="cpu")
    assert model.prevalence is None  # exported without training crops: nothing to correct
    crop = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    raw = model.predict(crop[np.newaxis]).probs[0]
    engine = Engine(model, face_tracker=_NoTracker())
    try:
        assert engine._score(crop, 0)[0] == pytest.approx(raw, abs=1e-7)
        model.prevalence = PrevalenceCorrection(UNIFORM, WARD, "test")
        corrected = engine._score(crop, 1)[0]
        assert corrected == pytest.approx(prior_shift(raw, WARD, UNIFORM), abs=1e-7)
        assert corrected.sum() == pytest.approx(1.0)
    finally:
        engine.close()
