"""Tests of biomark.analysis.source_flags: source beyond class per feature, and the shortcut
flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.multitest import multipletests

from biomark.analysis.source_flags import feature_source_association, shortcut_flags
from biomark.exceptions import ConfigError, DataError


# --------------------------------------------------------------------------- #
# feature_source_association
# --------------------------------------------------------------------------- #
@pytest.mark.filterwarnings(
    "ignore:The design matrix is rank-deficient"
)  # the statsmodels reference, by design
def test_feature_source_association_matches_statsmodels(
    mixed_sources: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, sources = mixed_sources
    X = X.copy()
    X[:, 5] = 2.0  # constant
    df = feature_source_association(X, labels, sources)
    assert df.loc[["f0000", "f0001", "f0002"], "flag_source"].all()
    assert df.loc["f0000", "source_q"] < 1e-6
    assert df.drop(index=["f0000", "f0001", "f0002"])["flag_source"].sum() <= 1
    assert df.loc["f0005", "source_p"] == 1.0 and df.loc["f0005", "partial_eta2"] == 0.0

    frame = pd.DataFrame({"cls": labels, "src": sources})
    for j in (0, 7):
        frame["y"] = X[:, j]
        full = smf.ols("y ~ C(cls) + C(src)", frame).fit()
        reduced = smf.ols("y ~ C(cls)", frame).fit()
        f_value, p_value, df_diff = full.compare_f_test(reduced)
        row = df.iloc[j]
        assert row["source_F"] == pytest.approx(f_value, rel=1e-8)
        assert row["source_p"] == pytest.approx(p_value, rel=1e-6)
        assert row["source_df_num"] == df_diff and row["source_df_den"] == full.df_resid
        assert row["partial_eta2"] == pytest.approx(
            (reduced.ssr - full.ssr) / reduced.ssr, rel=1e-8
        )
    p = df["source_p"].to_numpy()
    np.testing.assert_allclose(df["source_q"], multipletests(p, method="fdr_bh")[1])


def test_feature_source_association_nested_design_is_recorded() -> None:
    """Each source inside one class: source beyond class is not estimable."""
    labels = np.repeat(["COVID-19", "Normal"], 10)
    sources = np.repeat(["cohen", "kermany"], 10)
    X = np.random.default_rng(0).normal(size=(20, 3))
    df = feature_source_association(X, labels, sources)
    assert df["source_p"].isna().all() and df["flag_source"].isna().all()
    assert df.attrs["skipped"] and "cannot be separated" in df.attrs["skipped"][0]["reason"]


# --------------------------------------------------------------------------- #
# shortcut_flags
# --------------------------------------------------------------------------- #
@pytest.fixture
def candidates() -> pd.DataFrame:
    return pd.DataFrame(
        {"lung_fraction": [0.9, 0.2, 0.8, np.nan], "source_q": [0.5, 0.6, 0.001, 0.2]},
        index=["f0001", "f0002", "f0003", "f0004"],
    )


def test_shortcut_flags(candidates: pd.DataFrame) -> None:
    out = shortcut_flags(candidates)
    assert out["flag_outside_lungs"].tolist() == [False, True, False, pd.NA]
    assert out["flag_source"].tolist() == [False, False, True, False]
    assert out.loc["f0001", "flags"] == ""
    assert out.loc["f0002", "flags"].startswith("outside lungs (lung fraction 0.20 < 0.5)")
    assert "source beyond class" in out.loc["f0003", "flags"]
    assert out.loc["f0004", "flags"] == "lung fraction unknown"
    assert "flag_model_reads_outside_lungs" not in out.columns
    assert "flags" not in candidates.columns  # input left alone


@pytest.mark.parametrize(("survival", "expected"), [(0.9, True), (0.1, False)])
def test_shortcut_flags_blackout(candidates: pd.DataFrame, survival: float, expected: bool) -> None:
    out = shortcut_flags(candidates, blackout_survival=survival)
    assert out["flag_model_reads_outside_lungs"].tolist() == [expected] * 4
    assert ("model reads outside lungs" in out.loc["f0001", "flags"]) is expected


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lung_fraction_col": "lung"}, DataError, r"lacks column\(s\) \['lung'\]"),
        ({"min_lung_fraction": 2.0}, ConfigError, "min_lung_fraction"),
        ({"alpha": 0.0}, ConfigError, "alpha"),
        ({"blackout_survival": float("nan")}, ConfigError, "blackout_survival"),
    ],
)
def test_shortcut_flags_rejects_bad_input(
    candidates: pd.DataFrame, kwargs: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        shortcut_flags(candidates, **kwargs)
