"""Reference lung masks: chest X-rays with hand-drawn masks, read from their public layouts.

A learned lung segmenter (:mod:`biomark.models.lung_unet`) trains on them, and
``benchmarks/lung_masks.py`` scores any segmenter against them. A reference
folder holds

* the films in ``images/`` or ``CXR_png/``, and
* their masks in ``masks/`` or ``mask/``, named like the film's stem, or the
  stem with ``_mask`` (the Shenzhen set), or in ``ManualMask/leftMask`` and
  ``ManualMask/rightMask`` (the Montgomery set; the two are joined).

A mask pixel above half the mask's maximum is lung (masks saved as 0/1 or
0/255, with or without anti-aliased edges). Films and masks are letterboxed to the same
square side as a dataset's image cache, so a reference film looks exactly like
a dataset row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biomark.exceptions import DataError

__all__ = ["LungReferences", "read_lung_references"]

_IMAGE_DIRS = ("images", "CXR_png")
_MASK_DIRS = ("masks", "mask")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class LungReferences:
    """Letterboxed films with their reference masks.

    Attributes
    ----------
    images : ndarray of shape (n, S, S), uint8
    masks : ndarray of shape (n, S, S), uint8 in {0, 1}
    ids : list of str
        ``<folder name>/<film stem>``, one per row.
    folders : list of str
        The reference folder of each row (its name), to group rows by set.
    """

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]
    folders: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def _binary(mask: np.ndarray) -> np.ndarray:
    """Lung where the mask is above half its maximum: 0/1, 0/255 and anti-aliased edges alike."""
    top = int(mask.max())
    return mask > top / 2 if top else np.zeros(mask.shape, dtype=bool)


def _first_dir(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def _mask_dirs(folder: Path) -> list[Path]:
    found = _first_dir(folder, _MASK_DIRS)
    if found is not None:
        return [found]
    manual = folder / "ManualMask"
    if (manual / "leftMask").is_dir() and (manual / "rightMask").is_dir():
        return [manual / "leftMask", manual / "rightMask"]
    return []


def _read_folder(folder: Path, size: int) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    from PIL import Image, UnidentifiedImageError

    from biomark.io import letterbox, read_image
    from biomark.io.letterbox import letterbox_mask

    image_dir, mask_dirs = _first_dir(folder, _IMAGE_DIRS), _mask_dirs(folder)
    if image_dir is None or not mask_dirs:
        raise DataError(
            f"{folder}: not a reference folder; it needs the films in images/ (or CXR_png/) and "
            "their masks in masks/ (or mask/, or ManualMask/leftMask + rightMask as in the "
            "Montgomery set)"
        )
    index = [{p.stem: p for p in d.iterdir() if p.is_file()} for d in mask_dirs]
    images, masks, ids = [], [], []
    for path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES):
        lookups = [ix.get(path.stem) or ix.get(f"{path.stem}_mask") for ix in index]
        found = [f for f in lookups if f is not None]
        if len(found) < len(index):
            continue
        try:
            parts = [_binary(np.asarray(Image.open(f).convert("L"))) for f in found]
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(
                f"{found}: mask of {path.name} unreadable ({err}); replace or remove it"
            ) from err
        film = read_image(path)
        if any(p.shape != film.shape[:2] for p in parts):
            raise DataError(
                f"{path}: its mask is {parts[0].shape[1]}x{parts[0].shape[0]} px but the film is "
                f"{film.shape[1]}x{film.shape[0]} px; save the mask at the film's size"
            )
        images.append(letterbox(film, size))
        masks.append(letterbox_mask(np.logical_or.reduce(parts), size).astype(np.uint8))
        ids.append(f"{folder.name}/{path.stem}")
    if not images:
        raise DataError(
            f"{folder}: no film in {image_dir.name}/ has a mask named like it (or <stem>_mask)"
        )
    return images, masks, ids


def read_lung_references(
    folders: list[str | Path] | tuple[str | Path, ...], size: int = 200
) -> LungReferences:
    """Read one or more reference folders (see the module docstring).

    Parameters
    ----------
    folders : sequence of path
        Reference folders.
    size : int, default 200
        Side of the letterboxed films and masks.

    Returns
    -------
    LungReferences
        The rows of every folder, in folder order.

    Raises
    ------
    DataError
        If a folder has no films or masks in a known layout, a mask is unreadable or not at its
        film's size, or no film has a mask.
    """
    images, masks, ids, names = [], [], [], []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder of reference films and masks")
        got_images, got_masks, got_ids = _read_folder(folder, size)
        images += got_images
        masks += got_masks
        ids += got_ids
        names += [folder.name] * len(got_ids)
    if not ids:
        raise DataError("no reference folders given")
    return LungReferences(np.stack(images), np.stack(masks), ids, names)
