"""Short-run Langevin dynamics over a latent vector (eq. 9 of Pang, Han, Nijkamp, Zhu and Wu
(2020), "Learning Latent Space Energy-Based Prior Model").

Two ways of writing one step are common, and they are the same chain (docs/conventions.md):

* Pang et al. eq. 9: ``z <- z + s * grad log pi(z) + sqrt(2 s) * eps``
* the authors' code: ``z <- z - (a^2 / 2) * grad E(z) + a * eps``, ``E = -log pi``

with ``s = a^2 / 2``. Table 5's values (s0 = 0.4, s1 = 0.1) are the code's noise scale ``a``,
so ``step_size`` here is ``a``: the standard deviation of the noise added per step; the drift is
``step_size^2 / 2`` times the gradient of the log density. With Table 5's ``a0 = 0.4`` the prior
chain has ``s = 0.08`` in eq. 9's notation; the posterior chain (``a1 = 0.1``) has ``s = 0.005``.

The sampler never computes or accumulates parameter gradients: it differentiates with
``torch.autograd.grad`` with respect to ``z`` alone, and callers freeze the parameters of the
modules behind the density (see :func:`frozen`) so autograd does not even record them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latentebm.progress import report_within

LogDensity = Callable[[Tensor], Tensor]
"""A function ``z (B, d) -> log pi(z) (B,)``, unnormalised."""


@dataclass
class LangevinResult:
    """The end of a chain and what happened along it.

    Attributes:
        z: final states ``z_K``, shape ``(B, d)``, detached.
        log_density: mean over the batch of ``log pi(z_k)`` at the start of each step,
            shape ``(K,)`` (empty when ``K = 0``).
        grad_norm: mean over the batch of ``||grad log pi(z_k)||``, shape ``(K,)``: the ``r_t``
            of Nijkamp, Hill, Han, Zhu and Wu (2020), "On the Anatomy of MCMC-Based Maximum
            Likelihood Learning of Energy-Based Models", is its mean.
        trajectory: states ``z_k`` at the steps asked for in ``record_steps``, in order.
    """

    z: Tensor
    log_density: Tensor
    grad_norm: Tensor
    trajectory: dict[int, Tensor]

    @property
    def mean_grad_norm(self) -> float:
        """Mean gradient norm along the chain (0.0 for an empty chain)."""
        return float(self.grad_norm.mean()) if self.grad_norm.numel() else 0.0


class LangevinSampler:
    """``n_steps`` steps of ``z <- z + (a^2/2) grad log pi(z) + a * eps`` (eq. 9 with s = a^2/2).

    Args:
        n_steps: number of steps K (K0 = 60 for the prior, K1 = 20 for the posterior in Table 5).
        step_size: the noise scale ``a`` of one step (Table 5's s0 = 0.4, s1 = 0.1).
        noise: add the Gaussian noise term; without it the chain is gradient ascent on
            ``log pi`` with learning rate ``a^2/2``.
        clamp: if set, clamp every coordinate of z to ``[-clamp, clamp]`` after each step.
        step_schedule: per-step noise scales ``a_0, a_1, ...`` replacing ``step_size`` (step k
            uses ``a_k``; steps past the end of the list use its last value). The authors' text
            code (Pang et al. 2020, public repository of the text experiments) runs its posterior
            chain with ``0.8, 0.7, 0.6, 0.5, 0.2, 0.2, 0.1, 0.1, 0.05`` and then 0.05.
        noise_factor: multiply the noise term by this: ``z <- z + (a^2/2) grad + T a eps``.
            1 is Langevin dynamics; ``T < 1`` is a colder chain whose small-step limit samples
            ``pi^(1/T^2)`` (the same text code uses T = 0.05, raised to 0.2 after 15 epochs).
    """

    def __init__(
        self,
        n_steps: int,
        step_size: float,
        noise: bool = True,
        clamp: float | None = None,
        *,
        step_schedule: Sequence[float] | None = None,
        noise_factor: float = 1.0,
    ) -> None:
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        if step_size <= 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if clamp is not None and clamp <= 0:
            raise ValueError(f"clamp must be > 0, got {clamp}")
        if step_schedule is not None and (
            len(step_schedule) == 0 or any(a <= 0 for a in step_schedule)
        ):
            raise ValueError(
                f"step_schedule must be a non-empty list of values > 0, got {step_schedule}"
            )
        if noise_factor < 0:
            raise ValueError(f"noise_factor must be >= 0, got {noise_factor}")
        self.n_steps = int(n_steps)
        self.step_size = float(step_size)
        self.noise = bool(noise)
        self.clamp = clamp
        self.step_schedule = None if step_schedule is None else tuple(map(float, step_schedule))
        self.noise_factor = float(noise_factor)

    def step_size_at(self, k: int) -> float:
        """The noise scale ``a_k`` of step ``k`` (``step_size`` unless a schedule is set)."""
        if self.step_schedule is None:
            return self.step_size
        return self.step_schedule[min(k, len(self.step_schedule) - 1)]

    @property
    def drift(self) -> float:
        """``a^2 / 2``: the coefficient of the gradient (eq. 9's ``s``)."""
        return 0.5 * self.step_size**2

    def __repr__(self) -> str:
        extra = ""
        if self.step_schedule is not None:
            extra += f", step_schedule={list(self.step_schedule)}"
        if self.noise_factor != 1.0:
            extra += f", noise_factor={self.noise_factor}"
        return (
            f"{type(self).__name__}(n_steps={self.n_steps}, step_size={self.step_size}, "
            f"noise={self.noise}, clamp={self.clamp}{extra})"
        )

    def run(
        self,
        log_density: LogDensity,
        z_init: Tensor,
        *,
        generator: torch.Generator | None = None,
        n_steps: int | None = None,
        record_steps: tuple[int, ...] = (),
    ) -> LangevinResult:
        """Run the chain from ``z_init`` and return its end state and diagnostics.

        Args:
            log_density: ``z -> log pi(z)`` of shape ``(B,)``, unnormalised.
            z_init: initial states ``z_0``, shape ``(B, d)``.
            generator: the random generator for the noise (same device as ``z_init``).
            n_steps: override the number of steps for this call (e.g. longer chains at
                generation time, Pang et al. 2020, Fig. 4).
            record_steps: step indices k (0 = the initial state) whose states to keep.
        """
        steps = self.n_steps if n_steps is None else int(n_steps)
        z = z_init.detach().clone()
        log_densities: list[Tensor] = []
        grad_norms: list[Tensor] = []
        trajectory: dict[int, Tensor] = {}
        wanted = set(record_steps)
        drift, scale = self.drift, self.step_size * self.noise_factor
        for k in range(steps):
            report_within(k, steps)  # a long training step shows its chain on the bar
            if self.step_schedule is not None:
                a_k = self.step_size_at(k)
                drift, scale = 0.5 * a_k**2, a_k * self.noise_factor
            if k in wanted:
                trajectory[k] = z.clone()
            z.requires_grad_(True)
            with torch.enable_grad():
                value = log_density(z)
                (grad,) = torch.autograd.grad(value.sum(), z)
            z = z.detach()
            log_densities.append(value.detach().mean())
            grad_norms.append(grad.norm(dim=1).mean())
            z.add_(grad, alpha=drift)
            if self.noise:
                z.add_(
                    torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype),
                    alpha=scale,
                )
            if self.clamp is not None:
                z.clamp_(-self.clamp, self.clamp)
        if steps in wanted:
            trajectory[steps] = z.clone()
        empty = z.new_zeros(0)
        return LangevinResult(
            z=z,
            log_density=torch.stack(log_densities) if log_densities else empty,
            grad_norm=torch.stack(grad_norms) if grad_norms else empty,
            trajectory=trajectory,
        )


_window_ids = itertools.count(1)
_windows = threading.local()
"""Per thread: ``stack``, the open :func:`frozen` windows, innermost last."""


def _open_windows() -> list[int]:
    stack: list[int] | None = getattr(_windows, "stack", None)
    if stack is None:
        stack = _windows.stack = []
    return stack


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter of ``modules`` for the duration.

    Inside, autograd records no parameter of these modules, so a chain's backward passes
    reach ``z`` only: no weight-gradient work is done and no ``.grad`` is touched. The flags
    are restored on exit, also on error.

    Each entry opens a new *frozen window* (:func:`frozen_window`): a promise that the frozen
    parameters keep their values until it closes, which lets a module prepare its weights once
    per chain instead of once per step (the image generator's CPU path and the text decoder's
    input-gate cache do). Windows are per thread.
    """
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    window = next(_window_ids)
    _open_windows().append(window)
    try:
        yield
    finally:
        _open_windows().remove(window)
        for p in params:
            p.requires_grad_(True)


def frozen_window() -> int | None:
    """The identifier of the innermost open :func:`frozen` window (unique for the process's
    lifetime), or None outside every window."""
    stack = _open_windows()
    return stack[-1] if stack else None


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for ``module`` and every submodule; each one's own flag is restored on exit."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def gaussian_log_density(mean: Tensor, std: float) -> LogDensity:
    """``log N(z; mean, std^2 I)`` up to its constant: handy for tests and examples."""
    inv_var = 1.0 / std**2

    def log_density(z: Tensor) -> Tensor:
        return -0.5 * inv_var * (z - mean).pow(2).sum(dim=1)

    return log_density


def noise_scale_from_eq9(s: float) -> float:
    """Map eq. 9's step size ``s`` to this sampler's ``step_size`` ``a = sqrt(2 s)``."""
    return math.sqrt(2.0 * s)
