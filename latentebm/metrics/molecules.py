"""The MOSES molecule metric suite, reimplemented (MOSES itself no longer installs).

Definitions follow the MOSES code (``molecularsets/moses``, ``moses/metrics/metrics.py`` and
``utils.py``), which produced its published tables; where the MOSES paper and code disagree the
code is followed and the difference is noted. ``generated`` below is a list of SMILES strings.

* **valid**: fraction of ``generated`` that RDKit parses and sanitises (empty string: invalid).
  All other metrics use the *valid* molecules only, as canonical SMILES (duplicates kept).
* **unique@k**: number of distinct canonical SMILES among the first ``k`` valid molecules,
  divided by ``min(k, n_valid)`` (with a warning when fewer than ``k`` are valid).
* **Novelty**: fraction of the distinct valid canonical SMILES that are not in the training
  set. Unlike MOSES (which compares to the training strings as stored), the training SMILES are
  canonicalised here with the same RDKit, so a spelling difference never counts as novel.
* **IntDiv** (p = 1) / **IntDiv2** (p = 2): ``1 - mean_i (mean_j T_ij^p)^(1/p)`` over all pairs
  ``(i, j)`` of valid generated molecules, self-pairs and duplicates included, ``T`` the Tanimoto
  similarity of Morgan fingerprints (radius 2, 1,024 bits). This is the MOSES code; the paper's
  ``1 - (mean_ij T_ij^p)^(1/p)`` is also returned as ``IntDiv2/paper`` (equal for p = 1).
* **SNN/ref**: ``mean_i max_j T(g_i, r_j)`` over valid generated ``g_i`` and reference ``r_j``.
* **Frag/ref**, **Scaf/ref**: cosine similarity of the count vectors of BRICS fragments
  (``Chem.FragmentOnBRICSBonds``, canonical SMILES of each piece, dummy atoms included) and of
  Bemis-Murcko scaffolds (canonical SMILES; molecules whose scaffold has fewer than 2 rings, or
  is empty, contribute nothing, as MOSES's ``min_rings=2``); NaN when either side is empty.
* **Filters**: fraction of valid molecules that pass :func:`mol_passes_filters`: no ring of 8 or
  more atoms, no charged atom, only C, N, S, O, F, Cl, Br, H, no match (on the molecule with
  explicit hydrogens) of the 22 MCF and 480 PAINS SMARTS, non-empty non-isomeric SMILES that
  parses again.
* **FCD/ref**: Fréchet distance between Gaussians fitted to the ChemNet (fcd_torch) penultimate
  activations of the valid generated SMILES and the reference statistics; for MOSES the
  reference statistics are MOSES's own (``fcd_ref_stats.npz``), never recomputed.
* **logP, SA, QED, weight**: 1-D Wasserstein-1 distance (``scipy.stats.wasserstein_distance``)
  between the property values of the valid generated molecules and of the reference set
  (Crippen logP, RDKit Contrib SA score, QED, average molecular weight).

Reference statistics of the MOSES test sets (packed fingerprints, fragment and scaffold counts,
property values) are computed once by :meth:`MosesReference.load_or_build` and cached in an
``.npz`` file (loaded with ``allow_pickle=False``). RDKit work runs in ``n_jobs`` worker
processes; Tanimoto matrices are computed with torch matrix products in chunks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from latentebm.atomic import atomic_write
from latentebm.data import TextFile, open_text
from latentebm.processes import caller_script_hidden, interrupts_deferred
from latentebm.progress import ProgressLines

logger = logging.getLogger(__name__)

MORGAN_RADIUS = 2
MORGAN_BITS = 1024
PACKED_BYTES = MORGAN_BITS // 8
ALLOWED_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
MAX_RING_ATOMS = 7
"""Rings of more than this many atoms fail the filters (MOSES: ``len(ring) >= 8``)."""
SCAFFOLD_MIN_RINGS = 2
PROPERTY_NAMES = ("logP", "SA", "QED", "weight")
REFERENCE_SETS = {"Test": "test", "TestSF": "test_scaffolds"}
"""Metric suffix -> MOSES file stem (``moses/<stem>.csv.gz``, ``<stem>_mu`` in the FCD npz)."""
CACHE_VERSION = 1
DEFAULT_CACHE_DIR = Path("~/.cache/latentebm")
MP_START_METHOD = (
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)
"""Start method of the worker processes (set to ``"spawn"`` or ``"fork"`` to override)."""
_FEATURES = ("fps", "frag", "scaf", "props", "filters")
FCD_PIECE = 1000
"""Molecules per ChemNet pass of :func:`chemnet_activations`. fcd_torch's memory grows with the
molecules of one call (measured: +0.6 GiB for 2,000, +0.9 GiB for 4,000; a 10,000-molecule call
took ``data_scripts/moses.py`` to 2.24 GiB), so passes stay small; progress is said between
them. Each pass starts fcd_torch's data-loading worker afresh (a fork: cheap next to the pass)."""
_CHUNK = 1000
_T = TypeVar("_T")
_R = TypeVar("_R")


# --------------------------------------------------------------------------------------------
# Parsing and process pool
# --------------------------------------------------------------------------------------------


@contextmanager
def _quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's C++ log (parse errors) inside the block."""
    from rdkit import rdBase

    blocker = rdBase.BlockLogs()
    try:
        yield
    finally:
        del blocker


def get_mol(smiles: str) -> Any:
    """RDKit molecule of ``smiles``, or ``None`` if it is empty, does not parse or sanitise.

    As MOSES's ``get_mol``. Call inside :func:`_quiet_rdkit` to keep RDKit's log quiet.
    """
    from rdkit import Chem

    if not isinstance(smiles, str) or len(smiles) == 0:
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # noqa: BLE001 - any sanitisation error means invalid
        return None
    return mol


def _canonical_chunk(smiles: Sequence[str]) -> list[str | None]:
    from rdkit import Chem

    out: list[str | None] = []
    with _quiet_rdkit():
        for s in smiles:
            mol = get_mol(s)
            out.append(None if mol is None else Chem.MolToSmiles(mol))
    return out


def _chunks(items: Sequence[_T], n_jobs: int, size: int = _CHUNK) -> list[Sequence[_T]]:
    if n_jobs <= 1:  # chunks in this process too, so that progress can be said (ProgressLines)
        return [items[i : i + size] for i in range(0, len(items), size)]
    size = max(1, min(size, math.ceil(len(items) / (4 * n_jobs))))
    return [items[i : i + size] for i in range(0, len(items), size)]


class _Runner:
    """Maps a chunk function in this process (``n_jobs <= 1``) or in a pool of spawned ones.

    The pool starts on first use and is reused until :meth:`close`. Workers start with
    :data:`MP_START_METHOD`: ``forkserver`` (where available) forks them from a clean server
    process that has imported this module once, so they are cheap to start and safe next to
    torch's threads; ``spawn`` elsewhere.
    """

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = max(1, int(n_jobs))
        self._pool: Executor | None = None

    def map(
        self,
        func: Callable[[Any], _R],
        items: Sequence[Any],
        *,
        label: str = "",
        sizes: Sequence[int] | None = None,
    ) -> list[_R]:
        """``[func(item) for item in items]``, in order, here or in the worker processes; a
        phase longer than a few seconds says how far it is (``label``: what it does, ``sizes``:
        molecules per item; :class:`~latentebm.progress.ProgressLines`)."""
        sizes = list(sizes) if sizes is not None else [1] * len(items)
        progress = ProgressLines(logger, label or "molecules", sum(sizes), "molecules")
        with progress:
            if self.n_jobs <= 1 or len(items) <= 1:
                out = []
                for item, size in zip(items, sizes, strict=True):
                    out.append(func(item))
                    progress.update(size)
                return out
            if self._pool is None:
                ctx = multiprocessing.get_context(MP_START_METHOD)
                if MP_START_METHOD == "forkserver":
                    ctx.set_forkserver_preload(["latentebm._forkserver_preload"])
                self._pool = ProcessPoolExecutor(
                    max_workers=self.n_jobs, mp_context=ctx, initializer=_worker_ignores_ctrl_c
                )
            # workers start while the chunks are submitted: all of them, or none, before Ctrl-C
            with caller_script_hidden(), interrupts_deferred():
                results = self._pool.map(func, items)
            out = []
            for result, size in zip(results, sizes, strict=True):
                out.append(result)
                progress.update(size)
            return out

    def close(self, abort: bool = False) -> None:
        """Shut the pool down after all submitted chunks (default), or at once (``abort``:
        Ctrl-C or an error): the workers are stopped, the queued chunks cancelled."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if abort:
            for worker in list((getattr(pool, "_processes", None) or {}).values()):
                if worker.is_alive():
                    worker.terminate()
        pool.shutdown(wait=True, cancel_futures=abort)

    def __enter__(self) -> _Runner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(abort=exc_type is not None)


def _worker_ignores_ctrl_c() -> None:
    """A pool worker leaves Ctrl-C to the parent, which stops the pool (:meth:`_Runner.close`):
    a terminal's Ctrl-C reaches the whole process group, and a worker interrupted while it
    waits for work would print a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextmanager
def _runner_for(n_jobs: int | _Runner) -> Iterator[_Runner]:
    """``n_jobs`` itself if it is a runner (its owner closes it), else a new runner closed on
    exit (at once on an error or Ctrl-C: :meth:`_Runner.close`)."""
    if isinstance(n_jobs, _Runner):
        yield n_jobs
        return
    with _Runner(n_jobs) as runner:
        yield runner


def canonicalize(smiles: Sequence[str], n_jobs: int | _Runner = 1) -> list[str | None]:
    """Canonical SMILES (RDKit ``MolToSmiles`` defaults) of each string, ``None`` if invalid."""
    with _runner_for(n_jobs) as runner:
        chunks = _chunks(list(smiles), runner.n_jobs, 4 * _CHUNK)
        sizes = [len(c) for c in chunks]
        parts = runner.map(_canonical_chunk, chunks, label="canonical SMILES", sizes=sizes)
    return [s for part in parts for s in part]


def valid_canonical(smiles: Sequence[str], n_jobs: int | _Runner = 1) -> list[str]:
    """Canonical SMILES of the valid strings, in order, duplicates kept (MOSES's
    ``remove_invalid(gen, canonize=True)``)."""
    return [s for s in canonicalize(smiles, n_jobs) if s is not None]


# --------------------------------------------------------------------------------------------
# Validity, uniqueness, novelty
# --------------------------------------------------------------------------------------------


def fraction_valid(generated: Sequence[str], n_jobs: int | _Runner = 1) -> float:
    """Fraction of ``generated`` that RDKit parses and sanitises; an empty string is invalid."""
    if len(generated) == 0:
        return float("nan")
    canon = canonicalize(generated, n_jobs)
    return sum(s is not None for s in canon) / len(canon)


def _unique_at(valid: Sequence[str], k: int | None) -> float:
    if k is not None:
        if len(valid) < k:
            warnings.warn(
                f"unique@{k}: only {len(valid)} valid molecules; using all of them",
                stacklevel=3,
            )
        valid = valid[:k]
    if len(valid) == 0:
        return float("nan")
    return len(set(valid)) / len(valid)


def fraction_unique(
    generated: Sequence[str], k: int | None = None, n_jobs: int | _Runner = 1
) -> float:
    """unique@k: distinct canonical SMILES among the first ``k`` *valid* molecules, divided by
    their number (all valid ones when ``k`` is None or fewer than ``k`` are valid: warns).

    Invalid strings are dropped first, so they never count; spellings of one molecule count
    once. NaN when nothing is valid.
    """
    return _unique_at(valid_canonical(generated, n_jobs), k)


def canonical_set(smiles: Iterable[str], n_jobs: int | _Runner = 1) -> set[str]:
    """Set of the canonical SMILES of the valid strings of ``smiles``."""
    return {s for s in canonicalize(list(smiles), n_jobs) if s is not None}


def _novelty(valid: Sequence[str], train_canonical: Set[str]) -> float:
    unique = set(valid)
    if not unique:
        return float("nan")
    return len(unique - train_canonical) / len(unique)


def novelty(
    generated: Sequence[str],
    train: Iterable[str],
    n_jobs: int | _Runner = 1,
    *,
    train_is_canonical: bool = False,
) -> float:
    """Fraction of the distinct valid canonical generated SMILES not in the training set.

    ``train`` is canonicalised first unless ``train_is_canonical`` (e.g. the output of
    :func:`canonical_set` or :func:`load_canonical_smiles`). NaN when nothing is valid.
    """
    with _runner_for(n_jobs) as runner:
        valid = valid_canonical(generated, runner)
        if train_is_canonical:
            train_set = train if isinstance(train, Set) else set(train)
        else:
            train_set = canonical_set(train, runner)
    return _novelty(valid, train_set)


# --------------------------------------------------------------------------------------------
# Per-molecule features (fingerprints, fragments, scaffolds, properties, filters)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _morgan_generator() -> Any:
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=MORGAN_BITS)


def _morgan_packed(mol: Any) -> np.ndarray:
    """Packed (128 bytes) Morgan bits; equals MOSES's ``GetMorganFingerprintAsBitVect(mol, 2,
    nBits=1024)``."""
    return np.packbits(_morgan_generator().GetFingerprintAsNumPy(mol).astype(np.uint8))


def _fragments(mol: Any) -> list[str]:
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.FragmentOnBRICSBonds(mol)).split(".")


def _scaffold(mol: Any, min_rings: int = SCAFFOLD_MIN_RINGS) -> str | None:
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    except Exception:  # noqa: BLE001 - as MOSES: no scaffold
        return None
    smiles = Chem.MolToSmiles(scaffold)
    if smiles == "" or scaffold.GetRingInfo().NumRings() < min_rings:
        return None
    return smiles


@lru_cache(maxsize=1)
def _sascorer() -> Any:
    from rdkit import RDConfig

    path = os.path.join(RDConfig.RDContribDir, "SA_Score")
    if path not in sys.path:
        sys.path.append(path)
    import sascorer  # type: ignore[import-not-found]

    return sascorer


def _properties(mol: Any) -> tuple[float, float, float, float]:
    from rdkit.Chem import QED, Crippen, Descriptors

    return (
        float(Crippen.MolLogP(mol)),
        float(_sascorer().calculateScore(mol)),
        float(QED.qed(mol)),
        float(Descriptors.MolWt(mol)),
    )


@lru_cache(maxsize=4)
def _compiled_filters(smarts: tuple[str, ...]) -> list[Any]:
    from rdkit import Chem

    patterns = []
    for s in smarts:
        pattern = Chem.MolFromSmarts(s)
        if pattern is None:
            raise ValueError(f"filter SMARTS does not parse: {s!r}")
        patterns.append(pattern)
    return patterns


def mol_passes_filters(mol: Any, filters: Sequence[str]) -> bool:
    """MOSES's ``mol_passes_filters``: ``mol`` (RDKit molecule or SMILES) fails if it is
    invalid, has a ring of 8 or more atoms, a charged atom, an atom other than C, N, S, O, F,
    Cl, Br, H, matches one of ``filters`` (SMARTS; :func:`load_filter_smarts`) after
    ``AddHs``, or its non-isomeric SMILES is empty or does not parse again."""
    from rdkit import Chem

    if isinstance(mol, str):
        with _quiet_rdkit():
            mol = get_mol(mol)
    if mol is None:
        return False
    ring_info = mol.GetRingInfo()
    if any(len(ring) > MAX_RING_ATOMS for ring in ring_info.AtomRings()):
        return False
    if any(atom.GetFormalCharge() != 0 for atom in mol.GetAtoms()):
        return False
    if any(atom.GetSymbol() not in ALLOWED_ATOMS for atom in mol.GetAtoms()):
        return False
    h_mol = Chem.AddHs(mol)
    if any(h_mol.HasSubstructMatch(p) for p in _compiled_filters(tuple(filters))):
        return False
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    if not smiles:
        return False
    with _quiet_rdkit():
        return Chem.MolFromSmiles(smiles) is not None


_Task = tuple[Sequence[str], Sequence[int] | None, tuple[str, ...], tuple[str, ...]]


def _features_chunk(task: _Task) -> dict[str, Any]:
    """Features of valid SMILES ``smiles`` (weights multiply the fragment/scaffold counts)."""
    smiles, weights, what, filters = task
    with _quiet_rdkit():  # also silences RDKit deprecation messages (SA scorer)
        return _features_chunk_quiet(smiles, weights, what, filters)


def _features_chunk_quiet(
    smiles: Sequence[str],
    weights: Sequence[int] | None,
    what: tuple[str, ...],
    filters: tuple[str, ...],
) -> dict[str, Any]:
    n = len(smiles)
    out: dict[str, Any] = {"seconds": dict.fromkeys(("parse", *what), 0.0)}
    t0 = time.process_time()
    mols = [get_mol(s) for s in smiles]
    bad = [s for s, m in zip(smiles, mols, strict=True) if m is None]
    if bad:
        raise ValueError(f"invalid SMILES passed to feature computation: {bad[:3]}")
    out["seconds"]["parse"] = time.process_time() - t0
    w = [1] * n if weights is None else weights

    def timed(name: str, fn: Callable[[], Any]) -> None:
        t = time.process_time()
        out[name] = fn()
        out["seconds"][name] += time.process_time() - t

    if "fps" in what:
        timed(
            "fps",
            lambda: (
                np.stack([_morgan_packed(m) for m in mols])
                if n
                else np.zeros((0, PACKED_BYTES), np.uint8)
            ),
        )
    if "frag" in what:

        def frag() -> Counter[str]:
            c: Counter[str] = Counter()
            for m, k in zip(mols, w, strict=True):
                for f in _fragments(m):
                    c[f] += k
            return c

        timed("frag", frag)
    if "scaf" in what:

        def scaf() -> Counter[str]:
            c: Counter[str] = Counter()
            for m, k in zip(mols, w, strict=True):
                s = _scaffold(m)
                if s is not None:
                    c[s] += k
            return c

        timed("scaf", scaf)
    if "props" in what:
        timed(
            "props",
            lambda: np.array([_properties(m) for m in mols], np.float64).reshape(n, 4),
        )
    if "filters" in what:
        timed("filters", lambda: np.array([mol_passes_filters(m, filters) for m in mols], bool))
    return out


@dataclass
class MolFeatures:
    """Features of a list of valid molecules (one row per molecule, duplicates included)."""

    n: int
    fps: np.ndarray | None = None
    """``(n, 128)`` uint8: Morgan bits (radius 2, 1,024 bits), ``np.packbits`` per row."""
    fragments: Counter[str] = field(default_factory=Counter)
    scaffolds: Counter[str] = field(default_factory=Counter)
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    """``PROPERTY_NAMES`` -> ``(n,)`` float64."""
    passes_filters: np.ndarray | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """Per-feature CPU seconds summed over the worker processes."""


def compute_features(
    valid_smiles: Sequence[str],
    what: Sequence[str] = _FEATURES,
    *,
    filters: Sequence[str] = (),
    n_jobs: int | _Runner = 1,
    dedupe: bool = True,
) -> MolFeatures:
    """Features ``what`` (of ``fps``, ``frag``, ``scaf``, ``props``, ``filters``) of valid
    SMILES. With ``dedupe`` each distinct string is processed once and its results repeated
    (fragment and scaffold counts weighted by multiplicity): the same numbers, less work."""
    what = tuple(w for w in _FEATURES if w in what)
    if "filters" in what and not filters:
        raise ValueError("'filters' needs the filter SMARTS (see load_filter_smarts)")
    smiles = list(valid_smiles)
    if dedupe:
        uniq, inverse, counts = (
            np.unique(np.array(smiles, dtype=object), return_inverse=True, return_counts=True)
            if smiles
            else (np.array([], object), np.array([], np.int64), np.array([], np.int64))
        )
        work, weights = [str(s) for s in uniq], [int(c) for c in counts]
    else:
        work, weights, inverse = smiles, [1] * len(smiles), None
    with _runner_for(n_jobs) as runner:
        idx = _chunks(list(range(len(work))), runner.n_jobs)
        tasks = [
            ([work[i] for i in ix], [weights[i] for i in ix], what, tuple(filters)) for ix in idx
        ]
        parts = runner.map(
            _features_chunk,
            tasks,
            label=f"molecule features ({', '.join(what)})",
            sizes=[len(t[0]) for t in tasks],
        )
    feats = MolFeatures(n=len(smiles))
    seconds: Counter[str] = Counter()
    for p in parts:
        seconds.update(p["seconds"])
    feats.cpu_seconds = dict(seconds)

    def rows(name: str, empty: np.ndarray) -> np.ndarray:
        arr = np.concatenate([p[name] for p in parts]) if parts else empty
        return arr[inverse] if inverse is not None else arr

    if "fps" in what:
        feats.fps = rows("fps", np.zeros((0, PACKED_BYTES), np.uint8))
    if "frag" in what:
        for p in parts:
            feats.fragments.update(p["frag"])
    if "scaf" in what:
        for p in parts:
            feats.scaffolds.update(p["scaf"])
    if "props" in what:
        props = rows("props", np.zeros((0, 4)))
        feats.properties = {k: props[:, i].copy() for i, k in enumerate(PROPERTY_NAMES)}
    if "filters" in what:
        feats.passes_filters = rows("filters", np.zeros(0, bool))
    return feats


def morgan_fingerprints(smiles: Sequence[str], n_jobs: int | _Runner = 1) -> np.ndarray:
    """Packed Morgan fingerprints ``(n, 128)`` uint8 of *valid* SMILES (raises on invalid)."""
    fps = compute_features(smiles, ("fps",), n_jobs=n_jobs).fps
    assert fps is not None
    return fps


# --------------------------------------------------------------------------------------------
# Tanimoto: SNN and internal diversity
# --------------------------------------------------------------------------------------------

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int32)


def _unpack(packed: np.ndarray, dtype: Any, device: Any) -> Any:
    import torch

    bits = np.unpackbits(np.ascontiguousarray(packed, dtype=np.uint8), axis=1)
    return torch.from_numpy(bits).to(device=device, dtype=dtype)


def _popcounts(packed: np.ndarray) -> np.ndarray:
    return _POPCOUNT[packed].sum(axis=1) if len(packed) else np.zeros(0, np.int32)


def _tanimoto_blocks(
    ref: np.ndarray,
    gen: np.ndarray,
    *,
    device: str = "cpu",
    block: int = 4096,
    exact_bf16: bool = True,
) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(gen_start, ref_start, T)``: float32 torch Tanimoto blocks ``T[ref, gen]``.

    ``T = |a&b| / (|a| + |b| - |a&b|)``, 1 when both are empty (as MOSES). The intersection
    counts come from a matrix product of 0/1 matrices; with ``exact_bf16`` it is done in
    bfloat16 (several times faster on CPUs with bf16 units) whenever the generated block's
    popcounts are <= 256, where every count is an integer <= 256 and so exact in bfloat16;
    otherwise in float32 (exact up to 2^24).
    """
    import torch

    gen_pop_all = _popcounts(gen)
    ref_pop_all = _popcounts(ref)
    gen_blocks = []
    for g0 in range(0, len(gen), block):
        pop = gen_pop_all[g0 : g0 + block]
        dtype = torch.bfloat16 if exact_bf16 and pop.max(initial=0) <= 256 else torch.float32
        gen_blocks.append(
            (
                g0,
                _unpack(gen[g0 : g0 + block], dtype, device),
                torch.from_numpy(pop.astype(np.float32)).to(device),
            )
        )
    for r0 in range(0, len(ref), block):
        r_cache: dict[Any, Any] = {}
        r_pop = torch.from_numpy(ref_pop_all[r0 : r0 + block].astype(np.float32)).to(device)
        for g0, g_bits, g_pop in gen_blocks:
            if g_bits.dtype not in r_cache:
                r_cache[g_bits.dtype] = _unpack(ref[r0 : r0 + block], g_bits.dtype, device)
            inter = (r_cache[g_bits.dtype] @ g_bits.T).float()
            denom = torch.add(r_pop[:, None], g_pop[None, :]).sub_(inter)
            sim = inter.div_(denom)
            if bool((r_pop == 0).any()) and bool((g_pop == 0).any()):
                sim.nan_to_num_(nan=1.0)  # 0 / 0: two empty fingerprints
            yield g0, r0, sim


def tanimoto_matrix(a: np.ndarray, b: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Tanimoto similarities ``(len(a), len(b))`` float32 of packed fingerprints."""
    out = np.zeros((len(a), len(b)), np.float32)
    for g0, r0, sim in _tanimoto_blocks(a, b, device=device):
        if sim.shape == out.shape:
            return sim.cpu().numpy()
        out[r0 : r0 + sim.shape[0], g0 : g0 + sim.shape[1]] = sim.cpu().numpy()
    return out


def snn_from_fingerprints(
    generated_fps: np.ndarray,
    reference_fps: np.ndarray,
    *,
    device: str = "cpu",
    block: int = 4096,
    exact_bf16: bool = True,
) -> float:
    """SNN: mean over generated of the max Tanimoto similarity to the reference set.

    The reference rows are grouped by popcount ``a``: within a group ``T = i / (a + b - i)``
    increases with the intersection ``i``, so the group's best match for a generated molecule
    is its largest ``i`` (one max over the raw product, no element-wise Tanimoto over the
    whole matrix); exact, as the brute force. Products in bfloat16 when exact (see
    :func:`tanimoto_matrix`).
    """
    import torch

    if len(generated_fps) == 0 or len(reference_fps) == 0:
        return float("nan")
    gen_pop = _popcounts(generated_fps)
    ref_pop = _popcounts(reference_fps)
    order = np.argsort(ref_pop, kind="stable")
    values, starts = np.unique(ref_pop[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    best = torch.zeros(len(generated_fps), dtype=torch.float32, device=device)
    gen_blocks = []
    for g0 in range(0, len(generated_fps), block):
        pop = gen_pop[g0 : g0 + block]
        gen_blocks.append((g0, torch.from_numpy(pop.astype(np.float32)).to(device), int(pop.max())))
    unpacked: dict[tuple[int, Any], Any] = {}

    def gen_bits(g0: int, dtype: Any) -> Any:
        if (g0, dtype) not in unpacked:
            unpacked[g0, dtype] = _unpack(generated_fps[g0 : g0 + block], dtype, device)
        return unpacked[g0, dtype]

    progress = ProgressLines(logger, "SNN", len(reference_fps), "reference molecules")
    with progress:
        for a, start, end in zip(values.tolist(), starts.tolist(), ends.tolist(), strict=True):
            for r0 in range(start, end, block):
                rows = order[r0 : min(end, r0 + block)]
                r_bits: dict[Any, Any] = {}
                for g0, g_pop, g_max in gen_blocks:
                    exact = exact_bf16 and min(a, g_max) <= 256
                    dtype = torch.bfloat16 if exact else torch.float32
                    if dtype not in r_bits:
                        r_bits[dtype] = _unpack(reference_fps[rows], dtype, device)
                    inter = (r_bits[dtype] @ gen_bits(g0, dtype).T).max(dim=0).values.float()
                    sim = inter.div_((g_pop + a).sub_(inter))
                    if a == 0:
                        sim.nan_to_num_(nan=1.0)  # 0 / 0: two empty fingerprints
                    seg = best[g0 : g0 + len(g_pop)]
                    torch.maximum(seg, sim, out=seg)
                progress.update(len(rows))
    return float(best.double().mean())


def _intdiv_row_means(
    fps: np.ndarray, *, device: str = "cpu", block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per molecule ``i``: ``mean_j T_ij`` and ``mean_j T_ij^2`` over all ``j`` (self too).

    ``T`` is symmetric, so only blocks on and above the diagonal are computed."""
    import torch

    n = len(fps)
    s1 = torch.zeros(n, dtype=torch.float64, device=device)
    s2 = torch.zeros(n, dtype=torch.float64, device=device)
    starts = list(range(0, n, block))
    pairs = [(i0, j0) for bi, i0 in enumerate(starts) for j0 in starts[bi:]]
    with ProgressLines(logger, "IntDiv", len(pairs), "blocks of similarities") as progress:
        for i0, j0 in pairs:
            sim = torch.from_numpy(
                tanimoto_matrix(fps[i0 : i0 + block], fps[j0 : j0 + block], device=device)
            ).to(device)
            sq = sim.square()
            s1[j0 : j0 + sim.shape[1]] += sim.sum(dim=0, dtype=torch.float64)
            s2[j0 : j0 + sim.shape[1]] += sq.sum(dim=0, dtype=torch.float64)
            if j0 != i0:
                s1[i0 : i0 + sim.shape[0]] += sim.sum(dim=1, dtype=torch.float64)
                s2[i0 : i0 + sim.shape[0]] += sq.sum(dim=1, dtype=torch.float64)
            progress.update(1)
    return (s1 / n).cpu().numpy(), (s2 / n).cpu().numpy()


def internal_diversity_from_fingerprints(
    fps: np.ndarray, *, device: str = "cpu"
) -> dict[str, float]:
    """``IntDiv`` (p=1), ``IntDiv2`` (MOSES code: ``1 - mean_i sqrt(mean_j T_ij^2)``) and
    ``IntDiv2/paper`` (``1 - sqrt(mean_ij T_ij^2)``), all pairs with self-pairs."""
    if len(fps) == 0:
        return {"IntDiv": float("nan"), "IntDiv2": float("nan"), "IntDiv2/paper": float("nan")}
    m1, m2 = _intdiv_row_means(fps, device=device)
    return {
        "IntDiv": float(1 - m1.mean()),
        "IntDiv2": float(1 - np.sqrt(m2).mean()),
        "IntDiv2/paper": float(1 - math.sqrt(m2.mean())),
    }


def internal_diversity(
    generated: Sequence[str],
    p: int = 1,
    *,
    formula: str = "code",
    n_jobs: int | _Runner = 1,
    device: str = "cpu",
) -> float:
    """IntDiv_p of the valid molecules of ``generated`` (invalid dropped).

    ``formula="code"`` (MOSES code and tables): ``1 - mean_i (mean_j T_ij^p)^(1/p)``;
    ``"paper"``: ``1 - (mean_ij T_ij^p)^(1/p)``. Only p = 1 and 2 are supported.
    """
    if p not in (1, 2) or formula not in ("code", "paper"):
        raise ValueError("internal_diversity supports p in (1, 2), formula 'code' or 'paper'")
    fps = morgan_fingerprints(valid_canonical(generated, n_jobs), n_jobs)
    out = internal_diversity_from_fingerprints(fps, device=device)
    if p == 1:
        return out["IntDiv"]
    return out["IntDiv2"] if formula == "code" else out["IntDiv2/paper"]


def snn(
    generated: Sequence[str],
    reference: Sequence[str] | np.ndarray,
    *,
    n_jobs: int | _Runner = 1,
    device: str = "cpu",
) -> float:
    """SNN of the valid molecules of ``generated`` against ``reference`` (valid SMILES or
    packed fingerprints from :func:`morgan_fingerprints`)."""
    gen_fps = morgan_fingerprints(valid_canonical(generated, n_jobs), n_jobs)
    if isinstance(reference, np.ndarray):
        ref_fps = reference
    else:
        ref_fps = morgan_fingerprints(valid_canonical(reference, n_jobs), n_jobs)
    return snn_from_fingerprints(gen_fps, ref_fps, device=device)


# --------------------------------------------------------------------------------------------
# Fragments, scaffolds, properties, filters, FCD
# --------------------------------------------------------------------------------------------


def cosine_similarity(ref_counts: Mapping[str, float], gen_counts: Mapping[str, float]) -> float:
    """Cosine similarity of two count vectors given as ``{key: count}`` (missing keys are 0);
    NaN if either is empty (as MOSES)."""
    if len(ref_counts) == 0 or len(gen_counts) == 0:
        return float("nan")
    dot = sum(float(v) * float(ref_counts.get(k, 0)) for k, v in gen_counts.items())
    norm_r = math.sqrt(sum(float(v) ** 2 for v in ref_counts.values()))
    norm_g = math.sqrt(sum(float(v) ** 2 for v in gen_counts.values()))
    if norm_r == 0 or norm_g == 0:
        return float("nan")
    return dot / (norm_r * norm_g)


def fragment_counts(smiles: Sequence[str], n_jobs: int | _Runner = 1) -> Counter[str]:
    """BRICS fragment counts of the valid molecules of ``smiles``."""
    return compute_features(valid_canonical(smiles, n_jobs), ("frag",), n_jobs=n_jobs).fragments


def scaffold_counts(smiles: Sequence[str], n_jobs: int | _Runner = 1) -> Counter[str]:
    """Bemis-Murcko scaffold counts (scaffolds with >= 2 rings) of the valid molecules."""
    return compute_features(valid_canonical(smiles, n_jobs), ("scaf",), n_jobs=n_jobs).scaffolds


def fragment_similarity(
    generated: Sequence[str], reference: Sequence[str], n_jobs: int | _Runner = 1
) -> float:
    """Frag: cosine similarity of the BRICS fragment counts."""
    return cosine_similarity(fragment_counts(reference, n_jobs), fragment_counts(generated, n_jobs))


def scaffold_similarity(
    generated: Sequence[str], reference: Sequence[str], n_jobs: int | _Runner = 1
) -> float:
    """Scaf: cosine similarity of the Bemis-Murcko scaffold counts."""
    return cosine_similarity(scaffold_counts(reference, n_jobs), scaffold_counts(generated, n_jobs))


def molecular_properties(smiles: Sequence[str], n_jobs: int | _Runner = 1) -> dict[str, np.ndarray]:
    """logP, SA, QED and weight of the valid molecules of ``smiles``."""
    return compute_features(valid_canonical(smiles, n_jobs), ("props",), n_jobs=n_jobs).properties


def property_distances(
    generated: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Wasserstein-1 distance per property (keys of ``generated`` found in ``reference``)."""
    from scipy.stats import wasserstein_distance

    out = {}
    for name in PROPERTY_NAMES:
        if name in generated and name in reference:
            g, r = np.asarray(generated[name]), np.asarray(reference[name])
            out[name] = float(wasserstein_distance(r, g)) if len(g) and len(r) else float("nan")
    return out


def _open_text(path: Path) -> TextFile:
    """UTF-8 text, gzip by suffix; a bad file is one line naming it (and the line)."""
    return open_text(path)


def _unreadable_cache(path: Path, error: BaseException) -> None:
    """Log one warning line: the cache ``path`` cannot be read and is built again."""
    reason = " ".join(f"{type(error).__name__}: {error}".split())
    logger.warning("%s: unreadable cache (%s); rebuilding it", path, reason)


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


def fraction_passes_filters(
    generated: Sequence[str], filters: Sequence[str], n_jobs: int | _Runner = 1
) -> float:
    """Filters: fraction of the valid molecules that pass :func:`mol_passes_filters`."""
    feats = compute_features(
        valid_canonical(generated, n_jobs), ("filters",), filters=filters, n_jobs=n_jobs
    )
    assert feats.passes_filters is not None
    return float(feats.passes_filters.mean()) if feats.n else float("nan")


@lru_cache(maxsize=2)
def _fcd_model(n_jobs: int, batch_size: int) -> Any:
    from fcd_torch import FCD

    return FCD(device="cpu", n_jobs=n_jobs, batch_size=batch_size)


def chemnet_activations(
    smiles: Sequence[str], *, device: str = "cpu", n_jobs: int = 1, batch_size: int = 512
) -> np.ndarray:
    """ChemNet penultimate activations ``(n, 512)`` from fcd_torch (its bundled weights,
    no download; SMILES canonicalised by fcd_torch as in MOSES)."""
    model = _fcd_model(max(1, int(n_jobs)), batch_size)
    model.device = device
    smiles = list(smiles)
    parts = []
    # in pieces (each molecule's activations are its own), so a long pass says how far it is
    with ProgressLines(logger, "ChemNet activations (FCD)", len(smiles), "molecules") as progress:
        for start in range(0, len(smiles), FCD_PIECE):
            piece = smiles[start : start + FCD_PIECE]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # np.row_stack in fcd_torch
                parts.append(np.asarray(model.get_predictions(piece), np.float64))
            progress.update(len(piece))
    return np.concatenate(parts) if parts else np.zeros((0, 512))


def fcd_statistics(
    smiles: Sequence[str], *, device: str = "cpu", n_jobs: int = 1, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``np.cov``, n - 1) of the ChemNet activations of valid SMILES."""
    if len(smiles) < 2:
        raise ValueError(f"FCD needs at least 2 molecules, got {len(smiles)}")
    act = chemnet_activations(smiles, device=device, n_jobs=n_jobs, batch_size=batch_size)
    return act.mean(0), np.cov(act.T)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` as fcd_torch/MOSES compute it
    (``scipy.linalg.sqrtm``; ``eps * I`` added to both if the root is not finite)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("FCD statistics have different shapes")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in FCD")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fcd(
    generated: Sequence[str],
    ref_mu: np.ndarray,
    ref_sigma: np.ndarray,
    *,
    device: str = "cpu",
    n_jobs: int = 1,
    batch_size: int = 512,
) -> float:
    """FCD of the valid molecules of ``generated`` against reference statistics."""
    valid = valid_canonical(generated)
    mu, sigma = fcd_statistics(valid, device=device, n_jobs=n_jobs, batch_size=batch_size)
    return frechet_distance(ref_mu, ref_sigma, mu, sigma)


# --------------------------------------------------------------------------------------------
# Reference statistics and their cache
# --------------------------------------------------------------------------------------------


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


def _blob(strings: Sequence[str]) -> np.ndarray:
    if any("\n" in s for s in strings):
        raise ValueError("strings with newlines cannot be stored")
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8)


def _unblob(arr: np.ndarray, n: int) -> list[str]:
    if n == 0:
        return []
    out = arr.tobytes().decode("utf-8").split("\n")
    if len(out) != n:
        raise ValueError("corrupt string blob in cache")
    return out


@dataclass
class ReferenceSet:
    """Statistics of one reference set (e.g. MOSES test), everything the metrics need."""

    name: str
    n: int
    fps: np.ndarray
    fragments: Counter[str]
    scaffolds: Counter[str]
    properties: dict[str, np.ndarray]
    fcd_mu: np.ndarray | None = None
    fcd_sigma: np.ndarray | None = None

    @classmethod
    def from_smiles(
        cls,
        name: str,
        smiles: Sequence[str],
        *,
        n_jobs: int | _Runner = 1,
        fcd: bool = True,
        device: str = "cpu",
    ) -> ReferenceSet:
        """Compute the statistics of the valid molecules of ``smiles`` (FCD stats with
        fcd_torch when ``fcd``)."""
        valid = valid_canonical(smiles, n_jobs)
        feats = compute_features(valid, ("fps", "frag", "scaf", "props"), n_jobs=n_jobs)
        assert feats.fps is not None
        mu = sigma = None
        if fcd:
            workers = n_jobs.n_jobs if isinstance(n_jobs, _Runner) else n_jobs
            mu, sigma = fcd_statistics(valid, device=device, n_jobs=workers)
        return cls(
            name,
            len(valid),
            feats.fps,
            feats.fragments,
            feats.scaffolds,
            feats.properties,
            mu,
            sigma,
        )

    def _arrays(self, prefix: str) -> dict[str, np.ndarray]:
        frag_keys, scaf_keys = list(self.fragments), list(self.scaffolds)
        out = {
            f"{prefix}n": np.array(self.n),
            f"{prefix}fps": self.fps,
            f"{prefix}frag_keys": _blob(frag_keys),
            f"{prefix}frag_counts": np.array([self.fragments[k] for k in frag_keys], np.int64),
            f"{prefix}scaf_keys": _blob(scaf_keys),
            f"{prefix}scaf_counts": np.array([self.scaffolds[k] for k in scaf_keys], np.int64),
            f"{prefix}props": np.stack([self.properties[k] for k in PROPERTY_NAMES], 1),
        }
        if self.fcd_mu is not None and self.fcd_sigma is not None:
            out[f"{prefix}fcd_mu"] = self.fcd_mu
            out[f"{prefix}fcd_sigma"] = self.fcd_sigma
        return out

    @classmethod
    def _from_arrays(cls, name: str, data: Mapping[str, np.ndarray], prefix: str) -> ReferenceSet:
        def counter(key: str) -> Counter[str]:
            counts = data[f"{prefix}{key}_counts"]
            keys = _unblob(data[f"{prefix}{key}_keys"], len(counts))
            return Counter(dict(zip(keys, (int(c) for c in counts), strict=True)))

        props = data[f"{prefix}props"]
        return cls(
            name=name,
            n=int(data[f"{prefix}n"]),
            fps=data[f"{prefix}fps"],
            fragments=counter("frag"),
            scaffolds=counter("scaf"),
            properties={k: props[:, i] for i, k in enumerate(PROPERTY_NAMES)},
            fcd_mu=data.get(f"{prefix}fcd_mu"),
            fcd_sigma=data.get(f"{prefix}fcd_sigma"),
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version_tag() -> str:
    from rdkit import __version__ as rdkit_version

    return f"v{CACHE_VERSION}-rdkit{rdkit_version}"


@dataclass
class MosesReference:
    """MOSES reference statistics: ``sets`` maps ``Test``/``TestSF`` to :class:`ReferenceSet`,
    ``filters`` the MCF + PAINS SMARTS, ``meta`` what was built from what (JSON-able)."""

    sets: dict[str, ReferenceSet]
    filters: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` (atomically: temporary file then rename)."""
        arrays: dict[str, np.ndarray] = {}
        for key, ref in self.sets.items():
            arrays.update(ref._arrays(f"{key}__"))
        arrays["filters"] = _blob(list(self.filters))
        arrays["n_filters"] = np.array(len(self.filters))
        meta = dict(self.meta, sets=list(self.sets))
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
        with atomic_write(path) as f:  # fsync-ed, then renamed: never a truncated cache
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MosesReference:
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        sets = {k: ReferenceSet._from_arrays(k, data, f"{k}__") for k in meta["sets"]}
        filters = tuple(_unblob(data["filters"], int(data["n_filters"])))
        return cls(sets, filters, meta)

    @classmethod
    def load_or_build(
        cls,
        data_root: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        n_jobs: int = 2,
        max_molecules: int | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> MosesReference:
        """Reference statistics of MOSES ``test`` and ``test_scaffolds``, from the cache if
        there, else built (minutes) and cached.

        Args:
            data_root: holds ``moses/`` (default ``$LATENTEBM_DATA``).
            cache_dir: cache folder (default ``~/.cache/latentebm``); the file name carries a
                hash of the input files' contents, RDKit version, cache format and subsample.
            n_jobs: worker processes for the build.
            max_molecules: use a random subset of this many molecules of each test file
                (``numpy.random.default_rng(seed)``, without replacement; the files are not
                in random order, so never take the first lines). ``None``: all. The FCD
                statistics are always MOSES's own, for the whole files.
            verbose: print progress to stderr.
        """
        from latentebm.data import resolve_data_path

        files = {
            k: resolve_data_path(f"moses/{stem}.csv.gz", data_root)
            for k, stem in REFERENCE_SETS.items()
        }
        fcd_path = resolve_data_path("moses/fcd_ref_stats.npz", data_root)
        filters = load_filter_smarts(data_root)
        digest = hashlib.sha256()
        for path in [*files.values(), fcd_path]:
            digest.update(_sha256(path).encode())
        digest.update(f"{_version_tag()}|{max_molecules}|{seed}".encode())
        key = digest.hexdigest()[:16]
        cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        cache_file = cache / f"moses_ref_{key}.npz"
        if cache_file.is_file():
            try:
                ref = cls.load(cache_file)
            except Exception as error:  # noqa: BLE001 - an unreadable cache is rebuilt
                _unreadable_cache(cache_file, error)
            else:
                ref.filters = filters
                ref.meta["cache_file"] = str(cache_file)
                return ref
        meta: dict[str, Any] = {
            "version": _version_tag(),
            "max_molecules": max_molecules,
            "seed": seed,
            "sets_n": {},
            "build_seconds": {},
        }
        sets = {}
        with np.load(fcd_path, allow_pickle=False) as npz:
            fcd_stats = {k: npz[k] for k in npz.files}
        with _Runner(n_jobs) as runner:
            for k, path in files.items():
                t0 = time.perf_counter()
                smiles = read_smiles_file(path)
                n_file = len(smiles)
                if max_molecules is not None and max_molecules < n_file:
                    rng = np.random.default_rng(seed)
                    pick = np.sort(rng.choice(n_file, size=max_molecules, replace=False))
                    smiles = [smiles[i] for i in pick]
                ref = ReferenceSet.from_smiles(k, smiles, n_jobs=runner, fcd=False)
                stem = REFERENCE_SETS[k]
                ref.fcd_mu = fcd_stats[f"{stem}_mu"]
                ref.fcd_sigma = fcd_stats[f"{stem}_sigma"]
                sets[k] = ref
                meta["sets_n"][k] = {"file_lines": n_file, "used": len(smiles), "valid": ref.n}
                meta["build_seconds"][k] = time.perf_counter() - t0
                if verbose:
                    print(
                        f"[moses-ref] {k}: {ref.n} molecules in {meta['build_seconds'][k]:.0f} s",
                        file=sys.stderr,
                    )
        ref_all = cls(sets, filters, meta)
        ref_all.save(cache_file)
        ref_all.meta["cache_file"] = str(cache_file)
        return ref_all


def load_canonical_smiles(
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    n_jobs: int | _Runner = 2,
) -> frozenset[str]:
    """Canonical SMILES set of a SMILES file (e.g. MOSES train for novelty), cached as an
    ``.npz`` string blob keyed by the file's content hash and the RDKit version."""
    path = Path(path)
    key = hashlib.sha256(f"{_sha256(path)}|{_version_tag()}".encode()).hexdigest()[:16]
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    cache_file = cache / f"canonical_{path.name.split('.')[0]}_{key}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as npz:
                return frozenset(_unblob(npz["smiles"], int(npz["n"])))
        except Exception as error:  # noqa: BLE001 - an unreadable cache is rebuilt
            _unreadable_cache(cache_file, error)
    smiles = sorted(canonical_set(read_smiles_file(path), n_jobs))
    with atomic_write(cache_file) as f:  # fsync-ed, then renamed: never a truncated cache
        np.savez_compressed(f, smiles=_blob(smiles), n=np.array(len(smiles)))
    return frozenset(smiles)


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------


def compute_moses_metrics(
    generated: Sequence[str],
    *,
    reference: MosesReference,
    train: Iterable[str] | None = None,
    train_is_canonical: bool = False,
    n_jobs: int = 2,
    device: str = "cpu",
    unique_k: Sequence[int] = (1000, 10000),
    fcd_batch_size: int = 512,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """All MOSES metrics of ``generated`` (see the module docstring for definitions).

    Args:
        generated: generated SMILES (invalid and empty strings allowed).
        reference: :meth:`MosesReference.load_or_build`.
        train: training SMILES for ``Novelty`` (omitted when None); canonicalised unless
            ``train_is_canonical`` (pass :func:`load_canonical_smiles` to reuse a cache).
        n_jobs: worker processes for RDKit work and fcd_torch's data loader.
        device: torch device for the Tanimoto products and ChemNet.
        unique_k: the ``k`` of ``unique@k``.
        timings: if given, filled with wall seconds per step and the workers' CPU seconds per
            feature (``cpu/<feature>``).

    Returns:
        ``valid``, ``unique@k``, ``FCD/ref``, ``SNN/ref``, ``Frag/ref``, ``Scaf/ref`` for ref
        in ``Test``, ``TestSF``, ``IntDiv``, ``IntDiv2``, ``IntDiv2/paper``, ``Filters``,
        ``logP``, ``SA``, ``QED``, ``weight``, ``Novelty`` (with ``train``), and the counts
        ``n_generated``, ``n_valid``.
    """
    times: dict[str, float] = {} if timings is None else timings
    metrics: dict[str, float] = {}
    clock = time.perf_counter

    with _Runner(n_jobs) as runner:
        t0 = clock()
        valid = valid_canonical(generated, runner)
        times["valid"] = clock() - t0
        metrics["n_generated"] = float(len(generated))
        metrics["n_valid"] = float(len(valid))
        metrics["valid"] = len(valid) / len(generated) if len(generated) else float("nan")
        if not valid:
            warnings.warn("no valid molecules: metrics are NaN", stacklevel=2)
        t0 = clock()
        for k in unique_k:
            metrics[f"unique@{k}"] = _unique_at(valid, k)
        times["unique"] = clock() - t0
        if train is not None:
            t0 = clock()
            if train_is_canonical:
                train_set = train if isinstance(train, Set) else set(train)
            else:
                train_set = canonical_set(train, runner)
            metrics["Novelty"] = _novelty(valid, train_set)
            times["novelty"] = clock() - t0
        t0 = clock()
        feats = compute_features(valid, _FEATURES, filters=reference.filters, n_jobs=runner)
        times["features"] = clock() - t0
        for name, sec in feats.cpu_seconds.items():
            times[f"cpu/{name}"] = sec

    gen_fps = feats.fps if feats.fps is not None else np.zeros((0, PACKED_BYTES), np.uint8)
    t0 = clock()
    act = (
        chemnet_activations(valid, device=device, n_jobs=n_jobs, batch_size=fcd_batch_size)
        if len(valid) >= 2
        else None
    )
    if act is not None:
        gen_mu, gen_sigma = act.mean(0), np.cov(act.T)
    times["fcd_activations"] = clock() - t0
    for key, ref in reference.sets.items():
        t0 = clock()
        if act is None or ref.fcd_mu is None or ref.fcd_sigma is None:
            metrics[f"FCD/{key}"] = float("nan")
        else:
            metrics[f"FCD/{key}"] = frechet_distance(ref.fcd_mu, ref.fcd_sigma, gen_mu, gen_sigma)
        times[f"FCD/{key}"] = clock() - t0
        t0 = clock()
        metrics[f"SNN/{key}"] = snn_from_fingerprints(gen_fps, ref.fps, device=device)
        times[f"SNN/{key}"] = clock() - t0
        t0 = clock()
        metrics[f"Frag/{key}"] = cosine_similarity(ref.fragments, feats.fragments)
        metrics[f"Scaf/{key}"] = cosine_similarity(ref.scaffolds, feats.scaffolds)
        times[f"Frag+Scaf/{key}"] = clock() - t0
    t0 = clock()
    metrics.update(internal_diversity_from_fingerprints(gen_fps, device=device))
    times["IntDiv"] = clock() - t0
    passes = feats.passes_filters
    metrics["Filters"] = float(passes.mean()) if passes is not None and len(passes) else math.nan
    t0 = clock()
    test = reference.sets.get("Test")
    if test is not None:
        metrics.update(property_distances(feats.properties, test.properties))
    times["properties"] = clock() - t0
    return metrics


def qm9_metrics(
    generated: Sequence[str],
    train: Iterable[str],
    *,
    n_jobs: int = 1,
    train_is_canonical: bool = False,
) -> dict[str, float]:
    """QM9-style reporting on ``N = len(generated)`` samples.

    * ``validity``: valid / N (no valency correction; empty strings invalid).
    * ``uniqueness``: distinct valid canonical SMILES / valid (all valid, no ``k``).
    * ``novelty``: distinct valid not in ``train`` / distinct valid (MOSES's definition).
    * ``novelty_valid``: valid (duplicates counted) not in ``train`` / valid (the
      GraphAF/MoFlow/GDSS convention).
    * counts ``n_samples``, ``n_valid``, ``n_unique``.

    ``train`` is canonicalised unless ``train_is_canonical``. Ratios are NaN when undefined.
    """
    with _Runner(n_jobs) as runner:
        valid = valid_canonical(generated, runner)
        train_set = (
            (train if isinstance(train, Set) else set(train))
            if train_is_canonical
            else canonical_set(train, runner)
        )
    n, n_valid = len(generated), len(valid)
    unique = set(valid)
    nan = float("nan")
    return {
        "validity": n_valid / n if n else nan,
        "uniqueness": len(unique) / n_valid if n_valid else nan,
        "novelty": _novelty(valid, train_set),
        "novelty_valid": sum(s not in train_set for s in valid) / n_valid if n_valid else nan,
        "n_samples": float(n),
        "n_valid": float(n_valid),
        "n_unique": float(len(unique)),
    }


__all__ = [
    "ALLOWED_ATOMS",
    "MORGAN_BITS",
    "MORGAN_RADIUS",
    "PROPERTY_NAMES",
    "MolFeatures",
    "MosesReference",
    "ReferenceSet",
    "canonical_set",
    "canonicalize",
    "chemnet_activations",
    "compute_features",
    "compute_moses_metrics",
    "cosine_similarity",
    "fcd",
    "fcd_statistics",
    "fraction_passes_filters",
    "fraction_unique",
    "fraction_valid",
    "fragment_counts",
    "fragment_similarity",
    "frechet_distance",
    "get_mol",
    "internal_diversity",
    "internal_diversity_from_fingerprints",
    "load_canonical_smiles",
    "load_filter_smarts",
    "mol_passes_filters",
    "molecular_properties",
    "morgan_fingerprints",
    "novelty",
    "property_distances",
    "qm9_metrics",
    "read_smiles_file",
    "scaffold_counts",
    "scaffold_similarity",
    "snn",
    "snn_from_fingerprints",
    "tanimoto_matrix",
    "valid_canonical",
]
