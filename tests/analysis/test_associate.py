"""Deep x radiomic associations: Spearman + BH-FDR, partial correlation, CCA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from biomark.analysis.associate import (
    associate,
    cca_explained,
    covariate_design,
    drop_uninformative,
    radiomic_family,
)


def test_matches_scipy_spearman_with_ties() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    R = np.c_[rng.integers(0, 5, size=60), rng.normal(size=(60, 2))]  # ties in column 0
    res = associate(X, R)
    for i in range(4):
        for j in range(3):
            rho, p = stats.spearmanr(X[:, i], R[:, j])
            assert res.rho[i, j] == pytest.approx(rho, abs=1e-12)
            assert res.p[i, j] == pytest.approx(p, rel=1e-6)
    assert res.df == 58


def test_planted_association_found_with_right_sign() -> None:
    rng = np.random.default_rng(1)
    n = 300
    R = rng.normal(size=(n, 20))
    X = rng.normal(size=(n, 30))
    X[:, 3] = -np.exp(R[:, 7]) + 0.5 * rng.normal(size=n)  # monotone, negative
    res = associate(
        X,
        R,
        deep_names=[f"f{j:04d}" for j in range(30)],
        radiomic_names=[f"glcm_F{j}" for j in range(20)],
    )
    table = res.table()
    top = table.iloc[0]
    assert (top["deep"], top["radiomic"]) == ("f0003", "glcm_F7")
    assert top["rho"] < -0.5 and top["q"] < 0.05 and top["significant"]
    assert top["family"] == "glcm"
    assert list(table.columns) == ["deep", "radiomic", "family", "rho", "p", "q", "significant"]
    summary = res.summary()
    assert summary.iloc[0]["deep"] == "f0003" and summary.iloc[0]["best_radiomic"] == "glcm_F7"
    assert "glcm" in summary.iloc[0]["families"]


def test_fdr_controls_false_discoveries_on_null_data() -> None:
    """Over 40 seeded null data sets BH at 0.05 gives >= 1 false discovery in ~5 % of them."""
    with_discovery = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        res = associate(rng.normal(size=(80, 30)), rng.normal(size=(80, 20)), fdr_alpha=0.05)
        with_discovery += res.n_significant > 0
    assert with_discovery / 40 <= 0.15


def test_partial_correlation_removes_covariate_driven_association() -> None:
    rng = np.random.default_rng(2)
    n = 400
    source = rng.choice(["cohen", "kermany"], size=n)
    shift = (source == "cohen").astype(float) * 2.0
    age = rng.uniform(20, 80, size=n)
    X = np.c_[shift + rng.normal(size=n), rng.normal(size=(n, 3))]
    R = np.c_[shift + rng.normal(size=n), age / 20 + rng.normal(size=n), rng.normal(size=(n, 2))]
    X[:, 1] = R[:, 3] + rng.normal(size=n)  # a genuine association, not covariate-driven
    plain = associate(X, R)
    cov = pd.DataFrame({"source": source, "age": age, "view": "PA"})
    partial = associate(X, R, covariates=cov)
    assert plain.significant[0, 0] and plain.rho[0, 0] > 0.4
    assert not partial.significant[0, 0] and abs(partial.rho[0, 0]) < 0.15
    assert partial.significant[1, 3]
    assert partial.covariates == ["source_kermany", "age"]  # constant view left out
    assert partial.df == n - 2 - 2


def test_constant_and_incomplete_features_are_dropped_and_reported() -> None:
    rng = np.random.default_rng(3)
    X = np.c_[rng.normal(size=(50, 3)), np.zeros(50)]
    R = np.c_[rng.normal(size=(50, 2)), np.full(50, 4.0), rng.normal(size=50)]
    R[5, 3] = np.nan
    res = associate(
        X, R, deep_names=["a", "b", "c", "dead"], radiomic_names=["x", "y", "shape2D_Const", "nan"]
    )
    assert res.deep_names == ["a", "b", "c"] and res.radiomic_names == ["x", "y"]
    reasons = dict(zip(res.dropped["feature"], res.dropped["reason"], strict=True))
    assert reasons["dead"].startswith("constant") and reasons["shape2D_Const"].startswith(
        "constant"
    )
    assert reasons["nan"].startswith("missing in 1")
    with pytest.raises(ValueError, match="no informative feature"):
        associate(np.zeros((20, 2)), rng.normal(size=(20, 2)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"deep_X": np.zeros((10, 2)), "radiomics_R": np.zeros((9, 2))}, "same rows"),
        ({"method": "pearson"}, "spearman"),
        ({"fdr_alpha": 1.5}, "fdr_alpha"),
        ({"deep_names": ["a"]}, "one name per column"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    rng = np.random.default_rng(0)
    args = {"deep_X": rng.normal(size=(10, 2)), "radiomics_R": rng.normal(size=(10, 2))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        associate(args.pop("deep_X"), args.pop("radiomics_R"), **args)


def test_float32_features_at_scale_match_scipy() -> None:
    # the report's float32 GAP features against float64 radiomics, at a size where the vectorised
    # ranks and products are what runs (its speed: benchmarks/table_parsing.py)
    rng = np.random.default_rng(0)
    X = rng.gamma(1.5, 0.4, size=(1000, 320)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = 0.0  # ties, as ReLU units give
    R = rng.normal(size=(1000, 100))
    res = associate(X, R)
    assert res.rho.shape == (320, 100)
    for i, j in [(0, 0), (17, 99), (319, 42)]:
        rho, p = stats.spearmanr(X[:, i], R[:, j])
        assert res.rho[i, j] == pytest.approx(rho, abs=1e-6)
        assert res.p[i, j] == pytest.approx(p, rel=1e-4, abs=1e-12)


def test_family_names_and_design() -> None:
    assert radiomic_family("log-sigma-1-0-mm_ngtdm_Busyness") == "ngtdm"
    assert radiomic_family("shape2D_Perimeter") == "shape2D"
    Z, names = covariate_design(
        pd.DataFrame({"s": ["a", "b", "c", "a"], "x": [1.0, 2.0, 3.0, 4.0]})
    )
    assert names == ["s_b", "s_c", "x"] and Z.shape == (4, 3)
    kept, kept_names, dropped = drop_uninformative(np.ones((3, 1)), ["k"], "deep")
    assert kept.shape == (3, 0) and dropped["side"].tolist() == ["deep"]


def test_cca_high_for_shared_signal_low_for_independent() -> None:
    rng = np.random.default_rng(4)
    n = 300
    shared = rng.normal(size=(n, 2))
    X = shared @ rng.normal(size=(2, 80)) + rng.normal(size=(n, 80))
    R = shared @ rng.normal(size=(2, 25)) + rng.normal(size=(n, 25))
    folds = np.arange(n) % 5
    linked = cca_explained(X, R, n_components=2, folds=folds)
    assert min(linked["canonical_correlations"]) > 0.8
    assert linked["r2_deep_pcs"] > 0.2 and 0 < linked["variance_explained"] <= linked["r2_deep_pcs"]
    assert linked["n_folds"] == 5 and linked["deep_pca"] == 50
    independent = cca_explained(rng.normal(size=(n, 80)), R, n_components=2, folds=5)
    assert max(abs(c) for c in independent["canonical_correlations"]) < 0.3
    assert independent["r2_deep_pcs"] < 0.05
    with pytest.raises(ValueError, match="too few"):
        cca_explained(X[:5], R[:5])
