"""Batch memory the torchvision backend reuses instead of asking the kernel for fresh pages.

A fresh batch costs a page fault and a zeroed page every 4 KB (2 MB with huge pages), in the
process that writes it, and one more mapping in the process that reads it (what the pools below
saved is in benchmarks/README.md, "Per-step costs behind the torchvision backend"):

- `shared_slots`: uint8 batch slots in shared memory, made before the workers start. A worker
  writes its batch into the slot its request names and returns only the slot's number.
- `ReusedBatches`: the float batches handed to the user. One is written again only once every
  tensor and array over it is gone, as torch's caching allocators do; a user who keeps batches
  gets fresh ones.
"""

from __future__ import annotations

import math
import shutil
import weakref

import numpy as np
import torch

from dali_loader.errors import ConfigError


def slot_count(workers: int, prefetch_factor: int = 2) -> int:
    """Batch slots the loader needs: a DataLoader sends batch j + prefetch_factor * workers to
    a worker when it hands batch j over, so one slot more than that is never written while it
    is being read."""
    return prefetch_factor * workers + 1


def shared_slots(
    count: int, batch_shape: tuple[int, ...], *, shared: bool, dtype: torch.dtype = torch.uint8
) -> torch.Tensor:
    """(count, *batch_shape) of `dtype`; in shared memory when `shared`, left unwritten either
    way.

    Pages are taken when first written, so slots cost memory only once workers fill them; a
    /dev/shm too small to hold them all is refused here, before any worker starts (else a
    worker dies of SIGBUS on a page it cannot get, mid-epoch).
    """
    shape = (count, *batch_shape)
    if not shared:
        return torch.empty(shape, dtype=dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    _refuse_small_shm(nbytes, count, batch_shape)
    storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


class ReusedBatches:
    """Float32 batches for the user, each written again once the user has let go of it.

    A loop holds the batch it is on while the next one is made, so `keep=2` reuses every batch
    of `for images, labels in loader`.
    """

    def __init__(self, keep: int = 2) -> None:
        self._keep = keep
        self._arrays: list[np.ndarray] = []
        # The one view of each array that was handed out; the array is free once it is gone.
        self._lent: list[weakref.ref[np.ndarray] | None] = []

    def tensor(self, shape: tuple[int, ...], axes: tuple[int, ...] | None = None) -> torch.Tensor:
        """An unwritten float32 tensor over an array of `shape`, its dimensions permuted to `axes`.

        The tensor holds the only view of the array that is handed out, and every tensor or
        array made from it holds that view: once it is collected, nothing can reach the memory.
        """
        slot = self._free_slot(shape)
        array = self._arrays[slot] if slot is not None else np.empty(shape, np.float32)
        view = array.transpose(axes) if axes is not None else array[...]
        if slot is not None:
            self._lent[slot] = weakref.ref(view)
        return torch.from_numpy(view)

    def _free_slot(self, shape: tuple[int, ...]) -> int | None:
        free = [i for i, lent in enumerate(self._lent) if lent is None or lent() is None]
        for i in free:
            if self._arrays[i].shape == shape:
                return i
        if len(self._arrays) < self._keep:
            self._arrays.append(np.empty(shape, np.float32))
            self._lent.append(None)
            return len(self._arrays) - 1
        if free:  # another shape (the last, smaller batch): replace it
            self._arrays[free[0]] = np.empty(shape, np.float32)
            return free[0]
        return None


def _refuse_small_shm(nbytes: int, count: int, batch_shape: tuple[int, ...]) -> None:
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return  # no /dev/shm to measure (not Linux): torch says what it can
    if nbytes <= free:
        return
    raise ConfigError(
        f"the torchvision backend's workers need {nbytes / 2**30:.2f} GiB of shared memory "
        f"for their {count} batch slots of {' x '.join(map(str, batch_shape))} bytes, and "
        f"/dev/shm has {free / 2**30:.2f} GiB free. Give it more (Docker: "
        f"--shm-size={math.ceil(nbytes / 2**30) + 1}g), or lower batch_size or num_threads "
        "(num_threads=0 reads in the main process, without shared memory)"
    )
