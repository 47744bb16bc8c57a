"""Each sample's augmentation parameters, drawn in one place; every backend only applies them.

As in torchvision's transforms v2 (`make_params` apart from the kernels), drawing is kept apart
from applying. The draws are a function of (seed, epoch, sample index) alone: a counter-based
generator (splitmix64 of those three and the draw's number), so a whole batch is a few numpy
operations on the DALI feed's thread, a worker gets the same values as the feed for the same
sample, and a resumed epoch redraws exactly what the interrupted one drew. So the same seed gives
the same crop, flip and angle on every backend.

- Train: a random-resized crop (torchvision's algorithm: ten tries of an area in `scale` and a
  log-uniform aspect ratio in `ratio`, else the whole image cut to the nearest allowed ratio),
  a horizontal flip with `flip_prob`, an angle uniform in [-rotate_degrees, rotate_degrees].
- Eval: the shorter side scaled to `resize_size`, the centered `image_size` window: a
  fractional box, nothing rounded.
Boxes are (left, top, right, bottom) in the pixels of the upright image (EXIF orientation
applied), whose size the dataset check recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .spec import LoaderSpec

_TRIES = 10  # torchvision's RandomResizedCrop tries ten windows before its fallback
# Draw numbers of one sample: area and ratio and top and left per try, then flip, then angle.
_AREA, _RATIO, _TOP, _LEFT = (k * _TRIES for k in range(4))
_FLIP, _ANGLE = 4 * _TRIES, 4 * _TRIES + 1
_DRAWS = 4 * _TRIES + 2


@dataclass(frozen=True)
class SampleParams:
    """Where one output pixel comes from: the source box, the flip and the angle."""

    box: tuple[float, float, float, float]  # left, top, right, bottom in upright pixels
    flip: bool = False
    angle: float = 0.0  # degrees, counter-clockwise


@dataclass(frozen=True)
class BatchParams:
    """The parameters of a batch, one row a sample, as the DALI graph takes them."""

    boxes: np.ndarray  # (N, 4) float32: left, top, right, bottom
    flips: np.ndarray  # (N,) int32: 1 to flip
    angles: np.ndarray  # (N,) float32 degrees

    def __getitem__(self, row: int) -> SampleParams:
        left, top, right, bottom = (float(v) for v in self.boxes[row])
        return SampleParams(
            (left, top, right, bottom), bool(self.flips[row]), float(self.angles[row])
        )


def draw(spec: LoaderSpec, epoch: int, samples: np.ndarray, sizes: np.ndarray) -> BatchParams:
    """The parameters of `samples` in `epoch`; `sizes` is their (width, height), (N, 2)."""
    samples, sizes = np.asarray(samples), np.asarray(sizes)
    count = len(samples)
    width = sizes[:, 0].astype(np.float64)
    height = sizes[:, 1].astype(np.float64)
    if not spec.train:
        boxes = _eval_boxes(width, height, spec)
        return BatchParams(boxes, np.zeros(count, np.int32), np.zeros(count, np.float32))
    u = uniforms(spec.seed, epoch, samples, _DRAWS)
    boxes = _random_resized_crops(width, height, spec, u)
    flips = (u[:, _FLIP] < spec.flip_prob).astype(np.int32)
    degrees = spec.rotate_degrees
    angles = (degrees * (2 * u[:, _ANGLE] - 1)).astype(np.float32)
    return BatchParams(boxes, flips, angles if degrees > 0 else np.zeros(count, np.float32))


def uniforms(seed: int, epoch: int, samples: np.ndarray, count: int) -> np.ndarray:
    """(N, count) floats in [0, 1), a function of (seed, epoch, sample, draw number) alone."""
    with np.errstate(over="ignore"):
        key = _mix(_mix(np.uint64(seed) + _GOLDEN) + np.uint64(epoch))
        keys = _mix(key + np.asarray(samples).astype(np.uint64))
        draws = _mix(keys[:, None] + _GOLDEN * np.arange(1, count + 1, dtype=np.uint64))
    return np.asarray((draws >> np.uint64(11)).astype(np.float64) * 2.0**-53)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray | np.uint64) -> np.ndarray:
    """splitmix64's finalizer: every bit of the output depends on every bit of the input."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(x ^ (x >> np.uint64(31)))


def _random_resized_crops(
    width: np.ndarray, height: np.ndarray, spec: LoaderSpec, u: np.ndarray
) -> np.ndarray:
    """torchvision's `RandomResizedCrop.get_params`, ten tries at once for every sample."""
    area = (width * height)[:, None]
    low, high = spec.scale
    target = area * (low + (high - low) * u[:, _AREA : _AREA + _TRIES])
    log_low, log_high = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    aspect = np.exp(log_low + (log_high - log_low) * u[:, _RATIO : _RATIO + _TRIES])
    w = np.rint(np.sqrt(target * aspect))
    h = np.rint(np.sqrt(target / aspect))
    fits = (w > 0) & (h > 0) & (w <= width[:, None]) & (h <= height[:, None])
    first = np.argmax(fits, axis=1)
    rows = np.arange(len(width))
    w, h = w[rows, first], h[rows, first]
    top = np.floor(u[rows, _TOP + first] * (height - h + 1))
    left = np.floor(u[rows, _LEFT + first] * (width - w + 1))
    # No try fits: the whole image cut to the nearest allowed aspect ratio, centered.
    missed = ~fits.any(axis=1)
    if missed.any():
        mw, mh = width[missed], height[missed]
        in_ratio = mw / mh
        # At least one pixel: torchvision's own code would cut a 1x1 image to 0x1 here.
        cw = np.maximum(np.where(in_ratio > spec.ratio[1], np.rint(mh * spec.ratio[1]), mw), 1)
        ch = np.maximum(np.where(in_ratio < spec.ratio[0], np.rint(mw / spec.ratio[0]), mh), 1)
        w[missed], h[missed] = cw, ch
        top[missed] = (mh - ch) // 2
        left[missed] = (mw - cw) // 2
    return np.stack([left, top, left + w, top + h], axis=1).astype(np.float32)


def _eval_boxes(width: np.ndarray, height: np.ndarray, spec: LoaderSpec) -> np.ndarray:
    """Shorter side to `resize_size`, then the centered `image_size` window, unrounded."""
    scale = spec.resize_size / np.minimum(width, height)
    out_h, out_w = spec.image_size
    crop_w, crop_h = out_w / scale, out_h / scale
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return np.stack([left, top, left + crop_w, top + crop_h], axis=1).astype(np.float32)


def fields(spec: LoaderSpec) -> tuple[str, ...]:
    """The parameters the spec uses, by `BatchParams` field: what the DALI graph is fed."""
    if not spec.train:
        return ("boxes",)
    return ("boxes", "flips", "angles") if spec.rotate_degrees > 0 else ("boxes", "flips")
