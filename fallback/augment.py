"""Decode one file and apply its drawn parameters, stage by stage (`dali_loader.plan`):
uint8 (C, H, W) out, normalized later per batch.

What each step costs shaped this module (measured per step, one core: benchmarks/README.md,
"Per-step costs behind the torchvision backend"):
- decode: RGB JPEGs without EXIF rotation whose box is whole pixels (`Plan.region`: no resize
  before the crop) decode only the crop's region, with
  nvImageCodec's CPU decoder (libjpeg-turbo, the same pixels as a full decode), else simplejpeg
  (the same pixels as PIL, faster); the rest go through PIL, which reads every ImageFolder
  format and mode and applies EXIF orientation. libjpeg's reduced DCT scales are not used: their
  pixels are not DALI's, and the backends give the same pixels for the same seed.
- crop + resize: torch's uint8 antialiased resize (faster than PIL's).
- flips, turns, affines: one `grid_sample` after the resize, with DALI's `warp_affine` border
  (taps outside the canvas are the fill). Resize and warp stay two passes: one bilinear warp
  from the crop skips the antialiasing a downscale needs.
- a fractional box (a crop after a resize) is resized with PIL: the exact geometry of the DALI
  graph.
- colors: float math per pixel, the DALI graph's formulas, rounded once.
"""

from __future__ import annotations

import functools
import io
import os
from typing import Any

import numpy as np
import simplejpeg
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from dali_loader.errors import DatasetError
from dali_loader.hue import Ops, turn_hue
from dali_loader.imaging import rgb8
from dali_loader.ops import ColorJitter, GaussianBlur, Grayscale
from dali_loader.params import GRAY
from dali_loader.plan import Plan
from dali_loader.spec import LoaderSpec

try:
    from nvidia import nvimgcodec
except ImportError:  # installed with DALI; without it, decode whole images
    nvimgcodec = None

_EXIF_ORIENTATION = 0x0112


def load_sample(
    encoded: bytes, spec: LoaderSpec, params: dict[str, np.ndarray], size: tuple[int, int]
) -> torch.Tensor:
    """The sample encoded in `encoded` (a whole image file) through the spec's stages
    (`dali_loader.plan`) with its drawn `params`, as uint8 (C, H, W). `size` is the upright
    (width, height) the parameters were drawn for: a file of another size changed since the
    check, and is refused rather than cut wrong."""
    plan = spec.plan
    canvas = _crop_stage(encoded, spec, params, size)
    if plan.has_warp:
        canvas = _warp(canvas, spec, params)
    if plan.colors:
        canvas = _colors(canvas, plan, params)
    return canvas


def _crop_stage(
    encoded: bytes, spec: LoaderSpec, params: dict[str, np.ndarray], size: tuple[int, int]
) -> torch.Tensor:
    """The source box, resized onto its place in the canvas, the rest padding: uint8 (3, h, w)."""
    plan = spec.plan
    inner = params.get("inner")  # where the crops pad, or resize to sizes that differ
    target = (int(inner[2]), int(inner[3])) if inner is not None else spec.crop_size
    left, top, right, bottom = (float(v) for v in params["boxes"])
    box = (left, top, right, bottom)
    whole = (int(left), int(top), int(right), int(bottom))  # whole pixels: drawn so
    with Image.open(io.BytesIO(encoded)) as image:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        crop: torch.Tensor | None = None
        if image.format == "JPEG" and image.mode == "RGB" and orientation == 1:
            _same_size(image.size, size)
            if plan.region:
                crop = _decode_jpeg_region(encoded, whole)  # the region alone
            upright = image
        else:
            # Decoded whole and upright first (PIL turns some formats itself, TIFF, so the
            # header's size cannot say which way up the pixels are).
            upright = _to_rgb(image, orientation)
            _same_size(upright.size, size)
        if crop is None:
            upright = _to_rgb(upright, 1)
            if plan.region:
                crop = torch.from_numpy(np.array(upright.crop(whole)))
            else:  # a fractional box: resized from the whole image, the DALI graph's geometry
                assert target is not None  # resized: to one size, or each to its own
                height, width = target
                resized = upright.resize((width, height), Image.Resampling.BILINEAR, box=box)
                crop = torch.from_numpy(np.array(resized))
    pixels = crop.permute(2, 0, 1)
    if plan.region and plan.resized:
        assert target is not None
        pixels = F.resize(
            pixels, list(target), interpolation=InterpolationMode.BILINEAR, antialias=True
        )
    if inner is None or not plan.padded:
        return torch.as_tensor(pixels)
    assert spec.crop_size is not None and target is not None  # one canvas size to pad onto
    canvas = torch.tensor(plan.pad_fill, dtype=torch.uint8).view(3, 1, 1)
    canvas = canvas.expand(3, *spec.crop_size).clone()
    top, left = int(inner[0]), int(inner[1])
    if top >= 0 and left >= 0:  # else the window is all padding (`dali_loader.params`)
        canvas[:, top : top + target[0], left : left + target[1]] = pixels
    return canvas


def _same_size(found: tuple[int, int], recorded: tuple[int, int]) -> None:
    if tuple(found) != tuple(recorded):
        raise DatasetError(
            f"the image is {list(found)} (width, height), the check recorded {list(recorded)}: "
            "it changed since. Create the loader again: it checks it again."
        )


def _decode_jpeg_region(encoded: bytes, box: tuple[int, int, int, int]) -> torch.Tensor | None:
    """The (h, w, 3) pixels of an RGB JPEG inside `box` (left, top, right, bottom), exactly as a
    full libjpeg-turbo decode has them (PIL's pixels); None for what libjpeg rejects but PIL reads
    past (junk between segments): PIL takes those."""
    try:
        simplejpeg.decode_jpeg_header(encoded)  # strict: refuses what PIL only warns about
    except ValueError:
        return None
    decoder = _region_decoder()
    left, top, right, bottom = box
    if decoder is not None:
        stream = nvimgcodec.CodeStream(encoded)
        region = nvimgcodec.Region(top, left, bottom, right)
        image = decoder.decode(stream.get_sub_code_stream(region=region))
        if image is not None:
            return torch.from_numpy(np.asarray(image))
    return torch.from_numpy(simplejpeg.decode_jpeg(encoded))[top:bottom, left:right]


_decoders: dict[int, Any] = {}


def _region_decoder() -> Any:
    """This process's nvImageCodec CPU decoder, None without nvImageCodec (it comes with DALI).

    Its libjpeg-turbo decoder skips the rows below the crop and the IDCT and color conversion
    outside it (faster than a full decode with simplejpeg: benchmarks/README.md).
    One per process: a decoder does not survive a fork into a DataLoader worker.
    """
    if nvimgcodec is None:
        return None
    pid = os.getpid()
    if pid not in _decoders:
        _decoders.clear()
        _decoders[pid] = nvimgcodec.Decoder(
            device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
            max_num_cpu_threads=1,
            backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)],
        )
    return _decoders[pid]


def _to_rgb(image: Image.Image, orientation: int) -> Image.Image:
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    return rgb8(image)


def _warp(canvas: torch.Tensor, spec: LoaderSpec, params: dict[str, np.ndarray]) -> torch.Tensor:
    """The flips, turns and later crops: a mirror, or one affine resampling of the canvas as
    DALI's `warp_affine` does it (outside the canvas, every tap is the fill)."""
    plan = spec.plan
    if plan.mirror_only:
        return canvas.flip(-1) if params["flips"] else canvas
    (a, b, c), (d, e, f) = params["matrices"].astype(np.float64).tolist()
    _, height, width = canvas.shape
    out_h, out_w = spec.image_size
    xs, ys = _pixel_centers(out_w), _pixel_centers(out_h)
    if not plan.bilinear:
        return _nearest(
            canvas,
            (a * xs)[None, :] + (b * ys + c)[:, None],
            (d * xs)[None, :] + (e * ys + f)[:, None],
            plan.warp_fill,
        )
    # grid_sample's [-1, 1] coordinates of each output pixel's source: two broadcast sums of a
    # row and a column (the map's terms in x and in y), not full-size products, each into a
    # plane of its own (grid_sample reads the (x, y) pairs through strides: the same grid, and
    # ~40 us faster than writing the pairs interleaved)
    planes = torch.empty(2, out_h, out_w)
    sx, sy = 2 / width, 2 / height
    torch.add((xs * (a * sx))[None, :], (ys * (b * sx) + (c * sx - 1))[:, None], out=planes[0])
    torch.add((xs * (d * sy))[None, :], (ys * (e * sy) + (f * sy - 1))[:, None], out=planes[1])
    grid = planes.permute(1, 2, 0)[None]
    out = torch.nn.functional.grid_sample(
        canvas.float()[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]
    if plan.warp_fill:
        inside = torch.nn.functional.grid_sample(
            torch.ones(1, 1, height, width), grid, mode="bilinear", align_corners=False
        )[0]
        out += plan.warp_fill * (1 - inside)
    return _rounded(out)


def _rounded(x: torch.Tensor) -> torch.Tensor:
    """Floats 0..255 to uint8, half up (as DALI): clamped, the +0.5 truncated. numpy's cast:
    torch's float -> uint8 costs ~5x as much (58 against 12 us at 3x224x224, one thread)."""
    return torch.from_numpy(x.add_(0.5).clamp_(0, 255).numpy().astype(np.uint8))


def _nearest(canvas: torch.Tensor, x: torch.Tensor, y: torch.Tensor, fill: float) -> torch.Tensor:
    """The pixel each source point (x, y) (corner coordinates) falls in, DALI's nearest: the
    floor of the coordinate (grid_sample rounds ties to even instead: other pixels where a
    turn lands exactly between two), so grid_sample is given that pixel's center; outside the
    canvas, the fill. DALI's CPU kernel sums its coordinates along a row, in float32: a point
    within ~1e-4 of a pixel's edge may fall on the other side there (84 of 301,056 pixels in a
    30-degree turn at 224), a resampler's difference."""
    _, height, width = canvas.shape
    column, row = torch.floor(x), torch.floor(y)
    grid = torch.stack([(column + 0.5) * (2 / width) - 1, (row + 0.5) * (2 / height) - 1], -1)
    out = torch.nn.functional.grid_sample(
        canvas.float()[None], grid[None], mode="nearest", padding_mode="zeros", align_corners=False
    )[0]
    out = torch.from_numpy(out.numpy().astype(np.uint8))  # whole levels: `_rounded`'s cast
    if not fill:
        return out
    inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
    return torch.where(inside, out, torch.tensor(int(fill), dtype=torch.uint8))  # whole


@functools.cache
def _pixel_centers(count: int) -> torch.Tensor:
    """0.5, 1.5, ...: pixel centers in corner coordinates (DALI's and torchvision's)."""
    return torch.arange(count, dtype=torch.float32) + 0.5


_TORCH = Ops(  # on (3, H, W)
    channel_max=lambda x: x.amax(0, keepdim=True),
    channel_min=lambda x: x.amin(0, keepdim=True),
    channel_sum=lambda x: x.sum(0, keepdim=True),
    mix=lambda x, matrix: torch.einsum("ij,jhw->ihw", torch.tensor(matrix), x),
    per_channel=lambda values: torch.tensor(values).view(3, 1, 1),
    floor=torch.floor,
    abs=torch.abs,
    clamp=torch.clamp,
    as_float=lambda mask: mask.float(),
)


def _colors(canvas: torch.Tensor, plan: Plan, params: dict[str, np.ndarray]) -> torch.Tensor:
    """The color ops in order, on floats (0..255), rounded once at the end."""
    x = canvas.float()
    gray = torch.tensor(GRAY, dtype=torch.float32)
    for k, op in enumerate(plan.colors):
        if isinstance(op, ColorJitter):
            for j in range(op.enabled):
                # each step does one property to this image; the others are identities,
                # skipped (the DALI graph runs them on the whole batch: x exactly)
                matrix = params[f"c{k}.m{j}"]
                b = float(params.get(f"c{k}.b{j}", [0.0])[0])
                if b or not np.array_equal(matrix, np.eye(3)):
                    x_m = torch.einsum("ij,jhw->ihw", torch.from_numpy(matrix), x)
                    if b:  # contrast: toward the image's mean gray
                        x_m += b * torch.einsum("c,chw->hw", gray, x).mean()
                    x = x_m.clamp_(0, 255)
                turns = float(params.get(f"c{k}.h{j}", [0.0])[0])
                if turns:
                    x = turn_hue(x, turns, _TORCH)
        elif isinstance(op, Grayscale):
            if op.channels == 1:
                x = torch.einsum("c,chw->hw", gray, x)[None]
            else:
                x = torch.einsum("ij,jhw->ihw", torch.from_numpy(params[f"c{k}.m0"]), x)
        else:
            assert isinstance(op, GaussianBlur)
            sigma = float(params[f"c{k}.sigma"][0])
            x = F.gaussian_blur(x, kernel_size=list(op.kernel), sigma=[sigma, sigma])
    return _rounded(x)
