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
  and how many units have a near-copy;
* :func:`direction_table` -- the leading directions themselves: their share of
  the variance, how much of it lies between the classes, which classes sit at
  either end, and how many units carry each;
* :func:`mark_near_copies` -- in a candidate table, which candidate is a
  near-copy of a better-ranked one (``copy_of``), so that copies are not
  counted as separate biomarkers.

numpy and scipy only: the principal directions are the eigenvectors of the
standardised activations' Gram matrix (scikit-learn's PCA would give the same
numbers by an SVD, about 3-6x slower at 2,100 images x 1,280 units, and
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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.linalg import eigh
from scipy.spatial.distance import squareform

from biomark.analysis.inputs import check_matrix, true_where
from biomark.analysis.unit_match import best_counterpart_r, unit_correlation
from biomark.exceptions import DataError

__all__ = [
    "MAX_IMAGES",
    "NEAR_COPY_R",
    "UnitRedundancy",
    "copy_groups",
    "direction_table",
    "distinct_candidates",
    "mark_near_copies",
    "near_copy_matrix",
    "nearest_unit_r",
    "unit_redundancy",
]

#: Activation correlation from which two units of one network count as near-copies.
NEAR_COPY_R = 0.9

#: Most images :func:`unit_redundancy` reads (a random subset beyond).
MAX_IMAGES = 5000


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
        if self.n_live == 0:
            return f"none of its {self.n_units} GAP units varies over the {self.n_images} images"
        if self.n_live == 1:
            return (
                f"only one of its {self.n_units} GAP units varies over the {self.n_images} images"
            )
        text = (
            f"its {self.n_live} live GAP units span about {self.dimension} directions "
            f"({self.dimension} principal components hold {self.share:.0%} of their variance, the "
            f"first {self.first_share:.0%}), and {self.share_near_copies:.0%} of them have a "
            f"near-copy in the same network (activation r >= {self.near_copy_r:g}; median nearest "
            f"r {self.nearest_r_median:.2f}) over {self.n_images} images"
        )
        if self.redundant:
            text += (
                ": the units are near-copies of a few directions, so which copy ranks in a fold's "
                "top attributions is partly arbitrary, a one-to-one match across folds must pair "
                "copies with each other, and a feature here stands for its direction rather than "
                "for one unit"
            )
        return text


def _read_rows(n: int, max_images: int | None, seed: int) -> np.ndarray:
    """The rows read: all of them, or a seeded random subset of ``max_images`` in their order."""
    if max_images is None or n <= max(int(max_images), 3):
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_images), replace=False))


def _standardised_live(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The live (non-constant) units of ``X[rows]``, each standardised over those rows."""
    read = X[rows]
    Z = read[:, np.ptp(read, axis=0) > 0]
    return (Z - Z.mean(axis=0)) / Z.std(axis=0)


def _variance_shares(Z: np.ndarray) -> np.ndarray:
    """The share of ``Z``'s variance along each of its principal directions, largest first.

    The eigenvalues of the units' Gram matrix ``Z^T Z`` (the squared singular
    values of ``Z``): one product and a symmetric eigenvalue solve, about a
    third of the time of ``svd(Z, compute_uv=False)`` for 2,100 images x 1,280
    units (0.21 vs 0.64 s on one core), the shares equal to 1e-16.
    """
    eigen = np.clip(np.linalg.eigvalsh(Z.T @ Z)[::-1], 0.0, None)
    return eigen / eigen.sum()


def _leading_directions(Z: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The variance shares and unit-space axes of ``Z``'s ``n`` leading principal directions.

    Only the ``n`` largest eigenpairs of the Gram matrix ``Z^T Z``
    (:func:`scipy.linalg.eigh` with ``subset_by_index``), not a full SVD: 0.24
    vs 1.39 s for 2,100 images x 1,280 units and 10 directions on one core.
    The total variance is the Gram matrix's trace. A principal axis has no
    sign of its own; each is turned so that its loadings sum to a positive
    value, so a score is high where the units, on the whole, fire more.

    Returns
    -------
    variance : ndarray of shape (k,)
        Largest first; ``k = min(n, n_units)``.
    axes : ndarray of shape (n_units, k)
        The scores are ``Z @ axes``.
    """
    gram = Z.T @ Z
    p = gram.shape[0]
    k = max(0, min(int(n), p))
    if k == 0:
        return np.empty(0), np.empty((p, 0))
    values, vectors = eigh(gram, subset_by_index=[p - k, p - 1])
    order = np.argsort(values)[::-1]
    axes = vectors[:, order]
    axes = axes * np.where(axes.sum(axis=0) < 0.0, -1.0, 1.0)
    return np.clip(values[order], 0.0, None) / np.trace(gram), axes


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
    X: np.ndarray,
    *,
    share: float = 0.9,
    near_copy_r: float = NEAR_COPY_R,
    max_images: int | None = MAX_IMAGES,
    seed: int = 0,
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
    max_images : int or None, default MAX_IMAGES
        Read at most this many images, drawn at random without replacement
        (``seed``): correlations and variance shares of 1,280 units are
        settled long before the 112,120 images of a full NIH run, whose
        standardised copy alone would take 1.1 GB. None: every image.
    seed : int, default 0

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
    rows = _read_rows(X.shape[0], max_images, seed)
    Z = _standardised_live(X, rows)
    n_live = int(Z.shape[1])
    if n_live == 0:
        nan = float("nan")
        return UnitRedundancy(X.shape[1], 0, rows.size, 0, share, nan, nan, nan, near_copy_r)
    variance = _variance_shares(Z)
    dimension = int(np.searchsorted(np.cumsum(variance), share - 1e-12)) + 1
    nearest = nearest_unit_r(Z)
    finite = nearest[np.isfinite(nearest)]
    return UnitRedundancy(
        n_units=int(X.shape[1]),
        n_live=n_live,
        n_images=int(rows.size),
        dimension=min(dimension, n_live),
        share=float(share),
        first_share=float(variance[0]),
        nearest_r_median=float(np.median(finite)) if finite.size else float("nan"),
        share_near_copies=float(np.mean(finite >= near_copy_r)) if finite.size else 0.0,
        near_copy_r=float(near_copy_r),
    )


def direction_table(
    X: np.ndarray,
    labels: Sequence[str],
    *,
    n_directions: int = 10,
    near_copy_r: float = NEAR_COPY_R,
    max_images: int | None = MAX_IMAGES,
    seed: int = 0,
) -> pd.DataFrame:
    """The leading principal directions of one network's units, and what each separates.

    Parameters
    ----------
    X : array-like of shape (n_images, n_units)
        One network's activations (see :func:`unit_redundancy`).
    labels : sequence of str, length n_images
        Each image's class.
    n_directions : int, default 10
        Most directions listed.
    near_copy_r : float, default NEAR_COPY_R
        ``units``: units whose activation correlates with the direction's
        score at ``|r| >= near_copy_r``.
    max_images : int or None, default MAX_IMAGES
    seed : int, default 0
        As in :func:`unit_redundancy` (the same images are drawn).

    Returns
    -------
    DataFrame
        One row per direction: ``direction`` (1 = the most variance),
        ``variance_share`` (of the standardised live units' variance),
        ``between_classes`` (share of the direction's variance between the
        class means, eta squared: near 1 a class code, near 0 a factor that
        varies within the classes), ``high_end`` and ``low_end`` (the classes
        with the highest and lowest mean score; each direction is turned so that
        its units' loadings sum to a positive value, so the high end is where
        its units, on the whole, fire more) and ``units``. Empty when no unit varies.

    Raises
    ------
    DataError
        Fewer than 3 images, non-finite values, or ``labels`` of another length.
    """
    X = check_matrix(X, "X", min_rows=3, rows="images")
    labels_arr = np.asarray([str(v) for v in labels], dtype=object)
    if labels_arr.size != X.shape[0]:
        raise DataError(
            f"direction_table: {labels_arr.size} labels for {X.shape[0]} images; give one label "
            "per row of X"
        )
    rows = _read_rows(X.shape[0], max_images, seed)
    labels_arr = labels_arr[rows]
    Z = _standardised_live(X, rows)
    columns = ["direction", "variance_share", "between_classes", "high_end", "low_end", "units"]
    if Z.shape[1] == 0:
        return pd.DataFrame(columns=columns)
    variance, axes = _leading_directions(Z, int(n_directions))
    classes = sorted(set(labels_arr.tolist()))
    counts = pd.Series({c: int(np.sum(labels_arr == c)) for c in classes})
    rows_out = []
    for k in range(int(np.sum(variance > 1e-12))):
        score = Z @ axes[:, k]
        means = pd.Series({c: float(score[labels_arr == c].mean()) for c in classes})
        total = float(np.sum((score - score.mean()) ** 2))
        between = (
            float(np.sum(counts * (means - score.mean()) ** 2)) / total
            if total > 0
            else float("nan")
        )
        # each unit's correlation with the score (Z is standardised and the score centred)
        loading = (
            Z.T @ score / (Z.shape[0] * score.std()) if score.std() > 0 else np.zeros(Z.shape[1])
        )
        rows_out.append(
            {
                "direction": k + 1,
                "variance_share": float(variance[k]),
                "between_classes": between,
                "high_end": str(means.idxmax()),
                "low_end": str(means.idxmin()),
                "units": int(np.sum(np.abs(np.nan_to_num(loading)) >= near_copy_r)),
            }
        )
    return pd.DataFrame(rows_out, columns=columns)


def near_copy_matrix(values: np.ndarray, *, near_copy_r: float = NEAR_COPY_R) -> np.ndarray:
    """Which features of one network are near-copies of which.

    Parameters
    ----------
    values : array-like of shape (n_images, n_features)
        One network's features over the same images.
    near_copy_r : float, default NEAR_COPY_R
        Activation correlation from which two features count as near-copies,
        the threshold of :func:`copy_groups` and ``copy_of``.

    Returns
    -------
    ndarray of bool, shape (n_features, n_features)
        ``copies[i, j]``: features ``i`` and ``j`` correlate at ``r >= near_copy_r``
        over the images. The diagonal is True: each feature is its own copy, a
        constant one only its own.

    Raises
    ------
    DataError
        Fewer than 3 images or non-finite values.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.standard_normal((2, 200))
    >>> copies = near_copy_matrix(np.c_[a, a + 0.1 * rng.standard_normal(200), b, np.ones(200)])
    >>> copies.astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 1, 0],
           [0, 0, 0, 1]])
    """
    values = check_matrix(values, "values", min_rows=3, rows="images", min_columns=0)
    copies = np.nan_to_num(unit_correlation(values, values), nan=0.0) >= near_copy_r
    np.fill_diagonal(copies, True)
    return copies


def copy_groups(
    values: np.ndarray, names: Sequence[str], *, near_copy_r: float = NEAR_COPY_R
) -> list[list[str]]:
    """Features grouped so that every two in a group correlate at ``r >= near_copy_r``.

    Complete-linkage clustering of ``1 - r`` cut at ``1 - near_copy_r``
    (:func:`scipy.cluster.hierarchy.linkage`): unlike chaining (single
    linkage), no group holds two features that are not near-copies of each
    other. A constant feature is a group of its own.

    Parameters
    ----------
    values : array-like of shape (n_images, n_features)
        The features' values over the same images.
    names : sequence of str, length n_features
    near_copy_r : float, default NEAR_COPY_R

    Returns
    -------
    list of list of str
        The groups in the order of their first member in ``names``, each in
        ``names`` order.

    Raises
    ------
    DataError
        Fewer than 3 images, non-finite values, or ``names`` of another length.
    """
    values = check_matrix(values, "values", min_rows=3, rows="images", min_columns=0)
    names = [str(n) for n in names]
    if len(names) != values.shape[1]:
        raise DataError(
            f"copy_groups: {len(names)} names for {values.shape[1]} feature columns; give one name "
            "per column"
        )
    if len(names) < 2:
        return [[n] for n in names]
    r = np.nan_to_num(
        unit_correlation(values, values), nan=0.0
    )  # a constant feature copies nothing
    distance = np.clip(1.0 - r, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="complete")
    labels = fcluster(tree, t=1.0 - near_copy_r, criterion="distance")
    groups: dict[int, list[str]] = {}
    for name, label in zip(names, labels, strict=True):
        groups.setdefault(int(label), []).append(name)
    return list(groups.values())


def mark_near_copies(
    table: pd.DataFrame,
    values: np.ndarray,
    feature_names: Sequence[str],
    *,
    near_copy_r: float = NEAR_COPY_R,
) -> pd.DataFrame:
    """The candidate table with ``copy_of``: the better-ranked candidate a candidate is a near-copy
    of.

    Candidates (``is_candidate`` True) are grouped by :func:`copy_groups`
    over ``values``; in each group the best-ranked candidate (lowest
    ``rank``, then the table's order) stands for the group, and every other
    candidate gets its feature name in ``copy_of``. Every other row, and a
    candidate that copies no better-ranked candidate, gets an empty string.

    Parameters
    ----------
    table : DataFrame
        A candidate table (columns ``feature``, ``rank`` and ``is_candidate``).
    values : array-like of shape (n_images, n_features)
        The features' values (for matched unit families, their consensus),
        columns ``feature_names``.
    feature_names : sequence of str
    near_copy_r : float, default NEAR_COPY_R

    Returns
    -------
    DataFrame
        A copy of ``table`` with the column ``copy_of``.

    Raises
    ------
    DataError
        Non-finite values in a candidate's column, or fewer than 3 images.
    """
    out = table.copy()
    out["copy_of"] = ""
    if out.empty:
        return out
    is_candidate = true_where(out["is_candidate"])
    ranked = out[is_candidate].sort_values("rank", kind="stable")
    chosen = list(dict.fromkeys(ranked["feature"].astype(str)))
    if len(chosen) < 2:
        return out
    column = {str(n): i for i, n in enumerate(feature_names)}
    groups = copy_groups(
        np.asarray(values)[:, [column[f] for f in chosen]], chosen, near_copy_r=near_copy_r
    )
    lead = {f: group[0] for group in groups for f in group}
    features = out["feature"].astype(str)
    copies = is_candidate & features.map(lambda f: lead.get(f, f) != f)
    out.loc[copies, "copy_of"] = features[copies].map(lead)
    return out


def distinct_candidates(table: pd.DataFrame) -> int:
    """How many distinct candidate features remain when near-copies (``copy_of``) are merged."""
    if table.empty or "copy_of" not in table:
        return 0
    is_candidate = true_where(table["is_candidate"])
    rows = table[is_candidate]
    return int(rows.loc[rows["copy_of"].astype(str) == "", "feature"].nunique())
