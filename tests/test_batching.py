"""Tests of the length-bucketed batch indices shared by the tasks (latentebm.tasks.batching)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from latentebm.tasks.batching import bucketed_batch_indices


def reference(
    lengths: list[int], batch_size: int, seed: int, epoch: int, rank: int, world_size: int
) -> list[list[int]]:
    """The scheme written out with plain lists: shuffle, pools of 50 batches sorted by length
    (stably), chunk, shuffle the batches, every world_size-th batch from rank, equal counts."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    pool = 50 * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(perm), pool):
        ordered = sorted(perm[start : start + pool], key=lambda i: lengths[i])
        batches += [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    batches = [batches[i] for i in order]
    count = len(batches) // world_size
    return [batches[i] for i in range(rank, len(batches), world_size)][:count]


@pytest.mark.parametrize("n", [0, 1, 7, 149, 150, 151, 1000])
def test_equals_reference_and_partitions(n: int) -> None:
    lengths = np.random.default_rng(n).integers(2, 9, size=n)  # many ties
    for batch_size, seed, epoch, world_size in itertools.product([1, 3], [0, 5], [0, 1], [1, 3]):
        ranks = [
            bucketed_batch_indices(
                lengths, batch_size, seed=seed, epoch=epoch, rank=r, world_size=world_size
            )
            for r in range(world_size)
        ]
        for r, got in enumerate(ranks):
            want = reference(lengths.tolist(), batch_size, seed, epoch, r, world_size)
            assert [b.tolist() for b in got] == want
        counts = {len(got) for got in ranks}
        assert len(counts) == 1  # every rank has as many batches
        seen = np.concatenate([b for got in ranks for b in got] or [np.empty(0, np.int64)])
        assert len(np.unique(seen)) == len(seen)  # no example twice
        if world_size == 1:
            assert sorted(seen.tolist()) == list(range(n))  # every example once
        for got in ranks:
            for b in got:
                assert len(b) <= batch_size and (np.diff(lengths[b]) >= 0).all()


def test_without_shuffle_file_order_and_epoch_changes_order() -> None:
    lengths = np.arange(10)[::-1].copy()
    got = bucketed_batch_indices(lengths, 4, seed=0, epoch=0, shuffle=False)
    assert [b.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    got = bucketed_batch_indices(lengths, 4, seed=0, epoch=0, shuffle=False, rank=1, world_size=2)
    assert [b.tolist() for b in got] == [[4, 5, 6, 7]]
    many = np.zeros(500, dtype=np.int64)
    first = bucketed_batch_indices(many, 4, seed=1, epoch=0)
    assert [b.tolist() for b in first] == [
        b.tolist() for b in bucketed_batch_indices(many, 4, seed=1, epoch=0)
    ]
    assert [b.tolist() for b in first] != [
        b.tolist() for b in bucketed_batch_indices(many, 4, seed=1, epoch=1)
    ]


def test_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        bucketed_batch_indices(np.ones(3), 0, seed=0, epoch=0)
    with pytest.raises(ValueError, match="invalid rank 2 for world_size 2"):
        bucketed_batch_indices(np.ones(3), 1, seed=0, epoch=0, rank=2, world_size=2)
