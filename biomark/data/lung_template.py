"""A two-lung shape template fitted to a chest X-ray by image contrast.

This is the shape prior of :func:`biomark.data.lungs.segment_lungs`. Each lung
is a fixed polygon (:data:`LEFT_LUNG`, :data:`RIGHT_LUNG`, in *image*
left/right: the image-left polygon is the patient's right lung) drawn in a
unit box; a fit chooses the two boxes ``(x0, x1, y0, y1)``, i.e. position,
width and height of each lung (8 numbers), so the mask can only ever have the
shape of a lung field: it cannot run into the neck, the shoulders or the
axillae the way a threshold does.

The polygons are written by hand after the 0.5-level outline of the mean of
15 reference lung masks (Shenzhen and JSRT samples, each lung scaled to its
bounding box): apex medial of the box centre, a steep mediastinal border, the
lateral costophrenic angle as the lowest point; the image-right (patient's
left) lung has the cardiac notch.

Objective
---------
On the rank-normalised image ``u`` (:func:`~biomark.data.lung_checks.rank_normalise`,
so 0 = darkest, 1 = brightest), for each lung with template ``T`` and a ring
``R`` of width ``w = S/25`` around it (the template drawn in a box grown by
``w`` minus ``T``)::

    contrast = 0.7 * (mean u on R - mean u on T) + 0.3 * min over the top,
               bottom, lateral and medial parts of R of (mean u there - mean u on T)
    score    = contrast + 0.2 * (share of the dark pixels on that side covered by T)
                        - 1.0 * (share of T on outside air)

Aerated lung is darker than the clavicles and neck above it, the diaphragm
below, the chest wall beside it and the mediastinum between the lungs, so the
ring contrast peaks when the template sits on the lung field; the minimum over
the four sides stops one very bright neighbour (heart, spine) from paying for
a side with no edge (e.g. a template pushed up into a dark neck); the
coverage term (dark = below Otsu's threshold of the body) keeps a template
from shrinking onto the darkest patch; outside air (air reached from the
left/right edge, :func:`~biomark.data.lung_checks.outside_air`) is not lung.
The two lungs' scores are added, minus a penalty for tops more than 5 % or
bottoms more than 10 % of the height apart, heights less than 75 % or widths
less than 60 % of each other's, and (weight 3) for a lung shorter than 45 % of
the film: without it a film whose lower lungs are opacified (pneumonia) gets a
template on the dark upper zones only.

Search
------
On a copy of at most 100 px a side, padded with a neutral 0.5 so that a lung
cut by the crop edge is not rewarded: a coarse grid of symmetric two-lung
placements around the mediastinum (the brightest column of the central band
over the middle rows), then coordinate ascent over the 8 box numbers from the
three best, with steps from ``S/25`` down to half a pixel. Boxes stay inside
the image content, 30-98 % of its height and 12-50 % of its width.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from biomark.data.lung_checks import otsu

__all__ = ["LEFT_LUNG", "RIGHT_LUNG", "LungFit", "fit_lung_template", "draw_template"]

logger = logging.getLogger(__name__)

#: Image-left lung (patient's right) in a unit box: (x, y), x to the right, y down.
LEFT_LUNG: tuple[tuple[float, float], ...] = (
    (0.60, 0.00),
    (0.80, 0.04),
    (0.92, 0.15),
    (0.96, 0.35),
    (0.95, 0.55),
    (0.93, 0.72),
    (0.88, 0.82),
    (0.70, 0.86),
    (0.45, 0.86),
    (0.25, 0.90),
    (0.05, 1.00),
    (0.02, 0.80),
    (0.04, 0.55),
    (0.10, 0.35),
    (0.20, 0.18),
    (0.35, 0.06),
)
#: Image-right lung (patient's left, with the cardiac notch) in a unit box.
RIGHT_LUNG: tuple[tuple[float, float], ...] = (
    (0.45, 0.00),
    (0.25, 0.03),
    (0.12, 0.12),
    (0.10, 0.30),
    (0.15, 0.45),
    (0.25, 0.58),
    (0.40, 0.68),
    (0.55, 0.80),
    (0.70, 0.90),
    (0.95, 1.00),
    (0.98, 0.80),
    (0.96, 0.55),
    (0.90, 0.35),
    (0.80, 0.18),
    (0.65, 0.05),
)

_FIT_SIDE = 100
_SIDE_WEIGHT = 0.3
_COVERAGE = 0.2
_AIR = 1.0
_PAIR = 1.0
_MIN_HEIGHT, _SHORT_WEIGHT = 0.45, 3.0

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class LungFit:
    """The fitted template.

    Attributes
    ----------
    boxes : tuple of two (x0, x1, y0, y1)
        Image-left and image-right lung boxes in the coordinates of the image
        given to :func:`fit_lung_template`.
    score : float
        The objective (sum over both lungs, minus the pair penalty).
    """

    boxes: tuple[Box, Box]
    score: float


def draw_template(
    polygon: tuple[tuple[float, float], ...], box: Box, shape: tuple[int, int]
) -> np.ndarray:
    """Rasterise a unit-box polygon into ``box`` on a canvas of ``shape``; bool array."""
    x0, x1, y0, y1 = box
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(
        [(x0 + px * (x1 - x0), y0 + py * (y1 - y0)) for px, py in polygon], fill=1
    )
    return np.asarray(canvas, dtype=bool)


class _Objective:
    """The score of one lung placement, drawn in a window around the box (cached)."""

    def __init__(
        self, u: np.ndarray, air: np.ndarray, dark: np.ndarray, mid: float, ring: float
    ) -> None:
        self.u, self.air, self.ring = u, air, ring
        cols = np.arange(u.shape[1])[None, :]
        self.dark = (dark & (cols < mid), dark & (cols >= mid))
        self.n_dark = [max(int(d.sum()), 1) for d in self.dark]
        self.cache: dict[tuple, float] = {}

    def lung(self, side: int, box: tuple[float, ...]) -> float:
        key = (side, *(round(v, 3) for v in box))
        if key not in self.cache:
            self.cache[key] = self._score(side, box)
        return self.cache[key]

    def _score(self, side: int, box: tuple[float, ...]) -> float:
        x0, x1, y0, y1 = box
        w = self.ring
        height, width = self.u.shape
        r0, r1 = max(int(np.floor(y0 - w)) - 1, 0), min(int(np.ceil(y1 + w)) + 2, height)
        c0, c1 = max(int(np.floor(x0 - w)) - 1, 0), min(int(np.ceil(x1 + w)) + 2, width)
        polygon = LEFT_LUNG if side == 0 else RIGHT_LUNG
        # one canvas: 1 = the ring (the template grown by w), 2 = the template
        canvas = Image.new("L", (c1 - c0, r1 - r0), 0)
        draw = ImageDraw.Draw(canvas)
        for value, (bx0, bx1, by0, by1) in (
            (1, (x0 - w, x1 + w, y0 - w, y1 + w)),
            (2, (x0, x1, y0, y1)),
        ):
            draw.polygon(
                [(bx0 - c0 + px * (bx1 - bx0), by0 - r0 + py * (by1 - by0)) for px, py in polygon],
                fill=value,
            )
        drawn = np.asarray(canvas)
        inner, ring = drawn == 2, drawn == 1
        n_in, n_ring = int(inner.sum()), int(ring.sum())
        if n_in < 10 or n_ring < 10:
            return -1.0
        u = self.u[r0:r1, c0:c1]
        mean_in = float(u[inner].mean())
        # the ring's four parts: 0 upper fifth, 1 lower fifth, 2/3 the middle on either side of the
        # box centre
        h = y1 - y0
        rows = np.arange(r0, r1)
        part_of_row = np.where(rows < y0 + 0.2 * h, 0, np.where(rows > y0 + 0.8 * h, 1, 2))
        lateral = (np.arange(c0, c1) >= 0.5 * (x0 + x1)).astype(np.intp)
        part = part_of_row[:, None] + ((part_of_row == 2)[:, None] & (lateral[None, :] == 1))
        sums = np.bincount(part[ring], weights=u[ring], minlength=4)
        counts = np.bincount(part[ring], minlength=4)
        contrast = float(sums.sum() / n_ring) - mean_in
        sides = [sums[k] / counts[k] - mean_in for k in range(4) if counts[k] >= 3]
        if sides:
            contrast = (1 - _SIDE_WEIGHT) * contrast + _SIDE_WEIGHT * float(min(sides))
        coverage = float(self.dark[side][r0:r1, c0:c1][inner].sum()) / self.n_dark[side]
        on_air = float(self.air[r0:r1, c0:c1][inner].mean())
        return contrast + _COVERAGE * coverage - _AIR * on_air

    def total(self, boxes: list[float], height: float) -> float:
        left, right = tuple(boxes[0:4]), tuple(boxes[4:8])
        score = self.lung(0, left) + self.lung(1, right)
        h0, h1 = left[3] - left[2], right[3] - right[2]
        w0, w1 = left[1] - left[0], right[1] - right[0]
        penalty = max(abs(left[2] - right[2]) / height - 0.05, 0.0) + max(
            abs(left[3] - right[3]) / height - 0.1, 0.0
        )
        penalty += max(0.75 - min(h0, h1) / max(h0, h1), 0.0) + max(
            0.6 - min(w0, w1) / max(w0, w1), 0.0
        )
        penalty += _SHORT_WEIGHT * max(_MIN_HEIGHT - min(h0, h1) / height, 0.0)
        return score - _PAIR * penalty


def _allowed(boxes: list[float], lo: float, height: float, width: float) -> bool:
    for x0, x1, y0, y1 in (boxes[0:4], boxes[4:8]):
        if x0 < lo or y0 < lo or x1 > lo + width or y1 > lo + height:
            return False
        if not (
            0.3 * height <= y1 - y0 <= 0.98 * height and 0.12 * width <= x1 - x0 <= 0.5 * width
        ):
            return False
    return boxes[1] <= boxes[4] + 0.02 * width


def _ascend(
    objective: _Objective, boxes: list[float], lo: float, height: float, width: float
) -> tuple[list[float], float]:
    best = objective.total(boxes, height)
    step = max(height, width) / 25.0
    while step >= 0.5:
        improved = True
        while improved:
            improved = False
            for k in range(8):
                for delta in (-step, step):
                    trial = list(boxes)
                    trial[k] += delta
                    if not _allowed(trial, lo, height, width):
                        continue
                    score = objective.total(trial, height)
                    if score > best + 1e-9:
                        best, boxes, improved = score, trial, True
        step /= 2
    return boxes, best


def fit_lung_template(u: np.ndarray, air: np.ndarray) -> LungFit:
    """Fit the two-lung template to a rank-normalised film (see the module docstring).

    Parameters
    ----------
    u : ndarray of shape (H, W), float
        Rank-normalised, smoothed image content (no padding), values in [0, 1].
    air : ndarray of shape (H, W), bool
        Outside air (:func:`~biomark.data.lung_checks.outside_air`).

    Returns
    -------
    LungFit
        Boxes in ``u``'s pixel coordinates.

    Raises
    ------
    ValueError
        If ``u`` is smaller than 16 x 16 or ``air`` differs in shape.
    """
    u = np.asarray(u, dtype=np.float32)
    if u.ndim != 2 or min(u.shape) < 16:
        raise ValueError(f"fit_lung_template needs a 2-D image of at least 16 x 16, got {u.shape}")
    if np.shape(air) != u.shape:
        raise ValueError(
            f"fit_lung_template: air {np.shape(air)} and image {u.shape} differ in shape"
        )
    scale = min(1.0, _FIT_SIDE / max(u.shape))
    small = ndimage.zoom(u, scale, order=1) if scale < 1 else u
    small_air = (
        ndimage.zoom(np.asarray(air, np.float32), scale, order=1)
        if scale < 1
        else np.asarray(air, np.float32)
    ) > 0.5
    height, width = small.shape
    rows = np.arange(height)[:, None]
    body = ~small_air & (rows > 0.1 * height) & (rows < 0.9 * height)
    threshold = otsu(small[body] * 255.0) / 255.0 if body.sum() > 64 else 0.5
    dark = (small < threshold) & ~small_air
    # the mediastinum: brightest column of the central band over the middle rows
    band = ndimage.gaussian_filter1d(
        small[int(0.25 * height) : int(0.75 * height)].mean(axis=0), max(height, width) / 40.0
    )
    c0, c1 = int(0.3 * width), int(0.7 * width)
    mid = c0 + int(np.argmax(band[c0:c1]))
    pad = int(np.ceil(max(height, width) / 25.0)) + 2
    objective = _Objective(
        np.pad(small, pad, constant_values=0.5),
        np.pad(small_air, pad, constant_values=True),
        np.pad(dark, pad),
        mid + pad,
        max(height, width) / 25.0,
    )
    starts = []
    for gap, lateral, top, bottom in itertools.product(
        (0.03, 0.07, 0.12), (0.05, 0.12, 0.2), (0.05, 0.15, 0.25), (0.6, 0.75, 0.9)
    ):
        boxes = [
            lateral * width,
            mid - gap * width,
            top * height,
            bottom * height,
            mid + gap * width,
            (1 - lateral) * width,
            top * height,
            bottom * height,
        ]
        boxes = [v + pad for v in boxes]
        if _allowed(boxes, pad, height, width):
            starts.append((objective.total(boxes, height), boxes))
    starts.sort(key=lambda item: -item[0])
    best: tuple[list[float], float] | None = None
    for _, boxes in starts[:3]:
        found = _ascend(objective, boxes, pad, height, width)
        if best is None or found[1] > best[1]:
            best = found
    if best is None:  # no allowed start (a strip-shaped image): a default placement
        boxes = [
            v + pad
            for v in (
                0.1 * width,
                0.45 * width,
                0.1 * height,
                0.8 * height,
                0.55 * width,
                0.9 * width,
                0.1 * height,
                0.8 * height,
            )
        ]
        best = (boxes, objective.total(boxes, height))
    unscaled = [(v - pad) / scale for v in best[0]]
    return LungFit(boxes=(tuple(unscaled[0:4]), tuple(unscaled[4:8])), score=float(best[1]))
