#!/usr/bin/env python3
"""Fetch SVHN (cropped digits, ``train_32x32.mat`` and ``test_32x32.mat``) for latentebm.

Usage::

    python data_scripts/svhn.py --out DIR                # download both files
    python data_scripts/svhn.py --out DIR --source SRC   # local folder with both files

Source: http://ufldl.stanford.edu/housenumbers/ (format 2, cropped digits; the ``extra`` set is
not used, as in Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based
Prior Model", which trains on the 73,257 training images). Each file is a MATLAB file with
``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) in 1-10 (10 is digit 0).

Checked with ``scipy.io.loadmat`` (scipy needed): the arrays' shapes and labels, and the counts
73,257 / 26,032 (``--skip-count-check`` to accept others). Copied byte for byte to ``DIR``;
recipes expect ``svhn/`` under the data root (``$LATENTEBM_DATA``), so use
``--out $LATENTEBM_DATA/svhn``. An existing file with different content is never overwritten.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import DataScriptError  # noqa: E402

BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
EXPECTED_COUNTS = {"train": 73_257, "test": 26_032}


def count_images(path: Path) -> int:
    """Number of images in an SVHN ``.mat`` file, after checking ``X`` and ``y``."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise DataScriptError("checking SVHN files needs scipy: pip install scipy") from exc
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except (ValueError, OSError, NotImplementedError, TypeError) as exc:
        raise DataScriptError(f"cannot read {path} as a MATLAB file: {exc}") from exc
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise DataScriptError(f"{path}: expected variables X and y")
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or str(x.dtype) != "uint8":
        raise DataScriptError(f"{path}: X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    labels = y.reshape(-1)
    if len(labels) != x.shape[3]:
        raise DataScriptError(f"{path}: {len(labels)} labels for {x.shape[3]} images")
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise DataScriptError(f"{path}: labels outside 1-10")
    return int(x.shape[3])


def fetch(
    out: Path, source: Path | None = None, base_url: str = BASE_URL, skip_count_check: bool = False
) -> list[Path]:
    """Read (or download), check and copy both files; returns the written paths."""
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[str, Path] = {}
        for split, name in FILES.items():
            if source is None:
                paths[split] = _common.download(base_url + name, Path(tmp) / name)
            elif not source.is_dir():
                raise DataScriptError(f"source {source} is not a folder holding {name}")
            elif not (source / name).is_file():
                raise DataScriptError(f"{name} not found in {source}")
            else:
                paths[split] = source / name
        counts = {split: count_images(path) for split, path in paths.items()}
        if not skip_count_check:
            _common.check_counts(counts, EXPECTED_COUNTS, lambda s: FILES[s], "images")
        for split, n in counts.items():
            print(f"{split}: {n} images", file=sys.stderr)
        return [_common.install(paths[split], out / FILES[split]) for split in FILES]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _common.make_parser(
        "Write SVHN train_32x32.mat and test_32x32.mat to --out.",
        "local folder with train_32x32.mat and test_32x32.mat; default: download from " + BASE_URL,
    )
    _common.add_skip_count_check(parser, "accept image counts other than 73,257 / 26,032")
    args = parser.parse_args(argv)
    return _common.run(lambda: fetch(args.out, args.source, skip_count_check=args.skip_count_check))


if __name__ == "__main__":
    sys.exit(main())
