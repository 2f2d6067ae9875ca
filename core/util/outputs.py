"""Output paths a command may write: never over a finished run or dataset unless asked to.

A ``painmon`` command that writes a file or a folder calls :func:`refuse_existing_output`
for each output before it starts any work, so a refusal leaves the disk as it was.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path

from painmon.core.util.errors import InvalidInputError

# A launcher (the app's retraining job) opens the child's log inside the run folder before
# the child starts: a log is not a result, so it does not make a folder "in use".
LOG_FILES = ("*.log",)


def output_in_use(path: str | os.PathLike[str], ignore: Sequence[str] = ()) -> bool:
    """Whether writing ``path`` would replace something: a non-empty file or folder, or a link.

    An empty file or an empty folder holds nothing to lose; a symlink (even a dangling one)
    counts as in use, since writing through it would land somewhere else. In a folder,
    plain files whose names match a pattern in ``ignore`` (e.g. ``*.log``) do not count.
    """
    path = Path(path)
    if path.is_symlink():
        return True
    if path.is_dir():
        with os.scandir(path) as entries:
            return any(
                not (
                    entry.is_file(follow_symlinks=False)
                    and any(fnmatch.fnmatch(entry.name, pattern) for pattern in ignore)
                )
                for entry in entries
            )
    if path.exists():
        return not path.is_file() or path.stat().st_size > 0
    return False


def refuse_existing_output(
    path: str | os.PathLike[str] | None,
    force: bool,
    what: str,
    option: str = "--out",
    alternative: str = "",
    ignore: Sequence[str] = (),
) -> None:
    """Raise :class:`InvalidInputError` if ``path`` holds something and ``force`` is false.

    ``what`` says what the output is ("run folder", "splits.json"); ``option`` names the
    command-line option that chose it; ``alternative`` (e.g. "pass --resume to continue it")
    is offered before ``--force``; ``ignore`` is passed to :func:`output_in_use`. A ``None``
    path (an option not given) is always fine.
    """
    if path is None or force or not output_in_use(path, ignore):
        return
    choices = (
        f"choose another {option}, {alternative}," if alternative else f"choose another {option}"
    )
    raise InvalidInputError(f"refusing to overwrite {path} ({what}): {choices} or pass --force")
