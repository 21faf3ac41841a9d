"""Dataset folders at an fsspec URL: a local, content-keyed copy to read from.

A built dataset (:mod:`biomark.data.dataset`) is read through a memory map, so
a dataset at ``s3://...`` (or any fsspec URL) is first copied to local disk:
its top-level files (``manifest.csv``, ``build.json``, ...) and its ``cache/``
folder; raw images and analysis outputs in sub-folders are left where they are.

The copy lives under ``<cache>/datasets/<url key>/<content key>/``
(:func:`biomark.io.remote.local_cache_dir`), where the content key is a hash of
the remote ``manifest.csv`` and ``cache/cache.json``: a rebuilt dataset gets a
fresh copy, an unchanged one is reused (files of the right size are not
downloaded again). Clients and cluster workers use the same function, each on
its own disk.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from biomark.data.dataset import dataset_paths
from biomark.exceptions import DataError
from biomark.io.remote import RemoteFolder, local_cache_dir, redact, url_key

__all__ = ["dataset_copy_dir", "mirror_dataset"]

logger = logging.getLogger(__name__)

_MANIFEST = "manifest.csv"
_CACHE_INFO = "cache/cache.json"


def dataset_copy_dir(url: str, cache_root: str | Path | None = None) -> Path:
    """The folder holding the local copies of the dataset at ``url`` (one per content)."""
    return Path(cache_root or local_cache_dir()) / "datasets" / url_key(url)


def mirror_dataset(url: str, cache_root: str | Path | None = None) -> Path:
    """A local copy of the dataset folder at ``url``, downloading only what is missing.

    Parameters
    ----------
    url : str
        fsspec URL of a dataset folder written by ``biomark data build`` /
        ``biomark data phantom`` (copied there as a whole).
    cache_root : path, optional
        Default :func:`biomark.io.remote.local_cache_dir`.

    Returns
    -------
    Path
        The local dataset folder (readable with :func:`biomark.data.dataset.load_dataset`).

    Raises
    ------
    DataError
        No ``manifest.csv`` at ``url``.
    ConfigError
        The URL's file system cannot be opened (unknown protocol, missing package).
    """
    remote = RemoteFolder(url, "dataset folder")
    try:
        manifest = remote.read_bytes(_MANIFEST)
    except FileNotFoundError as err:
        raise DataError(
            f"dataset folder {redact(url)}: no {_MANIFEST} there; build the dataset with `biomark "
            "data build` (or `biomark data phantom`) and copy the whole folder to that URL"
        ) from err
    except OSError as err:
        raise DataError(
            f"dataset folder {redact(url)}: cannot read {_MANIFEST} ({type(err).__name__}: {err})"
        ) from err
    try:
        cache_info = remote.read_bytes(_CACHE_INFO)
    except FileNotFoundError:
        cache_info = b""
    content = hashlib.sha256(manifest + b"\0" + cache_info).hexdigest()[:16]
    local = dataset_copy_dir(url, cache_root) / content
    paths = dataset_paths(local)
    # Top-level files and the image cache; raw images and outputs stay remote.
    fetched = remote.get_tree(
        "", local, skip=lambda name: "/" in name and not name.startswith("cache/")
    )
    if not paths.manifest.is_file():  # pragma: no cover - listed but vanished
        raise DataError(
            f"dataset folder {redact(url)}: {_MANIFEST} disappeared while copying; try again"
        )
    logger.info("dataset %s: local copy %s (%d file(s) downloaded)", redact(url), local, fetched)
    return local
