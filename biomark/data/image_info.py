"""What each source file was before letterboxing, and sources that mix image shapes or sizes.

The build letterboxes every image to one square side, so the cache no longer
shows that a source mixed, say, original portrait films with squashed
224x224 re-saves. That mix is a shortcut a network can learn (the re-saves
may all be one class) and it distorts anatomy. So the build keeps each
file's original ``width``, ``height``, ``mode`` and ``bit_depth`` in the
manifest (:func:`read_image_info`, header only) and checks each source
(:func:`size_mix`):

shape mix
    A source whose images are not all of one shape -- ``square``
    (width == height), ``landscape`` or ``portrait`` -- with at least
    :data:`MIX_SHARE` of its images outside the most common shape. Exactly
    square images among rectangular films are the signature of re-saves
    (NIH's films, all 1024x1024, are one shape and pass).
resolution mix
    At least :data:`MIX_SHARE` of a source's images have a short side more
    than :data:`RESOLUTION_FACTOR` times smaller or larger than the source's
    median short side (224-px re-saves among ~1,000-px films; small web
    figures among full-size films).

Thresholds are module constants rather than settings because they decide a
warning only; the per-image columns let a user apply their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.exceptions import ImageReadError

__all__ = [
    "IMAGE_INFO_COLUMNS",
    "MIX_SHARE",
    "RESOLUTION_FACTOR",
    "ImageInfo",
    "image_shape",
    "read_image_info",
    "size_flags",
    "size_mix",
]

logger = logging.getLogger(__name__)

#: Manifest columns describing the original file (written by ``data build``).
IMAGE_INFO_COLUMNS: tuple[str, ...] = ("width", "height", "mode", "bit_depth")

#: Smallest share of a source's images outside its common shape / resolution that is reported as a
#: mix.
MIX_SHARE: float = 0.05

#: A short side this many times below or above the source's median is "another resolution".
RESOLUTION_FACTOR: float = 2.5

# Bits per sample of Pillow modes (a 16-bit PNG's depth is read from its header instead).
_MODE_BITS = {
    "1": 1,
    "L": 8,
    "LA": 8,
    "P": 8,
    "PA": 8,
    "RGB": 8,
    "RGBA": 8,
    "CMYK": 8,
    "YCbCr": 8,
    "I;16": 16,
    "I;16B": 16,
    "I;16L": 16,
    "I": 32,
    "F": 32,
}
_DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of one image file.

    Attributes
    ----------
    width, height : int
        Pixels as stored (DICOM ``Columns`` / ``Rows``).
    mode : str
        Pillow mode (``L``, ``RGB``, ``I;16``, ...) or DICOM
        ``PhotometricInterpretation`` (``MONOCHROME2``, ...).
    bit_depth : int
        Bits per sample as stored: a PNG's header bit depth (a 16-bit RGB
        PNG says 16 although Pillow opens it as 8-bit ``RGB``), DICOM
        ``BitsStored``, else from the Pillow mode (JPEG: 8).
    """

    width: int
    height: int
    mode: str
    bit_depth: int

    def as_dict(self) -> dict[str, object]:
        """The four manifest columns of :data:`IMAGE_INFO_COLUMNS`."""
        return {
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "bit_depth": self.bit_depth,
        }


def _png_bit_depth(path: Path) -> int | None:
    # Pillow does not expose a PNG's stored bit depth (16-bit RGB opens as
    # 8-bit "RGB"); it is byte 24 of the file, inside the mandatory first IHDR chunk.
    with open(path, "rb") as handle:
        head = handle.read(25)
    if len(head) == 25 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int(head[24])
    return None


def read_image_info(path: str | Path) -> ImageInfo:
    """Width, height, mode and bit depth of an image file, from its header only.

    Parameters
    ----------
    path : str or Path
        A file :func:`biomark.io.images.read_image` reads (PNG, JPEG, DICOM).

    Returns
    -------
    ImageInfo

    Raises
    ------
    ImageReadError
        The header cannot be read (the file is missing or not an image).

    Examples
    --------
    >>> read_image_info("chest.png")  # doctest: +SKIP
    ImageInfo(width=2496, height=1971, mode='RGB', bit_depth=8)
    """
    from PIL import Image, UnidentifiedImageError

    from biomark.io.images import is_dicom_file

    path = Path(path)
    try:
        if path.suffix.lower() in _DICOM_SUFFIXES or (path.suffix == "" and is_dicom_file(path)):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            return ImageInfo(
                int(ds.Columns),
                int(ds.Rows),
                str(ds.get("PhotometricInterpretation", "")),
                int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0),
            )
        with Image.open(path) as im:
            width, height = im.size
            bits = _png_bit_depth(path) if im.format == "PNG" else None
            return ImageInfo(int(width), int(height), im.mode, bits or _MODE_BITS.get(im.mode, 0))
    except (OSError, AttributeError, ValueError, TypeError, UnidentifiedImageError) as err:
        raise ImageReadError(
            f"{path}: cannot read the image header ({err}); re-download or convert the file"
        ) from err


def image_shape(width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """``"square"``, ``"landscape"`` or ``"portrait"`` per image.

    Examples
    --------
    >>> image_shape(np.array([224, 1040, 500]), np.array([224, 747, 534])).tolist()
    ['square', 'landscape', 'portrait']
    """
    width, height = np.asarray(width), np.asarray(height)
    return np.where(
        width == height, "square", np.where(width > height, "landscape", "portrait")
    ).astype(object)


def size_flags(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per image: its shape and whether its resolution is far from its source's median.

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, ...)
        Needs ``source``, ``width`` and ``height``.

    Returns
    -------
    DataFrame of shape (n_images, 3), same index
        ``shape`` (see :func:`image_shape`), ``short_side`` (pixels) and
        ``off_resolution`` (bool: short side more than
        :data:`RESOLUTION_FACTOR` times below or above the median short side
        of the image's source).
    """
    width = manifest["width"].to_numpy(dtype=np.int64)
    height = manifest["height"].to_numpy(dtype=np.int64)
    short = pd.Series(np.minimum(width, height), index=manifest.index, dtype=float)
    median = short.groupby(manifest["source"].to_numpy()).transform("median")
    off = (short * RESOLUTION_FACTOR < median) | (short > median * RESOLUTION_FACTOR)
    return pd.DataFrame(
        {
            "shape": image_shape(width, height),
            "short_side": short.astype(np.int64),
            "off_resolution": off.to_numpy(),
        },
        index=manifest.index,
    )


def _common_size(frame: pd.DataFrame) -> str:
    sizes = frame["width"].astype(str) + "x" + frame["height"].astype(str)
    return str(sizes.value_counts().index[0])


def _per_class(frame: pd.DataFrame, odd: pd.Series) -> tuple[str, float]:
    """``("; per class: Pneumonia 140/150, Normal 0/50; with the class: chi-square p = 1e-40", p)``.

    The chi-square test of independence (odd or not x class) says whether the
    odd images go with a class, i.e. whether they could be a shortcut; p is
    NaN (and the text "") without labels.
    """
    if "label" not in frame.columns:
        return "", float("nan")
    from scipy.stats import chi2_contingency

    table = pd.DataFrame({"label": frame["label"].astype(str), "odd": odd.to_numpy()}).groupby(
        "label", sort=False
    )
    counts = np.array([[int(g["odd"].sum()), len(g) - int(g["odd"].sum())] for _, g in table])
    text = "; per class: " + ", ".join(
        f"{label} {int(g['odd'].sum())}/{len(g)}" for label, g in table
    )
    p = float("nan")
    if len(counts) > 1 and (counts.sum(axis=0) > 0).all():
        p = float(chi2_contingency(counts)[1])
        text += f"; with the class: chi-square p = {p:.2g}"
    return text, p


def size_mix(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per source: image sizes, shapes and modes, and a warning when the source mixes them.

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, ...)
        Needs ``source``, ``width``, ``height``, ``mode`` and ``bit_depth``;
        with ``label`` the warning counts the odd images per class (a shape
        or resolution that goes with one class is a shortcut).

    Returns
    -------
    DataFrame, one row per source (sorted by name)
        ``source``, ``n_images``, ``median_width``, ``median_height``,
        ``square``, ``landscape``, ``portrait`` (counts), ``off_resolution``
        (count), ``modes`` (``"L:20, RGB:4"``), ``bit_depths`` (``"8:24"``),
        ``shape_mix`` and ``resolution_mix`` (bool), ``shape_class_p`` (chi-square
        p of the odd shapes against the class; NaN without a shape mix or
        labels) and ``warning`` (a sentence, ``""`` when neither).

    Examples
    --------
    >>> frame = pd.DataFrame({"source": ["k"] * 4, "width": [1040, 1252, 224, 1120],
    ...                       "height": [747, 1028, 224, 904], "mode": "L", "bit_depth": 8})
    >>> row = size_mix(frame).iloc[0]
    >>> bool(row["shape_mix"]), bool(row["resolution_mix"])
    (True, True)
    """
    flags = size_flags(manifest)
    rows = []
    for source, index in manifest.groupby("source", sort=True).groups.items():
        frame, flag = manifest.loc[index], flags.loc[index]
        n = len(frame)
        shapes = flag["shape"].value_counts()
        n_other_shape = n - int(shapes.iloc[0])
        n_off = int(flag["off_resolution"].sum())
        shape_mix = n_other_shape >= max(1, MIX_SHARE * n)
        resolution_mix = n_off >= max(1, MIX_SHARE * n)
        sentences = []
        shape_class_p = float("nan")
        if shape_mix:
            order = [str(s) for s in shapes.index]
            counts = ", ".join(f"{int(shapes[s])} {s}" for s in order)
            examples = ", ".join(
                f"{s} {_common_size(frame.loc[flag['shape'] == s])}" for s in order[1:]
            )
            per_class, shape_class_p = _per_class(frame, flag["shape"] != order[0])
            sentences.append(
                f"mixes image shapes ({counts} of {n}; e.g. {examples}{per_class}): "
                "square copies of rectangular films may be squashed re-saves, and a shape that "
                "goes with a class is a shortcut (the letterbox padding shows it)"
            )
        if resolution_mix:
            median = int(flag["short_side"].median())
            sentences.append(
                f"mixes resolutions ({n_off} of {n} images have a short side over "
                f"{RESOLUTION_FACTOR:g}x off the median {median} px, e.g. "
                f"{_common_size(frame.loc[flag['off_resolution']])}"
                f"{_per_class(frame, flag['off_resolution'])[0]})"
            )
        rows.append(
            {
                "source": str(source),
                "n_images": n,
                "median_width": int(frame["width"].median()),
                "median_height": int(frame["height"].median()),
                "square": int(shapes.get("square", 0)),
                "landscape": int(shapes.get("landscape", 0)),
                "portrait": int(shapes.get("portrait", 0)),
                "off_resolution": n_off,
                "modes": ", ".join(
                    f"{k}:{v}" for k, v in frame["mode"].astype(str).value_counts().items()
                ),
                "bit_depths": ", ".join(
                    f"{k}:{v}" for k, v in frame["bit_depth"].astype(int).value_counts().items()
                ),
                "shape_mix": shape_mix,
                "shape_class_p": shape_class_p,
                "resolution_mix": resolution_mix,
                "warning": f"source {source}: " + "; ".join(sentences) if sentences else "",
            }
        )
    return pd.DataFrame(rows)
