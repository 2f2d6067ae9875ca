"""Malformed model metadata is refused at load with one line naming the field (issue #12.8).

Each variant takes the metadata of the shipped demo model, breaks one entry, stamps it on a
tiny graph with the painmon input/output contract (so loading takes milliseconds), writes a
valid sidecar, and opens it: a :class:`PainmonError` naming the field, never a traceback,
never a model that then scores every frame LOW_QUALITY.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from painmon.core.live.scoring import (  # noqa: E402
    JSON_METADATA_KEYS,
    PROVIDER_ENV,
    ModelLoadError,
    OnnxPainModel,
)
from painmon.core.util.errors import PainmonError  # noqa: E402
from painmon.core.util.fileio import sha256_file  # noqa: E402

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo" / "painmon_demo.onnx"


@pytest.fixture(autouse=True)
def _no_provider_override(monkeypatch):
    monkeypatch.delenv(PROVIDER_ENV, raising=False)


@pytest.fixture(scope="module")
def demo_metadata() -> dict[str, Any]:
    """The demo model's metadata, JSON entries decoded."""
    proto = onnx.load(str(DEMO_MODEL), load_external_data=False)
    return {
        p.key: json.loads(p.value) if p.key in JSON_METADATA_KEYS else p.value
        for p in proto.metadata_props
    }


def tiny_painmon_graph(
    height: int = 64, width: int = 64, classes: int = 5, gate: bool = True
) -> Any:
    """uint8 (B, H, W, 3) -> probs (B, classes), gradcam (B, 8, 8), attention (B, 1, 8, 8)
    [, domain_score (B,)]: the export contract with almost no arithmetic."""
    helper, tensor = onnx.helper, onnx.TensorProto
    weights = onnx.numpy_helper.from_array(
        np.linspace(-1, 1, 3 * classes, dtype=np.float32).reshape(3, classes), "w"
    )
    ints = {
        name: onnx.numpy_helper.from_array(np.array(v, np.int64), name)
        for name, v in {
            "starts": [0, 0, 0],
            "ends": [8, 8, 1],
            "axes": [1, 2, 3],
            "squeeze": [3],
            "unsqueeze": [1],
        }.items()
    }
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=tensor.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["corner"]),
        helper.make_node("Squeeze", ["corner", "squeeze"], ["gradcam"]),
        helper.make_node("Unsqueeze", ["gradcam", "unsqueeze"], ["attention"]),
    ]
    outputs = [
        helper.make_tensor_value_info("probs", tensor.FLOAT, ["batch", classes]),
        helper.make_tensor_value_info("gradcam", tensor.FLOAT, ["batch", 8, 8]),
        helper.make_tensor_value_info("attention", tensor.FLOAT, ["batch", 1, 8, 8]),
    ]
    if gate:
        nodes.append(helper.make_node("ReduceMean", ["pooled"], ["domain_score"], axes=[1],
                                      keepdims=0))  # fmt: skip
        outputs.append(helper.make_tensor_value_info("domain_score", tensor.FLOAT, ["batch"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", tensor.UINT8, ["batch", height, width, 3])],
        outputs,
        [weights, *ints.values()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the dotted entry ``path`` (``crop.framing_params.side_scale``)."""

    def change(meta: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = meta
        for key in parents:
            target = target[key]
        target[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = meta
        for key in parents:
            target = target[key]
        del target[last]

    return change


def _all(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        for one in changes:
            one(meta)

    return change


def _raw(key: str, text: str) -> Callable[[dict[str, Any]], None]:
    """Store ``text`` verbatim (not JSON-encoded) under ``key``."""

    def change(meta: dict[str, Any]) -> None:
        meta[key] = _Verbatim(text)

    return change


class _Verbatim(str):
    pass


def _write_variant(proto: Any, metadata: dict[str, Any], path: Path) -> Path:
    # _Verbatim values go in as they are, so a variant can hold text that is not JSON.
    del proto.metadata_props[:]
    for key, value in metadata.items():
        if isinstance(value, _Verbatim) or (
            isinstance(value, str) and key not in JSON_METADATA_KEYS
        ):
            text = str(value)
        else:
            text = json.dumps(value)
        proto.metadata_props.add(key=key, value=text)
    onnx.save(proto, str(path))
    path.with_name(path.name + ".sha256").write_text(f"{sha256_file(path)}  {path.name}\n")
    return path


# (id, change, text the one-line error must contain)
MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("preprocessing-list", _set("preprocessing", [3, 64, 64]), "'preprocessing' must be a JSON"),
    ("preprocessing-text", _set("preprocessing", "imagenet"), "'preprocessing' must be a JSON"),
    ("no-input-size", _drop("preprocessing.input_size"), "lacks preprocessing.input_size"),
    ("input-size-null", _set("preprocessing.input_size", None), "input_size must be 3 positive"),
    ("input-size-huge", _set("preprocessing.input_size", [3, 100000, 100000]), "at most 1024 px"),
    ("input-size-zero", _set("preprocessing.input_size", [3, 0, 0]), "input_size must be 3"),
    ("input-size-text", _set("preprocessing.input_size", "364"), "input_size must be 3 positive"),
    ("input-size-2d", _set("preprocessing.input_size", [64, 64]), "input_size must be 3 positive"),
    ("input-size-grey", _set("preprocessing.input_size", [1, 64, 64]), "3 channels"),
    ("input-size-fraction", _set("preprocessing.input_size", [3, 64.5, 64]), "input_size must"),
    ("input-size-bool", _set("preprocessing.input_size", [3, True, 64]), "input_size must be 3"),
    ("input-size-vs-graph", _set("preprocessing.input_size", [3, 32, 32]), "describes uint8"),
    ("mean-text", _set("preprocessing.mean", "000"), "mean must be 3 numbers"),
    ("mean-two", _set("preprocessing.mean", [0.5, 0.5]), "mean must be 3 finite numbers"),
    ("mean-strings", _set("preprocessing.mean", ["0.5", "0.5", "0.5"]), "mean must be 3 numbers"),
    ("std-zero", _set("preprocessing.std", [0.2, 0.0, 0.2]), "std must be > 0"),
    ("std-nan", _set("preprocessing.std", [0.2, math.nan, 0.2]), "std must be 3 finite"),
    ("dtype-float", _set("preprocessing.dtype", "float32"), "feeds uint8 NHWC"),
    ("layout-nchw", _set("preprocessing.layout", "NCHW"), "feeds uint8 NHWC"),
    ("crop-text", _set("crop", "haar"), "'crop' must be a JSON object"),
    ("crop-list", _set("crop", [0.25]), "'crop' must be a JSON object"),
    ("crop-margin-negative", _set("crop.margin", -0.1), "crop.margin"),
    ("crop-margin-huge", _set("crop.margin", 1e9), "crop.margin"),
    ("crop-margin-text", _set("crop.margin", "0.25"), "crop.margin"),
    ("crop-margin-nan", _set("crop.margin", math.nan), "crop.margin"),
    ("crop-eye-alignment-text", _set("crop.eye_alignment", "false"), "crop.eye_alignment"),
    ("crop-framing-unknown", _set("crop.framing", "fisheye"), "'fisheye'"),
    ("crop-framing-number", _set("crop.framing", 5), "crop.framing"),
    ("crop-framing-params-list", _set("crop.framing_params", [0.19, 1.8]), "framing_params"),
    ("crop-side-scale-zero", _set("crop.framing_params.side_scale", 0), "side_scale"),
    ("crop-center-down-inf", _set("crop.framing_params.center_down", math.inf), "center_down"),
    ("crop-size-zero", _set("crop.size_px", 0), "crop.size_px"),
    ("crop-detector-number", _set("crop.detector", 7), "crop.detector"),
    ("temperature-text", _set("temperature", "1.0"), "temperature must be a finite number"),
    ("temperature-zero", _set("temperature", 0), "temperature must be a finite number"),
    ("temperature-bool", _set("temperature", True), "temperature must be a finite number"),
    ("temperature-not-json", _raw("temperature", "{warm"), "'temperature' is not valid JSON"),
    ("class-names-text", _set("class_names", "No pain"), "class_names must be a list"),
    ("class-names-empty", _set("class_names", []), "at least one class"),
    ("class-names-repeat", _set("class_names", ["a", "b", "a", "c", "d"]), "'a' repeats"),
    # Without priors: the shipped model records five, which would be refused first (below).
    (
        "class-names-vs-graph",
        _all(_set("class_names", ["a", "b", "c", "d"]), _drop("class_prevalence")),
        "names 4 classes",
    ),
    (
        "class-names-vs-priors",
        _set("class_names", ["a", "b", "c", "d"]),
        "class_prevalence must have one value per class (4), got 5",
    ),
    ("class-names-deep", _raw("class_names", "[" * 100000 + "]" * 100000), "nested too deeply"),
    ("model-kwargs-list", _set("model_kwargs", ["dropout"]), "'model_kwargs' must be a JSON"),
    ("architecture-empty", _set("architecture", ""), "architecture must be a registered"),
    ("architecture-missing", _drop("architecture"), "lacks architecture"),
    ("domain-gate-list", _set("domain_gate", [809.7]), "'domain_gate' must be a JSON object"),
    (
        "domain-gate-threshold-text",
        _set("domain_gate.threshold", "high"),
        "domain_gate.threshold' must be",
    ),
    (
        "domain-gate-threshold-negative",
        _set("domain_gate.threshold", -1),
        "domain_gate.threshold' must be",
    ),
    (
        "domain-gate-quantile-text",
        _set("domain_gate.quantile", "most"),
        "domain_gate.quantile' must be",
    ),
    ("domain-gate-none-but-output", _set("domain_gate", {"method": "none"}), "disagree"),
]


@pytest.mark.parametrize(("change", "expected"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])  # fmt: skip
def test_malformed_metadata_is_refused_in_one_line(demo_metadata, tmp_path, change, expected):
    metadata = json.loads(json.dumps(demo_metadata))  # a deep copy
    change(metadata)
    path = _write_variant(tiny_painmon_graph(), metadata, tmp_path / "broken.onnx")
    with pytest.raises(PainmonError) as caught:
        OnnxPainModel(path, prefer="cpu")
    message = str(caught.value)
    assert isinstance(caught.value, ModelLoadError)
    assert expected in message
    assert "\n" not in message and len(message) < 600
    assert str(path) in message or "model metadata" in message


def test_there_are_at_least_twenty_variants():
    assert len(MALFORMED) >= 20


def test_the_tiny_graph_with_the_demo_metadata_loads_and_scores(demo_metadata, tmp_path):
    path = _write_variant(tiny_painmon_graph(), dict(demo_metadata), tmp_path / "ok.onnx")
    runtime = OnnxPainModel(path, prefer="cpu")
    assert runtime.input_size == (3, 64, 64) and runtime.domain_gate is not None
    out = runtime.predict(np.zeros((2, 64, 64, 3), np.uint8))
    assert out.probs.shape == (2, 5) and out.domain_score.shape == (2,)


def test_unknown_crop_keys_and_absent_optional_entries_still_load(demo_metadata, tmp_path):
    metadata = json.loads(json.dumps(demo_metadata))
    metadata["crop"]["lens"] = {"anything": [1, 2]}  # a key this painmon does not use
    for key in ("model_kwargs", "metrics", "outputs", "attention", "opset"):
        metadata.pop(key)
    metadata["crop"].pop("framing_params")
    path = _write_variant(tiny_painmon_graph(), metadata, tmp_path / "lean.onnx")
    runtime = OnnxPainModel(path, prefer="cpu")
    assert runtime.cfg.crop["lens"]["anything"] == (1, 2)


def test_the_shipped_demo_model_loads():
    runtime = OnnxPainModel(DEMO_MODEL, prefer="cpu")
    assert runtime.verified and runtime.is_demo and runtime.domain_gate is not None
    assert runtime.cfg.crop["framing"] == "stable-landmarks-2"


@pytest.mark.parametrize("fixture", ["untrained_dacnn_onnx", "gated_dacnn_onnx"])
def test_models_from_the_test_fixtures_load(fixture, request):
    path = request.getfixturevalue(fixture)
    runtime = OnnxPainModel(path, prefer="cpu")
    assert runtime.verified and runtime.input_size == (3, 64, 64)
    assert (runtime.domain_gate is not None) == (fixture == "gated_dacnn_onnx")
    assert runtime.predict(np.zeros((1, 64, 64, 3), np.uint8)).probs.shape == (1, 5)
