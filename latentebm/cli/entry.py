"""The entry point :func:`main`: parse the command line, run the command, and turn every user
error into one line on stderr (:func:`one_line`) with a non-zero exit status; the toolkit's log
records go to stderr as plain lines.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from latentebm.cli.parser import build_parser
from latentebm.launch import is_main_process


class _StderrLines(logging.Handler):
    """The toolkit's log records (``latentebm.*``, the tasks included) as plain lines on the
    ``sys.stderr`` of the moment (so that a run's console log, which replaces it, keeps them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - a log line must never stop a command
            self.handleError(record)


def _show_toolkit_logs() -> None:
    """INFO and above of the ``latentebm`` loggers on stderr: what a task is loading, building
    or caching is said, never silent (once per process; under torchrun on the first process
    only). A program that configured logging itself (handlers on the root logger) keeps its
    own setup: nothing is added then, and records always propagate."""
    if logging.getLogger().handlers or not is_main_process():
        return
    log = logging.getLogger("latentebm")
    if not any(isinstance(h, _StderrLines) for h in log.handlers):
        log.addHandler(_StderrLines())
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with a command's ``key=value`` overrides allowed after its options too
    (``latentebm train ptb --processes 2 trainer.max_steps=10``: argparse alone would have
    ended the overrides at the option)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = getattr(args, "overrides", None)
    if extra and (overrides is None or any(_not_an_override(item) for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*overrides, *extra]
    return args


def _not_an_override(item: str) -> bool:
    return item.startswith("-") or ("=" not in item and not item.startswith("~"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and exit non-zero (LATENTEBM_DEBUG=1: traceback)."""
    from latentebm.config import RecipeError
    from latentebm.errors import (
        CheckpointError,
        Interrupted,
        MissingDependencyError,
        TrainingError,
    )

    args = _parse(argv)
    _show_toolkit_logs()
    try:
        return int(args.func(args))
    except KeyboardInterrupt as interrupt:
        _unwind(interrupt)
        if is_main_process():
            print("latentebm: interrupted", file=sys.stderr)
        return 130
    except Interrupted as error:
        _unwind(error)
        if is_main_process():  # data-parallel: every rank stopped; one says so
            print(f"latentebm: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError as error:
        if not _stdout_closed():  # a pipe of something else broke: a real failure
            print(f"latentebm: error: {one_line(str(error))}", file=sys.stderr)
            return 2
        # the reader of stdout went away (`latentebm cat x | head`): stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it
    except (
        RecipeError,
        TrainingError,
        CheckpointError,
        MissingDependencyError,
        OSError,
        ValueError,
    ) as error:
        if os.environ.get("LATENTEBM_DEBUG"):
            raise
        print(f"latentebm: error: {one_line(str(error))}", file=sys.stderr)
        return 2


def _unwind(error: BaseException) -> None:
    """Let what the interrupted command still holds finish now, before the last line is printed.

    A generator suspended mid-loop (a progress bar over batches, say) is referenced only by the
    frames of ``error``'s traceback (and of the exceptions it was raised from or while
    handling); left alone it is closed after ``main`` returns, and a progress bar would then
    draw its last state below ``latentebm: interrupted``. Clearing those frames (the
    still-running ones refuse, harmlessly) and collecting cycles closes such generators here, so
    the interruption line is the last one on stderr. A second Ctrl-C meanwhile, or a closed
    stderr, only cuts this short."""
    import gc
    import traceback

    with contextlib.suppress(KeyboardInterrupt, OSError, ValueError):
        seen: set[int] = set()
        pending: list[BaseException | None] = [error]
        while pending:
            current = pending.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            traceback.clear_frames(current.__traceback__)
            pending += [current.__cause__, current.__context__]
        gc.collect()
        sys.stderr.flush()


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (``poll`` reports an error on it)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):  # no file descriptor, or no poll here
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined with ``"; "``, runs of blanks made one (the
    CLI's contract is one error line, whatever a library's exception text looks like)."""
    parts = [" ".join(line.split()) for line in message.splitlines()]
    return "; ".join(part for part in parts if part) or "unknown error"
