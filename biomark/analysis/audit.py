"""Shortcut audit: do features encode where an image came from?

In Apostolopoulos et al. (2020) every class came from its own collection:
COVID-19 from Cohen's GitHub collection, Pneumonia and Normal from Kermany et
al., the other classes from NIH ChestX-ray14. A feature that separates the
classes may then separate the *sources* (scanner, export pipeline, text
markers, cropping) rather than disease. This module measures that:

* :func:`source_predictability` -- within each class that has several sources,
  how well a cross-validated ridge classifier recovers the source from the
  features (ROC AUC), read against a permutation null of the source labels
  within the class; plus the class x source confounding (Cramer's V).
* The sentences on which classes cannot be told apart from their source come
  from :func:`biomark.analysis.by_source.confounding_sentences`.
* Per feature, the variance source explains beyond class, and the shortcut
  flags of a candidate table, are in :mod:`biomark.analysis.source_flags`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.analysis.by_source import class_sources, confounding_sentences
from biomark.analysis.class_splits import class_splits
from biomark.analysis.held_out_auc import fold_aucs, permuted_between_groups, ridge_hats
from biomark.analysis.inputs import check_labels, check_matrix
from biomark.analysis.stats import holm
from biomark.config import ReportPlanSettings
from biomark.data.labels import order_classes
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "POOLED_RECOVERABLE",
    "RECOVERABLE",
    "SHOWN_COLUMNS",
    "SOURCE_AUC_RECOVERABLE",
    "SOURCE_AUC_WEAK",
    "SPLIT_REPEATS",
    "WEAKLY_RECOVERABLE",
    "flagged_rows",
    "recoverable_classes",
    "source_predictability",
    "source_recoverable",
]

logger = logging.getLogger(__name__)

#: Within-class source AUC above which the source counts as recoverable (default of the plan's
#: ``report.source_auc_recoverable``).
SOURCE_AUC_RECOVERABLE: float = ReportPlanSettings.source_auc_recoverable
#: Within-class source AUC above which the source counts as weakly recoverable
#: (``report.source_auc_weak``).
SOURCE_AUC_WEAK: float = ReportPlanSettings.source_auc_weak
#: Shuffles of the patient-grouped split averaged when no run folds are given (``n_repeats``).
SPLIT_REPEATS: int = 5
#: The columns of a :func:`source_predictability` table a reader needs (the report's tables).
SHOWN_COLUMNS: tuple[str, ...] = (
    "class",
    "status",
    "n",
    "sources",
    "auc",
    "null_q95",
    "p",
    "p_adjusted",
    "verdict",
    "reason",
)


#: A class's verdicts, and the pooled test's verdict that the source is recoverable.
RECOVERABLE = "source is recoverable"
WEAKLY_RECOVERABLE = "source is weakly recoverable"
POOLED_RECOVERABLE = "source is recoverable within classes"


def _verdict(auc: float, p_adjusted: float, alpha: float, recoverable: float) -> str:
    if not p_adjusted < alpha:
        return "source is not recoverable"
    if auc > recoverable:
        return RECOVERABLE
    return WEAKLY_RECOVERABLE


def flagged_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`source_predictability` table whose source is recoverable, or weakly."""
    return frame[frame["verdict"].astype(str).isin((RECOVERABLE, WEAKLY_RECOVERABLE))]


def recoverable_classes(frame: pd.DataFrame) -> list[str]:
    """The classes of a :func:`source_predictability` table whose source is recoverable, or
    weakly."""
    return flagged_rows(frame)["class"].astype(str).tolist()


def source_recoverable(frame: pd.DataFrame, pooled: dict[str, Any]) -> bool:
    """Whether a :func:`source_predictability` table finds the source recoverable: in a class, or
    pooled."""
    by_class = (frame["verdict"].astype(str) == RECOVERABLE).any()
    return bool(by_class or pooled.get("verdict") == POOLED_RECOVERABLE)


def _class_source_summary(
    labels: np.ndarray, sources: np.ndarray
) -> tuple[float, str, dict[str, Any]]:
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
        head = (
            f"Cramer's V of class x source = {v:.2f} (0 = source says nothing about class, 1 = "
            "source fixes class)."
        )
    sentences = confounding_sentences(class_sources(labels, sources)) if n_cols > 1 else []
    if sentences:
        tail = " " + " ".join(sentences)
    elif n_rows > 1 and n_cols > 1:
        tail = (
            " Every class has images from several sources, none supplying 90 % or more of a class."
        )
    else:
        tail = ""
    nested = {
        c: {s: int(table.loc[c, s]) for s in table.columns if table.loc[c, s] > 0} for c in classes
    }
    return v, head + tail, nested


def source_predictability(
    X: np.ndarray | list[np.ndarray] | tuple[np.ndarray, ...],
    labels: Sequence[str],
    sources: Sequence[str],
    *,
    folds: np.ndarray | None = None,
    patient_ids: Sequence[str] | None = None,
    n_splits: int = 5,
    n_repeats: int = SPLIT_REPEATS,
    seed: int = 0,
    min_per_source: int = 5,
    n_permutations: int = 500,
    alpha: float = 0.05,
    penalty: float = 1.0,
    auc_recoverable: float = SOURCE_AUC_RECOVERABLE,
    auc_weak: float = SOURCE_AUC_WEAK,
) -> pd.DataFrame:
    """Can the image source be predicted from the features within a class, beyond a permutation
    null?

    For each class with at least two sources of ``>= min_per_source`` images,
    a ridge classifier on the features standardised over the class's images
    (no source used, so the permutation null below stays exact; penalty
    ``penalty`` times the number of features) predicts the source; its ROC AUC (one-vs-rest macro
    average for more than two sources) is averaged over held-out folds. With
    few images and many features that AUC is far from 0.5 by chance alone
    (0.7 or 0.9 on a clean phantom), so it is read against a **permutation
    null**: the source labels are shuffled within the class
    ``n_permutations`` times -- between patients when ``patient_ids`` is
    given, so each patient keeps one source -- and the same cross-validated
    AUC computed each time. ``p`` = (1 + permutations reaching the observed
    AUC) / (1 + n_permutations); ``p_adjusted`` is Holm's adjustment over the
    tested classes and the pooled test below, one family with family-wise
    error ``alpha`` (statsmodels). Verdicts: ``p_adjusted >= alpha`` "source is
    not recoverable"; otherwise ``auc > auc_recoverable`` "source is recoverable",
    else "source is weakly recoverable".

    Networks trained fold by fold (``scratch``, ``finetune:N``) do not share
    units: a probe fitted on one network's features and tested on another's
    finds nothing even where every network carries the source. Such a run is
    audited through *views*, the same images embedded by each fold's model (a
    list for ``X``): the probe is fitted and tested within each view, on the
    same splits, and a class's AUC is the mean over the views, read against the
    mean over the views of the same permutations (one test per class; each
    view's permutation AUCs are paired by the shared permutation). A view's
    model trained on some of the images; the source was never its target.

    Parameters
    ----------
    X : array-like of shape (n_images, n_features), or a list of them
        The features; a list gives one view per model, each of the same
        images in the same order (the width may differ).
    labels, sources : sequence of str, length n_images
        Class and source collection of each image.
    folds : ndarray of shape (n_images,), optional
        Fold id of each image (the run's folds). Each fold is held out in turn
        (grouped CV); a fold in which a source is missing from the training or
        the test part is left out and noted. Default: ``StratifiedGroupKFold``
        (shuffled, ``seed``) on the source grouped by ``patient_ids`` when
        given (or ``StratifiedKFold`` without them), with
        ``min(n_splits, smallest source count)`` splits, repeated
        ``n_repeats`` times with other shuffles.
    patient_ids : sequence of str, length n_images, optional
        Patient of each image: the default splitter keeps a patient's films on
        one side (they share anatomy, which would otherwise make source look
        recoverable), and the permutations move sources between patients.
        Without them, images are permuted one by one.
    n_splits : int, default 5
    n_repeats : int, default 5
        Shuffles of the default splitter; the AUC (and each permutation's) is
        the mean over every held-out fold of every repeat. One shuffle's AUC
        moves by about 0.05 with the shuffle alone (on 300 images of a clean
        phantom class, 0.58-0.64 over 4 shuffles), which is enough to turn a
        class's p from 0.1 to 0.01; averaging repeats removes most of that
        lottery. Ignored when ``folds`` is given (they are the split).
    seed : int, default 0
        Seeds the splitter and the permutations.
    min_per_source : int, default 5
        Sources with fewer images in a class are left out of that class's
        test (noted in ``reason``).
    n_permutations : int, default 500
        Of the null; 0 skips it (then ``p`` is NaN and no class is called
        recoverable).
    alpha : float, default 0.05
        Family-wise level over the tested classes.
    penalty : float, default 1.0
        Ridge penalty per feature (standardised features).
    auc_recoverable : float, default 0.7
        AUC above which a significant class reads "source is recoverable" (the plan's
        ``report.source_auc_recoverable``, :data:`SOURCE_AUC_RECOVERABLE`).
    auc_weak : float, default 0.6
        The "weak" band's AUC, recorded in ``attrs["thresholds"]`` (``report.source_auc_weak``).

    Returns
    -------
    pandas.DataFrame
        One row per class: ``class, status`` ("tested" or "skipped"), ``n``
        (images used), ``n_sources, sources`` (``name:count``), ``auc,
        auc_std`` (mean and SD over the held-out folds of every repeat),
        ``n_folds`` (how many), ``null_mean,
        null_q95`` (mean and 95th percentile of the permutation AUCs), ``p,
        p_adjusted, verdict, reason``.
        ``attrs["class_source_cramers_v"]``: Cramer's V of the class x source
        table (scipy ``chi2_contingency``, no continuity correction; NaN with
        one class or one source). ``attrs["summary"]``: plain sentences on the
        confounding (:func:`confounding_sentences`).
        ``attrs["class_source_table"]``: counts per class and source.
        ``attrs["class_sources"]``: :func:`class_sources`.
        ``attrs["pooled"]``: one test over all tested classes (``classes,
        auc`` = the mean of their AUCs, ``null_q95, p, p_adjusted,
        verdict``), against the mean of their permutation AUCs: a tag present
        in every class is found with more power than class by class.
        ``attrs["thresholds"]``: the verdict thresholds and the null's settings.

    Raises
    ------
    DataError
        If the inputs do not match in length, ``X`` is not finite, or a
        label/source is empty.
    ConfigError
        If ``folds`` has the wrong length, or ``n_splits < 2``, ``n_repeats < 1``,
        ``min_per_source < 2``, ``n_permutations < 0``, ``alpha`` outside
        (0, 1) or ``penalty <= 0``.
    """
    views, labels_arr, src, patients, fold_arr = _checked_inputs(
        X,
        labels,
        sources,
        folds=folds,
        patient_ids=patient_ids,
        n_splits=n_splits,
        n_repeats=n_repeats,
        min_per_source=min_per_source,
        n_permutations=n_permutations,
        alpha=alpha,
        penalty=penalty,
    )
    rng = np.random.default_rng(seed)
    rows = []
    nulls: dict[str, np.ndarray] = {}
    for cls in order_classes(labels_arr):
        row, null = _audit_class(
            cls,
            views,
            labels_arr,
            src,
            patients,
            fold_arr,
            rng,
            n_splits=n_splits,
            n_repeats=n_repeats,
            seed=seed,
            min_per_source=min_per_source,
            n_permutations=n_permutations,
            penalty=penalty,
        )
        rows.append(row)
        if null is not None:
            nulls[cls] = null

    frame = pd.DataFrame(
        rows,
        columns=[
            "class",
            "status",
            "n",
            "n_sources",
            "sources",
            "auc",
            "auc_std",
            "n_folds",
            "null_mean",
            "null_q95",
            "p",
            "p_adjusted",
            "verdict",
            "reason",
        ],
    )
    pooled = _pooled(frame, nulls)
    _adjust_and_judge(frame, pooled, alpha, auc_recoverable)
    frame.attrs["pooled"] = pooled
    v, summary, table = _class_source_summary(labels_arr, src)
    frame.attrs["class_source_cramers_v"] = v
    frame.attrs["summary"] = summary
    frame.attrs["class_source_table"] = table
    frame.attrs["class_sources"] = class_sources(labels_arr, src)
    frame.attrs["thresholds"] = {
        "recoverable": auc_recoverable,
        "weak": auc_weak,
        "alpha": alpha,
        "n_permutations": int(n_permutations),
        "adjustment": "holm",
        "views": len(views),
    }
    return frame


def _checked_inputs(
    X: np.ndarray | list[np.ndarray] | tuple[np.ndarray, ...],
    labels: Sequence[str],
    sources: Sequence[str],
    *,
    folds: np.ndarray | None,
    patient_ids: Sequence[str] | None,
    n_splits: int,
    n_repeats: int,
    min_per_source: int,
    n_permutations: int,
    alpha: float,
    penalty: float,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """:func:`source_predictability`'s inputs checked: the views (one for an array), labels,
    sources, patients, folds (as arrays)."""
    fix = "drop or repair those images/features before the audit"
    if isinstance(X, (list, tuple)):
        if not X:
            raise DataError("source audit: no view of the features was given (an empty list)")
        views = [check_matrix(v, fix=f"{fix} (view {i})") for i, v in enumerate(X)]
        heights = {v.shape[0] for v in views}
        if len(heights) > 1:
            raise DataError(
                f"source audit: the views hold different numbers of images ({sorted(heights)}); "
                "each view must embed the same images in the same order"
            )
    else:
        views = [check_matrix(X, fix=fix)]
    X = views[0]
    labels_arr, src = (
        check_labels(labels, X.shape[0], "labels"),
        check_labels(sources, X.shape[0], "sources"),
    )
    patients = None
    if patient_ids is not None:
        patients = np.asarray([str(v) for v in patient_ids], dtype=object)
        if patients.shape != (X.shape[0],):
            raise DataError(
                f"patient_ids must have one entry per image ({X.shape[0]}), got shape "
                f"{patients.shape}"
            )
    if int(n_splits) != n_splits or n_splits < 2:
        raise ConfigError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    if int(n_repeats) != n_repeats or n_repeats < 1:
        raise ConfigError(f"n_repeats must be an integer >= 1, got {n_repeats!r}")
    if int(min_per_source) != min_per_source or min_per_source < 2:
        raise ConfigError(f"min_per_source must be an integer >= 2, got {min_per_source!r}")
    if int(n_permutations) != n_permutations or n_permutations < 0:
        raise ConfigError(f"n_permutations must be an integer >= 0, got {n_permutations!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not penalty > 0:
        raise ConfigError(f"penalty must be positive, got {penalty!r}")
    fold_arr = None
    if folds is not None:
        fold_arr = np.asarray(folds)
        if fold_arr.shape != (X.shape[0],):
            raise ConfigError(
                f"folds must have one fold id per image ({X.shape[0]}), got shape {fold_arr.shape}"
            )
    return views, labels_arr, src, patients, fold_arr


def _audit_class(
    cls: str,
    views: list[np.ndarray],
    labels: np.ndarray,
    src: np.ndarray,
    patients: np.ndarray | None,
    folds: np.ndarray | None,
    rng: np.random.Generator,
    *,
    n_splits: int,
    n_repeats: int,
    seed: int,
    min_per_source: int,
    n_permutations: int,
    penalty: float,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One class's row of :func:`source_predictability` (``p_adjusted`` and ``verdict`` still to
    come).

    Returns the row and the class's permutation AUCs (None when it was not
    tested or ``n_permutations`` is 0). ``rng`` is shared by the classes, in order.
    With several views every AUC, observed or permuted, is the mean over the views.
    """
    in_cls = labels == cls
    row, big, notes = _untested_row(cls, src[in_cls], min_per_source)
    if len(big) < 2:
        what = f"only one source ({big.index[0]}) has" if len(big) == 1 else "no source has"
        row["reason"] = "; ".join([f"{what} >= {min_per_source} images"] + notes)
        logger.info("source_predictability: %s skipped: %s", cls, row["reason"])
        return row, None
    keep = in_cls & np.isin(src, big.index.to_numpy())
    yc = src[keep]
    groups = patients[keep] if patients is not None else None
    splits = class_splits(
        yc, groups, None if folds is None else folds[keep], n_splits, n_repeats, seed
    )
    if splits is None:
        row["reason"] = "; ".join([f"a source has fewer than 2 patients in {cls}"] + notes)
        return row, None
    levels, codes = np.unique(yc, return_inverse=True)
    view_hats = [ridge_hats(v[keep], splits, penalty) for v in views]
    observed = _mean_over_views(view_hats, codes[:, None], levels.size)[:, 0]
    valid = np.isfinite(observed)
    notes += [
        f"fold {i}: not every source in both train and test; fold left out"
        for i in np.flatnonzero(~valid)
    ]
    if folds is None and n_repeats > 1:
        notes.append(
            f"AUC averaged over {len(splits)} held-out folds ({n_repeats} shuffled repeats)"
        )
    row["n"] = int(keep.sum())
    row["n_folds"] = int(valid.sum())
    if not valid.any():
        row["reason"] = "; ".join(["no fold had every source in both train and test"] + notes)
        return row, None
    auc = float(observed[valid].mean())
    row.update(
        status="tested",
        auc=auc,
        auc_std=float(np.std(observed[valid], ddof=1)) if valid.sum() > 1 else np.nan,
    )
    kept_null = None
    if n_permutations:
        perm_codes = permuted_between_groups(codes, groups, n_permutations, rng)
        null_folds = _mean_over_views(view_hats, perm_codes, levels.size)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # a permutation with no usable fold is NaN
            kept_null = np.nanmean(null_folds, axis=0)
        null = kept_null[np.isfinite(kept_null)]
        row.update(
            null_mean=float(null.mean()),
            null_q95=float(np.quantile(null, 0.95)),
            p=float((1 + np.sum(null >= auc - 1e-12)) / (1 + null.size)),
        )
        unit = "patients" if groups is not None else "images"
        notes.append(f"null: source shuffled between {unit} within {cls}, {null.size} permutations")
    row["reason"] = "; ".join(notes)
    return row, kept_null


def _mean_over_views(
    view_hats: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    codes: np.ndarray,
    n_levels: int,
) -> np.ndarray:
    """:func:`~biomark.analysis.held_out_auc.fold_aucs` of every view, averaged over the views
    (n_splits, n_codes); the views share their splits, so a split is NaN in all or none."""
    return np.mean([fold_aucs(hats, codes, n_levels) for hats in view_hats], axis=0)


def _untested_row(
    cls: str, class_sources: np.ndarray, min_per_source: int
) -> tuple[dict[str, Any], pd.Series, list[str]]:
    """A class's row before its test, the image count of each source kept, and notes on those left
    out."""
    counts = pd.Series(class_sources).value_counts()
    big = counts[counts >= min_per_source]
    small = counts[counts < min_per_source]
    notes = (
        [
            f"{len(small)} source(s) with < {min_per_source} images left out: "
            + ", ".join(f"{s}:{c}" for s, c in small.items())
        ]
        if len(small)
        else []
    )
    row: dict[str, Any] = {
        "class": cls,
        "status": "skipped",
        "n": int(class_sources.size),
        "n_sources": int(len(big)),
        "sources": ", ".join(f"{s}:{c}" for s, c in big.items()),
        "auc": np.nan,
        "auc_std": np.nan,
        "n_folds": 0,
        "null_mean": np.nan,
        "null_q95": np.nan,
        "p": np.nan,
        "p_adjusted": np.nan,
        "verdict": "not tested",
    }
    return row, big, notes


def _adjust_and_judge(
    frame: pd.DataFrame, pooled: dict[str, Any], alpha: float, auc_recoverable: float
) -> None:
    """Holm-adjust every class's p and the pooled one as one family; write the verdicts (in
    place)."""
    tested = frame["p"].notna().to_numpy()
    if tested.any():
        # one family per call: every class's test and the pooled one (family-wise error alpha)
        adjusted = holm(np.r_[frame.loc[tested, "p"].to_numpy(), pooled["p"]])
        frame.loc[tested, "p_adjusted"] = adjusted[:-1]
        pooled["p_adjusted"] = float(adjusted[-1])
        pooled["verdict"] = (
            POOLED_RECOVERABLE
            if adjusted[-1] < alpha
            else "source is not recoverable within classes"
        )
    for i in np.flatnonzero((frame["status"] == "tested").to_numpy()):
        frame.loc[i, "verdict"] = _verdict(
            frame.at[i, "auc"], frame.at[i, "p_adjusted"], alpha, auc_recoverable
        )


def _pooled(frame: pd.DataFrame, nulls: dict[str, np.ndarray]) -> dict[str, Any]:
    """One test over every tested class: the mean of their AUCs against the mean of their
    permutation AUCs.

    Within-class shuffles are independent between classes, so permutation j of
    each class together is one draw of the pooled null: more power than any
    single class when a tag is everywhere. Its verdict is set by the caller,
    after the Holm adjustment it shares with the per-class tests.
    """
    used = [c for c in frame.loc[frame["status"] == "tested", "class"] if c in nulls]
    if not used:
        return {
            "classes": [],
            "auc": float("nan"),
            "null_q95": float("nan"),
            "p": float("nan"),
            "p_adjusted": float("nan"),
            "verdict": "not tested",
        }
    observed = float(frame.set_index("class").loc[used, "auc"].mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        null = np.nanmean(np.stack([nulls[c] for c in used]), axis=0)
    null = null[np.isfinite(null)]
    p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))
    return {
        "classes": used,
        "auc": observed,
        "null_q95": float(np.quantile(null, 0.95)),
        "p": p,
        "p_adjusted": float("nan"),
        "verdict": "not tested",
    }
