"""The suites: all MOSES metrics of a list of generated SMILES (:func:`compute_moses_metrics`)
and the QM9-style validity, uniqueness and novelty (:func:`qm9_metrics`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Sequence, Set

import numpy as np

from latentebm.metrics.molecules.basic import canonical_set, novelty_of_valid, unique_at
from latentebm.metrics.molecules.distributions import cosine_similarity, property_distances
from latentebm.metrics.molecules.features import FEATURE_NAMES, PACKED_BYTES, compute_features
from latentebm.metrics.molecules.frechet import chemnet_activations, frechet_distance
from latentebm.metrics.molecules.parallel import Runner, valid_canonical
from latentebm.metrics.molecules.reference import MosesReference
from latentebm.metrics.molecules.similarity import (
    internal_diversity_from_fingerprints,
    snn_from_fingerprints,
)


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
    """All MOSES metrics of ``generated`` (see the package docstring for definitions).

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

    with Runner(n_jobs) as runner:
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
            metrics[f"unique@{k}"] = unique_at(valid, k)
        times["unique"] = clock() - t0
        if train is not None:
            t0 = clock()
            if train_is_canonical:
                train_set = train if isinstance(train, Set) else set(train)
            else:
                train_set = canonical_set(train, runner)
            metrics["Novelty"] = novelty_of_valid(valid, train_set)
            times["novelty"] = clock() - t0
        t0 = clock()
        feats = compute_features(valid, FEATURE_NAMES, filters=reference.filters, n_jobs=runner)
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
    with Runner(n_jobs) as runner:
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
        "novelty": novelty_of_valid(valid, train_set),
        "novelty_valid": sum(s not in train_set for s in valid) / n_valid if n_valid else nan,
        "n_samples": float(n),
        "n_valid": float(n_valid),
        "n_unique": float(len(unique)),
    }
