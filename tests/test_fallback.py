"""The torchvision backend's own pieces, against torchvision's reference implementations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from dali_loader.spec import LoaderSpec
from fallback.augment import rotate
from fallback.geometry import train_params


@pytest.mark.parametrize(("height", "width", "degrees"), [(224, 224, 10.0), (96, 64, -33.0)])
def test_rotate_matches_torchvision(height: int, width: int, degrees: float) -> None:
    image = F.gaussian_blur(torch.randint(0, 256, (3, height, width), dtype=torch.uint8), [9, 9])
    reference = F.rotate(image, degrees, interpolation=InterpolationMode.BILINEAR, fill=[0.0])
    ours = rotate(image.float(), degrees).round().clamp(0, 255)
    diff = (ours - reference.float()).abs()
    inside = rotate(torch.ones(1, height, width), degrees)[0] > 0.999
    assert diff[:, inside].max() <= 1  # the same pixels, up to rounding
    assert diff.mean() < 0.6  # the corners' edges blend into black a little differently


def test_train_box_follows_random_resized_crop() -> None:
    spec = LoaderSpec(scale=(0.25, 0.5), ratio=(0.5, 2.0))
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, right, bottom = train_params(400, 300, spec, rng).box
        assert 0 <= left < right <= 400 and 0 <= top < bottom <= 300
        area = (right - left) * (bottom - top) / (400 * 300)
        assert 0.24 <= area <= 0.51
        assert 0.49 <= (right - left) / (bottom - top) <= 2.05


def test_fallback_imports_on_its_own() -> None:
    import subprocess
    import sys

    code = (
        "import fallback, dali_loader; "
        "assert dali_loader.TorchvisionLoader is fallback.TorchvisionLoader"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("rotate_degrees", [0.0, 20.0])
def test_uint8_batches_for_the_gpu_equal_the_normalized_ones(
    small_folder: Path, rotate_degrees: float
) -> None:
    # On a CUDA device the workers hand over uint8 and the GPU normalizes; the pixels must be
    # the ones the CPU path normalizes in the workers.
    from dali_loader.index import build_index
    from dali_loader.storage import reader_for
    from fallback.dataset import BatchDataset

    index = build_index(small_folder)
    spec = LoaderSpec(image_size=(32, 32), rotate_degrees=rotate_degrees)
    labels = np.asarray(index.labels, dtype=np.int32)
    request = (0, np.arange(8))
    normalized, _ = BatchDataset(reader_for(index), labels, spec, normalize=True)[request]
    raw, _ = BatchDataset(reader_for(index), labels, spec, normalize=False)[request]
    assert raw.dtype == torch.uint8
    mean = torch.tensor(spec.mean_255).view(1, 3, 1, 1)
    std = torch.tensor(spec.std_255).view(1, 3, 1, 1)
    assert torch.allclose((raw.float() - mean) / std, normalized, atol=0.6 / 255 / 0.224)
