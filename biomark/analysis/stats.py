"""Univariate tests of deep features: is a feature different in a class?

Every function takes the out-of-fold feature matrix ``X`` of shape
``(n_images, n_features)`` (one strategy) and the class label of each row, and
returns one row per feature. Nothing here reads or writes files.

* :func:`feature_tests` -- per feature, Kruskal--Wallis across all classes,
  Mann--Whitney U of the positive class against the rest, Cliff's delta, the
  single-feature ROC AUC with a stratified bootstrap confidence interval, and
  Benjamini--Hochberg q-values over features.
* :func:`biomark.analysis.patient_level.patient_level_tests` -- the same tests
  on per-patient means, so that a patient with several images counts once (no
  pseudo-replication), and :func:`biomark.analysis.patient_level.mixed_model_tests`
  -- a linear mixed model ``feature ~ is_positive`` with a random intercept per
  patient, fitted by REML as statsmodels ``MixedLM`` fits it
  (:mod:`biomark.analysis.random_intercept`, 200-400x faster, checked against it).
* The input checks and the nullable significance flag they share with this
  module (:func:`check_positive`, :func:`check_feature_indices`, ...).
* :func:`cliffs_delta` and :func:`bh_fdr` -- the two building blocks.

Conventions
-----------
* AUC and Cliff's delta are oriented to the positive class: AUC > 0.5 and
  delta > 0 mean the feature is *higher* in the positive class. Both come from
  the Mann--Whitney statistic ``U`` of the positive class:
  ``AUC = U / (n_pos n_rest)`` (ties count one half, as in
  :func:`sklearn.metrics.roc_auc_score`) and ``delta = 2 AUC - 1``.
* A constant feature carries no evidence: its p-values are 1, its AUC 0.5, its
  delta 0, and it is flagged in the ``constant`` column.
* A class with fewer than ``min_group_size`` images is not tested; its columns
  are NaN and the reason is recorded in ``df.attrs["skipped"]`` (a list of
  dicts with keys ``test``, ``class``, ``n``, ``reason``). Nothing is dropped
  silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from biomark.analysis.inputs import check_labels, check_matrix
from biomark.analysis.rank_tests import (
    PooledRanks,
    bootstrap_auc,
    constant_columns,
    contrast,
    pooled_ranks,
)
from biomark.config import DEFAULT_POSITIVE_CLASS
from biomark.data.labels import order_classes
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "add_contrast_columns",
    "bh_fdr",
    "check_feature_indices",
    "check_positive",
    "check_test_settings",
    "cliffs_delta",
    "feature_names_for",
    "feature_tests",
    "holm",
    "significant",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# input checks (the edge: inner helpers trust their inputs)
# --------------------------------------------------------------------------- #
def check_positive(labels: np.ndarray, positive: str) -> None:
    classes = order_classes(labels)
    if positive not in classes:
        raise ConfigError(
            f"positive={positive!r} is not among the labels {list(classes)}; set positive to one "
            "of them"
        )
    if len(classes) < 2:
        raise DataError(
            f"labels hold a single class {list(classes)}; a class contrast needs at least two"
        )


def feature_names_for(feature_names: Sequence[str] | None, n_features: int) -> list[str]:
    if feature_names is None:
        # Same spelling as biomark.features.deep.feature_columns (not imported:
        # that package pulls in the image readers).
        return [f"f{j:04d}" for j in range(n_features)]
    names = [str(v) for v in feature_names]
    if len(names) != n_features:
        raise DataError(
            f"feature_names has {len(names)} entries but X has {n_features} feature columns"
        )
    return names


def check_feature_indices(features: Sequence[int], n_features: int) -> np.ndarray:
    idx = np.asarray(features)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ConfigError(f"features must be a non-empty list of column indices, got {features!r}")
    if idx.min() < 0 or idx.max() >= n_features:
        raise ConfigError(
            f"features must lie in [0, {n_features - 1}], got {idx.min()}..{idx.max()}"
        )
    if np.unique(idx).size != idx.size:
        raise ConfigError("features holds duplicate column indices; list each feature once")
    return idx.astype(np.intp)


# --------------------------------------------------------------------------- #
# building blocks
# --------------------------------------------------------------------------- #
def _p_values(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``p`` as a 1-D float array checked to lie in [0, 1], and its non-NaN (tested) mask."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p must be a 1-D array of p-values, got shape {p.shape}")
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0.0) | (p[ok] > 1.0)):
        raise ValueError("p holds values outside [0, 1]; pass p-values, not statistics")
    return p, ok


def bh_fdr(p: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini--Hochberg q-values, leaving NaN p-values out of the family.

    Parameters
    ----------
    p : ndarray of shape (m,)
        p-values in [0, 1]; NaN marks a test that was not run.
    alpha : float, default 0.05
        False discovery rate at which ``reject`` is decided.

    Returns
    -------
    reject : ndarray of bool, shape (m,)
        ``q <= alpha``; False where ``p`` is NaN.
    q : ndarray of float, shape (m,)
        BH-adjusted p-values (statsmodels ``multipletests(method="fdr_bh")``)
        computed over the non-NaN entries only; NaN where ``p`` is NaN.

    Raises
    ------
    ValueError
        If ``p`` is not 1-D, holds values outside [0, 1], or ``alpha`` is not
        in (0, 1).
    """
    p, ok = _p_values(p)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    reject = np.zeros(p.shape, dtype=bool)
    q = np.full(p.shape, np.nan)
    if ok.any():
        rej, q_ok, _, _ = multipletests(p[ok], alpha=alpha, method="fdr_bh")
        reject[ok] = rej
        q[ok] = q_ok
    return reject, q


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values of one family (the ``p_adjusted`` of
    ``multipletests(method="holm")``).

    Written out because statsmodels' Holm branch calls ``gc.collect()`` on
    every call, 0.25 s with TensorFlow's objects alive, eight times per
    report; the step-down itself is a sort and a running maximum.

    Parameters
    ----------
    p : array-like of shape (m,)
        p-values in [0, 1]; NaN (not tested) is left out of the family.

    Returns
    -------
    ndarray of shape (m,)
        ``min(1, max_{j <= i} (k - j) p_(j))`` over the ``k`` non-NaN values,
        in the input order; NaN where ``p`` is NaN.

    Raises
    ------
    ValueError
        If ``p`` is not 1-D or holds values outside [0, 1].
    """
    p, ok = _p_values(p)
    tested = p[ok]
    order = np.argsort(tested, kind="stable")
    stepped = np.maximum.accumulate(tested[order] * np.arange(tested.size, 0, -1))
    adjusted = np.empty_like(tested)
    adjusted[order] = np.minimum(stepped, 1.0)
    out = np.full(p.shape, np.nan)
    out[ok] = adjusted
    return out


def cliffs_delta(x: np.ndarray, y: np.ndarray) -> float:
    """Cliff's delta ``P(X > Y) - P(X < Y)`` of two samples.

    Cliff's delta is not in scipy. It equals ``2 U / (n m) - 1`` with ``U`` the
    Mann--Whitney statistic of ``x``, which midranks give in
    ``O((n + m) log(n + m))`` instead of comparing all ``n m`` pairs.

    Parameters
    ----------
    x : array-like of shape (n,)
    y : array-like of shape (m,)

    Returns
    -------
    float
        In [-1, 1]: 1 when every ``x`` exceeds every ``y``, -1 for the
        reverse, 0 for complete overlap (e.g. identical samples).

    Raises
    ------
    ValueError
        If either sample is empty, not 1-D, or holds NaN/infinite values.

    Examples
    --------
    >>> cliffs_delta([3, 4, 5], [1, 2])
    1.0
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    for name, arr in (("x", x), ("y", y)):
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D sample, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    n, m = x.size, y.size
    ranks = sps.rankdata(np.concatenate([x, y]))
    u = ranks[:n].sum() - n * (n + 1) / 2.0
    return float(2.0 * u / (n * m) - 1.0)


def significant(q: np.ndarray, alpha: float) -> pd.arrays.BooleanArray:
    """``q < alpha`` as a nullable boolean: NA where the test was not run."""
    flag = pd.array(q < alpha, dtype="boolean")
    flag[np.isnan(q)] = pd.NA
    return flag


def add_contrast_columns(frame: pd.DataFrame, res: dict[str, np.ndarray], alpha: float) -> None:
    """Add the positive-vs-rest columns of a :func:`~biomark.analysis.rank_tests.contrast` result to
    ``frame``.

    ``mw_U, mw_p``, BH ``mw_q``, ``significant`` (``mw_q < alpha``, NA where
    untested), ``cliffs_delta`` and ``auc``, in that order, in place: the
    image-level (:func:`feature_tests`) and patient-level tables share them.
    """
    frame["mw_U"] = res["mw_U"]
    frame["mw_p"] = res["mw_p"]
    frame["mw_q"] = bh_fdr(res["mw_p"], alpha)[1]
    frame["significant"] = significant(frame["mw_q"].to_numpy(), alpha)
    frame["cliffs_delta"] = res["cliffs_delta"]
    frame["auc"] = res["auc"]


def check_test_settings(n_bootstrap: int, min_group_size: int, alpha: float) -> None:
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ConfigError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if int(min_group_size) != min_group_size or min_group_size < 1:
        raise ConfigError(f"min_group_size must be a positive integer, got {min_group_size!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")


# --------------------------------------------------------------------------- #
# the steps of feature_tests
# --------------------------------------------------------------------------- #
def _check_reused(
    kruskal: pd.DataFrame | None, ranks: PooledRanks | None, X: np.ndarray, names: list[str]
) -> None:
    """Raise :class:`DataError` unless ``kruskal`` and ``ranks`` (when given) belong to ``X``."""
    p_feat = X.shape[1]
    if kruskal is not None and (len(kruskal) != p_feat or list(kruskal.index) != list(names)):
        raise DataError(
            f"kruskal: {len(kruskal)} rows for {p_feat} features; pass the columns of a call on "
            "the same features"
        )
    if ranks is not None and ranks.ranks.shape != X.shape:
        raise DataError(f"ranks of shape {ranks.ranks.shape} are not those of X {X.shape}")


def _add_kruskal_columns(
    frame: pd.DataFrame,
    kruskal: pd.DataFrame | None,
    res: dict[str, np.ndarray],
    alpha: float,
) -> None:
    """Add ``kruskal_H, kruskal_p, kruskal_q`` to ``frame``, reused or from ``res``.

    Parameters
    ----------
    frame : DataFrame
        The table being built, one row per feature; changed in place.
    kruskal : DataFrame, optional
        The Kruskal--Wallis columns of an earlier call, copied as they are.
    res : dict
        The :func:`~biomark.analysis.rank_tests.contrast` result, used when
        ``kruskal`` is None.
    alpha : float
        Level of the Benjamini--Hochberg q-values.
    """
    if kruskal is not None:
        for key in ("kruskal_H", "kruskal_p", "kruskal_q"):
            frame[key] = kruskal[key].to_numpy()
    else:
        frame["kruskal_H"] = res["kruskal_H"]
        frame["kruskal_p"] = res["kruskal_p"]
        frame["kruskal_q"] = bh_fdr(res["kruskal_p"], alpha)[1]


def _no_interval_record(positive: str, n_pos: int) -> dict[str, Any]:
    """The ``attrs["skipped"]`` entry of an AUC interval not asked for (``n_bootstrap=0``)."""
    return {
        "test": "auc_bootstrap",
        "class": positive,
        "n": n_pos,
        "reason": "n_bootstrap=0; no AUC interval computed",
    }


def _auc_interval(
    X: np.ndarray, is_pos: np.ndarray, n_bootstrap: int, seed: int, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile ``100 (1 - alpha)`` % bootstrap interval of each feature's AUC.

    Parameters
    ----------
    X : ndarray of shape (n_images, n_features)
        The checked features.
    is_pos : ndarray of bool, shape (n_images,)
        Rows of the positive class; positives and the rest are resampled apart.
    n_bootstrap : int
        Bootstrap draws (positive).
    seed : int
        Seed of the bootstrap's own generator.
    alpha : float
        One minus the coverage of the interval.

    Returns
    -------
    ci_low, ci_high : ndarray of shape (n_features,)
    """
    boot = bootstrap_auc(X[is_pos], X[~is_pos], n_bootstrap, seed)
    ci_low, ci_high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    return ci_low, ci_high


def _add_per_class_columns(
    frame: pd.DataFrame,
    X: np.ndarray,
    labels: np.ndarray,
    skipped: list[dict[str, Any]],
    *,
    ranks: PooledRanks | None,
    min_group_size: int,
    alpha: float,
) -> None:
    """Add ``mw_q_<class>, delta_<class>, auc_<class>`` (each class against the rest) to ``frame``.

    Parameters
    ----------
    frame : DataFrame
        The table being built, one row per feature; changed in place.
    X : ndarray of shape (n_images, n_features)
        The checked features.
    labels : ndarray of str, shape (n_images,)
        The checked class of each row.
    skipped : list of dict
        ``attrs["skipped"]``; a class too small to test is appended to it.
    ranks : PooledRanks, optional
        Pooled ranks of ``X``; computed here when None.
    min_group_size : int
        Classes with fewer images are not tested.
    alpha : float
        Level of the Benjamini--Hochberg q-values.
    """
    every = ranks if ranks is not None else pooled_ranks(X)
    for cls in order_classes(labels):
        sub = contrast(
            X,
            labels,
            cls,
            min_group_size,
            skipped,
            kruskal=False,
            test_name=f"mannwhitney_{cls}",
            pooled=every,
        )
        frame[f"mw_q_{cls}"] = bh_fdr(sub["mw_p"], alpha)[1]
        frame[f"delta_{cls}"] = sub["cliffs_delta"]
        frame[f"auc_{cls}"] = sub["auc"]


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    """Number of images of each class, in :func:`~biomark.data.labels.order_classes` order."""
    return {c: int(np.sum(labels == c)) for c in order_classes(labels)}


# --------------------------------------------------------------------------- #
# public tables
# --------------------------------------------------------------------------- #
def feature_tests(
    X: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    *,
    positive: str = DEFAULT_POSITIVE_CLASS,
    feature_names: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_group_size: int = 3,
    alpha: float = 0.05,
    per_class: bool = False,
    kruskal: pd.DataFrame | None = None,
    ranks: PooledRanks | None = None,
) -> pd.DataFrame:
    """Test every feature for a difference between classes.

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        Out-of-fold features (one strategy), finite real numbers.
    labels : sequence of str, length n_images
        Class of each image.
    positive : str, default :data:`~biomark.config.DEFAULT_POSITIVE_CLASS`
        Class contrasted with all others (Mann--Whitney, delta, AUC).
    feature_names : sequence of str, optional
        Names of the columns; default ``f0000, f0001, ...``.
    n_bootstrap : int, default 1000
        Stratified bootstrap draws for the AUC interval (positives and the rest
        resampled separately); 0 skips the interval (recorded in
        ``attrs["skipped"]``).
    seed : int, default 0
        Seed of the bootstrap's own generator; the same seed gives the same
        interval.
    min_group_size : int, default 3
        Classes with fewer images are not tested (NaN, reason recorded).
    alpha : float, default 0.05
        The interval is the percentile ``100 (1 - alpha)`` % interval, and
        ``significant`` is ``mw_q < alpha``.
    per_class : bool, default False
        Also test each class against the rest: columns ``mw_q_<class>``,
        ``delta_<class>``, ``auc_<class>``.
    kruskal : DataFrame, optional
        The ``kruskal_H, kruskal_p, kruskal_q`` columns of an earlier call on
        the same ``X``, labels, features and ``alpha`` (another ``positive``):
        Kruskal--Wallis across all classes does not depend on ``positive``,
        so they are reused instead of recomputed (3/4 of a call's time).
    ranks : PooledRanks, optional
        :func:`~biomark.analysis.rank_tests.pooled_ranks` of ``X``: the
        Mann--Whitney tests of every ``positive`` rank the same pooled
        sample, so a caller testing each class in turn ranks it once.

    Returns
    -------
    pandas.DataFrame
        Indexed by feature name (n_features rows) with columns
        ``feature_index, constant, kruskal_H, kruskal_p, kruskal_q, mw_U, mw_p,
        mw_q, significant, cliffs_delta, auc, auc_ci_low, auc_ci_high`` (and the
        per-class columns); ``significant`` is a nullable boolean, NA where the
        contrast was skipped. q-values are Benjamini--Hochberg over features.
        ``attrs["skipped"]`` lists the tests not run and why;
        ``attrs["settings"]`` the arguments and class counts.

    Raises
    ------
    DataError
        If ``X`` is not a finite 2-D real array, ``labels`` or
        ``feature_names`` do not match it, a label is empty, or there is only
        one class.
    ConfigError
        If ``positive`` is not a label, or ``n_bootstrap``,
        ``min_group_size`` or ``alpha`` is out of range.
    """
    X = check_matrix(X, fix="drop or repair those images/features before testing")
    n, p_feat = X.shape
    labels_arr = check_labels(labels, n, "labels")
    check_positive(labels_arr, positive)
    check_test_settings(n_bootstrap, min_group_size, alpha)
    names = feature_names_for(feature_names, p_feat)
    skipped: list[dict[str, Any]] = []

    _check_reused(kruskal, ranks, X, names)
    res = contrast(
        X, labels_arr, positive, min_group_size, skipped, kruskal=kruskal is None, pooled=ranks
    )
    frame = pd.DataFrame(index=pd.Index(names, name="feature"))
    frame["feature_index"] = np.arange(p_feat)
    frame["constant"] = constant_columns(X)
    _add_kruskal_columns(frame, kruskal, res, alpha)
    add_contrast_columns(frame, res, alpha)

    is_pos = labels_arr == positive
    ci_low = np.full(p_feat, np.nan)
    ci_high = np.full(p_feat, np.nan)
    if np.isnan(res["auc"]).all():
        pass  # the contrast itself was skipped and recorded
    elif n_bootstrap == 0:
        # asked for (the report tests every feature without intervals, then its shortlist with
        # them): recorded, not a warning
        skipped.append(_no_interval_record(positive, int(is_pos.sum())))
    else:
        ci_low, ci_high = _auc_interval(X, is_pos, int(n_bootstrap), seed, alpha)
    frame["auc_ci_low"] = ci_low
    frame["auc_ci_high"] = ci_high

    if per_class:
        _add_per_class_columns(
            frame, X, labels_arr, skipped, ranks=ranks, min_group_size=min_group_size, alpha=alpha
        )

    frame.attrs["skipped"] = skipped
    frame.attrs["settings"] = {
        "positive": positive,
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
        "min_group_size": int(min_group_size),
        "alpha": float(alpha),
        "per_class": bool(per_class),
        "n_images": int(n),
        "class_counts": _class_counts(labels_arr),
    }
    # DEBUG: callers test every class in turn and say what they found once
    # (biomark.analysis.evidence).
    logger.debug(
        "feature_tests (%s vs rest): %d features, %d images, %d significant at q < %g",
        positive,
        p_feat,
        n,
        int(frame["significant"].sum()),
        alpha,
    )
    return frame
