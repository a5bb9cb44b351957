"""A linear Gaussian image generator: ``x = W z + b + tau eps``.

The generator of probabilistic PCA (Tipping and Bishop 1999, "Probabilistic principal component
analysis"), in the Generator protocol of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent
Space Energy-Based Prior Model" (eq. 1 with ``g_beta(z) = W z + b``). With a Gaussian prior the
model's marginal ``p(x)`` is a Gaussian, whatever ``W``; a multimodal ``p(x)`` can only come
from the prior. So it is the generator under which the prior is identifiable up to an affine
map, where a learned EBM prior (eq. 2) has to carry every mode itself: the ground-truth
benchmark's ``images_linear`` data (:mod:`latentebm.ground_truth`). The mean is not squashed
(no tanh): the images are continuous values, as the ground-truth data are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from latentebm.config import check_fields, checked_field, positive
from latentebm.generators.gaussian_image import GaussianImageGenerator


class LinearGenerator(GaussianImageGenerator):
    """``p_beta(x | z) = N(x; W z + b, tau^2 I)`` over images of the task's shape.

    Args:
        config: the recipe's ``model.generator`` section.
        z_dim: dimension of z.
        image_shape: ``(C, H, W)`` of the task's images (``task.generator_kwargs()``).
    """

    @dataclass
    class Config:
        likelihood_sigma: float = checked_field(0.3, check=positive)
        """tau, the standard deviation of ``p_beta(x | z)``."""
        init: Literal["xavier_normal", "default"] = "xavier_normal"
        """Initialisation of ``W`` (``b`` starts at 0 with ``xavier_normal``); ``default``:
        torch's ``nn.Linear`` initialisation."""

        def __post_init__(self) -> None:
            check_fields(self)  # likelihood_sigma
            if self.init not in ("xavier_normal", "default"):
                raise ValueError(
                    f"generator.init must be 'xavier_normal' or 'default', got {self.init!r}"
                )

    def __init__(
        self, config: LinearGenerator.Config, *, z_dim: int, image_shape: tuple[int, int, int]
    ) -> None:
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"the image generator needs z_dim >= 1, got {z_dim}")
        self.config = config
        self.z_dim = z_dim
        self.image_shape = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
        self.linear = nn.Linear(z_dim, self.num_pixels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``W`` Xavier-normal and ``b = 0`` (``init: xavier_normal``), else torch's default."""
        self.linear.reset_parameters()
        if self.config.init == "xavier_normal":
            nn.init.xavier_normal_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def mean(self, z: Tensor) -> Tensor:
        """``W z + b`` as images ``(B, C, H, W)`` for ``z (B, d)``."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return self.linear(z).view(z.shape[0], *self.image_shape)
