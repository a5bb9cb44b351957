"""``log Z(alpha)`` and ``log p(x)`` by quadrature on a grid, for models with a 2-D latent.

With ``z`` in two dimensions the integrals of the latent EBM (Pang et al. 2020, eq. 2),
``Z(alpha) = int exp(f(z)) N(z; 0, sigma^2 I) dz`` and
``p(x) = int exp(f(z)) N(z; 0, sigma^2 I) p_beta(x | z) dz / Z(alpha)``, can be summed on a fine
grid: an exact reference (up to the grid's resolution and extent, both reported) for the
Monte Carlo estimators of :mod:`latentebm.metrics.marginal` and for the ground-truth benchmark.

The midpoint rule on an ``n x n`` grid over ``[-limit, limit]^2`` converges quickly for smooth
integrands; comparing two resolutions (``resolution_check``) says how far it is from converged.
The extent is checked too: ``edge_share`` is the share of the grid's prior mass ``exp(f) N``
within :data:`EDGE_BAND` of the grid's edge. Where it exceeds :data:`EDGE_SHARE_LIMIT` the
prior's mass reaches the edge (a wide or diverged prior), the grid holds only part of it, and
``log_z`` and ``log_marginal`` are those of the prior *truncated* to the grid, not of the
model: ``truncated`` says so, and a caller must not report them as exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from latentebm.generators.gaussian_image import GaussianImageGenerator
from latentebm.langevin import eval_mode
from latentebm.model import LatentEBM

EDGE_BAND = 0.5
"""Width, in units of z, of the band along the grid's edge whose prior mass is checked."""

EDGE_SHARE_LIMIT = 1e-2
"""Largest share of the prior's grid mass within :data:`EDGE_BAND` of the edge for which the
grid is taken to hold the whole prior. On [-5, 5]^2 (151 or 51 points per axis) the share is
1.4e-5 for N(0, I), 2.3e-3 for N(0, 2 I) (8e-4 of its mass beyond the edge), 1.2e-2 for
N(0, 3 I) (8e-3 beyond: flagged) and 0.1 for N(0, 10 I) (0.21 beyond); on the default
[-6, 6]^2, 7.6e-8, 1.6e-4, 2.0e-3 and 5.2e-2. A prior whose mass grows with the window (a
diverged energy) puts far more there."""


@dataclass
class QuadratureResult:
    """Attributes:
    log_z: ``log Z(alpha)`` on the grid.
    log_marginal: ``(B,)`` ``log p(x)``, float64.
    limit, points: the grid ``[-limit, limit]^2`` with ``points`` per axis.
    edge_share: the share of the grid's prior mass within :data:`EDGE_BAND` of its edge.
    """

    log_z: float
    log_marginal: Tensor
    limit: float
    points: int
    edge_share: float

    @property
    def truncated(self) -> bool:
        """True unless ``edge_share`` is at most :data:`EDGE_SHARE_LIMIT` (a NaN share, from a
        non-finite energy, counts as truncated): the results are then those of the prior
        truncated to the grid."""
        return not self.edge_share <= EDGE_SHARE_LIMIT


@torch.no_grad()
def quadrature_log_marginal(
    model: LatentEBM,
    x: Tensor,
    *,
    limit: float = 6.0,
    points: int = 401,
    batch_size: int = 8192,
) -> QuadratureResult:
    """``log Z`` and ``log p(x_i)`` of a model with ``z_dim == 2`` (module docstring).

    The decoder sees at most ``batch_size`` (example, grid point) pairs at once.
    """
    if model.z_dim != 2:
        raise ValueError(f"quadrature needs z_dim == 2, got {model.z_dim}")
    axis = (torch.arange(points, dtype=torch.float64) + 0.5) / points * 2 * limit - limit
    cell = math.log((2 * limit / points) ** 2)
    grid = torch.cartesian_prod(axis, axis).to(device=model.device, dtype=torch.float32)
    sigma = model.prior.prior_sigma
    x = x.to(model.device)
    with eval_mode(model):
        log_ref = -0.5 * grid.double().pow(2).sum(1) / sigma**2 - math.log(2 * math.pi * sigma**2)
        log_tilted = model.prior.energy(grid).double() + log_ref
        log_z = float(torch.logsumexp(log_tilted, 0)) + cell
        edge = grid_edge_share(log_tilted.view(points, points), axis)
        if isinstance(model.generator, GaussianImageGenerator):
            log_lik = _gaussian_log_likelihoods(model.generator, x, grid, batch_size)
            log_p = torch.logsumexp(log_lik + log_tilted.unsqueeze(0), dim=1) + cell - log_z
            return QuadratureResult(log_z, log_p.cpu(), limit, points, edge)
        out = torch.empty(x.shape[0], dtype=torch.float64)
        for i in range(x.shape[0]):
            parts = []
            for start in range(0, grid.shape[0], batch_size):
                z = grid[start : start + batch_size]
                rows = x[i : i + 1].expand(z.shape[0], *x.shape[1:])
                parts.append(model.generator.log_likelihood(rows, z).double())
            log_lik = torch.cat(parts)
            out[i] = float(torch.logsumexp(log_lik + log_tilted, 0)) + cell - log_z
    return QuadratureResult(
        log_z=log_z, log_marginal=out, limit=limit, points=points, edge_share=edge
    )


def grid_edge_share(log_mass: Tensor, axis: Tensor, band: float = EDGE_BAND) -> float:
    """The share of ``exp(log_mass)``, an ``(n, n)`` grid of log masses at the points
    ``axis x axis``, whose points lie within ``band`` of the grid's edge."""
    outer = axis.abs() > axis.abs().max() - band
    near_edge = (outer[:, None] | outer[None, :]).to(log_mass.device)
    total = torch.logsumexp(log_mass.flatten(), 0)
    return float((torch.logsumexp(log_mass[near_edge], 0) - total).exp())


def _gaussian_log_likelihoods(
    generator: GaussianImageGenerator, x: Tensor, grid: Tensor, batch_size: int
) -> Tensor:
    """``log N(x_i; g(z_j), tau^2 I)`` for every example and grid point, ``(B, n)`` float64: each
    image ``g(z_j)`` is made once, the distances by one matrix product per chunk."""
    tau = generator.likelihood_sigma
    flat = x.flatten(1).double()
    norms = flat.pow(2).sum(1, keepdim=True)
    constant = 0.5 * flat.shape[1] * math.log(2 * math.pi * tau**2)
    parts = []
    for start in range(0, grid.shape[0], batch_size):
        mean = generator.mean(grid[start : start + batch_size]).flatten(1).double()
        sq = norms - 2 * flat @ mean.T + mean.pow(2).sum(1).unsqueeze(0)
        parts.append(-0.5 * sq / tau**2 - constant)
    return torch.cat(parts, dim=1)
