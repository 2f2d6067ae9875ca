"""Progress for long jobs: a live tqdm bar on a terminal, a few plain lines in a log file.

tqdm redraws its bar with carriage returns. In a terminal that is what a user wants; in a
log file (CI, ``nohup``, the retraining dialog's child logs) every redraw piles onto one
"line" of tens of kilobytes. :func:`progress_bar` therefore hands out tqdm only when the
stream is a terminal, and otherwise a :class:`LineProgress` that writes one readable line
at most every ``interval_s`` seconds plus a closing summary.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

LOG_INTERVAL_S = 30.0


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class LineProgress:
    """The part of tqdm's interface painmon uses, written as occasional whole lines.

    ``update``, ``set_postfix``, ``close``, iteration and ``with`` behave as in tqdm.
    A line is written when ``interval_s`` has passed since the last one; ``close`` writes a
    summary when ``leave`` is true (the default) and at least one item was counted.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        leave: bool = True,
        stream: IO[str] | None = None,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.leave = leave
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = float(interval_s)
        self.clock = clock
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.lines_written = 0
        self._t0 = clock()
        self._last_line = self._t0
        self._closed = False

    # -- tqdm's interface -------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = self.clock()
        if now - self._last_line >= self.interval_s:
            self._write(self.status_line(now))
            self._last_line = now

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.leave and self.n > 0:
            self._write(self.status_line(self.clock(), done=True))

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the line ----------------------------------------------------------------------
    def status_line(self, now: float, done: bool = False) -> str:
        elapsed = max(0.0, now - self._t0)
        rate = self.n / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            count = f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f} %)"
        else:
            count = f"{self.n} {self.unit}"
        parts = [f"{head}{count}", f"{'in' if done else 'after'} {_fmt_seconds(elapsed)}"]
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and not done and self.n < self.total:
                parts.append(f"about {_fmt_seconds((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(" ".join(f"{k}={v}" for k, v in self.postfix.items()))
        return ", ".join(parts)

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full log must not stop the job
            return
        self.lines_written += 1


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    stream: IO[str] | None = None,
    interval_s: float = LOG_INTERVAL_S,
) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, nothing when disabled.

    Disabled: a silent tqdm (iterating it still yields every item).
    """
    stream = stream if stream is not None else sys.stderr
    if enabled and not _is_terminal(stream):
        return LineProgress(
            iterable, total=total, desc=desc, unit=unit, leave=leave, stream=stream,
            interval_s=interval_s,
        )  # fmt: skip
    from tqdm import tqdm

    return tqdm(
        iterable, total=total, desc=desc, unit=unit, leave=leave, disable=not enabled,
        file=stream,
    )  # fmt: skip
