"""`dali-loader preview`: a grid of augmented samples, one row per backend, the same seed.

The first row is the eval view (no randomness) of the same samples, so a person sees at a glance
that crop, flip and rotation happen, and that every backend delivers the same images.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import BACKENDS, runnable_backends

if TYPE_CHECKING:
    import torch

LABEL_WIDTH = 150


def preview(
    source: str,
    output: str | Path,
    *,
    backends: list[str],
    samples: int = 8,
    image_size: int = 160,
    rotate_degrees: float = 15.0,
    seed: int = 0,
    on_bad_file: str = "raise",
) -> Path:
    """Write the grid PNG to `output` and return its path."""
    options: dict[str, Any] = {
        "batch_size": samples,
        "shuffle": True,
        "seed": seed,
        "image_size": image_size,
        "rotate_degrees": rotate_degrees,
        "num_threads": 1,
        "on_bad_file": on_bad_file,
    }
    rows = [("eval (no augmentation)", _first_batch(source, "torchvision", False, options))]
    for backend in backends:
        rows.append((f"{backend} (train)", _first_batch(source, backend, True, options)))
    return _save(rows, Path(output), image_size)


def _first_batch(source: str, backend: str, train: bool, options: dict[str, Any]) -> torch.Tensor:
    """The first batch of `create_loader(source, ...)`, unnormalized to 0..1."""
    import torch

    from .factory import create_loader

    loader = create_loader(source, backend=backend, train=train, **options)
    images, _ = next(iter(loader))
    spec = loader.spec
    mean = torch.tensor(spec.mean).view(1, spec.channels, 1, 1)
    std = torch.tensor(spec.std).view(1, spec.channels, 1, 1)
    return (images.float().cpu() * std + mean).clamp(0, 1)


def _save(rows: list[tuple[str, torch.Tensor]], output: Path, size: int) -> Path:
    import torch
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    pad = 4
    strips = [make_grid(images, nrow=len(images), padding=pad, pad_value=1.0) for _, images in rows]
    width = LABEL_WIDTH + max(strip.shape[2] for strip in strips)
    height = sum(strip.shape[1] for strip in strips)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for (label, _), strip in zip(rows, strips, strict=True):
        pixels = (strip.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        canvas.paste(Image.fromarray(pixels), (LABEL_WIDTH, y))
        draw.text((8, y + strip.shape[1] // 2 - 6), label, fill="black")
        y += strip.shape[1]
    output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(output)
    return output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="an image folder (root/<class>/<image>)")
    parser.add_argument("-o", "--output", default="preview.png", help="the PNG to write")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, help="default: all runnable")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--rotate", type=float, default=15.0, help="rotate_degrees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--on-bad-file", choices=["raise", "skip"], default="raise", help="skip: leave them out"
    )


def run(args: argparse.Namespace) -> int:
    path = preview(
        args.source,
        args.output,
        backends=args.backends or runnable_backends(),
        samples=args.samples,
        image_size=args.image_size,
        rotate_degrees=args.rotate,
        seed=args.seed,
        on_bad_file=args.on_bad_file,
    )
    print(f"wrote {path}")
    return 0
