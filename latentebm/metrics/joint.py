"""The joint log density of a latent EBM, ``log p(x, z) + log Z(alpha)``, and its gradient in
``z``, for many (example, chain) rows at once, in chunks whose memory is bounded: the target of
the AIS chains (:mod:`latentebm.metrics.marginal`) and of the Laplace fit's mode search
(:mod:`latentebm.metrics.laplace`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from latentebm.model import LatentEBM

SEQUENCE_TOKENS_PER_ROW = 64
"""Token sequences longer than this are scored in proportionally fewer (example, chain) pairs
per chunk (:class:`Joint`): the memory of a chunk stays that of ``batch_size`` sequences of 64
tokens."""
REFERENCE_FLOATS_PER_TOKEN = 4256
"""Activation floats per token of ``recipes/ptb.yaml``'s LSTM decoder (embedding 128, z 32,
hidden 512: ``activation_floats_per_token``). A generator that keeps more per token is scored
in proportionally fewer rows per chunk (:class:`Joint`), so a chunk's memory stays that of the
PTB model's: at Yahoo's sizes (embedding 512, hidden 1024) the rows per chunk halve (one chunk
of 81 rows of 200-word documents took 0.92 GiB above the loaded model in a scratch measurement;
docs/RESULTS.md section 15b)."""


class Joint:
    """``log p_beta(x_r | z) + f(z) - ||z||^2 / (2 sigma^2) - (d/2) log(2 pi sigma^2)`` for the
    rows ``r`` of a chain batch (row ``r`` scores example ``r // n_chains``), with gradients in
    ``z``; the generator sees at most ``batch_size`` rows at once (fewer for token sequences
    longer than :data:`SEQUENCE_TOKENS_PER_ROW` and for decoders that keep more activations
    per token than :data:`REFERENCE_FLOATS_PER_TOKEN`)."""

    def __init__(self, model: LatentEBM, x: Tensor, n_chains: int, batch_size: int) -> None:
        self.model, self.x, self.k = model, x, n_chains
        length = x.shape[1] if x.dim() == 2 and not x.is_floating_point() else 0  # tokens
        if length > SEQUENCE_TOKENS_PER_ROW:
            batch_size = max(1, batch_size * SEQUENCE_TOKENS_PER_ROW // length)
        width = getattr(model.generator, "activation_floats_per_token", None)
        if length and isinstance(width, int) and width > REFERENCE_FLOATS_PER_TOKEN:
            batch_size = max(1, batch_size * REFERENCE_FLOATS_PER_TOKEN // width)
        self.batch_size = batch_size
        self.sigma = model.prior.prior_sigma
        self.constant = 0.5 * model.z_dim * math.log(2 * math.pi * self.sigma**2)

    def _x_rows(self, start: int, stop: int) -> Tensor:
        rows = torch.arange(start, stop, device=self.x.device) // self.k
        return self.x.index_select(0, rows)

    def likelihood(self, z: Tensor, with_grad: bool = True) -> tuple[Tensor, Tensor | None]:
        """``log p_beta(x | z)`` per row and its gradient."""
        return self._chunked(z, with_grad, prior=False)

    def log_joint(self, z: Tensor, with_grad: bool = True) -> tuple[Tensor, Tensor | None]:
        """The normalised-reference joint ``log p_beta(x|z) + f(z) + log N(z; 0, sigma^2 I)``
        (``log p(x, z) + log Z``), per row, and its gradient."""
        value, grad = self._chunked(z, with_grad, prior=True)
        return value - self.constant, grad

    def _chunked(self, z: Tensor, with_grad: bool, prior: bool) -> tuple[Tensor, Tensor | None]:
        values: list[Tensor] = []
        grads: list[Tensor] = []
        generator, model_prior = self.model.generator, self.model.prior
        for start in range(0, z.shape[0], self.batch_size):
            stop = min(start + self.batch_size, z.shape[0])
            x_rows = self._x_rows(start, stop)
            z_rows = z[start:stop].detach()
            if with_grad:
                z_rows.requires_grad_(True)
            with torch.set_grad_enabled(with_grad):
                value = generator.log_likelihood(x_rows, z_rows).double()
                if prior:
                    value = value + model_prior.log_density(z_rows).double()
                if with_grad:
                    (grad,) = torch.autograd.grad(value.sum(), z_rows)
                    grads.append(grad.detach())
            values.append(value.detach())
        return torch.cat(values), (torch.cat(grads) if with_grad else None)
