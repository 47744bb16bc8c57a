"""Run under torch.distributed.run: rank r lists r samples fewer, as a rank that listed a folder
while files were being added would; every rank must refuse, saying why."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from dali_loader import DatasetError, create_loader


def main(root: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    files = sorted(str(p) for p in Path(root).rglob("*.jpg"))[: -1 - rank]
    try:
        create_loader((files, [0] * len(files)), backend="torchvision", num_threads=0)
        outcome = "created"
    except DatasetError as error:
        outcome = str(error)
    Path(out, f"rank{rank}.json").write_text(json.dumps(outcome))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
