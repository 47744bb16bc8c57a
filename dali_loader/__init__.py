"""dali-loader: a DataLoader-like loader for image folders, NVIDIA DALI on the GPU.

Importing this package imports neither DALI nor torch: each public name is imported on first
use, so the command line starts at once and machines without DALI can still import it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import BackendUnavailableError, ConfigError, DaliLoaderError, DatasetError

if TYPE_CHECKING:
    from fallback import TorchvisionLoader

    from .base import BaseLoader
    from .check import CheckReport, check_dataset
    from .factory import create_loader
    from .index import SampleIndex, build_index
    from .iterator import DaliLoader
    from .packing import pack
    from .spec import LoaderSpec
    from .stats import EpochStats

# Public name -> the module that defines it.
_LAZY = {
    "BaseLoader": "dali_loader.base",
    "CheckReport": "dali_loader.check",
    "check_dataset": "dali_loader.check",
    "create_loader": "dali_loader.factory",
    "SampleIndex": "dali_loader.index",
    "build_index": "dali_loader.index",
    "DaliLoader": "dali_loader.iterator",
    "pack": "dali_loader.packing",
    "LoaderSpec": "dali_loader.spec",
    "EpochStats": "dali_loader.stats",
    # The fallback package builds on this one, so it is imported on first use too.
    "TorchvisionLoader": "fallback",
}

__all__ = [
    "BackendUnavailableError",
    "BaseLoader",
    "CheckReport",
    "ConfigError",
    "DaliLoader",
    "DaliLoaderError",
    "DatasetError",
    "EpochStats",
    "LoaderSpec",
    "SampleIndex",
    "TorchvisionLoader",
    "build_index",
    "check_dataset",
    "create_loader",
    "pack",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dali_loader' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
