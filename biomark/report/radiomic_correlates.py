"""The radiomic side of the report's per-feature statistics.

:func:`radiomic_correlates` names each deep feature's strongest radiomic
correlates over all films (computed here on the matched features from the
dataset's radiomics table, or taken from ``biomark radiomics``' pairs where
features are not matched families); :func:`radiomic_values` puts the radiomics
table in the report's image order for what is measured within each class (the
radiomic R² and correlates, :mod:`biomark.analysis.evidence`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from biomark.analysis.associate import associate, radiomic_family, strongest_correlates
from biomark.analysis.evidence import RadiomicValues
from biomark.report.strategy_report import RadiomicsInput, StrategyReport

__all__ = ["radiomic_columns", "radiomic_correlates", "radiomic_values"]

logger = logging.getLogger(__name__)


def radiomic_correlates(
    radiomics: RadiomicsInput | None, rep: StrategyReport, X: np.ndarray, names: list[str]
) -> pd.DataFrame | None:
    """Per tested feature, its strongest radiomic correlates (same names as ``names``)."""
    if radiomics is None:
        return None
    if radiomics.pairs is not None and rep.unit_basis != "matched":
        return strongest_correlates(radiomics.pairs)
    if radiomics.table is not None and names:
        rad = radiomics.table
        ids = rep.meta["image_id"].astype(str).to_numpy()
        common = np.isin(ids, rad.index)
        if common.sum() >= 10:
            rad_names = radiomic_columns(rad)
            R = rad.loc[ids[common], rad_names].to_numpy(dtype=float)
            finite = np.isfinite(R).all(axis=0)
            try:
                res = associate(
                    X[common],
                    R[:, finite],
                    deep_names=names,
                    radiomic_names=[n for n, ok in zip(rad_names, finite, strict=True) if ok],
                )
                return strongest_correlates(res.table(only_significant=True))
            except ValueError as err:
                logger.warning("%s: radiomic association skipped (%s)", rep.label, err)
                return None
    if radiomics.pairs is not None:
        rep.notes.append(
            f"{rep.label}: {radiomics.source} relates deep features by index across folds, which "
            "does not apply to matched unit families; radiomic correlates need the dataset's "
            "radiomics table (`biomark radiomics --data DIR`)."
        )
    return None


def radiomic_columns(table: pd.DataFrame) -> list[str]:
    """The radiomic feature columns of a per-image radiomics table (numeric, ids left out).

    Examples
    --------
    >>> table = pd.DataFrame(
    ...     {
    ...         "image_id": ["a"],
    ...         "image_sha256": ["9f2c"],
    ...         "firstorder_Mean": [1.0],
    ...         "glcm_Contrast": [2],
    ...         "mask_source": ["otsu"],
    ...     }
    ... )
    >>> radiomic_columns(table)
    ['firstorder_Mean', 'glcm_Contrast']
    """
    return [
        c
        for c in table.columns
        if c not in ("image_id", "image_sha256") and pd.api.types.is_numeric_dtype(table[c])
    ]


def radiomic_values(radiomics: RadiomicsInput | None, meta: pd.DataFrame) -> RadiomicValues | None:
    """The dataset's radiomic features in the rows of ``meta`` (NaN rows where missing), with
    their names and families."""
    if radiomics is None or radiomics.table is None:
        return None
    table = radiomics.table
    names = radiomic_columns(table)
    R = table.reindex(meta["image_id"].astype(str).to_numpy())[names].to_numpy(dtype=np.float64)
    present = np.isfinite(R).any(axis=1)  # images with radiomics
    finite = np.isfinite(R[present]).all(axis=0)  # columns complete on those images
    if not present.any() or not finite.any():
        return None
    kept = [n for n, ok in zip(names, finite, strict=True) if ok]
    return RadiomicValues(R[:, finite], [radiomic_family(n) for n in kept], kept)
