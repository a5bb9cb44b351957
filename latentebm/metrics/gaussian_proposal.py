"""A Gaussian per example, ``q_i = N(mean_i, L_i L_i^T)``: drawing from it and its exact log
density (:class:`GaussianProposal`), and its fit to samples with the covariance shrunk toward its
diagonal (:func:`fit_gaussian`, Schaefer and Strimmer 2005). The importance-sampling proposal of
:mod:`latentebm.metrics.nll` and the Laplace fit of :mod:`latentebm.metrics.laplace` are ones."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Covariance = Literal["full", "diagonal"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class GaussianProposal:
    """One Gaussian ``q_i = N(mean_i, L_i L_i^T)`` per example.

    Attributes:
        mean: ``(B, d)``, float64.
        scale_tril: ``(B, d, d)`` lower-triangular Cholesky factors ``L_i`` (positive
            diagonal), float64.
    """

    mean: Tensor
    scale_tril: Tensor

    @property
    def covariance(self) -> Tensor:
        """``L L^T``, shape ``(B, d, d)``."""
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``z = mean + L eps``, ``eps ~ N(0, I)``, per example: ``(B, n, d)`` float64.

        All randomness comes from ``generator`` (on the proposal's device).
        """
        batch, d = self.mean.shape
        eps = torch.randn(
            batch, n, d, generator=generator, dtype=torch.float64, device=self.mean.device
        )
        return self.mean.unsqueeze(1) + eps @ self.scale_tril.transpose(-1, -2)

    def log_prob(self, z: Tensor) -> Tensor:
        """``log q_i(z_im)`` for ``z`` of shape ``(B, n, d)``: ``(B, n)``, float64.

        ``-||L^{-1}(z - mean)||^2 / 2 - sum_j log L_jj - (d/2) log(2 pi)``, computed from ``z``
        itself (a triangular solve), so it scores exactly the points it is given.
        """
        d = self.mean.shape[-1]
        diff = z.to(torch.float64) - self.mean.unsqueeze(1)
        white = torch.linalg.solve_triangular(
            self.scale_tril, diff.transpose(-1, -2), upper=False
        )  # (B, d, n)
        half_log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (B,)
        return -0.5 * white.pow(2).sum(-2) - half_log_det.unsqueeze(1) - 0.5 * d * _LOG_2PI


def fit_gaussian(
    samples: Tensor,
    *,
    widen: float = 1.5,
    covariance: Covariance = "full",
    shrinkage: float | None = None,
    jitter: float = 1e-4,
) -> GaussianProposal:
    """Fit ``q_i`` to ``samples`` of shape ``(B, n, d)`` (``n >= 2`` draws per example).

    Covariance ``widen^2 * ((1 - lam) S + lam diag(S)) + jitter * I`` with ``S`` the unbiased
    sample covariance; ``lam`` is ``shrinkage`` if given, else the Schaefer-Strimmer (2005,
    target "D") estimate of the optimal intensity, per example. ``covariance="diagonal"`` is
    ``lam = 1``. The mean is the sample mean.
    """
    if samples.dim() != 3:
        raise ValueError(f"samples must have shape (B, n, d), got {tuple(samples.shape)}")
    n = samples.shape[1]
    if n < 2:
        raise ValueError(f"need at least 2 samples per example, got {n}")
    if widen <= 0:
        raise ValueError(f"widen must be > 0, got {widen}")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    if covariance not in ("full", "diagonal"):
        raise ValueError(f"covariance must be 'full' or 'diagonal', got {covariance!r}")
    x = samples.detach().to(torch.float64)
    d = x.shape[-1]
    mean = x.mean(dim=1)
    centred = x - mean.unsqueeze(1)
    var = centred.pow(2).sum(dim=1) / (n - 1)  # (B, d)
    eye = torch.eye(d, dtype=torch.float64, device=x.device)
    if covariance == "diagonal":
        cov = torch.diag_embed(var)
    else:
        sample_cov = centred.transpose(1, 2) @ centred / (n - 1)
        if shrinkage is None:
            lam = _shrinkage_intensity(centred, var)
        else:
            lam = torch.full((x.shape[0],), float(shrinkage), dtype=torch.float64, device=x.device)
        lam = lam.view(-1, 1, 1)
        cov = (1 - lam) * sample_cov + lam * torch.diag_embed(var)
        cov = 0.5 * (cov + cov.transpose(1, 2))
    cov = widen**2 * cov + jitter * eye
    return GaussianProposal(mean=mean, scale_tril=torch.linalg.cholesky(cov))


def _shrinkage_intensity(centred: Tensor, var: Tensor) -> Tensor:
    """Schaefer-Strimmer optimal shrinkage of the correlations toward 0 (target D), ``(B,)``.

    ``lam = sum_{i != j} Var(r_ij) / sum_{i != j} r_ij^2`` on standardised data, clamped to
    ``[0, 1]``.
    """
    n, d = centred.shape[1], centred.shape[2]
    if d < 2:
        return centred.new_zeros(centred.shape[0])
    tiny = torch.finfo(torch.float64).tiny
    standard = centred / var.sqrt().clamp_min(tiny).unsqueeze(1)
    products = standard.unsqueeze(-1) * standard.unsqueeze(-2)  # (B, n, d, d)
    mean_product = products.mean(dim=1)
    corr = n / (n - 1) * mean_product
    corr_var = n / (n - 1) ** 3 * (products - mean_product.unsqueeze(1)).pow(2).sum(dim=1)
    off = ~torch.eye(d, dtype=torch.bool, device=centred.device)
    numerator = (corr_var * off).sum(dim=(-1, -2))
    denominator = (corr.pow(2) * off).sum(dim=(-1, -2))
    return (numerator / denominator.clamp_min(tiny)).clamp(0.0, 1.0)
