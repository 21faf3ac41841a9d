"""Classical lung-field segmentation of a letterboxed chest X-ray, and mask checks.

Radiomics "inside the lungs" needs a lung mask. The phantom ships its true
masks; real images do not, so :func:`segment_lungs` computes one with plain
image processing (numpy + scipy.ndimage; no model, nothing to download). It is
a rough, documented baseline, not a clinical tool: every mask it returns comes
with a :class:`MaskCheck`, and implausible masks are flagged so that callers
exclude them instead of silently using them.

Algorithm (all sizes scale with the image side ``S``; 200 px for the cache)
---------------------------------------------------------------------------
1. **Content.** The letterbox padding is exactly 0: the content is the
   bounding box of the non-zero rows and columns (:func:`content_mask`).
2. **Smooth** with a Gaussian (sigma ``S/200`` px) to quiet noise and ribs.
3. **Body.** Otsu's threshold of the content pixels splits air outside the
   patient from the body; the largest bright component with its holes filled
   is the body (the lungs are holes inside it).
4. **Dark inside the body.** A second Otsu threshold on the pixels inside the
   body (eroded by ``S/50`` px, so the dark skin line is not counted) separates
   aerated lung from soft tissue, mediastinum and bone; the threshold is capped
   at the body's 45th grey percentile so that dense lungs do not take over.
5. **Morphology.** Opening (radius ``S/100``) removes thin dark gaps between
   ribs and soft tissue, then components touching the content border are
   dropped (outside air, collimation), holes are filled and a closing (radius
   ``S/40``) takes in vessels and rib shadows along the lung edge.
6. **Two lungs.** Components smaller than 1 % of the content or centred in
   the top 8 % / bottom 10 % are discarded; of the rest, the largest one on each
   side of the content's vertical midline is kept (a component that straddles
   the midline is split there). Each kept lung is hole-filled again.

Plausibility (:func:`check_mask`)
---------------------------------
Measured relative to the content area: ``area_fraction`` (flag ``too_small``
below 5 %, ``too_large`` above 55 %), ``n_components`` (8-connected, ignoring
specks below 0.2 %), ``lr_balance`` = smaller / larger of the mask areas left
and right of the midline (flag ``one_lung`` below 0.25, or fewer than two
components), ``touches_border`` (the mask reaches the content's outer edge:
the "lung" probably includes outside air). ``empty`` is set for an empty
mask. A mask is plausible when it has no flag.

Lung zones (:func:`lung_zones`)
-------------------------------
The radiologist's zones of a frontal chest film, computed from the mask alone.
The two lungs are the mask pixels left and right of the mask's vertical
midline (the centre of its column extent). Each lung is split

* vertically into **upper / middle / lower** thirds of *its own* height (top
  to bottom mask row of that lung; the costophrenic angle is the lowest
  point), as in zone-based scores such as the Brixia score, and
* horizontally, row by row, into **central** (the medial half of the lung's
  width in that row, the perihilar side) and **peripheral** (the lateral
  half, towards the chest wall).

Each zone is the union over both lungs, so zone features stay symmetric and
bilateral signatures are measured on both sides.

Measured performance: see ``tests/data/test_lungs.py`` (Dice against the
phantom's true masks; plausibility on the real sample in ``../shared/data``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = [
    "MASK_FLAGS",
    "MaskCheck",
    "check_mask",
    "content_mask",
    "ZONES",
    "dice",
    "lung_zones",
    "region_masks",
    "segment_lungs",
]

logger = logging.getLogger(__name__)

#: Every flag :func:`check_mask` can raise.
MASK_FLAGS: tuple[str, ...] = ("empty", "too_small", "too_large", "one_lung", "touches_border")

#: Zone names of :func:`lung_zones`, in output order.
ZONES: tuple[str, ...] = ("upper", "middle", "lower", "central", "peripheral")

_MIN_AREA, _MAX_AREA, _MIN_BALANCE = 0.05, 0.55, 0.25
_LUNG_PERCENTILE = 30.0


@dataclass(frozen=True)
class MaskCheck:
    """Plausibility of one lung mask.

    Attributes
    ----------
    area_fraction : float
        Mask pixels / content pixels (the non-padding part of the image).
    n_components : int
        8-connected components larger than 0.2 % of the content.
    touches_border : bool
        The mask reaches the outermost row/column of the content.
    lr_balance : float
        Smaller / larger of the mask areas left and right of the content's
        vertical midline (0 = one side empty, 1 = equal).
    flags : tuple of str
        Subset of :data:`MASK_FLAGS`; empty when the mask is plausible.
    """

    area_fraction: float
    n_components: int
    touches_border: bool
    lr_balance: float
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
            "flags": ";".join(self.flags),
            "plausible": self.plausible,
        }


def _bbox(image: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(image.any(axis=1))
    cols = np.flatnonzero(image.any(axis=0))
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
    top, bottom, left, right = _bbox(image)
    out[top:bottom, left:right] = True
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2|A∩B| / (|A|+|B|)`` of two binary masks (1.0 if both empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def _disk(radius: int) -> np.ndarray:
    radius = max(int(radius), 1)
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of 8-bit-range values (between-class variance maximum)."""
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


def _content_border(content: np.ndarray) -> np.ndarray:
    return content & ~ndimage.binary_erosion(content, border_value=0)


def check_mask(mask: np.ndarray, content: np.ndarray | None = None) -> MaskCheck:
    """Measure a lung mask's plausibility.

    Parameters
    ----------
    mask : ndarray of shape (S, S)
        Binary lung mask (non-zero = lung).
    content : ndarray of shape (S, S), bool, optional
        The image content (see :func:`content_mask`); default the whole image.

    Returns
    -------
    MaskCheck
    """
    mask = np.asarray(mask) > 0
    content = np.ones(mask.shape, dtype=bool) if content is None else np.asarray(content, dtype=bool)
    content_area = max(int(content.sum()), 1)
    area = int(mask.sum())
    fraction = area / content_area
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, dtype=int)
    n_components = int((sizes >= 0.002 * content_area).sum())
    touches = bool((mask & _content_border(content)).any())
    top, bottom, left, right = _bbox(content)
    mid = (left + right) / 2.0
    cols = np.arange(mask.shape[1])
    left_area = int(mask[:, cols < mid].sum())
    right_area = int(mask[:, cols >= mid].sum())
    balance = min(left_area, right_area) / max(left_area, right_area) if area else 0.0
    flags: list[str] = []
    if area == 0:
        flags.append("empty")
    if fraction < _MIN_AREA:
        flags.append("too_small")
    if fraction > _MAX_AREA:
        flags.append("too_large")
    if area and (n_components < 2 or balance < _MIN_BALANCE):
        flags.append("one_lung")
    if touches:
        flags.append("touches_border")
    return MaskCheck(
        area_fraction=float(fraction),
        n_components=n_components,
        touches_border=touches,
        lr_balance=float(balance),
        flags=tuple(flags),
    )


def segment_lungs(image: np.ndarray) -> tuple[np.ndarray, MaskCheck]:
    """Segment the two lung fields of a letterboxed chest X-ray.

    See the module docstring for the algorithm and its limits.

    Parameters
    ----------
    image : ndarray of shape (S, S), uint8
        A letterboxed radiograph (padding exactly 0), e.g. one row of a
        dataset's ``cache/images.npy``.

    Returns
    -------
    mask : ndarray of shape (S, S), uint8
        Lung fields in {0, 1} (may be empty when nothing lung-like is found).
    check : MaskCheck
        Its plausibility; callers must exclude masks with flags.

    Examples
    --------
    >>> import numpy as np
    >>> mask, check = segment_lungs(np.zeros((64, 64), dtype=np.uint8))
    >>> int(mask.sum()), check.flags
    (0, ('empty', 'too_small'))
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"segment_lungs expects a 2-D image, got shape {image.shape}")
    size = max(image.shape)
    content = content_mask(image)
    out = np.zeros(image.shape, dtype=np.uint8)
    content_area = int(content.sum())
    if content_area < 64:
        return out, check_mask(out, content)

    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma=max(size / 200.0, 0.5))
    values = smooth[content]
    # 3. body: above the air level, largest component, holes (lungs) filled
    upper = _otsu(values)
    lower = values[values < upper]
    air = _otsu(lower) if lower.size >= 16 else upper
    labels, n = ndimage.label(content & (smooth > air))
    if n == 0:
        return out, check_mask(out, content)
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    body = ndimage.binary_fill_holes(labels == largest)
    inner = ndimage.binary_erosion(body, structure=_disk(size / 25.0), border_value=0) & content
    if inner.sum() < 64:
        return out, check_mask(out, content)
    # 4. dark inside the body
    inside = smooth[inner]
    threshold = min(_otsu(inside), float(np.percentile(inside, _LUNG_PERCENTILE)))
    dark = inner & (smooth < threshold)
    # 5. morphology
    dark = ndimage.binary_opening(dark, structure=_disk(size / 100.0))
    dark = ndimage.binary_fill_holes(dark)
    dark = ndimage.binary_closing(dark, structure=_disk(size / 40.0), border_value=0) & content
    # 6. one lung per side
    top, bottom, left, right = _bbox(content)
    mid = (left + right) // 2
    height = bottom - top
    halves = (np.zeros_like(dark), np.zeros_like(dark))
    halves[0][:, :mid] = dark[:, :mid]
    halves[1][:, mid:] = dark[:, mid:]
    for half in halves:
        labels, n = ndimage.label(half)
        if n == 0:
            continue
        best, best_size = 0, 0
        for index, region in enumerate(ndimage.find_objects(labels), start=1):
            component = labels[region] == index
            area = int(component.sum())
            rows = np.nonzero(component)[0] + region[0].start
            centre = (rows.mean() - top) / max(height, 1)
            if area < 0.01 * content_area or centre < 0.08 or centre > 0.90:
                continue
            if area > best_size:
                best, best_size = index, area
        if best:
            out |= ndimage.binary_fill_holes(labels == best).astype(np.uint8)
    return out, check_mask(out, content)


def lung_zones(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Split a two-lung mask into upper/middle/lower and central/peripheral zones.

    See "Lung zones" in the module docstring for the definition. Pure and
    deterministic: the zones depend on the mask only.

    Parameters
    ----------
    mask : ndarray of shape (H, W)
        Binary lung mask (non-zero = lung), both lungs.

    Returns
    -------
    dict of str to ndarray of shape (H, W), uint8
        One mask in {0, 1} per name of :data:`ZONES`, in that order. The
        vertical thirds partition the mask, and so do central + peripheral.
        Every zone is empty for an empty mask.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((9, 12), dtype=np.uint8)
    >>> mask[:, 1:5] = mask[:, 7:11] = 1
    >>> zones = lung_zones(mask)
    >>> [int(zones[z].sum()) for z in ZONES]
    [24, 24, 24, 36, 36]
    >>> zones["peripheral"][0].tolist()
    [0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    """
    lung = np.asarray(mask) > 0
    zones = {name: np.zeros(lung.shape, dtype=np.uint8) for name in ZONES}
    if not lung.any():
        return zones
    cols = np.flatnonzero(lung.any(axis=0))
    mid = (cols[0] + cols[-1] + 1) / 2.0
    column = np.arange(lung.shape[1])
    row_index = np.arange(lung.shape[0])[:, None]
    for lateral_is_left, side in ((True, column < mid), (False, column >= mid)):
        one = lung & side[None, :]
        rows = np.flatnonzero(one.any(axis=1))
        if rows.size == 0:
            continue
        # vertical thirds of this lung's own height
        t = (row_index - rows[0]) / float(rows[-1] + 1 - rows[0])
        for name, lo, hi in (("upper", 0.0, 1 / 3), ("middle", 1 / 3, 2 / 3), ("lower", 2 / 3, 1.01)):
            zones[name] |= (one & (t >= lo) & (t < hi)).astype(np.uint8)
        # row by row: medial half = central, lateral half = peripheral
        present = one.any(axis=1)
        first = np.where(present, np.argmax(one, axis=1), 0)
        last = np.where(present, one.shape[1] - 1 - np.argmax(one[:, ::-1], axis=1), 0)
        centre = (first + last + 1) / 2.0
        lateral = column[None, :] < centre[:, None] if lateral_is_left else column[None, :] >= centre[:, None]
        zones["peripheral"] |= (one & lateral).astype(np.uint8)
        zones["central"] |= (one & ~lateral).astype(np.uint8)
    return zones


def region_masks(
    images: np.ndarray,
    region: str = "lung",
    true_masks: np.ndarray | None = None,
) -> tuple[np.ndarray, list[MaskCheck], str]:
    """The extraction region of every image, with plausibility checks.

    Parameters
    ----------
    images : ndarray of shape (n_images, S, S), uint8
        Letterboxed images.
    region : {"lung", "image"}, default "lung"
        ``lung``: ``true_masks`` when given, else :func:`segment_lungs`;
        ``image``: :func:`content_mask` (no padding).
    true_masks : ndarray of shape (n_images, S, S), optional
        Known lung masks (the phantom's ``cache/masks.npy``).

    Returns
    -------
    masks : ndarray of shape (n_images, S, S), uint8
        Regions in {0, 1}.
    checks : list of MaskCheck
        One per image (for ``image`` regions only ``empty`` can be flagged).
    source : str
        ``dataset``, ``segmented`` or ``content``.

    Raises
    ------
    ValueError
        On an unknown ``region`` or mismatched shapes.
    """
    if region not in ("lung", "image"):
        raise ValueError(f"region={region!r}: use 'lung' or 'image'")
    if true_masks is not None and true_masks.shape != images.shape:
        raise ValueError(f"masks {true_masks.shape} and images {images.shape} differ in shape")
    masks = np.zeros(images.shape, dtype=np.uint8)
    checks: list[MaskCheck] = []
    for i in range(images.shape[0]):
        image = np.asarray(images[i])
        content = content_mask(image)
        if region == "image":
            masks[i] = content
            empty = not content.any()
            checks.append(
                MaskCheck(
                    area_fraction=1.0 if not empty else 0.0,
                    n_components=int(not empty),
                    touches_border=False,
                    lr_balance=1.0 if not empty else 0.0,
                    flags=("empty",) if empty else (),
                )
            )
        elif true_masks is not None:
            masks[i] = np.asarray(true_masks[i]) > 0
            checks.append(check_mask(masks[i], content))
        else:
            masks[i], check = segment_lungs(image)
            checks.append(check)
    source = "content" if region == "image" else ("dataset" if true_masks is not None else "segmented")
    return masks, checks, source
