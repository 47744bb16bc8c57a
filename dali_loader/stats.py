"""Is training input-bound? How long the training loop waited for each epoch's batches.

The clock runs on the host, in the loop's own thread: "waited" is the time spent inside the
loader's `next()` (the loop asked and had no batch yet), "held" the time between batches (the
loop's own work). A GPU loop that queues work asynchronously shows its GPU time where it
synchronizes (`loss.item()`, say), so it counts as held: the loop was busy, not waiting for data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger("dali_loader")

T = TypeVar("T")


@dataclass
class EpochStats:
    """The waits of one epoch (or of the part of it that ran)."""

    epoch: int
    batches: int = 0
    waited_s: float = 0.0  # inside next(): the loop had asked and no batch was ready
    elapsed_s: float = 0.0  # from the first request to the epoch's end (so far, while it runs)
    first_batch_s: float = 0.0  # the first wait alone: start-up, workers, warm caches
    finished: bool = False  # False while running, and for an epoch left early
    failed: bool = False  # the epoch ended with an error

    @property
    def held_s(self) -> float:
        """The loop's own time with the batches: elapsed minus waited."""
        return self.elapsed_s - self.waited_s

    @property
    def waited_fraction(self) -> float:
        return self.waited_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        left = (
            ""
            if self.finished
            else " (failed)"
            if self.failed
            else " (left early)"
            if self.batches
            else " (no batch yet)"
        )
        return (
            f"epoch {self.epoch}: waited {self.waited_s:.1f} s of {self.elapsed_s:.1f} s for "
            f"data ({self.waited_fraction:.0%}) over {self.batches} batches{left}; the first "
            f"batch took {self.first_batch_s:.2f} s"
        )


def timed(batches: Iterator[T], stats: EpochStats, expected: int) -> Iterator[T]:
    """Yield `batches` (`expected` of them), recording in `stats` how long each was waited for
    and held. An epoch whose every batch was handed over is finished, whether or not the loop
    asks for the end (`zip(range(n), loader)` does not)."""
    start = asked = time.perf_counter()
    try:
        for batch in batches:
            now = time.perf_counter()
            if stats.batches == 0:
                stats.first_batch_s = now - asked
            stats.waited_s += now - asked
            stats.batches += 1
            stats.elapsed_s = now - start
            stats.finished = stats.batches == expected
            yield batch
            asked = time.perf_counter()
            stats.elapsed_s = asked - start
        stats.waited_s += time.perf_counter() - asked  # the wait for the epoch's end counts too
        stats.finished = True
    except Exception:
        stats.failed = True
        raise
    finally:  # a loop that breaks out held its last batch until now
        stats.elapsed_s = time.perf_counter() - start
        logger.info("dali_loader: %s", stats)
