"""The held-out ridge AUC machinery of the shortcut audit."""

from __future__ import annotations

import numpy as np

from biomark.analysis.held_out_auc import permuted_between_groups, ridge_hat, standardise


def test_ridge_map_matches_scikit_learn() -> None:
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(3)
    for n, d in ((20, 50), (80, 10)):  # kernel and primal forms
        Xtr, Xte, y = (
            rng.normal(size=(n, d)),
            rng.normal(size=(7, d)),
            rng.integers(0, 2, n).astype(float),
        )
        a, b = standardise(Xtr, Xte)
        expected = Ridge(alpha=2.0 * d).fit(a, y).predict(b)
        # solved in float32: about 1e-7 of the float64 solution
        np.testing.assert_allclose(
            ridge_hat(Xtr, Xte, 2.0) @ y + y.mean(), expected, rtol=1e-5, atol=1e-6
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
