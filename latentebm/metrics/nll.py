r"""Marginal likelihood ``log p(x)``, NLL and perplexity by importance sampling.

The estimator
-------------
The model is ``p(x, z) = p_alpha(z) p_beta(x | z)`` with the tilted Gaussian prior of Pang, Han,
Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model" (eq. 2), ``p_alpha(z) =
exp(f_alpha(z)) N(z; 0, sigma^2 I) / Z(alpha)``. For a proposal ``q(z | x)`` that is positive
wherever the posterior is::

    (1)  log p(x)      = log E_{z ~ q}[ p_beta(x | z) p_alpha(z) / q(z) ]
    (2)  log p_hat(x)  = logsumexp_{m=1..M} [ log p_beta(x | z_m) + log p_alpha(z_m)
                                              - log q(z_m) ] - log M,    z_m iid ~ q
    (3)  log p_alpha(z) = f_alpha(z) - ||z||^2 / (2 sigma^2) - (d/2) log(2 pi sigma^2)
                          - log Z(alpha)
    (4)  log Z_hat     = logsumexp_{n=1..N} f_alpha(z'_n) - log N,   z'_n iid ~ N(0, sigma^2 I)

``Z(alpha) = E_{N(0, sigma^2 I)}[exp f_alpha(z)]``, so (4) is the log of an unbiased Monte Carlo
mean. (3) carries the *full* Gaussian constant (``prior.log_density`` drops it).

What the estimate bounds
------------------------
Given ``q``, ``p_hat(x)`` (the exponential of (2)) is an unbiased estimate of ``p(x)``, so by
Jensen ``E[log p_hat(x)] <= log p(x)``: the estimate is a *stochastic lower bound* of
``log p(x)``, and the reported NLL (``-log p_hat``) and perplexity are *upper bounds in
expectation*. The gap shrinks as ``M`` grows (``E[log p_hat_M]`` is non-decreasing in ``M``;
Burda et al. 2016) and vanishes as ``M -> inf``. ``q`` is fitted to Langevin samples drawn
independently of the ``M`` importance samples, so conditioning on the fit keeps ``p_hat``
unbiased.

The exception is ``log Z``: it is estimated once per evaluation (:func:`log_partition`) and
enters every example's estimate through ``-log Z_hat``. Its random error (reported as
``std_error``, delta method) has either sign and is shared by all examples: it shifts the total
NLL by ``n_examples * error`` and ``log PPL`` by ``n_examples * error / total_tokens``. Its bias
``E[log Z_hat] - log Z ~ -std_error^2 / 2 <= 0`` makes the NLL slightly optimistic. With 1e5
draws both are usually far below the per-sentence Monte Carlo error; check ``std_error``.

The proposal
------------
For each ``x``: run ``n_chains`` posterior Langevin chains (:meth:`LatentEBM.sample_posterior`,
the model's K1 steps or ``chain_steps``), fit a Gaussian with the chains' mean and covariance,
the covariance shrunk toward its diagonal (Schaefer-Strimmer intensity unless ``shrinkage`` is
given; a plain sample covariance of 16 chains in 32 dimensions is singular), scaled by
``widen^2`` (the standard deviations by ``widen``, default 1.5) and plus ``jitter * I``. Or a
diagonal Gaussian (``covariance="diagonal"``; the Gaussian and its fit:
:mod:`latentebm.metrics.gaussian_proposal`). The chain states themselves are never scored:
their density is intractable; only the Gaussian's exact density is used, evaluated at exactly
the samples drawn from it.

Why wider: for a Gaussian target of std ``s`` and a proposal of std ``t`` around the same mean,
the second moment of the weights is ``E_q[w^2] / p^2 = t^2 / (s sqrt(2 t^2 - s^2))`` per
dimension: infinite for ``t <= s / sqrt(2)``, 1 at ``t = s``, 1.20 at ``t = 1.5 s``. A fit from a
few short-run chains tends to underestimate the posterior spread (few chains, chains that have
not mixed, heavier tails than Gaussian), and erring narrow can make the weights' variance
infinite, while erring wide costs little. The model's K1 (e.g. 20 steps at a = 0.1) barely moves
the chains from ``N(0, sigma^2 I)``, so the default proposal is close to a widened reference:
valid but loose for informative ``x``. Use ``chain_steps`` well above K1 for a tighter bound.

Requirement on the generator
----------------------------
``generator.log_likelihood(x, z)`` must be a *normalised* ``log p_beta(x | z)`` for this to be
an NLL. The LSTM decoder's (summed log-softmax over the target tokens, incl. ``<eos>``) is. An
image generator with Gaussian noise must include ``-(D/2) log(2 pi tau^2)``; one that drops it
gives a number offset by that constant, not an NLL.

Errors avoided (seen in public code of this line of work, see ``docs/metrics.md``): a proposal
density computed from a different noise draw than the sample it scores; log-Gaussian constants in
the wrong place; perplexities computed from the ELBO or from reconstructions; ``log Z`` dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from latentebm.langevin import eval_mode
from latentebm.metrics.gaussian_proposal import Covariance, GaussianProposal, fit_gaussian
from latentebm.model import LatentEBM
from latentebm.prior import GaussianPrior


# ----------------------------------------------------------------------------- log Z(alpha)
@dataclass(frozen=True)
class LogPartitionEstimate:
    """A Monte Carlo estimate of ``log Z(alpha)`` (eq. 4 of the module docstring).

    Attributes:
        value: ``logsumexp_n f(z'_n) - log N`` over ``N`` reference draws (0 for a Gaussian prior).
        std_error: its standard error by the delta method, ``sd(w) / (sqrt(N) mean(w))`` with
            ``w = exp(f - max f)`` (0 for a Gaussian prior).
        n_samples: the number ``N`` of reference draws (0 when none were needed).
    """

    value: float
    std_error: float
    n_samples: int


def log_partition(
    prior: GaussianPrior,
    n_samples: int = 100_000,
    batch_size: int = 10_000,
    generator: torch.Generator | None = None,
) -> LogPartitionEstimate:
    """Estimate ``log Z(alpha) = log E_{N(0, sigma^2 I)}[exp f_alpha(z)]`` by Monte Carlo.

    ``log Z_hat = logsumexp_n f(z'_n) - log N`` with ``z'_n ~ N(0, sigma^2 I)`` drawn by
    ``prior.sample_reference`` in batches of ``batch_size``. ``Z_hat`` is unbiased for ``Z``;
    ``log Z_hat`` has a downward bias of about ``std_error^2 / 2``. For a prior without energy
    (:class:`~latentebm.prior.GaussianPrior`) ``Z = 1`` and the result is exactly 0.

    Args:
        prior: the prior (its modules are put in eval mode for the duration).
        n_samples: number of reference draws N (at least 2).
        batch_size: draws per energy evaluation.
        generator: random generator on the prior's device.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prior.has_energy:
        return LogPartitionEstimate(value=0.0, std_error=0.0, n_samples=0)
    energies: list[Tensor] = []
    with eval_mode(prior), torch.no_grad():
        done = 0
        while done < n_samples:
            n = min(batch_size, n_samples - done)
            z = prior.sample_reference(n, generator=generator)
            energies.append(prior.energy(z).detach().to(device="cpu", dtype=torch.float64))
            done += n
    f = torch.cat(energies)
    if not torch.isfinite(f).all():
        raise ValueError("the energy f(z) is not finite on some reference draws")
    shift = f.max()
    w = (f - shift).exp()  # in (0, 1], the largest is exactly 1
    mean_w = w.mean()
    value = float(shift + mean_w.log())
    std_error = float(w.std(correction=1) / (math.sqrt(n_samples) * mean_w))
    return LogPartitionEstimate(value=value, std_error=std_error, n_samples=n_samples)


def log_prior_density(
    prior: GaussianPrior, z: Tensor, log_z: LogPartitionEstimate | float
) -> Tensor:
    """Normalised ``log p_alpha(z)`` (eq. 3), shape ``(B,)`` for ``z`` of shape ``(B, d)``.

    ``f(z) - ||z||^2 / (2 sigma^2) - (d/2) log(2 pi sigma^2) - log Z``: ``prior.log_density``
    (which omits every constant) plus the full Gaussian constant, minus ``log Z`` (a float, e.g.
    an exact value, or a :class:`LogPartitionEstimate`).
    """
    log_z_value = log_z.value if isinstance(log_z, LogPartitionEstimate) else float(log_z)
    d = z.shape[-1]
    constant = 0.5 * d * math.log(2.0 * math.pi * prior.prior_sigma**2)
    return prior.log_density(z) - constant - log_z_value


# ----------------------------------------------------------------------------- proposal
def fit_proposal(
    model: LatentEBM,
    x: Tensor,
    *,
    n_chains: int = 16,
    chain_steps: int | None = None,
    widen: float = 1.5,
    covariance: Covariance = "full",
    shrinkage: float | None = None,
    jitter: float = 1e-4,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> GaussianProposal:
    """Run ``n_chains`` posterior chains per example and fit :func:`fit_gaussian` to their ends.

    Chains: :meth:`LatentEBM.sample_posterior` on ``x`` repeated ``n_chains`` times, with the
    model's K1 steps or ``chain_steps`` (longer chains give a tighter proposal), started from
    ``N(0, sigma^2 I)``. At most ``batch_size`` chains run at once. Only ``z`` is differentiated.
    """
    if n_chains < 2:
        raise ValueError(f"n_chains must be >= 2, got {n_chains}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    examples_per_chunk = max(1, batch_size // n_chains)
    ends: list[Tensor] = []
    with eval_mode(model):
        for start in range(0, x.shape[0], examples_per_chunk):
            chunk = x[start : start + examples_per_chunk]
            repeated = chunk.repeat_interleave(n_chains, dim=0)
            z = model.sample_posterior(repeated, generator=generator, n_steps=chain_steps).z
            ends.append(z.view(chunk.shape[0], n_chains, -1))
    return fit_gaussian(
        torch.cat(ends), widen=widen, covariance=covariance, shrinkage=shrinkage, jitter=jitter
    )


# ----------------------------------------------------------------------------- weights
@torch.no_grad()
def log_joint(
    model: LatentEBM,
    x: Tensor,
    z: Tensor,
    log_z: LogPartitionEstimate | float,
    *,
    batch_size: int = 256,
) -> Tensor:
    """``log p_beta(x_i | z_im) + log p_alpha(z_im)`` (normalised), shape ``(B, M)``, float64.

    ``z`` has shape ``(B, M, d)`` (``M`` latents per example). The generator sees at most
    ``batch_size`` (example, latent) pairs at a time.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch, m, d = z.shape
    if batch != x.shape[0]:
        raise ValueError(f"z has {batch} examples, x has {x.shape[0]}")
    dtype = next(model.generator.parameters()).dtype
    flat = z.reshape(batch * m, d).to(dtype)
    out = torch.empty(batch * m, dtype=torch.float64, device=z.device)
    with eval_mode(model):
        for start in range(0, batch * m, batch_size):
            stop = min(start + batch_size, batch * m)
            rows = torch.arange(start, stop, device=x.device) // m
            x_chunk = x.index_select(0, rows)
            z_chunk = flat[start:stop]
            log_lik = model.generator.log_likelihood(x_chunk, z_chunk)
            log_prior = log_prior_density(model.prior, z_chunk, log_z)
            out[start:stop] = log_lik.to(torch.float64) + log_prior.to(torch.float64)
    return out.view(batch, m)


@torch.no_grad()
def importance_log_weights(
    model: LatentEBM,
    x: Tensor,
    proposal: GaussianProposal,
    n_importance: int,
    *,
    log_z: LogPartitionEstimate | float,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> Tensor:
    """``log w_im = log p_beta(x_i|z_im) + log p_alpha(z_im) - log q_i(z_im)``, ``(B, M)``.

    ``z_im ~ q_i`` are drawn once from ``generator`` and rounded to the model's dtype; ``log q``
    is evaluated at exactly those rounded points (never at another draw).
    """
    if n_importance < 1:
        raise ValueError(f"n_importance must be >= 1, got {n_importance}")
    dtype = next(model.generator.parameters()).dtype
    z = proposal.sample(n_importance, generator=generator).to(dtype)
    return log_joint(model, x, z, log_z, batch_size=batch_size) - proposal.log_prob(z)


def estimate_log_likelihood(
    model: LatentEBM,
    x: Tensor,
    *,
    n_importance: int = 100,
    n_chains: int = 16,
    chain_steps: int | None = None,
    widen: float = 1.5,
    covariance: Covariance = "full",
    shrinkage: float | None = None,
    jitter: float = 1e-4,
    log_z: LogPartitionEstimate | float | None = None,
    log_z_samples: int = 100_000,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Importance-sampling estimate ``log p_hat(x_i)`` (eq. 2), shape ``(B,)``, float64.

    A stochastic lower bound: ``E[log p_hat(x)] <= log p(x)`` (Jensen), up to the error of
    ``log Z`` (see the module docstring). The model is in eval mode for the duration and no
    parameter gradient is computed.

    Args:
        model: the model; ``model.generator.log_likelihood`` must be normalised.
        x: a batch of examples (first dimension = examples), on the model's device.
        n_importance: importance samples M per example. 100 (the usual choice for sentence
            NLLs since Burda et al. 2016) keeps the Jensen gap well below the differences being
            compared when the proposal is reasonable; raise it to check that the estimate is
            stable.
        n_chains: posterior chains per example used to fit the proposal (at least 2).
        chain_steps: Langevin steps of those chains (default: the model's K1).
        widen: factor on the proposal's standard deviations (> 1 keeps the weights' variance
            finite when the fit is too narrow).
        covariance: ``"full"`` (shrunk toward the diagonal) or ``"diagonal"``.
        shrinkage: fixed shrinkage intensity in ``[0, 1]`` (default: Schaefer-Strimmer).
        jitter: added to the proposal covariance's diagonal.
        log_z: ``log Z(alpha)`` (an estimate, or an exact float); estimated here with
            ``log_z_samples`` draws when ``None`` and the prior has an energy. Pass it when
            calling this function repeatedly (:func:`evaluate_nll` estimates it once).
        log_z_samples: reference draws for that estimate.
        generator: random generator on the model's device for chains, proposal draws and
            ``log Z``. Default: a fresh one seeded from torch's global RNG.
        batch_size: most (example, latent) pairs, or chains, given to the generator at once.
    """
    if generator is None:
        generator = _generator_from_global_rng(model.device)
    proposal = _proposal_options(n_chains, chain_steps, widen, covariance, shrinkage, jitter)
    with eval_mode(model):
        if log_z is None:
            log_z = log_partition(model.prior, log_z_samples, generator=generator)
        log_w = _log_weights(model, x, n_importance, log_z, generator, batch_size, proposal)
    return torch.logsumexp(log_w, dim=1) - math.log(n_importance)


def _proposal_options(
    n_chains: int,
    chain_steps: int | None,
    widen: float,
    covariance: Covariance,
    shrinkage: float | None,
    jitter: float,
) -> dict[str, Any]:
    """The keyword arguments of :func:`fit_proposal` that the public functions pass through."""
    return {
        "n_chains": n_chains,
        "chain_steps": chain_steps,
        "widen": widen,
        "covariance": covariance,
        "shrinkage": shrinkage,
        "jitter": jitter,
    }


def _log_weights(
    model: LatentEBM,
    x: Tensor,
    n_importance: int,
    log_z: LogPartitionEstimate | float,
    generator: torch.Generator,
    batch_size: int,
    proposal_options: dict[str, Any],
) -> Tensor:
    """Fit the proposal to posterior chains of ``x``, then ``(B, M)`` importance log weights.

    Without a latent variable (``z_dim == 0``, ``prior.kind: none``) ``log p(x)`` is
    ``log p_beta(x)`` itself: every weight is that exact value.
    """
    if model.z_dim == 0:
        with torch.no_grad():
            empty_z = torch.zeros(x.shape[0], 0, device=x.device)
            exact = model.generator.log_likelihood(x, empty_z)
        return exact.double().unsqueeze(1).expand(-1, n_importance)
    proposal = fit_proposal(
        model, x, generator=generator, batch_size=batch_size, **proposal_options
    )
    return importance_log_weights(
        model, x, proposal, n_importance, log_z=log_z, generator=generator, batch_size=batch_size
    )


# ----------------------------------------------------------------------------- dataset level
@dataclass
class NLLResult:
    """Importance-sampled NLL and perplexity of a data set.

    Attributes:
        nll_per_example: mean ``-log p_hat(x)`` per example in nats (a sentence's NLL is
            summed over its tokens including ``<eos>``).
        total_nll: sum of ``-log p_hat(x)`` over the examples, nats.
        total_tokens: sum of ``num_targets_fn`` over the examples (for text: tokens after
            ``<bos>`` up to and including ``<eos>``, padding excluded).
        nll_per_token: ``total_nll / total_tokens``.
        ppl: ``exp(total_nll / total_tokens)`` (``inf`` on overflow).
        n_examples: number of examples.
        n_importance: importance samples M per example.
        log_z: the ``log Z(alpha)`` used (0 for a Gaussian prior).
        log_z_std_error: its Monte Carlo standard error; the total NLL inherits
            ``n_examples * log_z_std_error`` of it (fully correlated across examples).
        log_z_samples: reference draws behind ``log_z`` (0 when exact or given as a float).
        mean_ess: mean over examples of the importance weights' effective sample size
            ``(sum w)^2 / sum w^2``, in ``[1, M]``; near 1 means the estimate rests on one
            sample and is probably loose.
        settings: the estimator's settings (proposal, chains, batch size).
    """

    nll_per_example: float
    total_nll: float
    total_tokens: int
    nll_per_token: float
    ppl: float
    n_examples: int
    n_importance: int
    log_z: float
    log_z_std_error: float
    log_z_samples: int
    mean_ess: float
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_nll(
    model: LatentEBM,
    batches: Iterable[Tensor],
    num_targets_fn: Callable[[Tensor], Tensor | int] | None = None,
    *,
    n_importance: int = 100,
    n_chains: int = 16,
    chain_steps: int | None = None,
    widen: float = 1.5,
    covariance: Covariance = "full",
    shrinkage: float | None = None,
    jitter: float = 1e-4,
    log_z: LogPartitionEstimate | float | None = None,
    log_z_samples: int = 100_000,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> NLLResult:
    """NLL per example and perplexity of ``batches`` by importance sampling (eq. 2).

    ``log Z(alpha)`` is estimated once (``log_z_samples`` reference draws) unless given, and
    used for every example. ``PPL = exp(total NLL / total tokens)``. Both NLL and PPL are upper
    bounds in expectation, up to the error of ``log Z`` (module docstring). See
    :func:`estimate_log_likelihood` for the other arguments.

    Args:
        batches: tensors of examples (first dimension = examples); moved to the model's device.
        num_targets_fn: ``x -> `` tokens per example ``(B,)`` or their total; default
            ``model.generator.num_targets`` (the LSTM decoder's counts ``<eos>``, not padding).
    """
    device = model.device
    if generator is None:
        generator = _generator_from_global_rng(device)
    if num_targets_fn is None:
        num_targets_fn = getattr(model.generator, "num_targets", None)
        if num_targets_fn is None:
            raise ValueError("the generator has no num_targets: pass num_targets_fn")
    log_z_samples_used = 0
    if log_z is None:
        log_z = log_partition(model.prior, log_z_samples, generator=generator)
        log_z_samples_used = log_z.n_samples
    elif isinstance(log_z, LogPartitionEstimate):
        log_z_samples_used = log_z.n_samples
    log_z_value = log_z.value if isinstance(log_z, LogPartitionEstimate) else float(log_z)
    log_z_se = log_z.std_error if isinstance(log_z, LogPartitionEstimate) else 0.0

    proposal = _proposal_options(n_chains, chain_steps, widen, covariance, shrinkage, jitter)
    total_nll, total_tokens, n_examples, ess_sum = 0.0, 0, 0, 0.0
    with eval_mode(model):
        for batch in batches:
            x = batch.to(device)
            log_w = _log_weights(model, x, n_importance, log_z, generator, batch_size, proposal)
            log_p = torch.logsumexp(log_w, dim=1) - math.log(n_importance)
            ess = torch.exp(2 * torch.logsumexp(log_w, dim=1) - torch.logsumexp(2 * log_w, dim=1))
            total_nll -= float(log_p.sum())
            ess_sum += float(ess.sum())
            n_examples += x.shape[0]
            total_tokens += int(torch.as_tensor(num_targets_fn(x)).sum())

    if n_examples == 0:
        raise ValueError("no examples to evaluate")
    nll_per_token = total_nll / total_tokens if total_tokens > 0 else float("nan")
    try:
        ppl = math.exp(nll_per_token)
    except OverflowError:
        ppl = float("inf")
    settings = {
        "n_chains": n_chains,
        "chain_steps": model.posterior_chain.n_steps if chain_steps is None else chain_steps,
        "chain_step_size": model.posterior_chain.step_size,
        "widen": widen,
        "covariance": covariance,
        "shrinkage": "schaefer-strimmer" if shrinkage is None else shrinkage,
        "jitter": jitter,
        "batch_size": batch_size,
    }
    return NLLResult(
        nll_per_example=total_nll / n_examples,
        total_nll=total_nll,
        total_tokens=total_tokens,
        nll_per_token=nll_per_token,
        ppl=ppl,
        n_examples=n_examples,
        n_importance=n_importance,
        log_z=log_z_value,
        log_z_std_error=log_z_se,
        log_z_samples=log_z_samples_used,
        mean_ess=ess_sum / n_examples,
        settings=settings,
    )


# ----------------------------------------------------------------------------- helpers
def _generator_from_global_rng(device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from torch's global RNG (so ``torch.manual_seed`` fixes
    the result)."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
