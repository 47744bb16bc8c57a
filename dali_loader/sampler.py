"""Which samples each batch of an epoch holds, on this shard: the one order every backend reads.

Order: with `shuffle`, a uniform permutation of the whole data set drawn from `seed + epoch`,
the same permutation torch's `DistributedSampler` draws; without it, index order.

Sharding deals that order round-robin (shard r takes positions r, r + S, r + 2S, ...), like
`DistributedSampler`, but never repeats a sample to even the shards out. Every shard still yields
the same number of batches, because DDP hangs otherwise. On the data set [0..6] (7 samples, no
shuffle), batch_size=2:

- 1 shard, drop_last=False: [0, 1] [2, 3] [4, 5] [6]
- 1 shard, drop_last=True:  [0, 1] [2, 3] [4, 5]
- 2 shards, drop_last=False: shard 0 [0, 2] [4, 6], shard 1 [1, 3] [5]
- 2 shards, drop_last=True:  each shard keeps n // S = 3 samples, then only full batches:
  shard 0 [0, 2], shard 1 [1, 3]

When one shard is a sample short and that would cost it a batch (its share is a multiple of
batch_size while another shard has one more), its last full batch is split in two:
[0..8] (9 samples), batch_size=2, 2 shards: shard 0 [0, 2] [4, 6] [8], shard 1 [1, 3] [5] [7].
With batch_size=1 that split is impossible, so such a configuration is refused (use
drop_last=True, or a data set size divisible by the number of shards).
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError
from .spec import LoaderSpec


def epoch_order(num_samples: int, spec: LoaderSpec, epoch: int) -> np.ndarray:
    """The whole data set's order for `epoch`, before sharding."""
    if not spec.shuffle:
        return np.arange(num_samples, dtype=np.int64)
    generator = torch.Generator()
    generator.manual_seed(spec.seed + epoch)
    return torch.randperm(num_samples, generator=generator).numpy()


def shard_batches(order: np.ndarray, spec: LoaderSpec) -> list[np.ndarray]:
    """Split an epoch's order into this shard's batches (see the module docstring)."""
    size, shards, batch = len(order), spec.num_shards, spec.batch_size
    mine = order[spec.shard_id :: shards]
    if spec.drop_last:
        mine = mine[: (size // shards) // batch * batch]
        return [mine[i : i + batch] for i in range(0, len(mine), batch)]
    batches = [mine[i : i + batch] for i in range(0, len(mine), batch)]
    wanted = num_batches(size, spec)
    if len(batches) < wanted:
        last = batches.pop()
        batches += [last[:-1], last[-1:]]
    return batches


def num_batches(num_samples: int, spec: LoaderSpec) -> int:
    """Batches every shard yields per epoch: `len(loader)`."""
    shards, batch = spec.num_shards, spec.batch_size
    if spec.drop_last:
        return (num_samples // shards) // batch
    return _ceil_div(_ceil_div(num_samples, shards), batch)


def check_shardable(num_samples: int, spec: LoaderSpec) -> None:
    """Refuse a data set that cannot give every shard the same number of non-empty batches."""
    shards = spec.num_shards
    if num_samples < shards:
        raise ConfigError(
            f"{num_samples} samples cannot be split over {shards} shards without repeating "
            "one: every rank needs at least one sample"
        )
    if num_batches(num_samples, spec) == 0:
        raise ConfigError(
            f"drop_last=True leaves no batch: {num_samples} samples over {shards} shard(s) give "
            f"fewer than batch_size={spec.batch_size} per shard; lower batch_size or set "
            "drop_last=False"
        )
    short = num_samples % shards != 0 and (num_samples // shards) % spec.batch_size == 0
    if not spec.drop_last and spec.batch_size == 1 and short:
        raise ConfigError(
            f"batch_size=1 over {shards} shards cannot give every rank the same number of "
            f"batches from {num_samples} samples without repeating a sample; use "
            "drop_last=True or a batch_size above 1"
        )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
