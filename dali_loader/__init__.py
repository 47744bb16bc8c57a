"""dali-loader: a DataLoader-like loader for image folders, NVIDIA DALI on the GPU.

Importing this package never imports DALI; the DALI backends import it when they are built.
"""

from .base import BaseLoader
from .check import CheckReport, check_dataset
from .errors import BackendUnavailableError, ConfigError, DaliLoaderError, DatasetError
from .factory import create_loader
from .index import SampleIndex, build_index
from .iterator import DaliLoader
from .pack import pack
from .spec import LoaderSpec

__all__ = [
    "BackendUnavailableError",
    "BaseLoader",
    "CheckReport",
    "ConfigError",
    "DaliLoader",
    "DaliLoaderError",
    "DatasetError",
    "LoaderSpec",
    "SampleIndex",
    "TorchvisionLoader",
    "build_index",
    "check_dataset",
    "create_loader",
    "pack",
]


def __getattr__(name: str) -> object:
    # The fallback package builds on this one, so it is imported on first use, not here.
    if name == "TorchvisionLoader":
        from fallback import TorchvisionLoader

        return TorchvisionLoader
    raise AttributeError(f"module 'dali_loader' has no attribute {name!r}")
