"""The backends agree: the same seed gives the same pixels (eval and train), on every backend."""

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


@pytest.fixture(scope="module")
def odd_natural_folder(natural_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The natural images, plus a non-square EXIF-rotated JPEG and a CMYK one (converted)."""
    root = tmp_path_factory.mktemp("odd-natural")
    (root / "a").mkdir()
    for image in (natural_folder / "a").iterdir():
        (root / "a" / image.name).write_bytes(image.read_bytes())
    turned = Image.open(natural_folder / "a" / "3.jpg")  # 457x301, stored; 301x457 viewed
    exif = Image.Exif()
    exif[0x0112] = 6
    turned.save(root / "a" / "turned.jpg", quality=92, exif=exif)
    Image.open(natural_folder / "a" / "0.jpg").convert("CMYK").save(root / "a" / "cmyk.jpg")
    return root


def eval_batch(root: Path, backend: str) -> torch.Tensor:
    loader = create_loader(root, backend=backend, train=False, batch_size=16, num_threads=2)
    images, _ = next(iter(loader))
    return images.float().cpu()


# Train batches: the same crop windows, flips and angles on every backend (dali_loader.params);
# what differs is the resamplers (DALI's antialiased resize and rotation against torch's) and,
# at the crop's edge, the region decode. Measured on these images, in 0..255 levels: mean
# difference 0.11-0.17, 99th percentile 1-2, maximum 8-19 at a few edge pixels (image sizes 64
# and 224, rotation 0 and 15). Asserted with some margin, in normalized units:
TRAIN_MEAN_DIFF = 0.3 / 255 / min(IMAGENET_STD)
TRAIN_P99_DIFF = 3 / 255 / min(IMAGENET_STD)
TRAIN_MAX_DIFF = 32 / 255 / min(IMAGENET_STD)


@pytest.mark.parametrize("other", [b for b in BACKENDS if b != "torchvision"])
@pytest.mark.parametrize(
    ("image_size", "rotate", "flip_prob"), [(224, 0.0, 0.5), (64, 15.0, 0.5), (96, 30.0, 1.0)]
)
def test_same_seed_train_batches_have_the_same_pixels_on_every_backend(
    odd_natural_folder: Path, other: str, image_size: int, rotate: float, flip_prob: float
) -> None:
    def train_epoch(backend: str) -> tuple[torch.Tensor, torch.Tensor]:
        loader = create_loader(
            odd_natural_folder,
            backend=backend,
            batch_size=4,
            image_size=image_size,
            rotate_degrees=rotate,
            flip_prob=flip_prob,
            seed=7,
            num_threads=2,
        )
        loader.set_epoch(1)  # any epoch: the draws are the epoch's on every backend
        batches = [(images.float().cpu(), labels.cpu()) for images, labels in loader]
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])

    (reference, labels), (candidate, other_labels) = train_epoch("torchvision"), train_epoch(other)
    assert torch.equal(labels, other_labels)
    diff = (candidate - reference).abs()
    assert diff.mean() <= TRAIN_MEAN_DIFF, f"mean diff {diff.mean() * 255 * 0.225:.3f} levels"
    assert diff.quantile(0.99) <= TRAIN_P99_DIFF, f"p99 {diff.quantile(0.99) * 255 * 0.225:.2f}"
    assert diff.max() <= TRAIN_MAX_DIFF, f"max diff {diff.max() * 255 * 0.225:.1f} levels"


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
