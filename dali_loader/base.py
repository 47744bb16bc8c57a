"""What every backend's loader shares: epochs, length, classes, the DataLoader-like surface.

A backend only turns one epoch's batches of sample indices into (images, labels) tensors; the
order, the epoch counter and `len()` live here, so no backend can disagree on them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .index import SampleIndex
from .sampler import check_shardable, epoch_order, num_batches, shard_batches
from .spec import LoaderSpec

Batch = tuple[torch.Tensor, torch.Tensor]

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class BaseLoader:
    """Iterate `(images, labels)` batches epoch after epoch, like a torch DataLoader.

    images: (N, 3, H, W) normalized, `spec.dtype`, on `device` (channels_last memory format when
    asked); labels: int64 (N,), on the same device. A plain `for` loop starts a new epoch each
    time; `set_epoch(e)` picks the epoch (and so the shuffle order) of the next loop.
    """

    backend: str = ""

    def __init__(self, index: SampleIndex, spec: LoaderSpec, device: torch.device) -> None:
        check_shardable(len(index), spec)
        self.dataset = index
        self.spec = spec
        self.device = device
        self._labels = np.asarray(index.labels, dtype=np.int32)
        self._epoch = 0
        self.bad_files: dict[str, str] = {}  # skipped under on_bad_file="skip": path -> reason

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return dict(self.dataset.class_to_idx)

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    @property
    def drop_last(self) -> bool:
        return self.spec.drop_last

    @property
    def epoch(self) -> int:
        """The epoch the next `for` loop will deliver."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Deliver epoch `epoch` next (its shuffle order), as `DistributedSampler.set_epoch`."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch = epoch

    def __len__(self) -> int:
        return num_batches(len(self.dataset), self.spec)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._epoch
        self._epoch += 1
        batches = shard_batches(epoch_order(len(self.dataset), self.spec, epoch), self.spec)
        return self._iter_epoch(batches, epoch)

    def _iter_epoch(self, batches: list[np.ndarray], epoch: int) -> Iterator[Batch]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backend={self.backend!r}, samples={len(self.dataset)}, "
            f"classes={len(self.dataset.classes)}, batch_size={self.spec.batch_size}, "
            f"train={self.spec.train}, device={str(self.device)!r})"
        )
