"""`TorchvisionLoader`: the same contract on the CPU, a torch DataLoader over the same index.

Workers decode and augment whole batches. For a CPU device they also normalize, so the main
process, which runs the training step, only receives. For a GPU they hand over uint8, which is
copied pinned and non-blocking and normalized on the GPU (as timm's PrefetchLoader does).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dali_loader.base import TORCH_DTYPES, BaseLoader, Batch
from dali_loader.index import SampleIndex
from dali_loader.spec import LoaderSpec
from dali_loader.storage import reader_for

from .dataset import BatchDataset, BatchRequest


class _EpochRequests:
    """The DataLoader's sampler: this epoch's batches, set before each pass."""

    def __init__(self) -> None:
        self.requests: list[BatchRequest] = []

    def __iter__(self) -> Iterator[BatchRequest]:
        return iter(self.requests)

    def __len__(self) -> int:
        return len(self.requests)


def _trust_the_check(worker_id: int) -> None:
    """Files were vetted against max_pixels by the check: lift PIL's own limit in workers."""
    Image.MAX_IMAGE_PIXELS = None


class TorchvisionLoader(BaseLoader):
    """Batches decoded with PIL and augmented by DataLoader workers: `backend="torchvision"`."""

    backend = "torchvision"

    def __init__(
        self,
        index: SampleIndex,
        spec: LoaderSpec,
        device: torch.device,
        *,
        num_workers: int,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__(index, spec, device)
        self._requests = _EpochRequests()
        self._loader = DataLoader(
            BatchDataset(reader_for(index), self._labels, spec, normalize=device.type == "cpu"),
            batch_size=None,
            sampler=self._requests,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            pin_memory=device.type == "cuda",
            worker_init_fn=_trust_the_check,
        )
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(spec.mean_255, device=device).view(shape)
        self._inv_std = (1.0 / torch.tensor(spec.std_255, device=device)).view(shape)

    def _iter_epoch(self, batches: list[np.ndarray], epoch: int) -> Iterator[Batch]:
        self._requests.requests = [(epoch, batch) for batch in batches]
        for images, labels in self._loader:
            yield self._normalize(images), labels.to(self.device, non_blocking=True)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) from a worker -> normalized, in the spec's dtype and memory format."""
        if images.dtype == torch.uint8:  # a GPU batch: normalize there
            images = images.to(self.device, non_blocking=True).float()
            images = images.sub_(self._mean).mul_(self._inv_std)
        layout = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        return images.to(dtype=TORCH_DTYPES[self.spec.dtype], memory_format=layout)
