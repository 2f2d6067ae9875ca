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
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from painmon.core.util.errors import PainmonError
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
)
# The ``train`` extra of pyproject.toml, by import name: training, evaluation, export and
# reports. A bedside install (`pip install .`) leaves them out on purpose.
TRAIN_EXTRA_MODULES: tuple[str, ...] = ("torch", "safetensors", "onnx", "sklearn", "scipy")
TRAIN_EXTRA_INSTALL = "pip install 'painmon[train]'"


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


def check_torch() -> DoctorCheck:
    """torch and the rest of the ``train`` extra: optional, so never a warning at the bedside."""
    missing = [m for m in TRAIN_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if "torch" in missing:
        return DoctorCheck(
            "torch",
            "ok",
            "not installed (a bedside install: monitoring needs no torch; training, "
            f"evaluation and export need the training extra: {TRAIN_EXTRA_INSTALL})",
        )
    checked = check_library("torch", "torch", ("torch",), "warn", "")
    if checked.status != "ok" or not missing:
        return checked
    return DoctorCheck(
        "torch",
        "warn",
        f"{checked.detail}; the training extra is incomplete (missing: {', '.join(missing)})",
        TRAIN_EXTRA_INSTALL,
    )


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


# --- the window's Qt platform --------------------------------------------------------------

# opencv-contrib-python's cv2/__init__ points Qt at its own (Qt 5) plugins and fonts at
# import; PySide6 (Qt 6) then loads an incompatible xcb plugin and aborts with SIGABRT.
CV2_QT_VARIABLES: tuple[str, ...] = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR")
# Platforms that draw on a display server, and the variable that names the server.
DISPLAY_VARIABLES: dict[str, str] = {"xcb": "DISPLAY", "wayland": "WAYLAND_DISPLAY"}
# The Qt integration library each display plugin loads (ldd on the plugin lists its needs
# too, transitively; naming it keeps the report right if the plugin stops linking it).
QT_INTEGRATION_LIBRARIES: dict[str, str] = {
    "xcb": "libQt6XcbQpa.so.6",
    "wayland": "libQt6WaylandClient.so.6",
}
NO_DISPLAY_MESSAGE = (
    "no display (DISPLAY and WAYLAND_DISPLAY are unset): use `painmon monitor` for headless "
    "monitoring, or set QT_QPA_PLATFORM=offscreen"
)
# Shared libraries Qt's display plugins need, by the Debian/Ubuntu package that ships them.
DEBIAN_PACKAGES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
}
_LDD_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$")

LddRunner = Callable[[Path], str]


class DisplayUnavailableError(PainmonError):
    """The window cannot open here: no display, or Qt's display plugin cannot load."""


def cv2_package_dir() -> Path | None:
    """cv2's package folder, found without importing cv2 (None when not installed)."""
    try:
        spec = importlib.util.find_spec("cv2")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def remove_cv2_qt_variables(env: MutableMapping[str, str], cv2_dir: str | Path | None) -> list[str]:
    """Delete the Qt variables that point into ``cv2_dir`` from ``env``; the names removed.

    Only cv2's own values go: a plugin path the user set elsewhere is theirs.
    """
    if cv2_dir is None:
        return []
    root = Path(os.path.realpath(cv2_dir))
    removed = []
    for name in CV2_QT_VARIABLES:
        value = env.get(name)
        if value and Path(os.path.realpath(value)).is_relative_to(root):
            del env[name]
            removed.append(name)
    return removed


def qt_platform_names(env: Mapping[str, str], system: str = sys.platform) -> tuple[str, ...]:
    """The Qt platform plugins Qt will try, in order, as ``QT_QPA_PLATFORM`` and the session
    pick them (``xcb:opt;wayland`` -> xcb, wayland); "" on Windows and macOS (no choice)."""
    if not _is_unix_desktop(system):
        return ()
    chosen = env.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        return tuple(n.partition(":")[0].strip() for n in chosen.split(";") if n.strip())
    if env.get("XDG_SESSION_TYPE", "").strip().lower() == "wayland":
        return ("wayland", "xcb")
    return ("xcb",)


def _is_unix_desktop(system: str) -> bool:
    return system.startswith(("linux", "freebsd", "openbsd", "netbsd", "dragonfly"))


def _display_kind(platform_name: str) -> str | None:
    """'xcb' or 'wayland' (wayland-egl, wayland-brcm ...) when the platform needs a server."""
    if platform_name == "xcb":
        return "xcb"
    return "wayland" if platform_name.startswith("wayland") else None


def usable_display_platforms(
    env: Mapping[str, str], system: str = sys.platform
) -> tuple[str, ...] | None:
    """The display platforms Qt may use here (``xcb``/``wayland``); ``()`` when a platform
    that needs no display (offscreen, eglfs, vnc ...) comes first, or on Windows/macOS;
    ``None`` when every platform Qt would try needs a display server and none is named."""
    usable: list[str] = []
    for name in qt_platform_names(env, system):
        kind = _display_kind(name)
        if kind is None:
            return tuple(usable)
        if env.get(DISPLAY_VARIABLES[kind], "").strip():
            usable.append(kind)
    return tuple(usable) if usable or not _is_unix_desktop(system) else None


def parse_ldd_missing(ldd_output: str) -> list[str]:
    """The libraries ldd reports as ``not found``, each once, in order."""
    found: dict[str, None] = {}
    for line in ldd_output.splitlines():
        match = _LDD_NOT_FOUND.match(line)
        if match:
            found[match.group(1)] = None
    return list(found)


def debian_packages(libraries: Iterable[str]) -> tuple[list[str], list[str]]:
    """(Debian/Ubuntu packages that ship ``libraries``, the libraries with no known package)."""
    packages: dict[str, None] = {}
    unknown = []
    for library in libraries:
        package = DEBIAN_PACKAGES.get(library)
        if package is None:
            unknown.append(library)
        else:
            packages[package] = None
    return list(packages), unknown


def describe_missing_libraries(platform_name: str, libraries: Sequence[str]) -> str:
    """One line: what is missing for Qt's ``platform_name`` plugin and the apt-get line."""
    packages, unknown = debian_packages(libraries)
    text = f"Qt's {platform_name} platform plugin cannot load: missing {', '.join(libraries)}"
    if packages:
        text += f"; Debian/Ubuntu: sudo apt-get install -y {' '.join(packages)}"
    if unknown:
        text += f" (find the package of {', '.join(unknown)} with `apt-file search`)"
    return text


def pyside6_qt_dir() -> Path | None:
    """PySide6's bundled Qt folder (plugins/, lib/), found without importing PySide6."""
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "Qt"


def run_ldd(path: Path) -> str:
    """``ldd path``'s output ("" when ldd is not there or fails to run)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return ""
    try:
        result = subprocess.run(
            [ldd, str(path)], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout


def missing_plugin_libraries(
    platform_name: str, qt_dir: Path | None = None, ldd: LddRunner = run_ldd
) -> list[str] | None:
    """Libraries Qt's ``xcb``/``wayland`` plugin (and its Qt integration library) lack;
    None when the plugin is not found (no PySide6, or a layout this check does not know)."""
    qt_dir = pyside6_qt_dir() if qt_dir is None else qt_dir
    if qt_dir is None:
        return None
    plugin = qt_dir / "plugins" / "platforms" / f"libq{platform_name}.so"
    if not plugin.is_file():
        return None
    paths = [plugin]
    integration = qt_dir / "lib" / QT_INTEGRATION_LIBRARIES.get(platform_name, "")
    if platform_name in QT_INTEGRATION_LIBRARIES and integration.is_file():
        paths.append(integration)
    missing: dict[str, None] = {}
    for path in paths:
        missing.update(dict.fromkeys(parse_ldd_missing(ldd(path))))
    return list(missing)


def window_start_problem(
    env: Mapping[str, str] | None = None,
    system: str = sys.platform,
    qt_dir: Path | None = None,
    ldd: LddRunner = run_ldd,
) -> str | None:
    """Why the bedside window cannot open here, in one line; None when it can (as far as can
    be told before Qt starts, which aborts the process rather than raise)."""
    env = os.environ if env is None else env
    usable = usable_display_platforms(env, system)
    if usable is None:
        return NO_DISPLAY_MESSAGE
    problems = []
    for platform_name in usable:
        missing = missing_plugin_libraries(platform_name, qt_dir, ldd)
        if not missing:
            return None  # this one loads (or cannot be checked: let Qt try)
        problems.append(describe_missing_libraries(platform_name, missing))
    return "; ".join(problems) or None


def prepare_window_environment(env: MutableMapping[str, str] | None = None) -> None:
    """Before Qt starts: undo cv2's Qt variables, then refuse (DisplayUnavailableError, one
    line) when no display plugin can open a window, instead of Qt's SIGABRT."""
    env = os.environ if env is None else env
    removed = remove_cv2_qt_variables(env, cv2_package_dir())
    if removed:
        log.debug("removed cv2's %s before starting Qt", ", ".join(removed))
    problem = window_start_problem(env)
    if problem is not None:
        raise DisplayUnavailableError(problem)


def check_qt_platform(
    env: Mapping[str, str] | None = None,
    system: str = sys.platform,
    qt_dir: Path | None = None,
    ldd: LddRunner = run_ldd,
) -> DoctorCheck:
    """The platform plugin the window will really use (xcb, wayland), not only offscreen."""
    env = os.environ if env is None else env
    name = "Qt platform"
    if not _is_unix_desktop(system):
        plugin = {"win32": "qwindows.dll", "darwin": "libqcocoa.dylib"}.get(system)
        qt_dir = pyside6_qt_dir() if qt_dir is None else qt_dir
        if plugin is None or qt_dir is None:
            return DoctorCheck(name, "ok", f"{system}: not checked")
        found = (qt_dir / "plugins" / "platforms" / plugin).is_file()
        status = "ok" if found else "warn"
        fix = "" if found else "reinstall PySide6-Essentials"
        return DoctorCheck(name, status, f"{plugin} {'found' if found else 'missing'}", fix)
    usable = usable_display_platforms(env, system)
    if usable == ():
        chosen = env.get("QT_QPA_PLATFORM", "")
        return DoctorCheck(name, "ok", f"QT_QPA_PLATFORM={chosen}: no display server needed")
    # With no display the xcb plugin is still checked: a monitor plugged in later needs it.
    platforms = usable or ("xcb",)
    lines = []
    for platform_name in platforms:
        missing = missing_plugin_libraries(platform_name, qt_dir, ldd)
        if missing is None:
            lines.append((platform_name, "ok", f"{platform_name}: plugin not found, not checked"))
        elif missing:
            lines.append((platform_name, "bad", describe_missing_libraries(platform_name, missing)))
        else:
            lines.append((platform_name, "ok", f"{platform_name} plugin's libraries all present"))
    detail = "; ".join(text for _, _, text in lines)
    bad = [text for _, state, text in lines if state == "bad"]
    if usable is None:
        return DoctorCheck(
            name,
            "warn",
            f"no display (DISPLAY and WAYLAND_DISPLAY unset): the window cannot open, "
            f"`painmon monitor` works; {detail}",
            "run the window in a desktop session (or set QT_QPA_PLATFORM=offscreen for tests)"
            + (f"; {bad[0]}" if bad else ""),
        )
    if len(bad) == len(lines):
        return DoctorCheck(name, "error", detail, bad[0].partition("; ")[2] or bad[0])
    return DoctorCheck(name, "warn" if bad else "ok", detail, bad[0] if bad else "")


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
    from painmon.core.live.scoring import cuda_driver_present

    if not cuda_driver_present():
        # onnxruntime-gpu is the default wheel on Linux/Windows x86-64: normal on a CPU machine.
        return DoctorCheck(
            "onnxruntime providers",
            "ok",
            f"{listed}; no NVIDIA driver on this machine, so inference runs on the CPU",
        )
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
    checks.append(check_torch())
    checks.append(check_pyside6())
    checks.append(check_qt_platform())
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
