"""Starting worker processes safely from any caller: with or without a main guard
(:func:`caller_script_hidden`), and with Ctrl-C at any moment (:func:`interrupts_deferred`)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def caller_script_hidden() -> Iterator[None]:
    """Start worker processes without re-running the caller's script in them.

    ``spawn`` and ``forkserver`` workers import the parent's ``__main__`` (from its
    ``__spec__`` or ``__file__``) before they run anything, so a script that calls a parallel
    function at top level, without ``if __name__ == "__main__":``, would start itself again in
    every worker (which then fails with ``BrokenProcessPool``). Workers that run only functions
    of importable modules need nothing from it, so both attributes are hidden while they start:
    create the pool (``multiprocessing.Pool``) or submit the tasks (``ProcessPoolExecutor``
    starts its workers on demand) inside this block. ``fork`` workers are unaffected.
    """
    main = sys.modules.get("__main__")
    names = ("__spec__", "__file__")
    saved = {n: main.__dict__[n] for n in names if main is not None and n in main.__dict__}
    try:
        if main is not None:
            main.__spec__ = None
            main.__dict__.pop("__file__", None)
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) that arrives inside the block until its end, then deliver it to the
    handler that was there before (``KeyboardInterrupt`` by default).

    For starting worker processes: an interrupt in the middle of a start would leave a worker
    that its pool does not know of yet, which then outlives the pool's shutdown and prints a
    traceback. An error inside the block after an interrupt arrived (a helper process that the
    same Ctrl-C stopped while it started: the forkserver, say) is raised as the interrupt. Only
    the main thread handles signals, so elsewhere this does nothing; nor does it where SIGINT
    is ignored (a shell's background job).
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # Ctrl-C means nothing here
    ):
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    # blocked in this thread as well: processes started here inherit the mask, so a terminal's
    # Ctrl-C (sent to the whole process group) cannot stop them half-started either
    masking = hasattr(signal, "pthread_sigmask")
    if masking:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    except Exception:
        pending = masking and signal.SIGINT in signal.sigpending()
        if received or pending:  # a helper process stopped by the same interrupt, say
            if pending:  # delivered to the recording handler, not raised a second time
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt from None
        raise
    finally:
        if masking:  # a pending interrupt reaches the recording handler here
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)
    if received:
        signal.raise_signal(signal.SIGINT)
