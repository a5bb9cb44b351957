"""Is a Langevin chain's step small enough for the energy it meets? The step index of an
unadjusted Langevin chain, read from the gradient norms the trainer logs.

Contract: pure arithmetic on logged numbers (no model, no torch); exact for an isotropic
Gaussian target at the chain's stationary state, a reading of the curvature otherwise.

The chain of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior
Model", eq. (8), is ``z <- z + (a^2 / 2) grad log pi(z) + a tau eps`` (``tau``: the noise
factor, 1 for the prior chain). On ``pi = N(0, v I)`` in ``d`` dimensions it is stable only for
``a^2 < 4 v`` and its stationary variance is ``tau^2 v / (1 - c)`` with ``c = a^2 / (4 v)``
(docs/conventions.md): it always samples wider than the target, by ``1 / (1 - c)``. There
``||grad log pi(z)|| = ||z|| / v``, so the *step index*

    rho = a ||grad log pi|| / (2 sqrt(d))

measured along the chain gives, at stationarity, ``rho^2 = c tau^2 / (1 - c)``: hence

* ``bound_fraction = c = rho^2 / (rho^2 + tau^2)``: the step as a share of the stability
  bound ``a^2 < 4 v`` for a Gaussian of the curvature the chain meets;
* ``variance_inflation = 1 / (1 - c) = 1 + (rho / tau)^2``: how much wider than that
  Gaussian (tempered by ``tau^2``) the chain samples.

Why it matters for learning: eq. (10) of the same paper moves ``f_alpha`` until the prior chain's
samples match the posterior's; a chain that samples too wide is answered by a sharper energy,
which the same step then samples wider still (the runaway of docs/RESULTS.md 12a and 12c, where
Table 5's ``a0 = 0.4`` was too large and ``a0 = 0.2`` was not). The trainer logs the mean of
``||grad log pi||`` over the chain's steps and the batch (``prior_grad_norm``), which includes
the chain's first steps from the reference, so the index read from it is an average over the
chain, not its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["WIDE_CHAIN_INFLATION", "StepIndex", "step_index"]

WIDE_CHAIN_INFLATION = 2.0
"""A chain whose ``variance_inflation`` reaches this (``rho >= tau``: at least twice the
variance of a Gaussian with the curvature it meets; its step at half the stability bound or
more) is reported as sampling too wide, with the advice to lower its step size."""


@dataclass(frozen=True)
class StepIndex:
    """The step index of a Langevin chain and what it implies for a Gaussian target.

    Attributes:
        rho: ``a ||grad log pi|| / (2 sqrt(d))``.
        bound_fraction: ``a^2 / (4 v)`` for the Gaussian ``N(0, v I)`` whose stationary chain
            has this ``rho``: ``rho^2 / (rho^2 + tau^2)``, in ``[0, 1)``.
        variance_inflation: the chain's stationary variance over the (tempered) target's,
            ``1 + (rho / tau)^2``.
    """

    rho: float
    bound_fraction: float
    variance_inflation: float

    @property
    def too_wide(self) -> bool:
        """``variance_inflation >= WIDE_CHAIN_INFLATION``."""
        return self.variance_inflation >= WIDE_CHAIN_INFLATION


def step_index(
    step_size: float, grad_norm: float, dim: int, noise_factor: float = 1.0
) -> StepIndex:
    """The step index of a chain with step ``a = step_size`` (noise ``a * noise_factor``) whose
    mean ``||grad log pi||`` along the chain was ``grad_norm`` in ``dim`` dimensions (module
    docstring).

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
    rho = step_size * grad_norm / (2.0 * math.sqrt(dim))
    ratio = (rho / noise_factor) ** 2
    return StepIndex(rho=rho, bound_fraction=ratio / (1.0 + ratio), variance_inflation=1.0 + ratio)
