"""Where the text task's sentences come from (:class:`~latentebm.tasks.text.TextTask`): its
files or folders of ``*.txt``/``*.txt.gz`` files, or a Hugging Face dataset's column
(:mod:`latentebm.hf_data`), read one sentence per line or as running text: blank-line-separated
paragraphs (:func:`paragraphs`) split into sentences (:func:`split_sentences`), optionally cut
to a Project Gutenberg e-book's text first (:func:`strip_gutenberg`).
"""

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from latentebm.data import (
    BUILTIN_PREFIX,
    DataFileError,
    DataFormatError,
    data_root,
    open_text,
    resolve_data_path,
)
from latentebm.hf_data import is_hf_source, materialize
from latentebm.tasks.sequence import hf_cache

__all__ = [
    "SENTENCE_ABBREVIATIONS",
    "paragraphs",
    "read_sentences",
    "split_sentences",
    "strip_gutenberg",
    "text_files",
]

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
# Files
# --------------------------------------------------------------------------------------------


def _folder(name: str, root: str | os.PathLike[str] | None) -> Path | None:
    """The directory ``name`` resolves to (against the data root if relative), else None."""
    if name.startswith(BUILTIN_PREFIX):
        return None
    path = Path(name).expanduser()
    if not path.is_absolute():
        base = data_root(root)
        if base is None:
            return None
        path = base / path
    return path if path.is_dir() else None


def text_files(name: str, root: str | os.PathLike[str] | None, cache_dir: str | None) -> list[Path]:
    """The files of a text source: ``name`` itself (resolved against the data root ``root``),
    every ``*.txt``/``*.txt.gz`` of the folder it names (in name order), or a Hugging Face
    dataset's ``text`` column written as a text file (under :func:`hf_cache`)."""
    if is_hf_source(name):  # a Hugging Face dataset's column, as a text file
        return [materialize(name, ("text",), hf_cache(cache_dir), data_root=root)]
    folder = _folder(name, root)
    if folder is None:
        return [resolve_data_path(name, root)]
    paths = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.name.endswith((".txt", ".txt.gz"))),
        key=lambda p: p.name,
    )
    if not paths:
        raise DataFileError(f"data folder {folder} has no *.txt or *.txt.gz files")
    return paths


def read_sentences(
    paths: Iterable[Path],
    sentence_split: Literal["line", "paragraph"],
    strip_gutenberg_header: bool,
) -> list[str]:
    """The sentences of the files, in order: their non-blank stripped lines, or with
    ``sentence_split="paragraph"`` the sentences of their paragraphs; each file cut to its
    Project Gutenberg text first with ``strip_gutenberg_header``."""
    lines: list[str] = []
    for path in paths:
        with open_text(path) as f:
            if sentence_split == "line" and not strip_gutenberg_header:
                lines.extend(s for s in (line.strip() for line in f) if s)
                continue
            text = [line.rstrip("\r\n") for line in f]
        if strip_gutenberg_header:
            text = strip_gutenberg(text, path)
        if sentence_split == "paragraph":
            lines.extend(s for p in paragraphs(text) for s in split_sentences(p))
        else:
            lines.extend(s for s in (line.strip() for line in text) if s)
    return lines
