"""Held-out ridge AUCs for a binary or categorical target and all its permutations at once.

The shortcut audit (:func:`biomark.analysis.audit.source_predictability`)
reads a cross-validated ridge classifier's AUC against hundreds of permuted
targets. Ridge predictions are linear in the target, so one "hat" map per
split (:func:`ridge_hat`) scores the observed target and every permutation
with one matrix product; :func:`fold_aucs` turns those scores into held-out
AUCs per split and per permutation, and :func:`permuted_between_groups`
draws the permutations (between patients, each keeping one code).

numpy/scipy only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = ["auc_columns", "fold_aucs", "permuted_between_groups", "ridge_hat", "standardise"]


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    sd = train.std(axis=0)
    sd[sd == 0] = 1.0
    return (train - mean) / sd, (test - mean) / sd


def ridge_hat(Xtr: np.ndarray, Xte: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge "hat" map from training targets to test scores, shape (n_test, n_train).

    Ridge with an intercept on standardised features predicts
    ``mean(y) + Xte (Xtr'Xtr + lam I)^-1 Xtr' y`` (= ``mean(y) + Kte (K + lam I)^-1 y``
    with ``K = Xtr Xtr'``); the map gives the second term, linear in ``y`` (the
    intercept shifts every test score alike and leaves an AUC unchanged): one map
    serves the observed sources and every permutation of them. ``lam = penalty *
    n_features`` (the mean squared norm of a standardised row). Written by hand
    because scikit-learn's ``Ridge`` refits for every permuted target; the tests
    check it against it. The features are standardised in float64 and the
    system solved in float32: the map only ranks test images (AUCs), it differs
    from float64's by about 1e-7, and it is about 3 times as fast on the
    report's one BLAS thread (a 240 x 1,280 class: 2.6 against 7.6 ms; the
    audit fits it 75 times per class when it probes three fold networks).

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> rng = np.random.default_rng(0)
    >>> Xtr, Xte, y = rng.standard_normal((30, 4)), rng.standard_normal((10, 4)), rng.random(30)
    >>> H = ridge_hat(Xtr, Xte, penalty=2.0)
    >>> H.shape
    (10, 30)
    >>> Ztr, Zte = standardise(Xtr, Xte)
    >>> bool(np.allclose(H @ y + y.mean(), Ridge(alpha=2.0 * 4).fit(Ztr, y).predict(Zte)))
    True
    """
    Ztr, Zte = (z.astype(np.float32) for z in standardise(Xtr, Xte))
    n, d = Ztr.shape
    lam = np.float32(penalty * d)
    if n < d:  # kernel form: an n x n system
        return np.linalg.solve(Ztr @ Ztr.T + lam * np.eye(n, dtype=np.float32), Ztr @ Zte.T).T
    return Zte @ np.linalg.solve(Ztr.T @ Ztr + lam * np.eye(d, dtype=np.float32), Ztr.T)


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
    ranks = sps.rankdata(scores, axis=0)
    n_pos = positive.sum(axis=0)
    n_neg = positive.shape[0] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


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
    >>> hats = [(tr, te, ridge_hat(X[tr], X[te], 1.0)) for tr, te in [(~test, test), (test, ~test)]]
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
