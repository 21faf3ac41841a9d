"""Known-answer tests of linear and RBF CKA (biomark.analysis.cka)."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.cka import cka_from_grams, gram_linear, gram_rbf, linear_cka, rbf_cka


def _textbook_hsic(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H)) / (n - 1) ** 2


def _textbook_unbiased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012), eq. (5), written out with explicit n x n matrices."""
    n = K.shape[0]
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float(
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


def _textbook_cka(X: np.ndarray, Y: np.ndarray, debiased: bool) -> float:
    K, L = X @ X.T, Y @ Y.T  # uncentred on purpose: the estimators centre themselves
    hsic = _textbook_unbiased_hsic if debiased else _textbook_hsic
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return Q


@pytest.mark.parametrize("debiased", [True, False])
@pytest.mark.parametrize("method", ["features", "gram"])
def test_self_similarity_is_one(rng, debiased, method):
    X = rng.standard_normal((50, 7))
    assert linear_cka(X, X, debiased=debiased, method=method) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [True, False])
def test_invariant_to_rotation_scaling_translation(rng, debiased):
    X = rng.standard_normal((80, 12))
    Y = X[:, :6] @ rng.standard_normal((6, 9)) + 0.5 * rng.standard_normal((80, 9))
    base = linear_cka(X, Y, debiased=debiased)
    Q = _orthogonal(rng, 12)
    assert linear_cka(3.7 * X @ Q + 5.0, Y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(X, -0.2 * Y - 3.0, debiased=debiased) == pytest.approx(base, abs=1e-10)
    rbf_base = rbf_cka(X, Y, debiased=debiased)
    assert rbf_cka(3.7 * X @ Q + 5.0, Y, debiased=debiased) == pytest.approx(rbf_base, abs=1e-9)


def test_not_invariant_to_general_linear_map(rng):
    X = rng.standard_normal((200, 6))
    A = np.diag([10.0, 5.0, 1.0, 0.5, 0.1, 0.05]) @ _orthogonal(
        rng, 6
    )  # invertible, not orthogonal
    assert np.linalg.matrix_rank(A) == 6
    assert linear_cka(X, X @ A) < 0.9


@pytest.mark.parametrize("debiased", [True, False])
@pytest.mark.parametrize("shape", [(40, 5, 9), (30, 80, 50), (120, 200, 3)])
def test_feature_and_gram_forms_agree(rng, debiased, shape):
    n, d1, d2 = shape
    X = rng.standard_normal((n, d1)) + 3.0
    Y = np.tanh(X[:, : min(d1, d2)] @ rng.standard_normal((min(d1, d2), d2))) + rng.standard_normal(
        (n, d2)
    )
    features = linear_cka(X, Y, debiased=debiased, method="features")
    gram = linear_cka(X, Y, debiased=debiased, method="gram")
    assert features == pytest.approx(gram, abs=1e-10)


@pytest.mark.parametrize("debiased", [True, False])
def test_matches_textbook_formulas(rng, debiased):
    X = rng.standard_normal((60, 20)) + 1.0
    Y = X @ rng.standard_normal((20, 15)) + 2.0 * rng.standard_normal((60, 15))
    expected = _textbook_cka(X, Y, debiased)
    assert linear_cka(X, Y, debiased=debiased, method="features") == pytest.approx(
        expected, abs=1e-10
    )
    assert linear_cka(X, Y, debiased=debiased, method="gram") == pytest.approx(expected, abs=1e-10)
    K, L = gram_rbf(X, 0.8), gram_rbf(Y, 0.8)
    hsic = _textbook_unbiased_hsic if debiased else _textbook_hsic
    rbf_expected = hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))
    assert rbf_cka(X, Y, debiased=debiased) == pytest.approx(rbf_expected, abs=1e-10)


def test_unbiased_hsic_is_translation_invariant_uncentred(rng):
    """The feature-space derivation centres first; the estimator does not need it."""
    X = rng.standard_normal((30, 4))
    Y = rng.standard_normal((30, 3))
    centred = _textbook_unbiased_hsic(gram_linear(X), gram_linear(Y))
    assert _textbook_unbiased_hsic(X @ X.T, Y @ Y.T) == pytest.approx(centred, abs=1e-10)


def test_biased_estimator_inflated_debiased_not(rng):
    """Independent data, n small relative to d (1280-d GAP over a small fold)."""
    X = rng.standard_normal((100, 1280))
    Y = rng.standard_normal((100, 1280))
    assert linear_cka(X, Y, debiased=False) > 0.5
    assert abs(linear_cka(X, Y, debiased=True)) < 0.05


def test_known_partial_similarity(rng):
    """Y keeps half of X's (equal-variance) dimensions: population CKA = sqrt(1/2)."""
    X = rng.standard_normal((20000, 8))
    value = linear_cka(X, X[:, :4])
    assert value == pytest.approx(np.sqrt(0.5), abs=0.01)


def test_debiased_can_be_negative_never_nan(rng):
    values = [
        linear_cka(rng.standard_normal((10, 3)), rng.standard_normal((10, 3))) for _ in range(50)
    ]
    assert all(np.isfinite(values))
    assert min(values) < 0


def test_zero_variance_column_is_harmless(rng):
    X = rng.standard_normal((40, 5))
    X_const = np.column_stack([X, np.full(40, 7.0)])
    assert linear_cka(X_const, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X_const, X, method="gram") == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("func", [linear_cka, rbf_cka])
def test_constant_representation_raises(rng, func):
    with pytest.raises(ValueError, match="Y.*zero variance|Y.*median pairwise distance is 0"):
        func(rng.standard_normal((20, 3)), np.ones((20, 4)))


def test_degenerate_denominator_defined_as_zero():
    # rank-1 data at n = 4: the unbiased self-HSIC is not positive -> 0.0, not NaN
    X = np.array([[0.0], [0.0], [0.0], [1.0]])
    Y = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert linear_cka(X, Y, method="features") == 0.0
    assert linear_cka(X, Y, method="gram") == 0.0
    K = gram_linear(X)
    assert cka_from_grams(K, K) == 0.0


@pytest.mark.parametrize(
    ("X", "Y", "message"),
    [
        (np.zeros((10, 3)), np.zeros((9, 3)), "same number of rows"),
        (np.ones((3, 2)), np.ones((3, 2)), "at least 4 images"),
        (np.r_[np.ones((5, 2)), [[np.nan, 1.0]]], np.ones((6, 2)), "X holds 1 NaN/Inf"),
        (np.ones((6, 2)), np.r_[np.ones((5, 2)), [[np.inf, 1.0]]], "Y holds 1 NaN/Inf"),
        (np.ones(6), np.ones((6, 2)), "2-D array"),
    ],
)
def test_input_validation(X, Y, message):
    with pytest.raises(ValueError, match=message):
        linear_cka(X, Y)


def test_rbf_sigma_must_be_positive(rng):
    X = rng.standard_normal((10, 2))
    with pytest.raises(ValueError, match="sigma"):
        rbf_cka(X, X, sigma=0.0)


def test_float32_input_computed_in_float64(rng):
    X = rng.standard_normal((300, 16)).astype(np.float32)
    Y = (X @ _orthogonal(rng, 16)).astype(np.float32)
    assert linear_cka(X, Y) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(X, X.astype(np.float64)) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------ blocked products and precision
@pytest.mark.parametrize("debiased", [True, False])
def test_blocks_with_a_remainder_match_the_gram_form(rng, debiased, monkeypatch):
    """Rows are accumulated block by block; a short last block changes nothing."""
    import biomark.analysis.cka as cka

    monkeypatch.setattr(cka, "_CHUNK_ROWS", 7)
    X = rng.standard_normal((60, 9)) + 2.0
    Y = X[:, :4] @ rng.standard_normal((4, 5)) + rng.standard_normal((60, 5))
    expected = _textbook_cka(X, Y, debiased)
    assert linear_cka(X, Y, debiased=debiased, method="features") == pytest.approx(
        expected, abs=1e-10
    )
    assert linear_cka(
        X.astype(np.float32),
        Y.astype(np.float32),
        debiased=debiased,
        method="features",
        precision="float32",
    ) == pytest.approx(expected, abs=1e-6)


def test_extreme_magnitudes_do_not_overflow(rng):
    """Each representation is scaled by a power of two before the products (CKA is scale
    invariant)."""
    X = rng.standard_normal((500, 6))
    Y = X[:, :3] @ rng.standard_normal((3, 4)) + rng.standard_normal((500, 4))
    base = linear_cka(X, Y, method="features")
    assert linear_cka(X * 1e200, Y * 1e-200, method="features") == pytest.approx(base, abs=1e-12)
    big, tiny = (X * 1e25).astype(np.float32), (Y * 1e-25).astype(np.float32)
    assert linear_cka(big, tiny, method="features", precision="float32") == pytest.approx(
        base, abs=1e-6
    )


def _dense_case(case: str, n: int = 5000, d: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n, d))
    noise = rng.standard_normal((n, d))
    if case == "independent":
        return X, noise
    if case == "rotated copy":
        return X, X @ _orthogonal(rng, d)
    if case == "large offset":
        return X + 1e4, 0.3 * X[:, ::-1] + noise + 1e4
    if case == "column scales 1e-3..1e3":
        scales = np.logspace(-3, 3, d)
        return X * scales, (X[:, ::-1] + noise) * scales
    if case == "low rank":
        L = rng.standard_normal((n, 4))
        return 10 * L @ rng.standard_normal((4, d)) + 0.1 * X, L @ rng.standard_normal(
            (4, d)
        ) + noise
    if case == "ReLU, half zeros":
        return np.maximum(X, 0), np.maximum(X @ _orthogonal(rng, d) + 0.5 * noise, 0)
    assert case == "constant column"
    return np.column_stack([X[:, 1:], np.full(n, 3.0)]), X + noise


@pytest.mark.parametrize(
    "case",
    [
        "independent",
        "rotated copy",
        "large offset",
        "column scales 1e-3..1e3",
        "low rank",
        "ReLU, half zeros",
        "constant column",
    ],
)
def test_float32_products_within_1e_6_on_dense_features(case):
    """float32 products, float64 sums over blocks: |CKA - CKA_float64| < 1e-6 (two blocks of
    rows)."""
    X, Y = _dense_case(case)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    for debiased in (True, False):
        exact = linear_cka(X, Y, debiased=debiased, method="features")
        fast = linear_cka(X, Y, debiased=debiased, method="features", precision="float32")
        assert abs(fast - exact) < 1e-6, (case, debiased, exact, fast)


def test_float32_products_on_sparse_nearly_identical_features_miss_1e_6():
    """Why float32 is opt-in: sparse ReLU features (93 % zeros) compared with a permuted near-copy.

    The large entries of the d x d products are then sums of same-signed terms, whose
    float32 rounding inside BLAS does not average out: about 2e-6 was measured.
    """
    rng = np.random.default_rng(39)
    n, d = 9000, 128
    X = np.maximum(rng.standard_normal((n, d)) - 1.45, 0) * rng.exponential(size=(1, d)) ** 2
    Y = np.maximum(
        0.92 * X[:, rng.permutation(d)] + 0.08 * X.std() * rng.standard_normal((n, d)), 0
    )
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    exact = linear_cka(X, Y, method="features")
    fast = linear_cka(X, Y, method="features", precision="float32")
    assert exact > 0.99
    assert 0 < abs(fast - exact) < 1e-5


def test_unknown_precision_raises(rng):
    X = rng.standard_normal((20, 3))
    with pytest.raises(ValueError, match="precision='float16'"):
        linear_cka(X, X, precision="float16")
