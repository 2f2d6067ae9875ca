"""The bedside build: its code paths run without the research stack, and its files ship.

The PyInstaller bundle (packaging/painmon.spec) leaves out torch, scikit-learn, SciPy,
matplotlib and friends. Here every bedside command runs in a child Python whose import
system hides exactly those packages (read from the spec), so an eager ``import torch``
anywhere on those paths fails here long before a bundle is built.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "packaging" / "painmon.spec"

# The bedside floors whole (import-linter already forbids torch there; this also proves
# their third-party imports resolve without the research stack), the bedside commands and
# the window. painmon.app.retrain imports painmon.models lazily, only when torch is there.
BEDSIDE_PACKAGES = ("core/util", "core/synth", "core/live", "core/store", "app")
BEDSIDE_MODULES = (
    *(
        "painmon." + ".".join(path.relative_to(REPO).with_suffix("").parts)
        for package in BEDSIDE_PACKAGES
        for path in sorted((REPO / package).glob("*.py"))
        if path.name != "__init__.py"
    ),
    "painmon.core.tools.cli",
    "painmon.core.tools.doctor",
)

# Runs in the child: hide the excluded packages the way an install without them looks
# (find_spec -> None, import -> ModuleNotFoundError) and note who tried to import one.
_HIDER = r"""
import json, sys, traceback

HIDDEN = set(json.loads(sys.argv[1]))
REPORT = sys.argv[2]
attempts = []


def _hidden(name):
    return name.partition(".")[0] in HIDDEN


class _Hide:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if _hidden(name):
            stack = traceback.extract_stack()
            if any(f.name == "_find_and_load" for f in stack):  # an import, not a probe
                caller = [f for f in stack[:-1] if "importlib" not in f.filename][-1]
                attempts.append({"module": name, "by": f"{caller.filename}:{caller.lineno}"})
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


for _name in [m for m in sys.modules if _hidden(m)]:
    del sys.modules[_name]
sys.meta_path[:] = [_Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]


def _report():
    with open(REPORT, "w") as fh:
        json.dump([dict(t) for t in dict.fromkeys(tuple(a.items()) for a in attempts)], fh)


import atexit
atexit.register(_report)

mode, rest = sys.argv[3], sys.argv[4:]
if mode == "import":
    import importlib
    for module in rest:
        importlib.import_module(module)
else:
    from painmon.core.tools.cli import main
    sys.argv = ["painmon", *rest]
    raise SystemExit(main())
"""


def _spec_assignment(name: str) -> object:
    """A literal assigned at the top level of packaging/painmon.spec."""
    tree = ast.parse(SPEC.read_text(), filename=str(SPEC))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{SPEC} assigns no {name}")


def _excluded_top_level() -> list[str]:
    return sorted({m for m in _spec_assignment("EXCLUDES") if "." not in m})


def _run_hidden(tmp_path: Path, mode: str, *args: str, timeout_s: float = 60.0):
    """Run the hider in a child Python; returns (completed process, import attempts)."""
    report = tmp_path / "attempts.json"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PAINMON_ORT_PROVIDER": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _HIDER, json.dumps(_excluded_top_level()), str(report), mode, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    attempts = json.loads(report.read_text()) if report.is_file() else None
    return proc, attempts


def _painmon_attempts(attempts: list[dict] | None) -> list[dict]:
    """Imports of hidden packages made by painmon's own code (third parties may probe)."""
    assert attempts is not None, "the child wrote no import report"
    return [a for a in attempts if Path(a["by"].rpartition(":")[0]).is_relative_to(REPO)]


def _explain(proc: subprocess.CompletedProcess, attempts: object) -> str:
    return f"rc {proc.returncode}\nimports of hidden packages: {attempts}\n{proc.stderr[-3000:]}"


def test_spec_leaves_out_the_research_stack():
    excluded = _excluded_top_level()
    for name in ("torch", "torchvision", "sklearn", "scipy", "onnx"):
        assert name in excluded
    assert not any(m.startswith("painmon") for m in excluded), "painmon modules must all ship"


def test_bedside_modules_import_without_research_stack(tmp_path):
    proc, attempts = _run_hidden(tmp_path, "import", *BEDSIDE_MODULES)
    assert proc.returncode == 0, _explain(proc, attempts)
    assert _painmon_attempts(attempts) == [], _explain(proc, attempts)


def test_version_without_torch(tmp_path):
    proc, attempts = _run_hidden(tmp_path, "cli", "--version")
    assert proc.returncode == 0, _explain(proc, attempts)
    assert proc.stdout.startswith("painmon ")
    assert _painmon_attempts(attempts) == [], _explain(proc, attempts)


def test_doctor_without_torch(tmp_path):
    proc, attempts = _run_hidden(tmp_path, "cli", "doctor", "--camera", "99")
    assert proc.returncode == 0, _explain(proc, attempts) + proc.stdout
    torch_line = next(line for line in proc.stdout.splitlines() if " torch " in line)
    # A bedside install is a supported install: no warning, and the extra, not bare torch.
    assert torch_line.startswith("ok") and "not installed" in torch_line
    assert "painmon[train]" in torch_line and "pip install torch" not in proc.stdout
    assert _painmon_attempts(attempts) == [], _explain(proc, attempts)


@pytest.mark.parametrize("tracker", ["mediapipe", "haar"])
def test_monitor_without_torch(tmp_path, shared_file, face_model_path, tracker):
    video = shared_file("media/single_face.mp4")
    out = tmp_path / "sessions"
    args = ["monitor", "--source", str(video), "--max-seconds", "1", "--out", str(out)]
    if tracker == "haar":
        args += ["--face-model", "haar"]  # else the bundle painmon ships
    proc, attempts = _run_hidden(tmp_path, "cli", *args)
    assert proc.returncode == 0, _explain(proc, attempts)
    assert "frames:" in proc.stdout
    assert list(out.rglob("*.csv")), "the monitor wrote no session file"
    assert _painmon_attempts(attempts) == [], _explain(proc, attempts)


def test_models_list_without_torch(tmp_path):
    proc, attempts = _run_hidden(tmp_path, "cli", "models", "list")
    assert proc.returncode == 0, _explain(proc, attempts)
    assert "demo model" in proc.stdout


def test_wheel_package_data_covers_the_bundle_files():
    """Files the bundle copies from the installed package must be in the wheel too."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data = config["package-data"]
    needed = {
        "painmon.models": ["demo/painmon_demo.onnx", "demo/painmon_demo.onnx.sha256"],
        "painmon.assets": ["alarm_high.wav", "alarm_medium.wav", "icon.png", "icon.ico"],
    }
    roots = {"painmon.models": REPO / "models", "painmon.assets": REPO / "assets"}
    for package, files in needed.items():
        assert package in config["packages"]
        for relative in files:
            assert (roots[package] / relative).is_file(), f"{relative} missing from the tree"
            assert any(fnmatch(relative, pattern) for pattern in package_data[package]), (
                f"{package}/{relative} matches no package-data pattern: not in the wheel"
            )


def _load_packaging_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "packaging" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_icon_files_are_what_make_icon_draws():
    from PIL import Image

    make_icon = _load_packaging_module("make_icon")
    png = Image.open(REPO / "assets" / "icon.png")
    assert png.size == (make_icon.PNG_PX, make_icon.PNG_PX) and png.mode == "RGBA"
    committed = np.asarray(png).astype(np.int16)
    redrawn = make_icon.icon_rgba(make_icon.PNG_PX).astype(np.int16)
    # PNG is lossless; allow one grey level for another OpenCV's rounding.
    assert np.abs(committed - redrawn).max() <= 1, "assets/icon.png is stale: run make_icon.py"
    assert committed[0, 0, 3] == 0 and committed[128, 128, 3] == 255  # rounded, opaque tile
    ico_sizes = Image.open(REPO / "assets" / "icon.ico").info["sizes"]
    assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(ico_sizes)


def test_desktop_entry():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive
    entry.read(REPO / "packaging" / "linux" / "painmon.desktop")
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application"
    assert desktop["Exec"].split()[-1] == "app"
    assert desktop["Terminal"] == "false"
    assert desktop["Categories"].endswith(";") and "MedicalSoftware" in desktop["Categories"]


def test_frozen_entry_answers_only_import_probes(monkeypatch):
    entry = _load_packaging_module("painmon_entry")
    assert entry._answer_import_probe(["painmon", "-c", "import json, os.path"]) == 0
    assert entry._answer_import_probe(["painmon", "-c", "print(1)"]) is None
    assert entry._answer_import_probe(["painmon", "doctor"]) is None
    with pytest.raises(ModuleNotFoundError):
        entry._answer_import_probe(["painmon", "-c", "import no_such_module_here"])
    monkeypatch.delenv("PAINMON_ORT_PROVIDER", raising=False)
    entry._default_to_cpu_provider()  # not frozen: the provider choice stays the user's
    assert "PAINMON_ORT_PROVIDER" not in os.environ


def test_every_subpackage_is_listed_for_the_wheel():
    """pyproject's explicit package list must name every folder with an __init__.py."""
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {"painmon"}
    for top in ("app", "assets", "core", "models"):
        for init in (REPO / top).rglob("__init__.py"):
            on_disk.add("painmon." + ".".join(init.parent.relative_to(REPO).parts))
    assert on_disk == listed, (
        f"missing from pyproject: {on_disk - listed}; stale: {listed - on_disk}"
    )
