"""ImageNet-like image folders for the demo and the benchmarks: no download needed.

Each image is a smooth two-color gradient with a few filled shapes and mild noise, 500x375 or
375x500, JPEG quality 90 (~90-100 KB): it compresses and decodes like a photograph, where random
noise would compress badly and decode unrealistically slowly.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from .forking import forking


def natural_image(seed: int, size: tuple[int, int] = (500, 375)) -> Image.Image:
    """A photograph-like RGB image, fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (x * np.cos(angle) + y * np.sin(angle)) / max(width, height)
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = start + (end - start) * t[..., None]
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.1, 0.6) * width, rng.uniform(0.1, 0.6) * height
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=color)
    image = image.filter(ImageFilter.GaussianBlur(radius=1.5))
    noise = rng.normal(0, 18, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def _write_one(job: tuple[str, int]) -> None:
    path, seed = job
    size = (500, 375) if seed % 2 == 0 else (375, 500)
    natural_image(seed, size).save(path, "JPEG", quality=90)


def make_image_folder(
    root: str | os.PathLike[str], num_images: int, num_classes: int = 10, *, progress: bool = True
) -> Path:
    """Write `num_images` JPEGs into `root/class_NNN/`, class-sorted; existing files are kept."""
    root = Path(root)
    jobs = []
    for index in range(num_images):
        folder = root / f"class_{index * num_classes // num_images:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{index:07d}.jpg"
        if not path.exists():
            jobs.append((str(path), index))
    if jobs:
        workers = max(1, len(os.sched_getaffinity(0)))
        with ProcessPoolExecutor(workers) as pool:
            with forking():  # the first submit starts the processes
                done = pool.map(_write_one, jobs, chunksize=16)
            for _ in tqdm(done, total=len(jobs), desc=f"writing {root}", disable=not progress):
                pass
    return root
