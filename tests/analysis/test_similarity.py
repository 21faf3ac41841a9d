"""Per-fold CKA, permutation test and bootstrap (biomark.analysis.similarity)."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.cka import cka_from_grams, gram_linear, gram_rbf, linear_cka
from biomark.analysis.similarity import (
    bootstrap_cka,
    cka_matrix,
    fold_similarity,
    permutation_test_cka,
)


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return Q


def _folds(
    rng: np.random.Generator, n_folds: int = 3, n: int = 50, d: int = 12, relation: str = "rotated"
):
    Xs, Ys = [], []
    Q = _orthogonal(rng, d)
    for _ in range(n_folds):
        X = rng.standard_normal((n, d))
        if relation == "rotated":
            Y = X @ Q
        elif relation == "partial":
            Y = X @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal((n, d))
        else:
            Y = rng.standard_normal((n, d))
        Xs.append(X)
        Ys.append(Y)
    return Xs, Ys


def test_rotated_representation_cka_one_small_p():
    rng = np.random.default_rng(0)
    Xs, Ys = _folds(rng)
    result = fold_similarity(Xs, Ys, [0, 1, 2], n_permutations=99, n_bootstrap=50, random_state=1)
    np.testing.assert_allclose(result.values, 1.0, atol=1e-10)
    assert result.mean == pytest.approx(1.0, abs=1e-10)
    assert result.p_value == pytest.approx(1 / 100)
    assert result.fold_p_values is not None and (result.fold_p_values == pytest.approx(1 / 100))
    assert result.mean_ci[0] == pytest.approx(1.0, abs=1e-6)
    assert result.metric == "linear_cka_debiased"
    assert result.n_images.tolist() == [50, 50, 50]


def test_independent_p_values_not_small():
    rng = np.random.default_rng(3)
    p_values = []
    for rep in range(6):
        Xs, Ys = _folds(rng, relation="independent", n=40, d=8)
        p_values.append(
            fold_similarity(
                Xs, Ys, [0, 1, 2], n_permutations=200, n_bootstrap=0, random_state=rep
            ).p_value
        )
    assert sum(p < 0.01 for p in p_values) <= 1
    assert np.mean(p_values) > 0.2  # roughly uniform


def test_permutation_null_is_centred_for_debiased():
    rng = np.random.default_rng(5)
    Xs, Ys = _folds(rng, relation="independent", n=60, d=30)
    _, _, null, observed = permutation_test_cka(Xs, Ys, n_permutations=300, random_state=0)
    assert abs(null.mean()) < 0.01
    assert observed.shape == (3,)


def test_permutation_is_seeded():
    rng = np.random.default_rng(6)
    Xs, Ys = _folds(rng, relation="partial", n=30, d=5)
    a = permutation_test_cka(Xs, Ys, n_permutations=50, random_state=42)
    b = permutation_test_cka(Xs, Ys, n_permutations=50, random_state=42)
    np.testing.assert_array_equal(a[2], b[2])


@pytest.mark.parametrize(
    ("kernel", "debiased"), [("linear", True), ("linear", False), ("rbf", True)]
)
def test_permutation_observed_equals_estimator(kernel, debiased):
    rng = np.random.default_rng(7)
    Xs, Ys = _folds(rng, relation="partial", n=40, d=6)
    *_, observed = permutation_test_cka(Xs, Ys, n_permutations=1, kernel=kernel, debiased=debiased)
    for X, Y, obs in zip(Xs, Ys, observed, strict=True):
        K, L = (
            (gram_linear(X), gram_linear(Y)) if kernel == "linear" else (gram_rbf(X), gram_rbf(Y))
        )
        assert obs == pytest.approx(
            cka_from_grams(K, L, debiased=debiased), abs=1e-5
        )  # float32 path


def test_permutation_subsamples_large_folds():
    rng = np.random.default_rng(8)
    Xs, Ys = _folds(rng, relation="rotated", n=300, d=5)
    p, _, null, observed = permutation_test_cka(Xs, Ys, n_permutations=20, max_rows=100)
    assert p == pytest.approx(1 / 21)
    np.testing.assert_allclose(observed, 1.0, atol=1e-5)


@pytest.mark.parametrize(("kernel", "debiased"), [("linear", True), ("rbf", True)])
def test_bootstrap_ci_covers_truth(kernel, debiased):
    """Planted partial similarity; truth = the estimator on a very large sample."""
    rng = np.random.default_rng(11)
    d = 6
    A = rng.standard_normal((d, d)) * 0.5

    def sample(n):
        X = rng.standard_normal((n, d))
        return X, X @ A + rng.standard_normal((n, d))

    if kernel == "linear":
        truth = linear_cka(*sample(200_000))
    else:
        truth = float(
            np.mean(
                [
                    cka_from_grams(gram_rbf(X), gram_rbf(Y))
                    for X, Y in (sample(1500) for _ in range(3))
                ]
            )
        )
    covered = 0
    for rep in range(8):
        pairs = [sample(60) for _ in range(3)]
        result = fold_similarity(
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            [0, 1, 2],
            kernel=kernel,
            debiased=debiased,
            n_permutations=0,
            n_bootstrap=200,
            random_state=rep,
        )
        covered += result.mean_ci[0] <= truth <= result.mean_ci[1]
        assert result.p_value is None
    assert covered >= 6


def test_bootstrap_ci_covers_zero_for_independent():
    rng = np.random.default_rng(12)
    covered = 0
    for rep in range(8):
        Xs, Ys = _folds(rng, relation="independent", n=50, d=40)
        result = fold_similarity(
            Xs, Ys, [0, 1, 2], n_permutations=0, n_bootstrap=200, random_state=rep
        )
        covered += result.mean_ci[0] <= 0.0 <= result.mean_ci[1]
    assert covered >= 6


def test_bootstrap_matches_explicit_resample():
    """The count-vector formulas equal CKA of the resampled matrices (ties excluded when
    debiased)."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((25, 4))
    Y = X @ rng.standard_normal((4, 3)) + rng.standard_normal((25, 3))
    boot = bootstrap_cka([X], [Y], n_bootstrap=5, random_state=np.random.default_rng(99))[:, 0]
    replay = np.random.default_rng(99)
    W = replay.multinomial(25, np.full(25, 1 / 25), size=5)
    for b in range(5):
        idx = np.repeat(np.arange(25), W[b])
        K, L = gram_linear(X)[np.ix_(idx, idx)], gram_linear(Y)[np.ix_(idx, idx)]
        tie = idx[:, None] == idx[None, :]
        K[tie] = 0.0
        L[tie] = 0.0
        assert boot[b] == pytest.approx(cka_from_grams(K, L), abs=1e-9)


def test_fold_summary_statistics():
    rng = np.random.default_rng(14)
    Xs, Ys = _folds(rng, relation="partial", n=30, d=5, n_folds=4)
    result = fold_similarity(Xs, Ys, [1, 2, 3, 4], n_permutations=0, n_bootstrap=0)
    expected = [linear_cka(X, Y) for X, Y in zip(Xs, Ys, strict=True)]
    np.testing.assert_allclose(result.values, expected)
    assert result.std == pytest.approx(np.std(expected, ddof=1))
    assert (result.min, result.max) == (min(expected), max(expected))
    assert np.isnan(result.fold_ci).all() and result.p_value is None


def test_fold_similarity_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="one \\(X, Y\\) pair per fold"):
        fold_similarity([np.ones((5, 2))], [], [0])


def test_cka_matrix_diagonal_for_identical_blocks():
    rng = np.random.default_rng(15)
    X = rng.standard_normal((40, 6))
    blocks = {"block_1": X[:, :2], "block_2": X[:, :4], "Conv_1": X}
    matrix = cka_matrix(blocks, {k: v @ _orthogonal(rng, v.shape[1]) for k, v in blocks.items()})
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-10)
    assert matrix[0, 2] == pytest.approx(linear_cka(X[:, :2], X), abs=1e-10)
