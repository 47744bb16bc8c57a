"""The `dali-loader` command: demo, check, pack, bench, preview, doctor.

Each command imports what it needs when it runs: `dali-loader --help` starts without torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .bench import add_arguments as add_bench_arguments
from .errors import ConfigError, DaliLoaderError
from .preview import add_arguments as add_preview_arguments
from .spec import DEFAULT_MAX_PIXELS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dali-loader", description="GPU-speed image-folder loading with NVIDIA DALI."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="generate a small image folder and iterate it with the best backend here"
    )
    demo.add_argument(
        "--root",
        type=Path,
        help="an image folder to read, or an empty or new folder to generate images in "
        "(default: a temp dir)",
    )
    demo.add_argument("--images", type=int, default=512, help="images to generate (default 512)")
    demo.add_argument("--backend", default="auto", help="auto, dali, dali-cpu or torchvision")
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--epochs", type=int, default=3)
    demo.set_defaults(run=_demo)

    check = commands.add_parser(
        "check", help="find every file a backend cannot decode; exit 1 if there are any"
    )
    check.add_argument("source", help="an image folder (root/<class>/<image>)")
    check.add_argument("--json", type=Path, help="also write the report as JSON here")
    check.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    check.add_argument("--no-cache", action="store_true", help="re-check every file")
    check.set_defaults(run=_check)

    packer = commands.add_parser(
        "pack", help="write an image folder as WebDataset tar shards with DALI indexes"
    )
    packer.add_argument("source", help="an image folder (root/<class>/<image>)")
    packer.add_argument("out", type=Path, help="the folder for the shards (rerun to resume)")
    packer.add_argument("--shard-size", default="1GB", help="bytes per shard: 1GB, 256MB, ...")
    packer.add_argument("--seed", type=int, default=0, help="the packing order's seed")
    packer.add_argument("--on-bad-file", choices=["raise", "skip"], default="raise")
    packer.add_argument("--workers", type=int, help="processes writing shards (default: cores)")
    packer.set_defaults(run=_pack)

    bench = commands.add_parser(
        "bench", help="images/s of every backend against the plain DataLoader, in one run"
    )
    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)

    grid = commands.add_parser(
        "preview", help="a PNG grid of augmented samples, one row per backend, same seed"
    )
    add_preview_arguments(grid)
    grid.set_defaults(run=_preview)

    doctor = commands.add_parser(
        "doctor", help="what this machine has (GPU, driver, DALI, /dev/shm) and what auto picks"
    )
    doctor.add_argument("--batch-size", type=int, default=256, help="for the /dev/shm estimate")
    doctor.add_argument("--image-size", type=int, default=224, help="for the /dev/shm estimate")
    doctor.set_defaults(run=_doctor)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.run(args))
    except DaliLoaderError as error:
        print(f"dali-loader: error: {error}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backends import synchronize
    from .factory import create_loader
    from .synthetic import make_image_folder

    with tempfile.TemporaryDirectory(prefix="dali-loader-demo-") as scratch:
        root = args.root or Path(scratch) / "images"
        if root.is_dir() and any(root.iterdir()):  # the user's own folder: read, never written
            print(f"using the images already in {root}")
        else:
            make_image_folder(root, args.images)
        loader = create_loader(root, batch_size=args.batch_size, backend=args.backend)
        print(
            f"backend: {loader.backend} on {loader.device}; {len(loader.dataset)} images, "
            f"{len(loader.classes)} classes, {len(loader)} batches of {loader.batch_size}"
        )
        for epoch in range(args.epochs):
            loader.set_epoch(epoch)
            start, seen = time.perf_counter(), 0
            for images, labels in tqdm(loader, desc=f"epoch {epoch}", unit="batch"):
                seen += len(labels)
                last = images
            synchronize(loader.device)
            elapsed = time.perf_counter() - start
            print(
                f"epoch {epoch}: {seen} images in {elapsed:.2f} s = {seen / elapsed:,.0f} img/s"
                f"{' (includes start-up)' if epoch == 0 else ''}; last batch {tuple(last.shape)} "
                f"{last.dtype}"
            )
    return 0


def _check(args: argparse.Namespace) -> int:
    from .source import check_source

    report = check_source(args.source, max_pixels=args.max_pixels, use_cache=not args.no_cache)
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2))
        print(f"wrote {args.json}")
    return 1 if report.bad else 0


def _pack(args: argparse.Namespace) -> int:
    from .packing import pack

    manifest = pack(
        args.source,
        args.out,
        shard_size=parse_size(args.shard_size),
        seed=args.seed,
        on_bad_file=args.on_bad_file,
        workers=args.workers,
    )
    info = json.loads(manifest.read_text())
    print(f"packed {info['num_samples']} images in {len(info['shards'])} shards: {manifest}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    return run(args)


def _preview(args: argparse.Namespace) -> int:
    from .preview import run

    return run(args)


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose, render

    findings = diagnose(batch_size=args.batch_size, image_size=args.image_size)
    print(render(findings))
    return 1 if any(f.problem for f in findings) else 0


def parse_size(text: str) -> int:
    """'1GB', '256MB', '64KiB' or a plain number of bytes (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"--shard-size {text!r} is not a size; write e.g. 1GB or 256MB")
    return int(float(match[1]) * 1024 ** " KMGT".index(match[2] or " "))


if __name__ == "__main__":
    sys.exit(main())
