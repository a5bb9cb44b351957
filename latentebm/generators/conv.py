"""ConvTranspose image generator ``p_beta(x | z) = N(g_beta(z), tau^2 I)`` (eq. 1 of Pang, Han,
Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model").

``g_beta`` maps ``z (B, d)``, viewed as a ``1 x 1`` feature map with ``d`` channels, through
transposed convolutions to an image in ``[-1, 1]`` (final ``tanh``). Architectures (Pang et al.
2020, Table 6; "convT(n)" is a transposed convolution with n output maps, stride as in the table):

* ``svhn32`` (SVHN, ngf 64): ``4x4 convT(8 ngf)`` s1 -> 4x4, ``4x4 convT(4 ngf)`` s2 -> 8x8,
  ``4x4 convT(2 ngf)`` s2 -> 16x16, ``4x4 convT(C)`` s2 -> 32x32, tanh;
* ``cifar32`` (CIFAR-10, ngf 128, z 128): ``8x8 convT(8 ngf)`` s1 -> 8x8, ``4x4 convT(4 ngf)``
  s2 -> 16x16, ``4x4 convT(2 ngf)`` s2 -> 32x32, ``3x3 convT(C)`` s1 (padding 1) -> 32x32, tanh;
* ``celeba64`` (CelebA 64x64): as ``svhn32`` with one more ``4x4 convT(ngf)`` s2 layer
  (4 -> 8 -> 16 -> 32 -> 64);
* ``mnist28`` (not in the paper; our choice for 28x28 MNIST, DCGAN-style and half the depth of
  ``svhn32``): ``7x7 convT(2 ngf)`` s1 -> 7x7, ``4x4 convT(ngf)`` s2 -> 14x14,
  ``4x4 convT(C)`` s2 -> 28x28, tanh.

Padding is 0 for the first layer and 1 for the others. A LeakyReLU follows every hidden layer:
slope 0.2 by default, as in the authors' code (``train_svhn.py``: ``g_activation='lrelu'`` built
with ``e_activation_leak=0.2``); Table 6's caption says 0.1 (``negative_slope: 0.1``). Batch
normalisation is off, as in Table 6 and the reference code (``g_batchnorm=False``); with it on, a
``BatchNorm2d`` follows each hidden transposed convolution (then without bias), and an image's
likelihood depends on the rest of its batch in training mode.

Weights of the transposed convolutions start from Xavier normal (appendix B.1); biases keep
PyTorch's default initialisation and BatchNorm scales start from N(1, 0.02), as in the
reference ``weights_init_xavier``.

The likelihood is the normalised Gaussian density with standard deviation ``tau``
(``likelihood_sigma``, 0.3 in the reference code, ``g_llhd_sigma``), summed over the
``D = C H W`` pixels::

    log p_beta(x | z) = -||x - g_beta(z)||^2 / (2 tau^2) - (D / 2) log(2 pi tau^2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from latentebm.config import _field, _non_negative, _positive, check_fields

__all__ = ["ARCHITECTURES", "ConvGenerator"]

ARCHITECTURES: dict[str, tuple[int, tuple[tuple[int, int, int, int], ...]]] = {
    # name: (image side, ((kernel, stride, padding, channel factor), ...)); factor 0 = image C
    "mnist28": (28, ((7, 1, 0, 2), (4, 2, 1, 1), (4, 2, 1, 0))),
    "svhn32": (32, ((4, 1, 0, 8), (4, 2, 1, 4), (4, 2, 1, 2), (4, 2, 1, 0))),
    "cifar32": (32, ((8, 1, 0, 8), (4, 2, 1, 4), (4, 2, 1, 2), (3, 1, 1, 0))),
    "celeba64": (64, ((4, 1, 0, 8), (4, 2, 1, 4), (4, 2, 1, 2), (4, 2, 1, 1), (4, 2, 1, 0))),
}
"""Layer plans: each transposed convolution's kernel, stride, padding and output channels as a
multiple of ``ngf`` (0: the image's channels, the last layer)."""

_AUTO = {28: "mnist28", 32: "svhn32", 64: "celeba64"}
"""``architecture: auto`` by image side (use ``cifar32`` explicitly for Table 6's CIFAR-10)."""


class ConvGenerator(nn.Module):
    """Gaussian image generator ``x = g_beta(z) + tau * eps`` with a ConvTranspose ``g_beta``.

    Args:
        config: the recipe's ``model.generator`` section.
        z_dim: dimension of z (Table 6: 100; 128 for CIFAR-10).
        image_shape: ``(C, H, W)`` of the task's images (``task.generator_kwargs()``).
    """

    @dataclass
    class Config:
        ngf: int = _field(64, check=_positive)
        """Channel factor of the generator (Table 6: 64 for SVHN and CelebA, 128 for CIFAR-10)."""
        architecture: Literal["auto", "mnist28", "svhn32", "cifar32", "celeba64"] = "auto"
        """Layer plan (module docstring); ``auto`` picks by the image side: 28 -> mnist28,
        32 -> svhn32, 64 -> celeba64."""
        likelihood_sigma: float = _field(0.3, check=_positive)
        """tau, the standard deviation of ``p_beta(x | z)`` (0.3 in the reference code)."""
        negative_slope: float = _field(0.2, check=_non_negative)
        """LeakyReLU slope between layers (reference code 0.2; Table 6's caption says 0.1)."""
        batch_norm: bool = False
        """BatchNorm2d after each hidden transposed convolution (off in Table 6)."""
        init: Literal["xavier_normal", "default"] = "xavier_normal"
        """Weight initialisation of the transposed convolutions (appendix B.1: Xavier normal)."""

        def __post_init__(self) -> None:
            check_fields(self)  # ngf, likelihood_sigma, negative_slope
            if self.architecture not in ("auto", *ARCHITECTURES):
                raise ValueError(
                    f"generator.architecture must be 'auto' or one of {list(ARCHITECTURES)}, "
                    f"got {self.architecture!r}"
                )
            if self.init not in ("xavier_normal", "default"):
                raise ValueError(
                    f"generator.init must be 'xavier_normal' or 'default', got {self.init!r}"
                )

    def __init__(
        self, config: ConvGenerator.Config, *, z_dim: int, image_shape: tuple[int, int, int]
    ) -> None:
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"the image generator needs z_dim >= 1, got {z_dim}")
        channels, height, width = (int(s) for s in image_shape)
        if height != width:
            raise ValueError(f"the image generator needs square images, got {image_shape}")
        name = config.architecture
        if name == "auto":
            if height not in _AUTO:
                raise ValueError(
                    f"generator.architecture auto: no architecture for {height}x{width} images "
                    f"(sides {sorted(_AUTO)}); resize the images (task.image_size)"
                )
            name = _AUTO[height]
        side, plan = ARCHITECTURES[name]
        if side != height:
            raise ValueError(
                f"generator.architecture {name!r} makes {side}x{side} images, the task's are "
                f"{height}x{width}"
            )
        self.config = config
        self.z_dim = z_dim
        self.image_shape = (channels, height, width)
        self.architecture = name
        layers: list[nn.Module] = []
        in_channels = z_dim
        for i, (kernel, stride, padding, factor) in enumerate(plan):
            last = i == len(plan) - 1
            out_channels = channels if last else config.ngf * factor
            bias = last or not config.batch_norm
            layers.append(
                nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, padding, bias=bias)
            )
            if last:
                layers.append(nn.Tanh())
            else:
                if config.batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(nn.LeakyReLU(config.negative_slope))
            in_channels = out_channels
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal transposed-convolution weights (``init: xavier_normal``); BatchNorm
        scales from N(1, 0.02) and shifts 0 (the reference ``weights_init_xavier``)."""
        for module in self.net:
            if isinstance(module, nn.ConvTranspose2d):
                module.reset_parameters()
                if self.config.init == "xavier_normal":
                    nn.init.xavier_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    @property
    def likelihood_sigma(self) -> float:
        """tau, the pixel noise standard deviation of ``p_beta(x | z)``."""
        return self.config.likelihood_sigma

    @property
    def num_pixels(self) -> int:
        """``D = C H W``."""
        return math.prod(self.image_shape)

    def mean(self, z: Tensor) -> Tensor:
        """``g_beta(z)``: images ``(B, C, H, W)`` in ``[-1, 1]`` for ``z (B, d)``."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return self.net(z[:, :, None, None])

    forward = mean

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log N(x; g_beta(z), tau^2 I)`` summed over pixels, shape ``(B,)``:
        ``-||x - g_beta(z)||^2 / (2 tau^2) - (D/2) log(2 pi tau^2)`` (normalised)."""
        if x.shape[1:] != self.image_shape:
            raise ValueError(
                f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        tau = self.config.likelihood_sigma
        residual = (x - self.mean(z)).flatten(1)
        log_norm = 0.5 * self.num_pixels * math.log(2 * math.pi * tau**2)
        return -residual.pow(2).sum(dim=1) / (2 * tau**2) - log_norm

    def num_targets(self, x: Tensor) -> Tensor:
        """Scored values per image: ``D = C H W`` (for per-dimension likelihoods)."""
        return torch.full((x.shape[0],), self.num_pixels, dtype=torch.long, device=x.device)

    def sample(
        self,
        z: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: bool = False,
        clamp: bool = True,
        **ignored: Any,
    ) -> Tensor:
        """The image of each row of ``z``: ``g_beta(z)`` (the usual way to show samples), or
        with ``noise`` a draw ``g_beta(z) + tau * eps``, clamped to ``[-1, 1]`` unless ``clamp``
        is false (an exact draw of ``p_beta(x | z)``). Text decoding options (``decode``,
        ``temperature``, ``top_k`` ...) are ignored."""
        mean = self.mean(z)
        if not noise:
            return mean
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        draw = mean + self.config.likelihood_sigma * eps
        return draw.clamp(-1.0, 1.0) if clamp else draw
