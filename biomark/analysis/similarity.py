"""CKA per cross-validation fold, with a permutation test and a bootstrap interval.

Two strategies are compared *like with like*: on each test fold, both
representations of the same images (same order). The fold values are
summarised by their mean and spread; uncertainty comes from

* a **permutation test** of "no relation": within every fold the pairing of
  rows of B with rows of A is shuffled (seeded), the fold CKAs recomputed and
  averaged; ``p = (1 + #{null mean >= observed mean}) / (1 + n_permutations)``.
  Self-similarities do not change under a permutation, so only the cross term
  is recomputed, from precomputed (centred) Gram matrices: O(n^2) per fold and
  permutation. Folds larger than ``max_permutation_rows`` are tested on a
  seeded random subset of that many images (the test stays valid; the
  statistic is then the subset's CKA). The permuted statistics use float32
  Gram matrices (the p-value does not need more precision).
* a **bootstrap** percentile interval: images are resampled with replacement
  within every fold (seeded). A resample is a vector of counts ``w``; every
  term of the HSIC estimators is then a quadratic form in ``w`` (e.g.
  ``sum_ab K_ab L_ab = w^T (K o L) w``), so all resamples of a fold are
  evaluated with a few matrix products and no n x n copy per resample. For the
  debiased estimator, pairs of copies of the *same* image are excluded as the
  diagonal is (otherwise duplicates re-introduce the bias the estimator
  removes); the Gram matrices are double-centred first, which leaves the
  estimator unchanged and makes the exclusion harmless. The *biased*
  estimator has no such fix -- duplicates inflate it like a smaller sample
  would -- so its bootstrap interval is not centred on the estimate; use it
  for the debiased estimators.

Everything is plain numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from biomark.analysis.cka import cka_from_grams, gram_linear, gram_rbf, linear_cka
from biomark.progress import progress

__all__ = [
    "FoldSimilarity",
    "Kernel",
    "bootstrap_cka",
    "cka_matrix",
    "fold_similarity",
    "permutation_test_cka",
]

logger = logging.getLogger(__name__)

Kernel = Literal["linear", "rbf"]

_BOOT_BATCH = 250
_MAX_GRAM_MATRIX_ROWS = 2000


@dataclass(frozen=True)
class FoldSimilarity:
    """CKA of two representations over cross-validation folds.

    Attributes
    ----------
    metric : str
        E.g. ``"linear_cka_debiased"``.
    folds : tuple of int
        Fold ids, in the order of the arrays below.
    values : ndarray of shape (n_folds,)
        CKA per fold (float64 estimator on all images of the fold).
    n_images : ndarray of shape (n_folds,)
    fold_ci : ndarray of shape (n_folds, 2)
        Bootstrap percentile interval per fold (NaN when ``n_bootstrap == 0``).
    mean, std, min, max : float
        Over folds (``std`` with ddof=1; 0.0 for a single fold).
    mean_ci : tuple of float
        Bootstrap interval of the fold mean.
    p_value : float or None
        Permutation p-value of the fold mean (None when ``n_permutations == 0``).
    fold_p_values : ndarray of shape (n_folds,) or None
    null_means : ndarray of shape (n_permutations,)
        Permutation null distribution of the fold mean.
    """

    metric: str
    folds: tuple[int, ...]
    values: np.ndarray
    n_images: np.ndarray
    fold_ci: np.ndarray
    mean: float
    std: float
    min: float
    max: float
    mean_ci: tuple[float, float]
    p_value: float | None
    fold_p_values: np.ndarray | None
    null_means: np.ndarray = field(repr=False)
    n_permutations: int = 0
    n_bootstrap: int = 0
    confidence: float = 0.95


def _gram(X: np.ndarray, kernel: Kernel, sigma: float) -> np.ndarray:
    return gram_linear(X) if kernel == "linear" else gram_rbf(X, sigma)


def _prepared(K: np.ndarray, debiased: bool) -> np.ndarray:
    """K~ (zero diagonal) for the debiased estimator, HKH for the biased one."""
    K = K.copy()
    if debiased:
        np.fill_diagonal(K, 0.0)
        return K
    K -= K.mean(axis=0, keepdims=True)
    K -= K.mean(axis=1, keepdims=True)
    return K


def _hsic_prepared(Kp: np.ndarray, Lp: np.ndarray, debiased: bool) -> float:
    n = Kp.shape[0]
    if not debiased:
        return float(np.vdot(Kp, Lp))
    r, s = Kp.sum(axis=1), Lp.sum(axis=1)
    return float(
        (np.vdot(Kp, Lp) + r.sum() * s.sum() / ((n - 1) * (n - 2)) - 2.0 * (r @ s) / (n - 2))
        / (n * (n - 3))
    )


def _safe_cka(num: np.ndarray, den_x: np.ndarray, den_y: np.ndarray) -> np.ndarray:
    den = den_x * den_y
    ok = (den_x > 0) & (den_y > 0)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, np.sqrt(np.where(ok, den, 1.0)), out=out, where=np.broadcast_to(ok, out.shape))
    return out


class _FoldPermuter:
    """Permutation null of one fold's CKA from float32 prepared Gram matrices."""

    def __init__(self, K: np.ndarray, L: np.ndarray, debiased: bool) -> None:
        n = K.shape[0]
        Kp, Lp = _prepared(K, debiased), _prepared(L, debiased)
        self.n, self.debiased = n, debiased
        self.Kp = Kp.astype(np.float32)
        self.Lp = Lp.astype(np.float32)
        self.r, self.s = Kp.sum(axis=1), Lp.sum(axis=1)
        self.const = self.r.sum() * self.s.sum() / ((n - 1) * (n - 2)) if debiased else 0.0
        self.den = np.sqrt(
            max(_hsic_prepared(Kp, Kp, debiased), 0.0) * max(_hsic_prepared(Lp, Lp, debiased), 0.0)
        )

    def cka(self, perm: np.ndarray | None) -> float:
        if self.den <= 0:
            return 0.0
        Lp = self.Lp if perm is None else self.Lp.take(perm, axis=0).take(perm, axis=1)
        s = self.s if perm is None else self.s[perm]
        cross = float(np.vdot(self.Kp, Lp))
        if self.debiased:
            n = self.n
            cross = (cross + self.const - 2.0 * float(self.r @ s) / (n - 2)) / (n * (n - 3))
        return cross / self.den


def permutation_test_cka(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray],
    *,
    n_permutations: int = 1000,
    kernel: Kernel = "linear",
    debiased: bool = True,
    sigma: float = 0.8,
    max_rows: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    show_progress: bool | None = None,
    desc: str = "permutations",
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Permutation test of the fold-mean CKA (rows shuffled within folds).

    Parameters
    ----------
    Xs, Ys : sequences of ndarray of shape (n_f, d1) and (n_f, d2)
        One pair per fold, rows paired.
    n_permutations : int, default 1000
    kernel : {"linear", "rbf"}, default "linear"
    debiased : bool, default True
    sigma : float, default 0.8
        RBF bandwidth fraction (ignored for ``linear``).
    max_rows : int, default 1000
        Folds with more images are tested on a seeded subset of this size.
    random_state : int, Generator or None, default 0
    show_progress : bool or None
        Progress bar over permutations (None: only on a terminal).

    Returns
    -------
    p_value : float
        Of the fold mean.
    fold_p_values : ndarray of shape (n_folds,)
    null_means : ndarray of shape (n_permutations,)
    observed : ndarray of shape (n_folds,)
        The (float32, possibly subset) fold statistics the null is compared with.
    """
    rng = np.random.default_rng(random_state)
    permuters = []
    for X, Y in zip(Xs, Ys, strict=True):
        n = X.shape[0]
        if n > max_rows:
            keep = np.sort(rng.choice(n, size=max_rows, replace=False))
            logger.info(
                "permutation test on %d of %d images of a fold (max_rows=%d)", max_rows, n, max_rows
            )
            X, Y = X[keep], Y[keep]
        permuters.append(_FoldPermuter(_gram(X, kernel, sigma), _gram(Y, kernel, sigma), debiased))
    observed = np.array([p.cka(None) for p in permuters])
    null = np.empty((n_permutations, len(permuters)))
    for b in progress(
        range(n_permutations), desc=desc, unit="perm", enabled=show_progress, leave=False
    ):
        for f, p in enumerate(permuters):
            null[b, f] = p.cka(rng.permutation(p.n))
    # a small tolerance so that float32 ties with the observed value count as "as extreme"
    tol = 1e-6
    fold_p = (1.0 + (null >= observed - tol).sum(axis=0)) / (1.0 + n_permutations)
    null_means = null.mean(axis=1)
    p_mean = (1.0 + float((null_means >= observed.mean() - tol).sum())) / (1.0 + n_permutations)
    return p_mean, fold_p, null_means, observed


def _bootstrap_fold(
    K: np.ndarray, L: np.ndarray, debiased: bool, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """CKA of ``n_bootstrap`` resamples (with replacement) of one fold."""
    n = K.shape[0]
    if debiased:
        # Double-centre first (the unbiased HSIC does not change: its U-statistic
        # kernel cancels row/column effects), so that the excluded pairs of
        # copies of one image are ~0 on average and their absence does not
        # shift the estimate (matters for kernels with a large mean, e.g. RBF).
        K, L = _prepared(K, False), _prepared(L, False)
        np.fill_diagonal(K, 0.0)
        np.fill_diagonal(L, 0.0)
    products = {"kl": K * L, "kk": K * K, "ll": L * L}
    out = np.empty(n_bootstrap)
    m = float(n)
    for start in range(0, n_bootstrap, _BOOT_BATCH):
        size = min(_BOOT_BATCH, n_bootstrap - start)
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)  # (B, n) counts
        KW, LW = W @ K, W @ L
        wKw, wLw = (W * KW).sum(axis=1), (W * LW).sum(axis=1)
        quad = {key: ((W @ M) * W).sum(axis=1) for key, M in products.items()}

        def hsic(
            q: np.ndarray, A: np.ndarray, B: np.ndarray, wAw: np.ndarray, wBw: np.ndarray
        ) -> np.ndarray:
            mixed = (W * A * B).sum(axis=1)  # noqa: B023 - called within this iteration
            if not debiased:
                return q - 2.0 / m * mixed + wAw * wBw / m**2
            return (q + wAw * wBw / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * mixed) / (m * (m - 3))

        hxy = hsic(quad["kl"], KW, LW, wKw, wLw)
        hxx = hsic(quad["kk"], KW, KW, wKw, wKw)
        hyy = hsic(quad["ll"], LW, LW, wLw, wLw)
        out[start : start + size] = _safe_cka(hxy, hxx, hyy)
    return out


def bootstrap_cka(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray],
    *,
    n_bootstrap: int = 1000,
    kernel: Kernel = "linear",
    debiased: bool = True,
    sigma: float = 0.8,
    random_state: int | np.random.Generator | None = 0,
    show_progress: bool | None = None,
    desc: str = "bootstrap",
    max_rows: int = 8000,
) -> np.ndarray:
    """Bootstrap CKA per fold, images resampled with replacement within each fold.

    Parameters
    ----------
    Xs, Ys : sequences of ndarray of shape (n_f, d1) and (n_f, d2)
    n_bootstrap : int, default 1000
    kernel, debiased, sigma, random_state, show_progress
        As :func:`permutation_test_cka`.
    max_rows : int, default 8000
        Memory cap: a larger fold is resampled from a seeded subset of this
        many images (logged; the interval is then wider than it needs to be).

    Returns
    -------
    ndarray of shape (n_bootstrap, n_folds)
        Row b holds resample b of every fold; its mean over axis 1 is a
        bootstrap replicate of the fold mean.

    Notes
    -----
    Needs the n_f x n_f Gram matrices of each fold (a few of them at once):
    about 5 * 8 * n_f^2 bytes per fold.
    """
    rng = np.random.default_rng(random_state)
    columns = []
    for X, Y in progress(
        list(zip(Xs, Ys, strict=True)), desc=desc, unit="fold", enabled=show_progress, leave=False
    ):
        if X.shape[0] > max_rows:
            keep = np.sort(rng.choice(X.shape[0], size=max_rows, replace=False))
            logger.warning(
                "bootstrap on %d of %d images of a fold (memory cap); the interval is conservative",
                max_rows,
                X.shape[0],
            )
            X, Y = X[keep], Y[keep]
        columns.append(
            _bootstrap_fold(
                _gram(X, kernel, sigma), _gram(Y, kernel, sigma), debiased, n_bootstrap, rng
            )
        )
    return np.stack(columns, axis=1) if columns else np.empty((n_bootstrap, 0))


def fold_similarity(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray],
    folds: Sequence[int],
    *,
    kernel: Kernel = "linear",
    debiased: bool = True,
    sigma: float = 0.8,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    max_permutation_rows: int = 1000,
    random_state: int | None = 0,
    show_progress: bool | None = None,
    label: str = "",
) -> FoldSimilarity:
    """CKA per fold with mean, spread, permutation p-value and bootstrap interval.

    Parameters
    ----------
    Xs, Ys : sequences of ndarray of shape (n_f, d1) and (n_f, d2)
        Representations A and B of each fold's images, rows paired.
    folds : sequence of int
        Fold ids, same length as ``Xs``.
    kernel : {"linear", "rbf"}, default "linear"
    debiased : bool, default True
    sigma : float, default 0.8
        RBF bandwidth as a fraction of the median distance.
    n_permutations, n_bootstrap : int, default 1000
        0 skips the test / interval.
    confidence : float, default 0.95
        Level of the percentile intervals.
    max_permutation_rows : int, default 1000
        See :func:`permutation_test_cka`.
    random_state : int or None, default 0
        Seeds the permutations and (independently) the bootstrap.
    show_progress : bool or None
    label : str
        Prefix of progress-bar labels.

    Returns
    -------
    FoldSimilarity

    Raises
    ------
    ValueError
        From :func:`linear_cka` / :func:`rbf_cka` on invalid input, or if the
        sequences are empty or of different lengths.
    """
    if not len(Xs) or len(Xs) != len(Ys) or len(Xs) != len(folds):
        raise ValueError(
            f"need one (X, Y) pair per fold: got {len(Xs)} X, {len(Ys)} Y, {len(folds)} fold ids"
        )
    metric = f"{kernel}_cka_{'debiased' if debiased else 'biased'}"
    if kernel == "linear":
        values = np.array(
            [linear_cka(X, Y, debiased=debiased) for X, Y in zip(Xs, Ys, strict=True)]
        )
    else:
        values = np.array(
            [
                cka_from_grams(gram_rbf(X, sigma), gram_rbf(Y, sigma), debiased=debiased)
                for X, Y in zip(Xs, Ys, strict=True)
            ]
        )
    seeds = np.random.SeedSequence(random_state).spawn(2)
    alpha = (1.0 - confidence) / 2.0
    nan2 = np.full((len(Xs), 2), np.nan)
    fold_ci, mean_ci = nan2, (float("nan"), float("nan"))
    if n_bootstrap > 0:
        boot = bootstrap_cka(
            Xs,
            Ys,
            n_bootstrap=n_bootstrap,
            kernel=kernel,
            debiased=debiased,
            sigma=sigma,
            random_state=np.random.default_rng(seeds[1]),
            show_progress=show_progress,
            desc=f"{label} bootstrap",
        )
        fold_ci = np.quantile(boot, [alpha, 1 - alpha], axis=0).T
        lo, hi = np.quantile(boot.mean(axis=1), [alpha, 1 - alpha])
        mean_ci = (float(lo), float(hi))
    p_value, fold_p, null_means = None, None, np.empty(0)
    if n_permutations > 0:
        p_value, fold_p, null_means, _ = permutation_test_cka(
            Xs,
            Ys,
            n_permutations=n_permutations,
            kernel=kernel,
            debiased=debiased,
            sigma=sigma,
            max_rows=max_permutation_rows,
            random_state=np.random.default_rng(seeds[0]),
            show_progress=show_progress,
            desc=f"{label} permutations",
        )
    return FoldSimilarity(
        metric=metric,
        folds=tuple(int(f) for f in folds),
        values=values,
        n_images=np.array([X.shape[0] for X in Xs]),
        fold_ci=fold_ci,
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        min=float(values.min()),
        max=float(values.max()),
        mean_ci=mean_ci,
        p_value=p_value,
        fold_p_values=fold_p,
        null_means=null_means,
        n_permutations=n_permutations,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
    )


def cka_matrix(
    blocks_a: dict[str, np.ndarray], blocks_b: dict[str, np.ndarray], *, debiased: bool = True
) -> np.ndarray:
    """Linear CKA between every block of A and every block of B (one fold).

    Parameters
    ----------
    blocks_a : dict of str to ndarray of shape (n, d_i)
        Block outputs of A in network order, rows paired with ``blocks_b``.
    blocks_b : dict of str to ndarray of shape (n, d_j)
    debiased : bool, default True

    Returns
    -------
    ndarray of shape (len(blocks_a), len(blocks_b))
        Entry (i, j) is CKA(block i of A, block j of B) -- the Kornblith et
        al. (2019) heat map. Each block's Gram matrix is built once (up to
        2,000 images; above that, pairwise feature-space CKA without n x n
        matrices).
    """
    n = next(iter(blocks_a.values())).shape[0] if blocks_a else 0
    if n > _MAX_GRAM_MATRIX_ROWS:  # n x n Grams of every block would not fit comfortably
        return np.array(
            [
                [linear_cka(X, Y, debiased=debiased) for Y in blocks_b.values()]
                for X in blocks_a.values()
            ]
        )

    def prep(blocks: dict[str, np.ndarray]) -> list[tuple[np.ndarray, float]]:
        out = []
        for X in blocks.values():
            Kp = _prepared(gram_linear(X), debiased)
            out.append((Kp, _hsic_prepared(Kp, Kp, debiased)))
        return out

    pa, pb = prep(blocks_a), prep(blocks_b)
    result = np.zeros((len(pa), len(pb)))
    for i, (Kp, hk) in enumerate(pa):
        for j, (Lp, hl) in enumerate(pb):
            result[i, j] = float(
                _safe_cka(np.array(_hsic_prepared(Kp, Lp, debiased)), np.array(hk), np.array(hl))
            )
    return result
