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

import math
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
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional._color import _rgb_to_hsv

from dali_loader import create_loader

BACKENDS = ["torchvision", "dali-cpu"]
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
    paths: list[Path], steps: list[Any], backend: str, labels: list[int] | None = None
) -> torch.Tensor:
    """The first batch of `Compose([*steps, ToTensor()])` over `paths`, in 0..255 levels: whole
    ones (ToTensor's v / 255 of uint8 pixels)."""
    source = ([str(p) for p in paths], labels if labels is not None else [0] * len(paths))
    loader = create_loader(
        source,
        batch_size=len(paths),
        backend=backend,
        transform=T.Compose([*steps, T.ToTensor()]),
        shuffle=False,
        num_threads=1,
    )
    images, _ = next(iter(loader))
    assert images.dtype == torch.float32
    levels = images.double() * 255
    assert (levels - levels.round()).abs().max() < 1e-3
    return levels.round()


def torchvisions(path: Path, op: Callable[[Image.Image], Any]) -> torch.Tensor:
    """`op` on the image as ImageFolder decodes it (PIL, RGB), in 0..255 levels (C, H, W)."""
    with Image.open(path) as image:
        out = op(image.convert("RGB"))
    tensor = F.pil_to_tensor(out) if isinstance(out, Image.Image) else out
    return tensor.double()


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
    """A turn or affine with fixed parameters: `reference(image, fill)` is torchvision's op.

    Inside the image (every bilinear tap on source pixels) the pixels must be torchvision's
    within `interior_max`; at the image's edge the backends blend the fill as DALI's
    `warp_affine` does (the fill weighted by the taps outside), torchvision weights the image's
    taps by the inside fraction once more (its `_apply_grid_transform`), so there the whole
    image is held to a mean bound and a bound on the share of pixels more than 2 levels off.
    """

    step: Any
    reference: Callable[[Any, float], Any]
    interior_max: float
    interior_mean: float
    mean: float
    far_share: float  # of pixels (and channels) more than 2 levels off


def _rotation(angle: float, mode: InterpolationMode, fill: int) -> tuple[Any, Any]:
    step = T.RandomRotation((angle, angle), interpolation=mode, fill=fill)
    return step, lambda im, f: F.rotate(im, angle, mode, fill=f)


def _affine(
    angle: float, scale: float, shear: tuple[float, float], mode: InterpolationMode, fill: int
) -> tuple[Any, Any]:
    step = T.RandomAffine(
        (angle, angle),
        scale=(scale, scale),
        shear=(shear[0], shear[0], shear[1], shear[1]),
        interpolation=mode,
        fill=fill,
    )
    return step, lambda im, f: F.affine(im, angle, [0, 0], scale, list(shear), mode, fill=f)


# Measured, all three images (whole mean, share > 2 levels; interior mean / max), the same on
# both backends: nearest: exact but for 0.03% of pixels (a tap on a pixel's edge, rounded the
# other way); bilinear rotation: 1.03, 3.6%; 0.48 / 1; bilinear affine: 1.8, 4.9%; 0.51 / 1.
# Against torchvision's tensor op (not the PIL one used here) the interior is exact.
WARPS = {
    "rotation-nearest": Warp(*_rotation(25, NEAREST, 100), 255, 0.05, 0.1, 0.005),
    "rotation-bilinear": Warp(*_rotation(-40, BILINEAR, 100), 1, 0.6, 2.0, 0.07),
    "rotation-bilinear-black": Warp(*_rotation(63, BILINEAR, 0), 1, 0.6, 2.5, 0.07),
    "affine-nearest": Warp(*_affine(-30, 1.2, (-8, 6), NEAREST, 0), 255, 0.05, 0.1, 0.005),
    "affine-bilinear": Warp(*_affine(20, 0.8, (10, -5), BILINEAR, 50), 1, 0.6, 2.5, 0.08),
}


def interior(reference: Callable[[Any, float], Any], height: int, width: int) -> torch.Tensor:
    """(H, W) bool: output pixels whose bilinear taps, and their neighbours', are all inside
    the source (torchvision's warp of ones, filled with zeros, eroded by one pixel)."""
    coverage = reference(torch.ones(1, height, width), 0.0)
    eroded = -torch.nn.functional.max_pool2d(-coverage[None], 3, stride=1, padding=1)[0]
    return eroded[0] > 0.999


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(WARPS))
def test_a_warp_gives_torchvisions_pixels(pngs: list[Path], backend: str, name: str) -> None:
    warp = WARPS[name]
    fill = float(warp.step.fill if not isinstance(warp.step.fill, list) else warp.step.fill[0])
    for path in pngs:
        ours = through_loader([path], [warp.step], backend)[0]
        theirs = torchvisions(path, lambda im, w=warp, f=fill: w.reference(im, f))
        diff = differences(ours, theirs)
        inside = interior(_bilinear(warp), *ours.shape[1:])
        assert inside.float().mean() > 0.4  # most of the image is compared tightly
        summary = {
            "image": path.name,
            "mean": float(diff.mean()),
            "far": float((diff > 2).double().mean()),
            "interior mean": float(diff[:, inside].mean()),
            "interior max": float(diff[:, inside].max()),
        }
        assert summary["interior max"] <= warp.interior_max, summary
        assert summary["interior mean"] <= warp.interior_mean, summary
        assert summary["mean"] <= warp.mean and summary["far"] <= warp.far_share, summary


def _bilinear(warp: Warp) -> Callable[[Any, float], Any]:
    """The warp's geometry with bilinear taps: which output pixels see the source's edge."""
    step = warp.step
    if isinstance(step, T.RandomRotation):
        angle = float(step.degrees[0])
        return lambda im, f: F.rotate(im, angle, BILINEAR, fill=f)
    angle, scale = float(step.degrees[0]), float(step.scale[0])
    shear = [float(step.shear[0]), float(step.shear[2])]
    return lambda im, f: F.affine(im, angle, [0, 0], scale, shear, BILINEAR, fill=f)


# --- Hue: a turn in YIQ's chroma plane, not HSV's --------------------------------------------


def hsv_hue(levels: torch.Tensor) -> torch.Tensor:
    """(H, W) hue in turns of (3, H, W) 0..255 levels."""
    return _rgb_to_hsv(levels.float() / 255)[0]


# The loaders turn the hue in YIQ's (I, Q) plane (it keeps the luma), torchvision turns HSV's
# hue (it keeps HSV's value): the same hue, measured in HSV, moves by 0.07..0.14 of a turn for
# hue=0.1 (10th and 90th percentiles of saturated pixels), and the pixels differ by 19-22 levels
# on average, 93-100 at most, on these images: as much as the op itself changes them (22-23 /
# 150, hue=0.1 against no hue at all). Hence the bounds: the pixels within 25 / 110 levels of
# torchvision's, the HSV hue of saturated pixels moved as torchvision's (median within 0.02 of a
# turn, nine in ten between 0.04 and 0.16). Measured with the turn's sign corrected: the backends
# turn the hue the other way (see the xfail).
HUE = 0.1


@pytest.mark.xfail(
    strict=True,
    reason="params.hue_matrices turns the hue backwards: hue=+0.1 moves HSV hue by -0.11 "
    "(red toward magenta); torchvision's adjust_hue(+0.1) moves it by +0.1 (red toward orange)",
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_hue_turns_as_torchvisions_within_the_yiq_difference(
    pngs: list[Path], backend: str
) -> None:
    for path in pngs:
        ours = through_loader([path], [T.ColorJitter(hue=(HUE, HUE))], backend)[0]
        theirs = torchvisions(path, lambda im: F.adjust_hue(im, HUE))
        source = torchvisions(path, lambda im: im)
        saturated = _rgb_to_hsv(source.float() / 255)[1] > 0.2
        assert saturated.float().mean() > 0.5

        def moved(levels: torch.Tensor, src: torch.Tensor = source) -> torch.Tensor:
            return ((hsv_hue(levels) - hsv_hue(src) + 0.5) % 1 - 0.5)[saturated]

        shift, expected = moved(ours), moved(theirs)
        assert abs(float(shift.median() - expected.median())) <= 0.02, float(shift.median())
        assert 0.04 <= float(shift.quantile(0.1)) and float(shift.quantile(0.9)) <= 0.16
        diff = differences(ours, theirs)
        assert diff.mean() <= 25 and diff.max() <= 110, (float(diff.mean()), float(diff.max()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_hue_keeps_the_luma_and_changes_the_colors(pngs: list[Path], backend: str) -> None:
    """What the YIQ turn is, whichever way it turns: the luma stays, the chroma turns by the
    asked angle (a turn of 0.1 moves (I, Q) by 36 degrees)."""
    yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        dtype=torch.float64,
    )
    path = pngs[1]
    levels = through_loader([path], [T.ColorJitter(hue=(HUE, HUE))], backend)[0]
    ours = torch.einsum("ij,jhw->ihw", yiq, levels)
    source = torch.einsum("ij,jhw->ihw", yiq, torchvisions(path, lambda im: im))
    unclipped = ((levels > 0) & (levels < 255)).all(dim=0)  # measured: 78% of the pixels
    assert unclipped.double().mean() > 0.5
    luma = (ours[0] - source[0]).abs()[unclipped]
    assert luma.max() <= 0.6, float(luma.max())  # rounding only: measured 0.48
    strong = (source[1:].norm(dim=0) > 20) & unclipped
    turned = torch.atan2(ours[2], ours[1]) - torch.atan2(source[2], source[1])
    degrees = torch.rad2deg((turned[strong] + math.pi) % (2 * math.pi) - math.pi).abs()
    # measured: 35.6 to 36.5 degrees (5th to 95th percentile), rounding to whole levels
    low, high = (float(degrees.quantile(q)) for q in (0.05, 0.95))
    assert 35 <= low and high <= 37, (low, high)


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
    image: np.ndarray, crop: tuple[int, int], padding: int, fill: tuple[int, int, int], needed: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    """What RandomCrop.forward crops from: the image padded by `padding`, then (pad_if_needed)
    on both sides by what is missing: (3, H, W) and the (left, top) padding."""
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    left = top = padding
    if padding:
        tensor = F.pad(tensor, [padding], fill=list(fill))
    height, width = tensor.shape[1:]
    if needed and width < crop[1]:
        tensor = F.pad(tensor, [crop[1] - width, 0], fill=list(fill))
        left += crop[1] - width
    if needed and height < crop[0]:
        tensor = F.pad(tensor, [0, crop[0] - height], fill=list(fill))
        top += crop[0] - height
    return tensor.numpy(), (left, top)


CROPS = {
    # (source width, height), RandomCrop's keywords
    "fixed": ((64, 40), {"size": (20, 30)}),
    "fixed-square-of-tall": ((37, 53), {"size": 25}),
    "padding-fill": ((32, 32), {"size": 32, "padding": 4, "fill": (7, 11, 13)}),
    "padding-black-wide": ((40, 30), {"size": (30, 40), "padding": 4}),
    "pad-if-needed": ((30, 26), {"size": (40, 44), "pad_if_needed": True, "fill": (9, 90, 3)}),
    "pad-if-needed-one-side": ((50, 26), {"size": (30, 44), "pad_if_needed": True}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flip", [None, "horizontal", "vertical"])
@pytest.mark.parametrize("name", list(CROPS))
def test_random_crop_is_an_exact_window_of_the_padded_source(
    tmp_path: Path, backend: str, flip: str | None, name: str
) -> None:
    (width, height), keywords = CROPS[name]
    image = coordinate_image(width, height)
    path = tmp_path / "coordinates.png"
    Image.fromarray(image).save(path)
    step = T.RandomCrop(**keywords)
    flips = {None: [], "horizontal": [T.RandomHorizontalFlip(1.0)]}
    flips["vertical"] = [T.RandomVerticalFlip(1.0)]
    out = levels8(through_loader([path] * 8, [step, *flips[flip]], backend))
    size = keywords["size"] if isinstance(keywords["size"], tuple) else (keywords["size"],) * 2
    assert out.shape == (8, 3, *size)
    if flip == "vertical":
        out = np.ascontiguousarray(out[:, :, ::-1])  # undone: the window test is left-right
    fill = keywords.get("fill", (0, 0, 0))
    padded, pad = torchvision_padded(
        image, size, keywords.get("padding", 0), fill, keywords.get("pad_if_needed", False)
    )
    offsets = {window_offset(o, padded, pad, flip == "horizontal") for o in out}
    assert len(offsets) >= 3, offsets  # drawn per sample, not one window for all


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
    return batches[0]


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
    return next(iter(loader))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_turned_pipeline_runs_on_a_list_of_paths(
    mixed_pngs: tuple[list[str], list[int]], backend: str
) -> None:
    images, labels = turned_batch(mixed_pngs, backend)
    assert images.shape == (6, 3, 64, 64) and images.dtype == torch.float32
    assert labels.tolist() == mixed_pngs[1]  # not shuffled: the order given
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    resized = torch.stack(
        [torchvisions(Path(p), lambda im: F.resize(im, [64, 64])) for p in mixed_pngs[0]]
    )
    # turned: each image differs from its plain resize
    assert ((images.double() * 255 - resized).abs().mean(dim=(1, 2, 3)) > 5).all()


def test_the_backends_give_the_same_pixels_for_the_classic_pipelines(
    cifar_folder: Path, mixed_pngs: tuple[list[str], list[int]]
) -> None:
    """Same seed, same pixels: the CIFAR crops exactly; the turns within a level at almost every
    pixel (measured: equal; the nearest taps could round differently on an edge)."""
    a, labels_a = cifar_epoch(cifar_folder, "torchvision")
    b, labels_b = cifar_epoch(cifar_folder, "dali-cpu")
    assert torch.equal(labels_a, labels_b)
    # the same pixels, normalized each its own way: float32 rounding apart
    assert (a - b).abs().max() < 1e-5
    assert np.array_equal(levels8((a * 0.5 + 0.5) * 255), levels8((b * 0.5 + 0.5) * 255))
    a, _ = turned_batch(mixed_pngs, "torchvision")
    b, _ = turned_batch(mixed_pngs, "dali-cpu")
    diff = (a.double() - b.double()).abs() * 255
    assert diff.mean() <= 0.1 and (diff > 1).double().mean() <= 0.002, float(diff.mean())
