"""A map-style dataset whose items are whole batches, so a worker hands over one tensor each.

Each sample's random parameters come from its own generator seeded with (seed, epoch, index):
the augmentation of a sample does not depend on which worker made it or how many there are.
With `normalize`, workers write normalized float32 straight into shared memory, one sample at a
time while it is in cache; without it they hand over uint8, which crosses to the GPU 4x smaller
and is normalized there. Rotated samples are rounded to whole pixel values first, so both paths
deliver the same pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from dali_loader.spec import LoaderSpec
from dali_loader.storage import SampleReader

from .augment import load_sample, rotate

BatchRequest = tuple[int, np.ndarray]  # (epoch, sample indices)


class BatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(
        self, reader: SampleReader, labels: np.ndarray, spec: LoaderSpec, *, normalize: bool
    ) -> None:
        self.reader = reader
        self.labels = labels
        self.spec = spec
        self.normalize = normalize
        self.mean = torch.tensor(spec.mean_255).view(3, 1, 1)
        self.inv_std = 1 / torch.tensor(spec.std_255).view(3, 1, 1)

    def __getitem__(self, request: BatchRequest) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        epoch, indices = request
        shape = (len(indices), 3, *self.spec.image_size)
        images = _batch_tensor(shape, torch.float32 if self.normalize else torch.uint8)
        for slot, index in enumerate(indices):
            rng = np.random.default_rng((self.spec.seed, epoch, int(index)))
            sample, angle = load_sample(self.reader.read(int(index)), self.spec, rng)
            pixels = rotate(sample.float(), angle).round_().clamp_(0, 255) if angle else sample
            if self.normalize:
                torch.sub(pixels, self.mean, out=images[slot]).mul_(self.inv_std)
            else:
                images[slot] = pixels
        labels = self.labels[indices].astype(np.int64)
        return images, torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """In a worker, allocate in shared memory, so sending the batch copies nothing (as
    torch's default_collate does)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)  # type: ignore[no-untyped-call]
    return torch.empty(0, dtype=dtype).new(storage).view(shape)
