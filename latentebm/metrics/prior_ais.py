"""The prior alone: ``log Z(alpha)`` by AIS and exact draws of ``p_alpha`` by rejection.

``Z(alpha) = E_{N(0, sigma^2 I)}[exp f_alpha(z)]`` normalises the tilted prior of a latent EBM
(Pang et al. 2020, eq. 2). :func:`ais_log_partition` estimates its log by AIS along the path
from ``N(0, sigma^2 I)`` to ``exp(f) N(0, sigma^2 I)`` (a stochastic lower bound), or in reverse
from exact draws (an upper bound: BDMC); :class:`PriorRejectionSampler` makes those draws. No
decoder is called. Used by :mod:`latentebm.metrics.marginal` and :mod:`latentebm.metrics.bdmc`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from latentebm.langevin import eval_mode, frozen
from latentebm.metrics.ais import AISEstimate, anneal, log_mean_exp, staged_schedule, temperatures
from latentebm.metrics.marginal_settings import LogPartitionSettings
from latentebm.prior import GaussianPrior


def energy_term(prior: GaussianPrior) -> Callable[[Tensor, bool], tuple[Tensor, Tensor | None]]:
    """``ell(u) = f(sigma u)`` and its gradient in ``u``."""
    sigma = prior.prior_sigma

    def term(u: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        z = (sigma * u).detach().requires_grad_(True)
        with torch.enable_grad():
            value = prior.energy(z)
            (grad,) = torch.autograd.grad(value.sum(), z)
        return value.detach(), sigma * grad

    return term


def ais_log_partition(
    prior: GaussianPrior,
    settings: LogPartitionSettings | None = None,
    *,
    generator: torch.Generator | None = None,
    z_exact: Tensor | None = None,
) -> AISEstimate:
    """``log Z(alpha)`` by AIS from ``N(0, sigma^2 I)`` (a stochastic lower bound), or with
    ``z_exact`` (exact draws of ``p_alpha``, e.g. :func:`sample_prior_exact`) by reverse AIS
    (a stochastic upper bound; one chain per row of ``z_exact``). 0 for a prior without energy.
    """
    settings = settings or LogPartitionSettings()
    if not prior.has_energy:
        return AISEstimate(0.0, 0.0, 0, 0, "forward" if z_exact is None else "reverse")
    device = _device(prior)
    schedule = staged_schedule([temperatures(settings.n_temperatures, settings.schedule)])
    with eval_mode(prior), frozen(prior):
        if z_exact is None:
            u0 = torch.randn(settings.n_chains, prior.z_dim, generator=generator, device=device)
        else:
            u0 = z_exact.to(device) / prior.prior_sigma
            schedule = schedule.reversed()
        result = anneal([energy_term(prior)], schedule, u0, hmc=settings.hmc(), generator=generator)
    sign = 1.0 if z_exact is None else -1.0
    # forward weights estimate Z, reverse ones 1 / Z: the reverse bound is -log mean exp(w)
    summary = log_mean_exp(result.log_weights.unsqueeze(0))
    return AISEstimate(
        value=sign * float(summary.value[0]),
        std_error=float(summary.std_error[0]),
        n_chains=u0.shape[0],
        n_temperatures=settings.n_temperatures,
        direction="forward" if z_exact is None else "reverse",
        acceptance=result.acceptance,
    )


@dataclass(frozen=True)
class ExactPriorSamples:
    """Draws of ``p_alpha`` by rejection from ``N(0, sigma^2 I)``.

    Attributes:
        z: ``(n, d)`` accepted draws.
        bound: the ``M`` of the acceptance probability ``exp(f(z) - M)``.
        acceptance: accepted / proposed.
        exceeded: proposals with ``f(z) > M`` (0 for exact draws; otherwise ``M`` was not an
            upper bound of ``f`` where the reference puts mass, and the draws are approximate).
    """

    z: Tensor
    bound: float
    acceptance: float
    exceeded: int


class PriorRejectionSampler:
    """Exact draws of ``p_alpha(z) ∝ exp(f(z)) N(z; 0, sigma^2 I)`` by rejection sampling.

    Proposals ``z ~ N(0, sigma^2 I)`` are accepted with probability ``exp(f(z) - M)``, exact
    when ``M >= sup f``. ``M`` (found once, at construction) is the largest ``f`` over
    ``bound_draws`` reference draws, raised by gradient ascent on ``f`` (``ascent_steps`` Adam
    steps from the best 64 of them, kept within the radius ``sigma (sqrt(d) + 4.5)`` beyond which
    the reference puts less than 1e-7 of its mass) plus
    ``margin``. Proposals with ``f > M`` are counted (``exceeded``): if any, the draws are
    approximate and the caller should say so.
    """

    def __init__(
        self,
        prior: GaussianPrior,
        *,
        generator: torch.Generator | None = None,
        bound_draws: int = 200_000,
        ascent_steps: int = 200,
        margin: float = 0.5,
        batch_size: int = 65_536,
    ) -> None:
        self.prior, self.batch_size = prior, batch_size
        self.device = _device(prior)
        self.proposed = self.accepted = self.exceeded = 0
        self.bound = 0.0
        if not prior.has_energy:
            return
        sigma, d = prior.prior_sigma, prior.z_dim
        with eval_mode(prior), frozen(prior):
            with torch.no_grad():
                z = prior.sample_reference(bound_draws, generator=generator, device=self.device)
                f = torch.cat([prior.energy(c) for c in z.split(batch_size)])
                top = z[f.topk(min(64, bound_draws)).indices].clone()
            radius = sigma * (math.sqrt(d) + 4.5)  # N(0, sigma^2 I) puts < 1e-7 beyond
            top.requires_grad_(True)
            optimizer = torch.optim.Adam([top], lr=0.05 * sigma)
            for _ in range(ascent_steps):
                optimizer.zero_grad()
                with torch.enable_grad():
                    (-prior.energy(top).sum()).backward()
                optimizer.step()
                with torch.no_grad():
                    norms = top.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    top.mul_(torch.clamp(radius / norms, max=1.0))
            with torch.no_grad():
                found = max(float(f.max()), float(prior.energy(top.detach()).max()))
        self.bound = found + margin

    def draw(self, n: int, *, generator: torch.Generator | None = None) -> ExactPriorSamples:
        """``n`` draws (the counters accumulate over calls)."""
        prior = self.prior
        if not prior.has_energy:
            z = prior.sample_reference(n, generator=generator, device=self.device)
            return ExactPriorSamples(z=z, bound=0.0, acceptance=1.0, exceeded=0)
        accepted: list[Tensor] = []
        have = 0
        with eval_mode(prior), torch.no_grad():
            while have < n:
                z = prior.sample_reference(self.batch_size, generator=generator, device=self.device)
                f = prior.energy(z)
                self.exceeded += int((f > self.bound).sum())
                log_u = torch.rand(self.batch_size, generator=generator, device=self.device).log()
                keep = log_u < f - self.bound
                accepted.append(z[keep])
                have += int(keep.sum())
                self.accepted += int(keep.sum())
                self.proposed += self.batch_size
                if self.proposed >= 200 * self.batch_size and self.accepted < n:
                    raise RuntimeError(
                        f"rejection sampling of the prior accepted {self.accepted} of "
                        f"{self.proposed} (bound {self.bound:.2f}): too few for exact draws"
                    )
        return ExactPriorSamples(
            z=torch.cat(accepted)[:n],
            bound=self.bound,
            acceptance=self.accepted / self.proposed,
            exceeded=self.exceeded,
        )


def sample_prior_exact(
    prior: GaussianPrior, n: int, *, generator: torch.Generator | None = None
) -> ExactPriorSamples:
    """``n`` exact draws of ``p_alpha`` (:class:`PriorRejectionSampler`)."""
    return PriorRejectionSampler(prior, generator=generator).draw(n, generator=generator)


def _device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
