"""Reading molecule files: SMILES to score (:func:`read_generated_smiles`), reference SMILES
files (:func:`read_smiles_file`) and the MCF and PAINS filter SMARTS (:func:`load_filter_smarts`).
A bad file is one line naming it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from latentebm.data import TextFile, open_text


def _open_text(path: Path) -> TextFile:
    """UTF-8 text, gzip by suffix; a bad file is one line naming it (and the line)."""
    return open_text(path)


def load_filter_smarts(data_root: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The 22 MCF and 480 PAINS SMARTS of MOSES's Filters metric, from ``moses/mcf.csv``
    (columns ``names,smarts``) and ``moses/wehi_pains.csv.gz`` (``smarts,name``, no header)."""
    from latentebm.data import resolve_data_path

    mcf = resolve_data_path("moses/mcf.csv", data_root)
    pains = resolve_data_path("moses/wehi_pains.csv.gz", data_root)
    smarts: list[str] = []
    with _open_text(mcf) as f:
        rows = list(csv.reader(f))
        col = [c.strip().lower() for c in rows[0]].index("smarts")
        smarts += [r[col].strip() for r in rows[1:] if r]
    with _open_text(pains) as f:
        smarts += [r[0].strip() for r in csv.reader(f) if r]
    return tuple(smarts)


def read_smiles_file(path: str | os.PathLike[str]) -> list[str]:
    """SMILES from a (gzipped) CSV whose header has a ``smiles`` column (any case; else the
    first column). Empty rows are skipped."""
    with _open_text(Path(path)) as f:
        reader = csv.reader(f)
        header = next(reader)
        lower = [h.strip().lower() for h in header]
        col = lower.index("smiles") if "smiles" in lower else 0
        return [row[col].strip() for row in reader if row and row[col].strip()]


def read_generated_smiles(path: str | os.PathLike[str], column: str | None = None) -> list[str]:
    """The molecules of a file to score, in file order, one sample per row.

    * ``.smi`` / ``.txt`` (optionally ``.gz``): one per line, the first whitespace-separated
      field (a name may follow it); a blank line is an empty sample, which scores as invalid
      (``latentebm generate`` writes a molecule it could not decode as a blank line); a first
      line ``SMILES`` or ``smiles`` is a header.
    * ``.csv`` (optionally ``.gz``): the column ``column`` (default: ``smiles`` in any case,
      else the first column); an empty field is an empty sample.

    Raises:
        ValueError: an unknown file type, a missing column, or a file that is not text (one
            line naming the file).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".smi", ".smi.gz", ".txt", ".txt.gz")):
        if column is not None:
            raise ValueError(f"{path}: a column is named, but a .smi/.txt file has no columns")
        with _open_text(path) as f:
            lines = [line.rstrip("\r\n") for line in f]
        if lines:
            lines[0] = lines[0].removeprefix("\ufeff")  # a byte-order mark
        if lines and (lines[0].split(maxsplit=1) or [""])[0] in ("SMILES", "smiles"):
            lines = lines[1:]  # a header line ("SMILES" or "SMILES name")
        return [(line.split(maxsplit=1) or [""])[0] for line in lines]
    if not name.endswith((".csv", ".csv.gz")):
        raise ValueError(f"{path}: unknown molecule file type (expected .smi, .txt, .csv, or .gz)")
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader, [])]
            if header:
                header[0] = header[0].removeprefix("\ufeff")  # a byte-order mark
            if not header:
                raise ValueError(f"{path} is empty (expected a header row)")
            if column is not None:
                if column not in header:
                    raise ValueError(
                        f"{path} has no column {column!r} (columns: {', '.join(header)})"
                    )
                col = header.index(column)
            else:
                lower = [h.lower() for h in header]
                col = lower.index("smiles") if "smiles" in lower else 0
            # in a one-column file an empty line is an empty SMILES; elsewhere it is no row
            single = len(header) == 1
            return [row[col].strip() if col < len(row) else "" for row in reader if row or single]
        except csv.Error as exc:
            raise ValueError(f"{path}: line {reader.line_num}: not a CSV file ({exc})") from exc
