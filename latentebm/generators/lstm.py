"""LSTM decoder ``p_beta(x | z)`` for token sequences (text, SMILES, SELFIES).

Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model",
appendix B.1: a one-layer unidirectional LSTM (Table 7: PTB embedding 128, hidden 512), weights
initialised from Unif(-0.1, 0.1). z sets the initial hidden state through a linear map
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

from latentebm.config import check_fields, checked_field, positive, rate
from latentebm.generators import decoding
from latentebm.generators.chain_lstm import InputGateCache, lstm_recurrence
from latentebm.generators.fused import linear_cross_entropy

RecurrentState: TypeAlias = Tensor | tuple[Tensor, Tensor]
"""A GRU's ``h`` or an LSTM's ``(h, c)``, each ``(num_layers, B, hidden_dim)``."""


class LSTMDecoder(nn.Module, decoding.StepwiseDecoder[RecurrentState]):
    """``log p_beta(x | z) = sum_t log p(x_t | x_<t, z)`` with an LSTM.

    Args:
        config: sizes and decoding defaults (the recipe's ``model.generator`` section).
        z_dim: dimension of z.
        vocab_size, pad_id, bos_id, eos_id: from the task's tokenizer.

    Decoding (``sample``, ``beam_search``) is
    :class:`~latentebm.generators.decoding.StepwiseDecoder` with the LSTM step.
    """

    @dataclass
    class Config:
        embedding_dim: int = checked_field(128, check=positive)
        """Size of the token embeddings (Table 7: 128 for PTB)."""
        hidden_dim: int = checked_field(512, check=positive)
        """LSTM hidden units (Table 7: 512 for PTB)."""
        num_layers: int = checked_field(1, check=positive)
        """Stacked LSTM layers (1 in the paper)."""
        cell: Literal["lstm", "gru"] = "lstm"
        """Recurrent cell: ``lstm`` (the paper) or ``gru`` (z sets the initial hidden state of
        either; the LSTM's initial cell state is 0)."""
        dropout: float = checked_field(0.0, check=rate)
        """Dropout on embeddings and LSTM outputs during training."""
        init_range: float = checked_field(0.1, check=positive)
        """Weights start from Unif(-init_range, init_range) (Pang et al. 2020, appendix B.1)."""
        max_decode_length: int = checked_field(60, check=positive)
        """Longest sequence produced by ``sample`` unless told otherwise."""
        fused_output: bool = True
        """Score tokens with the fused, chunked output layer
        (:func:`latentebm.generators.fused.linear_cross_entropy`) when the output layer is
        frozen and z needs a gradient (the Langevin chains): same values and z-gradients as the
        plain ``linear`` + ``cross_entropy`` up to rounding, without materialising the
        ``(B*T, vocab)`` logits. Training steps (weights need gradients) take the plain path,
        scoring without a gradient the plain computation over chunks of rows. ``False``: always
        the plain path."""
        chain_matmul_dtype: Literal["float32", "bfloat16"] = "float32"
        """``bfloat16``: in the Langevin chains (the fused path), the output layer's two matrix
        products run in bfloat16, the softmax in float32: about 1.5x faster chain steps on CPUs
        with AVX512-BF16 or AMX (and on recent GPUs), slower where bfloat16 is emulated. An
        approximation: z-gradients within a few tenths of a percent of float32 and per-token
        log-likelihoods within about 0.01 nats at the reference size at initialisation. Only
        in training mode (the learning chains): the generator update and everything run in eval
        mode (``latentebm evaluate``, generation) stay float32. ``float32`` (default): exact up
        to float32 rounding."""
        fast_chain: bool = True
        """In the Langevin chains on a CPU (LSTM and embedding frozen, z needs a gradient, no
        active dropout, one-layer ``lstm`` cell), run the recurrence of
        :mod:`latentebm.generators.chain_lstm`: its backward reaches z only (oneDNN's LSTM also
        computes weight gradients) and the embedding's share of the input projection is
        computed once per token batch, not at every chain step. Same values and z-gradients as
        ``nn.LSTM`` up to rounding. ``False``: always ``nn.LSTM``."""

        def __post_init__(self) -> None:
            check_fields(self)

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
        self._gate_cache = InputGateCache()

    @property
    def activation_floats_per_token(self) -> int:
        """Floats kept per (row, token) for a gradient to z, roughly: the input (embedding and
        z), the gates and the states of every layer. Likelihood evaluation sizes its chunks by
        it (:data:`latentebm.metrics.marginal.REFERENCE_FLOATS_PER_TOKEN`)."""
        c = self.config
        gates = 4 if c.cell == "lstm" else 3
        return c.num_layers * (c.embedding_dim + self.z_dim + (gates + 4) * c.hidden_dim)

    def _initial_state(self, z: Tensor) -> RecurrentState:
        """``h0 = W z + b`` per layer (and ``c0 = 0`` for the LSTM)."""
        batch = z.shape[0]
        layers, hidden = self.config.num_layers, self.config.hidden_dim
        h0 = self.latent_to_hidden(z).view(batch, layers, hidden).transpose(0, 1).contiguous()
        if self.config.cell == "gru":
            return h0
        return h0, torch.zeros_like(h0)

    def _reorder_state(self, state: RecurrentState, rows: Tensor) -> RecurrentState:
        """The state of the batch rows ``rows`` (beam search reordering)."""
        if isinstance(state, tuple):
            return state[0].index_select(1, rows), state[1].index_select(1, rows)
        return state.index_select(1, rows)

    def _step(self, z: Tensor) -> decoding.Step[RecurrentState]:
        """The decoding step given z ``(B, d)`` (:mod:`latentebm.generators.decoding`): next-token
        logits ``(B, V)`` after ``token (B, 1)``, z concatenated to its embedding, and the
        updated state."""
        z_step = z.unsqueeze(1)

        def step(token: Tensor, state: RecurrentState) -> tuple[Tensor, RecurrentState]:
            hidden, state = self.lstm(torch.cat([self.embedding(token), z_step], dim=2), state)
            return self.output(hidden[:, 0]), state

        return step

    def _hidden_states(self, inputs: Tensor, z: Tensor) -> Tensor:
        """LSTM outputs for ``inputs (B, T)`` given z: shape ``(B, T, hidden_dim)``."""
        embedded = self.dropout(self.embedding(inputs))
        z_every_step = z.unsqueeze(1).expand(-1, inputs.shape[1], -1)
        output, _ = self.lstm(torch.cat([embedded, z_every_step], dim=2), self._initial_state(z))
        return self.dropout(output)

    def _uses_chain_recurrence(self, z: Tensor) -> bool:
        """Whether :meth:`token_log_likelihood` takes the chain path (``Config.fast_chain``)."""
        config = self.config
        if not (config.fast_chain and config.cell == "lstm" and config.num_layers == 1):
            return False
        if not (torch.is_grad_enabled() and z.requires_grad):
            return False
        if z.device.type != "cpu":  # measured on CPUs only; cuDNN's LSTM may well be faster
            return False
        if torch.compiler.is_compiling():  # model.compile: the compiler traces nn.LSTM whole
            return False
        if self.training and config.dropout > 0:
            return False
        return not any(p.requires_grad for p in (*self.lstm.parameters(), self.embedding.weight))

    def _chain_hidden_states(self, inputs: Tensor, z: Tensor) -> Tensor:
        """LSTM outputs ``(T, B, hidden_dim)``, time-major, by the chain recurrence."""
        assert isinstance(self.lstm, nn.LSTM)
        token_gates, weight_ih_z, weight_hh = self._gate_cache.get(
            self.lstm, self.embedding, inputs
        )
        input_gates = token_gates + (z @ weight_ih_z.t()).unsqueeze(0)
        h0 = self.latent_to_hidden(z)
        return lstm_recurrence(input_gates, h0, weight_hh)

    def _output_nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """``-log p(target | hidden)`` per row of ``hidden (N, H)``, ``targets (N,)``; 0 at pad."""
        if self.config.fused_output:
            # fused when the output layer is frozen (Langevin), plain in training, and
            # chunked by rows without any gradient (evaluation): linear_cross_entropy
            # bfloat16 in the learning chains only (training mode), never in evaluation
            low = self.config.chain_matmul_dtype == "bfloat16" and self.training
            matmul_dtype = torch.bfloat16 if low else None
            return linear_cross_entropy(
                hidden,
                self.output.weight,
                self.output.bias,
                targets,
                ignore_index=self.pad_id,
                matmul_dtype=matmul_dtype,
            )
        return F.cross_entropy(
            self.output(hidden), targets, ignore_index=self.pad_id, reduction="none"
        )

    def token_log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x_t | x_<t, z)`` for every target position, shape ``(B, T-1)``; 0 at padding."""
        inputs, targets = x[:, :-1], x[:, 1:]
        if self._uses_chain_recurrence(z):
            # rows in time-major order (t, b), the recurrence's own layout: no copy
            hidden = self._chain_hidden_states(inputs, z).reshape(-1, self.config.hidden_dim)
            nll = self._output_nll(hidden, targets.t().reshape(-1))
            return -nll.view(targets.shape[1], targets.shape[0]).t()
        # One contiguous (B*T, H) matrix: the LSTM's output is time-major in memory, and a
        # plain GEMM on a packed copy is faster than a batched matmul over the strided view.
        hidden = self._hidden_states(inputs, z).reshape(-1, self.config.hidden_dim)
        return -self._output_nll(hidden, targets.reshape(-1)).view(targets.shape)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p_beta(x | z)`` summed over the target tokens (incl. ``<eos>``), shape ``(B,)``."""
        return self.token_log_likelihood(x, z).sum(dim=1)

    def num_targets(self, x: Tensor) -> Tensor:
        """Number of scored tokens per sequence (after ``<bos>``, up to and incl. ``<eos>``)."""
        return (x[:, 1:] != self.pad_id).sum(dim=1)
