"""``faces enroll``'s progress: a bar on a terminal, a plain line now and then anywhere else.

A bar redraws itself with carriage returns; written to a file or a pipe (a redirected stderr, a CI
log) that is a flood of lines, so there it gives way to one line every few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol, TextIO

from tqdm import tqdm

ProgressMode = Literal["auto", "bar", "lines", "none"]


class Progress(Protocol):
    def update(self, counts: dict[str, int]) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def update(self, counts: dict[str, int]) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar: for a terminal only (it redraws in place with carriage returns)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._bar = tqdm(total=total, unit="img", desc="enroll", file=stream)

    def update(self, counts: dict[str, int]) -> None:
        self._bar.update(1)
        self._bar.set_postfix(counts, refresh=False)

    def close(self) -> None:
        self._bar.close()


class LineProgress:
    """One plain line every ``interval_s`` and one at the end: for logs and redirected output."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total
        self._stream = stream
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._done = 0
        self._counts: dict[str, int] = {}

    def update(self, counts: dict[str, int]) -> None:
        self._done += 1
        self._counts = counts
        now = self._clock()
        if now - self._last_line >= self._interval_s:
            self._last_line = now
            self._write(now)

    def close(self) -> None:
        self._write(self._clock())

    def _write(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        left = (
            f", ~{(self._total - self._done) / rate:.0f} s left"
            if rate > 0 and self._done < self._total
            else ""
        )
        counts = ", ".join(f"{k} {v}" for k, v in self._counts.items())
        done = f"{self._done}/{self._total} files ({counts})"
        self._stream.write(f"enroll: {done} in {elapsed:.0f} s, {rate:.1f} files/s{left}\n")
        self._stream.flush()


def make_progress(mode: ProgressMode, total: int, stream: TextIO, interval_s: float) -> Progress:
    """``auto``: a bar when ``stream`` is a terminal, periodic lines when it is a file or a pipe."""
    if mode == "auto":
        mode = "bar" if stream.isatty() else "lines"
    if mode == "bar":
        return BarProgress(total, stream)
    if mode == "lines":
        return LineProgress(total, stream, interval_s)
    return NoProgress()
