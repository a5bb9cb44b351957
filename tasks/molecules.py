"""Molecules as token sequences (SMILES or SELFIES) for latent-EBM prior models.

Data files hold one molecule per row:

* ``.csv`` / ``.csv.gz`` with a header row; the SMILES column is ``task.column`` or, when that
  is unset, the first of ``SMILES`` / ``smiles`` (MOSES, QM9, ZINC250k);
* ``.smi`` / ``.smi.gz``: one SMILES per line, optionally followed by whitespace and a name (a
  first line ``SMILES`` / ``smiles`` is taken for a header and skipped).

Every SMILES is parsed with RDKit; rows that do not parse (or, for SELFIES, cannot be encoded)
are skipped, counted, reported by :meth:`MoleculeTask.describe` and by a warning, never an
error. With ``canonicalize`` (default) molecules are stored as RDKit canonical SMILES with
stereochemistry kept (``isomericSmiles=True``).

Tokens:

* ``smiles``: atom-level regular expression (:data:`SMILES_REGEX`): bracket atoms ``[nH]``,
  ``[C@@H]``, ``[N+]`` whole, ``Cl``/``Br`` as one token, ``%nn`` ring closures, bonds,
  branches and ring-closure digits as single tokens; ``"".join(tokens)`` is the SMILES;
* ``selfies``: the SMILES is encoded with :func:`selfies.encoder` and split into symbols with
  :func:`selfies.split_selfies`.

The vocabulary is built from the training split (tokens seen at least ``min_freq`` times);
unknown tokens map to ``<unk>``. Ids ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3
as in :mod:`latentebm.tasks.text`. :meth:`MoleculeTask.decode` always returns SMILES (SELFIES
are decoded with :func:`selfies.decoder`; a failure gives ``""``).

Large files (MOSES train: 1.58M molecules) are processed in ``n_jobs`` worker processes and the
result (canonical SMILES + token ids of the file, under a file-local vocabulary) is cached as an
``.npz`` (no pickle) keyed by the file's path, size and mtime and the processing options, in
``task.cache_dir`` if set, else ``<data root>/.cache/molecules`` for files under the data root,
else (or when that is not writable) ``$XDG_CACHE_HOME/latentebm/molecules`` (default
``~/.cache``). A changed file gets a new key and is processed again; old cache files are not
deleted. Sequences are kept as one flat int16/int32 array plus
offsets, not as one tensor per molecule.

QM9 held-out split: ``held_out_index`` names a JSON file of row ids (``{"valid_idxs": [...]}``
as in chainer-chemistry / MoFlow / GDSS, or a plain list) whose rows of the train file form the
test split; the rest is train (and ``valid_fraction`` of it validation). ``held_out_index_base``
says how ids map to rows: ``1`` (default; MoFlow's reading: id ``i`` is the 1-based row, i.e.
GDB-9 molecule ``dsgdb9nsd_i``) or ``0`` (GDSS's reading: id ``i`` is the 0-based row).

The tokenizer state (:meth:`MoleculeTask.state_dict`) holds only str/list/int values, so it
survives ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import re
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from latentebm.atomic import atomic_write
from latentebm.data import data_root, open_text, resolve_data_path
from latentebm.errors import MissingDependencyError
from latentebm.hf_data import is_hf_source, materialize
from latentebm.processes import caller_script_hidden
from latentebm.progress import ProgressLines
from latentebm.tasks.batching import BucketedBatches
from latentebm.tasks.text import (  # same as text
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    SPLITS,
    UNK,
    UNK_ID,
    report_dropped,
)

__all__ = [
    "SMILES_REGEX",
    "MoleculeDataError",
    "MoleculeTask",
    "MoleculeTokenizer",
    "canonical_smiles",
    "tokenize_smiles",
]

logger = logging.getLogger(__name__)

SMILES_REGEX = (
    r"(\[[^\]]+\]|Br|Cl|%\d{2}|Si|Se|se|Na|Li|Mg|Al|Ca|Zn|As|B|C|N|O|S|P|F|I|K|H"
    r"|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|\d|.)"
)
"""Atom-level SMILES tokens (Schwaller et al. 2019 style). Every character is covered (the final
``.`` alternative), so ``"".join(tokenize_smiles(s)) == s`` for any string."""

_SMILES_RE = re.compile(SMILES_REGEX)
_CACHE_VERSION = 1
_CHUNK = 20_000


class MoleculeDataError(ValueError):
    """A molecule data file has the wrong layout (the message is one line naming the file)."""


# --------------------------------------------------------------------------------------------
# Chemistry helpers (RDKit / selfies imported lazily: they are optional dependencies)
# --------------------------------------------------------------------------------------------


def _rdkit() -> Any:
    try:
        from rdkit import Chem, RDLogger
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "the molecule task needs RDKit: pip install 'latentebm[mol]' (rdkit, selfies)"
        ) from exc
    RDLogger.DisableLog("rdApp.*")
    return Chem


def _selfies() -> Any:
    try:
        import selfies
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "representation 'selfies' needs the selfies package: pip install 'latentebm[mol]'"
        ) from exc
    return selfies


def draw_grid(
    smiles: Sequence[str], path: str | Path, *, per_row: int = 6, cell_size: int = 220
) -> int:
    """Write a PNG grid of the molecules (RDKit drawing), each labelled with its SMILES; an
    invalid string gets an empty cell labelled ``invalid``. Returns the number drawn valid."""
    chem = _rdkit()
    from rdkit.Chem import Draw

    if per_row < 1:
        raise ValueError(f"per_row must be >= 1, got {per_row}")
    mols, legends, n_valid = [], [], 0
    for text in smiles:
        mol = chem.MolFromSmiles(text) if text else None
        if mol is None:
            mols.append(chem.Mol())
            legends.append(f"invalid: {text[:28]}")
        else:
            mols.append(mol)
            legends.append(text if len(text) <= 32 else text[:29] + "...")
            n_valid += 1
    image = Draw.MolsToGridImage(
        mols, molsPerRow=per_row, subImgSize=(cell_size, cell_size), legends=legends
    )
    image.save(str(path))
    return n_valid


def tokenize_smiles(smiles: str) -> list[str]:
    """Atom-level SMILES tokens; ``"".join(tokenize_smiles(s)) == s``."""
    return _SMILES_RE.findall(smiles)


def canonical_smiles(smiles: str, canonicalize: bool = True) -> str | None:
    """RDKit canonical isomeric SMILES (or ``smiles`` itself when not ``canonicalize``) if the
    string parses, else ``None``."""
    Chem = _rdkit()
    smiles = smiles.strip()
    if not smiles:
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return Chem.MolToSmiles(mol, isomericSmiles=True) if canonicalize else smiles


def _tokens(smiles: str, representation: str) -> list[str] | None:
    """Tokens of a (valid) SMILES in the representation; ``None`` when SELFIES encoding fails."""
    if representation == "smiles":
        return tokenize_smiles(smiles)
    sf = _selfies()
    try:
        encoded = sf.encoder(smiles)
    except Exception:  # selfies.EncoderError and friends
        return None
    if encoded is None:
        return None
    return list(sf.split_selfies(encoded))


def _process_chunk(
    args: tuple[list[str], bool, str],
) -> tuple[list[int], list[str], list[str], np.ndarray, np.ndarray, int, int]:
    """Worker: parse, canonicalize and tokenize a chunk of raw SMILES.

    Returns ``(kept positions, canonical SMILES, chunk itos, chunk ids, lengths, n_invalid,
    n_unencodable)``; ids index the chunk-local ``itos``.
    """
    lines, canonicalize, representation = args
    Chem = _rdkit()
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
        toks = _tokens(smiles, representation)
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


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class MoleculeTokenizer:
    """Token vocabulary for SMILES or SELFIES (specials first, then by training frequency)."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(
        self,
        itos: Sequence[str],
        representation: Literal["smiles", "selfies"] = "smiles",
        canonicalize: bool = True,
    ) -> None:
        """Create from an id-to-token list that starts with the four specials."""
        words = [str(w) for w in itos]
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with the specials {SPECIALS}")
        if representation not in ("smiles", "selfies"):
            raise ValueError(
                f"representation must be 'smiles' or 'selfies', got {representation!r}"
            )
        self.itos: list[str] = words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(words)}
        if len(self.stoi) != len(words):
            raise ValueError("vocabulary contains duplicate tokens")
        self.representation = representation
        self.canonicalize = canonicalize

    @property
    def kind(self) -> str:
        """``"smiles"`` or ``"selfies"``."""
        return self.representation

    @classmethod
    def build(
        cls,
        counts: dict[str, int],
        representation: Literal["smiles", "selfies"] = "smiles",
        canonicalize: bool = True,
        min_freq: int = 1,
    ) -> MoleculeTokenizer:
        """Vocabulary of the tokens counted at least ``min_freq`` times, most frequent first
        (ties alphabetical)."""
        words = [w for w, c in counts.items() if c >= min_freq and w not in SPECIALS]
        words.sort(key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + words, representation, canonicalize)

    def tokenize(self, smiles: str) -> list[str]:
        """Tokens of one SMILES (canonicalized first when configured and it parses)."""
        smiles = smiles.strip()
        if self.canonicalize:
            smiles = canonical_smiles(smiles) or smiles
        toks = _tokens(smiles, self.representation)
        return [UNK] if toks is None else toks

    def encode(self, smiles: str) -> list[int]:
        """Token ids of one SMILES, without ``<bos>``/``<eos>`` (unknown tokens -> ``<unk>``)."""
        get = self.stoi.get
        return [get(t, UNK_ID) for t in self.tokenize(smiles)]

    def encode_batch(self, smiles: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for each SMILES."""
        return [self.encode(s) for s in smiles]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Tokens of an id sequence: skips ``<pad>``/``<bos>``, stops at ``<eos>``; ``<unk>``
        and out-of-range ids are dropped."""
        out: list[str] = []
        n = len(self.itos)
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID, UNK_ID) or not 0 <= i < n:
                continue
            out.append(self.itos[i])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """SMILES of an id sequence (SELFIES decoded with ``selfies.decoder``; ``""`` when that
        fails). SMILES output is the concatenated tokens, valid or not."""
        text = "".join(self.tokens(ids))
        if self.representation == "smiles":
            return text
        try:
            out = _selfies().decoder(text)
        except Exception:  # selfies.DecoderError and friends
            return ""
        return out or ""

    def __len__(self) -> int:
        return len(self.itos)

    def state_dict(self) -> dict[str, Any]:
        """``{"kind", "itos", "canonicalize"}`` (plain str/list/bool)."""
        return {
            "kind": self.representation,
            "itos": list(self.itos),
            "canonicalize": bool(self.canonicalize),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MoleculeTokenizer:
        """Inverse of :meth:`state_dict`."""
        kind = state.get("kind")
        if kind not in ("smiles", "selfies"):
            raise ValueError(f"unknown molecule tokenizer kind {kind!r} in state dict")
        return cls(state["itos"], kind, bool(state.get("canonicalize", True)))


# --------------------------------------------------------------------------------------------
# Processed files and splits
# --------------------------------------------------------------------------------------------


@dataclass
class _FileData:
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


def _gather(ids: np.ndarray, offsets: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, ...]:
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


class _Split:
    """A split: indices into its file's molecules and the global-vocabulary token store."""

    def __init__(
        self, file: _FileData, index: np.ndarray, lut: np.ndarray, max_length: int | None
    ) -> None:
        lengths = (file.offsets[1:] - file.offsets[:-1])[index]
        self.dropped_long = 0
        if max_length is not None:
            keep = lengths <= max_length
            self.dropped_long = int((~keep).sum())
            index, lengths = index[keep], lengths[keep]
        self.file = file
        self.index = index
        local, self.offsets = _gather(file.ids, file.offsets, index)
        self.ids = lut[local]  # global ids, int16 or int32
        self.lengths = lengths + 2  # with <bos> and <eos>

    def __len__(self) -> int:
        return len(self.index)

    def seq(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------


class MoleculeTask(BucketedBatches):
    """Molecule data (SMILES/SELFIES), tokenizer and length-bucketed batching."""

    default_metrics: tuple[str, ...] = ("molecules",)
    """What ``latentebm evaluate`` computes unless told: validity, uniqueness, novelty."""

    @dataclass
    class Config:
        """The ``task:`` section of a molecule recipe."""

        train: str
        """Training file (``moses/train.csv.gz``, an absolute path, or ``builtin:FILE``), or a
        Hugging Face dataset: ``hf:FOLDER_OR_FILE_OR_NAME?split=S&column=C`` (column default
        ``column``, else ``smiles`` or ``SMILES``; :mod:`latentebm.hf_data`)."""
        valid: str | None = None
        """Validation file (same forms as ``train``); null: none, or ``valid_fraction``."""
        test: str | None = None
        """Test file (same forms); null: none, or ``held_out_index``."""
        column: str | None = None
        """CSV column with the SMILES; null: the first of ``SMILES``, ``smiles``."""
        representation: Literal["smiles", "selfies"] = "smiles"
        """What the model reads and writes: SMILES (atom-level tokens), or SELFIES symbols
        (every string decodes to a molecule); samples are decoded to SMILES either way."""
        canonicalize: bool = True
        """Store RDKit canonical (isomeric) SMILES; False keeps the file's strings (still
        checked with RDKit)."""
        held_out_index: str | None = None
        """JSON file of row ids of ``train`` that form the test split (QM9:
        ``builtin:valid_idx_qm9.json``); needs ``test`` unset."""
        held_out_index_base: Literal[0, 1] = 1
        """1: id ``i`` is the ``i``-th row counting from 1 (MoFlow); 0: counting from 0 (GDSS)."""
        valid_fraction: float = 0.0
        """When ``valid`` is None: hold out this fraction of train (fixed seed-0 split)."""
        min_freq: int = 1
        """Keep tokens seen at least this often in train; rarer ones become ``<unk>``."""
        max_length: int | None = None
        """Drop (not truncate) molecules with more tokens (excluding ``<bos>``/``<eos>``)."""
        max_molecules: int | None = None
        """Use only the first N training molecules (after the valid/test split)."""
        n_jobs: int = 2
        """Worker processes for parsing/canonicalizing (1: in this process)."""
        cache: bool = True
        """Cache processed files as ``.npz`` (see the module docstring)."""
        cache_dir: str | None = None
        """Cache folder; null: ``<data root>/.cache/molecules`` for files under the data root,
        else ``~/.cache/latentebm/molecules``. Columns of Hugging Face datasets (``hf:``
        sources) go to its ``hf`` folder (null: ``~/.cache/latentebm/hf``)."""

        def __post_init__(self) -> None:
            if self.representation not in ("smiles", "selfies"):
                raise ValueError(
                    "task.representation must be 'smiles' or 'selfies', "
                    f"got {self.representation!r}"
                )
            if self.held_out_index_base not in (0, 1):
                raise ValueError(
                    f"task.held_out_index_base must be 0 or 1, got {self.held_out_index_base!r}"
                )
            if not 0.0 <= self.valid_fraction < 1.0:
                raise ValueError(
                    f"task.valid_fraction must be in [0, 1), got {self.valid_fraction}"
                )
            if self.valid is not None and self.valid_fraction > 0:
                raise ValueError(
                    "set either task.valid or task.valid_fraction, not both (with your own "
                    "task.valid, set task.valid_fraction=0)"
                )
            if self.test is not None and self.held_out_index is not None:
                raise ValueError(
                    "set either task.test or task.held_out_index, not both (with your own "
                    "task.test, set task.held_out_index=null)"
                )
            if self.min_freq < 1:
                raise ValueError(f"task.min_freq must be >= 1, got {self.min_freq}")
            if self.max_length is not None and self.max_length < 1:
                raise ValueError(f"task.max_length must be >= 1, got {self.max_length}")
            if self.max_molecules is not None and self.max_molecules < 1:
                raise ValueError(f"task.max_molecules must be >= 1, got {self.max_molecules}")
            if self.n_jobs < 1:
                raise ValueError(f"task.n_jobs must be >= 1, got {self.n_jobs}")

    def __init__(
        self,
        config: MoleculeTask.Config,
        data_root: str | os.PathLike[str] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Load the training data and build (or, given a checkpoint ``state``, restore) the
        tokenizer; with ``state`` nothing is read until a split is used."""
        self.config = config
        self.data_root = data_root
        self._files: dict[str, _FileData] = {}
        self._index: dict[str, tuple[_FileData, np.ndarray]] = {}
        self._splits: dict[str, _Split] = {}
        self._lut: dict[int, np.ndarray] = {}
        if state is not None:
            self.tokenizer = MoleculeTokenizer.from_state_dict(state.get("tokenizer", state))
            if self.tokenizer.representation != config.representation:
                raise ValueError(
                    f"checkpoint tokenizer is {self.tokenizer.representation!r} "
                    f"but task.representation is {config.representation!r}"
                )
        else:
            _rdkit()  # here, not first in a worker process as a traceback
            if config.representation == "selfies":
                _selfies()
            file, index = self._raw_split("train")
            if not len(index):
                raise MoleculeDataError(
                    f"{config.train}: no valid training molecules ({file.n_rows} rows, "
                    f"{file.n_invalid} invalid SMILES)"
                )
            counts = np.bincount(
                _gather(file.ids, file.offsets, index)[0], minlength=len(file.itos)
            )
            self.tokenizer = MoleculeTokenizer.build(
                {t: int(c) for t, c in zip(file.itos, counts, strict=True) if c > 0},
                config.representation,
                config.canonicalize,
                config.min_freq,
            )

    # ---------------------------------------------------------------- reading files

    def _resolve(self, name: str) -> Path:
        if is_hf_source(name):  # a Hugging Face dataset's column, as a .txt of SMILES
            columns = [self.config.column] if self.config.column else ["smiles", "SMILES"]
            cache = self.config.cache_dir
            folder = None if cache is None else Path(cache).expanduser() / "hf"
            return materialize(name, columns, folder, data_root=self.data_root)
        return resolve_data_path(name, self.data_root)

    def _cache_paths(self, path: Path) -> list[Path]:
        """Where the processed ``path`` may be cached, in order of preference (empty: no cache).

        ``task.cache_dir`` if set; else ``<data root>/.cache/molecules`` for files under the data
        root, then ``$XDG_CACHE_HOME/latentebm/molecules`` (default ``~/.cache``), which is used
        when the data root is read-only and for files outside it.
        """
        cfg = self.config
        if not cfg.cache:
            return []
        if cfg.cache_dir is not None:
            folders = [Path(cfg.cache_dir).expanduser()]
        else:
            user = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
            folders = [user / "latentebm" / "molecules"]
            root = data_root(self.data_root)
            if root is not None:
                try:
                    path.resolve().relative_to(root.resolve())
                    folders.insert(0, root / ".cache" / "molecules")
                except ValueError:
                    pass
        st = path.stat()
        key = json.dumps(
            [
                _CACHE_VERSION,
                str(path.resolve()),
                st.st_size,
                st.st_mtime_ns,
                cfg.column,
                cfg.representation,
                cfg.canonicalize,
            ]
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        stem = path.name.split(".")[0]
        return [folder / f"{stem}-{cfg.representation}-{digest}.npz" for folder in folders]

    def _read_smiles(self, path: Path) -> list[str]:
        """Raw SMILES strings of a ``.csv[.gz]`` or ``.smi[.gz]`` file, one per row."""
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
                wanted = [self.config.column] if self.config.column else ["SMILES", "smiles"]
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

    def _process(self, path: Path) -> _FileData:
        """Parse, canonicalize and tokenize every row of ``path`` (in ``n_jobs`` processes)."""
        start = time.perf_counter()
        cfg = self.config
        lines = self._read_smiles(path)
        chunks = [
            (lines[i : i + _CHUNK], cfg.canonicalize, cfg.representation)
            for i in range(0, len(lines), _CHUNK)
        ]
        n_jobs = min(cfg.n_jobs, len(chunks))
        stoi: dict[str, int] = {}
        rows, blobs, byte_lengths, ids, lengths = [], [], [], [], []
        n_invalid = n_unencodable = 0

        def collect(results: Iterable[tuple[Any, ...]]) -> None:
            # Chunk results are merged as they arrive (pool.imap keeps the order); a long
            # first load says how far it is
            label = f"molecules {path.name}: {cfg.representation} tokens"
            with ProgressLines(logger, label, len(lines), "rows") as progress:
                for k, result in enumerate(results):
                    merge(k, result)
                    progress.update(min(_CHUNK, len(lines) - k * _CHUNK))

        def merge(k: int, result: tuple[Any, ...]) -> None:
            nonlocal n_invalid, n_unencodable
            pos, canon, itos, chunk_ids, lens, bad, unenc = result
            lut = np.asarray([stoi.setdefault(t, len(stoi)) for t in itos], dtype=np.int32)
            rows.append(np.asarray(pos, dtype=np.int64) + k * _CHUNK)
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
                collect(pool.imap(_process_chunk, chunks))
        else:
            collect(_process_chunk(c) for c in chunks)
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
        data = _FileData(
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

    def _load_file(self, name: str) -> _FileData:
        """The processed file ``name`` (from memory, the cache, or processed now)."""
        if name in self._files:
            return self._files[name]
        path = self._resolve(name)
        caches = self._cache_paths(path)
        data = next((d for d in map(_read_cache, caches) if d is not None), None)
        if data is None:
            data = self._process(path)
            for cache in caches:
                if _write_cache(cache, data):
                    break
            else:
                if caches:
                    warnings.warn(
                        f"could not write a molecule cache for {path} "
                        f"(tried {', '.join(map(str, caches))})",
                        stacklevel=3,
                    )
        logger.info(
            "molecules %s: %d rows, %d kept, %.1f s%s",
            path,
            data.n_rows,
            len(data),
            data.seconds,
            " (cache)" if data.from_cache else "",
        )
        skipped = data.n_invalid + data.n_unencodable
        if skipped:
            what = f"{data.n_invalid} invalid SMILES"
            if data.n_unencodable:
                what += f" and {data.n_unencodable} not encodable as SELFIES"
            warnings.warn(f"{path}: skipped {what} of {data.n_rows} rows", stacklevel=3)
        self._files[name] = data
        return data

    def _held_out_rows(self, n_rows: int) -> np.ndarray:
        """0-based rows named by ``held_out_index`` (as a boolean mask over ``n_rows``)."""
        cfg = self.config
        assert cfg.held_out_index is not None
        path = self._resolve(cfg.held_out_index)
        try:
            with open_text(path) as f:
                obj = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise MoleculeDataError(f"{path}: cannot read held-out index JSON ({exc})") from exc
        if isinstance(obj, dict):
            obj = obj.get("valid_idxs", obj.get("test_idxs"))
        if not isinstance(obj, list):
            raise MoleculeDataError(f"{path}: expected a list of ids or {{'valid_idxs': [...]}}")
        base = cfg.held_out_index_base
        rows = np.asarray([int(i) for i in obj], dtype=np.int64) - base
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            bad = int(rows.max() if rows.max() >= n_rows else rows.min()) + base
            raise MoleculeDataError(
                f"task.held_out_index: ids out of range for task.train {cfg.train}: "
                f"{cfg.held_out_index} has id {bad} but the {n_rows} rows of that file take ids "
                f"{base}..{n_rows - 1 + base} (held_out_index_base {base}); the index belongs to "
                "another data file (recipes/qm9.yaml's is the QM9 test split), so for your own "
                "data set task.held_out_index=null (and task.test=FILE for a test split)"
            )
        mask = np.zeros(n_rows, dtype=bool)
        mask[rows] = True
        return mask

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
        if split not in self.splits:
            what = "task.valid or task.valid_fraction" if split == "valid" else "task.test"
            raise ValueError(f"split {split!r} is not configured: set {what}")

    def _raw_split(self, split: str) -> tuple[_FileData, np.ndarray]:
        """The file and molecule indices of a split, before the length filter."""
        self._check_split(split)
        if split in self._index:
            return self._index[split]
        cfg = self.config
        if split == "test" and cfg.test is not None:
            file = self._load_file(cfg.test)
            self._index["test"] = (file, np.arange(len(file)))
        elif split == "valid" and cfg.valid is not None:
            file = self._load_file(cfg.valid)
            self._index["valid"] = (file, np.arange(len(file)))
        else:  # train, or valid/test carved out of train
            file = self._load_file(cfg.train)
            index = np.arange(len(file))
            if cfg.held_out_index is not None:
                held = self._held_out_rows(file.n_rows)[file.rows]
                self._index["test"] = (file, index[held])
                index = index[~held]
            if cfg.valid is None and cfg.valid_fraction > 0:
                n_valid = max(1, round(len(index) * cfg.valid_fraction))
                if n_valid >= len(index):
                    raise ValueError(
                        f"valid_fraction {cfg.valid_fraction} leaves no training molecules "
                        f"({len(index)} in {cfg.train})"
                    )
                is_valid = np.zeros(len(index), dtype=bool)
                is_valid[np.random.default_rng(0).permutation(len(index))[:n_valid]] = True
                self._index["valid"] = (file, index[is_valid])
                index = index[~is_valid]
            if cfg.max_molecules is not None:
                index = index[: cfg.max_molecules]
            self._index["train"] = (file, index)
        return self._index[split]

    def _file_lut(self, file: _FileData) -> np.ndarray:
        """File-local id -> tokenizer id."""
        key = id(file)
        if key not in self._lut:
            get = self.tokenizer.stoi.get
            dtype = np.int16 if len(self.tokenizer) < 2**15 else np.int32
            self._lut[key] = np.asarray([get(t, UNK_ID) for t in file.itos], dtype=dtype)
        return self._lut[key]

    def _split(self, split: str) -> _Split:
        if split in self._splits:
            return self._splits[split]
        file, index = self._raw_split(split)
        data = _Split(file, index, self._file_lut(file), self.config.max_length)
        report_dropped(
            logger,
            f"molecules {split}",
            len(data) + data.dropped_long,
            {f"longer than {self.config.max_length} tokens": data.dropped_long},
            "raise task.max_length to keep them",
        )
        self._splits[split] = data
        return data

    # ---------------------------------------------------------------- public API

    @property
    def splits(self) -> list[str]:
        """The configured split names."""
        cfg = self.config
        out = ["train"]
        if cfg.valid is not None or cfg.valid_fraction > 0:
            out.append("valid")
        if cfg.test is not None or cfg.held_out_index is not None:
            out.append("test")
        return out

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>`` (0)."""
        return PAD_ID

    def state_dict(self) -> dict[str, Any]:
        """Tokenizer state for checkpoints (``weights_only`` safe)."""
        return {"tokenizer": self.tokenizer.state_dict()}

    def generator_kwargs(self) -> dict[str, int]:
        """Keyword arguments the sequence generator needs from the data."""
        return {
            "vocab_size": len(self.tokenizer),
            "pad_id": PAD_ID,
            "bos_id": BOS_ID,
            "eos_id": EOS_ID,
        }

    def _pad(self, seqs: Sequence[Sequence[int] | np.ndarray]) -> torch.Tensor:
        if not seqs:
            return torch.empty((0, 0), dtype=torch.long)
        width = max(len(s) for s in seqs) + 2
        out = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
        out[:, 0] = BOS_ID
        for r, s in enumerate(seqs):
            out[r, 1 : len(s) + 1] = s
            out[r, len(s) + 1] = EOS_ID
        return torch.from_numpy(out)

    def encode(self, smiles: Sequence[str]) -> torch.Tensor:
        """Padded ``(B, T)`` LongTensor ``<bos> t1 ... tn <eos> <pad> ...`` of SMILES strings
        (canonicalized when configured; no length filter; unknown tokens -> ``<unk>``)."""
        return self._pad(self.tokenizer.encode_batch(list(smiles)))

    def decode(self, tokens: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """SMILES of each row (``""`` where a SELFIES cannot be decoded)."""
        rows = tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens
        return [self.tokenizer.decode(r) for r in rows]

    def sentences(self, split: str) -> list[str]:
        """The (canonical) SMILES kept in ``split``, in file order."""
        data = self._split(split)
        return data.file.smiles(data.index)

    def draw_grid(self, samples: Sequence[str], path: str | Path) -> int:
        """PNG grid of decoded samples (:func:`draw_grid`); returns how many are valid."""
        return draw_grid(samples, path)

    def smiles(self, split: str) -> list[str]:
        """Alias of :meth:`sentences`."""
        return self.sentences(split)

    def train_smiles(self) -> list[str]:
        """Canonical SMILES of the training split (for novelty)."""
        return self.sentences("train")

    def num_sentences(self, split: str) -> int:
        """Number of molecules kept in ``split``."""
        return len(self._split(split))

    def max_sequence_length(self, split: str) -> int:
        """Longest token sequence of ``split`` including ``<bos>`` and ``<eos>``."""
        lengths = self._split(split).lengths
        return int(lengths.max()) if len(lengths) else 0

    def num_target_tokens(self, batch: torch.Tensor) -> int:
        """Predicted tokens in a batch: everything after ``<bos>`` including ``<eos>``, no pad."""
        return int((batch[:, 1:] != PAD_ID).sum().item())

    def _batch(self, data: _Split, index: np.ndarray) -> torch.Tensor:
        """The padded batch of the molecules ``index`` of a split (for ``batches``)."""
        return self._pad([data.seq(i) for i in index.tolist()])

    def describe(self) -> str:
        """One line: molecules per split, tokenizer and vocab size, skipped/dropped counts."""
        parts = []
        long = 0
        files: dict[int, _FileData] = {}
        for split in self.splits:
            s = self._split(split)
            parts.append(f"{split} {len(s)}")
            long += s.dropped_long
            files[id(s.file)] = s.file
        invalid = sum(f.n_invalid for f in files.values())
        unencodable = sum(f.n_unencodable for f in files.values())
        skipped = f"skipped {invalid} invalid SMILES"
        if self.config.representation == "selfies":
            skipped += f", {unencodable} not SELFIES-encodable"
        if self.config.max_length is not None:
            skipped += f", dropped {long} long (> {self.config.max_length} tokens)"
        return (
            f"molecules: {' / '.join(parts)}; {self.config.representation} tokens, "
            f"vocab {len(self.tokenizer)}; {skipped}"
        )

    def __repr__(self) -> str:
        return (
            f"MoleculeTask(train={self.config.train!r}, "
            f"representation={self.config.representation!r})"
        )


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def _check_cache(data: _FileData) -> None:
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


def _read_cache(path: Path) -> _FileData | None:
    """The cached file data at ``path``, or None when absent, of another cache version, or
    unreadable (a zero-byte, truncated or foreign file: logged as one warning line naming it;
    the caller processes the data file again and writes the cache anew)."""
    if not path.is_file():
        return None
    start = time.perf_counter()
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != _CACHE_VERSION:
                return None
            counts = z["counts"].tolist()
            data = _FileData(
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
        _check_cache(data)
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be read is rebuilt
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        logger.warning("%s: unreadable molecule cache (%s); rebuilding it", path, reason)
        return None
    data.seconds = time.perf_counter() - start
    data.from_cache = True
    return data


def _write_cache(path: Path, data: _FileData) -> bool:
    """Write ``data`` to ``path`` atomically and durably (:func:`latentebm.atomic.atomic_write`:
    a crash leaves the old cache or none, never a truncated one); returns False (and logs) on
    failure."""
    try:
        with atomic_write(path) as handle:
            np.savez(
                handle,
                version=np.int64(_CACHE_VERSION),
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
