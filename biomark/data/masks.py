"""Lung masks of a whole dataset: supplied or segmented, computed once, stored with the dataset.

``radiomics``, ``report`` (lung fractions, the lung blackout) and the lung
gallery all read the same masks through :func:`dataset_lung_masks`; they are
computed on first use and kept in the dataset folder::

    DIR/cache/lung_masks.npy    uint8 {0, 1}, shape (n_images, size, size), row i = manifest row i
    DIR/cache/lung_masks.csv    image_id, mask_source (folder | model | dataset | segmented), note,
                                the MaskCheck columns, flags, plausible
    DIR/cache/lung_masks.json   the key below, counts, versions (written last)

The files are written atomically (``.json`` last) and reused while the key
matches: the SHA-256 of ``cache/images.npy``, of ``cache/masks.npy`` (if any),
the names, sizes and modification times of the files in the masks folder, the
segmenter version (:data:`biomark.data.lungs.SEGMENTER_VERSION`) and the
check version (:data:`CHECKS_VERSION`). A dataset folder that cannot be written
(read-only share) gets its masks computed in memory with a warning.

Where each row's mask comes from, in order
------------------------------------------
1. **A masks folder**, ``DIR/masks/`` by default: an image file named after the
   ``image_id``, after the stem of the image's ``path`` (``CHNCXR_0001_0.png``)
   or that stem with ``_mask`` (the Shenzhen layout). Any non-zero pixel is
   lung; it is letterboxed like the image and must have the image's aspect
   ratio (else the row is segmented and the mismatch is written in ``note``).
   Files that a learned lung model wrote there (``biomark data masks
   --model``; listed in ``DIR/masks/lung_model.json``) count as ``model``.
2. **The dataset's own masks**, ``cache/masks.npy``: the phantom's true masks,
   or the ``mask_path`` column of a ``--manifest`` source (rows without one are
   empty there and fall through).
3. **Segmentation** by :func:`biomark.data.lungs.segment_lungs`.

The row's ``mask_source`` says which (``folder``, ``model``, ``dataset``,
``segmented``). Supplied and model masks go through the geometric checks of
:func:`~biomark.data.lung_checks.check_mask` (area, two lungs, extent); the
checks that read the image (contrast, air, fit) are for segmentations only,
because a supplied mask whose lung is whited out by disease is right, and
excluding it would drop the most severe cases (on the demo phantom the
appearance checks flagged 36 of 2,100 true masks). A flagged supplied mask is
reported, not replaced.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.data.cache import save_stack_atomic
from biomark.data.dataset import Dataset, dataset_paths
from biomark.data.lung_checks import MaskCheck, bbox, check_mask, content_mask
from biomark.data.lungs import SEGMENTER_VERSION, segment_lungs
from biomark.exceptions import DataError
from biomark.io.atomic import write_csv_atomic, write_json_atomic
from biomark.provenance import file_sha256

__all__ = [
    "CHECKS_VERSION",
    "MASKS_DIR",
    "MODEL_RECORD",
    "LungMasks",
    "content_box",
    "dataset_lung_masks",
    "dataset_region_masks",
    "import_masks",
    "lung_mask_paths",
    "model_written_files",
    "original_size",
    "rows_without_supplied_mask",
]

logger = logging.getLogger(__name__)

#: Changes whenever :func:`~biomark.data.lung_checks.check_mask` can flag differently.
CHECKS_VERSION = "checks-4"  # supplied masks: geometric checks only

#: Default folder of user-supplied mask files inside a dataset folder.
MASKS_DIR = "masks"

_MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
_FLOAT_COLUMNS = tuple(
    name for name, f in MaskCheck.__dataclass_fields__.items() if f.type in ("float", float)
)
_SOURCES = (
    "folder",
    "model",
    "dataset",
    "segmented",
)  # per-row mask_source values, in order of precedence

#: In a masks folder: which of its files a learned lung model wrote
#: (``biomark data masks --model``).
MODEL_RECORD = "lung_model.json"
_SERIAL_BELOW = 64  # rows; fewer are segmented here (worker start-up costs more)


@dataclass(frozen=True)
class LungMasks:
    """Lung masks of dataset rows, with their checks.

    Attributes
    ----------
    masks : ndarray of shape (n, side, side), uint8 in {0, 1}
        Memory-mapped when read from the dataset cache.
    table : DataFrame of shape (n, ...)
        ``image_id, mask_source, note`` + the :class:`MaskCheck` columns
        (``flags`` joined with ``;``) + ``plausible``; row i describes ``masks[i]``.
    source : str
        Where the masks came from, in words (for pages and logs).
    """

    masks: np.ndarray
    table: pd.DataFrame
    source: str

    @property
    def usable(self) -> np.ndarray:
        """Boolean array of shape (n,): the mask passed every check."""
        return self.table["plausible"].to_numpy(dtype=bool)

    @property
    def problems(self) -> pd.DataFrame:
        """``image_id, mask_source, flags`` of the unusable masks."""
        bad = self.table.loc[~self.usable, ["image_id", "mask_source", "flags"]]
        return bad.reset_index(drop=True)

    def checks(self) -> list[MaskCheck]:
        """One :class:`MaskCheck` per row, rebuilt from the table."""
        out = []
        for row in self.table.itertuples(index=False):
            values: dict[str, Any] = {name: float(getattr(row, name)) for name in _FLOAT_COLUMNS}
            flags = tuple(
                f for f in str(row.flags if isinstance(row.flags, str) else "").split(";") if f
            )
            out.append(
                MaskCheck(
                    n_components=int(row.n_components),
                    touches_border=bool(row.touches_border),
                    flags=flags,
                    **values,
                )
            )
        return out

    def subset(self, rows: Sequence[int] | np.ndarray) -> LungMasks:
        """The masks of the given row indices, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows)
        picked = (
            np.asarray(self.masks[rows[order]])[np.argsort(order)] if len(rows) else self.masks[:0]
        )
        return LungMasks(
            np.asarray(picked, dtype=np.uint8),
            self.table.iloc[rows].reset_index(drop=True),
            self.source,
        )


def lung_mask_paths(root: str | Path) -> dict[str, Path]:
    """The cache files of :func:`dataset_lung_masks` in dataset folder ``root``."""
    cache = dataset_paths(root).cache_dir
    return {
        "masks": cache / "lung_masks.npy",
        "table": cache / "lung_masks.csv",
        "info": cache / "lung_masks.json",
    }


# ------------------------------------------------------------------ supplied masks
def _folder_index(folder: Path | None) -> dict[str, Path]:
    if folder is None or not folder.is_dir():
        return {}
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _MASK_SUFFIXES
    )
    return {p.stem: p for p in files}


def _folder_fingerprint(index: dict[str, Path]) -> list[list[Any]]:
    out = []
    for _stem, path in sorted(index.items()):
        stat = path.stat()
        out.append([path.name, stat.st_size, int(stat.st_mtime)])
    return out


def _find_mask(index: dict[str, Path], image_id: str, image_path: str) -> Path | None:
    stem = Path(image_path).stem if image_path else ""
    for key in (image_id, stem, f"{stem}_mask" if stem else ""):
        if key and key in index:
            return index[key]
    return None


def original_size(manifest: pd.DataFrame, row: int) -> tuple[int, int] | None:
    """``(height, width)`` of a row's original file from the manifest, or None when not recorded."""
    if "width" not in manifest.columns or "height" not in manifest.columns:
        return None
    width, height = manifest["width"].iat[row], manifest["height"].iat[row]
    if pd.isna(width) or pd.isna(height) or int(width) < 1 or int(height) < 1:
        return None
    return int(height), int(width)


def content_box(image: np.ndarray, size_hw: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """``top, bottom, left, right`` of a letterboxed film's content (bottom/right exclusive).

    The box of the original file (``size_hw``, from :func:`original_size`) when known: a film
    with black edges has a smaller non-zero box. Else the non-zero box of ``image``.
    """
    if size_hw is None:
        return bbox(image)
    from biomark.io.letterbox import letterbox_geometry

    box = letterbox_geometry(size_hw[0], size_hw[1], image.shape[0])
    return box.top, box.bottom, box.left, box.right


def _read_supplied(
    path: Path, image: np.ndarray, size_hw: tuple[int, int] | None = None
) -> tuple[np.ndarray | None, str]:
    """A mask file letterboxed like ``image``, or None and the reason it cannot be used.

    The mask must have the image's aspect ratio: that of the original file
    (``size_hw``, from the manifest) when known, else that of the image's
    non-zero content.
    """
    from PIL import Image, UnidentifiedImageError

    from biomark.io.letterbox import letterbox_geometry, letterbox_mask

    try:
        with Image.open(path) as handle:
            array = np.asarray(handle.convert("L"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        return None, f"mask file {path} unreadable ({err}); segmented instead"
    size = image.shape[0]
    geometry = letterbox_geometry(array.shape[0], array.shape[1], size)
    top, bottom, left, right = content_box(image, size_hw)
    if (
        abs(geometry.top - top) > 1
        or abs(geometry.bottom - bottom) > 1
        or abs(geometry.left - left) > 1
        or abs(geometry.right - right) > 1
    ):
        return None, (
            f"mask file {path} is {array.shape[1]}x{array.shape[0]} px, not the image's aspect "
            "ratio; segmented instead (save the mask at the image's size)"
        )
    return letterbox_mask(array > 0, size), ""


def import_masks(root: str | Path, folder: str | Path) -> int:
    """Copy the mask image files of ``folder`` into ``DIR/masks/`` so the dataset carries them.

    Parameters
    ----------
    root : path
        The dataset folder.
    folder : path
        Mask files named like the images (see the module docstring).

    Returns
    -------
    int
        Files copied (an existing file of the same name is replaced).

    Raises
    ------
    DataError
        If ``folder`` is not a folder or holds no mask image file.
    """
    import shutil

    from biomark.io.atomic import atomic_path

    source = Path(folder)
    index = _folder_index(source) if source.is_dir() else {}
    if not index:
        raise DataError(
            f"{source}: no mask images ({', '.join(_MASK_SUFFIXES)}) found; give the folder "
            "that holds one mask per image, named like the image"
        )
    target = dataset_paths(root).root / MASKS_DIR
    target.mkdir(parents=True, exist_ok=True)
    for path in index.values():
        with atomic_path(target / path.name, suffix=path.suffix) as tmp:
            shutil.copyfile(path, tmp)
    return len(index)


def rows_without_supplied_mask(dataset: Dataset, masks_dir: str | Path | None = None) -> np.ndarray:
    """Rows that no mask file (``masks_dir``, default ``DIR/masks``) and no ``cache/masks.npy`` row
    covers.

    These are the rows :func:`dataset_lung_masks` would segment; a learned
    segmenter (``biomark data masks --model``) writes mask files for them.

    Returns
    -------
    ndarray of int
        Manifest row indices, ascending.
    """
    folder = (
        Path(masks_dir) if masks_dir is not None else dataset_paths(dataset.root).root / MASKS_DIR
    )
    index = _folder_index(folder)
    ids = dataset.manifest["image_id"].astype(str).tolist()
    paths = dataset.manifest["path"].astype(str).tolist()
    rows = [
        i
        for i in range(len(dataset))
        if _find_mask(index, ids[i], paths[i]) is None
        and (dataset.masks is None or not np.any(dataset.masks[i]))
    ]
    return np.asarray(rows, dtype=np.int64)


# ------------------------------------------------------------------ computing
def _segment_rows(images_file: str, rows: np.ndarray) -> list[tuple[np.ndarray, MaskCheck]]:
    """Worker: segment some rows of an image cache (read by memory map, not pickled)."""
    images = np.load(images_file, mmap_mode="r")
    return [segment_lungs(np.asarray(images[r])) for r in rows]


def model_written_files(folder: Path) -> set[str]:
    """Names of the mask files in ``folder`` that a lung model wrote (its :data:`MODEL_RECORD`)."""
    try:
        record = json.loads((folder / MODEL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {str(name) for name in record.get("files", [])} if isinstance(record, dict) else set()


def _compute(
    dataset: Dataset, index: dict[str, Path], jobs: int, from_model: set[str]
) -> tuple[np.ndarray, pd.DataFrame]:
    n, size = len(dataset), dataset.size
    ids = dataset.manifest["image_id"].astype(str).tolist()
    paths = dataset.manifest["path"].astype(str).tolist()
    masks = np.zeros((n, size, size), dtype=np.uint8)
    checks: list[MaskCheck | None] = [None] * n
    sources, notes = [""] * n, [""] * n
    to_segment: list[int] = []
    for i in range(n):
        image = np.asarray(dataset.images[i])
        supplied, origin = None, ""
        found = _find_mask(index, ids[i], paths[i])
        if found is not None:
            supplied, notes[i] = _read_supplied(found, image, original_size(dataset.manifest, i))
            if supplied is not None and np.any(supplied):
                origin, notes[i] = ("model" if found.name in from_model else "folder"), found.name
        if not origin and dataset.masks is not None and np.any(dataset.masks[i]):
            supplied, origin = np.asarray(dataset.masks[i]), "dataset"
        if origin:
            masks[i] = np.asarray(supplied) > 0
            # Geometry only: a supplied mask's lung may be whited out (an effusion, a
            # consolidation), which the appearance checks (contrast, air) would take for a failed
            # segmentation.
            checks[i] = check_mask(masks[i], content_mask(image))
            sources[i] = origin
        else:
            to_segment.append(i)
    if to_segment:
        rows = np.asarray(to_segment)
        if jobs == 1 or len(rows) < _SERIAL_BELOW:
            results = [segment_lungs(np.asarray(dataset.images[r])) for r in rows]
        else:
            from joblib import Parallel, cpu_count, delayed

            workers = cpu_count() if jobs < 0 else jobs
            chunks = np.array_split(rows, max(1, min(len(rows) // 16, 4 * workers)))
            images_file = str(dataset_paths(dataset.root).images)
            parts = Parallel(n_jobs=workers)(delayed(_segment_rows)(images_file, c) for c in chunks)
            results = [item for part in parts for item in part]
        for r, (mask, check) in zip(rows, results, strict=True):
            masks[r], checks[r], sources[r] = mask, check, "segmented"
    table = pd.DataFrame([c.as_dict() for c in checks])  # type: ignore[union-attr]
    table.insert(0, "note", notes)
    table.insert(0, "mask_source", sources)
    table.insert(0, "image_id", ids)
    return masks, table


def _describe(table: pd.DataFrame) -> str:
    counts = table["mask_source"].value_counts()
    if len(counts) == 1:
        only = str(counts.index[0])
        if only == "model":
            return f"learned lung model ({MASKS_DIR}/{MODEL_RECORD})"
        return f"segmented (segment_lungs {SEGMENTER_VERSION})" if only == "segmented" else only
    parts = ", ".join(f"{int(counts[s])} {s}" for s in _SOURCES if s in counts)
    return f"mixed: {parts}" + (
        f" (segment_lungs {SEGMENTER_VERSION})" if "segmented" in counts else ""
    )


def _key(dataset: Dataset, index: dict[str, Path]) -> dict[str, Any]:
    paths = dataset_paths(dataset.root)
    return {
        "images_sha256": file_sha256(paths.images),
        "masks_sha256": file_sha256(paths.masks) if paths.masks.is_file() else None,
        "masks_folder": _folder_fingerprint(index),
        "segmenter": SEGMENTER_VERSION,
        "checks": CHECKS_VERSION,
        "n_images": len(dataset),
        "size": dataset.size,
    }


def _read_cache(dataset: Dataset, key: dict[str, Any]) -> LungMasks | None:
    files = lung_mask_paths(dataset.root)
    if not all(p.is_file() for p in files.values()):
        return None
    try:
        info = json.loads(files["info"].read_text(encoding="utf-8"))
        if info.get("key") != key:
            return None
        masks = np.load(files["masks"], mmap_mode="r")
        table = pd.read_csv(
            files["table"],
            dtype={"image_id": str, "flags": str, "note": str},
            keep_default_na=False,
        )
    except (OSError, ValueError, json.JSONDecodeError) as err:
        logger.warning("%s: unreadable lung-mask cache (%s); recomputing", files["info"], err)
        return None
    if (
        masks.shape != (len(dataset), dataset.size, dataset.size)
        or len(table) != len(dataset)
        or not (
            table["image_id"].to_numpy() == dataset.manifest["image_id"].astype(str).to_numpy()
        ).all()
    ):
        logger.warning(
            "%s: lung-mask cache does not match the manifest; recomputing", files["info"]
        )
        return None
    for column in _FLOAT_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["n_components"] = (
        pd.to_numeric(table["n_components"], errors="coerce").fillna(0).astype(int)
    )
    for column in ("touches_border", "plausible"):
        table[column] = table[column].astype(str).str.lower().eq("true")
    return LungMasks(masks, table, str(info.get("source", "")))


def _write_cache(dataset: Dataset, result: LungMasks, key: dict[str, Any]) -> None:
    files = lung_mask_paths(dataset.root)
    try:
        save_stack_atomic(files["masks"], list(result.masks), dataset.size)
        write_csv_atomic(files["table"], result.table)
        counts = {
            "images": len(result.table),
            "plausible": int(result.usable.sum()),
            **{
                f"source_{k}": int(v) for k, v in result.table["mask_source"].value_counts().items()
            },
        }
        write_json_atomic(files["info"], {"key": key, "source": result.source, "counts": counts})
    except OSError as err:
        logger.warning(
            "%s: could not store the lung masks (%s); they are recomputed on every use",
            files["masks"].parent,
            err,
        )


def dataset_lung_masks(
    dataset: Dataset,
    *,
    masks_dir: str | os.PathLike[str] | None = None,
    jobs: int = -1,
    refresh: bool = False,
) -> LungMasks:
    """Lung masks of every image of a dataset: from the cache, else supplied or segmented.

    See the module docstring for the files, the cache key and the order of
    sources.

    Parameters
    ----------
    dataset : Dataset
        An opened dataset (:func:`biomark.data.dataset.load_dataset`).
    masks_dir : path, optional
        Folder of mask files; default ``DIR/masks`` when it exists.
    jobs : int, default -1
        Processes for segmenting (-1: all cores; small datasets run here).
    refresh : bool, default False
        Recompute even when the cache matches.

    Returns
    -------
    LungMasks
        Row i describes manifest row i.

    Raises
    ------
    DataError
        If ``masks_dir`` is given but is not a folder.
    """
    folder = (
        Path(masks_dir) if masks_dir is not None else dataset_paths(dataset.root).root / MASKS_DIR
    )
    if masks_dir is not None and not folder.is_dir():
        raise DataError(
            f"{folder}: masks folder not found; give a folder of mask images named like the images"
        )
    index = _folder_index(folder)
    from_model = model_written_files(folder)
    # which files count as the model's decides their mask_source, so it is part of the key
    key = {**_key(dataset, index), "model_files": sorted(from_model)}
    if not refresh:
        cached = _read_cache(dataset, key)
        if cached is not None:
            logger.info("%s: lung masks from the dataset cache (%s)", dataset.root, cached.source)
            return cached
    masks, table = _compute(dataset, index, jobs, from_model)
    result = LungMasks(masks, table, _describe(table))
    _write_cache(dataset, result, key)
    logger.info(
        "%s: lung masks computed: %s; %d of %d plausible",
        dataset.root,
        result.source,
        int(result.usable.sum()),
        len(table),
    )
    return result


def dataset_region_masks(
    dataset: Dataset, region: str = "lung", *, jobs: int = -1
) -> tuple[np.ndarray, list[MaskCheck], str]:
    """The extraction region of every image, like :func:`biomark.data.lungs.region_masks`.

    ``lung`` regions come from :func:`dataset_lung_masks` (cached); ``image``
    regions are the image content (no padding).

    Parameters
    ----------
    dataset : Dataset
    region : {"lung", "image"}, default "lung"
    jobs : int, default -1

    Returns
    -------
    masks : ndarray of shape (n_images, S, S), uint8
    checks : list of MaskCheck
    source : str

    Raises
    ------
    ValueError
        On an unknown ``region``.
    """
    if region == "lung":
        result = dataset_lung_masks(dataset, jobs=jobs)
        return np.asarray(result.masks, dtype=np.uint8), result.checks(), result.source
    from biomark.data.lungs import region_masks

    return region_masks(dataset.images, region)
