"""Which backends exist on this machine, and why "auto" picks the one it picks.

Nothing here imports DALI: finding it installed is enough to offer it. Torch is imported where
it is needed, so the command line starts without it (`dali-loader --help`).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import TYPE_CHECKING

from .errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("dali_loader")

BACKENDS = ("dali", "dali-cpu", "torchvision")

_INSTALL_DALI = (
    "install DALI with `pip install 'dali-loader[cuda12]'` (CUDA 12) or "
    "`pip install 'dali-loader[cuda13]'` (CUDA 13)"
)


def dali_installed() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(requested: str) -> str:
    """The backend to build for `requested`; raises with the fix when it cannot run here."""
    if requested == "auto":
        backend, why = pick_auto()
        logger.info("backend='auto' chose %r: %s", backend, why)
        return backend
    if requested not in BACKENDS:
        raise ConfigError(
            f"unknown backend {requested!r}; choose one of 'auto', {', '.join(map(repr, BACKENDS))}"
        )
    if requested.startswith("dali") and not dali_installed():
        raise BackendUnavailableError(
            f"backend={requested!r} needs NVIDIA DALI, which is not installed: {_INSTALL_DALI}; "
            "or use backend='torchvision'"
        )
    if requested == "dali" and not cuda_available():
        raise BackendUnavailableError(
            "backend='dali' decodes on a CUDA GPU, and torch sees none "
            "(torch.cuda.is_available() is False); use backend='dali-cpu' for DALI on the CPU, "
            "or backend='auto'"
        )
    return requested


def pick_auto() -> tuple[str, str]:
    """The backend "auto" resolves to here, and why."""
    import torch

    if not cuda_available():
        return "torchvision", "no CUDA GPU visible (torch.cuda.is_available() is False)"
    if not dali_installed():
        return "torchvision", f"CUDA is available but DALI is not installed; {_INSTALL_DALI}"
    return "dali", f"CUDA is available ({torch.cuda.get_device_name()}) and DALI is installed"


def default_num_threads() -> int:
    """DALI's threads or the fallback's workers per process: this rank's share of the cores.

    Under torchrun every rank of a node sees every core; taking them all, 8 ranks would each
    start a thread per core (and DALI's GPU decoder reserves memory per thread). A rank already
    pinned to its own cores (SLURM's --cpus-per-task, taskset) keeps them all.
    """
    usable = len(os.sched_getaffinity(0))
    share = (os.cpu_count() or usable) // local_world_size()
    return max(1, min(usable, share))


def local_world_size() -> int:
    """Processes sharing this machine, as torchrun (and torch.distributed's launchers) say in
    LOCAL_WORLD_SIZE; 1 without it."""
    value = os.environ.get("LOCAL_WORLD_SIZE")
    if value is None:
        return 1
    try:
        ranks = int(value)
    except ValueError:
        ranks = 0
    if ranks < 1:
        _warn_once(f"LOCAL_WORLD_SIZE={value!r} is not a positive integer: taken as 1")
        return 1
    return ranks


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning("dali_loader: %s", message)


def default_cuda_device() -> torch.device:
    """This process's GPU: LOCAL_RANK's under torchrun, else the current device."""
    import torch

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and int(local_rank) < torch.cuda.device_count():
        return torch.device("cuda", int(local_rank))
    return torch.device("cuda", torch.cuda.current_device())


def runnable_backends() -> list[str]:
    """Every backend that can run on this machine, fastest last."""
    runnable = ["torchvision"]
    if dali_installed():
        runnable.append("dali-cpu")
        if cuda_available():
            runnable.append("dali")
    return runnable


def synchronize(device: torch.device) -> None:
    """GPU work is asynchronous: wait for it before reading a clock."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
