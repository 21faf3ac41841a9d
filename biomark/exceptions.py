"""Errors raised by biomark.

Every message says *which* file or setting is at fault, *what* is wrong and
*what to do*. Library code raises these (never a bare ``Exception``) and
re-raises errors from third-party libraries with ``raise ... from err``,
adding the file, fold or setting that was being processed.
"""

from __future__ import annotations

__all__ = [
    "BiomarkError",
    "ClusterError",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "ImageReadError",
    "ManifestError",
    "NotWritableError",
    "RemoteError",
    "RunError",
    "WeightsError",
]


class BiomarkError(Exception):
    """Base class of every error biomark raises on purpose."""


class ClusterError(BiomarkError):
    """The Dask cluster cannot be reached or its workers cannot run biomark's jobs."""


class RemoteError(BiomarkError, OSError):
    """Storage at an fsspec URL failed mid-operation (connection, permission, quota)."""


class ConfigError(BiomarkError, ValueError):
    """An analysis plan, recipe or command-line setting is invalid."""


class DataError(BiomarkError, ValueError):
    """Input data (files, folders, tables) is missing or malformed."""


class DiskFullError(BiomarkError):
    """A write ran out of space (``ENOSPC``/``EDQUOT``); the message says how much was needed
    where."""


class NotWritableError(BiomarkError):
    """A folder biomark must write into is read-only or not permitted
    (``EROFS``/``EACCES``/``EPERM``)."""


class ImageReadError(DataError):
    """One image file could not be read or decoded."""


class ManifestError(DataError):
    """A manifest table is missing columns, rows or referenced files."""


class RunError(BiomarkError):
    """A run folder is incomplete or inconsistent (missing folds, strategies)."""


class WeightsError(BiomarkError):
    """Pretrained weights are not available (no network, no local file)."""
