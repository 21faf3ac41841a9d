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


def _patients_with_films(seed: int = 0) -> dict[str, np.ndarray]:
    """Two classes of 40 patients, 6 films each, sources alternating between patients. Feature 0
    grades each patient's severity (its films agree closely), and in both classes the ``site_A``
    patients happen to be 0.35 (a third of a standard deviation) more severe: a chance imbalance
    between the sources' patients, not a cue of the source. Feature 1 is a tag that every
    ``site_B`` film carries."""
    rng = np.random.default_rng(seed)
    patients = np.arange(80)
    labels_p = np.repeat(["a", "b"], 40)
    sources_p = np.where(patients % 2 == 0, "site_A", "site_B")
    severity = rng.normal(size=80)
    for cell in {(c, src) for c, src in zip(labels_p, sources_p, strict=True)}:
        inside = (labels_p == cell[0]) & (sources_p == cell[1])
        severity[inside] -= severity[inside].mean()  # every cell of patients centred, then
    severity += 0.35 * (sources_p == "site_A")  # one imbalance planted
    pid = np.repeat(patients, 6)
    X = np.column_stack(
        [
            severity[pid] + rng.normal(0, 0.1, pid.size),
            (sources_p[pid] == "site_B") * 0.5 + rng.normal(0, 1.0, pid.size),
            rng.normal(size=(pid.size, 3)),
        ]
    )
    return {"X": X, "labels": labels_p[pid], "sources": sources_p[pid], "pid": pid.astype(str)}


def test_source_association_counts_patients_not_films() -> None:
    """A patient's films share its source and class: counted as independent rows, a chance
    difference in severity between the sources' patients reads as source beyond class."""
    d = _patients_with_films()
    films = feature_source_association(d["X"], d["labels"], d["sources"])
    patients = feature_source_association(d["X"], d["labels"], d["sources"], patient_ids=d["pid"])
    assert films.loc["f0000", "flag_source"]  # pseudo-replication: 480 rows for 80 patients
    assert not patients.loc["f0000", "flag_source"]
    assert patients.loc["f0001", "flag_source"]  # the tag is still found patient by patient
    assert patients.attrs["settings"]["unit"] == "patient (per-patient means)"
    assert patients.attrs["settings"]["n_rows"] == 80
    assert patients.attrs["settings"]["n_images"] == 480
    assert films.attrs["settings"]["unit"] == "image"
    # the same test as statsmodels on the per-patient means
    means = (
        pd.DataFrame({"y": d["X"][:, 0], "pid": d["pid"], "cls": d["labels"], "src": d["sources"]})
        .groupby(["pid", "cls", "src"], as_index=False)["y"]
        .mean()
    )
    full = smf.ols("y ~ C(cls) + C(src)", means).fit()
    f_value, p_value, _ = full.compare_f_test(smf.ols("y ~ C(cls)", means).fit())
    assert patients.loc["f0000", "source_F"] == pytest.approx(f_value, rel=1e-8)
    assert patients.loc["f0000", "source_p"] == pytest.approx(p_value, rel=1e-6)
    assert patients.loc["f0000", "source_df_den"] == full.df_resid == 77


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
