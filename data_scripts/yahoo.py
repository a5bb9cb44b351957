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

import sys
import tarfile
import zipfile
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import DataScriptError  # noqa: E402

SPLITS = ("train", "valid", "test")
OPTIONAL_SPLITS = ("valid", "test")
"""Splits a user may not have: each is written if given; without valid the recipe holds out a
share of train (``task.valid=null task.valid_fraction=0.05``), without test it has none."""
EXPECTED_DOCS = {"train": 100000, "valid": 10000, "test": 10000}
"""Documents per split in the corpus of Yang et al. (2017)."""
UNK = "<unk>"


def file_name(split: str) -> str:
    """The uncompressed file name of a split, e.g. ``yahoo.train.txt``."""
    return f"yahoo.{split}.txt"


def read_source_dir(source: Path) -> dict[str, bytes]:
    """Read the raw bytes of each split from ``yahoo.*.txt`` or ``yahoo.*.txt.gz`` files."""
    dirs = [source, source / "yahoo", source / "yahoo_data"]
    names = {s: file_name(s) for s in SPLITS}
    return _common.read_split_files(source, dirs, names, optional=OPTIONAL_SPLITS)


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
                        out[split] = _common.maybe_gunzip(base, zf.read(member), f"{path}:{member}")
        else:
            with tarfile.open(path, "r:*") as tar:
                for info in tar:
                    base = Path(info.name).name
                    if not info.isfile() or base not in wanted or wanted[base] in out:
                        continue
                    f = tar.extractfile(info)
                    if f is not None:
                        out[wanted[base]] = _common.maybe_gunzip(
                            base, f.read(), f"{path}:{info.name}"
                        )
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataScriptError(f"cannot read archive {path}: {exc}") from exc
    missing = [file_name(s) for s in SPLITS if s not in out and s not in OPTIONAL_SPLITS]
    if missing:
        raise DataScriptError(f"{path} lacks {', '.join(missing)}")
    return out


def normalize(data: bytes, where: str, unk_token: str | None = "_UNK") -> list[str]:
    """Documents of one file: stripped, whitespace collapsed, blank lines skipped.

    Whole-word occurrences of ``unk_token`` become ``<unk>`` (``None`` or ``""``: no mapping).
    """
    docs = []
    for line in _common.decode_utf8(data, where).splitlines():
        words = line.split()
        if not words:
            continue
        if unk_token:
            words = [UNK if w == unk_token else w for w in words]
        docs.append(" ".join(words))
    return docs


def fetch(
    out: Path,
    source: Path,
    unk_token: str | None = "_UNK",
    skip_count_check: bool = False,
) -> list[Path]:
    """Read, check, normalize and write the splits given (train, and valid and test where the
    source has them: :data:`OPTIONAL_SPLITS`); return the output paths."""
    raw = _common.read_source(source, read_archive, read_source_dir)
    given = [s for s in SPLITS if s in raw]
    docs = {s: normalize(raw[s], file_name(s), unk_token) for s in given}
    if not skip_count_check:
        counts = {s: len(docs[s]) for s in given}
        _common.check_counts(counts, EXPECTED_DOCS, file_name, "documents")
    for split in given:
        if not docs[split]:
            raise DataScriptError(f"no documents in {file_name(split)}")
    for split in SPLITS:
        if split not in raw:
            hint = (
                "run recipes/yahoo.yaml with task.valid=null task.valid_fraction=0.05"
                if split == "valid"
                else "run recipes/yahoo.yaml with task.test=null (no test split)"
            )
            print(f"note: {source} has no {file_name(split)}; {hint}", file=sys.stderr)
    data = {f"{file_name(s)}.gz": _common.text_lines(docs[s]) for s in given}
    return _common.write_gz_files(out, data)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _common.make_parser(
        "Store the Yahoo Answers corpus of Yang et al. (2017) as "
        "yahoo.{train,valid,test}.txt.gz (one document per line).",
        "directory with yahoo.{train,valid,test}.txt[.gz], or a .zip/.tar.gz holding them "
        "(required: there is no authoritative download URL, see docs/datasets.md)",
        source_required=True,
    )
    parser.add_argument(
        "--unk-token",
        default="_UNK",
        help="whole-word token mapped to <unk> (default: _UNK; '' for none)",
    )
    _common.add_skip_count_check(parser, f"accept document counts other than {EXPECTED_DOCS}")
    args = parser.parse_args(argv)
    return _common.run(lambda: fetch(args.out, args.source, args.unk_token, args.skip_count_check))


if __name__ == "__main__":
    sys.exit(main())
