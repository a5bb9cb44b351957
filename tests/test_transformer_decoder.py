"""Tests of the GPT-2 decoder ``p_beta(x | z)`` (latentebm.generators.transformer)."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor

pytest.importorskip("transformers")

import latentebm  # noqa: E402
from latentebm.build import build_model  # noqa: E402
from latentebm.config import load_recipe  # noqa: E402
from latentebm.generators import Generator  # noqa: E402
from latentebm.generators.transformer import TransformerDecoder  # noqa: E402
from latentebm.train import Trainer  # noqa: E402
from tests.conftest import tiny_recipe_dict, tiny_sentences  # noqa: E402

PAD, BOS, EOS, VOCAB, Z_DIM = 0, 1, 2, 9, 3
MODES = ["prefix", "cross_attention"]
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TINY_GENERATOR: dict[str, Any] = {
    "_component_": "latentebm.generators.transformer.TransformerDecoder",
    "n_layer": 1,
    "n_embd": 8,
    "n_head": 2,
    "max_positions": 16,
    "n_prefix": 2,
    "max_decode_length": 12,
}


def make_decoder(mode: str = "prefix", init_std: float = 0.3, **config: Any) -> TransformerDecoder:
    torch.manual_seed(0)
    options: dict[str, Any] = {
        "n_layer": 2,
        "n_embd": 16,
        "n_head": 2,
        "max_positions": 16,
        "n_prefix": 2,
        "max_decode_length": 12,
        **config,
    }
    decoder = TransformerDecoder(
        TransformerDecoder.Config(init_std=init_std, z_conditioning=mode, **options),  # type: ignore[arg-type]
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


def manual_log_likelihood(decoder: TransformerDecoder, x: Tensor, z: Tensor) -> Tensor:
    """Reference: each sequence alone (no padding, no attention mask), full logits, then
    ``log_softmax`` and an explicit sum over the targets."""
    total = torch.zeros(x.shape[0], dtype=z.dtype)
    for b in range(x.shape[0]):
        row = x[b][x[b] != PAD].unsqueeze(0)
        hidden = decoder._hidden_states(row[:, :-1], z[b : b + 1])
        log_probs = torch.log_softmax(hidden[0] @ decoder.transformer.wte.weight.T, dim=1)
        for t in range(row.shape[1] - 1):
            total[b] = total[b] + log_probs[t, row[0, t + 1]]
    return total


# --------------------------------------------------------------------------- likelihood
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fused", [True, False])
def test_log_likelihood_equals_manual_log_softmax_sum(mode: str, fused: bool) -> None:
    decoder = make_decoder(mode, fused_output=fused)
    assert isinstance(decoder, Generator)
    x = pad_batch(sentences())
    z = latent(3)
    with torch.no_grad():
        value = decoder.log_likelihood(x, z)
        expected = manual_log_likelihood(decoder, x, z)
        tokens = decoder.token_log_likelihood(x, z)
    assert value.shape == (3,) and tokens.shape == (3, x.shape[1] - 1)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    assert (value < 0).all()
    assert decoder.num_targets(x).tolist() == [4, 6, 1]  # eos counted, bos and pad not
    targets = x[:, 1:]
    assert (tokens[targets == PAD] == 0).all() and (tokens[targets != PAD] < 0).all()


def test_likelihood_is_normalised() -> None:
    """``exp(token_log_likelihood)`` of every possible first target is the full softmax: the
    scores over the vocabulary (``<pad>`` is never scored) plus ``p(<pad>)`` sum to 1."""
    decoder = make_decoder(init_std=0.5)
    z = latent(1)
    with torch.no_grad():
        every = torch.tensor([[BOS, v] for v in range(VOCAB)])
        scores = decoder.token_log_likelihood(every, z.expand(VOCAB, -1))[:, 0]
        hidden = decoder._hidden_states(torch.tensor([[BOS]]), z)
        full = torch.softmax(decoder.output(hidden[0, 0]), dim=0)
    assert scores[PAD] == 0  # a <pad> target is masked, not scored
    probs = scores.exp().masked_fill(torch.arange(VOCAB) == PAD, 0.0)
    torch.testing.assert_close(probs + full[PAD] * (torch.arange(VOCAB) == PAD), full)
    torch.testing.assert_close(probs.sum() + full[PAD], torch.tensor(1.0))


@pytest.mark.parametrize("mode", MODES)
def test_padding_contributes_nothing_and_batch_equals_single(mode: str) -> None:
    decoder = make_decoder(mode)
    rows = sentences()
    z = latent(3)
    with torch.no_grad():
        batch_value = decoder.log_likelihood(pad_batch(rows), z)
        more_pad = decoder.log_likelihood(pad_batch(rows, width=12), z)
        # wider than max_positions + 1: the all-padding columns are dropped, not an error
        much_more_pad = decoder.token_log_likelihood(pad_batch(rows, width=40), z)
        single = torch.cat(
            [
                decoder.log_likelihood(torch.tensor([row]), z[i : i + 1])
                for i, row in enumerate(rows)
            ]
        )
    torch.testing.assert_close(more_pad, batch_value, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(much_more_pad.sum(dim=1), batch_value, rtol=1e-6, atol=1e-6)
    assert much_more_pad.shape == (3, 39)
    torch.testing.assert_close(single, batch_value, rtol=1e-6, atol=1e-6)
    too_long = torch.tensor([[BOS] + [3] * 20 + [EOS]])
    with pytest.raises(ValueError, match="max_positions"):
        decoder.log_likelihood(too_long, latent(1))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("z_to_tokens", [False, True])
def test_the_latent_code_matters(mode: str, z_to_tokens: bool) -> None:
    decoder = make_decoder(mode, z_to_tokens=z_to_tokens)
    x = pad_batch(sentences())
    z = latent(3)
    with torch.no_grad():
        value = decoder.log_likelihood(x, z)
        other = decoder.log_likelihood(x, z + 1.0)
    assert (other - value).abs().min() > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_gradient_wrt_z_matches_central_finite_differences(mode: str) -> None:
    decoder = make_decoder(mode, z_to_tokens=True).double()
    for p in decoder.parameters():  # as in the posterior Langevin chain: beta frozen
        p.requires_grad_(False)
    x = pad_batch(sentences())
    z = latent(3, torch.float64).requires_grad_(True)
    # frozen weights + z needing a gradient: the fused output path is the one taken
    (grad,) = torch.autograd.grad(decoder.log_likelihood(x, z).sum(), z)

    # Rows are independent, so d sum / d z[b, j] is the derivative of row b's value; central
    # differences in float64 with h = 1e-5 are accurate to ~1e-10 (see test_lstm_decoder).
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


def test_config_validation_and_gpt2_settings() -> None:
    decoder = make_decoder("prefix")
    gpt2 = decoder.transformer.config
    assert (gpt2.bos_token_id, gpt2.eos_token_id, gpt2.pad_token_id) == (BOS, EOS, PAD)
    assert gpt2.vocab_size == VOCAB and gpt2.n_positions == 16 + 2
    assert not gpt2.add_cross_attention
    assert decoder.output.weight is decoder.transformer.wte.weight  # tied
    cross = make_decoder("cross_attention", tie_embeddings=False)
    assert cross.transformer.config.add_cross_attention
    assert cross.transformer.config.n_positions == 16
    assert cross.output.weight is not cross.transformer.wte.weight
    with pytest.raises(ValueError, match="n_head"):
        make_decoder(n_embd=15, n_head=2)
    with pytest.raises(ValueError, match="max_decode_length"):
        make_decoder(max_decode_length=17)


# --------------------------------------------------------------------------- sampling
def check_rows_end_at_eos(out: Tensor, max_length: int) -> list[int | None]:
    """Each row: first eos, then only pad. Returns the eos positions (None: no eos)."""
    ends: list[int | None] = []
    for row in out.tolist():
        assert BOS not in row
        if EOS in row:
            p = row.index(EOS)
            assert PAD not in row[:p]
            assert all(tok == PAD for tok in row[p + 1 :]), row
            ends.append(p)
        else:
            assert PAD not in row
            ends.append(None)
    if all(e is not None for e in ends):
        assert out.shape[1] == max(e for e in ends if e is not None) + 1  # stopped early
    else:
        assert out.shape[1] == max_length
    return ends


@pytest.mark.parametrize("mode", MODES)
def test_greedy_with_kv_cache_equals_full_recomputation(mode: str) -> None:
    decoder = make_decoder(mode, init_std=0.5)
    z = 2 * latent(10)
    out = decoder.sample(z, max_length=12)
    assert out.dtype == torch.long and out.shape[0] == 10
    assert torch.equal(out, decoder.sample(z, max_length=12))
    ends = check_rows_end_at_eos(out, 12)
    # greedy (incremental, KV cache) picks the arg-max of the conditionals that log_likelihood
    # scores (one full pass over the decoded prefix)
    inputs = torch.cat([torch.full((10, 1), BOS), out], dim=1)
    with torch.no_grad():
        logits = decoder.output(decoder._hidden_states(inputs[:, :-1], z))
    logits[..., PAD] = logits[..., BOS] = -math.inf
    for b, end in enumerate(ends):
        stop = out.shape[1] if end is None else end + 1
        assert torch.equal(logits[b, :stop].argmax(dim=1), out[b, :stop])


def cached_step_logits(decoder: TransformerDecoder, inputs: Tensor, z: Tensor) -> Tensor:
    """Next-token logits ``(B, T, V)`` for ``inputs (B, T)`` (``<bos>`` first), one token a step
    on the KV cache, as decoding runs them."""
    step, state = decoder._step(z), decoder._initial_state(z)
    logits = []
    with torch.no_grad():
        for t in range(inputs.shape[1]):
            out, state = step(inputs[:, t : t + 1], state)
            logits.append(out)
    return torch.stack(logits, dim=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("z_to_tokens", [False, True])
def test_cached_step_logits_equal_full_recomputation(mode: str, z_to_tokens: bool) -> None:
    decoder = make_decoder(mode, init_std=0.5, z_to_tokens=z_to_tokens)
    z = 2 * latent(5)
    g = torch.Generator().manual_seed(0)
    inputs = torch.cat([torch.full((5, 1), BOS), torch.randint(3, VOCAB, (5, 9), generator=g)], 1)
    with torch.no_grad():  # every position recomputed from <bos>, no cache
        full = decoder.output(decoder._hidden_states(inputs, z))
    torch.testing.assert_close(cached_step_logits(decoder, inputs, z), full)


@pytest.mark.parametrize("mode", MODES)
def test_decoding_uses_the_current_cache_api_without_deprecation_warnings(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``FutureWarning`` / ``DeprecationWarning`` (``past_key_values`` is deprecated in
    ``transformers`` 5.24 and announced for removal in 5.40) and no deprecation line in the
    library's log from greedy, sampled and beam decoding or the likelihood."""
    import transformers

    logged: list[str] = []
    if hasattr(logging.Logger, "warning_once"):  # transformers' once-only log lines
        monkeypatch.setattr(
            logging.Logger, "warning_once", lambda self, msg, *a, **k: logged.append(str(msg))
        )
    decoder = make_decoder(mode, init_std=0.5)
    z = 2 * latent(4)
    x = torch.cat(
        [torch.full((4, 1), BOS), torch.randint(3, VOCAB, (4, 5)), torch.full((4, 1), EOS)], 1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning raised by our calls fails the test
        decoder.sample(z)
        decoder.sample(z, decode="sample", top_p=0.9, generator=torch.Generator().manual_seed(0))
        decoder.sample(z, decode="beam", beam_size=3)
        with torch.no_grad():
            decoder.log_likelihood(x, z)
        state = decoder._initial_state(z)
    assert not any("past_key_values" in line or "deprecat" in line for line in logged), logged
    if decoder._cache_keyword == "cache":  # the current API: a Cache object, not legacy tuples
        assert isinstance(state, transformers.Cache) and state.get_seq_length() == 0
    else:  # pragma: no cover - transformers before the rename of past_key_values
        assert state is None


def test_top_p_and_repetition_penalty_on_the_transformer() -> None:
    decoder = make_decoder(init_std=0.5)
    z = 2 * latent(10)

    def sampled(**options: Any) -> Tensor:
        g = torch.Generator().manual_seed(2)
        return decoder.sample(z, decode="sample", generator=g, **options)

    assert torch.equal(sampled(top_p=1.0), sampled())
    assert torch.equal(sampled(top_p=1e-6), decoder.sample(z))  # a nucleus of one: greedy
    with pytest.raises(ValueError, match="repetition_penalty .*beam"):
        decoder.sample(z, decode="beam", repetition_penalty=2.0)
    assert decoder.sample(z, repetition_penalty=2.0).shape[0] == 10


@pytest.mark.parametrize("mode", MODES)
def test_decoding_stops_when_every_row_has_ended(mode: str) -> None:
    decoder = make_decoder(mode, tie_embeddings=False)
    with torch.no_grad():  # every top-layer state is u = 1 and <eos>'s weight is 10 u
        decoder.transformer.ln_f.weight.zero_()
        decoder.transformer.ln_f.bias.fill_(1.0)
        decoder.output.weight[EOS] = 10.0
    z = latent(4)
    assert torch.equal(decoder.sample(z), torch.full((4, 1), EOS))
    assert torch.equal(decoder.sample(z, decode="beam", beam_size=3), torch.full((4, 1), EOS))


@pytest.mark.parametrize("mode", MODES)
def test_sampling_reproducible_and_top_k_one_is_greedy(mode: str) -> None:
    decoder = make_decoder(mode, init_std=0.5)
    z = 2 * latent(10)
    a = decoder.sample(z, decode="sample", generator=torch.Generator().manual_seed(3))
    b = decoder.sample(z, decode="sample", generator=torch.Generator().manual_seed(3))
    c = decoder.sample(z, decode="sample", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    check_rows_end_at_eos(a, 12)
    greedy = decoder.sample(z)
    top1 = decoder.sample(
        z, decode="sample", top_k=1, temperature=0.5, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(top1, greedy)


def test_first_token_frequencies_match_softmax() -> None:
    decoder = make_decoder(init_std=0.5)
    n, temperature = 4000, 0.7
    z = latent(1).expand(n, Z_DIM)
    out = decoder.sample(
        z,
        decode="sample",
        temperature=temperature,
        max_length=1,
        generator=torch.Generator().manual_seed(6),
    )
    with torch.no_grad():
        logits = decoder.output(decoder._hidden_states(torch.full((1, 1), BOS), z[:1]))[0, 0]
    logits[PAD] = logits[BOS] = -math.inf
    probs = torch.softmax(logits.double() / temperature, dim=0)
    freq = torch.bincount(out[:, 0], minlength=VOCAB).double() / n
    se = (probs * (1 - probs) / n).sqrt()  # binomial standard error, 4.5 SE per token
    assert ((freq - probs).abs() <= 4.5 * se + 1e-12).all(), (freq, probs)


def beam_score(decoder: TransformerDecoder, tokens: Tensor, z: Tensor) -> Tensor:
    """``log p_beta(tokens | z)`` of decoded rows (``<bos>`` prepended), shape ``(B,)``."""
    full = torch.cat([torch.full((tokens.shape[0], 1), BOS), tokens], dim=1)
    with torch.no_grad():
        return decoder.log_likelihood(full, z)


@pytest.mark.parametrize("mode", MODES)
def test_beam_size_one_is_greedy_and_beams_score_at_least_greedy(mode: str) -> None:
    decoder = make_decoder(mode, init_std=0.5)
    z = 2 * latent(16)
    greedy = decoder.sample(z, max_length=8)
    assert torch.equal(decoder.sample(z, decode="beam", beam_size=1, max_length=8), greedy)
    beam = decoder.sample(z, decode="beam", beam_size=4, max_length=8)
    check_rows_end_at_eos(beam, 8)
    # open hypotheses are cut at max_length in both, so every row's scores compare
    beam_scores, greedy_scores = beam_score(decoder, beam, z), beam_score(decoder, greedy, z)
    assert (beam_scores >= greedy_scores - 1e-5).all()
    assert (beam_scores > greedy_scores + 1e-3).any()  # non-vacuous: beam finds better ones


@pytest.mark.parametrize("mode", MODES)
def test_wide_beam_is_exhaustive_search(mode: str) -> None:
    """With more beams than open hypotheses (7 ** 2 = 49 after two steps), beam search with
    ``max_length=3`` scores every sequence: it returns the most likely one."""
    decoder = make_decoder(mode, init_std=0.5)
    z = 2 * latent(3)
    beam = decoder.sample(z, decode="beam", beam_size=64, max_length=3)
    words = [t for t in range(VOCAB) if t not in (PAD, BOS, EOS)]
    candidates = [[EOS]] + [[a, EOS] for a in words] + [[a, b, EOS] for a in words for b in words]
    candidates += [[a, b, c] for a in words for b in words for c in words]
    rows = pad_batch([[BOS, *c] for c in candidates])
    for b in range(z.shape[0]):
        with torch.no_grad():
            scores = decoder.log_likelihood(rows, z[b].expand(len(candidates), -1))
        best = candidates[int(scores.argmax())]
        assert beam[b].tolist()[: len(best)] == best
        torch.testing.assert_close(
            beam_score(decoder, beam[b : b + 1], z[b : b + 1])[0], scores.max()
        )


def test_sample_argument_validation() -> None:
    decoder = make_decoder()
    z = latent(2)
    with pytest.raises(ValueError, match="temperature"):
        decoder.sample(z, decode="sample", temperature=0.0)
    with pytest.raises(ValueError, match="decode"):
        decoder.sample(z, decode="nucleus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k"):
        decoder.sample(z, decode="sample", top_k=0)
    with pytest.raises(ValueError, match="max_length"):
        decoder.sample(z, max_length=0)
    with pytest.raises(ValueError, match="max_positions"):
        decoder.sample(z, max_length=17)
    with pytest.raises(ValueError, match="beam_size"):
        decoder.sample(z, decode="beam", beam_size=0)


# --------------------------------------------------------------------------- recipes and runs
def tiny_transformer_recipe(corpus: Path, **generator: Any) -> dict[str, Any]:
    recipe = tiny_recipe_dict(corpus)
    recipe["model"]["generator"] = {**TINY_GENERATOR, **generator}
    return recipe


def test_ptb_transformer_recipe_loads_and_builds(tmp_path: Path, tiny_corpus: Path) -> None:
    recipe = load_recipe(RECIPES / "ptb_transformer.yaml")
    generator_cfg = recipe.model.generator
    assert generator_cfg.resolve() is TransformerDecoder
    args = generator_cfg.args
    assert (args.n_layer, args.n_embd, args.n_head, args.z_conditioning) == (4, 256, 4, "prefix")
    assert recipe.model.posterior_chain.n_steps == 20 and recipe.model.prior_chain.n_steps == 60
    # the same generator section, tiny task: build_model instantiates it from the recipe
    tiny = tiny_transformer_recipe(tiny_corpus, z_conditioning="cross_attention")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny), encoding="utf-8")
    tiny_recipe = load_recipe(path)
    task = latentebm.build.build_task(tiny_recipe)
    model = build_model(tiny_recipe, task)
    assert isinstance(model.generator, TransformerDecoder)
    assert model.generator.transformer.config.add_cross_attention


def test_tiny_training_run_and_reload(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("\n".join(tiny_sentences()) + "\n", encoding="utf-8")
    path = tmp_path / "tiny.yaml"
    recipe = tiny_transformer_recipe(corpus, z_to_tokens=True)
    recipe["trainer"]["runs_root"] = str(tmp_path / "runs")
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    run_dir = Trainer(load_recipe(path)).fit()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [value for row in rows for key, value in row.items() if "nll" in key or key == "loss"]
    assert losses and all(math.isfinite(v) for v in losses)
    pretrained = latentebm.load(str(run_dir))
    assert isinstance(pretrained.model.generator, TransformerDecoder)
    samples = pretrained.generate(2, seed=0)
    assert len(samples) == 2 and all(isinstance(s, str) for s in samples)
    assert pretrained.generate(2, seed=0, decode="beam", beam_size=2) is not None
