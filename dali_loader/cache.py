"""Where dali-loader keeps what it computes once: check verdicts, converted copies, verified
shards. $DALI_LOADER_CACHE, else ~/.cache/dali-loader: never inside the (maybe read-only) data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("DALI_LOADER_CACHE", Path.home() / ".cache" / "dali-loader"))


def file_stamp(path: str) -> list[int] | None:
    """[size, mtime_ns]: what says a file changed since a verdict about it; None if missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def write_atomic(path: Path, text: str) -> None:
    """Write `text` so that `path` is either the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".partial") as f:
        f.write(text)
    os.replace(f.name, path)
