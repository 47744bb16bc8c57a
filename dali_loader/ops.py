"""The operations applied to each image, in order: the backend-neutral recipe a spec carries.

Each is one torchvision transform, with torchvision's parameters and meaning (sizes are
(height, width), boxes and kernels as torchvision orders them). They are plain data: the drawing
of their random parameters is `dali_loader.params`, their application is each backend's. The
keyword recipe of `create_loader` is `keyword_ops`; `transform=` is read by
`dali_loader.transforms`.
"""

from __future__ import annotations

from dataclasses import dataclass

Size = tuple[int, int]  # (height, width)
Range = tuple[float, float]  # (min, max) of a uniform draw


@dataclass(frozen=True)
class Gate:
    """A RandomApply: the ops sharing a gate are applied together with probability `p`."""

    slot: int
    p: float


@dataclass(frozen=True, kw_only=True)
class Op:
    gate: Gate | None = None


@dataclass(frozen=True)
class Resize(Op):
    """`size` is (shorter side,) or (height, width); bilinear and antialiased."""

    size: tuple[int, ...]
    max_size: int | None = None


@dataclass(frozen=True)
class CenterCrop(Op):
    """Padded with black where the crop is larger than the image, as torchvision does."""

    size: Size


@dataclass(frozen=True)
class RandomCrop(Op):
    size: Size
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, top, right, bottom
    pad_if_needed: bool = False
    fill: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class RandomResizedCrop(Op):
    size: Size
    scale: Range = (0.08, 1.0)
    ratio: Range = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class Flip(Op):
    horizontal: bool
    p: float = 0.5


@dataclass(frozen=True)
class Affine(Op):
    """RandomAffine; RandomRotation(d) is Affine with `degrees` negated (affine turns
    clockwise, rotation counter-clockwise). `shear` is (x min, x max, y min, y max)."""

    degrees: Range
    translate: tuple[float, float] | None = None
    scale: Range | None = None
    shear: tuple[float, float, float, float] | None = None
    bilinear: bool = False
    fill: float = 0.0


@dataclass(frozen=True)
class ColorJitter(Op):
    """Factor ranges (hue: a fraction of a turn); None leaves that property alone. The enabled
    ones are applied in an order drawn per image, as torchvision does."""

    brightness: Range | None = None
    contrast: Range | None = None
    saturation: Range | None = None
    hue: Range | None = None

    @property
    def enabled(self) -> int:
        """How many properties it changes: the steps it takes per image."""
        ranges = (self.brightness, self.contrast, self.saturation, self.hue)
        return sum(r is not None for r in ranges)


@dataclass(frozen=True)
class Grayscale(Op):
    """Grayscale (p=1) or RandomGrayscale(p); one channel only with p=1."""

    channels: int = 3
    p: float = 1.0


@dataclass(frozen=True)
class GaussianBlur(Op):
    kernel: tuple[int, int]  # (x, y), odd
    sigma: Range


@dataclass(frozen=True)
class Normalize(Op):
    """On the 0..1 scale, one value per output channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def keyword_ops(
    *,
    train: bool,
    image_size: Size,
    scale: Range,
    ratio: Range,
    flip_prob: float,
    rotate_degrees: float,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    eval_crop_fraction: float,
) -> tuple[Op, ...]:
    """`create_loader`'s keyword recipe as ops: ImageNet's train and eval transforms."""
    normalize = Normalize(mean, std)
    if not train:
        shorter = int(max(image_size) / eval_crop_fraction)
        return Resize((shorter,)), CenterCrop(image_size), normalize
    ops: list[Op] = [RandomResizedCrop(image_size, scale, ratio)]
    if flip_prob > 0:
        ops.append(Flip(horizontal=True, p=flip_prob))
    if rotate_degrees > 0:
        ops.append(Affine((-rotate_degrees, rotate_degrees), bilinear=True))
    return (*ops, normalize)


def is_random(op: Op) -> bool:
    """Whether `op` draws anything: a training augmentation, not an eval transform."""
    if op.gate is not None:
        return True
    if isinstance(op, (RandomResizedCrop, RandomCrop, Affine, ColorJitter, GaussianBlur)):
        return True
    return isinstance(op, (Flip, Grayscale)) and 0 < op.p < 1
