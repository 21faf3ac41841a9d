"""The held-out ridge AUC machinery of the shortcut audit."""

from __future__ import annotations

import numpy as np

from biomark.analysis.held_out_auc import (
    column_ranks,
    permuted_between_groups,
    ridge_hats,
    standardised,
)


def test_ridge_maps_match_scikit_learn_in_both_forms() -> None:
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(3)
    for n, d in ((30, 50), (90, 10)):  # kernel and primal forms
        X = rng.normal(size=(n, d))
        X[:, 0] = 1.5  # a constant feature is only centred
        y = rng.integers(0, 2, n).astype(float)
        held_out = np.arange(n) % 3 == 0
        splits = [(~held_out, held_out), (np.flatnonzero(held_out), np.flatnonzero(~held_out))]
        Z = standardised(X)
        assert np.allclose(Z[:, 0], 0)
        hats = ridge_hats(X, splits, 2.0)
        assert [len(h) for h in hats] == [3, 3]
        for train, test, H in hats:
            assert H.shape == (len(y[test]), len(y[train]))
            expected = Ridge(alpha=2.0 * d).fit(Z[train], y[train]).predict(Z[test])
            # solved in float32: about 1e-7 of the float64 solution
            np.testing.assert_allclose(
                H @ y[train] + y[train].mean(), expected, rtol=1e-5, atol=1e-5
            )


def test_permutations_move_sources_between_patients() -> None:
    codes = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 1])
    groups = np.array(
        ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    )  # patient e has both sources
    out = permuted_between_groups(codes, groups, 50, np.random.default_rng(0))
    assert out.shape == (10, 50)
    for p in "abcd":
        rows = groups == p
        assert (out[rows] == out[rows][0]).all()  # a patient keeps one source
    assert (
        out[groups == "e"] == codes[groups == "e"][:, None]
    ).all()  # a mixed patient is left as it is
    assert len({tuple(c) for c in out[:8].T}) > 1  # and the rest do move


def test_column_ranks_equal_scipys_with_and_without_ties() -> None:
    from scipy import stats as sps

    rng = np.random.default_rng(5)
    scores = rng.normal(size=(40, 30)).astype(np.float32)
    scores[3, 4] = scores[9, 4]  # one tie
    scores[:, 7] = np.round(scores[:, 7])  # many ties
    scores[:, 11] = 0.5  # all tied
    np.testing.assert_array_equal(column_ranks(scores), sps.rankdata(scores, axis=0))
