"""Where each output pixel comes from: the crop box, the flip and the angle of one sample.

Drawing the random parameters is kept apart from applying them (`fallback.augment`), as in
torchvision's transforms v2. The train box follows `RandomResizedCrop.get_params` exactly; the
eval box is the DALI graph's (`dali_loader.pipeline._eval_images`): the shorter side scaled to
`resize_size`, the centered `image_size` window, with no rounding of the intermediate size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dali_loader.spec import LoaderSpec

Box = tuple[float, float, float, float]  # left, top, right, bottom in source pixels


@dataclass(frozen=True)
class SampleParams:
    box: Box
    flip: bool = False
    angle: float = 0.0


def train_params(
    width: int, height: int, spec: LoaderSpec, rng: np.random.Generator
) -> SampleParams:
    """A random-resized crop (torchvision's algorithm), a flip and an angle for one sample."""
    return SampleParams(
        box=_random_resized_crop(width, height, spec.scale, spec.ratio, rng),
        flip=bool(rng.random() < spec.flip_prob),
        angle=float(rng.uniform(-spec.rotate_degrees, spec.rotate_degrees))
        if spec.rotate_degrees > 0
        else 0.0,
    )


def eval_box(width: int, height: int, spec: LoaderSpec) -> Box:
    """The source region that becomes the eval output: shorter side to resize_size, center crop."""
    scale = spec.resize_size / min(width, height)
    out_h, out_w = spec.image_size
    crop_w, crop_h = out_w / scale, out_h / scale
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def _random_resized_crop(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> Box:
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    # No fit in 10 tries: the whole image, cut to the nearest allowed aspect ratio, centered.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h
