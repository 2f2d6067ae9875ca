"""Installs that tell the truth (issue #13, items 10 and 11).

A bedside install (`pip install .`, no ``train`` extra) runs every command in a child
Python whose import system hides torch, scikit-learn, SciPy, safetensors and onnx the way
an install without them looks (find_spec -> None, import -> ModuleNotFoundError): more
faithful than ``sys.modules[name] = None`` in this process, where half the research stack
is already imported by other tests.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from painmon.core.live import scoring
from painmon.core.live.scoring import (
    CPU_FALLBACK_MESSAGE,
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    ModelIntegrityError,
    OnnxPainModel,
    choose_providers,
    provider_outcome,
)
from painmon.core.store.catalog import shipped_demo_model_path
from painmon.core.tools.cli import TRAIN_EXTRA_NEEDS, main, missing_training_extra
from painmon.core.tools.doctor import TRAIN_EXTRA_MODULES, check_torch

EXTRA_MESSAGE = "needs the training extra: pip install 'painmon[train]' (missing: "

# Runs in the child: hide the train extra, run each argv through the CLI, report JSON.
_BEDSIDE = r"""
import contextlib, io, json, sys

HIDDEN = set(json.loads(sys.argv[1]))


class _Hide:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [_Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
from painmon.core.tools.cli import main

results = []
for argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results.append({"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def _run_bedside(tmp_path: Path, commands: list[list[str]], timeout_s: float = 240.0) -> list:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PAINMON_ORT_PROVIDER": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _BEDSIDE, json.dumps(TRAIN_EXTRA_MODULES), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def _research_inputs(tmp_path: Path) -> dict[str, str]:
    """Inputs that exist, so nothing but the missing extra can stop a command."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,subject,label\n")
    run = tmp_path / "run"
    run.mkdir()
    return {"manifest": str(manifest), "run": str(run)}


# Every command whose code imports the extra, with arguments it would otherwise accept.
def _training_commands(paths: dict[str, str]) -> list[list[str]]:
    m, run = paths["manifest"], paths["run"]
    return [
        ["split", "--manifest", m, "--out", "splits.json"],
        ["crops", "--manifest", m, "--out", "crops.npz"],
        ["train", "--manifest", m, "--out", "run-out"],
        ["cv", "--manifest", m, "--out", "cv-out"],
        ["evaluate", "--run", run, "--manifest", m],
        ["reproduce", "--manifest", m, "--out", "rep-out"],
        ["export", "--run", run, "--out", "model.onnx"],
        ["bench", "train", "--device", "cpu"],
    ]


def test_every_training_command_is_covered_by_the_table():
    covered = {" ".join(a[:2]) if a[0] == "bench" else a[0] for a in _training_commands({
        "manifest": "m", "run": "r"})}  # fmt: skip
    assert covered == set(TRAIN_EXTRA_NEEDS)
    assert set().union(*TRAIN_EXTRA_NEEDS.values()) <= set(TRAIN_EXTRA_MODULES)


def test_missing_training_extra_names_only_what_the_command_uses():
    def nothing(_name):
        return None

    def everything(_name):
        return object()

    assert missing_training_extra("split", nothing) == ["sklearn"]
    assert missing_training_extra("train", nothing) == ["torch", "safetensors", "sklearn", "scipy"]
    assert missing_training_extra("train", everything) == []
    assert missing_training_extra("monitor", nothing) == []
    assert missing_training_extra("doctor", nothing) == []


def test_bedside_install_training_commands_say_the_extra_in_one_line(tmp_path):
    paths = _research_inputs(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    results = _run_bedside(tmp_path, _training_commands(paths))
    for result in results:
        argv, lines = result["argv"], result["stderr"].splitlines()
        command = " ".join(argv[:2]) if argv[0] == "bench" else argv[0]
        assert result["code"] == 2, result
        assert len(lines) == 1, result
        assert lines[0].startswith(f"painmon {command}: error: {EXTRA_MESSAGE}"), result
        assert "Traceback" not in result["stderr"] and "pip install torch" not in lines[0]
        for module in TRAIN_EXTRA_NEEDS[command]:
            assert module in lines[0].rpartition("(missing: ")[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_bedside_install_doctor_does_not_advise_torch(tmp_path, monkeypatch):
    for name in TRAIN_EXTRA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    check = check_torch()
    assert check.status == "ok"  # a bedside install is a supported install, not a warning
    assert "pip install torch" not in check.detail
    assert "pip install 'painmon[train]'" in check.detail and "training" in check.detail


def test_incomplete_training_extra_is_a_warning_naming_the_extra(monkeypatch):
    import painmon.core.tools.doctor as doctor

    if any(importlib.util.find_spec(m) is None for m in ("torch", "safetensors", "onnx")):
        pytest.skip("needs the training extra installed")
    # Importing torch here would cost seconds; its version line is check_library's, tested.
    monkeypatch.setattr(
        doctor, "check_library", lambda name, *a: doctor.DoctorCheck(name, "ok", "2.x")
    )
    monkeypatch.setitem(sys.modules, "sklearn", None)
    check = check_torch()
    assert check.status == "warn" and "missing: sklearn" in check.detail
    assert check.fix == "pip install 'painmon[train]'"


@pytest.mark.slow
@pytest.mark.skipif(not shipped_demo_model_path().is_file(), reason="no demo model shipped")
def test_bedside_install_bench_soak_runs_on_the_shipped_demo_model(tmp_path):
    (result,) = _run_bedside(
        tmp_path,
        [["bench", "soak", "--seconds", "1", "--source", "synthetic", "--face-model", "haar"]],
    )
    assert result["code"] == 0, result
    report = json.loads(result["stdout"])
    assert report["benchmark"] == "soak" and report["model_untrained"] is False
    assert report["frames_scored"] > 0
    assert "timing the shipped demo model painmon_demo.onnx" in result["stderr"]


@pytest.mark.parametrize("what", ["pipeline", "soak"])
def test_bench_without_model_times_the_shipped_demo_model(what, monkeypatch, capsys):
    import painmon.core.tools.bench_pipeline as bench

    seen = {}

    def fake(*args, **_options):
        seen["args"] = args
        return {"benchmark": what}

    monkeypatch.setattr(bench, "bench_pipeline" if what == "pipeline" else "bench_soak", fake)
    argv = ["bench", what, "--source", "synthetic"]
    assert main([*argv, "--seconds", "1"] if what == "soak" else argv) == 0
    model = seen["args"][1] if what == "pipeline" else seen["args"][2]
    assert model == shipped_demo_model_path()
    assert json.loads(capsys.readouterr().out) == {"benchmark": what}


# --- ONNX Runtime providers: one INFO line on a CPU machine (item 11) ---------------------


def test_choose_providers_skips_cuda_without_a_driver_unless_asked_by_name():
    offered = [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers(offered, "auto", cuda_usable=False) == [CPU_PROVIDER]
    assert choose_providers(offered, "auto", cuda_usable=True) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers(offered, "cuda", cuda_usable=False) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers(offered, "auto", {"PAINMON_ORT_PROVIDER": "cuda"},
                            cuda_usable=False) == [CUDA_PROVIDER, CPU_PROVIDER]  # fmt: skip


@pytest.mark.parametrize(
    ("available", "requested", "active", "choice", "level", "text"),
    [
        # onnxruntime-gpu on a CPU machine, CUDA never requested (no driver) or failed.
        ([CUDA_PROVIDER, CPU_PROVIDER], [CPU_PROVIDER], [CPU_PROVIDER], "auto",
         logging.INFO, CPU_FALLBACK_MESSAGE),
        ([CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER], [CPU_PROVIDER], "auto",
         logging.INFO, CPU_FALLBACK_MESSAGE),
        ([CPU_PROVIDER], [CPU_PROVIDER], [CPU_PROVIDER], "auto",
         logging.INFO, "ONNX Runtime: using CPUExecutionProvider"),
        ([CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER],
         [CUDA_PROVIDER, CPU_PROVIDER], "auto", logging.INFO,
         "ONNX Runtime: using CUDAExecutionProvider"),
        # TensorRT asked by name and fell back to CUDA: the ward asked for it, so a warning.
        ([TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER],
         [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER],
         "tensorrt", logging.WARNING, "TensorrtExecutionProvider failed to start"),
    ],
)  # fmt: skip
def test_provider_outcome_is_one_line(available, requested, active, choice, level, text):
    got_level, got_text = provider_outcome(available, requested, active, choice)
    assert got_level == level and text in got_text and "\n" not in got_text


@pytest.mark.skipif(not shipped_demo_model_path().is_file(), reason="no demo model shipped")
@pytest.mark.parametrize("driver", [False, True])
def test_a_cuda_build_on_a_cpu_machine_logs_one_info_line(driver, monkeypatch, caplog, capfd):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    monkeypatch.setattr(scoring, "cuda_driver_present", lambda: driver)
    monkeypatch.delenv("PAINMON_ORT_PROVIDER", raising=False)
    with caplog.at_level(logging.DEBUG, logger="painmon.core.live.scoring"):
        model = OnnxPainModel(shipped_demo_model_path())
    shown = [r for r in caplog.records if r.name == scoring.log.name and r.levelno >= logging.INFO]
    assert len(shown) == 1, [r.getMessage() for r in shown]
    if model.providers[0] == CPU_PROVIDER:  # no usable GPU here (or no driver pretended)
        assert shown[0].levelno == logging.INFO
        assert shown[0].getMessage().startswith(CPU_FALLBACK_MESSAGE)
    if not driver:
        assert model.providers == [CPU_PROVIDER]
        # CUDA was never requested, so ONNX Runtime had nothing to complain about either.
        assert "CUDAExecutionProvider" not in capfd.readouterr().err


# --- the unverified-model message speaks CLI (item 11) -------------------------------------


@pytest.mark.skipif(not shipped_demo_model_path().is_file(), reason="no demo model shipped")
def test_a_model_without_its_sidecar_gets_advice_the_cli_can_follow(tmp_path, capsys):
    copy = tmp_path / "copied.onnx"
    shutil.copyfile(shipped_demo_model_path(), copy)
    with pytest.raises(ModelIntegrityError) as caught:
        OnnxPainModel(copy, prefer="cpu")
    assert "allow_unverified" not in str(caught.value)
    assert "copied.onnx.sha256 is missing" in str(caught.value)
    assert "painmon export" in str(caught.value)
    code = main(["monitor", "--source", "synthetic", "--model", str(copy), "--out",
                 str(tmp_path / "sessions")])  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("painmon monitor: error: model file")
    assert "allow_unverified" not in err[0] and "painmon export" in err[0]
    assert not (tmp_path / "sessions").exists()
