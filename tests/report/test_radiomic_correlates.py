"""The report's radiomics inputs (biomark.report.radiomic_correlates) on a per-image table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from biomark.report.radiomic_correlates import radiomic_correlates, radiomic_values
from biomark.report.strategy_report import RadiomicsInput, StrategyReport


def test_a_text_column_of_the_radiomics_table_is_left_out_of_both() -> None:
    """A table with the mask's source as text beside its numbers (as `radiomic_columns` lists
    them): the correlates over all films and the values for the within-class readings use the
    same numeric columns."""
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"img{i:03d}" for i in range(n)]
    grade = rng.normal(size=n)
    table = pd.DataFrame(
        {
            "image_id": ids,
            "lower_glcm_Contrast": grade + 0.2 * rng.normal(size=n),
            "firstorder_Mean": rng.normal(size=n),
            "mask_source": "folder",
        }
    ).set_index(pd.Index(ids))
    meta = pd.DataFrame({"image_id": ids, "label": "A"})
    rep = StrategyReport(
        label="scratch",
        title="Training from scratch",
        classes=["A"],
        folds=[0],
        missing_folds=[],
        meta=meta,
        feature_names=["u0000"],
        n_constant=0,
        unit_basis="matched",
    )
    radiomics = RadiomicsInput(pairs=None, table=table, source="features.parquet")
    X = np.c_[grade]
    correlates = radiomic_correlates(radiomics, rep, X, ["u0000"])
    assert correlates is not None
    assert correlates.loc["u0000", "radiomic_correlates"].startswith("lower_glcm_Contrast (+")
    values = radiomic_values(radiomics, meta)
    assert values is not None
    assert list(values.names) == ["lower_glcm_Contrast", "firstorder_Mean"]
    assert list(values.families) == ["glcm", "firstorder"]
