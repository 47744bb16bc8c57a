"""What a script ported from DataLoader(ImageFolder(root)) touches: DataLoader's keywords and
ImageFolder's attributes, on every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from torchvision.datasets import ImageFolder

from dali_loader import ConfigError, DatasetError, create_loader
from dali_loader.packing import pack

from .conftest import write_index_folder


def test_loader_dataset_reads_like_imagefolder(small_folder: Path, backend: str) -> None:
    reference = ImageFolder(str(small_folder))
    dataset = create_loader(small_folder, backend=backend, batch_size=4).dataset
    assert dataset.samples == reference.samples == dataset.imgs
    assert dataset.targets == reference.targets
    assert list(dataset.classes) == reference.classes
    assert dataset.class_to_idx == reference.class_to_idx
    assert len(dataset) == len(reference)
    for i in (0, 7, -1):
        image, label = dataset[i]
        theirs, their_label = reference[i]
        assert label == their_label and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), np.asarray(theirs.convert("RGB")))
    with pytest.raises(IndexError):
        dataset[len(reference)]


def test_a_packed_dataset_is_indexed_like_its_folder(small_folder: Path, tmp_path: Path) -> None:
    out = pack(small_folder, tmp_path / "packed", shard_size=8 << 10, progress=False).parent
    packed = create_loader(out, backend="torchvision", batch_size=4).dataset
    folder = create_loader(small_folder, backend="torchvision", batch_size=4).dataset
    pixels = {tuple(np.asarray(folder[i][0]).ravel()[:30]): folder[i][1] for i in range(21)}
    for i in range(len(packed)):
        image, label = packed[i]
        assert pixels[tuple(np.asarray(image).ravel()[:30])] == label


def test_dataloader_keywords_are_taken(small_folder: Path, backend: str) -> None:
    loader = create_loader(
        small_folder,
        backend=backend,
        batch_size=4,
        image_size=16,
        num_workers=2,
        prefetch_factor=3,
        pin_memory=True,
        persistent_workers=True,
    )
    assert sum(len(labels) for _, labels in loader) == 21
    with pytest.raises(ConfigError, match="one setting"):
        create_loader(small_folder, backend=backend, num_workers=2, num_threads=1)
    with pytest.raises(ConfigError, match="prefetch_factor must be a positive integer"):
        create_loader(small_folder, backend=backend, prefetch_factor=0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sampler": object()}, "shards itself"),
        ({"batch_sampler": object()}, "draws its own order"),
        ({"collate_fn": lambda batch: batch}, "collate_fn is not taken"),
    ],
)
def test_dataloader_only_keywords_say_what_to_use_instead(
    small_folder: Path,
    arguments: dict,
    message: str,  # type: ignore[type-arg]
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_loader(small_folder, backend="torchvision", **arguments)


def test_a_transform_in_batch_sizes_place_is_explained(small_folder: Path) -> None:
    compose = T.Compose([T.RandomResizedCrop(224), T.ToTensor()])
    with pytest.raises(
        ConfigError, match=r"second argument is batch_size, got a Compose.*transform=T.*keywords"
    ):
        create_loader(small_folder, compose)  # type: ignore[arg-type]


def _classic(v2: bool, rotate: float = 0.0) -> object:
    if v2:
        from torchvision.transforms import v2 as V

        steps = [V.RandomResizedCrop(64, scale=(0.3, 1.0)), V.RandomHorizontalFlip(0.3)]
        steps += (
            [V.RandomRotation(rotate, interpolation=V.InterpolationMode.BILINEAR)] if rotate else []
        )
        steps += [V.ToImage(), V.ToDtype(torch.float32, scale=True)]
        return V.Compose([*steps, V.Normalize([0.5] * 3, [0.25] * 3)])
    steps = [T.RandomResizedCrop(64, scale=(0.3, 1.0)), T.RandomHorizontalFlip(0.3)]
    steps += (
        [T.RandomRotation(rotate, interpolation=T.InterpolationMode.BILINEAR)] if rotate else []
    )
    return T.Compose([*steps, T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3)])


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("rotate", [0.0, 20.0])
def test_a_classic_compose_is_the_keyword_recipe(
    small_folder: Path, backend: str, v2: bool, rotate: float
) -> None:
    given = create_loader(
        small_folder, backend=backend, batch_size=8, seed=5, transform=_classic(v2, rotate)
    )
    keywords = create_loader(
        small_folder,
        backend=backend,
        batch_size=8,
        seed=5,
        image_size=64,
        scale=(0.3, 1.0),
        flip_prob=0.3,
        rotate_degrees=rotate,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    assert given.spec.ops == keywords.spec.ops
    assert (given.spec.train, given.spec.shuffle) == (True, True)
    for (a, _), (b, _) in zip(given, keywords, strict=True):
        assert torch.equal(a.cpu(), b.cpu())


def test_the_eval_compose_is_the_eval_recipe(small_folder: Path) -> None:
    compose = T.Compose(
        [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]
    )
    loader = create_loader(small_folder, backend="torchvision", transform=compose)
    assert (loader.spec.train, loader.spec.shuffle, loader.spec.image_size) == (
        False,
        False,
        (224, 224),
    )
    recipe = create_loader(
        small_folder, backend="torchvision", train=False, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    assert loader.spec.ops == recipe.spec.ops


@pytest.mark.parametrize(
    ("compose", "message"),
    [
        (T.Compose([T.RandomPerspective(), T.ToTensor()]), "RandomPerspective"),
        (T.Compose([T.RandomResizedCrop(32), T.AutoAugment(), T.ToTensor()]), "AutoAugment"),
        (T.Compose([T.RandomResizedCrop(32), T.Lambda(lambda x: x), T.ToTensor()]), "Lambda"),
        (
            T.Compose([T.RandomRotation(10), T.RandomResizedCrop(32), T.ToTensor()]),
            "RandomResizedCrop after a turn",
        ),
        (
            T.Compose([T.Resize(36), T.ColorJitter(0.4), T.CenterCrop(32), T.ToTensor()]),
            "CenterCrop after a color op",
        ),
        (T.Compose([T.RandomResizedCrop(32)]), "never converts the images to float"),
        (T.Compose([T.RandomResizedCrop(32), T.ToTensor(), T.RandomErasing()]), "RandomErasing"),
        (
            T.Compose([T.CenterCrop(32), T.ToTensor(), T.Normalize(0.5, 0.5), T.ColorJitter(0.2)]),
            "ColorJitter after Normalize",
        ),
        (
            T.Compose([T.CenterCrop(32), T.Grayscale(1), T.ColorJitter(0.2), T.ToTensor()]),
            "one channel left",
        ),
        (
            T.Compose([T.RandomApply([T.RandomApply([T.RandomVerticalFlip()])]), T.ToTensor()]),
            "RandomApply inside another",
        ),
        (
            T.Compose([T.RandomApply([T.CenterCrop(16)]), T.ToTensor()]),
            "CenterCrop inside RandomApply",
        ),
        (
            T.Compose([T.CenterCrop(32), T.ToTensor(), T.Normalize((0.5,) * 2, (0.5,) * 2)]),
            "2 values for 3 channel",
        ),
        (
            T.Compose(
                [T.RandomResizedCrop(32, interpolation=T.InterpolationMode.NEAREST), T.ToTensor()]
            ),
            "bilinear",
        ),
        (
            T.Compose([T.RandomCrop(32, padding=2, padding_mode="reflect"), T.ToTensor()]),
            "padding_mode='reflect'",
        ),
    ],
)
def test_a_compose_the_loader_cannot_run_is_refused_naming_the_step(
    small_folder: Path, compose: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_loader(small_folder, backend="torchvision", transform=compose)


def test_an_output_size_that_varies_with_the_image_is_refused_naming_two(tmp_path: Path) -> None:
    root = write_index_folder(tmp_path / "a", [2], size=(40, 30))
    write_index_folder(tmp_path / "b", [1], size=(30, 40))
    paths = [str(p) for p in sorted((tmp_path / "a").rglob("*.jpg"))]
    paths += [str(p) for p in (tmp_path / "b").rglob("*.jpg")]
    compose = T.Compose([T.Resize(20), T.ToTensor()])
    two = r"depends on the image's: .*jpg comes out (26x20|20x26), .*jpg (20x26|26x20)"
    with pytest.raises(ConfigError, match=two):
        create_loader((paths, [0, 0, 1]), backend="torchvision", transform=compose)
    # every image the same size: the check says so, and the size is taken
    loader = create_loader(root, backend="dali-cpu", transform=compose, batch_size=2)
    images, _ = next(iter(loader))
    assert images.shape == (2, 3, 20, 26)


def test_an_image_smaller_than_a_random_crop_is_named(tmp_path: Path) -> None:
    root = write_index_folder(tmp_path / "data", [2], size=(20, 20))
    compose = T.Compose([T.RandomCrop(24), T.ToTensor()])
    with pytest.raises(DatasetError, match=r"0\.jpg.*smaller than RandomCrop.*pad_if_needed"):
        create_loader(root, backend="torchvision", transform=compose)
    padded = T.Compose([T.RandomCrop(24, pad_if_needed=True), T.ToTensor()])
    images, _ = next(iter(create_loader(root, backend="torchvision", transform=padded)))
    assert images.shape[-2:] == (24, 24)


def test_transform_and_recipe_keywords_together_are_refused(small_folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"recipe keywords \(image_size, flip_prob\)"):
        create_loader(
            small_folder,
            backend="torchvision",
            transform=_classic(False),
            image_size=32,
            flip_prob=0.1,
        )


def test_torchvisions_equivalent_spellings_are_read_alike(small_folder: Path) -> None:
    from PIL import Image
    from torchvision import tv_tensors
    from torchvision.transforms import v2 as V

    from dali_loader.transforms import compile_transform

    base = compile_transform(
        T.Compose(
            [
                T.RandomResizedCrop(32),
                T.RandomRotation(10),
                T.ToTensor(),
                T.Normalize((0.5,) * 3, (0.5,) * 3),
            ]
        )
    )
    for rotation, normalize in [
        (V.RandomRotation(10, fill={tv_tensors.Image: 0, "others": 0}), V.Normalize([0.5], [0.5])),
        (V.RandomRotation(10, fill={tv_tensors.Mask: 255, "others": 0}), T.Normalize(0.5, 0.5)),
        (
            V.RandomRotation(10, fill={Image.Image: 0}),
            T.Normalize(torch.tensor(0.5), torch.tensor(0.5)),
        ),
    ]:
        compose = V.Compose(
            [
                V.RandomResizedCrop(32, interpolation=2),
                rotation,
                V.ToImage(),
                V.ToDtype(torch.float32, scale=True),
                normalize,
            ]
        )
        compiled = compile_transform(compose)
        assert compiled.dtype == base.dtype
        # one value for every channel is torch's broadcasting: the same normalization
        assert compiled.ops[:-1] == base.ops[:-1]
        mean, std = compiled.ops[-1].mean, compiled.ops[-1].std  # type: ignore[attr-defined]
        assert mean in ((0.5,), (0.5,) * 3) and std in ((0.5,), (0.5,) * 3)
    filled = compile_transform(
        V.Compose(
            [
                V.RandomResizedCrop(32),
                V.RandomRotation(10, fill={tv_tensors.Image: 7}),
                V.ToImage(),
                V.ToDtype(torch.float16, scale=True),
            ]
        )
    )
    assert filled.ops[1].fill == 7.0 and filled.dtype == "float16"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"recipe keywords \(mean\)"):
        create_loader(
            small_folder,
            backend="torchvision",
            transform=_classic(False),
            mean=np.array([0.1, 0.2, 0.3]),
        )


def test_as_is_gives_what_dataloader_gives(small_folder: Path) -> None:
    """A Compose the loader cannot compile, called per sample: the batches of a DataLoader over
    ImageFolder with the same Compose, each call seeded with `sample_seed`."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.datasets import ImageFolder

    from fallback.as_is import sample_seed

    compose = T.Compose(
        [T.RandomResizedCrop(24), T.AutoAugment(), T.ToTensor(), T.RandomErasing(p=0.5)]
    )
    with pytest.raises(ConfigError, match="AutoAugment"):
        create_loader(small_folder, backend="torchvision", transform=compose)
    with pytest.raises(ConfigError, match="backend='torchvision'"):
        create_loader(small_folder, backend="dali-cpu", transform=compose, as_is=True)
    loader = create_loader(
        small_folder,
        backend="torchvision",
        transform=compose,
        as_is=True,
        batch_size=4,
        shuffle=False,
        seed=3,
        num_workers=2,
    )
    folder = ImageFolder(str(small_folder))

    class Seeded(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(folder)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            image, label = folder[i]
            torch.manual_seed(sample_seed(3, 0, i))
            return compose(image), label

    reference = DataLoader(Seeded(), batch_size=4, shuffle=False)
    pairs = list(zip(loader, reference, strict=True))
    assert len(pairs) == len(loader) > 1
    for (images, labels), (expected, expected_labels) in pairs:
        assert torch.equal(images, expected)
        assert torch.equal(labels, expected_labels)
