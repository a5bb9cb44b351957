"""``log Z(alpha)`` and ``log p(x)`` by quadrature on a grid, for models with a 2-D latent.

With ``z`` in two dimensions the integrals of the latent EBM (Pang et al. 2020, eq. 2),
``Z(alpha) = int exp(f(z)) N(z; 0, sigma^2 I) dz`` and
``p(x) = int exp(f(z)) N(z; 0, sigma^2 I) p_beta(x | z) dz / Z(alpha)``, can be summed on a fine
grid: an exact reference (up to the grid's resolution and extent, both reported) for the
Monte Carlo estimators of :mod:`latentebm.metrics.marginal` and for the ground-truth benchmark.

The midpoint rule on an ``n x n`` grid over ``[-limit, limit]^2`` converges quickly for smooth
integrands; comparing two resolutions (``resolution_check``) says how far it is from converged.
The extent is checked too: ``edge_share`` is the share of the grid's prior mass
``exp(f) N`` that lies in its outermost ring of cells. Where it exceeds :data:`EDGE_SHARE_LIMIT`
the prior's mass reaches the grid's edge (a wide or diverged prior), the grid holds only part
of it, and ``log_z`` and ``log_marginal`` are those of the prior *truncated* to the grid, not
of the model: ``truncated`` says so, and a caller must not report them as exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from latentebm.generators.conv import ConvGenerator
from latentebm.langevin import eval_mode
from latentebm.model import LatentEBM

EDGE_SHARE_LIMIT = 1e-3
"""Largest share of the prior's grid mass in the outermost ring of cells for which the grid is
taken to hold the whole prior. N(0, I) puts about 1e-9 there on the default [-6, 6]^2 (401
points) and 5e-7 on [-5, 5]^2 (151 points); N(0, 2 I) 2e-4 on the latter, with 8e-4 of its
mass beyond the edge; N(0, 10 I) 1e-2, with 0.21 beyond. A prior whose mass grows with
the window (a diverged energy) puts far more."""


@dataclass
class QuadratureResult:
    """Attributes:
    log_z: ``log Z(alpha)`` on the grid.
    log_marginal: ``(B,)`` ``log p(x)``, float64.
    limit, points: the grid ``[-limit, limit]^2`` with ``points`` per axis.
    edge_share: the share of the grid's prior mass in its outermost ring of cells.
    """

    log_z: float
    log_marginal: Tensor
    limit: float
    points: int
    edge_share: float = 0.0

    @property
    def truncated(self) -> bool:
        """True when the prior's mass reaches the grid's edge (``edge_share`` above
        :data:`EDGE_SHARE_LIMIT`): the results are those of the prior truncated to the grid."""
        return self.edge_share > EDGE_SHARE_LIMIT


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
        edge = grid_edge_share(log_tilted.view(points, points))
        if isinstance(model.generator, ConvGenerator):
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


def grid_edge_share(log_mass: Tensor) -> float:
    """The share of ``exp(log_mass)`` (a square grid of log masses) in its outermost ring."""
    inner = log_mass[1:-1, 1:-1]
    total = torch.logsumexp(log_mass.flatten(), 0)
    return float(-torch.expm1(torch.logsumexp(inner.flatten(), 0) - total))


def _gaussian_log_likelihoods(
    generator: ConvGenerator, x: Tensor, grid: Tensor, batch_size: int
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
