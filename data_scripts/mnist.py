#!/usr/bin/env python3
"""Fetch MNIST (the four IDX files) for latentebm.

Usage::

    python data_scripts/mnist.py --out DIR                # download
    python data_scripts/mnist.py --out DIR --source SRC   # local folder with the four files

The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (plain or ``.gz`` in ``SRC``),
downloaded from the mirror torchvision uses (``ossci-datasets.s3.amazonaws.com/mnist``), then
Yann LeCun's page. Checked: the IDX headers (magic ``0x0803`` images ``(n, 28, 28)``, ``0x0801``
labels ``(n,)`` in 0-9, matching counts), the counts 60,000 / 10,000 (``--skip-count-check``)
and the SHA-256 of each file's uncompressed content (``--skip-checksum``).

Written to ``DIR`` as ``NAME.gz`` (gzip level 9, mtime 0). Recipes expect them in ``mnist/``
under the data root (``$LATENTEBM_DATA``), so use ``--out $LATENTEBM_DATA/mnist``. Existing
files with different content are never overwritten.

Standard library only.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import tempfile
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import DataScriptError  # noqa: E402

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}
SHA256 = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
"""SHA-256 of the *uncompressed* files (so a re-compressed copy checks too)."""
IMAGE_MAGIC, LABEL_MAGIC = 0x0803, 0x0801
SIDE = 28


def read_local(source: Path) -> dict[str, bytes]:
    """The uncompressed content of the four files in ``source`` (each plain or ``.gz``)."""
    return _common.read_split_files(source, [source], FILES)


def download_all(mirrors: tuple[str, ...] = MIRRORS) -> dict[str, bytes]:
    """The four files downloaded (from the first mirror that serves each) and decompressed."""
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, name in FILES.items():
            errors = []
            for base in mirrors:
                try:
                    path = _common.download(base + name + ".gz", Path(tmp) / f"{name}.gz")
                except DataScriptError as exc:
                    errors.append(str(exc))
                    continue
                out[key] = _common.maybe_gunzip(path.name, path.read_bytes(), base + name)
                break
            else:
                raise DataScriptError("; ".join(errors))
    return out


def idx_header(data: bytes, name: str, magic: int, ndim: int) -> tuple[int, ...]:
    """The dimensions of an IDX file with the given magic number; checks the byte count."""
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataScriptError(f"{name}: truncated IDX header")
    got = struct.unpack(">I", data[:4])[0]
    if got != magic:
        raise DataScriptError(f"{name}: IDX magic number 0x{got:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = 1
    for d in dims:
        size *= d
    if len(data) - header != size:
        raise DataScriptError(
            f"{name}: IDX dimensions {dims} need {size} data bytes, found {len(data) - header}"
        )
    return dims


def verify(data: dict[str, bytes], skip_count_check: bool, skip_checksum: bool) -> dict[str, int]:
    """Check headers, labels, counts and checksums; returns the number of images per split."""
    counts: dict[str, int] = {}
    for split in ("train", "test"):
        images, labels = FILES[f"{split}_images"], FILES[f"{split}_labels"]
        n, h, w = idx_header(data[f"{split}_images"], images, IMAGE_MAGIC, 3)
        (n_labels,) = idx_header(data[f"{split}_labels"], labels, LABEL_MAGIC, 1)
        if (h, w) != (SIDE, SIDE):
            raise DataScriptError(f"{images}: images are {h}x{w}, expected {SIDE}x{SIDE}")
        if n_labels != n:
            raise DataScriptError(f"{labels}: {n_labels} labels for {n} images in {images}")
        if any(v > 9 for v in data[f"{split}_labels"][8:]):
            raise DataScriptError(f"{labels}: labels outside 0-9")
        counts[split] = n
    if not skip_count_check:
        _common.check_counts(counts, EXPECTED_COUNTS, lambda s: f"{s} split", "images")
    if not skip_checksum:
        bad = [
            f"{FILES[k]} sha256 {hashlib.sha256(v).hexdigest()[:12]}..., expected "
            f"{SHA256[k][:12]}..."
            for k, v in data.items()
            if hashlib.sha256(v).hexdigest() != SHA256[k]
        ]
        if bad:
            raise DataScriptError(
                "checksum mismatch: " + "; ".join(bad) + " (--skip-checksum to accept)"
            )
    return counts


def fetch(
    out: Path,
    source: Path | None = None,
    mirrors: tuple[str, ...] = MIRRORS,
    skip_count_check: bool = False,
    skip_checksum: bool = False,
) -> list[Path]:
    """Read (or download), check and write the four files; returns the written paths."""
    if source is None:
        data = download_all(mirrors)
    elif source.is_dir():
        data = read_local(source)
    else:
        raise DataScriptError(f"source {source} is not a folder with the four MNIST files")
    counts = verify(data, skip_count_check, skip_checksum)
    for split, n in counts.items():
        print(f"{split}: {n} images", file=sys.stderr)
    return _common.write_gz_files(out, {f"{FILES[k]}.gz": data[k] for k in FILES})


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _common.make_parser(
        "Write the four MNIST IDX files (gzip) to --out.",
        "local folder with the four IDX files (plain or .gz); default: download",
    )
    _common.add_skip_count_check(parser, "accept image counts other than 60,000 / 10,000")
    parser.add_argument(
        "--skip-checksum", action="store_true", help="accept files whose SHA-256 differs"
    )
    args = parser.parse_args(argv)
    return _common.run(
        lambda: fetch(
            args.out,
            args.source,
            skip_count_check=args.skip_count_check,
            skip_checksum=args.skip_checksum,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
