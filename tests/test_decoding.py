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


# ------------------------------------------------------- top_p, repetition penalty, lengths
def constant_net(emit_probs: list[float], eos_prob: float = 0.0) -> decoding.Step[None]:
    """A step whose next-token distribution never changes: ``<eos>`` with ``eos_prob`` and
    the tokens ``3, 4, ...`` with ``emit_probs`` (a vocabulary of ``3 + len(emit_probs)``);
    ``<pad>`` and ``<bos>`` have probability 0."""
    probs = torch.tensor([0.0, 0.0, eos_prob, *emit_probs], dtype=torch.float64)
    logits = probs.log()

    def step(tokens: Tensor, state: None) -> tuple[Tensor, None]:
        return logits.expand(tokens.shape[0], -1).clone(), state

    return step


def const_options(rows: int, length: int = 1) -> dict[str, Any]:
    return {**common(length), "batch": rows}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nucleus_keeps_exactly_the_smallest_set_reaching_top_p(dtype: torch.dtype) -> None:
    # the most likely tokens in a shuffled order: 0.5, 0.3, 0.15, 0.05
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]], dtype=dtype)
    # 0.5 + 0.3 reaches 0.8: the first two, renormalised
    expected = torch.tensor([[0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]], dtype=dtype)
    torch.testing.assert_close(decoding.nucleus(probs, 0.8), expected)
    torch.testing.assert_close(decoding.nucleus(probs, 0.79), expected)
    # 0.8 < 0.81: the third joins
    expected = torch.tensor([[0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95]], dtype=dtype)
    torch.testing.assert_close(decoding.nucleus(probs, 0.81), expected)
    torch.testing.assert_close(decoding.nucleus(probs, 0.95), expected)
    # the most likely token is always kept; top_p = 1 keeps everything
    torch.testing.assert_close(
        decoding.nucleus(probs, 1e-6), torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=dtype)
    )
    assert decoding.nucleus(probs, 1.0) is probs
    # rows are filtered independently
    two = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]], dtype=dtype)
    kept = decoding.nucleus(two, 0.8) > 0
    assert kept.tolist() == [[True, True, False, False], [False, False, True, True]]


def test_top_p_sampling_draws_from_the_renormalised_nucleus() -> None:
    n = 4000
    step = constant_net([0.5, 0.3, 0.15, 0.05])  # tokens 3, 4, 5, 6 (VOCAB 7)
    for top_p, nucleus_size in ((0.79, 2), (0.81, 3)):
        g = torch.Generator().manual_seed(0)
        out = decoding.decode_tokens(
            step, None, decode="sample", top_p=top_p, generator=g, **const_options(n)
        )
        freq = torch.bincount(out[:, 0], minlength=7).double() / n
        probs = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
        probs[3 + nucleus_size :] = 0.0
        probs /= probs.sum()
        assert (freq[3 + nucleus_size :] == 0).all()  # outside the nucleus: never drawn
        se = (probs * (1 - probs) / n).sqrt()
        assert ((freq - probs).abs() <= 4.5 * se + 1e-12).all(), (top_p, freq, probs)


def test_top_p_one_is_plain_sampling() -> None:
    net = ToyNet(1)
    options = {**common(8), "decode": "sample", "temperature": 0.7}
    plain = decoding.decode_tokens(
        net.step, net.initial(), generator=torch.Generator().manual_seed(4), **options
    )
    one = decoding.decode_tokens(
        net.step, net.initial(), top_p=1.0, generator=torch.Generator().manual_seed(4), **options
    )
    assert torch.equal(plain, one)


def test_top_k_applies_before_top_p() -> None:
    """As Hugging Face: top_k first, then top_p on the renormalised survivors. With
    probabilities 0.4, 0.3, 0.2, 0.1, top_k=2 leaves 4/7 and 3/7, and top_p=0.5 keeps only 4/7;
    top_p=0.5 alone keeps 0.4 and 0.3 (0.4 < 0.5)."""
    n = 400
    step = constant_net([0.4, 0.3, 0.2, 0.1])
    both = decoding.decode_tokens(
        step,
        None,
        decode="sample",
        top_k=2,
        top_p=0.5,
        generator=torch.Generator().manual_seed(0),
        **const_options(n),
    )
    assert set(both[:, 0].tolist()) == {3}
    alone = decoding.decode_tokens(
        step,
        None,
        decode="sample",
        top_p=0.5,
        generator=torch.Generator().manual_seed(0),
        **const_options(n),
    )
    assert set(alone[:, 0].tolist()) == {3, 4}


def test_repetition_penalty_rule() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 0.0], [2.0, -1.0, 0.5, -3.0, 0.0]])
    seen = torch.tensor([[True, True, False, False, True], [False, False, True, True, False]])
    # seen: positive logits divided by the penalty, negative ones multiplied, 0 stays 0
    expected = torch.tensor([[1.0, -2.0, 0.5, -3.0, 0.0], [2.0, -1.0, 0.25, -6.0, 0.0]])
    assert torch.equal(decoding.apply_repetition_penalty(logits, seen, 2.0), expected)
    # a penalty below 1 favours repeats
    expected = torch.tensor([[4.0, -0.5, 0.5, -3.0, 0.0], [2.0, -1.0, 1.0, -1.5, 0.0]])
    assert torch.equal(decoding.apply_repetition_penalty(logits, seen, 0.5), expected)
    assert torch.equal(decoding.apply_repetition_penalty(logits, seen, 1.0), logits)


@pytest.mark.parametrize("decode", ["greedy", "sample"])
def test_repetition_penalty_in_the_loop_equals_the_hand_written_rule(decode: str) -> None:
    net, penalty, length = ToyNet(2), 1.7, 8
    options = {**common(length), "decode": decode, "temperature": 0.9}
    out = decoding.decode_tokens(
        net.step,
        net.initial(),
        repetition_penalty=penalty,
        generator=torch.Generator().manual_seed(5),
        **options,
    )
    g = torch.Generator().manual_seed(5)
    state, token = net.initial(), torch.full((BATCH, 1), BOS)
    finished = torch.zeros(BATCH, dtype=torch.bool)
    history: list[list[int]] = [[] for _ in range(BATCH)]
    for t in range(out.shape[1]):
        logits, state = net.step(token, state)
        logits[:, [PAD, BOS]] = -math.inf
        for row, seen in enumerate(history):
            for v in set(seen):
                x = float(logits[row, v])
                logits[row, v] = x * penalty if x < 0 else x / penalty
        if decode == "greedy":
            nxt = logits.argmax(dim=1)
        else:
            nxt = torch.multinomial(torch.softmax(logits / 0.9, dim=1), 1, generator=g)[:, 0]
        nxt = nxt.masked_fill(finished, PAD)
        assert torch.equal(nxt, out[:, t])
        for row in range(BATCH):
            history[row].append(int(nxt[row]))
        finished |= nxt == EOS
        token = nxt.unsqueeze(1)
    # 1.0 changes nothing
    plain = decoding.decode_tokens(
        net.step, net.initial(), generator=torch.Generator().manual_seed(5), **options
    )
    off = decoding.decode_tokens(
        net.step,
        net.initial(),
        repetition_penalty=1.0,
        generator=torch.Generator().manual_seed(5),
        **options,
    )
    assert torch.equal(plain, off)


def test_greedy_with_a_strong_penalty_does_not_repeat() -> None:
    # positive logits: 3 > 4 > <eos>; greedy alone repeats token 3 to the end
    logits = torch.tensor([0.0, 0.0, 1.0, 4.0, 3.0])

    def step(tokens: Tensor, state: None) -> tuple[Tensor, None]:
        return logits.expand(tokens.shape[0], -1).clone(), state

    plain = decoding.decode_tokens(step, None, decode="greedy", **common(6))
    assert plain.tolist() == [[3] * 6] * BATCH
    penalised = decoding.decode_tokens(
        step, None, decode="greedy", repetition_penalty=100.0, **common(6)
    )
    assert penalised.tolist() == [[3, 4, EOS]] * BATCH


def test_new_option_checks_name_the_option() -> None:
    def check(decode: str = "sample", **options: Any) -> int:
        given = {"temperature": 1.0, "top_k": None, "max_length": None, **options}
        return decoding.check_decode_options(decode, default_length=7, **given)

    assert check(top_p=1.0) == check(top_p=0.3) == check(repetition_penalty=0.5) == 7
    for top_p in (0.0, -0.1, 1.01, math.nan):
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
            check(top_p=top_p)
    for penalty in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="repetition_penalty must be > 0"):
            check(repetition_penalty=penalty)
    assert check("greedy", repetition_penalty=1.3) == 7
    assert check("beam", repetition_penalty=1.0) == 7
    with pytest.raises(ValueError, match="repetition_penalty .*beam search does not support"):
        check("beam", repetition_penalty=1.3)


def test_max_new_tokens_is_an_alias_of_max_length() -> None:
    assert decoding.resolve_max_length(None, None) is None
    assert decoding.resolve_max_length(5, None) == 5
    assert decoding.resolve_max_length(None, 3) == 3
    assert decoding.resolve_max_length(3, 3) == 3
    with pytest.raises(ValueError, match=r"max_new_tokens \(3\) and max_length \(4\) differ"):
        decoding.resolve_max_length(4, 3)
