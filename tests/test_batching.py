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
    """The scheme written out with plain lists: shuffle, pools of 50 steps sorted by length
    (stably), chunk, leave random batches out of a pool that does not fill its last step,
    group world_size neighbouring batches into a step, shuffle the steps, batch ``rank`` of
    each step."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    pool = 50 * world_size * batch_size
    steps: list[list[list[int]]] = []
    for start in range(0, len(perm), pool):
        ordered = sorted(perm[start : start + pool], key=lambda i: lengths[i])
        batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
        extra = len(batches) % world_size
        if extra:
            dropped = torch.randperm(len(batches), generator=g)[:extra].tolist()
            batches = [b for i, b in enumerate(batches) if i not in dropped]
        while batches:
            steps.append(batches[:world_size])
            batches = batches[world_size:]
    order = torch.randperm(len(steps), generator=g).tolist()
    return [steps[i][rank] for i in order]


def test_one_process_order_is_the_shuffled_batches() -> None:
    """world_size 1: the batch order of the scheme before steps were grouped (single-process
    runs and their resumption are unchanged)."""
    lengths = np.random.default_rng(3).integers(1, 40, size=1234)
    g = torch.Generator().manual_seed(2 * 100003 + 1)
    perm = torch.randperm(len(lengths), generator=g).numpy()
    batches = []
    for start in range(0, len(perm), 50 * 8):
        idx = perm[start : start + 50 * 8]
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches += [idx[i : i + 8] for i in range(0, len(idx), 8)]
    order = torch.randperm(len(batches), generator=g).tolist()
    got = bucketed_batch_indices(lengths, 8, seed=2, epoch=1)
    assert [b.tolist() for b in got] == [batches[i].tolist() for i in order]


def test_ranks_train_on_batches_of_similar_length_at_each_step() -> None:
    """A step waits for its slowest rank: the ranks' batches at a step come from neighbouring
    batches of one sorted pool, so their longest examples differ little, far less than those
    of two batches drawn independently (the scheme before); and the batches left out are
    not the longest ones."""
    lengths = np.random.default_rng(0).integers(1, 80, size=20_000)
    ranks = [
        bucketed_batch_indices(lengths, 32, seed=1, epoch=0, rank=r, world_size=2) for r in range(2)
    ]
    longest = np.array([[lengths[b].max() for b in got] for got in ranks])  # (2, steps)
    step_gap = np.abs(longest[0] - longest[1]).mean()
    alone = np.array(
        [lengths[b].max() for b in bucketed_batch_indices(lengths, 32, seed=1, epoch=0)]
    )
    independent_gap = np.abs(alone[0::2][: len(alone) // 2] - alone[1::2][: len(alone) // 2]).mean()
    assert step_gap < 4.0  # measured: 1.6
    assert independent_gap > 15.0  # measured: 28
    n_left_out, left_out_lengths = [], []
    for seed in range(40):  # 20,000 examples, batch 32, 3 ranks: the last pool leaves some out
        ranks = [
            bucketed_batch_indices(lengths, 32, seed=seed, epoch=0, rank=r, world_size=3)
            for r in range(3)
        ]
        kept = np.zeros(len(lengths), dtype=bool)
        kept[np.concatenate([b for got in ranks for b in got])] = True
        n_left_out.append(int((~kept).sum()))
        left_out_lengths.extend(lengths[~kept].tolist())
    assert all(0 < k <= 2 * 32 for k in n_left_out)
    # random batches of the last pool: about the mean length (40), not its longest (about 79)
    assert abs(np.mean(left_out_lengths) - lengths.mean()) < 8.0


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
        else:  # at most world_size - 1 batches left out
            assert len(seen) >= n - (world_size - 1) * batch_size
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
