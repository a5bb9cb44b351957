"""What the token-sequence tasks share (:class:`~latentebm.tasks.text.TextTask`,
:class:`~latentebm.tasks.molecules.MoleculeTask`): the special tokens, vocabulary helpers,
padding, the report of examples dropped by the length limits, and :class:`SequenceTask`, their
base class (split bookkeeping, tokenizer state, batches, decoding).

Every encoded example is ``<bos> t1 ... tn <eos>`` followed by ``<pad>`` up to the batch
length; the special ids are fixed: ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from latentebm.tasks.batching import BucketedBatches
from latentebm.tasks.splits import SPLITS

__all__ = [
    "BOS",
    "BOS_ID",
    "DROPPED_WARNING_SHARE",
    "EOS",
    "EOS_ID",
    "PAD",
    "PAD_ID",
    "SPECIALS",
    "UNK",
    "UNK_ID",
    "SequenceTask",
    "check_specials",
    "content_ids",
    "frequency_order",
    "hf_cache",
    "pad_ids",
    "report_dropped",
    "vocabulary_index",
]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS: tuple[str, ...] = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

DROPPED_WARNING_SHARE = 0.05
"""A split that loses more than this share of its examples to the length limits gets a warning
that names the setting to change (below it, an info line)."""


def report_dropped(
    log: logging.Logger, what: str, total: int, reasons: dict[str, int], hint: str
) -> None:
    """Log how many of ``total`` examples of ``what`` (e.g. ``text train``) were dropped and
    why (``reasons``: description -> count): a warning with ``hint`` when more than
    :data:`DROPPED_WARNING_SHARE` of them were, else an info line."""
    dropped = sum(reasons.values())
    if dropped == 0:
        return
    detail = ", ".join(f"{count} {why}" for why, count in reasons.items() if count)
    share = dropped / max(total, 1)
    if share > DROPPED_WARNING_SHARE:
        log.warning(
            "%s: dropped %d of %d examples (%.0f %%): %s; %s",
            what,
            dropped,
            total,
            100.0 * share,
            detail,
            hint,
        )
    else:
        log.info("%s: dropped %d of %d examples: %s", what, dropped, total, detail)


def hf_cache(cache_dir: str | None) -> Path | None:
    """Where Hugging Face columns are written (:mod:`latentebm.hf_data`): ``task.cache_dir/hf``
    (None: the default of :func:`latentebm.hf_data.materialize`)."""
    return None if cache_dir is None else Path(cache_dir).expanduser() / "hf"


# --------------------------------------------------------------------------------------------
# Vocabularies and padding
# --------------------------------------------------------------------------------------------


def content_ids(ids: Iterable[int]) -> list[int]:
    """The ids before the first ``<eos>``, without ``<pad>`` and ``<bos>``."""
    out: list[int] = []
    for i in ids:
        i = int(i)
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(i)
    return out


def check_specials(itos: Iterable[str]) -> list[str]:
    """The id-to-token list as strings; ``ValueError`` unless it starts with :data:`SPECIALS`."""
    words = [str(w) for w in itos]
    if tuple(words[: len(SPECIALS)]) != SPECIALS:
        raise ValueError(f"vocabulary must start with the specials {SPECIALS}")
    return words


def vocabulary_index(words: Sequence[str], what: str) -> dict[str, int]:
    """Token -> id of an id-to-token list; ``ValueError`` (``vocabulary contains duplicate
    WHAT``) when a token appears twice."""
    stoi = {w: i for i, w in enumerate(words)}
    if len(stoi) != len(words):
        raise ValueError(f"vocabulary contains duplicate {what}")
    return stoi


def frequency_order(counts: Mapping[str, int], min_freq: int) -> list[str]:
    """The tokens (not the specials) counted at least ``min_freq`` times, most frequent first,
    ties alphabetical (deterministic)."""
    words = [w for w, c in counts.items() if c >= min_freq and w not in SPECIALS]
    words.sort(key=lambda w: (-counts[w], w))
    return words


def pad_ids(seqs: Sequence[Sequence[int] | np.ndarray]) -> torch.Tensor:
    """Padded ``(B, T)`` LongTensor ``<bos> t1 ... tn <eos> <pad> ...`` of token id sequences
    given without ``<bos>``/``<eos>`` (``(0, 0)`` for none)."""
    if not seqs:
        return torch.empty((0, 0), dtype=torch.long)
    width = max(len(s) for s in seqs) + 2
    out = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
    out[:, 0] = BOS_ID
    for r, s in enumerate(seqs):
        out[r, 1 : len(s) + 1] = s
        out[r, len(s) + 1] = EOS_ID
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------


class SequenceTask(BucketedBatches):
    """Base of the token-sequence tasks: tokenizer, splits and length-bucketed batches.

    A subclass sets :attr:`label`, :attr:`tokenizer_setting`, :attr:`length_hint` and
    :attr:`log`, and implements :meth:`_tokenizer_from_state` and :meth:`_build_tokenizer`
    (the tokenizer) and :meth:`_build_split` / :meth:`_dropped` (a split: an object with
    ``__len__``, ``lengths`` (with ``<bos>`` and ``<eos>``) and ``seq(i)``, the token ids of
    example ``i`` without them).
    """

    label: ClassVar[str]
    """What the examples are, in log lines: ``text`` or ``molecules``."""
    tokenizer_setting: ClassVar[str]
    """The ``Config`` field that names the tokenizer's ``kind`` (a checkpoint's must match)."""
    length_hint: ClassVar[str]
    """The settings to change, in the warning about examples dropped by the length limits."""
    log: ClassVar[logging.Logger]
    """The subclass module's logger."""

    config: Any
    tokenizer: Any

    def __init__(
        self,
        config: Any,
        data_root: str | os.PathLike[str] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Keep the settings, then restore the tokenizer from a checkpoint ``state`` (nothing
        is read until a split is used) or build it from the training data."""
        self.config = config
        self.data_root = data_root
        self._splits: dict[str, Any] = {}
        if state is not None:
            tokenizer = self._tokenizer_from_state(state.get("tokenizer", state))
            configured = getattr(config, self.tokenizer_setting)
            if tokenizer.kind != configured:
                raise ValueError(
                    f"checkpoint tokenizer is {tokenizer.kind!r} "
                    f"but task.{self.tokenizer_setting} is {configured!r}"
                )
            self.tokenizer = tokenizer
        else:
            self.tokenizer = self._build_tokenizer()

    def _tokenizer_from_state(self, state: dict[str, Any]) -> Any:
        """The tokenizer of a checkpoint's tokenizer state."""
        raise NotImplementedError

    def _build_tokenizer(self) -> Any:
        """The tokenizer built from the training split."""
        raise NotImplementedError

    def _build_split(self, split: str) -> Any:
        """The split ``split``, tokenized and length filtered."""
        raise NotImplementedError

    def _dropped(self, data: Any) -> dict[str, int]:
        """Examples of a split that the length limits dropped: description -> count."""
        raise NotImplementedError

    def _test_configured(self) -> bool:
        """Whether the settings give a ``test`` split."""
        return self.config.test is not None

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
        if split not in self.splits:
            what = "task.valid or task.valid_fraction" if split == "valid" else "task.test"
            raise ValueError(f"split {split!r} is not configured: set {what}")

    def _split(self, split: str) -> Any:
        """The split ``split`` (built on first use; what the length limits dropped is logged
        then, :func:`report_dropped`)."""
        if split in self._splits:
            return self._splits[split]
        data = self._build_split(split)
        reasons = self._dropped(data)
        report_dropped(
            self.log,
            f"{self.label} {split}",
            len(data) + sum(reasons.values()),
            reasons,
            self.length_hint,
        )
        self._splits[split] = data
        return data

    def _kept_per_split(self) -> tuple[str, list[Any]]:
        """``"train N / valid N / ..."`` (examples kept per configured split) and the splits,
        for ``describe``."""
        data = [self._split(split) for split in self.splits]
        counts = " / ".join(f"{split} {len(d)}" for split, d in zip(self.splits, data, strict=True))
        return counts, data

    def _batch(self, data: Any, index: np.ndarray) -> torch.Tensor:
        """The padded batch of the examples ``index`` of a split (for ``batches``)."""
        return pad_ids([data.seq(i) for i in index.tolist()])

    # ---------------------------------------------------------------- public API

    @property
    def splits(self) -> list[str]:
        """The configured split names."""
        out = ["train"]
        if self.config.valid is not None or self.config.valid_fraction > 0:
            out.append("valid")
        if self._test_configured():
            out.append("test")
        return out

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>`` (0)."""
        return self.tokenizer.pad_id

    def state_dict(self) -> dict[str, Any]:
        """Tokenizer state for checkpoints (``weights_only`` safe)."""
        return {"tokenizer": self.tokenizer.state_dict()}

    def generator_kwargs(self) -> dict[str, int]:
        """Keyword arguments the sequence generator needs from the data."""
        return {
            "vocab_size": len(self.tokenizer),
            "pad_id": self.tokenizer.pad_id,
            "bos_id": self.tokenizer.bos_id,
            "eos_id": self.tokenizer.eos_id,
        }

    def encode(self, examples: Sequence[str]) -> torch.Tensor:
        """Padded ``(B, T)`` LongTensor ``<bos> t1 ... tn <eos> <pad> ...`` of sentences (or
        SMILES strings, canonicalized when configured); no length filter, unknown tokens ->
        ``<unk>``."""
        return pad_ids(self.tokenizer.encode_batch(list(examples)))

    def decode(self, tokens: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Text (SMILES for molecules) of each row: drops ``<bos>``/``<pad>``, stops at
        ``<eos>`` (``""`` where a SELFIES cannot be decoded)."""
        rows = tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens
        return [self.tokenizer.decode(r) for r in rows]

    def num_examples(self, split: str) -> int:
        """Sentences (molecules) of ``split`` after the length filters
        (:class:`~latentebm.task_contract.Task`)."""
        return self.num_sentences(split)

    def num_sentences(self, split: str) -> int:
        """Number of examples (sentences, molecules) kept in ``split``."""
        return len(self._split(split))

    def num_target_tokens(self, batch: torch.Tensor) -> int:
        """Predicted tokens in a batch: everything after ``<bos>`` including ``<eos>``, no pad."""
        return int((batch[:, 1:] != self.tokenizer.pad_id).sum().item())
