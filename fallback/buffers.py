"""Batch memory the torchvision backend reuses instead of asking the kernel for fresh pages.

A fresh batch costs a page fault and a zeroed page every 4 KB (2 MB with huge pages), in the
process that writes it, and one more mapping in the process that reads it (what the pools below
saved is in benchmarks/README.md, "Per-step costs behind the torchvision backend"):

- `BatchSlots`: batch slots in shared memory, made before the workers start. A worker writes its
  batch into the slot its request names and returns only the slot's number. On the CPU the slot
  holds the finished batch and is lent to the user as it is, with no pass over it on the training
  thread; it is written again only once every tensor over it is gone, as torch's caching
  allocators do. A loop that keeps batches gets batches written into fresh memory.
- `ReusedBatches`: float batches normalized on the training thread, where the workers hand over
  uint8 (/dev/shm too small for float slots), kept and reused the same way.
"""

from __future__ import annotations

import math
import shutil
import weakref

import numpy as np
import torch

from dali_loader.errors import ConfigError


def slot_count(workers: int, prefetch_factor: int = 2) -> int:
    """Batch slots the loader needs: a DataLoader holds `prefetch_factor * workers` requests
    (the batch it hands over among them) and asks for the next one while the loop still holds
    the batch before; one more slot is then free, not being written, read or held."""
    return prefetch_factor * workers + 2


def batch_memory(
    count: int,
    rows: int,
    sample_shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    channels_last: bool,
    shared: bool,
) -> torch.Tensor:
    """(count, rows, *sample_shape) of `dtype`, unwritten; channels-last in memory when asked
    (for (C, H, W) samples); in shared memory when `shared`.

    Shared pages are taken when first written, so slots cost memory only once workers fill
    them; a /dev/shm too small to hold them all is refused here, before a worker writes (else it
    dies of SIGBUS on a page it cannot get, mid-epoch).
    """
    last = channels_last and len(sample_shape) == 3
    sample = (*sample_shape[1:], sample_shape[0]) if last else sample_shape
    memory = (count, rows, *sample)
    if shared:
        nbytes = math.prod(memory) * dtype.itemsize
        _refuse_small_shm(nbytes, count, (rows, *sample_shape), dtype)
        storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[no-untyped-call]
        batches = torch.empty(0, dtype=dtype).set_(storage).view(memory)
    else:
        batches = torch.empty(memory, dtype=dtype)
    return batches.permute(0, 1, 4, 2, 3) if last else batches


class BatchSlots:
    """Batch slots the workers write and the loop lends to the user, each taken for a request
    only when no request, loop or user has it.

    The loop asks for a slot as the DataLoader sends a request (`take`), and lends it when the
    request's batch comes back (`lend`) or gives it back once it copied it out (`give_back`).
    """

    def __init__(self, batches: torch.Tensor) -> None:
        self.batches = batches  # (count, rows, ...), as `batch_memory` makes them
        self._requested: set[int] = set()
        # The one byte array over each lent slot; the slot is free once it is gone.
        self._lent: dict[int, weakref.ref[np.ndarray]] = {}
        data = batches.untyped_storage()
        self._bytes = torch.empty(0, dtype=torch.uint8).set_(data).numpy().reshape(len(batches), -1)

    def take(self) -> int:
        """A free slot, now requested; -1 when the user holds every slot not requested (the
        worker then writes its batch into fresh memory)."""
        for slot in range(len(self.batches)):
            lent = self._lent.get(slot)
            if slot not in self._requested and (lent is None or lent() is None):
                self._requested.add(slot)
                self._lent.pop(slot, None)
                return slot
        return -1

    def lend(self, slot: int, rows: int) -> torch.Tensor:
        """The first `rows` of requested `slot`, for the user: the slot is not taken again while
        this tensor, or any tensor or array made from it, is alive."""
        self._requested.discard(slot)
        batch = self.batches[slot, :rows]
        view = self._bytes[slot][: batch.numel() * batch.element_size()]  # a new array object
        self._lent[slot] = weakref.ref(view)
        memory = torch.from_numpy(view).view(batch.dtype)  # holds `view` while it lives
        return memory.as_strided(batch.shape, batch.stride())

    def give_back(self, slot: int) -> None:
        """`slot` was copied out: free for the next request."""
        self._requested.discard(slot)

    def new_epoch(self) -> None:
        """The last epoch's requests are done (a DataLoader finishes them before the next
        epoch's): their slots are free."""
        self._requested.clear()


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


def shm_free() -> int | None:
    """Free bytes in /dev/shm; None where there is none to measure (not Linux)."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


def _refuse_small_shm(
    nbytes: int, count: int, batch_shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    free = shm_free()
    if free is None or nbytes <= free:
        return  # or no /dev/shm to measure: torch says what it can
    kind = str(dtype).removeprefix("torch.")
    raise ConfigError(
        f"the torchvision backend's workers need {nbytes / 2**30:.2f} GiB of shared memory "
        f"for {count} batch(es) of {' x '.join(map(str, batch_shape))} {kind}, and "
        f"/dev/shm has {free / 2**30:.2f} GiB free. Give it more (Docker: "
        f"--shm-size={math.ceil(nbytes / 2**30) + 1}g), or lower batch_size or num_threads "
        "(num_threads=0 reads in the main process, without shared memory)"
    )
