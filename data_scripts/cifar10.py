#!/usr/bin/env python3
"""Fetch CIFAR-10 (the *binary* version) for latentebm.

Usage::

    python data_scripts/cifar10.py --out DIR                # download cifar-10-binary.tar.gz
    python data_scripts/cifar10.py --out DIR --source SRC   # local archive or extracted folder

``SRC`` is ``cifar-10-binary.tar.gz``, or a folder holding it, or the extracted
``cifar-10-batches-bin/`` (or a folder holding that). The binary version is used so that no
pickle is ever loaded: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``, each
record one label byte (0-9) and 3,072 pixel bytes (32x32 R, G, B planes).

Checked: all six files present, whole records, labels in 0-9, 10,000 records per file
(``--skip-count-check`` to accept other counts). Written to ``DIR/cifar-10-binary.tar.gz``: the
source archive copied byte for byte, or (from an extracted folder) a new archive with the files
under ``cifar-10-batches-bin/`` (mtime 0, sorted). Recipes expect ``cifar10/`` under the data
root (``$LATENTEBM_DATA``), so use ``--out $LATENTEBM_DATA/cifar10``. An existing file with
different content is never overwritten.

Standard library only.
"""

from __future__ import annotations

import gzip
import io
import sys
import tarfile
import tempfile
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import COUNT_CHECK_HINT, DataScriptError  # noqa: E402

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
BATCHES = (*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin")
EXTRAS = ("batches.meta.txt", "readme.html")
RECORD = 1 + 3 * 32 * 32
RECORDS_PER_FILE = 10_000


def read_archive(path: Path) -> dict[str, bytes]:
    """The batch files (and extras) of a CIFAR-10 binary tar archive, by base name."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in (*BATCHES, *EXTRAS):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[base] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataScriptError(f"cannot read {path} as a tar archive: {exc}") from exc
    return files


def read_folder(folder: Path) -> dict[str, bytes]:
    """The batch files (and extras) of an extracted ``cifar-10-batches-bin`` folder."""
    return {n: (folder / n).read_bytes() for n in (*BATCHES, *EXTRAS) if (folder / n).is_file()}


def locate(source: Path) -> tuple[str, Path]:
    """``("archive", path)`` or ``("folder", path)`` for a ``--source``."""
    if source.is_file():
        return "archive", source
    if not source.is_dir():
        raise DataScriptError(f"source {source} does not exist")
    if (source / ARCHIVE).is_file():
        return "archive", source / ARCHIVE
    if (source / FOLDER).is_dir():
        return "folder", source / FOLDER
    return "folder", source


def verify(files: dict[str, bytes], where: object, skip_count_check: bool) -> dict[str, int]:
    """Check the six batch files; returns the records per file."""
    missing = [n for n in BATCHES if n not in files]
    if missing:
        raise DataScriptError(
            f"{where} lacks {', '.join(missing)} (is it the binary version, {ARCHIVE}?)"
        )
    counts: dict[str, int] = {}
    for name in BATCHES:
        data = files[name]
        if len(data) % RECORD:
            raise DataScriptError(
                f"{where}: {name} has {len(data)} bytes, not a whole number of {RECORD}-byte "
                "records"
            )
        labels = data[::RECORD]
        if any(b > 9 for b in labels):
            raise DataScriptError(f"{where}: {name} has labels outside 0-9")
        counts[name] = len(data) // RECORD
    if not skip_count_check:
        bad = [f"{n} has {c} records" for n, c in counts.items() if c != RECORDS_PER_FILE]
        if bad:
            raise DataScriptError(
                f"count mismatch: {'; '.join(bad)}, expected {RECORDS_PER_FILE}{COUNT_CHECK_HINT}"
            )
    return counts


def build_archive(files: dict[str, bytes]) -> bytes:
    """A reproducible ``.tar.gz`` with the files under ``cifar-10-batches-bin/`` (sorted,
    mtime 0)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)


def fetch(
    out: Path, source: Path | None = None, url: str = URL, skip_count_check: bool = False
) -> list[Path]:
    """Read (or download), check and write ``out/cifar-10-binary.tar.gz``."""
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            kind, path = "archive", _common.download(url, Path(tmp) / ARCHIVE)
        else:
            kind, path = locate(source)
        files = read_archive(path) if kind == "archive" else read_folder(path)
        counts = verify(files, path, skip_count_check)
        n_train = sum(c for n, c in counts.items() if n.startswith("data_batch"))
        print(f"train: {n_train} images, test: {counts['test_batch.bin']}", file=sys.stderr)
        if kind == "folder":
            path = Path(tmp) / ARCHIVE
            path.write_bytes(build_archive(files))
        return [_common.install(path, out / ARCHIVE)]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _common.make_parser(
        f"Write CIFAR-10 (binary version) as {ARCHIVE} to --out.",
        f"local {ARCHIVE}, a folder holding it, or the extracted {FOLDER}/; default: download "
        + URL,
    )
    _common.add_skip_count_check(parser, f"accept files without {RECORDS_PER_FILE} records")
    args = parser.parse_args(argv)
    return _common.run(lambda: fetch(args.out, args.source, skip_count_check=args.skip_count_check))


if __name__ == "__main__":
    sys.exit(main())
