"""Atomic writes: the target is the old file or the new one, and no temporary file is left."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest

from painmon.core.util.fileio import atomic_path, atomic_write_bytes, atomic_write_text
from painmon.core.util.timeline import utc_now


def test_atomic_write_bytes_writes_exact_bytes(tmp_path):
    target = tmp_path / "sub" / "model.onnx.sha256"
    assert atomic_write_bytes(target, b"ab  model.onnx\r\n") == target
    assert target.read_bytes() == b"ab  model.onnx\r\n"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_atomic_path_publishes_only_on_success(tmp_path):
    target = tmp_path / "best.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="parity"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"half")
        raise RuntimeError("parity check failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_result_has_the_permissions_a_plain_open_gives(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)


def test_mkdir_false_refuses_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "gone" / "x", mkdir=False):
        pass
    assert not (tmp_path / "gone").exists()
    atomic_write_text(tmp_path / "made" / "session.json", "{}")  # the default creates it
    assert (tmp_path / "made" / "session.json").read_text() == "{}"


def test_utc_now_is_timezone_aware_utc():
    now = utc_now()
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)
