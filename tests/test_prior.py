"""Tests of the latent priors (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space
Energy-Based Prior Model", eq. 2; Table 6 for the MLP)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latentebm.prior import EnergyPrior, GaussianPrior


def test_energy_prior_log_density_is_f_minus_scaled_norm() -> None:
    torch.manual_seed(0)
    sigma = 0.7
    prior = EnergyPrior(4, hidden_dims=(6, 5), prior_sigma=sigma)
    z = torch.randn(9, 4)
    with torch.no_grad():
        f = prior.f(z).squeeze(-1)
        torch.testing.assert_close(prior.energy(z), f)
        torch.testing.assert_close(prior.log_reference(z), -z.pow(2).sum(dim=1) / (2 * sigma**2))
        torch.testing.assert_close(prior.log_density(z), f - z.pow(2).sum(dim=1) / (2 * sigma**2))
    assert prior.has_energy


@pytest.mark.parametrize(
    ("hidden_dims", "widths"),
    [((200, 200), [(4, 200), (200, 200), (200, 1)]), ((7,), [(4, 7), (7, 1)]), ((), [(4, 1)])],
)
def test_widths_follow_hidden_dims(hidden_dims: tuple[int, ...], widths: list[tuple[int, int]]):
    prior = EnergyPrior(4, hidden_dims=hidden_dims)
    linears = [m for m in prior.f if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == widths
    # one activation between consecutive linear layers, none after the last
    acts = [m for m in prior.f if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == len(hidden_dims)
    assert isinstance(prior.f[-1], nn.Linear)
    for m in linears:  # Xavier-normal weights, zero biases (appendix B.1)
        assert (m.bias == 0).all()


@pytest.mark.parametrize("slope", [0.2, 0.05])
def test_leaky_relu_slope(slope: float) -> None:
    torch.manual_seed(1)
    prior = EnergyPrior(3, hidden_dims=(5, 4), negative_slope=slope)
    assert all(m.negative_slope == slope for m in prior.f if isinstance(m, nn.LeakyReLU))
    lin = [m for m in prior.f if isinstance(m, nn.Linear)]
    z = torch.randn(8, 3)
    h = F.leaky_relu(lin[0](z), slope)
    h = F.leaky_relu(lin[1](h), slope)
    expected = lin[2](h).squeeze(-1)
    with torch.no_grad():
        torch.testing.assert_close(prior.energy(z), expected.detach())
    assert EnergyPrior(3).f[1].negative_slope == 0.2  # Table 6 default


def test_shapes() -> None:
    for prior in (EnergyPrior(5, hidden_dims=(8,)), GaussianPrior(5)):
        z = torch.randn(11, 5)
        assert prior.energy(z).shape == (11,)
        assert prior.log_reference(z).shape == (11,)
        assert prior.log_density(z).shape == (11,)
        one = prior.log_density(torch.randn(1, 5))
        assert one.shape == (1,)
        assert prior.sample_reference(7).shape == (7, 5)


def test_gaussian_prior() -> None:
    prior = GaussianPrior(3, prior_sigma=2.0)
    assert not prior.has_energy
    assert list(prior.parameters()) == []
    z = torch.randn(4, 3)
    assert torch.equal(prior.energy(z), torch.zeros(4))
    torch.testing.assert_close(prior.log_density(z), -z.pow(2).sum(dim=1) / 8.0)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError):
            GaussianPrior(3, prior_sigma=bad)


def test_sample_reference_reproducible_and_scaled() -> None:
    sigma, n, d = 0.5, 20000, 2
    prior = EnergyPrior(d, hidden_dims=(4,), prior_sigma=sigma)
    a = prior.sample_reference(n, generator=torch.Generator().manual_seed(0))
    b = prior.sample_reference(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    torch.testing.assert_close(
        a, sigma * torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    )
    # std of N(0, sigma^2): the sample mean of z^2 over n d values has SE sigma^2 sqrt(2/(n d))
    second = a.double().pow(2).mean().item()
    assert abs(second - sigma**2) < 4.5 * sigma**2 * math.sqrt(2 / (n * d))


class _Quadratic(nn.Module):
    """``f(z) = -scale ||z - centre||^2``, shape ``(B,)``: a closed-form energy."""

    def __init__(self, centre: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.centre = nn.Parameter(centre.clone())
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -self.scale * (z - self.centre).pow(2).sum(dim=1)


def test_an_energy_network_given_as_a_module_tilts_the_reference() -> None:
    centre = torch.tensor([1.0, -2.0, 0.5])
    prior = EnergyPrior(3, prior_sigma=2.0, energy=_Quadratic(centre, 0.3))
    z = torch.randn(7, 3)
    expected = -0.3 * (z - centre).pow(2).sum(1) - z.pow(2).sum(1) / (2 * 4.0)
    with torch.no_grad():
        torch.testing.assert_close(prior.log_density(z), expected)
    assert [name for name, _ in prior.named_parameters()] == ["f.centre"]


def test_the_default_energy_is_the_table_6_mlp_under_the_same_names() -> None:
    from latentebm.prior import MLPEnergy

    torch.manual_seed(3)
    legacy = EnergyPrior(4, hidden_dims=(6, 5), negative_slope=0.1)
    torch.manual_seed(3)
    component = MLPEnergy(MLPEnergy.Config(hidden_dims=[6, 5], negative_slope=0.1), z_dim=4)
    assert isinstance(legacy.f, MLPEnergy)
    # checkpoints of the built-in prior keep their parameter names (f.0.weight, ...)
    state = legacy.f.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    for name, value in component.state_dict().items():
        torch.testing.assert_close(state[name], value)
    assert legacy.f[1].negative_slope == 0.1


class _WrongShape(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z  # (B, d): not one value per row


def test_an_energy_network_of_the_wrong_output_shape_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"model\.prior\.energy: _WrongShape maps z of shape"):
        EnergyPrior(3, energy=_WrongShape())


def test_the_shape_check_leaves_the_energy_network_and_the_random_stream_alone() -> None:
    """The constructor's probe runs in eval mode without drawing random numbers: BatchNorm's
    running statistics stay, dropout draws nothing, the training flag is restored."""
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 1))
    stats = net[1].running_mean.clone()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    EnergyPrior(3, energy=net)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(net[1].running_mean, stats) and net.training
