"""`as_is=True`: the user's own Compose, called on each sample as `DataLoader(ImageFolder(root,
transform))` calls it, for pipelines the loader cannot compile. Slow (one PIL image and the
Compose's own ops per sample, in the workers) but exact, and still with this loader's epochs,
shards, checks and resume.

Each call draws from torch's and Python's generators seeded with `sample_seed(seed, epoch,
index)`, so a worker, a resumed epoch and a reference DataLoader seeded the same way draw the
same values; the caller's own generators are left as they were.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from dali_loader import params
from dali_loader.errors import ConfigError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample `index`'s call in `epoch`: a function of these three alone."""
    u = params.uniforms(seed, epoch, np.array([index]), 1)
    return int(u[0, 0] * 2.0**53)


def run_as_is(
    transform: Callable[[Image.Image], object], encoded: bytes, seed: int
) -> torch.Tensor:
    """`transform` of the image in `encoded`, loaded as ImageFolder's loader does (RGB; EXIF
    orientation not applied), with torch and `random` seeded by `seed`."""
    with Image.open(io.BytesIO(encoded)) as image:
        rgb = image.convert("RGB")
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            out = transform(rgb)
    finally:
        random.setstate(state)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            f"as_is=True: the transform returned a {type(out).__name__}, not a tensor; end it "
            "with ToTensor() (or ToImage() + ToDtype(torch.float32, scale=True))"
        )
    return out
