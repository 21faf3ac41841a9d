"""How many different things a network's GAP units encode: near-copies and effective dimension.

A trained network's GAP units need not be independent features: many may be
near-copies of one another, so that the whole layer spans only a few
directions. Then which copy ranks among a fold's top-k attributions is
partly arbitrary (its twins carry the same information), a one-to-one
matching of units across folds has to pair copies with each other more or
less at random, and a per-unit statement ("unit j is the biomarker") is a
statement about a direction shared by many units.

* :func:`nearest_unit_r` -- each unit's highest activation correlation with
  another unit of the same network;
* :func:`unit_redundancy` -- :class:`UnitRedundancy`: the number of principal
  directions holding most of the units' variance, the first direction's share,
  and how many units have a near-copy.

numpy only: the principal directions are one SVD of the standardised
activations (scikit-learn's PCA would give the same numbers, but
``biomark/analysis`` stays numpy/pandas/scipy).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> base = rng.standard_normal((300, 3))
>>> copies = np.repeat(base, 4, axis=1) + 0.05 * rng.standard_normal((300, 12))
>>> red = unit_redundancy(copies)
>>> red.n_live, red.dimension, red.share_near_copies
(12, 3, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biomark.analysis.alignment import best_counterpart_r, unit_correlation
from biomark.analysis.inputs import check_matrix
from biomark.exceptions import DataError

__all__ = ["NEAR_COPY_R", "UnitRedundancy", "nearest_unit_r", "unit_redundancy"]

#: Activation correlation from which two units of one network count as near-copies.
NEAR_COPY_R = 0.9


@dataclass(frozen=True)
class UnitRedundancy:
    """How redundant one network's units are over a set of images.

    Attributes
    ----------
    n_units : int
        Units given.
    n_live : int
        Units not constant over the images (the rest are left out).
    n_images : int
    dimension : int
        Fewest principal directions of the standardised live units that hold
        ``share`` of their variance.
    share : float
        The variance share ``dimension`` refers to (0.9 by default).
    first_share : float
        Share of the variance on the first principal direction.
    nearest_r_median : float
        Median over live units of :func:`nearest_unit_r`.
    share_near_copies : float
        Share of live units with a near-copy (nearest r >= ``near_copy_r``).
    near_copy_r : float
    """

    n_units: int
    n_live: int
    n_images: int
    dimension: int
    share: float
    first_share: float
    nearest_r_median: float
    share_near_copies: float
    near_copy_r: float = NEAR_COPY_R

    @property
    def redundant(self) -> bool:
        """True when most units have a near-copy, so unit-level ranks are partly arbitrary."""
        return self.n_live >= 2 and self.share_near_copies >= 0.5

    def describe(self) -> str:
        """One sentence for the report and the log."""
        text = (
            f"its {self.n_live} live GAP units span about {self.dimension} directions "
            f"({self.dimension} principal components hold {self.share:.0%} of their variance, the first "
            f"{self.first_share:.0%}), and {self.share_near_copies:.0%} of them have a near-copy in the same "
            f"network (activation r >= {self.near_copy_r:g}; median nearest r {self.nearest_r_median:.2f}) "
            f"over {self.n_images} images"
        )
        if self.redundant:
            text += (
                ": the units are near-copies of a few directions, so which copy ranks in a fold's top "
                "attributions is partly arbitrary, a one-to-one match across folds must pair copies with "
                "each other, and a feature here stands for its direction rather than for one unit"
            )
        return text


def nearest_unit_r(X: np.ndarray) -> np.ndarray:
    """Each unit's highest activation correlation with another unit of the same network.

    Parameters
    ----------
    X : array-like of shape (n_images, n_units)
        One network's activations.

    Returns
    -------
    ndarray of shape (n_units,)
        NaN for a silent (constant) unit, or when no other unit is live.

    Raises
    ------
    DataError
        Fewer than 3 images, or non-finite values.
    """
    X = check_matrix(X, "X", min_rows=3, rows="images")
    r = unit_correlation(X, X)
    np.fill_diagonal(r, np.nan)
    return best_counterpart_r(r)


def unit_redundancy(
    X: np.ndarray, *, share: float = 0.9, near_copy_r: float = NEAR_COPY_R
) -> UnitRedundancy:
    """How many directions one network's units span, and how many units have a near-copy.

    Parameters
    ----------
    X : array-like of shape (n_images, n_units)
        One network's activations (the units of one fold's model: rows from
        several separately trained models would mix different units).
    share : float, default 0.9
        Variance share for :attr:`UnitRedundancy.dimension`, in (0, 1].
    near_copy_r : float, default NEAR_COPY_R

    Returns
    -------
    UnitRedundancy

    Raises
    ------
    DataError
        Fewer than 3 images, non-finite values, or ``share`` outside (0, 1].
    """
    if not 0 < share <= 1:
        raise DataError(f"unit_redundancy: share={share!r} must be in (0, 1]")
    X = check_matrix(X, "X", min_rows=3, rows="images")
    live = np.ptp(X, axis=0) > 0
    Z = X[:, live]
    n_live = int(Z.shape[1])
    if n_live == 0:
        nan = float("nan")
        return UnitRedundancy(X.shape[1], 0, X.shape[0], 0, share, nan, nan, nan, near_copy_r)
    Z = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    singular = np.linalg.svd(Z, compute_uv=False)
    variance = singular**2 / np.sum(singular**2)
    dimension = int(np.searchsorted(np.cumsum(variance), share - 1e-12)) + 1
    nearest = nearest_unit_r(Z)
    finite = nearest[np.isfinite(nearest)]
    return UnitRedundancy(
        n_units=int(X.shape[1]),
        n_live=n_live,
        n_images=int(X.shape[0]),
        dimension=min(dimension, n_live),
        share=float(share),
        first_share=float(variance[0]),
        nearest_r_median=float(np.median(finite)) if finite.size else float("nan"),
        share_near_copies=float(np.mean(finite >= near_copy_r)) if finite.size else 0.0,
        near_copy_r=float(near_copy_r),
    )
