"""The sidecar hash covers every weight: models with external data are refused (issue #12.3a)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import external_data_helper, helper, numpy_helper  # noqa: E402

from painmon.core.live.scoring import (  # noqa: E402
    PROVIDER_ENV,
    ModelIntegrityError,
    ModelLoadError,
    OnnxPainModel,
    external_data_locations,
)
from painmon.core.util.fileio import sha256_file  # noqa: E402

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo" / "painmon_demo.onnx"


@pytest.fixture(autouse=True)
def _no_provider_override(monkeypatch):
    monkeypatch.delenv(PROVIDER_ENV, raising=False)


def _write_sidecar(path: Path) -> None:
    path.with_name(path.name + ".sha256").write_text(f"{sha256_file(path)}  {path.name}\n")


def _matmul_model(weights: np.ndarray | None = None) -> onnx.ModelProto:
    """y = x @ w with ``w`` an initializer."""
    w = weights if weights is not None else np.arange(16, dtype=np.float32).reshape(4, 4)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_self_contained_model_has_no_external_data():
    assert external_data_locations(DEMO_MODEL.read_bytes()) == []
    assert external_data_locations(_matmul_model().SerializeToString()) == []


def test_external_initializers_are_found_without_reading_them(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_matmul_model(), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="m.weights", size_threshold=0)  # fmt: skip
    (tmp_path / "m.weights").unlink()  # the walk never opens the side file
    assert external_data_locations(path.read_bytes()) == [("w", "m.weights")]


def test_external_tensors_in_attributes_and_subgraphs_are_found():
    # A Constant node's tensor attribute, inside the then-branch of an If node.
    constant = numpy_helper.from_array(np.ones((2, 2), np.float32), "c")
    external_data_helper.set_external_data(constant, location="const.bin")
    constant.ClearField("raw_data")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=constant)],
        "then",
        [],
        [helper.make_tensor_value_info("k", onnx.TensorProto.FLOAT, [2, 2])],
    )
    sparse_values = numpy_helper.from_array(np.ones(2, np.float32), "sv")
    external_data_helper.set_external_data(sparse_values, location="sparse.bin")
    sparse_values.ClearField("raw_data")
    sparse = helper.make_sparse_tensor(
        sparse_values, numpy_helper.from_array(np.array([0, 3], np.int64), "si"), [4]
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["k"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("k", onnx.TensorProto.FLOAT, [2, 2])],
        sparse_initializer=[sparse],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    found = external_data_locations(model.SerializeToString())
    assert sorted(found) == [("c", "const.bin"), ("c", "const.bin"), ("sv", "sparse.bin")]


@pytest.mark.parametrize(
    "data",
    [
        b"\x3a\xff",  # field 7 (graph) whose length runs past the end
        b"\x3a\x05\x2a\x10abc",  # an initializer longer than its graph
        b"\x0b\x00",  # wire type 3 (a group): not in onnx.proto
        b"\x00\x01",  # field number 0
        b"\x08" + b"\xff" * 11,  # a varint that never ends
    ],
    ids=["graph-past-end", "tensor-past-graph", "group", "field-zero", "endless-varint"],
)
def test_malformed_protobuf_is_a_model_load_error(data):
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        external_data_locations(data)


def test_an_external_data_model_is_refused_at_load(tmp_path):
    path = tmp_path / "split.onnx"
    onnx.save(_matmul_model(), str(path), save_as_external_data=True,
              location="split.onnx.data", size_threshold=0)  # fmt: skip
    _write_sidecar(path)
    with pytest.raises(ModelIntegrityError) as caught:
        OnnxPainModel(path, prefer="cpu")
    message = str(caught.value)
    assert "keeps the weights of 1 tensor(s) in external files (split.onnx.data)" in message
    assert "only self-contained .onnx files" in message and "re-export" in message
    assert "2 GB" in message and "\n" not in message


def test_zeroed_external_weights_no_longer_pass_the_sidecar_check(untrained_dacnn_onnx, tmp_path):
    # The attack of issue #12.3a: weights moved to a side file, the sidecar hashes the graph
    # only, the side file is zeroed: the same model_sha256 would be recorded for other scores.
    path = tmp_path / "dacnn.onnx"
    proto = onnx.load(str(untrained_dacnn_onnx))
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="dacnn.weights", size_threshold=1024)  # fmt: skip
    _write_sidecar(path)
    digest = sha256_file(path)
    side = tmp_path / "dacnn.weights"
    side.write_bytes(bytes(side.stat().st_size))
    assert sha256_file(path) == digest  # the sidecar still matches the graph file
    with pytest.raises(ModelIntegrityError, match=r"external files \(dacnn\.weights\)"):
        OnnxPainModel(path, prefer="cpu")
    # Also with the genuine weights and allow_unverified: the rule is the file's shape.
    with pytest.raises(ModelIntegrityError, match="self-contained"):
        OnnxPainModel(path, prefer="cpu", allow_unverified=True)


def test_a_self_contained_copy_still_loads_from_any_folder(untrained_dacnn_onnx, tmp_path,
                                                           monkeypatch):  # fmt: skip
    # ONNX Runtime gets the verified bytes, not the path: the working folder does not matter.
    target = tmp_path / "copy.onnx"
    shutil.copyfile(untrained_dacnn_onnx, target)
    _write_sidecar(target)
    monkeypatch.chdir(tmp_path.parent)
    runtime = OnnxPainModel(target, prefer="cpu")
    assert runtime.verified and runtime.sha256 == sha256_file(untrained_dacnn_onnx)
    assert runtime.predict(np.zeros((1, 64, 64, 3), np.uint8)).probs.shape == (1, 5)


def test_a_truncated_model_is_refused_before_onnx_runtime(untrained_dacnn_onnx, tmp_path):
    target = tmp_path / "cut.onnx"
    target.write_bytes(untrained_dacnn_onnx.read_bytes()[:20000])
    _write_sidecar(target)
    with pytest.raises(ModelLoadError, match=r"not a loadable ONNX model \(malformed protobuf"):
        OnnxPainModel(target, prefer="cpu")
