"""The one base for errors the user can act on.

``painmon`` commands print a :class:`PainmonError` as one line (``painmon CMD: error: ...``)
and exit with code 2. Any other exception is a bug and keeps its traceback. Every domain
error (a bad dataset layout, a model file that fails its checksum, a camera that went away)
subclasses :class:`PainmonError`, usually alongside the built-in base it had before, so
existing ``except ValueError`` / ``except RuntimeError`` callers keep working.
"""

from __future__ import annotations


class PainmonError(Exception):
    """A problem the user can act on; its message says what was wrong and what to do."""


class InvalidInputError(PainmonError, ValueError):
    """A value the user supplied (argument, file content, setting) is not acceptable.

    Also a :class:`ValueError`, so ``except ValueError`` callers and
    ``pytest.raises(ValueError)`` tests keep working.
    """
