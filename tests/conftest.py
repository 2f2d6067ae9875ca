"""Shared fixtures: real-face media and the face model live in ../shared (never committed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GLOG_minloglevel", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PAINMON_SHARED", REPO_ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        message = f"shared test file missing: {path} (set PAINMON_SHARED to the shared/ folder)"
        if IN_CI:
            pytest.fail(message)  # under CI these tests must run, never skip
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_file():
    """Return a function giving the path of a file in ../shared, verified against SHA256SUMS."""
    sums = {}
    sums_file = SHARED / "SHA256SUMS"
    if sums_file.is_file():
        for line in sums_file.read_text().splitlines():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest.strip()

    def get(relative: str) -> Path:
        path = _shared_file(relative)
        expected = sums.get(relative)
        if expected is not None:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            assert actual == expected, f"{path} does not match shared/SHA256SUMS"
        return path

    return get


@pytest.fixture(scope="session")
def face_model_path(shared_file) -> Path:
    """The MediaPipe Face Landmarker bundle from ../shared/models."""
    return shared_file("models/face_landmarker.task")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """No test reads or writes the real user cache."""
    cache = tmp_path_factory.mktemp("painmon-cache")
    monkeypatch.setenv("PAINMON_CACHE", str(cache))
    monkeypatch.delenv("PAINMON_FACE_MODEL", raising=False)
