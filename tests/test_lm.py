"""The scoring LSTM language model: likelihood, training, batching, files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from latentebm.metrics.lm import (
    LMConfig,
    SentenceBatcher,
    build_language_model,
    describe_training,
    load_language_model,
    save_language_model,
    score,
    train_language_model,
)

VOCAB = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "a": 3, "b": 4, "c": 5, "d": 6}
IDS = {"pad_id": 0, "bos_id": 1, "eos_id": 2}


def encode(sentences: list[str]) -> list[list[int]]:
    return [[VOCAB[w] for w in s.split()] for s in sentences]


def batcher(sentences: list[str]) -> SentenceBatcher:
    return SentenceBatcher(sentences, encode, **IDS)


def small_lm(**overrides: object) -> tuple[torch.nn.Module, LMConfig]:
    values = {"embedding_dim": 8, "hidden_dim": 16, "dropout": 0.0, "batch_size": 4}
    values.update(overrides)
    config = LMConfig.from_dict(values)
    return build_language_model(config, vocab_size=len(VOCAB), **IDS), config


def test_score_is_the_summed_log_softmax_of_the_targets() -> None:
    torch.manual_seed(0)
    model, _ = small_lm()
    sentences = ["a b c", "d", "b b a d c"]
    result = score(model, batcher(sentences), batch_size=2)
    expected_total = 0.0
    for sentence in sentences:
        ids = torch.tensor([[1, *encode([sentence])[0], 2]])
        hidden = model._hidden_states(ids[:, :-1], torch.zeros(1, 0))
        log_probs = torch.log_softmax(model.output(hidden), dim=-1)
        expected_total -= float(log_probs[0].gather(1, ids[0, 1:, None]).sum().detach())
    tokens = sum(len(s.split()) + 1 for s in sentences)  # + <eos>
    assert result["tokens"] == tokens
    assert result["nll_total"] == pytest.approx(expected_total, rel=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(expected_total / tokens), rel=1e-5)
    assert result["nll_per_sentence"] == pytest.approx(expected_total / 3, rel=1e-5)


def test_training_learns_a_deterministic_corpus() -> None:
    corpus = ["a b c d"] * 32 + ["d c b a"] * 32
    model, config = small_lm(epochs=30, lr=1e-2)
    before = score(model, batcher(corpus))["ppl"]
    info = train_language_model(model, batcher(corpus), config)
    after = score(model, batcher(corpus))["ppl"]
    assert info["epochs"] == 30 and info["steps"] == 30 * 16
    assert before > 4.0  # about uniform over the 7 tokens
    assert after < 1.3  # only the first word is uncertain: ppl -> 2 ** (1/5) = 1.15
    unseen = score(model, batcher(["a c b d"] * 4))["ppl"]
    assert unseen > 2 * after


def test_training_is_reproducible_and_stops_on_time() -> None:
    corpus = ["a b", "c d a", "b"] * 5
    results = []
    for _ in range(2):
        model, config = small_lm(epochs=2, seed=3)
        train_language_model(model, batcher(corpus), config)
        results.append(score(model, batcher(corpus))["nll_total"])
    assert results[0] == results[1]
    model, config = small_lm(epochs=1000, max_seconds=0.0)
    info = train_language_model(model, batcher(corpus), config)
    assert info["stopped_by_time"] and info["steps"] == 1
    per_epoch = len(batcher(corpus).batches(config.batch_size))
    assert info["planned_steps"] == 1000 * per_epoch
    said = describe_training(info)  # not "1 epoch(s)": it saw one batch
    planned = 1000 * per_epoch
    assert said.startswith(f"stopped by max_seconds after 1 of {planned} updates (epoch 1)")
    model, config = small_lm(epochs=2)
    full = train_language_model(model, batcher(corpus), config)
    assert describe_training(full).startswith("2 epoch(s) on 15 sentences")


def test_a_scorer_cut_short_by_max_seconds_is_said_when_saved_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from latentebm.metrics.text_eval import real_language_model
    from latentebm.tasks.text import TextTask

    corpus = tmp_path / "c.txt"
    corpus.write_text("a b\nc d a\nb\n" * 20, encoding="utf-8")
    task = TextTask(TextTask.Config(train=str(corpus)))
    path = tmp_path / "lm.pt"
    config = LMConfig(embedding_dim=4, hidden_dim=8, epochs=100, max_seconds=0.0)
    with caplog.at_level("WARNING"):
        real_language_model(task, config, path)
        real_language_model(task, config, path)
    said = [r.getMessage() for r in caplog.records if "max_seconds stopped" in r.getMessage()]
    assert len(said) == 2 and "language model saved" in said[0] and "reused" in said[1]
    assert "delete the file to train one" in said[1]


def test_batcher_covers_every_sentence_once_in_similar_lengths() -> None:
    sentences = ["a", "a b c d", "b c", "a b c", "d", "c c c c c"]
    b = batcher(sentences)
    assert b.num_targets() == sum(len(s.split()) + 1 for s in sentences)
    for seed in (None, 0, 1):
        batches = b.batches(2, shuffle_seed=seed)
        rows = sorted(tuple(r[r != 0].tolist()) for batch in batches for r in batch)
        expected = sorted((1, *ids, 2) for ids in encode(sentences))
        assert rows == expected
    assert [x.tolist() for x in b.batches(2, shuffle_seed=5)] == [
        x.tolist() for x in b.batches(2, shuffle_seed=5)
    ]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model, config = small_lm()
    path = tmp_path / "lm.pt"
    save_language_model(path, model, config, {"kind": "word", "itos": list(VOCAB)}, {"epochs": 0})
    loaded, loaded_config, tokenizer, info = load_language_model(path)
    assert loaded_config == config and tokenizer["itos"] == list(VOCAB) and info == {"epochs": 0}
    data = batcher(["a b c", "d d"])
    assert score(loaded, data)["nll_total"] == pytest.approx(score(model, data)["nll_total"])


def test_bad_files_and_settings(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"step": 1}, other)
    with pytest.raises(ValueError, match="other.pt: not a latentebm language-model file"):
        load_language_model(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt: not a readable"):
        load_language_model(garbage)
    with pytest.raises(ValueError, match="unknown language-model setting.*hiden_dim"):
        LMConfig.from_dict({"hiden_dim": 3})
    with pytest.raises(ValueError, match="lm.dropout"):
        LMConfig(dropout=1.0)
