"""Checks of a run's feature dumps that the report shows at the top of the page.

Each check returns a list of warnings, one dict per finding, with the keys of
:data:`WARNING_KEYS`: which strategy, fold and feature(s), which check, and a
message saying what is wrong and what it does to the report. Nothing here
raises on bad data: degenerate or tampered inputs are reported, and the report
leaves the affected features out.

* :func:`nonfinite_features` -- NaN or infinite values in a fold's features.
* :func:`nonfinite_rows` -- images whose stored probabilities are not finite
  (they cannot enter the classification tables or ROC curves).
* :func:`constant_in_class` -- features that take one non-zero value for every
  image of a class but vary elsewhere (real activations are continuous; a
  feature silent, i.e. 0, for a whole class is common for ReLU units and is
  counted, not warned).
* :func:`model_disagreement` -- dumped features (or probabilities) that the
  saved model does not reproduce.

numpy/pandas only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = [
    "WARNING_KEYS",
    "constant_in_class",
    "model_disagreement",
    "nonfinite_features",
    "nonfinite_rows",
    "warning",
]

logger = logging.getLogger(__name__)

#: Keys of every warning dict.
WARNING_KEYS: tuple[str, ...] = ("strategy", "fold", "feature", "check", "message")


def _names(names: Sequence[str], idx: np.ndarray, shown: int = 5) -> str:
    picked = [str(names[int(i)]) for i in idx[:shown]]
    more = f" (+{idx.size - shown} more)" if idx.size > shown else ""
    return ", ".join(picked) + more


def warning(strategy: str, fold: object, feature: str, check: str, message: str) -> dict[str, str]:
    """One warning record, also written to the log."""
    logger.warning("%s fold %s: %s", strategy, fold, message)
    return {
        "strategy": str(strategy),
        "fold": str(fold),
        "feature": feature,
        "check": check,
        "message": message,
    }


def nonfinite_features(
    X: np.ndarray,
    *,
    strategy: str,
    fold: int,
    feature_names: Sequence[str],
    where: str = "features.parquet",
) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Features of one fold holding NaN or infinite values.

    Parameters
    ----------
    X : ndarray of shape (n_images, n_features)
        One fold's dumped features.
    strategy, fold : str, int
    feature_names : sequence of str
    where : str
        The file, named in the message.

    Returns
    -------
    bad : ndarray of bool, shape (n_features,)
        True for a feature with a non-finite value.
    warnings : list of dict

    Examples
    --------
    >>> X = np.array([[1.0, np.nan], [2.0, np.inf], [3.0, 0.5]])
    >>> bad, found = nonfinite_features(X, strategy="scratch", fold=0, feature_names=["f0", "f1"])
    >>> bad.tolist(), found[0]["feature"], found[0]["check"]
    ([False, True], 'f1', 'non-finite values')
    >>> found[0]["message"]
    'features.parquet: 2 NaN or infinite value(s) in 1 feature(s) (f1); ...'
    """
    finite = np.isfinite(np.asarray(X, dtype=np.float64))
    bad = np.asarray(~finite.all(axis=0))
    if not bad.any():
        return bad, []
    idx = np.flatnonzero(bad)
    n_vals = int((~finite).sum())
    msg = (
        f"{where}: {n_vals} NaN or infinite value(s) in {idx.size} feature(s) "
        f"({_names(feature_names, idx)}); those features are left out of every test. Re-run "
        "`biomark extract --force` for this fold if the file was damaged."
    )
    return bad, [warning(strategy, fold, _names(feature_names, idx), "non-finite values", msg)]


def nonfinite_rows(
    P: np.ndarray,
    image_ids: Sequence[str],
    *,
    strategy: str,
    fold: int,
    where: str = "features.parquet",
) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Images whose probabilities (or any per-image value that cannot be dropped column-wise) are
    not finite.

    Parameters
    ----------
    P : ndarray of shape (n_images, n_columns)
        E.g. the ``prob_<class>`` columns of one fold.
    image_ids : sequence of str
    strategy, fold, where
        Named in the message.

    Returns
    -------
    bad : ndarray of bool, shape (n_images,)
    warnings : list of dict

    Examples
    --------
    >>> P = np.array([[0.2, 0.8], [np.nan, np.nan], [0.6, 0.4]])
    >>> bad, found = nonfinite_rows(P, ["img1", "img2", "img3"], strategy="scratch", fold=0)
    >>> bad.tolist(), len(found)
    ([False, True, False], 1)
    >>> found[0]["message"]
    'features.parquet: 1 image(s) with NaN or infinite probabilities (img2); ...'
    """
    bad = np.asarray(~np.isfinite(np.asarray(P, dtype=np.float64)).all(axis=1))
    if not bad.any():
        return bad, []
    idx = np.flatnonzero(bad)
    ids = [str(image_ids[int(i)]) for i in idx]
    msg = (
        f"{where}: {idx.size} image(s) with NaN or infinite probabilities "
        f"({_names(ids, np.arange(len(ids)))}); those images are left out of the report. Re-run "
        "`biomark extract --force` for this fold."
    )
    return bad, [warning(strategy, fold, "probabilities", "non-finite probabilities", msg)]


def constant_in_class(
    X: np.ndarray,
    labels: Sequence[str],
    *,
    strategy: str,
    fold: object,
    feature_names: Sequence[str],
    min_group_size: int = 3,
) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Features with one non-zero value for every image of a class, but varying overall.

    Parameters
    ----------
    X : ndarray of shape (n_images, n_features)
        Finite features (one fold, or all folds pooled: ``fold="all"``).
    labels : sequence of str
    strategy, fold
    feature_names : sequence of str
    min_group_size : int, default 3
        Smaller classes are not checked.

    Returns
    -------
    silent : dict of str to int
        Per class: features that are 0 for every image of the class (counted only).
    warnings : list of dict

    Examples
    --------
    ``f1`` is silent (0) for every image of class ``a``; ``f2`` sits at 0.7 for all of them:

    >>> X = np.array([[1, 0, 0.7], [2, 0, 0.7], [3, 0, 0.7], [4, 5, 0.1], [6, 7, 0.9], [5, 1, 0.3]])
    >>> labels = ["a", "a", "a", "b", "b", "b"]
    >>> silent, found = constant_in_class(
    ...     X, labels, strategy="scratch", fold=0, feature_names=["f0", "f1", "f2"]
    ... )
    >>> silent
    {'a': 1, 'b': 0}
    >>> [(w["feature"], w["check"]) for w in found]
    [('f2', 'constant in a')]
    """
    arr = np.asarray(X, dtype=np.float64)
    labels_arr = np.asarray([str(v) for v in labels], dtype=object)
    varies = np.ptp(arr, axis=0) > 0 if arr.shape[0] else np.zeros(arr.shape[1], dtype=bool)
    silent: dict[str, int] = {}
    out = []
    for cls in sorted(set(labels_arr.tolist())):
        rows = arr[labels_arr == cls]
        if rows.shape[0] < min_group_size:
            continue
        flat = varies & (np.ptp(rows, axis=0) == 0)
        zero = flat & (rows[0] == 0)
        silent[cls] = int(zero.sum())
        odd = np.flatnonzero(flat & ~zero)
        if odd.size:
            msg = (
                f"{odd.size} feature(s) take one non-zero value for all {rows.shape[0]} {cls} "
                f"images ({_names(feature_names, odd)}), which real activations do not; their "
                f"tests for {cls} rest on ties. Check that features.parquet was not edited."
            )
            out.append(
                warning(strategy, fold, _names(feature_names, odd), f"constant in {cls}", msg)
            )
    return silent, out


def model_disagreement(
    recomputed: np.ndarray,
    dumped: np.ndarray,
    *,
    strategy: str,
    fold: int,
    feature_names: Sequence[str],
    what: str = "GAP features",
    rtol: float = 1e-3,
) -> tuple[float, list[dict[str, str]]]:
    """Dumped values the saved model does not reproduce.

    Parameters
    ----------
    recomputed : ndarray of shape (n_images, n)
        Values computed now from ``model.keras`` (e.g. the spatial mean of the
        ``out_relu`` maps, or the head's probabilities).
    dumped : ndarray of shape (n_images, n)
        The values in ``features.parquet``.
    strategy, fold
    feature_names : sequence of str
        Names of the columns.
    what : str
        Named in the message.
    rtol : float, default 1e-3
        Tolerance relative to ``max(1, max |dumped|)`` (float32 recomputation
        agrees to ~1e-6).

    Returns
    -------
    max_error : float
        Largest absolute difference (over finite entries).
    warnings : list of dict

    Examples
    --------
    >>> dumped = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> recomputed = dumped + np.array([[1e-6, 0.0], [0.0, 0.5]])  # f1 is off by 0.5
    >>> err, found = model_disagreement(
    ...     recomputed, dumped, strategy="scratch", fold=1, feature_names=["f0", "f1"]
    ... )
    >>> err, [w["feature"] for w in found]
    (0.5, ['f1'])
    >>> model_disagreement(dumped, dumped, strategy="scratch", fold=1, feature_names=["f0", "f1"])
    (0.0, [])
    """
    a = np.asarray(recomputed, dtype=np.float64)
    b = np.asarray(dumped, dtype=np.float64)
    diff = np.where(np.isfinite(a) & np.isfinite(b), np.abs(a - b), 0.0)
    if diff.size == 0:
        return float("nan"), []
    worst = diff.max(axis=0)
    err = float(worst.max())
    scale = max(1.0, float(np.nanmax(np.abs(np.where(np.isfinite(b), b, 0.0)))))
    off = np.flatnonzero(worst > rtol * scale)
    if not off.size:
        return err, []
    off = off[np.argsort(-worst[off], kind="stable")]
    msg = (
        f"the saved model does not reproduce the dumped {what}: {off.size} column(s) differ by up "
        f"to {err:.3g} (tolerance {rtol * scale:.2g}; worst {_names(feature_names, off, 3)}). The "
        "features and the model are not from the same training: re-run `biomark extract --force` "
        "for this fold; until then its attributions, maps and blackout describe a different model "
        "than its statistics."
    )
    return err, [warning(strategy, fold, _names(feature_names, off, 3), f"{what} vs model", msg)]
