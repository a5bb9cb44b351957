"""What the molecule metrics' forkserver imports before it forks any worker (internal).

The server is started while the parent holds SIGINT blocked (:func:`latentebm.processes.
interrupts_deferred`), so a Ctrl-C cannot kill it half-way through these imports; it inherits
that mask. Once they are done, the mask is lifted again here, a pending Ctrl-C discarded (the
parent has it), so that the server, and every later worker forked from it (the toolkit's or
anyone's), takes Ctrl-C as usual.
"""

from __future__ import annotations

import signal

import latentebm.metrics.molecules  # noqa: F401 - the preload itself

if hasattr(signal, "pthread_sigmask") and signal.SIGINT in signal.pthread_sigmask(
    signal.SIG_BLOCK, []
):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a pending one is dropped
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, previous)
