"""An op list cut into the stages every backend runs, with the facts the graphs are built from.

1. Crop stage: the ops that size the image (Resize, crops) before any turn, and the flips among
   them. Together they take one box of the source (its pixels, or a fraction of them after a
   resize) to an inner rectangle of a fixed-size canvas, the rest of the canvas padding:
   decoded (the box alone where it is whole pixels), resized once, padded. A window drawn after
   a flip is mirrored back onto the source, and the flip moves to the warp.
2. Warp stage: flips, turns and affines, and the crops after them: one affine map per image
   from the output to the canvas (a plain mirror when the flips are horizontal and alone).
3. Color stage: ColorJitter, Grayscale, GaussianBlur, in order, on floats, rounded once.
4. Normalize, to the dtype asked.
Pixels are whole 8-bit values between the stages, on every backend.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .errors import ConfigError
from .ops import (
    Affine,
    CenterCrop,
    ColorJitter,
    Flip,
    GaussianBlur,
    Grayscale,
    Normalize,
    Op,
    RandomCrop,
    RandomResizedCrop,
    Resize,
    Size,
)

CROPS = (CenterCrop, RandomCrop)
SIZING = (Resize, RandomResizedCrop, *CROPS)
WARPS = (Flip, Affine)
COLORS = (ColorJitter, Grayscale, GaussianBlur)


@dataclass(frozen=True)
class Plan:
    crops: tuple[Op, ...]
    warps: tuple[Op, ...]
    colors: tuple[Op, ...]
    mean: tuple[float, ...]  # 0..1 scale, one per channel
    std: tuple[float, ...]
    channels: int
    region: bool  # the crop stage's box is whole source pixels (decode it alone)
    resized: bool  # the crop stage resizes
    padded: bool  # the crop stage may pad
    pad_fill: tuple[int, int, int]
    mirror_only: bool  # the warps are horizontal flips alone
    bilinear: bool  # the warp interpolates (else nearest)
    warp_fill: float

    @property
    def crop_flips(self) -> tuple[Flip, ...]:
        """Flips among the crop stage's ops: drawn there (a window drawn after a flip is
        mirrored back onto the source), applied first in the warp."""
        return tuple(op for op in self.crops if isinstance(op, Flip))

    @property
    def has_warp(self) -> bool:
        return bool(self.warps) or bool(self.crop_flips)

    @property
    def warped(self) -> bool:
        """A warp that is not a plain mirror: one affine resampling."""
        return self.has_warp and not self.mirror_only


# "every image is at least this large": to check an op list's order before the images are known
ANY_SIZE: Size = (2**31 - 1, 2**31 - 1)


@functools.cache
def plan_of(ops: tuple[Op, ...], smallest: Size | None = None) -> Plan:
    """The stages of `ops`, or a ConfigError naming the op out of place. `smallest` is the
    least (height, width) of the images, where known: a crop no image is smaller than pads
    none (else any may)."""
    # the crop stage: up to the last op that sizes, before any turn (flips may stand between)
    k = lead = 0
    while lead < len(ops) and isinstance(ops[lead], (*SIZING, Flip)):
        lead += 1
        k = lead if isinstance(ops[lead - 1], SIZING) else k
    crops = ops[:k]
    j = k
    # crops after a flip or turn are part of the warp (a shift of its output window)
    while j < len(ops) and isinstance(ops[j], (*WARPS, *CROPS)):
        j += 1
    warps = ops[k:j]
    i = j
    while i < len(ops) and isinstance(ops[i], COLORS):
        i += 1
    colors = ops[j:i]
    rest = ops[i:]
    normalize = rest[0] if rest and isinstance(rest[0], Normalize) else None
    if normalize is not None:
        rest = rest[1:]
    if rest:
        raise ConfigError(_misplaced(rest[0], ops))
    for op in ops:
        if op.gate is not None and isinstance(op, Normalize):
            raise ConfigError("Normalize inside RandomApply: normalize every image, or none")
        if op.gate is not None and isinstance(op, SIZING):
            raise ConfigError(
                f"{type(op).__name__} inside RandomApply: an op that sets the size must apply "
                "to every image (the batch needs one size)"
            )
    channels = 3
    for op in colors:
        if channels == 1 and not isinstance(op, GaussianBlur):
            raise ConfigError(
                f"{type(op).__name__} after Grayscale(num_output_channels=1): there is one "
                "channel left; put it before the Grayscale"
            )
        if isinstance(op, Grayscale) and op.channels == 1:
            if op.p != 1 or op.gate is not None:
                raise ConfigError(
                    "a random Grayscale with one output channel would mix 1- and 3-channel "
                    "images in a batch: use num_output_channels=3, or Grayscale(1) always"
                )
            channels = 1
    mean, std = (normalize.mean, normalize.std) if normalize else ((0.0,), (1.0,))
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(
            f"Normalize has {len(mean)} values for {channels} channel(s): give one per channel"
        )
    region, resized, padded = True, False, False
    pad_fills: set[tuple[int, int, int]] = set()
    for op in crops:
        if isinstance(op, (Resize, RandomResizedCrop)) and padded:
            raise ConfigError(
                f"{type(op).__name__} after a crop that pads (padding, or a crop larger than "
                "an image): resize first, then pad, or the padding would be resampled"
            )
        if isinstance(op, (RandomResizedCrop, *CROPS)) and resized:
            region = False  # the box is a fraction of the source's pixels
        if isinstance(op, (Resize, RandomResizedCrop)):
            resized = True
        pads = isinstance(op, RandomCrop) and any(op.padding)
        if isinstance(op, CROPS) and (smallest is None or not _fits(op.size, smallest)):
            # CenterCrop pads a smaller image; RandomCrop pads it if told to, else refuses it
            pads = pads or isinstance(op, CenterCrop) or op.pad_if_needed
        if pads:
            pad_fills.add(op.fill if isinstance(op, RandomCrop) else (0, 0, 0))
            padded = True
        smallest = _lower_bound(op, smallest)  # a lower bound of the image's size, or None
    if len(pad_fills) > 1:
        raise ConfigError(
            f"the crops pad with different fills {sorted(pad_fills)} (CenterCrop pads with "
            "black): give them one fill"
        )
    affines = [op for op in warps if isinstance(op, Affine)]
    # the canvas at the first turn: its size, or at least the images' (`smallest` is then a
    # lower bound of it)
    fills = {op.fill for op in affines} | _warp_crop_fills(warps, static_size(crops) or smallest)
    if len(fills) > 1:
        raise ConfigError(
            f"the turns and crops after them fill with different values {sorted(fills)} "
            "(CenterCrop pads with black): they are one warp here, give them one fill"
        )
    flips = [op for op in crops if isinstance(op, Flip)]
    mirror_only = all(isinstance(op, Flip) and op.horizontal for op in (*flips, *warps))
    return Plan(
        crops=crops,
        warps=warps,
        colors=colors,
        mean=tuple(mean),
        std=tuple(std),
        channels=channels,
        region=region,
        resized=resized,
        padded=padded,
        pad_fill=pad_fills.pop() if pad_fills else (0, 0, 0),
        mirror_only=mirror_only,
        bilinear=any(op.bilinear for op in affines),
        warp_fill=fills.pop() if fills else 0.0,
    )


def _warp_crop_fills(warps: tuple[Op, ...], canvas: Size | None) -> set[float]:
    """The fills of the crops after a turn that may pad (CenterCrop's black), the canvas being
    at least `canvas` at the first (None: unknown)."""
    fills: set[float] = set()
    for op in warps:
        if not isinstance(op, CROPS):
            continue
        larger = canvas is None or not _fits(op.size, canvas)
        if isinstance(op, CenterCrop) and larger:
            fills.add(0.0)
        if isinstance(op, RandomCrop) and (any(op.padding) or (op.pad_if_needed and larger)):
            if len(set(op.fill)) > 1:
                raise ConfigError(
                    f"RandomCrop(fill={op.fill}) after a flip or turn: they are one warp "
                    "here, which fills every channel with one value; give one value, or crop "
                    "before the flip or turn"
                )
            fills.add(float(op.fill[0]))
        canvas = op.size
    return fills


def _fits(size: Size, bound: Size) -> bool:
    return size[0] <= bound[0] and size[1] <= bound[1]


def _lower_bound(op: Op, smallest: Size | None) -> Size | None:
    """A lower bound of the (height, width) after `op`, None where the image decides."""
    if isinstance(op, Resize):
        if len(op.size) == 2:
            return op.size[0], op.size[1]
        return None if op.max_size is not None else (op.size[0], op.size[0])
    if isinstance(op, (*CROPS, RandomResizedCrop)):
        return op.size
    return smallest


def _misplaced(op: Op, ops: tuple[Op, ...]) -> str:
    name = type(op).__name__
    if isinstance(op, (Resize, RandomResizedCrop)):
        return (
            f"{name} after a turn (RandomRotation, RandomAffine) or a color op: resizes and "
            "random-resized crops come first (move it before them)"
        )
    if isinstance(op, SIZING + WARPS):
        return f"{name} after a color op: the geometry comes first (move it before them)"
    if isinstance(op, Normalize):
        return "a second Normalize: merge them into one"
    return f"{name} after Normalize: Normalize must come last"


def resized_size(size: Size, op: Resize) -> Size:
    """The (height, width) torchvision's Resize gives an image of `size` (height, width)."""
    height, width = size
    if len(op.size) == 2:
        return op.size[0], op.size[1]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = op.size[0], int(op.size[0] * long / short)
    if op.max_size is not None and new_long > op.max_size:
        new_short, new_long = int(op.max_size * new_short / new_long), op.max_size
    return (new_long, new_short) if width <= height else (new_short, new_long)


def output_size(ops: tuple[Op, ...], size: Size) -> Size:
    """The (height, width) of the images `ops` make from an image of `size`."""
    for op in ops:
        if isinstance(op, Resize):
            size = resized_size(size, op)
        elif isinstance(op, (*CROPS, RandomResizedCrop)):
            size = op.size
    return size


def static_size(ops: tuple[Op, ...]) -> Size | None:
    """The output size when it does not depend on the image's, else None."""
    fixed: Size | None = None
    for op in ops:
        if isinstance(op, Resize):
            fixed = (op.size[0], op.size[1]) if len(op.size) == 2 else None
        elif isinstance(op, (*CROPS, RandomResizedCrop)):
            fixed = op.size
    return fixed
