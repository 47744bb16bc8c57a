"""state_dict / load_state_dict: resume mid-epoch without repeats or losses, on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dali_loader import ConfigError

from . import helpers
from .conftest import write_index_folder


def make(root: Path, backend: str, **kwargs):  # type: ignore[no-untyped-def]
    return helpers.make(root, backend, **({"train": False, "shuffle": True, "seed": 3} | kwargs))


epoch = helpers.epoch_indices


@pytest.mark.parametrize("k", [0, 2, 5])
def test_resume_delivers_exactly_the_rest_then_the_next_epoch(
    small_folder: Path, backend: str, k: int
) -> None:
    reference = make(small_folder, backend)
    first, second = epoch(reference), epoch(reference)
    original = make(small_folder, backend)
    iterator = iter(original)
    for _ in range(k):
        next(iterator)
    state = json.loads(json.dumps(original.state_dict()))  # plain data survives JSON
    assert state["epoch"] == 0 and state["batches_done"] == k
    restored = make(small_folder, backend)
    restored.load_state_dict(state)
    assert epoch(restored) == first[k:]
    assert epoch(restored) == second


def test_resume_with_the_usual_set_epoch_loop(small_folder: Path, backend: str) -> None:
    reference = make(small_folder, backend)
    reference.set_epoch(4)
    wanted = epoch(reference)
    original = make(small_folder, backend)
    original.set_epoch(4)
    iterator = iter(original)
    next(iterator), next(iterator), next(iterator)
    restored = make(small_folder, backend)
    restored.load_state_dict(original.state_dict())
    restored.set_epoch(4)  # the loop calls set_epoch(epoch) first: the resume point stays
    assert epoch(restored) == wanted[3:]
    restored.set_epoch(4)  # a later, explicit epoch starts it whole
    assert epoch(restored) == wanted


def test_state_after_a_whole_epoch_points_at_the_next(small_folder: Path) -> None:
    loader = make(small_folder, "torchvision")
    epoch(loader)
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batches_done"] == 0


def test_resumed_train_batches_have_the_same_pixels(small_folder: Path, backend: str) -> None:
    # Each sample's augmentation is drawn from (seed, epoch, index) alone (dali_loader.params),
    # on every backend, so a resumed epoch is the original one, pixel for pixel.
    # Epoch 1, not 0: the resumed epoch's draws must be that epoch's.
    kwargs = {"train": True, "rotate_degrees": 20, "image_size": 24}
    reference = make(small_folder, backend, **kwargs)
    reference.set_epoch(1)
    original = [x.cpu() for x, _ in reference]
    cut = make(small_folder, backend, **kwargs)
    cut.set_epoch(1)
    iterator = iter(cut)
    next(iterator), next(iterator)
    restored = make(small_folder, backend, **kwargs)
    restored.load_state_dict(cut.state_dict())
    assert restored.epoch == 1
    rest = [x.cpu() for x, _ in restored]
    assert len(rest) == len(original) - 2
    assert all(torch.equal(a, b) for a, b in zip(rest, original[2:], strict=True))


def test_state_is_rejected_for_another_dataset_or_order(small_folder: Path, tmp_path: Path) -> None:
    state = make(small_folder, "torchvision").state_dict()
    other = write_index_folder(tmp_path / "other", [3, 3])
    with pytest.raises(ConfigError, match="saved for another data set"):
        make(other, "torchvision").load_state_dict(state)
    with pytest.raises(ConfigError, match=r"another order configuration \(batch_size: 4 -> 8\)"):
        make(small_folder, "torchvision", batch_size=8).load_state_dict(state)
    with pytest.raises(ConfigError, match="seed: 3 -> 4"):
        make(small_folder, "torchvision", seed=4).load_state_dict(state)
    with pytest.raises(ConfigError, match="not a dali-loader state"):
        make(small_folder, "torchvision").load_state_dict({"epoch": 1})
