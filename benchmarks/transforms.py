"""`transform=` pipelines against the DataLoader users have: img/s of one epoch after a warm-up.

For each pipeline, in one run on one machine: `DataLoader(ImageFolder(root, T), shuffle=True,
num_workers=W)` (the baseline), then `create_loader(root, transform=T)` on each CPU backend
with the same workers, and the ratio to the baseline. The ImageNet-style synthetic folder of
`dali-loader bench` is used (generated once under --data-dir).

    python benchmarks/transforms.py [--images 2000] [--workers 2] [--batch-size 128]
                                    [--epochs 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from dali_loader import create_loader
from dali_loader.bench import machine
from dali_loader.synthetic import make_image_folder

NORMALIZE = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PIPELINES = {
    "imagenet-train": T.Compose(
        [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), NORMALIZE]
    ),
    "imagenet-eval": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), NORMALIZE]),
    "crop-pad-flip": T.Compose(
        [
            T.Resize((128, 128)),
            T.RandomCrop(112, padding=8),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    ),
    "rotate-affine": T.Compose(
        [
            T.Resize((224, 224)),
            T.RandomRotation(30),
            T.RandomAffine(15, translate=(0.1, 0.1)),
            T.ToTensor(),
            NORMALIZE,
        ]
    ),
    "simclr": T.Compose(
        [
            T.RandomResizedCrop(224),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(0.2),
            T.GaussianBlur(23, (0.1, 2.0)),
            T.ToTensor(),
            NORMALIZE,
        ]
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--data-dir", default=str(Path.home() / ".cache" / "dali-loader"))
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="measured, after one warm-up")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES))
    parser.add_argument("--loaders", nargs="+", default=["baseline", "torchvision", "dali-cpu"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(args.data_dir) / f"bench-{args.images}"
    make_image_folder(root, args.images)
    rows: list[dict[str, Any]] = []
    loaders = sorted(args.loaders, key=lambda name: name != "baseline")  # the baseline first
    for name in args.pipelines:
        base = None
        for loader_name in loaders:
            rate = _rate(_loader(loader_name, root, PIPELINES[name], args), args.epochs)
            base = rate if loader_name == "baseline" else base
            ratio = rate / base if base else None
            rows.append({"pipeline": name, "loader": loader_name, "img_per_s": rate})
            rows[-1]["ratio_to_baseline"] = ratio
            shown = f"{ratio:.2f}x" if ratio else ""
            print(f"{name:15s} {loader_name:12s} {rate:8.1f} img/s {shown}", flush=True)
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": machine(), "args": vars(args), "results": rows}, indent=1)
        )


def _loader(name: str, root: Path, transform: Any, args: argparse.Namespace) -> Any:
    if name == "baseline":
        return DataLoader(
            ImageFolder(str(root), transform),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
    return create_loader(
        str(root),
        batch_size=args.batch_size,
        backend=name,
        transform=transform,
        num_workers=args.workers,
    )


def _rate(loader: Any, epochs: int) -> float:
    """Images per second over `epochs` epochs, after one warm-up epoch."""
    for _ in loader:
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _labels in loader:
            count += len(images)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
