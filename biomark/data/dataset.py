"""A built dataset on disk: the manifest table aligned row by row with the image cache.

Layout of a dataset folder (written by ``biomark data build`` or
``biomark data phantom``)::

    DIR/manifest.csv        one row per image: image_id, path, label, patient_id,
                            source, view, sha256, plus source metadata columns
                            and (built datasets) the file's original width,
                            height, mode and bit_depth
    DIR/cache/images.npy    uint8 array (n_images, size, size), letterboxed,
                            row i is manifest row i; open with mmap_mode="r"
    DIR/cache/masks.npy     optional uint8 {0,1} lung masks, same shape and order
    DIR/cache/index.csv     image_id, row (a check that the order is right)
    DIR/cache/cache.json    size, n_images, classes (in recipe order), manifest sha256
    DIR/summary.csv         counts per class and source
    DIR/failures.csv        images that could not be used, and why
    DIR/duplicates.csv      exact and near duplicates across classes/patients
    DIR/build.json          provenance: recipe, settings, versions, hashes

This module is the read side; :mod:`biomark.data.build` writes it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.exceptions import DataError, ManifestError
from biomark.provenance import file_sha256

__all__ = [
    "MANIFEST_COLUMNS",
    "Dataset",
    "DatasetPaths",
    "dataset_paths",
    "load_dataset",
    "read_manifest",
    "validate_manifest",
]

logger = logging.getLogger(__name__)

#: Columns every manifest has (source metadata columns may follow; a built
#: manifest also has :data:`biomark.data.image_info.IMAGE_INFO_COLUMNS`).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "label",
    "patient_id",
    "source",
    "view",
    "sha256",
)


@dataclass(frozen=True)
class DatasetPaths:
    """Where each part of a dataset folder lives."""

    root: Path
    manifest: Path
    cache_dir: Path
    images: Path
    masks: Path
    index: Path
    cache_info: Path
    summary: Path
    failures: Path
    duplicates: Path
    provenance: Path


def dataset_paths(root: str | os.PathLike[str]) -> DatasetPaths:
    """The standard file names inside dataset folder ``root``."""
    root = Path(root)
    cache = root / "cache"
    return DatasetPaths(
        root=root,
        manifest=root / "manifest.csv",
        cache_dir=cache,
        images=cache / "images.npy",
        masks=cache / "masks.npy",
        index=cache / "index.csv",
        cache_info=cache / "cache.json",
        summary=root / "summary.csv",
        failures=root / "failures.csv",
        duplicates=root / "duplicates.csv",
        provenance=root / "build.json",
    )


def validate_manifest(manifest: pd.DataFrame, where: str | Path = "manifest") -> pd.DataFrame:
    """Check the required columns, unique image ids and non-empty labels.

    Parameters
    ----------
    manifest : DataFrame
        The table to check.
    where : str or Path
        Named in error messages (usually the CSV path).

    Returns
    -------
    DataFrame
        ``manifest`` with identifier columns as strings.

    Raises
    ------
    ManifestError
        If a required column is missing, image ids repeat, or labels are empty.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"{where}: missing column(s) {', '.join(missing)}; a manifest needs "
            f"{', '.join(MANIFEST_COLUMNS)} (rebuild it with `biomark data build`)"
        )
    if len(manifest) == 0:
        raise ManifestError(f"{where}: the manifest has no rows; rebuild the dataset")
    manifest = manifest.copy()
    for column in ("image_id", "label", "patient_id", "source", "view", "path"):
        manifest[column] = manifest[column].astype("string").fillna("").astype(str)
    duplicated = manifest["image_id"][manifest["image_id"].duplicated()].unique()
    if len(duplicated):
        raise ManifestError(
            f"{where}: image_id values repeat ({', '.join(map(str, duplicated[:5]))}); "
            "every image needs a unique id"
        )
    empty = manifest.index[manifest["label"].str.strip() == ""]
    if len(empty):
        raise ManifestError(
            f"{where}: {len(empty)} row(s) have no label (first image_id "
            f"{manifest.loc[empty[0], 'image_id']}); label every image or drop the rows"
        )
    return manifest


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest CSV (identifiers as text)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"{path}: manifest not found; build the dataset first with "
            "`biomark data build ... --out DIR` or `biomark data phantom --out DIR`"
        )
    try:
        frame = pd.read_csv(
            path, dtype={"image_id": str, "patient_id": str, "mode": str}, keep_default_na=False
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ManifestError(f"{path}: not a readable CSV ({err}); rebuild the dataset") from err
    return validate_manifest(frame, where=path)


@dataclass(frozen=True)
class Dataset:
    """A built dataset: manifest rows aligned with cached images.

    Attributes
    ----------
    root : Path
        The dataset folder.
    manifest : DataFrame of shape (n_images, n_columns)
        Row ``i`` describes ``images[i]``.
    images : ndarray of shape (n_images, size, size), uint8
        Letterboxed grayscale images (memory-mapped when opened with ``mmap``).
    masks : ndarray of shape (n_images, size, size), uint8, or None
        Lung masks in {0, 1}, when the dataset has them.
    classes : tuple of str
        Class names in the dataset's canonical order (the recipe's).
    manifest_sha256 : str
        Hash of ``manifest.csv``, recorded by every run that reads it.
    """

    root: Path
    manifest: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray | None
    classes: tuple[str, ...]
    manifest_sha256: str

    @property
    def size(self) -> int:
        """Side of the square cached images in pixels."""
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.manifest)

    def labels_as_int(self) -> np.ndarray:
        """Class index of every image, shape (n_images,), in ``classes`` order."""
        lookup = {name: i for i, name in enumerate(self.classes)}
        return self.manifest["label"].map(lookup).to_numpy(dtype=np.int64)


def _load_array(path: Path, mmap: bool, rebuild: str) -> np.ndarray:
    """A cache array, or a DataError naming the file when it is truncated or not an array at all."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    # numpy says "mmap length is greater than file size", "cannot reshape array", ...
    except (ValueError, OSError, EOFError) as err:
        raise DataError(
            f"{path}: cannot be read ({type(err).__name__}: {err}); the file is truncated or "
            f"corrupt (an interrupted copy?); {rebuild}"
        ) from err


def load_dataset(root: str | os.PathLike[str], *, mmap: bool = True) -> Dataset:
    """Open a dataset folder, checking that manifest and cache agree.

    Parameters
    ----------
    root : str or Path
        Folder written by ``biomark data build`` / ``biomark data phantom``.
    mmap : bool, default True
        Memory-map the cache instead of reading it into memory.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If the folder, manifest or cache is missing, or they disagree (row
        count, image ids, image size).
    """
    paths = dataset_paths(root)
    if not paths.root.is_dir():
        raise DataError(
            f"{paths.root}: dataset folder not found; create it with `biomark data phantom "
            f"--out {paths.root}` or `biomark data build ... --out {paths.root}`"
        )
    manifest = read_manifest(paths.manifest)
    command = f"biomark data build --manifest {paths.manifest} --out {paths.root}"
    for needed in (paths.images, paths.index, paths.cache_info):
        if not needed.is_file():
            raise DataError(
                f"{needed}: image cache file missing; rebuild the cache with `{command}`"
            )
    try:
        info = json.loads(paths.cache_info.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(
            f"{paths.cache_info}: not valid JSON ({err}); rebuild the cache with `{command}`"
        ) from err
    if info.get("size"):  # the same side, or the run's images would change
        command += f" --size {int(info['size'])}"
    rebuild = f"rebuild the cache with `{command}`"
    images = _load_array(paths.images, mmap, rebuild)
    try:
        index = pd.read_csv(paths.index, dtype={"image_id": str})
    except (OSError, ValueError) as err:  # pandas' ParserError and EmptyDataError too
        raise DataError(
            f"{paths.index}: cannot be read ({type(err).__name__}: {err}); {rebuild}"
        ) from err
    if not {"image_id", "row"} <= set(index.columns):
        raise DataError(
            f"{paths.index}: not the cache's index (columns image_id and row expected, found "
            f"{', '.join(map(str, index.columns)) or 'none'}); {rebuild}"
        )
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise DataError(
            f"{paths.images}: expected a uint8 array (n, size, size), found "
            f"{images.dtype} {images.shape}; rebuild the cache"
        )
    if len(index) != len(manifest) or images.shape[0] != len(manifest):
        raise DataError(
            f"{paths.root}: manifest has {len(manifest)} rows but the cache holds "
            f"{images.shape[0]} images ({len(index)} index rows); the cache is stale: {rebuild}"
        )
    if (
        not (index["image_id"].to_numpy() == manifest["image_id"].to_numpy()).all()
        or not (index["row"].to_numpy() == np.arange(len(index))).all()
    ):
        missing = sorted(set(manifest["image_id"]) - set(index["image_id"]))
        detail = f" (e.g. {missing[0]} is not cached)" if missing else ""
        raise DataError(
            f"{paths.index}: cache rows do not match manifest rows{detail}; rebuild the cache"
        )
    masks = None
    if paths.masks.is_file():
        masks = _load_array(paths.masks, mmap, rebuild)
        if masks.shape != images.shape:
            raise DataError(
                f"{paths.masks}: shape {masks.shape} differs from images {images.shape}; rebuild "
                "the cache"
            )
    classes = tuple(info.get("classes") or sorted(manifest["label"].unique()))
    unknown = sorted(set(manifest["label"]) - set(classes))
    if unknown:
        raise DataError(
            f"{paths.manifest}: label(s) {', '.join(unknown)} are not among the dataset's "
            f"classes {', '.join(classes)} (cache.json); rebuild the dataset"
        )
    return Dataset(
        root=paths.root,
        manifest=manifest,
        images=images,
        masks=masks,
        classes=classes,
        manifest_sha256=file_sha256(paths.manifest),
    )
