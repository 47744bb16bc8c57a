"""What a script ported from DataLoader(ImageFolder(root)) touches: DataLoader's keywords and
ImageFolder's attributes, on every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
        ConfigError, match=r"second argument is batch_size, got a Compose.*keywords"
    ):
        create_loader(small_folder, compose)  # type: ignore[arg-type]
