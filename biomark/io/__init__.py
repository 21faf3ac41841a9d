"""Reading images and writing files safely.

Importing this package loads numpy and Pillow only; pydicom is imported the
first time a DICOM file is read.
"""

from __future__ import annotations

from biomark.io.contrast import DEFAULT_MIN_CONTRAST, contrast_score, is_low_contrast
from biomark.io.images import SUPPORTED_SUFFIXES, is_dicom_file, read_image
from biomark.io.letterbox import LetterboxGeometry, letterbox, letterbox_geometry, letterbox_mask

__all__ = [
    "DEFAULT_MIN_CONTRAST",
    "LetterboxGeometry",
    "SUPPORTED_SUFFIXES",
    "contrast_score",
    "is_dicom_file",
    "is_low_contrast",
    "letterbox",
    "letterbox_geometry",
    "letterbox_mask",
    "read_image",
]
