"""The backends agree: eval output of the same file, and EXIF orientation, on every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dali_loader import create_loader

from .conftest import BACKENDS, IMAGENET_MEAN, IMAGENET_STD, _color, decode_indices, natural_jpeg

# The decoders and resamplers differ slightly (the CPU paths share libjpeg-turbo; DALI's resize
# and PIL's are both antialiased triangle filters): eval pixels agree within 1/255 almost
# everywhere. In normalized units (std ~0.22) that is: max 2 levels, mean 0.25 level.
MAX_DIFF = 2 / 255 / min(IMAGENET_STD)
MEAN_DIFF = 0.25 / 255 / min(IMAGENET_STD)

SIZES = [(500, 375), (375, 500), (333, 500), (457, 301), (64, 48), (1000, 999)]


@pytest.fixture(scope="module")
def natural_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("natural")
    (root / "a").mkdir()
    for k, (w, h) in enumerate(SIZES):
        (root / "a" / f"{k}.jpg").write_bytes(natural_jpeg(w, h, seed=k))
    Image.open(root / "a" / "0.jpg").save(root / "a" / "png_copy.png")
    Image.open(root / "a" / "1.jpg").convert("L").save(root / "a" / "gray.jpg", quality=90)
    return root


def eval_batch(root: Path, backend: str) -> torch.Tensor:
    loader = create_loader(root, backend=backend, train=False, batch_size=16, num_threads=2)
    images, _ = next(iter(loader))
    return images.float().cpu()


@pytest.mark.parametrize("other", [b for b in BACKENDS if b != "torchvision"])
def test_eval_output_is_the_same_tensor_on_every_backend(natural_folder: Path, other: str) -> None:
    reference = eval_batch(natural_folder, "torchvision")
    candidate = eval_batch(natural_folder, other)
    assert candidate.shape == reference.shape == (len(SIZES) + 2, 3, 224, 224)
    diff = (candidate - reference).abs()
    assert diff.max() <= MAX_DIFF, f"max diff {diff.max():.4f}"
    assert diff.mean() <= MEAN_DIFF, f"mean diff {diff.mean():.5f}"


def test_exif_orientation_is_applied_on_every_backend(tmp_path: Path, backend: str) -> None:
    # Stored landscape: left half encodes the index's low part, right half its high part. EXIF
    # orientation 6 (turn 90 degrees clockwise to view) puts the left half on top, as a viewer
    # shows it; an image decoded without orientation would read as a different index.
    index = 300
    pixels = np.empty((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = _color(index % 512)
    pixels[:, 32:] = _color(index // 512)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "c").mkdir()
    Image.fromarray(pixels).save(tmp_path / "c" / "turned.jpg", quality=95, exif=exif)
    images = eval_batch(tmp_path, backend)
    assert decode_indices(images, IMAGENET_MEAN, IMAGENET_STD) == [index]
