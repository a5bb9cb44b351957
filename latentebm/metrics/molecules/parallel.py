"""Parsing SMILES and running RDKit work in worker processes: :func:`get_mol`,
:func:`canonicalize`, :func:`valid_canonical`, and :class:`Runner`, which maps a chunk function
here or in a pool of worker processes (which leave Ctrl-C to the parent) with progress lines.

Contract: a function handed to :meth:`Runner.map` with ``n_jobs > 1`` is defined at module level
of an importable module (the workers import it by name). Workers start with
:data:`MP_START_METHOD` (read here: set ``latentebm.metrics.molecules.parallel.MP_START_METHOD``
to override).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from latentebm.processes import caller_script_hidden, interrupts_deferred
from latentebm.progress import ProgressLines

logger = logging.getLogger("latentebm.metrics.molecules")  # the package's name, kept

MP_START_METHOD = (
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)
"""Start method of the worker processes (set to ``"spawn"`` or ``"fork"`` to override)."""
_CHUNK = 1000
_T = TypeVar("_T")
_R = TypeVar("_R")


@contextmanager
def quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's C++ log (parse errors) inside the block."""
    from rdkit import rdBase

    blocker = rdBase.BlockLogs()
    try:
        yield
    finally:
        del blocker


def get_mol(smiles: str) -> Any:
    """RDKit molecule of ``smiles``, or ``None`` if it is empty, does not parse or sanitise.

    As MOSES's ``get_mol``. Call inside :func:`quiet_rdkit` to keep RDKit's log quiet.
    """
    from rdkit import Chem

    if not isinstance(smiles, str) or len(smiles) == 0:
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # noqa: BLE001 - any sanitisation error means invalid
        return None
    return mol


def _canonical_chunk(smiles: Sequence[str]) -> list[str | None]:
    from rdkit import Chem

    out: list[str | None] = []
    with quiet_rdkit():
        for s in smiles:
            mol = get_mol(s)
            out.append(None if mol is None else Chem.MolToSmiles(mol))
    return out


def split_chunks(items: Sequence[_T], n_jobs: int, size: int = _CHUNK) -> list[Sequence[_T]]:
    """``items`` in chunks of at most ``size`` (with ``n_jobs > 1``: at least 4 per worker)."""
    if n_jobs <= 1:  # chunks in this process too, so that progress can be said (ProgressLines)
        return [items[i : i + size] for i in range(0, len(items), size)]
    size = max(1, min(size, math.ceil(len(items) / (4 * n_jobs))))
    return [items[i : i + size] for i in range(0, len(items), size)]


class Runner:
    """Maps a chunk function in this process (``n_jobs <= 1``) or in a pool of spawned ones.

    The pool starts on first use and is reused until :meth:`close`. Workers start with
    :data:`MP_START_METHOD`: ``forkserver`` (where available) forks them from a clean server
    process that has imported this package once, so they are cheap to start and safe next to
    torch's threads; ``spawn`` elsewhere.
    """

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = max(1, int(n_jobs))
        self._pool: Executor | None = None

    def map(
        self,
        func: Callable[[Any], _R],
        items: Sequence[Any],
        *,
        label: str = "",
        sizes: Sequence[int] | None = None,
    ) -> list[_R]:
        """``[func(item) for item in items]``, in order, here or in the worker processes; a
        phase longer than a few seconds says how far it is (``label``: what it does, ``sizes``:
        molecules per item; :class:`~latentebm.progress.ProgressLines`)."""
        sizes = list(sizes) if sizes is not None else [1] * len(items)
        progress = ProgressLines(logger, label or "molecules", sum(sizes), "molecules")
        with progress:
            if self.n_jobs <= 1 or len(items) <= 1:
                out = []
                for item, size in zip(items, sizes, strict=True):
                    out.append(func(item))
                    progress.update(size)
                return out
            if self._pool is None:
                ctx = multiprocessing.get_context(MP_START_METHOD)
                if MP_START_METHOD == "forkserver":
                    ctx.set_forkserver_preload(["latentebm._forkserver_preload"])
                self._pool = ProcessPoolExecutor(
                    max_workers=self.n_jobs, mp_context=ctx, initializer=_worker_ignores_ctrl_c
                )
            # workers start while the chunks are submitted: all of them, or none, before Ctrl-C
            with caller_script_hidden(), interrupts_deferred():
                results = self._pool.map(func, items)
            out = []
            for result, size in zip(results, sizes, strict=True):
                out.append(result)
                progress.update(size)
            return out

    def close(self, abort: bool = False) -> None:
        """Shut the pool down after all submitted chunks (default), or at once (``abort``:
        Ctrl-C or an error): the workers are stopped, the queued chunks cancelled."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if abort:
            for worker in list((getattr(pool, "_processes", None) or {}).values()):
                if worker.is_alive():
                    worker.terminate()
        pool.shutdown(wait=True, cancel_futures=abort)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(abort=exc_type is not None)


def _worker_ignores_ctrl_c() -> None:
    """A pool worker leaves Ctrl-C to the parent, which stops the pool (:meth:`Runner.close`):
    a terminal's Ctrl-C reaches the whole process group, and a worker interrupted while it
    waits for work would print a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextmanager
def runner_for(n_jobs: int | Runner) -> Iterator[Runner]:
    """``n_jobs`` itself if it is a runner (its owner closes it), else a new runner closed on
    exit (at once on an error or Ctrl-C: :meth:`Runner.close`)."""
    if isinstance(n_jobs, Runner):
        yield n_jobs
        return
    with Runner(n_jobs) as runner:
        yield runner


def canonicalize(smiles: Sequence[str], n_jobs: int | Runner = 1) -> list[str | None]:
    """Canonical SMILES (RDKit ``MolToSmiles`` defaults) of each string, ``None`` if invalid."""
    with runner_for(n_jobs) as runner:
        chunks = split_chunks(list(smiles), runner.n_jobs, 4 * _CHUNK)
        sizes = [len(c) for c in chunks]
        parts = runner.map(_canonical_chunk, chunks, label="canonical SMILES", sizes=sizes)
    return [s for part in parts for s in part]


def valid_canonical(smiles: Sequence[str], n_jobs: int | Runner = 1) -> list[str]:
    """Canonical SMILES of the valid strings, in order, duplicates kept (MOSES's
    ``remove_invalid(gen, canonize=True)``)."""
    return [s for s in canonicalize(smiles, n_jobs) if s is not None]
