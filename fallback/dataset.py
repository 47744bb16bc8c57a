"""A map-style dataset whose items are whole batches, written into shared slots by the workers.

Each batch's augmentation parameters are drawn by `dali_loader.params` from (seed, epoch, sample
index) alone, as the DALI feed draws them: a sample's augmentation does not depend on the
backend, on which worker made it or on how many there are.
Workers write each sample into the slot their request names and hand back only the slot's
number: on the CPU normalized, in the output's dtype and memory format, so that the training
thread hands the slot over as it is; for a GPU uint8 (warped and colored samples rounded back to
whole pixel values), a quarter of the bytes, normalized there.
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
from .buffers import batch_memory

BatchRequest = tuple[int, np.ndarray, int]  # (epoch, sample indices, slot to write or -1)
Normalize = tuple[np.ndarray, np.ndarray]  # per-channel scale and shift, (C, 1, 1) float32


class BatchDataset(Dataset["int | torch.Tensor"]):
    """Batches of augmented samples, written into `slots` ((S, N, C, H, W) `batch_memory`)."""

    def __init__(
        self,
        reader: SampleReader,
        spec: LoaderSpec,
        sizes: np.ndarray,
        slots: torch.Tensor,
        as_is: Callable[[Image.Image], object] | None = None,
        normalize: Normalize | None = None,
    ) -> None:
        self.reader = reader
        self.spec = spec
        self.sizes = sizes  # (N, 2) upright (width, height), as the check recorded them
        self.slots = slots
        self.as_is = as_is  # the user's Compose, run per sample (`fallback.as_is`)
        self.normalize = normalize  # uint8 levels -> the output, in the workers
        self._scratch_memory: np.ndarray | None = None  # per worker: made there, on first use

    def __getitem__(self, request: BatchRequest) -> int | torch.Tensor:  # type: ignore[override]
        """Write the samples of `request` into the first rows of its slot and return the slot;
        with no slot (-1: the loop's user holds them all), into fresh memory, returned."""
        epoch, indices, slot = request
        images = self.slots[slot] if slot >= 0 else self._fresh(len(indices))
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
            self._write(images[row], sample)
        return slot if slot >= 0 else images

    def _write(self, row: torch.Tensor, sample: torch.Tensor) -> None:
        if self.normalize is None:
            row.copy_(sample)
            return
        # The loader's normalization, here instead of on the training thread: the same float32
        # operations, so the same values (scale and shift, as DALI's normalize folds them).
        # Both passes in the row's memory order (a resize leaves channels last), the first into
        # memory that stays in cache: the slot is written once, 77-98 us an image against
        # 134-155 (one core, 3x224x224).
        scale, shift = self.normalize
        levels = sample
        if sample.stride() != row.stride():
            levels = torch.empty_like(row, dtype=torch.uint8).copy_(sample)
        scaled = self._scratch(row)
        np.multiply(levels.numpy(), scale, out=scaled)
        if row.dtype == torch.float32:
            np.add(scaled, shift, out=row.numpy())
        else:
            row.copy_(torch.from_numpy(np.add(scaled, shift, out=scaled)))

    def _scratch(self, row: torch.Tensor) -> np.ndarray:
        """float32 memory laid out as `row`, reused sample after sample."""
        scratch = self._scratch_memory
        strides = tuple(4 * step for step in row.stride())
        if scratch is None or scratch.shape != tuple(row.shape) or scratch.strides != strides:
            scratch = torch.empty_like(row, dtype=torch.float32).numpy()
            self._scratch_memory = scratch
        return scratch

    def _fresh(self, rows: int) -> torch.Tensor:
        """Memory for one batch, laid out as a slot's; shared from a worker, as it is sent."""
        like = self.slots[0, :rows]
        last = like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last)
        worker = torch.utils.data.get_worker_info() is not None
        fresh = batch_memory(
            1, rows, tuple(like.shape[1:]), like.dtype, channels_last=last, shared=worker
        )
        return fresh[0]


def _same_shape(sample: torch.Tensor, row: torch.Tensor) -> None:
    if sample.shape != row.shape or sample.dtype != row.dtype:
        raise DatasetError(
            f"the transform (as_is=True) gave {sample.dtype} {tuple(sample.shape)}, the first "
            f"sample {row.dtype} {tuple(row.shape)}: a batch needs one size and dtype. "
            "Crop or resize to a fixed size in the transform"
        )
