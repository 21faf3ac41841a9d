"""Decode one radiograph (PNG, JPEG or DICOM) to a float32 array in [0, 1].

Every reader returns the same thing: a 2-D ``float32`` array of shape
``(H, W)`` with 0 = black (air) and 1 = white (bone), whatever the file
stored. How each kind of file gets there:

PNG / JPEG (Pillow)
    * 8-bit grayscale (``L``, ``P``, ``1``, ``RGB``, ``RGBA``, ``LA``) is divided
      by 255 and never stretched, so an image keeps the contrast it was saved
      with (a washed-out image stays washed out for :mod:`biomark.io.contrast`).
    * Colour modes become luminance. If all channels are equal (a grayscale
      image saved as RGB, very common in the Cohen set) the first channel is
      taken as is; otherwise ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``.
      Palette images are expanded through their palette first.
    * Alpha is ignored: the colour channels are used as stored, not composited
      on any background. (All real RGBA X-rays we have seen are fully opaque.)
    * 16-bit (``I;16``, ``I;16B``, ``I;16L``) and 32-bit integer (``I``) images
      are divided by ``2**bits - 1`` where ``bits`` is the image's real bit
      depth: the PNG ``sBIT`` chunk when present, otherwise the smallest of
      8, 10, 12, 14 or 16 bits that holds the largest value. A 12-bit detector
      image stored in a 16-bit PNG therefore becomes [0, 1] instead of
      [0, 0.06]. Values below 0 or above 65535 (possible only in mode ``I``)
      fall back to min-max scaling.
    * Truncated or corrupt files raise: decoding is forced with ``.load()``
      and ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False.
    * Images above Pillow's pixel limit (``Image.MAX_IMAGE_PIXELS``, a guard
      against decompression bombs: it refuses twice that many) raise an error
      saying so. The environment variable ``BIOMARK_MAX_IMAGE_PIXELS`` sets
      the limit (a number of pixels; 0 for none); decoding worker processes
      inherit it.

DICOM (pydicom, imported only when a DICOM file is read)
    1. Modality LUT: ``RescaleSlope`` / ``RescaleIntercept`` (or a Modality
       LUT Sequence) via :func:`pydicom.pixels.apply_modality_lut`.
    2. VOI windowing if ``WindowCenter`` / ``WindowWidth`` are present (the
       first pair when multi-valued), following ``VOILUTFunction`` (LINEAR,
       LINEAR_EXACT or SIGMOID; DICOM PS3.3 C.11.2.1.2) mapped onto [0, 1];
       otherwise min-max scaling. A VOI LUT Sequence is not applied.
    3. ``MONOCHROME1`` (0 = white) is inverted so that air is dark.
    4. Multi-frame files: only the first frame is returned.
    5. Colour DICOM (RGB/YBR) becomes luminance as above.

A flat image (max == min) under min-max scaling becomes all zeros.

Any failure raises :class:`biomark.exceptions.ImageReadError` naming the
file, what is wrong and what to do; the Pillow/pydicom error is chained.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from biomark.exceptions import ConfigError, ImageReadError
from biomark.io.reduce import draft_jpeg, reduce_image, value_extrema

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

__all__ = [
    "MAX_PIXELS_ENV",
    "ReducedImage",
    "SUPPORTED_SUFFIXES",
    "read_image",
    "read_image_reduced",
    "is_dicom_file",
]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
"""File suffixes :func:`read_image` accepts (compared case-insensitively).

Files without a suffix are read as DICOM when they carry the ``DICM`` magic.
"""

_RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
# Pillow's JPEG opener also returns multi-picture (MPO) camera JPEGs.
_PIL_FORMATS = ("PNG", "JPEG")
_STANDARD_BIT_DEPTHS = (8, 10, 12, 14, 16)
_LUMA = np.array([0.299, 0.587, 0.114])
#: Environment variable that sets Pillow's pixel limit (``Image.MAX_IMAGE_PIXELS``; 0: none).
MAX_PIXELS_ENV = "BIOMARK_MAX_IMAGE_PIXELS"
_SUPPORTED_TEXT = (
    "PNG, JPEG (.png, .jpg, .jpeg) or DICOM (.dcm, .dicom, or no suffix with the DICM magic)"
)


def read_image(path: str | Path) -> np.ndarray:
    """Decode one radiograph to a float32 array in [0, 1].

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG or DICOM file (see :data:`SUPPORTED_SUFFIXES`).

    Returns
    -------
    np.ndarray of shape (H, W), dtype float32
        Intensities in [0, 1]; 0 = black (air), 1 = white (bone). See the
        module docstring for how each kind of file is scaled.

    Raises
    ------
    ImageReadError
        The file is missing, empty, truncated or corrupt, of an unsupported
        format, larger than Pillow's pixel limit (see :data:`MAX_PIXELS_ENV`),
        or a DICOM without (decodable) pixel data.
    ConfigError
        ``$BIOMARK_MAX_IMAGE_PIXELS`` is not a number.

    Examples
    --------
    >>> image = read_image("chest.png")  # doctest: +SKIP
    >>> image.shape, image.dtype  # doctest: +SKIP
    ((1024, 1024), dtype('float32'))
    """
    return _read(Path(path), None)[0]


@dataclass(frozen=True)
class ReducedImage:
    """A radiograph decoded for a letterbox of a given size (:func:`read_image_reduced`).

    Attributes
    ----------
    image : np.ndarray of shape (h, w), float32
        As :func:`read_image`, shrunk by ``factor`` (``h = ceil(H / factor)``;
        a partial last block is the mean of the pixels it has).
    shape : (int, int)
        The file's full (H, W).
    factor : int
        Full-size pixels per pixel of ``image`` along each axis (1: not reduced).
    """

    image: np.ndarray
    shape: tuple[int, int]
    factor: int


def read_image_reduced(path: str | Path, target_size: int) -> ReducedImage:
    """Decode a radiograph for a ``target_size`` letterbox, at reduced size when it is big.

    A PNG or JPEG at least ``2 * OVERSAMPLE * target_size`` pixels long (3,200
    for 200) is decoded at a fraction of its size (JPEG draft mode, Pillow's
    ``reduce``; :mod:`biomark.io.reduce`), keeping at least
    :data:`~biomark.io.reduce.OVERSAMPLE` times the target, so memory stays
    near the file's 8-bit size instead of several float32 copies of it.
    Smaller files, and DICOM files, are decoded in full. Letterbox the result
    with :func:`biomark.io.letterbox.letterbox` (``source_shape`` and
    ``factor``), or use :func:`biomark.io.letterbox.read_letterboxed`.

    Parameters
    ----------
    path : str or Path
    target_size : int
        The letterbox side the image is for.

    Returns
    -------
    ReducedImage

    Raises
    ------
    ImageReadError, ConfigError
        As :func:`read_image`.

    Examples
    --------
    A 4,000-pixel PNG read for a 100-pixel letterbox is decoded at 1/5 of its
    size, still 8 times the target:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "big.png"
    ...     Image.fromarray(np.full((4000, 3000), 128, dtype=np.uint8)).save(path)
    ...     reduced = read_image_reduced(path, target_size=100)
    >>> reduced.shape, reduced.factor, reduced.image.shape, reduced.image.dtype.name
    ((4000, 3000), 5, (800, 600), 'float32')
    >>> round(float(reduced.image.max()), 3)  # 128 / 255
    0.502
    """
    return ReducedImage(*_read(Path(path), target_size))


def _read(path: Path, target_size: int | None) -> tuple[np.ndarray, tuple[int, int], int]:
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise ImageReadError(f"{path}: {what}. Check the path (and the manifest that lists it).")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be read ({err}). Check its permissions.") from err
    if size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes). Download or export it again.")

    suffix = path.suffix.lower()
    if suffix in _RASTER_SUFFIXES:
        image, shape, factor = _read_raster(path, target_size)
    elif suffix in _DICOM_SUFFIXES or (suffix == "" and is_dicom_file(path)):
        image, factor = _read_dicom(path), 1
        shape = image.shape
    else:
        raise ImageReadError(
            f"{path}: unsupported image format {suffix or '(no suffix, no DICM magic)'!s}. "
            f"Supported: {_SUPPORTED_TEXT}. Convert the file to PNG first."
        )
    return _finish(image, path), (int(shape[0]), int(shape[1])), factor


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` starts with a DICOM preamble (``DICM`` at byte 128).

    Parameters
    ----------
    path : str or Path
        Any file.

    Returns
    -------
    bool
        True when bytes 128-131 are ``b"DICM"``; False otherwise or when the
        file cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     scan = Path(tmp) / "scan"  # a DICOM file without a suffix
    ...     _ = scan.write_bytes(bytes(128) + b"DICM")
    ...     text = Path(tmp) / "notes.txt"
    ...     _ = text.write_text("not an image")
    ...     is_dicom_file(scan), is_dicom_file(text), is_dicom_file(Path(tmp) / "missing")
    (True, False, False)
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


# --------------------------------------------------------------------------- PNG / JPEG


def _read_raster(
    path: Path, target_size: int | None = None
) -> tuple[np.ndarray, tuple[int, int], int]:
    """The decoded image (reduced for ``target_size``), the file's (H, W), and the reduction
    factor."""
    limit = _pixel_limit()
    try:
        with warnings.catch_warnings():
            # Between the limit and twice it Pillow only warns: these are radiographs, not bombs,
            # decoded at reduced size. Above twice the limit it raises (handled below).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=_PIL_FORMATS) as im:
                shape = (im.height, im.width)
                draft_jpeg(im, target_size)
                im.load()
                draft_scale = max(1, round(shape[1] / im.width))  # libjpeg's 1/1 .. 1/8
                sbit = _png_significant_bits(path) if im.format == "PNG" else None
                extrema = value_extrema(im)
                reduced, factor = reduce_image(im, target_size)
                return _pil_to_float(reduced, sbit, extrema), shape, draft_scale * factor
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = int(found.group(1)) if found else None
        raise ImageReadError(
            f"{path}: the image has {f'{pixels:,}' if pixels else 'too many'} pixels, over the "
            f"pixel limit (Pillow refuses more than {2 * limit:,}, twice Image.MAX_IMAGE_PIXELS, "
            "as a guard against decompression bombs); it is not corrupt. If the file is a genuine "
            "radiograph, raise the limit: set the environment variable "
            f"{MAX_PIXELS_ENV}={pixels or 400_000_000} (or 0 for no limit) and re-run"
        ) from err
    except MemoryError as err:
        raise ImageReadError(
            f"{path}: not enough memory to decode it ({err or 'MemoryError'}); run with fewer "
            "--jobs, or downscale the file first"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageReadError(
            f"{path}: not a readable PNG or JPEG (unknown or corrupt content, or another "
            f"format with a misleading suffix). Supported: {_SUPPORTED_TEXT}. "
            "Re-export the image as PNG."
        ) from err
    except (OSError, SyntaxError, ValueError, struct.error) as err:
        raise ImageReadError(
            f"{path}: the image data is truncated or corrupt ({err}). "
            "Download or export the file again."
        ) from err


def _pixel_limit() -> int:
    """Pillow's pixel limit, set from ``$BIOMARK_MAX_IMAGE_PIXELS`` when given (0: no limit)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if text:
        try:
            value = int(float(text))
        except ValueError as err:
            raise ConfigError(
                f"{MAX_PIXELS_ENV}={text!r}: give a whole number of pixels (e.g. 400000000), or 0 "
                "for no limit"
            ) from err
        Image.MAX_IMAGE_PIXELS = value if value > 0 else None
    return int(Image.MAX_IMAGE_PIXELS or 0)


def _pil_to_float(
    im: Image.Image, sbit: int | None, extrema: tuple[float, float] | None = None
) -> np.ndarray:
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / np.float32(255)
    if mode == "LA":
        return np.asarray(im.getchannel("L"), dtype=np.float32) / np.float32(255)
    if mode.startswith("I;16") or mode == "I":
        return _scale_integer(np.asarray(im), sbit, extrema)
    if mode == "F":
        return _min_max(np.asarray(im, dtype=np.float64), extrema)
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode not in ("RGB", "RGBA"):
        # CMYK / YCbCr JPEGs and other rare modes: let Pillow make RGB.
        im = im.convert("RGB")
    rgb = np.asarray(im)[..., :3]
    return _luminance(rgb) / np.float32(255)


def _scale_integer(
    values: np.ndarray, sbit: int | None, extrema: tuple[float, float] | None = None
) -> np.ndarray:
    """Divide by the full scale of the real bit depth (see module docstring).

    ``extrema`` are the full image's (min, max) when ``values`` were reduced from it.
    """
    values = values.astype(np.float64)
    lo, hi = extrema if extrema is not None else (float(values.min()), float(values.max()))
    if lo < 0 or hi > 65535:
        return _min_max(values, (lo, hi))
    if sbit is not None and 1 <= sbit <= 16 and hi <= 2**sbit - 1:
        bits = sbit
    else:
        bits = next(b for b in _STANDARD_BIT_DEPTHS if hi <= 2**b - 1)
    return (values / (2**bits - 1)).astype(np.float32)


def _png_significant_bits(path: Path) -> int | None:
    """The gray sample's significant bits from a PNG ``sBIT`` chunk, if any."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                header = handle.read(8)
                if len(header) < 8:
                    return None
                length, kind = struct.unpack(">I4s", header)
                if kind in (b"IDAT", b"IEND"):
                    return None
                data = handle.read(length)
                handle.seek(4, 1)  # CRC
                if kind == b"sBIT" and data:
                    return int(data[0])
    except OSError:
        return None


# --------------------------------------------------------------------------- DICOM


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - pydicom is a core dependency
        raise ImageReadError(
            f"{path}: reading DICOM needs pydicom. Install it: pip install pydicom."
        ) from err

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as err:  # pydicom raises many kinds on corrupt input
        raise ImageReadError(
            f"{path}: not a readable DICOM file ({type(err).__name__}: {err}). "
            "Check that the file is complete, or export it again."
        ) from err
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if not is_dicom_file(path) and "SOPClassUID" not in ds and "Rows" not in ds:
            raise ImageReadError(
                f"{path}: not a DICOM file (no DICM magic at byte 128 and no DICOM image "
                f"attributes). Supported: {_SUPPORTED_TEXT}. Check the file and its suffix."
            )
        raise ImageReadError(
            f"{path}: the DICOM file has no pixel data (it may be a report, a structured "
            "document or a header-only file). Use the DICOM file that holds the image."
        )
    try:
        pixels = ds.pixel_array
    except Exception as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ImageReadError(
            f"{path}: the DICOM pixel data cannot be decoded (transfer syntax {syntax}; "
            f"{type(err).__name__}: {err}). If it is compressed, install a decoder "
            "(pylibjpeg, python-gdcm) or decompress the file (e.g. gdcmconv --raw)."
        ) from err

    try:
        return _dicom_to_float(ds, pixels)
    except (ValueError, TypeError, AttributeError) as err:
        raise ImageReadError(
            f"{path}: inconsistent DICOM image attributes ({err}). Check the file's "
            "rescale/window tags or export it again."
        ) from err


def _dicom_to_float(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut  # pydicom >= 3 (setup.cfg)

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if pixels.ndim == (4 if samples > 1 else 3):
        logger.debug("multi-frame DICOM with %d frames: using the first", pixels.shape[0])
        pixels = pixels[0]
    if samples > 1:
        # pydicom has already converted YBR to RGB; scale by the stored bit depth.
        bits = int(ds.get("BitsStored", 8) or 8)
        return _luminance(pixels[..., :3]) / np.float32(2**bits - 1)

    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    window = _first_window(ds)
    if window is None:
        image = _min_max(values)
    else:
        center, width = window
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        image = _apply_window(values, center, width, function)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = np.float32(1) - image
    return image


def _first_window(ds: Dataset) -> tuple[float, float] | None:
    center = ds.get("WindowCenter")
    width = ds.get("WindowWidth")
    if center is None or width is None:
        return None
    center = _first_value(center)
    width = _first_value(width)
    if center is None or width is None or width <= 0:
        return None
    return center, width


def _first_value(value: Any) -> float | None:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) == 0:
            return None
        value = value[0]
    if value is None or value == "":
        return None
    return float(value)


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 VOI windowing onto [0, 1].

    Parameters
    ----------
    values : np.ndarray of any shape
        Modality values (after rescale slope/intercept).
    center, width : float
        Window centre and width (width > 0; LINEAR needs width >= 1).
    function : {"LINEAR", "LINEAR_EXACT", "SIGMOID"}
        ``VOILUTFunction``; anything else is treated as LINEAR.

    Returns
    -------
    np.ndarray, same shape, float32 in [0, 1]
    """
    if function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        out = (values - center) / width + 0.5
    else:
        if width < 1:
            width = 1.0
        if width == 1:
            out = (values > center - 0.5).astype(np.float64)
        else:
            out = (values - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- helpers


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Luminance of an (H, W, 3) array, exact when the channels are equal."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r.astype(np.float32)
    return (rgb.astype(np.float32) @ _LUMA.astype(np.float32)).astype(np.float32)


def _min_max(values: np.ndarray, extrema: tuple[float, float] | None = None) -> np.ndarray:
    lo, hi = extrema if extrema is not None else (float(np.min(values)), float(np.max(values)))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("pixel values are not finite")
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _finish(image: np.ndarray, path: Path) -> np.ndarray:
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        raise ImageReadError(
            f"{path}: decoded to an array of shape {image.shape}, not a 2-D image. "
            "Export it as a single-frame grayscale image."
        )
    if not image.flags.writeable:
        image = image.copy()
    return np.clip(image, 0.0, 1.0, out=image)
