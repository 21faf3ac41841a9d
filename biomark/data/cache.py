"""Write the image cache of a dataset folder (the read side is :mod:`biomark.data.dataset`).

Files, all written atomically (temporary file in the same folder, then
:func:`os.replace`)::

    cache/images.npy   uint8 (n_images, size, size), row i = manifest row i
    cache/masks.npy    uint8 {0, 1}, same shape, only when masks are given
    cache/index.csv    image_id, row
    cache/cache.json   size, n_images, classes, manifest_sha256

The ``.npy`` files are written through :func:`numpy.lib.format.open_memmap`,
row by row, so the whole array never has to be in memory twice and readers
can open it with ``mmap_mode="r"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.data.dataset import dataset_paths
from biomark.exceptions import DataError
from biomark.io.atomic import atomic_path, write_csv_atomic, write_json_atomic
from biomark.io.disk import reserve

__all__ = ["save_stack_atomic", "write_cache"]

logger = logging.getLogger(__name__)


def save_stack_atomic(path: str | Path, arrays: Sequence[np.ndarray], size: int) -> Path:
    """Write 2-D uint8 arrays as one ``(n, size, size)`` ``.npy`` file, atomically.

    Parameters
    ----------
    path : str or Path
        Destination ``.npy``.
    arrays : sequence of ndarray of shape (size, size), uint8
        The rows, in order.
    size : int
        Side of every array.

    Returns
    -------
    Path

    Raises
    ------
    DataError
        When an array has the wrong shape or dtype.
    DiskFullError
        When the file system cannot hold the whole file (checked before the
        first row is written; the temporary file is removed).
    """
    needed = len(arrays) * size * size
    with atomic_path(path, suffix=".npy", needed=needed) as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(arrays), size, size)
        )
        try:
            # Allocate every block before the first row is copied: a memory map
            # over a full file system kills the process with SIGBUS, while a
            # failed allocation is an ENOSPC that becomes DiskFullError.
            reserve(tmp, out.offset + out.nbytes, target=path)
            for row, array in enumerate(arrays):
                if array.shape != (size, size) or array.dtype != np.uint8:
                    raise DataError(
                        f"{path}: row {row} is {array.dtype} {array.shape}, expected uint8 "
                        f"({size}, {size}); this is a bug in the caller"
                    )
                out[row] = array
            out.flush()
        finally:
            del out
    return Path(path)


def write_cache(
    root: str | Path,
    image_ids: Sequence[str],
    images: Sequence[np.ndarray],
    *,
    size: int,
    classes: Sequence[str],
    manifest_sha256: str,
    masks: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write ``cache/`` of dataset folder ``root``.

    Parameters
    ----------
    root : str or Path
        The dataset folder (``cache/`` is created inside).
    image_ids : sequence of str, length n_images
        Manifest image ids, in manifest order.
    images : sequence of ndarray of shape (size, size), uint8
        Letterboxed images, aligned with ``image_ids``.
    size : int
        Image side in pixels.
    classes : sequence of str
        Class names in the dataset's order.
    manifest_sha256 : str
        Hash of the manifest that goes with this cache.
    masks : sequence of ndarray of shape (size, size), uint8, optional
        Lung masks in {0, 1}; when None an old ``masks.npy`` is removed.

    Returns
    -------
    Path
        The cache folder.

    Raises
    ------
    DataError
        When lengths disagree or an array has the wrong shape.
    """
    paths = dataset_paths(root)
    if len(images) != len(image_ids) or (masks is not None and len(masks) != len(image_ids)):
        raise DataError(
            f"{paths.cache_dir}: {len(image_ids)} image ids but {len(images)} images"
            + ("" if masks is None else f" and {len(masks)} masks")
            + "; this is a bug in the caller"
        )
    paths.cache_dir.mkdir(parents=True, exist_ok=True)
    save_stack_atomic(paths.images, images, size)
    if masks is not None:
        save_stack_atomic(paths.masks, masks, size)
    elif paths.masks.exists():
        paths.masks.unlink()
    index = pd.DataFrame({"image_id": list(image_ids), "row": np.arange(len(image_ids))})
    write_csv_atomic(paths.index, index)
    info = {
        "size": int(size),
        "n_images": len(image_ids),
        "classes": list(classes),
        "manifest_sha256": manifest_sha256,
    }
    write_json_atomic(paths.cache_info, info)
    logger.debug("%s: cached %d images of %dx%d", paths.cache_dir, len(image_ids), size, size)
    return paths.cache_dir
