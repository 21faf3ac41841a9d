"""Rank tests over every column of a feature matrix at once: the engine of
:mod:`biomark.analysis.stats`.

* :func:`mannwhitney_columns` -- two-sided Mann--Whitney U of two groups, per column;
* :func:`pooled_ranks` -- the column ranks of a whole matrix, shared by its class-vs-rest tests;
* :func:`kruskal_columns` -- Kruskal--Wallis H across groups, per column;
* :func:`bootstrap_auc` -- stratified bootstrap of the single-feature ROC AUC, per column;
* :func:`contrast` -- Kruskal--Wallis across classes and Mann--Whitney, AUC and Cliff's delta
  of one class against the rest, with the classes too small to test recorded;
* :func:`constant_columns`, :func:`has_ties` -- the column properties the tests depend on;
* :func:`record_skip` -- a test not run for a class, recorded and logged (nothing is dropped
  silently).

Inputs are checked by the public tables of :mod:`biomark.analysis.stats`
(:func:`biomark.analysis.inputs.check_matrix`); these functions trust them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from biomark.data.labels import order_classes

__all__ = [
    "PooledRanks",
    "bootstrap_auc",
    "constant_columns",
    "contrast",
    "has_ties",
    "kruskal_columns",
    "mannwhitney_columns",
    "pooled_ranks",
    "record_skip",
]

logger = logging.getLogger(__name__)

#: Features per block in the bootstrap.
_BOOT_BLOCK = 32
#: Below this size (in either group) scipy's "auto" may choose the exact
#: Mann--Whitney distribution; we then choose per feature as scipy would.
_MWU_EXACT_MAX = 8


def constant_columns(X: np.ndarray) -> np.ndarray:
    return np.ptp(X, axis=0) == 0.0


def has_ties(X: np.ndarray) -> np.ndarray:
    s = np.sort(X, axis=0)
    return (np.diff(s, axis=0) == 0.0).any(axis=0)


def mannwhitney_columns(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann--Whitney U of ``a`` vs ``b`` per column: (U of a, p)."""
    n1, n0 = a.shape[0], b.shape[0]
    p_feat = a.shape[1]
    u = np.full(p_feat, n1 * n0 / 2.0)
    pval = np.ones(p_feat)
    both = np.vstack([a, b])
    live = ~constant_columns(both)
    if not live.any():
        return u, pval
    if n1 > _MWU_EXACT_MAX and n0 > _MWU_EXACT_MAX:
        groups = [("asymptotic", live)]
    else:
        # scipy's "auto" decides exact vs asymptotic from ties over the whole
        # array when called vectorised; decide per feature so that each column
        # gets what a one-column call would.
        ties = has_ties(both)
        groups = [("exact", live & ~ties), ("asymptotic", live & ties)]
    for method, cols in groups:
        if cols.any():
            res = sps.mannwhitneyu(
                a[:, cols], b[:, cols], alternative="two-sided", axis=0, method=method
            )
            u[cols] = res.statistic
            pval[cols] = res.pvalue
    return u, pval


@dataclass(frozen=True)
class PooledRanks:
    """Midranks of every column of one matrix over all its rows, with each column's tie term.

    Every class-vs-rest Mann--Whitney test of a matrix ranks the same pooled
    sample (a class and the rest are all the rows), so the ranks are computed
    once (:func:`pooled_ranks`) instead of once per class.

    Attributes
    ----------
    ranks : ndarray of shape (n_rows, n_columns)
    tie_term : ndarray of shape (n_columns,)
        ``sum(t**3 - t)`` over each column's groups of tied values.
    """

    ranks: np.ndarray
    tie_term: np.ndarray


def pooled_ranks(X: np.ndarray) -> PooledRanks:
    """The :class:`PooledRanks` of ``X`` (one rank transform and one sort)."""
    X = np.asarray(X, dtype=np.float64)
    s = np.sort(X, axis=0)
    tie_term = np.zeros(X.shape[1])
    tied = np.flatnonzero((np.diff(s, axis=0) == 0.0).any(axis=0))  # has_ties, on this sort
    for j in tied:  # run lengths of equal values in the sorted column
        starts = np.flatnonzero(np.r_[True, s[1:, j] != s[:-1, j]])
        t = np.diff(np.r_[starts, X.shape[0]]).astype(np.float64)
        tie_term[j] = float(np.sum(t**3 - t))
    return PooledRanks(sps.rankdata(X, axis=0), tie_term)


def _mannwhitney_from_ranks(
    pooled: PooledRanks, is_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided asymptotic Mann--Whitney U (with continuity correction) from pooled ranks.

    The formulas of ``scipy.stats.mannwhitneyu(..., method="asymptotic")``
    (its ``_get_mwu_z``), on ranks computed once for every class.
    """
    n1 = int(is_pos.sum())
    n0 = is_pos.size - n1
    n = n1 + n0
    u1 = pooled.ranks[is_pos].sum(axis=0) - n1 * (n1 + 1) / 2.0
    u = np.maximum(u1, n1 * n0 - u1)
    sd = np.sqrt(n1 * n0 / 12.0 * ((n + 1) - pooled.tie_term / (n * (n - 1))))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - n1 * n0 / 2.0 - 0.5) / sd
    pval = np.clip(2.0 * sps.norm.sf(z), 0.0, 1.0)
    constant = pooled.tie_term == float(n) ** 3 - n  # one value: no test
    return np.where(constant, n1 * n0 / 2.0, u1), np.where(constant, 1.0, pval)


def kruskal_columns(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Kruskal--Wallis H and p per column over ``groups`` (each (n_k, p))."""
    p_feat = groups[0].shape[1]
    h = np.zeros(p_feat)
    pval = np.ones(p_feat)
    live = ~constant_columns(np.vstack(groups))
    if live.any():
        res = sps.kruskal(*[g[:, live] for g in groups], axis=0)
        h[live] = res.statistic
        pval[live] = res.pvalue
    return h, pval


def _counts(rng: np.random.Generator, n: int, n_draws: int) -> np.ndarray:
    """(n_draws, n) multinomial counts of drawing n of n items with replacement."""
    idx = rng.integers(0, n, size=(n_draws, n))
    flat = (idx + (np.arange(n_draws) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_draws * n).reshape(n_draws, n)


def bootstrap_auc(pos: np.ndarray, neg: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """Stratified bootstrap AUCs, shape (n_bootstrap, n_features).

    Each draw resamples the positives and the rest separately with replacement
    (counts ``w`` of shape (n_pos,) and ``v`` of shape (n_rest,)). Re-ranking
    every resample would cost a sort of the whole matrix per draw; instead,
    per feature, each value is placed once among the *sorted positives*:
    ``less(x)`` / ``le(x)`` = number of positives ``< x`` / ``<= x``. For a
    positive ``i`` and a negative ``j``, ``x_j < x_i`` iff
    ``le(x_j) <= less(x_i)`` and ``x_j <= x_i`` iff ``less(x_j) <= less(x_i)``,
    so with ``H`` the histogram over ``0..n_pos`` of ``le`` and ``less`` of the
    negatives weighted by ``v``, ``C`` its cumulative sum and ``Wh`` the
    histogram of ``less`` of the positives weighted by ``w``::

        2 U = sum_i w_i (#{x_j < x_i} + #{x_j <= x_i}) = sum_t Wh[t] C[t]

    (ties count one half, as in ``roc_auc_score``). Both histograms, for all
    draws and a block of features at once, are sparse-matrix x dense products
    whose sparse side is fixed; the result is exact (integer counts held in
    float32 while ``2 n_pos n_rest < 2**24``, else float64).
    """
    from scipy import sparse

    n1, p_feat = pos.shape
    n0 = neg.shape[0]
    dtype = np.float32 if 2 * n1 * n0 < 2**24 else np.float64
    rng = np.random.default_rng(seed)
    w_t = np.ascontiguousarray(_counts(rng, n1, n_bootstrap).T, dtype=dtype)  # (n1, B)
    v_t = np.ascontiguousarray(_counts(rng, n0, n_bootstrap).T, dtype=dtype)  # (n0, B)
    pos_sorted = np.sort(pos, axis=0)
    slots = n1 + 1
    out = np.empty((n_bootstrap, p_feat))
    # draws per chunk so that one (block, slots, draws) array stays ~ 32 MB
    chunk = max(1, 32 * 2**20 // (np.dtype(dtype).itemsize * _BOOT_BLOCK * slots))
    for start in range(0, p_feat, _BOOT_BLOCK):
        stop = min(p_feat, start + _BOOT_BLOCK)
        width = stop - start
        less_neg = np.empty((width, n0), dtype=np.intp)
        le_neg = np.empty((width, n0), dtype=np.intp)
        less_pos = np.empty((width, n1), dtype=np.intp)
        for k, j in enumerate(range(start, stop)):
            less_neg[k] = np.searchsorted(pos_sorted[:, j], neg[:, j], side="left")
            le_neg[k] = np.searchsorted(pos_sorted[:, j], neg[:, j], side="right")
            less_pos[k] = np.searchsorted(pos_sorted[:, j], pos[:, j], side="left")
        offset = (np.arange(width) * slots)[:, None]
        rows_neg = np.concatenate([(less_neg + offset).ravel(), (le_neg + offset).ravel()])
        cols_neg = np.tile(np.arange(n0), 2 * width)
        to_neg = sparse.csr_matrix(
            (np.ones(rows_neg.size, dtype=dtype), (rows_neg, cols_neg)), shape=(width * slots, n0)
        )
        to_pos = sparse.csr_matrix(
            (
                np.ones(width * n1, dtype=dtype),
                ((less_pos + offset).ravel(), np.tile(np.arange(n1), width)),
            ),
            shape=(width * slots, n1),
        )
        for b0 in range(0, n_bootstrap, chunk):
            b1 = min(n_bootstrap, b0 + chunk)
            cum = np.asarray(to_neg @ v_t[:, b0:b1]).reshape(width, slots, b1 - b0)
            np.cumsum(cum, axis=1, out=cum)
            wh = np.asarray(to_pos @ w_t[:, b0:b1]).reshape(width, slots, b1 - b0)
            out[b0:b1, start:stop] = np.einsum("fsb,fsb->bf", wh, cum)
    out /= 2.0 * n1 * n0
    return out


def contrast(
    X: np.ndarray,
    labels: np.ndarray,
    positive: str,
    min_group_size: int,
    skipped: list[dict[str, Any]],
    *,
    kruskal: bool = True,
    test_name: str = "mannwhitney",
    pooled: PooledRanks | None = None,
) -> dict[str, np.ndarray]:
    """Kruskal across classes and Mann--Whitney/delta/AUC positive vs rest.

    ``pooled`` (:func:`pooled_ranks` of ``X``) spares the ranking when both
    groups are large enough for the asymptotic test.
    """
    p_feat = X.shape[1]
    nan = np.full(p_feat, np.nan)
    out: dict[str, np.ndarray] = {}
    classes = order_classes(labels)
    counts = {c: int(np.sum(labels == c)) for c in classes}

    kept = []
    for c in classes if kruskal else ():
        if counts[c] < min_group_size:
            record_skip(
                skipped,
                "kruskal",
                c,
                counts[c],
                f"fewer than min_group_size={min_group_size} images; "
                "class left out of the Kruskal-Wallis test",
            )
        else:
            kept.append(c)
    if not kruskal:
        pass
    elif len(kept) >= 2:
        out["kruskal_H"], out["kruskal_p"] = kruskal_columns([X[labels == c] for c in kept])
    else:
        record_skip(
            skipped,
            "kruskal",
            None,
            len(kept),
            f"{len(kept)} class(es) with >= {min_group_size} images; Kruskal-Wallis needs two",
        )
        out["kruskal_H"], out["kruskal_p"] = nan.copy(), nan.copy()

    is_pos = labels == positive
    n1, n0 = int(is_pos.sum()), int((~is_pos).sum())
    if n1 < min_group_size or n0 < min_group_size:
        small, n_small = (positive, n1) if n1 < min_group_size else (f"not {positive}", n0)
        record_skip(
            skipped,
            test_name,
            small,
            n_small,
            f"fewer than min_group_size={min_group_size} images; "
            f"{positive} vs rest not tested (U, p, delta, AUC are NaN)",
        )
        for key in ("mw_U", "mw_p", "cliffs_delta", "auc"):
            out[key] = nan.copy()
    else:
        if pooled is not None and min(n1, n0) > _MWU_EXACT_MAX:
            out["mw_U"], out["mw_p"] = _mannwhitney_from_ranks(pooled, is_pos)
        else:
            out["mw_U"], out["mw_p"] = mannwhitney_columns(X[is_pos], X[~is_pos])
        out["auc"] = out["mw_U"] / (n1 * n0)
        out["cliffs_delta"] = 2.0 * out["auc"] - 1.0
    return out


def record_skip(
    skipped: list[dict[str, Any]], test: str, cls: str | None, n: int, reason: str
) -> None:
    """Record (in ``skipped``, shown in ``df.attrs["skipped"]``) and log a test left out for a
    class."""
    skipped.append({"test": test, "class": cls, "n": int(n), "reason": reason})
    logger.warning("%s skipped for class %s (n=%d): %s", test, cls, n, reason)
