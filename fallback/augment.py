"""Decode one file and apply its `SampleParams`: uint8 (3, H, W) out, normalized later per batch.

What each step costs shaped this module (measured per step, one core: benchmarks/README.md,
"Per-step costs behind the torchvision backend"):
- decode: train-mode RGB JPEGs without EXIF rotation decode only the crop's region, with
  nvImageCodec's CPU decoder (libjpeg-turbo, the same pixels as a full decode), else simplejpeg
  (the same pixels as PIL, faster); the rest go through PIL, which reads every ImageFolder
  format and mode and applies EXIF orientation. libjpeg's reduced DCT scales are not used: their
  pixels are not DALI's, and the backends give the same pixels for the same seed.
- crop + resize: torch's uint8 antialiased resize (faster than PIL's).
- rotation: one `grid_sample` as the step after the resize. Resize and rotation stay two
  passes: one bilinear warp from the crop skips the antialiasing a downscale needs.
Eval resizes a fractional box with PIL: the exact geometry of the DALI graph.
"""

from __future__ import annotations

import functools
import io
import math
import os
from typing import Any

import numpy as np
import simplejpeg
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from dali_loader.errors import DatasetError
from dali_loader.imaging import rgb8
from dali_loader.spec import LoaderSpec

try:
    from nvidia import nvimgcodec
except ImportError:  # installed with DALI; without it, decode whole images
    nvimgcodec = None

from dali_loader.params import SampleParams

_EXIF_ORIENTATION = 0x0112


def load_sample(
    encoded: bytes, spec: LoaderSpec, params: SampleParams, size: tuple[int, int]
) -> torch.Tensor:
    """The sample encoded in `encoded` (a whole image file) cut to `params.box`, resized and
    flipped, as uint8 (3, H, W); the turn by `params.angle` comes after (`rotate`). `size` is
    the upright (width, height) the box was drawn for: a file of another size changed since
    the check, and is refused rather than cut wrong."""
    with Image.open(io.BytesIO(encoded)) as image:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        if not (image.format == "JPEG" and image.mode == "RGB" and orientation == 1):
            # Decoded whole and upright first (PIL turns some formats itself, TIFF, so the
            # header's size cannot say which way up the pixels are).
            upright = _to_rgb(image, orientation)
            _same_size(upright.size, size)
            if not spec.train:
                return _eval(upright, params.box, spec)
            return _train(upright, params, spec)
        _same_size(image.size, size)
        if not spec.train:
            return _eval(_to_rgb(image, 1), params.box, spec)
        left, top, right, bottom = (int(v) for v in params.box)
        crop = _decode_jpeg_region(encoded, (left, top, right, bottom))  # the region alone
        if crop is not None:
            return _finish(crop.permute(2, 0, 1), params, spec)
        return _train(_to_rgb(image, 1), params, spec)


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


def _train(image: Image.Image, params: SampleParams, spec: LoaderSpec) -> torch.Tensor:
    left, top, right, bottom = (int(v) for v in params.box)  # whole pixels: drawn so
    box = (left, top, right, bottom)
    return _finish(torch.from_numpy(np.array(image.crop(box))).permute(2, 0, 1), params, spec)


def _finish(crop: torch.Tensor, params: SampleParams, spec: LoaderSpec) -> torch.Tensor:
    """Resize the uint8 (3, h, w) crop to the output size (antialiased) and flip it."""
    out = F.resize(
        crop, list(spec.image_size), interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    return torch.as_tensor(out.flip(-1) if params.flip else out)


def rotate(pixels: torch.Tensor, degrees: float) -> torch.Tensor:
    """Turn float (3, H, W) pixels counter-clockwise about the center, bilinear, black corners.

    torchvision's `rotate` on uint8 gives the same pixels (within rounding) in twice the time:
    it converts to float and back, and builds its sampling grid with a batched matmul. Here the
    grid is two broadcast sums of a row and a column, not full-size terms.
    """
    _, height, width = pixels.shape
    xs, ys = _unit_coordinates(height, width)
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    grid = torch.empty(1, height, width, 2)
    torch.add((xs * c)[None, :], (ys * (-s * height / width))[:, None], out=grid[0, ..., 0])
    torch.add((xs * (s * width / height))[None, :], (ys * c)[:, None], out=grid[0, ..., 1])
    turned = torch.nn.functional.grid_sample(
        pixels[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return turned[0]


@functools.cache
def _unit_coordinates(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centers along x and along y in grid_sample's [-1, 1] coordinates."""
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * 2 / width - 1
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * 2 / height - 1
    return xs, ys


def _eval(
    image: Image.Image, box: tuple[float, float, float, float], spec: LoaderSpec
) -> torch.Tensor:
    out_h, out_w = spec.image_size
    resized = image.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1)
