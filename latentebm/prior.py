"""Latent priors: the exponentially tilted Gaussian ``p_alpha(z)`` and the plain Gaussian.

Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model", eq. 2::

    p_alpha(z) = exp(f_alpha(z)) p_0(z) / Z(alpha),   p_0(z) = N(z; 0, sigma^2 I)

``f_alpha`` is a small MLP (Table 6: z_dim -> 200 -> 200 -> 1, LeakyReLU 0.2). Only the
unnormalised log density ``f_alpha(z) - ||z||^2 / (2 sigma^2)`` is needed for Langevin sampling
and for the learning gradient (eq. 10); ``log Z(alpha)`` matters only for likelihood estimates.

The energy network is a component (``model.prior.energy`` in a recipe): any module built as
``cls(config, z_dim=d)`` that maps ``z`` ``(B, d)`` to ``f(z)`` ``(B,)`` or ``(B, 1)``.
:class:`MLPEnergy` (Table 6's MLP) is the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from latentebm.config import check_fields, checked_field, each_positive, non_negative


class GaussianPrior(nn.Module):
    """The reference ``p_0(z) = N(0, prior_sigma^2 I)`` used alone (the fixed-prior baseline).

    It has the same interface as :class:`EnergyPrior` with ``f(z) = 0`` and no parameters.
    """

    has_energy: bool = False

    def __init__(self, z_dim: int, prior_sigma: float = 1.0) -> None:
        super().__init__()
        if prior_sigma <= 0:
            raise ValueError(f"prior_sigma must be > 0, got {prior_sigma}")
        self.z_dim = z_dim
        self.prior_sigma = float(prior_sigma)

    def energy(self, z: Tensor) -> Tensor:
        """``f(z)``: identically zero, shape ``(B,)``."""
        return z.new_zeros(z.shape[0])

    def log_reference(self, z: Tensor) -> Tensor:
        """``log p_0(z)`` up to its constant: ``-||z||^2 / (2 sigma^2)``, shape ``(B,)``."""
        return -0.5 * z.pow(2).sum(dim=1) / self.prior_sigma**2

    def log_density(self, z: Tensor) -> Tensor:
        """Unnormalised ``log p(z) = f(z) + log p_0(z)`` (eq. 2 less ``log Z``), shape ``(B,)``."""
        return self.energy(z) + self.log_reference(z)

    def sample_reference(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> Tensor:
        """Draw ``n`` samples of ``p_0 = N(0, sigma^2 I)``: every chain's initial state (eq. 9)."""
        device = device if device is not None else _module_device(self)
        return self.prior_sigma * torch.randn(n, self.z_dim, generator=generator, device=device)


class MLPEnergy(nn.Sequential):
    """The energy ``f_alpha`` of Pang et al. 2020 (Table 6): ``z_dim -> 200 -> 200 -> 1`` with
    LeakyReLU(0.2), Xavier-normal weights and zero biases (appendix B.1); ``(B, d) -> (B, 1)``.

    Args:
        config: widths and slope (``model.prior.energy`` of a recipe).
        z_dim: dimension d of z.
    """

    @dataclass
    class Config:
        hidden_dims: list[int] = field(default_factory=lambda: [200, 200])
        """Widths of the hidden layers (Table 6: 200, 200)."""
        negative_slope: float = checked_field(0.2, check=non_negative)
        """LeakyReLU negative slope (Table 6: 0.2)."""

        def __post_init__(self) -> None:
            check_fields(self)
            problem = each_positive(self.hidden_dims)
            if problem is not None:
                raise ValueError(f"hidden_dims: {problem}")

    def __init__(self, config: MLPEnergy.Config, *, z_dim: int) -> None:
        layers: list[nn.Module] = []
        width = z_dim
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(config.negative_slope)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)
        for module in self:
            if isinstance(module, nn.Linear):  # Xavier-normal, Pang et al. 2020, appendix B.1
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)


class EnergyPrior(GaussianPrior):
    """``p_alpha(z) ∝ exp(f_alpha(z)) N(z; 0, prior_sigma^2 I)`` (Pang et al. 2020, eq. 2).

    Args:
        z_dim: dimension d of z.
        hidden_dims: widths of the hidden layers of the MLP ``f_alpha`` (Table 6: 200, 200).
        negative_slope: LeakyReLU slope (0.2 in Table 6).
        prior_sigma: standard deviation sigma of the Gaussian reference ``p_0``.
        energy: the network ``f_alpha`` itself (module docstring), instead of the MLP of
            ``hidden_dims`` and ``negative_slope``.
    """

    has_energy: bool = True

    def __init__(
        self,
        z_dim: int,
        hidden_dims: Sequence[int] = (200, 200),
        negative_slope: float = 0.2,
        prior_sigma: float = 1.0,
        energy: nn.Module | None = None,
    ) -> None:
        super().__init__(z_dim, prior_sigma)
        if energy is None:
            mlp = MLPEnergy.Config(hidden_dims=list(hidden_dims), negative_slope=negative_slope)
            energy = MLPEnergy(mlp, z_dim=z_dim)
        self.f = energy
        self._check_output()

    def _check_output(self) -> None:
        """Fail at construction, naming the class, if ``f`` does not map ``(B, d)`` to
        ``(B,)`` or ``(B, 1)``."""
        probe = torch.zeros(2, self.z_dim)
        for tensor in self.f.parameters():
            probe = probe.to(tensor)
            break
        was_training = self.f.training
        # no running statistics updated, no random numbers drawn (dropout) by the probe
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            self.f.eval()
            try:
                out = self.f(probe)
            finally:
                self.f.train(was_training)
        name = type(self.f).__name__
        if not isinstance(out, Tensor) or tuple(out.shape) not in ((2,), (2, 1)):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"model.prior.energy: {name} maps z of shape (2, {self.z_dim}) to {shape}; an "
                "energy network must return one value per row, shape (B,) or (B, 1)"
            )

    def energy(self, z: Tensor) -> Tensor:
        """``f_alpha(z)``, shape ``(B,)``: the tilt of the reference (higher = more probable)."""
        out = self.f(z)
        return out.squeeze(-1) if out.dim() == 2 else out


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
