"""Amortised initialisation of the posterior chain: an inference model ``q_phi(z | x)``.

Cui and Han (2023), "Learning Energy-Based Model via Dual-MCMC Teaching", start the posterior
Langevin chain from a Gaussian inference model ``q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2)``
instead of ``N(0, sigma^2 I)``, and teach ``q_phi`` with the chain's own output: ``phi`` descends
``KL(Q~ || Q_phi)``, i.e. maximises ``E log q_phi(z^+ | x)`` for the Langevin-revised samples
``z^+`` (the chain's end, a constant for ``phi``). The chain still targets the model posterior
``p_theta(z | x)``, so learning the prior and generator is unchanged; a good ``q_phi`` only lets
fewer steps reach it.

An inference model is any module with ``sample(x, generator) -> z`` and
``log_prob(z, x) -> (B,)``; :class:`SequenceEncoder` is the one for token sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from latentebm.config import check_fields, checked_field, positive


class SequenceEncoder(nn.Module):
    """``q_phi(z | x)``: a (bidirectional) LSTM over the tokens, its final states mapped to the
    mean and log standard deviation of a diagonal Gaussian.

    Args:
        config: the recipe's ``model.inference`` section.
        z_dim: dimension of z.
        vocab_size, pad_id, bos_id, eos_id: from the task's tokenizer (as for the decoder).
    """

    @dataclass
    class Config:
        embedding_dim: int = checked_field(128, check=positive)
        """Size of the token embeddings."""
        hidden_dim: int = checked_field(256, check=positive)
        """LSTM hidden units per direction."""
        bidirectional: bool = True
        """Read the sequence in both directions."""
        init_log_std: float = 0.0
        """Initial bias of the log standard deviation (0: q starts near N(., I))."""

        def __post_init__(self) -> None:
            check_fields(self)

    def __init__(
        self,
        config: SequenceEncoder.Config,
        *,
        z_dim: int,
        vocab_size: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
    ) -> None:
        super().__init__()
        del bos_id, eos_id  # read as ordinary tokens
        self.config = config
        self.z_dim = z_dim
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_dim,
            batch_first=True,
            bidirectional=config.bidirectional,
        )
        directions = 2 if config.bidirectional else 1
        self.to_params = nn.Linear(directions * config.hidden_dim, 2 * z_dim)
        with torch.no_grad():
            self.to_params.bias[z_dim:].fill_(config.init_log_std)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu_phi(x), log sigma_phi(x))``, each ``(B, z_dim)``."""
        lengths = (x != self.pad_id).sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(
            self.embedding(x), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h_n, _) = self.lstm(packed)  # (directions, B, H)
        summary = h_n.transpose(0, 1).reshape(x.shape[0], -1)
        mean, log_std = self.to_params(summary).chunk(2, dim=1)
        return mean, log_std

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``z ~ q_phi(z | x)`` (no gradient): the posterior chain's starting points."""
        with torch.no_grad():
            mean, log_std = self(x)
            noise = torch.randn(
                mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
            )
            return mean + log_std.exp() * noise

    def log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        """``log q_phi(z | x)`` per example, ``(B,)``, with the full Gaussian constant."""
        mean, log_std = self(x)
        standard = (z - mean) * torch.exp(-log_std)
        return (
            -0.5 * standard.pow(2).sum(dim=1)
            - log_std.sum(dim=1)
            - 0.5 * self.z_dim * math.log(2 * math.pi)
        )
