"""Matching the GAP units of two networks one to one, by their activations on the same images.

* :func:`unit_correlation` -- Pearson correlation of every unit of one network
  with every unit of another over the same images (silent units: NaN).
* :func:`match_units` -- the one-to-one assignment maximising the summed
  correlation (:func:`scipy.optimize.linear_sum_assignment`), and the same
  assignment on image-shuffled activations as a null (what matching finds in
  unrelated units), and each unit's best counterpart regardless of the
  assignment (:func:`best_counterpart_r`): when the units are near-copies of a
  few directions (:mod:`biomark.analysis.redundancy`) every unit has a close
  counterpart but not a unique one, and the one-to-one pairs fall far below it.

Every fold of a run is matched to a reference fold by
:func:`biomark.analysis.alignment.align_folds`. numpy/scipy only.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> ref = rng.standard_normal((200, 6))
>>> perm = np.array([3, 0, 5, 1, 2, 4])
>>> other = np.empty_like(ref)
>>> other[:, perm] = ref                # unit j of ref is unit perm[j] of other
>>> match_units(ref, other).perm.tolist()
[3, 0, 5, 1, 2, 4]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from biomark.analysis.inputs import check_matrix
from biomark.exceptions import DataError

__all__ = ["UnitMatch", "best_counterpart_r", "match_units", "unit_correlation"]


def _check_pair(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shared check of each matrix (2-D, real numbers, finite), then the pair's own."""
    fix = "repair those rows before matching"
    # no live unit (0 columns) is a valid, empty matching
    a = check_matrix(reference, "reference activations", min_columns=0, fix=fix)
    b = check_matrix(other, "the other fold's activations", min_columns=0, fix=fix)
    if a.shape != b.shape:
        raise DataError(
            f"reference activations {a.shape} and the other fold's {b.shape} differ in shape: "
            "both must be the same reference images through each fold's model"
        )
    if a.shape[0] < 3:
        raise DataError(f"{a.shape[0]} reference image(s): matching units needs at least 3")
    return a, b


def unit_correlation(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Pearson correlation of every reference unit with every unit of ``other``.

    Parameters
    ----------
    reference, other : ndarray of shape (n_images, n_units)
        Activations of the same images (rows) through two networks.

    Returns
    -------
    ndarray of shape (n_units, n_units)
        ``r[i, k]`` = corr(reference[:, i], other[:, k]); NaN where either unit
        is constant (silent) over the images.

    Raises
    ------
    DataError
        On mismatched shapes, fewer than 3 images or non-finite values.

    Examples
    --------
    >>> ref = np.random.default_rng(0).standard_normal((50, 3))
    >>> other = np.column_stack([ref[:, 1], -ref[:, 0], np.zeros(50)])  # copy, flipped, silent
    >>> r = unit_correlation(ref, other)
    >>> r.shape, round(float(r[1, 0]), 3), round(float(r[0, 1]), 3)
    ((3, 3), 1.0, -1.0)
    >>> bool(np.isnan(r[:, 2]).all())  # the silent unit correlates with nothing
    True
    """
    a, b = _check_pair(reference, other)
    live_a, live_b = np.ptp(a, axis=0) > 0, np.ptp(b, axis=0) > 0
    # One product of standardised columns (d x d), not d^2 calls of np.corrcoef.
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na = np.where(live_a, np.sqrt((a * a).sum(axis=0)), 1.0)
    nb = np.where(live_b, np.sqrt((b * b).sum(axis=0)), 1.0)
    r = (a / na).T @ (b / nb)
    r[~live_a, :] = np.nan
    r[:, ~live_b] = np.nan
    return np.clip(r, -1.0, 1.0)


@dataclass(frozen=True)
class UnitMatch:
    """A one-to-one matching of one network's units to the reference network's.

    Attributes
    ----------
    perm : ndarray of int, shape (n_units,)
        ``perm[j]``: the unit of the other network matched to reference unit ``j``
        (so ``other[:, perm]`` is in reference order).
    r : ndarray of shape (n_units,)
        Correlation of each matched pair over the reference images (NaN where
        either unit is silent).
    null_r : ndarray of shape (n_units,)
        Matched correlations of the same assignment problem after shuffling
        the other network's images: what matching finds between unrelated
        units with this many images (its upper tail is the chance level).
    best_r : ndarray of shape (n_units,)
        Each reference unit's highest correlation with any unit of the other
        network, whether or not the assignment gave it that unit (NaN for a
        silent unit). Far above ``r`` when the units are near-copies of a few
        directions: every unit has a close counterpart, but not a unique one.
    """

    perm: np.ndarray
    r: np.ndarray
    null_r: np.ndarray
    best_r: np.ndarray


def best_counterpart_r(r: np.ndarray) -> np.ndarray:
    """Per row of a correlation matrix, its highest finite value (NaN for a row with none).

    Parameters
    ----------
    r : ndarray of shape (n_units, n_other)
        :func:`unit_correlation` (NaN for silent units).

    Returns
    -------
    ndarray of shape (n_units,)

    Examples
    --------
    Reference units 0 and 1 both track unit 0 of the other network; unit 2 is silent:

    >>> r = np.array([[0.9, 0.1], [0.8, 0.2], [np.nan, np.nan]])
    >>> best_counterpart_r(r).tolist()
    [0.9, 0.8, nan]
    """
    finite = np.isfinite(r)
    best = np.where(finite, r, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(finite.any(axis=1), best, np.nan)


def _assign(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Silent units get the lowest score, so they pair with what is left over.
    score = np.where(np.isfinite(r), r, -1.0)
    rows, cols = linear_sum_assignment(score, maximize=True)
    perm = np.empty(r.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm, r[np.arange(r.shape[0]), perm]


def match_units(reference: np.ndarray, other: np.ndarray, *, seed: int = 0) -> UnitMatch:
    """Match every unit of ``other`` to one unit of ``reference`` (one to one).

    The assignment maximises the sum of the matched activation correlations
    (:func:`scipy.optimize.linear_sum_assignment` on the correlation matrix
    of :func:`unit_correlation`). Silent units pair with each other last.

    Parameters
    ----------
    reference, other : ndarray of shape (n_images, n_units)
        The same reference images through the reference fold's and another
        fold's model.
    seed : int, default 0
        Seeds the image shuffle of the null.

    Returns
    -------
    UnitMatch

    Raises
    ------
    DataError
        On mismatched shapes, fewer than 3 images or non-finite values.

    Examples
    --------
    A noisy copy of the reference units in another order is put back in order:

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.standard_normal((200, 4))
    >>> other = np.empty_like(ref)
    >>> other[:, [2, 0, 3, 1]] = ref + 0.3 * rng.standard_normal((200, 4))
    >>> m = match_units(ref, other)
    >>> m.perm.tolist()
    [2, 0, 3, 1]
    >>> bool((m.r > 0.9).all()), bool((m.null_r < 0.5).all())  # far above the shuffled null
    (True, True)
    """
    r = unit_correlation(reference, other)
    perm, matched = _assign(r)
    best = best_counterpart_r(r)
    shuffled = np.asarray(other)[
        np.random.default_rng(seed).permutation(np.asarray(other).shape[0])
    ]
    _, null = _assign(unit_correlation(reference, shuffled))
    return UnitMatch(perm=perm, r=matched, null_r=null, best_r=best)
