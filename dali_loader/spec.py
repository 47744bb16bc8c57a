"""The backend-neutral contract: what to load, how to augment it, what comes out.

Every backend is built from one `LoaderSpec`, so they cannot drift apart. This module imports
neither torch nor DALI: it is plain data, validated once on creation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

DTYPES = ("float32", "float16", "bfloat16")

# Images with more pixels are bad files (decompression bombs): PIL's own warning limit.
DEFAULT_MAX_PIXELS = 89_478_485

# Eval resizes the shorter side to image_size / EVAL_CROP_FRACTION, then center-crops: 224 -> 256.
EVAL_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class LoaderSpec:
    """How a batch is made, identically on every backend.

    Train: random-resized crop (torchvision's `scale` and `ratio`), horizontal flip with
    `flip_prob`, rotation by an angle uniform in [-rotate_degrees, rotate_degrees] (bilinear,
    corners filled with black), normalization with `mean`/`std` on the 0..1 scale.
    Eval: resize the shorter side to `resize_size`, center crop `image_size`, normalize.
    Images decode to RGB with EXIF orientation applied, as an image viewer shows them.
    """

    batch_size: int = 256
    train: bool = True
    image_size: tuple[int, int] = (224, 224)
    shuffle: bool = True
    drop_last: bool = False
    seed: int = 0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    rotate_degrees: float = 0.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    dtype: str = "float32"
    channels_last: bool = False
    shard_id: int = 0
    num_shards: int = 1

    def __post_init__(self) -> None:
        _check(
            isinstance(self.batch_size, int)
            and not isinstance(self.batch_size, bool)
            and self.batch_size > 0,
            f"batch_size must be a positive integer, got {self.batch_size!r}",
        )
        height, width = self.image_size
        _check(
            height > 0 and width > 0,
            f"image_size must be positive, got {self.image_size!r}; pass e.g. image_size=224",
        )
        low, high = self.scale
        _check(
            0 < low <= high <= 1,
            f"scale must satisfy 0 < min <= max <= 1 (a fraction of the image area), "
            f"got {self.scale!r}; torchvision's default is (0.08, 1.0)",
        )
        low, high = self.ratio
        _check(
            0 < low <= high and math.isfinite(high),
            f"ratio must satisfy 0 < min <= max (width / height), got {self.ratio!r}; "
            "torchvision's default is (3/4, 4/3)",
        )
        _check(
            0.0 <= self.flip_prob <= 1.0,
            f"flip_prob is a probability in [0, 1], got {self.flip_prob!r}",
        )
        _check(
            0.0 <= self.rotate_degrees <= 180.0,
            f"rotate_degrees must be in [0, 180] (angles are drawn from [-d, d]), "
            f"got {self.rotate_degrees!r}",
        )
        _check(
            len(self.mean) == 3 and len(self.std) == 3,
            f"mean and std need one value per RGB channel, got mean={self.mean!r} std={self.std!r}",
        )
        _check(
            all(s > 0 for s in self.std),
            f"std must be positive, got {self.std!r}; values are on the 0..1 scale",
        )
        _check(
            all(-1.0 <= m <= 2.0 for m in self.mean) and all(s <= 2.0 for s in self.std),
            f"mean and std are on the 0..1 pixel scale, got mean={self.mean!r} std={self.std!r}; "
            "divide 0..255 values by 255",
        )
        _check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        _check(
            self.num_shards >= 1 and 0 <= self.shard_id < self.num_shards,
            f"shard_id must be in [0, num_shards), got shard_id={self.shard_id} "
            f"num_shards={self.num_shards}",
        )

    @property
    def resize_size(self) -> int:
        """The shorter side before the eval center crop (256 for 224)."""
        return int(max(self.image_size) / EVAL_CROP_FRACTION)

    @property
    def mean_255(self) -> tuple[float, float, float]:
        """`mean` on the 0..255 scale that uint8 pixels use."""
        r, g, b = (m * 255.0 for m in self.mean)
        return r, g, b

    @property
    def std_255(self) -> tuple[float, float, float]:
        """`std` on the 0..255 scale that uint8 pixels use."""
        r, g, b = (s * 255.0 for s in self.std)
        return r, g, b


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
