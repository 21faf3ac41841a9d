"""Tests of biomark.analysis.stability: top-k frequency, Kendall's W, the table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from biomark.analysis.stability import (
    fold_class_effects,
    fold_radiomic_agreement,
    kendalls_w,
    kendalls_w_test,
    stability_table,
    topk_frequency,
)

#: 3 folds x 4 features, one tie in fold 2. Descending midranks:
#:   fold 1: 1, 2,   3,   4
#:   fold 2: 1, 2.5, 2.5, 4      (one tie of t = 2: T = 2^3 - 2 = 6)
#:   fold 3: 4, 1,   2,   3
#: rank sums R = 6, 5.5, 7.5, 11; mean 7.5; S = 1.5^2 + 2^2 + 0 + 3.5^2 = 18.5
#: W (ties) = 12 S / (m^2 (n^3 - n) - m T) = 222 / (540 - 18) = 222 / 522
#: W (no tie correction) = 222 / 540
HAND = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 3.0, 1.0], [1.0, 4.0, 3.0, 2.0]])


@pytest.fixture
def planted() -> np.ndarray:
    """5 folds x 100 features: features 0-9 clearly important in every fold,
    the rest noise."""
    rng = np.random.default_rng(0)
    imp = rng.uniform(0.0, 1.0, size=(5, 100))
    imp[:, :10] += 5.0 + rng.uniform(0.0, 0.1, size=(5, 10))
    return imp


def test_kendalls_w_hand_example_with_ties() -> None:
    assert kendalls_w(HAND) == pytest.approx(222 / 522)
    assert kendalls_w(HAND, ties=False) == pytest.approx(222 / 540)
    w, p = kendalls_w_test(HAND)
    assert p == pytest.approx(sps.chi2.sf(3 * 3 * 222 / 522, 3))


@pytest.mark.parametrize("seed", [0, 1])
def test_kendalls_w_equals_friedman_statistic(seed: int) -> None:
    """Friedman's chi2 (scipy, tie-corrected) = m (n - 1) W."""
    rng = np.random.default_rng(seed)
    imp = rng.integers(0, 6, size=(6, 12)).astype(float)  # many ties
    w, p = kendalls_w_test(imp)
    ref = sps.friedmanchisquare(*imp.T)
    assert 6 * 11 * w == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)


@pytest.mark.parametrize("ties", [True, False])
def test_identical_rankings_give_w_one(ties: bool) -> None:
    row = np.random.default_rng(3).normal(size=50)
    imp = np.vstack([row, 2 * row, row + 7])  # same order in every fold
    assert kendalls_w(imp, ties=ties) == pytest.approx(1.0)
    assert kendalls_w_test(imp)[1] < 1e-10


def test_opposite_rankings_give_w_zero() -> None:
    row = np.arange(10.0)
    assert kendalls_w(np.vstack([row, -row])) == pytest.approx(0.0, abs=1e-12)


def test_independent_rankings_give_small_w() -> None:
    rng = np.random.default_rng(5)
    m = 5
    ws = [kendalls_w(rng.normal(size=(m, 200))) for _ in range(20)]
    assert np.mean(ws) == pytest.approx(1 / m, abs=0.03)  # E[W] = 1/m under independence
    assert max(ws) < 0.35


def test_planted_stable_features(planted: np.ndarray) -> None:
    freq = topk_frequency(planted, k=10)
    np.testing.assert_array_equal(freq[:10], 1.0)
    np.testing.assert_array_equal(freq[10:], 0.0)
    table = stability_table(planted, k=10)
    assert set(table["feature_index"].iloc[:10]) == set(range(10))
    assert (table["topk_freq"].iloc[:10] == 1.0).all()
    assert (table["mean_rank"].iloc[:10] <= 10).all()
    assert table.attrs["k"] == 10 and table.attrs["n_folds"] == 5
    assert table.attrs["kendalls_w"] == pytest.approx(kendalls_w(planted))
    assert table.attrs["kendalls_w_p"] < 1e-6


def test_unstable_top_features_spread_out() -> None:
    """Each fold's top feature is a different one: frequency 1/5 each."""
    imp = np.zeros((5, 8))
    imp[np.arange(5), np.arange(5)] = 1.0
    freq = topk_frequency(imp, k=1)
    np.testing.assert_allclose(freq, [0.2] * 5 + [0.0] * 3)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_frequency_sums_to_k_with_ties(k: int) -> None:
    imp = np.random.default_rng(1).integers(0, 3, size=(4, 7)).astype(float)
    assert topk_frequency(imp, k).sum() == pytest.approx(k)


def test_topk_frequency_small_example() -> None:
    np.testing.assert_allclose(topk_frequency([[3, 2, 1], [1, 2, 3]], k=1), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(topk_frequency([[3, 2, 1], [1, 2, 3]], k=2), [0.5, 1.0, 0.5])


def test_a_near_copy_in_a_folds_top_k_counts_as_the_feature() -> None:
    """Features 0 and 1 are near-copies in every fold, and the attributions rank one of them
    first, by chance which: each is then in every fold's top 1, feature 2 in none."""
    same = np.eye(4, dtype=bool)
    same[0, 1] = same[1, 0] = True
    imp = np.array([[4.0, 1.0, 2.0, 0.0], [1.0, 4.0, 2.0, 0.0], [4.0, 1.0, 2.0, 0.0]])
    np.testing.assert_allclose(topk_frequency(imp, k=1), [2 / 3, 1 / 3, 0.0, 0.0])
    np.testing.assert_allclose(topk_frequency(imp, k=1, copies=[same] * 3), [1.0, 1.0, 0.0, 0.0])


def test_near_copies_are_read_fold_by_fold() -> None:
    """A pair that is a near-copy in one fold's network only counts in that fold."""
    imp = np.array([[4.0, 1.0, 2.0], [4.0, 1.0, 2.0]])
    own = np.eye(3, dtype=bool)
    paired = own.copy()
    paired[0, 1] = paired[1, 0] = True
    np.testing.assert_allclose(topk_frequency(imp, k=1, copies=[paired, own]), [1.0, 0.5, 0.0])


def test_own_copies_only_give_the_plain_frequency() -> None:
    imp = np.random.default_rng(2).random((5, 30))
    plain = topk_frequency(imp, k=4)
    np.testing.assert_array_equal(
        topk_frequency(imp, k=4, copies=[np.eye(30, dtype=bool)] * 5), plain
    )
    same = np.eye(30, dtype=bool)
    same[3, 7] = same[7, 3] = True
    table = stability_table(imp, k=4, copies=[same] * 5)
    np.testing.assert_array_equal(table.sort_values("feature_index")["topk_freq_own"], plain)
    assert (table["topk_freq"] >= table["topk_freq_own"]).all()


@pytest.mark.parametrize(
    ("copies", "match"),
    [
        ([np.eye(3, dtype=bool)], "1 matrices for 2 folds"),
        ([np.eye(3, dtype=bool), np.eye(2, dtype=bool)], r"copies\[1\] has shape \(2, 2\)"),
    ],
)
def test_near_copies_of_the_wrong_shape_are_named(copies: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        topk_frequency(np.ones((2, 3)), k=1, copies=copies)


def test_stability_table_columns_and_names() -> None:
    imp = np.array([[1.0, 3.0, 2.0], [1.5, 2.5, 3.5]])
    table = stability_table(imp, k=1, feature_names=["a", "b", "c"])
    assert list(table.columns) == [
        "feature_index",
        "mean_importance",
        "std_importance",
        "mean_rank",
        "topk_freq",
    ]
    assert list(table.index) == ["b", "c", "a"]  # b: top once, rank 1.5; c: top once, rank 2
    assert table.loc["a", "mean_importance"] == pytest.approx(1.25)
    assert table.loc["a", "std_importance"] == pytest.approx(np.std([1.0, 1.5], ddof=1))
    assert table.loc["a", "mean_rank"] == pytest.approx(3.0)


def test_stability_table_single_fold() -> None:
    table = stability_table(np.array([[1.0, 2.0]]), k=1)
    assert table["std_importance"].isna().all()
    assert "kendalls_w" not in table.attrs


@pytest.mark.parametrize(
    ("func", "imp", "kwargs", "match"),
    [
        (topk_frequency, np.ones(4), {"k": 1}, "2-D"),
        (topk_frequency, np.ones((2, 4)), {"k": 5}, r"k must be an integer in \[1, n_features=4\]"),
        (topk_frequency, np.ones((2, 4)), {"k": 0}, "k must be"),
        (topk_frequency, np.array([[1.0, np.nan]]), {"k": 1}, "NaN"),
        (kendalls_w, np.ones((1, 4)), {}, "at least 2 folds"),
        (kendalls_w, np.ones((3, 1)), {}, "at least two features"),
        (kendalls_w, np.ones((3, 4)), {}, "undefined"),
        (stability_table, np.ones((2, 3)), {"k": 1, "feature_names": ["a"]}, "feature_names has 1"),
    ],
)
def test_bad_input_raises(func, imp: np.ndarray, kwargs: dict, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        func(imp, **kwargs)


def test_all_tied_folds_give_nan_w_in_table() -> None:
    table = stability_table(np.ones((3, 4)), k=2)
    assert np.isnan(table.attrs["kendalls_w"])


def test_fold_class_effects_count_folds_with_the_pooled_effect() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(["A", "B", "C"], 30)
    folds = np.tile(np.arange(3), 30)
    X = rng.standard_normal((90, 3))
    X[:, 0] += 1.5 * (labels == "A")  # the same effect in every fold
    X[folds == 0, 1] += 1.5 * (labels[folds == 0] == "A")  # an effect in one fold only
    effects = fold_class_effects(X, labels, folds, positive="A", feature_names=["a", "b", "c"])
    assert list(effects.columns) == [
        "delta_pooled",
        "delta_f0",
        "delta_f1",
        "delta_f2",
        "n_folds",
        "fold_effect_freq",
    ]
    assert effects.at["a", "fold_effect_freq"] == 1.0 and effects.at["a", "delta_pooled"] > 0.5
    assert effects.at["b", "fold_effect_freq"] < 0.7
    # Cliff's delta of fold 0 equals the direct pairwise definition
    pos, neg = X[(folds == 0) & (labels == "A"), 0], X[(folds == 0) & (labels != "A"), 0]
    direct = np.mean(np.sign(pos[:, None] - neg[None, :]))
    assert effects.at["a", "delta_f0"] == pytest.approx(direct)
    few = fold_class_effects(
        X[:10], labels[:10], folds[:10], positive="A"
    )  # too few per fold: not counted
    assert (few["n_folds"] == 0).all() and few["fold_effect_freq"].isna().all()


def test_fold_radiomic_agreement_finds_the_same_family_in_every_fold() -> None:
    rng = np.random.default_rng(2)
    n = 120
    folds = np.arange(n) % 3
    R = rng.standard_normal((n, 4))
    families = ["glcm", "glcm", "firstorder", "shape2D"]
    X = np.column_stack(
        [
            R[:, 0] + 0.3 * rng.standard_normal(n),  # tracks a glcm feature everywhere
            np.where(folds == 0, R[:, 2], R[:, 3]) + 0.3 * rng.standard_normal(n),
        ]
    )  # changes
    out = fold_radiomic_agreement(
        X, R, folds, families=families, feature_names=["steady", "drifting"]
    )
    assert (
        out.at["steady", "radiomic_family"] == "glcm"
        and out.at["steady", "radiomic_family_freq"] == 1.0
    )
    assert out.at["drifting", "radiomic_family_freq"] < 0.7
    with pytest.raises(ValueError, match="finite"):
        fold_radiomic_agreement(np.full((n, 1), np.nan), R, folds, families=families)
