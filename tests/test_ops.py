"""Each transform `transform=` takes, its parameters fixed, against torchvision's own op.

The reference is what `DataLoader(ImageFolder(root, Compose([step, ToTensor()])))` gives: the
functional op (`torchvision.transforms.v2.functional`) on the PIL image ImageFolder decodes.
The images are lossless PNGs with smooth content (gradients and blurred noise), so the decoders
agree exactly and what differs is the op alone. Differences are in 0..255 levels: each op states
its bound on the mean and the largest absolute difference, a little above what was measured on
every backend (the measurements are next to the bounds).

Crops are checked to be exact windows: the test images' pixels encode their own (x, y), so a
window names its own offset, and the output must be exactly that window of torchvision's padded
image.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as V2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional._color import _rgb_to_hsv

from dali_loader import create_loader

from .conftest import GPU_BACKEND

CPU_BACKENDS = ["torchvision", "dali-cpu"]
BACKENDS = [*CPU_BACKENDS, GPU_BACKEND]  # "dali" runs where CUDA is (the GPU proof)
SIZES = [(48, 48), (64, 40), (37, 53)]  # (width, height): square, wide, tall and odd
BILINEAR, NEAREST = InterpolationMode.BILINEAR, InterpolationMode.NEAREST


def smooth_image(width: int, height: int, seed: int) -> np.ndarray:
    """(height, width, 3) uint8: gradients, a diagonal wave and noise blurred over ~2 pixels:
    smooth as a photo is, textured enough that a pixel's shift or a wrong weight shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    raw = torch.from_numpy(rng.normal(0.0, 1.0, (3, height, width))).float()
    noise = F.gaussian_blur(raw, [13, 13], [2.0, 2.0]).permute(1, 2, 0).numpy()
    base = np.stack(
        [x * 200 / width + 30, y * 200 / height + 30, 128 + 60 * np.sin((x + y) / 7)], axis=-1
    )
    pixels = base + noise / noise.std() * 40
    return np.asarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


BLUE = 200  # the coordinate images' blue; the crops' fills have another


def coordinate_image(width: int, height: int, blue: int = BLUE) -> np.ndarray:
    """(height, width, 3) uint8 whose pixel (x, y) is (x, y, blue): a window names its offset."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x, y, np.full_like(x, blue)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("smooth")
    paths = []
    for k, (width, height) in enumerate(SIZES):
        path = root / f"smooth_{width}x{height}.png"
        Image.fromarray(smooth_image(width, height, seed=k)).save(path)
        paths.append(path)
    return paths


def through_loader(
    paths: list[Path], steps: list[Any], backend: str, epoch: int = 0
) -> torch.Tensor:
    """The first batch of `Compose([*steps, ToTensor()])` over `paths` in `epoch`, in 0..255
    levels: whole ones (ToTensor's v / 255 of uint8 pixels)."""
    loader = create_loader(
        ([str(p) for p in paths], [0] * len(paths)),
        batch_size=len(paths),
        backend=backend,
        transform=T.Compose([*steps, T.ToTensor()]),
        shuffle=False,
        num_threads=1,
    )
    loader.set_epoch(epoch)
    images = next(iter(loader))[0].cpu()
    assert images.dtype == torch.float32
    levels = images.double() * 255
    assert (levels - levels.round()).abs().max() < 1e-3
    return levels.round()


def torchvisions(path: Path, op: Callable[[Image.Image], Any]) -> torch.Tensor:
    """`op` on the image as ImageFolder decodes it (PIL, RGB), in 0..255 levels (C, H, W)."""
    with Image.open(path) as image:
        out = op(image.convert("RGB"))
    tensor = F.pil_to_tensor(out) if isinstance(out, Image.Image) else out
    return torch.as_tensor(tensor).double()


def differences(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return (ours - theirs).abs()


@dataclass(frozen=True)
class Case:
    """A transform with fixed parameters, torchvision's functional op for it, and the bounds
    (0..255 levels) of the mean and the largest difference, over every pixel and channel."""

    step: Any
    reference: Callable[[Image.Image], Any]
    mean: float
    max: float


# Measured (mean / max, the worst of the three images), torchvision backend | dali-cpu:
CASES = {
    # torch's and DALI's antialiased resizes against PIL's: 0.04 / 1 | 0.18 / 1
    "resize-int": Case(T.Resize(32), lambda im: F.resize(im, [32]), 0.4, 3),
    # 0.17 / 1 | 0.21 / 2
    "resize-hw": Case(T.Resize((30, 44)), lambda im: F.resize(im, [30, 44]), 0.4, 3),
    # the wide and tall images hit max_size: 0.01 / 1 | 0.17 / 2
    "resize-max-size": Case(
        T.Resize(30, max_size=40), lambda im: F.resize(im, [30], max_size=40), 0.4, 3
    ),
    # upscaling: 0.00 / 1 | 0.25 / 1
    "resize-up": Case(T.Resize(80), lambda im: F.resize(im, [80]), 0.4, 3),
    # a crop of the resized image: the loaders resize the fractional box of the source at once
    "resize-then-center-crop": Case(
        T.Compose([T.Resize(40), T.CenterCrop((30, 34))]),
        lambda im: F.center_crop(F.resize(im, [40]), [30, 34]),
        0.4,
        3,
    ),
    # scale and ratio that no window fits but the whole image (square) or torchvision's fallback,
    # the centered square (wide, tall): a fixed box, resized
    "random-resized-crop-fixed": Case(
        T.RandomResizedCrop(32, scale=(1.0, 1.0), ratio=(1.0, 1.0)),
        lambda im: F.resized_crop(
            im, *T.RandomResizedCrop.get_params(im, [1.0, 1.0], [1.0, 1.0]), [32, 32]
        ),
        0.4,
        3,
    ),
    "center-crop-smaller": Case(
        T.CenterCrop((30, 25)), lambda im: F.center_crop(im, [30, 25]), 0, 0
    ),
    # larger than every image: torchvision pads with black (less on the left and top)
    "center-crop-larger": Case(
        T.CenterCrop((60, 71)), lambda im: F.center_crop(im, [60, 71]), 0, 0
    ),
    "center-crop-taller": Case(
        T.CenterCrop((61, 20)), lambda im: F.center_crop(im, [61, 20]), 0, 0
    ),
    "hflip": Case(T.RandomHorizontalFlip(1.0), F.horizontal_flip, 0, 0),
    "vflip": Case(T.RandomVerticalFlip(1.0), F.vertical_flip, 0, 0),
    # PIL's ImageEnhance rounds its blends: 0.38 / 1 | 0.40 / 1
    "brightness": Case(
        T.ColorJitter(brightness=(1.3, 1.3)), lambda im: F.adjust_brightness(im, 1.3), 0.5, 1
    ),
    # 0.38 / 1 | 0.38 / 1
    "contrast": Case(
        T.ColorJitter(contrast=(0.6, 0.6)), lambda im: F.adjust_contrast(im, 0.6), 0.5, 1
    ),
    # 0.21 / 1 | 0.21 / 1
    "saturation": Case(
        T.ColorJitter(saturation=(1.5, 1.5)), lambda im: F.adjust_saturation(im, 1.5), 0.3, 1
    ),
    # PIL's integer weights (299, 587, 114) against 0.2989, 0.587, 0.114: 0.014 / 1 | 0.014 / 1
    "grayscale-1": Case(T.Grayscale(1), lambda im: F.rgb_to_grayscale(im, 1), 0.05, 1),
    "grayscale-3": Case(T.Grayscale(3), lambda im: F.rgb_to_grayscale(im, 3), 0.05, 1),
    # 0 / 0 | 0 / 0
    "blur-5": Case(
        T.GaussianBlur(5, sigma=(1.5, 1.5)),
        lambda im: F.gaussian_blur(im, [5, 5], [1.5, 1.5]),
        0.05,
        1,
    ),
    "blur-3x7": Case(
        T.GaussianBlur((3, 7), sigma=(1.5, 1.5)),
        lambda im: F.gaussian_blur(im, [3, 7], [1.5, 1.5]),
        0.05,
        1,
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_an_op_gives_torchvisions_pixels(pngs: list[Path], backend: str, name: str) -> None:
    case = CASES[name]
    for path in pngs:
        ours = through_loader([path], [case.step], backend)[0]
        diff = differences(ours, torchvisions(path, case.reference))
        assert diff.mean() <= case.mean and diff.max() <= case.max, (
            path.name,
            float(diff.mean()),
            float(diff.max()),
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_has_the_channels_asked(pngs: list[Path], backend: str, channels: int) -> None:
    images = through_loader(pngs[:1], [T.Grayscale(channels)], backend)
    assert images.shape == (1, channels, 48, 48)
    if channels == 3:
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])


# --- Warps: turns and affines -------------------------------------------------------------------


@dataclass(frozen=True)
class Warp:
    """Flips, turns, affines and crops after them, their parameters fixed: `reference(image,
    interpolation)` is torchvision's ops on `image`, filling with `fill`.

    Inside the image (every bilinear tap on source pixels) the pixels must be torchvision's
    within `interior_max`; at the image's edge the backends blend the fill as DALI's
    `warp_affine` does (the fill weighted by the taps outside), torchvision weights the image's
    taps by the inside fraction once more (its `_apply_grid_transform`), so there the whole
    image is held to a mean bound and a bound on the share of pixels more than 2 levels off.
    """

    steps: list[Any]
    reference: Callable[[Any, InterpolationMode, float], Any]
    mode: InterpolationMode
    fill: float
    interior_max: float
    interior_mean: float
    mean: float
    far_share: float  # of pixels (and channels) more than 2 levels off


def rotation(angle: float, mode: InterpolationMode, fill: int, *bounds: float) -> Warp:
    step = T.RandomRotation((angle, angle), interpolation=mode, fill=fill)
    return Warp([step], lambda im, m, f: F.rotate(im, angle, m, fill=f), mode, fill, *bounds)


def affine(
    angle: float,
    scale: float,
    shear: tuple[float, float],
    mode: InterpolationMode,
    fill: int,
    *bounds: float,
) -> Warp:
    step = T.RandomAffine(
        (angle, angle),
        scale=(scale, scale),
        shear=(shear[0], shear[0], shear[1], shear[1]),
        interpolation=mode,
        fill=fill,
    )

    def reference(im: Any, m: InterpolationMode, f: float) -> Any:
        return F.affine(im, angle, [0, 0], scale, list(shear), m, fill=f)

    return Warp([step], reference, mode, fill, *bounds)


def flipped_then_turned(im: Any, m: InterpolationMode, f: float) -> Any:
    return F.rotate(F.vertical_flip(F.horizontal_flip(im)), 30, m, fill=f)


def turned_then_cropped(im: Any, m: InterpolationMode, f: float) -> Any:
    return F.center_crop(F.affine(im, -20, [0, 0], 1.1, [5.0, 0.0], m, fill=f), [30, 26])


# Measured, the worst of the three images (whole mean, share > 2 levels; interior mean / max),
# the same on both backends: rotation nearest: exact; affine nearest: 0.005, 0.03%; 0.005 / 21
# (a few taps on a pixel's edge, rounded the other way); bilinear rotations: 1.01, 3.2%;
# 0.49 / 1 (fill 100) and 1.64, 3.4%; 0.50 / 1 (black); bilinear affine: 1.35, 3.9%; 0.50 / 1;
# flips then a turn: 1.09, 3.3%; 0.50 / 1; an affine then a center crop inside its frame: 0.50,
# 0%; 0.50 / 1.
# Against torchvision's tensor op (not the PIL one ImageFolder runs) the interior is exact.
WARPS = {
    "rotation-nearest": rotation(25, NEAREST, 100, 255, 0.05, 0.1, 0.005),
    "rotation-bilinear": rotation(-40, BILINEAR, 100, 1, 0.6, 1.6, 0.05),
    "rotation-bilinear-black": rotation(63, BILINEAR, 0, 1, 0.6, 2.2, 0.05),
    "affine-nearest": affine(-30, 1.2, (-8, 6), NEAREST, 0, 255, 0.05, 0.1, 0.005),
    "affine-bilinear": affine(20, 0.8, (10, -5), BILINEAR, 50, 1, 0.6, 2.0, 0.06),
    # composed into one map: in torchvision's order, not the reverse
    "flips-then-rotation": Warp(
        [
            T.RandomHorizontalFlip(1.0),
            T.RandomVerticalFlip(1.0),
            T.RandomRotation((30, 30), interpolation=BILINEAR, fill=80),
        ],
        flipped_then_turned,
        BILINEAR,
        80,
        1,
        0.6,
        1.6,
        0.05,
    ),
    "affine-then-center-crop": Warp(
        [
            T.RandomAffine((-20, -20), scale=(1.1, 1.1), shear=(5, 5), interpolation=BILINEAR),
            T.CenterCrop((30, 26)),
        ],
        turned_then_cropped,
        BILINEAR,
        0,
        1,
        0.6,
        2.2,
        0.06,
    ),
}


def interior(geometry: Callable[[torch.Tensor], Any], height: int, width: int) -> torch.Tensor:
    """(H, W) bool: output pixels whose bilinear taps, and their neighbours', are all inside
    the source (torchvision's warp of ones, filled with zeros, eroded by one pixel)."""
    coverage = torch.as_tensor(geometry(torch.ones(1, height, width)))
    eroded = -torch.nn.functional.max_pool2d(-coverage[None], 3, stride=1, padding=1)[0]
    return eroded[0] > 0.999


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(WARPS))
def test_a_warp_gives_torchvisions_pixels(pngs: list[Path], backend: str, name: str) -> None:
    warp = WARPS[name]
    for path in pngs:
        ours = through_loader([path], warp.steps, backend)[0]
        theirs = torchvisions(path, lambda im: warp.reference(im, warp.mode, warp.fill))
        diff = differences(ours, theirs)
        height, width = Image.open(path).size[::-1]
        inside = interior(lambda ones: warp.reference(ones, BILINEAR, 0.0), height, width)
        assert inside.shape == ours.shape[1:]
        assert inside.float().mean() > 0.4  # most of the image is compared tightly
        summary: dict[str, Any] = {
            "image": path.name,
            "mean": float(diff.mean()),
            "far": float((diff > 2).double().mean()),
            "interior mean": float(diff[:, inside].mean()),
            "interior max": float(diff[:, inside].max()),
        }
        assert summary["interior max"] <= warp.interior_max, summary
        assert summary["interior mean"] <= warp.interior_mean, summary
        assert summary["mean"] <= warp.mean and summary["far"] <= warp.far_share, summary


# A crop after a turn is a shift of the turn's output window. Where the window reaches past the
# turned image's frame (a CenterCrop larger than the image, a RandomCrop's padding), torchvision
# shows the fill, the loaders what the turn pushed off the frame (README, "Where the pixels
# differ from torchvision's own"): as if the turn had a canvas that large. Measured (48x48, a turn
# by 30 degrees, both backends alike): inside the frame as any warp (0.49 / 1); the whole
# image 12.2 levels from torchvision on average; within a level of the model everywhere.
def turned_on_a_larger_canvas(image: Any, margin: int) -> Any:
    """The documented model: the image padded by `margin` on every side, then turned."""
    return F.rotate(F.pad(image, [margin]), 30, BILINEAR)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_crop_larger_than_the_turned_frame_shows_what_the_turn_pushed_off(
    pngs: list[Path], backend: str
) -> None:
    path = pngs[0]  # 48x48
    turn = T.RandomRotation((30, 30), interpolation=BILINEAR)
    ours = through_loader([path], [turn, T.CenterCrop(60)], backend)[0]
    theirs = torchvisions(path, lambda im: F.center_crop(F.rotate(im, 30, BILINEAR), [60, 60]))
    diff = differences(ours, theirs)
    model = torchvisions(path, lambda im: turned_on_a_larger_canvas(im, 6))
    inside = interior(lambda ones: turned_on_a_larger_canvas(ones, 6), 48, 48)
    frame = torch.zeros(60, 60, dtype=torch.bool)
    frame[7:53, 7:53] = True  # torchvision's turned 48x48, less a pixel
    assert diff[:, frame & inside].max() <= 1 and diff[:, frame & inside].mean() <= 0.6
    assert diff.mean() <= 15, float(diff.mean())  # the band outside the frame: the deviation
    band = torch.ones(60, 60, dtype=torch.bool)
    band[6:54, 6:54] = False  # outside torchvision's turned 48x48: its fill, all of it
    assert (theirs[:, band] == 0).all()
    # the loaders there: the documented model (to update if they learn torchvision's fill)
    model_diff = differences(ours, model)
    assert model_diff.max() <= 1 and model_diff.mean() <= 0.5, float(model_diff.mean())
    # a RandomCrop's padding after the turn: a window of the same larger canvas
    out = through_loader([path] * 6, [turn, T.RandomCrop(48, padding=6)], backend)
    offsets = set()
    for levels in out:
        windows = {
            (x, y): differences(levels, model[:, y : y + 48, x : x + 48])
            for y in range(13)
            for x in range(13)
        }
        offset = min(windows, key=lambda xy: float(windows[xy].mean()))
        assert windows[offset].max() <= 1, (offset, float(windows[offset].max()))
        offsets.add(offset)
    assert len(offsets) >= 3, offsets


# --- Hue ------------------------------------------------------------------------------------


def hsv_hue(levels: torch.Tensor) -> torch.Tensor:
    """(H, W) hue in turns of (3, H, W) 0..255 levels."""
    return torch.as_tensor(_rgb_to_hsv(levels.float() / 255)[0])


# The loaders turn the hue as torchvision's tensor kernel does (float HSV); ImageFolder's PIL
# images go through PIL's 8-bit HSV (the turn in 1/255 steps: 0.1 -> 25/255, the values rounded
# on the way). Measured, the three images, both backends alike: the tensor kernel 0.06 / 1; the
# PIL path 1.11 / 14 (hue=0.1), 0.47 / 8 (hue=-0.3); the HSV hue of saturated pixels moved by the
# turn asked within 0.0007 (nine in ten; the median exactly).
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("turn", [0.1, -0.3])
def test_hue_gives_torchvisions_pixels(pngs: list[Path], backend: str, turn: float) -> None:
    for path in pngs:
        ours = through_loader([path], [T.ColorJitter(hue=(turn, turn))], backend)[0]
        source = torchvisions(path, lambda im: im)
        kernel = torchvisions(path, lambda im: F.adjust_hue(F.pil_to_tensor(im), turn))
        diff = differences(ours, kernel)
        assert diff.mean() <= 0.1 and diff.max() <= 1, (float(diff.mean()), float(diff.max()))
        diff = differences(ours, torchvisions(path, lambda im: F.adjust_hue(im, turn)))
        assert diff.mean() <= 1.5 and diff.max() <= 20, (float(diff.mean()), float(diff.max()))
        saturated = _rgb_to_hsv(source.float() / 255)[1] > 0.2
        assert saturated.double().mean() > 0.5
        moved = ((hsv_hue(ours) - hsv_hue(source) + 0.5) % 1 - 0.5)[saturated]
        low, high = (float(moved.quantile(q)) for q in (0.1, 0.9))
        assert turn - 0.002 <= low and high <= turn + 0.002, (low, high)


# ColorJitter with every property: each image takes them in its own drawn order, as torchvision's
# ColorJitter does. The loaders compute in floats and round once: torchvision's kernels on a
# float image, in the image's order, give the same pixels (measured: equal, every image); the
# PIL path rounds to 8 bits after each property (and turns the hue in 8-bit HSV): measured 1.10
# to 1.66 / 8 to 18, in the order that fits best.
JITTER = [
    (F.adjust_brightness, 1.3),
    (F.adjust_contrast, 0.6),
    (F.adjust_saturation, 1.5),
    (F.adjust_hue, 0.1),
]


def jittered(image: Any, order: tuple[int, ...]) -> Any:
    for k in order:
        function, factor = JITTER[k]
        image = function(image, factor)
    return image


@pytest.mark.parametrize("backend", BACKENDS)
def test_color_jitter_applies_its_properties_in_a_drawn_order(
    pngs: list[Path], backend: str
) -> None:
    step = T.ColorJitter(
        brightness=(1.3, 1.3), contrast=(0.6, 0.6), saturation=(1.5, 1.5), hue=(0.1, 0.1)
    )
    path = pngs[2]
    out = through_loader([path] * 8, [step], backend)
    orders = list(itertools.permutations(range(4)))

    def floats(im: Image.Image, order: tuple[int, ...]) -> torch.Tensor:
        return torch.as_tensor(jittered(F.pil_to_tensor(im).double() / 255, order) * 255).round()

    kernel = [torchvisions(path, functools.partial(floats, order=o)) for o in orders]
    pil = [torchvisions(path, functools.partial(jittered, order=o)) for o in orders]
    found = set()
    for ours in out:
        best = min(range(24), key=lambda k: float(differences(ours, kernel[k]).mean()))
        assert differences(ours, kernel[best]).max() <= 1, orders[best]
        found.add(orders[best])
        diff = min((differences(ours, theirs) for theirs in pil), key=lambda d: float(d.mean()))
        assert diff.mean() <= 2.2 and diff.max() <= 24, (float(diff.mean()), float(diff.max()))
    assert len(found) >= 3, found  # drawn per image (measured: 6 orders in 8 images)


# --- Crops: exact windows -------------------------------------------------------------------


def levels8(levels: torch.Tensor) -> np.ndarray:
    """Whole 0..255 levels as the uint8 pixels they are."""
    rounded = levels.round()
    assert (levels - rounded).abs().max() < 1e-3
    return np.asarray(rounded.to(torch.uint8).numpy())


def window_offset(
    out: np.ndarray, padded: np.ndarray, pad: tuple[int, int], flipped: bool, blue: int = BLUE
) -> tuple[int, int]:
    """The (x, y) in `padded` (3, H, W) of which `out` (3, h, w) is exactly the window (mirrored
    left to right when `flipped`); the source pixels in `out` name it. `pad` is (left, top)."""
    _, height, width = out.shape
    rows, cols = np.nonzero(out[2] == blue)
    assert len(rows), "no pixel of the source in the crop"
    i, j = int(rows[0]), int(cols[0])
    column = width - 1 - j if flipped else j
    x = int(out[0, i, j]) + pad[0] - column
    y = int(out[1, i, j]) + pad[1] - i
    assert 0 <= x <= padded.shape[2] - width and 0 <= y <= padded.shape[1] - height, (x, y)
    window = padded[:, y : y + height, x : x + width]
    expected = window[:, :, ::-1] if flipped else window
    assert np.array_equal(out, expected), (x, y, flipped)
    return x, y


def torchvision_padded(
    image: np.ndarray,
    crop: tuple[int, int],
    padding: int | tuple[int, ...],
    fill: tuple[int, int, int],
    needed: bool,
) -> tuple[np.ndarray, tuple[int, int]]:
    """What RandomCrop.forward crops from: the image padded by `padding` (torchvision's: one
    value, (left/right, top/bottom) or (left, top, right, bottom)), then (pad_if_needed) on
    both sides by what is missing: (3, H, W) and the (left, top) padding."""
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    sides = list(padding) if isinstance(padding, tuple) else [padding]
    left, top = sides[0], sides[1 % len(sides)]
    if any(sides):
        tensor = F.pad(tensor, sides, fill=list(fill))
    height, width = tensor.shape[1:]
    if needed and width < crop[1]:
        tensor = F.pad(tensor, [crop[1] - width, 0], fill=list(fill))
        left += crop[1] - width
    if needed and height < crop[0]:
        tensor = F.pad(tensor, [0, crop[0] - height], fill=list(fill))
        top += crop[0] - height
    return tensor.numpy(), (left, top)


CROPS: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {
    # (source width, height), RandomCrop's keywords
    "fixed": ((64, 40), {"size": (20, 30)}),
    "fixed-square-of-tall": ((37, 53), {"size": 25}),
    "padding-fill": ((32, 32), {"size": 32, "padding": 4, "fill": (7, 11, 13)}),
    "padding-black-wide": ((40, 30), {"size": (30, 40), "padding": 4}),
    "padding-each-side": ((40, 30), {"size": (30, 40), "padding": (1, 2, 3, 4), "fill": 60}),
    "padding-two-sides": ((32, 32), {"size": 32, "padding": (2, 5), "fill": (5, 6, 7)}),
    "pad-if-needed": ((30, 26), {"size": (40, 44), "pad_if_needed": True, "fill": (9, 90, 3)}),
    "pad-if-needed-one-side": ((50, 26), {"size": (30, 44), "pad_if_needed": True}),
}


FLIPS: dict[str | None, list[Any]] = {
    None: [],
    "horizontal": [T.RandomHorizontalFlip(1.0)],
    "vertical": [T.RandomVerticalFlip(1.0)],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flip", list(FLIPS))
@pytest.mark.parametrize("name", list(CROPS))
def test_random_crop_is_an_exact_window_of_the_padded_source(
    tmp_path: Path, backend: str, flip: str | None, name: str
) -> None:
    """Eight copies of a coordinate image: each output is exactly a window of the image as
    RandomCrop.forward pads it (the fill where it pads), mirrored where a flip follows, at an
    offset torchvision could draw, and the offsets differ between samples."""
    assert_exact_windows(tmp_path, backend, flip, T.RandomCrop(**CROPS[name][1]), *CROPS[name])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CROPS))
def test_v2_random_crop_is_the_same_window(tmp_path: Path, backend: str, name: str) -> None:
    """torchvision.transforms.v2's RandomCrop keeps its padding in another order (left, right,
    top, bottom): read as v1's."""
    step = V2.RandomCrop(**CROPS[name][1])
    assert_exact_windows(tmp_path, backend, None, step, *CROPS[name])


def assert_exact_windows(
    tmp_path: Path,
    backend: str,
    flip: str | None,
    step: Any,
    source_size: tuple[int, int],
    keywords: dict[str, Any],
) -> None:
    width, height = source_size
    image = coordinate_image(width, height)
    path = tmp_path / "coordinates.png"
    Image.fromarray(image).save(path)
    out = levels8(through_loader([path] * 8, [step, *FLIPS[flip]], backend))
    size = keywords["size"] if isinstance(keywords["size"], tuple) else (keywords["size"],) * 2
    assert out.shape == (8, 3, *size)
    if flip == "vertical":
        out = np.ascontiguousarray(out[:, :, ::-1])  # undone: the window test is left-right
    fill = keywords.get("fill", (0, 0, 0))
    fill = fill if isinstance(fill, tuple) else (fill,) * 3
    padded, pad = torchvision_padded(
        image, size, keywords.get("padding", 0), fill, keywords.get("pad_if_needed", False)
    )
    offsets = {window_offset(o, padded, pad, flip == "horizontal") for o in out}
    assert len(offsets) >= 3, offsets  # drawn per sample, not one window for all


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flip", ["horizontal", "vertical"])
@pytest.mark.parametrize("name", ["fixed", "padding-each-side", "pad-if-needed"])
def test_a_flip_before_the_crop_gives_torchvisions_window(
    tmp_path: Path, backend: str, flip: str, name: str
) -> None:
    """RandomHorizontalFlip (or Vertical) before RandomCrop: torchvision flips, then pads and
    crops; the loader mirrors the window onto the source, then flips. Each output is exactly a
    window of the flipped image as RandomCrop pads it (asymmetric padding, the fill)."""
    (width, height), keywords = CROPS[name]
    image = coordinate_image(width, height)
    path = tmp_path / "coordinates.png"
    Image.fromarray(image).save(path)
    steps = [*FLIPS[flip], T.RandomCrop(**keywords)]
    out = levels8(through_loader([path] * 8, steps, backend))
    flipped = np.ascontiguousarray(image[:, ::-1] if flip == "horizontal" else image[::-1])
    size = keywords["size"] if isinstance(keywords["size"], tuple) else (keywords["size"],) * 2
    fill = keywords.get("fill", (0, 0, 0))
    fill = fill if isinstance(fill, tuple) else (fill,) * 3
    padded, _ = torchvision_padded(
        flipped, size, keywords.get("padding", 0), fill, keywords.get("pad_if_needed", False)
    )
    offsets = set()
    for o in out:
        found = [
            (x, y)
            for y in range(padded.shape[1] - size[0] + 1)
            for x in range(padded.shape[2] - size[1] + 1)
            if np.array_equal(o, padded[:, y : y + size[0], x : x + size[1]])
        ]
        assert found, "not a window of the flipped, padded image"
        offsets.add(found[0])
    assert len(offsets) >= 3 or (name == "fixed" and len(offsets) >= 2), offsets


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", [NEAREST, BILINEAR])
def test_random_affine_translates_as_torchvision(
    tmp_path: Path, backend: str, mode: InterpolationMode
) -> None:
    """The translation is random (its distribution: test_op_draws); whatever was drawn, the
    image is torchvision's F.affine with it: shifted by whole pixels, exactly, the fill
    elsewhere. The shift is read off the coordinate pixels."""
    width, height = 48, 40
    image = coordinate_image(width, height)
    path = tmp_path / "coordinates.png"
    Image.fromarray(image).save(path)
    step = T.RandomAffine(0, translate=(0.2, 0.25), interpolation=mode, fill=7)
    out = levels8(through_loader([path] * 8, [step], backend))
    source = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    shifts = set()
    for levels in out:
        rows, cols = np.nonzero(levels[2] == BLUE)
        tx = int(cols[0]) - int(levels[0, rows[0], cols[0]])
        ty = int(rows[0]) - int(levels[1, rows[0], cols[0]])
        assert abs(tx) <= round(0.2 * width) and abs(ty) <= round(0.25 * height), (tx, ty)
        expected = F.affine(source, 0.0, [tx, ty], 1.0, [0.0, 0.0], mode, fill=7)
        assert np.array_equal(levels, expected.numpy()), (tx, ty)
        shifts.add((tx, ty))
    assert len(shifts) >= 6, shifts


# --- The classic pipelines -------------------------------------------------------------------


def cifar_transform() -> Any:
    return T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of 32x32 coordinate images, each with its own blue."""
    root = tmp_path_factory.mktemp("cifar")
    for k in range(12):
        folder = root / f"class_{k % 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(coordinate_image(32, 32, blue=100 + 10 * k)).save(folder / f"{k:02d}.png")
    return root


def cifar_epoch(root: Path, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    loader = create_loader(
        root, batch_size=12, backend=backend, transform=cifar_transform(), num_threads=1, seed=3
    )
    batches = list(loader)
    assert len(batches) == 1
    images, labels = batches[0]
    return images.cpu(), labels.cpu()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_cifar_pipeline_crops_padded_windows_and_flips_some(
    cifar_folder: Path, backend: str
) -> None:
    images, labels = cifar_epoch(cifar_folder, backend)
    assert images.shape == (12, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (12,) and set(labels.tolist()) == {0, 1}
    pixels = levels8((images.double() * 0.5 + 0.5) * 255)
    flipped, offsets = [], set()
    for out, label in zip(pixels, labels.tolist(), strict=True):
        blue = int(np.bincount(out[2].ravel()).argmax())  # the padding is black, the rest blue
        k = (blue - 100) // 10
        assert blue == 100 + 10 * k and label == k % 2  # the image's own label
        padded = F.pad(torch.from_numpy(coordinate_image(32, 32, blue)).permute(2, 0, 1), [4])
        flipped.append(mirrored(out, blue))
        offsets.add(window_offset(out, padded.numpy(), (4, 4), flipped[-1], blue))
    assert 0 < sum(flipped) < len(flipped)  # p=0.5: some of each
    assert len(offsets) >= 6


def mirrored(out: np.ndarray, blue: int) -> bool:
    """Whether the x the coordinate pixels of `out` (3, h, w) encode runs right to left."""
    source = out[2] == blue
    pairs = source[:, 1:] & source[:, :-1]
    steps = set((out[0, :, 1:].astype(int) - out[0, :, :-1])[pairs].tolist())
    assert steps in ({1}, {-1}), steps
    return steps == {-1}


@pytest.fixture(scope="module")
def mixed_pngs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[int]]:
    root = tmp_path_factory.mktemp("mixed")
    paths = []
    for k, (width, height) in enumerate([*SIZES, (90, 70), (50, 81), (64, 64)]):
        path = root / f"{k}.png"
        Image.fromarray(smooth_image(width, height, seed=10 + k)).save(path)
        paths.append(str(path))
    return paths, [k % 3 for k in range(len(paths))]


def turned_transform() -> Any:
    return T.Compose(
        [
            T.Resize((64, 64)),
            T.RandomRotation(30),
            T.RandomAffine(15, translate=(0.1, 0.1)),
            T.ToTensor(),
        ]
    )


def turned_batch(source: tuple[list[str], list[int]], backend: str) -> tuple[Any, Any]:
    loader = create_loader(
        source,
        batch_size=6,
        backend=backend,
        transform=turned_transform(),
        shuffle=False,
        num_threads=1,
    )
    images, labels = next(iter(loader))
    return images.cpu(), labels.cpu()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_turned_pipeline_runs_on_a_list_of_paths(
    mixed_pngs: tuple[list[str], list[int]], backend: str
) -> None:
    images, labels = turned_batch(mixed_pngs, backend)
    assert images.shape == (6, 3, 64, 64) and images.dtype == torch.float32
    assert labels.tolist() == mixed_pngs[1]  # not shuffled: the order given
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    resized = torch.stack(
        [torchvisions(Path(p), lambda im: F.resize(im, [64, 64])) for p in mixed_pngs[0]]
    )
    # turned: each image differs from its plain resize
    assert ((images.double() * 255 - resized).abs().mean(dim=(1, 2, 3)) > 5).all()


def test_the_backends_give_the_same_pixels_for_the_classic_pipelines(
    cifar_folder: Path, mixed_pngs: tuple[list[str], list[int]]
) -> None:
    """Same seed, same pixels: the CIFAR crops exactly; the turned images as their resizes
    differ (measured: the 64x64 image equal, the resized ones 0.02-0.17 level on average, 1 at
    most; the turn itself takes the same nearest taps)."""
    a, labels_a = cifar_epoch(cifar_folder, "torchvision")
    b, labels_b = cifar_epoch(cifar_folder, "dali-cpu")
    assert torch.equal(labels_a, labels_b)
    # the same pixels, normalized each its own way: float32 rounding apart
    assert (a - b).abs().max() < 1e-5
    assert np.array_equal(levels8((a * 0.5 + 0.5) * 255), levels8((b * 0.5 + 0.5) * 255))
    a, _ = turned_batch(mixed_pngs, "torchvision")
    b, _ = turned_batch(mixed_pngs, "dali-cpu")
    diff = (a.double() - b.double()).abs() * 255
    assert diff.mean() <= 0.3 and diff.max() <= 2, (float(diff.mean()), float(diff.max()))
    assert (diff[-1] == 0).all()  # 64x64: not resized
