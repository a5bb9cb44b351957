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

The package, one job per module (each imports only the ones before it):

* :mod:`~latentebm.metrics.molecules.parallel`: parsing and canonical SMILES, and the worker
  processes that RDKit work runs in (:class:`Runner`);
* :mod:`~latentebm.metrics.molecules.basic`: validity, uniqueness, novelty;
* :mod:`~latentebm.metrics.molecules.features`: per-molecule features (fingerprints, fragments,
  scaffolds, properties, filters: :func:`compute_features`);
* :mod:`~latentebm.metrics.molecules.similarity`: Tanimoto similarities, SNN, IntDiv;
* :mod:`~latentebm.metrics.molecules.distributions`: Frag, Scaf, property distances, Filters;
* :mod:`~latentebm.metrics.molecules.frechet`: ChemNet activations and FCD;
* :mod:`~latentebm.metrics.molecules.files`: SMILES files and the filter SMARTS;
* :mod:`~latentebm.metrics.molecules.reference`: reference statistics and their caches;
* :mod:`~latentebm.metrics.molecules.suite`: :func:`compute_moses_metrics`, :func:`qm9_metrics`.

Every public name is importable from ``latentebm.metrics.molecules`` itself. The settings
:data:`MP_START_METHOD` and :data:`FCD_PIECE` live in their own modules (``parallel``,
``frechet``); read or set on this package, they read or set those modules' values. The
modules log as ``latentebm.metrics.molecules``. Functions run in worker processes are defined at
module level (the forkserver imports this package first: ``latentebm._forkserver_preload``).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from latentebm.metrics.molecules.basic import (
    canonical_set,
    fraction_unique,
    fraction_valid,
    novelty,
    novelty_of_valid,
    unique_at,
)
from latentebm.metrics.molecules.distributions import (
    cosine_similarity,
    fraction_passes_filters,
    fragment_counts,
    fragment_similarity,
    molecular_properties,
    property_distances,
    scaffold_counts,
    scaffold_similarity,
)
from latentebm.metrics.molecules.features import (
    ALLOWED_ATOMS,
    FEATURE_NAMES,
    MAX_RING_ATOMS,
    MORGAN_BITS,
    MORGAN_RADIUS,
    PACKED_BYTES,
    PROPERTY_NAMES,
    SCAFFOLD_MIN_RINGS,
    MolFeatures,
    compute_features,
    mol_passes_filters,
    morgan_fingerprints,
)
from latentebm.metrics.molecules.files import (
    load_filter_smarts,
    read_generated_smiles,
    read_smiles_file,
)
from latentebm.metrics.molecules.frechet import (
    chemnet_activations,
    fcd,
    fcd_statistics,
    frechet_distance,
)
from latentebm.metrics.molecules.parallel import (
    Runner,
    canonicalize,
    get_mol,
    quiet_rdkit,
    runner_for,
    split_chunks,
    valid_canonical,
)
from latentebm.metrics.molecules.reference import (
    CACHE_VERSION,
    DEFAULT_CACHE_DIR,
    REFERENCE_SETS,
    MosesReference,
    ReferenceSet,
    load_canonical_smiles,
)
from latentebm.metrics.molecules.similarity import (
    intdiv_row_means,
    internal_diversity,
    internal_diversity_from_fingerprints,
    snn,
    snn_from_fingerprints,
    tanimoto_matrix,
)
from latentebm.metrics.molecules.suite import (
    compute_moses_metrics,
    qm9_metrics,
)

__all__ = [
    "ALLOWED_ATOMS",
    "CACHE_VERSION",
    "DEFAULT_CACHE_DIR",
    "FCD_PIECE",
    "FEATURE_NAMES",
    "MAX_RING_ATOMS",
    "MORGAN_BITS",
    "MORGAN_RADIUS",
    "MP_START_METHOD",
    "MolFeatures",
    "MosesReference",
    "PACKED_BYTES",
    "PROPERTY_NAMES",
    "REFERENCE_SETS",
    "ReferenceSet",
    "Runner",
    "SCAFFOLD_MIN_RINGS",
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
    "intdiv_row_means",
    "internal_diversity",
    "internal_diversity_from_fingerprints",
    "load_canonical_smiles",
    "load_filter_smarts",
    "mol_passes_filters",
    "molecular_properties",
    "morgan_fingerprints",
    "novelty",
    "novelty_of_valid",
    "property_distances",
    "qm9_metrics",
    "quiet_rdkit",
    "read_generated_smiles",
    "read_smiles_file",
    "runner_for",
    "scaffold_counts",
    "scaffold_similarity",
    "snn",
    "snn_from_fingerprints",
    "split_chunks",
    "tanimoto_matrix",
    "unique_at",
    "valid_canonical",
]

_SETTINGS = {
    "FCD_PIECE": "latentebm.metrics.molecules.frechet",
    "MP_START_METHOD": "latentebm.metrics.molecules.parallel",
}
"""Module-level settings of the submodules, read and set through this package."""


def __getattr__(name: str) -> Any:
    if name in _SETTINGS:
        return getattr(sys.modules[_SETTINGS[name]], name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _ForwardingSettings(types.ModuleType):
    """Setting ``FCD_PIECE`` or ``MP_START_METHOD`` on the package sets it where it is read."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTINGS:
            setattr(sys.modules[_SETTINGS[name]], name, value)
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ForwardingSettings
