"""Where do the images carry their source? The shortcut audit at the data level.

The model-level audit (:func:`biomark.analysis.audit.source_predictability`
on a strategy's deep features) asks whether a *trained model* carries the
image source within a class. A model may leave alone a shortcut that is in the
images, so that audit cannot say whether a shortcut is *available*. This module
asks the images themselves, through the radiomic features of two regions that
``biomark radiomics`` already computes:

* ``lungs``: the whole-lung radiomics (the region a biomarker should live in);
* ``outside the lungs``: the same features of the image minus the lung mask
  (the ``outside`` negative control), where burned-in markers, text, collimation
  and positioning differences live (DeGrave et al. 2021).

Each region gets the same test as the model-level audit: within each class
with two or more sources, a cross-validated ridge classifier (grouped by
patient) predicts the source, read against a permutation null that shuffles
sources between patients within the class, Holm-adjusted over the classes and
a pooled test (one family per region). The verdict names where the source is
written: outside the lungs only is a shortcut a model can take without looking
at the lungs; inside the lungs it is mixed with what a biomarker would measure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biomark.analysis.audit import (
    SHOWN_COLUMNS,
    SOURCE_AUC_RECOVERABLE,
    SOURCE_AUC_WEAK,
    recoverable_classes,
    source_predictability,
    source_recoverable,
)
from biomark.analysis.phantom_truth import feature_region

__all__ = ["LUNGS", "OUTSIDE", "RegionAudit", "source_by_region"]

logger = logging.getLogger(__name__)

#: The region names, as the report prints them.
LUNGS = "lungs"
OUTSIDE = "outside the lungs"

#: Fewest usable radiomic columns for a region to be tested.
MIN_FEATURES = 2


@dataclass
class RegionAudit:
    """The data-level source audit of one dataset.

    Attributes
    ----------
    table : DataFrame
        One row per (region, class): ``region, class, status, n, sources,
        auc, null_q95, p, p_adjusted, verdict, reason``.
    pooled : dict of str to dict
        Per region, the pooled test over its classes (``classes, auc,
        null_q95, p, p_adjusted, verdict``).
    n_features : dict of str to int
        Radiomic columns used per region.
    alpha : float, default 0.05
        The level of the Holm-adjusted verdicts.
    """

    table: pd.DataFrame
    pooled: dict[str, dict]
    n_features: dict[str, int]
    alpha: float = 0.05

    def _rows(self, region: str) -> pd.DataFrame:
        return self.table[self.table["region"] == region]

    def carries(self, region: str) -> bool:
        """Whether the source is recoverable within a class (any class, or pooled) in ``region``."""
        return source_recoverable(self._rows(region), self.pooled.get(region, {}))

    def classes(self, region: str) -> list[str]:
        """The classes whose source is recoverable (or weakly) in ``region``."""
        return recoverable_classes(self._rows(region))

    @property
    def tested(self) -> bool:
        """Whether any class was tested in any region."""
        return bool((self.table["status"] == "tested").any()) if len(self.table) else False


def _whole_lung_columns(table: pd.DataFrame) -> list[str]:
    """Radiomic columns of the whole region: not ``image_id``, not zone-prefixed
    (``lower_glcm_...``)."""
    return [c for c in table.columns if c != "image_id" and feature_region(c) == "lung"]


def _usable(values: pd.DataFrame) -> np.ndarray:
    """Finite, non-constant columns of ``values`` as a float matrix (rows with a NaN removed by the
    caller)."""
    X = values.to_numpy(dtype=np.float64)
    keep = np.isfinite(X).all(axis=0) & (np.nanstd(X, axis=0) > 0)
    return X[:, keep]


def source_by_region(
    regions: Mapping[str, pd.DataFrame],
    meta: pd.DataFrame,
    *,
    seed: int = 0,
    n_permutations: int = 500,
    alpha: float = 0.05,
    auc_recoverable: float = SOURCE_AUC_RECOVERABLE,
    auc_weak: float = SOURCE_AUC_WEAK,
) -> RegionAudit:
    """Can the source be predicted within a class from each region's radiomics?

    Parameters
    ----------
    regions : mapping of str to DataFrame
        Region name (:data:`LUNGS`, :data:`OUTSIDE`) -> radiomic features
        with an ``image_id`` column (``features.parquet`` of ``biomark
        radiomics`` and of its ``controls/outside``). Zone columns are left
        out, so both regions are measured with the same features.
    meta : DataFrame
        ``image_id, label, source, patient_id`` of the dataset's images.
    seed : int, default 0
        Seeds the splitter and the permutations.
    n_permutations, alpha, auc_recoverable, auc_weak
        As in :func:`~biomark.analysis.audit.source_predictability`.

    Returns
    -------
    RegionAudit
        Regions whose table has fewer than :data:`MIN_FEATURES` usable
        columns, or images without a source, get a ``skipped`` row with the
        reason.
    """
    frames, pooled, n_features = [], {}, {}
    ids = meta.assign(image_id=meta["image_id"].astype(str)).set_index("image_id")
    for region, table in regions.items():
        values = table.assign(image_id=table["image_id"].astype(str)).set_index("image_id")
        values = values[_whole_lung_columns(table)]
        values = values[values.index.isin(ids.index)].dropna(axis=0, how="any")
        X = _usable(values)
        n_features[region] = int(X.shape[1])
        if X.shape[1] < MIN_FEATURES or len(values) == 0:
            frames.append(
                pd.DataFrame(
                    [
                        {
                            "region": region,
                            "class": "",
                            "status": "skipped",
                            "n": len(values),
                            "reason": (
                                f"{X.shape[1]} usable radiomic column(s) for {len(values)} image(s)"
                            ),
                        }
                    ]
                )
            )
            continue
        rows = ids.loc[values.index]
        audit = source_predictability(
            X,
            rows["label"].astype(str),
            rows["source"].astype(str),
            patient_ids=rows["patient_id"].astype(str),
            seed=seed,
            n_permutations=n_permutations,
            alpha=alpha,
            auc_recoverable=auc_recoverable,
            auc_weak=auc_weak,
        )
        pooled[region] = dict(audit.attrs.get("pooled") or {})
        frames.append(audit.assign(region=region))
        logger.info(
            "source in the images, %s: %d radiomic features, pooled within-class AUC %.2f (%s)",
            region,
            X.shape[1],
            pooled[region].get("auc", float("nan")),
            pooled[region].get("verdict", "not tested"),
        )
    columns = ["region", *SHOWN_COLUMNS]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return RegionAudit(
        table=table.reindex(columns=columns), pooled=pooled, n_features=n_features, alpha=alpha
    )
