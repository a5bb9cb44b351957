"""Sentence-level text data for latent-EBM prior text models (e.g. Penn Treebank).

One sentence per line (``sentence_split: line``), or running text such as a hard-wrapped book
whose blank-line-separated paragraphs are split into sentences (``sentence_split: paragraph``,
see :func:`split_sentences`; ``strip_gutenberg_header`` drops a Project Gutenberg header and
footer first). Sentences are whitespace tokenized (word mode) or SentencePiece tokenized. Every
encoded sentence is ``<bos> w1 ... wn <eos>`` followed by ``<pad>`` up to the batch length; the
special ids are fixed: ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3.

The tokenizer state (:meth:`TextTask.state_dict`) contains only lists, strings, ints, bools and
tensors, so it survives ``torch.load(..., weights_only=True)``.
"""

import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from latentebm.tasks.sequence import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    SequenceTask,
)
from latentebm.tasks.sequence import BOS_ID as BOS_ID
from latentebm.tasks.sequence import DROPPED_WARNING_SHARE as DROPPED_WARNING_SHARE
from latentebm.tasks.sequence import EOS_ID as EOS_ID
from latentebm.tasks.sequence import PAD_ID as PAD_ID
from latentebm.tasks.sequence import UNK_ID as UNK_ID
from latentebm.tasks.sequence import report_dropped as report_dropped
from latentebm.tasks.splits import SPLITS as SPLITS
from latentebm.tasks.splits import (
    check_minimum,
    check_valid_fraction,
    check_valid_source,
    valid_mask,
)
from latentebm.tasks.text_sources import (
    SENTENCE_ABBREVIATIONS,
    paragraphs,
    read_sentences,
    split_sentences,
    strip_gutenberg,
    text_files,
)
from latentebm.tasks.text_tokenizers import SPM_CACHE_VERSION as SPM_CACHE_VERSION
from latentebm.tasks.text_tokenizers import (
    SentencePieceTokenizer,
    Tokenizer,
    Vocabulary,
    WordTokenizer,
    cached_sentencepiece,
    tokenizer_from_state_dict,
)

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SENTENCE_ABBREVIATIONS",
    "SPECIALS",
    "UNK",
    "SentencePieceTokenizer",
    "TextTask",
    "Tokenizer",
    "Vocabulary",
    "WordTokenizer",
    "paragraphs",
    "split_sentences",
    "strip_gutenberg",
    "tokenizer_from_state_dict",
]

logger = logging.getLogger(__name__)


class _Split:
    """A pre-tokenized split: kept sentences, their token ids (without ``<bos>``/``<eos>``)
    and drop counts."""

    def __init__(
        self,
        sentences: list[str],
        ids: list[list[int]],
        dropped_short: int,
        dropped_long: int,
    ) -> None:
        self.sentences = sentences
        self.ids = ids
        self.lengths = np.fromiter((len(x) + 2 for x in ids), dtype=np.int64, count=len(ids))
        self.dropped_short = dropped_short
        self.dropped_long = dropped_long

    def __len__(self) -> int:
        return len(self.ids)

    def seq(self, i: int) -> list[int]:
        """The token ids of sentence ``i``, without ``<bos>``/``<eos>``."""
        return self.ids[i]


class TextTask(SequenceTask):
    """Sentence data, tokenizer and length-bucketed batching for text models."""

    default_metrics: tuple[str, ...] = ("marginal_nll",)
    """What ``latentebm evaluate`` computes unless told (see ``docs/metrics.md``)."""
    label: ClassVar[str] = "text"
    tokenizer_setting: ClassVar[str] = "tokenizer"
    length_hint: ClassVar[str] = (
        "task.max_length (null: no limit) and task.min_length set the limits"
    )
    log: ClassVar[logging.Logger] = logger

    @dataclass
    class Config:
        """The ``task:`` section of a text recipe."""

        train: str
        """Training file (``ptb/ptb.train.txt.gz``, an absolute path, or ``builtin:FILE``), or a
        folder: all its ``*.txt`` and ``*.txt.gz`` files, in name order (also for valid/test), or
        a Hugging Face dataset: ``hf:FOLDER_OR_FILE_OR_NAME?split=S&column=C`` (a
        ``save_to_disk`` folder, a data file or a Hub name; column default ``text``; one example
        per row; :mod:`latentebm.hf_data`)."""
        valid: str | None = None
        """Validation file or folder (as ``train``); null: none, or ``valid_fraction``."""
        test: str | None = None
        """Test file or folder (same forms); null: no test split."""
        valid_fraction: float = 0.0
        """When ``valid`` is None: hold out this fraction of train (fixed seed-0 split)."""
        tokenizer: Literal["word", "sentencepiece"] = "word"
        """``word``: whitespace-separated words (pre-tokenized corpora such as PTB);
        ``sentencepiece``: subword pieces trained on the training split (cached)."""
        lowercase: bool = False
        """Word mode: lower-case the text before building and looking up the vocabulary."""
        min_freq: int = 1
        """Word mode: keep words seen at least this often in train; rarer ones become ``<unk>``."""
        max_vocab: int | None = None
        """Word mode: maximum vocabulary size including the four specials."""
        spm_vocab_size: int = 8000
        """SentencePiece mode: vocabulary size of the trained model."""
        spm_model_type: Literal["unigram", "bpe"] = "unigram"
        """SentencePiece mode: the unigram language model or byte-pair encoding."""
        min_length: int = 1
        """Drop sentences with fewer (whitespace) words."""
        max_length: int | None = None
        """Drop (not truncate) sentences with more tokens (excluding ``<bos>``/``<eos>``)."""
        max_sentences: int | None = None
        """Use only the first N training sentences (after the valid split)."""
        sentence_split: Literal["line", "paragraph"] = "line"
        """How the files are cut into sentences (all splits): ``line``: each non-blank line is
        one sentence (PTB and the other corpora, one sentence per line); ``paragraph``: running
        text such as a hard-wrapped book: the lines of each blank-line-separated paragraph are
        joined with spaces and the paragraph is split into sentences by
        :func:`split_sentences` (after ``.``, ``!`` or ``?`` followed by whitespace and an
        upper-case letter or an opening quote; not after ``Mr.``, ``Dr.``, ``St.``, ... or an
        initial)."""
        strip_gutenberg_header: bool = False
        """Read each file only between its Project Gutenberg marker lines (``*** START OF THE
        PROJECT GUTENBERG EBOOK ... ***`` or ``START OF THIS ...``, and ``*** END OF ...``), so
        the header, licence and footer are not training text (:func:`strip_gutenberg`); a file
        without the markers is an error."""
        cache_dir: str | None = None
        """Where trained SentencePiece models are cached (None: ``$XDG_CACHE_HOME/latentebm/
        tokenizers``, default ``~/.cache``); keyed by the training text and settings. Columns of
        Hugging Face datasets (``hf:`` sources) go to its ``hf`` folder (None:
        ``~/.cache/latentebm/hf``)."""

        def __post_init__(self) -> None:
            if self.tokenizer not in ("word", "sentencepiece"):
                raise ValueError(
                    f"task.tokenizer must be 'word' or 'sentencepiece', got {self.tokenizer!r}"
                )
            if self.sentence_split not in ("line", "paragraph"):
                raise ValueError(
                    "task.sentence_split must be 'line' or 'paragraph', "
                    f"got {self.sentence_split!r}"
                )
            if self.spm_model_type not in ("unigram", "bpe"):
                raise ValueError(
                    f"task.spm_model_type must be 'unigram' or 'bpe', got {self.spm_model_type!r}"
                )
            check_valid_fraction(self.valid_fraction)
            check_valid_source(self.valid, self.valid_fraction)
            check_minimum("min_freq", self.min_freq, 1)
            if self.max_vocab is not None and self.max_vocab <= len(SPECIALS):
                raise ValueError(f"task.max_vocab must be > {len(SPECIALS)}, got {self.max_vocab}")
            if self.spm_vocab_size <= len(SPECIALS):
                raise ValueError(
                    f"task.spm_vocab_size must be > {len(SPECIALS)}, got {self.spm_vocab_size}"
                )
            check_minimum("min_length", self.min_length, 0)
            check_minimum("max_length", self.max_length, 1)
            check_minimum("max_sentences", self.max_sentences, 1)

    def __init__(
        self,
        config: "TextTask.Config",
        data_root: str | os.PathLike[str] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Load the data and build (or, given a checkpoint ``state``, restore) the tokenizer.

        The training split is read eagerly when the tokenizer has to be built; with ``state``
        nothing is read until a split is used, so a checkpoint can encode/decode without data.
        """
        self._raw: dict[str, list[str]] = {}
        super().__init__(config, data_root, state)

    # ---------------------------------------------------------------- loading

    def _read(self, name: str) -> list[str]:
        """The sentences of a file, or of every ``*.txt``/``*.txt.gz`` in a folder (in name
        order): its non-blank stripped lines, or with ``sentence_split: paragraph`` the
        sentences of its paragraphs; each file cut to its Project Gutenberg text first with
        ``strip_gutenberg_header``."""
        cfg = self.config
        paths = text_files(name, self.data_root, cfg.cache_dir)
        return read_sentences(paths, cfg.sentence_split, cfg.strip_gutenberg_header)

    def _raw_sentences(self, split: str) -> list[str]:
        """Sentences of a split before length filtering (cached)."""
        self._check_split(split)
        if split in self._raw:
            return self._raw[split]
        cfg = self.config
        if split == "test":
            assert cfg.test is not None
            self._raw["test"] = self._read(cfg.test)
        elif split == "valid" and cfg.valid is not None:
            self._raw["valid"] = self._read(cfg.valid)
        else:  # train, or valid held out from train
            lines = self._read(cfg.train)
            if cfg.valid is None and cfg.valid_fraction > 0:
                is_valid = valid_mask(
                    len(lines),
                    cfg.valid_fraction,
                    none_left=f"valid_fraction {cfg.valid_fraction} leaves no training sentences "
                    f"({len(lines)} lines in {cfg.train})",
                )
                self._raw["valid"] = [s for s, v in zip(lines, is_valid, strict=True) if v]
                lines = [s for s, v in zip(lines, is_valid, strict=True) if not v]
            if cfg.max_sentences is not None:
                lines = lines[: cfg.max_sentences]
            self._raw["train"] = lines
        return self._raw[split]

    def _filter_short(self, sentences: list[str]) -> tuple[list[str], int]:
        m = self.config.min_length
        if m <= 1:
            # Blank lines are skipped on reading, so every sentence has >= 1 word.
            return sentences, 0
        kept = [s for s in sentences if len(s.split()) >= m]
        return kept, len(sentences) - len(kept)

    def _tokenizer_from_state(
        self, state: dict[str, Any]
    ) -> WordTokenizer | SentencePieceTokenizer:
        return tokenizer_from_state_dict(state)

    def _build_tokenizer(self) -> WordTokenizer | SentencePieceTokenizer:
        train = self._filter_short(self._raw_sentences("train"))[0]
        cfg = self.config
        if cfg.tokenizer == "word":
            tok = WordTokenizer(Vocabulary(), lowercase=cfg.lowercase)
            vocab = Vocabulary.build(
                (tok.tokenize(s) for s in train), min_freq=cfg.min_freq, max_size=cfg.max_vocab
            )
            return WordTokenizer(vocab, lowercase=cfg.lowercase)
        return cached_sentencepiece(
            train,
            vocab_size=cfg.spm_vocab_size,
            model_type=cfg.spm_model_type,
            lowercase=cfg.lowercase,
            cache_dir=cfg.cache_dir,
        )

    def _build_split(self, split: str) -> _Split:
        """The pre-tokenized split."""
        sentences, n_short = self._filter_short(self._raw_sentences(split))
        ids = self.tokenizer.encode_batch(sentences)
        max_len = self.config.max_length
        if max_len is not None:
            keep = [i for i, x in enumerate(ids) if len(x) <= max_len]
            n_long = len(ids) - len(keep)
            sentences = [sentences[i] for i in keep]
            ids = [ids[i] for i in keep]
        else:
            n_long = 0
        return _Split(sentences, ids, n_short, n_long)

    def _dropped(self, data: _Split) -> dict[str, int]:
        return {
            f"shorter than {self.config.min_length} words": data.dropped_short,
            f"longer than {self.config.max_length} tokens": data.dropped_long,
        }

    # ---------------------------------------------------------------- public API

    def sentences(self, split: str) -> list[str]:
        """The raw sentences kept in ``split`` (after length filtering), in file order."""
        return list(self._split(split).sentences)

    def describe(self) -> str:
        """One line: sentences per split, tokenizer and vocab size, dropped counts."""
        counts, data = self._kept_per_split()
        short = sum(s.dropped_short for s in data)
        dropped = f"dropped {short} short (< {self.config.min_length} words)"
        if self.config.max_length is not None:
            long = sum(s.dropped_long for s in data)
            dropped += f", {long} long (> {self.config.max_length} tokens)"
        return (
            f"text: sentences {counts}; {self.tokenizer.kind} tokenizer, "
            f"vocab {len(self.tokenizer)}; {dropped}"
        )

    def __repr__(self) -> str:
        return f"TextTask(train={self.config.train!r}, tokenizer={self.config.tokenizer!r})"
