"""A map-style dataset whose items are whole batches, so workers hand over one uint8 tensor each.

Each sample's random parameters come from its own generator seeded with (seed, epoch, index):
the augmentation of a sample does not depend on which worker made it or how many there are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from dali_loader.spec import LoaderSpec

from .augment import load_sample

BatchRequest = tuple[int, np.ndarray]  # (epoch, sample indices)


class BatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, paths: tuple[str, ...], labels: np.ndarray, spec: LoaderSpec) -> None:
        self.paths = paths
        self.labels = labels
        self.spec = spec

    def __getitem__(self, request: BatchRequest) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        epoch, indices = request
        out_h, out_w = self.spec.image_size
        images = np.empty((len(indices), out_h, out_w, 3), dtype=np.uint8)
        for slot, index in enumerate(indices):
            rng = np.random.default_rng((self.spec.seed, epoch, int(index)))
            images[slot] = load_sample(self.paths[index], self.spec, rng)
        labels = self.labels[indices].astype(np.int64)
        return torch.from_numpy(images), torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.paths)
