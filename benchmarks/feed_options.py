"""The ways to feed a DALI pipeline that were measured before `dali_loader/feed.py` was written.

Each option delivers one shuffled epoch of an image folder's encoded files to a CPU pipeline
whose only work is the files' shapes (decoding replaced by a no-op), so what is timed is the
host side: Python on the training loop's thread, the reads, DALI's own overhead.

    python benchmarks/feed_options.py ROOT [--threads 2] [--batch-size 256] [--epochs 5]

Options (the loader uses D for folders and E for packed shards, which D cannot read):
  A  a list of one array per file (read on helper threads) and a list of label scalars, copied
  B  as A, labels as one int64 array, handed over without a copy (`no_copy`)
  C  the files read into one zero-padded (N, max size) array, cut to size by `fn.slice`
  D  the file names as one zero-padded array, read by DALI's threads (`fn.io.file.read`)
  E  the files read into one buffer with `os.preadv`, a list of views into it, no copy
  F  as D, with DALI's default reads through mmap
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--threads", type=int, default=2, help="DALI threads and read threads")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5, help="measured, after one warm-up")
    parser.add_argument("--options", default="ABCDEF")
    args = parser.parse_args()
    _, class_to_idx = find_classes(args.root)
    samples = make_dataset(args.root, class_to_idx, IMG_EXTENSIONS)
    files = Files([p for p, _ in samples], [label for _, label in samples], args.threads)
    print(
        f"{len(samples)} files, batch {args.batch_size}, {args.threads} threads, "
        f"{os.cpu_count()} cores"
    )
    for option in args.options:
        rate, loop_us = measure(option, files, args.batch_size, args.threads, args.epochs)
        print(f"{option}: {rate:8.0f} img/s   loop thread {loop_us:5.1f} us/img")


class Files:
    def __init__(self, paths: list[str], labels: list[int], threads: int) -> None:
        self.paths = [os.fsencode(os.path.abspath(p)) for p in paths]
        self.labels = np.asarray(labels, np.int64)
        self.sizes = np.array([os.path.getsize(p) for p in self.paths], np.int64)
        names = np.array(self.paths, dtype=np.bytes_)
        self.names = names.view(np.uint8).reshape(len(names), -1)
        self.lengths = np.char.str_len(names).astype(np.int32)[:, None]
        self.pool = ThreadPoolExecutor(threads)
        self.threads = threads

    def read_list(self, part: np.ndarray) -> list[np.ndarray]:
        out = []
        for i in part:
            with open(self.paths[i], "rb") as f:
                out.append(np.frombuffer(f.read(), np.uint8))
        return out

    def read_into(self, buffer: np.ndarray, starts: np.ndarray, part: np.ndarray) -> None:
        view = buffer.reshape(-1).data
        for start, i in zip(starts.tolist(), part.tolist(), strict=True):
            fd = os.open(self.paths[i], os.O_RDONLY)
            try:
                os.preadv(fd, [view[start : start + int(self.sizes[i])]], 0)
            finally:
                os.close(fd)

    def split(self, batch: np.ndarray) -> list[np.ndarray]:
        return [p for p in np.array_split(np.arange(len(batch)), self.threads) if len(p)]


def maker(option: str, files: Files) -> Callable[[np.ndarray], Callable[[], Any]]:
    """For a batch of sample indices: start its reads, return what hands it to DALI."""

    def listed(batch: np.ndarray) -> Callable[[], Any]:
        reads = [files.pool.submit(files.read_list, batch[p]) for p in files.split(batch)]
        labels = list(files.labels[batch]) if option == "A" else files.labels[batch]
        return lambda: ([a for r in reads for a in r.result()], labels)

    def padded(batch: np.ndarray) -> Callable[[], Any]:
        width = int(files.sizes[batch].max())
        buffer = np.empty((len(batch), width), np.uint8)
        reads = [
            files.pool.submit(files.read_into, buffer, p * width, batch[p])
            for p in files.split(batch)
        ]
        lengths = files.sizes[batch].astype(np.int32)[:, None]

        def ready() -> Any:
            for r in reads:
                r.result()
            return buffer, lengths, files.labels[batch]

        return ready

    def named(batch: np.ndarray) -> Callable[[], Any]:
        arrays = files.names[batch], files.lengths[batch], files.labels[batch]
        return lambda: arrays

    def buffered(batch: np.ndarray) -> Callable[[], Any]:
        sizes = files.sizes[batch]
        starts = np.concatenate(([0], np.cumsum(sizes[:-1])))
        buffer = np.empty(int(sizes.sum()), np.uint8)
        reads = [
            files.pool.submit(files.read_into, buffer, starts[p], batch[p])
            for p in files.split(batch)
        ]

        def ready() -> Any:
            for r in reads:
                r.result()
            ends = starts + sizes
            views = [buffer[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
            return views, files.labels[batch]

        return ready

    return {"A": listed, "B": listed, "C": padded, "D": named, "E": buffered, "F": named}[option]


class Feed:
    """One epoch's batches, the next one's reads started before it is asked for."""

    def __init__(self, make: Callable[[np.ndarray], Callable[[], Any]]) -> None:
        self.make = make
        self.batches: list[np.ndarray] = []
        self.next = 0
        self.ahead: Callable[[], Any] | None = None
        self.alive: deque[Any] = deque(maxlen=4)  # no_copy: DALI reads them 2 batches later

    def start(self, batches: list[np.ndarray]) -> None:
        self.batches, self.next = batches, 0
        self.ahead = self.make(batches[0])

    def __call__(self) -> Any:
        if self.next >= len(self.batches) or self.ahead is None:
            raise StopIteration
        arrays = self.ahead()
        self.next += 1
        self.ahead = self.make(self.batches[self.next]) if self.next < len(self.batches) else None
        self.alive.append(arrays)
        return arrays


def measure(
    option: str, files: Files, batch_size: int, threads: int, epochs: int
) -> tuple[float, float]:
    feed = Feed(maker(option, files))
    pipe = Pipeline(batch_size=batch_size, num_threads=threads, device_id=None)
    with pipe:
        if option in "ABE":
            encoded, labels = fn.external_source(
                source=feed,
                num_outputs=2,
                batch=True,
                dtype=[types.UINT8, types.INT64],
                no_copy=option != "A",
            )
        else:
            data, lengths, labels = fn.external_source(
                source=feed,
                num_outputs=3,
                batch=True,
                dtype=[types.UINT8, types.INT32, types.INT64],
                no_copy=True,
            )
            encoded = fn.slice(data, 0, lengths, axes=[0], out_of_bounds_policy="error")
            if option in "DF":
                encoded = fn.io.file.read(encoded, dont_use_mmap=option == "D")
        pipe.set_outputs(encoded.shape(), labels)
    pipe.build()
    count = len(files.paths)
    seconds, loop_cpu = [], 0.0
    for epoch in range(epochs + 1):
        order = np.random.default_rng(epoch).permutation(count)
        feed.start([order[i : i + batch_size] for i in range(0, count, batch_size)])
        if epoch:
            pipe.reset()
        start, cpu = time.perf_counter(), time.thread_time()
        while True:
            try:
                pipe.run()
            except StopIteration:
                break
        if epoch:  # epoch 0 warms up
            seconds.append(time.perf_counter() - start)
            loop_cpu += time.thread_time() - cpu
    return count / statistics.median(seconds), loop_cpu / (count * epochs) * 1e6


if __name__ == "__main__":
    main()
