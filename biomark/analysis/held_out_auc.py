"""Held-out ridge AUCs for a binary or categorical target and all its permutations at once.

The shortcut audit (:func:`biomark.analysis.audit.source_predictability`)
reads a cross-validated ridge classifier's AUC against hundreds of permuted
targets. Ridge predictions are linear in the target, so one "hat" map per
split (:func:`ridge_hats`) scores the observed target and every permutation
with one matrix product; :func:`fold_aucs` turns those scores into held-out
AUCs per split and per permutation, and :func:`permuted_between_groups`
draws the permutations (between patients, each keeping one code).

numpy/scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = [
    "auc_columns",
    "column_ranks",
    "fold_aucs",
    "permuted_between_groups",
    "ridge_hats",
    "standardised",
]


def standardised(X: np.ndarray) -> np.ndarray:
    """``X`` centred and scaled to unit variance per column (a constant column: centred only),
    computed in float64 and returned in float32."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    return ((X - X.mean(axis=0)) / sd).astype(np.float32)


def ridge_hats(
    X: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]], penalty: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Ridge "hat" maps from training targets to test scores, one per split of the rows of ``X``.

    The features are standardised once over all rows of ``X`` (no target is
    used, so a permutation test on the maps stays exact); each split's ridge
    with an intercept, fitted on its training rows, predicts ``mean(y) + Kte (K
    + lam I)^-1 y`` with ``K`` the Gram matrix of the training rows centred on
    their mean and ``Kte`` the test rows' against them, centred alike. The map
    ``Kte (K + lam I)^-1``, shape (n_test, n_train), gives the second term,
    linear in ``y`` (the intercept shifts every test score alike and leaves an
    AUC unchanged): one map serves the observed sources and every permutation
    of them. ``lam = penalty * n_features`` (the mean squared norm of a
    standardised row).

    Written by hand because scikit-learn's ``Ridge`` refits for every permuted
    target; the tests check it against it. With fewer rows than features the
    Gram matrix of all rows is computed once and every split indexes it and
    solves an n_train-sized system (a 300 x 1,280 class, 25 splits, one BLAS
    thread: 1.3-1.5 ms a split, its share of the Gram included, against 7.0-7.9
    ms with a standardisation and a Gram of its own);
    otherwise each split solves the n_features-sized system. Solved in float32:
    the maps only rank test images (AUCs), and differ from float64's by about
    1e-7.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
    splits : sequence of (train, test) index arrays into the rows of ``X``
    penalty : float

    Returns
    -------
    list of (train, test, map)
        The splits with their maps, in order.

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((40, 4)), rng.random(40)
    >>> train, test = np.arange(30), np.arange(30, 40)
    >>> [(_, _, H)] = ridge_hats(X, [(train, test)], penalty=2.0)
    >>> H.shape
    (10, 30)
    >>> Z = standardised(X)
    >>> fit = Ridge(alpha=2.0 * 4).fit(Z[train], y[train])
    >>> bool(np.allclose(H @ y[train] + y[train].mean(), fit.predict(Z[test]), atol=1e-5))
    True
    """
    Z = standardised(X)
    n, d = Z.shape
    lam = np.float32(penalty * d)
    if n >= d:
        return [(train, test, _primal_hat(Z[train], Z[test], lam)) for train, test in splits]
    gram = Z @ Z.T
    hats = []
    for train, test in splits:
        k_train = gram[np.ix_(train, train)]
        k_test = gram[np.ix_(test, train)]
        # centring both on the training rows' mean, in kernel form
        row_mean = k_train.mean(axis=1)
        grand = row_mean.mean()
        k_train = k_train - row_mean[:, None] - row_mean[None, :] + grand
        k_test = k_test - k_test.mean(axis=1)[:, None] - row_mean[None, :] + grand
        k_train.flat[:: k_train.shape[0] + 1] += lam
        hats.append((train, test, np.linalg.solve(k_train, k_test.T).T))
    return hats


def _primal_hat(Ztr: np.ndarray, Zte: np.ndarray, lam: np.float32) -> np.ndarray:
    """One split's map from its n_features-sized system, centred on the training rows."""
    mean = Ztr.mean(axis=0)
    Ztr, Zte = Ztr - mean, Zte - mean
    system = Ztr.T @ Ztr
    system.flat[:: system.shape[0] + 1] += lam
    return Zte @ np.linalg.solve(system, Ztr.T)


def auc_columns(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of ``scores`` (n, m) for boolean ``positive`` (n, m); NaN without
    both kinds.

    Examples
    --------
    >>> scores = np.array([[0.1, 0.9, 0.5], [0.4, 0.6, 0.5], [0.35, 0.4, 0.5], [0.8, 0.2, 0.5]])
    >>> pos = np.array([False, False, True, True])
    >>> auc_columns(scores, np.column_stack([pos, pos, np.zeros(4, dtype=bool)])).tolist()
    [0.75, 0.0, nan]
    """
    ranks = column_ranks(scores)
    n_pos = positive.sum(axis=0)
    n_neg = positive.shape[0] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def column_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks (1 to n) of every column of ``scores`` (n, m), ties given their mean rank, as
    ``scipy.stats.rankdata(scores, axis=0)``.

    By hand because the audit ranks hundreds of thousands of columns and
    ``rankdata``'s general tie handling costs about 7 times one ``argsort``
    (2.8 against 0.4 ms for 60 x 501): each column is ranked by its sort order,
    and only the columns with a tie (rare for ridge scores) go to ``rankdata``.

    Examples
    --------
    >>> column_ranks(np.array([[0.3, 1.0], [0.1, 2.0], [0.2, 1.0]])).tolist()
    [[3.0, 1.5], [1.0, 3.0], [2.0, 1.5]]
    """
    order = np.argsort(scores, axis=0)
    in_order = np.take_along_axis(scores, order, axis=0)
    tied = (in_order[1:] == in_order[:-1]).any(axis=0)
    ranks = np.empty(scores.shape)
    first_to_last = np.arange(1.0, scores.shape[0] + 1)[:, None]
    np.put_along_axis(ranks, order, np.broadcast_to(first_to_last, order.shape), axis=0)
    if tied.any():
        ranks[:, tied] = sps.rankdata(scores[:, tied], axis=0)
    return ranks


def fold_aucs(
    hats: list[tuple[np.ndarray, np.ndarray, np.ndarray]], codes: np.ndarray, n_levels: int
) -> np.ndarray:
    """Held-out AUC per split and per column of ``codes`` (n_images, n_perm): shape (n_splits,
    n_perm).

    Binary: the AUC of the source-1 score. More levels: one-vs-rest macro
    average of each level's score margin over its strongest rival. A split
    whose training or test part lacks a level is NaN.

    Examples
    --------
    Feature 0 carries the source; two splits, the observed codes and 200 permutations:

    >>> rng = np.random.default_rng(0)
    >>> codes = np.repeat([0, 1], 20)
    >>> X = rng.standard_normal((40, 3)) + 3 * codes[:, None] * np.array([1, 0, 0])
    >>> test = np.arange(40) % 2 == 0
    >>> hats = ridge_hats(X, [(~test, test), (test, ~test)], penalty=1.0)
    >>> fold_aucs(hats, codes[:, None], n_levels=2).round(2).ravel().tolist()
    [0.89, 0.94]
    >>> null = fold_aucs(hats, permuted_between_groups(codes, None, 200, rng), n_levels=2)
    >>> null.shape, round(float(np.nanmean(null)), 1)
    ((2, 200), 0.5)
    """
    out = np.full((len(hats), codes.shape[1]), np.nan)
    for i, (train, test, H) in enumerate(hats):
        ctr, cte = codes[train], codes[test]
        present_tr = np.stack([(ctr == k).any(axis=0) for k in range(n_levels)])
        present_te = np.stack([(cte == k).any(axis=0) for k in range(n_levels)])
        ok = present_tr.all(axis=0) & present_te.all(axis=0)
        if n_levels == 2:
            auc = auc_columns(H @ (ctr == 1).astype(float), cte == 1)
        else:  # each level's score minus its strongest rival's, so a middle level is separable too
            scores = np.stack([H @ (ctr == k).astype(float) for k in range(n_levels)])
            per_level = []
            for k in range(n_levels):
                rival = np.max(np.delete(scores, k, axis=0), axis=0)
                per_level.append(auc_columns(scores[k] - rival, cte == k))
            auc = np.mean(per_level, axis=0)
        out[i] = np.where(ok, auc, np.nan)
    return out


def permuted_between_groups(
    codes: np.ndarray, groups: np.ndarray | None, n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_permutations`` shuffles of ``codes`` as columns; between groups (each keeps one code)
    when given.

    A group whose images carry several codes keeps its own mix; only groups
    with a single code take part in the shuffle between groups.

    Examples
    --------
    >>> codes = np.array([0, 0, 1, 1, 1, 0, 0, 1])
    >>> patients = np.array(["p1", "p1", "p2", "p2", "p3", "p4", "p5", "p5"])
    >>> perms = permuted_between_groups(codes, patients, 200, np.random.default_rng(0))
    >>> perms.shape
    (8, 200)
    >>> bool((perms[0] == perms[1]).all())  # both films of p1 always share a code
    True
    >>> bool((perms[6:] == codes[6:, None]).all())  # p5 has both codes: kept as it is
    True
    >>> sorted(perms[[0, 2, 4, 5], 0].tolist())  # p1-p4 trade their codes
    [0, 0, 1, 1]
    """
    if groups is None:
        return np.stack([rng.permutation(codes) for _ in range(n_permutations)], axis=1)
    uniq, inverse = np.unique(groups, return_inverse=True)
    per_group = pd.Series(codes).groupby(inverse)
    single = (per_group.nunique() == 1).to_numpy()
    group_code = per_group.first().to_numpy()
    movable = np.flatnonzero(single)
    out = np.repeat(codes[:, None], n_permutations, axis=1)
    for j in range(n_permutations):
        shuffled = group_code.copy()
        shuffled[movable] = rng.permutation(group_code[movable])
        moved = single[inverse]
        out[moved, j] = shuffled[inverse[moved]]
    return out
