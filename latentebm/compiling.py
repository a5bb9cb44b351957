"""``torch.compile`` for the Langevin chains' log densities (``model.compile``).

Almost all of a learning iteration is the chains' gradient evaluations (eq. 9 of Pang, Han,
Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model":
``grad_z log p_beta(x | z) + grad_z log p_alpha(z)``), so that is what gets compiled: the
posterior target ``log p_beta(x | z) + log p_alpha(z)`` and the prior's ``log p_alpha(z)``. The
decoder's weight update keeps the eager path. Shapes are dynamic (sentences come in buckets of
different lengths), and Dynamo is allowed to trace ``nn.LSTM`` (it refuses by default and would
break the graph there).

Modes are ``torch.compile``'s: ``default``, ``reduce-overhead`` (CUDA graphs on a GPU: the
fixed-shape chain step replayed without launch overhead), ``max-autotune``. The mathematics is
unchanged; ``tests/test_compiling.py`` checks compiled chains against eager ones. On the 2-core
CPU of ``docs/RESULTS.md`` the compiled posterior step is slower than eager (the LSTM is traced
into per-time-step kernels instead of oneDNN's fused RNN) and compiling takes about a minute:
the flag is for GPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import torch

CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")

F = TypeVar("F", bound=Callable[..., torch.Tensor])


def compile_log_density(fn: F, mode: CompileMode) -> F:
    """``torch.compile(fn, mode=mode, dynamic=True)``, traced with ``nn.LSTM`` allowed.

    The returned function is called like ``fn``; the first call (and each new shape family)
    compiles.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    compiled = torch.compile(fn, mode=mode, dynamic=True)

    def call(*args: torch.Tensor) -> torch.Tensor:
        with torch._dynamo.config.patch(allow_rnn=True):
            return compiled(*args)

    return call  # type: ignore[return-value]
