"""A global contrast score, to exclude washed-out or flat images.

The paper "excluded low contrast images" without saying how; this is our
documented rule.

Measure
    ``contrast_score`` is the 2nd-98th percentile intensity range of the
    image content, on the [0, 1] scale (uint8 input is divided by 255):

    * Percentiles, not min/max: burned-in text, markers, wires and a few
      saturated pixels cover well under 2 % of a radiograph, so they cannot
      make a washed-out image look contrasty.
    * Range, not RMS contrast: it reads directly as "how much of the
      intensity scale the anatomy spans", and an image compressed into
      [0.45, 0.55] scores at most 0.1 whatever its histogram.
    * Black padding is excluded. With a ``mask`` only the pixels where it is
      non-zero count; without one, all-zero rows and columns at the borders
      are cropped first, which removes the letterbox padding of
      :func:`biomark.io.letterbox.letterbox` exactly (padding is always whole
      rows or whole columns) and otherwise only trims black frames. Without
      this, the zero padding alone would push the 2nd percentile to 0 and
      make any letterboxed image pass.

Threshold
    ``DEFAULT_MIN_CONTRAST = 0.15``. Scores measured on the 101 real X-rays
    in ``shared/data`` (44 Cohen, 8 Actualmed, 24 Kermany, 25 NIH), as
    min / 2nd lowest / median / max:

    * decoded by ``read_image``:        0.227 / 0.376 / 0.792 / 0.977
    * letterboxed to 200 x 200:         0.220 / 0.373 / 0.788 / 0.965
    * letterboxed after squeezing into
      [0.45, 0.55] (washed out):        0.024 / 0.039 / 0.078 / 0.094

    The lowest real score is a genuinely washed-out ICU film taken from a
    journal PDF (Cohen ``ajr.20.23034.pdf-003.png``); a flat gray image
    scores 0. 0.15 sits between the two groups with a margin on both sides.
"""

from __future__ import annotations

import logging

import numpy as np

from biomark.exceptions import ConfigError, DataError

__all__ = ["DEFAULT_MIN_CONTRAST", "contrast_score", "is_low_contrast"]

logger = logging.getLogger(__name__)

DEFAULT_MIN_CONTRAST: float = 0.15
"""Images whose :func:`contrast_score` is below this are low-contrast."""

_LOW_PERCENTILE = 2.0
_HIGH_PERCENTILE = 98.0


def contrast_score(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The 2nd-98th percentile intensity range of the image content.

    Parameters
    ----------
    image : np.ndarray of shape (H, W)
        Float in [0, 1] (e.g. from :func:`biomark.io.images.read_image`) or
        uint8 in [0, 255] (e.g. from :func:`biomark.io.letterbox.letterbox`).
    mask : np.ndarray of shape (H, W), optional
        Pixels to use (non-zero = content), e.g. the letterbox content area.
        Without a mask, all-zero border rows and columns (letterbox padding)
        are ignored.

    Returns
    -------
    float
        In [0, 1]; 0 for a flat (or all-black) image.

    Raises
    ------
    DataError
        ``image`` is not a non-empty 2-D float or uint8 array, or ``mask``
        does not have the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.linspace(0.1, 0.9, 101).reshape(1, -1)
    >>> round(contrast_score(ramp), 3)  # 0.884 - 0.116
    0.768
    """
    values = _as_unit_float(image)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != values.shape:
            raise DataError(
                f"contrast mask has shape {mask.shape} but the image has {values.shape}: "
                "give a mask of the same shape (e.g. from letterbox_mask)."
            )
        content = values[mask != 0]
    else:
        content = _crop_zero_border(values).ravel()
    if content.size == 0:
        return 0.0
    low, high = np.percentile(content, [_LOW_PERCENTILE, _HIGH_PERCENTILE])
    return float(max(0.0, high - low))


def is_low_contrast(
    image: np.ndarray,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    mask: np.ndarray | None = None,
) -> bool:
    """Whether ``contrast_score(image, mask) < min_contrast``.

    Parameters
    ----------
    image : np.ndarray of shape (H, W)
        Float in [0, 1] or uint8.
    min_contrast : float, default DEFAULT_MIN_CONTRAST (0.15)
        Threshold in [0, 1].
    mask : np.ndarray of shape (H, W), optional
        See :func:`contrast_score`.

    Returns
    -------
    bool

    Raises
    ------
    ConfigError
        ``min_contrast`` is not a number in [0, 1].
    DataError
        See :func:`contrast_score`.

    Examples
    --------
    >>> ramp = np.linspace(0.0, 1.0, 200).reshape(10, 20)
    >>> washed_out = 0.5 + 0.05 * ramp  # the same anatomy squeezed into [0.5, 0.55]
    >>> is_low_contrast(ramp), is_low_contrast(washed_out)
    (False, True)

    The black padding of a letterboxed image does not count:

    >>> from biomark.io.letterbox import letterbox
    >>> is_low_contrast(letterbox(washed_out, size=40))
    True
    """
    if isinstance(min_contrast, bool) or not isinstance(min_contrast, (int, float, np.floating)):
        raise ConfigError(
            f"min_contrast={min_contrast!r} is not a number: give a value in [0, 1] such as 0.15."
        )
    if not 0.0 <= float(min_contrast) <= 1.0:
        raise ConfigError(
            f"min_contrast={min_contrast!r} is outside [0, 1]: give a value such as 0.15."
        )
    return contrast_score(image, mask) < float(min_contrast)


def _as_unit_float(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 2 or array.size == 0:
        raise DataError(
            f"contrast_score needs a non-empty 2-D image (H, W); got shape {array.shape}."
        )
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    if np.issubdtype(array.dtype, np.floating):
        return np.nan_to_num(array.astype(np.float32, copy=False), nan=0.0)
    raise DataError(
        f"contrast_score got an image of dtype {array.dtype}: give float in [0, 1] "
        "(from read_image) or uint8 (from letterbox)."
    )


def _crop_zero_border(values: np.ndarray) -> np.ndarray:
    nonzero = values != 0
    rows = np.flatnonzero(nonzero.any(axis=1))
    if rows.size == 0:
        return values[:0, :0]
    cols = np.flatnonzero(nonzero.any(axis=0))
    return values[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
