"""`DaliLoader`: the DataLoader-like adapter over a DALI pipeline and `DALIGenericIterator`.

The sampler's batches are fed to the pipeline through `external_source`, so the epoch ends
exactly when they run out: the final partial batch holds only real samples, with no padding
duplicates and no reader buffer deciding the order. DALI is imported when a loader is built,
never at package import, so machines without DALI can still import dali_loader.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .base import TORCH_DTYPES, BaseLoader, Batch
from .index import SampleIndex
from .spec import LoaderSpec
from .storage import SampleReader, reader_for

_READ_THREADS = 8  # at most; on 2 cores 8 threads read slower than 2 (they share the GIL)


class EpochFeed:
    """The pipeline's source: the encoded files and labels of one epoch's batches, in order.

    DALI calls it on the thread that runs the training loop, so the files of the next batch are
    read ahead, split over `threads` helper threads (file reads release the GIL), while DALI and
    the model work. On the benchmarks' 2-core VM (90 KB files in the page cache) one thread read
    ~25,000 files a second, short of what a GPU decodes, and two ~33,000.
    """

    def __init__(self, reader: SampleReader, labels: np.ndarray, threads: int = 1) -> None:
        self._reader = reader
        self._labels = labels
        self._batches: list[np.ndarray] = []
        self._next = 0
        self._threads = max(1, threads)
        self._reads = ThreadPoolExecutor(self._threads, thread_name_prefix="dali-loader-read")
        self._ahead: tuple[int, list[Future[list[np.ndarray]]]] | None = None

    def start(self, batches: list[np.ndarray]) -> None:
        self._wait_ahead()
        self._batches, self._next = batches, 0
        self._read_ahead()

    def stop(self) -> None:
        """End the epoch early: the pipeline gets StopIteration on its next request."""
        self._wait_ahead()
        self._next = len(self._batches)

    def __call__(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self._next >= len(self._batches):
            raise StopIteration
        batch = self._batches[self._next]
        ahead, self._ahead = self._ahead, None
        if ahead and ahead[0] == self._next:
            encoded = [data for part in ahead[1] for data in part.result()]
        else:
            encoded = self._read(batch)
        self._next += 1
        self._read_ahead()
        return encoded, list(self._labels[batch])

    def _read(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.frombuffer(self._reader.read(int(i)), dtype=np.uint8) for i in batch]

    def _read_ahead(self) -> None:
        if self._next < len(self._batches):
            parts = np.array_split(self._batches[self._next], self._threads)
            reads = [self._reads.submit(self._read, part) for part in parts if len(part)]
            self._ahead = (self._next, reads)

    def _wait_ahead(self) -> None:
        if self._ahead is not None:
            for read in self._ahead[1]:
                read.exception()  # a read of a batch no one will ask for: let it finish
            self._ahead = None


class DaliLoader(BaseLoader):
    """Batches decoded and augmented by DALI: on the GPU (`backend="dali"`) or the CPU ("dali-cpu").

    Build it with `create_loader(..., backend="dali")`; the arguments here are already resolved.
    """

    def __init__(
        self,
        index: SampleIndex,
        spec: LoaderSpec,
        device: torch.device,
        *,
        num_threads: int,
        prefetch_queue_depth: int = 2,
        read_paths: tuple[str, ...] | None = None,
    ) -> None:
        """`read_paths[i]` is the file DALI decodes for sample i (a converted copy, say)."""
        super().__init__(index, spec, device)
        from .pipeline import build_pipeline

        self.backend = "dali" if device.type == "cuda" else "dali-cpu"
        self._feed = EpochFeed(
            reader_for(index, read_paths), self._labels, threads=min(num_threads, _READ_THREADS)
        )
        self._pipe = build_pipeline(
            spec,
            self._feed,
            device_id=device.index if device.type == "cuda" else None,
            num_threads=num_threads,
            prefetch_queue_depth=prefetch_queue_depth,
        )
        self._iterator: Any = None
        self._mid_epoch = False

    def _iter_epoch(self, batches: list[np.ndarray], epoch: int) -> Iterator[Batch]:
        self._finish_abandoned_epoch()
        self._feed.start(batches)
        if self._iterator is None:
            from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

            # No reader: the feed's StopIteration ends the epoch, and the iterator must not
            # prefetch before the user picks the epoch with set_epoch.
            self._iterator = DALIGenericIterator(
                [self._pipe],
                ["images", "labels"],
                last_batch_policy=LastBatchPolicy.PARTIAL,
                auto_reset=False,
                prepare_first_batch=False,
            )
        else:
            self._iterator.reset()
        self._mid_epoch = True
        for outputs in self._iterator:
            yield self._to_batch(outputs[0]["images"], outputs[0]["labels"])
        self._mid_epoch = False

    def _finish_abandoned_epoch(self) -> None:
        """After a `break`, drain the batches DALI already prefetched so the next epoch is clean."""
        if not self._mid_epoch:
            return
        self._feed.stop()
        for _ in self._iterator:
            pass
        self._mid_epoch = False

    def _to_batch(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        if self.spec.channels_last:
            images = images.permute(0, 3, 1, 2)  # HWC from DALI is channels_last memory already
        wanted = TORCH_DTYPES[self.spec.dtype]
        if images.dtype != wanted:
            images = images.to(wanted)
        labels = labels.reshape(-1).to(self.device, torch.int64, non_blocking=True)
        return images, labels
