"""The one order every backend reads: sharding, last batch and epochs, checked exhaustively."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dali_loader.errors import ConfigError
from dali_loader.sampler import check_shardable, epoch_order, num_batches, shard_batches
from dali_loader.spec import LoaderSpec


def shards(
    n: int, batch_size: int, num_shards: int, drop_last: bool, epoch: int = 0
) -> list[list[list[int]]]:
    out = []
    for shard_id in range(num_shards):
        spec = LoaderSpec(
            batch_size=batch_size,
            shuffle=True,
            drop_last=drop_last,
            seed=5,
            shard_id=shard_id,
            num_shards=num_shards,
        )
        batches = shard_batches(epoch_order(n, spec, epoch), spec)
        out.append([b.tolist() for b in batches])
    return out


@pytest.mark.parametrize("num_shards", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_complete_and_equal_in_batch_count(num_shards: int) -> None:
    for n, batch_size in itertools.product(range(1, 60), [1, 2, 3, 4, 8]):
        spec = LoaderSpec(batch_size=batch_size, num_shards=num_shards)
        try:
            check_shardable(n, spec)
        except ConfigError:
            assert n < num_shards or (batch_size == 1 and n % num_shards != 0)
            continue
        check_split(n, batch_size, num_shards, spec)


def check_split(n: int, batch_size: int, num_shards: int, spec: LoaderSpec) -> None:
    per_shard = shards(n, batch_size, num_shards, drop_last=False)
    everything = [i for shard in per_shard for batch in shard for i in batch]
    assert sorted(everything) == list(range(n))  # disjoint and complete: nothing lost, no repeat
    assert {len(shard) for shard in per_shard} == {num_batches(n, spec)}
    assert all(0 < len(batch) <= batch_size for shard in per_shard for batch in shard)


@pytest.mark.parametrize(
    ("n", "batch_size", "num_shards"), [(21, 4, 1), (21, 4, 2), (40, 8, 3), (9, 2, 2)]
)
def test_drop_last_gives_only_full_batches_and_equal_counts(
    n: int, batch_size: int, num_shards: int
) -> None:
    per_shard = shards(n, batch_size, num_shards, drop_last=True)
    spec = LoaderSpec(batch_size=batch_size, num_shards=num_shards, drop_last=True)
    assert {len(shard) for shard in per_shard} == {num_batches(n, spec)}
    assert all(len(batch) == batch_size for shard in per_shard for batch in shard)
    everything = [i for shard in per_shard for batch in shard for i in batch]
    assert len(set(everything)) == len(everything)


def test_the_documented_examples() -> None:
    def plain(n: int, b: int, s: int, drop: bool) -> list[list[list[int]]]:
        out = []
        for r in range(s):
            spec = LoaderSpec(batch_size=b, shuffle=False, drop_last=drop, shard_id=r, num_shards=s)
            out.append([x.tolist() for x in shard_batches(epoch_order(n, spec, 0), spec)])
        return out

    assert plain(7, 2, 1, False) == [[[0, 1], [2, 3], [4, 5], [6]]]
    assert plain(7, 2, 1, True) == [[[0, 1], [2, 3], [4, 5]]]
    assert plain(7, 2, 2, False) == [[[0, 2], [4, 6]], [[1, 3], [5]]]
    assert plain(7, 2, 2, True) == [[[0, 2]], [[1, 3]]]
    assert plain(9, 2, 2, False) == [[[0, 2], [4, 6], [8]], [[1, 3], [5], [7]]]


def test_shuffle_is_a_uniform_permutation_of_the_whole_dataset() -> None:
    n, epochs = 20, 4000
    spec = LoaderSpec(shuffle=True)
    first_positions = np.zeros(n)
    for epoch in range(epochs):
        order = epoch_order(n, spec, epoch)
        assert sorted(order.tolist()) == list(range(n))
        first_positions[order[0]] += 1
    # Each sample comes first with probability 1/20: 200 of 4000, sd ~14; a buffer shuffle fails.
    assert first_positions.min() > 130 and first_positions.max() < 270


def test_order_equals_distributed_sampler() -> None:
    from torch.utils.data.distributed import DistributedSampler

    data = list(range(30))
    for rank in range(3):
        sampler = DistributedSampler(data, num_replicas=3, rank=rank, shuffle=True, seed=11)
        sampler.set_epoch(2)
        spec = LoaderSpec(batch_size=100, seed=11, shard_id=rank, num_shards=3)
        assert shard_batches(epoch_order(30, spec, 2), spec)[0].tolist() == list(sampler)


def test_unshardable_configurations_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="3 samples cannot be split over 4 shards"):
        check_shardable(3, LoaderSpec(num_shards=4))
    with pytest.raises(ConfigError, match="batch_size=1 over 2 shards"):
        check_shardable(9, LoaderSpec(batch_size=1, num_shards=2))
    with pytest.raises(ConfigError, match="drop_last=True leaves no batch"):
        check_shardable(5, LoaderSpec(batch_size=8, drop_last=True))
