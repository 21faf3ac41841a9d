"""Decode, check and letterbox one candidate image (the build's per-image work).

:func:`process_image` is a pure function of its arguments, so
:func:`decode_many` can run it in worker processes (joblib) and get the same
results in the same order whatever ``jobs`` is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biomark.data.image_info import ImageInfo, read_image_info
from biomark.exceptions import BiomarkError, DataError
from biomark.progress import progress

__all__ = ["ImageOutcome", "decode_many", "process_image"]

logger = logging.getLogger(__name__)

_BATCH = 8  # images per task sent to a worker process


@dataclass
class ImageOutcome:
    """The result of :func:`process_image` for one file.

    Attributes
    ----------
    ok : bool
        True when the image can be used.
    image : ndarray of shape (size, size), uint8, or None
        The letterboxed image (None when not ok).
    mask : ndarray of shape (size, size), uint8 {0, 1}, or None
        The letterboxed mask, when a mask path was given.
    sha256 : str
        Hex SHA-256 of the file's bytes.
    phash : str
        :func:`biomark.data.duplicates.image_phash` of the letterboxed image (64 hex digits).
    contrast : float
        :func:`biomark.io.contrast.contrast_score` of the letterboxed image.
    info : ImageInfo or None
        The file's original width, height, mode and bit depth (when ok).
    stage, reason, action : str
        Where and why it failed and what to do (empty when ok).
    error : BiomarkError or None
        The error to raise in strict mode.
    """

    ok: bool
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    sha256: str = ""
    phash: str = ""
    contrast: float = float("nan")
    info: ImageInfo | None = None
    stage: str = ""
    reason: str = ""
    action: str = ""
    error: BiomarkError | None = None


def process_image(path: str, size: int, min_contrast: float, mask_path: str = "") -> ImageOutcome:
    """Read, letterbox, contrast-check and hash one image; never raises for bad files.

    Parameters
    ----------
    path : str
        Image file.
    size : int
        Letterbox side.
    min_contrast : float
        Images scoring below are rejected (stage ``contrast``).
    mask_path : str, default ""
        Optional lung mask (any non-zero pixel is lung), letterboxed nearest.

    Returns
    -------
    ImageOutcome
    """
    from biomark.data.duplicates import image_phash
    from biomark.io.contrast import contrast_score
    from biomark.io.images import read_image
    from biomark.io.letterbox import letterbox_mask, read_letterboxed
    from biomark.provenance import file_sha256

    try:
        image = read_letterboxed(path, size)
        info = read_image_info(path)
    except BiomarkError as err:
        return ImageOutcome(
            False,
            stage="decode",
            reason=str(err),
            action="replaced by the next candidate; re-download or convert the file",
            error=err,
        )
    score = contrast_score(image)
    if score < min_contrast:
        reason = f"low contrast: score {score:.3f} < min_contrast {min_contrast:.3f}"
        return ImageOutcome(
            False,
            contrast=score,
            stage="contrast",
            reason=reason,
            action="excluded as in the paper (2.1.4); lower --min-contrast to keep it",
            error=DataError(f"{path}: {reason}; lower --min-contrast to keep it"),
        )
    mask = None
    if mask_path:
        try:
            mask = letterbox_mask(read_image(mask_path) > 0.5, size)
        except BiomarkError as err:
            return ImageOutcome(
                False,
                stage="mask",
                reason=f"mask {mask_path}: {err}",
                action="fix or regenerate the mask file",
                error=err,
            )
    return ImageOutcome(
        True,
        image=image,
        mask=mask,
        sha256=file_sha256(path),
        phash=image_phash(image),
        contrast=score,
        info=info,
    )


def decode_many(
    items: Sequence[tuple[str, str]],
    *,
    size: int,
    min_contrast: float,
    jobs: int = 1,
    strict: bool = False,
) -> list[ImageOutcome]:
    """Run :func:`process_image` over ``(path, mask_path)`` pairs, in order.

    Parameters
    ----------
    items : sequence of (str, str)
        Image path and mask path (``""`` for none).
    size, min_contrast
        See :func:`process_image`.
    jobs : int, default 1
        Worker processes (joblib loky); -1 all cores; 1 runs in this process.
    strict : bool, default False
        Raise the first failure's error (in input order) instead of returning it.

    Returns
    -------
    list of ImageOutcome, aligned with ``items``

    Raises
    ------
    BiomarkError
        ``strict`` only: ``ImageReadError`` for an unreadable file, ``DataError``
        for a low-contrast image.
    """
    outcomes: list[ImageOutcome] = []
    bar = progress(total=len(items), desc="decode", unit="img")
    try:
        if jobs == 1 or len(items) <= 1:
            for path, mask in items:
                outcomes.append(_checked(process_image(path, size, min_contrast, mask), strict))
                bar.update(1)
        else:
            from joblib import Parallel, delayed

            parallel = Parallel(n_jobs=jobs, return_as="generator", batch_size=_BATCH)
            results = parallel(delayed(process_image)(p, size, min_contrast, m) for p, m in items)
            for outcome in results:
                outcomes.append(_checked(outcome, strict))
                bar.update(1)
    finally:
        bar.close()
    return outcomes


def _checked(outcome: ImageOutcome, strict: bool) -> ImageOutcome:
    if strict and not outcome.ok and outcome.error is not None:
        raise outcome.error
    return outcome
