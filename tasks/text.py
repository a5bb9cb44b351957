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

import hashlib
import io
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from latentebm.data import (
    BUILTIN_PREFIX,
    DataFileError,
    DataFormatError,
    data_root,
    open_text,
    resolve_data_path,
)
from latentebm.hf_data import is_hf_source, materialize
from latentebm.tasks.batching import BucketedBatches

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


PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS: tuple[str, ...] = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

SPLITS: tuple[str, ...] = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Tokenizer(Protocol):
    """What :class:`TextTask` needs from a tokenizer."""

    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int

    def encode(self, sentence: str) -> list[int]:
        """Token ids of one sentence, without ``<bos>``/``<eos>``."""
        ...

    def encode_batch(self, sentences: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many sentences (may be faster)."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Text of an id sequence: skips ``<pad>``/``<bos>``, stops at ``<eos>``."""
        ...

    def __len__(self) -> int:
        """Number of ids (the model's vocabulary size)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Serializable state (``weights_only`` safe)."""
        ...


def _content_ids(ids: Iterable[int]) -> list[int]:
    """The ids before the first ``<eos>``, without ``<pad>`` and ``<bos>``."""
    out: list[int] = []
    for i in ids:
        i = int(i)
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(i)
    return out


class Vocabulary:
    """Word-level vocabulary with PTB conventions.

    Ids 0..3 are ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``; the remaining words follow in order
    of descending training frequency, ties broken alphabetically (deterministic). A literal
    ``<unk>`` token in the data (PTB has them) maps to the ``<unk>`` special.
    """

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, itos: Sequence[str] | None = None) -> None:
        """Create a vocabulary from an id-to-word list (must start with the four specials)."""
        words = list(SPECIALS) if itos is None else [str(w) for w in itos]
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with the specials {SPECIALS}")
        self.itos: list[str] = words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(words)}
        if len(self.stoi) != len(words):
            raise ValueError("vocabulary contains duplicate words")

    @classmethod
    def build(
        cls,
        sentences: Iterable[list[str]],
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> "Vocabulary":
        """Count words in tokenized sentences and build the vocabulary.

        Args:
            sentences: tokenized sentences (lists of words).
            min_freq: keep words occurring at least this often.
            max_size: maximum total vocabulary size *including* the four specials.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < len(SPECIALS):
            raise ValueError(f"max_size must be >= {len(SPECIALS)}, got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in sentences:
            counts.update(tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        words = [w for w, c in counts.items() if c >= min_freq]
        words.sort(key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls(list(SPECIALS) + words)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Map words to ids (unknown words -> ``<unk>``); no ``<bos>``/``<eos>`` are added."""
        get = self.stoi.get
        return [get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        """Map ids to words.

        With ``strip_specials`` (default) ``<pad>`` and ``<bos>`` are skipped and decoding stops
        at the first ``<eos>``; ``<unk>`` is kept as a word. Without it every id is mapped
        verbatim.
        """
        itos = self.itos
        if not strip_specials:
            return [itos[int(i)] for i in ids]
        return [itos[i] for i in _content_ids(ids)]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def state_dict(self) -> dict[str, Any]:
        """``{"itos": [...]}`` (plain lists/str only)."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Vocabulary":
        """Inverse of :meth:`state_dict`."""
        return cls(state["itos"])


class WordTokenizer:
    """Whitespace tokenizer over a :class:`Vocabulary` (implements :class:`Tokenizer`)."""

    kind = "word"

    def __init__(self, vocab: Vocabulary, lowercase: bool = False) -> None:
        """Wrap ``vocab``; ``lowercase`` lower-cases text before lookup."""
        self.vocab = vocab
        self.lowercase = lowercase
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def tokenize(self, sentence: str) -> list[str]:
        """Split on whitespace (lower-casing if configured)."""
        return (sentence.lower() if self.lowercase else sentence).split()

    def encode(self, sentence: str) -> list[int]:
        """Ids of the words of ``sentence`` (no ``<bos>``/``<eos>``)."""
        return self.vocab.encode(self.tokenize(sentence))

    def encode_batch(self, sentences: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for each sentence."""
        return [self.encode(s) for s in sentences]

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by spaces (skips pad/bos, stops at eos)."""
        return " ".join(self.vocab.decode(ids))

    def __len__(self) -> int:
        return len(self.vocab)

    def state_dict(self) -> dict[str, Any]:
        """``{"kind": "word", "itos": [...], "lowercase": bool}``."""
        return {"kind": self.kind, "itos": list(self.vocab.itos), "lowercase": self.lowercase}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "WordTokenizer":
        """Inverse of :meth:`state_dict`."""
        return cls(Vocabulary(state["itos"]), lowercase=bool(state.get("lowercase", False)))


class SentencePieceTokenizer:
    """SentencePiece (unigram or BPE) subword tokenizer (implements :class:`Tokenizer`).

    The model is trained in memory and its serialized bytes are kept in the state dict as a
    ``uint8`` tensor. Literal ``<unk>`` words in the text (as in PTB) are removed from the
    training text and encoded as the ``<unk>`` id; ``<unk>`` decodes to the word ``<unk>``.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, lowercase: bool = False) -> None:
        """Load a serialized SentencePiece model."""
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self.lowercase = lowercase
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        ids = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(f"SentencePiece model has special ids {ids}, expected (0, 1, 2, 3)")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = ids

    @classmethod
    def train(
        cls,
        sentences: Iterable[str],
        vocab_size: int,
        model_type: Literal["unigram", "bpe"] = "unigram",
        lowercase: bool = False,
        num_threads: int | None = None,
    ) -> "SentencePieceTokenizer":
        """Train a model on ``sentences``.

        ``vocab_size`` is an upper bound (``hard_vocab_limit=False``): small corpora may yield
        fewer pieces; use ``len(tokenizer)`` for the actual size.
        """
        import sentencepiece as spm

        if vocab_size <= len(SPECIALS):
            raise ValueError(f"spm vocab_size must be > {len(SPECIALS)}, got {vocab_size}")
        texts = []
        for s in sentences:
            words = [w for w in (s.lower() if lowercase else s).split() if w != UNK]
            if words:
                texts.append(" ".join(words))
        if not texts:
            raise ValueError("no training text for SentencePiece")
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=buf,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece=PAD,
            unk_piece=UNK,
            bos_piece=BOS,
            eos_piece=EOS,
            unk_surface=f" {UNK} ",
            hard_vocab_limit=False,
            character_coverage=1.0,
            num_threads=num_threads or max(1, min(16, os.cpu_count() or 1)),
            minloglevel=2,
        )
        return cls(buf.getvalue(), lowercase=lowercase)

    def _segments(self, sentence: str) -> list[str | None]:
        """Split a sentence at literal ``<unk>`` words (``None`` marks an ``<unk>``)."""
        text = sentence.lower() if self.lowercase else sentence
        words = text.split()
        if UNK not in words:
            return [" ".join(words)] if words else []
        segs: list[str | None] = []
        cur: list[str] = []
        for w in words:
            if w == UNK:
                if cur:
                    segs.append(" ".join(cur))
                    cur = []
                segs.append(None)
            else:
                cur.append(w)
        if cur:
            segs.append(" ".join(cur))
        return segs

    def encode(self, sentence: str) -> list[int]:
        """Piece ids of ``sentence`` (no ``<bos>``/``<eos>``)."""
        return self.encode_batch([sentence])[0]

    def encode_batch(self, sentences: Sequence[str]) -> list[list[int]]:
        """Encode many sentences with one batched SentencePiece call."""
        seg_lists = [self._segments(s) for s in sentences]
        flat = [seg for segs in seg_lists for seg in segs if seg is not None]
        encoded = iter(self.sp.encode(flat, out_type=int)) if flat else iter(())
        out: list[list[int]] = []
        for segs in seg_lists:
            ids: list[int] = []
            for seg in segs:
                if seg is None:
                    ids.append(UNK_ID)
                else:
                    ids.extend(next(encoded))
            out.append(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text (skips pad/bos, stops at eos)."""
        return " ".join(self.sp.decode(_content_ids(ids)).split())

    def __len__(self) -> int:
        return int(self.sp.get_piece_size())

    def state_dict(self) -> dict[str, Any]:
        """``{"kind": "sentencepiece", "model": uint8 tensor, "lowercase": bool}``."""
        model = torch.frombuffer(bytearray(self.model_proto), dtype=torch.uint8).clone()
        return {"kind": self.kind, "model": model, "lowercase": self.lowercase}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "SentencePieceTokenizer":
        """Inverse of :meth:`state_dict` (also accepts the model as ``bytes`` or a list of ints)."""
        model = state["model"]
        if isinstance(model, torch.Tensor):
            proto = model.to(torch.uint8).cpu().numpy().tobytes()
        else:
            proto = bytes(model)
        return cls(proto, lowercase=bool(state.get("lowercase", False)))


SPM_CACHE_VERSION = 1


def _hf_cache(cache_dir: str | None) -> Path | None:
    """Where Hugging Face columns are written (:mod:`latentebm.hf_data`): ``task.cache_dir/hf``."""
    return None if cache_dir is None else Path(cache_dir).expanduser() / "hf"


def _tokenizer_cache_dir(cache_dir: str | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / (
        "latentebm/tokenizers"
    )


def cached_sentencepiece(
    sentences: list[str],
    *,
    vocab_size: int,
    model_type: Literal["unigram", "bpe"],
    lowercase: bool,
    cache_dir: str | None = None,
) -> SentencePieceTokenizer:
    """:meth:`SentencePieceTokenizer.train`, or the model trained before on the same input.

    The cache file's name is a SHA-256 of the training sentences, the settings, the
    sentencepiece version and :data:`SPM_CACHE_VERSION`, so any change of the data retrains.
    Training takes seconds to minutes (12 s for the quick start); loading milliseconds, and a
    run's tokenizer is then the same model every time. A damaged cache file is retrained and
    replaced; a cache folder that cannot be written only costs the saving (said at INFO level).
    """
    import sentencepiece as spm

    from latentebm.atomic import write_bytes_atomic

    digest = hashlib.sha256()
    settings = (vocab_size, model_type, lowercase, spm.__version__, SPM_CACHE_VERSION)
    digest.update(repr(settings).encode())
    for sentence in sentences:
        digest.update(sentence.encode("utf-8", "surrogatepass") + b"\n")
    path = _tokenizer_cache_dir(cache_dir) / f"spm-{digest.hexdigest()[:24]}.model"
    if path.is_file():
        try:
            tokenizer = SentencePieceTokenizer(path.read_bytes(), lowercase=lowercase)
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is retrained
            logger.warning("%s: unreadable tokenizer cache (%s); retraining", path, exc)
        else:
            logger.info("sentencepiece tokenizer: %s (cached)", path)
            return tokenizer
    started = time.perf_counter()
    logger.info("training the sentencepiece tokenizer on %d sentences ...", len(sentences))
    tokenizer = SentencePieceTokenizer.train(
        sentences, vocab_size=vocab_size, model_type=model_type, lowercase=lowercase
    )
    try:
        write_bytes_atomic(path, tokenizer.model_proto)
    except OSError as exc:
        logger.info("could not cache the tokenizer in %s: %s", path, exc)
    else:
        logger.info(
            "sentencepiece tokenizer trained in %.0f s, cached: %s",
            time.perf_counter() - started,
            path,
        )
    return tokenizer


def tokenizer_from_state_dict(state: dict[str, Any]) -> WordTokenizer | SentencePieceTokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.state_dict` output."""
    kind = state.get("kind")
    if kind == WordTokenizer.kind:
        return WordTokenizer.from_state_dict(state)
    if kind == SentencePieceTokenizer.kind:
        return SentencePieceTokenizer.from_state_dict(state)
    raise ValueError(f"unknown tokenizer kind {kind!r} in state dict")


# --------------------------------------------------------------------------------------------
# Running text: paragraphs, sentences, Project Gutenberg files
# --------------------------------------------------------------------------------------------

SENTENCE_ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "capt", "col", "dr", "gen", "hon", "jr", "lt", "messrs", "mlle", "mme", "mr", "mrs",
        "ms", "mt", "prof", "rev", "sgt", "sr", "st",
    }
)  # fmt: skip
"""Words after which a ``.`` does not end a sentence (``Mr. Bennet``, ``St. Paul``), compared in
lower case without the period; single upper-case initials (``J. Smith``) do not end one either."""

_OPENING_QUOTES = "\"'\u201c\u2018"  # " ' “ ‘
_SENTENCE_END_RE = re.compile(r"([.!?]+)[\"'\u201d\u2019)\]]*(?=\s)")  # closing: " ' ” ’ ) ]
_GUTENBERG_START_RE = re.compile(
    r"^[\s\ufeff]*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK\b", re.IGNORECASE
)
_GUTENBERG_END_RE = re.compile(
    r"^[\s\ufeff]*\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK\b", re.IGNORECASE
)


def split_sentences(text: str) -> list[str]:
    """The sentences of a paragraph of running text, whitespace runs collapsed to one space.

    A sentence ends after a run of ``.``, ``!`` or ``?`` (with the closing quotes or brackets
    ``" ' ” ’ ) ]`` right after it) that is followed by whitespace and then an upper-case letter
    or an opening quote (``" ' “ ‘``). A single ``.`` after a word of
    :data:`SENTENCE_ABBREVIATIONS` (``Mr.``, ``Dr.``, ``St.``) or after a single upper-case
    letter (an initial: ``J. Smith``) ends none. For example
    ``"Why?" asked Mr. Hale. "Go!" He went.`` is ``['"Why?" asked Mr. Hale.', '"Go!"',
    'He went.']``: ``?"`` is followed by a lower-case word and ``Mr.`` is an abbreviation.
    """
    text = " ".join(text.split())
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(text):
        end = match.end()
        following = text[end + 1 : end + 2]  # after the one space
        if not following or not (following.isupper() or following in _OPENING_QUOTES):
            continue
        if match.group(1) == ".":
            word_start = max(start, text.rfind(" ", start, match.start()) + 1)
            word = text[word_start : match.start()]
            word = word.lstrip(_OPENING_QUOTES + "([")
            if word.lower() in SENTENCE_ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                continue
        out.append(text[start:end])
        start = end + 1
    if start < len(text):
        out.append(text[start:])
    return out


def paragraphs(lines: Iterable[str]) -> list[str]:
    """The blank-line-separated paragraphs of ``lines``, each one line: its lines stripped and
    joined with single spaces (a blank line is empty or whitespace only)."""
    out: list[str] = []
    current: list[str] = []
    for line in lines:
        text = line.strip()
        if text:
            current.append(text)
        elif current:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def strip_gutenberg(lines: Sequence[str], source: str | os.PathLike[str]) -> list[str]:
    """The lines of a Project Gutenberg e-book between its start and end marker lines.

    The start marker is the first line that begins with ``*** START OF THE PROJECT GUTENBERG
    EBOOK`` (or ``THIS PROJECT``, ``E-BOOK``; any case), the end marker the first line after it
    that begins with ``*** END OF THE PROJECT GUTENBERG EBOOK`` (or ``THIS``); both are dropped
    with everything before the start and from the end on (the licence and the catalogue text).

    Raises:
        DataFormatError: one line naming ``source`` when a marker is missing.
    """
    start = next((i for i, line in enumerate(lines) if _GUTENBERG_START_RE.match(line)), None)
    if start is None:
        raise DataFormatError(
            f"{source}: task.strip_gutenberg_header: no '*** START OF THE PROJECT GUTENBERG "
            "EBOOK ... ***' line (or 'START OF THIS PROJECT ...'); not a Project Gutenberg "
            "e-book? set task.strip_gutenberg_header=false"
        )
    end = next((i for i in range(start + 1, len(lines)) if _GUTENBERG_END_RE.match(lines[i])), None)
    if end is None:
        raise DataFormatError(
            f"{source}: task.strip_gutenberg_header: no '*** END OF THE PROJECT GUTENBERG "
            f"EBOOK ... ***' line after the start marker of line {start + 1}; is the file cut "
            "short? set task.strip_gutenberg_header=false to keep every line"
        )
    return list(lines[start + 1 : end])


# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------


class _Split:
    """A pre-tokenized split: kept sentences, their id tensors and drop counts."""

    def __init__(
        self,
        sentences: list[str],
        seqs: list[torch.Tensor],
        dropped_short: int,
        dropped_long: int,
    ) -> None:
        self.sentences = sentences
        self.seqs = seqs  # each: <bos> ids <eos>, int64
        self.lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        self.dropped_short = dropped_short
        self.dropped_long = dropped_long


class TextTask(BucketedBatches):
    """Sentence data, tokenizer and length-bucketed batching for text models."""

    default_metrics: tuple[str, ...] = ("marginal_nll",)
    """What ``latentebm evaluate`` computes unless told (see ``docs/metrics.md``)."""

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
            if not 0.0 <= self.valid_fraction < 1.0:
                raise ValueError(
                    f"task.valid_fraction must be in [0, 1), got {self.valid_fraction}"
                )
            if self.valid is not None and self.valid_fraction > 0:
                raise ValueError(
                    "set either task.valid or task.valid_fraction, not both (with your own "
                    "task.valid, set task.valid_fraction=0)"
                )
            if self.min_freq < 1:
                raise ValueError(f"task.min_freq must be >= 1, got {self.min_freq}")
            if self.max_vocab is not None and self.max_vocab <= len(SPECIALS):
                raise ValueError(f"task.max_vocab must be > {len(SPECIALS)}, got {self.max_vocab}")
            if self.spm_vocab_size <= len(SPECIALS):
                raise ValueError(
                    f"task.spm_vocab_size must be > {len(SPECIALS)}, got {self.spm_vocab_size}"
                )
            if self.min_length < 0:
                raise ValueError(f"task.min_length must be >= 0, got {self.min_length}")
            if self.max_length is not None and self.max_length < 1:
                raise ValueError(f"task.max_length must be >= 1, got {self.max_length}")
            if self.max_sentences is not None and self.max_sentences < 1:
                raise ValueError(f"task.max_sentences must be >= 1, got {self.max_sentences}")

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
        self.config = config
        self.data_root = data_root
        self._raw: dict[str, list[str]] = {}
        self._splits: dict[str, _Split] = {}
        if state is not None:
            tok_state = state.get("tokenizer", state)
            self.tokenizer = tokenizer_from_state_dict(tok_state)
            if self.tokenizer.kind != config.tokenizer:
                raise ValueError(
                    f"checkpoint tokenizer is {self.tokenizer.kind!r} "
                    f"but task.tokenizer is {config.tokenizer!r}"
                )
        else:
            train = self._filter_short(self._raw_sentences("train"))[0]
            self.tokenizer = self._build_tokenizer(train)

    # ---------------------------------------------------------------- loading

    def _folder(self, name: str) -> Path | None:
        """The directory ``name`` resolves to (against the data root if relative), else None."""
        if name.startswith(BUILTIN_PREFIX):
            return None
        path = Path(name).expanduser()
        if not path.is_absolute():
            base = data_root(self.data_root)
            if base is None:
                return None
            path = base / path
        return path if path.is_dir() else None

    def _read(self, name: str) -> list[str]:
        """The sentences of a file, or of every ``*.txt``/``*.txt.gz`` in a folder (in name
        order): its non-blank stripped lines, or with ``sentence_split: paragraph`` the
        sentences of its paragraphs; each file cut to its Project Gutenberg text first with
        ``strip_gutenberg_header``."""
        folder = None if is_hf_source(name) else self._folder(name)
        if is_hf_source(name):  # a Hugging Face dataset's column, as a text file
            cache = _hf_cache(self.config.cache_dir)
            paths = [materialize(name, ("text",), cache, data_root=self.data_root)]
        elif folder is None:
            paths = [resolve_data_path(name, self.data_root)]
        else:
            paths = sorted(
                (
                    p
                    for p in folder.iterdir()
                    if p.is_file() and p.name.endswith((".txt", ".txt.gz"))
                ),
                key=lambda p: p.name,
            )
            if not paths:
                raise DataFileError(f"data folder {folder} has no *.txt or *.txt.gz files")
        cfg = self.config
        lines: list[str] = []
        for path in paths:
            with open_text(path) as f:
                if cfg.sentence_split == "line" and not cfg.strip_gutenberg_header:
                    lines.extend(s for s in (line.strip() for line in f) if s)
                    continue
                text = [line.rstrip("\r\n") for line in f]
            if cfg.strip_gutenberg_header:
                text = strip_gutenberg(text, path)
            if cfg.sentence_split == "paragraph":
                lines.extend(s for p in paragraphs(text) for s in split_sentences(p))
            else:
                lines.extend(s for s in (line.strip() for line in text) if s)
        return lines

    def _check_split(self, split: str) -> None:
        cfg = self.config
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
        if split == "valid" and cfg.valid is None and cfg.valid_fraction <= 0:
            raise ValueError(
                "split 'valid' is not configured: set task.valid or task.valid_fraction"
            )
        if split == "test" and cfg.test is None:
            raise ValueError("split 'test' is not configured: set task.test")

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
                n_valid = max(1, round(len(lines) * cfg.valid_fraction))
                if n_valid >= len(lines):
                    raise ValueError(
                        f"valid_fraction {cfg.valid_fraction} leaves no training sentences "
                        f"({len(lines)} lines in {cfg.train})"
                    )
                perm = np.random.default_rng(0).permutation(len(lines))
                is_valid = np.zeros(len(lines), dtype=bool)
                is_valid[perm[:n_valid]] = True
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

    def _build_tokenizer(self, train: list[str]) -> WordTokenizer | SentencePieceTokenizer:
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

    def _split(self, split: str) -> _Split:
        """The pre-tokenized split (built on first use)."""
        if split in self._splits:
            return self._splits[split]
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
        head = [self.tokenizer.bos_id]
        tail = [self.tokenizer.eos_id]
        seqs = [torch.tensor(head + x + tail, dtype=torch.long) for x in ids]
        result = _Split(sentences, seqs, n_short, n_long)
        report_dropped(
            logger,
            f"text {split}",
            len(seqs) + n_short + n_long,
            {
                f"shorter than {self.config.min_length} words": n_short,
                f"longer than {max_len} tokens": n_long,
            },
            "task.max_length (null: no limit) and task.min_length set the limits",
        )
        self._splits[split] = result
        return result

    # ---------------------------------------------------------------- public API

    @property
    def splits(self) -> list[str]:
        """The configured split names."""
        out = ["train"]
        if self.config.valid is not None or self.config.valid_fraction > 0:
            out.append("valid")
        if self.config.test is not None:
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
        """Keyword arguments the text generator needs from the data."""
        return {
            "vocab_size": len(self.tokenizer),
            "pad_id": self.tokenizer.pad_id,
            "bos_id": self.tokenizer.bos_id,
            "eos_id": self.tokenizer.eos_id,
        }

    def _pad(self, seqs: Sequence[torch.Tensor]) -> torch.Tensor:
        if not seqs:
            return torch.empty((0, 0), dtype=torch.long)
        return pad_sequence(list(seqs), batch_first=True, padding_value=self.tokenizer.pad_id)

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """Padded ``(B, T)`` LongTensor ``<bos> w1 ... wn <eos> <pad> ...`` (no length filter)."""
        tok = self.tokenizer
        ids = tok.encode_batch(list(sentences))
        return self._pad(
            [torch.tensor([tok.bos_id, *x, tok.eos_id], dtype=torch.long) for x in ids]
        )

    def decode(self, tokens: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Text of each row: drops ``<bos>``/``<pad>``, stops at ``<eos>``."""
        rows = tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens
        return [self.tokenizer.decode(r) for r in rows]

    def sentences(self, split: str) -> list[str]:
        """The raw sentences kept in ``split`` (after length filtering), in file order."""
        return list(self._split(split).sentences)

    def num_sentences(self, split: str) -> int:
        """Number of sentences kept in ``split``."""
        return len(self._split(split).seqs)

    def num_target_tokens(self, batch: torch.Tensor) -> int:
        """Predicted tokens in a batch: everything after ``<bos>`` including ``<eos>``, no pad."""
        return int((batch[:, 1:] != self.tokenizer.pad_id).sum().item())

    def _batch(self, data: _Split, index: np.ndarray) -> torch.Tensor:
        """The padded batch of the sentences ``index`` of a split (for ``batches``)."""
        seqs = data.seqs
        return self._pad([seqs[i] for i in index.tolist()])

    def describe(self) -> str:
        """One line: sentences per split, tokenizer and vocab size, dropped counts."""
        parts = []
        short = long = 0
        for split in self.splits:
            s = self._split(split)
            parts.append(f"{split} {len(s.seqs)}")
            short += s.dropped_short
            long += s.dropped_long
        dropped = f"dropped {short} short (< {self.config.min_length} words)"
        if self.config.max_length is not None:
            dropped += f", {long} long (> {self.config.max_length} tokens)"
        return (
            f"text: sentences {' / '.join(parts)}; {self.tokenizer.kind} tokenizer, "
            f"vocab {len(self.tokenizer)}; {dropped}"
        )

    def __repr__(self) -> str:
        return f"TextTask(train={self.config.train!r}, tokenizer={self.config.tokenizer!r})"
