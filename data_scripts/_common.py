"""Helpers shared by the data scripts (``ptb.py``, ``snli.py``, ``yahoo.py``, ``zinc250k.py``).

Not a script itself. The scripts import it as ``_common``: run as ``python data_scripts/X.py``,
their folder is ``sys.path[0]``; loaded as a module by file path (as the tests do), each script
first puts its own folder on ``sys.path``.

What is shared: the error type and the command-line conventions (``--out``, ``--source``,
``--skip-count-check``; failures reported as one ``error: ...`` line with exit code 1), reading
a local ``--source`` or downloading into a temporary folder, reading plain or gzipped files,
count checks, and writing gzip files atomically with mtime 0 without ever overwriting a file
that holds different content.

Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

COUNT_CHECK_HINT = " (--skip-count-check to accept)"
"""Appended to every count-mismatch message."""


class DataScriptError(Exception):
    """Any failure of a data script (reported as one line, exit code 1)."""


# ----------------------------------------------------------------------------- command line


def make_parser(
    description: str, source_help: str, source_required: bool = False
) -> argparse.ArgumentParser:
    """An argument parser with ``--out`` (output directory) and ``--source`` (a path)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--source", type=Path, default=None, required=source_required, help=source_help
    )
    return parser


def add_skip_count_check(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add the ``--skip-count-check`` flag (accept counts other than the expected ones)."""
    parser.add_argument("--skip-count-check", action="store_true", help=help_text)


def run(action: Callable[[], object]) -> int:
    """Call ``action``; return exit code 0, or 1 after printing a :class:`DataScriptError` as
    one ``error: ...`` line on stderr."""
    try:
        action()
    except DataScriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- reading


def download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` (a file path) and return it."""
    print(f"downloading {url} ...", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
    except OSError as exc:
        raise DataScriptError(f"download of {url} failed: {exc}") from exc
    return dest


def read_source(
    source: Path | None,
    read_file: Callable[[Path], T],
    read_dir: Callable[[Path], T] | None = None,
    url: str | None = None,
    download_name: str = "download",
) -> T:
    """Read ``--source``: ``read_dir(source)`` for a directory (when ``read_dir`` is given),
    ``read_file(source)`` for a file; with no source, ``read_file`` of ``url`` downloaded as
    ``download_name`` into a temporary folder. Anything else raises :class:`DataScriptError`
    (``source ... does not exist``)."""
    if source is None:
        if url is None:
            raise ValueError("no source and no URL to download from")
        with tempfile.TemporaryDirectory() as tmp:
            return read_file(download(url, Path(tmp) / download_name))
    if read_dir is not None and source.is_dir():
        return read_dir(source)
    if source.is_file():
        return read_file(source)
    raise DataScriptError(f"source {source} does not exist")


def maybe_gunzip(name: str, data: bytes, where: object) -> bytes:
    """``data`` decompressed if ``name`` ends with ``.gz``, else unchanged; a corrupt gzip
    stream raises :class:`DataScriptError` (``cannot decompress {where}: ...``)."""
    if not name.endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise DataScriptError(f"cannot decompress {where}: {exc}") from exc


def read_split_files(
    source: Path,
    dirs: Sequence[Path],
    names: Mapping[str, str],
    optional: Sequence[str] = (),
) -> dict[str, bytes]:
    """For each ``key: name`` of ``names``, the content of the first of ``d/name`` or
    ``d/name.gz`` (decompressed) over the folders ``dirs``, in order; a name found nowhere
    raises :class:`DataScriptError` (``... not found in {source}``), unless its key is in
    ``optional`` (then it is left out of the result)."""
    out: dict[str, bytes] = {}
    for key, name in names.items():
        found = (c for d in dirs for c in (d / name, d / f"{name}.gz") if c.is_file())
        path = next(found, None)
        if path is None and key in optional:
            continue
        if path is None:
            raise DataScriptError(f"{name} or {name}.gz not found in {source}")
        out[key] = maybe_gunzip(path.name, path.read_bytes(), path)
    return out


def decode_utf8(data: bytes, where: object) -> str:
    """``data`` decoded as UTF-8; invalid bytes raise :class:`DataScriptError`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataScriptError(f"{where} is not UTF-8: {exc}") from exc


# ----------------------------------------------------------------------------- checking


def check_counts(
    counts: Mapping[str, int],
    expected: Mapping[str, int],
    label: Callable[[str], str],
    unit: str,
) -> None:
    """Raise :class:`DataScriptError` unless ``counts[key] == expected[key]`` for every key of
    ``counts``; the message names each mismatch as ``{label(key)} has N {unit}, expected M``."""
    bad = [
        f"{label(k)} has {n} {unit}, expected {expected[k]}"
        for k, n in counts.items()
        if n != expected[k]
    ]
    if bad:
        raise DataScriptError("count mismatch: " + "; ".join(bad) + COUNT_CHECK_HINT)


# ----------------------------------------------------------------------------- writing


def text_lines(lines: Iterable[str]) -> bytes:
    """UTF-8 bytes of ``lines``, each ended by ``\\n``."""
    return "".join(line + "\n" for line in lines).encode("utf-8")


def write_gz_files(out: Path, data: Mapping[str, bytes]) -> list[Path]:
    """Write each ``name: content`` of ``data`` as ``out/name`` (gzip level 9, mtime 0, via a
    temporary file renamed into place); return the paths in the order of ``data``.

    An existing file with the same uncompressed content is left alone; one with different (or
    unreadable) content raises :class:`DataScriptError` before anything is written.
    """
    targets = {name: out / name for name in data}
    todo = []
    for name, path in targets.items():
        if path.exists():
            try:
                same = gzip.decompress(path.read_bytes()) == data[name]
            except (OSError, EOFError):
                same = False
            if not same:
                raise DataScriptError(
                    f"{path} exists with different content; refusing to overwrite it "
                    "(delete it first)"
                )
            print(f"{path} already present", file=sys.stderr)
        else:
            todo.append(name)
    out.mkdir(parents=True, exist_ok=True)
    for name in todo:
        path = targets[name]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(gzip.compress(data[name], compresslevel=9, mtime=0))
        os.replace(tmp, path)
        print(f"wrote {path}", file=sys.stderr)
    return list(targets.values())


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def install(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` via a temporary file renamed into place; an identical ``dest``
    is left alone, a different one raises :class:`DataScriptError`."""
    if dest.exists():
        if dest.stat().st_size == src.stat().st_size and sha256_file(dest) == sha256_file(src):
            print(f"{dest} already present", file=sys.stderr)
            return dest
        raise DataScriptError(
            f"{dest} exists with different content; refusing to overwrite it (delete it first)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    print(f"wrote {dest}", file=sys.stderr)
    return dest
