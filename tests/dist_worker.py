"""Run under torch.distributed.run: each rank records which samples it got, per batch."""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from dali_loader import create_loader
from tests.helpers import epoch_indices


def main(root: str, backend: str, on_bad_file: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = create_loader(
        root,
        backend=backend,
        train=False,
        shuffle=True,
        batch_size=4,
        image_size=16,
        num_threads=1,
        on_bad_file=on_bad_file,
    )
    epochs = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        epochs.append(epoch_indices(loader))
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(
            {
                "len": len(loader),
                "epochs": epochs,
                "shard": [loader.spec.shard_id, loader.spec.num_shards],
            },
            f,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
