"""The data-space short-run Langevin chain ``M_theta`` of Nijkamp, Hill, Zhu and Wu (2019),
"Learning Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model" (eq. 4 and
eq. 5).

One step, in the code's convention of ``latentebm.langevin`` (``docs/conventions.md``)::

    x <- x + (a^2 / 2) * grad_x f(x) + a * eps,    eps ~ N(0, I)

which is their eq. 4 with ``Delta tau = a^2``: ``a`` (``step_size``) is the standard deviation
of the noise of one step and ``a^2 / 2`` the drift coefficient. With the energy scaling
``f = F / (a^2 / 2)`` of Nijkamp, Hill, Han, Zhu and Wu (2020), "On the Anatomy of MCMC-Based
Maximum Likelihood Learning of Energy-Based Models" (eq. 1A), the same step reads
``x <- x + grad_x F(x) + a * eps`` (eq. 2A), the update of the 2019 paper's code listing with
``a = 0.01``.

``latentebm.langevin.LangevinSampler`` runs the same step on latent vectors ``(B, d)``; this one
works on images ``(B, C, H, W)`` (per-image gradient norms over all pixels), can start from
the uniform noise of Nijkamp et al. 2019, and can keep the graph through the K steps so that the
chain is a differentiable K-layer residual network ``x = M_theta(z)`` (Section 3.4:
reconstruction by gradient descent on the initial noise ``z``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from latentebm.langevin import LangevinSampler
from latentebm.progress import report_within

__all__ = ["ChainResult", "NegativeEnergy", "ShortRunChain", "sample_initial"]

NegativeEnergy = Callable[[Tensor], Tensor]
"""A function ``x (B, C, H, W) -> f(x) (B,)``: the unnormalised log density of the chain."""


@dataclass
class ChainResult:
    """The end of a chain and its gradient norms.

    Attributes:
        x: final states ``x_K``, shape ``(B, C, H, W)`` (detached unless the chain ran with
            ``differentiable=True``).
        grad_norm: per step, the batch mean of the per-image norm ``||grad_x f(x_k)||_2``,
            shape ``(K,)``.
    """

    x: Tensor
    grad_norm: Tensor

    @property
    def mean_grad_norm(self) -> float:
        """Mean of ``grad_norm`` over the steps (0.0 for an empty chain)."""
        return float(self.grad_norm.mean()) if self.grad_norm.numel() else 0.0


def sample_initial(
    shape: tuple[int, ...],
    kind: str = "uniform",
    *,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw initial states ``z ~ p_0``: uniform on ``[-1, 1]`` (Nijkamp et al. 2019) or
    ``N(0, std^2 I)``."""
    if kind == "uniform":
        return torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2.0 - 1.0
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype) * std
    raise ValueError(f"unknown initial distribution {kind!r} (expected uniform or gaussian)")


class ShortRunChain(LangevinSampler):
    """``n_steps`` (K) steps of ``x <- x + (a^2/2) grad_x f(x) + a * eps`` on images.

    The latent sampler's settings and checks (:class:`latentebm.langevin.LangevinSampler`);
    :meth:`run` adds a per-call ``noise`` switch and a ``differentiable`` mode (the unrolled
    chain of the reconstruction in Section 3.4 of Nijkamp et al. 2019).

    Args:
        n_steps: K, the number of steps (Nijkamp et al. 2019: 100).
        step_size: ``a``, the noise scale of one step; the drift is ``a^2/2`` times the gradient.
        noise: add the noise term; without it the chain is gradient ascent on ``f`` (the
            ``u = 0`` chain of Nijkamp et al. 2019, Section 3.4).
        clamp: if set, clamp every pixel to ``[-clamp, clamp]`` after each step.
    """

    def run(
        self,
        neg_energy: NegativeEnergy,
        x_init: Tensor,
        *,
        generator: torch.Generator | None = None,
        n_steps: int | None = None,
        noise: bool | None = None,
        differentiable: bool = False,
    ) -> ChainResult:
        """Run the chain from ``x_init`` (``z`` in Section 3.4) and return ``x_K``.

        Args:
            neg_energy: ``x -> f(x)`` of shape ``(B,)``.
            x_init: initial states, shape ``(B, C, H, W)``.
            generator: random generator of the noise (same device as ``x_init``).
            n_steps: override K for this call.
            noise: override ``self.noise`` for this call.
            differentiable: keep the autograd graph through every step, so ``x_K`` can be
                differentiated with respect to ``x_init`` (which must then require grad) or
                anything ``neg_energy`` depends on. Otherwise each step is detached.
        """
        steps = self.n_steps if n_steps is None else int(n_steps)
        add_noise = self.noise if noise is None else bool(noise)
        if differentiable:
            x = x_init if x_init.requires_grad else x_init.detach().requires_grad_(True)
        else:
            x = x_init.detach().clone()
        grad_norms: list[Tensor] = []
        for k in range(steps):
            report_within(k, steps)  # diagnose's long chain says its step
            with torch.enable_grad():
                if not differentiable:
                    x.requires_grad_(True)
                value = neg_energy(x)
                (grad,) = torch.autograd.grad(value.sum(), x, create_graph=differentiable)
            grad_norms.append(grad.detach().flatten(1).norm(dim=1).mean())
            if differentiable:
                x = x + self.drift * grad
            else:
                x = x.detach()
                x.add_(grad, alpha=self.drift)
            if add_noise:
                eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + self.step_size * eps
            if self.clamp is not None:
                x = x.clamp(-self.clamp, self.clamp)
        empty = x_init.new_zeros(0)
        return ChainResult(
            x=x if differentiable else x.detach(),
            grad_norm=torch.stack(grad_norms) if grad_norms else empty,
        )
