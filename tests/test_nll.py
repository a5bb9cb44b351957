"""Tests of the importance-sampled marginal likelihood, NLL and perplexity (latentebm.metrics).

Closed forms (docs/conventions.md, linear-Gaussian latent model): d-dim z, reference
N(0, sigma^2 I), quadratic tilt f(z) = -(c/2) ||z||^2, x = W z + b + N(0, tau^2 I_D). Then

    log Z = -(d/2) log(1 + c sigma^2),       p_alpha = N(0, v I),  1/v = 1/sigma^2 + c,
    p(x) = N(x; b, v W W^T + tau^2 I),       p(z | x) = N(m, P^{-1}),
    P = I / v + W^T W / tau^2,               m = P^{-1} W^T (x - b) / tau^2.

Statistical checks allow N_SE Monte Carlo standard errors (see tests/test_langevin.py); the seeds
are fixed, so outcomes are deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, kl_divergence

from latentebm.langevin import LangevinSampler
from latentebm.metrics import (
    GaussianProposal,
    LogPartitionEstimate,
    estimate_log_likelihood,
    evaluate_nll,
    fit_gaussian,
    fit_proposal,
    importance_log_weights,
    log_joint,
    log_partition,
    log_prior_density,
)
from latentebm.model import LatentEBM
from latentebm.prior import EnergyPrior, GaussianPrior
from tests.test_langevin import (
    LinearGaussianGenerator,
    QuadraticPrior,
    tiny_batch,
    tiny_text_model,
)

N_SE = 4.5
F64 = torch.float64

SIGMA, C, TAU = 1.0, 0.5, 0.5
WEIGHT = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.6, -0.4]])
BIAS = torch.tensor([0.2, -0.1, 0.3])
X = torch.tensor([1.0, -0.5, 0.8])
LOG_Z = -(2 / 2) * math.log(1 + C * SIGMA**2)  # d = 2
V = 1 / (1 / SIGMA**2 + C)
REPEATS = 400  # independent estimates, one per copy of X in the batch


class NormalisedLinearGaussian(LinearGaussianGenerator):
    """``log p(x|z) = -||x - W z - b||^2 / (2 tau^2) - (D/2) log(2 pi tau^2)``: normalised."""

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        d_x = x.shape[1]
        return super().log_likelihood(x, z) - 0.5 * d_x * math.log(2 * math.pi * self.tau**2)


def linear_gaussian_model(chain_steps: int = 200) -> LatentEBM:
    return LatentEBM(
        QuadraticPrior(2, C, prior_sigma=SIGMA),
        NormalisedLinearGaussian(WEIGHT, BIAS, TAU),
        prior_chain=LangevinSampler(1, 0.4),
        posterior_chain=LangevinSampler(chain_steps, 0.2),
    )


def exact_log_marginal() -> float:
    w, b = WEIGHT.double(), BIAS.double()
    cov = V * w @ w.T + TAU**2 * torch.eye(3, dtype=F64)
    return float(MultivariateNormal(b, cov).log_prob(X.double()))


def exact_posterior() -> MultivariateNormal:
    w, b = WEIGHT.double(), BIAS.double()
    prec = torch.eye(2, dtype=F64) / V + w.T @ w / TAU**2
    cov = torch.linalg.inv(prec)
    return MultivariateNormal(cov @ w.T @ (X.double() - b) / TAU**2, cov)


def repeated_x() -> Tensor:
    return X.expand(REPEATS, 3).contiguous()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- log Z
@pytest.mark.parametrize("c", [0.5, -0.2])
def test_log_partition_matches_closed_form_and_its_standard_error(c: float) -> None:
    d, n, n_seeds = 4, 20_000, 16
    prior = QuadraticPrior(d, c, prior_sigma=SIGMA)
    exact = -(d / 2) * math.log(1 + c * SIGMA**2)
    # Delta method with exact moments: E[e^f] = (1 + c s^2)^(-d/2), E[e^2f] = (1 + 2 c s^2)^(-d/2)
    rel_var = (1 + 2 * c * SIGMA**2) ** (-d / 2) / (1 + c * SIGMA**2) ** (-d) - 1
    se_true = math.sqrt(rel_var / n)
    estimates = [
        log_partition(prior, n, batch_size=7_000, generator=seeded(s)) for s in range(n_seeds)
    ]
    values = torch.tensor([e.value for e in estimates], dtype=F64)
    for e in estimates:
        assert e.n_samples == n
        assert abs(e.value - exact) < N_SE * e.std_error
        assert e.std_error == pytest.approx(se_true, rel=0.2)  # the reported SE is right
    # ... and it describes the spread over seeds (sd of 16 values: within [0.45, 1.6] of the
    # truth with probability > 0.999)
    assert 0.45 * se_true < float(values.std()) < 1.6 * se_true
    assert abs(float(values.mean()) - exact) < N_SE * se_true / math.sqrt(n_seeds)


def test_log_partition_of_gaussian_prior_is_exactly_zero() -> None:
    assert log_partition(GaussianPrior(3, 0.7)) == LogPartitionEstimate(0.0, 0.0, 0)
    # zero energy through the Monte Carlo path: every weight is 1, so exactly 0 too
    prior = EnergyPrior(3, hidden_dims=(4,))
    for p in prior.parameters():
        torch.nn.init.zeros_(p)
    estimate = log_partition(prior, 1_000, batch_size=300, generator=seeded(0))
    assert estimate == LogPartitionEstimate(0.0, 0.0, 1_000)
    with pytest.raises(ValueError):
        log_partition(prior, 1)


def test_normalised_log_prior_is_exact() -> None:
    z = torch.randn(50, 2, generator=seeded(0)).double() * 2
    prior = QuadraticPrior(2, C, prior_sigma=SIGMA).double()
    expected = MultivariateNormal(torch.zeros(2, dtype=F64), V * torch.eye(2, dtype=F64))
    torch.testing.assert_close(log_prior_density(prior, z, LOG_Z), expected.log_prob(z))
    sigma = 0.7
    gaussian = GaussianPrior(2, sigma)
    reference = MultivariateNormal(torch.zeros(2, dtype=F64), sigma**2 * torch.eye(2, dtype=F64))
    torch.testing.assert_close(
        log_prior_density(gaussian, z, log_partition(gaussian)), reference.log_prob(z)
    )


# --------------------------------------------------------------------------- proposal
def test_gaussian_proposal_samples_and_density() -> None:
    g = seeded(0)
    batch, d, n = 3, 4, 5
    mean = torch.randn(batch, d, generator=g, dtype=F64)
    tril = torch.randn(batch, d, d, generator=g, dtype=F64).tril(-1)
    tril = tril + torch.diag_embed(torch.rand(batch, d, generator=g, dtype=F64) + 0.5)
    proposal = GaussianProposal(mean, tril)
    replay = seeded(1)
    z = proposal.sample(n, generator=seeded(1))
    eps = torch.randn(batch, n, d, generator=replay, dtype=F64)
    torch.testing.assert_close(z, mean[:, None] + torch.einsum("bij,bnj->bni", tril, eps))
    reference = MultivariateNormal(mean[:, None], scale_tril=tril[:, None])
    torch.testing.assert_close(proposal.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(proposal.covariance, reference.covariance_matrix[:, 0])


def test_fit_gaussian_moments_widening_and_shrinkage() -> None:
    samples = torch.randn(2, 50, 3, generator=seeded(0), dtype=F64) @ torch.tensor(
        [[1.0, 0.8, 0.0], [0.0, 0.6, 0.3], [0.0, 0.0, 0.5]], dtype=F64
    )
    s = torch.stack([torch.cov(x.T) for x in samples])
    fit = fit_gaussian(samples, widen=2.0, shrinkage=0.0, jitter=0.0)
    torch.testing.assert_close(fit.mean, samples.mean(dim=1))
    torch.testing.assert_close(fit.covariance, 4.0 * s)
    diag = fit_gaussian(samples, widen=1.5, covariance="diagonal", jitter=1e-3)
    torch.testing.assert_close(
        diag.covariance, torch.diag_embed(2.25 * s.diagonal(dim1=1, dim2=2) + 1e-3)
    )
    half = fit_gaussian(samples, widen=1.0, shrinkage=0.5, jitter=0.0)
    torch.testing.assert_close(
        half.covariance, 0.5 * s + 0.5 * torch.diag_embed(s.diagonal(0, 1, 2))
    )
    # automatic shrinkage: fewer samples than dimensions still gives a valid Cholesky factor
    few = fit_gaussian(torch.randn(2, 4, 10, generator=seeded(1)))
    assert torch.isfinite(few.scale_tril).all() and (few.scale_tril.diagonal(0, 1, 2) > 0).all()
    with pytest.raises(ValueError):
        fit_gaussian(samples[:, :1])


def test_importance_weights_score_exactly_the_samples_drawn() -> None:
    model = linear_gaussian_model(chain_steps=20)
    x = repeated_x()[:5]
    proposal = fit_proposal(model, x, n_chains=4, generator=seeded(0))
    log_w = importance_log_weights(
        model, x, proposal, 7, log_z=LOG_Z, generator=seeded(1), batch_size=8
    )
    z = proposal.sample(7, generator=seeded(1)).float()
    expected = log_joint(model, x, z, LOG_Z, batch_size=1000) - proposal.log_prob(z)
    torch.testing.assert_close(log_w, expected, rtol=0, atol=1e-9)


def test_log_joint_over_exact_posterior_is_exact_log_marginal() -> None:
    # log p(x, z) - log p(z | x) = log p(x) for every z: checks every constant (Gaussian
    # normalisers of prior and likelihood, log Z) without any Monte Carlo error.
    z = torch.randn(4, 6, 2, generator=seeded(0)) * 1.5
    x = repeated_x()[:4]
    joint = log_joint(linear_gaussian_model(), x, z, LOG_Z, batch_size=5)
    marginal = joint - exact_posterior().log_prob(z.double())
    torch.testing.assert_close(
        marginal, torch.full_like(marginal, exact_log_marginal()), rtol=0, atol=1e-5
    )


# --------------------------------------------------------------------------- the estimator
def test_estimate_matches_closed_form_and_is_a_lower_bound_in_expectation() -> None:
    model, x, exact = linear_gaussian_model(), repeated_x(), exact_log_marginal()
    est = estimate_log_likelihood(
        model, x, n_importance=100, log_z=LOG_Z, generator=seeded(1), batch_size=4096
    )
    assert est.shape == (REPEATS,) and est.dtype == F64
    se = float(est.std()) / math.sqrt(REPEATS)
    mean = float(est.mean())
    # Matches within its Monte Carlo error; the Jensen gap is about Var(log p_hat) / 2.
    assert abs(mean - exact) < N_SE * se + 0.5 * float(est.var())
    assert mean < exact + N_SE * se  # a lower bound in expectation

    # M = 1: E[log w] = log p(x) - KL(q || p(z|x)) exactly, given the fitted q.
    proposal = fit_proposal(model, x, generator=seeded(2), batch_size=4096)
    log_w = importance_log_weights(model, x, proposal, 1, log_z=LOG_Z, generator=seeded(3))[:, 0]
    q = MultivariateNormal(proposal.mean, scale_tril=proposal.scale_tril)
    kl = kl_divergence(q, exact_posterior())
    corrected = log_w + kl
    se_corrected = float(corrected.std()) / math.sqrt(REPEATS)
    assert abs(float(corrected.mean()) - exact) < N_SE * se_corrected
    # ... so one sample is clearly lower than 100: the gap shrinks with M.
    se_one = float(log_w.std()) / math.sqrt(REPEATS)
    assert float(log_w.mean()) < mean - N_SE * math.hypot(se, se_one)
    assert float(kl.mean()) > 0.1


def test_density_of_another_draw_is_caught() -> None:
    # The bug of public code: log q evaluated at a second draw, not at the sample it scores.
    model, x, exact = linear_gaussian_model(), repeated_x(), exact_log_marginal()
    g = seeded(4)
    proposal = fit_proposal(model, x, generator=g, batch_size=4096)
    scored = proposal.sample(100, generator=g).float()
    other = proposal.sample(100, generator=g).float()
    log_w = log_joint(model, x, scored, LOG_Z, batch_size=4096) - proposal.log_prob(other)
    broken = torch.logsumexp(log_w, dim=1) - math.log(100)
    se = float(broken.std()) / math.sqrt(REPEATS)
    assert float(broken.mean()) - exact > 10 * se  # far above the closed form


# --------------------------------------------------------------------------- data-set level
def test_evaluate_nll_on_tiny_lstm() -> None:
    model = tiny_text_model()
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    batches = [tiny_batch(), tiny_batch()[:2]]
    settings = dict(n_importance=5, n_chains=3, chain_steps=4, log_z_samples=2_000, batch_size=7)
    result = evaluate_nll(model, batches, generator=seeded(0), **settings)

    assert result.n_examples == 5 and result.n_importance == 5
    assert result.total_tokens == (4 + 2 + 5) + (4 + 2)  # <eos> counted, <pad> not
    assert result.ppl == pytest.approx(math.exp(result.total_nll / result.total_tokens), rel=1e-12)
    assert result.nll_per_example == pytest.approx(result.total_nll / 5, rel=1e-12)
    assert result.nll_per_example >= 0 and math.isfinite(result.total_nll)
    assert result.log_z_samples == 2_000 and result.log_z_std_error > 0
    assert 1.0 <= result.mean_ess <= 5.0
    assert result.settings["chain_steps"] == 4 and result.settings["widen"] == 1.5
    # left as found: training mode, parameter gradients
    assert all(m.training for m in model.modules())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())

    # reproducible, and the same numbers as the per-batch estimator with that log Z
    log_z = LogPartitionEstimate(result.log_z, result.log_z_std_error, result.log_z_samples)
    again = evaluate_nll(model, batches[:1], log_z=log_z, generator=seeded(1), **settings)
    per_example = estimate_log_likelihood(
        model, tiny_batch(), log_z=log_z, generator=seeded(1), **settings
    )
    assert again.total_nll == pytest.approx(-float(per_example.sum()), rel=1e-12)

    # a Gaussian prior: log Z = 0 exactly, nothing estimated
    gaussian = LatentEBM(
        GaussianPrior(3), model.generator, model.prior_chain, model.posterior_chain
    )
    plain = evaluate_nll(gaussian, batches, model.generator.num_targets, generator=seeded(0))
    assert (plain.log_z, plain.log_z_std_error, plain.log_z_samples) == (0.0, 0.0, 0)
    assert plain.total_tokens == result.total_tokens
