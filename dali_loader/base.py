"""What every backend's loader shares: epochs, length, classes, the DataLoader-like surface.

A backend only turns one epoch's batches of sample indices into (images, labels) tensors; the
order, the epoch counter and `len()` live here, so no backend can disagree on them.
"""

from __future__ import annotations

import numbers
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .cache import file_stamp
from .errors import ConfigError, DaliLoaderError, DatasetError
from .sampler import check_shardable, epoch_order, num_batches, shard_batches
from .source import CheckedIndex
from .spec import LoaderSpec
from .stats import EpochStats, timed

Batch = tuple[torch.Tensor, torch.Tensor]

STATE_VERSION = 1

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _changed_files_message(changed: list[str]) -> str:
    listed = "\n".join(f"  {path}" for path in changed[:5])
    more = f"\n  ... and {len(changed) - 5} more" if len(changed) > 5 else ""
    return (
        f"reading a batch failed, and {len(changed)} file(s) of this epoch changed after the "
        f"loader checked them:\n{listed}{more}\nRestore or fix them, then create the loader "
        "again: it checks them again (on_bad_file='skip' leaves bad files out)."
    )


class BaseLoader:
    """Iterate `(images, labels)` batches epoch after epoch, like a torch DataLoader.

    images: (N, C, H, W) normalized (C = 1 after Grayscale(1), else 3), `spec.dtype`, on
    `device` (channels_last memory format when asked); labels: int64 (N,), on the same device.
    A plain `for` loop starts a new epoch each time; `set_epoch(e)` picks the epoch (and so the
    shuffle order) of the next loop.
    """

    backend: str = ""

    def __init__(self, checked: CheckedIndex, spec: LoaderSpec, device: torch.device) -> None:
        index = checked.index
        if index.sizes is not None:
            spec = spec.with_source_sizes(index.sizes, index.paths)
        if not spec.resolved:
            raise ConfigError(
                "the spec's output size depends on the images': build it with "
                "spec.with_source_sizes(index.sizes, index.paths) (create_loader does)"
            )
        check_shardable(len(index), spec)
        self.dataset = index
        self.spec = spec
        self.device = device
        self._labels = np.asarray(index.labels, dtype=np.int32)
        self._epoch = 0
        self._resume_at = 0  # batches of epoch `_epoch` already delivered before a restore
        self._position: tuple[int, int] | None = None  # (epoch, batches handed over) in a loop
        self._stats: EpochStats | None = None
        self._live: object | None = None  # the token of the iterator now delivering
        self.bad_files = dict(checked.bad_files)  # left out under on_bad_file="skip": why
        # A read that fails on a file changed since the check is the data's fault, and named.
        self._checked_ns = checked.checked_ns

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
        """Deliver epoch `epoch` next (its shuffle order), as `DistributedSampler.set_epoch`.

        Setting the epoch a restored state is in keeps its resume point; any other starts fresh.
        """
        if not isinstance(epoch, numbers.Integral) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        epoch = int(epoch)
        if epoch != self._epoch:
            self._resume_at = 0
        self._epoch = epoch

    def __len__(self) -> int:
        return num_batches(len(self.dataset), self.spec)

    def __iter__(self) -> Iterator[Batch]:
        # The newest iter(loader) delivers, as a DataLoader's newest iterator does: taken here,
        # at iter(), not when its first batch is asked for.
        self._live = live = object()
        return self._deliver(live)

    def _deliver(self, live: object) -> Iterator[Batch]:
        if self._live is not live:
            raise ConfigError(
                "this iterator over the loader was superseded before its first batch: a newer "
                "iter(loader) delivers. A loader delivers one epoch at a time; create a second "
                "loader to read two streams at once"
            )
        epoch, start = self._epoch, self._resume_at
        self._epoch, self._resume_at = epoch + 1, 0
        batches = shard_batches(epoch_order(len(self.dataset), self.spec, epoch), self.spec)[start:]
        self._end_abandoned_epoch()  # before the clock: not this epoch's wait
        self._position = (epoch, start)
        self._stats = EpochStats(epoch)
        try:
            for batch in timed(self._iter_epoch(batches, epoch), self._stats, len(batches)):
                self._position = (epoch, self._position[1] + 1)  # counted when handed over
                yield batch
                if self._live is not live:
                    raise ConfigError(
                        "this iterator over the loader was superseded: a newer iter(loader) "
                        f"started another epoch while it was in epoch {epoch}. A "
                        "loader delivers one epoch at a time, as its backend's workers and "
                        "pipeline are one; create a second loader to read two streams at once"
                    )
        except GeneratorExit:  # the loop broke out: the next loop starts the next epoch
            if self._live is live:
                self._position = None
            raise
        except DaliLoaderError as error:
            traceback.clear_frames(error.__traceback__)  # see below
            raise
        except Exception as error:  # a worker's or DALI's: did a file change since the check?
            # The backend's frames can hold the error in a reference cycle (torch's
            # ExceptionWrapper.reraise keeps it in a local); cleared, the loader and its
            # workers go when it is dropped, not when the garbage collector finds them (then
            # torch's iterator closes its queues first and waits 5 s for each worker).
            traceback.clear_frames(error.__traceback__)
            samples = np.concatenate(batches) if batches else np.empty(0, int)
            changed = self._changed_since_check(self.dataset.files(samples))
            if not changed:
                raise
            raise DatasetError(_changed_files_message(changed)) from error
        self._position = None

    def _changed_since_check(self, files: list[str]) -> list[str]:
        """Those of `files` modified (or gone) since the check: a read of them that fails
        mid-epoch is the data's fault, not a bug."""
        return [
            path
            for path in files
            if (stamp := file_stamp(path)) is None or max(stamp[1:]) > self._checked_ns
        ]

    def stats(self) -> EpochStats | None:
        """How long the training loop waited for data in the current (or last) epoch: is it
        input-bound? Also logged at the end of each epoch on the "dali_loader" logger, as
        "epoch 3: waited 12.3 s of 61.0 s for data (20%) ...". None before the first loop."""
        return self._stats

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: small plain data (JSON-safe), for `load_state_dict`.

        Taken inside an epoch after k batches, a restored loader delivers exactly the rest of
        that epoch, then the next epochs as this one would.
        """
        if self._position is not None and self._position[1] < len(self):
            epoch, done = self._position
        else:
            epoch, done = self._epoch, self._resume_at
        return {
            "format": "dali-loader/state",
            "version": STATE_VERSION,
            "epoch": epoch,
            "batches_done": done,
            "dataset": self._fingerprint(),
            "order": self._order_config(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`; refuses a state from another data set or order."""
        if not isinstance(state, dict) or state.get("format") != "dali-loader/state":
            raise ConfigError("not a dali-loader state: pass what loader.state_dict() returned")
        if state.get("version") != STATE_VERSION:
            raise ConfigError(
                f"state version {state.get('version')!r} is not {STATE_VERSION}; it was saved "
                "by another dali-loader version"
            )
        if state["dataset"] != self._fingerprint():
            raise ConfigError(
                f"the state was saved for another data set ({state['dataset']['samples']} "
                f"samples, fingerprint {state['dataset']['sha1'][:12]}), this loader has "
                f"{len(self.dataset)} samples (fingerprint {self._fingerprint()['sha1'][:12]})"
            )
        ours = self._order_config()
        changed = [
            f"{k}: {state['order'].get(k)!r} -> {v!r}"
            for k, v in ours.items()
            if state["order"].get(k) != v
        ]
        if changed:
            raise ConfigError(
                "the state was saved with another order configuration ("
                + ", ".join(changed)
                + "); resume with the same batch_size, shuffle, drop_last, seed and shards"
            )
        if not 0 <= state["batches_done"] <= len(self):
            raise ConfigError(f"batches_done={state['batches_done']} is outside 0..{len(self)}")
        self._epoch, self._resume_at = int(state["epoch"]), int(state["batches_done"])

    def _order_config(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "batch_size": spec.batch_size,
            "shuffle": spec.shuffle,
            "drop_last": spec.drop_last,
            "seed": spec.seed,
            "shard_id": spec.shard_id,
            "num_shards": spec.num_shards,
        }

    def _fingerprint(self) -> dict[str, Any]:
        return {"samples": len(self.dataset), "sha1": self.dataset.sha1}

    def _iter_epoch(self, batches: list[np.ndarray], epoch: int) -> Iterator[Batch]:
        raise NotImplementedError

    def _end_abandoned_epoch(self) -> None:
        """Settle what an epoch left early (a `break`) left in flight; nothing by default."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backend={self.backend!r}, samples={len(self.dataset)}, "
            f"classes={len(self.dataset.classes)}, batch_size={self.spec.batch_size}, "
            f"train={self.spec.train}, device={str(self.device)!r})"
        )
