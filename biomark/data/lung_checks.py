"""Plausibility checks of a lung mask on a letterboxed chest X-ray.

Every lung mask biomark uses, segmented or supplied by the user, goes through
:func:`check_mask`; a mask with any flag is reported and left out of
lung-region analyses instead of being used silently.

Measurements (all relative to the image *content*, the non-padding part)
-------------------------------------------------------------------------
The two lungs are the mask pixels left and right of the content's vertical
midline.

``area_fraction``
    Mask pixels / content pixels. Flags ``too_small`` (< 5 %) and
    ``too_large`` (> 55 %); ``empty`` for no pixel at all.
``n_components``, ``lr_balance``
    8-connected components above 0.2 % of the content, and the smaller /
    larger of the two lungs' areas. ``one_lung``: fewer than two components or
    a balance below 0.25; ``asymmetric``: a balance below 0.5 or one lung
    less than 60 % as tall as the other (the lung *fields* of a frontal film
    are roughly symmetric even when one lung is diseased).
``height_fraction``
    Height of the shorter lung / content height. ``short`` below 0.3 (the
    vertical extent of a lung field relative to the thorax).
``top_cut``
    Largest over the two lungs of (mask columns in the content's top rows) /
    (that lung's widest row). A lung apex is a dome that narrows upwards, even
    when the film's crop cuts it (0.5-0.65 on the tightly cropped real films
    looked at); ``touches_top`` above 0.9: the outline runs straight out of the
    top of the image, as a leak through the neck or over the shoulders does.
``outside_fraction``, ``side_contact``
    Share of the mask on outside air reached from the left or right edge of
    the content (:func:`outside_air`); ``beyond_ribcage`` above 5 %: the mask
    reaches laterally past the chest wall into the air beside the patient.
    ``side_contact`` (the largest share of a lung's height over which it runs
    along the content's outer left/right column) is reported, not flagged: on
    films cropped inside the ribcage the lung legitimately runs along the
    crop edge.
``solidity``
    Smallest over the two lungs of area / convex-hull area. A lung field is
    nearly convex apart from the cardiac notch (0.64 and above on the
    reference masks); ``irregular`` below 0.55, or more than two components:
    protrusions or separate parts such as a leak into the shoulder, the axilla
    or the stomach bubble, or a ragged mask.
``hole_fraction``
    Enclosed holes / mask area. ``holes`` above 1 %.
``contrast``
    Only with the image: for each lung, the median rank-normalised grey value
    of a ring of width ``S/25`` around it minus the lung's own median; the
    smaller of the two lungs. Aerated lung is darker than the mediastinum,
    chest wall and diaphragm around it; ``low_contrast`` below 0.12 means the
    mask is not on dark lung (or a lung is fully opacified). On the reference
    masks measured while writing this (Shenzhen, JSRT samples, phantom) the
    smallest value was 0.18.
``fit_score``
    Only for :func:`biomark.data.lungs.segment_lungs`: the template fit's
    objective (:mod:`biomark.data.lung_template`); ``poor_fit`` below
    :data:`POOR_FIT`.

``touches_border`` (the mask reaches the outermost row or column of the
content) is kept as a measurement for the masks table but is not a flag: on
tightly cropped films the lungs legitimately reach the crop edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

__all__ = [
    "MASK_FLAGS",
    "POOR_FIT",
    "MaskCheck",
    "bbox",
    "check_mask",
    "content_mask",
    "dice",
    "disk",
    "otsu",
    "outside_air",
    "rank_normalise",
]

logger = logging.getLogger(__name__)

#: Every flag :func:`check_mask` (and the segmenter's ``poor_fit``) can raise.
MASK_FLAGS: tuple[str, ...] = (
    "empty",
    "too_small",
    "too_large",
    "one_lung",
    "asymmetric",
    "short",
    "touches_top",
    "beyond_ribcage",
    "irregular",
    "holes",
    "low_contrast",
    "poor_fit",
)

#: Template-fit objective below which a segmentation is flagged ``poor_fit``.
POOR_FIT = 0.37

_MIN_AREA, _MAX_AREA = 0.05, 0.55
_ONE_LUNG, _ASYMMETRIC, _HEIGHT_RATIO = 0.25, 0.5, 0.6
_SHORT, _TOP_CUT, _OUTSIDE, _SOLIDITY, _HOLES, _CONTRAST = 0.3, 0.9, 0.05, 0.55, 0.01, 0.12


@dataclass(frozen=True)
class MaskCheck:
    """Plausibility of one lung mask (see the module docstring).

    Attributes
    ----------
    area_fraction : float
    n_components : int
    touches_border : bool
    lr_balance : float
    height_fraction : float
    top_cut : float
    outside_fraction : float
        NaN when the image was not given.
    side_contact : float
    solidity : float
    hole_fraction : float
    contrast : float
        NaN when the image was not given.
    fit_score : float
        NaN unless the mask comes from the template segmenter.
    flags : tuple of str
        Subset of :data:`MASK_FLAGS`; empty when the mask is plausible.
    """

    area_fraction: float
    n_components: int
    touches_border: bool
    lr_balance: float
    height_fraction: float = 0.0
    top_cut: float = 0.0
    outside_fraction: float = float("nan")
    side_contact: float = 0.0
    solidity: float = 1.0
    hole_fraction: float = 0.0
    contrast: float = float("nan")
    fit_score: float = float("nan")
    flags: tuple[str, ...] = field(default=())

    @property
    def plausible(self) -> bool:
        """True when no flag is raised."""
        return not self.flags

    def as_dict(self) -> dict[str, object]:
        """A flat row for a table (flags joined with ``;``)."""
        return {
            "area_fraction": self.area_fraction,
            "n_components": self.n_components,
            "touches_border": self.touches_border,
            "lr_balance": self.lr_balance,
            "height_fraction": self.height_fraction,
            "top_cut": self.top_cut,
            "outside_fraction": self.outside_fraction,
            "side_contact": self.side_contact,
            "solidity": self.solidity,
            "hole_fraction": self.hole_fraction,
            "contrast": self.contrast,
            "fit_score": self.fit_score,
            "flags": ";".join(self.flags),
            "plausible": self.plausible,
        }


# ------------------------------------------------------------------ helpers
def bbox(image: np.ndarray) -> tuple[int, int, int, int]:
    """``top, bottom, left, right`` of the non-zero pixels (bottom/right exclusive; zeros if
    none)."""
    rows = np.flatnonzero(np.asarray(image).any(axis=1))
    cols = np.flatnonzero(np.asarray(image).any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def content_mask(image: np.ndarray) -> np.ndarray:
    """The non-padding part of a letterboxed image.

    Parameters
    ----------
    image : ndarray of shape (S, S)
        A letterboxed image whose padding is exactly 0.

    Returns
    -------
    ndarray of shape (S, S), bool
        True inside the bounding box of the non-zero rows and columns (all
        False for an all-black image).
    """
    image = np.asarray(image)
    out = np.zeros(image.shape, dtype=bool)
    top, bottom, left, right = bbox(image)
    out[top:bottom, left:right] = True
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2|A∩B| / (|A|+|B|)`` of two binary masks (1.0 if both empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def disk(radius: float) -> np.ndarray:
    """Boolean disk structuring element of the given radius (at least 1)."""
    radius = max(int(round(radius)), 1)
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in the 8-bit range (between-class variance maximum).

    Hand-written because scikit-image is not a dependency: 12 lines of numpy.
    """
    hist, edges = np.histogram(values, bins=256, range=(0.0, 256.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def rank_normalise(values: np.ndarray) -> np.ndarray:
    """Grey values replaced by their mid-rank in [0, 1] (histogram equalisation), same shape,
    float32.

    Equal values share one rank (the middle of their run), so a flat region
    stays flat. Makes thresholds and contrasts comparable between films of
    very different exposure and windowing.

    Examples
    --------
    >>> rank_normalise(np.array([[5, 1], [9, 5]])).tolist()
    [[0.5, 0.0], [1.0, 0.5]]
    """
    array = np.asarray(values)
    if array.size < 2:
        return np.zeros(array.shape, dtype=np.float32)
    unique, inverse, counts = np.unique(array.ravel(), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid = (ends - counts + ends - 1) / 2.0
    return (mid[inverse] / (array.size - 1)).astype(np.float32).reshape(array.shape)


def outside_air(smooth: np.ndarray, max_run: float = 0.25) -> np.ndarray:
    """Outside air reached from the left or right edge of a cropped film.

    Air is darker than the threshold between the two darkest Otsu classes.
    Per row, the dark run starting at the left (right) edge is air when it is
    at most ``max_run`` of the width long; a longer run means the lung itself
    reaches the crop edge, which happens on tightly cropped films. Runs from
    the top and bottom are not used: a film cropped at the apices would
    otherwise have its lungs called air.

    Parameters
    ----------
    smooth : ndarray of shape (H, W)
        The smoothed content of a film (no padding).
    max_run : float, default 0.25

    Returns
    -------
    ndarray of shape (H, W), bool
    """
    upper = otsu(smooth.ravel())
    lower = smooth[smooth < upper]
    threshold = otsu(lower) if lower.size >= 16 else upper
    dark = smooth <= threshold
    height, width = dark.shape
    all_dark = dark.all(axis=1)
    left = np.where(all_dark, width, np.argmin(dark, axis=1))
    right = np.where(all_dark, width, np.argmin(dark[:, ::-1], axis=1))
    cap = max_run * width
    cols = np.arange(width)[None, :]
    return ((cols < left[:, None]) & (left[:, None] <= cap)) | (
        (cols >= width - right[:, None]) & (right[:, None] <= cap)
    )


def _smooth_crop(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    crop = np.asarray(image)[top:bottom, left:right].astype(np.float32)
    return ndimage.gaussian_filter(crop, sigma=max(max(np.shape(image)) / 200.0, 0.5))


def _two_lungs(mask: np.ndarray) -> list[np.ndarray]:
    """The mask split at its content's vertical midline (left part, right part)."""
    cols = np.arange(mask.shape[1])
    mid = mask.shape[1] / 2.0
    return [mask & (cols < mid)[None, :], mask & (cols >= mid)[None, :]]


def _solidity(lung: np.ndarray) -> float:
    """Area / convex-hull area of a binary region (pixel corners as hull points); 0 when
    degenerate."""
    rows, cols = np.nonzero(lung)
    if rows.size < 3:
        return 0.0
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)]
    )
    try:
        return float(rows.size / ConvexHull(corners).volume)
    except QhullError:
        return 0.0


def _contrast(mask: np.ndarray, smooth: np.ndarray, air: np.ndarray, ring_width: float) -> float:
    u = rank_normalise(smooth)
    values = []
    for lung in _two_lungs(mask):
        if not lung.any():
            return 0.0
        ring = (ndimage.distance_transform_edt(~lung) <= ring_width) & ~mask & ~air
        values.append(float(np.median(u[ring]) - np.median(u[lung])) if ring.any() else 0.0)
    return min(values)


# ------------------------------------------------------------------ the check
def check_mask(
    mask: np.ndarray,
    content: np.ndarray | None = None,
    *,
    image: np.ndarray | None = None,
    fit_score: float | None = None,
) -> MaskCheck:
    """Measure a lung mask's plausibility (see the module docstring).

    Parameters
    ----------
    mask : ndarray of shape (S, S)
        Binary lung mask (non-zero = lung).
    content : ndarray of shape (S, S), bool, optional
        The image content (:func:`content_mask`); default the whole image, or
        the content of ``image`` when that is given.
    image : ndarray of shape (S, S), optional
        The letterboxed film; enables ``outside_fraction`` and ``contrast``.
    fit_score : float, optional
        The segmenter's template-fit objective; enables ``poor_fit``.

    Returns
    -------
    MaskCheck

    Raises
    ------
    ValueError
        If ``mask``, ``content`` and ``image`` differ in shape.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((100, 100), dtype=np.uint8)
    >>> mask[20:80, 15:45] = mask[20:80, 55:85] = 1
    >>> check_mask(mask).flags
    ()
    >>> check_mask(mask[:, ::-1] * (np.arange(100) < 50)).flags
    ('one_lung',)
    """
    mask = np.asarray(mask) > 0
    if image is not None and content is None:
        content = content_mask(image)
    content = (
        np.ones(mask.shape, dtype=bool) if content is None else np.asarray(content, dtype=bool)
    )
    for name, other in (("content", content), ("image", image)):
        if other is not None and np.shape(other) != mask.shape:
            raise ValueError(
                f"check_mask: mask {mask.shape} and {name} {np.shape(other)} differ in shape"
            )
    top, bottom, left, right = bbox(content)
    content_area = max(int(content.sum()), 1)
    area = int(mask.sum())
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, dtype=int)
    inner = mask[top:bottom, left:right] & content[top:bottom, left:right]
    balance, heights, top_cut, side, solidity = _lung_geometry(inner)
    filled = ndimage.binary_fill_holes(inner)
    outside, contrast = float("nan"), float("nan")
    if image is not None and area and min(inner.shape) > 2:
        smooth = _smooth_crop(image, top, bottom, left, right)
        air = outside_air(smooth)
        outside = float((inner & air).sum()) / max(int(inner.sum()), 1)
        contrast = _contrast(inner, smooth, air, max(mask.shape) / 25.0)
    measured = MaskCheck(
        area_fraction=area / content_area,
        n_components=int((sizes >= 0.002 * content_area).sum()),
        touches_border=bool(
            (mask & content & ~ndimage.binary_erosion(content, border_value=0)).any()
        ),
        lr_balance=float(balance),
        height_fraction=float(min(heights)) if area else 0.0,
        top_cut=float(top_cut),
        outside_fraction=outside,
        side_contact=float(side),
        solidity=float(solidity),
        hole_fraction=(int(filled.sum()) - int(inner.sum())) / max(int(inner.sum()), 1),
        contrast=contrast,
        fit_score=float("nan") if fit_score is None else float(fit_score),
    )
    height_ratio = min(heights) / max(heights) if max(heights) > 0 else 0.0
    return replace(measured, flags=_flags(measured, height_ratio))


def _lung_geometry(inner: np.ndarray) -> tuple[float, list[float], float, float, float]:
    """Shape of the two lungs of a mask cropped to the image content.

    Parameters
    ----------
    inner : ndarray of shape (H, W), bool
        The mask inside the content's bounding box.

    Returns
    -------
    balance : float
        Smaller / larger lung area (0 for an empty mask).
    heights : list of two floats
        Each lung's height / ``H``.
    top_cut, side_contact, solidity : float
        As in the module docstring.
    """
    height, width = inner.shape
    lungs = _two_lungs(inner)
    areas = [int(lung.sum()) for lung in lungs]
    balance = min(areas) / max(areas) if max(areas) else 0.0
    heights, top_cut, side, solidity = [], 0.0, 0.0, 1.0
    band = max(1, int(round(0.01 * height)))
    edge = max(1, int(round(0.01 * width)))
    for lung, outer in zip(lungs, (slice(0, edge), slice(width - edge, width)), strict=True):
        rows = np.flatnonzero(lung.any(axis=1))
        heights.append((rows[-1] + 1 - rows[0]) / max(height, 1) if rows.size else 0.0)
        if rows.size:
            widest = int(lung.sum(axis=1).max())
            top_cut = max(top_cut, int(lung[:band].any(axis=0).sum()) / max(widest, 1))
            side = max(side, int(lung[:, outer].any(axis=1).sum()) / (rows[-1] + 1 - rows[0]))
            solidity = min(solidity, _solidity(lung))
    return balance, heights, top_cut, side, solidity


def _flags(check: MaskCheck, height_ratio: float) -> tuple[str, ...]:
    """The flags of measured plausibility figures (thresholds in the module docstring).

    ``height_ratio`` is the shorter lung's height / the taller one's.
    """
    if check.area_fraction == 0:
        return ("empty", "too_small")
    flags: list[str] = []
    if check.area_fraction < _MIN_AREA:
        flags.append("too_small")
    if check.area_fraction > _MAX_AREA:
        flags.append("too_large")
    if check.n_components < 2 or check.lr_balance < _ONE_LUNG:
        flags.append("one_lung")
    elif check.lr_balance < _ASYMMETRIC or height_ratio < _HEIGHT_RATIO:
        flags.append("asymmetric")
    if check.height_fraction < _SHORT and "one_lung" not in flags:
        flags.append("short")
    if check.top_cut > _TOP_CUT:
        flags.append("touches_top")
    if check.outside_fraction > _OUTSIDE:
        flags.append("beyond_ribcage")
    if check.solidity < _SOLIDITY or check.n_components > 2:
        flags.append("irregular")
    if check.hole_fraction > _HOLES:
        flags.append("holes")
    if check.contrast < _CONTRAST:
        flags.append("low_contrast")
    if check.fit_score < POOR_FIT:
        flags.append("poor_fit")
    return tuple(flags)
