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
* ``laplace`` (default): a Gaussian ``q(z | x) = N(m, widen^2 H^-1)`` per example, ``m`` the
  mode of ``log p(x, z)`` found by Adam from a few starts, ``H`` the negative Hessian there by
  central differences of the gradient in two passes (:func:`fit_laplace`). The
  path is ``q^(1 - b) (joint)^b``; the chains run in the coordinates ``u`` with ``z = m + L u``,
  ``L L^T = widen^2 H^-1``, so HMC sees a roughly isotropic target. ``q`` depends on ``x`` only
  (not on the AIS chains), so the estimate stays unbiased; a poor ``q`` (a missed mode) costs
  tightness, not validity, and BDMC measures it.
* ``reference``: the textbook path from ``N(0, sigma^2 I)`` (Wu et al. 2017), first switching
  on the tilt ``f`` (``prior_temperatures`` steps, cheap: no decoder call), then the
  likelihood. It needs many more temperatures when ``x`` is informative about ``z``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from latentebm.langevin import eval_mode, frozen
from latentebm.metrics.ais import (
    AISEstimate,
    HMCSettings,
    LogMeanExp,
    Schedule,
    ScheduleShape,
    anneal,
    log_mean_exp,
    staged_schedule,
    temperatures,
)
from latentebm.metrics.nll import GaussianProposal
from latentebm.model import LatentEBM
from latentebm.prior import GaussianPrior
from latentebm.progress import report_within

AISInit = Literal["laplace", "reference"]
ROUNDING = 1e-6
"""Relative rounding error of a float32 log density summed over many terms (measured: up to
8e-7 of ``|log p(x)|`` on the linear-Gaussian test model, whose estimate is otherwise exact);
added in quadrature to each example's standard error."""
_LOG_2PI = math.log(2.0 * math.pi)
SEQUENCE_TOKENS_PER_ROW = 64
"""Token sequences longer than this are scored in proportionally fewer (example, chain) pairs
per chunk (:class:`_Joint`): the memory of a chunk stays that of ``batch_size`` sequences of 64
tokens."""
REFERENCE_FLOATS_PER_TOKEN = 4256
"""Activation floats per token of ``recipes/ptb.yaml``'s LSTM decoder (embedding 128, z 32,
hidden 512: ``activation_floats_per_token``). A generator that keeps more per token is scored
in proportionally fewer rows per chunk (:class:`_Joint`), so a chunk's memory stays that of the
PTB model's: at Yahoo's sizes (embedding 512, hidden 1024) the rows per chunk halve (one chunk
of 81 rows of 200-word documents took 0.92 GiB above the loaded model in a scratch measurement;
docs/RESULTS.md section 15b)."""


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class AISSettings:
    """Settings of the per-example AIS estimate of ``log (Z p(x))``.

    Attributes:
        init: where the chains start (module docstring): ``laplace`` or ``reference``.
        n_chains: independent chains per example (their spread gives the standard error).
        n_temperatures: transitions of the likelihood path.
        schedule: spacing of its temperatures (:func:`~latentebm.metrics.ais.temperatures`).
        prior_temperatures: ``reference`` only: transitions that switch on the tilt ``f``.
        leapfrog_steps: HMC leapfrog steps per transition (1: MALA).
        initial_step_size: first leapfrog step size (in whitened units; None: ``d^(-1/4)``).
        target_acceptance: HMC acceptance rate the step sizes adapt toward.
        adapt_factor: per-transition step-size change (:class:`~latentebm.metrics.ais.HMCSettings`).
        laplace_steps: Adam steps of the mode search (``laplace``).
        laplace_starts: starts of the mode search per example: the prior's mean, then draws of
            ``N(0, sigma^2 I)``; the best end is the Laplace fit's centre, distinct other ends
            enter the start density as further mixture components. 8: on the ground truth's
            multimodal posteriors (docs/RESULTS.md section 12) 2 starts left the NLL 4.2 nats
            per example too high and 8 left 0.6, for 1.4x the CPU time.
        laplace_lr: Adam learning rate of the mode search, in units of ``sigma``.
        widen: factor on the Laplace standard deviations.
        defensive: weight of ``N(0, sigma^2 I)`` in the start density of ``laplace``:
            ``q = (1 - defensive) N(m, L L^T) + defensive N(0, sigma^2 I)`` (defensive
            importance sampling, Hesterberg 1995), so chains also start where the mode search
            did not look (other modes of the posterior); 0: the Laplace fit alone. 0.3 with
            12 chains (the defaults): on a PTB model whose posteriors are rugged the BDMC gap
            fell from 39 to 10 nats per sentence (docs/RESULTS.md section 12b) and on the
            ground truth's multimodal posteriors the error from 0.64 to 0.34, while the
            linear-Gaussian closed form stays within 0.15 nats with its error bars covering the
            truth in 93 % of estimates (8 chains cover it in only 88 %: the chains that start at
            the reference mostly carry no weight).
        batch_size: most (example, chain) pairs given to the generator at once; for token
            sequences longer than :data:`SEQUENCE_TOKENS_PER_ROW` fewer, in proportion, so that
            a chunk of long documents holds no more tokens than ``batch_size`` sequences of
            that length (the decoder keeps activations per token for the gradient to z), and
            fewer again for decoders wider than :data:`REFERENCE_FLOATS_PER_TOKEN`.
    """

    init: AISInit = "laplace"
    n_chains: int = 12
    n_temperatures: int = 25
    schedule: ScheduleShape = "sigmoid"
    prior_temperatures: int = 100
    leapfrog_steps: int = 2
    initial_step_size: float | None = None
    target_acceptance: float = 0.65
    adapt_factor: float = 1.1
    laplace_steps: int = 50
    laplace_starts: int = 8
    laplace_lr: float = 0.1
    widen: float = 1.0
    defensive: float = 0.3
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.init not in ("laplace", "reference"):
            raise ValueError(f"AIS init must be 'laplace' or 'reference', got {self.init!r}")
        for name in ("n_temperatures", "prior_temperatures", "batch_size", "laplace_starts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_chains < 2:
            raise ValueError(f"n_chains must be >= 2 (for a standard error), got {self.n_chains}")
        if self.laplace_steps < 0:
            raise ValueError(f"laplace_steps must be >= 0, got {self.laplace_steps}")
        if not 0.0 <= self.defensive < 1.0:
            raise ValueError(f"defensive must be in [0, 1), got {self.defensive}")
        if not self.widen > 0 or not self.laplace_lr > 0:
            raise ValueError("widen and laplace_lr must be > 0")
        self.hmc()  # validates the HMC fields

    def hmc(self) -> HMCSettings:
        return HMCSettings(
            self.leapfrog_steps,
            self.initial_step_size,
            self.target_acceptance,
            self.adapt_factor,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LogPartitionSettings:
    """Settings of the AIS estimate of ``log Z(alpha)`` (the prior alone: no decoder call).

    Attributes:
        n_chains: independent chains (all in one step-size group).
        n_temperatures: transitions from ``N(0, sigma^2 I)`` to ``exp(f) N(0, sigma^2 I)``.
        schedule: spacing of the temperatures.
        leapfrog_steps, initial_step_size, target_acceptance, adapt_factor: HMC settings.
    """

    n_chains: int = 1024
    n_temperatures: int = 1000
    schedule: ScheduleShape = "sigmoid"
    leapfrog_steps: int = 2
    initial_step_size: float | None = None
    target_acceptance: float = 0.65
    adapt_factor: float = 1.02

    def __post_init__(self) -> None:
        if self.n_chains < 2:
            raise ValueError(f"log Z: n_chains must be >= 2, got {self.n_chains}")
        if self.n_temperatures < 1:
            raise ValueError(f"log Z: n_temperatures must be >= 1, got {self.n_temperatures}")
        self.hmc()

    def hmc(self) -> HMCSettings:
        return HMCSettings(
            self.leapfrog_steps,
            self.initial_step_size,
            self.target_acceptance,
            self.adapt_factor,
        )


# ----------------------------------------------------------------------------- log Z(alpha)
def _energy_term(prior: GaussianPrior) -> Callable[[Tensor, bool], tuple[Tensor, Tensor | None]]:
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
        result = anneal(
            [_energy_term(prior)], schedule, u0, hmc=settings.hmc(), generator=generator
        )
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


# ----------------------------------------------------------------------------- the joint
class _Joint:
    """``log p_beta(x_r | z) + f(z) - ||z||^2 / (2 sigma^2) - (d/2) log(2 pi sigma^2)`` for the
    rows ``r`` of a chain batch (row ``r`` scores example ``r // n_chains``), with gradients in
    ``z``; the generator sees at most ``batch_size`` rows at once (fewer for token sequences
    longer than :data:`SEQUENCE_TOKENS_PER_ROW` and for decoders that keep more activations
    per token than :data:`REFERENCE_FLOATS_PER_TOKEN`)."""

    def __init__(self, model: LatentEBM, x: Tensor, n_chains: int, batch_size: int) -> None:
        self.model, self.x, self.k = model, x, n_chains
        length = x.shape[1] if x.dim() == 2 and not x.is_floating_point() else 0  # tokens
        if length > SEQUENCE_TOKENS_PER_ROW:
            batch_size = max(1, batch_size * SEQUENCE_TOKENS_PER_ROW // length)
        width = getattr(model.generator, "activation_floats_per_token", None)
        if length and isinstance(width, int) and width > REFERENCE_FLOATS_PER_TOKEN:
            batch_size = max(1, batch_size * REFERENCE_FLOATS_PER_TOKEN // width)
        self.batch_size = batch_size
        self.sigma = model.prior.prior_sigma
        self.constant = 0.5 * model.z_dim * math.log(2 * math.pi * self.sigma**2)

    def _x_rows(self, start: int, stop: int) -> Tensor:
        rows = torch.arange(start, stop, device=self.x.device) // self.k
        return self.x.index_select(0, rows)

    def likelihood(self, z: Tensor, with_grad: bool = True) -> tuple[Tensor, Tensor | None]:
        """``log p_beta(x | z)`` per row and its gradient."""
        return self._chunked(z, with_grad, prior=False)

    def log_joint(self, z: Tensor, with_grad: bool = True) -> tuple[Tensor, Tensor | None]:
        """The normalised-reference joint ``log p_beta(x|z) + f(z) + log N(z; 0, sigma^2 I)``
        (``log p(x, z) + log Z``), per row, and its gradient."""
        value, grad = self._chunked(z, with_grad, prior=True)
        return value - self.constant, grad

    def _chunked(self, z: Tensor, with_grad: bool, prior: bool) -> tuple[Tensor, Tensor | None]:
        values: list[Tensor] = []
        grads: list[Tensor] = []
        generator, model_prior = self.model.generator, self.model.prior
        for start in range(0, z.shape[0], self.batch_size):
            stop = min(start + self.batch_size, z.shape[0])
            x_rows = self._x_rows(start, stop)
            z_rows = z[start:stop].detach()
            if with_grad:
                z_rows.requires_grad_(True)
            with torch.set_grad_enabled(with_grad):
                value = generator.log_likelihood(x_rows, z_rows).double()
                if prior:
                    value = value + model_prior.log_density(z_rows).double()
                if with_grad:
                    (grad,) = torch.autograd.grad(value.sum(), z_rows)
                    grads.append(grad.detach())
            values.append(value.detach())
        return torch.cat(values), (torch.cat(grads) if with_grad else None)


@dataclass
class LaplaceFit:
    """What :func:`fit_laplace` found for each example.

    Attributes:
        proposal: ``N(m, widen^2 H^-1)`` at the best mode (``mean`` ``(B, d)``, ``scale_tril``
            ``(B, d, d)``), float64.
        modes: ``(B, S, d)`` the end of every mode search (duplicates of a better one removed:
            their weight is ``-inf``), float64.
        log_weights: ``(B, S)`` normalised log weights of the modes, ``log p(x, m_s)`` up to a
            constant (every mode gets the best mode's covariance, so this is the Laplace
            estimate of each mode's share of the posterior mass).
    """

    proposal: GaussianProposal
    modes: Tensor
    log_weights: Tensor


def fit_laplace(
    model: LatentEBM,
    x: Tensor,
    settings: AISSettings | None = None,
    *,
    generator: torch.Generator | None = None,
) -> LaplaceFit:
    """Modes of ``p(z | x)`` and a Gaussian ``N(m, widen^2 H^-1)`` at the best, per example.

    ``m``: the best of ``laplace_starts`` Adam runs (``laplace_steps`` steps, learning rate
    ``laplace_lr * sigma``) maximising ``log p(x, z)``, started at 0 and at reference draws; the
    other runs' ends are kept as further modes unless within Mahalanobis distance 1 of a better
    one. ``H``: central differences of the gradient at ``m`` (:func:`_negative_hessian`), first
    along the axes with steps ``0.1 sigma``, then along that estimate's eigenvectors with steps
    of half the posterior standard deviation it implies (within ``[1e-3, 0.5] sigma``);
    eigenvalues clamped below at ``0.01 / sigma^2``.
    """
    settings = settings or AISSettings()
    batch, d = x.shape[0], model.z_dim
    sigma = model.prior.prior_sigma
    starts = settings.laplace_starts
    with eval_mode(model), frozen(model):
        joint = _Joint(model, x, starts, settings.batch_size)
        z0 = model.prior.sample_reference(batch * starts, generator=generator, device=model.device)
        z0.view(batch, starts, d)[:, 0] = 0.0
        z = z0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=settings.laplace_lr * sigma)
        decay = 0.1 ** (1.0 / max(settings.laplace_steps, 1))  # to a tenth of the rate
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, decay)
        for step in range(settings.laplace_steps):
            report_within(step, settings.laplace_steps)
            _, grad = joint.log_joint(z.detach())
            assert grad is not None
            z.grad = -grad.to(z.dtype)
            optimizer.step()
            schedule.step()
        value, _ = joint.log_joint(z.detach(), with_grad=False)
        value = value.view(batch, starts)
        modes = z.detach().double().view(batch, starts, d)
        order = value.argsort(dim=1, descending=True)
        value = value.gather(1, order)
        modes = modes.gather(1, order.unsqueeze(-1).expand(-1, -1, d))
        mode = modes[:, 0].float()
        eye = torch.eye(d, dtype=torch.float64, device=x.device).expand(batch, d, d)
        steps = torch.full((batch, d), 0.1 * sigma, dtype=torch.float64, device=x.device)
        hessian, _ = _negative_hessian(model, x, mode, eye, steps, settings.batch_size)
        # second pass: along the first pass's eigenvectors, steps of half a posterior sd
        eigenvalues, vectors = torch.linalg.eigh(hessian)
        eigenvalues = eigenvalues.clamp_min(0.01 / sigma**2)
        steps = (0.5 / eigenvalues.sqrt()).clamp(1e-3 * sigma, 0.5 * sigma)
        hessian, grad = _negative_hessian(model, x, mode, vectors, steps, settings.batch_size)
        eigenvalues, vectors = torch.linalg.eigh(hessian)
        eigenvalues = eigenvalues.clamp_min(0.01 / sigma**2)
        # a Newton step m + t H^-1 g (t = 1: exact for a Gaussian posterior; halved twice if
        # it does not raise log p(x, z))
        newton = (
            vectors
            @ ((vectors.transpose(1, 2) @ grad.unsqueeze(-1)).squeeze(-1) / eigenvalues).unsqueeze(
                -1
            )
        ).squeeze(-1)
        single = _Joint(model, x, 1, settings.batch_size)
        for scale in (1.0, 0.5, 0.25):
            candidate = modes[:, 0] + scale * newton
            new_value, _ = single.log_joint(candidate.float(), with_grad=False)
            better = new_value > value[:, 0]
            modes[:, 0] = torch.where(better.unsqueeze(1), candidate, modes[:, 0])
            value[:, 0] = torch.where(better, new_value, value[:, 0])
            newton = torch.where(better.unsqueeze(1), torch.zeros_like(newton), newton)
    cov = (vectors * (settings.widen**2 / eigenvalues).unsqueeze(1)) @ vectors.transpose(1, 2)
    cov = 0.5 * (cov + cov.transpose(1, 2))
    tril = torch.linalg.cholesky(cov)
    # drop modes within Mahalanobis distance 1 (under the best mode's covariance) of a better one
    white = torch.linalg.solve_triangular(
        tril.unsqueeze(1), modes.unsqueeze(-1), upper=False
    ).squeeze(-1)  # (B, S, d)
    distance = torch.cdist(white, white)  # (B, S, S)
    keep = torch.ones(batch, starts, dtype=torch.bool, device=x.device)
    for s_idx in range(1, starts):
        earlier = distance[:, s_idx, :s_idx] < 1.0
        keep[:, s_idx] = ~(earlier & keep[:, :s_idx]).any(dim=1)
    log_weights = torch.where(keep, value, torch.full_like(value, -math.inf))
    log_weights = log_weights - torch.logsumexp(log_weights, dim=1, keepdim=True)
    return LaplaceFit(
        proposal=GaussianProposal(mean=modes[:, 0].clone(), scale_tril=tril),
        modes=modes,
        log_weights=log_weights,
    )


def _negative_hessian(
    model: LatentEBM,
    x: Tensor,
    mode: Tensor,
    directions: Tensor,
    steps: Tensor,
    batch_size: int,
) -> tuple[Tensor, Tensor]:
    """``-d^2 log p(x, z) / dz^2`` at ``mode`` by central differences of the gradient along
    the orthonormal columns ``v_i`` of ``directions`` ``(B, d, d)`` with steps ``h_i``
    (``steps``, ``(B, d)``): ``H v_i = (g(m + h_i v_i) - g(m - h_i v_i)) / (2 h_i)``, then
    ``H = (H V) V^T``, symmetrised: ``(B, d, d)`` float64; and the gradient at ``mode``
    estimated as the mean of the ``2 d`` gradients (exact for a quadratic), ``(B, d)``.

    The log density of a latent EBM is only piecewise smooth (LeakyReLU energies), so steps
    much smaller than the posterior's width see kinks, not curvature: the caller sizes them.
    """
    batch, d = mode.shape
    offsets = (directions * steps.unsqueeze(1)).transpose(1, 2)  # (B, d: direction i, d)
    centre = mode.double().unsqueeze(1)
    points = torch.cat([centre + offsets, centre - offsets], dim=1).to(mode.dtype)
    joint = _Joint(model, x, 2 * d, batch_size)
    _, grad = joint.log_joint(points.reshape(batch * 2 * d, d))
    assert grad is not None
    grad = grad.double().view(batch, 2, d, d)  # [b, sign, direction i, component j]
    h_v = ((grad[:, 0] - grad[:, 1]) / (2 * steps.unsqueeze(-1))).transpose(1, 2)  # H V
    hessian = h_v @ directions.transpose(1, 2)
    return -0.5 * (hessian + hessian.transpose(1, 2)), grad.mean(dim=(1, 2))


@dataclass
class JointEstimate:
    """Per-example AIS estimate of ``log (Z(alpha) p(x))``.

    Attributes:
        log_weights: ``(B, K)`` chain log weights.
        summary: value, standard error and ESS per example (:class:`LogMeanExp`); for a reverse
            run the value is the upper bound ``-log mean exp(-log w)`` and the log weights are
            those of ``1 / (Z p(x))``.
        acceptance: mean HMC acceptance rate.
        gradient_evaluations: per chain.
    """

    log_weights: Tensor
    summary: LogMeanExp
    acceptance: float
    gradient_evaluations: int


def ais_log_joint_normaliser(
    model: LatentEBM,
    x: Tensor,
    settings: AISSettings | None = None,
    *,
    generator: torch.Generator | None = None,
    z_exact: Tensor | None = None,
    proposal: LaplaceFit | None = None,
) -> JointEstimate:
    """AIS estimate of ``log (Z(alpha) p(x_i))`` for each row of ``x`` (module docstring).

    Forward (default): a stochastic lower bound. With ``z_exact`` (``(B, d)``, an exact draw of
    ``p(z | x_i)`` per example: data simulated from the model) the path runs in reverse from it
    (all ``n_chains`` chains of an example start there): a stochastic upper bound (BDMC).
    ``proposal``: the Laplace fit to use (``init: laplace``), e.g. shared by a forward and a
    reverse run; fitted here when None.

    The model is in eval mode, its parameters frozen: only ``z`` is differentiated.
    """
    settings = settings or AISSettings()
    k, batch, d = settings.n_chains, x.shape[0], model.z_dim
    sigma = model.prior.prior_sigma
    groups = torch.arange(batch, device=x.device).repeat_interleave(k)
    with eval_mode(model), frozen(model):
        joint = _Joint(model, x, k, settings.batch_size)
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
                terms.insert(0, _energy_term(model.prior))
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


def _device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


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
    )
