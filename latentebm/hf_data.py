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
``column`` defaults to the task's (``text`` for text, ``smiles`` or ``SMILES`` for molecules)
and must hold text; empty or missing values are skipped, with a warning that counts them. A
relative local path is looked for in the working directory, then under the data root.
Errors are one line naming the recipe's value: a missing ``datasets`` package, a split or
column that is not there (listing those that are), a Hub dataset that cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from latentebm.atomic import atomic_write
from latentebm.data import DataFileError, DataFormatError
from latentebm.data import data_root as data_root_of

logger = logging.getLogger(__name__)

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
    spec: str,
    default_columns: Sequence[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    data_root: str | os.PathLike[str] | None = None,
) -> Path:
    """The text file of the column that ``spec`` names (module docstring).

    Args:
        spec: the recipe's value, ``hf:...``.
        default_columns: the columns tried, in order, when ``spec`` names none.
        cache_dir: where the file goes (default ``$XDG_CACHE_HOME/latentebm/hf``, ``~/.cache``).
        data_root: where a relative local path is also looked for (default
            ``$LATENTEBM_DATA``), after the working directory.
    """
    parsed = parse(spec)
    dataset = _load(parsed, data_root)
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
    values = dataset[column]
    if values and not isinstance(next((v for v in values if v is not None), ""), str):
        kind = type(next(v for v in values if v is not None)).__name__
        raise DataFormatError(f"{spec}: column {column!r} holds {kind}, not text")
    empty = 0
    with atomic_write(path) as handle:
        for value in values:
            line = _WHITESPACE.sub(" ", "" if value is None else value).strip()
            empty += not line
            handle.write(f"{line}\n\n".encode())
    if empty:
        logger.warning("%s: %d of %d rows are empty or missing: skipped", spec, empty, len(values))
    return path


def _load(parsed: HFSource, data_root: str | os.PathLike[str] | None = None) -> Any:
    """The ``datasets.Dataset`` of ``parsed``'s split."""
    try:
        import datasets
    except ImportError:
        raise DataFileError(
            f"{parsed.spec}: reading Hugging Face datasets needs the datasets package "
            "(pip install datasets)"
        ) from None
    local = _local_path(parsed.source, data_root)
    try:
        if local.is_dir():
            loaded = datasets.load_from_disk(str(local))
        elif local.is_file():
            kind = _DATA_FILE_TYPES.get(local.suffix.lower())
            if kind is None:
                known = ", ".join(sorted(_DATA_FILE_TYPES))
                raise DataFormatError(f"{parsed.spec}: not a data file datasets reads ({known})")
            loaded = datasets.load_dataset(kind, data_files=str(local))
        elif _looks_local(parsed.source):
            raise DataFileError(f"{parsed.spec}: no such folder or file {local}")
        else:  # a Hub name: data files only (datasets >= 4 runs no loading scripts)
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


def _looks_local(source: str) -> bool:
    """A path rather than a Hub name: absolute, relative with ``.``/``~``, or a data file."""
    return (
        source.startswith(("/", ".", "~"))
        or Path(source).suffix.lower() in _DATA_FILE_TYPES
        or source.count("/") > 1
    )


def _local_path(source: str, data_root: str | os.PathLike[str] | None) -> Path:
    """``source`` as a path: as given (absolute, or relative to the working directory) if it
    exists there, else relative to the data root (as other task paths) if it exists there."""
    path = Path(source).expanduser()
    if path.exists() or path.is_absolute():
        return path
    root = data_root_of(data_root)
    if root is not None and (root / path).exists():
        return root / path
    return path


def _fingerprint(dataset: Any) -> str:
    """The dataset's own content fingerprint (``datasets`` keeps one per table)."""
    value = getattr(dataset, "_fingerprint", None)
    return str(value) if value else f"{len(dataset)}:{dataset.column_names}"
