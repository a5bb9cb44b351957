"""Worker processes that work from any caller, main guard or not (contract:
:func:`caller_script_hidden`)."""

from __future__ import annotations

import sys
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
