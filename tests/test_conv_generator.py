"""Tests for latentebm.generators.conv.ConvGenerator (Table 6 image generators)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentebm.generators import Generator
from latentebm.generators.conv import ConvGenerator

CASES = [
    ("mnist28", (1, 28, 28), 16),
    ("svhn32", (3, 32, 32), 16),
    ("cifar32", (3, 32, 32), 16),
    ("celeba64", (3, 64, 64), 12),
]


def make(
    architecture: str = "mnist28",
    image_shape: tuple[int, int, int] = (1, 28, 28),
    z_dim: int = 8,
    **config: object,
) -> ConvGenerator:
    cfg = ConvGenerator.Config(architecture=architecture, **{"ngf": 4, **config})  # type: ignore[arg-type]
    return ConvGenerator(cfg, z_dim=z_dim, image_shape=image_shape)


@pytest.mark.parametrize(("architecture", "shape", "z_dim"), CASES)
def test_output_shape_and_range(architecture: str, shape: tuple[int, int, int], z_dim: int) -> None:
    torch.manual_seed(0)
    g = make(architecture, shape, z_dim)
    x = g.mean(torch.randn(3, z_dim) * 3)
    assert x.shape == (3, *shape)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert isinstance(g, Generator)


def test_table6_layer_plan() -> None:
    """SVHN (Table 6): convT 4x4 s1 to ngf*8, then s2 to ngf*4, ngf*2, then 3 channels."""
    g = make("svhn32", (3, 32, 32), z_dim=100, ngf=64)
    convs = [m for m in g.net if isinstance(m, nn.ConvTranspose2d)]
    got = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs]
    assert got == [(100, 512, 4, 1), (512, 256, 4, 2), (256, 128, 4, 2), (128, 3, 4, 2)]
    cifar = make("cifar32", (3, 32, 32), z_dim=128, ngf=128)
    convs = [m for m in cifar.net if isinstance(m, nn.ConvTranspose2d)]
    got = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs]
    assert got == [(128, 1024, 8, 1), (1024, 512, 4, 2), (512, 256, 4, 2), (256, 3, 3, 1)]
    slopes = {m.negative_slope for m in g.net if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}
    assert isinstance(g.net[-1], nn.Tanh)


def test_auto_architecture_and_bad_shapes() -> None:
    assert make("auto", (1, 28, 28)).architecture == "mnist28"
    assert make("auto", (3, 32, 32)).architecture == "svhn32"
    assert make("auto", (3, 64, 64)).architecture == "celeba64"
    with pytest.raises(ValueError, match="no architecture for 48x48"):
        make("auto", (3, 48, 48))
    with pytest.raises(ValueError, match="makes 32x32 images"):
        make("svhn32", (1, 28, 28))
    with pytest.raises(ValueError, match="square"):
        make("auto", (3, 32, 28))
    with pytest.raises(ValueError, match="likelihood_sigma"):
        ConvGenerator.Config(likelihood_sigma=0.0)
    with pytest.raises(ValueError, match="z_dim"):
        make(z_dim=0)


def test_log_likelihood_is_normalised_gaussian() -> None:
    torch.manual_seed(1)
    tau = 0.3
    g = make(likelihood_sigma=tau).double()
    z = torch.randn(4, 8, dtype=torch.float64)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64) * 2 - 1
    mean = g.mean(z)
    d = 28 * 28
    by_hand = -((x - mean) ** 2).sum(dim=(1, 2, 3)) / (2 * tau**2) - d / 2 * math.log(
        2 * math.pi * tau**2
    )
    normal = torch.distributions.Normal(mean, tau).log_prob(x).sum(dim=(1, 2, 3))
    got = g.log_likelihood(x, z)
    assert got.shape == (4,)
    torch.testing.assert_close(got, by_hand)
    torch.testing.assert_close(got, normal)
    with pytest.raises(ValueError, match="expected images of shape"):
        g.log_likelihood(torch.zeros(4, 3, 28, 28, dtype=torch.float64), z)


def test_gradient_wrt_z_matches_finite_differences() -> None:
    torch.manual_seed(2)
    g = make().double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64) * 2 - 1
    z = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(g.log_likelihood(x, z).sum(), z)
    eps = 1e-6
    numeric = torch.zeros_like(z)
    with torch.no_grad():
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                zp, zm = z.clone(), z.clone()
                zp[i, j] += eps
                zm[i, j] -= eps
                numeric[i, j] = (g.log_likelihood(x, zp)[i] - g.log_likelihood(x, zm)[i]) / (
                    2 * eps
                )
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-5)


def test_xavier_normal_init_statistics() -> None:
    """std = sqrt(2 / (fan_in + fan_out)) with fan_in + fan_out = (C_in + C_out) k^2."""
    torch.manual_seed(3)
    g = make("svhn32", (3, 32, 32), z_dim=100, ngf=32)
    conv = g.net[2]  # 256 -> 128, 4x4
    assert isinstance(conv, nn.ConvTranspose2d)
    w = conv.weight.detach()
    expected = math.sqrt(2.0 / ((256 + 128) * 16))
    assert abs(w.std().item() / expected - 1) < 0.03
    assert abs(w.mean().item()) < 0.05 * expected
    default = make("svhn32", (3, 32, 32), z_dim=100, ngf=32, init="default").net[2]
    # PyTorch's default (Kaiming uniform, a = sqrt 5) has std 1/sqrt(3 fan_in), fan_in = 128 k^2
    assert abs(default.weight.std().item() / (1 / math.sqrt(3 * 128 * 16)) - 1) < 0.03


def test_batch_norm_variant() -> None:
    g = make(batch_norm=True)
    norms = [m for m in g.net if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in g.net if isinstance(m, nn.ConvTranspose2d)]
    assert len(norms) == 2
    assert all(c.bias is None for c in convs[:-1]) and convs[-1].bias is not None
    assert g.mean(torch.randn(5, 8)).shape == (5, 1, 28, 28)


def test_sample_mean_and_noise() -> None:
    torch.manual_seed(4)
    g = make(likelihood_sigma=0.3)
    z = torch.randn(6, 8)
    with torch.no_grad():
        mean = g.sample(z, decode="greedy", temperature=1.0, top_k=5)
        torch.testing.assert_close(mean, g.mean(z))
        a = g.sample(z, noise=True, generator=torch.Generator().manual_seed(7))
        b = g.sample(z, noise=True, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    assert a.min() >= -1 and a.max() <= 1
    residual = (a - mean)[(a.abs() < 1)]  # unclamped pixels: tau * eps
    assert 0.25 < residual.std().item() < 0.35
