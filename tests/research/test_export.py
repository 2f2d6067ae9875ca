"""ONNX export and the ONNX Runtime wrapper: checker, parity with torch, metadata, integrity."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from painmon.core.live.scoring import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    DEMO_NOTICE,
    PROVIDER_ENV,
    TENSORRT_PROVIDER,
    ModelIntegrityError,
    ModelLoadError,
    OnnxPainModel,
    ProviderError,
    choose_providers,
)
from painmon.core.research import export as export_mod
from painmon.core.research.export import ExportError, GateData, export_onnx, parity_images
from painmon.core.research.train import checkpoint_meta, save_checkpoint
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.model_cfg import thaw
from painmon.models import create_model, gradcam

log = logging.getLogger(__name__)

TEMPERATURE = 1.7
ATOL = 1e-4
ALL = [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]


@pytest.fixture(autouse=True)
def _no_provider_override(monkeypatch):
    monkeypatch.delenv(PROVIDER_ENV, raising=False)


def _trained_like(name: str, seed: int) -> torch.nn.Module:
    """A fresh model whose BatchNorm layers hold non-trivial running stats and affine terms."""
    torch.manual_seed(seed)
    model = create_model(name)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for shift in (0.3, -0.2, 0.5, 0.0):
            model(torch.randn(8, 3, 64, 64) * 1.5 + shift)
    return model.eval()


def _meta(model) -> dict:
    return checkpoint_meta(
        model,
        temperature=TEMPERATURE,
        metrics={"val_accuracy": 0.41, "val_macro_f1": 0.33},
        data_sha256="ab" * 32,
        epoch=3,
    )


_EXPORTS: dict[str, tuple] = {}


def _gate_data() -> GateData:
    """Smooth random crops (see _crops) for the gate: 80 fit it, 40 of others set its threshold."""
    return GateData(_crops(80, seed=100), np.arange(80) % 5, _crops(40, seed=101), 8, 4)


def _export_once(name: str, tmp_path_factory) -> tuple:
    """(model, ExportResult, checkpoint path) for one architecture, exported once per module."""
    if name not in _EXPORTS:
        run_dir = tmp_path_factory.mktemp(f"run-{name}")
        model = _trained_like(name, seed=7)
        checkpoint = run_dir / "best.safetensors"
        save_checkpoint(model, checkpoint, _meta(model))
        # A run folder for one architecture, the checkpoint file for the other.
        source = run_dir if name == "dacnn" else checkpoint
        result = export_onnx(source, run_dir / "out" / f"{name}.onnx", gate_data=_gate_data())
        _EXPORTS[name] = (model, result, checkpoint)
    return _EXPORTS[name]


@pytest.fixture(scope="module", params=["dacnn", "simplecnn"])
def exported(request, tmp_path_factory):
    return _export_once(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def dacnn_exported(tmp_path_factory):
    return _export_once("dacnn", tmp_path_factory)


def _crops(batch: int, seed: int) -> np.ndarray:
    """Smooth, face-sized uint8 RGB crops (coarse noise upsampled, plus fine noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (batch, 8, 8, 3))
    smooth = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def _torch_pipeline(model, crops_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: training's normalisation, softmax(logits/T), painmon.models.gradcam."""
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(crops_u8).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    with torch.no_grad():
        probs = torch.softmax(model(x) / TEMPERATURE, dim=1)
        cam = gradcam(model, x)
        attention = model.attention_maps(x)
    if attention is None:
        attention = torch.ones(cam.shape[0], 1, *cam.shape[1:])
    return probs.numpy(), cam.numpy(), attention.numpy()


def test_export_writes_checked_model_and_sidecar(exported):
    _model, result, _ = exported
    onnx.checker.check_model(onnx.load(str(result.onnx_path)), full_check=True)
    assert sorted(p.name for p in result.onnx_path.parent.iterdir()) == sorted(
        [result.onnx_path.name, result.onnx_path.name + ".sha256"]
    ), "no temporary file may survive an export"
    digest, name = result.sidecar_path.read_text().split()
    assert (digest, name) == (result.sha256, result.onnx_path.name)
    assert all(diff <= ATOL for diff in result.parity_max_abs_diff.values())
    # Ill-conditioned heatmaps are left out of the check, but most must be compared.
    assert result.gradcams_compared >= result.parity_samples // 2


def test_each_weight_is_stored_once(exported):
    model, result, _ = exported
    gate = result.domain_gate
    weights_bytes = 4 * sum(p.numel() for p in model.parameters())
    # The domain gate stores its whitening matrix (D x D) and class means once.
    weights_bytes += 4 * (gate.whiten.size + gate.means.size + gate.centre.size)
    # BN running stats and graph structure add well under 1 MB; a transposed copy of the
    # head (Grad-CAM's explicit gradient) would add 8 MB for DA-CNN.
    assert result.onnx_path.stat().st_size < weights_bytes + 1_000_000
    assert result.onnx_path.stat().st_size <= 20_000_000  # the shipped-model size budget


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_predict_matches_torch_pipeline(exported, batch):
    model, result, _ = exported
    runtime = OnnxPainModel(result.onnx_path, prefer="cpu")
    crops = _crops(batch, seed=batch)
    probs, cam, attention, _score = runtime.predict(crops)
    ref_probs, ref_cam, ref_attention = _torch_pipeline(model, crops)
    heads = 4 if result.architecture == "dacnn" else 1
    assert probs.shape == (batch, 5)
    assert cam.shape == (batch, 8, 8)
    assert attention.shape == (batch, heads, 8, 8)
    np.testing.assert_allclose(probs, ref_probs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(cam, ref_cam, atol=ATOL, rtol=0)
    np.testing.assert_allclose(attention, ref_attention, atol=ATOL, rtol=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert cam.min() >= 0.0
    assert cam.max() <= 1.0 + 1e-6
    # The temperature is in the graph: softmax(log p * T) recovers the uncalibrated softmax.
    uncalibrated = torch.softmax(torch.from_numpy(ref_probs).log() * TEMPERATURE, dim=1).numpy()
    assert np.abs(probs - uncalibrated).max() > 1e-3


def test_metadata_props_present_and_parse(exported):
    model, result, checkpoint = exported
    props = {p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}
    for key in (
        "painmon_version",
        "architecture",
        "model_kwargs",
        "class_names",
        "pspi_mapping",
        "preprocessing",
        "temperature",
        "training_data_sha256",
        "metrics",
        "intended_use",
        "created_utc",
        "attention",
    ):
        assert key in props, key
        assert isinstance(props[key], str)
    runtime = OnnxPainModel(result.onnx_path, prefer="cpu")
    meta = runtime.metadata
    cfg = model.pretrained_cfg
    assert meta["architecture"] == cfg.architecture
    assert meta["model_kwargs"] == json.loads(json.dumps(thaw(cfg.model_kwargs)))
    assert meta["class_names"] == list(cfg.class_names) == runtime.class_names
    assert meta["pspi_mapping"] == cfg.pspi_mapping
    assert meta["temperature"] == pytest.approx(TEMPERATURE)
    assert meta["training_data_sha256"] == "ab" * 32
    assert meta["metrics"] == {"val_accuracy": 0.41, "val_macro_f1": 0.33}
    assert meta["intended_use"] == export_mod.DEFAULT_INTENDED_USE
    assert meta["demo"] is False and runtime.is_demo is False
    pre = meta["preprocessing"]
    assert pre["colour_order"] == "RGB"
    assert pre["layout"] == "NHWC" and pre["dtype"] == "uint8"
    assert pre["value_range"] == [0, 255]
    assert pre["mean"] == pytest.approx(cfg.mean) and pre["std"] == pytest.approx(cfg.std)
    assert runtime.input_size == cfg.input_size == (3, 64, 64)
    # The runtime reads the same config back, with the checkpoint's temperature.
    # (Plus the class priors the export records; tests/research/test_prevalence.py.)
    assert dataclasses.replace(
        runtime.cfg, class_prevalence=None, trained_prior=None
    ) == dataclasses.replace(cfg, temperature=TEMPERATURE)
    assert meta["source_checkpoint"]["file"] == checkpoint.name
    datetime.strptime(meta["created_utc"], "%Y-%m-%dT%H:%M:%SZ")
    if result.architecture == "dacnn":
        assert meta["attention"] == {"kind": "spatial", "heads": 4}
    else:
        assert meta["attention"]["kind"] == "none"
        assert "ones" in meta["attention"]["note"]
    assert runtime.providers == [CPU_PROVIDER]
    assert runtime.sha256 == result.sha256
    assert runtime.verified


def test_demo_export_says_so(dacnn_exported, tmp_path):
    _model, _result, checkpoint = dacnn_exported
    out = tmp_path / "demo.onnx"
    export_onnx(
        checkpoint,
        out,
        demo=True,
        intended_use="Ward demo.",
        parity_samples=2,
        gate_data=_gate_data(),
    )
    runtime = OnnxPainModel(out, prefer="cpu")
    assert DEMO_NOTICE in runtime.metadata["intended_use"]
    assert "Ward demo." in runtime.metadata["intended_use"]
    assert runtime.metadata["demo"] is True
    assert runtime.is_demo


def _copy_model(result, tmp_path: Path, sidecar: bool = True) -> Path:
    target = tmp_path / result.onnx_path.name
    shutil.copyfile(result.onnx_path, target)
    if sidecar:
        shutil.copyfile(result.sidecar_path, target.with_name(target.name + ".sha256"))
    return target


def test_flipped_byte_is_refused(exported, tmp_path):
    _model, result, _ = exported
    target = _copy_model(result, tmp_path)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"SHA-256 .* expected .* corrupt or replaced"):
        OnnxPainModel(target, prefer="cpu")


def test_expected_sha256_is_checked(exported, tmp_path):
    _model, result, _ = exported
    target = _copy_model(result, tmp_path, sidecar=False)
    assert OnnxPainModel(target, prefer="cpu", expected_sha256=result.sha256).verified
    with pytest.raises(ModelIntegrityError, match="expected_sha256"):
        OnnxPainModel(target, prefer="cpu", expected_sha256="0" * 64)


def test_missing_sidecar_is_refused_unless_allowed(exported, tmp_path):
    _model, result, _ = exported
    target = _copy_model(result, tmp_path, sidecar=False)
    with pytest.raises(ModelIntegrityError, match=r"\.sha256 is missing"):
        OnnxPainModel(target, prefer="cpu")
    runtime = OnnxPainModel(target, prefer="cpu", allow_unverified=True)
    assert not runtime.verified
    assert runtime.predict(_crops(1, seed=0)).probs.shape == (1, 5)


def test_corrupt_or_foreign_files_raise_model_load_error(exported, tmp_path):
    _model, result, _ = exported
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(result.onnx_path.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        OnnxPainModel(truncated, prefer="cpu", allow_unverified=True)
    with pytest.raises(ModelLoadError, match="not found"):
        OnnxPainModel(tmp_path / "absent.onnx", prefer="cpu")
    # A valid ONNX graph that painmon did not export.
    make_info = onnx.helper.make_tensor_value_info
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [make_info("x", onnx.TensorProto.FLOAT, [1])],
        [make_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(
        onnx.helper.make_model(
            graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8
        ),
        str(foreign),
    )
    with pytest.raises(ModelLoadError, match="not a painmon export"):
        OnnxPainModel(foreign, prefer="cpu", allow_unverified=True)


def test_predict_rejects_wrong_crops(exported):
    _model, result, _ = exported
    runtime = OnnxPainModel(result.onnx_path, prefer="cpu")
    with pytest.raises(ValueError, match="uint8"):
        runtime.predict(_crops(1, 0).astype(np.float32))
    with pytest.raises(ValueError, match=r"\(B, 64, 64, 3\)"):
        runtime.predict(np.zeros((1, 32, 32, 3), np.uint8))


def test_failed_parity_raises_and_leaves_nothing(dacnn_exported, tmp_path, monkeypatch):
    _model, _result, checkpoint = dacnn_exported
    # A tolerance below zero makes any agreement a failure: this checks the failure path.
    monkeypatch.setattr(export_mod, "PARITY_ATOL", -1.0)
    out = tmp_path / "bad" / "model.onnx"
    with pytest.raises(ExportError, match="disagrees with torch"):
        export_onnx(checkpoint, out, parity_samples=2, gate_data=_gate_data())
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("available", "prefer", "env", "expected"),
    [
        (ALL, "auto", None, [CUDA_PROVIDER, CPU_PROVIDER]),
        ([CPU_PROVIDER], "auto", None, [CPU_PROVIDER]),
        (ALL, "cpu", None, [CPU_PROVIDER]),
        (ALL, "cuda", None, [CUDA_PROVIDER, CPU_PROVIDER]),
        (ALL, "tensorrt", None, [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]),
        (ALL, "auto", {PROVIDER_ENV: "cpu"}, [CPU_PROVIDER]),
        (ALL, "cpu", {PROVIDER_ENV: " CUDA "}, [CUDA_PROVIDER, CPU_PROVIDER]),
        (ALL, "cpu", {PROVIDER_ENV: ""}, [CPU_PROVIDER]),
        ([CUDA_PROVIDER], "auto", {}, [CUDA_PROVIDER, CPU_PROVIDER]),
        ([], "auto", None, [CPU_PROVIDER]),
    ],
)
def test_choose_providers(available, prefer, env, expected):
    assert choose_providers(available, prefer, env) == expected


def test_choose_providers_errors():
    with pytest.raises(ProviderError, match="CUDA was requested"):
        choose_providers([CPU_PROVIDER], "cuda")
    with pytest.raises(ProviderError, match=PROVIDER_ENV):
        choose_providers([CPU_PROVIDER], "auto", {PROVIDER_ENV: "cuda"})
    with pytest.raises(ProviderError, match="TensorRT"):
        choose_providers([CUDA_PROVIDER, CPU_PROVIDER], "tensorrt")
    with pytest.raises(ValueError, match="unknown ONNX Runtime provider choice"):
        choose_providers(ALL, "gpu")


# --- the domain gate --------------------------------------------------------------------------


def test_domain_gate_is_in_the_graph_and_the_metadata(dacnn_exported):
    model, result, _ = dacnn_exported
    runtime = OnnxPainModel(result.onnx_path, prefer="cpu")
    gate = result.domain_gate
    assert gate is not None and runtime.domain_gate is not None
    assert runtime.domain_gate.threshold == pytest.approx(gate.threshold)
    entry = runtime.metadata["domain_gate"]
    assert entry["method"] == "mahalanobis-tied" and entry["quantile"] == 0.99
    assert entry["fit"] == {
        "train_crops": 80,
        "train_ring_swap": False,
        "train_subjects": 8,
        "val_crops": 40,
        "val_subjects": 4,
        "val_score_median": pytest.approx(gate.val_scores_median),
    }
    assert "domain_score" in runtime.metadata["outputs"]
    # The graph's score is the fit's own float64 score of the torch features.
    from painmon.core.research.domain_gate import extract_gate_features
    from painmon.core.research.export import PainExportWrapper

    crops = np.concatenate([_crops(4, seed=5), parity_images(64, 64, 4)])
    cfg = model.pretrained_cfg
    normalise = PainExportWrapper(model, cfg.mean, cfg.std, TEMPERATURE).normalise
    expected = gate.score(extract_gate_features(model, normalise, crops))
    got = runtime.predict(crops).domain_score
    assert got.shape == (len(crops),)
    np.testing.assert_allclose(got, expected, rtol=1e-3)
    # Validation crops sit at or under the threshold (the 0.99 quantile of their scores);
    # flat and checkerboard images are far beyond it.
    assert (
        runtime.predict(_gate_data().val_images).domain_score <= gate.threshold * 1.0001
    ).mean() >= 0.97
    assert (got[4:] > gate.threshold).all()


def test_ring_swapped_crops_keep_their_centre_and_take_anothers_ring():
    from painmon.core.research.domain_gate import ring_swapped

    # crop i is flat grey 10*i: a pixel's value names the crop it came from
    crops = np.stack([np.full((64, 64, 3), 10 * i, np.uint8) for i in range(12)])
    out = ring_swapped(crops, seed=3)
    assert out.dtype == np.uint8 and out.shape == crops.shape
    assert np.array_equal(out, ring_swapped(crops, seed=3))  # seeded
    np.testing.assert_array_equal(out[:, 13:, 13:51], crops[:, 13:, 13:51])  # centre, chin
    assert (out[:, 0, 0] != crops[:, 0, 0]).all()  # every corner is another crop's
    assert (out[:, 32, 0] != crops[:, 32, 0]).all() and (out[:, 32, 63] != crops[:, 32, 63]).all()


def test_gate_fitted_with_ring_swapped_copies_says_so(dacnn_exported, tmp_path):
    _model, plain, checkpoint = dacnn_exported
    out = tmp_path / "swap.onnx"
    result = export_onnx(
        checkpoint, out, parity_samples=2, gate_data=_gate_data(), gate_ring_swap=True
    )
    gate = result.domain_gate
    assert gate is not None and gate.ring_swap and not plain.domain_gate.ring_swap
    assert gate.train_crops == 160 and gate.val_crops == 40  # the threshold's crops unchanged
    fit = OnnxPainModel(out, prefer="cpu").metadata["domain_gate"]["fit"]
    assert fit["train_ring_swap"] is True and fit["train_crops"] == 160
    assert not np.allclose(gate.whiten, plain.domain_gate.whiten)  # the copies entered the fit


def _gate_data_with_subjects() -> GateData:
    """_gate_data with each crop's person: 8 training and 4 validation subjects of 10."""
    data = _gate_data()
    return GateData(
        data.train_images, data.train_labels, data.val_images, 8, 4,
        train_ids=np.repeat([f"t{i}" for i in range(8)], 10),
        val_ids=np.repeat([f"v{i}" for i in range(4)], 10),
    )  # fmt: skip


def test_few_validation_subjects_get_a_cross_fitted_threshold(dacnn_exported, tmp_path):
    _model, plain, checkpoint = dacnn_exported
    data = _gate_data_with_subjects()
    auto = export_onnx(checkpoint, tmp_path / "auto.onnx", parity_samples=2, gate_data=data)
    gate = auto.domain_gate
    assert gate is not None and gate.threshold_source == "cross-fit"
    assert (gate.threshold_subjects, gate.threshold_crops, gate.threshold_folds) == (12, 120, 5)
    np.testing.assert_allclose(gate.whiten, plain.domain_gate.whiten)  # the same fit
    entry = OnnxPainModel(tmp_path / "auto.onnx", prefer="cpu").metadata["domain_gate"]
    assert entry["threshold_fit"]["source"] == "cross-fit"
    assert entry["threshold"] == pytest.approx(gate.threshold)
    assert "12 training and validation subjects" in entry["threshold_from"]
    # Asked for, the validation subjects set it, as they do when the crops' people are unknown.
    asked = export_onnx(
        checkpoint, tmp_path / "val.onnx", parity_samples=2, gate_data=data,
        gate_threshold="validation",
    )  # fmt: skip
    assert asked.domain_gate.threshold_source == "validation"
    assert asked.domain_gate.threshold == pytest.approx(plain.domain_gate.threshold)
    assert plain.domain_gate.threshold_source == "validation"  # _gate_data() has no people
    # With ring-swapped copies the folds fit on them too; the threshold's crops stay as they are.
    swap = export_onnx(
        checkpoint, tmp_path / "swap.onnx", parity_samples=2, gate_data=data, gate_ring_swap=True
    ).domain_gate
    assert swap.threshold_source == "cross-fit" and swap.ring_swap
    assert (swap.train_crops, swap.threshold_crops) == (160, 120)


def test_a_handful_of_people_keep_the_validation_threshold(dacnn_exported, tmp_path, caplog):
    # Pooled over 9 people, one unlike the rest would set a cross-fitted threshold alone.
    _model, plain, checkpoint = dacnn_exported
    data = _gate_data()
    few = GateData(
        data.train_images, data.train_labels, data.val_images, 6, 3,
        train_ids=np.repeat([f"t{i}" for i in range(6)], [14, 14, 13, 13, 13, 13]),
        val_ids=np.repeat(["v0", "v1", "v2"], [14, 13, 13]),
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="painmon.core.research.export"):
        result = export_onnx(checkpoint, tmp_path / "few.onnx", parity_samples=2, gate_data=few)
    assert result.domain_gate.threshold_source == "validation"
    assert result.domain_gate.threshold == pytest.approx(plain.domain_gate.threshold)
    assert "9 people in all are too few to cross-fit" in caplog.text
    # Asked for explicitly, it is done.
    forced = export_onnx(
        checkpoint, tmp_path / "forced.onnx", parity_samples=2, gate_data=few,
        gate_threshold="cross-fit",
    )  # fmt: skip
    assert forced.domain_gate.threshold_source == "cross-fit"
    assert forced.domain_gate.threshold_subjects == 9


def test_a_cross_fit_without_the_crops_people_is_refused(dacnn_exported, tmp_path):
    _model, _plain, checkpoint = dacnn_exported
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="needs each crop's subject"):
        export_onnx(
            checkpoint, out, parity_samples=2, gate_data=_gate_data(), gate_threshold="cross-fit"
        )
    with pytest.raises(InvalidInputError, match="gate threshold must be one of"):
        export_onnx(checkpoint, out, parity_samples=2, gate_data=_gate_data(), gate_threshold="x")
    assert not out.exists()
    data = _gate_data()
    with pytest.raises(InvalidInputError, match="in both"):
        GateData(
            data.train_images, data.train_labels, data.val_images,
            train_ids=np.repeat(["a"], 80), val_ids=np.repeat(["a"], 40),
        )  # fmt: skip
    with pytest.raises(InvalidInputError, match="one subject per crop"):
        GateData(
            data.train_images, data.train_labels, data.val_images,
            train_ids=np.repeat(["a"], 79), val_ids=np.repeat(["b"], 40),
        )  # fmt: skip


def test_export_without_gate_data_says_what_to_give(dacnn_exported, tmp_path):
    _model, _result, checkpoint = dacnn_exported
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"--manifest .*--no-domain-gate"):
        export_onnx(checkpoint, out, parity_samples=2)
    assert not out.exists()


def test_export_without_a_gate_is_marked_and_still_loads(dacnn_exported, tmp_path):
    _model, _result, checkpoint = dacnn_exported
    out = tmp_path / "ungated.onnx"
    result = export_onnx(checkpoint, out, parity_samples=2, domain_gate=False)
    assert result.domain_gate is None and "domain_score" not in result.parity_max_abs_diff
    runtime = OnnxPainModel(out, prefer="cpu")
    assert runtime.domain_gate is None
    assert runtime.metadata["domain_gate"]["method"] == "none"
    assert runtime.predict(_crops(2, seed=1)).domain_score is None


# --- integrity: one self-contained file, a verified source checkpoint (issue #12.3) ----------


def test_the_export_is_one_self_contained_file(dacnn_exported):
    from painmon.core.live.scoring import external_data_locations

    _model, result, checkpoint = dacnn_exported
    assert external_data_locations(result.onnx_path.read_bytes()) == []
    assert sorted(p.name for p in result.onnx_path.parent.iterdir()) == [
        "dacnn.onnx",
        "dacnn.onnx.sha256",
    ]
    recorded = json.loads(checkpoint.with_suffix(".json").read_text())["weights_sha256"]
    assert json.loads(result.metadata["source_checkpoint"])["sha256"] == recorded


def test_an_export_that_would_need_external_data_is_refused(dacnn_exported, tmp_path,
                                                            monkeypatch):  # fmt: skip
    # What torch does for a model over 2 GB: the weights go to side files beside the graph.
    _model, _result, checkpoint = dacnn_exported
    real_export = torch.onnx.export

    def export_with_side_files(module, args, path, **kwargs):
        real_export(module, args, path, **kwargs)
        proto = onnx.load(path)
        onnx.save(proto, path, save_as_external_data=True, location="weights.bin",
                  size_threshold=0)  # fmt: skip

    monkeypatch.setattr(torch.onnx, "export", export_with_side_files)
    out = tmp_path / "big" / "model.onnx"
    with pytest.raises(ExportError) as caught:
        export_onnx(checkpoint, out, parity_samples=2, domain_gate=False)
    message = str(caught.value)
    assert "external files (weights.bin)" in message and "self-contained" in message
    assert "2 GB" in message and "\n" not in message
    assert list(out.parent.iterdir()) == []  # no model, no sidecar, no side file, no temp folder


def test_a_model_over_the_single_file_limit_is_refused_before_export(dacnn_exported, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    _model, _result, checkpoint = dacnn_exported
    monkeypatch.setattr(export_mod, "ONNX_FILE_LIMIT_BYTES", export_mod.GRAPH_HEADROOM_BYTES + 1)
    exported = []
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: exported.append(a))
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"weights take .* GB, more than one self-contained"):
        export_onnx(checkpoint, out, parity_samples=2, domain_gate=False)
    assert exported == [] and not out.exists()


def test_a_proto_too_big_to_save_is_an_export_error(dacnn_exported, tmp_path, monkeypatch):
    _model, _result, checkpoint = dacnn_exported

    def refuse(*_args, **_kwargs):
        raise ValueError("The proto size is larger than the 2 GB limit. Please use external data")

    monkeypatch.setattr(onnx, "save", refuse)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"does not fit in one \.onnx file"):
        export_onnx(checkpoint, out, parity_samples=2, domain_gate=False)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_without_a_recorded_hash_is_not_exported(dacnn_exported, tmp_path):
    from painmon.core.util.errors import PainmonError

    _model, _result, checkpoint = dacnn_exported
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(checkpoint, run / "best.safetensors")
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    del meta["weights_sha256"]
    (run / "best.json").write_text(json.dumps(meta))
    out = tmp_path / "m.onnx"
    with pytest.raises(PainmonError, match=r"best\.json records no valid weights_sha256"):
        export_onnx(run, out, parity_samples=2, domain_gate=False)
    assert not out.exists() and not out.with_name("m.onnx.sha256").exists()
