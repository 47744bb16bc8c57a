"""The backend-neutral contract: what to load, how to augment it, what comes out.

Every backend is built from one `LoaderSpec`, so they cannot drift apart. This module imports
neither torch nor DALI: it is plain data, validated once on creation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from .errors import ConfigError, DatasetError
from .ops import Op, keyword_ops

if TYPE_CHECKING:
    import numpy as np

    from .plan import Plan

DTYPES = ("float32", "float16", "bfloat16")

# Images with more pixels are bad files (decompression bombs): PIL's own warning limit.
DEFAULT_MAX_PIXELS = 89_478_485

# The order is drawn with torch (seed + epoch), the augmentation from 64-bit counters
# (dali_loader.params): seeds below 2**63 suit both.
SEED_LIMIT = 2**63

# Eval resizes the shorter side to image_size / EVAL_CROP_FRACTION, then center-crops: 224 -> 256.
EVAL_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class LoaderSpec:
    """How a batch is made, identically on every backend.

    `ops` is the augmentation, in order (`dali_loader.ops`; () is none: the images as they
    are, which must then share one size). Left None, the keyword recipe makes it:
    Train: random-resized crop (torchvision's `scale` and `ratio`), horizontal flip with
    `flip_prob`, rotation by an angle uniform in [-rotate_degrees, rotate_degrees] (bilinear,
    corners filled with black), normalization with `mean`/`std` on the 0..1 scale.
    Eval: resize the shorter side to image_size / 0.875 (256 for 224), center crop
    `image_size`, normalize (torchvision's Resize and CenterCrop, pixel for pixel).
    Given, `image_size`, `mean` and `std` are what the ops make. What depends on the images'
    sizes is found from the check's (`with_source_sizes`): `crop_size`, what the crops make
    where the ops leave it to the images, and `smallest_source`, whether a crop pads.
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
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    dtype: str = "float32"
    channels_last: bool = False
    shard_id: int = 0
    num_shards: int = 1
    ops: tuple[Op, ...] | None = None  # a tuple once made
    crop_size: tuple[int, int] | None = None
    smallest_source: tuple[int, int] | None = None  # (height, width): no image is smaller

    def __post_init__(self) -> None:
        self._normalize_types()
        if self.ops is None:
            self._check_recipe()
            object.__setattr__(self, "ops", self._keyword_ops())
        from .plan import ANY_SIZE, plan_of, static_size

        # the order and the stages; whether crops pad waits for the images (with_source_sizes)
        plan = plan_of(self.ops, self.smallest_source or ANY_SIZE)
        if self.crop_size is None:
            object.__setattr__(self, "crop_size", static_size(plan.crops))
        # a crop after a turn cuts the canvas again: the output's size, whatever the canvas's
        if (size := static_size(plan.warps) or self.crop_size) is not None:
            object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "mean", plan.mean)
        object.__setattr__(self, "std", plan.std)
        _check(self.batch_size > 0, f"batch_size must be a positive integer, got {self.batch_size}")
        _check(
            0 <= self.seed < SEED_LIMIT,
            f"seed must be an integer in [0, 2**63), got {self.seed}",
        )
        _check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        _check(
            self.num_shards >= 1 and 0 <= self.shard_id < self.num_shards,
            f"shard_id must be in [0, num_shards), got shard_id={self.shard_id} "
            f"num_shards={self.num_shards}",
        )

    def _keyword_ops(self) -> tuple[Op, ...]:
        return keyword_ops(
            train=self.train,
            image_size=self.image_size,
            scale=self.scale,
            ratio=self.ratio,
            flip_prob=self.flip_prob,
            rotate_degrees=self.rotate_degrees,
            mean=self.mean,
            std=self.std,
            eval_crop_fraction=EVAL_CROP_FRACTION,
        )

    @functools.cached_property
    def plan(self) -> Plan:
        """The stages; a crop pads where `smallest_source` says an image is smaller (unknown
        until `with_source_sizes`, which every loader calls: no image is, until then). Kept:
        every sample asks for it, and the fields it comes from do not change."""
        from .plan import ANY_SIZE, plan_of

        return plan_of(self.ops or (), self.smallest_source or ANY_SIZE)

    @property
    def channels(self) -> int:
        return self.plan.channels

    @property
    def resolved(self) -> bool:
        """Whether the output size is known (else `with_source_sizes` must tell it): the crop
        stage's, or a crop's after a turn (of canvases of several sizes then)."""
        from .plan import static_size

        return self.crop_size is not None or static_size(self.plan.warps) is not None

    def with_source_sizes(self, sizes: np.ndarray, names: Sequence[str]) -> LoaderSpec:
        """This spec checked against the images' upright (width, height) `sizes` (named by
        `names`), its output size found from them where the ops leave it to the images: one
        size for all, else a ConfigError naming two images that would come out differently;
        an image the ops cannot take (smaller than a RandomCrop) is named too."""
        import numpy as np

        from . import params
        from .plan import output_size

        unique, first = np.unique(np.asarray(sizes).reshape(-1, 2), axis=0, return_index=True)
        if len(unique) and self.smallest_source is None:
            least = (int(unique[:, 1].min()), int(unique[:, 0].min()))
            try:
                spec = dataclasses.replace(self, smallest_source=least)
            except ConfigError as error:
                shortest = int(first[np.argmin(unique[:, 1])])
                narrowest = int(first[np.argmin(unique[:, 0])])
                raise ConfigError(
                    f"{error} (the shortest image: {names[shortest]}, {least[0]} high; the "
                    f"narrowest: {names[narrowest]}, {least[1]} wide)"
                ) from None
            return spec.with_source_sizes(sizes, names)
        outputs: dict[tuple[int, int], int] = {}
        for (width, height), row in zip(unique.tolist(), first.tolist(), strict=True):
            outputs.setdefault(output_size(self.plan.crops, (height, width)), row)
        empty = [(size, row) for size, row in outputs.items() if min(size) < 1]
        if empty:
            (height, width), row = empty[0]
            raise ConfigError(
                f"{names[row]} comes out {width}x{height} (width x height) through the "
                "transform's resizes: too thin to keep a pixel (a max_size too small?)"
            )
        spec = self
        if not self.resolved and len(outputs) > 1:
            (a, row_a), (b, row_b) = list(outputs.items())[:2]
            raise ConfigError(
                f"the transform's output size depends on the image's: {names[row_a]} comes "
                f"out {a[1]}x{a[0]}, {names[row_b]} {b[1]}x{b[0]} (width x height), and a "
                "batch needs one size: end the geometry with a crop, or Resize((h, w))"
            )
        if self.crop_size is None and len(outputs) == 1:
            spec = dataclasses.replace(self, crop_size=next(iter(outputs)))
        if spec.crop_size is None and spec.plan.padded:
            raise ConfigError(
                "the images come out of the crops in several sizes, and a crop pads them: "
                "not taken before a turn; Resize((h, w)) first"
            )
        _check_blurs(spec)
        try:  # every size the ops meet, drawn once: what they cannot take is refused now
            params.draw(spec, 0, first, unique)
        except (DatasetError, ConfigError):
            for size, row in zip(unique, first.tolist(), strict=True):  # which image
                try:
                    params.draw(spec, 0, np.array([row]), size[None])
                except (DatasetError, ConfigError) as error:
                    raise type(error)(f"{names[row]}: {error}") from None
            raise
        return spec

    def _check_recipe(self) -> None:
        """The keyword recipe's values, checked before they become ops."""
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

    def _normalize_types(self) -> None:
        """Integers, numbers and flags as Python's own types (numpy's are welcome), or a
        ConfigError naming the field: a float seed or a bool size is a mistake, not a value."""
        for name in ("batch_size", "seed", "shard_id", "num_shards"):
            object.__setattr__(self, name, _integer(name, getattr(self, name)))
        for name in ("flip_prob", "rotate_degrees"):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        for name in ("image_size", "scale", "ratio", "mean", "std"):
            values = getattr(self, name)
            _check(
                isinstance(values, (tuple, list)),
                f"{name} must be a tuple of numbers, got {values!r}",
            )
            convert = _integer if name == "image_size" else _number
            object.__setattr__(self, name, tuple(convert(name, v) for v in values))
        for name in ("train", "shuffle", "drop_last", "channels_last"):
            value = getattr(self, name)
            _check(
                (isinstance(value, numbers.Integral) or _numpy_bool(value)) and value in (0, 1),
                f"{name} must be True or False, got {value!r}",
            )
            object.__setattr__(self, name, bool(value))

    @property
    def mean_255(self) -> tuple[float, ...]:
        """`mean` on the 0..255 scale that uint8 pixels use."""
        return tuple(m * 255.0 for m in self.mean)

    @property
    def std_255(self) -> tuple[float, ...]:
        """`std` on the 0..255 scale that uint8 pixels use."""
        return tuple(s * 255.0 for s in self.std)


def _check_blurs(spec: LoaderSpec) -> None:
    """A blur's kernel reflects at the borders: half of it must fit in the image (torchvision
    fails on the first batch otherwise)."""
    from .ops import GaussianBlur

    height, width = spec.image_size
    for op in spec.plan.colors:
        if isinstance(op, GaussianBlur) and (
            op.kernel[0] // 2 >= width or op.kernel[1] // 2 >= height
        ):
            raise ConfigError(
                f"GaussianBlur(kernel_size={op.kernel}) on {width}x{height} images: half the "
                "kernel must fit in the image; take a smaller kernel"
            )


def _numpy_bool(value: object) -> bool:
    """numpy's bool, recognized without importing numpy (the command line starts without it)."""
    return getattr(getattr(value, "dtype", None), "kind", "") == "b"


def _integer(name: str, value: object) -> int:
    _check(
        isinstance(value, numbers.Integral) and not isinstance(value, bool),
        f"{name} must be an integer, got {value!r}",
    )
    return operator.index(cast(numbers.Integral, value))


def _number(name: str, value: object) -> float:
    _check(
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value),
        f"{name} must be a finite number, got {value!r}",
    )
    return float(cast(numbers.Real, value))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
