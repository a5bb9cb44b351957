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
as in :mod:`latentebm.tasks.sequence`. :meth:`MoleculeTask.decode` always returns SMILES (SELFIES
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

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from latentebm.data import resolve_data_path
from latentebm.hf_data import is_hf_source, materialize
from latentebm.tasks.molecule_files import (
    FileData,
    MoleculeDataError,
    cache_paths,
    gather,
    held_out_rows,
    process_file,
    read_cache,
    write_cache,
)
from latentebm.tasks.molecule_tokens import (
    SMILES_REGEX,
    MoleculeTokenizer,
    canonical_smiles,
    draw_grid,
    rdkit_chem,
    selfies_module,
    tokenize_smiles,
)
from latentebm.tasks.sequence import UNK_ID, SequenceTask, hf_cache
from latentebm.tasks.splits import (
    check_minimum,
    check_valid_fraction,
    check_valid_source,
    valid_mask,
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


class _Split:
    """A split: indices into its file's molecules and the global-vocabulary token store."""

    def __init__(
        self, file: FileData, index: np.ndarray, lut: np.ndarray, max_length: int | None
    ) -> None:
        lengths = (file.offsets[1:] - file.offsets[:-1])[index]
        self.dropped_long = 0
        if max_length is not None:
            keep = lengths <= max_length
            self.dropped_long = int((~keep).sum())
            index, lengths = index[keep], lengths[keep]
        self.file = file
        self.index = index
        local, self.offsets = gather(file.ids, file.offsets, index)
        self.ids = lut[local]  # global ids, int16 or int32
        self.lengths = lengths + 2  # with <bos> and <eos>

    def __len__(self) -> int:
        return len(self.index)

    def seq(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


class MoleculeTask(SequenceTask):
    """Molecule data (SMILES/SELFIES), tokenizer and length-bucketed batching."""

    default_metrics: tuple[str, ...] = ("molecules",)
    """What ``latentebm evaluate`` computes unless told: validity, uniqueness, novelty."""
    label: ClassVar[str] = "molecules"
    tokenizer_setting: ClassVar[str] = "representation"
    length_hint: ClassVar[str] = "raise task.max_length to keep them"
    log: ClassVar[logging.Logger] = logger

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
            check_valid_fraction(self.valid_fraction)
            check_valid_source(self.valid, self.valid_fraction)
            if self.test is not None and self.held_out_index is not None:
                raise ValueError(
                    "set either task.test or task.held_out_index, not both (with your own "
                    "task.test, set task.held_out_index=null)"
                )
            check_minimum("min_freq", self.min_freq, 1)
            check_minimum("max_length", self.max_length, 1)
            check_minimum("max_molecules", self.max_molecules, 1)
            check_minimum("n_jobs", self.n_jobs, 1)

    def __init__(
        self,
        config: MoleculeTask.Config,
        data_root: str | os.PathLike[str] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Load the training data and build (or, given a checkpoint ``state``, restore) the
        tokenizer; with ``state`` nothing is read until a split is used."""
        self._files: dict[str, FileData] = {}
        self._index: dict[str, tuple[FileData, np.ndarray]] = {}
        self._lut: dict[int, np.ndarray] = {}
        super().__init__(config, data_root, state)

    def _tokenizer_from_state(self, state: dict[str, Any]) -> MoleculeTokenizer:
        return MoleculeTokenizer.from_state_dict(state)

    def _build_tokenizer(self) -> MoleculeTokenizer:
        config = self.config
        rdkit_chem()  # here, not first in a worker process as a traceback
        if config.representation == "selfies":
            selfies_module()
        file, index = self._raw_split("train")
        if not len(index):
            raise MoleculeDataError(
                f"{config.train}: no valid training molecules ({file.n_rows} rows, "
                f"{file.n_invalid} invalid SMILES)"
            )
        counts = np.bincount(gather(file.ids, file.offsets, index)[0], minlength=len(file.itos))
        return MoleculeTokenizer.build(
            {t: int(c) for t, c in zip(file.itos, counts, strict=True) if c > 0},
            config.representation,
            config.canonicalize,
            config.min_freq,
        )

    # ---------------------------------------------------------------- reading files

    def _resolve(self, name: str) -> Path:
        if is_hf_source(name):  # a Hugging Face dataset's column, as a .txt of SMILES
            columns = [self.config.column] if self.config.column else ["smiles", "SMILES"]
            folder = hf_cache(self.config.cache_dir)
            return materialize(name, columns, folder, data_root=self.data_root)
        return resolve_data_path(name, self.data_root)

    def _load_file(self, name: str) -> FileData:
        """The processed file ``name`` (from memory, the cache, or processed now)."""
        if name in self._files:
            return self._files[name]
        cfg = self.config
        path = self._resolve(name)
        caches = (
            cache_paths(
                path,
                root=self.data_root,
                cache_dir=cfg.cache_dir,
                column=cfg.column,
                representation=cfg.representation,
                canonicalize=cfg.canonicalize,
            )
            if cfg.cache
            else []
        )
        data = next((d for d in map(read_cache, caches) if d is not None), None)
        if data is None:
            data = process_file(
                path,
                column=cfg.column,
                canonicalize=cfg.canonicalize,
                representation=cfg.representation,
                n_jobs=cfg.n_jobs,
            )
            for cache in caches:
                if write_cache(cache, data):
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
        return held_out_rows(
            self._resolve(cfg.held_out_index),
            n_rows,
            base=cfg.held_out_index_base,
            train=cfg.train,
            index=cfg.held_out_index,
        )

    def _test_configured(self) -> bool:
        return self.config.test is not None or self.config.held_out_index is not None

    def _raw_split(self, split: str) -> tuple[FileData, np.ndarray]:
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
                is_valid = valid_mask(
                    len(index),
                    cfg.valid_fraction,
                    none_left=f"valid_fraction {cfg.valid_fraction} leaves no training molecules "
                    f"({len(index)} in {cfg.train})",
                )
                self._index["valid"] = (file, index[is_valid])
                index = index[~is_valid]
            if cfg.max_molecules is not None:
                index = index[: cfg.max_molecules]
            self._index["train"] = (file, index)
        return self._index[split]

    def _file_lut(self, file: FileData) -> np.ndarray:
        """File-local id -> tokenizer id."""
        key = id(file)
        if key not in self._lut:
            get = self.tokenizer.stoi.get
            dtype = np.int16 if len(self.tokenizer) < 2**15 else np.int32
            self._lut[key] = np.asarray([get(t, UNK_ID) for t in file.itos], dtype=dtype)
        return self._lut[key]

    def _build_split(self, split: str) -> _Split:
        file, index = self._raw_split(split)
        return _Split(file, index, self._file_lut(file), self.config.max_length)

    def _dropped(self, data: _Split) -> dict[str, int]:
        return {f"longer than {self.config.max_length} tokens": data.dropped_long}

    # ---------------------------------------------------------------- public API

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

    def max_sequence_length(self, split: str) -> int:
        """Longest token sequence of ``split`` including ``<bos>`` and ``<eos>``."""
        lengths = self._split(split).lengths
        return int(lengths.max()) if len(lengths) else 0

    def describe(self) -> str:
        """One line: molecules per split, tokenizer and vocab size, skipped/dropped counts."""
        counts, data = self._kept_per_split()
        files = {id(s.file): s.file for s in data}
        invalid = sum(f.n_invalid for f in files.values())
        unencodable = sum(f.n_unencodable for f in files.values())
        skipped = f"skipped {invalid} invalid SMILES"
        if self.config.representation == "selfies":
            skipped += f", {unencodable} not SELFIES-encodable"
        if self.config.max_length is not None:
            long = sum(s.dropped_long for s in data)
            skipped += f", dropped {long} long (> {self.config.max_length} tokens)"
        return (
            f"molecules: {counts}; {self.config.representation} tokens, "
            f"vocab {len(self.tokenizer)}; {skipped}"
        )

    def __repr__(self) -> str:
        return (
            f"MoleculeTask(train={self.config.train!r}, "
            f"representation={self.config.representation!r})"
        )
