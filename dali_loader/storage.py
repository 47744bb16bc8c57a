"""Where a sample's encoded bytes live: a file of its own, or a byte range of a tar shard.

The torchvision backend's workers read through a `SampleReader`, so a folder and a packed data
set look alike to them; the DALI feed reads shards through it too (`read_into`), while DALI
reads a folder's files itself. Shards are read with `os.pread`: no extraction, nothing mapped
into the process, so the page cache holds the bytes and the process's memory stays flat however
large the data set.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from .index import SampleIndex, ShardLocations


class SampleReader:
    """The encoded bytes of sample i. Picklable: each DataLoader worker opens its own files.

    Paths are kept as one numpy array of bytes, not a tuple of str: forked workers that touch
    Python objects copy their memory pages (reference counts are writes), which at a million
    paths costs each worker a private copy of every path.
    """

    def __init__(
        self, paths: Sequence[str] | np.ndarray, locations: ShardLocations | None = None
    ) -> None:
        self.paths = paths if isinstance(paths, np.ndarray) else _as_bytes_array(paths)
        self.locations = locations
        self._fds: dict[int, int] = {}
        self._opening = threading.Lock()
        self._pid = os.getpid()

    def read(self, i: int) -> bytes:
        where = self.locations
        if where is None:
            with open(bytes(self.paths[i]), "rb") as f:
                return f.read()
        shard, size = int(where.shard_ids[i]), int(where.sizes[i])
        data = os.pread(self._fd(shard), size, int(where.offsets[i]))  # one copy, no buffer
        if len(data) != size:
            raise OSError(f"{where.shards[shard]} ended early: truncated after it was checked")
        return data

    def read_into(self, buffer: np.ndarray, starts: np.ndarray, samples: np.ndarray) -> None:
        """Samples of a packed set into `buffer`, each from its start, without a bytes object:
        one Python call for many (a `preadv` each), as the Python spent per sample holds the GIL."""
        where = self.locations
        assert where is not None, "read_into reads shards"
        view = buffer.data
        sizes = where.sizes[samples].tolist()
        shards, offsets = where.shard_ids[samples].tolist(), where.offsets[samples].tolist()
        for start, size, shard, offset in zip(starts.tolist(), sizes, shards, offsets, strict=True):
            if os.preadv(self._fd(shard), [view[start : start + size]], offset) != size:
                raise OSError(f"{where.shards[shard]} ended early: truncated after it was checked")

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked: descriptors are shared offsets no more, reopen
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            assert self.locations is not None
            with self._opening:  # read threads ask at once: one descriptor a shard
                fd = self._fds.get(shard)
                if fd is None:
                    fd = self._fds[shard] = os.open(self.locations.shards[shard], os.O_RDONLY)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __getstate__(self) -> dict[str, object]:
        return {"paths": self.paths, "locations": self.locations}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["paths"], state["locations"])  # type: ignore[misc, arg-type]


def _as_bytes_array(paths: Sequence[str]) -> np.ndarray:
    return np.array([os.fsencode(path) for path in paths], dtype=np.bytes_)


def reader_for(index: SampleIndex) -> SampleReader:
    return SampleReader(index.paths, index.locations)
