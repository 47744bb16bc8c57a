"""A map-style dataset whose items are whole batches, so a worker hands over one tensor each.

Each sample's random parameters come from its own generator seeded with (seed, epoch, index):
the augmentation of a sample does not depend on which worker made it or how many there are.
Workers hand over uint8 (rotated samples rounded back to whole pixel values): a quarter of the
bytes that float32 would put through shared memory, where each fresh page costs a fault, and the
loader normalizes the whole batch once, on its device.
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
    def __init__(self, reader: SampleReader, labels: np.ndarray, spec: LoaderSpec) -> None:
        self.reader = reader
        self.labels = labels
        self.spec = spec

    def __getitem__(self, request: BatchRequest) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """uint8 (N, 3, H, W) images and int64 (N,) labels of the samples in `request`."""
        epoch, indices = request
        images = _batch_tensor((len(indices), 3, *self.spec.image_size))
        for slot, index in enumerate(indices):
            rng = np.random.default_rng((self.spec.seed, epoch, int(index)))
            sample, angle = load_sample(self.reader.read(int(index)), self.spec, rng)
            images[slot] = (
                rotate(sample.float(), angle).round_().clamp_(0, 255) if angle else sample
            )
        labels = self.labels[indices].astype(np.int64)
        return images, torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """uint8 `shape`; in a worker, allocated in shared memory, so sending the batch copies
    nothing (as torch's default_collate does)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    numel = int(np.prod(shape))
    shared = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(numel)  # type: ignore[no-untyped-call]
    return torch.empty(0, dtype=torch.uint8).new(shared).view(shape)
