"""LSTM decoder ``p_beta(x | z)`` for token sequences (text, SMILES, SELFIES).

Seed 001 appendix B.1: a one-layer unidirectional LSTM (Table 7: PTB embedding 128, hidden 512),
weights initialised from Unif(-0.1, 0.1). z sets the initial hidden state through a linear map
and is concatenated to every input embedding, so every step sees the latent code.

Sequences are ``LongTensor (B, T)``: ``<bos> x_1 ... x_n <eos> <pad> ...``. The likelihood
scores the tokens after ``<bos>`` up to and including ``<eos>``; padding is masked.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentebm.generators.fused import linear_cross_entropy

RecurrentState: TypeAlias = Tensor | tuple[Tensor, Tensor]
"""A GRU's ``h`` or an LSTM's ``(h, c)``, each ``(num_layers, B, hidden_dim)``."""


class LSTMDecoder(nn.Module):
    """``log p_beta(x | z) = sum_t log p(x_t | x_<t, z)`` with an LSTM.

    Args:
        config: sizes and decoding defaults (the recipe's ``model.generator`` section).
        z_dim: dimension of z.
        vocab_size, pad_id, bos_id, eos_id: from the task's tokenizer.
    """

    @dataclass
    class Config:
        embedding_dim: int = 128
        """Size of the token embeddings (Table 7: 128 for PTB)."""
        hidden_dim: int = 512
        """LSTM hidden units (Table 7: 512 for PTB)."""
        num_layers: int = 1
        """Stacked LSTM layers (1 in the paper)."""
        cell: Literal["lstm", "gru"] = "lstm"
        """Recurrent cell: ``lstm`` (the paper) or ``gru`` (z sets the initial hidden state of
        either; the LSTM's initial cell state is 0)."""
        dropout: float = 0.0
        """Dropout on embeddings and LSTM outputs during training."""
        init_range: float = 0.1
        """Weights start from Unif(-init_range, init_range) (seed 001 appendix B.1)."""
        max_decode_length: int = 60
        """Longest sequence produced by ``sample`` unless told otherwise."""
        fused_output: bool = True
        """Score tokens with the fused, chunked output layer
        (:func:`latentebm.generators.fused.linear_cross_entropy`) when the output layer is
        frozen and z needs a gradient (the Langevin chains): same values and z-gradients as the
        plain ``linear`` + ``cross_entropy`` up to rounding, without materialising the
        ``(B*T, vocab)`` logits. Training steps (weights need gradients) and no-grad scoring
        always take the plain path. ``False``: always the plain path."""

    def __init__(
        self,
        config: LSTMDecoder.Config,
        *,
        z_dim: int,
        vocab_size: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
    ) -> None:
        super().__init__()
        self.config = config
        self.z_dim = z_dim
        self.vocab_size = vocab_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(config.dropout)
        with warnings.catch_warnings():  # z_dim 0 (no latent): "zero-element tensors" warning
            warnings.simplefilter("ignore", UserWarning)
            self.latent_to_hidden = nn.Linear(z_dim, config.hidden_dim * config.num_layers)
        if config.cell not in ("lstm", "gru"):
            raise ValueError(f"generator.cell must be 'lstm' or 'gru', got {config.cell!r}")
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        # named ``lstm`` whatever the cell, so checkpoints keep their parameter names
        self.lstm: nn.LSTM | nn.GRU = rnn(
            config.embedding_dim + z_dim, config.hidden_dim, config.num_layers, batch_first=True
        )
        self.output = nn.Linear(config.hidden_dim, vocab_size)
        for param in self.parameters():
            nn.init.uniform_(param, -config.init_range, config.init_range)
        with torch.no_grad():
            self.embedding.weight[pad_id].zero_()

    def _initial_state(self, z: Tensor) -> RecurrentState:
        """``h0 = W z + b`` per layer (and ``c0 = 0`` for the LSTM)."""
        batch = z.shape[0]
        layers, hidden = self.config.num_layers, self.config.hidden_dim
        h0 = self.latent_to_hidden(z).view(batch, layers, hidden).transpose(0, 1).contiguous()
        if self.config.cell == "gru":
            return h0
        return h0, torch.zeros_like(h0)

    @staticmethod
    def _select_state(state: RecurrentState, rows: Tensor) -> RecurrentState:
        """The state of the batch rows ``rows`` (beam search reordering)."""
        if isinstance(state, tuple):
            return state[0].index_select(1, rows), state[1].index_select(1, rows)
        return state.index_select(1, rows)

    def _hidden_states(self, inputs: Tensor, z: Tensor) -> Tensor:
        """LSTM outputs for ``inputs (B, T)`` given z: shape ``(B, T, hidden_dim)``."""
        embedded = self.dropout(self.embedding(inputs))
        z_every_step = z.unsqueeze(1).expand(-1, inputs.shape[1], -1)
        output, _ = self.lstm(torch.cat([embedded, z_every_step], dim=2), self._initial_state(z))
        return self.dropout(output)

    def token_log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x_t | x_<t, z)`` for every target position, shape ``(B, T-1)``; 0 at padding."""
        inputs, targets = x[:, :-1], x[:, 1:]
        # One contiguous (B*T, H) matrix: the LSTM's output is time-major in memory, and a
        # plain GEMM on a packed copy is faster than a batched matmul over the strided view.
        hidden = self._hidden_states(inputs, z).reshape(-1, self.config.hidden_dim)
        if self.config.fused_output:
            # fused and chunked when the output layer is frozen (Langevin), else plain
            nll = linear_cross_entropy(
                hidden,
                self.output.weight,
                self.output.bias,
                targets.reshape(-1),
                ignore_index=self.pad_id,
            )
        else:
            logits = self.output(hidden)
            nll = F.cross_entropy(
                logits,
                targets.reshape(-1),
                ignore_index=self.pad_id,
                reduction="none",
            )
        return -nll.view(targets.shape)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p_beta(x | z)`` summed over the target tokens (incl. ``<eos>``), shape ``(B,)``."""
        return self.token_log_likelihood(x, z).sum(dim=1)

    def num_targets(self, x: Tensor) -> Tensor:
        """Number of scored tokens per sequence (after ``<bos>``, up to and incl. ``<eos>``)."""
        return (x[:, 1:] != self.pad_id).sum(dim=1)

    @torch.no_grad()
    def sample(
        self,
        z: Tensor,
        *,
        decode: Literal["greedy", "sample", "beam"] = "greedy",
        temperature: float = 1.0,
        top_k: int | None = None,
        max_length: int | None = None,
        generator: torch.Generator | None = None,
        beam_size: int = 5,
        length_penalty: float = 0.0,
    ) -> Tensor:
        """Decode one sequence per row of z.

        Args:
            decode: ``greedy`` (arg-max token each step), ``sample`` (from the softmax of
                ``logits / temperature``, restricted to the ``top_k`` most likely tokens if set)
                or ``beam`` (beam search, see :meth:`beam_search`; ``temperature`` and ``top_k``
                are ignored).
            max_length: most tokens per sequence (default ``config.max_decode_length``).
            beam_size, length_penalty: for ``decode="beam"``.

        Returns:
            ``LongTensor (B, L)`` of token ids without ``<bos>``; each row ends at its first
            ``<eos>``, followed by ``<pad>``. ``<pad>`` and ``<bos>`` are never produced.
        """
        if decode not in ("greedy", "sample", "beam"):
            raise ValueError(f"decode must be 'greedy', 'sample' or 'beam', got {decode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        length = self.config.max_decode_length if max_length is None else max_length
        if decode == "beam":
            return self.beam_search(
                z, beam_size=beam_size, length_penalty=length_penalty, max_length=length
            )
        batch = z.shape[0]
        state = self._initial_state(z)
        token = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=z.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=z.device)
        out: list[Tensor] = []
        z_step = z.unsqueeze(1)
        for _ in range(length):
            step_in = torch.cat([self.embedding(token), z_step], dim=2)
            hidden, state = self.lstm(step_in, state)
            logits = self.output(hidden[:, 0])
            # never emitted: <pad> marks the end of a row, <bos> only starts one
            logits[:, self.pad_id] = float("-inf")
            logits[:, self.bos_id] = float("-inf")
            if decode == "greedy":
                next_token = logits.argmax(dim=1)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[1]:
                    kth = logits.topk(top_k, dim=1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=1)
                next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            next_token = next_token.masked_fill(finished, self.pad_id)
            out.append(next_token)
            finished |= next_token == self.eos_id
            if bool(finished.all()):
                break
            token = next_token.unsqueeze(1)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def beam_search(
        self,
        z: Tensor,
        *,
        beam_size: int = 5,
        length_penalty: float = 0.0,
        max_length: int | None = None,
    ) -> Tensor:
        """The most likely sequence per row of z found by beam search (batched over rows).

        Hypotheses are scored by their log-probability ``sum_t log p(x_t | x_<t, z)`` under the
        full softmax (the score :meth:`log_likelihood` gives ``<bos> + sequence``), ranked by
        ``score / length ** length_penalty`` (length: tokens incl. ``<eos>``; 0: no
        normalisation, the exact log-probability). A hypothesis that emits ``<eos>`` is finished:
        it stays in the beam with a fixed score and competes with the open ones; the search stops
        when every hypothesis is finished or after ``max_length`` tokens (open hypotheses are then
        cut there, as greedy decoding does). ``<pad>`` and ``<bos>`` are never produced.
        ``beam_size=1`` is greedy decoding.

        Returns:
            ``LongTensor (B, L)`` in the format of :meth:`sample`.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
        length = self.config.max_decode_length if max_length is None else max_length
        if length < 1:
            raise ValueError(f"max_length must be >= 1, got {length}")
        batch, k, vocab, device = z.shape[0], beam_size, self.vocab_size, z.device
        z_beams = z.repeat_interleave(k, dim=0)  # (B*k, d): row b*k + j is beam j of row b
        state = self._initial_state(z_beams)
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis to start with: the others are copies
        lengths = torch.zeros(batch, k, device=device)
        finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
        tokens = torch.empty(batch, k, 0, dtype=torch.long, device=device)
        token = torch.full((batch * k, 1), self.bos_id, dtype=torch.long, device=device)
        z_step = z_beams.unsqueeze(1)
        # a finished hypothesis has one continuation, <pad>, with log-probability 0
        after_end = torch.full((vocab,), float("-inf"), device=device)
        after_end[self.pad_id] = 0.0
        for _ in range(length):
            step_in = torch.cat([self.embedding(token), z_step], dim=2)
            hidden, state = self.lstm(step_in, state)
            log_probs = torch.log_softmax(self.output(hidden[:, 0]).float(), dim=1)
            log_probs[:, self.pad_id] = float("-inf")
            log_probs[:, self.bos_id] = float("-inf")
            log_probs = log_probs.view(batch, k, vocab)
            log_probs = torch.where(finished.unsqueeze(2), after_end, log_probs)
            candidates = (scores.unsqueeze(2) + log_probs).view(batch, k * vocab)
            new_lengths = (lengths + (~finished).float()).unsqueeze(2).expand(-1, -1, vocab)
            rank = candidates
            if length_penalty:
                rank = candidates / new_lengths.reshape(batch, k * vocab) ** length_penalty
            best = rank.topk(k, dim=1).indices  # (B, k)
            origin, next_token = best // vocab, best % vocab
            scores = candidates.gather(1, best)
            lengths = new_lengths.reshape(batch, k * vocab).gather(1, best)
            finished = finished.gather(1, origin) | (next_token == self.eos_id)
            history = tokens.gather(1, origin.unsqueeze(2).expand(-1, -1, tokens.shape[2]))
            tokens = torch.cat([history, next_token.unsqueeze(2)], dim=2)
            rows = (origin + torch.arange(batch, device=device).unsqueeze(1) * k).view(-1)
            state = self._select_state(state, rows)
            if bool((finished | scores.isneginf()).all()):
                break
            token = next_token.view(batch * k, 1)
        rank = scores
        if length_penalty:
            rank = scores / lengths.clamp(min=1) ** length_penalty
        choice = rank.argmax(dim=1)
        out = tokens[torch.arange(batch, device=device), choice]
        width = int((out != self.pad_id).sum(dim=1).max()) if batch else 0
        return out[:, : max(width, 1)]
