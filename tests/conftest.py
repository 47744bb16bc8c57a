"""Fixtures: tiny image folders whose pixels say which sample they are, and the backend list.

An index-encoded image has a uniform top half and a uniform bottom half; each half's RGB color is
one of 8 x 8 x 8 levels, so together they encode up to 262,144 indices. Halves survive JPEG,
flips, resizing and mild crops, so a test can read back which sample came out of any backend.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dali_loader.backends import dali_installed

LEVELS = 8
STEP = 256 // LEVELS  # 32: colors 16, 48, ..., 240


def _color(code: int) -> tuple[int, int, int]:
    return tuple(STEP // 2 + STEP * ((code // LEVELS**c) % LEVELS) for c in range(3))  # type: ignore[return-value]


def index_image(index: int, size: tuple[int, int] = (48, 48)) -> Image.Image:
    """An RGB image (width, height) = size whose two halves encode `index`."""
    width, height = size
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[: height // 2] = _color(index % LEVELS**3)
    pixels[height // 2 :] = _color(index // LEVELS**3)
    return Image.fromarray(pixels)


def write_index_folder(root: Path, counts: list[int], size: tuple[int, int] = (48, 48)) -> Path:
    """root/class_XX/img_NNNNN.jpg; a sample's index is its position in ImageFolder's order."""
    index = 0
    for label, count in enumerate(counts):
        folder = root / f"class_{label:02d}"
        folder.mkdir(parents=True)
        for _ in range(count):
            index_image(index, size).save(folder / f"img_{index:05d}.jpg", quality=95)
            index += 1
    return root


def decode_indices(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> list[int]:
    """Read back the sample index of each (N, 3, H, W) normalized image."""
    images = images.float().cpu()
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    pixels = (images * s + m) * 255
    height, width = pixels.shape[-2:]
    top = pixels[:, :, height // 4, width // 2]
    bottom = pixels[:, :, 3 * height // 4, width // 2]

    def code(rgb: torch.Tensor) -> torch.Tensor:
        levels = ((rgb - STEP // 2) / STEP).round().clamp(0, LEVELS - 1).long()
        return levels[:, 0] + LEVELS * levels[:, 1] + LEVELS**2 * levels[:, 2]

    return (code(top) + LEVELS**3 * code(bottom)).tolist()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="backend 'dali' needs a CUDA GPU")

# Every contract test runs on each of these. DALI missing is a failure, not a skip: CI installs it.
GPU_BACKEND = pytest.param("dali", marks=[pytest.mark.cuda, CUDA])
BACKENDS = ["torchvision", "dali-cpu", GPU_BACKEND]


@pytest.fixture(scope="session", autouse=True)
def _dali_is_installed() -> None:
    assert dali_installed(), "DALI is not installed: pip install -e '.[cuda12,test]'"


@pytest.fixture(scope="session", autouse=True)
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The check's cache and converted copies go to a temp dir, never to ~/.cache."""
    os.environ["DALI_LOADER_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """21 images in 3 classes of 7, 5 and 9: uneven, and not a multiple of common batch sizes."""
    return write_index_folder(tmp_path_factory.mktemp("small"), [7, 5, 9])


@pytest.fixture(scope="session")
def sorted_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1100 images in 10 classes of 110: class-sorted and larger than DALI's 1024 shuffle buffer."""
    return write_index_folder(tmp_path_factory.mktemp("sorted"), [110] * 10, size=(32, 32))


def natural_jpeg(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    """A natural-looking JPEG: gradients, a stripe pattern and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [x * 255 / width, y * 255 / height, ((x + 2 * y) % 61) * 4.0], axis=-1
    ) + rng.normal(0, 6, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
