"""Start data-parallel training processes on this machine: ``latentebm train --processes N``.

What ``torchrun --standalone --nproc_per_node N`` does for one machine, without its agent in
the middle: :func:`run_processes` starts ``N`` copies of a command with the environment that
:func:`latentebm.distributed.init_distributed` reads (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``), ``OMP_NUM_THREADS`` threads each, and waits
for them.

Contract:

* **A Ctrl-C at the terminal reaches every process once.** Each process runs in a process
  group of its own, so the terminal's SIGINT reaches this process alone, which passes it on to
  each of them: every process then finishes its step, the processes agree on the stop
  (:func:`latentebm.distributed.max_over_ranks`) and the main one saves a checkpoint. A second
  Ctrl-C is passed on too (the trainer then stops at once). SIGTERM is passed on; SIGHUP (the
  terminal closed) as SIGTERM; Ctrl-Z (SIGTSTP) stops the processes too and SIGCONT continues
  them. A signal that is ignored when the launcher starts (``nohup``: SIGHUP) stays ignored.
  Signals that arrive while the processes start are held until all of them exist. Tools that
  signal every process of a job themselves (systemd, SLURM) deliver SIGTERM twice; the trainer
  counts a second SIGTERM within 2 s as the same request. Should this process die, the
  processes get SIGTERM from the kernel (Linux ``PR_SET_PDEATHSIG``): they save and stop at the
  end of their step, unless one waits in a collective for a peer that is gone (it then waits
  for gloo's timeout).
* **One failure ends them all.** When a process exits with an error, the others get
  ``grace_seconds`` to end by themselves (an error the trainer sees on every rank ends every
  rank) and are then killed (a rank waiting in a collective for a dead peer would otherwise wait
  for gloo's 30-minute timeout).
* **The exit status** is the first non-zero status of a process (a signal ``s`` as ``128 + s``),
  else 0.
* **The process group's store is the launcher's.** The launcher serves the ``TCPStore`` that
  the processes meet at, on a port the system gives it when it binds, before any process
  starts, and holds it until they end; the processes join as its clients
  (``TORCHELASTIC_USE_AGENT_STORE``, as under torchrun's agent). No port is chosen first and
  bound later, so no other program can take it in between. Like rank 0's store under plain
  ``torchrun``, the server listens on every interface of this machine, and it keeps its keys
  for the job's lifetime: a process initialises its process group once (a second
  ``init_process_group`` after ``destroy_process_group`` would meet the first one's keys).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1
FORWARDED = {
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGTSTP", "SIGCONT")
    if hasattr(signal, name)  # Windows has only the first two (and no --processes)
}
"""The signals the launcher passes on to its processes (SIGHUP as SIGTERM, SIGTSTP as SIGSTOP)."""


LAUNCHED_ENV = "LATENTEBM_LAUNCHED"
"""Set in the processes that :func:`run_processes` starts (the launcher spoke for them already)."""


def is_main_process(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process speaks for its job: not one of several data-parallel processes, or
    their rank 0 (``RANK`` unset, empty or 0: what torchrun and :func:`run_processes` set)."""
    rank = (os.environ if environ is None else environ).get("RANK", "0").strip()
    return rank in ("", "0")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_per_process(processes: int, environ: Mapping[str, str]) -> int:
    """``OMP_NUM_THREADS`` if the user set it, else the usable cores shared out (at least 1)."""
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, usable_cores() // processes)


STORE_HOST = "127.0.0.1"


def serve_store(processes: int) -> Any:
    """A ``torch.distributed.TCPStore`` server for ``processes`` clients, reached at
    ``STORE_HOST``, on a port that the system picks as it binds (read it from ``.port``). It
    serves from a thread of its own, which keeps the signal mask of the thread that created it."""
    from datetime import timedelta

    from torch.distributed import TCPStore  # torch only here: the launcher starts fast

    return TCPStore(
        STORE_HOST,
        0,
        world_size=processes,
        is_master=True,
        timeout=timedelta(minutes=30),
        wait_for_workers=False,
    )


def worker_environment(
    base: Mapping[str, str], *, rank: int, processes: int, port: int, threads: int
) -> dict[str, str]:
    """The environment of process ``rank`` of ``processes`` (module docstring)."""
    env = dict(base)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(processes),
        LOCAL_WORLD_SIZE=str(processes),
        GROUP_RANK="0",
        MASTER_ADDR=STORE_HOST,
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",  # every rank a client of the launcher's store
        OMP_NUM_THREADS=str(threads),
    )
    env[LAUNCHED_ENV] = "1"
    return env


def _child_setup(prctl: Callable[..., int] | None, mask: set[signal.Signals]) -> Callable[[], None]:
    """What each process runs between fork and exec: its own process group, the caller's signal
    mask again (the launcher held the forwarded signals while starting it; one that reached the
    child in that window runs the launcher's handlers there, which do nothing outside the
    launcher), and (Linux) SIGTERM when the launcher dies. ``prctl`` is looked up before the
    fork: no library is loaded in the child."""

    def setup() -> None:  # pragma: no cover - runs in the child
        os.setpgid(0, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def _find_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_processes(
    command: Sequence[str],
    processes: int,
    *,
    threads: int,
    environ: Mapping[str, str] | None = None,
    grace_seconds: float = GRACE_SECONDS,
) -> int:
    """Run ``processes`` copies of ``command`` as one data-parallel job; their exit status."""
    if processes < 2:
        raise ValueError(f"processes must be >= 2, got {processes}")
    if not hasattr(signal, "pthread_sigmask") or not hasattr(os, "setpgid"):
        raise OSError("--processes needs a POSIX system (Linux, macOS); use torchrun here")
    base = dict(os.environ if environ is None else environ)
    store: Any = None
    children: list[subprocess.Popen[bytes]] = []
    owner = os.getpid()  # the handlers act in the launcher only, not in a child before exec

    def pass_on(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            return
        sent = signal.SIGTERM if signum == signal.SIGHUP else signum  # SIGHUP: terminal closed
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(sent)

    def suspend(signum: int, frame: FrameType | None) -> None:  # Ctrl-Z: the whole job stops
        if os.getpid() != owner:
            return
        pass_on(signal.SIGSTOP, frame)
        os.kill(os.getpid(), signal.SIGSTOP)

    def resume(signum: int, frame: FrameType | None) -> None:
        pass_on(signal.SIGCONT, frame)

    handlers = {s: pass_on for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    handlers.update({signal.SIGTSTP: suspend, signal.SIGCONT: resume})
    # Held from before the handlers are installed until every process exists, so that none is
    # signalled before all exist (a worker that missed the signal would wait for the stopped
    # ones) and none is lost; passed on after. Two layers: this thread's mask, and, for a
    # signal that reaches another thread of this process (one started before the mask, e.g. a
    # BLAS pool of an earlier torch import), a queue that the handlers fill while starting.
    queued: list[int] = []
    starting = [True]

    def held(handler: Callable[[int, FrameType | None], None]) -> Callable[..., None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if starting[0] and os.getpid() == owner:
                queued.append(signum)
            else:
                handler(signum, frame)

        return on_signal

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    previous = {
        s: signal.signal(s, held(handler))
        for s, handler in handlers.items()
        if signal.getsignal(s) is not signal.SIG_IGN  # nohup, a background job: stays ignored
    }
    setup = _child_setup(_find_prctl(), mask)
    try:
        try:
            # the store's thread, created here, keeps the forwarded signals masked for good
            store = serve_store(processes)
            for rank in range(processes):
                env = worker_environment(
                    base, rank=rank, processes=processes, port=store.port, threads=threads
                )
                children.append(subprocess.Popen(list(command), env=env, preexec_fn=setup))
        finally:
            starting[0] = False
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum in queued:
            handlers[signal.Signals(signum)](signum, None)
        return _wait(children, grace_seconds)
    finally:
        for child in children:  # only after an error of our own: never leave one running
            if child.poll() is None:
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        del store  # the server stops with its last reference, after every process ended


def _wait(children: list[subprocess.Popen[bytes]], grace_seconds: float) -> int:
    first_error = 0
    failed_at: float | None = None
    while True:
        running = [c for c in children if c.poll() is None]
        for child in children:
            code = child.returncode
            if code not in (None, 0) and not first_error:
                first_error = _status(code)
                failed_at = time.monotonic()
        if not running:
            return first_error
        if failed_at is not None and time.monotonic() - failed_at > grace_seconds:
            for child in running:
                child.kill()
            for child in running:
                child.wait()
            return first_error
        time.sleep(0.1)
