"""The window without a display (issue #13, item 9): one line and exit 2, never Qt's SIGABRT.

cv2 (opencv-contrib-python) points Qt at its own Qt 5 plugins when imported; the window
undoes that before Qt starts. ``painmon doctor`` checks the platform plugin the window will
really use (xcb, wayland) with ldd, and names the missing system packages.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from painmon.core.tools.doctor import (
    NO_DISPLAY_MESSAGE,
    DisplayUnavailableError,
    check_qt_platform,
    cv2_package_dir,
    debian_packages,
    describe_missing_libraries,
    missing_plugin_libraries,
    parse_ldd_missing,
    prepare_window_environment,
    qt_platform_names,
    remove_cv2_qt_variables,
    usable_display_platforms,
    window_start_problem,
)

# ldd on PySide6 6.11's libqxcb.so on a minimal Debian without the X libraries.
LDD_XCB = """\
\tlinux-vdso.so.1 (0x00007ffd5b7f2000)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x7f)
\tlibxcb-cursor.so.0 => not found
\tlibxkbcommon-x11.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibEGL.so.1 => not found
\tlibxcb-cursor.so.0 => not found
\tlibfontconfig.so.1 => /lib/x86_64-linux-gnu/libfontconfig.so.1 (0x00007f0e3b9a0000)
\tlibdbus-1.so.3 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e3b600000)
"""
LDD_XCB_QPA = """\
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-cursor.so.0 => not found
\tlibfancy-new.so.7 => not found
"""


def _fake_qt(tmp_path: Path, *platforms: str) -> Path:
    qt = tmp_path / "Qt"
    (qt / "plugins" / "platforms").mkdir(parents=True)
    (qt / "lib").mkdir()
    for name in platforms:
        (qt / "plugins" / "platforms" / f"libq{name}.so").write_bytes(b"\x7fELF")
    (qt / "lib" / "libQt6XcbQpa.so.6").write_bytes(b"\x7fELF")
    return qt


def _ldd_of(outputs: dict[str, str]):
    seen: list[str] = []

    def ldd(path: Path) -> str:
        seen.append(path.name)
        return outputs.get(path.name, "")

    ldd.seen = seen  # type: ignore[attr-defined]
    return ldd


# --- pure parts -----------------------------------------------------------------------------


def test_ldd_output_gives_each_missing_library_once_in_order():
    assert parse_ldd_missing(LDD_XCB) == [
        "libxcb-cursor.so.0",
        "libxkbcommon-x11.so.0",
        "libxcb-icccm.so.4",
        "libEGL.so.1",
        "libdbus-1.so.3",
    ]
    assert parse_ldd_missing("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") == []
    assert parse_ldd_missing("") == []


def test_missing_libraries_map_to_debian_packages_and_unknown_ones_are_named():
    packages, unknown = debian_packages(
        [*parse_ldd_missing(LDD_XCB), "libxcb-keysyms.so.1", "libfancy-new.so.7"]
    )
    assert packages == [
        "libxcb-cursor0",
        "libxkbcommon-x11-0",
        "libxcb-icccm4",
        "libegl1",
        "libdbus-1-3",
        "libxcb-keysyms1",
    ]
    assert unknown == ["libfancy-new.so.7"]
    line = describe_missing_libraries("xcb", ["libxcb-cursor.so.0", "libfancy-new.so.7"])
    assert "\n" not in line
    assert "sudo apt-get install -y libxcb-cursor0" in line
    assert "apt-file search" in line and "libfancy-new.so.7" in line


@pytest.mark.parametrize(
    ("env", "system", "names", "usable"),
    [
        ({}, "linux", ("xcb",), None),
        ({"DISPLAY": ":0"}, "linux", ("xcb",), ("xcb",)),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", ("xcb",), None),
        (
            {"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"},
            "linux",
            ("wayland", "xcb"),
            ("wayland",),
        ),
        ({"QT_QPA_PLATFORM": "offscreen"}, "linux", ("offscreen",), ()),
        ({"QT_QPA_PLATFORM": "xcb"}, "freebsd14", ("xcb",), None),
        ({"QT_QPA_PLATFORM": "wayland-egl;xcb:foo=1", "DISPLAY": ":1"}, "linux",
         ("wayland-egl", "xcb"), ("xcb",)),
        ({"QT_QPA_PLATFORM": "vnc"}, "linux", ("vnc",), ()),
        ({}, "win32", (), ()),
        ({}, "darwin", (), ()),
    ],
)  # fmt: skip
def test_which_platforms_qt_tries_and_which_have_a_display(env, system, names, usable):
    assert qt_platform_names(env, system) == names
    assert usable_display_platforms(env, system) == usable


def test_no_display_is_one_line_naming_the_headless_command_and_offscreen():
    problem = window_start_problem({}, "linux", ldd=_ldd_of({}))
    assert problem == NO_DISPLAY_MESSAGE
    assert "\n" not in problem
    assert "painmon monitor" in problem and "QT_QPA_PLATFORM=offscreen" in problem
    assert window_start_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert window_start_problem({}, "win32") is None


def test_a_display_with_an_unloadable_xcb_plugin_names_the_packages(tmp_path):
    qt = _fake_qt(tmp_path, "xcb")
    ldd = _ldd_of({"libqxcb.so": LDD_XCB, "libQt6XcbQpa.so.6": LDD_XCB_QPA})
    assert missing_plugin_libraries("xcb", qt, ldd) == [
        *parse_ldd_missing(LDD_XCB),
        "libxcb-keysyms.so.1",
        "libfancy-new.so.7",
    ]
    assert ldd.seen == ["libqxcb.so", "libQt6XcbQpa.so.6"]  # the plugin and Qt's xcb library
    problem = window_start_problem({"DISPLAY": ":0"}, "linux", qt, ldd)
    assert problem is not None and "\n" not in problem
    assert "xcb platform plugin cannot load" in problem
    assert "apt-get install -y libxcb-cursor0 libxkbcommon-x11-0" in problem
    # Everything present: the window may start.
    assert window_start_problem({"DISPLAY": ":0"}, "linux", qt, _ldd_of({})) is None
    # No plugin file at all (another layout): not ours to judge, Qt tries.
    assert missing_plugin_libraries("wayland", qt, ldd) is None


def test_wayland_falls_back_to_xcb_before_refusing(tmp_path):
    qt = _fake_qt(tmp_path, "xcb", "wayland")
    env = {"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"}
    broken_wayland = _ldd_of({"libqwayland.so": "\tlibwayland-cursor.so.0 => not found\n"})
    assert window_start_problem(env, "linux", qt, broken_wayland) is None  # xcb still loads
    both_broken = _ldd_of(
        {"libqwayland.so": "\tlibwayland-cursor.so.0 => not found\n", "libqxcb.so": LDD_XCB}
    )
    problem = window_start_problem(env, "linux", qt, both_broken)
    assert "libwayland-cursor0" in problem and "libxcb-cursor0" in problem


def test_cv2s_qt_variables_are_removed_and_the_users_own_kept(tmp_path):
    cv2_dir = tmp_path / "site-packages" / "cv2"
    (cv2_dir / "qt" / "plugins").mkdir(parents=True)
    env = {
        "QT_QPA_PLATFORM_PLUGIN_PATH": str(cv2_dir / "qt" / "plugins"),
        "QT_QPA_FONTDIR": str(cv2_dir / "qt" / "fonts"),
        "PATH": "/usr/bin",
    }
    assert remove_cv2_qt_variables(env, cv2_dir) == [
        "QT_QPA_PLATFORM_PLUGIN_PATH",
        "QT_QPA_FONTDIR",
    ]
    assert env == {"PATH": "/usr/bin"}
    mine = {"QT_QPA_PLATFORM_PLUGIN_PATH": str(tmp_path / "my-plugins")}
    assert remove_cv2_qt_variables(mine, cv2_dir) == []
    assert remove_cv2_qt_variables(mine, None) == []
    # A sibling whose name starts like cv2's folder is not inside it.
    sibling = {"QT_QPA_FONTDIR": str(tmp_path / "site-packages" / "cv2-fonts")}
    assert remove_cv2_qt_variables(sibling, cv2_dir) == []


def test_importing_cv2_sets_what_the_window_then_removes():
    """The real cv2 of this install, in a child (importing cv2 here would leak into others)."""
    if cv2_package_dir() is None:
        pytest.skip("no cv2 installed")
    code = (
        "import os, cv2\n"
        "from painmon.core.tools.doctor import prepare_window_environment\n"
        "before = os.environ.get('QT_QPA_PLATFORM_PLUGIN_PATH')\n"
        "prepare_window_environment()\n"
        "print(repr(before), repr(os.environ.get('QT_QPA_PLATFORM_PLUGIN_PATH')),"
        " repr(os.environ.get('QT_QPA_FONTDIR')))\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    before, after, fonts = proc.stdout.split()
    assert after == "None" and fonts == "None"
    if before != "None":  # the wheels built by OpenCV's CI set it; a headless build does not
        assert "cv2" in before


def test_prepare_window_environment_refuses_without_a_display(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("display servers are a Linux/BSD matter")
    with pytest.raises(DisplayUnavailableError, match="no display"):
        prepare_window_environment()


def test_doctor_checks_the_real_plugin_not_only_offscreen(tmp_path):
    qt = _fake_qt(tmp_path, "xcb")
    broken = _ldd_of({"libqxcb.so": LDD_XCB})
    check = check_qt_platform({"DISPLAY": ":0"}, "linux", qt, broken)
    assert check.status == "error"
    assert "libxcb-cursor.so.0" in check.detail
    assert check.fix.startswith("Debian/Ubuntu: sudo apt-get install -y libxcb-cursor0")
    fine = check_qt_platform({"DISPLAY": ":0"}, "linux", qt, _ldd_of({}))
    assert fine.status == "ok" and "xcb" in fine.detail
    headless = check_qt_platform({}, "linux", qt, broken)
    assert headless.status == "warn" and "no display" in headless.detail
    assert "libxcb-cursor0" in headless.fix  # still named: a monitor may be plugged in later
    offscreen = check_qt_platform({"QT_QPA_PLATFORM": "offscreen"}, "linux", qt, broken)
    assert offscreen.status == "ok"


# --- the command --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["demo", "app"])
def test_window_commands_without_a_display_exit_2_with_one_line(command, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("display servers are a Linux/BSD matter")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE")
    }
    env["HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "painmon", command],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [f"painmon {command}: error: {NO_DISPLAY_MESSAGE}"]
    assert "Reinstalling" not in proc.stderr and proc.stdout == ""
