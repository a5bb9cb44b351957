"""Tests of the short-run Langevin sampler (eq. 9 of Pang, Han, Nijkamp, Zhu and Wu (2020),
"Learning Latent Space Energy-Based Prior Model") and of `frozen`.

Convention under test: ``LangevinSampler(K, step_size=a)`` runs
``z <- z + (a^2/2) grad log pi(z) + a * eps``, i.e. eq. 9 with ``s = a^2/2``.

Exact law of the chain on a Gaussian target (used for sharp moment checks).
For ``log pi(z) = -(z - m)^T P (z - m) / 2`` one step is the linear recursion
``z' = A z + s P m + a eps`` with ``A = I - s P`` and ``a^2 = 2 s``. Started from
``N(mu_0, S_0)`` the state after K steps is Gaussian with

    mean_K = m + A^K (mu_0 - m)
    cov_K  = A^K S_0 A^K + C - A^K C A^K,   C = A C A + 2 s I   (stationary covariance).

In the eigenbasis of P (eigenvalue lam) the fixed point is ``C = 2 s / (1 - (1 - s lam)^2)
= 1 / (lam (1 - s lam / 2))``, i.e. ``C = P^{-1} (I - s P / 2)^{-1}``. For an isotropic target of
variance v (lam = 1/v) this is the unadjusted-Langevin bias ``v / (1 - s / (2 v))``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from latentebm.generators.lstm import LSTMDecoder
from latentebm.langevin import (
    LangevinSampler,
    frozen,
    frozen_window,
    gaussian_log_density,
    noise_scale_from_eq9,
)
from latentebm.model import LatentEBM
from latentebm.prior import EnergyPrior, GaussianPrior

# Number of Monte Carlo standard errors allowed in a statistical comparison. Each test makes at
# most ~10 such comparisons; P(|N(0,1)| > 4.5) = 6.8e-6, so a correct sampler fails a given seed
# with probability < 1e-4 (and the seeds are fixed, so the outcome is deterministic).
N_SE = 4.5


# --------------------------------------------------------------------------- helpers
class LinearGaussianGenerator(nn.Module):
    """``p(x | z) = N(x; W z + b, tau^2 I)``.

    ``log_likelihood = -||x - (W z + b)||^2 / (2 tau^2)`` (summed over dims, constant dropped).
    """

    def __init__(self, weight: Tensor, bias: Tensor, tau: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.tau = tau

    def mean(self, z: Tensor) -> Tensor:
        return z @ self.weight.T + self.bias

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        return -(x - self.mean(z)).pow(2).sum(dim=1) / (2 * self.tau**2)

    def sample(self, z: Tensor, **_: object) -> Tensor:
        return self.mean(z)


class QuadraticPrior(GaussianPrior):
    """Tilted Gaussian with ``f(z) = -(c/2) ||z||^2``.

    Then ``p_alpha = N(0, v I)`` with ``1/v = 1/sigma^2 + c`` (docs/conventions.md).
    """

    has_energy = True

    def __init__(self, z_dim: int, c: float, prior_sigma: float = 1.0) -> None:
        super().__init__(z_dim, prior_sigma)
        self.c = nn.Parameter(torch.tensor(float(c)))

    def energy(self, z: Tensor) -> Tensor:
        return -0.5 * self.c * z.pow(2).sum(dim=1)


def zero_energy_prior(z_dim: int, sigma: float) -> EnergyPrior:
    """An `EnergyPrior` whose last layer is zeroed, so f == 0 and p_alpha = N(0, sigma^2 I)."""
    prior = EnergyPrior(z_dim, hidden_dims=(16,), prior_sigma=sigma)
    last = prior.f[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return prior


def clone_generator(g: torch.Generator) -> torch.Generator:
    twin = torch.Generator()
    twin.set_state(g.get_state())
    return twin


def gaussian_chain_law(
    prec: Tensor, m: Tensor, s: float, k: int, mu0: Tensor, cov0: Tensor
) -> tuple[Tensor, Tensor]:
    """Exact mean and covariance after k steps on N(m, prec^{-1}) (see the module docstring)."""
    d = prec.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    a_mat = eye - s * prec
    stationary = torch.linalg.inv(prec) @ torch.linalg.inv(eye - 0.5 * s * prec)
    a_k = torch.linalg.matrix_power(a_mat, k)
    mean = m + a_k @ (mu0 - m)
    cov = a_k @ cov0 @ a_k.T + stationary - a_k @ stationary @ a_k.T
    return mean, 0.5 * (cov + cov.T)


# --------------------------------------------------------------------------- closed forms
def test_stationary_variance_formula_is_the_fixed_point() -> None:
    # v / (1 - s/(2v)) solves V = (1 - s/v)^2 V + 2 s, the variance recursion of the chain.
    for v in (1.0, 0.25, 3.0):
        for s in (0.005, 0.08, 0.3):
            stationary = v / (1 - s / (2 * v))
            assert stationary == pytest.approx((1 - s / v) ** 2 * stationary + 2 * s, rel=1e-12)


# --------------------------------------------------------------------------- prior chain, f = 0
@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_prior_chain_with_zero_energy_has_exact_gaussian_moments(sigma: float) -> None:
    torch.manual_seed(0)
    n_chains, z_dim, n_steps = 16000, 8, 100
    a = 0.4 * sigma  # Table 5's a0 = 0.4 at sigma = 1; relative bias s/(2v) = 0.04 for both
    v = sigma**2
    s = a**2 / 2
    model = LatentEBM(
        zero_energy_prior(z_dim, sigma),
        LinearGaussianGenerator(torch.randn(3, z_dim), torch.zeros(3), tau=1.0),
        prior_chain=LangevinSampler(n_steps, a),
        posterior_chain=LangevinSampler(1, 0.1),
    )
    g = torch.Generator().manual_seed(1234)
    z = model.sample_prior(n_chains, generator=g).z.double()
    assert z.shape == (n_chains, z_dim)

    # Start N(0, v I) (sample_reference), linear chain => z_K ~ N(0, V_K I) exactly, with
    # V_K = rho^{2K} v + (1 - rho^{2K}) V_inf, rho = 1 - s/v, V_inf = v / (1 - s/(2v)).
    rho = 1 - s / v
    v_inf = v / (1 - s / (2 * v))
    v_k = rho ** (2 * n_steps) * v + (1 - rho ** (2 * n_steps)) * v_inf

    # Mean: each coordinate is an average of N iid N(0, V_K): SE = sqrt(V_K / N).
    se_mean = math.sqrt(v_k / n_chains)
    assert z.mean(dim=0).abs().max().item() < N_SE * se_mean

    # Variance about the known mean 0: E[z^2] = V_K and Var[z^2] = 2 V_K^2 for a Gaussian, and
    # coordinates of different chains/dims are independent (f = 0 makes dims independent), so the
    # pooled mean of the N d squares has SE = V_K sqrt(2 / (N d)) (0.40% here).
    pooled = z.pow(2).mean().item()
    se_pooled = v_k * math.sqrt(2 / (n_chains * z_dim))
    assert abs(pooled - v_k) < N_SE * se_pooled
    # Per dimension: SE = V_K sqrt(2 / N).
    per_dim = z.pow(2).mean(dim=0)
    assert (per_dim - v_k).abs().max().item() < N_SE * v_k * math.sqrt(2 / n_chains)
    # The check is sharp enough to see the O(s) bias: the tolerance bands around V_K and the
    # naive target v (4.2% apart) do not overlap (a statement about the formulas, not the data),
    # so a sampler without the bias, or with a wrong drift/noise ratio, would fail.
    assert abs(v_k - v) > 2 * N_SE * se_pooled
    assert abs(pooled - v) > N_SE * se_pooled


@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_chain_from_displaced_start_follows_exact_transient(sigma: float) -> None:
    # From z_0 = 3 (deterministic) on N(0, v I): mean_K = 3 rho^K, var_K = (1 - rho^{2K}) V_inf.
    # With K = 20 the start is still visible (rho^K ~ 0.19), so a wrong drift coefficient
    # (e.g. a or a^2 instead of a^2/2) or a wrong noise scale changes both moments by many SEs.
    torch.manual_seed(0)
    n_chains, z_dim, n_steps = 8000, 4, 20
    v = sigma**2
    a = 0.4 * sigma
    s = a**2 / 2
    sampler = LangevinSampler(n_steps, a)
    g = torch.Generator().manual_seed(7)
    z = sampler.run(
        gaussian_log_density(torch.zeros(z_dim), sigma),
        torch.full((n_chains, z_dim), 3.0),
        generator=g,
    ).z.double()
    rho = 1 - s / v
    mean_k = 3.0 * rho**n_steps
    var_k = (1 - rho ** (2 * n_steps)) * v / (1 - s / (2 * v))
    # SE of the pooled mean of N d iid values: sqrt(var_K / (N d)); of the pooled sample
    # variance: var_K sqrt(2 / (N d)) (up to O(1/N) corrections).
    n_total = n_chains * z_dim
    assert abs(z.mean().item() - mean_k) < N_SE * math.sqrt(var_k / n_total)
    centred = z - z.mean(dim=0)
    assert abs(centred.pow(2).mean().item() - var_k) < N_SE * var_k * math.sqrt(2 / n_total)


# --------------------------------------------------------------------------- posterior chain
def test_posterior_chain_matches_linear_gaussian_closed_form() -> None:
    torch.manual_seed(0)
    sigma, c, tau = 1.0, 0.5, 0.5
    weight = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.6, -0.4]])
    bias = torch.tensor([0.2, -0.1, 0.3])
    x = torch.tensor([1.0, -0.5, 0.8])
    n_chains, n_steps, a = 10000, 1000, 0.1
    s = a**2 / 2

    prior = QuadraticPrior(2, c, prior_sigma=sigma)
    gen = LinearGaussianGenerator(weight, bias, tau)
    model = LatentEBM(prior, gen, LangevinSampler(1, 0.4), LangevinSampler(n_steps, a))
    g = torch.Generator().manual_seed(42)
    z = model.sample_posterior(x.expand(n_chains, 3), generator=g).z.double()

    # Closed form (docs/conventions.md): 1/v = 1/sigma^2 + c, P = I/v + W^T W / tau^2,
    # m = P^{-1} W^T (x - b) / tau^2, posterior covariance P^{-1}.
    w64, b64, x64 = weight.double(), bias.double(), x.double()
    inv_v = 1 / sigma**2 + c
    prec = inv_v * torch.eye(2, dtype=torch.float64) + w64.T @ w64 / tau**2
    cov_true = torch.linalg.inv(prec)
    m_true = cov_true @ w64.T @ (x64 - b64) / tau**2

    # Exact law of the discretised chain started from N(0, sigma^2 I).
    mean_chain, cov_chain = gaussian_chain_law(
        prec,
        m_true,
        s,
        n_steps,
        torch.zeros(2, dtype=torch.float64),
        sigma**2 * torch.eye(2, dtype=torch.float64),
    )
    # The chain has forgotten its start (A^K ~ (1 - s lam_min)^K ~ e^-25) and its covariance bias
    # is O(s lam_max / 2) ~ 2%: it approximates the posterior, which is what the library promises.
    assert torch.allclose(mean_chain, m_true, atol=1e-8)
    assert ((cov_chain - cov_true).abs() / cov_true.diagonal().max()).max() < 0.03

    # Monte Carlo SEs with N iid chains: mean_i: sqrt(C_ii / N); sample covariance entry (i, j)
    # of a Gaussian: sqrt((C_ii C_jj + C_ij^2) / N).
    diag = cov_chain.diagonal()
    se_mean = (diag / n_chains).sqrt()
    se_cov = ((diag[:, None] * diag[None, :] + cov_chain**2) / n_chains).sqrt()
    mean_hat = z.mean(dim=0)
    cov_hat = torch.cov(z.T)

    # 1) Against the exact law of the chain: MC error only.
    assert ((mean_hat - mean_chain).abs() < N_SE * se_mean).all()
    assert ((cov_hat - cov_chain).abs() < N_SE * se_cov).all()
    # 2) Against the closed-form posterior: MC error plus the known discretisation bias.
    assert ((mean_hat - m_true).abs() < N_SE * se_mean + (mean_chain - m_true).abs()).all()
    assert ((cov_hat - cov_true).abs() < N_SE * se_cov + (cov_chain - cov_true).abs()).all()


# --------------------------------------------------------------------------- single steps
def test_table5_mapping_and_one_step_formula() -> None:
    prior_sampler = LangevinSampler(60, step_size=0.4)
    posterior_sampler = LangevinSampler(20, step_size=0.1)
    assert prior_sampler.drift == pytest.approx(0.08, rel=1e-12)
    assert posterior_sampler.drift == pytest.approx(0.005, rel=1e-12)
    assert noise_scale_from_eq9(0.08) == pytest.approx(0.4, rel=1e-12)
    assert noise_scale_from_eq9(0.005) == pytest.approx(0.1, rel=1e-12)

    torch.manual_seed(0)
    prior = EnergyPrior(3, hidden_dims=(8, 8))
    z0 = torch.randn(5, 3)
    g = torch.Generator().manual_seed(3)
    replay = clone_generator(g)
    z1 = prior_sampler.run(prior.log_density, z0, generator=g, n_steps=1).z

    z_req = z0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(prior.log_density(z_req).sum(), z_req)
    eps = torch.randn(z0.shape, generator=replay)
    expected = z0 + 0.08 * grad + 0.4 * eps  # eq. 9 with s = 0.08, sqrt(2 s) = 0.4
    torch.testing.assert_close(z1, expected, rtol=0, atol=1e-6)
    # the generator was advanced by exactly one N(0, I) draw of z's shape
    assert torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=replay))


def test_noise_free_chain_is_gradient_ascent() -> None:
    torch.manual_seed(0)
    prior = EnergyPrior(3, hidden_dims=(8,))
    sampler = LangevinSampler(4, step_size=0.3, noise=False)
    z0 = torch.randn(6, 3)
    out = sampler.run(prior.log_density, z0).z
    z = z0.clone()
    for _ in range(4):
        z_req = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(prior.log_density(z_req).sum(), z_req)
        z = z + (0.3**2 / 2) * grad
    torch.testing.assert_close(out, z, rtol=0, atol=1e-6)
    # deterministic: no randomness is consumed
    g = torch.Generator().manual_seed(0)
    again = sampler.run(prior.log_density, z0, generator=g).z
    assert torch.equal(again, out)
    assert torch.equal(
        torch.randn(3, generator=g), torch.randn(3, generator=torch.Generator().manual_seed(0))
    )


def test_clamp_keeps_values_in_range() -> None:
    # Target N(5, 1) with big steps: unclamped the chain goes well past 1.5.
    log_density = gaussian_log_density(torch.full((4,), 5.0), 1.0)
    sampler = LangevinSampler(30, step_size=1.0, clamp=1.5)
    z = sampler.run(log_density, torch.zeros(200, 4), generator=torch.Generator().manual_seed(0)).z
    assert z.abs().max().item() <= 1.5
    assert (z == 1.5).any()  # the bound is attained, so clamping really happened
    free = (
        LangevinSampler(30, step_size=1.0)
        .run(log_density, torch.zeros(200, 4), generator=torch.Generator().manual_seed(0))
        .z
    )
    assert free.max().item() > 1.5
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError):
            LangevinSampler(3, 0.1, clamp=bad)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        LangevinSampler(-1, 0.1)
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError):
            LangevinSampler(3, bad)


def test_zero_steps_returns_initial_state() -> None:
    z0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    log_density = gaussian_log_density(torch.zeros(3), 1.0)
    for sampler, kwargs in (
        (LangevinSampler(0, 0.4), {}),
        (LangevinSampler(10, 0.4), {"n_steps": 0}),
    ):
        g = torch.Generator().manual_seed(1)
        result = sampler.run(log_density, z0, generator=g, record_steps=(0,), **kwargs)
        assert torch.equal(result.z, z0)
        assert result.z.data_ptr() != z0.data_ptr()  # a copy, not the caller's tensor
        assert result.log_density.shape == (0,)
        assert result.grad_norm.shape == (0,)
        assert result.mean_grad_norm == 0.0
        assert torch.equal(result.trajectory[0], z0)
        # no noise was drawn
        assert torch.equal(
            torch.randn(2, generator=g), torch.randn(2, generator=torch.Generator().manual_seed(1))
        )


def test_record_steps_returns_the_intermediate_states() -> None:
    torch.manual_seed(0)
    prior = EnergyPrior(3, hidden_dims=(8,))
    sampler = LangevinSampler(6, step_size=0.4)
    z0 = torch.randn(4, 3)
    g = torch.Generator().manual_seed(5)
    seeds = {k: clone_generator(g) for k in (1, 3, 6)}
    result = sampler.run(prior.log_density, z0, generator=g, record_steps=(6, 0, 3, 1, 99))
    assert sorted(result.trajectory) == [0, 1, 3, 6]  # 99 is past the end: not recorded
    assert torch.equal(result.trajectory[0], z0)
    assert torch.equal(result.trajectory[6], result.z)
    for k, twin in seeds.items():
        prefix = sampler.run(prior.log_density, z0, generator=twin, n_steps=k).z
        torch.testing.assert_close(result.trajectory[k], prefix, rtol=0, atol=0)
    # recorded states are snapshots, not views of the evolving chain
    assert not torch.equal(result.trajectory[1], result.trajectory[3])


def test_diagnostics_shapes_and_values_for_gaussian_target() -> None:
    mean, std = torch.tensor([0.5, -1.0, 2.0]), 0.7
    z0 = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    sampler = LangevinSampler(7, step_size=0.2)
    result = sampler.run(
        gaussian_log_density(mean, std), z0, generator=torch.Generator().manual_seed(1)
    )
    assert result.log_density.shape == (7,)
    assert result.grad_norm.shape == (7,)
    # step 0: grad log pi = -(z - mean) / std^2, log pi = -||z - mean||^2 / (2 std^2)
    grad0 = -(z0 - mean) / std**2
    torch.testing.assert_close(result.grad_norm[0], grad0.norm(dim=1).mean(), rtol=1e-6, atol=0)
    log0 = -(z0 - mean).pow(2).sum(dim=1) / (2 * std**2)
    torch.testing.assert_close(result.log_density[0], log0.mean(), rtol=1e-6, atol=0)
    assert result.mean_grad_norm == pytest.approx(result.grad_norm.mean().item())
    assert not result.z.requires_grad
    assert not result.log_density.requires_grad and not result.grad_norm.requires_grad


def test_sample_prior_reproducible_with_seeded_generator() -> None:
    torch.manual_seed(0)
    model = LatentEBM(
        EnergyPrior(3, hidden_dims=(8,)),
        LinearGaussianGenerator(torch.randn(2, 3), torch.zeros(2), 1.0),
        LangevinSampler(5, 0.4),
        LangevinSampler(5, 0.1),
    )
    a = model.sample_prior(7, generator=torch.Generator().manual_seed(9)).z
    b = model.sample_prior(7, generator=torch.Generator().manual_seed(9)).z
    assert torch.equal(a, b)
    # GaussianPrior: sampled exactly (no chain) unless n_steps is given
    gauss = LatentEBM(
        GaussianPrior(3, 0.5), model.generator, LangevinSampler(5, 0.4), LangevinSampler(5, 0.1)
    )
    g = torch.Generator().manual_seed(2)
    exact = gauss.sample_prior(4, generator=g)
    assert exact.grad_norm.shape == (0,)
    torch.testing.assert_close(
        exact.z, 0.5 * torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    )
    assert gauss.sample_prior(4, n_steps=3).grad_norm.shape == (3,)


# --------------------------------------------------------------------------- no parameter gradients
def tiny_text_model() -> LatentEBM:
    torch.manual_seed(0)
    decoder = LSTMDecoder(
        LSTMDecoder.Config(embedding_dim=4, hidden_dim=6, max_decode_length=5),
        z_dim=3,
        vocab_size=7,
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )
    return LatentEBM(
        EnergyPrior(3, hidden_dims=(5,)), decoder, LangevinSampler(3, 0.4), LangevinSampler(3, 0.1)
    )


def tiny_batch() -> Tensor:
    return torch.tensor([[1, 3, 4, 5, 2, 0], [1, 6, 2, 0, 0, 0], [1, 4, 4, 4, 5, 2]])


@pytest.mark.parametrize("initial_grad", ["tensor", "none"])
def test_sampling_touches_no_parameter_gradient(initial_grad: str) -> None:
    model = tiny_text_model()
    params = dict(model.named_parameters())
    assert len(params) >= 8
    expected: dict[str, Tensor | None] = {}
    for i, (name, p) in enumerate(params.items()):
        if initial_grad == "tensor":
            p.grad = torch.full_like(p, float(i + 1)) + torch.arange(p.numel()).view_as(p) * 0.01
            expected[name] = p.grad.clone()
        else:
            p.grad = None
            expected[name] = None

    seen_flags: list[bool] = []
    original = model.prior.log_density

    def spying_log_density(z: Tensor) -> Tensor:
        seen_flags.extend(p.requires_grad for p in model.parameters())
        return original(z)

    model.prior.log_density = spying_log_density  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(0)
    model.sample_prior(4, generator=g)
    model.sample_posterior(tiny_batch(), generator=g)
    model.sample_prior(2, generator=g, n_steps=2, record_steps=(1,))
    assert seen_flags and not any(seen_flags)  # frozen inside both chains

    for name, p in model.named_parameters():
        assert p.requires_grad, name
        if expected[name] is None:
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.equal(p.grad, expected[name]), name


def test_frozen_restores_flags_after_an_error_in_the_density() -> None:
    model = tiny_text_model()
    model.prior.f[0].bias.requires_grad_(False)  # a parameter that was frozen beforehand

    def exploding(x: Tensor, z: Tensor) -> Tensor:
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")

    model.generator.log_likelihood = exploding  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        model.sample_posterior(tiny_batch(), generator=torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        assert p.requires_grad == (name != "prior.f.0.bias"), name

    # and directly
    def raising_density(z: Tensor) -> Tensor:
        raise ValueError("density failed")

    with pytest.raises(ValueError, match="density failed"), frozen(model.prior, model.generator):
        assert not any(p.requires_grad for p in model.parameters())
        LangevinSampler(2, 0.1).run(raising_density, torch.zeros(2, 3))
    for name, p in model.named_parameters():
        assert p.requires_grad == (name != "prior.f.0.bias"), name


def test_frozen_windows_are_numbered_and_nest() -> None:
    """Each entry into ``frozen`` opens a new window (the promise that the weights stay fixed
    that the image generator's packed weights rely on); leaving it reopens the outer one."""
    model = nn.Linear(2, 2)
    assert frozen_window() is None
    with frozen(model):
        outer = frozen_window()
        assert outer is not None
        with frozen(model):
            inner = frozen_window()
            assert inner is not None and inner != outer
        assert frozen_window() == outer
    assert frozen_window() is None
    with frozen(model):
        assert frozen_window() not in (None, outer, inner)
    with pytest.raises(RuntimeError, match="boom"), frozen(model):
        raise RuntimeError("boom")
    assert frozen_window() is None


def test_step_schedule_sets_each_steps_drift_and_noise_and_repeats_its_last_value() -> None:
    """z <- z + (a_k^2 / 2) grad + T a_k eps with a_k from the schedule (the last value repeats),
    checked against the update written out by hand with the same noise draws."""
    schedule, factor = [0.8, 0.5], 0.2
    sampler = LangevinSampler(3, 0.1, step_schedule=schedule, noise_factor=factor)
    mean = torch.tensor([[1.0, -2.0]])
    target = gaussian_log_density(mean, 0.5)  # grad = -(z - mean) / 0.25
    z0 = torch.tensor([[0.3, 0.4]])
    g = torch.Generator().manual_seed(0)
    out = sampler.run(target, z0, generator=clone_generator(g)).z
    z = z0.clone()
    for a in (0.8, 0.5, 0.5):
        grad = -(z - mean) / 0.25
        z = z + 0.5 * a**2 * grad + factor * a * torch.randn(z.shape, generator=g)
    assert torch.allclose(out, z, atol=1e-6)
    assert sampler.step_size_at(0) == 0.8 and sampler.step_size_at(7) == 0.5
    assert "step_schedule=[0.8, 0.5]" in repr(sampler) and "noise_factor=0.2" in repr(sampler)


def test_cold_chain_samples_the_tempered_target() -> None:
    """With noise factor T, small steps sample pi^(1/T^2): variance T^2 times the target's."""
    sampler = LangevinSampler(400, 0.2, noise_factor=0.5)  # relaxes in ~50 steps
    target = gaussian_log_density(torch.zeros(1, 1), 1.0)
    z = sampler.run(target, torch.zeros(20_000, 1), generator=torch.Generator().manual_seed(0)).z
    assert float(z.var()) == pytest.approx(0.25, rel=0.06)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_schedule": []}, "step_schedule"),
        ({"step_schedule": [0.1, 0.0]}, "step_schedule"),
        ({"noise_factor": -1.0}, "noise_factor"),
    ],
)
def test_bad_schedule_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LangevinSampler(3, 0.1, **kwargs)  # type: ignore[arg-type]
