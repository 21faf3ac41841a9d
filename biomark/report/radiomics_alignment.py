"""Deep features beside radiomics: the rows both tables share, and what the association of one
strategy found.

Aligning deep and radiomic tables
    Rows are matched by ``image_id``. Images can be missing on the radiomics
    side for good reasons (an implausible lung mask, a failed extraction:
    both recorded by name in ``failures.csv``); :func:`excluded_images` lists
    them and :func:`align_features` takes them out of the expected count.
    When at least :data:`MIN_OVERLAP` (90 %) of the deep table's images that
    radiomics did not exclude have radiomics, the intersection is used and a
    warning names the counts (excluded by name, unexplained); below that the
    tables are taken to describe different datasets and a
    :class:`~biomark.exceptions.RunError` with the counts is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from biomark.analysis.associate import AssociationResult
from biomark.analysis.chance import ChanceGuard
from biomark.config import ReportPlanSettings
from biomark.exceptions import RunError

__all__ = [
    "MIN_OVERLAP",
    "StrategyAnalysis",
    "UnitBasis",
    "align_features",
    "covariates_from_manifest",
    "excluded_images",
]

logger = logging.getLogger(__name__)

#: Smallest fraction of deep-table images that must have radiomics (default of
#: ``report.min_overlap``).
MIN_OVERLAP: float = ReportPlanSettings.min_overlap

_COVARIATES = ("source", "view", "sex", "age")

#: What a deep column of :class:`StrategyAnalysis` is (see its ``unit_basis``).
UnitBasis = Literal["shared", "matched", "unmatched"]


@dataclass
class StrategyAnalysis:
    """Associations of one strategy's deep features with radiomics.

    Attributes
    ----------
    strategy : str
    n_images : int
        Images in both tables.
    result : AssociationResult
        Plain Spearman on the real radiomics.
    partial : AssociationResult or None
        Partial Spearman given the manifest covariates (when any vary).
    cca : dict
        :func:`biomark.analysis.associate.cca_explained` on the run's folds.
    controls : dict of str to AssociationResult
        ``real`` plus each control variant available.
    guard : ChanceGuard or None
        Whether the strategy's model learned (:mod:`biomark.analysis.chance`),
        from its out-of-fold predictions; None without predictions.
    unit_basis : {"shared", "matched", "unmatched"}, default "shared"
        What a deep column is: a shared backbone's feature (``f####``), a unit
        family matched across the folds' networks (``u####``, its consensus),
        or unit ``j`` of each fold's own network pooled unmatched (``f####``,
        a mixture: the page warns).
    basis_note : str
        The same in words, shown on the page.
    random_control : bool, default False
        The strategy's backbone would be pretrained but started from seeded
        random weights (``model.weights: none``): a random-features control.
    agree_in : dict of str to str
        For matched unit families: the classes on whose images the members
        agree (comma-separated, empty for none); shown as
        ``members_agree_in``.
    """

    strategy: str
    n_images: int
    result: AssociationResult
    partial: AssociationResult | None
    cca: dict[str, Any]
    controls: dict[str, AssociationResult] = field(default_factory=dict)
    guard: ChanceGuard | None = None
    unit_basis: UnitBasis = "shared"
    basis_note: str = ""
    random_control: bool = False
    agree_in: dict[str, str] = field(default_factory=dict)

    @property
    def learned(self) -> bool:
        """False only when the chance guard says the model did not learn."""
        return self.guard is None or self.guard.learned


def excluded_images(
    failures: pd.DataFrame, features: pd.DataFrame, variant: str = "real"
) -> set[str]:
    """Image ids that radiomics left out by name: a ``failures.csv`` row and no feature row.

    Parameters
    ----------
    failures : DataFrame
        ``failures.csv`` of a radiomics folder (``variant``, ``image_id``, ...).
    features : DataFrame
        Its ``features.parquet`` (``image_id`` + features).
    variant : str, default "real"

    Returns
    -------
    set of str

    Examples
    --------
    ``img1`` failed once but has features after all, and ``img2`` failed only in
    a control variant, so only ``img3`` was left out by name:

    >>> failures = pd.DataFrame(
    ...     {"variant": ["real", "real", "blackout"], "image_id": ["img3", "img1", "img2"]}
    ... )
    >>> features = pd.DataFrame({"image_id": ["img0", "img1", "img2"], "glcm_Contrast": [1.0] * 3})
    >>> excluded_images(failures, features)
    {'img3'}
    """
    if failures is None or not len(failures) or "image_id" not in failures.columns:
        return set()
    rows = (
        failures if "variant" not in failures.columns else failures[failures["variant"] == variant]
    )
    return set(rows["image_id"].astype(str)) - set(features["image_id"].astype(str))


def align_features(
    meta: pd.DataFrame,
    X: np.ndarray,
    radiomics: pd.DataFrame,
    *,
    what: str = "deep features",
    min_overlap: float = MIN_OVERLAP,
    excluded: Collection[str] = (),
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Match deep and radiomic rows by ``image_id`` (see module docstring).

    Parameters
    ----------
    meta : DataFrame of shape (n_deep, ...)
        With ``image_id`` (and ``fold``).
    X : ndarray of shape (n_deep, n_features)
    radiomics : DataFrame of shape (n_rad, 1 + n_radiomic)
        ``image_id`` + features.
    what : str
        Named in messages.
    min_overlap : float, default 0.9
        Of the deep images that radiomics did not exclude.
    excluded : collection of str, default ()
        Image ids radiomics left out by name (:func:`excluded_images`):
        implausible masks, failed extractions. They do not count against the
        overlap.

    Returns
    -------
    meta, X, radiomics
        Rows of the common images, in the deep table's order.

    Raises
    ------
    RunError
        If fewer than ``min_overlap`` of the deep images not excluded have radiomics.

    Examples
    --------
    Six deep rows, radiomics for five in another order; ``img5`` was excluded
    by name, so all the expected images are there and the rows come back in the
    deep table's order:

    >>> meta = pd.DataFrame({"image_id": [f"img{i}" for i in range(6)], "fold": [0, 0, 1, 1, 2, 2]})
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> radiomics = pd.DataFrame(
    ...     {
    ...         "image_id": ["img4", "img0", "img1", "img2", "img3"],
    ...         "glcm_Contrast": [4.0, 0.0, 1.0, 2.0, 3.0],
    ...     }
    ... )
    >>> meta2, X2, rad2 = align_features(meta, X, radiomics, excluded={"img5"})
    >>> meta2["image_id"].tolist(), X2.shape, rad2["glcm_Contrast"].tolist()
    (['img0', 'img1', 'img2', 'img3', 'img4'], (5, 2), [0.0, 1.0, 2.0, 3.0, 4.0])

    With radiomics for only half of the images, the tables describe different data:

    >>> align_features(meta, X, radiomics.iloc[:3])
    Traceback (most recent call last):
    ...
    biomark.exceptions.RunError: deep features: 6 images, radiomics: 3 images, in common: 3; ...
    """
    ids = meta["image_id"].astype(str).to_numpy()
    rad_ids = radiomics["image_id"].astype(str)
    common = np.isin(ids, rad_ids.to_numpy())
    n_common = int(common.sum())
    left_out = ~common & np.isin(ids, np.asarray(sorted(set(map(str, excluded))), dtype=object))
    n_excluded = int(left_out.sum())
    n_unexplained = len(ids) - n_common - n_excluded
    expected = max(len(ids) - n_excluded, 1)
    if n_common < min_overlap * expected or n_common < 4:
        unexplained = ids[~common & ~left_out]
        example = f" (e.g. {', '.join(unexplained[:3])})" if len(unexplained) else ""
        raise RunError(
            f"{what}: {len(ids)} images, radiomics: {len(radiomics)} images, in common: "
            f"{n_common}; {n_excluded} excluded by radiomics by name (implausible lung mask or "
            f"failed extraction, see failures.csv), {n_unexplained} missing without a "
            f"reason{example}: {n_common / expected:.0%} of the {expected} expected, need "
            f"{min_overlap:.0%}. The run and the radiomics look like different datasets: run "
            "`biomark radiomics --data` on the dataset the run was trained on"
        )
    if n_common < len(ids):
        logger.warning(
            "%s: %d of %d images have no radiomics (%d excluded by radiomics by name, see "
            "failures.csv; %d without a reason); using the %d in common",
            what,
            len(ids) - n_common,
            len(ids),
            n_excluded,
            n_unexplained,
            n_common,
        )
    lookup = pd.Series(np.arange(len(radiomics)), index=rad_ids.to_numpy())
    rows = lookup.loc[ids[common]].to_numpy()
    return (
        meta.loc[common].reset_index(drop=True),
        np.asarray(X)[common],
        radiomics.iloc[rows].reset_index(drop=True),
    )


def covariates_from_manifest(manifest: pd.DataFrame, image_ids: np.ndarray) -> pd.DataFrame | None:
    """Covariates (source, view, sex, age) that vary, aligned to ``image_ids``; None if none.

    ``age`` is left out when any of these images lacks one (a partial
    correlation needs every row).

    Examples
    --------
    ``view`` is the same everywhere and ``age`` has a gap, so neither is a
    covariate here:

    >>> manifest = pd.DataFrame(
    ...     {
    ...         "image_id": ["a", "b", "c"],
    ...         "source": ["cohen", "kermany", "cohen"],
    ...         "view": ["PA", "PA", "PA"],
    ...         "age": [40, None, 60],
    ...     }
    ... )
    >>> covariates_from_manifest(manifest, np.array(["c", "a", "b"]))
        source
    0    cohen
    1    cohen
    2  kermany
    >>> covariates_from_manifest(manifest, np.array(["a", "c"]))["age"].tolist()
    [40.0, 60.0]
    """
    frame = manifest.set_index(manifest["image_id"].astype(str))
    chosen = {}
    for column in _COVARIATES:
        if column in frame.columns:
            values = frame.loc[image_ids, column]
            if column == "age":
                values = pd.to_numeric(values, errors="coerce")
                if values.isna().any():
                    continue
            if values.nunique() > 1:
                chosen[column] = values.to_numpy()
    return pd.DataFrame(chosen) if chosen else None
