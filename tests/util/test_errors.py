"""One base for errors the user can act on; each domain error keeps its old built-in base too."""

from __future__ import annotations

import importlib

import pytest

from painmon.core.util.errors import InvalidInputError, PainmonError

# (module, class, the built-in base it had before PainmonError, which callers still catch)
USER_FACING_ERRORS = [
    ("painmon.core.research.datasets", "DatasetLayoutError", ValueError),
    ("painmon.core.research.splits", "SplitError", ValueError),
    ("painmon.core.research.splits", "SubjectLeakError", ValueError),
    ("painmon.core.research.crops", "CropError", RuntimeError),
    ("painmon.core.research.export", "ExportError", RuntimeError),
    ("painmon.core.research.seeding", "DeviceUnavailableError", RuntimeError),
    ("painmon.core.store.registry", "RegistryError", RuntimeError),
    ("painmon.core.store.catalog", "ModelDownloadError", RuntimeError),
    ("painmon.core.live.scoring", "ProviderError", RuntimeError),
    ("painmon.core.live.scoring", "ModelLoadError", RuntimeError),
    ("painmon.core.live.scoring", "ModelIntegrityError", RuntimeError),
    ("painmon.core.live.face_detect", "FaceModelError", RuntimeError),
    ("painmon.core.live.capture", "SourceError", RuntimeError),
    ("painmon.core.live.capture", "SourceDisconnectedError", RuntimeError),
    ("painmon.core.live.session", "SessionWriteError", RuntimeError),
    ("painmon.core.tools.cli", "CliError", Exception),
    ("painmon.core.util.errors", "InvalidInputError", ValueError),
]


@pytest.mark.parametrize(
    ("module", "name", "builtin_base"),
    USER_FACING_ERRORS,
    ids=[name for _, name, _ in USER_FACING_ERRORS],
)
def test_every_user_facing_error_is_a_painmon_error(module, name, builtin_base):
    if module.endswith((".export", ".seeding")):
        pytest.importorskip("torch")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, PainmonError)
    assert issubclass(cls, builtin_base)  # `except ValueError/RuntimeError` callers still work


def test_invalid_input_is_still_a_value_error():
    with pytest.raises(ValueError, match="bad value"):
        raise InvalidInputError("bad value")
    assert not issubclass(PainmonError, ValueError)  # the base itself is not a ValueError
