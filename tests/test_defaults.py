"""Defaults a GPU node can live with: threads per rank, not every core per process."""

from __future__ import annotations

import os

import pytest

from dali_loader.backends import default_num_threads


@pytest.mark.parametrize(
    ("usable", "local_ranks", "expected"),
    [
        (16, None, 16),
        (16, "1", 16),
        (16, "8", 2),
        (16, "32", 1),
        (16, "abc", 16),  # not a number: as if unset, with a warning
        (16, "\u00b2", 16),  # a digit to str.isdigit, not to int()
        (16, "0", 16),
        (2, "8", 2),  # pinned to 2 of the 16 cores (taskset, SLURM): they are this rank's
        (4, "2", 4),
    ],
)
def test_threads_are_this_ranks_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch, usable: int, local_ranks: str | None, expected: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(usable)))
    if local_ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)  # as torchrun sets it
    assert default_num_threads() == expected
