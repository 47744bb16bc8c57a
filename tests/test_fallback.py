"""The torchvision backend's own pieces, against torchvision's reference implementations."""

from __future__ import annotations

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
