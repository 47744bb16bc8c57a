"""From a source to the index a loader reads: one entry for a folder, `(paths, labels)` and a
packed set, and what the check found, handed to the loader's constructor.

A folder or a list is checked (`dali_loader.check`: every file decoded once, cached); a packed
set was checked when it was packed, and its shards are verified against their checksums.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TypeGuard

from .check import CheckReport, apply_policy, check_dataset, deep_files_message
from .index import SampleIndex, Source, build_index
from .packing import index_packed, is_packed
from .spec import DEFAULT_MAX_PIXELS

logger = logging.getLogger("dali_loader")


@dataclass(frozen=True)
class CheckedIndex:
    """The samples a loader reads (bad files raised or left out), what was left out and why,
    the file DALI decodes for each sample where a converted copy stands in for it, and when
    the files were checked: a read that fails on a file changed since is the data's fault."""

    index: SampleIndex
    bad_files: dict[str, str] = field(default_factory=dict)
    read_paths: tuple[str, ...] | None = None  # per sample; None when every file is read as is
    checked_ns: int = field(default_factory=time.time_ns)


def open_source(
    source: Source,
    *,
    on_bad_file: str = "raise",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    probe_dali: bool = False,
    device_id: int | None = None,
    progress: bool = True,
) -> CheckedIndex:
    """The checked index of a folder, `(paths, labels)` or packed set (see the module doc)."""
    checked_ns = time.time_ns()
    if _packed(source):
        return CheckedIndex(index_packed(source), checked_ns=checked_ns)
    index = build_index(source)
    report = check_dataset(
        index,
        max_pixels=max_pixels,
        probe_dali=probe_dali,
        device_id=device_id,
        progress=progress,
    )
    index = apply_policy(index, report, on_bad_file)
    if report.deep:
        logger.warning("dali_loader: %s", deep_files_message(report.deep))
    read_paths = tuple(report.copies.get(p, p) for p in index.paths) if report.copies else None
    return CheckedIndex(index, dict(report.bad), read_paths, checked_ns)


def check_source(
    source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, use_cache: bool = True
) -> CheckReport:
    """What `dali-loader check` reports: every file of a folder or list checked, or a packed
    set's shards verified against their checksums (its files were checked when packed)."""
    if _packed(source):
        index = index_packed(source)
        shards = len(index.locations.shards) if index.locations else 0
        return CheckReport(source=str(source), num_files=len(index), verified_shards=shards)
    return check_dataset(source, max_pixels=max_pixels, use_cache=use_cache)


def _packed(source: Source) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(source, (str, os.PathLike)) and is_packed(source)
