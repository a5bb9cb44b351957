"""Persistent chains: a replay buffer for the prior chain, a per-example memory for the
posterior chain.

Persistent chains (Tieleman 2008; Du and Mordatch 2019 for EBMs) start each prior chain where an
earlier one stopped instead of at ``N(0, sigma^2 I)``: the buffer holds ``size`` latent vectors;
each learning step draws ``n`` of them at random, replaces each by a fresh reference draw with
probability ``reinit_rate`` (so the buffer keeps some short-run samples and cannot drift for
ever), runs the K0-step chain from them and writes the ends back. The buffer is a module buffer:
checkpoints save it with the model, so a resumed run continues the same chains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class ReplayBuffer(nn.Module):
    """``size`` stored latent vectors of dimension ``z_dim`` (initialised by ``reset``)."""

    def __init__(self, size: int, z_dim: int, reinit_rate: float = 0.05) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"replay buffer size must be >= 1, got {size}")
        if not 0.0 <= reinit_rate <= 1.0:
            raise ValueError(f"reinit_rate must be in [0, 1], got {reinit_rate}")
        self.reinit_rate = reinit_rate
        self.register_buffer("z", torch.zeros(size, z_dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))

    def draw(
        self,
        n: int,
        reference: Callable[[int], Tensor],
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(indices, z_init)``: ``n`` stored vectors, each replaced by ``reference(1)`` draws
        with probability ``reinit_rate`` (all of them before the buffer is first filled)."""
        device = self.z.device
        if not bool(self.filled):
            self.z.copy_(reference(self.z.shape[0]))
            self.filled.fill_(True)
        indices = torch.randint(self.z.shape[0], (n,), generator=generator, device=device)
        z_init = self.z[indices].clone()
        fresh = torch.rand(n, generator=generator, device=device) < self.reinit_rate
        if bool(fresh.any()):
            z_init[fresh] = reference(int(fresh.sum()))
        return indices, z_init

    def update(self, indices: Tensor, z: Tensor) -> None:
        """Store the chain ends ``z`` at ``indices``."""
        self.z[indices] = z.detach()


class PosteriorMemory(nn.Module):
    """The posterior chain's end for each training example, stored by its position in the
    training split: the next visit of the example starts its chain there (persistent chains;
    the first visit starts from the reference). Saved with the model in checkpoints.

    With several processes, each keeps the chains of the examples it sees; a checkpoint holds
    rank 0's memory, so on resume the other ranks' examples restart from the reference.
    """

    def __init__(self, n_examples: int, z_dim: int) -> None:
        super().__init__()
        if n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {n_examples}")
        self.register_buffer("z", torch.zeros(n_examples, z_dim))
        self.register_buffer("seen", torch.zeros(n_examples, dtype=torch.bool))

    def initial(self, indices: Tensor, reference: Callable[[int], Tensor]) -> Tensor:
        """Starting points for the examples ``indices``: stored ends, else reference draws."""
        indices = indices.to(self.z.device)
        z_init = reference(indices.shape[0])
        seen = self.seen[indices]
        z_init[seen] = self.z[indices[seen]].to(z_init.dtype)
        return z_init

    def update(self, indices: Tensor, z: Tensor) -> None:
        """Store the chain ends ``z`` of the examples ``indices``."""
        indices = indices.to(self.z.device)
        self.z[indices] = z.detach().to(self.z.dtype)
        self.seen[indices] = True
