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

numpy/scikit-learn only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from biomark.analysis.inputs import check_matrix

__all__ = ["ALPHAS", "MIN_IMAGES", "within_class_r2"]

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
    rows = (np.asarray([str(v) for v in labels], dtype=object) == positive) & np.isfinite(R).all(
        axis=1
    )
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
