"""Defaults a GPU node can live with: threads per rank, not every core per process."""

from __future__ import annotations

import os

import pytest

from dali_loader.backends import default_num_threads


@pytest.mark.parametrize(("local_ranks", "expected"), [(None, 16), ("1", 16), ("8", 2), ("32", 1)])
def test_threads_are_this_ranks_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch, local_ranks: str | None, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    if local_ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)  # as torchrun sets it
    assert default_num_threads() == expected
