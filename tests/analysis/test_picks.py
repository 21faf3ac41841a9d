"""The per-class pick (the phantom ground truth is tested with its planted fixture in
test_biomarkers.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.picks import class_picks


@pytest.mark.parametrize(
    ("r2", "feature", "how"),
    [
        (
            (0.1, 0.6, 0.9),
            "f0001",
            "candidate best explained by lung radiomics",
        ),  # f0002 is flagged: not eligible
        ((np.nan, np.nan, np.nan), "f0000", "top candidate"),  # no radiomics: the SHAP rank decides
    ],
)
def test_class_pick_is_the_eligible_feature_radiomics_explain_best(r2, feature, how) -> None:
    table = pd.DataFrame(
        {
            "strategy": "scratch",
            "class": "A",
            "feature": ["f0000", "f0001", "f0002"],
            "members": "",
            "rank": [1, 2, 3],
            "is_candidate": pd.array([True, True, False], dtype="boolean"),
            "significant": pd.array([True] * 3, dtype="boolean"),
            "stable": pd.array([True] * 3, dtype="boolean"),
            "flag_source": pd.array([False, False, True], dtype="boolean"),
            "flag_outside_lungs": pd.array([False] * 3, dtype="boolean"),
            "radiomic_r2": list(r2),
        }
    )
    X = np.arange(12, dtype=float).reshape(4, 3)
    picks = class_picks(table, X, ["a", "b", "c", "d"], feature_names=["f0000", "f0001", "f0002"])
    row = picks.table.iloc[0]
    assert row["feature"] == feature and row["chosen_as"] == how and bool(row["eligible"])
    np.testing.assert_array_equal(picks.values["A"], X[:, int(feature[-1])])
