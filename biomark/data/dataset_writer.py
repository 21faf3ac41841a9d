"""Write a dataset folder atomically: staging folder first, then file by file, ``manifest.csv``
last.

An interrupted write leaves the previous dataset (and its manifest) as it
was and no staging folder; a full disk names the dataset folder, not the
hidden staging folder. The layout is documented in :mod:`biomark.data.dataset`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.data.cache import write_cache
from biomark.data.dataset import dataset_paths
from biomark.exceptions import DiskFullError
from biomark.io.atomic import write_bytes_atomic, write_csv_atomic, write_json_atomic
from biomark.io.disk import check_free_space, disk_errors

__all__ = ["PUBLISHED", "write_dataset"]

PUBLISHED = (
    "cache/images.npy",
    "cache/masks.npy",
    "cache/index.csv",
    "cache/cache.json",
    "summary.csv",
    "failures.csv",
    "duplicates.csv",
    "build.json",
)


def _publish(staging: Path, out: Path) -> None:
    for relative in PUBLISHED:
        source, target = staging / relative, out / relative
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        elif target.exists():
            target.unlink()
    os.replace(staging / "manifest.csv", out / "manifest.csv")


def write_dataset(
    out: Path,
    images: list[np.ndarray],
    masks: list[np.ndarray] | None,
    *,
    image_size: int,
    manifest: pd.DataFrame,
    manifest_bytes: bytes,
    classes: tuple[str, ...],
    tables: dict[str, pd.DataFrame],
    record: dict[str, Any],
) -> None:
    """Write the dataset into a staging folder inside ``out``, then publish it file by file,
    manifest last.

    ``tables`` holds the ``summary``, ``failures`` and ``duplicates`` tables;
    ``record`` is ``provenance.json``. The free space is checked first; a
    full disk names ``out``, not the staging folder, which is always removed.
    """
    cache_bytes = len(images) * image_size * image_size * (2 if masks is not None else 1)
    check_free_space(
        out, cache_bytes + len(manifest_bytes), f"the dataset's image cache ({len(images)} images)"
    )
    with disk_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        paths = dataset_paths(staging)
        write_cache(
            staging,
            manifest["image_id"].tolist(),
            images,
            size=image_size,
            classes=classes,
            manifest_sha256=record["manifest_sha256"],
            masks=masks,
        )
        write_csv_atomic(paths.summary, tables["summary"])
        write_csv_atomic(paths.failures, tables["failures"])
        write_csv_atomic(paths.duplicates, tables["duplicates"])
        write_json_atomic(paths.provenance, record)
        write_bytes_atomic(paths.manifest, manifest_bytes)
        _publish(staging, out)
    except DiskFullError as err:
        # Name the file where the user will look for it, not the hidden staging folder.
        raise DiskFullError(str(err).replace(str(staging), str(out))) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
