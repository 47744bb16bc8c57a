"""The exceptions a user can catch; each message names the value or path and the fix."""

from __future__ import annotations


class DaliLoaderError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(DaliLoaderError, ValueError):
    """An argument is out of range or a combination is impossible."""


class DatasetError(DaliLoaderError, ValueError):
    """The source cannot be read as a data set: missing root, no classes, no images."""


class BackendUnavailableError(DaliLoaderError, RuntimeError):
    """The requested backend cannot run here (no CUDA, or DALI not installed)."""
