"""Decode big PNG/JPEG radiographs at a reduced size, so letterboxing them needs little memory.

Letterboxing a 12,000 x 12,000 radiograph to 200 pixels used to decode it to a
full-size float32 array and copy that a few times (about 2 GB). When
:func:`biomark.io.images.read_image` is told the size the image is for
(``target_size``), it instead

1. asks libjpeg to decode a JPEG at 1/2, 1/4 or 1/8 scale (Pillow's
   :meth:`~PIL.Image.Image.draft`: the IDCT runs on fewer coefficients, so
   the full-size picture never exists in memory), and
2. shrinks what was decoded by an integer factor with
   :meth:`~PIL.Image.Image.reduce` (box averages of ``f x f`` pixels, in C,
   on the 8-bit or integer data), or band by band in numpy for 16-bit modes,
   which ``reduce`` does not take,

keeping at least :data:`OVERSAMPLE` times the target size, so the final
area-averaging (``BOX``) resize of :func:`~biomark.io.letterbox.letterbox`
still sees many source pixels per output pixel and the result matches the
full decode to within rounding (see ``tests/io/test_reduce.py``). The peak for
a PNG is the decoded image itself (1x its 8-bit size; 2x for 16-bit), for a
JPEG a fraction of it.

Integer and float images keep the scaling of the full image: the extrema are
taken before reducing (:func:`value_extrema`), since a box average can hide
the one pixel that needs the 13th bit.
"""

from __future__ import annotations

import math
import typing

import numpy as np
from PIL import Image

__all__ = ["OVERSAMPLE", "draft_jpeg", "value_extrema", "reduce_image", "reduction_factor"]

#: The reduced image keeps at least this many times the target size on its longer side.
OVERSAMPLE = 8
# Modes Image.reduce takes; others are converted first ("1", "P") or reduced in numpy (16-bit).
_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "I", "F"})
_BAND_ELEMENTS = 4_000_000  # pixels per numpy band (32 MB in float64)


def reduction_factor(width: int, height: int, target_size: int | None) -> int:
    """The integer factor an image of ``width x height`` can be shrunk by for a ``target_size``
    letterbox.

    Examples
    --------
    >>> reduction_factor(12000, 12000, 200)
    7
    >>> reduction_factor(1024, 1024, 200)
    1
    """
    if not target_size or target_size < 1:
        return 1
    return max(1, max(width, height) // (OVERSAMPLE * int(target_size)))


def draft_jpeg(im: Image.Image, target_size: int | None) -> None:
    """Configure a not-yet-loaded JPEG to decode at the smallest DCT scale still >= the reduced
    size."""
    factor = reduction_factor(im.width, im.height, target_size)
    if im.format == "JPEG" and factor > 1:
        im.draft(None, (math.ceil(im.width / factor), math.ceil(im.height / factor)))


def value_extrema(im: Image.Image) -> tuple[float, float] | None:
    """``(min, max)`` of an image whose scaling depends on them (modes ``I``, ``I;16*``, ``F``),
    else None."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        lo, hi = typing.cast(
            "tuple[float, float]", im.getextrema()
        )  # one band: Pillow's stubs allow a tuple per band
        return float(lo), float(hi)
    return None


def reduce_image(im: Image.Image, target_size: int | None) -> tuple[Image.Image, int]:
    """``im`` shrunk by :func:`reduction_factor` (box means; a partial last block averages what it
    has).

    Parameters
    ----------
    im : PIL.Image.Image
        A loaded image.
    target_size : int or None
        The letterbox side the image is for; None or a small image returns ``im``.

    Returns
    -------
    image : PIL.Image.Image
        Same mode, except ``1`` -> ``L``, ``P``/``PA`` -> ``RGBA``, 16-bit ->
        ``I``, other colour modes (CMYK, YCbCr) -> ``RGB``.
    factor : int
        Pixels of ``im`` per pixel of ``image`` along each axis (1: ``im`` itself).
    """
    factor = reduction_factor(im.width, im.height, target_size)
    if factor <= 1:
        return im, 1
    if im.mode.startswith("I;16"):
        return Image.fromarray(_block_means(im, factor), mode="I"), factor
    if im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif im.mode not in _REDUCIBLE:
        im = im.convert("RGB")
    return im.reduce(factor), factor


def _block_means(im: Image.Image, factor: int) -> np.ndarray:
    """Rounded ``factor x factor`` block means of a one-band integer image, band by band (int32).

    Hand-written because :meth:`~PIL.Image.Image.reduce` refuses 16-bit modes
    and converting the whole image to ``I`` first would need 4 bytes a pixel.
    """
    width, height = im.size
    rows_per_band = factor * max(1, _BAND_ELEMENTS // (width * factor))
    starts = np.arange(0, width, factor)
    counts_x = np.diff(np.append(starts, width))
    out = []
    for top in range(0, height, rows_per_band):
        band = np.asarray(
            im.crop((0, top, width, min(height, top + rows_per_band))), dtype=np.float64
        )
        row_starts = np.arange(0, band.shape[0], factor)
        counts_y = np.diff(np.append(row_starts, band.shape[0]))
        sums = np.add.reduceat(np.add.reduceat(band, row_starts, axis=0), starts, axis=1)
        out.append(np.rint(sums / np.outer(counts_y, counts_x)).astype(np.int32))
    return np.concatenate(out, axis=0)
