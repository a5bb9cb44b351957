"""Hugging Face ``datasets`` as a data source of the text and molecule tasks.

A recipe names one column of one split as a data file::

    task.train: hf:/data/my_corpus?split=train&column=text     # a save_to_disk folder
    task.train: hf:/data/molecules.parquet?column=smiles         # a data file (parquet, csv,
                                                                 #   json/jsonl, arrow, txt)
    task.train: hf:OWNER/NAME?split=train&column=sentence        # a Hub dataset (online, or
                                                                 #   in the local HF cache)

Contract: :func:`materialize` writes the column's values, one example per line (runs of
whitespace inside a value, newlines included, become one space) followed by a blank line (so
``task.sentence_split: paragraph`` sees each example as one paragraph), to a text file in a
cache folder keyed by the dataset's own fingerprint, split and column, and returns its path;
the tasks then read that file as any other (their own caches, keyed by the file, apply). The
file is written once per key, atomically. ``split`` may be left out for a single-split source;
``column`` defaults to the task's (``text`` for text, ``smiles`` or ``SMILES`` for molecules).
Errors are one line naming the recipe's value: a missing ``datasets`` package, a split or
column that is not there (listing those that are), a Hub dataset that cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from latentebm.atomic import atomic_write
from latentebm.data import DataFileError, DataFormatError

HF_PREFIX = "hf:"
"""A task's data value that names a Hugging Face dataset (module docstring)."""
CACHE_VERSION = 1
_DATA_FILE_TYPES = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".arrow": "arrow",
    ".txt": "text",
}
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class HFSource:
    """A parsed ``hf:SOURCE?split=S&column=C`` value."""

    spec: str
    source: str
    split: str | None
    column: str | None


def is_hf_source(value: str) -> bool:
    """Whether a task's data value names a Hugging Face dataset."""
    return value.startswith(HF_PREFIX)


def parse(spec: str) -> HFSource:
    """Split ``hf:SOURCE?split=S&column=C`` (module docstring); unknown options are an error."""
    body = spec[len(HF_PREFIX) :]
    source, _, query = body.partition("?")
    if not source:
        raise DataFileError(f"{spec}: no dataset named after 'hf:'")
    options = parse_qs(query, keep_blank_values=True, strict_parsing=False) if query else {}
    unknown = sorted(set(options) - {"split", "column"})
    if unknown:
        raise DataFileError(f"{spec}: unknown option {', '.join(unknown)} (known: split, column)")
    split = options.get("split", [None])[-1] or None
    column = options.get("column", [None])[-1] or None
    return HFSource(spec, source, split, column)


def materialize(
    spec: str, default_columns: Sequence[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The text file of the column that ``spec`` names (module docstring).

    Args:
        spec: the recipe's value, ``hf:...``.
        default_columns: the columns tried, in order, when ``spec`` names none.
        cache_dir: where the file goes (default ``$XDG_CACHE_HOME/latentebm/hf``, ``~/.cache``).
    """
    parsed = parse(spec)
    dataset = _load(parsed)
    columns = list(dataset.column_names)
    wanted = [parsed.column] if parsed.column else list(default_columns)
    column = next((c for c in wanted if c in columns), None)
    if column is None:
        raise DataFormatError(
            f"{spec}: no column {' or '.join(map(repr, wanted))} (columns: {', '.join(columns)}); "
            "add ?column=NAME"
        )
    folder = Path(
        cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "latentebm" / "hf"
    ).expanduser()
    key = json.dumps([CACHE_VERSION, parsed.source, parsed.split, column, _fingerprint(dataset)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(parsed.source).name or "dataset")[:40]
    path = folder / f"{stem}-{column}-{digest}.txt"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        for value in dataset[column]:
            line = _WHITESPACE.sub(" ", "" if value is None else str(value)).strip()
            handle.write(f"{line}\n\n".encode())
    return path


def _load(parsed: HFSource) -> Any:
    """The ``datasets.Dataset`` of ``parsed``'s split."""
    try:
        import datasets
    except ImportError:
        raise DataFileError(
            f"{parsed.spec}: reading Hugging Face datasets needs the datasets package "
            "(pip install datasets)"
        ) from None
    local = Path(parsed.source).expanduser()
    try:
        if local.is_dir():
            loaded = datasets.load_from_disk(str(local))
        elif local.is_file():
            kind = _DATA_FILE_TYPES.get(local.suffix.lower())
            if kind is None:
                known = ", ".join(sorted(_DATA_FILE_TYPES))
                raise DataFormatError(f"{parsed.spec}: not a data file datasets reads ({known})")
            loaded = datasets.load_dataset(kind, data_files=str(local))
        elif local.is_absolute() or parsed.source.startswith("."):
            raise DataFileError(f"{parsed.spec}: no such folder or file {local}")
        else:  # a Hub name
            loaded = datasets.load_dataset(parsed.source)
    except (DataFileError, DataFormatError):
        raise
    except Exception as error:  # noqa: BLE001 - the library's many errors, as one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataFileError(f"{parsed.spec}: cannot load the dataset ({first})") from error
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if parsed.split is None and len(splits) == 1:
            return loaded[splits[0]]
        if parsed.split is None or parsed.split not in loaded:
            said = "names no split" if parsed.split is None else f"has no split {parsed.split!r}"
            raise DataFileError(
                f"{parsed.spec}: {said} (splits: {', '.join(splits)}); add ?split=NAME"
            )
        return loaded[parsed.split]
    if parsed.split is not None:
        raise DataFileError(f"{parsed.spec}: a dataset of one split; leave out ?split=")
    return loaded


def _fingerprint(dataset: Any) -> str:
    """The dataset's own content fingerprint (``datasets`` keeps one per table)."""
    value = getattr(dataset, "_fingerprint", None)
    return str(value) if value else f"{len(dataset)}:{dataset.column_names}"
