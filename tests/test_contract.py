"""The contract every backend keeps: one suite, run on torchvision, dali-cpu and (on CUDA) dali."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from dali_loader.params import draw

from .conftest import IMAGENET_MEAN, IMAGENET_STD, decode_indices
from .helpers import epoch_indices, flat, make, truncate_under


def test_batches_have_the_documented_shape_dtype_and_device(
    small_folder: Path, backend: str
) -> None:
    loader = make(small_folder, backend, image_size=(24, 16), rotate_degrees=10)
    sizes = []
    for images, labels in loader:
        assert images.shape[1:] == (3, 24, 16)
        assert images.dtype == torch.float32
        assert images.is_contiguous()
        assert labels.dtype == torch.int64 and labels.shape == (images.shape[0],)
        assert images.device.type == ("cuda" if backend == "dali" else "cpu")
        assert labels.device == images.device
        sizes.append(images.shape[0])
    assert sizes == [4, 4, 4, 4, 4, 1]
    assert loader.backend == backend


def test_classes_and_labels_equal_imagefolder(small_folder: Path, backend: str) -> None:
    reference = ImageFolder(str(small_folder))
    loader = make(small_folder, backend, train=False)
    assert loader.classes == reference.classes
    assert loader.dataset.classes == reference.classes  # a list, as for DataLoader(ImageFolder)
    assert loader.class_to_idx == reference.class_to_idx
    seen, labels = [], []
    for images, batch_labels in loader:
        seen += decode_indices(images, IMAGENET_MEAN, IMAGENET_STD)
        labels += batch_labels.tolist()
    assert seen == list(range(len(reference)))  # eval without shuffle: ImageFolder's order
    assert labels == reference.targets


def test_shuffled_epochs_deliver_every_sample_exactly_once(
    small_folder: Path, backend: str
) -> None:
    targets = ImageFolder(str(small_folder)).targets
    loader = make(small_folder, backend, train=False, shuffle=True)
    orders = []
    for _ in range(3):
        seen, labels = [], []
        for images, batch_labels in loader:
            seen += decode_indices(images, IMAGENET_MEAN, IMAGENET_STD)
            labels += batch_labels.tolist()
        assert sorted(seen) == list(range(21))
        assert labels == [targets[i] for i in seen]  # each label travels with its image
        orders.append(seen)
    assert len({tuple(order) for order in orders}) == 3  # a new order each epoch, no set_epoch


def test_train_mode_delivers_every_sample_exactly_once(small_folder: Path, backend: str) -> None:
    loader = make(small_folder, backend, scale=(0.9, 1.0), flip_prob=0.5)
    assert sorted(flat(epoch_indices(loader))) == list(range(21))


@pytest.mark.parametrize(("drop_last", "sizes"), [(False, [8, 8, 5]), (True, [8, 8])])
def test_len_matches_batches_and_drop_last(
    small_folder: Path, backend: str, drop_last: bool, sizes: list[int]
) -> None:
    loader = make(small_folder, backend, batch_size=8, drop_last=drop_last, train=False)
    for _ in range(2):  # stable across epochs
        assert len(loader) == len(sizes)
        assert [len(b) for b in epoch_indices(loader)] == sizes


def test_same_seed_same_order_and_set_epoch_changes_it(small_folder: Path, backend: str) -> None:
    first = make(small_folder, backend, train=False, shuffle=True, seed=7)
    second = make(small_folder, backend, train=False, shuffle=True, seed=7)
    other_seed = make(small_folder, backend, train=False, shuffle=True, seed=8)
    epoch0 = epoch_indices(first)
    assert epoch_indices(second) == epoch0
    assert epoch_indices(other_seed) != epoch0
    first.set_epoch(3)
    second.set_epoch(3)
    epoch3 = epoch_indices(first)
    assert epoch_indices(second) == epoch3
    assert epoch3 != epoch0
    first.set_epoch(0)
    assert epoch_indices(first) == epoch0  # (seed, epoch) fixes the order


def test_same_seed_gives_the_same_augmented_pixels(small_folder: Path, backend: str) -> None:
    def first_batch(seed: int) -> torch.Tensor:  # one order: only the augmentation can differ
        loader = make(
            small_folder, backend, seed=seed, rotate_degrees=20, batch_size=8, shuffle=False
        )
        return next(iter(loader))[0].cpu()

    assert torch.equal(first_batch(3), first_batch(3))
    assert not torch.equal(first_batch(3), first_batch(4))


def test_first_batch_mixes_classes_on_a_class_sorted_folder(
    sorted_folder: Path, backend: str
) -> None:
    loader = make(sorted_folder, backend, batch_size=64, image_size=8)
    _, labels = next(iter(loader))
    # A uniform shuffle puts ~6.4 of 64 samples in each of the 10 classes; DALI's 1024-sample
    # shuffle buffer would leave the first batch in the first ~9 classes, class 9 almost absent.
    counts = Counter(labels.tolist())
    assert len(counts) == 10
    assert max(counts.values()) <= 16


def test_breaking_out_of_an_epoch_leaves_the_next_one_whole(
    small_folder: Path, backend: str
) -> None:
    loader = make(small_folder, backend, train=False, shuffle=True)
    for step, _ in enumerate(loader):
        if step == 1:
            break
    assert sorted(flat(epoch_indices(loader))) == list(range(21))
    assert len(epoch_indices(loader)) == len(loader)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_kept_across_steps_are_never_overwritten(
    small_folder: Path, backend: str, channels_last: bool
) -> None:
    # Loaders may reuse a batch's memory once the user drops it; what a user keeps (the batch, or
    # only a view of it) must stay as it was while the batches around it are dropped and reused.
    loader = make(small_folder, backend, train=False, shuffle=True, channels_last=channels_last)
    kept, views, expected = [], [], []
    for _ in range(3):
        for step, (images, _) in enumerate(loader):
            expected.append(decode_indices(images, IMAGENET_MEAN, IMAGENET_STD))
            if step % 3 == 0:
                kept.append((len(expected) - 1, images))
            elif step % 3 == 1:
                views.append((len(expected) - 1, images[1:]))
    assert all(decode_indices(x, IMAGENET_MEAN, IMAGENET_STD) == expected[i] for i, x in kept)
    assert all(decode_indices(v, IMAGENET_MEAN, IMAGENET_STD) == expected[i][1:] for i, v in views)


def test_a_file_broken_after_the_check_is_named_in_the_error(tmp_path: Path, backend: str) -> None:
    from .conftest import write_index_folder

    root = write_index_folder(tmp_path, [6, 6])
    victim = sorted(root.rglob("*.jpg"))[7]
    error = truncate_under(make(root, backend, train=False), victim, keep=60)
    message = str(error)
    assert "changed after the loader checked them" in message and str(victim) in message
    assert error.__cause__ is not None  # the decoder's own error, chained
    assert "Original Traceback" not in message  # not torch's wrapping of a worker's error


def test_the_epoch_after_a_break_over_broken_files_names_them(tmp_path: Path, backend: str) -> None:
    # Files broken after the check, one batch read, then `break`: DALI had prefetched batches
    # of them, and draining those raised "Current pipeline object is no longer valid" at every
    # later epoch, naming nothing.
    from .conftest import write_index_folder

    root = write_index_folder(tmp_path, [12])
    loader = make(root, backend, shuffle=False, batch_size=2)
    for path in sorted(root.rglob("*.jpg"))[2:]:
        path.write_bytes(b"\xff\xd8" + bytes(path.stat().st_size))
    for _ in loader:
        break
    _each_names_what_changed([loader, loader])


def test_a_dropped_loader_goes_at_once(small_folder: Path, backend: str) -> None:
    # Its pipeline, DALI's threads, read threads and files, or its workers, go when the user
    # drops it, not when the garbage collector next runs.
    import gc
    import weakref

    gc.disable()
    try:
        loader = make(small_folder, backend, batch_size=4)
        next(iter(loader))
        gone = weakref.ref(loader)
        del loader
        assert gone() is None
    finally:
        gc.enable()


def test_the_epoch_after_a_broken_shard_names_it_again(tmp_path: Path, backend: str) -> None:
    # Shards overwritten with zeros mid-epoch: DALI stops a pipeline at such an error and
    # refuses it every run after, so the next epoch raised DALI's "Current pipeline object is
    # no longer valid", naming nothing. Now it meets the shards again and names them.
    from dali_loader.packing import pack

    from .conftest import write_index_folder

    source = write_index_folder(tmp_path / "data", [12, 12])
    packed = pack(source, tmp_path / "packed", shard_size=8 << 10, progress=False).parent
    loader = make(packed, backend, shuffle=False, batch_size=4)
    batches = iter(loader)
    next(batches)
    for shard in sorted(packed.glob("*.tar"))[2:]:
        shard.write_bytes(bytes(shard.stat().st_size))
    _each_names_what_changed([batches, loader, loader])


def _each_names_what_changed(epochs: list[Any]) -> None:
    """Each of `epochs`, read to its end, raises the DatasetError naming files changed since
    the check (not pytest.raises, as in truncate_under)."""
    from dali_loader import DatasetError

    for epoch in epochs:
        try:
            for _ in epoch:
                pass
        except DatasetError as error:
            assert "changed after the loader checked them" in str(error)
        else:
            pytest.fail("an epoch read files broken since the check without a word")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_and_channels_last(small_folder: Path, backend: str, dtype: torch.dtype) -> None:
    reference = next(iter(make(small_folder, backend, train=False)))[0]
    images, _ = next(
        iter(make(small_folder, backend, train=False, dtype=dtype, channels_last=True))
    )
    assert images.dtype == dtype
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(images.float(), reference.float(), atol=0.05)


def test_rotation_is_applied_when_asked(tmp_path: Path, backend: str) -> None:
    from .conftest import write_index_folder

    root = write_index_folder(tmp_path, [16], size=(40, 40))
    kwargs = {"batch_size": 16, "image_size": 32, "scale": (1.0, 1.0), "ratio": (1.0, 1.0)}
    straight, _ = next(iter(make(root, backend, flip_prob=0.0, **kwargs)))
    turned, _ = next(iter(make(root, backend, flip_prob=0.0, rotate_degrees=45, **kwargs)))
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)

    def black_corner(images: torch.Tensor) -> torch.Tensor:
        corner = images[:, :, 0, 0].float().cpu()
        return (corner - black).abs().max(dim=1).values < 0.1

    assert not black_corner(straight).any()
    # |angle| > ~4 degrees already blackens the corner pixel: nearly every sample when d=45.
    assert black_corner(turned).float().mean() > 0.75


def test_stats_say_how_long_the_loop_waited_for_data(
    small_folder: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    loader = make(small_folder, backend)
    assert loader.stats() is None
    with caplog.at_level(logging.INFO, logger="dali_loader"):
        for _ in loader:
            time.sleep(0.02)  # the training step: time the loop holds the batch
    stats = loader.stats()
    assert (stats.epoch, stats.batches, stats.finished) == (0, len(loader), True)
    assert stats.held_s >= 0.02 * len(loader)
    assert 0 < stats.first_batch_s <= stats.waited_s < stats.elapsed_s
    line = f"epoch 0: waited {stats.waited_s:.1f} s of {stats.elapsed_s:.1f} s for data ("
    assert any(line in record.getMessage() for record in caplog.records)
    for _ in loader:
        break
    stats = loader.stats()
    assert (stats.epoch, stats.batches, stats.finished) == (1, 1, False)
    assert "left early" in str(stats)


@pytest.fixture(scope="module")
def halves_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images 40x20, left half black, right half white: a flip shows at once."""
    root = tmp_path_factory.mktemp("halves")
    (root / "c").mkdir()
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 20:] = 255
    for k in range(12):
        Image.fromarray(pixels).save(root / "c" / f"{k:02d}.png")
    return root


@pytest.mark.parametrize("flip_prob", [0.0, 1.0, 0.5])
def test_flips_happen_with_flip_prob_as_drawn(
    halves_folder: Path, backend: str, flip_prob: float
) -> None:
    """The whole image as the crop (scale 1, its own ratio): the left half of the output is
    white exactly for the samples whose drawn flip says so, on every backend."""
    loader = make(
        halves_folder,
        backend,
        image_size=(10, 20),
        scale=(1.0, 1.0),
        ratio=(2.0, 2.0),
        flip_prob=flip_prob,
        shuffle=False,
        batch_size=12,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    images, _ = next(iter(loader))
    left_white = (images[:, :, :, :10].float().mean(dim=(1, 2, 3)) > 0.5).cpu().numpy()
    arrays = draw(loader.spec, 0, np.arange(12), np.array([[40, 20]] * 12)).arrays
    drawn = arrays.get("flips", np.zeros(12)).astype(bool)  # flip_prob=0: no flip at all
    assert (left_white == drawn).all()
    if flip_prob in (0.0, 1.0):
        assert left_white.all() == bool(flip_prob) and left_white.any() == bool(flip_prob)
    else:
        assert 0 < left_white.sum() < 12
