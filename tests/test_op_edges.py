"""The corners of the op list: windows wholly in the padding, fills that meet in one warp, a
pixel at exactly .5, canvases of several sizes before a crop after a turn, and the refusals."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from dali_loader import ConfigError, DatasetError, create_loader, params
from dali_loader.spec import LoaderSpec
from dali_loader.transforms import compile_transform

from .test_ops import CPU_BACKENDS, smooth_image, through_loader


def write(tmp_path: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[Path]:
    paths = []
    for k, (width, height) in enumerate(sizes):
        path = tmp_path / f"{k}_{width}x{height}.png"
        Image.fromarray(smooth_image(width, height, seed + k)).save(path)
        paths.append(path)
    return paths


def both(paths: list[Path], steps: list[Any], epoch: int = 0) -> dict[str, torch.Tensor]:
    """The first batch of each CPU backend for `epoch`, in 0..255 levels."""
    return {backend: through_loader(paths, steps, backend, epoch) for backend in CPU_BACKENDS}


def test_a_window_wholly_in_the_padding_is_all_fill(tmp_path: Path) -> None:
    """CenterCrop(100) pads a 20x20 image to 100x100; RandomCrop(30) then often falls in the
    padding alone: an image of fill, as torchvision gives, on every backend (not a crash)."""
    paths = write(tmp_path, [(20, 20)] * 8)
    steps = [T.CenterCrop(100), T.RandomCrop(30)]
    blanks = 0
    for epoch in range(3):
        out = both(paths, steps, epoch)
        assert torch.equal(out["torchvision"], out["dali-cpu"])
        blank = out["torchvision"].flatten(1).amax(1) == 0
        blanks += int(blank.sum())
        # the others hold a piece of the image, exactly where the window says
        assert bool((~blank).any())
    assert blanks >= 3


def test_a_crop_larger_than_the_turned_image_pads_black_or_is_refused(tmp_path: Path) -> None:
    """CenterCrop pads with black (torchvision's); after a turn that fills with another value,
    the two cannot be one warp: refused, naming both fills. A crop that cannot pad there adds
    no fill of its own."""
    paths = write(tmp_path, [(40, 30)] * 2)
    with pytest.raises(ConfigError, match=r"different values \[0.0, 100.0\].*CenterCrop"):
        through_loader(paths, [T.RandomAffine(0, fill=100), T.CenterCrop((50, 60))], "torchvision")
    out = both(paths, [T.RandomAffine(0), T.CenterCrop((50, 60))])
    assert torch.equal(out["torchvision"], out["dali-cpu"])
    reference = F.center_crop(F.pil_to_tensor(Image.open(paths[0]).convert("RGB")), [50, 60])
    assert torch.equal(out["torchvision"][0], reference.double())
    turned = both(paths, [T.RandomRotation(10, fill=128), T.RandomCrop(24)])
    assert turned["torchvision"].shape == (2, 3, 24, 24)


def test_a_per_channel_fill_after_a_turn_is_refused_and_before_it_taken(tmp_path: Path) -> None:
    paths = write(tmp_path, [(32, 32)] * 2)
    fill = (125, 123, 114)
    with pytest.raises(ConfigError, match=r"RandomCrop\(fill=\(125, 123, 114\)\) after a flip"):
        through_loader(
            paths, [T.RandomRotation(10), T.RandomCrop(32, padding=4, fill=fill)], "dali-cpu"
        )
    out = both(paths, [T.RandomHorizontalFlip(), T.RandomCrop(32, padding=4, fill=fill)])
    assert torch.equal(out["torchvision"], out["dali-cpu"])


def test_a_value_at_exactly_half_rounds_alike_on_every_backend(tmp_path: Path) -> None:
    """103 * 1.5 = 154.5: up to 155 on both backends (a cast's own rounding of .5 differs
    between devices; torch's round goes to even, 154)."""
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8, 3), 103, np.uint8)).save(path)
    out = both([path], [T.ColorJitter(brightness=(1.5, 1.5))])
    for levels in out.values():
        assert (levels == 155).all(), levels.unique()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_images_of_several_sizes_turned_then_cropped(tmp_path: Path, backend: str) -> None:
    """The size is fixed by a crop after the turn: images of several sizes are taken, each
    turned about its own center, exactly as torchvision turns and crops it (nearest)."""
    paths = write(tmp_path, [(40, 30), (30, 44), (37, 37)])
    steps = [T.RandomRotation((20, 20)), T.CenterCrop(24)]
    out = through_loader(paths, steps, backend)
    assert out.shape == (3, 3, 24, 24)
    for path, levels in zip(paths, out, strict=True):
        with Image.open(path) as image:
            pixels = F.pil_to_tensor(image.convert("RGB"))
        turned = F.rotate(pixels, 20.0, interpolation=InterpolationMode.NEAREST)
        reference = F.center_crop(turned, [24, 24]).double()
        differ = (levels - reference).abs() > 0
        assert differ.double().mean() < 0.01, float(differ.double().mean())
    with pytest.raises(ConfigError, match=r"depends on the image's"):
        through_loader(paths, [T.RandomRotation(20)], backend)


def test_as_is_keeps_channels_last_and_reads_train_as_the_shuffle_default(
    tmp_path: Path,
) -> None:
    paths = write(tmp_path, [(20, 20)] * 4)
    compose = T.Compose([T.RandomResizedCrop(16), T.AutoAugment(), T.ToTensor()])
    loader = create_loader(
        ([str(p) for p in paths], [0, 1, 0, 1]),
        backend="torchvision",
        transform=compose,
        as_is=True,
        train=False,
        channels_last=True,
        batch_size=4,
        num_threads=0,
    )
    images, labels = next(iter(loader))
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.tolist() == [0, 1, 0, 1]  # train=False: not shuffled


@pytest.mark.parametrize(
    ("normalize", "message"),
    [
        (T.Normalize((0.5, 0.5), (0.5, 0.5, 0.5)), "one value each per channel"),
        (T.Normalize((0.5,) * 3, (0.5, 0.0, 0.5)), "std must be positive"),
    ],
)
def test_a_normalize_that_cannot_be_is_explained(normalize: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_transform(T.Compose([T.CenterCrop(8), T.ToTensor(), normalize]))


def test_normalize_inside_random_apply_is_refused() -> None:
    compose = T.Compose([T.CenterCrop(8), T.ToTensor(), T.RandomApply([T.Normalize(0.5, 0.5)])])
    with pytest.raises(ConfigError, match="Normalize inside RandomApply"):
        compile_transform(compose)


def test_one_mean_broadcasts_to_every_channel() -> None:
    compiled = compile_transform(T.Compose([T.ToTensor(), T.Normalize(0.5, (0.1, 0.2, 0.3))]))
    normalize = compiled.ops[-1]
    assert normalize.mean == (0.5,) * 3 and normalize.std == (0.1, 0.2, 0.3)  # type: ignore[attr-defined]


def test_drawn_parameters_copy_and_pickle() -> None:
    spec = LoaderSpec(rotate_degrees=10)
    drawn = params.draw(spec, 0, np.arange(3), np.array([[50, 40]] * 3))
    for twin in (copy.copy(drawn), pickle.loads(pickle.dumps(drawn))):
        assert np.array_equal(twin.matrices, drawn.matrices)


def test_a_fill_after_to_tensor_is_on_the_0_to_1_scale(tmp_path: Path) -> None:
    paths = write(tmp_path, [(40, 30)])
    steps = [T.ToTensor(), T.RandomRotation((30, 30), fill=1.0)]
    loader = create_loader(
        ([str(p) for p in paths], [0]), batch_size=1, transform=T.Compose(steps), shuffle=False
    )
    images, _ = next(iter(loader))
    assert torch.equal(images[0, :, 0, 0], torch.ones(3))  # white, as torchvision's corner


def test_nearest_ties_fall_alike_on_every_backend(tmp_path: Path) -> None:
    """A quarter turn of a 50x51 image puts every source point exactly between two pixels:
    both backends take DALI's (the floor of the coordinate), so they agree exactly."""
    paths = write(tmp_path, [(50, 51)] * 2)
    for steps in (
        [T.RandomRotation((90, 90))],
        [T.RandomAffine(0, shear=(45, 45, 0, 0))],
        [T.RandomAffine(0, scale=(0.5, 0.5))],
    ):
        out = both(paths, steps)
        assert torch.equal(out["torchvision"], out["dali-cpu"]), steps


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([T.Grayscale(2)], "num_output_channels=2"),
        ([T.GaussianBlur(101, 5.0)], r"GaussianBlur\(kernel_size=\(101, 101\)\) on 64x48"),
        ([T.Resize(8, max_size=9)], "too thin to keep a pixel"),
        ([T.RandomResizedCrop(16, ratio=(0.0, 1.0))], "ratio"),
        ([T.RandomResizedCrop(16, scale=(1.0, 0.5))], "scale"),
        ([T.RandomRotation((10, -10))], r"degrees=\[10.0, -10.0\]: a \(min, max\) range"),
        ([T.ToTensor(), T.Resize(20, antialias=None)], "antialias=None"),
    ],
)
def test_what_torchvision_fails_on_later_is_refused_at_creation(
    tmp_path: Path, steps: list[Any], message: str
) -> None:
    paths = write(tmp_path, [(64, 48)])
    if "max_size" in repr(steps):  # a sliver, 300x2
        Image.fromarray(np.full((2, 300, 3), 90, np.uint8)).save(paths[0])
    with pytest.raises(ConfigError, match=message):
        through_loader(paths, steps, "torchvision")


def test_what_torchvision_takes_is_taken(tmp_path: Path) -> None:
    paths = write(tmp_path, [(64, 48)] * 2)
    for steps in (
        [T.Resize(20, antialias=False)],  # on a PIL image, torchvision antialiases anyway
        [T.RandomRotation(15, fill=128), T.CenterCrop(30)],  # the crop never pads here
    ):
        out = both(paths, steps)
        assert out["torchvision"].shape[0] == 2, steps
    mean = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)  # the shape Normalize broadcasts
    compose = T.Compose([T.ToTensor(), T.Normalize(mean, mean)])
    loader = create_loader(([str(p) for p in paths], [0, 0]), transform=compose, batch_size=2)
    images, _ = next(iter(loader))
    expected = (T.ToTensor()(Image.open(paths[0]).convert("RGB")) - mean) / mean
    assert torch.allclose(images[0], expected, atol=1e-5)


def test_normalize_before_the_float_conversion_is_refused() -> None:
    with pytest.raises(ConfigError, match="Normalize before"):
        compile_transform(T.Compose([T.CenterCrop(8), T.Normalize(0.5, 0.5), T.ToTensor()]))


def test_a_workers_error_comes_back_unwrapped(tmp_path: Path) -> None:
    paths = write(tmp_path, [(20, 20), (20, 21)] * 2)
    loader = create_loader(
        ([str(p) for p in paths], [0] * 4),
        backend="torchvision",
        transform=T.Compose([T.ToTensor()]),
        as_is=True,
        batch_size=2,
        num_workers=2,
        shuffle=False,
    )
    with pytest.raises(DatasetError) as caught:
        for _ in loader:
            pass
    message = str(caught.value)
    assert message.startswith(str(paths[1])) and "a batch needs one size" in message
    assert "Original Traceback" not in message


def test_fractional_fills_are_one_whole_level_on_every_backend(tmp_path: Path) -> None:
    """0.5 after ToTensor is 127.5: rounded once, up, for the turn and the crop alike (black
    images, nearest turns: every pixel is the image's 0 or the fill)."""
    paths = [tmp_path / f"black{k}.png" for k in range(3)]
    for path in paths:
        Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(path)
    steps = [
        T.ToTensor(),
        T.RandomRotation(30, fill=0.5),
        T.RandomCrop(20, padding=2, fill=0.5),
        T.ToPILImage(),
    ]
    out = both(paths, steps)
    assert torch.equal(out["torchvision"], out["dali-cpu"])
    assert set(out["torchvision"].unique().tolist()) == {0.0, 128.0}


def test_to_pil_image_reads_what_follows_as_on_a_pil_image(tmp_path: Path) -> None:
    paths = write(tmp_path, [(40, 30)])
    steps = [T.ToTensor(), T.ToPILImage(), T.RandomRotation((30, 30), fill=128)]
    out = through_loader(paths, steps, "torchvision")
    assert torch.equal(out[0, :, 0, 0], torch.full((3,), 128.0, dtype=out.dtype))
