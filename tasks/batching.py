"""Length-bucketed batches, shared by the text and molecule tasks: the indices
(:func:`bucketed_batch_indices`) and a task's ``batches`` method (:class:`BucketedBatches`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

POOL_BATCHES = 50
"""A pool (sorted by length before it is chunked into batches) holds this many batches."""


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
    into pools of ``50 * batch_size``, each pool is sorted by length (stable) and chunked into
    batches (so lengths within a batch are similar), and the batch order is shuffled. Without
    ``shuffle`` batches follow index order. Rank ``r`` of ``world_size`` gets
    ``all_batches[r::world_size]``, truncated so every rank has the same count.

    Args:
        lengths: ``(n,)`` length of each example (only their order matters).
        batch_size: examples per batch (the last batch of a pool may be smaller).

    Raises:
        ValueError: ``batch_size < 1`` or ``rank`` not in ``[0, world_size)``.
    """
    check_batch_options(batch_size, rank=rank, world_size=world_size)
    n = len(lengths)
    groups: list[np.ndarray] = []
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g).numpy()
        pool = batch_size * POOL_BATCHES
        for start in range(0, n, pool):
            idx = perm[start : start + pool]
            idx = idx[np.argsort(lengths[idx], kind="stable")]
            groups.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
        order = torch.randperm(len(groups), generator=g).tolist()
        groups = [groups[i] for i in order]
    else:
        all_idx = np.arange(n)
        groups = [all_idx[i : i + batch_size] for i in range(0, n, batch_size)]
    per_rank = len(groups) // world_size
    return groups[rank::world_size][:per_rank]


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
        shuffled. Without ``shuffle`` batches follow file order. Rank ``r`` of ``world_size``
        gets ``all_batches[r::world_size]``, truncated so every rank has the same count.
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
