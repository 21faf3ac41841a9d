"""SHAP of the numpy head: exactness, additivity, and agreement with shap's own explainers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from biomark.analysis.attribution import explain_head, stratified_subset
from biomark.analysis.head import Head
from biomark.exceptions import ConfigError, DataError


def brute_force_shapley(head: Head, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Exact Shapley values of v(S) = mean_b logits(x_S, b_notS), by enumerating every coalition."""
    d = x.size
    phi = np.zeros((d, head.n_classes))

    def v(S: tuple[int, ...]) -> np.ndarray:
        Z = background.copy()
        Z[:, list(S)] = x[list(S)]
        return head.logits(Z).mean(axis=0)

    for j in range(d):
        others = [k for k in range(d) if k != j]
        for r in range(d):
            w = math.factorial(r) * math.factorial(d - r - 1) / math.factorial(d)
            for S in itertools.combinations(others, r):
                phi[j] += w * (v(S + (j,)) - v(S))
    return phi


@pytest.fixture(scope="module")
def tiny() -> tuple[Head, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    head = Head.random(6, 10, 3, rng=rng)
    X = rng.random((4, 6))
    B = rng.random((5, 6))
    truth = np.stack([brute_force_shapley(head, x, B) for x in X])
    return head, X, B, truth


def test_exact_matches_brute_force(tiny) -> None:
    head, X, B, truth = tiny
    att = explain_head(head, X, B, method="exact")
    assert att.method == "exact"
    np.testing.assert_allclose(att.values, truth, atol=1e-10)
    assert att.additivity_summary()["max_abs_error"] < 1e-10


def test_permutation_walk_converges_to_brute_force(tiny) -> None:
    head, X, B, truth = tiny
    att = explain_head(head, X, B, method="permutation", n_permutations=400, seed=3)
    assert np.abs(att.values - truth).max() < 0.02 * np.abs(truth).max()
    assert att.additivity_summary()["max_abs_error"] < 1e-12


@pytest.mark.parametrize("output", ["logit", "prob"])
def test_additivity_on_a_wide_head(output: str) -> None:
    rng = np.random.default_rng(1)
    head = Head.random(64, 40, 5, rng=rng)
    X = np.maximum(rng.standard_normal((12, 64)), 0)
    X[:, :10] = 0.0  # dead units
    att = explain_head(head, X, X[:6], output=output, n_permutations=1, seed=0)
    err = att.additivity_error
    assert err.shape == (12, 5) and np.abs(err).max() < 1e-10
    np.testing.assert_array_equal(att.values[:, :10], 0.0)  # constant features get exactly 0
    assert att.mean_abs().shape == (64, 5)


def test_permutation_agrees_with_shap_permutation_explainer() -> None:
    rng = np.random.default_rng(2)
    head = Head.random(20, 16, 3, rng=rng)
    X = rng.random((6, 20)) * np.linspace(0.1, 3, 20)
    B = rng.random((8, 20)) * np.linspace(0.1, 3, 20)
    ours = explain_head(head, X, B, method="permutation", n_permutations=60, seed=1)
    ref = explain_head(head, X, B, method="shap-permutation", n_permutations=60, seed=1)
    assert ref.additivity_summary()["max_abs_error"] < 1e-8
    a, b = ours.mean_abs().ravel(), ref.mean_abs().ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.97
    assert np.abs(ours.values - ref.values).max() < 0.15 * np.abs(ref.values).max()


def test_auto_picks_exact_for_few_features(tiny) -> None:
    head, X, B, _ = tiny
    assert explain_head(head, X, B).method == "exact"
    wide = Head.random(30, 4, 2)
    assert explain_head(wide, np.ones((1, 30)), np.zeros((2, 30))).method == "permutation"


def test_errors() -> None:
    head = Head.random(30, 4, 2)
    with pytest.raises(ConfigError, match="2\\^d"):
        explain_head(head, np.ones((1, 30)), np.zeros((2, 30)), method="exact")
    with pytest.raises(ConfigError, match="method"):
        explain_head(head, np.ones((1, 30)), np.zeros((2, 30)), method="deep")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_permutations"):
        explain_head(head, np.ones((1, 30)), np.zeros((2, 30)), n_permutations=0)
    with pytest.raises(DataError, match="background"):
        explain_head(head, np.ones((1, 30)), np.zeros((2, 29)))
    with pytest.raises(DataError, match="NaN"):
        explain_head(head, np.full((1, 30), np.nan), np.zeros((2, 30)))


def test_stratified_subset_covers_every_class_and_is_seeded() -> None:
    labels = ["a"] * 50 + ["b"] * 5 + ["c"] * 2
    rows = stratified_subset(labels, 12, seed=0)
    assert rows.size == 12 and np.unique(rows).size == 12
    picked = {labels[i] for i in rows}
    assert picked == {"a", "b", "c"}
    np.testing.assert_array_equal(rows, stratified_subset(labels, 12, seed=0))
    assert stratified_subset(labels, 100).size == len(labels)


def test_float32_walk_agrees_with_float64() -> None:
    """The report's float32 walk: same permutations, values within 1e-5 of their scale, additive to
    1e-5."""
    rng = np.random.default_rng(4)
    head = Head.random(300, 200, 7, rng=rng)
    X = np.maximum(rng.standard_normal((10, 300)), 0)
    B = np.maximum(rng.standard_normal((6, 300)), 0)
    for output in ("logit", "prob"):
        ref = explain_head(head, X, B, output=output, n_permutations=1, seed=5)
        fast = explain_head(
            head, X, B, output=output, n_permutations=1, seed=5, precision="float32"
        )
        scale = np.abs(ref.values).max()
        assert np.abs(fast.values - ref.values).max() < 1e-5 * scale
        assert fast.additivity_summary()["max_abs_error"] < 1e-5 * np.abs(ref.outputs).max()
    with pytest.raises(ConfigError, match="precision='float16'"):
        explain_head(head, X, B, precision="float16")  # type: ignore[arg-type]


def _riemann_expected_gradients(
    head: Head, X: np.ndarray, B: np.ndarray, steps: int = 4000
) -> np.ndarray:
    """Integrated Gradients by a midpoint sum of the analytic gradient, averaged over the
    background."""
    t = (np.arange(steps) + 0.5) / steps
    out = np.zeros((X.shape[0], X.shape[1], head.n_classes))
    for i, x in enumerate(X):
        for b in B:
            path = b[None, :] + t[:, None] * (x - b)[None, :]
            for c in range(head.n_classes):
                out[i, :, c] += (x - b) * head.gradient(path, c).mean(axis=0)
    return out / B.shape[0]


def test_expected_gradients_is_the_path_integral() -> None:
    rng = np.random.default_rng(7)
    head = Head.random(12, 30, 3, rng=rng)
    X = np.maximum(rng.standard_normal((3, 12)), 0)
    B = np.maximum(rng.standard_normal((4, 12)), 0)
    att = explain_head(head, X, B, method="expected-gradients", chunk=2)
    assert att.method == "expected-gradients" and att.n_permutations == 0
    np.testing.assert_allclose(
        att.values, _riemann_expected_gradients(head, X, B), atol=2e-3 * np.abs(att.values).max()
    )
    assert att.additivity_summary()["max_abs_error"] < 1e-12


def test_expected_gradients_equals_shapley_where_the_head_is_linear_on_the_paths(tiny) -> None:
    """No hidden unit changes sign between background and image: both games give the same values."""
    head, X, B, _ = tiny
    lifted = Head(head.w1, head.b1 + 50.0, head.w2, head.b2)  # every hidden unit active everywhere
    truth = np.stack([brute_force_shapley(lifted, x, B) for x in X])
    att = explain_head(lifted, X, B, method="expected-gradients")
    np.testing.assert_allclose(att.values, truth, atol=1e-9)


def test_expected_gradients_float32_on_a_wide_head_and_its_limits() -> None:
    rng = np.random.default_rng(8)
    head = Head.random(300, 200, 7, rng=rng)
    X = np.maximum(rng.standard_normal((10, 300)), 0)
    X[:, :20] = 0.0  # dead units get exactly 0
    ref = explain_head(head, X, X[:6], method="expected-gradients")
    fast = explain_head(head, X, X[:6], method="expected-gradients", precision="float32")
    np.testing.assert_array_equal(ref.values[:, :20], 0.0)
    assert np.abs(fast.values - ref.values).max() < 1e-5 * np.abs(ref.values).max()
    assert ref.additivity_summary()["max_abs_error"] < 1e-10
    assert fast.additivity_summary()["max_abs_error"] < 1e-5 * np.abs(ref.outputs).max()
    # the walk estimates a different (discrete) game, but ranks the features alike on this head
    walk = explain_head(head, X, X[:6], method="permutation", n_permutations=20, seed=0)
    a, b = ref.mean_abs().ravel(), walk.mean_abs().ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.95
    with pytest.raises(ConfigError, match="logits only"):
        explain_head(head, X, X[:6], method="expected-gradients", output="prob")
