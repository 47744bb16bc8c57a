"""Starting worker processes by fork without handing them the parent's garbage.

A forked child inherits every object of its parent, unreachable ones included. When the child's
garbage collector frees one of those, its finalizer runs in a process that has only one thread:
a DALI pipeline's finalizer waits for its worker threads, which do not exist there, and the
child hangs before its first task (seen: a torchvision-backend worker frozen in
`Pipeline.__del__` after an earlier dali-cpu loader was dropped). Frozen objects are never
collected, so a child never finalizes what it inherited; the parent unfreezes at once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def forking() -> Iterator[None]:
    """Around the call that forks workers (`iter(DataLoader)`, a process pool's first submit)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
