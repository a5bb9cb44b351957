"""Length-bucketed batches, shared by the text and molecule tasks: the indices
(:func:`bucketed_batch_indices`) and a task's ``batches`` method (:class:`BucketedBatches`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

POOL_BATCHES = 50
"""A pool (sorted by length before it is chunked into batches) holds this many batches per
rank (steps)."""


def check_batch_options(batch_size: int, *, rank: int, world_size: int) -> None:
    """``ValueError`` unless ``batch_size >= 1`` and ``0 <= rank < world_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")


def bucketed_batch_indices(
    lengths: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> list[np.ndarray]:
    """Indices (into ``lengths``) of the batches that cover the examples once.

    With ``shuffle`` the order is a deterministic function of ``(seed, epoch)`` (one
    ``torch.Generator`` seeded with ``seed * 100003 + epoch``): the examples are shuffled, cut
    into pools of ``50 * world_size * batch_size``, each pool is sorted by length (stable) and
    chunked into batches (so lengths within a batch are similar); neighbouring batches of a pool
    are grouped ``world_size`` at a time into *steps*, the order of the steps is shuffled, and
    rank ``r`` gets the ``r``-th batch of every step. The ranks therefore train on batches of
    similar length at each step: a step waits for its slowest rank, and on PTB (batch 32) the
    longer of two independently drawn batches is on average 1.26 times the length of the
    pair's mean. With ``world_size == 1`` a step is one batch and the order is the batch order
    shuffled, as before steps were grouped. Where the last pool's batches do not fill its last
    step, that many of its batches (at most ``world_size - 1``), drawn at random, are left out,
    so every rank has the same count. Without ``shuffle`` batches follow index order and rank
    ``r`` gets ``all_batches[r::world_size]``, truncated likewise.

    Args:
        lengths: ``(n,)`` length of each example (only their order matters).
        batch_size: examples per batch (the last batch of a pool may be smaller).

    Raises:
        ValueError: ``batch_size < 1`` or ``rank`` not in ``[0, world_size)``.
    """
    check_batch_options(batch_size, rank=rank, world_size=world_size)
    n = len(lengths)
    if not shuffle:
        all_idx = np.arange(n)
        groups = [all_idx[i : i + batch_size] for i in range(0, n, batch_size)]
        return groups[rank::world_size][: len(groups) // world_size]
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g).numpy()
    pool = batch_size * POOL_BATCHES * world_size
    steps: list[list[np.ndarray]] = []
    for start in range(0, n, pool):
        idx = perm[start : start + pool]
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
        if extra := len(batches) % world_size:  # only in the last pool: leave out random ones
            dropped = set(torch.randperm(len(batches), generator=g)[:extra].tolist())
            batches = [b for i, b in enumerate(batches) if i not in dropped]
        steps.extend(batches[i : i + world_size] for i in range(0, len(batches), world_size))
    order = torch.randperm(len(steps), generator=g).tolist()
    return [steps[i][rank] for i in order]


class BucketedBatches:
    """Mixin: a task's ``batches`` from its ``_split(split)`` (an object with ``lengths``, one
    per example) and ``_batch(data, index)`` (the padded batch of those examples)."""

    def _split(self, split: str) -> Any:
        raise NotImplementedError

    def _batch(self, data: Any, index: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> list[torch.Tensor]:
        """Padded batches covering ``split`` once (:func:`bucketed_batch_indices`).

        With ``shuffle`` the order is a deterministic function of ``(seed, epoch)``: examples
        are shuffled, cut into pools of ``50 * batch_size``, each pool is sorted by length and
        chunked into batches (so lengths within a batch are similar), and the batch order is
        shuffled, with the ranks' batches at each step taken from neighbouring batches of one
        pool (similar lengths, so no rank waits long for another). Without ``shuffle`` batches
        follow file order and rank ``r`` of ``world_size`` gets ``all_batches[r::world_size]``.
        Every rank gets the same count (:func:`bucketed_batch_indices`).
        """
        return [
            x
            for x, _ in self.indexed_batches(
                split,
                batch_size,
                seed=seed,
                epoch=epoch,
                shuffle=shuffle,
                rank=rank,
                world_size=world_size,
            )
        ]

    def indexed_batches(
        self,
        split: str,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`batches` with each example's position in the split: ``(x, index)`` pairs,
        ``index`` a ``LongTensor (B,)`` (persistent posterior chains are stored by it)."""
        check_batch_options(batch_size, rank=rank, world_size=world_size)
        data = self._split(split)
        mine = bucketed_batch_indices(
            data.lengths,
            batch_size,
            seed=seed,
            epoch=epoch,
            shuffle=shuffle,
            rank=rank,
            world_size=world_size,
        )
        return [(self._batch(data, index), torch.from_numpy(index).long()) for index in mine]
