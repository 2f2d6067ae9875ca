"""Atomic writes with an exact permission mode (private patient files)."""

from __future__ import annotations

import os

import pytest

from painmon.core.util.fileio import atomic_write


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_mode_is_exact_whatever_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "session.json", lambda f: f.write("{}"), mode=0o600)
        plain = atomic_write(tmp_path / "plain.txt", lambda f: f.write("x"))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o600
    assert plain.stat().st_mode & 0o777 != 0  # the default is unchanged (open()'s permissions)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "session.json"]
