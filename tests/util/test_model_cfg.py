"""PainModelCfg: validation, and the best.json / ONNX metadata converters round-trip."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.util.labels import DEFAULT_CLASS_NAMES, pspi_mapping_text
from painmon.core.util.model_cfg import PainModelCfg, thaw

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo" / "painmon_demo.onnx"
CROP = {"size_px": 64, "margin": 0.25, "detector": "mediapipe-landmarker", "eye_alignment": True}
# The keys best.json has always held for the model config (crop framing under "preprocessing").
CHECKPOINT_KEYS = {
    "architecture", "model_kwargs", "input_size", "mean", "std", "class_names", "pspi_mapping",
    "temperature", "preprocessing",
}  # fmt: skip


def _cfg(**changes) -> PainModelCfg:
    values = {
        "architecture": "dacnn",
        "model_kwargs": {"num_classes": 5, "dropout": 0.5, "pooling": ["avg", "max"]},
        "input_size": (3, 64, 64),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "class_names": DEFAULT_CLASS_NAMES,
        "pspi_mapping": pspi_mapping_text(),
        "temperature": 1.7,
        "crop": CROP,
    }
    values.update(changes)
    return PainModelCfg(**values)


def test_defaults_coercion_and_num_classes():
    cfg = PainModelCfg("simplecnn", {}, [3, 32, 48], [0.5] * 3, [0.25] * 3, ["a", "b", "c"])
    assert cfg.input_size == (3, 32, 48) and cfg.mean == (0.5, 0.5, 0.5)
    assert cfg.class_names == ("a", "b", "c") and cfg.num_classes == 3
    assert cfg.temperature == 1.0 and isinstance(cfg.temperature, float)
    assert cfg.pspi_mapping is None and dict(cfg.crop) == {}
    assert hash(cfg) == hash(dataclasses.replace(cfg))


def test_cfg_is_read_only_all_the_way_down():
    kwargs = {"pooling": ["avg", "max"], "nested": {"k": 1}}
    cfg = _cfg(model_kwargs=kwargs)
    kwargs["pooling"].append("std")  # the caller's dict is copied, not aliased
    assert cfg.model_kwargs["pooling"] == ("avg", "max")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.temperature = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.model_kwargs["dropout"] = 0.1  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.model_kwargs["nested"]["k"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.crop["margin"] = 0.5  # type: ignore[index]
    assert thaw(cfg.model_kwargs) == {"pooling": ["avg", "max"], "nested": {"k": 1}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architecture": ""}, "architecture must be a registered model name"),
        ({"model_kwargs": ["dropout"]}, "model_kwargs must be a mapping"),
        ({"crop": "haar"}, "crop must be a mapping"),
        ({"input_size": (1, 64, 64)}, "must have 3 channels"),
        ({"input_size": (3, 64)}, "input_size must be 3 positive integers"),
        ({"input_size": (3, 0, 64)}, "input_size must be 3 positive integers"),
        ({"input_size": (3, 64, -64)}, "input_size must be 3 positive integers"),
        ({"input_size": (3, 64.5, 64)}, "input_size must be 3 positive integers"),
        ({"input_size": (3, True, 64)}, "input_size must be 3 positive integers"),
        ({"input_size": None}, "input_size must be 3 positive integers"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 finite numbers"),
        ({"mean": (0.5, math.nan, 0.5)}, "mean must be 3 finite numbers"),
        ({"mean": ("red", 0.5, 0.5)}, "mean must be 3 numbers"),
        ({"std": (0.2, 0.2, math.inf)}, "std must be 3 finite numbers"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be > 0"),
        ({"std": (0.2, -0.1, 0.2)}, "std must be > 0"),
        ({"class_names": ()}, "at least one class"),
        ({"class_names": "No pain"}, "class_names must be a list"),
        ({"class_names": ("No pain", " ")}, "class names must be non-empty text"),
        ({"class_names": ("No pain", 1)}, "class names must be non-empty text"),
        ({"class_names": ("Mild", "No pain", "Mild")}, "'Mild' repeats"),
        ({"pspi_mapping": 3}, "pspi_mapping must be text or None"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
        ({"temperature": math.nan}, "temperature must be a finite number > 0"),
        ({"temperature": math.inf}, "temperature must be a finite number > 0"),
        ({"temperature": "warm"}, "temperature must be a finite number > 0"),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_message(changes, message):
    with pytest.raises(InvalidInputError, match=message):
        _cfg(**changes)


def test_invalid_config_errors_are_value_errors():
    with pytest.raises(ValueError):
        _cfg(temperature=0)


def test_checkpoint_meta_round_trip_through_json():
    cfg = _cfg()
    meta = cfg.to_checkpoint_meta()
    assert set(meta) == CHECKPOINT_KEYS
    assert meta["preprocessing"] == CROP  # best.json keeps the crop framing here
    assert meta["input_size"] == [3, 64, 64] and meta["class_names"] == list(DEFAULT_CLASS_NAMES)
    assert meta["model_kwargs"]["pooling"] == ["avg", "max"]
    on_disk = json.loads(json.dumps(meta))
    assert on_disk == meta
    # best.json holds provenance too; the config ignores it.
    assert PainModelCfg.from_checkpoint_meta({**on_disk, "epoch": 3, "data_sha256": "ab"}) == cfg


def test_checkpoint_meta_without_crop_or_mapping():
    cfg = _cfg(crop={}, pspi_mapping=None)
    meta = cfg.to_checkpoint_meta()
    assert "preprocessing" not in meta  # written only when the crop framing is known
    assert meta["pspi_mapping"] is None
    assert PainModelCfg.from_checkpoint_meta(json.loads(json.dumps(meta))) == cfg


def test_checkpoint_meta_defaults_and_missing_keys():
    meta = _cfg().to_checkpoint_meta()
    for key in ("temperature", "preprocessing", "model_kwargs", "pspi_mapping"):
        meta.pop(key)
    cfg = PainModelCfg.from_checkpoint_meta(meta)
    assert cfg.temperature == 1.0 and not cfg.crop and not cfg.model_kwargs
    assert cfg.pspi_mapping is None
    del meta["mean"], meta["class_names"]
    with pytest.raises(InvalidInputError, match="lacks mean, class_names"):
        PainModelCfg.from_checkpoint_meta(meta)


def test_onnx_metadata_round_trip_through_metadata_props():
    from painmon.core.live.scoring import JSON_METADATA_KEYS, parse_metadata

    for cfg in (_cfg(), _cfg(crop={}, pspi_mapping=None, temperature=1.0)):
        written = cfg.to_onnx_metadata()
        assert written["pspi_mapping"] == (cfg.pspi_mapping or "")  # ONNX has no null text
        props = {
            key: json.dumps(value) if key in JSON_METADATA_KEYS else value
            for key, value in written.items()
        }
        assert PainModelCfg.from_onnx_metadata(parse_metadata(props)) == cfg


def test_onnx_metadata_missing_entries_are_named():
    parsed = _cfg().to_onnx_metadata()
    del parsed["temperature"], parsed["preprocessing"]["std"]
    with pytest.raises(InvalidInputError, match=r"lacks temperature, preprocessing\.std"):
        PainModelCfg.from_onnx_metadata(parsed)
    with pytest.raises(InvalidInputError, match="'preprocessing' must be a JSON object"):
        PainModelCfg.from_onnx_metadata({**parsed, "preprocessing": [3, 64, 64]})


def test_from_onnx_metadata_of_a_real_export(untrained_dacnn_onnx):
    import onnx

    from painmon.core.live.scoring import OnnxPainModel, parse_metadata
    from painmon.models import create_model

    props = {p.key: p.value for p in onnx.load(str(untrained_dacnn_onnx)).metadata_props}
    cfg = PainModelCfg.from_onnx_metadata(parse_metadata(props))
    # What was exported is the freshly built model's own config (temperature 1, no crop).
    assert cfg == create_model("dacnn").pretrained_cfg
    runtime = OnnxPainModel(untrained_dacnn_onnx, prefer="cpu")
    assert runtime.cfg == cfg
    assert runtime.class_names == list(cfg.class_names)
    assert runtime.input_size == cfg.input_size and runtime.temperature == cfg.temperature


def test_an_export_with_an_invalid_config_is_refused(untrained_dacnn_onnx, tmp_path):
    import onnx

    from painmon.core.live.scoring import ModelLoadError, OnnxPainModel
    from painmon.core.util.fileio import sha256_file

    proto = onnx.load(str(untrained_dacnn_onnx))
    for prop in proto.metadata_props:
        if prop.key == "temperature":
            prop.value = "0.0"
    target = tmp_path / "cold.onnx"
    onnx.save(proto, str(target))
    (tmp_path / "cold.onnx.sha256").write_text(f"{sha256_file(target)}  cold.onnx\n")
    with pytest.raises(ModelLoadError, match="temperature must be a finite number > 0"):
        OnnxPainModel(target, prefer="cpu")


def test_the_shipped_demo_model_loads_with_its_config():
    import onnx

    from painmon.core.live.scoring import OnnxPainModel

    props = {p.key: p.value for p in onnx.load(str(DEMO_MODEL)).metadata_props}
    runtime = OnnxPainModel(DEMO_MODEL, prefer="cpu")
    cfg = runtime.cfg
    assert cfg.architecture == "dacnn"
    assert cfg.num_classes == 5 and cfg.class_names == DEFAULT_CLASS_NAMES
    assert cfg.input_size == (3, 64, 64)
    assert cfg.temperature == json.loads(props["temperature"]) == pytest.approx(0.7984, abs=1e-4)
    assert cfg.pspi_mapping == pspi_mapping_text()
    assert cfg.crop["detector"] == "mediapipe-landmarker" and cfg.crop["margin"] == 0.25
    assert cfg.crop["framing"] == "stable-landmarks-2"
    assert runtime.domain_gate is not None and runtime.domain_gate.threshold > 0
    assert runtime.class_names == list(cfg.class_names)
    assert runtime.input_size == cfg.input_size and runtime.temperature == cfg.temperature
    assert runtime.is_demo
