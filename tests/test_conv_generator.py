"""Tests for latentebm.generators.conv.ConvGenerator (Table 6 image generators)."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from torch import nn

from latentebm.generators import Generator
from latentebm.generators.conv import ConvGenerator
from latentebm.langevin import LangevinSampler, frozen

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


# ------------------------------------------------------------------------------ the CPU path
def _pair(architecture: str, shape: tuple[int, int, int], z_dim: int, **config: object):
    """The same generator twice: the fast path (default) and the plain one."""
    fast = make(architecture, shape, z_dim, **config)
    plain = copy.deepcopy(fast)
    plain.config.fast_path = False
    return fast, plain


def _value_and_grad(g: ConvGenerator, x: torch.Tensor, z: torch.Tensor):
    z = z.clone().requires_grad_(True)
    value = g.log_likelihood(x, z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to float32 rounding (sums taken in another order)."""
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize(("architecture", "shape", "z_dim"), CASES)
def test_fast_path_equals_plain_path(
    architecture: str, shape: tuple[int, int, int], z_dim: int, batch_norm: bool
) -> None:
    """log p(x | z) and its gradient in z agree with the plain nn.Sequential forward, in the
    chains (weights frozen: the fused node), with weights that need gradients (the
    channels-last autograd path) and without gradients; batch sizes 1 and 5."""
    torch.manual_seed(5)
    fast, plain = _pair(architecture, shape, z_dim, batch_norm=batch_norm)
    for batch in (1, 5):
        x = torch.rand(batch, *shape) * 2 - 1
        z = torch.randn(batch, z_dim) * 2
        want_value, want_grad = _value_and_grad(plain, x, z)
        got_value, got_grad = _value_and_grad(fast, x, z)  # weights need gradients
        _close(got_value, want_value)
        _close(got_grad, want_grad)
        with frozen(fast):
            got_value, got_grad = _value_and_grad(fast, x, z)
            again_value, again_grad = _value_and_grad(fast, x, z)  # packed weights reused
        for got, again, want in (
            (got_value, again_value, want_value),
            (got_grad, again_grad, want_grad),
        ):
            _close(got, want)
            torch.testing.assert_close(again, got, rtol=0, atol=0)
        with torch.no_grad():
            _close(fast.log_likelihood(x, z), want_value)
            _close(fast.mean(z), plain.mean(z))


@pytest.mark.parametrize(("architecture", "shape", "z_dim"), CASES)
def test_fast_path_weight_gradients_equal_plain_path(
    architecture: str, shape: tuple[int, int, int], z_dim: int
) -> None:
    """The generator's learning step (eq. 11) gets the same parameter gradients."""
    torch.manual_seed(6)
    fast, plain = _pair(architecture, shape, z_dim)
    x = torch.rand(4, *shape) * 2 - 1
    z = torch.randn(4, z_dim)
    for g in (fast, plain):
        (-g.log_likelihood(x, z).mean()).backward()
    for (name, p_fast), p_plain in zip(fast.named_parameters(), plain.parameters(), strict=True):
        assert p_fast.grad is not None and p_plain.grad is not None, name
        _close(p_fast.grad, p_plain.grad)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # mkldnn.flags' note
def test_fast_path_chooses_its_kernels() -> None:
    """Fused node in the chains, autograd when weights learn, plain where it does not apply."""
    torch.manual_seed(7)
    g = make("svhn32", (3, 32, 32), 16)
    z = torch.randn(3, 16, requires_grad=True)

    def node(gen: ConvGenerator, zz: torch.Tensor = z) -> str:
        fn = gen.mean(zz).grad_fn
        assert fn is not None
        return type(fn).__name__

    with frozen(g):
        assert node(g) == "_FrozenMeanBackward"
    assert node(g) == "TanhBackward0"  # channels-last autograd path: weights need gradients
    out = g.mean(z)
    assert out.is_contiguous()
    plain = copy.deepcopy(g)
    plain.config.fast_path = False
    with frozen(plain):
        assert node(plain) == "TanhBackward0"
    with frozen(g), torch.backends.mkldnn.flags(enabled=False):
        assert node(g) == "TanhBackward0"  # no oneDNN: no fused node
    double = copy.deepcopy(g).double()
    with frozen(double):
        assert node(double, z.double()) == "TanhBackward0"  # float64: plain path
    bn = make("svhn32", (3, 32, 32), 16, batch_norm=True)
    with frozen(bn):
        assert node(bn) == "TanhBackward0"


def test_packed_weights_follow_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights are packed once per frozen window (once per chain) and again after they change:
    in a new window, or when a weight is changed in place inside one."""
    torch.manual_seed(8)
    g, plain = _pair("svhn32", (3, 32, 32), 16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.randn(2, 16)
    calls = []
    pack = ConvGenerator._pack

    def counting(self: ConvGenerator, batch: int):  # type: ignore[no-untyped-def]
        calls.append(batch)
        return pack(self, batch)

    monkeypatch.setattr(ConvGenerator, "_pack", counting)
    with frozen(g):
        for _ in range(3):
            _value_and_grad(g, x, z)
        assert calls == [2]
        _value_and_grad(g, x[:1], z[:1])  # another batch size
        assert calls == [2, 1]
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    (-g.log_likelihood(x, z).mean()).backward()
    opt.step()
    plain.load_state_dict(g.state_dict())
    with frozen(g):
        got = _value_and_grad(g, x, z)
        assert len(calls) == 3
        _close(got[0], _value_and_grad(plain, x, z)[0])
        _close(got[1], _value_and_grad(plain, x, z)[1])
        with torch.no_grad():
            g.net[2].weight.mul_(0.5)
            plain.net[2].weight.mul_(0.5)
        got = _value_and_grad(g, x, z)
        assert len(calls) == 4
        _close(got[0], _value_and_grad(plain, x, z)[0])
    with torch.no_grad():  # outside a window: packed afresh for every call
        g.mean(z)
        g.mean(z)
    assert len(calls) == 6


def test_fast_path_langevin_chain_matches_plain() -> None:
    """A posterior chain (eq. 9, the authors' K1 = 20, a = 0.1) ends where the plain path's does."""
    torch.manual_seed(9)
    fast, plain = _pair("svhn32", (3, 32, 32), 16)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    z0 = torch.randn(4, 16)
    sampler = LangevinSampler(n_steps=20, step_size=0.1)
    ends = []
    for g in (fast, plain):
        with frozen(g):
            result = sampler.run(
                lambda z, g=g: g.log_likelihood(x, z) - 0.5 * z.pow(2).sum(1),
                z0,
                generator=torch.Generator().manual_seed(3),
            )
        ends.append(result.z)
    torch.testing.assert_close(ends[0], ends[1], rtol=1e-4, atol=1e-5)


def test_copies_do_not_share_packed_weights() -> None:
    torch.manual_seed(10)
    g = make("svhn32", (3, 32, 32), 16)
    z = torch.randn(2, 16)
    with frozen(g), torch.no_grad():
        g.mean(z)
    twin = copy.deepcopy(g)
    revived = pickle.loads(pickle.dumps(g))
    for other in (twin, revived):
        with torch.no_grad():
            other.net[0].weight.add_(1.0)
        with frozen(other), torch.no_grad():
            assert not torch.allclose(other.mean(z), g.mean(z))
            _close(other.mean(z), other.plain_mean(z))


def test_fast_path_config() -> None:
    assert ConvGenerator.Config().fast_path is True
    g = make(fast_path=False)
    assert g.config.fast_path is False
