"""`TorchvisionLoader`: the same contract on the CPU, a torch DataLoader over the same index.

Workers decode and augment whole batches into shared uint8 slots. The loader normalizes each
batch once, in one pass, on its device: for a GPU after a pinned, non-blocking copy of a quarter
of the bytes (as timm's PrefetchLoader does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dali_loader.base import TORCH_DTYPES, BaseLoader, Batch
from dali_loader.errors import DaliLoaderError
from dali_loader.forking import forking
from dali_loader.index import SampleIndex
from dali_loader.source import CheckedIndex
from dali_loader.spec import LoaderSpec
from dali_loader.storage import reader_for

from .as_is import run_as_is, sample_seed
from .buffers import ReusedBatches, shared_slots, slot_count
from .dataset import BatchDataset, BatchRequest


class _EpochRequests:
    """The DataLoader's sampler: this epoch's batches, set before each pass."""

    def __init__(self) -> None:
        self.requests: list[BatchRequest] = []

    def __iter__(self) -> Iterator[BatchRequest]:
        return iter(self.requests)

    def __len__(self) -> int:
        return len(self.requests)


def _unwrapped(error: DaliLoaderError) -> DaliLoaderError:
    """`error` as raised in the worker: torch re-raises it with "Caught <name> in DataLoader
    worker process k. Original Traceback ..." and the traceback, ending in "<module>.<name>:
    message"."""
    message = str(error)
    marker = f"{type(error).__name__}: "  # after the module's name: "dali_loader.errors."
    if "Original Traceback" not in message or marker not in message:
        return error
    return type(error)(message.rsplit(marker, 1)[1].rstrip())


def _sizes(index: SampleIndex) -> np.ndarray:
    if index.sizes is None:
        raise ValueError("the index has no image sizes: build it with the dataset check")
    return index.sizes


def _trust_the_check(worker_id: int) -> None:
    """Files were vetted against max_pixels by the check: lift PIL's own limit in workers."""
    Image.MAX_IMAGE_PIXELS = None


class TorchvisionLoader(BaseLoader):
    """Batches decoded with PIL and augmented by DataLoader workers: `backend="torchvision"`."""

    backend = "torchvision"

    def __init__(
        self,
        checked: CheckedIndex,
        spec: LoaderSpec,
        device: torch.device,
        *,
        num_workers: int,
        prefetch_factor: int = 2,
        as_is: Callable[[Image.Image], object] | None = None,
    ) -> None:
        super().__init__(checked, spec, device)
        spec = self.spec  # checked against the images: the output size, whether crops pad
        index = checked.index
        self._as_is = as_is
        shape: tuple[int, ...] = (spec.channels, *spec.image_size)
        dtype = torch.uint8
        if as_is is not None and len(index):  # the first sample's output: every one's shape
            first = run_as_is(as_is, reader_for(index).read(0), sample_seed(spec.seed, 0, 0))
            shape, dtype = tuple(first.shape), first.dtype
        self._slots = shared_slots(
            slot_count(num_workers, prefetch_factor),
            (spec.batch_size, *shape),
            shared=num_workers > 0,
            dtype=dtype,
        )
        self._requests = _EpochRequests()
        self._loader = DataLoader(
            BatchDataset(reader_for(index), spec, _sizes(index), self._slots, as_is),
            batch_size=None,
            sampler=self._requests,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            worker_init_fn=_trust_the_check,
        )
        self._outputs = ReusedBatches()
        shape = (1, spec.channels, 1, 1)
        self._mean = torch.tensor(spec.mean_255, device=device).view(shape)
        self._inv_std = (1.0 / torch.tensor(spec.std_255, device=device)).view(shape)
        self._scale = (1.0 / np.array(spec.std_255, np.float32)).reshape(shape)
        self._shift = -np.array(spec.mean_255, np.float32).reshape(shape) * self._scale

    def _iter_epoch(self, batches: list[np.ndarray], epoch: int) -> Iterator[Batch]:
        slots = len(self._slots)
        self._requests.requests = [(epoch, batch, i % slots) for i, batch in enumerate(batches)]
        for batch, slot in zip(batches, self._worker_slots(), strict=True):
            if self._as_is is not None:  # the Compose normalized them, or did not: as given
                images = self._slots[slot, : len(batch)].to(self.device, copy=True)
                if self.spec.channels_last and images.dim() == 4:
                    images = images.contiguous(memory_format=torch.channels_last)
            else:
                images = self._normalize(self._slots[slot, : len(batch)])
            labels = torch.from_numpy(self._labels[batch].astype(np.int64))
            yield images, labels.to(self.device, non_blocking=True)

    def _worker_slots(self) -> Iterator[int]:
        """The DataLoader's batches (slot numbers). Our own errors in a worker come back as the
        same error, not wrapped in torch's "Caught ... in DataLoader worker" and the worker's
        traceback: the message names the file already."""
        try:
            with forking():  # the first epoch starts the workers
                batches = iter(self._loader)
            yield from batches
        except DaliLoaderError as error:
            unwrapped = _unwrapped(error)
            if unwrapped is error:  # raised here (no workers): as it is, its cause kept
                raise
            raise unwrapped from None

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) in a slot -> normalized, in the spec's dtype and memory format."""
        if self.device.type == "cpu":
            out = self._normalize_on_host(images.numpy())
        else:
            # pin_memory() copies the slot into the caching host allocator, which keeps the
            # copy until the transfer is done: the slot is free again at once.
            images = images.pin_memory().to(self.device, non_blocking=True)
            layout = torch.channels_last if self.spec.channels_last else torch.contiguous_format
            out = torch.empty(images.shape, device=self.device, memory_format=layout)
            out.copy_(images).sub_(self._mean).mul_(self._inv_std)
        return out.to(TORCH_DTYPES[self.spec.dtype])

    def _normalize_on_host(self, images: np.ndarray) -> torch.Tensor:
        """Normalize with numpy, for two reasons measured (benchmarks/README.md): it runs on one
        thread, where torch's threads would spin beside the workers;
        and its allocator asks the kernel for huge pages for large arrays (6x fewer page-fault
        costs the first time a batch's memory is written; `ReusedBatches` avoids most of them)."""
        n, c, h, w = images.shape
        if self.spec.channels_last:
            out = self._outputs.tensor((n, h, w, c), axes=(0, 3, 1, 2))
        else:
            out = self._outputs.tensor((n, c, h, w))
        target = out.numpy()
        np.multiply(images, self._scale, out=target)
        np.add(target, self._shift, out=target)
        return out
