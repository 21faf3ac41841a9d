"""Tests of biomark.analysis.stats against scipy, statsmodels and sklearn."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.regression.mixed_linear_model import MixedLM
from statsmodels.stats.multitest import multipletests

from biomark.analysis.patient_level import mixed_model_tests, patient_level_tests
from biomark.analysis.rank_tests import pooled_ranks
from biomark.analysis.stats import bh_fdr, cliffs_delta, feature_tests, holm
from biomark.exceptions import ConfigError, DataError

CLASSES = ["COVID-19", "Normal", "Pneumonia"]


def _brute_delta(x: np.ndarray, y: np.ndarray) -> float:
    diff = np.sign(np.subtract.outer(np.asarray(x, float), np.asarray(y, float)))
    return float(diff.mean())


@pytest.fixture
def three_class() -> tuple[np.ndarray, np.ndarray]:
    """150 images, 3 classes, 24 features: f0 up in COVID-19, f1 down, f2 constant,
    f3 integer-valued (many ties), the rest null."""
    rng = np.random.default_rng(7)
    labels = np.repeat(CLASSES, [40, 60, 50])
    X = rng.normal(size=(150, 24))
    covid = labels == "COVID-19"
    X[covid, 0] += 1.5
    X[covid, 1] -= 1.0
    X[:, 2] = 3.0
    X[:, 3] = rng.integers(0, 4, size=150)
    return X, labels


# --------------------------------------------------------------------------- #
# cliffs_delta, bh_fdr
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sizes", [(1, 1), (5, 9), (40, 23)])
def test_cliffs_delta_matches_brute_force(seed: int, sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=sizes[0]).astype(float)  # ties on purpose
    y = rng.integers(0, 5, size=sizes[1]).astype(float)
    assert cliffs_delta(x, y) == pytest.approx(_brute_delta(x, y), abs=1e-12)
    xc, yc = rng.normal(size=sizes[0]), rng.normal(size=sizes[1])
    assert cliffs_delta(xc, yc) == pytest.approx(_brute_delta(xc, yc), abs=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([3, 4, 5], [1, 2], 1.0),
        ([1, 2], [3, 4, 5], -1.0),
        ([1, 2, 3], [1, 2, 3], 0.0),
        ([2, 2, 2], [2, 2], 0.0),
        ([1, 3], [2], 0.0),
        ([2, 3], [1, 2], 0.75),  # pairs: (2>1, 2=2, 3>1, 3>2) -> (3 - 0) / 4
    ],
)
def test_cliffs_delta_known_cases(x: list[float], y: list[float], expected: float) -> None:
    assert cliffs_delta(np.array(x), np.array(y)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [([], [1.0], "non-empty"), ([1.0, np.nan], [1.0], "NaN"), ([[1.0]], [1.0], "1-D")],
)
def test_cliffs_delta_rejects_bad_input(x: list, y: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cliffs_delta(np.array(x), np.array(y))


def test_bh_fdr_matches_statsmodels_and_skips_nan() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(size=50) ** 3
    reject, q = bh_fdr(p, alpha=0.1)
    ref_reject, ref_q, _, _ = multipletests(p, alpha=0.1, method="fdr_bh")
    np.testing.assert_allclose(q, ref_q)
    np.testing.assert_array_equal(reject, ref_reject)

    p_nan = np.array([0.01, np.nan, 0.04, 0.03])
    reject, q = bh_fdr(p_nan)
    _, ref_q, _, _ = multipletests([0.01, 0.04, 0.03], method="fdr_bh")  # m = 3, not 4
    np.testing.assert_allclose(q[[0, 2, 3]], ref_q)
    assert np.isnan(q[1]) and not reject[1]


@pytest.mark.parametrize(
    ("p", "alpha", "match"),
    [([0.5, 1.2], 0.05, r"outside \[0, 1\]"), ([0.5], 1.5, "alpha"), ([[0.5]], 0.05, "1-D")],
)
def test_bh_fdr_rejects_bad_input(p: list, alpha: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bh_fdr(np.array(p), alpha=alpha)


# --------------------------------------------------------------------------- #
# feature_tests
# --------------------------------------------------------------------------- #
def test_feature_tests_match_scipy_sklearn_statsmodels(
    three_class: tuple[np.ndarray, np.ndarray],
) -> None:
    X, labels = three_class
    df = feature_tests(X, labels, n_bootstrap=50)
    pos = labels == "COVID-19"
    live = [j for j in range(X.shape[1]) if j != 2]
    for j in live:
        kw = sps.kruskal(*[X[labels == c, j] for c in CLASSES])
        mw = sps.mannwhitneyu(X[pos, j], X[~pos, j], alternative="two-sided")
        row = df.iloc[j]
        assert row["kruskal_H"] == pytest.approx(kw.statistic, rel=1e-10)
        assert row["kruskal_p"] == pytest.approx(kw.pvalue, rel=1e-8, abs=1e-300)
        assert row["mw_U"] == pytest.approx(mw.statistic)
        assert row["mw_p"] == pytest.approx(mw.pvalue, rel=1e-8, abs=1e-300)
        assert row["auc"] == pytest.approx(roc_auc_score(pos, X[:, j]), abs=1e-12)
        assert row["cliffs_delta"] == pytest.approx(_brute_delta(X[pos, j], X[~pos, j]), abs=1e-12)
    np.testing.assert_allclose(df["mw_q"], multipletests(df["mw_p"], method="fdr_bh")[1])
    np.testing.assert_allclose(df["kruskal_q"], multipletests(df["kruskal_p"], method="fdr_bh")[1])
    assert list(df.index[:3]) == ["f0000", "f0001", "f0002"]
    assert df.attrs["skipped"] == []
    assert df.attrs["settings"]["class_counts"] == {"COVID-19": 40, "Pneumonia": 50, "Normal": 60}


def test_planted_features_found_with_correct_sign(
    three_class: tuple[np.ndarray, np.ndarray],
) -> None:
    X, labels = three_class
    df = feature_tests(X, labels, n_bootstrap=100)
    assert df.loc["f0000", "mw_q"] < 1e-6 and df.loc["f0000", "significant"]
    assert df.loc["f0000", "cliffs_delta"] > 0.5 and df.loc["f0000", "auc"] > 0.75
    assert df.loc["f0001", "mw_q"] < 1e-3
    assert df.loc["f0001", "cliffs_delta"] < 0 and df.loc["f0001", "auc"] < 0.5
    null = df.drop(index=["f0000", "f0001"])
    assert null["significant"].mean() <= 0.1


def test_constant_feature_has_no_evidence(three_class: tuple[np.ndarray, np.ndarray]) -> None:
    X, labels = three_class
    row = feature_tests(X, labels, n_bootstrap=30).loc["f0002"]
    assert bool(row["constant"])
    assert (row["kruskal_p"], row["mw_p"], row["kruskal_H"]) == (1.0, 1.0, 0.0)
    assert (row["auc"], row["cliffs_delta"], row["auc_ci_low"], row["auc_ci_high"]) == (
        0.5,
        0.0,
        0.5,
        0.5,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holm_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.r_[rng.uniform(0, 0.05, 4), rng.uniform(0, 1, 6), 0.01, 0.01, 1.0]  # ties and a 1
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
    with_nan = np.r_[np.nan, p]
    adjusted = holm(with_nan)
    assert np.isnan(adjusted[0])
    np.testing.assert_allclose(adjusted[1:], multipletests(p, method="holm")[1], atol=1e-15)
    for alpha in (0.01, 0.05, 0.2):  # rejection as statsmodels decides it (blackout's kept classes)
        np.testing.assert_array_equal(
            holm(p) <= alpha, multipletests(p, alpha=alpha, method="holm")[0]
        )
    assert holm(np.array([])).size == 0
    with pytest.raises(ValueError, match="outside"):
        holm(np.array([0.2, 1.5]))


def test_ranks_shared_between_classes_give_scipys_tests(
    three_class: tuple[np.ndarray, np.ndarray],
) -> None:
    """One ranking for every class-vs-rest test: the same U and p as scipy per class, ties and
    constants included."""
    X, labels = three_class
    ranks = pooled_ranks(X)
    for j in range(X.shape[1]):
        _, counts = np.unique(X[:, j], return_counts=True)
        assert ranks.tie_term[j] == np.sum(counts.astype(float) ** 3 - counts)
    for positive in CLASSES:
        own = feature_tests(X, labels, positive=positive, n_bootstrap=0)
        shared = feature_tests(X, labels, positive=positive, n_bootstrap=0, ranks=ranks)
        pd.testing.assert_frame_equal(shared, own, check_exact=True)
        pos = labels == positive
        mw = sps.mannwhitneyu(X[pos, 3], X[~pos, 3], alternative="two-sided")  # many ties
        assert shared.at["f0003", "mw_p"] == pytest.approx(mw.pvalue, rel=1e-12)
    assert shared.at["f0002", "mw_p"] == 1.0  # constant
    with pytest.raises(DataError, match="ranks of shape"):
        feature_tests(X[:, :5], labels, ranks=ranks)


def test_small_groups_choose_mw_method_per_feature_like_scipy() -> None:
    """With 5 positives scipy's "auto" picks exact for tie-free columns only."""
    rng = np.random.default_rng(11)
    labels = np.array(["COVID-19"] * 5 + ["Normal"] * 7)
    X = rng.normal(size=(12, 6))
    X[:, 1] = np.round(X[:, 1])  # ties -> asymptotic
    df = feature_tests(X, labels, n_bootstrap=0)
    pos = labels == "COVID-19"
    for j in range(6):
        ref = sps.mannwhitneyu(X[pos, j], X[~pos, j], alternative="two-sided")
        assert df["mw_p"].iloc[j] == pytest.approx(ref.pvalue, rel=1e-10)


def test_bootstrap_ci_contains_estimate_and_is_deterministic(
    three_class: tuple[np.ndarray, np.ndarray],
) -> None:
    X, labels = three_class
    a = feature_tests(X, labels, n_bootstrap=200, seed=5)
    b = feature_tests(X, labels, n_bootstrap=200, seed=5)
    c = feature_tests(X, labels, n_bootstrap=200, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["auc_ci_low"], c["auc_ci_low"])
    assert (a["auc_ci_low"] <= a["auc"]).all() and (a["auc"] <= a["auc_ci_high"]).all()
    assert a.loc["f0000", "auc_ci_low"] > 0.6  # the planted feature's interval excludes chance


@pytest.mark.parametrize(
    ("counts", "test", "cls"),
    [
        ({"COVID-19": 20, "Normal": 20, "Edema": 2}, "kruskal", "Edema"),
        ({"COVID-19": 2, "Normal": 20, "Pneumonia": 20}, "mannwhitney", "COVID-19"),
    ],
)
def test_too_small_class_is_skipped_with_reason(
    counts: dict[str, int], test: str, cls: str
) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(list(counts), list(counts.values()))
    X = rng.normal(size=(len(labels), 4))
    df = feature_tests(X, labels, n_bootstrap=20, per_class=True)
    records = [s for s in df.attrs["skipped"] if s["test"] == test]
    assert records and records[0]["class"] == cls and records[0]["n"] == 2
    assert "min_group_size=3" in records[0]["reason"]
    assert any(s["test"] == f"mannwhitney_{cls}" for s in df.attrs["skipped"])
    assert df[f"auc_{cls}"].isna().all()
    if test == "kruskal":  # the test still runs on the remaining classes
        ref = sps.kruskal(X[labels == "COVID-19", 0], X[labels == "Normal", 0])
        assert df["kruskal_p"].iloc[0] == pytest.approx(ref.pvalue)
        assert df["auc"].notna().all()
    else:
        assert df[["mw_p", "mw_q", "auc", "auc_ci_low", "cliffs_delta"]].isna().all().all()
        assert df["significant"].isna().all()  # unknown, not "not significant"


def test_per_class_columns_match_one_vs_rest(three_class: tuple[np.ndarray, np.ndarray]) -> None:
    X, labels = three_class
    df = feature_tests(X, labels, n_bootstrap=0, per_class=True)
    assert any(s["test"] == "auc_bootstrap" for s in df.attrs["skipped"])
    for cls in CLASSES:
        mask = labels == cls
        assert df[f"auc_{cls}"].iloc[4] == pytest.approx(roc_auc_score(mask, X[:, 4]))
        assert df[f"delta_{cls}"].iloc[4] == pytest.approx(2 * roc_auc_score(mask, X[:, 4]) - 1)
        p = [
            sps.mannwhitneyu(X[mask, j], X[~mask, j]).pvalue if j != 2 else 1.0
            for j in range(X.shape[1])
        ]
        np.testing.assert_allclose(
            df[f"mw_q_{cls}"], multipletests(p, method="fdr_bh")[1], rtol=1e-8
        )
    np.testing.assert_allclose(df["auc_COVID-19"], df["auc"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"positive": "SARS"}, ConfigError, "positive='SARS' is not among the labels"),
        ({"alpha": 0.0}, ConfigError, "alpha"),
        ({"n_bootstrap": -1}, ConfigError, "n_bootstrap"),
        ({"min_group_size": 0}, ConfigError, "min_group_size"),
        ({"feature_names": ["a"]}, DataError, "feature_names has 1 entries"),
    ],
)
def test_feature_tests_rejects_bad_settings(
    three_class: tuple[np.ndarray, np.ndarray], kwargs: dict, error: type, match: str
) -> None:
    X, labels = three_class
    with pytest.raises(error, match=match):
        feature_tests(X, labels, **kwargs)


@pytest.mark.parametrize(
    ("X", "labels", "match"),
    [
        (np.ones(5), ["a"] * 5, "2-D"),
        (np.array([[1.0], [np.nan]]), ["COVID-19", "Normal"], "NaN or infinite"),
        (np.ones((3, 2)), ["COVID-19", "Normal"], "one entry per row"),
        (np.ones((2, 2)), ["COVID-19", ""], "empty"),
        (np.ones((2, 2)), ["COVID-19", "COVID-19"], "single class"),
    ],
)
def test_feature_tests_rejects_bad_data(X: np.ndarray, labels: list[str], match: str) -> None:
    with pytest.raises(DataError, match=match):
        feature_tests(X, labels)


# --------------------------------------------------------------------------- #
# patient level
# --------------------------------------------------------------------------- #
@pytest.fixture
def replicated() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10 COVID-19 and 10 Normal patients, 30 near-identical images each.

    Patient means overlap heavily (COVID-19: 2..11, Normal: 0..9), so a
    patient-level test finds little; counting 600 images as independent turns
    the same data into a 'highly significant' difference."""
    rng = np.random.default_rng(1)
    patient_values = np.r_[np.arange(10) + 2.0, np.arange(10.0)]
    patient_labels = np.array(["COVID-19"] * 10 + ["Normal"] * 10)
    pid = np.repeat([f"p{i:02d}" for i in range(20)], 30)
    labels = np.repeat(patient_labels, 30)
    base = np.repeat(patient_values, 30) + rng.normal(scale=0.01, size=600)
    X = np.column_stack([base, rng.normal(size=600), np.full(600, 1.0)])
    return X, labels, pid


def test_patient_level_removes_pseudo_replication(
    replicated: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, pid = replicated
    image_level = feature_tests(X, labels, n_bootstrap=0)
    patient = patient_level_tests(X, labels, pid, features=[0, 1, 2])
    assert image_level["mw_p"].iloc[0] < 1e-10
    assert patient.loc["f0000", "mw_p"] > 0.05
    assert list(patient["n_patients"]) == [20] * 3 and list(patient["n_images"]) == [600] * 3
    assert patient.loc["f0002", "mw_p"] == 1.0 and bool(patient.loc["f0002", "constant"])

    means = pd.DataFrame(X).groupby(pid).mean().to_numpy()
    plab = pd.Series(labels).groupby(pid).first().to_numpy()
    for j in (0, 1):
        pos = plab == "COVID-19"
        ref = sps.mannwhitneyu(means[pos, j], means[~pos, j])
        assert patient["mw_p"].iloc[j] == pytest.approx(ref.pvalue)
        assert patient["kruskal_p"].iloc[j] == pytest.approx(
            sps.kruskal(means[pos, j], means[~pos, j]).pvalue
        )
        assert patient["auc"].iloc[j] == pytest.approx(roc_auc_score(pos, means[:, j]))


def test_patient_with_two_classes_is_an_error(
    replicated: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, pid = replicated
    labels = labels.copy()
    labels[0] = "Normal"  # p00 now has images of two classes
    with pytest.raises(DataError, match=r"1 patient\(s\) have images with different labels.*p00"):
        patient_level_tests(X, labels, pid, features=[0])


@pytest.mark.parametrize(
    ("features", "match"),
    [
        ([], "non-empty"),
        ([0, 9], r"lie in \[0, 2\]"),
        ([0, 0], "duplicate"),
        ([0.5], "column indices"),
    ],
)
def test_patient_level_rejects_bad_features(
    replicated: tuple[np.ndarray, np.ndarray, np.ndarray], features: list, match: str
) -> None:
    X, labels, pid = replicated
    with pytest.raises(ConfigError, match=match):
        patient_level_tests(X, labels, pid, features=features)


# --------------------------------------------------------------------------- #
# mixed model
# --------------------------------------------------------------------------- #
def test_mixed_model_recovers_planted_effect() -> None:
    rng = np.random.default_rng(4)
    n_patients, per = 60, 4
    is_pos = np.repeat(np.arange(n_patients) < 25, per)
    pid = np.repeat([f"p{i}" for i in range(n_patients)], per)
    intercepts = np.repeat(rng.normal(scale=1.0, size=n_patients), per)
    noise = rng.normal(scale=0.5, size=n_patients * per)
    X = np.column_stack(
        [
            10.0 + 2.0 * is_pos + intercepts + noise,  # planted effect 2.0
            intercepts + noise,  # patient structure, no effect
            np.zeros(n_patients * per),  # constant
        ]
    )
    labels = np.where(is_pos, "COVID-19", "Normal")
    df = mixed_model_tests(X, labels, pid, features=[0, 1, 2])

    row = df.loc["f0000"]
    assert row["status"] in {"ok", "ok, with warnings"} and bool(row["converged"])
    assert abs(row["coef"] - 2.0) < 3 * row["se"]
    assert row["ci_low"] < 2.0 < row["ci_high"]
    assert row["p"] < 1e-6 and row["group_var"] > 0.3
    assert df.loc["f0001", "p"] > 0.01
    assert df.loc["f0002", "status"] == "constant" and df.loc["f0002", "p"] == 1.0

    # same estimate as statsmodels fitted directly on the unstandardised feature
    exog = np.column_stack([np.ones(len(is_pos)), is_pos.astype(float)])
    ref = MixedLM(X[:, 0], exog, groups=pid).fit(reml=True)
    assert row["coef"] == pytest.approx(ref.fe_params[1], rel=1e-3)
    assert row["se"] == pytest.approx(ref.bse_fe[1], rel=1e-2)


def test_mixed_model_reports_boundary_warning_in_column() -> None:
    """One image per patient: patient and residual variance are not
    identifiable; statsmodels' warning is recorded, not printed or raised."""
    rng = np.random.default_rng(0)
    labels = np.repeat(["COVID-19", "Normal"], 30)
    X = rng.normal(size=(60, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may escape
        df = mixed_model_tests(X, labels, np.arange(60), features=[0])
    message = df["message"].iloc[0]
    assert "Hessian" in message or "boundary" in message
    assert df["status"].iloc[0] in {"ok, with warnings", "not converged"}
    assert np.isfinite(df["p"].iloc[0])


def test_kruskal_columns_of_another_positive_class_are_reused_exactly() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat(["A", "B", "C"], 20)
    X = rng.normal(size=(60, 5)) + (labels == "B")[:, None] * np.array([1.0, 0, 0, 0, 0.5])
    first = feature_tests(X, labels, positive="A", n_bootstrap=0)
    reused = feature_tests(
        X,
        labels,
        positive="B",
        n_bootstrap=0,
        kruskal=first[["kruskal_H", "kruskal_p", "kruskal_q"]],
    )
    fresh = feature_tests(X, labels, positive="B", n_bootstrap=0)
    pd.testing.assert_frame_equal(reused, fresh, check_like=False)
    with pytest.raises(DataError, match="kruskal: 4 rows for 5 features"):
        feature_tests(X, labels, positive="B", n_bootstrap=0, kruskal=first.iloc[:4])
