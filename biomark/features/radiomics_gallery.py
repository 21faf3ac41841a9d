"""The mask gallery of a radiomics run: a few thumbnails with each image's region outlined.

:func:`write_gallery` writes up to :data:`GALLERY_SIZE` PNGs into the run's
``gallery/`` folder, the masks that failed their checks first, so that leaks
are seen before the features are trusted (the radiomics page shows them).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["GALLERY_SIZE", "write_gallery"]

#: Thumbnails per gallery (half of them flagged masks, when there are so many).
GALLERY_SIZE = 24


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "image"


def _thumbnail(image: np.ndarray, mask: np.ndarray, flagged: bool) -> np.ndarray:
    from scipy import ndimage

    inside = np.asarray(mask) > 0
    edge = inside & ~ndimage.binary_erosion(inside)
    edge = ndimage.binary_dilation(edge)
    rgb = np.repeat(np.asarray(image)[..., None], 3, axis=2).copy()
    rgb[edge] = (230, 60, 60) if flagged else (60, 220, 90)
    return rgb


def write_gallery(
    folder: Path, images: np.ndarray, masks: np.ndarray, table: pd.DataFrame
) -> list[str]:
    """Write the gallery's thumbnails, flagged masks first (red outline; green when plausible).

    Parameters
    ----------
    folder : Path
        The run's ``gallery/`` folder (created by the atomic writes).
    images, masks : ndarray of shape (n, S, S)
        Cached images and their region masks, in ``table`` order.
    table : DataFrame
        ``masks.csv`` rows: ``image_id`` and ``plausible``.

    Returns
    -------
    list of str
        The file names written, in image order.
    """
    from PIL import Image

    from biomark.io.atomic import atomic_path

    flagged = [i for i in range(len(table)) if not table["plausible"].iat[i]]
    plausible = [i for i in range(len(table)) if table["plausible"].iat[i]]
    chosen = flagged[: GALLERY_SIZE // 2]
    chosen += plausible[: GALLERY_SIZE - len(chosen)]
    names = []
    for i in sorted(chosen):
        name = f"{i:05d}_{_safe_name(str(table['image_id'].iat[i]))}.png"
        with atomic_path(folder / name, suffix=".png") as tmp:
            thumbnail = Image.fromarray(
                _thumbnail(images[i], masks[i], not table["plausible"].iat[i])
            )
            thumbnail.save(tmp, format="PNG", compress_level=1)  # level 6 took 16 ms per thumbnail
        names.append(name)
    return names
