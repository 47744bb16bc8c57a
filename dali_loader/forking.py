"""Starting worker processes by fork without handing them the parent's garbage to finalize.

A forked child inherits every object of its parent, unreachable ones included. When the child's
garbage collector frees one of those, its finalizer runs in a process that has only one thread:
a DALI pipeline's finalizer waits for its worker threads, which do not exist there, and the
child hangs (seen: a torchvision-backend worker frozen in `Pipeline.__del__` after an earlier
dali-cpu loader was dropped). Frozen objects are never collected, so:

- `forking()` freezes the parent's objects around the call that forks our own workers (the
  parent unfreezes at once, unless they were frozen already: a user's own `gc.freeze()`);
- `freeze_in_forked_children()`, once a process defines DALI pipelines, has every child it
  forks (a user's DataLoader or Pool too) freeze what it inherited as it starts.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

_registered = False


@contextmanager
def forking() -> Iterator[None]:
    """Around the call that forks workers (`iter(DataLoader)`, a process pool's first submit)."""
    frozen_before = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


def freeze_in_forked_children() -> None:
    """From now on, each child forked by this process freezes what it inherited, first thing."""
    global _registered
    if not _registered:
        os.register_at_fork(after_in_child=gc.freeze)
        _registered = True
