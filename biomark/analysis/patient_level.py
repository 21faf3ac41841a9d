"""Tests that count each patient once: per-patient means, and a random intercept per patient.

Images of one patient are not independent. :func:`patient_level_tests` runs
the tests of :func:`biomark.analysis.stats.feature_tests` on per-patient
means; :func:`mixed_model_tests` fits ``feature ~ is_positive`` with a random
intercept per patient by REML (:mod:`biomark.analysis.random_intercept`).
Conventions (orientation, constant features, skipped classes) are those of
:mod:`biomark.analysis.stats`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.inputs import check_labels, check_matrix
from biomark.analysis.random_intercept import fit_random_intercept
from biomark.analysis.rank_tests import constant_columns, contrast
from biomark.analysis.stats import (
    add_contrast_columns,
    bh_fdr,
    check_feature_indices,
    check_positive,
    check_test_settings,
    feature_names_for,
    significant,
)
from biomark.config import DEFAULT_POSITIVE_CLASS
from biomark.data.labels import order_classes
from biomark.exceptions import DataError

__all__ = ["mixed_model_tests", "patient_level_tests"]

logger = logging.getLogger(__name__)


def _patient_table(
    X: np.ndarray, labels: Sequence[str], patient_ids: Sequence[Any], features: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked (X[:, features], labels, patient ids, feature indices)."""
    X = check_matrix(X, fix="drop or repair those images/features before testing")
    n = X.shape[0]
    labels_arr = check_labels(labels, n, "labels")
    pid = check_labels(patient_ids, n, "patient_ids")
    idx = check_feature_indices(features, X.shape[1])
    per_patient = pd.Series(labels_arr).groupby(pid).nunique()
    mixed = per_patient.index[per_patient.to_numpy() > 1]
    if len(mixed):
        raise DataError(
            f"{len(mixed)} patient(s) have images with different labels (e.g. {list(mixed[:5])}); "
            "a patient-level test needs one class per patient -- fix the manifest or split those "
            "patients"
        )
    return X[:, idx], labels_arr, pid, idx


def patient_level_tests(
    X: np.ndarray,
    labels: Sequence[str],
    patient_ids: Sequence[Any],
    *,
    features: Sequence[int],
    positive: str = DEFAULT_POSITIVE_CLASS,
    feature_names: Sequence[str] | None = None,
    min_group_size: int = 3,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Kruskal--Wallis, Mann--Whitney, delta and AUC on per-patient means.

    Images of the same patient are not independent; testing them as if they
    were inflates significance (pseudo-replication). Here each patient's images
    are averaged first, so each patient counts once.

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
    labels : sequence of str, length n_images
    patient_ids : sequence, length n_images
        Patient of each image (compared as strings).
    features : sequence of int
        Column indices to test (e.g. the top features of :func:`feature_tests`).
    positive : str, default :data:`~biomark.config.DEFAULT_POSITIVE_CLASS`
    feature_names : sequence of str, optional
        Names of *all* columns of ``X``; default ``f0000, ...``.
    min_group_size : int, default 3
        Classes with fewer *patients* are not tested (recorded in
        ``attrs["skipped"]``).
    alpha : float, default 0.05
        FDR level of ``significant``.

    Returns
    -------
    pandas.DataFrame
        One row per requested feature, indexed by name, with columns
        ``feature_index, n_patients, n_images, constant, kruskal_H, kruskal_p,
        kruskal_q, mw_U, mw_p, mw_q, significant, cliffs_delta, auc``. q-values
        are BH over the requested features only (a selected family).

    Raises
    ------
    DataError
        If the inputs do not match in length, ``X`` is not finite, a label or
        patient id is empty, a patient has images of different classes, or
        there is only one class.
    ConfigError
        If ``features`` is empty, out of range or repeated, ``positive`` is not
        a label, or ``min_group_size``/``alpha`` is out of range.
    """
    Xs, labels_arr, pid, idx = _patient_table(X, labels, patient_ids, features)
    check_positive(labels_arr, positive)
    check_test_settings(0, min_group_size, alpha)
    names = feature_names_for(feature_names, np.asarray(X).shape[1])
    grouped = pd.DataFrame(Xs).groupby(pid, sort=True)
    means = grouped.mean().to_numpy()
    p_labels = pd.Series(labels_arr).groupby(pid, sort=True).first().to_numpy()
    skipped: list[dict[str, Any]] = []
    res = contrast(means, p_labels, positive, min_group_size, skipped)
    frame = pd.DataFrame(index=pd.Index([names[j] for j in idx], name="feature"))
    frame["feature_index"] = idx
    frame["n_patients"] = means.shape[0]
    frame["n_images"] = Xs.shape[0]
    frame["constant"] = constant_columns(means)
    for key in ("kruskal_H", "kruskal_p"):
        frame[key] = res[key]
    frame["kruskal_q"] = bh_fdr(res["kruskal_p"], alpha)[1]
    add_contrast_columns(frame, res, alpha)
    frame.attrs["skipped"] = skipped
    frame.attrs["settings"] = {
        "positive": positive,
        "min_group_size": int(min_group_size),
        "alpha": float(alpha),
        "n_images": int(Xs.shape[0]),
        "n_patients": int(means.shape[0]),
        "patient_counts": {c: int(np.sum(p_labels == c)) for c in order_classes(p_labels)},
    }
    return frame


def _fit_mixed(y: np.ndarray, exog: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """One REML fit of standardised ``y``
    (:func:`~biomark.analysis.random_intercept.fit_random_intercept`)."""
    scale = float(y.std())
    z = (y - y.mean()) / scale
    try:
        fit = fit_random_intercept(z, exog, groups)
    except (np.linalg.LinAlgError, ValueError) as err:
        return {"status": "failed", "message": f"{type(err).__name__}: {err}"}
    if not fit.identifiable:
        message = (
            "one image per patient: patient and residual variance cannot be told apart; "
            "the fit is ordinary least squares (patient variance on the boundary, 0)"
        )
    elif fit.on_boundary:
        message = "patient variance on the boundary (0): the patients add nothing beyond the images"
    else:
        message = ""
    return {
        "coef": float(fit.fe_params[1]) * scale,
        "se": float(fit.bse_fe[1]) * scale,
        "p": float(fit.pvalues[1]),
        "ci_low": float(fit.conf_int[1, 0]) * scale,
        "ci_high": float(fit.conf_int[1, 1]) * scale,
        "group_var": fit.group_var * scale**2,
        "converged": fit.converged,
        "status": "not converged"
        if not fit.converged
        else ("ok, with warnings" if message else "ok"),
        "message": message,
    }


def mixed_model_tests(
    X: np.ndarray,
    labels: Sequence[str],
    patient_ids: Sequence[Any],
    *,
    features: Sequence[int],
    positive: str = DEFAULT_POSITIVE_CLASS,
    feature_names: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Linear mixed model ``feature ~ 1 + is_positive + (1 | patient)``.

    Fitted by REML on the standardised feature
    (:func:`~biomark.analysis.random_intercept.fit_random_intercept`: the
    estimates of statsmodels ``MixedLM(...).fit(reml=True)``, vectorised over
    the patients); coefficient, standard error, Wald interval and p-value, and
    random-intercept variance are returned in the feature's own units. A
    patient variance on the boundary (0), or one image per patient (variances
    not identifiable: ordinary least squares), is said in the ``message``
    column with status "ok, with warnings"; ``converged`` is False when the
    one-dimensional search did not end normally; a fit that fails is recorded
    with ``status == "failed"`` and NaN numbers. Nothing is printed or raised
    for a single bad fit.

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
    labels : sequence of str, length n_images
    patient_ids : sequence, length n_images
    features : sequence of int
        Column indices to fit (each fit takes a fraction of a second to
        seconds; meant for the top features).
    positive : str, default :data:`~biomark.config.DEFAULT_POSITIVE_CLASS`
    feature_names : sequence of str, optional
        Names of all columns of ``X``.
    alpha : float, default 0.05
        FDR level of ``significant`` (BH over the requested features).

    Returns
    -------
    pandas.DataFrame
        One row per requested feature with columns ``feature_index, coef, se,
        ci_low, ci_high, p, q, significant, group_var, converged, status,
        message, n_images, n_patients``. A constant feature gets coef 0, p 1 and
        ``status == "constant"`` (no fit).

    Raises
    ------
    DataError
        If the inputs do not match, ``X`` is not finite, a patient has images
        of different classes, or there is only one class.
    ConfigError
        If ``features`` is invalid, ``positive`` is not a label or ``alpha`` is
        out of range.
    """
    Xs, labels_arr, pid, idx = _patient_table(X, labels, patient_ids, features)
    check_positive(labels_arr, positive)
    check_test_settings(0, 1, alpha)
    names = feature_names_for(feature_names, np.asarray(X).shape[1])
    is_pos = (labels_arr == positive).astype(np.float64)
    exog = np.column_stack([np.ones_like(is_pos), is_pos])
    rows = []
    for j in range(Xs.shape[1]):
        y = Xs[:, j]
        if np.ptp(y) == 0.0:
            row: dict[str, Any] = {
                "coef": 0.0,
                "se": np.nan,
                "p": 1.0,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "group_var": np.nan,
                "converged": True,
                "status": "constant",
                "message": "constant feature: no evidence (p = 1), not fitted",
            }
        else:
            row = _fit_mixed(y, exog, pid)
            if row["status"] == "failed":
                logger.warning(
                    "mixed model failed for feature %s: %s", names[idx[j]], row["message"]
                )
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index([names[j] for j in idx], name="feature"))
    frame = frame.reindex(
        columns=[
            "coef",
            "se",
            "ci_low",
            "ci_high",
            "p",
            "group_var",
            "converged",
            "status",
            "message",
        ]
    )
    frame["converged"] = frame["converged"].astype("boolean")
    frame["q"] = bh_fdr(frame["p"].to_numpy(dtype=np.float64), alpha)[1]
    frame["significant"] = significant(frame["q"].to_numpy(), alpha)
    frame.insert(0, "feature_index", idx)
    frame["n_images"] = Xs.shape[0]
    frame["n_patients"] = int(np.unique(pid).size)
    frame["message"] = frame["message"].fillna("")
    frame.attrs["settings"] = {
        "positive": positive,
        "alpha": float(alpha),
        "reml": True,
        "formula": "feature ~ 1 + is_positive + (1 | patient)",
    }
    return frame
