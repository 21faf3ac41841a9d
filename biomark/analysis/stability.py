"""Stability of feature importance across cross-validation folds.

A candidate biomarker should be important in every fold, not in one lucky
split. The input is an importance matrix of shape ``(n_folds, n_features)``
(e.g. mean ``|SHAP|`` per fold); larger means more important.

* :func:`topk_frequency` -- per feature, the fraction of folds in which it is
  among the ``k`` most important; given each fold's near-copies
  (:func:`biomark.analysis.redundancy.near_copy_matrix`), the fraction in which
  it or a near-copy of it in that fold's network is. A network trained from
  scratch spreads one direction over many near-copy units, and which copy the
  attributions rank first is partly chance, so a copy ranked in its place says
  the same thing about the fold.
* :func:`kendalls_w` / :func:`kendalls_w_test` -- Kendall's coefficient of
  concordance of the folds' rankings (raters = folds, items = features), with
  its chi-square test.
* :func:`stability_table` -- one row per feature with all of the above.
* :func:`fold_class_effects` -- stability of what a feature tracks rather than
  of its rank: per fold, the feature's class-vs-rest Cliff's delta on that
  fold's out-of-fold images, and the share of folds showing the pooled
  effect's sign at a non-negligible size. Used where units could not be
  matched well across folds (:mod:`biomark.analysis.alignment`), so a rank
  comparison would compare different units.
* :func:`fold_radiomic_agreement` -- the same for what a feature correlates
  with: the share of folds in which its strongest radiomic correlate belongs
  to the family of its strongest correlate over all images.

Ranks: rank 1 is the most important feature of a fold. Tied importances share
their mean rank (midranks) in :func:`kendalls_w` and ``mean_rank``; for the
top-k membership ties are broken by the lower feature index, so exactly ``k``
features are in each fold's top ``k``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.analysis.inputs import check_matrix

__all__ = [
    "fold_class_effects",
    "fold_radiomic_agreement",
    "kendalls_w",
    "kendalls_w_test",
    "stability_table",
    "topk_frequency",
]

logger = logging.getLogger(__name__)


#: How :func:`~biomark.analysis.inputs.check_matrix` names the rows of ``importance``, and the fix
#: it suggests.
_ROWS, _FIX = "folds (rows)", "fill or drop those features first"


def _check_k(k: int, n_features: int) -> int:
    if int(k) != k or not 1 <= k <= n_features:
        raise ValueError(f"k must be an integer in [1, n_features={n_features}], got {k!r}")
    return int(k)


def _descending_midranks(importance: np.ndarray) -> np.ndarray:
    """Per fold (row), rank 1 = largest importance; ties get their mean rank."""
    return sps.rankdata(-importance, axis=1)


def topk_frequency(
    importance: np.ndarray, k: int, *, copies: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """Fraction of folds in which each feature is among the top ``k``.

    Parameters
    ----------
    importance : array-like of shape (n_folds, n_features)
        Importance per fold; larger is more important.
    k : int
        Size of the top set, 1 <= k <= n_features. Ties at the boundary are
        broken by the lower feature index, so each fold contributes exactly
        ``k`` features.
    copies : sequence of bool arrays of shape (n_features, n_features), optional
        One per fold (row of ``importance``): which features are near-copies of
        which in that fold's network
        (:func:`~biomark.analysis.redundancy.near_copy_matrix`). A feature then
        counts for a fold when it or one of its near-copies is in the fold's
        top ``k``.

    Returns
    -------
    ndarray of shape (n_features,)
        Values in [0, 1]; without ``copies`` they sum to ``k``.

    Raises
    ------
    ValueError
        If ``importance`` is not a finite 2-D real array, ``k`` is out of
        range, or ``copies`` does not hold one square matrix of the features per
        fold.

    Examples
    --------
    >>> topk_frequency([[3, 2, 1], [1, 2, 3]], k=1)
    array([0.5, 0. , 0.5])

    Features 0 and 1 are near-copies in both folds, so each counts wherever
    the other ranks first:

    >>> same = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    >>> topk_frequency([[3, 2, 1], [2, 3, 1]], k=1, copies=[same, same])
    array([1., 1., 0.])
    """
    imp = check_matrix(importance, "importance", rows=_ROWS, fix=_FIX)
    k = _check_k(k, imp.shape[1])
    order = np.argsort(-imp, axis=1, kind="stable")[:, :k]
    if copies is None:
        counts = np.bincount(order.ravel(), minlength=imp.shape[1])
        return counts / imp.shape[0]
    n_folds, n = imp.shape
    if len(copies) != n_folds:
        raise ValueError(
            f"copies has {len(copies)} matrices for {n_folds} folds; give one per fold (row)"
        )
    hits = np.zeros(n)
    for fold, (top, same) in enumerate(zip(order, copies, strict=True)):
        same = np.asarray(same, dtype=bool)
        if same.shape != (n, n):
            raise ValueError(
                f"copies[{fold}] has shape {same.shape}; it must be ({n}, {n}), one row and one "
                "column per feature"
            )
        hits += same[:, top].any(axis=1)
    return hits / n_folds


def _kendall_w_parts(imp: np.ndarray, ties: bool) -> tuple[float, int, int]:
    # Kendall's W is in neither scipy nor statsmodels (the Friedman test is:
    # chi2 = m (n - 1) W with the same tie correction, which the tests check),
    # so it is written out here:
    #   W = 12 S / (m^2 (n^3 - n) - m sum_j T_j),  S = sum_i (R_i - mean R)^2,
    #   T_j = sum over tie groups in fold j of (t^3 - t).
    m, n = imp.shape
    ranks = _descending_midranks(imp)
    totals = ranks.sum(axis=0)
    s = float(np.sum((totals - totals.mean()) ** 2))
    denom = m**2 * (n**3 - n)
    if ties:
        tie_sum = 0.0
        for row in imp:
            _, counts = np.unique(row, return_counts=True)
            tie_sum += float(np.sum(counts.astype(np.float64) ** 3 - counts))
        denom -= m * tie_sum
    if denom <= 0:
        raise ValueError(
            "Kendall's W is undefined: every fold gives all features the same importance (all "
            "ranks tied)"
        )
    return 12.0 * s / denom, m, n


def kendalls_w(importance: np.ndarray, *, ties: bool = True) -> float:
    """Kendall's coefficient of concordance of the folds' feature rankings.

    Parameters
    ----------
    importance : array-like of shape (n_folds, n_features)
        Importance per fold (raters = folds, items = features); at least two
        folds and two features.
    ties : bool, default True
        Apply the tie correction to the denominator (ranks are midranks either
        way).

    Returns
    -------
    float
        W in [0, 1]: 1 when every fold ranks the features identically, near
        0 for unrelated rankings (its expectation under independence is
        ``1 / n_folds``).

    Raises
    ------
    ValueError
        If ``importance`` is not a finite 2-D real array with at least two
        folds and two features, or every fold ties all features.

    Examples
    --------
    >>> kendalls_w([[3.0, 2.0, 1.0], [30.0, 20.0, 10.0]])
    1.0
    """
    imp = check_matrix(importance, "importance", min_rows=2, rows=_ROWS, fix=_FIX)
    if imp.shape[1] < 2:
        raise ValueError(f"Kendall's W needs at least two features, got {imp.shape[1]}")
    return _kendall_w_parts(imp, ties)[0]


def kendalls_w_test(importance: np.ndarray, *, ties: bool = True) -> tuple[float, float]:
    """Kendall's W and the p-value of its chi-square test of no agreement.

    ``chi2 = n_folds (n_features - 1) W`` on ``n_features - 1`` degrees of
    freedom (the Friedman statistic); a large-sample approximation.

    Parameters
    ----------
    importance : array-like of shape (n_folds, n_features)
    ties : bool, default True
        See :func:`kendalls_w`.

    Returns
    -------
    (W, p) : tuple of float

    Raises
    ------
    ValueError
        As :func:`kendalls_w`.
    """
    imp = check_matrix(importance, "importance", min_rows=2, rows=_ROWS, fix=_FIX)
    if imp.shape[1] < 2:
        raise ValueError(f"Kendall's W needs at least two features, got {imp.shape[1]}")
    w, m, n = _kendall_w_parts(imp, ties)
    chi2 = m * (n - 1) * w
    return w, float(sps.chi2.sf(chi2, n - 1))


def stability_table(
    importance: np.ndarray,
    *,
    k: int = 20,
    feature_names: Sequence[str] | None = None,
    copies: Sequence[np.ndarray] | None = None,
) -> pd.DataFrame:
    """Per-feature importance summary across folds, most stable first.

    Parameters
    ----------
    importance : array-like of shape (n_folds, n_features)
        Importance per fold; larger is more important.
    k : int, default 20
        Size of the top set for ``topk_freq``.
    feature_names : sequence of str, optional
        Default ``f0000, f0001, ...``.
    copies : sequence of bool arrays, optional
        Each fold's near-copies, as in :func:`topk_frequency`: ``topk_freq``
        then counts a near-copy in a fold's top ``k`` as the feature, and
        ``topk_freq_own`` keeps the feature's own frequency.

    Returns
    -------
    pandas.DataFrame
        Indexed by feature name with columns ``feature_index,
        mean_importance, std_importance`` (ddof=1; NaN with one fold),
        ``mean_rank`` (1 = most important, midranks), ``topk_freq`` (and with
        ``copies``, ``topk_freq_own``); sorted by
        ``topk_freq`` (descending), then ``mean_rank``. ``attrs`` holds ``k``,
        ``n_folds`` and, with at least two folds, ``kendalls_w`` and
        ``kendalls_w_p`` (NaN where W is undefined).

    Raises
    ------
    ValueError
        If ``importance`` is not a finite 2-D real array, ``k`` is out of
        range, or ``feature_names`` has the wrong length.
    """
    imp = check_matrix(importance, "importance", rows=_ROWS, fix=_FIX)
    m, n = imp.shape
    k = _check_k(k, n)
    if feature_names is None:
        names = [f"f{j:04d}" for j in range(n)]
    else:
        names = [str(v) for v in feature_names]
        if len(names) != n:
            raise ValueError(
                f"feature_names has {len(names)} entries but importance has {n} features"
            )
    frame = pd.DataFrame(
        {
            "feature_index": np.arange(n),
            "mean_importance": imp.mean(axis=0),
            "std_importance": imp.std(axis=0, ddof=1) if m > 1 else np.full(n, np.nan),
            "mean_rank": _descending_midranks(imp).mean(axis=0),
            "topk_freq": topk_frequency(imp, k, copies=copies),
        },
        index=pd.Index(names, name="feature"),
    )
    if copies is not None:
        frame["topk_freq_own"] = topk_frequency(imp, k)
    frame = frame.sort_values(["topk_freq", "mean_rank"], ascending=[False, True], kind="stable")
    frame.attrs["k"] = k
    frame.attrs["n_folds"] = m
    if m >= 2 and n >= 2:
        try:
            w, p = kendalls_w_test(imp)
        except ValueError as err:
            logger.warning("Kendall's W not computed: %s", err)
            w, p = float("nan"), float("nan")
        frame.attrs["kendalls_w"] = w
        frame.attrs["kendalls_w_p"] = p
    return frame


def fold_class_effects(
    X: np.ndarray,
    labels: Sequence[str],
    folds: Sequence[int],
    *,
    positive: str,
    feature_names: Sequence[str] | None = None,
    min_effect: float = 0.147,
    min_group_size: int = 3,
) -> pd.DataFrame:
    """Does each feature show the same class effect in every fold?

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        Out-of-fold features; each row belongs to the fold that tested it (for
        matched unit families, column ``j`` of a row is that fold's member).
    labels : sequence of str, length n_images
    folds : sequence of int, length n_images
    positive : str
        The class contrasted with the rest.
    feature_names : sequence of str, optional
    min_effect : float, default 0.147
        A fold shows the effect when its Cliff's delta has the pooled delta's
        sign and ``|delta| >= min_effect``.
    min_group_size : int, default 3
        Folds with fewer images of ``positive`` (or of the rest) are not counted.

    Returns
    -------
    pandas.DataFrame
        Indexed by feature name: ``delta_pooled``, ``delta_f<k>`` per fold
        (NaN for a fold left out), ``n_folds`` (folds counted) and
        ``fold_effect_freq`` (share of counted folds showing the effect; NaN
        when no fold counts or the pooled delta is 0).

    Raises
    ------
    ValueError
        If the inputs do not match in length or ``X`` is not finite.
    """
    arr = np.asarray(X, dtype=np.float64)
    labels_arr = np.asarray([str(v) for v in labels], dtype=object)
    fold_arr = np.asarray(folds)
    if arr.ndim != 2 or labels_arr.size != arr.shape[0] or fold_arr.size != arr.shape[0]:
        raise ValueError(
            f"X {arr.shape}, {labels_arr.size} labels and {fold_arr.size} folds do not match"
        )
    if not np.isfinite(arr).all():
        raise ValueError("X holds NaN or infinite values; drop those features first")
    names = (
        [f"f{j:04d}" for j in range(arr.shape[1])]
        if feature_names is None
        else [str(v) for v in feature_names]
    )

    def delta(rows: np.ndarray) -> np.ndarray:
        pos = rows & (labels_arr == positive)
        neg = rows & (labels_arr != positive)
        if pos.sum() < min_group_size or neg.sum() < min_group_size:
            return np.full(arr.shape[1], np.nan)
        # Cliff's delta = 2 U / (n_pos n_neg) - 1, U of the Mann-Whitney test (ties count one half).
        u = sps.mannwhitneyu(arr[pos], arr[neg], axis=0, method="asymptotic").statistic
        return 2.0 * np.asarray(u) / (pos.sum() * neg.sum()) - 1.0

    pooled = delta(np.ones(arr.shape[0], dtype=bool))
    frame = pd.DataFrame({"delta_pooled": pooled}, index=pd.Index(names, name="feature"))
    shown = np.zeros(arr.shape[1])
    counted = np.zeros(arr.shape[1])
    for f in sorted(set(fold_arr.tolist())):
        d = delta(fold_arr == f)
        frame[f"delta_f{f}"] = d
        ok = np.isfinite(d)
        counted += ok
        shown += ok & (np.sign(d) == np.sign(pooled)) & (np.abs(d) >= min_effect)
    frame["n_folds"] = counted.astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where((counted > 0) & (pooled != 0), shown / counted, np.nan)
    frame["fold_effect_freq"] = freq
    return frame


def _spearman_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Spearman correlation of every column of ``A`` with every column of ``B`` (NaN for constant
    columns)."""
    ra, rb = sps.rankdata(A, axis=0), sps.rankdata(B, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    na, nb = np.sqrt((ra * ra).sum(axis=0)), np.sqrt((rb * rb).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (ra / na).T @ (rb / nb)


def fold_radiomic_agreement(
    X: np.ndarray,
    R: np.ndarray,
    folds: Sequence[int] | np.ndarray,
    *,
    families: Sequence[str],
    feature_names: Sequence[str] | None = None,
    min_images: int = 10,
) -> pd.DataFrame:
    """Does each feature correlate with the same kind of radiomic feature in every fold?

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        Out-of-fold features (for matched unit families, each row's fold member).
    R : array-like of shape (n_images, n_radiomic)
        Radiomic features of the same images, finite.
    folds : sequence of int, length n_images
    families : sequence of str, length n_radiomic
        Family of each radiomic column (e.g. ``biomark.analysis.associate.radiomic_family``).
    feature_names : sequence of str, optional
    min_images : int, default 10
        Folds with fewer images are not counted.

    Returns
    -------
    pandas.DataFrame
        Indexed by feature name: ``radiomic_family`` (family of the strongest
        Spearman correlate over all images), ``family_f<k>`` per fold (empty
        for a fold left out), ``radiomic_family_freq`` (share of counted folds
        whose strongest correlate has that family; NaN when none counts).

    Raises
    ------
    ValueError
        If the shapes do not match or an input is not finite.
    """
    arr = np.asarray(X, dtype=np.float64)
    rad = np.asarray(R, dtype=np.float64)
    fold_arr = np.asarray(folds)
    fams = np.asarray([str(v) for v in families], dtype=object)
    if (
        arr.ndim != 2
        or rad.ndim != 2
        or rad.shape[0] != arr.shape[0]
        or fold_arr.size != arr.shape[0]
        or fams.size != rad.shape[1]
    ):
        raise ValueError(
            f"X {arr.shape}, R {rad.shape}, {fold_arr.size} folds and {fams.size} families do not "
            "match"
        )
    if not (np.isfinite(arr).all() and np.isfinite(rad).all()):
        raise ValueError(
            "X and R must be finite; drop the images or columns with missing values first"
        )
    names = (
        [f"f{j:04d}" for j in range(arr.shape[1])]
        if feature_names is None
        else [str(v) for v in feature_names]
    )

    def top_family(rows: np.ndarray) -> np.ndarray:
        rho = np.nan_to_num(np.abs(_spearman_matrix(arr[rows], rad[rows])), nan=-1.0)
        return fams[rho.argmax(axis=1)]

    pooled = top_family(np.ones(arr.shape[0], dtype=bool))
    frame = pd.DataFrame({"radiomic_family": pooled}, index=pd.Index(names, name="feature"))
    agree = np.zeros(arr.shape[1])
    counted = 0
    for f in sorted(set(fold_arr.tolist())):
        rows = fold_arr == f
        if rows.sum() < min_images:
            frame[f"family_f{f}"] = ""
            continue
        top = top_family(rows)
        frame[f"family_f{f}"] = top
        agree += top == pooled
        counted += 1
    frame["radiomic_family_freq"] = agree / counted if counted else np.nan
    return frame
