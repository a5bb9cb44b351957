"""Validity, uniqueness and novelty of generated SMILES (:func:`fraction_valid`,
:func:`fraction_unique`, :func:`novelty`), and the ratios on canonical SMILES that the suite
shares (:func:`unique_at`, :func:`novelty_of_valid`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence, Set

from latentebm.metrics.molecules.parallel import (
    Runner,
    canonicalize,
    runner_for,
    valid_canonical,
)


def fraction_valid(generated: Sequence[str], n_jobs: int | Runner = 1) -> float:
    """Fraction of ``generated`` that RDKit parses and sanitises; an empty string is invalid."""
    if len(generated) == 0:
        return float("nan")
    canon = canonicalize(generated, n_jobs)
    return sum(s is not None for s in canon) / len(canon)


def unique_at(valid: Sequence[str], k: int | None) -> float:
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
    generated: Sequence[str], k: int | None = None, n_jobs: int | Runner = 1
) -> float:
    """unique@k: distinct canonical SMILES among the first ``k`` *valid* molecules, divided by
    their number (all valid ones when ``k`` is None or fewer than ``k`` are valid: warns).

    Invalid strings are dropped first, so they never count; spellings of one molecule count
    once. NaN when nothing is valid.
    """
    return unique_at(valid_canonical(generated, n_jobs), k)


def canonical_set(smiles: Iterable[str], n_jobs: int | Runner = 1) -> set[str]:
    """Set of the canonical SMILES of the valid strings of ``smiles``."""
    return {s for s in canonicalize(list(smiles), n_jobs) if s is not None}


def novelty_of_valid(valid: Sequence[str], train_canonical: Set[str]) -> float:
    unique = set(valid)
    if not unique:
        return float("nan")
    return len(unique - train_canonical) / len(unique)


def novelty(
    generated: Sequence[str],
    train: Iterable[str],
    n_jobs: int | Runner = 1,
    *,
    train_is_canonical: bool = False,
) -> float:
    """Fraction of the distinct valid canonical generated SMILES not in the training set.

    ``train`` is canonicalised first unless ``train_is_canonical`` (e.g. the output of
    :func:`canonical_set` or :func:`load_canonical_smiles`). NaN when nothing is valid.
    """
    with runner_for(n_jobs) as runner:
        valid = valid_canonical(generated, runner)
        if train_is_canonical:
            train_set = train if isinstance(train, Set) else set(train)
        else:
            train_set = canonical_set(train, runner)
    return novelty_of_valid(valid, train_set)
