"""painmon: a real-time bedside monitor of facial pain expression.

The installed package maps the repository's top-level folders: ``painmon.core``
(no Qt: capture, face, scoring, alarms, datasets, training), ``painmon.models``
(network definitions and shipped models) and ``painmon.app`` (the Qt shell).
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("painmon")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
