"""A one-layer LSTM recurrence for the Langevin chains: backward to the inputs only.

During the posterior chain of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space
Energy-Based Prior Model" (eq. 10, the step on ``log p_beta(x | z) + log p_alpha(z)``), every
parameter is frozen and only ``d log p_beta(x | z) / dz`` is needed. ``torch.nn.LSTM`` (oneDNN on
the CPU) still computes its weight gradients in the backward pass, and recomputes the embedding's
share of the input projection at every chain step although the tokens do not change along the
chain. This module provides the pieces to do only the work a chain needs:

* :class:`InputGateCache`: ``W_ih[:, :E] e(x_t) + b_ih + b_hh`` for a batch of tokens, kept while
  the same token tensor and the same (frozen) parameters are used, so a chain computes it once;
* :func:`lstm_recurrence`: the recurrence from precomputed input gates (which carry z's share,
  ``W_ih[:, E:] z``) and ``h0``, whose backward returns the gradients of the input gates and of
  ``h0`` only (no weight gradients), and computes the sigmoid/tanh derivatives for all steps at
  once.

The mathematics is ``torch.nn.LSTM``'s (gates ``i, f, g, o``; ``c_t = f c_{t-1} + i g``,
``h_t = o tanh(c_t)``, ``c_0 = 0``); internally the gate rows are reordered to ``i, f, o, g`` so
that one ``sigmoid_`` and one ``tanh_`` cover them. Results equal ``nn.LSTM``'s up to float
rounding (tests/test_chain_lstm.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from latentebm.langevin import frozen_window

__all__ = ["InputGateCache", "gate_order", "lstm_recurrence"]


def gate_order(hidden_dim: int, device: torch.device) -> Tensor:
    """Row indices that reorder ``nn.LSTM``'s gate blocks ``i, f, g, o`` to ``i, f, o, g``."""
    h = hidden_dim
    blocks = (range(0, 2 * h), range(3 * h, 4 * h), range(2 * h, 3 * h))
    return torch.tensor([r for block in blocks for r in block], device=device)


class _Recurrence(torch.autograd.Function):
    """``hidden (T, B, H)`` from ``input_gates (T, B, 4H)`` (order ``i, f, o, g``), ``h0 (B, H)``
    and ``weight_hh (4H, H)`` (same order, frozen). Backward: gradients of ``input_gates`` and
    ``h0`` only. Not twice differentiable."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, input_gates: Tensor, h0: Tensor, weight_hh: Tensor
    ) -> Tensor:
        steps, batch, four_h = input_gates.shape
        h = four_h // 4
        weight_t = weight_hh.t()
        gates = torch.empty_like(input_gates)  # activations, kept for backward
        cells = input_gates.new_empty(steps, batch, h)
        hidden = input_gates.new_empty(steps, batch, h)
        state = h0
        for t in range(steps):
            gate = gates[t]
            torch.addmm(input_gates[t], state, weight_t, out=gate)
            gate[:, : 3 * h].sigmoid_()
            gate[:, 3 * h :].tanh_()
            cell = cells[t]
            torch.mul(gate[:, :h], gate[:, 3 * h :], out=cell)  # i * g
            if t > 0:
                cell.addcmul_(gate[:, h : 2 * h], cells[t - 1])  # + f * c_{t-1}
            out = hidden[t]
            torch.tanh(cell, out=out)
            out.mul_(gate[:, 2 * h : 3 * h])  # o * tanh(c)
            state = out
        ctx.save_for_backward(gates, cells, weight_hh)
        return hidden

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_hidden: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        gates, cells, weight_hh = ctx.saved_tensors
        steps, batch, four_h = gates.shape
        h = four_h // 4
        i, f, o, g = (gates[..., k * h : (k + 1) * h] for k in range(4))
        tanh_c = cells.tanh()
        # Per-step factors, for all steps at once (T, B, H each):
        #   do_pre = dh * tanh(c) * o (1 - o)
        #   dc    += dh * o (1 - tanh(c)^2)
        #   (di_pre, df_pre, dg_pre) = dc * (g i (1-i), c_{t-1} f (1-f), i (1-g^2))
        out_factor = tanh_c * o * (1 - o)
        cell_factor = o * (1 - tanh_c * tanh_c)
        previous_cells = torch.zeros_like(cells)
        previous_cells[1:] = cells[:-1]
        ifg_factor = torch.stack(
            (g * i * (1 - i), previous_cells * f * (1 - f), i * (1 - g * g)), dim=2
        )  # (T, B, 3, H) in the order i, f, g
        grad_gates = torch.empty_like(gates)
        grad_cell = grad_hidden.new_zeros(batch, h)
        grad_state = grad_hidden[steps - 1].clone()  # dL/dh_t, recurrent share added below
        for t in range(steps - 1, -1, -1):
            grad_gate = grad_gates[t]
            if t < steps - 1:
                grad_cell.mul_(f[t + 1])
            grad_cell.addcmul_(grad_state, cell_factor[t])
            torch.mul(grad_state, out_factor[t], out=grad_gate[:, 2 * h : 3 * h])
            ifg = grad_cell.unsqueeze(1) * ifg_factor[t]  # (B, 3, H)
            grad_gate[:, : 2 * h] = ifg[:, :2].reshape(batch, 2 * h)
            grad_gate[:, 3 * h :] = ifg[:, 2]
            # dL/dh_{t-1} = grad_hidden[t-1] + grad_gate @ W_hh (dL/dh0 at t = 0)
            if t > 0:
                grad_state = torch.addmm(grad_hidden[t - 1], grad_gate, weight_hh)
            else:
                grad_state = grad_gate @ weight_hh
        grad_h0 = grad_state if ctx.needs_input_grad[1] else None
        grad_input = grad_gates if ctx.needs_input_grad[0] else None
        return grad_input, grad_h0, None


def lstm_recurrence(input_gates: Tensor, h0: Tensor, weight_hh: Tensor) -> Tensor:
    """LSTM outputs ``(T, B, H)`` from precomputed input gates; backward to the inputs only.

    Args:
        input_gates: ``W_ih u_t + b_ih + b_hh`` for every step, ``(T, B, 4H)``, gate blocks in
            the order ``i, f, o, g`` (:func:`gate_order`).
        h0: initial hidden state ``(B, H)``; the initial cell state is 0.
        weight_hh: the recurrent weight ``(4H, H)``, rows in the same order; must not require
            grad (raises ``ValueError``): this path computes no weight gradients.
    """
    if weight_hh.requires_grad:
        raise ValueError("lstm_recurrence computes no weight gradients: weight_hh must be frozen")
    if input_gates.dim() != 3 or input_gates.shape[2] != 4 * weight_hh.shape[1]:
        raise ValueError(
            f"expected input_gates (T, B, 4H) with H = {weight_hh.shape[1]}, got "
            f"{tuple(input_gates.shape)}"
        )
    return _Recurrence.apply(input_gates, h0, weight_hh)


class InputGateCache:
    """The embedding's share of an LSTM's input gates, computed once per token batch.

    ``get(lstm, embedding, inputs)`` returns ``(T, B, 4H)`` = ``W_ih[:, :E] e(inputs).T + b_ih +
    b_hh`` (time-major, gate order ``i, f, o, g``) and the reordered ``W_ih[:, E:]`` (z's share)
    and ``W_hh``. The result is reused while ``inputs`` views the same memory with the same
    layout and version (a view made afresh from the same batch at each chain step qualifies;
    any in-place change bumps the version), every parameter involved is the same tensor at
    the same version (an optimiser step or ``load_state_dict`` bumps it), and the same
    :func:`~latentebm.langevin.frozen` window is open (writes through ``.data`` bump no
    version, so a value never outlives the chain it was made in): a Langevin chain on a fixed
    batch computes it once. The cache keeps the last ``inputs`` alive so that its
    memory cannot be reused by another tensor. Only for frozen parameters (the caller checks).
    """

    def __init__(self) -> None:
        # (key, inputs, value) as one tuple, replaced at once
        self._entry: tuple[tuple[Any, ...], Tensor, tuple[Tensor, Tensor, Tensor]] | None = None

    def clear(self) -> None:
        """Forget the cached tensors."""
        self._entry = None

    def __deepcopy__(self, memo: dict[int, Any]) -> InputGateCache:
        return InputGateCache()  # a copy of the module computes its own

    def __getstate__(self) -> dict[str, Any]:
        return {"_entry": None}

    @staticmethod
    def _parameter_key(module: nn.Module) -> tuple[Any, ...]:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters())

    def get(
        self, lstm: nn.LSTM, embedding: nn.Embedding, inputs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(token_gates (T, B, 4H), weight_ih_z (4H, d), weight_hh (4H, H))``, reordered."""
        # The same memory, layout and version as the cached tensor (which this cache keeps
        # alive, so its memory cannot be reused by another tensor meanwhile): same tokens.
        key = (
            frozen_window(),  # a new chain (frozen window) computes afresh
            inputs.data_ptr(),
            tuple(inputs.shape),
            inputs.stride(),
            inputs._version,
            inputs.device,
            self._parameter_key(lstm),
            self._parameter_key(embedding),
        )
        entry = self._entry
        if entry is not None and entry[0] == key:
            return entry[2]
        self._entry = None  # free the old tensors before making new ones
        with torch.no_grad():
            emb_dim = embedding.embedding_dim
            order = gate_order(lstm.hidden_size, lstm.weight_hh_l0.device)
            weight_ih = lstm.weight_ih_l0.index_select(0, order)
            bias = torch.zeros(4 * lstm.hidden_size, device=weight_ih.device, dtype=weight_ih.dtype)
            if lstm.bias:
                bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).index_select(0, order)
            embedded = embedding(inputs.t())  # (T, B, E), time-major
            token_gates = torch.addmm(
                bias, embedded.reshape(-1, emb_dim), weight_ih[:, :emb_dim].t()
            ).view(inputs.shape[1], inputs.shape[0], -1)
            value = (
                token_gates,
                weight_ih[:, emb_dim:].contiguous(),
                lstm.weight_hh_l0.index_select(0, order),
            )
        self._entry = (key, inputs, value)
        return value
