"""Metrics that compare distributions of features: the cosine similarity of fragment and
scaffold counts (Frag, Scaf), Wasserstein-1 distances of properties, and the fraction that
passes the filters.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from latentebm.metrics.molecules.features import PROPERTY_NAMES, compute_features
from latentebm.metrics.molecules.parallel import Runner, valid_canonical


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


def fragment_counts(smiles: Sequence[str], n_jobs: int | Runner = 1) -> Counter[str]:
    """BRICS fragment counts of the valid molecules of ``smiles``."""
    return compute_features(valid_canonical(smiles, n_jobs), ("frag",), n_jobs=n_jobs).fragments


def scaffold_counts(smiles: Sequence[str], n_jobs: int | Runner = 1) -> Counter[str]:
    """Bemis-Murcko scaffold counts (scaffolds with >= 2 rings) of the valid molecules."""
    return compute_features(valid_canonical(smiles, n_jobs), ("scaf",), n_jobs=n_jobs).scaffolds


def fragment_similarity(
    generated: Sequence[str], reference: Sequence[str], n_jobs: int | Runner = 1
) -> float:
    """Frag: cosine similarity of the BRICS fragment counts."""
    return cosine_similarity(fragment_counts(reference, n_jobs), fragment_counts(generated, n_jobs))


def scaffold_similarity(
    generated: Sequence[str], reference: Sequence[str], n_jobs: int | Runner = 1
) -> float:
    """Scaf: cosine similarity of the Bemis-Murcko scaffold counts."""
    return cosine_similarity(scaffold_counts(reference, n_jobs), scaffold_counts(generated, n_jobs))


def molecular_properties(smiles: Sequence[str], n_jobs: int | Runner = 1) -> dict[str, np.ndarray]:
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


def fraction_passes_filters(
    generated: Sequence[str], filters: Sequence[str], n_jobs: int | Runner = 1
) -> float:
    """Filters: fraction of the valid molecules that pass :func:`mol_passes_filters`."""
    feats = compute_features(
        valid_canonical(generated, n_jobs), ("filters",), filters=filters, n_jobs=n_jobs
    )
    assert feats.passes_filters is not None
    return float(feats.passes_filters.mean()) if feats.n else float("nan")
