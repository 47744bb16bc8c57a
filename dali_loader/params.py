"""Each sample's augmentation parameters, drawn in one place; every backend only applies them.

As in torchvision's transforms v2 (`make_params` apart from the kernels), drawing is kept apart
from applying. The draws are a function of (seed, epoch, sample index) alone: a counter-based
generator (splitmix64 of those, the op's position and the draw's number), so a whole batch is a
few numpy operations on the DALI feed's thread, a worker gets the same values as the feed for
the same sample, and a resumed epoch redraws exactly what the interrupted one drew. So the same
seed gives the same crop, flip, angle and colors on every backend.

Each op draws as its torchvision `get_params` does (RandomResizedCrop's ten tries, RandomCrop's
padded offsets, RandomAffine's rounded translation...), then the stages of `dali_loader.plan`
are composed per sample:
- "boxes" (N, 4): the source box (left, top, right, bottom) in upright pixels (EXIF orientation
  applied), whose size the dataset check recorded; "inner" (N, 4), where the crop stage may
  pad: (top, left, height, width) of the resized box on the canvas;
- "flips" (N,) for a mirror alone, else "matrices" (N, 2, 3): the output-to-canvas map,
  in pixel-corner coordinates;
- per color op k: "c{k}.m{j}" (N, 3, 3) channel matrices, "c{k}.b{j}" (N, 1) the weight of
  the image's mean gray (ColorJitter's contrast, where enabled), "c{k}.h{j}" (N, 1) the hue's
  turn (where enabled), "c{k}.sigma" (N, 1) for a blur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError, DatasetError
from .ops import (
    Affine,
    CenterCrop,
    ColorJitter,
    Flip,
    GaussianBlur,
    Grayscale,
    Op,
    RandomCrop,
    RandomResizedCrop,
    Resize,
)
from .plan import Plan, resized_size
from .spec import LoaderSpec

_TRIES = 10  # torchvision's RandomResizedCrop tries ten windows before its fallback
_AREA, _RATIO, _TOP, _LEFT = (k * _TRIES for k in range(4))
_STREAM = 1 << 20  # draw numbers of one op: [stream * position, ...); a gate's from its own
# the draws a crop-stage op makes per sample (a resize, a center crop: none)
_CROP_DRAWS = {RandomResizedCrop: 4 * _TRIES, RandomCrop: 2}

# torchvision's rgb_to_grayscale weights
GRAY = np.array([0.2989, 0.587, 0.114])


@dataclass(frozen=True)
class BatchParams:
    """The parameters of a batch: named arrays, one row a sample, as the DALI graph takes them."""

    arrays: dict[str, np.ndarray]

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})  # absent while copy and pickle rebuild it
        if name not in arrays:
            raise AttributeError(name)
        return np.asarray(arrays[name])

    def __getitem__(self, row: int) -> dict[str, np.ndarray]:
        """One sample's parameters, for a backend that applies them one image at a time."""
        return {name: array[row] for name, array in self.arrays.items()}


def fields(spec: LoaderSpec) -> tuple[str, ...]:
    """The arrays `draw` returns for `spec`, in order: what the DALI graph is fed."""
    plan = spec.plan
    names = ["boxes", *(["inner"] if _inner_fed(spec) else [])]
    if plan.mirror_only and plan.has_warp:
        names.append("flips")
    elif plan.has_warp:
        names.append("matrices")
    for k, op in enumerate(plan.colors):
        names += [f"c{k}.{name}" for name in _color_fields(op)]
    return tuple(names)


def _inner_fed(spec: LoaderSpec) -> bool:
    """Whether the graph needs "inner": to pad, or to resize to sizes that differ."""
    plan = spec.plan
    return plan.padded or (spec.crop_size is None and plan.resized)


def _color_fields(op: Op) -> list[str]:
    if isinstance(op, ColorJitter):
        kinds = "m" + "b" * (op.contrast is not None) + "h" * (op.hue is not None)
        return [f"{kind}{j}" for j in range(op.enabled) for kind in kinds]
    if isinstance(op, Grayscale):
        return ["m0"] if op.channels == 3 else []
    return ["sigma"]


def draw(spec: LoaderSpec, epoch: int, samples: np.ndarray, sizes: np.ndarray) -> BatchParams:
    """The parameters of `samples` in `epoch`; `sizes` is their upright (width, height), (N, 2)."""
    plan = spec.plan
    samples, sizes = np.asarray(samples), np.asarray(sizes)
    streams = _Streams(spec, epoch, samples)
    state = _Canvas(sizes)
    for position, op in enumerate(plan.crops):
        if isinstance(op, Flip):
            state.flip(op.horizontal, streams.active(position, op, op.p))
        else:
            state.apply(op, streams.uniforms(position, _CROP_DRAWS.get(type(op), 0)))
    if spec.crop_size is not None:  # else the canvases differ, and a crop after the turn cuts
        height, width = spec.crop_size
        wrong = (state.width != width) | (state.height != height)
        if wrong.any():
            row = int(np.argmax(wrong))
            raise DatasetError(
                f"sample {int(samples[row])} ({int(sizes[row, 0])}x{int(sizes[row, 1])}) comes "
                f"out {int(state.width[row])}x{int(state.height[row])}, not {width}x{height}: its"
                " size changed since the check. Create the loader again: it checks it again."
            )
    arrays: dict[str, np.ndarray] = {"boxes": state.box.astype(np.float32)}
    if _inner_fed(spec):
        x0, y0, x1, y1 = state.inner.T
        arrays["inner"] = np.stack([y0, x0, y1 - y0, x1 - x0], axis=1).astype(np.float32)
    if plan.has_warp:
        matrices, flips = _warp(plan, streams, state)
        if plan.mirror_only:
            arrays["flips"] = flips
        else:
            arrays["matrices"] = matrices[:, :2].astype(np.float32)
    first = len(plan.crops) + len(plan.warps)
    for k, op in enumerate(plan.colors):
        for name, array in _color(op, streams, first + k).items():
            arrays[f"c{k}.{name}"] = array.astype(np.float32)
    return BatchParams(arrays)


class _Streams:
    """Uniforms per op: each op (and each RandomApply gate) draws from its own numbers."""

    def __init__(self, spec: LoaderSpec, epoch: int, samples: np.ndarray) -> None:
        self.seed, self.epoch, self.samples = spec.seed, epoch, samples
        self.ops = len(spec.ops or ())

    def uniforms(self, position: int, count: int, skip: int = 0) -> np.ndarray:
        """The draws of the op at `position` in the spec's ops (after its first `skip`)."""
        return uniforms(self.seed, self.epoch, self.samples, count, position + 1, skip)

    def active(self, position: int, op: Op, p: float = 1.0) -> np.ndarray:
        """Whether `op` applies to each sample: its own probability `p`, and its gate's."""
        on = np.ones(len(self.samples), dtype=bool)
        if op.gate is not None:
            stream = self.ops + 1 + op.gate.slot
            on &= uniforms(self.seed, self.epoch, self.samples, 1, stream)[:, 0] < op.gate.p
        if p < 1:  # the op's 64th number: its other draws use the first ones
            on &= self.uniforms(position, 1, skip=63)[:, 0] < p
        return on


def uniforms(
    seed: int, epoch: int, samples: np.ndarray, count: int, stream: int = 0, skip: int = 0
) -> np.ndarray:
    """(N, count) floats in [0, 1), a function of (seed, epoch, sample, stream, draw) alone:
    the stream's draws `skip` to `skip + count`."""
    with np.errstate(over="ignore"):
        key = _mix(_mix(np.uint64(seed) + _GOLDEN) + np.uint64(epoch))
        keys = _mix(key + np.asarray(samples).astype(np.uint64))
        first = np.uint64(stream * _STREAM + 1 + skip)
        numbers = first + np.arange(count, dtype=np.uint64)
        draws = _mix(keys[:, None] + _GOLDEN * numbers)
    return np.asarray((draws >> np.uint64(11)).astype(np.float64) * 2.0**-53)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray | np.uint64) -> np.ndarray:
    """splitmix64's finalizer: every bit of the output depends on every bit of the input."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(x ^ (x >> np.uint64(31)))


class _Canvas:
    """The crop stage per sample: the source `box` lands on `inner` of a canvas of `width` x
    `height`, the rest padding (all float64, whole values but the box after a resize). A flip
    is kept as a flag: windows drawn on the flipped canvas are mirrored onto it, and the warp
    flips it first."""

    def __init__(self, sizes: np.ndarray) -> None:
        self.width = sizes[:, 0].astype(np.float64)
        self.height = sizes[:, 1].astype(np.float64)
        zeros = np.zeros_like(self.width)
        self.box = np.stack([zeros, zeros, self.width, self.height], axis=1)
        self.inner = self.box.copy()
        self.flipped_x = np.zeros(len(sizes), dtype=bool)
        self.flipped_y = np.zeros(len(sizes), dtype=bool)
        self.empty = np.zeros(len(sizes), dtype=bool)  # all padding: nothing of the source

    def flip(self, horizontal: bool, on: np.ndarray) -> None:
        if horizontal:
            self.flipped_x ^= on
        else:
            self.flipped_y ^= on

    def apply(self, op: Op, u: np.ndarray) -> None:
        if isinstance(op, Resize):
            self._resize(op)
        elif isinstance(op, CenterCrop):
            height, width = op.size
            left = _center_offset(self.width, width)
            top = _center_offset(self.height, height)
            self._cut(left, top, width, height)
        elif isinstance(op, RandomCrop):
            self._cut(*random_crop_windows(op, self.width, self.height, u))
        elif isinstance(op, RandomResizedCrop):
            left, top, right, bottom = random_resized_crops(op, self.width, self.height, u).T
            self._cut(left, top, right - left, bottom - top)
            self._set_size(*op.size)

    def _resize(self, op: Resize) -> None:
        if len(op.size) == 2:
            self._set_size(op.size[0], op.size[1])
            return
        pairs = np.stack([self.height, self.width], axis=1).astype(np.int64)
        unique, where = np.unique(pairs, axis=0, return_inverse=True)
        new = np.array([resized_size((int(h), int(w)), op) for h, w in unique], dtype=np.float64)
        self._set_size(new[where.reshape(-1), 0], new[where.reshape(-1), 1])

    def _set_size(self, height: Any, width: Any) -> None:
        """A resize of the whole canvas (the plan refuses one after padding)."""
        self.height = np.broadcast_to(np.asarray(height, np.float64), self.width.shape).copy()
        self.width = np.broadcast_to(np.asarray(width, np.float64), self.height.shape).copy()
        zeros = np.zeros_like(self.width)
        self.inner = np.stack([zeros, zeros, self.width, self.height], axis=1)

    def _cut(self, left: Any, top: Any, width: Any, height: Any) -> None:
        """The window (left, top, width, height) of the canvas as shown (flipped where it is)
        becomes the canvas."""
        left = np.where(self.flipped_x, self.width - left - width, left)
        top = np.where(self.flipped_y, self.height - top - height, top)
        x0, y0, x1, y1 = self.inner.T
        kx0, ky0 = np.maximum(x0, left), np.maximum(y0, top)
        kx1, ky1 = np.minimum(x1, left + width), np.minimum(y1, top + height)
        bx0, by0, bx1, by1 = self.box.T
        sx, sy = (bx1 - bx0) / (x1 - x0), (by1 - by0) / (y1 - y0)
        box = np.stack(
            [
                bx0 + (kx0 - x0) * sx,
                by0 + (ky0 - y0) * sy,
                bx0 + (kx1 - x0) * sx,
                by0 + (ky1 - y0) * sy,
            ],
            axis=1,
        )
        inner = np.stack([kx0 - left, ky0 - top, kx1 - left, ky1 - top], axis=1)
        # A window wholly in the padding: all fill. Its source is one pixel placed just
        # outside the canvas (a box and a size of none would be nothing to decode or resize).
        self.empty |= (kx1 <= kx0) | (ky1 <= ky0)
        box[self.empty] = [0.0, 0.0, 1.0, 1.0]
        inner[self.empty] = [-1.0, -1.0, 0.0, 0.0]
        self.box, self.inner = box, inner
        self.width = np.broadcast_to(np.asarray(width, np.float64), x0.shape).copy()
        self.height = np.broadcast_to(np.asarray(height, np.float64), x0.shape).copy()


def _center_offset(size: np.ndarray, crop: int) -> np.ndarray:
    """torchvision's center_crop: rounded half to even, a larger crop padded (less on the
    left and top)."""
    return np.where(crop <= size, np.round((size - crop) / 2.0), -((crop - size) // 2))


def random_crop_windows(
    op: RandomCrop,
    width: np.ndarray,
    height: np.ndarray,
    u: np.ndarray,
    error: type[Exception] = DatasetError,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """torchvision's RandomCrop: pad by `padding`, then (pad_if_needed) each side by what is
    missing, then a uniform window: (left, top) in the unpadded image's pixels, and the size.
    A crop larger than the (padded) image raises `error`."""
    crop_h, crop_w = op.size
    left, top, right, bottom = op.padding
    pad_x = left + np.maximum(crop_w - (width + left + right), 0) * op.pad_if_needed
    pad_y = top + np.maximum(crop_h - (height + top + bottom), 0) * op.pad_if_needed
    padded_w = width + left + right + 2 * (pad_x - left)
    padded_h = height + top + bottom + 2 * (pad_y - top)
    small = (padded_w < crop_w) | (padded_h < crop_h)
    if small.any():
        row = int(np.argmax(small))
        raise error(
            f"an image of {int(width[row])}x{int(height[row])} (width x height, padding "
            f"{op.padding} left out) is smaller than RandomCrop({op.size}): pass "
            "pad_if_needed=True to pad it, or crop less"
        )
    y = np.floor(u[:, 0] * (padded_h - crop_h + 1))
    x = np.floor(u[:, 1] * (padded_w - crop_w + 1))
    return x - pad_x, y - pad_y, crop_w, crop_h


def random_resized_crops(
    op: RandomResizedCrop, width: np.ndarray, height: np.ndarray, u: np.ndarray
) -> np.ndarray:
    """torchvision's `RandomResizedCrop.get_params`, ten tries at once for every sample:
    (left, top, right, bottom)."""
    area = (width * height)[:, None]
    low, high = op.scale
    target = area * (low + (high - low) * u[:, _AREA : _AREA + _TRIES])
    log_low, log_high = math.log(op.ratio[0]), math.log(op.ratio[1])
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
        cw = np.maximum(np.where(in_ratio > op.ratio[1], np.rint(mh * op.ratio[1]), mw), 1)
        ch = np.maximum(np.where(in_ratio < op.ratio[0], np.rint(mw / op.ratio[0]), mh), 1)
        w[missed], h[missed] = cw, ch
        top[missed] = (mh - ch) // 2
        left[missed] = (mw - cw) // 2
    return np.stack([left, top, left + w, top + h], axis=1)


def _warp(plan: Plan, streams: _Streams, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The composed output-to-canvas maps (N, 3, 3) and, for a mirror alone, the flips: the
    crop stage's flips first, then the warp's ops, each on the image as it then is."""
    width, height = canvas.width.copy(), canvas.height.copy()
    count = len(width)
    total = np.broadcast_to(np.eye(3), (count, 3, 3)).copy()
    flipped_x, flipped_y = canvas.flipped_x, canvas.flipped_y
    total[flipped_x, 0, 0], total[flipped_x, 0, 2] = -1.0, width[flipped_x]
    total[flipped_y, 1, 1], total[flipped_y, 1, 2] = -1.0, height[flipped_y]
    flips = flipped_x.astype(np.int32)
    for position, op in enumerate(plan.warps, start=len(plan.crops)):
        step = np.broadcast_to(np.eye(3), (count, 3, 3)).copy()
        if isinstance(op, Flip):
            on = streams.active(position, op, op.p)
            flips ^= on.astype(np.int32)
            axis, extent = (0, width) if op.horizontal else (1, height)
            step[on, axis, axis] = -1.0
            step[on, axis, 2] = extent[on]
        elif isinstance(op, Affine):
            on = streams.active(position, op)
            inverse = affine_inverses(op, streams.uniforms(position, 6), width, height)
            centered, back = _shifts(width / 2, height / 2), _shifts(-width / 2, -height / 2)
            step[on] = (centered @ inverse @ back)[on]
        else:  # a crop after the turn: a shift of the output window
            if isinstance(op, CenterCrop):
                left = _center_offset(width, op.size[1])
                top = _center_offset(height, op.size[0])
            else:
                assert isinstance(op, RandomCrop)
                u = streams.uniforms(position, 2)
                # the canvas's size is the ops' doing here, not an image's: a ConfigError
                left, top, _, _ = random_crop_windows(op, width, height, u, ConfigError)
            step = _shifts(left, top)
            height, width = np.full(count, float(op.size[0])), np.full(count, float(op.size[1]))
        total = total @ step
    return total, flips


def _shifts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, 3, 3) translations by (x, y)."""
    shifts = np.zeros((len(x), 3, 3))
    shifts[:, [0, 1, 2], [0, 1, 2]] = 1.0
    shifts[:, 0, 2], shifts[:, 1, 2] = x, y
    return shifts


@dataclass(frozen=True)
class AffineDraws:
    """RandomAffine.get_params's values per sample: degrees (clockwise), whole-pixel
    translations, scale, shears in degrees."""

    angle: np.ndarray
    translate_x: np.ndarray
    translate_y: np.ndarray
    scale: np.ndarray
    shear_x: np.ndarray
    shear_y: np.ndarray


def affine_draws(op: Affine, u: np.ndarray, width: Any, height: Any) -> AffineDraws:
    """torchvision's RandomAffine.get_params for each row of `u` (6 uniforms)."""
    count = len(u)
    angle = op.degrees[0] + (op.degrees[1] - op.degrees[0]) * u[:, 0]
    tx = ty = np.zeros(count)
    if op.translate is not None:
        max_dx, max_dy = op.translate[0] * width, op.translate[1] * height
        tx = np.round(-max_dx + 2 * max_dx * u[:, 1])  # Python's round: half to even
        ty = np.round(-max_dy + 2 * max_dy * u[:, 2])
    scale = np.ones(count)
    if op.scale is not None:
        scale = op.scale[0] + (op.scale[1] - op.scale[0]) * u[:, 3]
    shear_x = shear_y = np.zeros(count)
    if op.shear is not None:
        x0, x1, y0, y1 = op.shear
        shear_x = x0 + (x1 - x0) * u[:, 4]
        shear_y = y0 + (y1 - y0) * u[:, 5]
    return AffineDraws(angle, tx, ty, scale, shear_x, shear_y)


def affine_inverses(op: Affine, u: np.ndarray, width: Any, height: Any) -> np.ndarray:
    """torchvision's `_get_inverse_affine_matrix` of the drawn values, about the center (its
    coordinates: the origin at the image's center), (N, 3, 3)."""
    drawn = affine_draws(op, u, width, height)
    count = len(u)
    rot, sx, sy = (np.radians(v) for v in (drawn.angle, drawn.shear_x, drawn.shear_y))
    a = np.cos(rot - sy) / np.cos(sy)
    b = -np.cos(rot - sy) * np.tan(sx) / np.cos(sy) - np.sin(rot)
    c = np.sin(rot - sy) / np.cos(sy)
    d = -np.sin(rot - sy) * np.tan(sx) / np.cos(sy) + np.cos(rot)
    m = np.zeros((count, 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = d, -b, -c, a
    m[:, :2, :2] /= drawn.scale[:, None, None]
    tx, ty = drawn.translate_x, drawn.translate_y
    m[:, 0, 2] = m[:, 0, 0] * -tx + m[:, 0, 1] * -ty
    m[:, 1, 2] = m[:, 1, 0] * -tx + m[:, 1, 1] * -ty
    m[:, 2, 2] = 1.0
    return m


def _color(op: Op, streams: _Streams, position: int) -> dict[str, np.ndarray]:
    count = len(streams.samples)
    identity = np.broadcast_to(np.eye(3), (count, 3, 3)).copy()
    if isinstance(op, Grayscale):
        if op.channels == 1:
            return {}
        on = streams.active(position, op, op.p)
        identity[on] = np.broadcast_to(GRAY, (3, 3))
        return {"m0": identity}
    if isinstance(op, GaussianBlur):
        low, high = op.sigma
        sigma = low + (high - low) * streams.uniforms(position, 1)[:, 0]
        # a sigma far below a pixel: a kernel of one tap, no blur (the window stays static)
        sigma[~streams.active(position, op)] = 1e-3
        return {"sigma": sigma[:, None]}
    assert isinstance(op, ColorJitter)
    return jitter_params(op, streams.uniforms(position, 8), streams.active(position, op))


def jitter_params(op: ColorJitter, u: np.ndarray, on: np.ndarray) -> dict[str, np.ndarray]:
    """ColorJitter as steps x = turn_hue(clamp(M x + b * mean(gray(x))), h), one per enabled
    property, in an order drawn per sample (torchvision's randperm) with their factors:
    brightness f * x and saturation f * x + (1 - f) * gray(x) (in M), contrast f * x +
    (1 - f) * the image's mean gray (b = 1 - f), hue a turn by h (`dali_loader.hue`)."""
    count = len(u)
    order = np.argsort(u[:, :4], axis=1)  # a uniform permutation of the four properties
    ranges = (op.brightness, op.contrast, op.saturation, op.hue)
    factors = np.stack(
        [
            (r[0] + (r[1] - r[0]) * u[:, 4 + k]) if r is not None else np.zeros(count)
            for k, r in enumerate(ranges)
        ],
        axis=1,
    )
    out: dict[str, np.ndarray] = {}
    enabled = [k for k, r in enumerate(ranges) if r is not None]
    # per sample, the enabled properties in their drawn order
    rank = np.argsort(order, axis=1)  # position of each property in the permutation
    ordered = np.argsort(np.where(np.isin(np.arange(4), enabled), rank, 99), axis=1)
    for j in range(len(enabled)):
        which = ordered[:, j]
        f = factors[np.arange(count), which]
        m = np.broadcast_to(np.eye(3), (count, 3, 3)) * f[:, None, None]
        saturation = which == 2  # toward the pixel's gray
        m[saturation] += (1 - f[saturation])[:, None, None] * np.broadcast_to(GRAY, (3, 3))
        hue = which == 3
        m[hue] = np.eye(3)
        h = np.where(hue, f, 0.0)
        b = np.where(which == 1, 1 - f, 0.0)  # contrast: toward the image's mean gray
        m[~on], b[~on], h[~on] = np.eye(3), 0.0, 0.0
        out[f"m{j}"] = m
        if op.hue is not None:
            out[f"h{j}"] = h[:, None]
        if op.contrast is not None:
            out[f"b{j}"] = b[:, None]
    return out
