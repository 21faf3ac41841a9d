"""Tests of biomark.analysis.rank_tests (the column-wise engine of biomark.analysis.stats) against
sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import biomark.analysis.rank_tests as rank_tests


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "n_feat", "n_boot"), [(17, 29, 5, 15), (3000, 2900, 2, 2)]
)
def test_bootstrap_auc_matches_resampled_roc_auc(
    n_pos: int, n_neg: int, n_feat: int, n_boot: int
) -> None:
    """The vectorised stratified bootstrap equals roc_auc_score on each resample
    (second case: 2 n_pos n_neg >= 2**24, the float64 path)."""
    rng = np.random.default_rng(2)
    pos = np.round(rng.normal(0.5, 1.0, size=(n_pos, n_feat)), 1)  # rounded: ties
    neg = np.round(rng.normal(0.0, 1.0, size=(n_neg, n_feat)), 1)
    seed = 4
    boot = rank_tests.bootstrap_auc(pos, neg, n_boot, seed)
    draws = np.random.default_rng(seed)
    w = rank_tests._counts(draws, pos.shape[0], n_boot)
    v = rank_tests._counts(draws, neg.shape[0], n_boot)
    for b in range(n_boot):
        xp = np.repeat(pos, w[b], axis=0)
        xn = np.repeat(neg, v[b], axis=0)
        y = np.r_[np.ones(len(xp)), np.zeros(len(xn))]
        for j in range(pos.shape[1]):
            assert boot[b, j] == pytest.approx(
                roc_auc_score(y, np.r_[xp[:, j], xn[:, j]]), abs=1e-12
            )
