"""dali-loader: a DataLoader-like loader for image folders, NVIDIA DALI on the GPU.

Importing this package never imports DALI; the DALI backends import it when they are built.
"""

from fallback import TorchvisionLoader

from .base import BaseLoader
from .check import CheckReport, check_dataset
from .errors import BackendUnavailableError, ConfigError, DaliLoaderError, DatasetError
from .factory import create_loader
from .index import SampleIndex, build_index
from .iterator import DaliLoader
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
]
