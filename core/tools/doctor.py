"""``painmon doctor``: check the machine a monitor will run on and say how to fix what is wrong.

Every check returns a :class:`DoctorCheck` instead of raising, so one broken library
never hides the rest of the report. Nothing here waits long: the camera is probed in a
thread joined with a timeout, and CUDA is checked with a one-node ONNX session.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from painmon.core.util.paths import default_sessions_dir

log = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("ok", "warn", "error")
OPENCV_DISTRIBUTIONS: tuple[str, ...] = (
    "opencv-python",
    "opencv-contrib-python",
    "opencv-python-headless",
    "opencv-contrib-python-headless",
)
# mediapipe needs the contrib build (see pyproject.toml); every other cv2 wheel must go.
KEEP_OPENCV = "opencv-contrib-python"
MIN_FREE_DISK_BYTES = 1 << 30

CameraProbe = Callable[[int], tuple[bool, str]]


@dataclass(frozen=True)
class DoctorCheck:
    """One line of the doctor's report; ``fix`` says what to do when status is not ok."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a doctor check needs a name")
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "error" and not self.fix:
            raise ValueError(f"check {self.name!r} is an error and must say how to fix it")


@dataclass(frozen=True)
class DoctorReport:
    """All checks, in the order they ran."""

    checks: tuple[DoctorCheck, ...]

    def __post_init__(self) -> None:
        if not all(isinstance(c, DoctorCheck) for c in self.checks):
            raise TypeError("DoctorReport.checks must hold DoctorCheck instances")

    @property
    def errors(self) -> tuple[DoctorCheck, ...]:
        return tuple(c for c in self.checks if c.status == "error")

    @property
    def warnings(self) -> tuple[DoctorCheck, ...]:
        return tuple(c for c in self.checks if c.status == "warn")


# --- folders ------------------------------------------------------------------------------


# --- individual checks --------------------------------------------------------------------


def check_python() -> DoctorCheck:
    version = platform.python_version()
    detail = f"{version} ({sys.executable}) on {platform.system()} {platform.machine()}"
    return DoctorCheck("python", "ok", detail)


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


# (check name, import name, distributions, status when missing, what is lost, extra detail)
_LIBRARIES: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("numpy", "numpy", ("numpy",), "error", "nothing in painmon runs without it"),
    (
        "onnxruntime",
        "onnxruntime",
        ("onnxruntime-gpu", "onnxruntime"),
        "error",
        "the monitor cannot score pain",
    ),
    (
        "opencv",
        "cv2",
        OPENCV_DISTRIBUTIONS,
        "error",
        "no camera capture and no face detection",
    ),
    (
        "mediapipe",
        "mediapipe",
        ("mediapipe",),
        "warn",
        "face detection falls back to OpenCV's Haar cascade",
    ),
    ("torch", "torch", ("torch",), "warn", "training and export are unavailable"),
)


def check_library(
    name: str, module: str, distributions: tuple[str, ...], missing_status: str, lost: str
) -> DoctorCheck:
    """Import ``module`` (a broken install shows here, not at the bedside); report its version."""
    if importlib.util.find_spec(module) is None:
        return DoctorCheck(
            name,
            missing_status,
            f"not installed: {lost}",
            f"pip install {distributions[0]}",
        )
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # any import failure is the finding itself
        return DoctorCheck(
            name,
            "error",
            f"installed but does not import: {type(exc).__name__}: {_first_line(exc)}",
            f"reinstall it: pip install --force-reinstall {distributions[0]}",
        )
    version = getattr(imported, "__version__", None) or _distribution_version(*distributions)
    detail = str(version or "version unknown")
    if module == "torch":
        detail += f", CUDA {'available' if imported.cuda.is_available() else 'not available'}"
    return DoctorCheck(name, "ok", detail)


def check_painmon() -> DoctorCheck:
    from painmon import __version__

    package_dir = Path(sys.modules["painmon"].__file__ or ".").resolve().parent
    return DoctorCheck("painmon", "ok", f"{__version__} ({package_dir})")


def check_pyside6(timeout_s: float = 30.0) -> DoctorCheck:
    """Load Qt in a child process: core never imports Qt, and a missing libEGL must not kill us."""
    version = _distribution_version("PySide6-Essentials", "PySide6")
    if importlib.util.find_spec("PySide6") is None:
        return DoctorCheck(
            "PySide6",
            "warn",
            "not installed: no bedside window (the headless `painmon monitor` still works)",
            "pip install PySide6-Essentials",
        )
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    try:
        result = subprocess.run(
            [sys.executable, "-c", "import PySide6.QtWidgets"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return DoctorCheck(
            "PySide6",
            "warn",
            f"{version}; could not test the Qt import ({exc})",
            'run `python -c "import PySide6.QtWidgets"` to see why',
        )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return DoctorCheck(
            "PySide6",
            "error",
            f"{version} installed but Qt does not load: {last}",
            "install the system libraries Qt needs (Debian/Ubuntu: apt install libegl1 "
            "libxkbcommon0 libfontconfig1 libdbus-1-3), or reinstall PySide6-Essentials",
        )
    return DoctorCheck("PySide6", "ok", str(version))


def installed_opencv_distributions() -> dict[str, str]:
    """Which cv2-providing wheels are installed, name -> version."""
    found = {}
    for name in OPENCV_DISTRIBUTIONS:
        version = _distribution_version(name)
        if version is not None:
            found[name] = version
    return found


def check_opencv_distributions(installed: Mapping[str, str]) -> DoctorCheck:
    """More than one cv2 wheel means they overwrite each other's files: an error."""
    listed = ", ".join(f"{n} {v}" for n, v in sorted(installed.items())) or "none"
    if not installed:
        return DoctorCheck(
            "opencv wheels", "error", "no OpenCV distribution", f"pip install {KEEP_OPENCV}"
        )
    if len(installed) > 1:
        others = [n for n in sorted(installed) if n != KEEP_OPENCV]
        return DoctorCheck(
            "opencv wheels",
            "error",
            f"{len(installed)} distributions install the same cv2 package: {listed}",
            f"pip uninstall -y {' '.join(others)} && pip install --force-reinstall {KEEP_OPENCV}",
        )
    if KEEP_OPENCV not in installed:
        (only,) = installed
        return DoctorCheck(
            "opencv wheels",
            "warn",
            f"{listed} (mediapipe expects {KEEP_OPENCV})",
            f"pip uninstall -y {only} && pip install {KEEP_OPENCV}",
        )
    return DoctorCheck("opencv wheels", "ok", listed)


def _tiny_onnx_model() -> bytes:
    from onnx import TensorProto, helper

    tensor_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    tensor_out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "doctor", [tensor_in], [tensor_out]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # old enough for every supported ONNX Runtime
    return model.SerializeToString()


def check_onnxruntime_providers() -> DoctorCheck:
    """Available providers; when CUDA is offered, open a one-node session to see it really loads."""
    if importlib.util.find_spec("onnxruntime") is None:
        return DoctorCheck(
            "onnxruntime providers",
            "error",
            "onnxruntime is not installed",
            "pip install onnxruntime-gpu (or onnxruntime without an NVIDIA GPU)",
        )
    try:
        import onnxruntime as ort

        available = list(ort.get_available_providers())
    except Exception as exc:  # a broken install is reported by check_library too
        return DoctorCheck(
            "onnxruntime providers",
            "error",
            f"could not list providers: {_first_line(exc)}",
            "reinstall onnxruntime-gpu (or onnxruntime)",
        )
    listed = ", ".join(available)
    if "CUDAExecutionProvider" not in available:
        return DoctorCheck("onnxruntime providers", "ok", f"{listed} (CPU inference)")
    if importlib.util.find_spec("onnx") is None:
        return DoctorCheck(
            "onnxruntime providers",
            "ok",
            f"{listed}; CUDA provider installed, libraries not checked (no onnx package)",
        )
    try:
        ort.set_default_logger_severity(4)  # the fallback is the finding; keep stderr clean
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(
            _tiny_onnx_model(),
            options,
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
        active = session.get_providers()
    except Exception as exc:
        return DoctorCheck(
            "onnxruntime providers",
            "warn",
            f"{listed}; a test session failed: {_first_line(exc)}",
            "set PAINMON_ORT_PROVIDER=cpu, or reinstall onnxruntime-gpu",
        )
    finally:
        ort.set_default_logger_severity(2)
    if "CUDAExecutionProvider" in active:
        return DoctorCheck("onnxruntime providers", "ok", f"{listed}; CUDA loads (GPU inference)")
    return DoctorCheck(
        "onnxruntime providers",
        "warn",
        f"{listed}; CUDA provider installed but its libraries do not load, so inference "
        "runs on the CPU",
        "install the CUDA and cuDNN runtime this onnxruntime-gpu release needs, or set "
        "PAINMON_ORT_PROVIDER=cpu to skip the attempt",
    )


def probe_camera(index: int) -> tuple[bool, str]:
    """Open camera ``index`` with OpenCV and read one frame; (opened, what happened)."""
    import cv2

    logging_api = cv2.utils.logging
    previous = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)  # "can't open camera" is our finding
    capture = cv2.VideoCapture(index)
    try:
        if not capture.isOpened():
            return False, f"camera {index} could not be opened"
        ok, frame = capture.read()
        if not ok or frame is None:
            return False, f"camera {index} opened but gave no frame"
        height, width = frame.shape[:2]
        return True, f"camera {index}: {width}x{height} via {capture.getBackendName()}"
    finally:
        capture.release()
        logging_api.setLogLevel(previous)


def check_camera(
    index: int = 0, timeout_s: float = 5.0, probe: CameraProbe = probe_camera
) -> DoctorCheck:
    """Run ``probe`` in a daemon thread so a hung driver cannot hang the doctor."""
    outcome: list[tuple[bool, str]] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(probe(index))
        except Exception as exc:  # reported below; a thread cannot raise to us
            failure.append(exc)

    worker = threading.Thread(target=run, name="painmon-doctor-camera", daemon=True)
    worker.start()
    worker.join(timeout_s)
    fix = (
        "plug in a webcam, close other programs using it, check permissions "
        "(Linux: user in the 'video' group; Windows/macOS: camera privacy settings); "
        "video files still work with `painmon monitor --source FILE`"
    )
    if worker.is_alive():
        return DoctorCheck(
            "camera", "warn", f"camera {index} did not answer within {timeout_s:g} s", fix
        )
    if failure:
        return DoctorCheck("camera", "warn", f"camera probe failed: {_first_line(failure[0])}", fix)
    opened, detail = outcome[0]
    return DoctorCheck("camera", "ok" if opened else "warn", detail, "" if opened else fix)


def check_face_model() -> DoctorCheck:
    from painmon.core.store.catalog import installed_models

    face, haar = installed_models()[:2]
    if haar.active and face.status == "installed":
        return DoctorCheck(
            "face model",
            "warn",
            "OpenCV's Haar cascade was chosen: no AU cross-check or pose gate, and crops "
            "framed unlike the Face Landmarker crops models are trained on",
            "unset PAINMON_FACE_MODEL (or drop --face-model haar) to track with MediaPipe",
        )
    if face.status == "installed":
        shipped = ", shipped with painmon" if "shipped" in face.detail else ""
        return DoctorCheck(
            "face model", "ok", f"MediaPipe Face Landmarker, verified{shipped} ({face.path})"
        )
    if face.status == "not installed":
        return DoctorCheck(
            "face model",
            "warn",
            "no Face Landmarker bundle in this build: face detection uses OpenCV's Haar cascade",
            "reinstall painmon, or run `painmon models download`",
        )
    return DoctorCheck(
        "face model",
        "error",
        f"{face.status}: {face.detail}",
        "delete the file (or unset PAINMON_FACE_MODEL) and run `painmon models download`",
    )


def check_pain_models() -> DoctorCheck:
    from painmon.core.store.catalog import ModelKind, installed_models

    rows = [r for r in installed_models() if r.kind is ModelKind.PAIN_MODEL and r.path]
    if not rows:
        return DoctorCheck(
            "pain models",
            "warn",
            "no ONNX pain model found (demo model not shipped, none in the user models folder)",
            "export one with `painmon export` or pass the .onnx to `painmon monitor --model`",
        )
    bad = [r for r in rows if r.verified is False]
    names = ", ".join(f"{r.name} ({r.status})" for r in rows)
    if bad:
        return DoctorCheck(
            "pain models",
            "error",
            names,
            "delete or re-export: " + ", ".join(str(r.path) for r in bad),
        )
    if any(r.verified is None for r in rows):
        return DoctorCheck(
            "pain models", "warn", names, "re-export unverified models to write a .sha256"
        )
    return DoctorCheck("pain models", "ok", names)


def check_sessions_dir(folder: Path | None = None) -> DoctorCheck:
    """The sessions folder exists (or can be made), takes a file, and has room."""
    target = default_sessions_dir() if folder is None else Path(folder)
    fix = (
        f"make {target} writable for this user, or choose another folder with "
        "`painmon monitor --out DIR` (or set PAINMON_DATA)"
    )
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".painmon-doctor-") as probe:
            probe.write(b"ok")
            probe.flush()
        free_bytes = shutil.disk_usage(target).free
    except OSError as exc:
        return DoctorCheck("sessions folder", "error", f"{target} is not writable ({exc})", fix)
    free_gib = free_bytes / (1 << 30)
    if free_bytes < MIN_FREE_DISK_BYTES:
        return DoctorCheck(
            "sessions folder",
            "warn",
            f"{target} writable but only {free_gib:.2f} GiB free",
            "free disk space: sessions with video need room",
        )
    return DoctorCheck("sessions folder", "ok", f"{target} writable, {free_gib:.1f} GiB free")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- the report ---------------------------------------------------------------------------


def run_doctor(
    *,
    opencv_distributions: Mapping[str, str] | None = None,
    sessions_dir: Path | None = None,
    camera_index: int = 0,
    camera_timeout_s: float = 5.0,
    camera_probe: CameraProbe = probe_camera,
) -> DoctorReport:
    """Run every check; the keyword arguments exist so tests can stand in for the machine."""
    checks = [check_python(), check_painmon()]
    checks += [check_library(*spec) for spec in _LIBRARIES]
    checks.append(check_pyside6())
    installed = (
        installed_opencv_distributions() if opencv_distributions is None else opencv_distributions
    )
    checks.append(check_opencv_distributions(installed))
    checks.append(check_onnxruntime_providers())
    checks.append(check_camera(camera_index, camera_timeout_s, camera_probe))
    checks.append(check_face_model())
    checks.append(check_pain_models())
    checks.append(check_sessions_dir(sessions_dir))
    report = DoctorReport(tuple(checks))
    for check in report.errors:
        log.error("doctor: %s: %s", check.name, check.detail)
    return report


def doctor_exit_code(report: DoctorReport) -> int:
    """0 when nothing is an error (warnings allowed), else 1."""
    return 1 if report.errors else 0


def format_doctor(report: DoctorReport) -> str:
    """The text ``painmon doctor`` prints: one line per check, the fix indented under it."""
    marks = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}
    width = max(len(c.name) for c in report.checks) if report.checks else 0
    lines = []
    for check in report.checks:
        lines.append(f"{marks[check.status]} {check.name.ljust(width)}  {check.detail}")
        if check.status != "ok" and check.fix:
            lines.append(f"      {' ' * width}  fix: {check.fix}")
    lines.append("")
    lines.append(
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
        + ("" if report.errors else ": ready to monitor")
    )
    return "\n".join(lines)
