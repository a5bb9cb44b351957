"""Tokenizers of the text task (:class:`~latentebm.tasks.text.TextTask`): a word vocabulary
with PTB conventions (:class:`Vocabulary`, :class:`WordTokenizer`) and SentencePiece subwords
(:class:`SentencePieceTokenizer`, trained in memory and cached by :func:`cached_sentencepiece`).

The special ids are fixed (:mod:`latentebm.tasks.sequence`): ``<pad>`` = 0, ``<unk>`` = 1,
``<bos>`` = 2, ``<eos>`` = 3. A tokenizer's state (``state_dict``) contains only lists,
strings, ints, bools and tensors, so it survives ``torch.load(..., weights_only=True)``.
"""

import hashlib
import io
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from latentebm.tasks.sequence import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SPECIALS,
    UNK,
    UNK_ID,
    check_specials,
    content_ids,
    frequency_order,
    vocabulary_index,
)

__all__ = [
    "SPM_CACHE_VERSION",
    "SentencePieceTokenizer",
    "Tokenizer",
    "Vocabulary",
    "WordTokenizer",
    "cached_sentencepiece",
    "tokenizer_cache_dir",
    "tokenizer_from_state_dict",
]

# The text task's logger: these lines were logged under that name before the tokenizers had a
# module of their own, and a caller filtering on it still sees them.
logger = logging.getLogger("latentebm.tasks.text")


@runtime_checkable
class Tokenizer(Protocol):
    """What :class:`~latentebm.tasks.text.TextTask` needs from a tokenizer."""

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
        self.itos: list[str] = check_specials(SPECIALS if itos is None else itos)
        self.stoi: dict[str, int] = vocabulary_index(self.itos, "words")

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
        words = frequency_order(counts, min_freq)
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
        return [itos[i] for i in content_ids(ids)]

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
        return " ".join(self.sp.decode(content_ids(ids)).split())

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


def tokenizer_cache_dir(cache_dir: str | None) -> Path:
    """Where trained SentencePiece models are cached: ``cache_dir``, else
    ``$XDG_CACHE_HOME/latentebm/tokenizers`` (default ``~/.cache``)."""
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
    path = tokenizer_cache_dir(cache_dir) / f"spm-{digest.hexdigest()[:24]}.model"
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
