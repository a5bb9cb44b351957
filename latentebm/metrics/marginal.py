r"""The marginal likelihood ``log p(x)`` of a latent EBM by AIS, with ``log Z(alpha)`` by AIS.

The model (Pang et al. 2020, "Learning latent space energy-based prior model", eq. 2) is
``p(x, z) = exp(f_alpha(z)) N(z; 0, sigma^2 I) p_beta(x | z) / Z(alpha)``. Two normalisers are
estimated, each by annealed importance sampling (:mod:`latentebm.metrics.ais`):

* ``log Z(alpha)``: the path from ``N(0, sigma^2 I)`` to ``exp(f) N(0, sigma^2 I)``, many chains
  (:func:`ais_log_partition`), once per evaluation;
* ``log (Z(alpha) p(x))`` for each example: the path from a start density to
  ``exp(f(z)) N(z; 0, sigma^2 I) p_beta(x | z)`` (:func:`ais_log_joint_normaliser`).

``log p_hat(x) = log (Z p(x))_hat - log Z_hat``. Both AIS estimates are stochastic lower bounds
of their logs, so ``log p_hat(x)`` is neither a lower nor an upper bound in general; the error
of ``log Z_hat`` is shared by every example, so it is estimated with many more chains and
reported apart, and :func:`reverse_ais_log_partition` gives the matching upper bound (BDMC).

Where the chains start (``init``)
---------------------------------
* ``pilot`` (default): per example, one of the two paths below, chosen by two short forward
  pilots (:func:`choose_reference_path`), then a fresh run on it: the Laplace start where the
  posterior is Gaussian-like, the reference path where its mass lies far from every mode the
  searches find (trained text models, docs/RESULTS.md section 12b). The pilots' chains are
  independent of the run reported, so it keeps the guarantees of either path.
* ``laplace``: a Gaussian ``q(z | x) = N(m, widen^2 H^-1)`` per example, ``m`` the
  mode of ``log p(x, z)`` found by Adam from a few starts, ``H`` the negative Hessian there by
  central differences of the gradient in two passes (:func:`fit_laplace`). The
  path is ``q^(1 - b) (joint)^b``; the chains run in the coordinates ``u`` with ``z = m + L u``,
  ``L L^T = widen^2 H^-1``, so HMC sees a roughly isotropic target. ``q`` depends on ``x`` only
  (not on the AIS chains), so the estimate stays unbiased; a poor ``q`` (a missed mode) costs
  tightness, not validity, and BDMC measures it.
* ``reference``: the textbook path from ``N(0, sigma^2 I)`` (Wu et al. 2017), first switching
  on the tilt ``f`` (``prior_temperatures`` steps, cheap: no decoder call), then the
  likelihood. It needs many more temperatures when ``x`` is informative about ``z``.
* ``both``: each example both ways (the reference path with ``reference_temperatures``), the
  larger estimate kept per example (:func:`_better_of_both`): the Laplace start is exact on
  Gaussian-like posteriors and loose on rugged ones (text models that use ``z``), the reference
  path the other way round (docs/RESULTS.md section 12b). The larger of two estimates is not a
  lower bound: where the paths agree it sits above either by up to about its standard error.

This module holds the per-example AIS and the data-set NLL; beside it are the settings
(:mod:`~latentebm.metrics.marginal_settings`), ``log Z(alpha)`` and exact prior draws
(:mod:`~latentebm.metrics.prior_ais`), the joint density the chains target
(:mod:`~latentebm.metrics.joint`) and the Laplace fit (:mod:`~latentebm.metrics.laplace`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor

from latentebm.langevin import eval_mode, frozen
from latentebm.metrics.ais import (
    AISEstimate,
    LogMeanExp,
    Schedule,
    anneal,
    log_mean_exp,
    staged_schedule,
    temperatures,
)
from latentebm.metrics.gaussian_proposal import GaussianProposal
from latentebm.metrics.joint import REFERENCE_FLOATS_PER_TOKEN, SEQUENCE_TOKENS_PER_ROW, Joint
from latentebm.metrics.laplace import LaplaceFit, fit_laplace
from latentebm.metrics.marginal_settings import AISInit, AISSettings, LogPartitionSettings
from latentebm.metrics.prior_ais import (
    ExactPriorSamples,
    PriorRejectionSampler,
    ais_log_partition,
    energy_term,
    sample_prior_exact,
)
from latentebm.model import LatentEBM

__all__ = [  # the settings, log Z, the joint and the Laplace fit moved out; importable from here
    "REFERENCE_FLOATS_PER_TOKEN",
    "ROUNDING",
    "SEQUENCE_TOKENS_PER_ROW",
    "AISInit",
    "AISSettings",
    "ExactPriorSamples",
    "Joint",
    "JointEstimate",
    "LaplaceFit",
    "LogPartitionSettings",
    "MarginalNLLResult",
    "PriorRejectionSampler",
    "ais_log_joint_normaliser",
    "ais_log_partition",
    "choose_reference_path",
    "evaluate_marginal_nll",
    "fit_laplace",
    "sample_prior_exact",
]

ROUNDING = 1e-6
"""Relative rounding error of a float32 log density summed over many terms (measured: up to
8e-7 of ``|log p(x)|`` on the linear-Gaussian test model, whose estimate is otherwise exact);
added in quadrature to each example's standard error."""
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class JointEstimate:
    """Per-example AIS estimate of ``log (Z(alpha) p(x))``.

    Attributes:
        log_weights: ``(B, K)`` chain log weights.
        summary: value, standard error and ESS per example (:class:`LogMeanExp`); for a reverse
            run the value is the upper bound ``-log mean exp(-log w)`` and the log weights are
            those of ``1 / (Z p(x))``.
        acceptance: mean HMC acceptance rate.
        gradient_evaluations: per chain, of the reported run (``pilot``: the pilots and the
            Laplace fit are not counted; ``both``: both paths).
        reference_chosen: ``init: both`` or ``pilot``: ``(B,)`` whether the estimate is the
            reference path's (else the Laplace start's); None otherwise.
    """

    log_weights: Tensor
    summary: LogMeanExp
    acceptance: float
    gradient_evaluations: int
    reference_chosen: Tensor | None = None


def ais_log_joint_normaliser(
    model: LatentEBM,
    x: Tensor,
    settings: AISSettings | None = None,
    *,
    generator: torch.Generator | None = None,
    z_exact: Tensor | None = None,
    proposal: LaplaceFit | None = None,
    reference_rows: Tensor | None = None,
) -> JointEstimate:
    """AIS estimate of ``log (Z(alpha) p(x_i))`` for each row of ``x`` (module docstring).

    Forward (default): a stochastic lower bound; with ``init: both`` not one: the larger of two,
    biased upwards by up to about its standard error (:func:`_better_of_both`). With
    ``z_exact`` (``(B, d)``, an exact draw of ``p(z | x_i)`` per example: data simulated from
    the model) the path runs in reverse from it (all ``n_chains`` chains of an example start
    there): a stochastic upper bound (BDMC).
    ``proposal``: the Laplace fit to use (``init: laplace`` or ``pilot``), e.g. shared by a
    forward and a reverse run; fitted here when None. ``reference_rows``: ``init: pilot``
    only, the path of each example (:func:`choose_reference_path`), e.g. shared by a forward
    and a reverse run; chosen here when None.

    The model is in eval mode, its parameters frozen: only ``z`` is differentiated.
    """
    settings = settings or AISSettings()
    if settings.init == "both":
        return _better_of_both(
            model, x, settings, generator=generator, z_exact=z_exact, proposal=proposal
        )
    if settings.init == "pilot":
        return _path_chosen_by_pilot(
            model,
            x,
            settings,
            generator=generator,
            z_exact=z_exact,
            proposal=proposal,
            reference_rows=reference_rows,
        )
    k, batch, d = settings.n_chains, x.shape[0], model.z_dim
    sigma = model.prior.prior_sigma
    groups = torch.arange(batch, device=x.device).repeat_interleave(k)
    with eval_mode(model), frozen(model):
        joint = Joint(model, x, k, settings.batch_size)
        if settings.init == "laplace":
            if proposal is None:
                proposal = fit_laplace(model, x, settings, generator=generator)
            start = _StartDensity(proposal, k, sigma, settings.defensive)

            def term(u: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
                value, grad = joint.log_joint(start.to_z(u))
                assert grad is not None
                log_q, grad_q = start.log_prob_u(u)
                return value + start.log_det - log_q, start.pull_back(grad) - grad_q

            def base_correction(u: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
                log_q, grad_q = start.log_prob_u(u)
                log_n = -0.5 * u.double().pow(2).sum(1) - 0.5 * d * _LOG_2PI
                return log_q - log_n, grad_q + u

            if settings.defensive > 0 or settings.laplace_starts > 1:
                # q in u: N(u; 0, I) exp(base_correction(u)), fixed along the path
                terms = [base_correction, term]
                betas = temperatures(settings.n_temperatures, settings.schedule)
                schedule = Schedule(torch.stack([torch.ones_like(betas), betas], dim=1))
            else:
                terms = [term]
                schedule = staged_schedule(
                    [temperatures(settings.n_temperatures, settings.schedule)]
                )
            if z_exact is not None:
                u0 = start.to_u(z_exact.to(x.device).repeat_interleave(k, 0))
            else:
                u0 = start.sample_u(generator)
        else:

            def likelihood(u: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
                value, grad = joint.likelihood(sigma * u)
                assert grad is not None
                return value, sigma * grad

            stages = [temperatures(settings.n_temperatures, settings.schedule)]
            terms = [likelihood]
            if model.prior.has_energy:
                stages.insert(0, temperatures(settings.prior_temperatures, settings.schedule))
                terms.insert(0, energy_term(model.prior))
            schedule = staged_schedule(stages)
            if z_exact is not None:
                u0 = (z_exact.to(x.device) / sigma).repeat_interleave(k, 0)
            else:
                u0 = torch.randn(batch * k, d, generator=generator, device=x.device)
        if z_exact is not None:
            schedule = schedule.reversed()
        result = anneal(
            terms,
            schedule,
            u0,
            hmc=settings.hmc(),
            groups=groups,
            n_groups=batch,
            generator=generator,
        )
    log_w = result.log_weights.view(batch, k)
    summary = log_mean_exp(log_w)  # reverse weights estimate 1 / (Z p(x)): negate below
    if z_exact is not None:
        summary = LogMeanExp(-summary.value, summary.std_error, summary.ess)
    return JointEstimate(
        log_weights=log_w,
        summary=summary,
        acceptance=result.acceptance,
        gradient_evaluations=result.gradient_evaluations,
    )


def _better_of_both(
    model: LatentEBM,
    x: Tensor,
    settings: AISSettings,
    *,
    generator: torch.Generator | None,
    z_exact: Tensor | None,
    proposal: LaplaceFit | None,
) -> JointEstimate:
    """``init: both``: each example estimated from a Laplace start and along the reference
    path; per example the larger estimate (a reverse run: the smaller upper bound) with its own
    standard error, ESS and chain weights.

    What this costs in rigour: each path's estimate is a stochastic lower bound
    (``E[log Z_hat] <= log Z``, and ``P(log Z_hat > log Z + t) <= exp(-t)`` by Markov's
    inequality), but the larger of two is not one in expectation. When one path is far below
    the other (the Laplace start on rugged text posteriors, the reference path on sharp
    Gaussian-like ones: the cases it is for) the larger is the better path's estimate and the
    choice adds nothing; when the two agree within their spread, the larger exceeds either by
    up to about that spread (for two independent estimates, unbiased in ``Z``, whose logs are
    normal with standard deviation ``s``: ``s / sqrt(pi) - s^2 / 2``, i.e. +0.05 / +0.12 /
    +0.16 nats at ``s`` = 0.1 / 0.3 / 0.6), which is about the reported standard error; measured on
    the closed-form mixture-prior problems of ``tests/test_ais.py``: a mean error of +0.10 and
    +0.16 nats against -0.04 and +0.02 for the Laplace start alone (docs/metrics.md). The tail
    bound of the larger is ``2 exp(-t)``. ``pilot`` chooses from pilot runs and reports a fresh
    run, which keeps the bound; its Laplace pilot leaves the defensive share out, because with
    it a pilot of 4 chains was measured far off (on the linear-Gaussian test problem one
    example's pilot came out hundreds of nats low, its defensive chains carrying all the
    weight), which sent the example to the reference path, tens of nats low there.
    """
    laplace = ais_log_joint_normaliser(
        model,
        x,
        replace(settings, init="laplace"),
        generator=generator,
        z_exact=z_exact,
        proposal=proposal,
    )
    reference = ais_log_joint_normaliser(
        model,
        x,
        replace(settings, init="reference", n_temperatures=settings.reference_temperatures),
        generator=generator,
        z_exact=z_exact,
    )
    if z_exact is None:
        pick = reference.summary.value > laplace.summary.value
    else:
        pick = reference.summary.value < laplace.summary.value

    def chosen(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(pick.view(-1, *([1] * (a.dim() - 1))).to(a.device), b, a)

    summary = LogMeanExp(
        chosen(laplace.summary.value, reference.summary.value),
        chosen(laplace.summary.std_error, reference.summary.std_error),
        chosen(laplace.summary.ess, reference.summary.ess),
    )
    transitions = laplace.gradient_evaluations + reference.gradient_evaluations
    acceptance = (
        laplace.acceptance * laplace.gradient_evaluations
        + reference.acceptance * reference.gradient_evaluations
    ) / max(transitions, 1)
    return JointEstimate(
        log_weights=chosen(laplace.log_weights, reference.log_weights),
        summary=summary,
        acceptance=acceptance,
        gradient_evaluations=laplace.gradient_evaluations + reference.gradient_evaluations,
        reference_chosen=pick.cpu(),
    )


def choose_reference_path(
    model: LatentEBM,
    x: Tensor,
    settings: AISSettings,
    *,
    generator: torch.Generator | None = None,
    proposal: LaplaceFit | None = None,
) -> Tensor:
    """``init: pilot``: ``(B,)`` whether each example's estimate should take the reference path.

    Two short forward pilots per example, ``pilot_chains`` chains and
    :meth:`~latentebm.metrics.marginal_settings.AISSettings.pilot_transitions` transitions
    each: the Laplace start without its defensive share (its chains all start at the fitted
    modes) and the reference path; the path whose pilot estimate is larger wins. The pilots'
    chains are independent of the estimate that follows, so a fresh run on the chosen path
    keeps the guarantees of either path alone (a forward run: a stochastic lower bound; a
    reverse run: an upper bound), unlike ``both``. Without the defensive share the Laplace
    pilot is nearly exact where the posterior is the fitted Gaussian, so there it loses only to
    a reference pilot about as good (by chance); the reference path is 4.2 nats low on such
    posteriors with 500 temperatures, tens with few. With the share a pilot could lose: its
    reference-started chains carried all the weight in one example of the linear-Gaussian
    test problem, docs/metrics.md). On posteriors whose mass lies far from every mode found
    (a trained PTB model's, docs/RESULTS.md section 12b) the reference pilot wins by many nats.
    """
    if proposal is None:
        proposal = fit_laplace(model, x, settings, generator=generator)
    pilot = replace(
        settings, n_chains=settings.pilot_chains, n_temperatures=settings.pilot_transitions()
    )
    laplace = ais_log_joint_normaliser(
        model,
        x,
        replace(pilot, init="laplace", defensive=0.0),
        generator=generator,
        proposal=proposal,
    )
    reference = ais_log_joint_normaliser(
        model, x, replace(pilot, init="reference"), generator=generator
    )
    return (reference.summary.value > laplace.summary.value).cpu()


def _laplace_rows(fit: LaplaceFit, rows: Tensor) -> LaplaceFit:
    """The Laplace fit of the examples ``rows`` only."""
    return LaplaceFit(
        proposal=GaussianProposal(
            mean=fit.proposal.mean[rows], scale_tril=fit.proposal.scale_tril[rows]
        ),
        modes=fit.modes[rows],
        log_weights=fit.log_weights[rows],
    )


def _path_chosen_by_pilot(
    model: LatentEBM,
    x: Tensor,
    settings: AISSettings,
    *,
    generator: torch.Generator | None,
    z_exact: Tensor | None,
    proposal: LaplaceFit | None,
    reference_rows: Tensor | None,
) -> JointEstimate:
    """``init: pilot``: each example's path by :func:`choose_reference_path` (unless given),
    then a fresh run of ``n_chains`` chains on it: the Laplace start (with its defensive share,
    ``n_temperatures``) or the reference path (``reference_temperatures``)."""
    if proposal is None and (reference_rows is None or not bool(reference_rows.all())):
        proposal = fit_laplace(model, x, settings, generator=generator)
    if reference_rows is None:
        reference_rows = choose_reference_path(
            model, x, settings, generator=generator, proposal=proposal
        )
    pick = reference_rows.to(torch.bool).cpu()
    if pick.shape != (x.shape[0],):
        raise ValueError(f"reference_rows: expected shape ({x.shape[0]},), got {tuple(pick.shape)}")
    parts: list[tuple[Tensor, JointEstimate]] = []
    for use_reference in (False, True):
        rows = (pick == use_reference).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        on_device = rows.to(x.device)
        path = (
            replace(settings, init="reference", n_temperatures=settings.reference_temperatures)
            if use_reference
            else replace(settings, init="laplace")
        )
        estimate = ais_log_joint_normaliser(
            model,
            x.index_select(0, on_device),
            path,
            generator=generator,
            z_exact=None if z_exact is None else z_exact.to(x.device).index_select(0, on_device),
            proposal=None
            if use_reference or proposal is None
            else _laplace_rows(proposal, on_device),
        )
        parts.append((rows, estimate))
    first = parts[0][1]
    batch = x.shape[0]

    def gathered(get: Callable[[JointEstimate], Tensor]) -> Tensor:
        out = get(first).new_empty((batch, *get(first).shape[1:]))
        for rows, estimate in parts:
            out[rows.to(out.device)] = get(estimate)
        return out

    evaluations = sum(estimate.gradient_evaluations * len(rows) for rows, estimate in parts)
    acceptance = sum(
        estimate.acceptance * estimate.gradient_evaluations * len(rows) for rows, estimate in parts
    ) / max(evaluations, 1)
    return JointEstimate(
        log_weights=gathered(lambda e: e.log_weights),
        summary=LogMeanExp(
            gathered(lambda e: e.summary.value),
            gathered(lambda e: e.summary.std_error),
            gathered(lambda e: e.summary.ess),
        ),
        acceptance=acceptance,
        gradient_evaluations=round(evaluations / batch),
        reference_chosen=pick,
    )


class _StartDensity:
    """The start density of ``init: laplace`` for ``k`` chains per example, in the whitened
    coordinates ``u`` of the best mode's Laplace fit: ``z = m_1 + L u``.

    ``q_u(u) = (1 - rho) sum_s w_s N(u; c_s, I) + rho N(m_1 + L u; 0, sigma^2 I) |det L|``, with
    ``c_s = L^-1 (m_s - m_1)`` for the modes ``m_s`` and weights ``w_s`` of :class:`LaplaceFit`
    (each mode with the best mode's covariance) and ``rho`` the defensive weight.
    """

    def __init__(self, fit: LaplaceFit, k: int, sigma: float, rho: float) -> None:
        proposal = fit.proposal
        self.mean = proposal.mean.to(torch.float32).repeat_interleave(k, 0)
        self.tril64 = proposal.scale_tril.repeat_interleave(k, 0)
        self.tril = self.tril64.to(torch.float32)
        self.log_det = self.tril64.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        offsets = fit.modes - proposal.mean.unsqueeze(1)  # (B, S, d)
        centres = torch.linalg.solve_triangular(
            proposal.scale_tril.unsqueeze(1), offsets.unsqueeze(-1), upper=False
        ).squeeze(-1)
        self.centres = centres.repeat_interleave(k, 0)  # (N, S, d) float64
        self.log_weights = fit.log_weights.repeat_interleave(k, 0)  # (N, S)
        self.sigma, self.rho = sigma, rho

    def to_z(self, u: Tensor) -> Tensor:
        return self.mean + (self.tril @ u.unsqueeze(-1)).squeeze(-1)

    def to_u(self, z: Tensor) -> Tensor:
        white = z.double() - self.mean.double()
        u = torch.linalg.solve_triangular(self.tril64, white.unsqueeze(-1), upper=False)
        return u.squeeze(-1).to(torch.float32)

    def pull_back(self, grad_z: Tensor) -> Tensor:
        """``L^T grad_z``: a gradient in ``z`` as one in ``u``."""
        return (self.tril.transpose(1, 2) @ grad_z.to(self.tril.dtype).unsqueeze(-1)).squeeze(-1)

    def log_prob_u(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``log q_u(u)`` (float64) and its gradient."""
        d = u.shape[1]
        u64 = u.detach().double().requires_grad_(True)
        with torch.enable_grad():
            sq = (u64.unsqueeze(1) - self.centres).pow(2).sum(-1)  # (N, S)
            log_modes = torch.logsumexp(self.log_weights - 0.5 * sq, dim=1) - 0.5 * d * _LOG_2PI
            if self.rho == 0:
                value = log_modes
            else:
                z = self.mean.double() + (self.tril64 @ u64.unsqueeze(-1)).squeeze(-1)
                log_ref = (
                    -0.5 * z.pow(2).sum(1) / self.sigma**2
                    - 0.5 * d * math.log(2 * math.pi * self.sigma**2)
                    + self.log_det
                )
                value = torch.logaddexp(
                    math.log(1 - self.rho) + log_modes, math.log(self.rho) + log_ref
                )
            (grad,) = torch.autograd.grad(value.sum(), u64)
        return value.detach(), grad.to(u.dtype)

    def sample_u(self, generator: torch.Generator | None) -> Tensor:
        n, d = self.mean.shape
        device = self.mean.device
        which = torch.multinomial(self.log_weights.exp(), 1, generator=generator).squeeze(1)
        centre = self.centres[torch.arange(n, device=device), which].to(torch.float32)
        u = centre + torch.randn(n, d, generator=generator, device=device)
        if self.rho > 0:
            from_reference = torch.rand(n, generator=generator, device=device) < self.rho
            z = self.sigma * torch.randn(n, d, generator=generator, device=device)
            u = torch.where(from_reference.unsqueeze(1), self.to_u(z), u)
        return u


# ----------------------------------------------------------------------------- dataset level
@dataclass
class MarginalNLLResult:
    """AIS estimate of the NLL ``-log p(x)`` of a data set, with its error bars.

    Attributes:
        nll_per_example: mean of ``-log p_hat(x)`` over the examples, nats (a sentence's NLL is
            summed over its tokens including ``<eos>``).
        std_error: standard error of ``nll_per_example``: the examples' chain-to-chain errors
            (independent) and ``log Z``'s (shared by every example), in quadrature.
        total_nll: sum of ``-log p_hat(x)``.
        total_tokens: sum of the scored tokens (``num_targets_fn``).
        nll_per_token: ``total_nll / total_tokens``.
        ppl: ``exp(nll_per_token)``.
        n_examples: examples scored.
        log_z: ``log Z(alpha)`` used (:class:`~latentebm.metrics.ais.AISEstimate` as a dict).
        mean_ess: mean over examples of the chains' effective sample size (of ``n_chains``).
        mean_acceptance: mean HMC acceptance rate.
        log_likelihoods: ``log p_hat(x)`` of every example, in order.
        std_errors: each example's standard error: chain-to-chain, and float32 rounding
            (:data:`ROUNDING`).
        settings: the estimator's settings.
        reference_share: ``init: both`` or ``pilot``: the share of examples whose estimate
            came from the reference path (else from the Laplace start); None otherwise.
    """

    nll_per_example: float
    std_error: float
    total_nll: float
    total_tokens: int
    nll_per_token: float
    ppl: float
    n_examples: int
    log_z: dict[str, Any]
    mean_ess: float
    mean_acceptance: float
    log_likelihoods: list[float]
    std_errors: list[float]
    settings: dict[str, Any]
    reference_share: float | None = None

    def as_dict(self, per_example: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not per_example:
            out.pop("log_likelihoods")
            out.pop("std_errors")
        return out


def evaluate_marginal_nll(
    model: LatentEBM,
    batches: Iterable[Tensor],
    num_targets_fn: Callable[[Tensor], Tensor | int],
    settings: AISSettings | None = None,
    *,
    log_z: AISEstimate | None = None,
    log_z_settings: LogPartitionSettings | None = None,
    generator: torch.Generator | None = None,
) -> MarginalNLLResult:
    """``-log p(x)`` per example and perplexity of ``batches`` by AIS (module docstring).

    ``log Z(alpha)`` by :func:`ais_log_partition` (once) unless given. A model without a latent
    variable (``z_dim == 0``) is scored exactly.
    """
    settings = settings or AISSettings()
    device = model.device
    if log_z is None:
        log_z = ais_log_partition(model.prior, log_z_settings, generator=generator)
    log_ps: list[Tensor] = []
    ses: list[Tensor] = []
    total_tokens, ess_sum, acceptance_sum, n_batches = 0, 0.0, 0.0, 0
    reference_chosen: list[Tensor] = []
    with eval_mode(model):
        for batch in batches:
            x = batch.to(device)
            if model.z_dim == 0:
                with torch.no_grad():
                    empty = torch.zeros(x.shape[0], 0, device=device)
                    log_p = model.generator.log_likelihood(x, empty).double()
                se, ess, acceptance = torch.zeros_like(log_p), float("nan"), float("nan")
            else:
                estimate = ais_log_joint_normaliser(model, x, settings, generator=generator)
                log_p = estimate.summary.value - log_z.value
                rounding = ROUNDING * estimate.summary.value.abs()
                se = (estimate.summary.std_error.pow(2) + rounding.pow(2)).sqrt()
                ess = float(estimate.summary.ess.sum())
                acceptance = estimate.acceptance
                ess = ess / x.shape[0]
                if estimate.reference_chosen is not None:
                    reference_chosen.append(estimate.reference_chosen)
            log_ps.append(log_p.cpu())
            ses.append(se.cpu())
            ess_sum += ess * x.shape[0]
            acceptance_sum += acceptance
            n_batches += 1
            total_tokens += int(torch.as_tensor(num_targets_fn(x)).sum())
    if not log_ps:
        raise ValueError("no examples to evaluate")
    log_p_all, se_all = torch.cat(log_ps), torch.cat(ses)
    n = log_p_all.shape[0]
    total_nll = -float(log_p_all.sum())
    nll_per_token = total_nll / total_tokens if total_tokens > 0 else float("nan")
    try:
        ppl = math.exp(nll_per_token)
    except OverflowError:
        ppl = float("inf")
    std_error = math.sqrt(float(se_all.pow(2).sum()) + (n * log_z.std_error) ** 2) / n
    return MarginalNLLResult(
        nll_per_example=total_nll / n,
        std_error=std_error,
        total_nll=total_nll,
        total_tokens=total_tokens,
        nll_per_token=nll_per_token,
        ppl=ppl,
        n_examples=n,
        log_z=log_z.as_dict(),
        mean_ess=ess_sum / n,
        mean_acceptance=acceptance_sum / n_batches,
        log_likelihoods=log_p_all.tolist(),
        std_errors=se_all.tolist(),
        settings={"estimator": "exact"}
        if model.z_dim == 0
        else {"estimator": "ais", **settings.as_dict()},
        reference_share=float(torch.cat(reference_chosen).double().mean())
        if reference_chosen
        else None,
    )
