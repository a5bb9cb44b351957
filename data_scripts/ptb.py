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

import argparse
import gzip
import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
SPLITS = ("train", "valid", "test")
# MD5 of the uncompressed text files (simple-examples/data/ptb.{split}.txt).
EXPECTED_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}


class PTBError(Exception):
    """Any failure of this script (reported as one line, exit code 1)."""


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
    out: dict[str, bytes] = {}
    dirs = [source, source / "simple-examples" / "data"]
    for split in SPLITS:
        name = file_name(split)
        for d in dirs:
            plain, packed = d / name, d / f"{name}.gz"
            if plain.is_file():
                out[split] = plain.read_bytes()
                break
            if packed.is_file():
                try:
                    out[split] = gzip.decompress(packed.read_bytes())
                except (OSError, EOFError) as exc:
                    raise PTBError(f"cannot decompress {packed}: {exc}") from exc
                break
        else:
            raise PTBError(f"{name} or {name}.gz not found in {source}")
    return out


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
        raise PTBError(f"cannot read tarball {tar_path}: {exc}") from exc
    missing = [k for k, s in wanted.items() if s not in out]
    if missing:
        raise PTBError(f"{tar_path} lacks {', '.join(missing)}")
    return out


def download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` (a file path) and return it."""
    print(f"downloading {url} ...", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
    except OSError as exc:
        raise PTBError(f"download of {url} failed: {exc}") from exc
    return dest


def verify(data: dict[str, bytes]) -> None:
    """Raise :class:`PTBError` unless every split has its expected MD5."""
    bad = []
    for split in SPLITS:
        got = md5_hex(data[split])
        if got != EXPECTED_MD5[split]:
            bad.append(f"{file_name(split)} has MD5 {got}, expected {EXPECTED_MD5[split]}")
    if bad:
        raise PTBError("checksum mismatch: " + "; ".join(bad))


def write_outputs(data: dict[str, bytes], out: Path) -> list[Path]:
    """Write ``out/ptb.{split}.txt.gz`` (gzip level 9, mtime 0).

    An existing file with the same uncompressed content is left alone; one with different (or
    unreadable) content raises :class:`PTBError` before anything is written.
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
                raise PTBError(
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


def fetch(out: Path, source: Path | None = None, url: str = URL) -> list[Path]:
    """Read (or download), verify and write the three splits; return the output paths."""
    if source is None:
        with tempfile.TemporaryDirectory() as tmp:
            data = read_tarball(download(url, Path(tmp) / "simple-examples.tgz"))
    elif source.is_dir():
        data = read_source_dir(source)
    elif source.is_file():
        data = read_tarball(source)
    else:
        raise PTBError(f"source {source} does not exist")
    verify(data)
    return write_outputs(data, out)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="Fetch the Penn Treebank LM data (Mikolov) as ptb.{train,valid,test}.txt.gz."
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="local directory with ptb.*.txt or ptb.*.txt.gz (or simple-examples.tgz); "
        "default: download " + URL,
    )
    args = parser.parse_args(argv)
    try:
        fetch(args.out, args.source)
    except PTBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
