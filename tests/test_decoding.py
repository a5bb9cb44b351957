"""Tests of the shared step-by-step decoding (latentebm.generators.decoding) on a toy network
whose next-token distribution depends on the whole history, against brute-force search."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from latentebm.generators import decoding

PAD, BOS, EOS, VOCAB, WIDTH, BATCH = 0, 1, 2, 5, 4, 3
EMITTABLE = [t for t in range(VOCAB) if t not in (PAD, BOS)]


class ToyNet:
    """``state <- tanh(state A + E[token])``, ``logits = state O`` (``<eos>`` made less likely so
    that hypotheses grow): the next-token distribution depends on the whole history, and each
    of the ``BATCH`` rows starts from its own state (as from its own z)."""

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(WIDTH, WIDTH, generator=g)
        self.e = 2 * torch.randn(VOCAB, WIDTH, generator=g)
        self.o = 2 * torch.randn(WIDTH, VOCAB, generator=g)
        self.h0 = torch.randn(BATCH, WIDTH, generator=g)

    def initial(self, copies: int = 1) -> Tensor:
        """The state of the ``BATCH * copies`` rows: row ``b * copies + j`` starts as row b."""
        return self.h0.repeat_interleave(copies, dim=0)

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        state = torch.tanh(state @ self.a + self.e[tokens[:, 0]])
        logits = state @ self.o
        logits[:, EOS] -= 2.0
        return logits, state

    @staticmethod
    def reorder(state: Tensor, rows: Tensor) -> Tensor:
        return state.index_select(0, rows)

    def log_prob(self, row: int, seq: list[int]) -> float:
        """``sum_t log p(x_t | x_<t)`` of row ``row`` under the full softmax, by itself."""
        state, token, total = self.h0[row : row + 1], BOS, 0.0
        for t in seq:
            logits, state = self.step(torch.tensor([[token]]), state)
            total += float(torch.log_softmax(logits, dim=1)[0, t])
            token = t
        return total


def hypotheses(length: int) -> list[list[int]]:
    """Every sequence the decoder can end with: up to the first <eos>, or cut at ``length``."""
    out = []
    for n in range(1, length + 1):
        for body in itertools.product(EMITTABLE, repeat=n):
            if EOS in body[:-1]:
                continue
            if body[-1] == EOS or n == length:
                out.append(list(body))
    return out


def run_beam(net: ToyNet, k: int, length: int, length_penalty: float) -> Tensor:
    return decoding.beam_search(
        net.step,
        net.initial(k),
        net.reorder,
        batch=BATCH,
        beam_size=k,
        vocab_size=VOCAB,
        length=length,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
        device=torch.device("cpu"),
        length_penalty=length_penalty,
    )


def strip(row: list[int]) -> list[int]:
    return [t for t in row if t != PAD]


def common(length: int) -> dict[str, Any]:
    return {
        "batch": BATCH,
        "length": length,
        "pad_id": PAD,
        "bos_id": BOS,
        "eos_id": EOS,
        "device": torch.device("cpu"),
    }


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_equals_brute_force(seed: int, length_penalty: float) -> None:
    net, length = ToyNet(seed), 4
    # a beam as wide as the hypothesis space keeps every prefix: the search is exhaustive
    out = run_beam(net, k=len(EMITTABLE) ** length, length=length, length_penalty=length_penalty)
    assert out.shape[1] <= length
    for row, decoded in enumerate(out.tolist()):
        ranked = [
            (net.log_prob(row, h) / (len(h) ** length_penalty if length_penalty else 1.0), h)
            for h in hypotheses(length)
        ]
        assert strip(decoded) == max(ranked)[1]


@pytest.mark.parametrize("seed", range(8))
def test_greedy_equals_brute_force_and_beam_size_one_and_top_k_one(seed: int) -> None:
    net, length = ToyNet(seed), 6
    greedy = decoding.decode_tokens(net.step, net.initial(), decode="greedy", **common(length))
    for row, decoded in enumerate(greedy.tolist()):
        # the arg-max of the full conditional, one token at a time
        seq: list[int] = []
        while len(seq) < length and (not seq or seq[-1] != EOS):
            seq.append(max(EMITTABLE, key=lambda t: net.log_prob(row, [*seq, t])))
        assert strip(decoded) == seq
    assert torch.equal(run_beam(net, k=1, length=length, length_penalty=0.0), greedy)
    g = torch.Generator().manual_seed(seed)
    top1 = decoding.decode_tokens(
        net.step, net.initial(), decode="sample", top_k=1, generator=g, **common(length)
    )
    assert torch.equal(top1, greedy)


def test_sampling_draws_one_multinomial_per_step_and_pads_after_eos() -> None:
    net, copies = ToyNet(0), 20
    batch = BATCH * copies
    options = {**common(8), "batch": batch, "decode": "sample", "temperature": 1.5}
    g1 = torch.Generator().manual_seed(3)
    first = decoding.decode_tokens(net.step, net.initial(copies), generator=g1, **options)
    g2 = torch.Generator().manual_seed(3)
    again = decoding.decode_tokens(net.step, net.initial(copies), generator=g2, **options)
    assert torch.equal(first, again)
    assert torch.equal(g1.get_state(), g2.get_state())
    assert not ((first == PAD) & (torch.cumsum(first == EOS, dim=1) == 0)).any()
    assert not (first == BOS).any()
    for row in first.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :])
    # the same draws as the hand-written loop: softmax(logits / T), one multinomial a step
    g3 = torch.Generator().manual_seed(3)
    state, token = net.initial(copies), torch.full((batch, 1), BOS)
    finished = torch.zeros(batch, dtype=torch.bool)
    for t in range(first.shape[1]):
        logits, state = net.step(token, state)
        logits[:, [PAD, BOS]] = -math.inf
        probs = torch.softmax(logits / 1.5, dim=1)
        nxt = torch.multinomial(probs, 1, generator=g3).squeeze(1).masked_fill(finished, PAD)
        assert torch.equal(nxt, first[:, t])
        finished |= nxt == EOS
        token = nxt.unsqueeze(1)


def test_option_checks() -> None:
    length = decoding.check_decode_options(
        "sample", temperature=1.0, top_k=None, max_length=None, default_length=7
    )
    assert length == 7
    with pytest.raises(ValueError, match="decode must be"):
        decoding.check_decode_options(
            "top", temperature=1.0, top_k=None, max_length=None, default_length=7
        )
    with pytest.raises(ValueError, match="temperature must be > 0"):
        decoding.check_decode_options(
            "sample", temperature=0.0, top_k=None, max_length=None, default_length=7
        )
    assert (
        decoding.check_beam_options(beam_size=2, length_penalty=0.0, max_length=3, default_length=7)
        == 3
    )
    with pytest.raises(ValueError, match="max_length must be >= 1, got 0"):
        decoding.check_beam_options(
            beam_size=2, length_penalty=0.0, max_length=None, default_length=0
        )
