"""A map-style dataset whose items are whole batches, written into shared slots by the workers.

Each batch's augmentation parameters are drawn by `dali_loader.params` from (seed, epoch, sample
index) alone, as the DALI feed draws them: a sample's augmentation does not depend on the
backend, on which worker made it or on how many there are.
Workers write uint8 (warped and colored samples rounded back to whole pixel values), a quarter
of the bytes of float32, into the slot their request names and hand back only the slot's
number; the loader normalizes the whole batch once, on its device.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dali_loader import params
from dali_loader.errors import DatasetError
from dali_loader.spec import LoaderSpec
from dali_loader.storage import SampleReader

from .as_is import run_as_is, sample_seed
from .augment import load_sample

BatchRequest = tuple[int, np.ndarray, int]  # (epoch, sample indices, slot to write)


class BatchDataset(Dataset[int]):
    """Batches of augmented samples, written into `slots` (uint8 (S, N, C, H, W))."""

    def __init__(
        self,
        reader: SampleReader,
        spec: LoaderSpec,
        sizes: np.ndarray,
        slots: torch.Tensor,
        as_is: Callable[[Image.Image], object] | None = None,
    ) -> None:
        self.reader = reader
        self.spec = spec
        self.sizes = sizes  # (N, 2) upright (width, height), as the check recorded them
        self.slots = slots
        self.as_is = as_is  # the user's Compose, run per sample (`fallback.as_is`)

    def __getitem__(self, request: BatchRequest) -> int:  # type: ignore[override]
        """Write the samples of `request` into the first rows of its slot; return the slot."""
        epoch, indices, slot = request
        images = self.slots[slot]
        if self.as_is is None:
            drawn = params.draw(self.spec, epoch, indices, self.sizes[indices])
        for row, index in enumerate(indices.tolist()):
            size = (int(self.sizes[index, 0]), int(self.sizes[index, 1]))
            try:
                if self.as_is is not None:
                    seed = sample_seed(self.spec.seed, epoch, index)
                    sample = run_as_is(self.as_is, self.reader.read(index), seed)
                    _same_shape(sample, images[row])
                else:
                    sample = load_sample(self.reader.read(index), self.spec, drawn[row], size)
            except (OSError, DatasetError) as error:  # name the file: nothing else would
                path = os.fsdecode(bytes(self.reader.paths[index]))
                raise type(error)(f"{path}: {error}") from error
            images[row] = sample
        return slot


def _same_shape(sample: torch.Tensor, row: torch.Tensor) -> None:
    if sample.shape != row.shape or sample.dtype != row.dtype:
        raise DatasetError(
            f"the transform (as_is=True) gave {sample.dtype} {tuple(sample.shape)}, the first "
            f"sample {row.dtype} {tuple(row.shape)}: a batch needs one size and dtype. "
            "Crop or resize to a fixed size in the transform"
        )
