"""How much of a deep feature's variation *within one class* measured lung texture explains.

A feature that separates a class from the rest may do so through anything that
differs between the groups. A biomarker should also grade the finding inside
its class (mild to severe), and if it reads the lungs, that grading should be
visible in what radiomics measures there. :func:`within_class_r2` gives, per
deep feature, the leave-one-out :math:`R^2` of predicting the feature's value
in the images of one class from their radiomic features (ridge regression,
standardised radiomics, the penalty chosen per feature by the same
leave-one-out error): 0 means texture predicts none of its within-class
variation, 1 all of it. No label or ground truth enters.

scikit-learn's :class:`~sklearn.linear_model.RidgeCV` computes the exact
leave-one-out errors of every penalty and every feature in closed form, so the
whole shortlist of a class costs one decomposition.

numpy/scikit-learn, and :mod:`biomark.analysis.associate` for the correlations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from biomark.analysis.associate import associate, strongest_correlates
from biomark.analysis.inputs import check_matrix
from biomark.analysis.radiomic_zones import radiomic_zones

__all__ = ["ALPHAS", "MIN_IMAGES", "within_class_correlates", "within_class_r2"]

#: Ridge penalties tried (on standardised radiomics); the leave-one-out error picks one per feature.
ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 5, 13))

#: Fewest images of the class with radiomics for the R^2 to be computed.
MIN_IMAGES = 20


def within_class_r2(
    X: np.ndarray,
    R: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    *,
    positive: str,
    feature_names: Sequence[str],
    min_images: int = MIN_IMAGES,
) -> pd.Series:
    """Leave-one-out R^2 of each deep feature from radiomics, within the images of one class.

    Parameters
    ----------
    X : ndarray of shape (n_images, n_features)
        Deep features (finite).
    R : ndarray of shape (n_images, n_radiomic)
        Radiomic features of the same images; rows with any NaN (images
        without radiomics) are left out.
    labels : sequence of str, length n_images
    positive : str
        The class whose images are used.
    feature_names : sequence of str, length n_features
    min_images : int, default :data:`MIN_IMAGES`

    Returns
    -------
    Series
        Index ``feature_names``, name ``radiomic_r2``: the leave-one-out
        :math:`R^2` (may be below 0: worse than the class mean), NaN for a
        feature constant within the class, or for every feature when fewer
        than ``min_images`` images of the class have radiomics. ``attrs["n"]``
        is the number of images used.
    """
    from sklearn.linear_model import RidgeCV

    X = check_matrix(X, "X")
    R = np.asarray(R, dtype=np.float64)
    names = [str(v) for v in feature_names]
    out = pd.Series(np.nan, index=names, name="radiomic_r2", dtype=np.float64)
    rows = _class_rows(R, labels, positive)
    out.attrs["n"] = int(rows.sum())
    if rows.sum() < min_images or not names:
        return out
    Rc = R[rows]
    spread = Rc.std(axis=0)
    Rc = (Rc[:, spread > 0] - Rc[:, spread > 0].mean(axis=0)) / spread[spread > 0]
    Y = X[rows].astype(np.float64)
    var = Y.var(axis=0)
    live = var > 0
    if not live.any() or Rc.shape[1] == 0:
        return out
    model = RidgeCV(alphas=ALPHAS, alpha_per_target=True, store_cv_results=True).fit(Rc, Y[:, live])
    errors = model.cv_results_.reshape(
        Rc.shape[0], int(live.sum()), len(ALPHAS)
    )  # squared LOO errors
    best = errors.mean(axis=0).min(axis=1)
    out.iloc[np.flatnonzero(live)] = 1.0 - best / var[live]
    return out


def within_class_correlates(
    X: np.ndarray,
    R: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    *,
    positive: str,
    feature_names: Sequence[str],
    radiomic_names: Sequence[str],
    min_images: int = MIN_IMAGES,
    top: int = 3,
) -> pd.DataFrame | None:
    """Each deep feature's strongest radiomic correlates within the images of one class.

    Spearman correlations of every feature with every radiomic feature on the
    class's images, Benjamini-Hochberg FDR over those pairs
    (:func:`~biomark.analysis.associate.associate`); the significant pairs are
    named by :func:`~biomark.analysis.associate.strongest_correlates`.

    Parameters
    ----------
    X, R, labels, positive, feature_names, min_images
        As :func:`within_class_r2`.
    radiomic_names : sequence of str, length n_radiomic
        The columns of ``R``.
    top : int, default 3
        Correlates named per feature.

    Returns
    -------
    DataFrame or None
        Index the features with a significant correlate, columns
        ``radiomic_correlates``, ``radiomic_families`` and ``radiomic_zone``: the lung
        zones where the strongest correlate tracks the feature better than in the
        rest of their partition (:func:`~biomark.analysis.radiomic_zones.leading_zones`;
        ``""`` where none leads or the correlate has no zone columns). None when fewer than
        ``min_images`` images of the class have radiomics, or nothing varies
        within the class on one side.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> grade = rng.normal(size=60)
    >>> R = np.c_[grade + 0.3 * rng.normal(size=60), rng.normal(size=60)]
    >>> X = np.c_[grade, rng.normal(size=60)]
    >>> table = within_class_correlates(
    ...     X, R, ["A"] * 60, positive="A", feature_names=["u0", "u1"],
    ...     radiomic_names=["lower_glcm_Contrast", "firstorder_Mean"],
    ... )
    >>> table.index.tolist(), table.loc["u0", "radiomic_families"], table.loc["u0", "radiomic_zone"]
    (['u0'], 'glcm: 1', '')
    """
    X = check_matrix(X, "X")
    R = np.asarray(R, dtype=np.float64)
    rows = _class_rows(R, labels, positive)
    if rows.sum() < min_images or X.shape[1] == 0:
        return None
    try:
        result = associate(
            X[rows],
            R[rows],
            deep_names=[str(v) for v in feature_names],
            radiomic_names=[str(v) for v in radiomic_names],
        )
    except ValueError:  # nothing varies within the class on one side
        return None
    pairs = result.table(only_significant=True)
    table = strongest_correlates(pairs, top=top)
    if table is None:
        return None
    strongest = pairs.loc[pairs["rho"].abs().groupby(pairs["deep"], sort=False).idxmax()]
    table["radiomic_zone"] = radiomic_zones(
        X[rows],
        pd.DataFrame(R[rows], columns=[str(v) for v in radiomic_names]),
        {d: (r, rho) for d, r, rho in strongest[["deep", "radiomic", "rho"]].itertuples(False)},
        [str(v) for v in feature_names],
    )
    return table


def _class_rows(R: np.ndarray, labels: Sequence[str] | np.ndarray, positive: str) -> np.ndarray:
    """The images of class ``positive`` that have every radiomic feature."""
    return (np.asarray([str(v) for v in labels], dtype=object) == positive) & np.isfinite(R).all(
        axis=1
    )
