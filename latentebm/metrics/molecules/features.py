"""Per-molecule features of valid SMILES, computed in worker processes: Morgan fingerprints,
BRICS fragments, Bemis-Murcko scaffolds, properties (logP, SA, QED, weight) and MOSES's filters
(:func:`compute_features`, :class:`MolFeatures`, :func:`mol_passes_filters`,
:func:`morgan_fingerprints`).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from latentebm.metrics.molecules.parallel import (
    Runner,
    get_mol,
    quiet_rdkit,
    runner_for,
    split_chunks,
)

MORGAN_RADIUS = 2
MORGAN_BITS = 1024
PACKED_BYTES = MORGAN_BITS // 8
ALLOWED_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
MAX_RING_ATOMS = 7
"""Rings of more than this many atoms fail the filters (MOSES: ``len(ring) >= 8``)."""
SCAFFOLD_MIN_RINGS = 2
PROPERTY_NAMES = ("logP", "SA", "QED", "weight")
FEATURE_NAMES = ("fps", "frag", "scaf", "props", "filters")
"""The features :func:`compute_features` knows, in the order it computes them."""


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
        with quiet_rdkit():
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
    with quiet_rdkit():
        return Chem.MolFromSmiles(smiles) is not None


_Task = tuple[Sequence[str], Sequence[int] | None, tuple[str, ...], tuple[str, ...]]


def _features_chunk(task: _Task) -> dict[str, Any]:
    """Features of valid SMILES ``smiles`` (weights multiply the fragment/scaffold counts)."""
    smiles, weights, what, filters = task
    with quiet_rdkit():  # also silences RDKit deprecation messages (SA scorer)
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
    what: Sequence[str] = FEATURE_NAMES,
    *,
    filters: Sequence[str] = (),
    n_jobs: int | Runner = 1,
    dedupe: bool = True,
) -> MolFeatures:
    """Features ``what`` (of ``fps``, ``frag``, ``scaf``, ``props``, ``filters``) of valid
    SMILES. With ``dedupe`` each distinct string is processed once and its results repeated
    (fragment and scaffold counts weighted by multiplicity): the same numbers, less work."""
    what = tuple(w for w in FEATURE_NAMES if w in what)
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
    with runner_for(n_jobs) as runner:
        idx = split_chunks(list(range(len(work))), runner.n_jobs)
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


def morgan_fingerprints(smiles: Sequence[str], n_jobs: int | Runner = 1) -> np.ndarray:
    """Packed Morgan fingerprints ``(n, 128)`` uint8 of *valid* SMILES (raises on invalid)."""
    fps = compute_features(smiles, ("fps",), n_jobs=n_jobs).fps
    assert fps is not None
    return fps
