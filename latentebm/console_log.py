"""A run's console log: what the training process writes to stdout and stderr, also kept in
``RUN/console.log``.

:class:`ConsoleLog` wraps ``sys.stdout`` and ``sys.stderr`` while it is active: everything still
reaches the terminal unchanged, and every complete line is appended to the log file. A progress
bar redraws its line with carriage returns; the log keeps only the last state of each such
line, without terminal control sequences, so the file stays small and greppable. Each start
writes a header line with the time and the command line. Used by the main process of
:class:`latentebm.train.Trainer` once the run directory is known.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import IO, Any, TextIO

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""ANSI control sequences (colours, cursor moves of nested progress bars)."""


class _LineSink:
    """Complete lines of what is written, after carriage returns and control sequences."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.pending = ""

    def feed(self, text: str) -> None:
        self.pending += text
        if "\n" not in self.pending:
            if len(self.pending) > 65_536:  # a progress bar that never ends its line
                self.pending = self.pending.rsplit("\r", 1)[-1][-65_536:]
            return
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.handle.write(_CONTROL.sub("", line.rsplit("\r", 1)[-1]).rstrip() + "\n")
        self.handle.flush()

    def close(self) -> None:
        last = _CONTROL.sub("", self.pending.rsplit("\r", 1)[-1]).rstrip()
        if last:
            self.handle.write(last + "\n")
        self.pending = ""
        self.handle.close()


class _Tee:
    """A text stream that writes to ``stream`` and feeds ``sink``; everything else (``isatty``,
    ``fileno``, ``encoding``, ...) is the stream's own."""

    def __init__(self, stream: TextIO, sink: _LineSink) -> None:
        self._stream, self._sink = stream, sink

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._sink.feed(text)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ConsoleLog:
    """Copy stdout and stderr into ``path`` (appended) between :meth:`start` and :meth:`stop`.

    A failure to open or write the log never stops the caller: the log is then incomplete
    (opening fails: no log; a later write error: the copy stops, the terminal output goes on).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sink: _LineSink | None = None
        self._saved: tuple[TextIO, TextIO] | None = None

    def start(self) -> None:
        try:
            handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        except OSError:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        handle.write(f"===== {stamp}: {' '.join(sys.argv)}\n")
        self._sink = _SafeSink(handle)
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, self._sink)  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, self._sink)  # type: ignore[assignment]

    def note(self, text: str) -> None:
        """Append ``text`` as a line of the log only (not the terminal): e.g. why the run stopped,
        which the command line prints after the log has closed."""
        if self._sink is not None:
            line = "; ".join(" ".join(part.split()) for part in text.splitlines() if part.strip())
            self._sink.feed(("\n" if self._sink.pending else "") + line + "\n")

    def stop(self) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None


class _SafeSink(_LineSink):
    """A :class:`_LineSink` that goes quiet after the first write error (disk full)."""

    def feed(self, text: str) -> None:
        if self.handle.closed:
            return
        try:
            super().feed(text)
        except (OSError, ValueError):
            self.handle.close()

    def close(self) -> None:
        if self.handle.closed:
            return
        try:
            super().close()
        except (OSError, ValueError):
            self.handle.close()
