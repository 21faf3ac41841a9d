"""Centered kernel alignment (CKA) between two representations of the same images.

CKA (Kornblith et al., 2019) compares two feature matrices whose rows are the
same images in the same order. It is 1 for representations that are equal up
to rotation, isotropic scaling and translation, and near 0 for unrelated ones.

Two estimators are offered:

* **biased** -- HSIC = tr(K H L H) / (n-1)^2 (Gretton et al., 2005). When the
  number of features is not small relative to the number of images (1280-d GAP
  vectors over a ~400-image test fold), the diagonal of the Gram matrices
  dominates and CKA of *independent* data is far above 0 (about 0.5-0.8 at
  n = 100, d = 1280).
* **debiased** (default) -- the unbiased HSIC estimator of Song et al. (2012),
  used for CKA by Nguyen et al. (2021). Its expectation is the population HSIC,
  so unrelated representations give values near 0 at any n/d; it can be
  slightly *negative* by chance. Negative values are returned as they are (not
  clipped), so averages over folds stay unbiased.

Feature-space form of the linear kernel
---------------------------------------
With column-centred ``Xc`` (n, d1) and ``Yc`` (n, d2), ``K = Xc Xc^T``,
``L = Yc Yc^T`` and the row norms ``a_i = ||x_i||^2``, ``b_i = ||y_i||^2``:

* biased: ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``;
* unbiased HSIC (``K~``, ``L~``: ``K``, ``L`` with zeroed diagonal). Because the
  columns are centred, ``K~ 1 = -a`` and ``1^T K~ 1 = -sum(a)``, hence ::

      tr(K~ L~)    = ||Yc^T Xc||_F^2 - sum_i a_i b_i
      1^T K~ 1     = -sum(a),     1^T L~ 1 = -sum(b)
      1^T K~ L~ 1  = sum_i a_i b_i
      HSIC_u = [tr(K~L~) + (1^T K~ 1)(1^T L~ 1)/((n-1)(n-2))
                - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))

  (the unbiased estimator is invariant to translating X, so centring first is
  allowed and numerically better). Nothing of size n x n is formed: memory is
  O(d1^2 + d2^2 + d1 d2) beyond the inputs (rows are processed in chunks),
  time O(n (d1^2 + d1 d2 + d2^2)).

The Gram form costs O(n^2 (d1 + d2)) time and O(n^2) memory; it is cheaper
when ``n (d1 + d2) < d1^2 + d1 d2 + d2^2`` (roughly n < 1.5 d). ``method="auto"``
picks the cheaper one; both give the same number to rounding (tested to 1e-10).

Degenerate input
----------------
* A matrix whose every column is constant (all rows identical) has no
  variance: CKA is undefined and a :class:`ValueError` is raised (never NaN).
  Single constant columns are fine: they contribute nothing.
* With the debiased estimator, the self-similarity HSIC_u(X, X) of a tiny or
  nearly rank-deficient sample can come out <= 0; CKA is then defined as 0.0.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

__all__ = ["cka_from_grams", "gram_linear", "gram_rbf", "linear_cka", "rbf_cka"]

logger = logging.getLogger(__name__)

Method = Literal["auto", "features", "gram"]

#: Rows per chunk in the feature-space accumulation.
_CHUNK_ROWS = 8192
#: Largest n for which ``method="auto"`` may build n x n Gram matrices.
_MAX_AUTO_GRAM_ROWS = 20_000


def _check_pair(X: np.ndarray, Y: np.ndarray, debiased: bool) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    Y = np.asarray(Y)
    for name, arr in (("X", X), ("Y", Y)):
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (n_images, n_features), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of rows (paired images): got {X.shape[0]} and {Y.shape[0]}; "
            "align both representations on the same image ids first"
        )
    n_min = 4 if debiased else 2
    if X.shape[0] < n_min:
        raise ValueError(
            f"{'debiased' if debiased else 'biased'} CKA needs at least {n_min} images, got {X.shape[0]}"
        )
    for name, arr in (("X", X), ("Y", Y)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ValueError(f"{name} holds {bad} NaN/Inf value(s); CKA needs finite features")
    return X, Y


def _column_means(X: np.ndarray, name: str) -> np.ndarray:
    """Column means in float64; exactly the column's value for a constant column."""
    means = X.mean(axis=0, dtype=np.float64)
    lo, hi = X.min(axis=0), X.max(axis=0)
    constant = lo == hi
    if constant.all():
        raise ValueError(
            f"{name} has zero variance (every row is identical); CKA is undefined for a constant representation"
        )
    means[constant] = lo[constant]  # so that centring gives exact zeros
    return means


def _hsic_terms(cross: float, ab: float, sum_a: float, sum_b: float, n: int, debiased: bool) -> float:
    """HSIC from feature-space sums (see module docstring); scale irrelevant for CKA."""
    if not debiased:
        return cross
    return (cross - ab + sum_a * sum_b / ((n - 1) * (n - 2)) - 2.0 * ab / (n - 2)) / (n * (n - 3))


def _ratio(num: float, den_x: float, den_y: float) -> float:
    den = den_x * den_y
    if not (den_x > 0 and den_y > 0 and np.isfinite(den)) or den <= 0:
        logger.debug("CKA denominator not positive (%g, %g): defined as 0.0", den_x, den_y)
        return 0.0
    return float(num / np.sqrt(den))


def _linear_cka_features(X: np.ndarray, Y: np.ndarray, debiased: bool) -> float:
    n = X.shape[0]
    mx, my = _column_means(X, "X"), _column_means(Y, "Y")
    d1, d2 = X.shape[1], Y.shape[1]
    xtx = np.zeros((d1, d1))
    yty = np.zeros((d2, d2))
    ytx = np.zeros((d2, d1))
    sum_a = sum_b = sum_ab = sum_aa = sum_bb = 0.0
    for start in range(0, n, _CHUNK_ROWS):
        xc = X[start : start + _CHUNK_ROWS].astype(np.float64) - mx
        yc = Y[start : start + _CHUNK_ROWS].astype(np.float64) - my
        xtx += xc.T @ xc
        yty += yc.T @ yc
        ytx += yc.T @ xc
        a = np.einsum("ij,ij->i", xc, xc)
        b = np.einsum("ij,ij->i", yc, yc)
        sum_a += a.sum()
        sum_b += b.sum()
        sum_ab += a @ b
        sum_aa += a @ a
        sum_bb += b @ b
    cross = float(np.vdot(ytx, ytx))
    self_x = float(np.vdot(xtx, xtx))
    self_y = float(np.vdot(yty, yty))
    if not debiased:
        return _ratio(cross, self_x, self_y)
    hxy = _hsic_terms(cross, sum_ab, sum_a, sum_b, n, True)
    hxx = _hsic_terms(self_x, sum_aa, sum_a, sum_a, n, True)
    hyy = _hsic_terms(self_y, sum_bb, sum_b, sum_b, n, True)
    return _ratio(hxy, hxx, hyy)


def gram_linear(X: np.ndarray) -> np.ndarray:
    """Linear-kernel Gram matrix of the column-centred features.

    Parameters
    ----------
    X : ndarray of shape (n, d)

    Returns
    -------
    K : ndarray of shape (n, n), float64
        ``Xc Xc^T`` (already double-centred: ``H K H = K``).

    Raises
    ------
    ValueError
        If every column of ``X`` is constant.
    """
    return _gram_linear_named(np.asarray(X), "X")


def gram_rbf(X: np.ndarray, sigma: float = 0.8) -> np.ndarray:
    """Gaussian (RBF) Gram matrix with a bandwidth relative to the median distance.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    sigma : float, default 0.8
        Bandwidth as a fraction of the median pairwise Euclidean distance
        (Kornblith et al., 2019): ``K_ij = exp(-||x_i - x_j||^2 / (2 (sigma m)^2))``.

    Returns
    -------
    K : ndarray of shape (n, n), float64

    Raises
    ------
    ValueError
        If ``sigma`` is not positive, or the median pairwise distance is 0
        (constant X or more than half the pairs identical).
    """
    return _gram_rbf_named(np.asarray(X), sigma, "X")


def _gram_rbf_named(X: np.ndarray, sigma: float, name: str) -> np.ndarray:
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r}: the RBF bandwidth fraction must be positive")
    G = _gram_linear_named(X, name)
    sq_norms = np.diag(G)
    dist2 = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * G, 0.0)
    np.fill_diagonal(dist2, 0.0)
    upper = dist2[np.triu_indices(dist2.shape[0], k=1)]
    median = float(np.sqrt(np.median(upper)))
    if median <= 0:
        raise ValueError(
            f"{name}: the median pairwise distance is 0 (most rows identical); the RBF bandwidth is undefined"
        )
    return np.exp(-dist2 / (2.0 * (sigma * median) ** 2))


def _hsic_gram(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    n = K.shape[0]
    if not debiased:
        Kc = K - K.mean(axis=0, keepdims=True)
        Kc -= Kc.mean(axis=1, keepdims=True)
        return float(np.vdot(Kc, L))  # tr(HKH L) = tr(KHLH)
    Kt = K.copy()
    Lt = L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    r, s = Kt.sum(axis=1), Lt.sum(axis=1)
    return float(
        (np.vdot(Kt, Lt) + r.sum() * s.sum() / ((n - 1) * (n - 2)) - 2.0 * (r @ s) / (n - 2)) / (n * (n - 3))
    )


def cka_from_grams(K: np.ndarray, L: np.ndarray, *, debiased: bool = True) -> float:
    """CKA from two symmetric Gram (kernel) matrices of the same images.

    Parameters
    ----------
    K, L : ndarray of shape (n, n)
        Kernel matrices; rows/columns paired. They need not be centred.
    debiased : bool, default True
        Unbiased HSIC (Song et al., 2012) instead of tr(KHLH).

    Returns
    -------
    float
        CKA; 0.0 when a self-similarity is not positive (see module docstring).

    Raises
    ------
    ValueError
        If the shapes differ or are not square, or n < 4 for the debiased estimator.
    """
    K = np.asarray(K, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ValueError(f"K and L must be square matrices of the same shape, got {K.shape} and {L.shape}")
    n_min = 4 if debiased else 2
    if K.shape[0] < n_min:
        raise ValueError(f"{'debiased' if debiased else 'biased'} CKA needs at least {n_min} images, got {K.shape[0]}")
    return _ratio(_hsic_gram(K, L, debiased), _hsic_gram(K, K, debiased), _hsic_gram(L, L, debiased))


def _choose_method(n: int, d1: int, d2: int) -> Literal["features", "gram"]:
    gram_cost = n * (d1 + d2)
    feature_cost = d1 * d1 + d1 * d2 + d2 * d2
    return "gram" if gram_cost < feature_cost and n <= _MAX_AUTO_GRAM_ROWS else "features"


def linear_cka(X: np.ndarray, Y: np.ndarray, *, debiased: bool = True, method: Method = "auto") -> float:
    """Linear CKA between two representations of the same images.

    Parameters
    ----------
    X : ndarray of shape (n_images, d1)
        Features of representation A, one row per image.
    Y : ndarray of shape (n_images, d2)
        Features of representation B, rows paired with ``X``.
    debiased : bool, default True
        Use the unbiased HSIC estimator (recommended when d is not small
        relative to n; see module docstring).
    method : {"auto", "features", "gram"}, default "auto"
        ``features``: d x d cross-products, no n x n matrix (cheaper when n > ~1.5 d);
        ``gram``: n x n Gram matrices (cheaper when d > n). ``auto`` picks by shape.

    Returns
    -------
    float
        In [0, 1] for the biased estimator; the debiased one may be slightly
        negative for unrelated representations. Computed in float64.

    Raises
    ------
    ValueError
        On non-2-D input, mismatched row counts, too few rows (n < 4 debiased,
        n < 2 biased), NaN/Inf values, or a constant (zero-variance) X or Y.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 10))
    >>> Q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    >>> round(linear_cka(X, 3 * X @ Q + 1), 6)
    1.0
    """
    X, Y = _check_pair(X, Y, debiased)
    if method == "auto":
        method = _choose_method(X.shape[0], X.shape[1], Y.shape[1])
    if method == "features":
        return _linear_cka_features(X, Y, debiased)
    if method == "gram":
        return cka_from_grams(_gram_linear_named(X, "X"), _gram_linear_named(Y, "Y"), debiased=debiased)
    raise ValueError(f"method={method!r}: use 'auto', 'features' or 'gram'")


def _gram_linear_named(Y: np.ndarray, name: str) -> np.ndarray:
    yc = Y.astype(np.float64) - _column_means(Y, name)
    return yc @ yc.T


def rbf_cka(X: np.ndarray, Y: np.ndarray, *, sigma: float = 0.8, debiased: bool = True) -> float:
    """CKA with Gaussian kernels (bandwidth relative to the median distance).

    Parameters
    ----------
    X : ndarray of shape (n_images, d1)
    Y : ndarray of shape (n_images, d2)
        Rows paired with ``X``.
    sigma : float, default 0.8
        Bandwidth as a fraction of each representation's median pairwise distance.
    debiased : bool, default True
        Use the unbiased HSIC estimator.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As :func:`linear_cka`, and for a non-positive ``sigma``.

    Notes
    -----
    Builds n x n matrices: O(n^2) memory. Invariant to orthogonal transforms,
    translation and isotropic scaling (the bandwidth scales with the data).
    """
    X, Y = _check_pair(X, Y, debiased)
    return cka_from_grams(_gram_rbf_named(X, sigma, "X"), _gram_rbf_named(Y, sigma, "Y"), debiased=debiased)
