"""painmon doctor: each check reports, never raises, and the exit code follows the errors."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import pytest

from painmon.core.store.catalog import models_dir
from painmon.core.tools.doctor import (
    DoctorCheck,
    DoctorReport,
    check_camera,
    check_face_model,
    check_opencv_distributions,
    check_sessions_dir,
    doctor_exit_code,
    format_doctor,
    run_doctor,
)
from painmon.core.util.paths import FACE_LANDMARKER_FILENAME, default_sessions_dir


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PAINMON_DATA", str(tmp_path_factory.mktemp("painmon-data")))


def test_two_opencv_wheels_is_an_error_that_keeps_contrib():
    check = check_opencv_distributions(
        {"opencv-contrib-python": "4.11.0.86", "opencv-python-headless": "4.11.0.86"}
    )
    assert check.status == "error"
    assert "pip uninstall -y opencv-python-headless" in check.fix
    assert "opencv-contrib-python" not in check.fix.split("&&")[0]  # never uninstall contrib
    assert "opencv-python-headless 4.11.0.86" in check.detail


def test_three_opencv_wheels_all_but_contrib_go():
    check = check_opencv_distributions(
        {"opencv-python": "4.10", "opencv-contrib-python": "4.10", "opencv-python-headless": "4.10"}
    )
    assert check.status == "error"
    assert check.fix.startswith("pip uninstall -y opencv-python opencv-python-headless &&")


@pytest.mark.parametrize(
    ("installed", "status"),
    [
        ({"opencv-contrib-python": "5.1.0.95"}, "ok"),
        ({"opencv-python": "4.10"}, "warn"),
        ({}, "error"),
    ],
)
def test_single_or_no_opencv_wheel(installed, status):
    assert check_opencv_distributions(installed).status == status


def test_unwritable_sessions_folder_is_an_error_with_a_fix(tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the sessions folder should be")
    check = check_sessions_dir(blocker / "sessions")  # fails even as root, unlike chmod
    assert check.status == "error"
    assert "not writable" in check.detail
    assert "--out" in check.fix and str(blocker / "sessions") in check.fix


def test_writable_sessions_folder_is_created_and_left_clean(tmp_path: Path):
    folder = tmp_path / "a" / "sessions"
    check = check_sessions_dir(folder)
    assert check.status == "ok" and folder.is_dir() and list(folder.iterdir()) == []


def test_default_sessions_dir_honours_painmon_data(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PAINMON_DATA", str(tmp_path / "data"))
    assert default_sessions_dir() == tmp_path / "data" / "sessions"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG layout is Linux only")
def test_default_sessions_dir_follows_xdg_on_linux(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("PAINMON_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_sessions_dir() == tmp_path / "xdg" / "painmon" / "sessions"


def test_hung_camera_gives_up_after_the_timeout():
    release = threading.Event()

    def hung(index: int) -> tuple[bool, str]:
        release.wait(10)
        return True, "too late"

    check = check_camera(0, timeout_s=0.2, probe=hung)
    release.set()
    assert check.status == "warn" and "did not answer within 0.2 s" in check.detail


def test_camera_probe_outcomes():
    assert check_camera(0, 1.0, lambda i: (True, f"camera {i}: 640x480")).status == "ok"
    closed = check_camera(2, 1.0, lambda i: (False, f"camera {i} could not be opened"))
    assert closed.status == "warn" and "camera 2" in closed.detail and closed.fix

    def broken(index: int) -> tuple[bool, str]:
        raise RuntimeError("driver exploded")

    assert "driver exploded" in check_camera(0, 1.0, broken).detail


def test_face_model_states(monkeypatch, face_model_path: Path, tmp_path: Path):
    shipped = check_face_model()  # empty cache: the bundle painmon ships
    assert shipped.status == "ok" and "shipped" in shipped.detail
    monkeypatch.setenv("PAINMON_FACE_MODEL", "haar")
    haar = check_face_model()
    assert haar.status == "warn" and "Haar" in haar.detail and "PAINMON_FACE_MODEL" in haar.fix
    monkeypatch.delenv("PAINMON_FACE_MODEL")
    models_dir().mkdir(parents=True)
    shutil.copyfile(face_model_path, models_dir() / FACE_LANDMARKER_FILENAME)
    assert check_face_model().status == "ok"
    corrupt = tmp_path / "corrupt.task"
    corrupt.write_bytes(b"garbage")
    monkeypatch.setenv("PAINMON_FACE_MODEL", str(corrupt))
    check = check_face_model()
    assert check.status == "error" and "painmon models download" in check.fix


def test_check_validation():
    with pytest.raises(ValueError, match="status"):
        DoctorCheck("x", "fine", "detail")
    with pytest.raises(ValueError, match="fix"):
        DoctorCheck("x", "error", "detail")


def test_exit_code_follows_errors_only():
    warn = DoctorCheck("camera", "warn", "no camera", "plug one in")
    error = DoctorCheck("opencv wheels", "error", "two", "pip uninstall -y opencv-python")
    assert doctor_exit_code(DoctorReport((warn,))) == 0
    assert doctor_exit_code(DoctorReport((warn, error))) == 1


def test_full_report_lists_every_check(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    report = run_doctor(
        opencv_distributions={"opencv-contrib-python": "5.1", "opencv-python": "5.1"},
        sessions_dir=blocker / "sessions",
        camera_probe=lambda i: (False, f"camera {i} could not be opened"),
        camera_timeout_s=2.0,
    )
    names = [c.name for c in report.checks]
    expected = {
        "python",
        "painmon",
        "numpy",
        "onnxruntime",
        "opencv",
        "mediapipe",
        "torch",
        "PySide6",
        "Qt platform",
        "opencv wheels",
        "onnxruntime providers",
        "camera",
        "face model",
        "pain models",
        "sessions folder",
    }
    assert set(names) == expected and len(names) == len(expected)
    assert {c.name for c in report.errors} >= {"opencv wheels", "sessions folder"}
    assert doctor_exit_code(report) == 1
    text = format_doctor(report)
    for check in report.checks:
        assert check.name in text and check.detail in text
    assert "fix: pip uninstall -y opencv-python" in text
    assert f"{len(report.errors)} error(s)" in text


def test_a_cuda_build_without_an_nvidia_driver_is_a_normal_cpu_machine(monkeypatch):
    import onnxruntime as ort

    from painmon.core.live import scoring
    from painmon.core.tools.doctor import check_onnxruntime_providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: [scoring.CUDA_PROVIDER,
                                                                scoring.CPU_PROVIDER])  # fmt: skip
    monkeypatch.setattr(scoring, "cuda_driver_present", lambda: False)
    check = check_onnxruntime_providers()
    assert check.status == "ok"
    assert "no NVIDIA driver" in check.detail and "CPU" in check.detail


def test_torch_line_never_advises_pip_install_torch(monkeypatch):
    from painmon.core.tools.doctor import check_torch

    monkeypatch.setitem(sys.modules, "torch", None)
    text = format_doctor(DoctorReport((check_torch(),)))
    assert "pip install torch" not in text
    assert "pip install 'painmon[train]'" in text and text.startswith("ok")
