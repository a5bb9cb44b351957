#!/usr/bin/env python3
"""Fetch Mikolov's Penn Treebank language-modelling data and store it for latentebm.

Usage::

    python data_scripts/ptb.py --out DIR                # download simple-examples.tgz
    python data_scripts/ptb.py --out DIR --source SRC   # local copy: a directory holding
                                                        # ptb.{train,valid,test}.txt[.gz],
                                                        # or simple-examples.tgz itself

The uncompressed files are checked against known MD5s and written as
``DIR/ptb.{train,valid,test}.txt.gz`` (gzip, mtime 0). Recipes expect them at
``ptb/ptb.train.txt.gz`` etc. under the data root (``$LATENTEBM_DATA``), so use
``--out $LATENTEBM_DATA/ptb``. Existing files with different content are never overwritten.

Standard library only.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import DataScriptError  # noqa: E402

URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
SPLITS = ("train", "valid", "test")
# MD5 of the uncompressed text files (simple-examples/data/ptb.{split}.txt).
EXPECTED_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}


def md5_hex(data: bytes) -> str:
    """MD5 hex digest of ``data``."""
    return hashlib.md5(data).hexdigest()


def file_name(split: str) -> str:
    """The uncompressed file name of a split, e.g. ``ptb.train.txt``."""
    return f"ptb.{split}.txt"


def read_source_dir(source: Path) -> dict[str, bytes]:
    """Read the uncompressed text of each split from ``ptb.*.txt`` or ``ptb.*.txt.gz`` files.

    Also looks in ``source/simple-examples/data`` (an extracted tarball).
    """
    dirs = [source, source / "simple-examples" / "data"]
    return _common.read_split_files(source, dirs, {s: file_name(s) for s in SPLITS})


def read_tarball(tar_path: Path) -> dict[str, bytes]:
    """Extract ``simple-examples/data/ptb.{train,valid,test}.txt`` from the tarball."""
    wanted = {f"simple-examples/data/{file_name(s)}": s for s in SPLITS}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                key = member.name.removeprefix("./")
                if key in wanted and member.isfile():
                    f = tar.extractfile(member)
                    if f is not None:
                        out[wanted[key]] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataScriptError(f"cannot read tarball {tar_path}: {exc}") from exc
    missing = [k for k, s in wanted.items() if s not in out]
    if missing:
        raise DataScriptError(f"{tar_path} lacks {', '.join(missing)}")
    return out


def verify(data: dict[str, bytes]) -> None:
    """Raise :class:`DataScriptError` unless every split has its expected MD5."""
    bad = []
    for split in SPLITS:
        got = md5_hex(data[split])
        if got != EXPECTED_MD5[split]:
            bad.append(f"{file_name(split)} has MD5 {got}, expected {EXPECTED_MD5[split]}")
    if bad:
        raise DataScriptError("checksum mismatch: " + "; ".join(bad))


def fetch(out: Path, source: Path | None = None, url: str = URL) -> list[Path]:
    """Read (or download), verify and write the three splits; return the output paths."""
    data = _common.read_source(source, read_tarball, read_source_dir, url, "simple-examples.tgz")
    verify(data)
    return _common.write_gz_files(out, {f"{file_name(s)}.gz": data[s] for s in SPLITS})


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _common.make_parser(
        "Fetch the Penn Treebank LM data (Mikolov) as ptb.{train,valid,test}.txt.gz.",
        "local directory with ptb.*.txt or ptb.*.txt.gz (or simple-examples.tgz); "
        "default: download " + URL,
    )
    args = parser.parse_args(argv)
    return _common.run(lambda: fetch(args.out, args.source))


if __name__ == "__main__":
    sys.exit(main())
