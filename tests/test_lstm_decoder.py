"""Tests of the LSTM decoder ``p_beta(x | z)`` (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning
Latent Space Energy-Based Prior Model", appendix B.1)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import Tensor

from latentebm.generators import Generator
from latentebm.generators.lstm import LSTMDecoder

PAD, BOS, EOS, VOCAB, Z_DIM = 0, 1, 2, 9, 3


def make_decoder(num_layers: int = 1, init_range: float = 0.5, **config: object) -> LSTMDecoder:
    torch.manual_seed(0)
    decoder = LSTMDecoder(
        LSTMDecoder.Config(
            embedding_dim=5,
            hidden_dim=7,
            num_layers=num_layers,
            init_range=init_range,
            max_decode_length=12,
            **config,  # type: ignore[arg-type]
        ),
        z_dim=Z_DIM,
        vocab_size=VOCAB,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
    )
    return decoder.eval()


def sentences() -> list[list[int]]:
    return [[BOS, 3, 4, 5, EOS], [BOS, 6, 7, 8, 3, 4, EOS], [BOS, EOS]]


def pad_batch(rows: list[list[int]], width: int | None = None) -> Tensor:
    width = max(map(len, rows)) if width is None else width
    return torch.tensor([row + [PAD] * (width - len(row)) for row in rows])


def latent(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(1), dtype=dtype)


def hand_log_likelihood(decoder: LSTMDecoder, x: Tensor, z: Tensor) -> Tensor:
    """Reference: explicit LSTM cell equations (gate order i, f, g, o) and ``log_softmax``."""
    lstm, cfg = decoder.lstm, decoder.config
    batch = x.shape[0]
    h0 = decoder.latent_to_hidden(z).view(batch, cfg.num_layers, cfg.hidden_dim)
    h = [h0[:, layer] for layer in range(cfg.num_layers)]
    c = [torch.zeros_like(h0[:, 0]) for _ in range(cfg.num_layers)]
    total = torch.zeros(batch, dtype=z.dtype)
    for t in range(x.shape[1] - 1):
        inp = torch.cat([decoder.embedding.weight[x[:, t]], z], dim=1)
        for layer in range(cfg.num_layers):
            gates = (
                inp @ getattr(lstm, f"weight_ih_l{layer}").T
                + getattr(lstm, f"bias_ih_l{layer}")
                + h[layer] @ getattr(lstm, f"weight_hh_l{layer}").T
                + getattr(lstm, f"bias_hh_l{layer}")
            )
            i, f, g, o = gates.chunk(4, dim=1)
            c[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            h[layer] = torch.sigmoid(o) * torch.tanh(c[layer])
            inp = h[layer]
        log_probs = torch.log_softmax(decoder.output(inp), dim=1)
        for b in range(batch):
            target = int(x[b, t + 1])
            if target != PAD:
                total[b] = total[b] + log_probs[b, target]
    return total


# --------------------------------------------------------------------------- likelihood
@pytest.mark.parametrize("num_layers", [1, 2])
def test_log_likelihood_equals_hand_written_loop(num_layers: int) -> None:
    decoder = make_decoder(num_layers)
    assert isinstance(decoder, Generator)
    x = pad_batch(sentences())
    z = latent(3)
    with torch.no_grad():
        value = decoder.log_likelihood(x, z)
        expected = hand_log_likelihood(decoder, x, z)
    assert value.shape == (3,)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    assert (value < 0).all()
    assert decoder.num_targets(x).tolist() == [4, 6, 1]  # eos counted, bos and pad not


def test_padding_contributes_nothing_and_batch_equals_single() -> None:
    decoder = make_decoder()
    rows = sentences()
    z = latent(3)
    with torch.no_grad():
        batch_value = decoder.log_likelihood(pad_batch(rows), z)
        more_pad = decoder.log_likelihood(pad_batch(rows, width=12), z)
        tokens = decoder.token_log_likelihood(pad_batch(rows, width=12), z)
        single = torch.cat(
            [
                decoder.log_likelihood(torch.tensor([row]), z[i : i + 1])
                for i, row in enumerate(rows)
            ]
        )
    torch.testing.assert_close(more_pad, batch_value, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(single, batch_value, rtol=1e-6, atol=1e-6)
    assert tokens.shape == (3, 11)
    targets = pad_batch(rows, width=12)[:, 1:]
    assert (tokens[targets == PAD] == 0).all()
    assert (tokens[targets != PAD] < 0).all()
    # the latent code matters
    with torch.no_grad():
        other = decoder.log_likelihood(pad_batch(rows), latent(3) + 1.0)
    assert not torch.allclose(other, batch_value)


def test_gradient_wrt_z_matches_central_finite_differences() -> None:
    decoder = make_decoder(num_layers=2).double()
    x = pad_batch(sentences())
    z = latent(3, torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(decoder.log_likelihood(x, z).sum(), z)

    # Rows are independent, so d sum / d z[b, j] is the derivative of row b's value.
    # Central differences in float64 with h = 1e-5: truncation error h^2 |f'''| / 6 ~ 1e-10 and
    # rounding error ~ 1e-16 |f| / h ~ 1e-10 for |f| ~ 10, so 1e-7 leaves a wide margin while
    # being ~1e-5 of the gradient entries.
    h = 1e-5
    fd = torch.zeros_like(z)
    with torch.no_grad():
        for b in range(z.shape[0]):
            for j in range(z.shape[1]):
                up, down = z.detach().clone(), z.detach().clone()
                up[b, j] += h
                down[b, j] -= h
                fd[b, j] = (
                    decoder.log_likelihood(x[b : b + 1], up[b : b + 1])
                    - decoder.log_likelihood(x[b : b + 1], down[b : b + 1])
                ).item() / (2 * h)
    assert grad.abs().max().item() > 1e-2  # non-trivial dependence on z
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-7)


def test_initialisation() -> None:
    decoder = make_decoder(init_range=0.1)
    for name, p in decoder.named_parameters():
        assert p.abs().max().item() <= 0.1, name
    assert (decoder.embedding.weight[PAD] == 0).all()


# --------------------------------------------------------------------------- sampling
def check_rows_end_at_eos(out: Tensor, max_length: int) -> list[int | None]:
    """Each row: first eos, then only pad. Returns the eos positions (None: no eos)."""
    ends: list[int | None] = []
    for row in out.tolist():
        if EOS in row:
            p = row.index(EOS)
            assert all(tok == PAD for tok in row[p + 1 :]), row
            ends.append(p)
        else:
            ends.append(None)
    if all(e is not None for e in ends):
        assert out.shape[1] == max(e for e in ends if e is not None) + 1  # stopped early
    else:
        assert out.shape[1] == max_length
    return ends


def test_greedy_is_deterministic_and_stops_at_eos() -> None:
    decoder = make_decoder()  # with this seed: rows ending at 0, at 1, and never (see below)
    z = 2 * latent(10)
    out = decoder.sample(z, max_length=12)
    assert out.dtype == torch.long and out.shape[0] == 10
    assert torch.equal(out, decoder.sample(z, max_length=12))
    ends = check_rows_end_at_eos(out, 12)
    # non-vacuous: some rows end at once, some later, some run to max_length
    assert 0 in ends and None in ends and any(e is not None and e > 0 for e in ends)

    # greedy picks the arg-max of the same conditionals that log_likelihood scores
    inputs = torch.cat([torch.full((10, 1), BOS), out], dim=1)
    with torch.no_grad():
        logits = decoder.output(decoder._hidden_states(inputs[:, :-1], z))
    for b, end in enumerate(ends):
        stop = out.shape[1] if end is None else end + 1
        assert torch.equal(logits[b, :stop].argmax(dim=1), out[b, :stop])

    # all rows finished early: output width = last eos position + 1
    with torch.no_grad():
        decoder.output.bias[EOS] += 50.0
    assert torch.equal(decoder.sample(z), torch.full((10, 1), EOS))


def test_rows_cut_at_the_length_cap_are_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = make_decoder()
    z = 2 * latent(10)
    with torch.no_grad():
        decoder.output.bias[EOS] += 50.0  # every row ends at once: nothing is cut
    with caplog.at_level(logging.WARNING, logger="latentebm.generators.decoding"):
        decoder.sample(z, max_length=12)
        assert not caplog.records
        with torch.no_grad():
            decoder.output.bias[EOS] -= 100.0  # no row ends
        decoder.sample(z, max_length=12)
        decoder.sample(z, decode="sample", max_length=12)
        decoder.sample(z, mask_specials=False, max_length=12)  # exact draws: callers reject
    (record,) = caplog.records  # once per decoder
    assert "10 of 10 generated sequences reached the length cap of 12 tokens" in record.message
    assert "model.generator.max_decode_length" in record.message


def test_sampling_reproducible_and_top_k_one_is_greedy() -> None:
    decoder = make_decoder()
    z = 2 * latent(10)
    a = decoder.sample(z, decode="sample", generator=torch.Generator().manual_seed(3))
    b = decoder.sample(z, decode="sample", generator=torch.Generator().manual_seed(3))
    c = decoder.sample(z, decode="sample", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    check_rows_end_at_eos(a, 12)
    greedy = decoder.sample(z)
    for temperature in (0.5, 1.0, 3.0):
        top1 = decoder.sample(
            z,
            decode="sample",
            top_k=1,
            temperature=temperature,
            generator=torch.Generator().manual_seed(5),
        )
        assert torch.equal(top1, greedy)


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.5, None), (2.0, 3)])
def test_first_token_frequencies_match_softmax(temperature: float, top_k: int | None) -> None:
    decoder = make_decoder(init_range=1.0)
    n = 4000
    z = latent(1).expand(n, Z_DIM)
    out = decoder.sample(
        z,
        decode="sample",
        temperature=temperature,
        top_k=top_k,
        max_length=1,
        generator=torch.Generator().manual_seed(6),
    )
    with torch.no_grad():
        logits = decoder.output(decoder._hidden_states(torch.full((1, 1), BOS), z[:1]))[0, 0]
    logits[PAD] = logits[BOS] = -math.inf  # sample() never emits <pad> or <bos>
    logits = logits / temperature
    if top_k is not None:
        keep = logits.topk(top_k).indices
        masked = torch.full_like(logits, -math.inf)
        masked[keep] = logits[keep]
        logits = masked
    probs = torch.softmax(logits.double(), dim=0)
    freq = torch.bincount(out[:, 0], minlength=VOCAB).double() / n
    # Each count is Binomial(n, p_v): SE of the frequency sqrt(p (1 - p) / n) <= 0.008;
    # 4.5 SE per token over 9 tokens. Tokens outside the top k never appear.
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 4.5 * se + 1e-12).all(), (freq, probs)
    assert freq[PAD] == 0 and freq[BOS] == 0
    if top_k is not None:
        assert int((freq > 0).sum()) <= top_k


def test_sample_argument_validation() -> None:
    decoder = make_decoder()
    z = latent(2)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            decoder.sample(z, decode="sample", temperature=bad)
    with pytest.raises(ValueError, match="decode"):
        decoder.sample(z, decode="nucleus")  # type: ignore[arg-type]


def test_sample_rejects_bad_top_k_and_length() -> None:
    decoder = make_decoder()
    z = latent(2)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="top_k"):
            decoder.sample(z, decode="sample", top_k=bad)
    with pytest.raises(ValueError, match="max_length"):
        decoder.sample(z, max_length=0)


def test_sample_never_emits_pad_or_bos() -> None:
    decoder = make_decoder(init_range=1.0)
    with torch.no_grad():
        decoder.output.bias[PAD] += 5.0  # make <pad> and <bos> the most likely tokens
        decoder.output.bias[BOS] += 5.0
    out = decoder.sample(latent(50), max_length=12)
    for row in out.tolist():
        body = row[: row.index(EOS)] if EOS in row else row
        assert PAD not in body and BOS not in body


# --------------------------------------------------------------------------- GRU cell
def hand_gru_log_likelihood(decoder: LSTMDecoder, x: Tensor, z: Tensor) -> Tensor:
    """Reference: explicit one-layer GRU equations (gate order r, z, n) and ``log_softmax``."""
    gru, batch = decoder.lstm, x.shape[0]
    h = decoder.latent_to_hidden(z)
    total = torch.zeros(batch, dtype=z.dtype)
    for t in range(x.shape[1] - 1):
        inp = torch.cat([decoder.embedding.weight[x[:, t]], z], dim=1)
        gi = inp @ gru.weight_ih_l0.T + gru.bias_ih_l0
        gh = h @ gru.weight_hh_l0.T + gru.bias_hh_l0
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        reset, update = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        candidate = torch.tanh(i_n + reset * h_n)
        h = (1 - update) * candidate + update * h
        log_probs = torch.log_softmax(decoder.output(h), dim=1)
        for b in range(batch):
            target = int(x[b, t + 1])
            if target != PAD:
                total[b] = total[b] + log_probs[b, target]
    return total


def test_gru_cell_likelihood_gradient_and_decoding() -> None:
    decoder = make_decoder(cell="gru")
    assert isinstance(decoder.lstm, torch.nn.GRU)
    x, z = pad_batch(sentences()), latent(3)
    with torch.no_grad():
        value = decoder.log_likelihood(x, z)
        torch.testing.assert_close(value, hand_gru_log_likelihood(decoder, x, z))
        greedy = decoder.sample(z, decode="greedy")
        assert torch.equal(decoder.sample(z, decode="beam", beam_size=1), greedy)
        beam = decoder.sample(z, decode="beam", beam_size=4)

    def score(tokens: Tensor) -> Tensor:
        rows = [[BOS, *[int(t) for t in row if t != PAD]] for row in tokens]
        with torch.no_grad():
            return decoder.log_likelihood(pad_batch(rows), z)

    assert (score(beam) >= score(greedy) - 1e-5).all()
    z_grad = latent(3).requires_grad_(True)
    (grad,) = torch.autograd.grad(decoder.log_likelihood(x, z_grad).sum(), z_grad)
    assert grad.abs().max() > 1e-3
    with pytest.raises(ValueError, match="cell must be 'lstm' or 'gru'"):
        make_decoder(cell="rnn")
