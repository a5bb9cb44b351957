"""What every Gaussian image generator shares: ``p_beta(x | z) = N(x; g_beta(z), tau^2 I)``.

The image generators of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space
Energy-Based Prior Model" (eq. 1 with Gaussian pixel noise; appendix B.1: tau = 0.3), differ only
in the mean ``g_beta``. :class:`GaussianImageGenerator` holds the rest: the normalised
log-likelihood, the count of scored values and the sampler, for a subclass that defines
``mean(z)`` and sets ``config`` (a dataclass with ``likelihood_sigma``) and ``image_shape``.
Code that needs the Gaussian form itself (the quadrature of :mod:`latentebm.metrics.quadrature`,
which makes each image ``g_beta(z)`` once and scores every example against it) checks for this
class.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


class GaussianImageGenerator(nn.Module):
    """Base of image generators with Gaussian pixel noise (module docstring)."""

    config: Any
    """The recipe's ``model.generator`` section; must have ``likelihood_sigma``."""
    image_shape: tuple[int, int, int]
    """``(C, H, W)`` of the task's images."""

    def mean(self, z: Tensor) -> Tensor:
        """``g_beta(z)``: images ``(B, C, H, W)`` for ``z (B, d)``."""
        raise NotImplementedError

    def forward(self, z: Tensor) -> Tensor:
        """``g_beta(z)`` (:meth:`mean`)."""
        return self.mean(z)

    @property
    def likelihood_sigma(self) -> float:
        """tau, the pixel noise standard deviation of ``p_beta(x | z)``."""
        return float(self.config.likelihood_sigma)

    @property
    def num_pixels(self) -> int:
        """``D = C H W``."""
        return math.prod(self.image_shape)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log N(x; g_beta(z), tau^2 I)`` summed over pixels, shape ``(B,)``:
        ``-||x - g_beta(z)||^2 / (2 tau^2) - (D/2) log(2 pi tau^2)`` (normalised)."""
        if x.shape[1:] != self.image_shape:
            raise ValueError(
                f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        tau = self.likelihood_sigma
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
        draw = mean + self.likelihood_sigma * eps
        return draw.clamp(-1.0, 1.0) if clamp else draw
