"""Each deep feature's strongest radiomic correlates (biomark.analysis.associate)."""

from __future__ import annotations

import pandas as pd

from biomark.analysis.associate import strongest_correlates


def _pairs() -> pd.DataFrame:
    rows = [
        ("u0002", "glcm_Contrast", "glcm", 0.30),
        ("u0002", "lower_glcm_Idm", "glcm", -0.70),
        ("u0002", "firstorder_Mean", "firstorder", 0.50),
        ("u0002", "shape_Area", "shape", -0.50),  # ties with firstorder_Mean in |rho|: listed after
        ("u0002", "firstorder_Median", "firstorder", 0.10),
        ("u0010", "glrlm_RunEntropy", "glrlm", 0.20),
        ("u0010", "shape_Area", "shape", -0.90),
        ("u0001", "glcm_Contrast", "glcm", 0.60),
        (None, "glcm_Contrast", "glcm", 0.99),  # no feature: left out
    ]
    return pd.DataFrame(rows, columns=["deep", "radiomic", "family", "rho"])


def test_top_correlates_by_absolute_rho_and_families_by_count_per_feature() -> None:
    table = strongest_correlates(_pairs(), top=3)
    assert table is not None
    assert table.index.tolist() == ["u0001", "u0002", "u0010"]  # sorted, the None row left out
    u2 = table.loc["u0002"]
    assert u2["radiomic_correlates"] == (
        "lower_glcm_Idm (-0.70); firstorder_Mean (+0.50); shape_Area (-0.50)"
    )
    # glcm and firstorder 2 each: glcm first appears first by |rho| (lower_glcm_Idm)
    assert u2["radiomic_families"] == "glcm: 2, firstorder: 2, shape: 1"
    u10 = table.loc["u0010"]
    assert u10["radiomic_correlates"] == "shape_Area (-0.90); glrlm_RunEntropy (+0.20)"
    assert u10["radiomic_families"] == "shape: 1, glrlm: 1"
    assert table.loc["u0001", "radiomic_correlates"] == "glcm_Contrast (+0.60)"


def test_the_order_of_the_pairs_does_not_change_the_answer_without_ties() -> None:
    pairs = _pairs()
    pairs = pairs[pairs["radiomic"] != "shape_Area"]  # the tied pair
    shuffled = pairs.sample(frac=1.0, random_state=0)
    assert strongest_correlates(pairs).equals(strongest_correlates(shuffled))


def test_no_pairs_no_table() -> None:
    assert strongest_correlates(None) is None
    assert strongest_correlates(_pairs().iloc[:0]) is None
