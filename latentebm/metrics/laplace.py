"""The Laplace fit of the posterior ``p(z | x)`` of a latent EBM, per example: modes found by
Adam from several starts and a Gaussian ``N(m, widen^2 H^-1)`` at the best, ``H`` the negative
Hessian there by central differences of the gradient (:func:`fit_laplace`). Where the AIS chains
of ``init: laplace`` start (:mod:`latentebm.metrics.marginal`), and the ``q(z | x)`` of the
latent-usage metrics (:mod:`latentebm.metrics.latent_usage`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from latentebm.langevin import eval_mode, frozen
from latentebm.metrics.gaussian_proposal import GaussianProposal
from latentebm.metrics.joint import Joint
from latentebm.metrics.marginal_settings import AISSettings
from latentebm.model import LatentEBM
from latentebm.progress import report_within


@dataclass
class LaplaceFit:
    """What :func:`fit_laplace` found for each example.

    Attributes:
        proposal: ``N(m, widen^2 H^-1)`` at the best mode (``mean`` ``(B, d)``, ``scale_tril``
            ``(B, d, d)``), float64.
        modes: ``(B, S, d)`` the end of every mode search (duplicates of a better one removed:
            their weight is ``-inf``), float64.
        log_weights: ``(B, S)`` normalised log weights of the modes, ``log p(x, m_s)`` up to a
            constant (every mode gets the best mode's covariance, so this is the Laplace
            estimate of each mode's share of the posterior mass).
    """

    proposal: GaussianProposal
    modes: Tensor
    log_weights: Tensor


def fit_laplace(
    model: LatentEBM,
    x: Tensor,
    settings: AISSettings | None = None,
    *,
    generator: torch.Generator | None = None,
) -> LaplaceFit:
    """Modes of ``p(z | x)`` and a Gaussian ``N(m, widen^2 H^-1)`` at the best, per example.

    ``m``: the best of ``laplace_starts`` Adam runs (``laplace_steps`` steps, learning rate
    ``laplace_lr * sigma``) maximising ``log p(x, z)``, started at 0 and at reference draws; the
    other runs' ends are kept as further modes unless within Mahalanobis distance 1 of a better
    one. ``H``: central differences of the gradient at ``m`` (:func:`_negative_hessian`), first
    along the axes with steps ``0.1 sigma``, then along that estimate's eigenvectors with steps
    of half the posterior standard deviation it implies (within ``[1e-3, 0.5] sigma``);
    eigenvalues clamped below at ``0.01 / sigma^2``.
    """
    settings = settings or AISSettings()
    batch, d = x.shape[0], model.z_dim
    sigma = model.prior.prior_sigma
    starts = settings.laplace_starts
    with eval_mode(model), frozen(model):
        joint = Joint(model, x, starts, settings.batch_size)
        z0 = model.prior.sample_reference(batch * starts, generator=generator, device=model.device)
        z0.view(batch, starts, d)[:, 0] = 0.0
        z = z0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=settings.laplace_lr * sigma)
        decay = 0.1 ** (1.0 / max(settings.laplace_steps, 1))  # to a tenth of the rate
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, decay)
        for step in range(settings.laplace_steps):
            report_within(step, settings.laplace_steps)
            _, grad = joint.log_joint(z.detach())
            assert grad is not None
            z.grad = -grad.to(z.dtype)
            optimizer.step()
            schedule.step()
        value, _ = joint.log_joint(z.detach(), with_grad=False)
        value = value.view(batch, starts)
        modes = z.detach().double().view(batch, starts, d)
        order = value.argsort(dim=1, descending=True)
        value = value.gather(1, order)
        modes = modes.gather(1, order.unsqueeze(-1).expand(-1, -1, d))
        mode = modes[:, 0].float()
        eye = torch.eye(d, dtype=torch.float64, device=x.device).expand(batch, d, d)
        steps = torch.full((batch, d), 0.1 * sigma, dtype=torch.float64, device=x.device)
        hessian, _ = _negative_hessian(model, x, mode, eye, steps, settings.batch_size)
        # second pass: along the first pass's eigenvectors, steps of half a posterior sd
        eigenvalues, vectors = torch.linalg.eigh(hessian)
        eigenvalues = eigenvalues.clamp_min(0.01 / sigma**2)
        steps = (0.5 / eigenvalues.sqrt()).clamp(1e-3 * sigma, 0.5 * sigma)
        hessian, grad = _negative_hessian(model, x, mode, vectors, steps, settings.batch_size)
        eigenvalues, vectors = torch.linalg.eigh(hessian)
        eigenvalues = eigenvalues.clamp_min(0.01 / sigma**2)
        # a Newton step m + t H^-1 g (t = 1: exact for a Gaussian posterior; halved twice if
        # it does not raise log p(x, z))
        newton = (
            vectors
            @ ((vectors.transpose(1, 2) @ grad.unsqueeze(-1)).squeeze(-1) / eigenvalues).unsqueeze(
                -1
            )
        ).squeeze(-1)
        single = Joint(model, x, 1, settings.batch_size)
        for scale in (1.0, 0.5, 0.25):
            candidate = modes[:, 0] + scale * newton
            new_value, _ = single.log_joint(candidate.float(), with_grad=False)
            better = new_value > value[:, 0]
            modes[:, 0] = torch.where(better.unsqueeze(1), candidate, modes[:, 0])
            value[:, 0] = torch.where(better, new_value, value[:, 0])
            newton = torch.where(better.unsqueeze(1), torch.zeros_like(newton), newton)
    cov = (vectors * (settings.widen**2 / eigenvalues).unsqueeze(1)) @ vectors.transpose(1, 2)
    cov = 0.5 * (cov + cov.transpose(1, 2))
    tril = torch.linalg.cholesky(cov)
    # drop modes within Mahalanobis distance 1 (under the best mode's covariance) of a better one
    white = torch.linalg.solve_triangular(
        tril.unsqueeze(1), modes.unsqueeze(-1), upper=False
    ).squeeze(-1)  # (B, S, d)
    distance = torch.cdist(white, white)  # (B, S, S)
    keep = torch.ones(batch, starts, dtype=torch.bool, device=x.device)
    for s_idx in range(1, starts):
        earlier = distance[:, s_idx, :s_idx] < 1.0
        keep[:, s_idx] = ~(earlier & keep[:, :s_idx]).any(dim=1)
    log_weights = torch.where(keep, value, torch.full_like(value, -math.inf))
    log_weights = log_weights - torch.logsumexp(log_weights, dim=1, keepdim=True)
    return LaplaceFit(
        proposal=GaussianProposal(mean=modes[:, 0].clone(), scale_tril=tril),
        modes=modes,
        log_weights=log_weights,
    )


def _negative_hessian(
    model: LatentEBM,
    x: Tensor,
    mode: Tensor,
    directions: Tensor,
    steps: Tensor,
    batch_size: int,
) -> tuple[Tensor, Tensor]:
    """``-d^2 log p(x, z) / dz^2`` at ``mode`` by central differences of the gradient along
    the orthonormal columns ``v_i`` of ``directions`` ``(B, d, d)`` with steps ``h_i``
    (``steps``, ``(B, d)``): ``H v_i = (g(m + h_i v_i) - g(m - h_i v_i)) / (2 h_i)``, then
    ``H = (H V) V^T``, symmetrised: ``(B, d, d)`` float64; and the gradient at ``mode``
    estimated as the mean of the ``2 d`` gradients (exact for a quadratic), ``(B, d)``.

    The log density of a latent EBM is only piecewise smooth (LeakyReLU energies), so steps
    much smaller than the posterior's width see kinks, not curvature: the caller sizes them.
    """
    batch, d = mode.shape
    offsets = (directions * steps.unsqueeze(1)).transpose(1, 2)  # (B, d: direction i, d)
    centre = mode.double().unsqueeze(1)
    points = torch.cat([centre + offsets, centre - offsets], dim=1).to(mode.dtype)
    joint = Joint(model, x, 2 * d, batch_size)
    _, grad = joint.log_joint(points.reshape(batch * 2 * d, d))
    assert grad is not None
    grad = grad.double().view(batch, 2, d, d)  # [b, sign, direction i, component j]
    h_v = ((grad[:, 0] - grad[:, 1]) / (2 * steps.unsqueeze(-1))).transpose(1, 2)  # H V
    hessian = h_v @ directions.transpose(1, 2)
    return -0.5 * (hessian + hessian.transpose(1, 2)), grad.mean(dim=(1, 2))
