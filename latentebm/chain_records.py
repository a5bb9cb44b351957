"""Long chains and their records: where a long chain is recorded, and the summary of its
energy, log density and gradient norm (Nijkamp, Hill, Han, Zhu and Wu (2020), "On the Anatomy of
MCMC-Based Maximum Likelihood Learning of Energy-Based Models": running the prior chain far
past its training length ``K0`` shows whether ``p_alpha`` has a meaningful steady state).

A low-level helper of :mod:`latentebm.diagnostics` (the ``diagnose`` command),
:mod:`latentebm.image_tools` and :mod:`latentebm.shortrun.tools`; it imports none of them.
"""

from __future__ import annotations

from typing import Any

import torch


def chain_record_steps(n_steps: int, record_every: int) -> list[int]:
    """Steps ``0, record_every, 2 record_every, ...`` and ``n_steps``: where a long chain is
    recorded."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    return sorted(set(range(0, n_steps + 1, record_every)) | {n_steps})


def long_prior_chain(
    model: Any,
    n_chains: int = 64,
    n_steps: int = 2000,
    record_every: int = 10,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Energy and log density along a long prior chain (the long-run check of Nijkamp et al. 2020).

    Runs ``model.sample_prior(n_chains, n_steps=n_steps, record_steps=...)`` (the training
    sampler, far past its ``K0`` steps, from ``N(0, sigma^2 I)``) and evaluates, at every
    ``record_every``-th step and at the last, the mean over the chains of the energy
    ``f_alpha(z)`` (``model.prior.energy``) and of the unnormalised log density
    ``f_alpha(z) - ||z||^2 / (2 sigma^2)``. Sampling freezes the parameters and evaluation runs
    under ``torch.no_grad``: no parameter gradient is computed.

    Returns:
        ``steps``, ``energy`` and ``log_density`` (lists of equal length, step 0 = the
        initial state), ``energy_start`` / ``energy_end``, ``log_density_start`` /
        ``log_density_end``, ``grad_norm_start`` / ``grad_norm_end`` (mean ``||grad log p||``
        over the first / last ``record_every`` steps), ``n_chains``, ``n_steps`` and
        ``training_steps`` (``K0``).
    """
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    steps = chain_record_steps(n_steps, record_every)
    result = model.sample_prior(
        n_chains, generator=generator, n_steps=n_steps, record_steps=tuple(steps)
    )
    energy: list[float] = []
    log_density: list[float] = []
    with torch.no_grad():
        for step in steps:
            z = result.trajectory[step]
            energy.append(float(model.prior.energy(z).mean()))
            log_density.append(float(model.prior.log_density(z).mean()))
    return chain_summary(
        steps, energy, log_density, result.grad_norm, record_every, n_chains, model.prior_chain
    )


def chain_summary(
    steps: list[int],
    energy: list[float],
    log_density: list[float],
    grad_norm: torch.Tensor,
    record_every: int,
    n_chains: int,
    sampler: Any,
) -> dict[str, Any]:
    """The record of a long chain (:func:`long_prior_chain`'s return value): the series, their
    first and last values, the mean gradient norm over the first and last ``record_every``
    steps, and the chain's training length ``sampler.n_steps``."""
    window = min(record_every, grad_norm.numel())
    return {
        "steps": steps,
        "energy": energy,
        "log_density": log_density,
        "energy_start": energy[0],
        "energy_end": energy[-1],
        "log_density_start": log_density[0],
        "log_density_end": log_density[-1],
        "grad_norm_start": float(grad_norm[:window].mean()),
        "grad_norm_end": float(grad_norm[-window:].mean()),
        "n_chains": int(n_chains),
        "n_steps": int(steps[-1]),
        "training_steps": int(sampler.n_steps),
    }
