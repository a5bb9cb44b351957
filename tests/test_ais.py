"""Tests of the AIS marginal likelihood, log Z(alpha) by AIS, and BDMC (latentebm.metrics).

Closed forms:
* linear-Gaussian latent model with a quadratic tilt f(z) = -(c/2) ||z||^2 (see tests/test_nll.py):
  log Z = -(d/2) log(1 + c sigma^2), p(x) = N(b, v W W^T + tau^2 I), 1/v = 1/sigma^2 + c;
* a Gaussian-mixture prior (Z = 1 exactly) with a linear-Gaussian likelihood:
  p(x) = sum_k pi_k N(x; W mu_k + b, s^2 W W^T + tau^2 I);
* a 2-dimensional z: log p(x) and log Z by quadrature on a fine grid (the LSTM text path).

Seeds are fixed, so every outcome is deterministic; tolerances are a few standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from latentebm.generators.lstm import LSTMDecoder
from latentebm.langevin import LangevinSampler
from latentebm.metrics.ais import (
    HMCSettings,
    Schedule,
    anneal,
    log_mean_exp,
    staged_schedule,
    temperatures,
)
from latentebm.metrics.bdmc import _valid_rows, bdmc, simulate
from latentebm.metrics.gaussian_proposal import GaussianProposal
from latentebm.metrics.joint import Joint
from latentebm.metrics.laplace import LaplaceFit
from latentebm.metrics.marginal import (
    REFERENCE_FLOATS_PER_TOKEN,
    SEQUENCE_TOKENS_PER_ROW,
    AISSettings,
    LogPartitionSettings,
    ais_log_joint_normaliser,
    ais_log_partition,
    evaluate_marginal_nll,
    fit_laplace,
    sample_prior_exact,
)
from latentebm.metrics.quadrature import quadrature_log_marginal
from latentebm.mixture_prior import GaussianMixturePrior, mixture_marginal_linear_gaussian
from latentebm.model import LatentEBM
from latentebm.prior import EnergyPrior, GaussianPrior
from tests.test_langevin import QuadraticPrior
from tests.test_nll import NormalisedLinearGaussian

F64 = torch.float64


class SampleableLinearGaussian(NormalisedLinearGaussian):
    """The normalised linear-Gaussian generator with exact draws ``W z + b + tau eps``."""

    def sample(
        self,
        z: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: bool = False,
        clamp: bool = True,
        **_: object,
    ) -> Tensor:
        mean = self.mean(z)
        if not noise:
            return mean
        return mean + self.tau * torch.randn(mean.shape, generator=generator)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model_of(prior: GaussianPrior, weight: Tensor, bias: Tensor, tau: float) -> LatentEBM:
    return LatentEBM(
        prior,
        SampleableLinearGaussian(weight, bias, tau),
        prior_chain=LangevinSampler(1, 0.4),
        posterior_chain=LangevinSampler(20, 0.1),
    )


# --------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("shape", ["sigmoid", "geometric", "linear"])
def test_temperatures_run_from_exactly_zero_to_one_and_increase(shape: str) -> None:
    betas = temperatures(50, shape)  # type: ignore[arg-type]
    assert betas.shape == (51,)
    assert float(betas[0]) == 0.0 and float(betas[-1]) == 1.0
    assert bool((betas[1:] > betas[:-1]).all())


def test_staged_schedule_switches_terms_on_in_turn_and_reverses() -> None:
    schedule = staged_schedule([temperatures(2, "linear"), temperatures(3, "linear")])
    expected = torch.tensor([[0, 0], [0.5, 0], [1, 0], [1, 1 / 3], [1, 2 / 3], [1, 1]], dtype=F64)
    assert torch.allclose(schedule.betas, expected)
    assert schedule.n_transitions == 5
    assert torch.allclose(schedule.reversed().betas, expected.flip(0))


# --------------------------------------------------------------------------- the chains
def gaussian_term(mean: Tensor, precision: float):  # noqa: ANN201 - a LogTerm
    """``ell(u) = -(precision / 2) ||u - mean||^2 + ||u||^2 / 2`` so that
    ``N(u; 0, I) exp(ell(u))`` is ``N(mean, I / precision)`` up to a known normaliser."""

    def term(u: Tensor, with_grad: bool) -> tuple[Tensor, Tensor]:
        value = -0.5 * precision * (u - mean).pow(2).sum(1) + 0.5 * u.pow(2).sum(1)
        return value, -precision * (u - mean) + u

    return term


def gaussian_log_normaliser(mean: Tensor, precision: float) -> float:
    """``log int N(u; 0, I) exp(ell(u)) du`` for :func:`gaussian_term`."""
    d = mean.shape[0]
    return 0.5 * d * math.log(1 / precision)


def test_hmc_transitions_leave_the_target_invariant() -> None:
    """Chains started from exact draws of N(m, I/p) and moved 50 times stay distributed so."""
    d, precision, n = 3, 4.0, 4000
    mean = torch.tensor([0.5, -1.0, 2.0])
    term = gaussian_term(mean, precision)
    betas = torch.ones(51, 1, dtype=F64)
    start = mean + torch.randn(n, d, generator=seeded(0)) / math.sqrt(precision)
    result = anneal(
        [term],
        Schedule(betas),
        start,
        hmc=HMCSettings(leapfrog_steps=3, initial_step_size=0.4),
        generator=seeded(1),
        transition_at_end=True,
    )
    assert 0.5 < result.acceptance < 0.95
    se_mean = 1 / math.sqrt(precision * n)
    assert torch.allclose(result.z.mean(0), mean, atol=4.5 * se_mean * 2)  # chains correlate
    var = result.z.var(0)
    assert torch.allclose(var, torch.full((d,), 1 / precision), rtol=0.1)
    assert float(result.log_weights.abs().max()) == 0.0  # no temperature changed


@pytest.mark.parametrize("leapfrog", [1, 3])
def test_anneal_estimates_a_known_normaliser(leapfrog: int) -> None:
    d, precision = 4, 25.0
    mean = torch.tensor([1.0, -0.5, 0.0, 2.0])
    exact = gaussian_log_normaliser(mean, precision)
    n_chains = 400
    result = anneal(
        [gaussian_term(mean, precision)],
        staged_schedule([temperatures(300, "geometric")]),
        torch.randn(n_chains, d, generator=seeded(2)),
        hmc=HMCSettings(leapfrog_steps=leapfrog),
        generator=seeded(3),
    )
    summary = log_mean_exp(result.log_weights.view(1, -1))
    assert abs(float(summary.value) - exact) < 4.5 * float(summary.std_error) + 0.02
    assert float(summary.std_error) < 0.1
    assert 0.5 < result.acceptance < 0.8  # adapted toward 0.65


def test_log_mean_exp_matches_its_definition() -> None:
    log_w = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]], dtype=F64)
    out = log_mean_exp(log_w)
    assert torch.allclose(out.value, torch.tensor([math.log(2.0), 1.0], dtype=F64))
    # w = (1/3, 1) -> sd = sqrt(2)/3, mean = 2/3: se = sd / (sqrt(2) mean) = 1/2
    assert torch.allclose(out.std_error, torch.tensor([0.5, 0.0], dtype=F64))
    assert torch.allclose(out.ess, torch.tensor([16 / 10, 2.0], dtype=F64))


# --------------------------------------------------------------------------- log Z(alpha)
@pytest.mark.parametrize("c", [3.0, -0.3])
def test_ais_log_partition_of_a_strong_tilt_matches_the_closed_form(c: float) -> None:
    """d = 32 with c = 3: log Z = -22.18, far out of reach of plain Monte Carlo from N(0, I)."""
    d = 32
    exact = -(d / 2) * math.log(1 + c)
    prior = QuadraticPrior(d, c)
    forward = ais_log_partition(prior, LogPartitionSettings(n_chains=512), generator=seeded(0))
    assert forward.direction == "forward"
    assert abs(forward.value - exact) < 4.5 * forward.std_error + 0.01
    assert forward.std_error < 0.05


def test_reverse_ais_log_partition_from_exact_draws_is_an_upper_bound() -> None:
    d, c = 8, 0.5  # f <= 0 = sup f: rejection sampling accepts Z = 1.5^-4 of the proposals
    exact = -(d / 2) * math.log(1 + c)
    prior = QuadraticPrior(d, c)
    draws = sample_prior_exact(prior, 512, generator=seeded(1))
    assert draws.exceeded == 0
    settings = LogPartitionSettings(n_chains=512, n_temperatures=20)
    reverse = ais_log_partition(prior, settings, generator=seeded(2), z_exact=draws.z)
    forward = ais_log_partition(prior, settings, generator=seeded(3))
    assert reverse.direction == "reverse"
    assert abs(reverse.value - exact) < 4.5 * reverse.std_error + 0.01
    assert forward.value < exact + 4.5 * forward.std_error < reverse.value + 9 * reverse.std_error


def test_ais_log_partition_of_a_mixture_prior_is_zero() -> None:
    prior = GaussianMixturePrior.ring(8, 2.0, 0.3, z_dim=4)
    estimate = ais_log_partition(prior, LogPartitionSettings(n_chains=512), generator=seeded(0))
    assert abs(estimate.value) < 4.5 * estimate.std_error + 0.01


def test_gaussian_prior_has_log_partition_exactly_zero() -> None:
    estimate = ais_log_partition(GaussianPrior(3), generator=seeded(0))
    assert (estimate.value, estimate.std_error) == (0.0, 0.0)


def test_exact_prior_draws_follow_the_tilted_prior() -> None:
    prior = QuadraticPrior(4, 1.5)  # p_alpha = N(0, v I), v = 1 / 2.5; f <= 0 = sup f
    draws = sample_prior_exact(prior, 20_000, generator=seeded(0))
    assert draws.exceeded == 0
    assert draws.bound >= 0.0
    assert draws.z.shape == (20_000, 4)
    assert torch.allclose(draws.z.var(0), torch.full((4,), 1 / 2.5), rtol=0.05)
    assert draws.acceptance == pytest.approx((1 + 1.5) ** -2 * math.exp(-draws.bound), rel=0.05)


# --------------------------------------------------------------------------- log p(x)
def linear_gaussian_problem(
    c: float, d: int = 32, dim_x: int = 64, tau: float = 0.5, n: int = 40
) -> tuple[LatentEBM, Tensor, Tensor, float]:
    """The d = 32, D = 64 model of the issue, with informative posteriors (posterior sd about
    tau / sqrt(D) = 0.06 against the prior's 1)."""
    g = seeded(0)
    weight = torch.randn(dim_x, d, generator=g)
    bias = 0.1 * torch.randn(dim_x, generator=g)
    v = 1 / (1 + c)
    x = (torch.randn(n, d, generator=g) * math.sqrt(v)) @ weight.T + bias
    x = x + tau * torch.randn(n, dim_x, generator=g)
    cov = v * weight.double() @ weight.double().T + tau**2 * torch.eye(dim_x, dtype=F64)
    exact = MultivariateNormal(bias.double(), cov).log_prob(x.double())
    model = model_of(QuadraticPrior(d, c), weight, bias, tau)
    return model, x, exact, -(d / 2) * math.log(1 + c)


@pytest.mark.parametrize("c", [0.0, 1.0])
def test_default_marginal_nll_is_tight_and_its_error_bars_cover_the_truth(c: float) -> None:
    """The issue's criterion: within 0.5 nats per example on average, and the exact value inside
    +-2 reported standard errors in at least 90 % of repeated estimates (3 runs x 40)."""
    model, x, exact, _ = linear_gaussian_problem(c)
    errors, covered = [], []
    for seed in range(3):
        result = evaluate_marginal_nll(
            model, [x[:20], x[20:]], lambda b: b.shape[0], generator=seeded(seed)
        )
        log_p = torch.tensor(result.log_likelihoods, dtype=F64)
        se = (
            torch.tensor(result.std_errors, dtype=F64) ** 2 + result.log_z["std_error"] ** 2
        ).sqrt()
        errors.append(log_p - exact)
        covered.append((log_p - exact).abs() <= 2 * se)
        assert result.nll_per_example == pytest.approx(-float(log_p.mean()))
        assert abs(result.nll_per_example + float(exact.mean())) < 4.5 * result.std_error + 0.02
    error = torch.cat(errors)
    assert float(error.abs().mean()) < 0.5
    assert float(torch.cat(covered).double().mean()) >= 0.9


def test_a_defensive_start_share_keeps_the_estimate_tight() -> None:
    """With a share of N(0, sigma^2 I) mixed into the start density (chains that start far from
    the posterior, weighted by the mixture's exact density), the estimate stays within 0.5 nats
    of the closed form on average, and its mean within the reported error of it."""
    model, x, exact, _ = linear_gaussian_problem(1.0)
    settings = AISSettings(init="laplace", defensive=0.3)
    result = evaluate_marginal_nll(
        model, [x[:20], x[20:]], lambda b: b.shape[0], settings, generator=seeded(5)
    )
    error = torch.tensor(result.log_likelihoods, dtype=F64) - exact
    assert float(error.abs().mean()) < 0.5
    assert abs(float(error.mean())) < 4.5 * result.std_error + 0.05
    assert result.settings["defensive"] == 0.3


def test_reference_start_is_valid_but_needs_many_more_temperatures() -> None:
    """The textbook path from N(0, sigma^2 I) with as many temperatures as the Laplace start
    once needed (25 for the likelihood) is a lower bound that is far too loose on informative
    posteriors, where the Laplace start with the same 25 is within 0.5 nats: the reason the
    default starts at a Laplace fit."""
    model, x, exact, log_z = linear_gaussian_problem(0.0, n=10)
    settings = AISSettings(init="reference", n_temperatures=25)
    estimate = ais_log_joint_normaliser(model, x, settings, generator=seeded(0))
    error = estimate.summary.value - log_z - exact
    assert float(error.mean()) < -5.0  # loose: far below the truth ...
    tight = ais_log_joint_normaliser(
        model, x, AISSettings(init="laplace", n_temperatures=25), generator=seeded(0)
    )
    error = tight.summary.value - log_z - exact
    assert float(error.abs().mean()) < 0.5  # ... the Laplace start with as many is not


def test_both_starts_keep_each_examples_better_estimate() -> None:
    """``init: both`` runs the Laplace start, then the reference path, on the same generator:
    each example's value (and standard error) is the larger forward estimate of the two and
    the smaller reverse one, chosen per example."""
    prior = GaussianMixturePrior.ring(8, 2.0, 0.3)
    g = seeded(1)
    weight, bias = torch.randn(1, 2, generator=g), 0.1 * torch.randn(1, generator=g)
    model = model_of(prior, weight, bias, 0.3)
    data = simulate(model, 12, generator=seeded(4))
    both = AISSettings(init="both", laplace_starts=1, defensive=0.0, reference_temperatures=60)
    laplace_only = AISSettings(init="laplace", laplace_starts=1, defensive=0.0)
    reference_only = AISSettings(init="reference", laplace_starts=1, n_temperatures=60)
    for z_exact in (None, data.z):
        fit = fit_laplace(model, data.x, laplace_only, generator=seeded(0))
        g_both, g_parts = seeded(7), seeded(7)
        combined = ais_log_joint_normaliser(
            model, data.x, both, generator=g_both, z_exact=z_exact, proposal=fit
        )
        parts = [
            ais_log_joint_normaliser(
                model, data.x, settings, generator=g_parts, z_exact=z_exact, proposal=fit
            )
            for settings in (laplace_only, reference_only)
        ]
        values = torch.stack([part.summary.value for part in parts])
        better = values.amax(0) if z_exact is None else values.amin(0)
        torch.testing.assert_close(combined.summary.value, better, rtol=0, atol=0)
        assert combined.reference_chosen is not None
        errors = torch.stack([part.summary.std_error for part in parts])
        pick = combined.reference_chosen.long()
        torch.testing.assert_close(
            combined.summary.std_error, errors.gather(0, pick.view(1, -1)).squeeze(0)
        )
        assert 0 < int(pick.sum()) < len(pick)  # each path wins for some examples here


def ring_seen_through_one_dimension() -> tuple[LatentEBM, Tensor, Tensor]:
    """A ring of 8 Gaussian modes in 2-D seen through one noisy linear dimension: 40 examples
    whose posteriors have separated modes, and their exact log p(x) (Z = 1)."""
    prior = GaussianMixturePrior.ring(8, 2.0, 0.3)
    g = seeded(1)
    weight, bias = torch.randn(1, 2, generator=g), 0.1 * torch.randn(1, generator=g)
    model = model_of(prior, weight, bias, 0.3)
    z = prior.sample(40, generator=g)
    x = z @ weight.T + bias + 0.3 * torch.randn(40, 1, generator=g)
    return model, x, mixture_marginal_linear_gaussian(prior, weight, bias, 0.3, x)


def test_both_starts_are_tight_where_either_start_is() -> None:
    """The default's alternative ``both`` on the two regimes: on the linear-Gaussian closed
    form (where the reference path alone is tens of nats low) it is as tight as the Laplace
    start, and on a ring prior seen through one dimension (posteriors with separated modes)
    with a single mode search and no defensive share, where the Laplace start misses modes, it
    is tighter than the Laplace start; ``evaluate_marginal_nll`` says which path it kept."""
    model, x, exact, _ = linear_gaussian_problem(1.0)
    settings = AISSettings(init="both", reference_temperatures=100)
    result = evaluate_marginal_nll(model, [x], lambda b: b.shape[0], settings, generator=seeded(0))
    error = torch.tensor(result.log_likelihoods, dtype=F64) - exact
    assert float(error.abs().mean()) < 0.5
    assert result.reference_share is not None and result.reference_share < 0.5

    model, x, exact = ring_seen_through_one_dimension()
    # the Laplace path at 200 temperatures (the default when the bounds below were set; with
    # 500 the larger of the two estimates sat 0.18 nats above the truth, 3 standard errors:
    # the overshoot of keeping the larger estimate, docs/metrics.md)
    narrow = {"laplace_starts": 1, "defensive": 0.0, "n_temperatures": 200}
    laplace = ais_log_joint_normaliser(
        model, x, AISSettings(init="laplace", **narrow), generator=seeded(2)
    )
    both = ais_log_joint_normaliser(
        model,
        x,
        AISSettings(init="both", reference_temperatures=100, **narrow),
        generator=seeded(2),
    )
    laplace_error = float((exact - laplace.summary.value).mean())
    both_error = float((exact - both.summary.value).mean())  # > 0: below the truth
    se = float(both.summary.std_error.pow(2).sum().sqrt()) / 40
    # the larger of two estimates may sit above the truth by about the standard error
    assert -2 * se - 0.05 < both_error < 0.2 < laplace_error


def test_pilot_keeps_the_laplace_start_on_gaussian_posteriors() -> None:
    """The default ``pilot``: on the linear-Gaussian closed form (the reference path alone is
    4.2 nats low there with 500 temperatures) every example keeps the Laplace start, so the
    estimate is that start's (within 0.5 nats of the truth)."""
    model, x, exact, _ = linear_gaussian_problem(1.0, n=20)
    assert AISSettings().init == "pilot"
    result = evaluate_marginal_nll(model, [x], lambda b: b.shape[0], generator=seeded(3))
    assert result.reference_share == 0.0
    error = torch.tensor(result.log_likelihoods, dtype=F64) - exact
    assert float(error.abs().mean()) < 0.5


def test_pilot_takes_the_reference_path_where_the_laplace_start_misses_modes() -> None:
    """A ring prior seen through one dimension, a single mode search and no defensive share:
    the Laplace start misses modes (more than 0.2 nats too low on average); the pilot sends
    most examples to the reference path and is about as tight as that path alone. Unlike
    ``both`` it reports a fresh run of the chosen path, so it does not sit above the truth
    beyond its error (``both``, which keeps the larger estimate, measured 0.03 above here)."""
    model, x, exact = ring_seen_through_one_dimension()
    narrow = {"laplace_starts": 1, "defensive": 0.0, "n_temperatures": 200}
    laplace = ais_log_joint_normaliser(
        model, x, AISSettings(init="laplace", **narrow), generator=seeded(2)
    )
    pilot = ais_log_joint_normaliser(
        model, x, AISSettings(reference_temperatures=100, **narrow), generator=seeded(2)
    )
    reference = ais_log_joint_normaliser(
        model, x, AISSettings(init="reference", n_temperatures=100), generator=seeded(2)
    )
    assert pilot.reference_chosen is not None and 0 < int(pilot.reference_chosen.sum()) < 40
    laplace_error = float((exact - laplace.summary.value).mean())  # measured 0.26
    reference_error = float((exact - reference.summary.value).mean())  # 0.13
    pilot_error = float((exact - pilot.summary.value).mean())  # 0.15; > 0: below the truth
    se = float(pilot.summary.std_error.pow(2).sum().sqrt()) / 40  # 0.05
    assert laplace_error > 0.2
    assert -2 * se < pilot_error < min(laplace_error - 0.05, reference_error + 2 * se)


def test_pilot_runs_the_given_path_of_each_example() -> None:
    """With ``reference_rows`` given, ``pilot`` is exactly the chosen path's own run on those
    examples (same generator, same Laplace fit), and reports which path each took."""
    model, x, _, _ = linear_gaussian_problem(0.0, n=6)
    settings = AISSettings(n_chains=3, n_temperatures=20, reference_temperatures=15)
    fit = fit_laplace(model, x, settings, generator=seeded(0))
    for use_reference in (False, True):
        rows = torch.full((6,), use_reference)
        chosen = ais_log_joint_normaliser(
            model, x, settings, generator=seeded(1), proposal=fit, reference_rows=rows
        )
        path = (
            AISSettings(init="reference", n_chains=3, n_temperatures=15)
            if use_reference
            else AISSettings(init="laplace", n_chains=3, n_temperatures=20)
        )
        alone = ais_log_joint_normaliser(model, x, path, generator=seeded(1), proposal=fit)
        torch.testing.assert_close(chosen.log_weights, alone.log_weights, rtol=0, atol=0)
        assert chosen.reference_chosen is not None
        assert bool((chosen.reference_chosen == use_reference).all())
    with pytest.raises(ValueError, match="reference_rows"):
        ais_log_joint_normaliser(model, x, settings, proposal=fit, reference_rows=rows[:3])


def test_pilot_puts_each_path_s_rows_back_in_place() -> None:
    """Examples split between the paths: each example's chains, value and standard error are
    those of its path's run on its own subset (the Laplace subset first, then the reference
    one, on the same generator), forward and in reverse from exact latents."""
    model, x, _, _ = linear_gaussian_problem(0.0, n=6)
    z_exact = torch.randn(6, 32, generator=seeded(9))
    settings = AISSettings(n_chains=3, n_temperatures=20, reference_temperatures=15)
    fit = fit_laplace(model, x, settings, generator=seeded(0))
    rows = torch.tensor([True, False, True, False, False, True])
    laplace_rows, reference_rows = (~rows).nonzero().squeeze(1), rows.nonzero().squeeze(1)
    subset_fit = LaplaceFit(
        proposal=GaussianProposal(
            mean=fit.proposal.mean[laplace_rows], scale_tril=fit.proposal.scale_tril[laplace_rows]
        ),
        modes=fit.modes[laplace_rows],
        log_weights=fit.log_weights[laplace_rows],
    )
    for exact in (None, z_exact):
        chosen = ais_log_joint_normaliser(
            model,
            x,
            settings,
            generator=seeded(1),
            z_exact=exact,
            proposal=fit,
            reference_rows=rows,
        )
        g = seeded(1)
        laplace = ais_log_joint_normaliser(
            model,
            x[laplace_rows],
            AISSettings(init="laplace", n_chains=3, n_temperatures=20),
            generator=g,
            z_exact=None if exact is None else exact[laplace_rows],
            proposal=subset_fit,
        )
        reference = ais_log_joint_normaliser(
            model,
            x[reference_rows],
            AISSettings(init="reference", n_chains=3, n_temperatures=15),
            generator=g,
            z_exact=None if exact is None else exact[reference_rows],
        )
        for part, part_rows in ((laplace, laplace_rows), (reference, reference_rows)):
            torch.testing.assert_close(chosen.log_weights[part_rows], part.log_weights)
            torch.testing.assert_close(chosen.summary.value[part_rows], part.summary.value)
            torch.testing.assert_close(chosen.summary.std_error[part_rows], part.summary.std_error)


@pytest.mark.parametrize(("dim_x", "tau"), [(3, 0.5), (1, 0.3)])
def test_marginal_of_a_mixture_prior_matches_the_closed_form(dim_x: int, tau: float) -> None:
    """A ring of 8 modes in 2-D; with one observed dimension the posteriors have several modes,
    and the error bars (chain-to-chain noise) cover the truth less often: 0.82-0.85 here."""
    prior = GaussianMixturePrior.ring(8, 2.0, 0.3)
    g = seeded(1)
    weight, bias = torch.randn(dim_x, 2, generator=g), 0.1 * torch.randn(dim_x, generator=g)
    model = model_of(prior, weight, bias, tau)
    z = prior.sample(40, generator=g)
    x = z @ weight.T + bias + tau * torch.randn(40, dim_x, generator=g)
    exact = mixture_marginal_linear_gaussian(prior, weight, bias, tau, x)
    settings = AISSettings(laplace_starts=8, n_temperatures=100, widen=1.2)
    estimate = ais_log_joint_normaliser(model, x, settings, generator=seeded(2))
    error = estimate.summary.value - exact  # Z = 1
    assert float(error.abs().mean()) < 0.2
    coverage = float((error.abs() <= 2 * estimate.summary.std_error).double().mean())
    assert coverage >= 0.75


def text_model_2d(tilt: float = 3.0) -> LatentEBM:
    """A tiny LSTM decoder with z in 2-D (quadrature is exact enough) and a visible tilt."""
    torch.manual_seed(0)
    decoder = LSTMDecoder(
        LSTMDecoder.Config(embedding_dim=4, hidden_dim=8, max_decode_length=6, init_range=0.8),
        z_dim=2,
        vocab_size=6,
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )
    prior = EnergyPrior(2, hidden_dims=(8,))
    with torch.no_grad():
        prior.f[-1].weight.mul_(tilt)
    return LatentEBM(prior, decoder, LangevinSampler(3, 0.4), LangevinSampler(3, 0.1))


def test_text_marginal_and_log_z_match_quadrature_in_two_dimensions() -> None:
    model = text_model_2d()
    x = torch.tensor(
        [[1, 3, 4, 5, 2, 0], [1, 5, 2, 0, 0, 0], [1, 4, 4, 4, 5, 2], [1, 3, 3, 2, 0, 0]]
    )
    grid = quadrature_log_marginal(model, x, limit=7.0, points=401)
    log_z_exact, exact = grid.log_z, grid.log_marginal
    assert abs(log_z_exact) > 0.05  # the tilt matters
    # the Laplace start alone, and the default (pilot; on its Laplace path 30 % of the chains
    # start at the reference: a little noisier on easy posteriors like these, RESULTS 12b)
    laplace_alone = AISSettings(init="laplace", n_chains=16, defensive=0.0)
    for settings, largest in ((laplace_alone, 0.1), (None, 0.2)):
        result = evaluate_marginal_nll(
            model, [x], model.generator.num_targets, settings, generator=seeded(0)
        )
        assert abs(result.log_z["value"] - log_z_exact) < 4.5 * result.log_z["std_error"] + 0.01
        error = torch.tensor(result.log_likelihoods, dtype=F64) - exact
        se = torch.tensor(result.std_errors, dtype=F64)
        assert float(error.abs().max()) < largest
        assert float(error.abs().mean()) < 0.1
        assert bool((error.abs() < 4.5 * se + 0.02).all())
        assert result.total_tokens == 4 + 2 + 5 + 3
        assert result.ppl == pytest.approx(math.exp(result.total_nll / result.total_tokens))


def test_long_sequences_are_scored_in_proportionally_smaller_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The joint's chunks hold at most ``batch_size`` rows of 64 tokens' worth: long documents
    go in fewer rows at once (memory), with the same values and gradients as one chunk."""
    model = text_model_2d()
    length = 4 * SEQUENCE_TOKENS_PER_ROW  # 256 tokens: a quarter of the rows per chunk
    gen = seeded(1)
    x = torch.randint(3, 6, (3, length), generator=gen)
    x[:, 0], x[:, -1] = 1, 2
    z = torch.randn(3 * 5, 2, generator=gen)
    rows_seen: list[int] = []
    score = model.generator.log_likelihood

    def counting(x_rows: Tensor, z_rows: Tensor) -> Tensor:
        rows_seen.append(x_rows.shape[0])
        return score(x_rows, z_rows)

    whole_value, whole_grad = Joint(model, x, 5, 10_000).log_joint(z)
    monkeypatch.setattr(model.generator, "log_likelihood", counting)
    value, grad = Joint(model, x, 5, 16).log_joint(z)
    assert rows_seen == [4, 4, 4, 3]  # 16 * 64 // 256 = 4 rows per chunk
    torch.testing.assert_close(value, whole_value, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad, whole_grad, rtol=1e-5, atol=1e-5)
    rows_seen.clear()
    short = x[:, :SEQUENCE_TOKENS_PER_ROW]  # 64 tokens: batch_size rows as before
    Joint(model, short, 5, 16).log_joint(z)
    assert rows_seen == [15]
    # a decoder that keeps twice the reference's activations per token: half the rows again
    decoder = type(model.generator)
    width = 2 * REFERENCE_FLOATS_PER_TOKEN
    monkeypatch.setattr(decoder, "activation_floats_per_token", property(lambda self: width))
    rows_seen.clear()
    value, grad = Joint(model, x, 5, 16).log_joint(z)
    assert rows_seen == [2] * 7 + [1]  # 16 * 64 // 256 = 4, then 4 * 4256 // 8512 = 2
    torch.testing.assert_close(value, whole_value, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad, whole_grad, rtol=1e-5, atol=1e-5)


def test_the_lstm_decoders_activation_width_follows_its_sizes() -> None:
    """Table 7's PTB sizes are the reference width; Yahoo's keep about twice as much."""

    def width(**sizes: int) -> int:
        config = LSTMDecoder.Config(**sizes)
        return LSTMDecoder(
            config, z_dim=32, vocab_size=10, pad_id=0, bos_id=1, eos_id=2
        ).activation_floats_per_token

    assert width(embedding_dim=128, hidden_dim=512) == REFERENCE_FLOATS_PER_TOKEN
    assert width(embedding_dim=512, hidden_dim=1024) == 512 + 32 + 8 * 1024
    assert width(embedding_dim=8, hidden_dim=16, num_layers=2) == 2 * (8 + 32 + 8 * 16)


def test_model_without_latent_variable_is_scored_exactly() -> None:
    torch.manual_seed(0)
    decoder = LSTMDecoder(
        LSTMDecoder.Config(embedding_dim=4, hidden_dim=6),
        z_dim=0,
        vocab_size=7,
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )
    model = LatentEBM(GaussianPrior(0), decoder, LangevinSampler(0, 0.4), LangevinSampler(0, 0.1))
    x = torch.tensor([[1, 3, 4, 2], [1, 6, 2, 0]])
    result = evaluate_marginal_nll(model, [x], decoder.num_targets, generator=seeded(0))
    exact = decoder.log_likelihood(x, torch.zeros(2, 0)).double()
    assert result.log_likelihoods == pytest.approx(exact.tolist())
    assert result.std_error == 0.0


def test_laplace_fit_is_exact_for_a_linear_gaussian_posterior() -> None:
    model, x, _, _ = linear_gaussian_problem(1.0, d=4, dim_x=6, n=3)
    fit = fit_laplace(model, x, AISSettings(widen=1.0, laplace_steps=400), generator=seeded(0))
    weight = model.generator.weight.detach().double()
    precision = 2.0 * torch.eye(4, dtype=F64) + weight.T @ weight / 0.25
    cov = torch.linalg.inv(precision)
    mean = (cov @ weight.T @ (x.double() - model.generator.bias.detach().double()).T).T / 0.25
    assert torch.allclose(fit.proposal.mean, mean, atol=2e-3)
    assert torch.allclose(fit.proposal.covariance, cov.expand(3, 4, 4), rtol=2e-2, atol=1e-4)


def test_laplace_fit_reports_its_mode_search_steps() -> None:
    """The mode search (a latent_usage batch's long part) reports its steps to the bar."""
    from latentebm.progress import reporting_within

    model, x, _, _ = linear_gaussian_problem(1.0, d=2, dim_x=3, n=2)
    seen: list[tuple[int, int]] = []
    with reporting_within(lambda done, total: seen.append((done, total))):
        fit_laplace(model, x, AISSettings(laplace_steps=6), generator=seeded(0))
    assert seen == [(step, 6) for step in range(6)]


# --------------------------------------------------------------------------- BDMC
def test_bdmc_sandwiches_the_exact_marginal() -> None:
    prior = GaussianMixturePrior.ring(8, 2.0, 0.3)
    g = seeded(3)
    weight, bias = torch.randn(3, 2, generator=g), 0.1 * torch.randn(3, generator=g)
    model = model_of(prior, weight, bias, 0.5)
    data = simulate(model, 40, generator=seeded(4))
    exact = mixture_marginal_linear_gaussian(prior, weight, bias, 0.5, data.x)
    result = bdmc(
        model,
        data,
        AISSettings(laplace_starts=8),
        log_z_settings=LogPartitionSettings(n_chains=256, n_temperatures=200),
        generator=seeded(5),
    )
    n = 40
    forward_error = float((result.forward - exact).mean())
    reverse_error = float((result.reverse - exact).mean())
    se = float(result.gap.std()) / math.sqrt(n) + 0.02
    assert forward_error < 4.5 * se and reverse_error > -4.5 * se  # lower and upper bound
    assert -4.5 * se < result.summary()["mean_gap"] < 0.3
    assert abs(result.log_z_forward.value) < 0.05 and abs(result.log_z_reverse.value) < 0.05
    # the default (pilot) says which path each example took, shared by both directions
    assert result.reference_chosen is not None and result.reference_chosen.shape == (n,)
    assert result.summary()["reference_share"] == float(result.reference_chosen.double().mean())


def test_bdmc_gap_is_wide_when_the_estimator_is_loose() -> None:
    """The same data with 3 temperatures from the reference: the sandwich opens."""
    prior = GaussianMixturePrior.ring(8, 2.0, 0.3)
    g = seeded(3)
    weight, bias = torch.randn(3, 2, generator=g), 0.1 * torch.randn(3, generator=g)
    model = model_of(prior, weight, bias, 0.5)
    data = simulate(model, 20, generator=seeded(4))
    loose = AISSettings(init="reference", n_temperatures=3, prior_temperatures=3)
    small = LogPartitionSettings(n_chains=64, n_temperatures=20)
    result = bdmc(model, data, loose, log_z_settings=small, generator=seeded(5))
    assert result.summary()["mean_gap"] > 2.0


def test_simulated_sequences_are_exact_draws_with_bos() -> None:
    model = text_model_2d(tilt=1.0)
    data = simulate(model, 30, generator=seeded(0), max_length=6)
    assert data.prior_draws.exceeded == 0
    assert data.x.shape[0] == 30 and data.z.shape == (30, 2)
    assert bool((data.x[:, 0] == 1).all())
    for row in data.x.tolist():
        body = row[1:]
        end = body.index(2)
        assert all(t not in (0, 1) for t in body[:end])
        assert all(t == 0 for t in body[end + 1 :])


def test_valid_rows_rejects_special_tokens_before_eos_and_unfinished_rows() -> None:
    pad, bos, eos = 0, 1, 2
    tokens = torch.tensor(
        [
            [3, 4, eos, pad],  # fine
            [3, pad, 4, eos],  # <pad> before <eos>
            [3, bos, eos, pad],  # <bos> before <eos>
            [3, 4, 5, 3],  # no <eos>
            [eos, pad, pad, pad],  # empty sentence: fine
        ]
    )
    assert _valid_rows(tokens, pad, bos, eos).tolist() == [True, False, False, False, True]


def test_anneal_reports_its_steps_to_a_progress_listener() -> None:
    """Each temperature of the path is reported (a batch's AIS can take a minute; the
    evaluation bar shows it), to whoever listens and to nobody otherwise."""
    from latentebm.progress import reporting_within

    seen: list[tuple[int, int]] = []
    with reporting_within(lambda done, total: seen.append((done, total))):
        anneal(
            [gaussian_term(torch.zeros(2), 4.0)],
            staged_schedule([temperatures(5, "geometric")]),
            torch.randn(3, 2, generator=seeded(0)),
            generator=seeded(1),
        )
    assert seen == [(t, 5) for t in range(5)]
    seen.clear()
    anneal(
        [gaussian_term(torch.zeros(2), 4.0)],
        staged_schedule([temperatures(5, "geometric")]),
        torch.randn(3, 2, generator=seeded(0)),
        generator=seeded(1),
    )
    assert seen == []
