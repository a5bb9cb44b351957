#!/usr/bin/env python3
"""Store the Yahoo Answers documents of Yang et al. (2017) for latentebm.

Usage::

    python data_scripts/yahoo.py --out DIR --source SRC

``SRC`` is a directory holding ``yahoo.{train,valid,test}.txt`` (or ``.txt.gz``; also looked
for in ``SRC/yahoo`` and ``SRC/yahoo_data``), or a ``.zip`` / ``.tar[.gz]`` archive containing
them anywhere. There is no download: the corpus (100k/10k/10k documents sampled from Yahoo
Answers, 20k-word vocabulary) is distributed by the text-VAE papers' authors through file-hosting
links rather than from an authoritative URL (see docs/datasets.md), so ``--source`` is required.

Preprocessing: one document per line (the input format); surrounding whitespace stripped, inner
runs of whitespace collapsed to one space, blank lines skipped, and the whole-word token given by
``--unk-token`` (default ``_UNK``, the out-of-vocabulary marker of those files, if present)
replaced by ``<unk>``, which latentebm's word vocabulary treats as its unknown token. Case and
tokenization are otherwise kept as they are.

The number of documents is checked (100,000 / 10,000 / 10,000; ``--skip-count-check`` for other
versions) and the result is written as ``DIR/yahoo.{train,valid,test}.txt.gz`` (gzip, mtime 0).
Recipes expect ``yahoo/yahoo.train.txt.gz`` etc. under the data root (``$LATENTEBM_DATA``), so
use ``--out $LATENTEBM_DATA/yahoo``. Existing files with different content are never
overwritten.

Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tarfile
import zipfile
from pathlib import Path

SPLITS = ("train", "valid", "test")
EXPECTED_DOCS = {"train": 100000, "valid": 10000, "test": 10000}
"""Documents per split in the corpus of Yang et al. (2017)."""
UNK = "<unk>"


class YahooError(Exception):
    """Any failure of this script (reported as one line, exit code 1)."""


def file_name(split: str) -> str:
    """The uncompressed file name of a split, e.g. ``yahoo.train.txt``."""
    return f"yahoo.{split}.txt"


def _maybe_gunzip(name: str, data: bytes, where: str) -> bytes:
    if not name.endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise YahooError(f"cannot decompress {where}: {exc}") from exc


def read_source_dir(source: Path) -> dict[str, bytes]:
    """Read the raw bytes of each split from ``yahoo.*.txt`` or ``yahoo.*.txt.gz`` files."""
    out: dict[str, bytes] = {}
    dirs = [source, source / "yahoo", source / "yahoo_data"]
    for split in SPLITS:
        name = file_name(split)
        for d in dirs:
            for cand in (d / name, d / f"{name}.gz"):
                if cand.is_file():
                    out[split] = _maybe_gunzip(cand.name, cand.read_bytes(), str(cand))
                    break
            if split in out:
                break
        else:
            raise YahooError(f"{name} or {name}.gz not found in {source}")
    return out


def read_archive(path: Path) -> dict[str, bytes]:
    """Read ``yahoo.{split}.txt[.gz]`` from a ``.zip`` or ``.tar[.gz]`` archive (any folder)."""
    wanted = {}
    for split in SPLITS:
        wanted[file_name(split)] = split
        wanted[file_name(split) + ".gz"] = split
    out: dict[str, bytes] = {}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for member in sorted(zf.namelist()):
                    base = Path(member).name
                    if member.startswith("__MACOSX/") or base not in wanted:
                        continue
                    split = wanted[base]
                    if split not in out:
                        out[split] = _maybe_gunzip(base, zf.read(member), f"{path}:{member}")
        else:
            with tarfile.open(path, "r:*") as tar:
                for info in tar:
                    base = Path(info.name).name
                    if not info.isfile() or base not in wanted or wanted[base] in out:
                        continue
                    f = tar.extractfile(info)
                    if f is not None:
                        out[wanted[base]] = _maybe_gunzip(base, f.read(), f"{path}:{info.name}")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise YahooError(f"cannot read archive {path}: {exc}") from exc
    missing = [file_name(s) for s in SPLITS if s not in out]
    if missing:
        raise YahooError(f"{path} lacks {', '.join(missing)}")
    return out


def normalize(data: bytes, where: str, unk_token: str | None = "_UNK") -> list[str]:
    """Documents of one file: stripped, whitespace collapsed, blank lines skipped.

    Whole-word occurrences of ``unk_token`` become ``<unk>`` (``None`` or ``""``: no mapping).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YahooError(f"{where} is not UTF-8: {exc}") from exc
    docs = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if unk_token:
            words = [UNK if w == unk_token else w for w in words]
        docs.append(" ".join(words))
    return docs


def check_counts(docs: dict[str, list[str]]) -> None:
    """Raise :class:`YahooError` unless every split has its expected number of documents."""
    bad = [
        f"{file_name(s)} has {len(docs[s])} documents, expected {EXPECTED_DOCS[s]}"
        for s in SPLITS
        if len(docs[s]) != EXPECTED_DOCS[s]
    ]
    if bad:
        raise YahooError("count mismatch: " + "; ".join(bad) + " (--skip-count-check to accept)")


def write_outputs(data: dict[str, bytes], out: Path) -> list[Path]:
    """Write ``out/yahoo.{split}.txt.gz`` (gzip level 9, mtime 0).

    An existing file with the same uncompressed content is left alone; one with different (or
    unreadable) content raises :class:`YahooError` before anything is written.
    """
    targets = {s: out / f"{file_name(s)}.gz" for s in SPLITS}
    todo = []
    for split, path in targets.items():
        if path.exists():
            try:
                same = gzip.decompress(path.read_bytes()) == data[split]
            except (OSError, EOFError):
                same = False
            if not same:
                raise YahooError(
                    f"{path} exists with different content; refusing to overwrite it "
                    "(delete it first)"
                )
            print(f"{path} already present", file=sys.stderr)
        else:
            todo.append(split)
    out.mkdir(parents=True, exist_ok=True)
    for split in todo:
        path = targets[split]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(gzip.compress(data[split], compresslevel=9, mtime=0))
        os.replace(tmp, path)
        print(f"wrote {path}", file=sys.stderr)
    return [targets[s] for s in SPLITS]


def fetch(
    out: Path,
    source: Path,
    unk_token: str | None = "_UNK",
    skip_count_check: bool = False,
) -> list[Path]:
    """Read, check, normalize and write the three splits; return the output paths."""
    if source.is_dir():
        raw = read_source_dir(source)
    elif source.is_file():
        raw = read_archive(source)
    else:
        raise YahooError(f"source {source} does not exist")
    docs = {s: normalize(raw[s], file_name(s), unk_token) for s in SPLITS}
    if not skip_count_check:
        check_counts(docs)
    for split in SPLITS:
        if not docs[split]:
            raise YahooError(f"no documents in {file_name(split)}")
    data = {s: "".join(d + "\n" for d in docs[s]).encode("utf-8") for s in SPLITS}
    return write_outputs(data, out)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="Store the Yahoo Answers corpus of Yang et al. (2017) as "
        "yahoo.{train,valid,test}.txt.gz (one document per line)."
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--source",
        type=Path,
        required=True,
        help="directory with yahoo.{train,valid,test}.txt[.gz], or a .zip/.tar.gz holding them "
        "(required: there is no authoritative download URL, see docs/datasets.md)",
    )
    parser.add_argument(
        "--unk-token",
        default="_UNK",
        help="whole-word token mapped to <unk> (default: _UNK; '' for none)",
    )
    parser.add_argument(
        "--skip-count-check",
        action="store_true",
        help=f"accept document counts other than {EXPECTED_DOCS}",
    )
    args = parser.parse_args(argv)
    try:
        fetch(args.out, args.source, args.unk_token, args.skip_count_check)
    except YahooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
