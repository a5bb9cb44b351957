"""A plain LSTM language model: the scorer behind forward and reverse perplexity.

FPPL and RPPL (Table 2 of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space
Energy-Based Prior Model"; protocol in ``docs/metrics.md``) need an ordinary language
model ``p(x) = prod_t p(x_t | x_<t)`` over the same tokens as the latent model. It is the
toolkit's :class:`~latentebm.generators.lstm.LSTMDecoder` with a zero-dimensional latent: the
initial hidden state is then a learned vector (the bias of the ``z -> h0`` map) and nothing else
conditions the sequence. Scores use the same convention as the latent model: summed over the
target tokens after ``<bos>``, ``<eos>`` included; perplexity is ``exp(total NLL / tokens)``.

A trained language model is saved as one file (atomically; read with ``weights_only=True``)
holding its weights, its :class:`LMConfig`, the tokenizer state it was trained with (a scorer
may only be reused with the same tokenizer) and how it was trained.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from latentebm.checkpoint import load_weights, save_atomic
from latentebm.generators.lstm import LSTMDecoder

LM_FORMAT = "latentebm-lm-1"


@dataclass
class LMConfig:
    """Size and training budget of the scoring language model.

    The defaults follow the public FPPL/RPPL code of this line of work (an LSTM LM with 512
    embedding and 512 hidden units, dropout 0.5); ``epochs`` is the budget, recorded with every
    result that uses the model.
    """

    embedding_dim: int = 512
    hidden_dim: int = 512
    num_layers: int = 1
    dropout: float = 0.5
    init_range: float = 0.1
    batch_size: int = 64
    lr: float = 1.0e-3
    """Adam learning rate."""
    epochs: int = 10
    """Passes over the training sentences (the budget)."""
    max_seconds: float | None = None
    """Stop after the first batch that ends past this many seconds of training (None: no limit)."""
    grad_clip: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "hidden_dim", "num_layers", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"lm.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lm.dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ValueError(f"lm.lr must be > 0, got {self.lr}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LMConfig:
        """Build from a mapping; unknown keys are an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown language-model setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**values)


def build_language_model(
    config: LMConfig, *, vocab_size: int, pad_id: int, bos_id: int, eos_id: int
) -> LSTMDecoder:
    """An LSTM LM: an :class:`LSTMDecoder` with ``z_dim = 0``, initialised from ``config.seed``."""
    decoder_config = LSTMDecoder.Config(
        embedding_dim=config.embedding_dim,
        hidden_dim=config.hidden_dim,
        num_layers=config.num_layers,
        dropout=config.dropout,
        init_range=config.init_range,
        fused_output=False,
    )
    # weights drawn from config.seed, without touching the global random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return LSTMDecoder(
            decoder_config,
            z_dim=0,
            vocab_size=vocab_size,
            pad_id=pad_id,
            bos_id=bos_id,
            eos_id=eos_id,
        )


def _no_latent(batch: Tensor) -> Tensor:
    return batch.new_zeros((batch.shape[0], 0), dtype=torch.float32)


class SentenceBatcher:
    """Encode sentences once; cut them into padded batches of similar length.

    ``encode`` maps a list of sentences to token id lists *without* ``<bos>``/``<eos>`` (a
    tokenizer's ``encode_batch``). Batches are formed from the length-sorted sentences; with a
    ``seed`` the batch order is shuffled per epoch (deterministically).
    """

    def __init__(
        self,
        sentences: Sequence[str],
        encode: Callable[[list[str]], list[list[int]]],
        *,
        pad_id: int,
        bos_id: int,
        eos_id: int,
    ) -> None:
        ids = encode(list(sentences))
        self.seqs = [torch.tensor([bos_id, *row, eos_id], dtype=torch.long) for row in ids]
        self.pad_id = pad_id
        self.order = sorted(range(len(self.seqs)), key=lambda i: len(self.seqs[i]))

    def __len__(self) -> int:
        return len(self.seqs)

    def num_targets(self) -> int:
        """Scored tokens over all sentences (each sentence's tokens plus ``<eos>``)."""
        return sum(len(s) - 1 for s in self.seqs)

    def batches(self, batch_size: int, *, shuffle_seed: int | None = None) -> list[Tensor]:
        groups = [self.order[i : i + batch_size] for i in range(0, len(self.order), batch_size)]
        if shuffle_seed is not None:
            g = torch.Generator().manual_seed(shuffle_seed)
            groups = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
        return [
            pad_sequence([self.seqs[i] for i in group], batch_first=True, padding_value=self.pad_id)
            for group in groups
        ]


@torch.no_grad()
def score(
    model: LSTMDecoder, batcher: SentenceBatcher, *, batch_size: int = 128
) -> dict[str, float]:
    """Total NLL, token count, NLL per sentence and perplexity of the batcher's sentences."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nll = 0.0
    for batch in batcher.batches(batch_size):
        batch = batch.to(device)
        total_nll -= float(model.log_likelihood(batch, _no_latent(batch).to(device)).sum())
    model.train(was_training)
    tokens = batcher.num_targets()
    return {
        "nll_total": total_nll,
        "tokens": tokens,
        "sentences": len(batcher),
        "nll_per_sentence": total_nll / max(len(batcher), 1),
        "ppl": math.exp(total_nll / tokens) if tokens else float("nan"),
    }


def train_language_model(
    model: LSTMDecoder,
    batcher: SentenceBatcher,
    config: LMConfig,
    *,
    progress: Callable[[Iterable[Tensor], int, str], Iterable[Tensor]] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Maximum likelihood with Adam for ``config.epochs`` passes (or ``max_seconds``; then
    ``stopped_by_time`` and ``steps`` of ``planned_steps`` say how far it got).

    Returns what happened: epochs and steps run, seconds, mean training NLL per token of the
    last epoch, whether the time limit stopped it.
    """
    with torch.random.fork_rng(devices=[]):  # dropout draws do not touch the global state
        torch.manual_seed(config.seed)
        return _train(model, batcher, config, progress, device)


def _train(
    model: LSTMDecoder,
    batcher: SentenceBatcher,
    config: LMConfig,
    progress: Callable[[Iterable[Tensor], int, str], Iterable[Tensor]] | None,
    device: str | torch.device,
) -> dict[str, Any]:
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    started = time.perf_counter()
    steps = 0
    stopped_by_time = False
    last_epoch_nll = last_epoch_tokens = 0.0
    epochs_run = 0
    steps_per_epoch = 0
    for epoch in range(config.epochs):
        batches = batcher.batches(config.batch_size, shuffle_seed=config.seed * 1009 + epoch)
        steps_per_epoch = len(batches)
        iterator: Iterable[Tensor] = batches
        if progress is not None:
            iterator = progress(batches, len(batches), f"lm epoch {epoch + 1}/{config.epochs}")
        last_epoch_nll = last_epoch_tokens = 0.0
        for batch in iterator:
            batch = batch.to(device)
            log_likelihood = model.log_likelihood(batch, _no_latent(batch).to(device))
            tokens = int(model.num_targets(batch).sum())
            loss = -log_likelihood.sum() / tokens
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            steps += 1
            last_epoch_nll += float(loss.detach()) * tokens
            last_epoch_tokens += tokens
            if (
                config.max_seconds is not None
                and time.perf_counter() - started > config.max_seconds
                and steps < len(batches) * config.epochs  # not on the last planned update
            ):
                stopped_by_time = True
                break
        epochs_run = epoch + 1
        if stopped_by_time:
            break
    model.eval()
    return {
        "epochs": epochs_run,
        "steps": steps,
        "planned_steps": steps_per_epoch * config.epochs,
        "seconds": time.perf_counter() - started,
        "train_sentences": len(batcher),
        "train_tokens": batcher.num_targets(),
        "last_epoch_train_nll_per_token": last_epoch_nll / max(last_epoch_tokens, 1),
        "stopped_by_time": stopped_by_time,
    }


def save_language_model(
    path: str | Path,
    model: LSTMDecoder,
    config: LMConfig,
    tokenizer_state: dict[str, Any],
    info: dict[str, Any],
) -> None:
    """Write the LM, its config, tokenizer state and training info to one file, atomically."""
    state = {
        "format": LM_FORMAT,
        "model": model.state_dict(),
        "config": asdict(config),
        "vocab": {
            "vocab_size": model.vocab_size,
            "pad_id": model.pad_id,
            "bos_id": model.bos_id,
            "eos_id": model.eos_id,
        },
        "tokenizer": tokenizer_state,
        "info": info,
    }
    save_atomic(state, Path(path))


def load_language_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[LSTMDecoder, LMConfig, dict[str, Any], dict[str, Any]]:
    """Read a saved LM (``weights_only=True``): ``(model, config, tokenizer_state, info)``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path}: not a readable language-model file ({error})") from error
    if not isinstance(state, dict) or state.get("format") != LM_FORMAT:
        raise ValueError(f"{path}: not a latentebm language-model file (format {LM_FORMAT})")
    config = LMConfig.from_dict(state["config"])
    model = build_language_model(config, **state["vocab"])
    load_weights(model, state["model"], path)
    model.to(device).eval()
    return model, config, state["tokenizer"], state["info"]


def describe_training(info: dict[str, Any]) -> str:
    """``3 epoch(s) on N sentences, S s``, or for a run that ``max_seconds`` cut short
    ``stopped by max_seconds after 34 of 1533 updates (epoch 1) on N sentences, S s``."""
    where = f"on {info['train_sentences']} sentences, {info['seconds']:.0f} s"
    if not info.get("stopped_by_time"):
        return f"{info['epochs']} epoch(s) {where}"
    planned = info.get("planned_steps")
    of = f" of {planned}" if planned else ""
    return (
        f"stopped by max_seconds after {info['steps']}{of} updates (epoch {info['epochs']}) {where}"
    )
