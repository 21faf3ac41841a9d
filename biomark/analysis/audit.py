"""Shortcut audit: do features encode where an image came from?

In Apostolopoulos et al. (2020) every class came from its own collection:
COVID-19 from Cohen's GitHub collection, Pneumonia and Normal from Kermany et
al., the other classes from NIH ChestX-ray14. A feature that separates the
classes may then separate the *sources* (scanner, export pipeline, text
markers, cropping) rather than disease. This module measures that:

* :func:`source_predictability` -- within each class that has several sources,
  how well a cross-validated logistic regression recovers the source from the
  features (ROC AUC); plus the class x source confounding (Cramer's V).
* :func:`feature_source_association` -- per feature, the variance explained by
  source beyond class (nested OLS F-test, partial eta squared, BH q).
* :func:`shortcut_flags` -- boolean flags and a text column for a candidate
  table (outside the lungs, source-driven, model reads outside the lungs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.analysis.stats import bh_fdr
from biomark.data.labels import order_classes
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "SOURCE_AUC_RECOVERABLE",
    "SOURCE_AUC_WEAK",
    "feature_source_association",
    "shortcut_flags",
    "source_predictability",
]

logger = logging.getLogger(__name__)

#: Within-class source AUC above which the source counts as recoverable.
SOURCE_AUC_RECOVERABLE = 0.7
#: Within-class source AUC above which the source counts as weakly recoverable.
SOURCE_AUC_WEAK = 0.6


def _check_inputs(
    X: np.ndarray, labels: Sequence[str], sources: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"X must be a non-empty 2-D array (n_images, n_features), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"X must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise DataError("X has NaN or infinite values; drop or repair those images/features before the audit")
    out = []
    for name, values in (("labels", labels), ("sources", sources)):
        vals = np.asarray([str(v) for v in values], dtype=object)
        if vals.shape != (arr.shape[0],):
            raise DataError(f"{name} must have one entry per row of X ({arr.shape[0]}), got {vals.shape[0]}")
        if np.any(vals == ""):
            raise DataError(f"{name} has empty entries; every image needs a class and a source")
        out.append(vals)
    return arr, out[0], out[1]


def _verdict(auc: float) -> str:
    if auc > SOURCE_AUC_RECOVERABLE:
        return "source is recoverable"
    if auc > SOURCE_AUC_WEAK:
        return "source is weakly recoverable"
    return "source is not recoverable"


def _class_source_summary(labels: np.ndarray, sources: np.ndarray) -> tuple[float, str, dict[str, Any]]:
    table = pd.crosstab(pd.Series(labels, name="class"), pd.Series(sources, name="source"))
    classes = [c for c in order_classes(labels)]
    table = table.loc[classes]
    n_rows, n_cols = table.shape
    if min(n_rows, n_cols) < 2:
        v = float("nan")
        what = "class" if n_rows < 2 else "source"
        head = f"Cramer's V of class x source is undefined: there is only one {what}."
    else:
        chi2 = sps.chi2_contingency(table.to_numpy(), correction=False)[0]
        v = float(np.sqrt(chi2 / (table.to_numpy().sum() * (min(n_rows, n_cols) - 1))))
        head = f"Cramer's V of class x source = {v:.2f} (0 = source says nothing about class, 1 = source fixes class)."
    per_class = {c: [s for s in table.columns if table.loc[c, s] > 0] for c in classes}
    confounded = []
    for c in classes:
        others = {s for d in classes if d != c for s in per_class[d]}
        if not set(per_class[c]) & others and n_rows > 1:
            confounded.append(f"{c} ({', '.join(per_class[c])})")
    if confounded:
        tail = (
            " Classes whose images come only from sources that supply no other class: "
            + "; ".join(confounded)
            + ". For these classes source and class cannot be told apart: any feature that separates the class "
            "from the rest also separates its source(s) from the others."
        )
    elif n_rows > 1 and n_cols > 1:
        tail = " Every class shares at least one source with another class."
    else:
        tail = ""
    nested = {c: {s: int(table.loc[c, s]) for s in table.columns if table.loc[c, s] > 0} for c in classes}
    return v, head + tail, nested


def _cv_auc(
    Xc: np.ndarray, yc: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], seed: int
) -> tuple[list[float], list[str]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    levels = np.unique(yc)
    aucs: list[float] = []
    notes: list[str] = []
    for i, (train, test) in enumerate(splits):
        if np.unique(yc[train]).size < levels.size or np.unique(yc[test]).size < levels.size:
            notes.append(f"fold {i}: not every source in both train and test; fold left out")
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
        model.fit(Xc[train], yc[train])
        proba = model.predict_proba(Xc[test])
        if levels.size == 2:
            aucs.append(float(roc_auc_score(yc[test], proba[:, 1])))
        else:
            aucs.append(float(roc_auc_score(yc[test], proba, multi_class="ovr", average="macro", labels=levels)))
    return aucs, notes


def source_predictability(
    X: np.ndarray,
    labels: Sequence[str],
    sources: Sequence[str],
    *,
    folds: np.ndarray | None = None,
    patient_ids: Sequence[str] | None = None,
    n_splits: int = 5,
    seed: int = 0,
    min_per_source: int = 5,
) -> pd.DataFrame:
    """Can the image source be predicted from the features within a class?

    For each class with at least two sources of ``>= min_per_source`` images,
    a standardised L2 logistic regression (``C = 1``) predicts the source from
    the features; the ROC AUC (one-vs-rest macro average for more than two
    sources) is computed on each held-out fold. Verdicts:
    ``auc > 0.7`` "source is recoverable" (:data:`SOURCE_AUC_RECOVERABLE`),
    ``0.6 < auc <= 0.7`` "source is weakly recoverable"
    (:data:`SOURCE_AUC_WEAK`), otherwise "source is not recoverable" (0.5 is
    chance).

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
    labels, sources : sequence of str, length n_images
        Class and source collection of each image.
    folds : ndarray of shape (n_images,), optional
        Fold id of each image (the run's folds). Each fold is held out in turn
        (grouped CV); a fold in which a source is missing from the training or
        the test part is left out and noted. Default: ``StratifiedGroupKFold``
        (shuffled, ``seed``) on the source grouped by ``patient_ids`` when
        given (or ``StratifiedKFold`` without them), with
        ``min(n_splits, smallest source count)`` splits.
    patient_ids : sequence of str, length n_images, optional
        Patient of each image, used by the default splitter so that films of
        one patient never sit on both sides of a split (they share anatomy,
        which would otherwise make source look recoverable). Ignored when
        ``folds`` is given (the run's folds are already patient-grouped).
    n_splits : int, default 5
    seed : int, default 0
        Seeds the splitter and the solver.
    min_per_source : int, default 5
        Sources with fewer images in a class are left out of that class's
        test (noted in ``reason``).

    Returns
    -------
    pandas.DataFrame
        One row per class: ``class, status`` ("tested" or "skipped"), ``n``
        (images used), ``n_sources, sources`` (``name:count``), ``auc,
        auc_std`` (mean and SD over folds), ``n_folds, verdict, reason``.
        ``attrs["class_source_cramers_v"]``: Cramer's V of the class x source
        table (scipy ``chi2_contingency``, no continuity correction; NaN with
        one class or one source). ``attrs["summary"]``: a plain sentence on
        the confounding. ``attrs["class_source_table"]``: counts per class and
        source. ``attrs["thresholds"]``: the verdict thresholds.

    Raises
    ------
    DataError
        If the inputs do not match in length, ``X`` is not finite, or a
        label/source is empty.
    ConfigError
        If ``folds`` has the wrong length, or ``n_splits < 2`` or
        ``min_per_source < 2``.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    X, labels_arr, src = _check_inputs(X, labels, sources)
    patients = None
    if patient_ids is not None:
        patients = np.asarray(patient_ids, dtype=str)
        if patients.shape != (X.shape[0],):
            raise DataError(f"patient_ids must have one entry per image ({X.shape[0]}), got shape {patients.shape}")
    if int(n_splits) != n_splits or n_splits < 2:
        raise ConfigError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    if int(min_per_source) != min_per_source or min_per_source < 2:
        raise ConfigError(f"min_per_source must be an integer >= 2, got {min_per_source!r}")
    fold_arr = None
    if folds is not None:
        fold_arr = np.asarray(folds)
        if fold_arr.shape != (X.shape[0],):
            raise ConfigError(f"folds must have one fold id per image ({X.shape[0]}), got shape {fold_arr.shape}")

    rows = []
    for cls in order_classes(labels_arr):
        in_cls = labels_arr == cls
        counts = pd.Series(src[in_cls]).value_counts()
        big = counts[counts >= min_per_source]
        small = counts[counts < min_per_source]
        notes = [f"{len(small)} source(s) with < {min_per_source} images left out: "
                 + ", ".join(f"{s}:{c}" for s, c in small.items())] if len(small) else []
        row: dict[str, Any] = {
            "class": cls, "status": "skipped", "n": int(in_cls.sum()), "n_sources": int(len(big)),
            "sources": ", ".join(f"{s}:{c}" for s, c in big.items()),
            "auc": np.nan, "auc_std": np.nan, "n_folds": 0, "verdict": "not tested",
        }
        if len(big) < 2:
            what = f"only one source ({big.index[0]}) has" if len(big) == 1 else "no source has"
            row["reason"] = "; ".join([f"{what} >= {min_per_source} images"] + notes)
            rows.append(row)
            logger.info("source_predictability: %s skipped: %s", cls, row["reason"])
            continue
        keep = in_cls & np.isin(src, big.index.to_numpy())
        Xc, yc = X[keep], src[keep]
        if fold_arr is None and patients is not None:
            groups = patients[keep]
            per_source = pd.Series(groups).groupby(yc).nunique()
            k = int(min(n_splits, per_source.min()))
            if k < 2:
                row["reason"] = "; ".join([f"a source has fewer than 2 patients in {cls}"] + notes)
                rows.append(row)
                continue
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = list(splitter.split(Xc, yc, groups))
        elif fold_arr is None:
            k = int(min(n_splits, big.min()))
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = list(splitter.split(Xc, yc))
        else:
            fc = fold_arr[keep]
            splits = [(np.flatnonzero(fc != f), np.flatnonzero(fc == f)) for f in np.unique(fc)]
        aucs, fold_notes = _cv_auc(Xc, yc, splits, seed)
        notes += fold_notes
        row["n"] = int(keep.sum())
        row["n_folds"] = len(aucs)
        if not aucs:
            row["reason"] = "; ".join(["no fold had every source in both train and test"] + notes)
        else:
            row.update(status="tested", auc=float(np.mean(aucs)),
                       auc_std=float(np.std(aucs, ddof=1)) if len(aucs) > 1 else np.nan)
            row["verdict"] = _verdict(row["auc"])
            row["reason"] = "; ".join(notes)
        rows.append(row)

    frame = pd.DataFrame(rows, columns=["class", "status", "n", "n_sources", "sources", "auc", "auc_std",
                                        "n_folds", "verdict", "reason"])
    v, summary, table = _class_source_summary(labels_arr, src)
    frame.attrs["class_source_cramers_v"] = v
    frame.attrs["summary"] = summary
    frame.attrs["class_source_table"] = table
    frame.attrs["thresholds"] = {"recoverable": SOURCE_AUC_RECOVERABLE, "weak": SOURCE_AUC_WEAK}
    return frame


def _dummies(values: np.ndarray) -> np.ndarray:
    levels, codes = np.unique(values, return_inverse=True)
    out = np.zeros((values.size, levels.size))
    out[np.arange(values.size), codes] = 1.0
    return out


def feature_source_association(
    X: np.ndarray,
    labels: Sequence[str],
    sources: Sequence[str],
    *,
    feature_names: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per feature, how much variance source explains beyond class.

    Two OLS models per feature -- ``feature ~ class`` (reduced) and
    ``feature ~ class + source`` (full) -- compared by the nested F-test;
    ``partial_eta2 = (RSS_reduced - RSS_full) / RSS_reduced`` is the share of
    the variance left after class that source explains. statsmodels fits one
    response at a time; the design is the same for every feature, so the
    residual sums of squares of all 1280 features come from one least-squares
    solve here (the tests check it against statsmodels ``compare_f_test``).

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
    labels, sources : sequence of str, length n_images
    feature_names : sequence of str, optional
        Default ``f0000, f0001, ...``.
    alpha : float, default 0.05
        FDR level of ``flag_source``.

    Returns
    -------
    pandas.DataFrame
        Indexed by feature name with columns ``feature_index, source_F,
        source_df_num, source_df_den, source_p, source_q`` (BH over features),
        ``partial_eta2, flag_source`` (``source_q < alpha``; nullable boolean, NA
        where untestable). A feature with no
        variance left after class gets F 0, p 1, eta 0. When source adds
        nothing to class in the design (every source nested in one class, or a
        single source) nothing can be tested: p, q, F are NaN and
        ``attrs["skipped"]`` says why.

    Raises
    ------
    DataError
        If the inputs do not match in length, ``X`` is not finite, or a
        label/source is empty, or there are no residual degrees of freedom.
    ConfigError
        If ``alpha`` is not in (0, 1).
    """
    X, labels_arr, src = _check_inputs(X, labels, sources)
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    n, p_feat = X.shape
    if feature_names is None:
        names = [f"f{j:04d}" for j in range(p_feat)]
    else:
        names = [str(v) for v in feature_names]
        if len(names) != p_feat:
            raise DataError(f"feature_names has {len(names)} entries but X has {p_feat} feature columns")
    reduced = _dummies(labels_arr)
    full = np.hstack([reduced, _dummies(src)])
    rank_r = int(np.linalg.matrix_rank(reduced))
    rank_f = int(np.linalg.matrix_rank(full))
    df_num, df_den = rank_f - rank_r, n - rank_f
    if df_den < 1:
        raise DataError(f"{n} images leave no residual degrees of freedom for class + source ({rank_f} parameters)")

    def rss(design: np.ndarray) -> np.ndarray:
        beta = np.linalg.lstsq(design, X, rcond=None)[0]
        return np.sum((X - design @ beta) ** 2, axis=0)

    rss_r = rss(reduced)
    skipped: list[dict[str, Any]] = []
    frame = pd.DataFrame(index=pd.Index(names, name="feature"))
    frame["feature_index"] = np.arange(p_feat)
    if df_num == 0:
        reason = ("source adds nothing to class in this design (each source lies within one class, or there is "
                  "one source): variance due to source cannot be separated from class")
        skipped.append({"test": "source_F", "class": None, "n": n, "reason": reason})
        logger.warning("feature_source_association: %s", reason)
        f_stat = p_val = eta = np.full(p_feat, np.nan)
    else:
        rss_f = rss(full)
        # Relative tolerance: rounding leaves ~1e-30 of "variance" in a
        # constant feature, which must not become a test.
        total = np.sum((X - X.mean(axis=0)) ** 2, axis=0)
        tol = 1e-12 * total
        gain = np.clip(rss_r - rss_f, 0.0, None)
        live = (total > 0.0) & (rss_r > tol)
        exact = live & (rss_f <= tol)
        f_stat = np.zeros(p_feat)
        p_val = np.ones(p_feat)
        eta = np.zeros(p_feat)
        fit = live & ~exact
        f_stat[fit] = (gain[fit] / df_num) / (rss_f[fit] / df_den)
        p_val[fit] = sps.f.sf(f_stat[fit], df_num, df_den)
        eta[live] = gain[live] / rss_r[live]
        f_stat[exact], p_val[exact] = np.inf, 0.0
    frame["source_F"] = f_stat
    frame["source_df_num"] = df_num
    frame["source_df_den"] = df_den
    frame["source_p"] = p_val
    frame["source_q"] = bh_fdr(np.asarray(p_val, dtype=np.float64), alpha)[1]
    frame["partial_eta2"] = eta
    q = frame["source_q"].to_numpy()
    flag = pd.array(q < alpha, dtype="boolean")
    flag[np.isnan(q)] = pd.NA  # untestable is unknown, not clean
    frame["flag_source"] = flag
    frame.attrs["skipped"] = skipped
    frame.attrs["settings"] = {"alpha": float(alpha), "model": "feature ~ class + source vs feature ~ class",
                               "n_images": n}
    return frame


def shortcut_flags(
    candidates: pd.DataFrame,
    *,
    lung_fraction_col: str = "lung_fraction",
    source_q_col: str = "source_q",
    min_lung_fraction: float = 0.5,
    alpha: float = 0.05,
    blackout_survival: float | None = None,
    max_blackout_survival: float = 0.5,
) -> pd.DataFrame:
    """Flag candidate features that look like shortcuts rather than biomarkers.

    Parameters
    ----------
    candidates : pandas.DataFrame
        One row per candidate feature with the columns named below.
    lung_fraction_col : str, default "lung_fraction"
        Fraction of the feature's attribution that falls inside the lungs.
    source_q_col : str, default "source_q"
        BH q of "source beyond class" (:func:`feature_source_association`).
    min_lung_fraction : float, default 0.5
        ``flag_outside_lungs`` when the lung fraction is below this.
    alpha : float, default 0.05
        ``flag_source`` when the source q-value is below this.
    blackout_survival : float, optional
        Model-level share of accuracy (above chance) kept when the lungs are
        blacked out. When given, ``flag_model_reads_outside_lungs`` is added
        (the same for every row): True when it is ``>= max_blackout_survival``.
    max_blackout_survival : float, default 0.5

    Returns
    -------
    pandas.DataFrame
        A copy of ``candidates`` with nullable boolean columns
        ``flag_outside_lungs``, ``flag_source`` (NA where the input value is
        NaN: unknown, not clean), optionally ``flag_model_reads_outside_lungs``,
        and a text column ``flags`` ("" when nothing is flagged; unknown values
        are named).

    Raises
    ------
    DataError
        If a named column is missing.
    ConfigError
        If a threshold is out of range.
    """
    missing = [c for c in (lung_fraction_col, source_q_col) if c not in candidates.columns]
    if missing:
        raise DataError(
            f"candidates lacks column(s) {missing}; merge the lung fractions and feature_source_association's "
            "source_q first, or name the columns with lung_fraction_col/source_q_col"
        )
    if not 0.0 <= min_lung_fraction <= 1.0:
        raise ConfigError(f"min_lung_fraction must lie in [0, 1], got {min_lung_fraction!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    out = candidates.copy()
    lung = pd.to_numeric(out[lung_fraction_col], errors="coerce").astype("Float64")
    q = pd.to_numeric(out[source_q_col], errors="coerce").astype("Float64")
    out["flag_outside_lungs"] = (lung < min_lung_fraction).astype("boolean")
    out["flag_source"] = (q < alpha).astype("boolean")
    texts: list[list[str]] = [[] for _ in range(len(out))]
    for i, (lf, qv) in enumerate(zip(lung, q)):
        if pd.isna(lf):
            texts[i].append("lung fraction unknown")
        elif lf < min_lung_fraction:
            texts[i].append(f"outside lungs (lung fraction {lf:.2f} < {min_lung_fraction:g})")
        if pd.isna(qv):
            texts[i].append("source association unknown")
        elif qv < alpha:
            texts[i].append(f"source beyond class (q = {qv:.2g} < {alpha:g})")
    if blackout_survival is not None:
        if not np.isfinite(blackout_survival):
            raise ConfigError(f"blackout_survival must be a finite number, got {blackout_survival!r}")
        reads = bool(blackout_survival >= max_blackout_survival)
        out["flag_model_reads_outside_lungs"] = pd.array([reads] * len(out), dtype="boolean")
        if reads:
            for t in texts:
                t.append(f"model reads outside lungs (blackout survival {blackout_survival:.2f} "
                         f">= {max_blackout_survival:g})")
    out["flags"] = ["; ".join(t) for t in texts]
    return out
