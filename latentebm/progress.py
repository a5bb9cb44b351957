"""Progress of a long phase as occasional log lines (the CLI shows the toolkit's log lines).

Contract: :class:`ProgressLines` logs ``LABEL: DONE of TOTAL UNIT (P %)`` at INFO level at most
once per ``every_seconds`` while a phase runs, nothing for a phase that ends sooner, and one
closing line with the elapsed time if it logged anything. Lines, not a bar: they reach a log
file or a pipe as they do a terminal, so no step of a command is silent for longer than that.

Progress within one item of a bar (one batch of an evaluation, whose AIS path alone can take a
minute): a long inner loop calls :func:`report_within` with its step count, and whoever shows the
bar listens with :func:`reporting_within`; with nobody listening the call does nothing, so the
loops report unconditionally.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

PROGRESS_SECONDS = 2.0
"""Longest silence of a phase that reports its progress."""


_LISTENER = threading.local()


@contextmanager
def reporting_within(callback: Callable[[int, int], None]) -> Iterator[None]:
    """While the block runs, :func:`report_within` calls in this thread go to ``callback(done,
    total)`` (the previous listener is restored after it)."""
    previous = getattr(_LISTENER, "callback", None)
    _LISTENER.callback = callback
    try:
        yield
    finally:
        _LISTENER.callback = previous


@contextmanager
def logged_within(
    logger: logging.Logger, label: str, every_seconds: float | None = None
) -> Iterator[None]:
    """While the block runs, the inner loops' reports become INFO lines ``LABEL: step D of T``,
    at most one per ``every_seconds`` (for a phase with no bar of its own: ``log Z`` by AIS, a
    long prior chain)."""
    last = [time.perf_counter()]
    every = PROGRESS_SECONDS if every_seconds is None else every_seconds

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every:
            logger.info("%s: step %d of %d", label, done + 1, total)
            last[0] = now

    with reporting_within(report):
        yield


def report_within(done: int, total: int) -> None:
    """An inner loop's progress: ``done`` of ``total`` steps (nothing if nobody listens)."""
    callback = getattr(_LISTENER, "callback", None)
    if callback is not None:
        callback(done, total)


class ProgressLines:
    """``with ProgressLines(logger, "canonical SMILES", 176074, "molecules") as p: p.update(n)``.

    Args:
        logger: where the lines go (INFO).
        label: what the phase does.
        total: units of work in all.
        unit: their name.
        every_seconds: the longest silence.
    """

    def __init__(
        self,
        logger: logging.Logger,
        label: str,
        total: int,
        unit: str,
        every_seconds: float = PROGRESS_SECONDS,
    ) -> None:
        self.logger, self.label, self.total, self.unit = logger, label, total, unit
        self.every = every_seconds
        self.done = 0
        self.started = self.last = time.perf_counter()
        self.said = False

    def update(self, n: int) -> None:
        """``n`` more units are done; a line if the last one is ``every_seconds`` old."""
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every and self.done < self.total:
            share = 100.0 * self.done / max(self.total, 1)
            self.logger.info(
                "%s: %s of %s %s (%.0f %%)",
                self.label,
                f"{self.done:,}",
                f"{self.total:,}",
                self.unit,
                share,
            )
            self.last, self.said = now, True

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.said and exc_type is None:
            seconds = time.perf_counter() - self.started
            self.logger.info(
                "%s: %s %s done in %.0f s", self.label, f"{self.done:,}", self.unit, seconds
            )
