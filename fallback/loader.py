"""`TorchvisionLoader`: the same contract on the CPU, a torch DataLoader over the same index.

Workers decode and augment whole batches into shared slots. On the CPU they write the finished
batch, and the training thread hands the slot itself to the user (`BatchSlots`): the thread the
GPU would wait on does no pass over the pixels. For a GPU they write uint8, normalized there after
a pinned, non-blocking copy of a quarter of the bytes (as timm's PrefetchLoader does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dali_loader.backends import local_world_size
from dali_loader.base import TORCH_DTYPES, BaseLoader, Batch
from dali_loader.errors import DaliLoaderError
from dali_loader.forking import forking
from dali_loader.index import SampleIndex
from dali_loader.source import CheckedIndex
from dali_loader.spec import LoaderSpec
from dali_loader.storage import reader_for

from .as_is import run_as_is, sample_seed
from .buffers import BatchSlots, ReusedBatches, batch_memory, shm_free, slot_count
from .dataset import BatchDataset, BatchRequest


class _EpochRequests:
    """The DataLoader's sampler: this epoch's batches, set before each pass, each given a slot
    as the DataLoader sends it to a worker."""

    def __init__(self, slots: BatchSlots) -> None:
        self.slots = slots
        self.epoch = 0
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[BatchRequest]:
        self.slots.new_epoch()  # at the first request: the DataLoader finished the last epoch's
        for batch in self.batches:
            yield self.epoch, batch, self.slots.take()

    def __len__(self) -> int:
        return len(self.batches)


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
        dtype = TORCH_DTYPES[spec.dtype] if device.type == "cpu" else torch.uint8
        if as_is is not None and len(index):  # the first sample's output: every one's shape
            first = run_as_is(as_is, reader_for(index).read(0), sample_seed(spec.seed, 0, 0))
            shape, dtype = tuple(first.shape), first.dtype
        count = slot_count(num_workers, prefetch_factor)
        if as_is is None and device.type == "cpu" and num_workers > 0:
            # the finished batches in shared memory if /dev/shm holds them (this rank's share
            # of it: pages are taken only when written, so no rank sees the others'), else uint8
            free = shm_free()
            needed = count * spec.batch_size * math.prod(shape) * dtype.itemsize
            if free is not None and needed > free // local_world_size():
                dtype = torch.uint8
        self._lends = device.type == "cpu" and (as_is is not None or dtype != torch.uint8)
        self._slots = BatchSlots(
            batch_memory(
                count,
                spec.batch_size,
                shape,
                dtype,
                channels_last=spec.channels_last,
                shared=num_workers > 0,
            )
        )
        scale = (1.0 / np.array(spec.std_255, np.float32)).reshape(-1, 1, 1)
        shift = -np.array(spec.mean_255, np.float32).reshape(-1, 1, 1) * scale
        self._requests = _EpochRequests(self._slots)
        self._loader = DataLoader(
            BatchDataset(
                reader_for(index),
                spec,
                _sizes(index),
                self._slots.batches,
                as_is,
                normalize=(scale, shift) if self._lends and as_is is None else None,
            ),
            batch_size=None,
            sampler=self._requests,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            worker_init_fn=_trust_the_check,
        )
        self._outputs = ReusedBatches()
        self._scale, self._shift = scale[None], shift[None]
        channels = (1, spec.channels, 1, 1)
        self._mean = torch.tensor(spec.mean_255, device=device).view(channels)
        self._inv_std = (1.0 / torch.tensor(spec.std_255, device=device)).view(channels)

    def _iter_epoch(self, batches: list[np.ndarray], epoch: int) -> Iterator[Batch]:
        self._requests.epoch, self._requests.batches = epoch, batches
        for batch, written in zip(batches, self._worker_batches(), strict=True):
            labels = torch.from_numpy(self._labels[batch].astype(np.int64))
            yield self._images(written, len(batch)), labels.to(self.device, non_blocking=True)

    def _images(self, written: int | torch.Tensor, rows: int) -> torch.Tensor:
        """The batch a worker wrote (into a slot, or fresh memory), as the user gets it."""
        if isinstance(written, torch.Tensor):  # the user held every lent slot
            # copied out of the shared memory it came in: each such tensor kept a file
            # descriptor open while it lived (torch's sharing), and a loop that keeps every
            # batch ran out of them ("Too many open files")
            return written.clone()
        if self._lends:
            return self._slots.lend(written, rows)
        images = self._slots.batches[written, :rows]
        if self._as_is is not None:  # the Compose normalized them, or did not: as given
            images = images.to(self.device, copy=True)
        else:
            images = self._normalize(images)
        self._slots.give_back(written)  # copied out: a slot given back is never short
        return images

    def _worker_batches(self) -> Iterator[int | torch.Tensor]:
        """The DataLoader's batches (slot numbers, or batches in fresh memory). Our own errors
        in a worker come back as the same error, not wrapped in torch's "Caught ... in
        DataLoader worker" and the worker's traceback: the message names the file already."""
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
        """Normalize with numpy, where /dev/shm cannot hold float slots (benchmarks/README.md):
        it runs on one thread, where torch's threads would spin beside the workers; and its
        allocator asks the kernel for huge pages for large arrays (6x fewer page-fault costs the
        first time a batch's memory is written; `ReusedBatches` avoids most of them)."""
        n, c, h, w = images.shape
        if self.spec.channels_last:
            out = self._outputs.tensor((n, h, w, c), axes=(0, 3, 1, 2))
        else:
            out = self._outputs.tensor((n, c, h, w))
        target = out.numpy()
        np.multiply(images, self._scale, out=target)
        np.add(target, self._shift, out=target)
        return out
