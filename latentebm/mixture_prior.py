"""A Gaussian-mixture prior written as an exponentially tilted Gaussian, with exact density.

``p(z) = sum_k pi_k N(z; mu_k, s^2 I)`` is the tilted Gaussian of Pang et al. 2020 ("Learning
latent space energy-based prior model", eq. 2), ``p(z) = exp(f(z)) N(z; 0, sigma^2 I) / Z``, with
``f(z) = log p(z) - log N(z; 0, sigma^2 I)`` and ``Z = 1`` exactly. So it plugs in wherever an
:class:`~latentebm.prior.EnergyPrior` does (Langevin chains, AIS, ``log Z`` estimates), and it has
what a learned energy lacks: an exact density, exact samples and a known normaliser. It is the
true prior of the ground-truth benchmark (a ring of modes, in the spirit of the 2-D examples of
Nijkamp et al. 2019, "Learning non-convergent non-persistent short-run MCMC toward energy-based
model", Figs. 8-9) and of closed-form tests.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from latentebm.prior import GaussianPrior


class GaussianMixturePrior(GaussianPrior):
    """``p(z) = sum_k pi_k N(z; mu_k, s^2 I)`` as ``exp(f(z)) N(z; 0, sigma^2 I)``, ``Z = 1``.

    Args:
        means: ``(K, d)`` component means ``mu_k``.
        component_std: ``s``, the standard deviation of every component in every direction.
        weights: ``(K,)`` mixture weights (default equal); normalised here.
        prior_sigma: ``sigma`` of the reference ``N(0, sigma^2 I)`` the tilt is written against.
    """

    has_energy = True

    def __init__(
        self,
        means: Tensor,
        component_std: float,
        weights: Tensor | None = None,
        prior_sigma: float = 1.0,
    ) -> None:
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        if not component_std > 0:
            raise ValueError(f"component_std must be > 0, got {component_std}")
        super().__init__(means.shape[1], prior_sigma)
        if weights is None:
            weights = torch.ones(means.shape[0])
        if weights.shape != (means.shape[0],) or not bool((weights > 0).all()):
            raise ValueError("weights must be positive, one per component")
        self.register_buffer("means", means.detach().clone().float())
        self.register_buffer("log_weights", (weights / weights.sum()).log().float())
        self.component_std = float(component_std)

    @classmethod
    def ring(
        cls,
        n_modes: int,
        radius: float,
        component_std: float,
        z_dim: int = 2,
        prior_sigma: float = 1.0,
    ) -> GaussianMixturePrior:
        """``n_modes`` equal components at angles ``2 pi k / n_modes`` on a circle of ``radius``
        in the plane of the first two coordinates (the other coordinates of each mean are 0)."""
        if z_dim < 2:
            raise ValueError(f"a ring needs z_dim >= 2, got {z_dim}")
        angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
        means = torch.zeros(n_modes, z_dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = radius * angles.cos(), radius * angles.sin()
        return cls(means.float(), component_std, prior_sigma=prior_sigma)

    def log_prob(self, z: Tensor) -> Tensor:
        """Exact ``log p(z)``, shape ``(B,)``."""
        s2 = self.component_std**2
        sq = (z.unsqueeze(1) - self.means.to(z.dtype)).pow(2).sum(-1)  # (B, K)
        log_norm = 0.5 * self.z_dim * math.log(2 * math.pi * s2)
        return torch.logsumexp(self.log_weights.to(z.dtype) - 0.5 * sq / s2, dim=1) - log_norm

    def energy(self, z: Tensor) -> Tensor:
        """``f(z) = log p(z) - log N(z; 0, sigma^2 I)``: the tilt with ``Z = 1``."""
        log_reference = -0.5 * z.pow(2).sum(1) / self.prior_sigma**2 - 0.5 * self.z_dim * math.log(
            2 * math.pi * self.prior_sigma**2
        )
        return self.log_prob(z) - log_reference

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws, ``(n, d)``."""
        device = self.means.device
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        noise = torch.randn(n, self.z_dim, generator=generator, device=device)
        return self.means[k] + self.component_std * noise


def mixture_marginal_linear_gaussian(
    prior: GaussianMixturePrior, weight: Tensor, bias: Tensor, tau: float, x: Tensor
) -> Tensor:
    """Exact ``log p(x)`` for ``z ~ prior``, ``x = W z + b + N(0, tau^2 I)``, float64 ``(B,)``:
    ``log sum_k pi_k N(x; W mu_k + b, s^2 W W^T + tau^2 I)`` (for tests)."""
    w = weight.double()
    cov = prior.component_std**2 * w @ w.T + tau**2 * torch.eye(w.shape[0], dtype=torch.float64)
    means = prior.means.double() @ w.T + bias.double()  # (K, D)
    dist = torch.distributions.MultivariateNormal(means, covariance_matrix=cov)
    log_p = dist.log_prob(x.double().unsqueeze(1))  # (B, K)
    return torch.logsumexp(prior.log_weights.double() + log_p, dim=1)
