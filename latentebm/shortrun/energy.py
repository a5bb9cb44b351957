"""The ConvNet negative energy ``f_theta(x)`` of Nijkamp, Hill, Zhu and Wu (2019), "Learning
Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model" (Section 7.4, Table 4).

Their Table 4 (32 x 32 x 3 images, ``n_f`` in {32, 64, 128}), all convolutions with bias,
LReLU = LeakyReLU(0.2)::

    3x3 conv(n_f),     stride 1, LReLU     32 x 32 x n_f
    4x4 conv(2 n_f),   stride 2, LReLU     16 x 16 x 2 n_f
    4x4 conv(4 n_f),   stride 2, LReLU      8 x  8 x 4 n_f
    4x4 conv(8 n_f),   stride 2, LReLU      4 x  4 x 8 n_f
    4x4 conv(1),       stride 1             1 x  1 x 1

Table 5 (64 x 64) adds one more 4x4 stride-2 ``conv(8 n_f)``. This module builds the table for
any image size: ``n_down`` 4x4 stride-2 padding-1 convolutions (widths ``n_f * 2^i`` capped at
``8 n_f``), then a last convolution whose kernel covers the remaining feature map, so the output
is one number per image. For 32 x 32 and ``n_down = 3`` this is exactly Table 4; for MNIST's
28 x 28 the feature maps are 28 -> 14 -> 7 -> 3 and the last convolution is 3 x 3 (the
table's layers, with the final kernel fitted to the smaller image instead of padding it to 32).
(The OCR'd code listing shows ``LeakyReLU(1)``, an OCR error for the table's factor 0.2.)
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ConvEnergy", "feature_sizes"]


def _down(size: int) -> int:
    """Spatial size after a 4x4 convolution with stride 2 and padding 1."""
    return (size + 2 - 4) // 2 + 1


def feature_sizes(image_size: int, n_down: int) -> list[int]:
    """Spatial sizes after the first layer and after each stride-2 layer (28, 3 -> [28, 14, 7, 3]).

    Raises:
        ValueError: when the image is too small for ``n_down`` stride-2 layers.
    """
    sizes = [image_size]
    for _ in range(n_down):
        if sizes[-1] < 2:
            raise ValueError(
                f"energy.n_down={n_down} is too many for {image_size}x{image_size} images "
                f"(feature map shrinks to {sizes[-1]}x{sizes[-1]})"
            )
        sizes.append(_down(sizes[-1]))
    return sizes


class ConvEnergy(nn.Module):
    """``f_theta(x)``: images ``(B, C, H, W)`` in [-1, 1] -> negative energy ``(B,)``.

    Args:
        image_shape: ``(C, H, W)``; images must be square (``H == W``).
        n_filters: ``n_f``, the width of the first layer.
        n_down: number of 4x4 stride-2 layers (3 for 28 or 32 pixels, 4 for 64).
        negative_slope: the LeakyReLU factor (0.2 in Nijkamp et al. 2019).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        n_filters: int = 64,
        n_down: int = 3,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        channels, height, width = (int(v) for v in image_shape)
        if height != width:
            raise ValueError(f"ConvEnergy needs square images, got {height}x{width}")
        self.image_shape = (channels, height, width)
        sizes = feature_sizes(height, n_down)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, n_filters, 3, 1, 1),
            nn.LeakyReLU(negative_slope),
        ]
        width_in = n_filters
        for i in range(n_down):
            width_out = n_filters * min(2 ** (i + 1), 8)
            layers += [nn.Conv2d(width_in, width_out, 4, 2, 1), nn.LeakyReLU(negative_slope)]
            width_in = width_out
        layers.append(nn.Conv2d(width_in, 1, sizes[-1], 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Negative energy ``f_theta(x)`` of each image, shape ``(B,)``."""
        return self.net(x).reshape(x.shape[0])
