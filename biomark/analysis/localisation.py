"""Where in the image a deep feature lives, and image-level Grad-CAM.

GAP feature ``j`` is the spatial mean of channel ``j`` of the last
convolutional map ``A`` (``out_relu``, shape ``(h, w)`` per channel, ``side/32``
per side). Each map cell summarises one ``side/h x side/w`` block of the image
(its receptive field is much larger -- nearly the whole image at the last
layer -- so "where" is the block whose activation carries the feature, not a
pixel-exact outline).

* :func:`cell_fractions` -- per image, the fraction of each map cell's block
  that lies inside the lung mask (area averaging of the mask onto the map grid).
* :func:`lung_mass` -- per image and channel, the activation mass inside the
  lungs ``sum_cells A * m`` and in total ``sum_cells A``; their ratio is the
  fraction of the feature's activation mass inside the lungs. This block
  (nearest-neighbour) assignment preserves mass exactly, unlike a bilinear
  upsampling, which is used only for display (:func:`upsample`).
* :func:`grad_cam` -- Grad-CAM (Selvaraju et al. 2017) for a class score ``y``.
  Because ``g_k = (1/HW) sum_ij A_k(i, j)``, the gradient of ``y`` with respect
  to the map is ``dy/dA_k(i, j) = (1/HW) dy/dg_k`` -- the same for every cell --
  so the Grad-CAM weight ``alpha_k = mean_ij dy/dA_k(i, j) = (1/HW) dy/dg_k``
  comes from the numpy head's analytic gradient
  (:meth:`biomark.analysis.head.Head.gradient`) and the maps alone: no
  framework autodiff, any Keras backend.

* :func:`occlusion_effects` -- localisation that does not depend on the map
  size. At 64 px the last map is 2 x 2 and a map cell mixes lung and
  non-lung (:func:`attainable_lung_fraction` is about 0.3), so no feature can
  show a lung fraction above 0.5 from the maps. Instead each image is passed
  again twice, with the lungs and with everything outside them filled by a
  neutral image (the mean image), and a feature's change in each case is its
  dependence on what is inside and outside the lungs (occlusion, Zeiler &
  Fergus 2014, with two regions): ``inside = |g - g(lungs filled)|``,
  ``outside = |g - g(outside filled)|``. ``inside / (inside + outside)``
  plays the role of the lung fraction, and :func:`lung_mass`'s
  ``(inside, total)`` pair is returned so both methods aggregate alike.
  It is causal (what the feature needs) where the maps are correlational (where
  it is large), and needs no gradient, so it works on any backend.

numpy only.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = [
    "attainable_lung_fraction",
    "cell_fractions",
    "grad_cam",
    "lung_mass",
    "occlusion_effects",
    "upsample",
]

logger = logging.getLogger(__name__)


def _edges(size: int, cells: int) -> np.ndarray:
    return np.round(np.linspace(0, size, cells + 1)).astype(np.int64)


def cell_fractions(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each map cell's image block inside the mask.

    Parameters
    ----------
    masks : ndarray of shape (n_images, rows, cols)
        Lung masks (non-zero = lung).
    grid : (h, w)
        Map size of the last convolutional layer.

    Returns
    -------
    ndarray of shape (n_images, h, w), float64 in [0, 1]

    Raises
    ------
    ValueError
        If ``masks`` is not 3-D or the grid is finer than the image.
    """
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must have shape (n, rows, cols), got {m.shape}")
    h, w = (int(v) for v in grid)
    if h < 1 or w < 1 or h > m.shape[1] or w > m.shape[2]:
        raise ValueError(f"grid {grid} does not fit images of {m.shape[1:]} pixels")
    re, ce = _edges(m.shape[1], h), _edges(m.shape[2], w)
    # lung pixels counted per block in integers, straight from the boolean mask: the same sums as
    # in float64 (exact either way), without a float64 copy of every mask (155 MB for the demo's
    # 2,100 masks at 96 px)
    rows = np.add.reduceat(m > 0, re[:-1], axis=1, dtype=np.int64)
    sums = np.add.reduceat(rows, ce[:-1], axis=2)
    area = np.diff(re)[:, None] * np.diff(ce)[None, :]
    return sums / area[None]


def lung_mass(maps: np.ndarray, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activation mass inside the lungs and in total, per image and channel.

    Parameters
    ----------
    maps : ndarray of shape (n_images, n_channels, h, w)
        Non-negative activations (``out_relu`` is a ReLU6).
    fractions : ndarray of shape (n_images, h, w)
        :func:`cell_fractions` of the images' lung masks.

    Returns
    -------
    inside : ndarray of shape (n_images, n_channels)
        ``sum_cells A * fraction``.
    total : ndarray of shape (n_images, n_channels)
        ``sum_cells A``; ``inside / total`` is the lung fraction (undefined
        where the channel is silent, total 0).

    Raises
    ------
    ValueError
        On mismatched shapes or negative activations.
    """
    A = np.asarray(maps, dtype=np.float64)
    F = np.asarray(fractions, dtype=np.float64)
    if A.ndim != 4 or F.shape != (A.shape[0], A.shape[2], A.shape[3]):
        raise ValueError(
            f"maps {A.shape} and cell fractions {F.shape} do not match ((n, C, h, w) and (n, h, w))"
        )
    if (A < 0).any():
        raise ValueError(
            "maps hold negative values; the lung fraction needs non-negative activations (out_relu)"
        )
    inside = np.einsum("ncij,nij->nc", A, F)
    total = A.sum(axis=(2, 3))
    return inside, total


def attainable_lung_fraction(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Per image, the largest lung fraction a map of size ``grid`` can show.

    A feature firing only in the map cell with the most lung has this lung
    fraction (the lung share of that cell's block); below the lung criterion's
    threshold the maps cannot tell inside from outside.

    Parameters
    ----------
    masks : ndarray of shape (n_images, rows, cols)
    grid : (h, w)

    Returns
    -------
    ndarray of shape (n_images,)
    """
    return cell_fractions(masks, grid).max(axis=(1, 2))


def occlusion_effects(
    gap: np.ndarray, lungs_filled: np.ndarray, outside_filled: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A feature's dependence on the lungs and on the rest of the image, by occlusion.

    Parameters
    ----------
    gap : ndarray of shape (n_images, n_features)
        GAP features of the images.
    lungs_filled, outside_filled : ndarray of shape (n_images, n_features)
        GAP features of the same images with the lungs, or everything outside
        the lungs, replaced by a neutral fill.

    Returns
    -------
    inside : ndarray of shape (n_images, n_features)
        ``|gap - lungs_filled|``.
    total : ndarray of shape (n_images, n_features)
        ``inside + |gap - outside_filled|``; ``inside / total`` is the share
        of the feature's dependence that lies in the lungs (undefined where
        total is 0: the feature ignores both regions).

    Raises
    ------
    ValueError
        On mismatched shapes.
    """
    g = np.asarray(gap, dtype=np.float64)
    a = np.asarray(lungs_filled, dtype=np.float64)
    b = np.asarray(outside_filled, dtype=np.float64)
    if g.ndim != 2 or a.shape != g.shape or b.shape != g.shape:
        raise ValueError(
            f"GAP features {g.shape}, lungs-filled {a.shape} and outside-filled {b.shape} must "
            "have the same shape (n_images, n_features)"
        )
    inside = np.abs(g - a)
    return inside, inside + np.abs(g - b)


def upsample(fmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of one (h, w) map to ``shape`` for display (cell centres aligned).

    Returns
    -------
    ndarray of shape ``shape``, float64
    """
    a = np.asarray(fmap, dtype=np.float64)
    h, w = a.shape
    rows, cols = shape
    # Pixel centres in map-cell coordinates (cell i spans [i, i+1), centre i + 0.5).
    y = np.clip((np.arange(rows) + 0.5) * h / rows - 0.5, 0, h - 1)
    x = np.clip((np.arange(cols) + 0.5) * w / cols - 0.5, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def grad_cam(maps: np.ndarray, grad_gap: np.ndarray) -> np.ndarray:
    """Grad-CAM from the last convolutional maps and the head's gradient.

    Parameters
    ----------
    maps : ndarray of shape (n_images, n_features, h, w)
        All channels of ``out_relu``.
    grad_gap : ndarray of shape (n_images, n_features)
        ``dy/dg`` of the explained class score per image (e.g.
        ``Head.gradient(gap, predicted_class)``).

    Returns
    -------
    ndarray of shape (n_images, h, w)
        ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k = dy/dg_k / (h w)`` (the
        spatial mean of ``dy/dA_k``); not normalised.

    Raises
    ------
    ValueError
        On mismatched shapes.
    """
    A = np.asarray(maps, dtype=np.float64)
    G = np.asarray(grad_gap, dtype=np.float64)
    if A.ndim != 4 or G.shape != A.shape[:2]:
        raise ValueError(
            f"maps {A.shape} and gradients {G.shape} do not match ((n, K, h, w) and (n, K))"
        )
    alpha = G / (A.shape[2] * A.shape[3])
    return np.maximum(np.einsum("nk,nkij->nij", alpha, A), 0.0)
