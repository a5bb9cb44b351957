"""Molecule data files (:class:`~latentebm.tasks.molecules.MoleculeTask`): reading the SMILES
of a ``.csv[.gz]``/``.smi[.gz]`` file, parsing, canonicalizing and tokenizing them in worker
processes (:func:`process_file`), the ``.npz`` cache of the result (:func:`cache_paths`,
:func:`read_cache`, :func:`write_cache`) and the held-out index of QM9 (:func:`held_out_rows`).
The layouts, cache locations and keys are described in :mod:`latentebm.tasks.molecules`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentebm.atomic import atomic_write
from latentebm.data import data_root, open_text
from latentebm.processes import caller_script_hidden
from latentebm.progress import ProgressLines
from latentebm.tasks.molecule_tokens import rdkit_chem, smiles_tokens

__all__ = [
    "CACHE_VERSION",
    "CHUNK_ROWS",
    "FileData",
    "MoleculeDataError",
    "cache_paths",
    "check_cache",
    "gather",
    "held_out_rows",
    "process_chunk",
    "process_file",
    "read_cache",
    "read_smiles",
    "write_cache",
]

# The molecule task's logger: these lines were logged under that name before the file handling
# had a module of its own, and a caller filtering on it still sees them.
logger = logging.getLogger("latentebm.tasks.molecules")

CACHE_VERSION = 1
"""Version of the ``.npz`` cache layout (part of the cache key; another version is rebuilt)."""
CHUNK_ROWS = 20_000
"""Rows of a file per worker task (:func:`process_chunk`)."""


class MoleculeDataError(ValueError):
    """A molecule data file has the wrong layout (the message is one line naming the file)."""


def process_chunk(
    args: tuple[list[str], bool, str],
) -> tuple[list[int], list[str], list[str], np.ndarray, np.ndarray, int, int]:
    """Worker: parse, canonicalize and tokenize a chunk of raw SMILES.

    Returns ``(kept positions, canonical SMILES, chunk itos, chunk ids, lengths, n_invalid,
    n_unencodable)``; ids index the chunk-local ``itos``.
    """
    lines, canonicalize, representation = args
    Chem = rdkit_chem()
    positions: list[int] = []
    canon: list[str] = []
    stoi: dict[str, int] = {}
    ids: list[int] = []
    lengths: list[int] = []
    n_invalid = n_unencodable = 0
    for pos, raw in enumerate(lines):
        smiles = raw.strip()
        mol = Chem.MolFromSmiles(smiles) if smiles else None
        if mol is None:
            n_invalid += 1
            continue
        if canonicalize:
            smiles = Chem.MolToSmiles(mol, isomericSmiles=True)
        toks = smiles_tokens(smiles, representation)
        if toks is None or not toks:
            n_unencodable += 1
            continue
        positions.append(pos)
        canon.append(smiles)
        ids.extend(stoi.setdefault(t, len(stoi)) for t in toks)
        lengths.append(len(toks))
    return (
        positions,
        canon,
        list(stoi),
        np.asarray(ids, dtype=np.int32),
        np.asarray(lengths, dtype=np.int64),
        n_invalid,
        n_unencodable,
    )


@dataclass
class FileData:
    """One processed file: the valid molecules, their SMILES and token ids (file-local vocab)."""

    n_rows: int
    n_invalid: int
    n_unencodable: int
    rows: np.ndarray  # (n,) 0-based row of each kept molecule in the file
    smiles_blob: np.ndarray  # uint8, canonical SMILES concatenated (UTF-8)
    smiles_offsets: np.ndarray  # (n+1,) byte offsets into smiles_blob
    ids: np.ndarray  # flat token ids (file-local vocabulary)
    offsets: np.ndarray  # (n+1,) offsets into ids
    itos: list[str]  # file-local vocabulary
    seconds: float = 0.0
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.rows)

    def smiles(self, index: np.ndarray) -> list[str]:
        blob = self.smiles_blob.tobytes()
        off = self.smiles_offsets
        return [blob[off[i] : off[i + 1]].decode("utf-8") for i in index.tolist()]


def gather(ids: np.ndarray, offsets: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, ...]:
    """The sequences ``index`` of a flat ``(ids, offsets)`` store, as a new flat store."""
    all_lengths = offsets[1:] - offsets[:-1]
    lengths = all_lengths[index]
    new_offsets = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    if len(index) < 2 or bool(np.all(index[1:] > index[:-1])):
        # increasing (every split is): a boolean token mask, 1 byte per token of temporaries
        keep = np.zeros(len(all_lengths), dtype=bool)
        keep[index] = True
        return ids[np.repeat(keep, all_lengths)], new_offsets
    total = int(new_offsets[-1])
    pos = np.repeat(offsets[:-1][index] - new_offsets[:-1], lengths) + np.arange(total)
    return ids[pos], new_offsets


# --------------------------------------------------------------------------------------------
# Reading and processing a file
# --------------------------------------------------------------------------------------------


def read_smiles(path: Path, column: str | None) -> list[str]:
    """Raw SMILES strings of a ``.csv[.gz]`` or ``.smi[.gz]`` file, one per row (``column``:
    the CSV column, None: the first of ``SMILES``, ``smiles``)."""
    name = path.name.lower()
    if name.endswith((".smi", ".smi.gz", ".txt", ".txt.gz")):
        out: list[str] = []
        with open_text(path) as f:
            for i, line in enumerate(f):
                parts = line.split(maxsplit=1)
                if not parts:
                    continue
                if i == 0 and parts[0] in ("SMILES", "smiles"):
                    continue
                out.append(parts[0])
        return out
    if not name.endswith((".csv", ".csv.gz")):
        raise MoleculeDataError(
            f"{path}: unsupported molecule file type (expected .csv, .csv.gz, .smi, .smi.gz)"
        )
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise MoleculeDataError(f"{path} is empty (expected a header row)")
            header = [h.strip() for h in header]
            wanted = [column] if column else ["SMILES", "smiles"]
            col = next((header.index(c) for c in wanted if c in header), None)
            if col is None:
                raise MoleculeDataError(
                    f"{path} has no column {' or '.join(map(repr, wanted))} "
                    f"(columns: {', '.join(header)}); set task.column"
                )
            return [row[col].strip() if col < len(row) else "" for row in reader if row]
        except csv.Error as exc:  # e.g. a field over the size limit (a binary file)
            raise MoleculeDataError(
                f"{path}: line {reader.line_num}: not a CSV file ({exc})"
            ) from exc


def process_file(
    path: Path, *, column: str | None, canonicalize: bool, representation: str, n_jobs: int
) -> FileData:
    """Parse, canonicalize and tokenize every row of ``path`` (in ``n_jobs`` processes)."""
    start = time.perf_counter()
    logger.info("molecules %s: reading and tokenizing (the first load; cached after it)", path.name)
    lines = read_smiles(path, column)
    chunks = [
        (lines[i : i + CHUNK_ROWS], canonicalize, representation)
        for i in range(0, len(lines), CHUNK_ROWS)
    ]
    n_jobs = min(n_jobs, len(chunks))
    stoi: dict[str, int] = {}
    rows, blobs, byte_lengths, ids, lengths = [], [], [], [], []
    n_invalid = n_unencodable = 0
    chunk_rows = CHUNK_ROWS

    def collect(results: Iterable[tuple[Any, ...]]) -> None:
        # Chunk results are merged as they arrive (pool.imap keeps the order); a long
        # first load says how far it is
        label = f"molecules {path.name}: {representation} tokens"
        with ProgressLines(logger, label, len(lines), "rows") as progress:
            for k, result in enumerate(results):
                merge(k, result)
                progress.update(min(chunk_rows, len(lines) - k * chunk_rows))

    def merge(k: int, result: tuple[Any, ...]) -> None:
        nonlocal n_invalid, n_unencodable
        pos, canon, itos, chunk_ids, lens, bad, unenc = result
        lut = np.asarray([stoi.setdefault(t, len(stoi)) for t in itos], dtype=np.int32)
        rows.append(np.asarray(pos, dtype=np.int64) + k * chunk_rows)
        encoded = [m.encode("utf-8") for m in canon]
        blobs.append(b"".join(encoded))
        byte_lengths.append(np.fromiter(map(len, encoded), np.int64, len(encoded)))
        ids.append(lut[chunk_ids] if len(chunk_ids) else chunk_ids)
        lengths.append(lens)
        n_invalid += bad
        n_unencodable += unenc

    if n_jobs > 1:
        # fork (Linux) starts workers instantly; elsewhere the platform default.
        method = "fork" if sys.platform.startswith("linux") else None
        with caller_script_hidden():  # spawn (macOS, Windows) re-runs no script
            pool = multiprocessing.get_context(method).Pool(n_jobs)
        with pool:
            collect(pool.imap(process_chunk, chunks))
    else:
        collect(process_chunk(c) for c in chunks)
    del chunks
    smiles_offsets = np.zeros(sum(len(b) for b in byte_lengths) + 1, dtype=np.int64)
    if byte_lengths:
        np.cumsum(np.concatenate(byte_lengths), out=smiles_offsets[1:])
    blob = b"".join(blobs)
    blobs.clear()
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.zeros(len(all_lengths) + 1, dtype=np.int64)
    np.cumsum(all_lengths, out=offsets[1:])
    dtype = np.int16 if len(stoi) < 2**15 else np.int32
    data = FileData(
        n_rows=len(lines),
        n_invalid=n_invalid,
        n_unencodable=n_unencodable,
        rows=np.concatenate(rows) if rows else np.zeros(0, np.int64),
        smiles_blob=np.frombuffer(blob, dtype=np.uint8),
        smiles_offsets=smiles_offsets,
        ids=(np.concatenate(ids) if ids else np.zeros(0, np.int32)).astype(dtype),
        offsets=offsets,
        itos=list(stoi),
    )
    data.seconds = time.perf_counter() - start
    return data


def held_out_rows(path: Path, n_rows: int, *, base: int, train: str, index: str) -> np.ndarray:
    """The 0-based rows of the file ``train`` (``n_rows`` rows) named by the held-out index
    JSON ``path`` (``index``, as configured), as a boolean mask; ``base``: the id of the first
    row (``task.held_out_index_base``)."""
    try:
        with open_text(path) as f:
            obj = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise MoleculeDataError(f"{path}: cannot read held-out index JSON ({exc})") from exc
    if isinstance(obj, dict):
        obj = obj.get("valid_idxs", obj.get("test_idxs"))
    if not isinstance(obj, list):
        raise MoleculeDataError(f"{path}: expected a list of ids or {{'valid_idxs': [...]}}")
    rows = np.asarray([int(i) for i in obj], dtype=np.int64) - base
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
        bad = int(rows.max() if rows.max() >= n_rows else rows.min()) + base
        raise MoleculeDataError(
            f"task.held_out_index: ids out of range for task.train {train}: "
            f"{index} has id {bad} but the {n_rows} rows of that file take ids "
            f"{base}..{n_rows - 1 + base} (held_out_index_base {base}); the index belongs to "
            "another data file (recipes/qm9.yaml's is the QM9 test split), so for your own "
            "data set task.held_out_index=null (and task.test=FILE for a test split)"
        )
    mask = np.zeros(n_rows, dtype=bool)
    mask[rows] = True
    return mask


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def cache_paths(
    path: Path,
    *,
    root: str | os.PathLike[str] | None,
    cache_dir: str | None,
    column: str | None,
    representation: str,
    canonicalize: bool,
) -> list[Path]:
    """Where the processed ``path`` may be cached, in order of preference.

    ``cache_dir`` if set; else ``<data root>/.cache/molecules`` for files under the data root
    ``root``, then ``$XDG_CACHE_HOME/latentebm/molecules`` (default ``~/.cache``), which is used
    when the data root is read-only and for files outside it. The file name holds a digest of
    the file's path, size and mtime and the processing options.
    """
    if cache_dir is not None:
        folders = [Path(cache_dir).expanduser()]
    else:
        user = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
        folders = [user / "latentebm" / "molecules"]
        base = data_root(root)
        if base is not None:
            try:
                path.resolve().relative_to(base.resolve())
                folders.insert(0, base / ".cache" / "molecules")
            except ValueError:
                pass
    st = path.stat()
    key = json.dumps(
        [
            CACHE_VERSION,
            str(path.resolve()),
            st.st_size,
            st.st_mtime_ns,
            column,
            representation,
            canonicalize,
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    stem = path.name.split(".")[0]
    return [folder / f"{stem}-{representation}-{digest}.npz" for folder in folders]


def check_cache(data: FileData) -> None:
    """``ValueError`` unless the arrays of a cached file fit together."""
    n = len(data.rows)
    if data.rows.ndim != 1 or data.n_rows < n or min(data.n_invalid, data.n_unencodable) < 0:
        raise ValueError("inconsistent row counts")
    for name, offsets, store in (
        ("offsets", data.offsets, data.ids),
        ("smiles_offsets", data.smiles_offsets, data.smiles_blob),
    ):
        if offsets.shape != (n + 1,) or int(offsets[0]) != 0 or int(offsets[-1]) != len(store):
            raise ValueError(f"{name} do not fit the {n} molecules")
    if len(data.ids) and (int(data.ids.min()) < 0 or int(data.ids.max()) >= len(data.itos)):
        raise ValueError("token ids outside the vocabulary")


def read_cache(path: Path) -> FileData | None:
    """The cached file data at ``path``, or None when absent, of another cache version, or
    unreadable (a zero-byte, truncated or foreign file: logged as one warning line naming it;
    the caller processes the data file again and writes the cache anew)."""
    if not path.is_file():
        return None
    start = time.perf_counter()
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION:
                return None
            counts = z["counts"].tolist()
            data = FileData(
                n_rows=int(counts[0]),
                n_invalid=int(counts[1]),
                n_unencodable=int(counts[2]),
                rows=z["rows"],
                smiles_blob=z["smiles_blob"],
                smiles_offsets=z["smiles_offsets"],
                ids=z["ids"],
                offsets=z["offsets"],
                itos=[str(t) for t in z["itos"].tolist()],
            )
        check_cache(data)
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be read is rebuilt
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        logger.warning("%s: unreadable molecule cache (%s); rebuilding it", path, reason)
        return None
    data.seconds = time.perf_counter() - start
    data.from_cache = True
    return data


def write_cache(path: Path, data: FileData) -> bool:
    """Write ``data`` to ``path`` atomically and durably (:func:`latentebm.atomic.atomic_write`:
    a crash leaves the old cache or none, never a truncated one); returns False (and logs) on
    failure."""
    try:
        with atomic_write(path) as handle:
            np.savez(
                handle,
                version=np.int64(CACHE_VERSION),
                counts=np.asarray([data.n_rows, data.n_invalid, data.n_unencodable], np.int64),
                rows=data.rows,
                smiles_blob=data.smiles_blob,
                smiles_offsets=data.smiles_offsets,
                ids=data.ids,
                offsets=data.offsets,
                itos=np.asarray(data.itos, dtype=str),
            )
    except OSError as exc:
        logger.info("could not write molecule cache %s: %s", path, exc)
        return False
    return True
