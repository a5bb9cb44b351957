"""Is a Langevin chain's step small enough for the energy it meets? The step index of an
unadjusted Langevin chain, read from the gradient norms the trainer logs.

Contract: pure arithmetic on logged numbers (no model, no torch); exact for an isotropic
Gaussian target at the chain's stationary state, a reading of the curvature otherwise.

The chain of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior
Model", eq. (8), is ``z <- z + (a^2 / 2) grad log pi(z) + a T eps`` (``T``: the noise factor,
1 for the prior chain). On ``pi = N(0, v I)`` in ``d`` dimensions a step is
``z <- (1 - 2c) z + a T eps`` with ``c = a^2 / (4 v)``: stable only for ``c < 1``, with the
stationary law ``N(0, T^2 v / (1 - c) I)`` (docs/conventions.md): the chain always samples
wider than the tempered target ``N(0, T^2 v I)``, by ``1 / (1 - c)``. There
``grad log pi(z) = -z / v``, so the *step index*

    rho^2 = a^2 E||grad log pi||^2 / (4 d)

equals ``c T^2 / (1 - c)`` at stationarity: hence

* ``bound_fraction = c = rho^2 / (rho^2 + T^2)``: ``a^2`` as a share of the stability bound
  ``4 v`` of a Gaussian with the curvature the chain meets;
* ``variance_inflation = 1 / (1 - c) = 1 + (rho / T)^2``: how much wider than that Gaussian
  (tempered by ``T^2``) the chain samples.

On an anisotropic Gaussian ``rho^2`` is the mean over directions of ``c_i T^2 / (1 - c_i)``;
for other energies it is a reading of the curvature the chain meets.

What is logged is the *mean norm* ``E||grad log pi||`` (``prior_grad_norm``: over the batch
and the chain's steps ``z_0 ... z_{K-1}``), not the root mean square the formula needs. On the
Gaussian above the norm is ``sqrt(E||grad||^2)`` times ``kappa_d = E chi_d / sqrt(d)`` (0.886 in
2 dimensions, 0.992 in 32), so :func:`step_index` divides by ``kappa_d``. The mean over the
chain's steps includes its first steps from the reference, so the index is an average over the
chain, not its end.

Why it matters for learning: eq. (10) of the same paper moves ``f_alpha`` until the prior
chain's samples match the posterior's; a chain that samples too wide is answered by a sharper
energy, which the same step then samples wider still: the runaway of docs/RESULTS.md 12a
(a ring of narrow modes under Table 5's ``a0 = 0.4``) and of the PTB runs of 12c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "WIDE_CHAIN_INFLATION",
    "StepIndex",
    "chi_mean_factor",
    "rms_step_size",
    "step_index",
    "too_wide_advice",
]

WIDE_CHAIN_INFLATION = 2.0
"""A chain whose ``variance_inflation`` reaches this (``rho >= T``: at least twice the variance
of the tempered Gaussian with the curvature it meets; ``a^2`` at half its stability bound
``4 v`` or more) is reported as sampling too wide, with the advice to lower its step size."""


@dataclass(frozen=True)
class StepIndex:
    """The step index of a Langevin chain and what it implies for a Gaussian target.

    Attributes:
        rho: ``a sqrt(E||grad log pi||^2) / (2 sqrt(d))``.
        bound_fraction: ``a^2 / (4 v)`` for the Gaussian ``N(0, v I)`` whose stationary chain
            has this ``rho``: ``rho^2 / (rho^2 + T^2)``, in ``[0, 1)``.
        variance_inflation: the chain's stationary variance over the (tempered) target's,
            ``1 + (rho / T)^2``.
    """

    rho: float
    bound_fraction: float
    variance_inflation: float

    @property
    def too_wide(self) -> bool:
        """``variance_inflation >= WIDE_CHAIN_INFLATION``."""
        return self.variance_inflation >= WIDE_CHAIN_INFLATION


def chi_mean_factor(dim: int) -> float:
    """``kappa_d = E chi_d / sqrt(d) = sqrt(2 / d) Gamma((d + 1) / 2) / Gamma(d / 2)``: the mean
    norm of an isotropic Gaussian vector over its root mean square norm (``kappa_2^2 = pi / 4``;
    ``1 - 1 / (4 d)`` to first order)."""
    return math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2)) * math.sqrt(2.0 / dim)


def rms_step_size(step_sizes: Sequence[float]) -> float:
    """The root mean square of a chain's per-step sizes ``a_k`` (its ``step_schedule`` over its
    K steps, or ``step_size`` repeated): the one step size the index reads a schedule as."""
    sizes = list(step_sizes)
    if not sizes:
        raise ValueError("rms_step_size needs at least one step size")
    return math.sqrt(sum(a * a for a in sizes) / len(sizes))


def step_index(
    step_size: float, grad_norm: float, dim: int, noise_factor: float = 1.0
) -> StepIndex:
    """The step index of a chain with step ``a = step_size`` (noise ``a * noise_factor``) whose
    *mean* ``||grad log pi||`` along the chain was ``grad_norm`` in ``dim`` dimensions, read as
    on an isotropic Gaussian (the root mean square is ``grad_norm / kappa_d``,
    :func:`chi_mean_factor`; module docstring).

    Raises:
        ValueError: a non-positive ``step_size``, ``dim`` or ``noise_factor``, or a negative or
            non-finite ``grad_norm``.
    """
    if not step_size > 0 or not noise_factor > 0 or dim < 1:
        raise ValueError(
            f"step_index needs step_size > 0, noise_factor > 0 and dim >= 1; got {step_size}, "
            f"{noise_factor}, {dim}"
        )
    if not math.isfinite(grad_norm) or grad_norm < 0:
        raise ValueError(f"step_index needs a finite grad_norm >= 0; got {grad_norm}")
    rms = grad_norm / chi_mean_factor(dim)
    rho = step_size * rms / (2.0 * math.sqrt(dim))
    ratio = (rho / noise_factor) ** 2
    return StepIndex(rho=rho, bound_fraction=ratio / (1.0 + ratio), variance_inflation=1.0 + ratio)


def too_wide_advice(index: StepIndex, step_size: float, *, scheduled: bool = False) -> str:
    """What to tell a user whose prior chain samples too wide (``index.too_wide``): the variance
    factor, what follows for learning, and the key to lower (``step_schedule`` when the chain
    has one, whose root mean square step is ``step_size``)."""
    key = "model.prior_chain.step_schedule" if scheduled else "model.prior_chain.step_size"
    return (
        f"the prior chain samples about {index.variance_inflation:.1f}x the variance of a "
        f"Gaussian with the curvature it meets (step index {index.rho:.2f}): eq. (10) then "
        "sharpens the energy and the chain falls further behind (watch energy_diff grow); "
        f"lower {key} (now {step_size:g}{' root mean square' if scheduled else ''}; halving "
        "it quarters a^2 / (4 v))"
    )
