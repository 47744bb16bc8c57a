"""What a script ported from DataLoader(ImageFolder(root)) touches: DataLoader's keywords and
ImageFolder's attributes, on every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from torchvision.datasets import ImageFolder

from dali_loader import ConfigError, create_loader
from dali_loader.packing import pack


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
        steps += [V.RandomRotation(rotate)] if rotate else []
        steps += [V.ToImage(), V.ToDtype(torch.float32, scale=True)]
        return V.Compose([*steps, V.Normalize([0.5] * 3, [0.25] * 3)])
    steps = [T.RandomResizedCrop(64, scale=(0.3, 1.0)), T.RandomHorizontalFlip(0.3)]
    steps += [T.RandomRotation(rotate)] if rotate else []
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
    assert given.spec == keywords.spec
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
    assert loader.spec.mean == (0.5,) * 3 and loader.spec.flip_prob == 0.0


@pytest.mark.parametrize(
    ("compose", "message"),
    [
        (T.Compose([T.RandomCrop(32), T.ToTensor()]), "starts with RandomCrop"),
        (T.Compose([T.RandomResizedCrop(32), T.ColorJitter(0.4), T.ToTensor()]), "ColorJitter"),
        (T.Compose([T.RandomResizedCrop(32), T.Lambda(lambda x: x), T.ToTensor()]), "Lambda"),
        (T.Compose([T.Resize(300), T.CenterCrop(224), T.ToTensor()]), r"Resize\(300\)"),
        (T.Compose([T.RandomResizedCrop(32)]), "where the pixels become floats"),
        (T.Compose([T.RandomResizedCrop(32), T.ToTensor(), T.RandomErasing()]), "RandomErasing"),
        (
            T.Compose(
                [T.RandomResizedCrop(32, interpolation=T.InterpolationMode.NEAREST), T.ToTensor()]
            ),
            "bilinear",
        ),
    ],
)
def test_a_compose_the_loader_cannot_run_is_refused_naming_the_step(
    small_folder: Path, compose: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_loader(small_folder, backend="torchvision", transform=compose)


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

    from dali_loader.transforms import recipe_from

    base = recipe_from(
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
        assert recipe_from(compose) == base
    with pytest.raises(ConfigError, match="RandomRotation"):
        recipe_from(
            V.Compose(
                [
                    V.RandomResizedCrop(32),
                    V.RandomRotation(10, fill={tv_tensors.Image: 7}),
                    V.ToImage(),
                    V.ToDtype(torch.float32, scale=True),
                ]
            )
        )
    with pytest.raises(ConfigError, match=r"recipe keywords \(mean\)"):
        create_loader(
            small_folder,
            backend="torchvision",
            transform=_classic(False),
            mean=np.array([0.1, 0.2, 0.3]),
        )
