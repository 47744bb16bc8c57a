"""Where dali-loader keeps what it computes once: check verdicts, converted copies, verified
shards. $DALI_LOADER_CACHE, else ~/.cache/dali-loader: never inside the (maybe read-only) data.

Where that folder cannot be written (a read-only home, a user without one, a full disk), the
process uses a folder of its own under the temp dir instead, and says so once: a cache is an
optimization, never a reason to stop.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger("dali_loader")

# Files this package writes for others to read (a packed set's manifest, say) get the usual
# permissions, not the 0600 of a temp file: read once, as the umask cannot be read alone.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def cache_dir() -> Path:
    """The cache folder: the configured one if it can be written, else a temp one (warned)."""
    configured = os.environ.get("DALI_LOADER_CACHE")
    if configured:
        return _usable(configured)
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return _usable("")
    return _usable(str(home / ".cache" / "dali-loader"))


@functools.cache
def _usable(wanted: str) -> Path:
    problem = "no home folder" if not wanted else _cannot_write(Path(wanted))
    if problem is None:
        return Path(wanted)
    fallback = Path(tempfile.mkdtemp(prefix="dali-loader-cache-"))  # private, this process's
    atexit.register(_remove_in, os.getpid(), fallback)
    logger.warning(
        "dali_loader: cannot use the cache folder %s (%s); this process uses %s instead, "
        "removed when it exits normally, so the check's verdicts are not kept for later runs. Set "
        "DALI_LOADER_CACHE to a writable folder.",
        wanted or "~/.cache/dali-loader",
        problem,
        fallback,
    )
    return fallback


def _remove_in(pid: int, folder: Path) -> None:
    """At exit, the process that made the folder removes it (not a child forked from it)."""
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def _cannot_write(folder: Path) -> str | None:
    """Why no file can be written in `folder`, or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def file_stamp(path: str) -> list[int] | None:
    """[size, mtime_ns, ctime_ns]: what says a file changed since a verdict about it; None if
    missing. The ctime catches what size and mtime miss: a file rewritten in place with its old
    mtime put back, or made unreadable (chmod)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def write_atomic(path: Path, text: str) -> None:
    """Write `text` so that `path` is either the old file or the whole new one, never half;
    nothing is left behind when writing fails (a full disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, suffix=".partial")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(partial, 0o666 & ~_UMASK)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
