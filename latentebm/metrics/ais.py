r"""Annealed importance sampling (AIS) with HMC transitions, and its reverse (for BDMC).

The path
--------
AIS (Neal 2001, "Annealed importance sampling") estimates the normaliser of an unnormalised
target by moving chains through intermediate densities. Here every target has the form::

    gamma(z) = N(z; 0, sigma^2 I) * exp( sum_j ell_j(z) )

with ``N(0, sigma^2 I)`` the (normalised) reference of the prior and ``ell_j`` log terms: the
energy ``f_alpha(z)`` of the latent EBM prior (Pang et al. 2020, "Learning latent space
energy-based prior model", eq. 2) and the log-likelihood ``log p_beta(x | z)``. The intermediate
densities switch the terms on in turn::

    gamma_t(z) = N(z; 0, sigma^2 I) * exp( sum_j B[t, j] ell_j(z) ),   B[0] = 0,  B[T] = 1

(a :class:`Schedule`: ``B`` has one row per temperature and one column per term; a column rises
from 0 to 1 while the others stay put, so the tilt is switched on first and the likelihood
after it). The normaliser of ``gamma_T`` is ``Z(alpha)`` for the prior's terms alone and
``Z(alpha) p(x)`` with the likelihood. A chain starts from ``z_0 ~ N(0, sigma^2 I)`` and
accumulates::

    log w = sum_{t=1..T} sum_j (B[t, j] - B[t-1, j]) ell_j(z_{t-1}),   z_t ~ K_t(z_{t-1}, .)

where ``K_t`` leaves ``gamma_t`` invariant: Hamiltonian Monte Carlo (HMC, a few leapfrog steps
and a Metropolis-Hastings correction; one leapfrog step is MALA). Then ``E[exp(log w)]`` is the
normaliser, so ``log mean_k exp(log w_k)`` over ``K`` independent chains is a stochastic
*lower* bound of its log (Jensen). Plain unadjusted Langevin steps would not leave ``gamma_t``
invariant and bias the weights; the MH correction is what makes the estimate unbiased.

Step sizes
----------
Each group of chains (the chains of one example) has its own leapfrog step size, multiplied by
``adapt_factor`` after a transition whose acceptance rate (an exponential moving average over
transitions, weight 0.9 on the past) is above ``target_acceptance`` and divided by it otherwise
(with ``adapt_factor = 1.02``, the scheme of Wu,
Burda, Salakhutdinov and Grosse 2017, "On the quantitative analysis of decoder-based generative
models", who target 0.65). The step size of a transition depends on earlier transitions of the
same group, which the textbook proof of unbiasedness does not cover; the reverse runs below
(BDMC) measure what that and every other approximation cost.

Reverse AIS and bidirectional Monte Carlo
-----------------------------------------
Run the same path backwards (``B`` from the last row to the first) from an *exact* sample of
``gamma_T``: the weights then estimate ``1 / normaliser`` without bias, so
``-log mean_k exp(log w_k)`` is a stochastic *upper* bound of the log normaliser (Grosse,
Ghahramani and Adams 2015, "Sandwiching the marginal likelihood using bidirectional Monte
Carlo"). Exact posterior samples exist for data simulated from the model: draw
``z* ~ p_alpha(z)``, then ``x ~ p_beta(x | z*)``; ``z*`` is an exact draw of ``p(z | x)``. The
gap between the reverse and the forward estimate on such data bounds the error of both.

Error bars
----------
With ``K`` chains per estimate, the standard error of ``log mean exp(log w)`` is reported by the
delta method, ``sd(w) / (sqrt(K) mean(w))`` with ``w = exp(log w - max log w)``. It describes
the chain-to-chain noise; the downward bias of the log of a mean (about ``-se^2 / 2``) and any
bias from the adaptation are not in it (BDMC measures them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

from latentebm.progress import report_within

LogTerm = Callable[[Tensor, bool], tuple[Tensor, Tensor | None]]
"""``(z (N, d), with_grad) -> (ell(z) (N,), grad_z ell(z) (N, d) or None)``: one log term."""

ScheduleShape = Literal["sigmoid", "geometric", "linear"]


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class HMCSettings:
    """Hamiltonian Monte Carlo transitions of the annealing path.

    Attributes:
        leapfrog_steps: leapfrog steps per transition (1: MALA); each costs one gradient of
            every active term.
        initial_step_size: leapfrog step size at the first transition (whitened units); None:
            ``d^(-1/4)``, the scaling of HMC's optimal step on a ``d``-dimensional Gaussian.
        target_acceptance: the acceptance rate the step size is adapted toward (0.65: Wu et
            al. 2017).
        adapt_factor: after each transition the step size is multiplied by this or divided by
            it (1.02 in Wu et al. 2017, whose paths have thousands of temperatures; short paths
            need a larger factor to adapt in time).
    """

    leapfrog_steps: int = 2
    initial_step_size: float | None = None
    target_acceptance: float = 0.65
    adapt_factor: float = 1.02

    def __post_init__(self) -> None:
        if self.leapfrog_steps < 1:
            raise ValueError(f"leapfrog_steps must be >= 1, got {self.leapfrog_steps}")
        if not self.adapt_factor >= 1.0:
            raise ValueError(f"adapt_factor must be >= 1, got {self.adapt_factor}")
        if self.initial_step_size is not None and not self.initial_step_size > 0:
            raise ValueError(f"initial_step_size must be > 0, got {self.initial_step_size}")
        if not 0.0 < self.target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must be in (0, 1), got {self.target_acceptance}")


@dataclass(frozen=True)
class Schedule:
    """Temperatures ``B`` of shape ``(T + 1, n_terms)``, float64 (module docstring)."""

    betas: Tensor

    def __post_init__(self) -> None:
        b = self.betas
        if b.dim() != 2 or b.shape[0] < 2:
            raise ValueError(f"a schedule needs shape (T + 1 >= 2, n_terms), got {tuple(b.shape)}")

    @property
    def n_transitions(self) -> int:
        return self.betas.shape[0] - 1

    def reversed(self) -> Schedule:
        """The same path walked backwards (reverse AIS)."""
        return Schedule(self.betas.flip(0))


def temperatures(n: int, shape: ScheduleShape = "sigmoid", *, delta: float = 4.0) -> Tensor:
    """``n + 1`` inverse temperatures from exactly 0 to exactly 1, float64.

    ``sigmoid``: ``s(delta (2 t / n - 1))`` rescaled to [0, 1] (Wu et al. 2017: dense at both
    ends); ``geometric``: 0, then ``n`` values evenly spaced in log from ``1e-4`` to 1 (dense near
    0, where a sharp likelihood changes most); ``linear``: evenly spaced.
    """
    if n < 1:
        raise ValueError(f"the number of temperatures must be >= 1, got {n}")
    t = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
    if shape == "linear":
        return t
    if shape == "sigmoid":
        s = torch.sigmoid(delta * (2 * t - 1))
        out = (s - s[0]) / (s[-1] - s[0])
    elif shape == "geometric":
        if n == 1:
            return t
        out = torch.cat([t.new_zeros(1), torch.logspace(-4, 0, n, dtype=torch.float64)])
    else:
        raise ValueError(f"unknown schedule shape {shape!r} (sigmoid, geometric, linear)")
    out[0], out[-1] = 0.0, 1.0
    return out


def staged_schedule(stages: Sequence[Tensor]) -> Schedule:
    """One column per stage: stage ``j``'s temperatures (0 to 1) run while earlier columns are
    1 and later ones 0. Stages of a single temperature step are allowed."""
    rows: list[Tensor] = [torch.zeros(1, len(stages), dtype=torch.float64)]
    for j, betas in enumerate(stages):
        block = torch.zeros(len(betas) - 1, len(stages), dtype=torch.float64)
        block[:, :j] = 1.0
        block[:, j] = betas[1:]
        rows.append(block)
    return Schedule(torch.cat(rows))


# ----------------------------------------------------------------------------- the chains
@dataclass
class AnnealResult:
    """What :func:`anneal` returns.

    Attributes:
        log_weights: ``(N,)`` float64, one per chain.
        z: ``(N, d)`` final states (in the whitened coordinates ``u`` of :func:`anneal`).
        acceptance: mean acceptance rate over transitions and chains.
        step_sizes: ``(G,)`` final leapfrog step size per group.
        gradient_evaluations: gradient evaluations of the active terms per chain.
    """

    log_weights: Tensor
    z: Tensor
    acceptance: float
    step_sizes: Tensor
    gradient_evaluations: int


def anneal(
    terms: Sequence[LogTerm],
    schedule: Schedule,
    u_init: Tensor,
    *,
    hmc: HMCSettings | None = None,
    groups: Tensor | None = None,
    n_groups: int | None = None,
    generator: torch.Generator | None = None,
    transition_at_end: bool = False,
) -> AnnealResult:
    """Run AIS chains from ``u_init`` along ``schedule``, with the base density ``N(0, I)``.

    The chains live in whitened coordinates ``u``: the caller maps ``u`` to ``z`` inside the
    terms (``z = sigma u`` from the prior's reference, ``z = m + L u`` from a Gaussian fitted to
    the posterior), so the base is always ``N(u; 0, I)`` and one step size suits every
    direction the map has already scaled. ``gamma_t(u) = N(u; 0, I) exp(sum_j B[t, j]
    ell_j(u))``. Forward AIS starts from ``u_init ~ N(0, I)``; reverse AIS
    (``schedule.reversed()``) from exact samples of the last density. No transition runs at the
    last temperature (it would not change the weights) unless ``transition_at_end``.

    Args:
        terms: the log terms ``ell_j(u)``, one per schedule column.
        schedule: temperatures ``B``.
        u_init: ``(N, d)`` initial states.
        hmc: transition settings (``initial_step_size`` in units of ``u``).
        groups: ``(N,)`` group of each chain (chains of one example share a step size);
            default one group.
        n_groups: number of groups (default ``groups.max() + 1``).
        generator: random generator for momenta and acceptance draws.
        transition_at_end: also move the chains at the last temperature.
    """
    hmc = hmc or HMCSettings()
    betas = schedule.betas
    if betas.shape[1] != len(terms):
        raise ValueError(f"the schedule has {betas.shape[1]} columns for {len(terms)} terms")
    n = u_init.shape[0]
    device, dtype = u_init.device, u_init.dtype
    if groups is None:
        groups = torch.zeros(n, dtype=torch.long, device=device)
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    counts = torch.bincount(groups, minlength=n_groups).to(dtype).clamp_min(1.0)
    first = hmc.initial_step_size or u_init.shape[1] ** -0.25
    step = torch.full((n_groups,), first, dtype=dtype, device=device)
    accept_ema = torch.full((n_groups,), hmc.target_acceptance, dtype=dtype, device=device)

    u = u_init.detach().clone()
    log_w = torch.zeros(n, dtype=torch.float64, device=device)
    values: dict[int, Tensor] = {}
    grads: dict[int, Tensor] = {}
    accepted_total, transitions, evaluations = 0.0, 0, 0

    def evaluate(point: Tensor, which: list[int]) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
        vals, grs = {}, {}
        for j in which:
            value, grad = terms[j](point, True)
            assert grad is not None
            vals[j], grs[j] = value.detach().double(), grad.detach().to(dtype)
        return vals, grs

    def log_gamma_grad(point: Tensor, row: Tensor, grs: dict[int, Tensor]) -> Tensor:
        out = -point
        for j, g in grs.items():
            out = out + float(row[j]) * g
        return out

    def log_gamma(point: Tensor, row: Tensor, vals: dict[int, Tensor]) -> Tensor:
        out = -0.5 * point.double().pow(2).sum(1)
        for j, v in vals.items():
            out = out + float(row[j]) * v
        return out

    last = schedule.n_transitions
    for t in range(1, last + 1):
        report_within(t - 1, last)
        row, previous = betas[t], betas[t - 1]
        changed = [j for j in range(len(terms)) if float(row[j]) != float(previous[j])]
        active = [j for j in range(len(terms)) if float(row[j]) != 0.0]
        missing = [j for j in changed if j not in values]
        if missing:
            new_vals, new_grads = evaluate(u, missing)
            evaluations += 1
            values.update(new_vals)
            grads.update(new_grads)
        for j in changed:
            log_w += float(row[j] - previous[j]) * values[j]
        if t == last and not transition_at_end:
            break
        if not active:  # the base itself: exact draws
            u = torch.randn(u.shape, generator=generator, device=device, dtype=dtype)
            values, grads = {}, {}
            continue
        missing = [j for j in active if j not in values]
        if missing:
            new_vals, new_grads = evaluate(u, missing)
            evaluations += 1
            values.update(new_vals)
            grads.update(new_grads)
        current_vals = {j: values[j] for j in active}
        current_grads = {j: grads[j] for j in active}
        eps = step[groups].unsqueeze(1)
        momentum = torch.randn(u.shape, generator=generator, device=device, dtype=dtype)
        p = momentum + 0.5 * eps * log_gamma_grad(u, row, current_grads)
        u_new = u
        new_vals, new_grads = current_vals, current_grads
        for leap in range(hmc.leapfrog_steps):
            u_new = u_new + eps * p
            new_vals, new_grads = evaluate(u_new, active)
            evaluations += 1
            g = log_gamma_grad(u_new, row, new_grads)
            p = p + (eps if leap < hmc.leapfrog_steps - 1 else 0.5 * eps) * g
        log_ratio = (
            log_gamma(u_new, row, new_vals)
            - log_gamma(u, row, current_vals)
            - 0.5 * p.double().pow(2).sum(1)
            + 0.5 * momentum.double().pow(2).sum(1)
        )
        draw = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        accept = torch.isfinite(log_ratio) & (draw.log() < log_ratio)
        u = torch.where(accept.unsqueeze(1), u_new, u)
        values = {j: torch.where(accept, new_vals[j], current_vals[j]) for j in active}
        grads = {
            j: torch.where(accept.unsqueeze(1), new_grads[j], current_grads[j]) for j in active
        }
        rate = torch.zeros(n_groups, dtype=dtype, device=device)
        rate.index_add_(0, groups, accept.to(dtype))
        accept_ema = 0.9 * accept_ema + 0.1 * rate / counts
        up = accept_ema > hmc.target_acceptance
        step = torch.where(up, step * hmc.adapt_factor, step / hmc.adapt_factor)
        accepted_total += float(accept.double().mean())
        transitions += 1
    return AnnealResult(
        log_weights=log_w,
        z=u.detach(),
        acceptance=accepted_total / transitions if transitions else float("nan"),
        step_sizes=step,
        gradient_evaluations=evaluations,
    )


# ----------------------------------------------------------------------------- estimates
@dataclass(frozen=True)
class LogMeanExp:
    """``log mean_k exp(log w_k)`` per row and its delta-method standard error.

    Attributes:
        value: ``(B,)`` float64.
        std_error: ``(B,)`` float64, ``sd(w) / (sqrt(K) mean(w))``.
        ess: ``(B,)`` effective sample size ``(sum w)^2 / sum w^2`` of the ``K`` weights.
    """

    value: Tensor
    std_error: Tensor
    ess: Tensor


def log_mean_exp(log_w: Tensor) -> LogMeanExp:
    """Summarise ``(B, K)`` log weights (``K >= 2``): value, standard error, ESS per row."""
    if log_w.dim() != 2 or log_w.shape[1] < 2:
        raise ValueError(f"need (B, K >= 2) log weights, got {tuple(log_w.shape)}")
    k = log_w.shape[1]
    log_w = log_w.double()
    shift = log_w.max(dim=1, keepdim=True).values
    w = (log_w - shift).exp()
    mean = w.mean(dim=1)
    value = shift.squeeze(1) + mean.log()
    std_error = w.std(dim=1, correction=1) / (math.sqrt(k) * mean)
    ess = w.sum(1).pow(2) / w.pow(2).sum(1)
    return LogMeanExp(value=value, std_error=std_error, ess=ess)


@dataclass(frozen=True)
class AISEstimate:
    """A log normaliser estimated by AIS (one scalar, e.g. ``log Z(alpha)``).

    Attributes:
        value: the estimate (forward: a stochastic lower bound; reverse: an upper bound).
        std_error: its delta-method standard error over chains.
        n_chains: independent chains.
        n_temperatures: transitions of the path.
        direction: ``forward`` or ``reverse``.
        acceptance: mean HMC acceptance rate.
    """

    value: float
    std_error: float
    n_chains: int
    n_temperatures: int
    direction: Literal["forward", "reverse"] = "forward"
    acceptance: float = float("nan")

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)
