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
  one block of rows plus O((d1 + d2)^2) beyond the inputs. The three products
  come from one symmetric rank-k update (BLAS ``syrk``) of ``Z = [Xc, Yc]``
  per block of 4,096 rows, ``(d1 + d2)^2 n`` flops in all -- the same count
  as two ``syrk`` and one ``gemm``, and the floor for this estimator: at
  n = 100,000, d1 = d2 = 1,280 that is 0.66 TFLOP (``benchmarks/cka.py``
  prints the time next to it).

The Gram form costs O(n^2 (d1 + d2)) time and O(n^2) memory; it is cheaper
when ``n (d1 + d2) < d1^2 + d1 d2 + d2^2`` (roughly n < 1.5 d). ``method="auto"``
picks the cheaper one; both give the same number to rounding (tested to 1e-10).

Precision
---------
By default everything is float64. ``linear_cka(..., precision="float32")``
rounds the centred values to float32, multiplies each block in float32 and
sums the blocks in float64 (about twice as fast). Each value is scaled by a
power of two first (exact, and CKA is scale invariant) so float32 sums can
neither overflow nor underflow. Its error is that of float32 sums of a few
hundred terms inside BLAS, relative ~1e-7-1e-6 per entry of the d x d
products: on dense features the CKA value stays within 1e-8-1e-7 of float64;
on sparse (ReLU-like, most values 0), nearly identical representations,
where the large entries are sums of same-signed terms, up to ~2e-6 was
measured (``tests/analysis/test_cka.py`` checks both). Hence opt-in.

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

from biomark.analysis.inputs import check_matrix
from biomark.exceptions import DataError

__all__ = ["cka_from_grams", "gram_linear", "gram_rbf", "linear_cka", "rbf_cka"]

logger = logging.getLogger(__name__)

Method = Literal["auto", "features", "gram"]
Precision = Literal["float64", "float32"]

#: Rows per block in the feature-space accumulation (float32 rounding accumulates over at
#: most this many rows; memory: one block of (rows, d1 + d2) values).
_CHUNK_ROWS = 4096
#: Largest n for which ``method="auto"`` may build n x n Gram matrices.
_MAX_AUTO_GRAM_ROWS = 20_000


def _check_pair(X: np.ndarray, Y: np.ndarray, debiased: bool) -> tuple[np.ndarray, np.ndarray]:
    """The shared check of each matrix (shape, real numbers, finite; dtype kept), then the pair's
    own."""
    fix = "CKA needs finite features"
    # min_columns=0: a representation without features is refused below by _column_stats, as before
    X = check_matrix(X, "X", dtype=None, min_columns=0, fix=fix)
    Y = check_matrix(Y, "Y", dtype=None, min_columns=0, fix=fix)
    if X.shape[0] != Y.shape[0]:
        raise DataError(
            f"X and Y must have the same number of rows (paired images): got {X.shape[0]} and "
            f"{Y.shape[0]}; align both representations on the same image ids first"
        )
    n_min = 4 if debiased else 2
    if X.shape[0] < n_min:
        raise DataError(
            f"{'debiased' if debiased else 'biased'} CKA needs at least {n_min} images, got "
            f"{X.shape[0]}"
        )
    return X, Y


def _column_stats(X: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """Column means in float64 and the largest absolute centred value.

    A constant column's mean is exactly its value, so centring gives exact zeros.
    """
    means = X.mean(axis=0, dtype=np.float64)
    lo, hi = X.min(axis=0), X.max(axis=0)
    constant = lo == hi
    if constant.all():
        raise ValueError(
            f"{name} has zero variance (every row is identical); CKA is undefined for a constant "
            "representation"
        )
    means[constant] = lo[constant]  # so that centring gives exact zeros
    return means, float(np.max(np.maximum(hi - means, means - lo)))


def _column_means(X: np.ndarray, name: str) -> np.ndarray:
    """Column means in float64; exactly the column's value for a constant column."""
    return _column_stats(X, name)[0]


def _hsic_terms(
    cross: float, ab: float, sum_a: float, sum_b: float, n: int, debiased: bool
) -> float:
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


def _power_of_two_scale(peak: float) -> float:
    """1, or a power of two that brings the largest centred value ``peak`` near 1.

    CKA is invariant to scaling each representation, and scaling by a power
    of two is exact in binary floating point, so this changes no digit of the
    result; it keeps float32 products clear of overflow (values above ~1e17
    would overflow a float32 sum of squares over a block) and of underflow.
    Values within 2^-40..2^40 need no scaling (and are spared a pass).
    """
    if not np.isfinite(peak) or peak <= 0 or 2.0**-40 <= peak <= 2.0**40:
        return 1.0
    return float(np.ldexp(1.0, -int(np.frexp(peak)[1])))


def _accumulate_products(
    X: np.ndarray, Y: np.ndarray, dtype: type[np.floating]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper triangle of ``Z^T Z`` for ``Z = [s_x Xc, s_y Yc]``, and the row norms.

    One symmetric rank-k update (BLAS ``?syrk``) per block of rows gives all
    three d x d products at once (``Xc^T Xc``, ``Yc^T Xc``, ``Yc^T Yc``:
    ``(d1 + d2)^2 n`` flops, the same as two ``syrk`` and one ``gemm``, in one
    call that keeps both cores busy). numpy's ``A.T @ A`` would also pick
    ``syrk``, but only for a single matrix and without a choice of output
    buffer; scipy's BLAS wrapper writes into a preallocated Fortran buffer.

    With ``dtype=float32`` the centred values are rounded to float32 and each
    block's product is computed in float32 (about twice the speed of
    float64) and added to a float64 accumulator; the row norms are summed in
    float64 from the same float32 values, so the identities of the module
    docstring hold for the numbers actually used. The rounding error is that
    of float32 sums inside BLAS (chains of a few hundred terms), see
    "Precision" in the module docstring.

    Returns
    -------
    gram : ndarray of shape (d1 + d2, d1 + d2), float64
        Upper triangle (and diagonal) of ``Z^T Z``; the strict lower triangle is 0.
    a, b : ndarray of shape (n,), float64
        Squared row norms of ``s_x Xc`` and ``s_y Yc``.
    """
    from scipy.linalg import blas

    n, d1 = X.shape
    d2 = Y.shape[1]
    (mx, peak_x), (my, peak_y) = _column_stats(X, "X"), _column_stats(Y, "Y")
    sx, sy = _power_of_two_scale(peak_x), _power_of_two_scale(peak_y)
    syrk = blas.ssyrk if dtype == np.float32 else blas.dsyrk
    rows = min(n, _CHUNK_ROWS)
    block = np.empty((rows, d1 + d2), dtype=dtype)  # C order: block.T is Fortran (d1 + d2, rows)
    product = np.zeros((d1 + d2, d1 + d2), dtype=dtype, order="F")
    gram = np.zeros((d1 + d2, d1 + d2), order="F")
    a = np.empty(n)
    b = np.empty(n)
    for start in range(0, n, rows):
        k = min(rows, n - start)
        z = block[:k]
        # centre in float64 (the ufunc's loop for a float32 input and float64 means), store in
        # `dtype`
        np.subtract(X[start : start + k], mx, out=z[:, :d1], casting="same_kind")
        np.subtract(Y[start : start + k], my, out=z[:, d1:], casting="same_kind")
        if sx != 1.0:
            z[:, :d1] *= sx
        if sy != 1.0:
            z[:, d1:] *= sy
        a[start : start + k] = np.einsum("ij,ij->i", z[:, :d1], z[:, :d1], dtype=np.float64)
        b[start : start + k] = np.einsum("ij,ij->i", z[:, d1:], z[:, d1:], dtype=np.float64)
        # z.T is (d1 + d2, k) in Fortran order: syrk computes z.T @ z without a copy
        product = syrk(1.0, z.T, beta=0.0, c=product, trans=0, lower=0, overwrite_c=1)
        gram += product
    return gram, a, b


def _symmetric_frobenius2(upper: np.ndarray) -> float:
    """Squared Frobenius norm of a symmetric matrix given by its upper triangle (strict lower
    triangle 0)."""
    diag = np.diag(upper)
    return float(2.0 * np.sum(np.square(upper)) - diag @ diag)


def _linear_cka_features(
    X: np.ndarray, Y: np.ndarray, debiased: bool, precision: Precision = "float64"
) -> float:
    n, d1 = X.shape
    gram, a, b = _accumulate_products(X, Y, np.float32 if precision == "float32" else np.float64)
    xy = gram[:d1, d1:]
    cross = float(np.vdot(xy, xy))
    self_x = _symmetric_frobenius2(gram[:d1, :d1])
    self_y = _symmetric_frobenius2(gram[d1:, d1:])
    if not debiased:
        return _ratio(cross, self_x, self_y)
    sum_a, sum_b = float(a.sum()), float(b.sum())
    hxy = _hsic_terms(cross, float(a @ b), sum_a, sum_b, n, True)
    hxx = _hsic_terms(self_x, float(a @ a), sum_a, sum_a, n, True)
    hyy = _hsic_terms(self_y, float(b @ b), sum_b, sum_b, n, True)
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

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((6, 3))
    >>> K = gram_linear(X)
    >>> K.shape, bool(np.allclose(K, K.T)), bool(np.allclose(K.sum(axis=0), 0.0))
    ((6, 6), True, True)
    >>> bool(np.allclose(gram_linear(X + 5.0), K))  # centred: a translation changes nothing
    True
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

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((6, 3))
    >>> K = gram_rbf(X)
    >>> bool(np.allclose(np.diag(K), 1.0)), bool(((K > 0) & (K <= 1)).all())
    (True, True)
    >>> bool(np.allclose(gram_rbf(10.0 * X + 5.0), K))  # the bandwidth scales with the data
    True
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
            f"{name}: the median pairwise distance is 0 (most rows identical); the RBF bandwidth "
            "is undefined"
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
        (np.vdot(Kt, Lt) + r.sum() * s.sum() / ((n - 1) * (n - 2)) - 2.0 * (r @ s) / (n - 2))
        / (n * (n - 3))
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

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.standard_normal((100, 5)), rng.standard_normal((100, 5))
    >>> round(cka_from_grams(gram_linear(X), gram_linear(X)), 6)
    1.0
    >>> bool(abs(cka_from_grams(gram_linear(X), gram_linear(Y))) < 0.05)  # unrelated: near 0
    True
    >>> bool(np.isclose(cka_from_grams(gram_linear(X), gram_linear(Y)), linear_cka(X, Y)))
    True
    """
    K = np.asarray(K, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ValueError(
            f"K and L must be square matrices of the same shape, got {K.shape} and {L.shape}"
        )
    n_min = 4 if debiased else 2
    if K.shape[0] < n_min:
        raise ValueError(
            f"{'debiased' if debiased else 'biased'} CKA needs at least {n_min} images, got "
            f"{K.shape[0]}"
        )
    return _ratio(
        _hsic_gram(K, L, debiased), _hsic_gram(K, K, debiased), _hsic_gram(L, L, debiased)
    )


def _choose_method(n: int, d1: int, d2: int) -> Literal["features", "gram"]:
    gram_cost = n * (d1 + d2)
    feature_cost = d1 * d1 + d1 * d2 + d2 * d2
    return "gram" if gram_cost < feature_cost and n <= _MAX_AUTO_GRAM_ROWS else "features"


def linear_cka(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    debiased: bool = True,
    method: Method = "auto",
    precision: Precision = "float64",
) -> float:
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
    precision : {"float64", "float32"}, default "float64"
        Arithmetic of the ``features`` form's d x d products (the ``gram``
        form is always float64). ``float32``: each block of rows is
        multiplied in float32 and the blocks are summed in float64, about
        twice as fast; within 1e-6 of float64 on dense features, up to
        ~2e-6 on sparse, nearly identical ones (module docstring, "Precision").

    Returns
    -------
    float
        In [0, 1] for the biased estimator; the debiased one may be slightly
        negative for unrelated representations.

    Raises
    ------
    ValueError
        On non-2-D input, mismatched row counts, too few rows (n < 4 debiased,
        n < 2 biased), NaN/Inf values, a constant (zero-variance) X or Y, or
        an unknown ``method`` or ``precision``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 10))
    >>> Q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    >>> round(linear_cka(X, 3 * X @ Q + 1), 6)
    1.0
    """
    X, Y = _check_pair(X, Y, debiased)
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision={precision!r}: use 'float64' or 'float32'")
    if method == "auto":
        method = _choose_method(X.shape[0], X.shape[1], Y.shape[1])
    if method == "features":
        return _linear_cka_features(X, Y, debiased, precision)
    if method == "gram":
        return cka_from_grams(
            _gram_linear_named(X, "X"), _gram_linear_named(Y, "Y"), debiased=debiased
        )
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

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.standard_normal((100, 5)), rng.standard_normal((100, 5))
    >>> Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    >>> round(rbf_cka(X, 2 * X @ Q + 1), 6)  # rotated, scaled and shifted copy
    1.0
    >>> bool(abs(rbf_cka(X, Y)) < 0.05)  # unrelated features
    True
    >>> round(rbf_cka(X, np.tanh(X)), 2)  # a monotone non-linear transform keeps most of it
    0.93
    """
    X, Y = _check_pair(X, Y, debiased)
    return cka_from_grams(
        _gram_rbf_named(X, sigma, "X"), _gram_rbf_named(Y, sigma, "Y"), debiased=debiased
    )
