"""Image tools for a trained latent EBM: latent interpolation and long-run prior chains
(Fig. 4 of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior
Model": images and the energy ``f_alpha`` along a 2,500-step prior chain).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentebm.atomic import atomic_write
from latentebm.chain_records import chain_record_steps
from latentebm.plotting import pyplot

__all__ = ["chain_record_steps", "interpolate", "long_run_prior_chain", "plot_energy_profile"]


def _decode_mean(model: Any, z: Tensor) -> Tensor:
    """``g_beta(z)``: the generator's mean image (``mean``, else ``sample``), no gradients."""
    gen = model.generator
    with torch.no_grad():
        return gen.mean(z) if hasattr(gen, "mean") else gen.sample(z)


def _as_single(x: Tensor, name: str) -> Tensor:
    """``(C, H, W)`` or ``(1, C, H, W)`` -> ``(1, C, H, W)``."""
    if x.ndim == 3:
        return x.unsqueeze(0)
    if x.ndim == 4 and x.shape[0] == 1:
        return x
    raise ValueError(f"{name} must be one image (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")


def interpolate(
    model: Any,
    x_a: Tensor,
    x_b: Tensor,
    n_points: int,
    *,
    n_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Decoded images along the straight line between the posterior latents of two images.

    ``z_a`` and ``z_b`` are the ends of posterior Langevin chains (K1 steps, or ``n_steps``)
    for ``x_a`` and ``x_b``; the result is ``g_beta((1 - t) z_a + t z_b)`` for ``n_points``
    equally spaced ``t`` in ``[0, 1]`` (``t = 0`` first), decoded by the generator mean.

    Args:
        x_a, x_b: one image each, ``(C, H, W)`` or ``(1, C, H, W)``.
        n_points: number of images (>= 2).

    Returns:
        images ``(n_points, C, H, W)``.
    """
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    a, b = _as_single(x_a, "x_a"), _as_single(x_b, "x_b")
    if a.shape != b.shape:
        raise ValueError(f"x_a {tuple(a.shape)} and x_b {tuple(b.shape)} differ in shape")
    was_training = model.training
    model.eval()
    try:
        x = torch.cat([a, b]).to(model.device)
        z = model.sample_posterior(x, generator=generator, n_steps=n_steps).z
        t = torch.linspace(0.0, 1.0, n_points, device=z.device, dtype=z.dtype).unsqueeze(1)
        path = (1.0 - t) * z[0] + t * z[1]
        return _decode_mean(model, path)
    finally:
        model.train(was_training)


def long_run_prior_chain(
    model: Any,
    n: int,
    n_steps: int,
    record_every: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Images and energies along ``n`` long prior chains (Pang et al. 2020, Fig. 4).

    The model's prior sampler runs ``n_steps`` steps (far past its training length K0) from
    ``N(0, sigma^2 I)`` via ``model.sample_prior(..., record_steps=...)``, the same call as
    :func:`latentebm.diagnostics.long_prior_chain` (which keeps only chain means); at every
    step of :func:`chain_record_steps` the state is decoded by the generator mean and its
    energy ``f_alpha(z)`` evaluated, per chain.

    Returns:
        ``(images, energies)``: images ``(T, n, C, H, W)`` and energies ``(T, n)`` on the CPU,
        ``T = len(chain_record_steps(n_steps, record_every))``, step 0 (the initial state) first.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    steps = chain_record_steps(n_steps, record_every)
    was_training = model.training
    model.eval()
    try:
        result = model.sample_prior(
            n, generator=generator, n_steps=n_steps, record_steps=tuple(steps)
        )
        images: list[Tensor] = []
        energies: list[Tensor] = []
        with torch.no_grad():
            for step in steps:
                z = result.trajectory[step]
                energies.append(model.prior.energy(z).float().cpu())
                images.append(_decode_mean(model, z).cpu())
    finally:
        model.train(was_training)
    return torch.stack(images), torch.stack(energies)


def plot_energy_profile(
    energies: Tensor | np.ndarray,
    path: str | Path,
    *,
    steps: list[int] | None = None,
    training_steps: int | None = None,
) -> Path:
    """Plot ``f_alpha(z)`` along prior chains (Pang et al. 2020, Fig. 4 right) to a PNG, atomically.

    Args:
        energies: ``(T, n)`` (as :func:`long_run_prior_chain` returns) or ``(T,)``.
        path: the image file to write.
        steps: the Langevin step of each row (default ``0 .. T-1``).
        training_steps: K0, marked by a vertical line if given.

    Raises:
        ValueError: ``energies`` is empty or ``steps`` has the wrong length.
        latentebm.diagnostics.PlotDependencyError: matplotlib is not installed.
    """
    values = np.asarray(energies.detach().cpu() if isinstance(energies, Tensor) else energies)
    values = values.astype(np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"energies must be (T, n) or (T,), got shape {values.shape}")
    x = np.arange(values.shape[0]) if steps is None else np.asarray(steps)
    if x.shape != (values.shape[0],):
        raise ValueError(f"steps has {x.size} entries for {values.shape[0]} rows of energies")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(x, values, color="tab:blue", lw=0.6, alpha=0.3)
    ax.plot(x, values.mean(axis=1), color="black", lw=1.8, label=f"mean of {values.shape[1]}")
    if training_steps is not None:
        ax.axvline(training_steps, color="red", lw=0.8, ls="--", label="K0")
    ax.set(title="f_alpha(z) along the prior chain", xlabel="Langevin step", ylabel="f_alpha(z)")
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    try:
        with atomic_write(out) as handle:
            fig.savefig(handle, format=out.suffix.lstrip(".") or "png", dpi=90)
    finally:
        plt.close(fig)
    return out
