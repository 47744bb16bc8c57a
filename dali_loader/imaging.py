"""Any image PIL opens, as the 8-bit RGB every backend delivers: one conversion, used by the
torchvision backend for each sample and by the check for the copies the DALI backends read.

PIL's own `convert("RGB")` clips deeper pixels to 0..255: a 16-bit scan (0..65535) comes out
white, a float image in 0..1 black. Here their range is scaled instead:
- 16-bit and 32-bit integer grayscale ("I;16", "I"): 0..65535 to 0..255 (values outside it are
  clipped);
- float grayscale ("F"): 0..1 to 0..255 when no value is above 1, else 0..255 as it is when none
  is above 255, else 0..65535 (NaN is 0);
- everything else (palette, alpha, 1-bit, CMYK, ...): PIL's `convert("RGB")`, alpha dropped.
The result carries no `info` (a transparency entry of another mode breaks saving it as PNG).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps

_SIXTEEN_BIT = 65535.0


@contextmanager
def open_image(path: str) -> Iterator[Image.Image]:
    """`path` opened through a file object, as the torchvision backend opens its bytes: PIL
    reads some files otherwise by path (a TIFF in mode L, I;16 or P with EXIF orientation 5-8
    comes out sheared at its unturned size by path, upright from a file object, as DALI decodes
    it). Only the header is read until the pixels are loaded."""
    with open(path, "rb") as f, Image.open(f) as image:
        yield image


def upright_rgb8(image: Image.Image) -> Image.Image:
    """What every backend delivers of `image`: turned upright by its EXIF orientation, 8-bit
    RGB (`rgb8`)."""
    return rgb8(ImageOps.exif_transpose(image))


def rgb8(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB, deep grayscale scaled to its full range (see the module docstring)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        gray = Image.fromarray(_to_255(pixels, float_image=image.mode == "F"), "L")
        return gray.convert("RGB")
    rgb = image.convert("RGB")
    rgb.info = {}
    return rgb


def _to_255(pixels: np.ndarray, *, float_image: bool) -> np.ndarray:
    pixels = np.nan_to_num(pixels, nan=0.0, posinf=_SIXTEEN_BIT, neginf=0.0)
    top = float(pixels.max()) if pixels.size else 0.0
    if float_image and top <= 1.0:
        scale = 255.0
    elif float_image and top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / _SIXTEEN_BIT
    return np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
