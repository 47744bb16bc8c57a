"""What many tests do: make a small loader, read an epoch's sample indices, break a file under
a live loader and catch the error that names it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from dali_loader import DatasetError, create_loader

from .conftest import IMAGENET_MEAN, IMAGENET_STD, decode_indices


def make(source: Any, backend: str, **kwargs: Any) -> Any:
    """A loader of 16 px images in batches of 4 on 2 threads, unless told otherwise."""
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("num_threads", 2)
    return create_loader(source, backend=backend, **kwargs)


def epoch_indices(loader: Any) -> list[list[int]]:
    """The sample indices of one epoch, batch by batch, read off the pixels."""
    return [decode_indices(images, IMAGENET_MEAN, IMAGENET_STD) for images, _ in loader]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


def truncate_under(loader: Any, victim: Path, keep: int) -> DatasetError:
    """Cut `victim` to `keep` bytes while `loader` lives, read an epoch: the DatasetError."""
    victim.write_bytes(victim.read_bytes()[:keep])
    # Stamp it with the precise time: a write's own stamp comes from the kernel's coarse clock,
    # and a write within one tick of the check could look older than the check.
    os.utime(victim, ns=(time.time_ns(), time.time_ns()))
    try:
        for _ in loader:
            pass
    except DatasetError as error:  # not pytest.raises: its ExceptionInfo would keep the loader
        return error  # (and its workers) in a reference cycle
    pytest.fail(f"{victim} was cut short under a live loader, and nothing noticed")
