"""`DaliLoader`: the DataLoader-like adapter over a DALI pipeline and `DALIGenericIterator`.

The sampler's batches are fed to the pipeline through `external_source` (`dali_loader.feed`),
so the epoch ends exactly when they run out: the final partial batch holds only real samples,
with no padding duplicates and no reader buffer deciding the order. DALI is imported when a
loader is built, never at package import, so machines without DALI can still import dali_loader.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .base import TORCH_DTYPES, BaseLoader, Batch
from .errors import DatasetError
from .feed import feed_for
from .source import CheckedIndex
from .spec import LoaderSpec


class DaliLoader(BaseLoader):
    """Batches decoded and augmented by DALI: on the GPU (`backend="dali"`) or the CPU ("dali-cpu").

    Build it with `create_loader(..., backend="dali")`; the arguments here are already resolved.
    """

    def __init__(
        self,
        checked: CheckedIndex,
        spec: LoaderSpec,
        device: torch.device,
        *,
        num_threads: int,
        prefetch_queue_depth: int = 2,
        decode: bool = True,
    ) -> None:
        """`decode=False` delivers the encoded sizes and the drawn parameters instead of
        images: the input path alone (`dali-loader bench --feed-only`)."""
        super().__init__(checked, spec, device)
        spec = self.spec  # checked against the images: the output size, whether crops pad
        from .pipeline import build_or_explain, define_pipeline

        self.backend = "dali" if device.type == "cuda" else "dali-cpu"
        self._decode = decode
        self._feed = feed_for(
            checked.index,
            spec,
            self._labels,
            read_paths=checked.read_paths,
            prefetch_queue_depth=prefetch_queue_depth,
            threads=num_threads,
        )
        weakref.finalize(self, self._feed.close)
        device_id = device.index if device.type == "cuda" else None
        feed = self._feed  # not `self`: a closure over the loader would keep it in a cycle

        def new_pipeline() -> Any:
            pipe = define_pipeline(
                spec,
                feed,
                inputs=feed.inputs,
                device_id=device_id,
                num_threads=num_threads,
                prefetch_queue_depth=prefetch_queue_depth,
                decode=decode,
            )
            return build_or_explain(pipe)

        self._new_pipeline = new_pipeline
        self._pipe = new_pipeline()
        self._iterator: Any = None
        self._mid_epoch = False
        # DALI stops a pipeline at its first error and refuses it every run after: the next
        # epoch builds another (it meets the same file, and names it, if the fault stays)
        self._failed = False
        # Samples DALI reads through a converted copy: (the file, its copy).
        paths = checked.read_paths or checked.index.paths
        self._copies = [(a, b) for a, b in zip(checked.index.paths, paths, strict=True) if a != b]

    def _iter_epoch(self, batches: list[np.ndarray], epoch: int) -> Iterator[Batch]:
        self._refuse_stale_copies()
        if self._failed:  # the old one goes first (on a GPU, its memory)
            self._pipe = self._iterator = None
            self._pipe = self._new_pipeline()
            self._failed = False
        self._feed.start(batches, epoch)
        if self._iterator is None:
            from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

            # No reader: the feed's StopIteration ends the epoch, and the iterator must not
            # prefetch before the user picks the epoch with set_epoch.
            self._iterator = DALIGenericIterator(
                [self._pipe],
                ["images", "labels", "sizes"] if self._decode else ["images", "labels"],
                last_batch_policy=LastBatchPolicy.PARTIAL,
                auto_reset=False,
                prepare_first_batch=False,
            )
        else:
            self._iterator.reset()
        self._mid_epoch = True
        try:
            for batch, outputs in zip(batches, self._iterator, strict=True):
                if self._decode:
                    self._refuse_changed_sizes(batch, outputs[0]["sizes"])
                yield self._to_batch(outputs[0]["images"], outputs[0]["labels"])
        except Exception:
            self._failed, self._mid_epoch = True, False
            raise
        self._mid_epoch = False

    def _refuse_stale_copies(self) -> None:
        """A converted copy stands for its file as the file was when checked: a file changed
        since (or a copy the cache lost) would be read stale or fail without its name."""
        changed = self._changed_since_check([a for a, _ in self._copies])
        gone = [b for _, b in self._copies if not os.path.exists(b)]
        if changed or gone:
            listed = "\n".join(
                [f"  {path}: changed since the check" for path in changed[:5]]
                + [f"  {path}: the converted copy is gone (a cleaned cache?)" for path in gone[:5]]
            )
            raise DatasetError(
                f"DALI reads {len(self._copies)} file(s) of this data set through converted "
                f"copies, and some no longer stand for their file:\n{listed}\nCreate the loader "
                "again: it checks the files and makes their copies again."
            )

    def _refuse_changed_sizes(self, batch: np.ndarray, decoded: torch.Tensor) -> None:
        """The crops were drawn for the sizes the check recorded: a file decoded at another size
        changed since, and its crop would be silently wrong (the torchvision backend refuses it
        the same way)."""
        recorded = self.dataset.sizes
        assert recorded is not None
        found = decoded.numpy()[:, 1::-1]  # (height, width, channels) -> (width, height)
        wrong = np.flatnonzero((found != recorded[batch]).any(axis=1))
        if len(wrong):
            named = "\n".join(
                f"  {self.dataset.paths[batch[k]]}: {found[k].tolist()} (width, height), the "
                f"check recorded {recorded[batch[k]].tolist()}"
                for k in wrong[:5]
            )
            raise DatasetError(
                f"{len(wrong)} image(s) of this batch are not the size the check recorded: "
                f"they changed since.\n{named}\nCreate the loader again: it checks them again."
            )

    def _end_abandoned_epoch(self) -> None:
        """After a `break`, drain the batches DALI already prefetched so the next epoch is clean."""
        if not self._mid_epoch:
            return
        self._mid_epoch = False
        self._feed.stop()
        try:
            for _ in self._iterator:
                pass
        except Exception:  # a prefetched batch failed: nobody asked for it; a new pipeline
            self._failed = True  # meets the file again in the next epoch, and names it

    def _to_batch(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        """DALI's outputs as the contract has them; labels are int64 (N,) on the device already."""
        if not self._decode:
            return images, labels
        if self.spec.channels_last:
            images = images.permute(0, 3, 1, 2)  # HWC from DALI is channels_last memory already
        wanted = TORCH_DTYPES[self.spec.dtype]
        if images.dtype != wanted:
            images = images.to(wanted)
        return images, labels
