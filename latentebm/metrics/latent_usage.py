r"""Does the decoder use z? Reconstruction NLL, active units and mutual information.

Reconstruction NLL (Pang et al. 2020, "Learning latent space energy-based prior model",
Section 3.2: Table 2's NLL "evaluates the reconstruction"): for each ``x``, one posterior
Langevin chain of the model's K1 steps from ``N(0, sigma^2 I)`` gives ``z+``, and the metric is
``-log p_beta(x | z+)``. It is not a likelihood of ``x`` (``z+`` has seen ``x``); the marginal
NLL (:mod:`latentebm.metrics.marginal`) is.

Latent usage, as text-VAE users measure it:

* **reconstruction gain**: ``E[-log p_beta(x | z)]`` with ``z`` drawn from the prior
  independently of ``x`` (the same decoder, told nothing about ``x``), minus the reconstruction
  NLL. About 0 when the decoder ignores ``z``.
* **active units** (Burda, Grosse and Salakhutdinov 2016, "Importance weighted autoencoders"):
  ``AU = #{d : Var_x(E[z_d | x]) > 0.01}``.
* **mutual information** ``I(x; z)`` under the aggregate posterior (He, Spokoyny, Neubig and
  Berg-Kirkpatrick 2019, "Lagging inference networks and posterior collapse in variational
  autoencoders"): ``I = E_x E_{q(z|x)}[log q(z | x) - log q(z)]``, ``q(z) = mean_x q(z | x)``,
  estimated with one draw ``z_i ~ q(z | x_i)`` per example:
  ``I_hat = mean_i [log q(z_i | x_i) - log mean_j q(z_i | x_j)]`` (at most ``log N``).

Here ``q(z | x)`` is the Laplace approximation of the true posterior
(:func:`latentebm.metrics.marginal.fit_laplace`, with ``widen = 1``): the posterior has no
encoder, and the model's own short chains barely move from the prior, so their end states
would report no usage whatever the decoder does. ``E[z | x]`` in AU is the Laplace mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from latentebm.langevin import eval_mode
from latentebm.metrics.marginal import AISSettings, fit_laplace
from latentebm.model import LatentEBM

ACTIVE_UNIT_THRESHOLD = 0.01
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class ReconstructionResult:
    """Table 2's reconstruction NLL, and the same decoder given prior draws instead.

    Attributes:
        recon_nll: mean ``-log p_beta(x | z+)`` per example (nats), ``z+`` the end of one
            posterior chain of ``chain_steps`` steps.
        recon_nll_per_token: summed over examples, divided by the scored tokens.
        recon_ppl: ``exp(recon_nll_per_token)`` (a reconstruction perplexity, not a PPL of x).
        prior_z_nll: mean ``-log p_beta(x | z)``, ``z`` from the prior (K0 steps) independent
            of ``x``.
        recon_gain: ``prior_z_nll - recon_nll``: what knowing ``x``'s posterior buys.
        n_examples, total_tokens: counts.
        chain_steps: posterior chain length (the model's K1 unless told).
    """

    recon_nll: float
    recon_nll_per_token: float
    recon_ppl: float
    prior_z_nll: float
    recon_gain: float
    n_examples: int
    total_tokens: int
    chain_steps: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def reconstruction_nll(
    model: LatentEBM,
    batches: Iterable[Tensor],
    num_targets_fn: Callable[[Tensor], Tensor | int],
    *,
    chain_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> ReconstructionResult:
    """:class:`ReconstructionResult` over ``batches`` (module docstring)."""
    total_recon, total_prior, total_tokens, n = 0.0, 0.0, 0, 0
    steps = model.posterior_chain.n_steps if chain_steps is None else chain_steps
    with eval_mode(model):
        for batch in batches:
            x = batch.to(model.device)
            if model.z_dim == 0:
                empty = torch.zeros(x.shape[0], 0, device=x.device)
                recon = prior = -model.generator.log_likelihood(x, empty).double()
            else:
                z_post = model.sample_posterior(x, generator=generator, n_steps=steps).z
                z_prior = model.sample_prior(x.shape[0], generator=generator).z
                recon = -model.generator.log_likelihood(x, z_post).double()
                prior = -model.generator.log_likelihood(x, z_prior).double()
            total_recon += float(recon.sum())
            total_prior += float(prior.sum())
            total_tokens += int(torch.as_tensor(num_targets_fn(x)).sum())
            n += x.shape[0]
    if n == 0:
        raise ValueError("no examples to evaluate")
    per_token = total_recon / total_tokens if total_tokens else float("nan")
    return ReconstructionResult(
        recon_nll=total_recon / n,
        recon_nll_per_token=per_token,
        recon_ppl=_exp(per_token),
        prior_z_nll=total_prior / n,
        recon_gain=(total_prior - total_recon) / n,
        n_examples=n,
        total_tokens=total_tokens,
        chain_steps=steps,
    )


@dataclass
class LatentUsage:
    """Active units and mutual information from Laplace posteriors (module docstring).

    Attributes:
        active_units: ``#{d : Var_x(mode_d) > threshold}``.
        threshold: 0.01 (Burda et al. 2016).
        mode_variances: ``Var_x`` of each coordinate of the posterior mode, ``(d,)``.
        mutual_information: ``I_hat`` in nats.
        mutual_information_max: ``log N``, the estimator's ceiling.
        n_examples: examples used.
    """

    active_units: int
    threshold: float
    mode_variances: list[float]
    mutual_information: float
    mutual_information_max: float
    n_examples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def latent_usage(
    model: LatentEBM,
    batches: Iterable[Tensor],
    settings: AISSettings | None = None,
    *,
    generator: torch.Generator | None = None,
    threshold: float = ACTIVE_UNIT_THRESHOLD,
) -> LatentUsage:
    """:class:`LatentUsage` over ``batches``; ``settings``: the mode search and Hessian of
    :func:`~latentebm.metrics.marginal.fit_laplace` (``widen`` is set to 1)."""
    if model.z_dim == 0:
        raise ValueError("latent usage needs a latent variable (z_dim > 0)")
    settings = dataclasses.replace(settings or AISSettings(), widen=1.0)
    means: list[Tensor] = []
    trils: list[Tensor] = []
    for batch in batches:
        fit = fit_laplace(model, batch.to(model.device), settings, generator=generator)
        means.append(fit.proposal.mean.cpu())
        trils.append(fit.proposal.scale_tril.cpu())
    if not means:
        raise ValueError("no examples to evaluate")
    mean, tril = torch.cat(means), torch.cat(trils)
    n = mean.shape[0]
    variances = mean.var(dim=0, correction=1) if n > 1 else torch.zeros(mean.shape[1])
    mi = mutual_information(mean, tril, generator=generator)
    return LatentUsage(
        active_units=int((variances > threshold).sum()),
        threshold=threshold,
        mode_variances=variances.tolist(),
        mutual_information=mi,
        mutual_information_max=math.log(n),
        n_examples=n,
    )


def mutual_information(
    mean: Tensor, scale_tril: Tensor, *, generator: torch.Generator | None = None
) -> float:
    """``I_hat`` of He et al. (2019) for Gaussian posteriors ``N(mean_i, L_i L_i^T)``, one draw
    per example (module docstring). ``mean`` ``(N, d)``, ``scale_tril`` ``(N, d, d)``."""
    n, d = mean.shape
    mean, scale_tril = mean.double(), scale_tril.double()
    eps = torch.randn(n, d, dtype=torch.float64, generator=_cpu(generator))
    z = mean + (scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    half_log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (N,)
    log_q_own = -0.5 * eps.pow(2).sum(1) - half_log_det - 0.5 * d * _LOG_2PI
    log_q_all = torch.empty(n, n, dtype=torch.float64)  # [i, j] = log q(z_i | x_j)
    for j in range(n):
        diff = (z - mean[j]).unsqueeze(-1)
        white = torch.linalg.solve_triangular(scale_tril[j], diff, upper=False).squeeze(-1)
        log_q_all[:, j] = -0.5 * white.pow(2).sum(1) - half_log_det[j] - 0.5 * d * _LOG_2PI
    log_aggregate = torch.logsumexp(log_q_all, dim=1) - math.log(n)
    return float((log_q_own - log_aggregate).mean())


def _exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return float("inf")


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """``generator`` if it draws on the CPU, else a CPU generator seeded from it."""
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)
