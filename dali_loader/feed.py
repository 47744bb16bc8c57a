"""What the DALI pipeline's `external_source` is given for each batch: the host side of the input.

DALI calls the feed on the thread that runs the training loop, holding the GIL, so a batch must
cost a few array operations there, not Python work per image: the options measured, and what
these feeds cost that thread, are in benchmarks/README.md, "The input path".

- `PathFeed` (image folders): each batch is the file names as rows of one zero-padded uint8
  array and their lengths; DALI's own threads read the files (`fn.io.file.read`), no Python.
- `ShardFeed` (packed shards): DALI cannot read a byte range of a file, so helper threads
  `pread` the next two batches' samples into reused buffers while DALI works (the reads release
  the GIL), and the batch is a list of DALI tensors over those bytes, wrapped by the readers.
Then come the labels and the batch's augmentation parameters (`dali_loader.params`: crop boxes,
flips or warp matrices, color weights, drawn for the whole batch at once), one array each.

Batches are handed over without a copy (`no_copy`): each stays referenced here until DALI is
done with it, `prefetch_queue_depth` batches later.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from . import params
from .index import SampleIndex
from .spec import LoaderSpec
from .storage import reader_for

# What a batch crosses into the pipeline as: file names (DALI reads them) or encoded bytes.
InputKind = Literal["paths", "bytes"]

_READ_THREADS = 8  # at most; on 2 cores 8 threads read slower than 2 (they share the GIL)
_READ_AHEAD = 2  # batches


class EpochFeed:
    """The batches of one epoch, in order; StopIteration when they run out (the epoch's end)."""

    inputs: InputKind

    def __init__(
        self, spec: LoaderSpec, labels: np.ndarray, sizes: np.ndarray, prefetch_queue_depth: int
    ) -> None:
        self._spec = spec
        self._labels = labels.astype(np.int64)
        self._sizes = sizes
        self._batches: list[np.ndarray] = []
        self._epoch = 0
        self._next = 0
        # DALI reads a batch given without a copy until `prefetch_queue_depth` batches later.
        self._alive_batches = prefetch_queue_depth + 2
        self._alive: deque[tuple[Any, ...]] = deque(maxlen=self._alive_batches)

    def start(self, batches: list[np.ndarray], epoch: int) -> None:
        self._batches, self._epoch, self._next = batches, epoch, 0

    def stop(self) -> None:
        """End the epoch early: the pipeline gets StopIteration on its next request."""
        self._next = len(self._batches)

    def __call__(self) -> tuple[Any, ...]:
        if self._next >= len(self._batches):
            raise StopIteration
        batch = self._batches[self._next]
        self._next += 1
        drawn = params.draw(self._spec, self._epoch, batch, self._sizes[batch])
        arrays = (
            *self._files(batch),
            self._labels[batch],
            *(drawn.arrays[name] for name in params.fields(self._spec)),
        )
        self._alive.append(arrays)
        return arrays

    def _files(self, batch: np.ndarray) -> tuple[Any, ...]:
        """What DALI reads the batch's encoded files from (see the subclasses)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the feed holds (threads); the loader calls it when it goes."""


class PathFeed(EpochFeed):
    """File names for `fn.io.file.read`: names (N, L) uint8 and lengths (N, 1)."""

    inputs: InputKind = "paths"

    def __init__(
        self,
        paths: tuple[str, ...],
        spec: LoaderSpec,
        labels: np.ndarray,
        sizes: np.ndarray,
        prefetch_queue_depth: int,
    ) -> None:
        super().__init__(spec, labels, sizes, prefetch_queue_depth)
        # Absolute (DALI's threads open them, and the process may change its directory), but
        # not normalized: "link/../x" is where the kernel says, not where the text says.
        encoded = [os.fsencode(os.path.join(os.getcwd(), path)) for path in paths]
        # All names end to end, one copy: a padded table would cost every name the longest one.
        self._lengths = np.array([len(name) for name in encoded], dtype=np.int64)
        self._starts = _starts(self._lengths)
        self._text = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def _files(self, batch: np.ndarray) -> tuple[Any, ...]:
        """The batch's names as rows of one zero-padded (N, longest) array, built in numpy."""
        lengths = self._lengths[batch]
        columns = np.arange(int(lengths.max()))
        inside = columns < lengths[:, None]
        names = np.zeros(inside.shape, dtype=np.uint8)
        names[inside] = self._text[(self._starts[batch][:, None] + columns)[inside]]
        return names, lengths.astype(np.int32)[:, None]


class ShardFeed(EpochFeed):
    """Encoded samples read from tar shards: a list of DALI tensors over uint8 buffers; the
    next batches are read ahead on up to 8 helper threads while DALI works on this one."""

    inputs: InputKind = "bytes"

    def __init__(
        self,
        index: SampleIndex,
        spec: LoaderSpec,
        labels: np.ndarray,
        sizes: np.ndarray,
        prefetch_queue_depth: int,
        threads: int,
    ) -> None:
        super().__init__(spec, labels, sizes, prefetch_queue_depth)
        from nvidia.dali.tensors import TensorCPU  # here: DALI is imported when a loader is built

        self._tensor = TensorCPU
        assert index.locations is not None
        self._reader = reader_for(index)
        self._bytes = index.locations.sizes
        self._threads = max(1, min(threads, _READ_THREADS))
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="dali-loader-read")
        # The batches being read ahead, in order: each one's number and the reads filling it
        self._ahead: deque[tuple[int, list[Future[list[Any]]]]] = deque()
        self._queued = 0  # the next batch to read
        # Read buffers, reused in turn: a fresh 20 MB buffer a batch costs the kernel a page
        # fault and a zeroed page per 4 KB. A buffer comes back when no batch in it is alive.
        self._buffers = [np.empty(0, np.uint8)] * (self._alive_batches + _READ_AHEAD + 1)
        self._reads = 0  # batches read since the feed began, across epochs: the next buffer

    def start(self, batches: list[np.ndarray], epoch: int) -> None:
        self._wait_ahead()
        super().start(batches, epoch)
        self._queued = 0
        self._read_ahead()

    def stop(self) -> None:
        self._wait_ahead()
        super().stop()

    def _files(self, batch: np.ndarray) -> tuple[Any, ...]:
        number, reads = self._ahead.popleft()
        assert number == self._next - 1
        samples = [sample for read in reads for sample in read.result()]
        self._read_ahead()
        return (samples,)

    def _read_ahead(self) -> None:
        """Keep the next `_READ_AHEAD` batches being read, each into one buffer, split over
        the threads (one batch ahead leaves the threads idle while the loop takes it)."""
        while len(self._ahead) < _READ_AHEAD and self._queued < len(self._batches):
            batch = self._batches[self._queued]
            sizes = self._bytes[batch]
            starts = _starts(sizes)
            buffer = self._buffer(int(sizes.sum()))
            parts = [p for p in np.array_split(np.arange(len(batch)), self._threads) if len(p)]
            reads = [self._pool.submit(self._read, buffer, starts[p], batch[p]) for p in parts]
            self._ahead.append((self._queued, reads))
            self._queued += 1

    def _buffer(self, size: int) -> np.ndarray:
        """The next buffer in turn, at least `size` bytes (grown with room to spare)."""
        slot = self._reads % len(self._buffers)
        self._reads += 1
        if self._buffers[slot].size < size:
            self._buffers[slot] = np.empty(size + size // 4, np.uint8)
        return self._buffers[slot]

    def _read(self, buffer: np.ndarray, starts: np.ndarray, samples: np.ndarray) -> list[Any]:
        """Read `samples` into `buffer` and wrap each as a DALI tensor over its bytes (no copy):
        wrapping here, not in DALI's feed, keeps that per-sample work off the training thread."""
        self._reader.read_into(buffer, starts, samples)
        ends = (starts + self._bytes[samples]).tolist()
        return [self._tensor(buffer[a:b], "") for a, b in zip(starts.tolist(), ends, strict=True)]

    def _wait_ahead(self) -> None:
        for _, reads in self._ahead:
            for read in reads:
                read.exception()  # a read of a batch no one will ask for: let it finish
        self._ahead.clear()

    def close(self) -> None:
        self._wait_ahead()
        self._pool.shutdown(wait=True)
        self._reader.close()


def _starts(sizes: np.ndarray) -> np.ndarray:
    """Where each of `sizes` starts when they are laid end to end."""
    return np.concatenate(([0], np.cumsum(sizes[:-1]))).astype(np.int64)


def feed_for(
    index: SampleIndex,
    spec: LoaderSpec,
    labels: np.ndarray,
    *,
    read_paths: tuple[str, ...] | None,
    prefetch_queue_depth: int,
    threads: int,
) -> EpochFeed:
    """The feed for `index`: shards when it is packed, else its files (or `read_paths`)."""
    if index.sizes is None:
        raise ValueError("the index has no image sizes: build it with the dataset check")
    if index.locations is not None:
        return ShardFeed(index, spec, labels, index.sizes, prefetch_queue_depth, threads)
    return PathFeed(read_paths or index.paths, spec, labels, index.sizes, prefetch_queue_depth)
