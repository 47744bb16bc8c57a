"""A torchvision transform pipeline, compiled to the loader's ops: `transform=`.

A training script keeps its Compose (torchvision's v1 or v2 classes): each transform below
becomes an op (`dali_loader.ops`) with torchvision's parameters, which every backend runs (the
DALI graph on the GPU, the torchvision backend on the CPU) with the same drawn values. The
user's objects are read, not called. Anything else is refused when the loader is created,
naming it; `SUPPORTED` lists what is taken, README's table how.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import ops
from .errors import ConfigError
from .plan import ANY_SIZE, plan_of

SUPPORTED = (
    "RandomResizedCrop, RandomCrop, CenterCrop, Resize, RandomHorizontalFlip, "
    "RandomVerticalFlip, RandomRotation, RandomAffine, ColorJitter, Grayscale, RandomGrayscale, "
    "GaussianBlur, RandomApply (of these), ToTensor, PILToTensor, ToImage, ToDtype, "
    "ConvertImageDtype, Normalize"
)
_FLOAT_DTYPES = {
    "torch.float32": "float32",
    "torch.float16": "float16",
    "torch.bfloat16": "bfloat16",
}
_MARKERS = ("ToTensor", "PILToTensor", "ToImage", "ToDtype", "ConvertImageDtype", "ToPILImage")


@dataclass(frozen=True)
class Compiled:
    """What a transform spells: the ops, and the dtype its conversion to float asks."""

    ops: tuple[ops.Op, ...]
    dtype: str


@dataclass(frozen=True)
class _Input:
    """What a step is given: a PIL image, or a tensor (after ToTensor and the like), whose
    fill is on the 0..1 scale when it is float."""

    tensor: bool = False
    fill_scale: float = 1.0


@dataclass
class _Reader:
    steps: list[ops.Op] = field(default_factory=list)
    dtype: str | None = None
    gates: int = 0

    def read(self, step: object, gate: ops.Gate | None = None) -> None:
        name = type(step).__name__
        if name == "Compose" and _is_torchvisions(step):
            for inner in step.transforms:  # type: ignore[attr-defined]
                self.read(inner, gate)
            return
        if not _is_torchvisions(step):
            raise _unsupported(step, "not one of torchvision's transforms")
        if name == "RandomApply":
            if gate is not None:
                raise _unsupported(step, "a RandomApply inside another")
            inner_gate = ops.Gate(self.gates, _probability(step.p, step))  # type: ignore[attr-defined]
            self.gates += 1
            for inner in step.transforms:  # type: ignore[attr-defined]
                self.read(inner, inner_gate)
            return
        if name in _MARKERS:
            self._convert(step, name)
            return
        reader = _READERS.get(name)
        if reader is None:
            raise _unsupported(step, "not taken")
        if name == "Normalize" and self.dtype not in _FLOAT_DTYPES.values():
            raise ConfigError(
                "transform=: Normalize before ToTensor (or ToDtype(float, scale=True)): "
                "torchvision normalizes float tensors; convert first"
            )
        given = _Input(
            tensor=self.dtype is not None,
            fill_scale=255.0 if self.dtype in _FLOAT_DTYPES.values() else 1.0,
        )
        op = reader(step, given)
        if isinstance(op, ops.ColorJitter) and not op.enabled:
            return  # changes nothing
        if gate is not None:
            op = _with_gate(op, gate)
        self.steps.append(op)

    def _convert(self, step: Any, name: str) -> None:
        if name == "ToPILImage":
            self.dtype = None  # a PIL image again: fills on 0..255, resizes antialiased
            return
        if name == "ToTensor":
            self.dtype = "float32"
        elif name in ("PILToTensor", "ToImage"):
            self.dtype = self.dtype or "uint8"
        else:
            dtype = getattr(step, "dtype", None)
            if isinstance(dtype, dict):  # v2: {tv_tensors.Image: dtype, ...}
                dtype = next(iter(dtype.values()), None)
            if str(dtype) not in _FLOAT_DTYPES or getattr(step, "scale", True) is not True:
                raise _unsupported(
                    step,
                    "the loader delivers float images scaled to 0..1: "
                    "ToDtype(torch.float32, scale=True)",
                )
            self.dtype = _FLOAT_DTYPES[str(dtype)]


def compile_transform(transform: object) -> Compiled:
    """The ops and dtype `transform` spells, or a ConfigError naming the step not taken."""
    reader = _Reader()
    reader.read(transform)
    if reader.dtype in (None, "uint8"):
        raise ConfigError(
            "transform= never converts the images to float: end it with ToTensor() (or "
            "ToImage() + ToDtype(torch.float32, scale=True)), then Normalize if you normalize: "
            "the loader delivers float batches"
        )
    compiled = tuple(reader.steps)
    # the order, the fills, the channels: refused here, naming the op (the images' sizes are
    # checked with them, `LoaderSpec.with_source_sizes`)
    plan_of(compiled, ANY_SIZE)
    return Compiled(compiled, reader.dtype)


def _with_gate(op: ops.Op, gate: ops.Gate) -> ops.Op:
    from dataclasses import replace

    return replace(op, gate=gate)


def _is_torchvisions(step: object) -> bool:
    return type(step).__module__.startswith("torchvision.transforms")


def _size(value: Any, step: object) -> tuple[int, int]:
    sizes = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or not all(_is_int(v) and v > 0 for v in sizes):
        raise _bad_value(step, f"size={value!r}: one or two positive whole numbers")
    return int(sizes[0]), int(sizes[1])


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _range(value: Any) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    return low, high


def _probability(p: Any, step: object) -> float:
    value = float(p)
    if not 0.0 <= value <= 1.0:
        raise _bad_value(step, f"p={p!r}: a probability, in [0, 1]")
    return value


def _interpolation(step: Any) -> str:
    mode = getattr(step, "interpolation", "bilinear")
    value = getattr(mode, "value", mode)
    if value in (0, 2):  # PIL's constants, as v2 takes them
        return "nearest" if value == 0 else "bilinear"
    return str(value)


def _resampling(step: Any, given: _Input) -> None:
    """Resizes are bilinear and antialiased on every backend (a PIL image is resized
    antialiased whatever `antialias` says; a tensor only with antialias=True)."""
    antialias = getattr(step, "antialias", True)
    if _interpolation(step) != "bilinear" or (given.tensor and antialias is not True):
        raise _unsupported(
            step,
            f"interpolation={_interpolation(step)}, antialias={getattr(step, 'antialias', None)}:"
            " the loader resizes bilinear and antialiased",
        )


def _fill(fill: Any, step: object, given: _Input) -> tuple[float, float, float]:
    """An image fill as three values on the 0..255 scale (v2's fill may be a dict by type;
    None is black; after ToTensor, torchvision's fill is on the 0..1 scale)."""
    if isinstance(fill, dict):
        image_keys = [k for k in fill if getattr(k, "__name__", "") in ("Image", "Tensor")]
        keys = [*image_keys, "others"]
        fill = next((fill[k] for k in keys if k in fill), None)
    if fill is None:
        return 0.0, 0.0, 0.0
    listed = fill.tolist() if hasattr(fill, "tolist") else fill
    try:
        items = listed if isinstance(listed, (list, tuple)) else [listed]
        values = [float(v) * given.fill_scale for v in items]
    except (TypeError, ValueError):
        values = []
    if len(values) == 1:
        values *= 3
    scale = "0..1, after ToTensor" if given.fill_scale != 1 else "0..255"
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise _bad_value(step, f"fill={fill!r}: one value or one per RGB channel, {scale}")
    # whole 8-bit levels, rounded half up once here: every backend fills with the same pixel
    red, green, blue = (float(math.floor(v + 0.5)) for v in values)
    return red, green, blue


def _one_fill(fill: Any, step: object, given: _Input) -> float:
    values = set(_fill(fill, step, given))
    if len(values) != 1:
        raise _unsupported(step, f"fill={fill!r}: a turn fills every channel with one value")
    return values.pop()


def _padding(value: Any, step: object) -> tuple[int, int, int, int]:
    if value is None:
        return 0, 0, 0, 0
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(_is_int(v) and v >= 0 for v in sides) or len(sides) not in (1, 2, 4):
        raise _bad_value(step, f"padding={value!r}: one, two or four whole numbers")
    if len(sides) == 1:
        sides *= 4
    elif len(sides) == 2:
        sides = [sides[0], sides[1], sides[0], sides[1]]
    left, top, right, bottom = (int(v) for v in sides)
    return left, top, right, bottom


def _random_crop(step: Any, given: _Input) -> ops.Op:
    mode = getattr(step, "padding_mode", "constant")
    if mode != "constant":
        raise _unsupported(step, f"padding_mode={mode!r}: only 'constant' is taken")
    size = _size(step.size, step)
    padding = _padding(step.padding, step)
    if ".v2." in type(step).__module__ and step.padding is not None:
        left, right, top, bottom = padding  # v2 keeps it parsed, in this order
        padding = (left, top, right, bottom)
    height, width = size
    if max(padding[0], padding[2]) >= width or max(padding[1], padding[3]) >= height:
        raise _bad_value(step, f"padding {padding} as large as the crop {size}")
    fill = tuple(int(v) for v in _fill(step.fill, step, given))
    return ops.RandomCrop(size, padding, bool(step.pad_if_needed), (fill[0], fill[1], fill[2]))


def _random_resized_crop(step: Any, given: _Input) -> ops.Op:
    _resampling(step, given)
    scale, ratio = _range(step.scale), _range(step.ratio)
    if not (0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1]):
        raise _bad_value(step, f"scale={scale}, ratio={ratio}: each a (min, max) of positives")
    return ops.RandomResizedCrop(_size(step.size, step), scale, ratio)


def _resize(step: Any, given: _Input) -> ops.Op:
    _resampling(step, given)
    size = step.size
    sizes = list(size) if isinstance(size, (list, tuple)) else [size]
    if size is None or not sizes or len(sizes) > 2 or not all(_is_int(v) and v > 0 for v in sizes):
        raise _bad_value(step, f"size={size!r}: an int (the shorter side) or (height, width)")
    max_size = getattr(step, "max_size", None)
    if max_size is not None and (len(sizes) == 2 or max_size <= sizes[0]):
        raise _bad_value(step, f"max_size={max_size!r} with size={size!r}")
    return ops.Resize(tuple(int(v) for v in sizes), max_size)


def _rotation(step: Any, given: _Input) -> ops.Op:
    if step.expand or step.center is not None:
        raise _unsupported(step, "expand=True or a center: the default center, expand=False")
    low, high = _ordered(step.degrees, step, "degrees")
    return ops.Affine(
        (-high, -low),  # counter-clockwise, as an affine's clockwise angle
        bilinear=_warp_interpolation(step),
        fill=_one_fill(step.fill, step, given),
    )


def _affine(step: Any, given: _Input) -> ops.Op:
    if getattr(step, "center", None) is not None:
        raise _unsupported(step, "a center: the default (the image's) is taken")
    shear = None
    if step.shear is not None:
        values = [float(v) for v in step.shear]
        x_range = _ordered(values[:2], step, "shear")
        y_range = _ordered(values[2:4], step, "shear") if len(values) == 4 else (0.0, 0.0)
        shear = (*x_range, *y_range)
    scale = _ordered(step.scale, step, "scale") if step.scale is not None else None
    if scale is not None and scale[0] <= 0:
        raise _bad_value(step, f"scale={step.scale!r}: positive")
    return ops.Affine(
        _ordered(step.degrees, step, "degrees"),
        translate=_range(step.translate) if step.translate is not None else None,
        scale=scale,
        shear=shear,  # type: ignore[arg-type]
        bilinear=_warp_interpolation(step),
        fill=_one_fill(step.fill, step, given),
    )


def _ordered(value: Any, step: object, name: str) -> tuple[float, float]:
    """A (min, max) range, as torchvision draws from (a reversed one fails there when called)."""
    low, high = _range(value)
    if low > high:
        raise _bad_value(step, f"{name}={value!r}: a (min, max) range")
    return low, high


def _warp_interpolation(step: Any) -> bool:
    mode = _interpolation(step)
    if mode not in ("nearest", "bilinear"):
        raise _unsupported(step, f"interpolation={mode}: nearest or bilinear")
    return mode == "bilinear"


def _jitter(step: Any, given: _Input) -> ops.Op:
    def factor(value: Any, identity: float) -> tuple[float, float] | None:
        if value is None:
            return None
        low, high = _range(value)
        return None if low == high == identity else (low, high)

    return ops.ColorJitter(
        brightness=factor(step.brightness, 1.0),
        contrast=factor(step.contrast, 1.0),
        saturation=factor(step.saturation, 1.0),
        hue=factor(step.hue, 0.0),
    )


def _blur(step: Any, given: _Input) -> ops.Op:
    kernel = tuple(int(v) for v in step.kernel_size)
    if len(kernel) == 1:
        kernel *= 2
    return ops.GaussianBlur((kernel[0], kernel[1]), _ordered(step.sigma, step, "sigma"))


def _grayscale(step: Any, given: _Input) -> ops.Op:
    channels = int(step.num_output_channels)
    if channels not in (1, 3):
        raise _bad_value(step, f"num_output_channels={channels}: 1 or 3, as in torchvision")
    return ops.Grayscale(channels)


def _normalize(step: Any, given: _Input) -> ops.Op:
    def values(raw: Any) -> tuple[float, ...]:
        listed = raw.reshape(-1).tolist() if hasattr(raw, "reshape") else raw
        items = listed if isinstance(listed, (list, tuple)) else [listed]
        try:
            return tuple(float(v) for v in items)
        except (TypeError, ValueError):
            raise ConfigError(
                f"Normalize needs numbers, one or one per channel, got {raw!r}"
            ) from None

    mean, std = values(step.mean), values(step.std)
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise ConfigError(
            f"Normalize(mean={step.mean!r}, std={step.std!r}): mean and std need one value "
            "each per channel (or one for all)"
        )
    if len(mean) != len(std):  # one of them is one value: torch broadcasts it
        count = max(len(mean), len(std))
        mean, std = (mean * count)[:count], (std * count)[:count]
    if not all(s > 0 for s in std):
        raise ConfigError(f"Normalize(std={step.std!r}): std must be positive")
    return ops.Normalize(mean, std)


_READERS: dict[str, Callable[[Any, _Input], ops.Op]] = {
    "RandomResizedCrop": _random_resized_crop,
    "RandomCrop": _random_crop,
    "CenterCrop": lambda s, _: ops.CenterCrop(_size(s.size, s)),
    "Resize": _resize,
    "RandomHorizontalFlip": lambda s, _: ops.Flip(True, _probability(s.p, s)),
    "RandomVerticalFlip": lambda s, _: ops.Flip(False, _probability(s.p, s)),
    "RandomRotation": _rotation,
    "RandomAffine": _affine,
    "ColorJitter": _jitter,
    "Grayscale": _grayscale,
    "RandomGrayscale": lambda s, _: ops.Grayscale(3, _probability(s.p, s)),
    "GaussianBlur": _blur,
    "Normalize": _normalize,
}


def _bad_value(step: object, why: str) -> ConfigError:
    """A value torchvision would fail on, or that cannot be: what and why, no way around."""
    return ConfigError(f"transform=: {type(step).__name__} with {why}")


def _unsupported(step: object, why: str) -> ConfigError:
    return ConfigError(
        f"transform= cannot take {type(step).__name__} ({why}). Taken: {SUPPORTED}. "
        "Pass backend='torchvision', as_is=True to run the Compose itself per sample, or "
        "use torchvision's DataLoader for this pipeline"
    )
