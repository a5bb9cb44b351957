"""What every task (text, molecules, images) does alike with its splits and settings: the split
names, the validation slice held out of train with a fixed seed, and the checks of the
``task:`` settings their ``Config`` classes share (messages name the ``task.KEY``)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "SPLITS",
    "check_minimum",
    "check_valid_fraction",
    "check_valid_source",
    "valid_mask",
]

SPLITS: tuple[str, ...] = ("train", "valid", "test")


def valid_mask(n: int, fraction: float, *, none_left: str) -> np.ndarray:
    """Which of ``n`` training examples are held out as ``valid``: ``round(n * fraction)`` of
    them (at least one), the first of ``numpy.random.default_rng(0).permutation(n)``.

    Raises:
        ValueError: ``none_left`` (the message) when that would leave no training example.
    """
    n_valid = max(1, round(n * fraction))
    if n_valid >= n:
        raise ValueError(none_left)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(0).permutation(n)[:n_valid]] = True
    return mask


def check_valid_fraction(valid_fraction: float) -> None:
    """``ValueError`` unless ``task.valid_fraction`` is in ``[0, 1)``."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"task.valid_fraction must be in [0, 1), got {valid_fraction}")


def check_valid_source(valid: str | None, valid_fraction: float) -> None:
    """``ValueError`` when both ``task.valid`` and ``task.valid_fraction`` are set."""
    if valid is not None and valid_fraction > 0:
        raise ValueError(
            "set either task.valid or task.valid_fraction, not both (with your own "
            "task.valid, set task.valid_fraction=0)"
        )


def check_minimum(key: str, value: int | None, minimum: int) -> None:
    """``ValueError`` naming ``task.KEY`` when ``value`` is set (not None) and below
    ``minimum``."""
    if value is not None and value < minimum:
        raise ValueError(f"task.{key} must be >= {minimum}, got {value}")
