#!/usr/bin/env python3
"""Fetch the ZINC250k molecules (chemical_vae's ``250k_rndm_zinc_drugs_clean_3.csv``) for latentebm.

Usage::

    python data_scripts/zinc250k.py --out DIR                # download the CSV
    python data_scripts/zinc250k.py --out DIR --source SRC   # local copy of the CSV (or .csv.gz)

The source is the ZINC250k file of Gomez-Bombarelli et al. 2018 (GitHub
aspuru-guzik-group/chemical_vae, ``models/zinc_properties/250k_rndm_zinc_drugs_clean_3.csv``),
the copy most molecule-generation papers use: columns ``smiles,logP,qed,SAS``, 249,455 rows.
Its SMILES end with a newline *inside* the quotes (``"CCO\\n"``); they are stripped.

Written to ``DIR`` (gzip level 9, mtime 0, columns ``smiles,logP,qed,SAS``, source order kept
within each file):

* ``zinc250k.csv.gz``: every molecule;
* ``train.csv.gz`` / ``valid.csv.gz`` / ``test.csv.gz``: a fixed split (Python
  ``random.Random(0)`` shuffle of the row numbers; the first 10,000 are test, the next 10,000
  valid, the rest train: 229,455 / 10,000 / 10,000 for the full file). Rows keep their source
  order within each split.

Recipes expect ``zinc250k/train.csv.gz`` etc. under the data root (``$LATENTEBM_DATA``), so use
``--out $LATENTEBM_DATA/zinc250k``. The row count is checked (``--skip-count-check`` for other
versions). Existing files with different content are never overwritten. SMILES are not parsed
here (no RDKit needed); the molecule task checks and canonicalizes them.

Standard library only.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import sys
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import COUNT_CHECK_HINT, DataScriptError  # noqa: E402

URL = (
    "https://raw.githubusercontent.com/aspuru-guzik-group/chemical_vae/master/models/"
    "zinc_properties/250k_rndm_zinc_drugs_clean_3.csv"
)
COLUMNS = ("smiles", "logP", "qed", "SAS")
EXPECTED_ROWS = 249_455
N_VALID = 10_000
N_TEST = 10_000
SEED = 0
OUTPUTS = ("zinc250k", "train", "valid", "test")


def read_rows(path: Path) -> list[list[str]]:
    """Rows ``[smiles, logP, qed, SAS]`` of the source CSV (``.csv`` or ``.csv.gz``), SMILES
    stripped of surrounding whitespace (the trailing newline inside the quotes)."""
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataScriptError(f"cannot read {path}: {exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise DataScriptError(f"{path} is empty")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataScriptError(
            f"{path}: header {','.join(header)} lacks column(s) {', '.join(missing)} "
            f"(expected {','.join(COLUMNS)})"
        )
    cols = [header.index(c) for c in COLUMNS]
    rows: list[list[str]] = []
    for line_no, row in enumerate(reader, 2):
        if not row or all(not v.strip() for v in row):
            continue
        if len(row) < len(header):
            raise DataScriptError(
                f"{path}: record {line_no} has {len(row)} fields, expected {len(header)}"
            )
        values = [row[c].strip() for c in cols]
        if not values[0]:
            raise DataScriptError(f"{path}: record {line_no} has an empty SMILES")
        rows.append(values)
    if not rows:
        raise DataScriptError(f"{path} has no molecules")
    return rows


def split_indices(
    n: int, n_valid: int | None = None, n_test: int | None = None
) -> dict[str, list[int]]:
    """Sorted row numbers of each split: ``random.Random(0)`` shuffle of ``range(n)``, the first
    ``n_test`` (default :data:`N_TEST`) are test, the next ``n_valid`` (:data:`N_VALID`) valid."""
    n_valid = N_VALID if n_valid is None else n_valid
    n_test = N_TEST if n_test is None else n_test
    if n_valid + n_test >= n:
        raise DataScriptError(f"{n} molecules are too few for {n_valid} valid + {n_test} test")
    order = list(range(n))
    random.Random(SEED).shuffle(order)
    return {
        "test": sorted(order[:n_test]),
        "valid": sorted(order[n_test : n_test + n_valid]),
        "train": sorted(order[n_test + n_valid :]),
    }


def to_csv(rows: list[list[str]]) -> bytes:
    """CSV bytes with header ``smiles,logP,qed,SAS`` (``\\n`` line ends)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def fetch(
    out: Path, source: Path | None = None, url: str = URL, skip_count_check: bool = False
) -> list[Path]:
    """Read (or download), check, split and write; returns the written paths."""
    rows = _common.read_source(source, read_rows, url=url, download_name="zinc250k.csv")
    if not skip_count_check and len(rows) != EXPECTED_ROWS:
        raise DataScriptError(f"{len(rows)} molecules, expected {EXPECTED_ROWS}{COUNT_CHECK_HINT}")
    splits = split_indices(len(rows))
    data = {"zinc250k.csv.gz": to_csv(rows)}
    for name in ("train", "valid", "test"):
        data[f"{name}.csv.gz"] = to_csv([rows[i] for i in splits[name]])
        print(f"{name}: {len(splits[name])} molecules", file=sys.stderr)
    return _common.write_gz_files(out, data)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _common.make_parser(
        "Write ZINC250k as zinc250k.csv.gz and a fixed train/valid/test split.",
        "local 250k_rndm_zinc_drugs_clean_3.csv (or .csv.gz); default: download " + URL,
    )
    _common.add_skip_count_check(parser, f"accept a row count other than {EXPECTED_ROWS}")
    args = parser.parse_args(argv)
    return _common.run(lambda: fetch(args.out, args.source, skip_count_check=args.skip_count_check))


if __name__ == "__main__":
    sys.exit(main())
