"""The paper's metrics: 7-class accuracy, COVID-19-vs-rest accuracy, sensitivity, specificity.

Orientation. Every confusion matrix here is in scikit-learn's orientation:
``cm[i, j]`` counts images whose *true* class is ``labels[i]`` and whose
*predicted* class is ``labels[j]`` (rows true, columns predicted). The paper's
tables are the transpose (rows predicted, columns actual);
:func:`paper_table` prints that orientation, and the paper's Table 6 enters
as ``table6.T``.

Definitions (section 2.5 of Apostolopoulos et al. 2020), with the positive
class (the plan's ``positive_class``; the paper's COVID-19) against all others:

* accuracy: trace / total (multi-class);
* binary_accuracy: (TP + TN) / total;
* sensitivity: TP / (TP + FN), NaN when the positive class has no images;
* specificity: TN / (TN + FP), NaN when there are no negative images.

An undefined value is NaN and the reason is recorded (``notes``); nothing
divides by zero.

This module uses numpy, pandas and scikit-learn only (no Keras).

Examples
--------
>>> import numpy as np
>>> cm = np.array([[8, 2], [1, 9]])  # rows true, columns predicted
>>> s = summarize_confusion(cm, ["COVID-19", "Normal"])
>>> round(s["sensitivity"], 2), round(s["specificity"], 2)
(0.8, 0.9)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from biomark.config import DEFAULT_POSITIVE_CLASS
from biomark.exceptions import DataError

__all__ = [
    "CONFUSION_METRICS",
    "SCALAR_METRICS",
    "binary_confusion",
    "confusion_notes",
    "fold_metrics",
    "paper_table",
    "pooled_metrics",
    "summarize_confusion",
]

logger = logging.getLogger(__name__)

#: Metrics computed from a confusion matrix.
CONFUSION_METRICS: tuple[str, ...] = ("accuracy", "binary_accuracy", "sensitivity", "specificity")
#: Every scalar metric of :func:`fold_metrics` (averaged by :func:`pooled_metrics`).
SCALAR_METRICS: tuple[str, ...] = (*CONFUSION_METRICS, "macro_auc", "covid_auc")


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else math.nan


def _check_confusion(
    cm: np.ndarray, labels: Sequence[str], positive: str
) -> tuple[np.ndarray, int]:
    cm = np.asarray(cm)
    labels = list(labels)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise DataError(
            f"confusion matrix of shape {cm.shape} does not fit {len(labels)} labels; "
            "pass a square (n_classes, n_classes) matrix with one label per row"
        )
    if (cm < 0).any():
        raise DataError("confusion matrix has negative counts; pass image counts")
    if positive not in labels:
        raise DataError(
            f"positive class {positive!r} is not among the labels ({', '.join(labels)}); "
            "pass positive= one of them"
        )
    return cm, labels.index(positive)


def binary_confusion(
    cm: np.ndarray, labels: Sequence[str], positive: str = DEFAULT_POSITIVE_CLASS
) -> np.ndarray:
    """Collapse a multi-class confusion matrix to positive-vs-rest.

    Parameters
    ----------
    cm : array-like of shape (n_classes, n_classes)
        Rows true, columns predicted (scikit-learn orientation).
    labels : sequence of str
        Class of each row/column.
    positive : str, default :data:`~biomark.config.DEFAULT_POSITIVE_CLASS`

    Returns
    -------
    ndarray of shape (2, 2)
        ``[[TP, FN], [FP, TN]]``: rows true (positive first), columns
        predicted (positive first) - scikit-learn orientation.

    Raises
    ------
    DataError
        If the matrix does not fit the labels or ``positive`` is not a label.

    Examples
    --------
    >>> import numpy as np
    >>> cm = np.array([[4, 1, 0], [0, 3, 1], [1, 0, 2]])  # rows true, columns predicted
    >>> binary_confusion(cm, ["COVID-19", "Normal", "Pneumonia"]).tolist()  # [[TP, FN], [FP, TN]]
    [[4, 1], [1, 6]]
    """
    cm, p = _check_confusion(cm, labels, positive)
    tp = cm[p, p]
    fn = cm[p, :].sum() - tp
    fp = cm[:, p].sum() - tp
    tn = cm.sum() - tp - fn - fp
    return np.array([[tp, fn], [fp, tn]])


def summarize_confusion(
    cm: np.ndarray, labels: Sequence[str], positive: str = DEFAULT_POSITIVE_CLASS
) -> dict[str, float]:
    """The paper's four metrics from one confusion matrix.

    Parameters
    ----------
    cm : array-like of shape (n_classes, n_classes)
        ``cm[i, j]`` = images of true class ``labels[i]`` predicted as
        ``labels[j]`` (scikit-learn orientation; the paper's tables are the
        transpose: rows predicted, columns actual).
    labels : sequence of str
    positive : str, default :data:`~biomark.config.DEFAULT_POSITIVE_CLASS`

    Returns
    -------
    dict
        ``accuracy`` (multi-class), ``binary_accuracy`` (positive vs rest),
        ``sensitivity``, ``specificity`` as fractions in [0, 1]; NaN where
        undefined (:func:`confusion_notes` says why).

    Raises
    ------
    DataError
        If the matrix does not fit the labels or ``positive`` is not a label.

    Examples
    --------
    Three classes; COVID-19 against the rest is TP 4, FN 1, FP 1, TN 6:

    >>> import numpy as np
    >>> cm = np.array([[4, 1, 0], [0, 3, 1], [1, 0, 2]])  # rows true, columns predicted
    >>> s = summarize_confusion(cm, ["COVID-19", "Normal", "Pneumonia"])
    >>> {name: round(value, 3) for name, value in s.items()}  # 9/12, 10/12, 4/5, 6/7
    {'accuracy': 0.75, 'binary_accuracy': 0.833, 'sensitivity': 0.8, 'specificity': 0.857}
    """
    cm, _ = _check_confusion(cm, labels, positive)
    (tp, fn), (fp, tn) = binary_confusion(cm, labels, positive)
    total = cm.sum()
    return {
        "accuracy": _ratio(np.trace(cm), total),
        "binary_accuracy": _ratio(tp + tn, total),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def confusion_notes(
    cm: np.ndarray, labels: Sequence[str], positive: str = DEFAULT_POSITIVE_CLASS
) -> list[str]:
    """Why any value of :func:`summarize_confusion` is NaN (empty when none is).

    Examples
    --------
    >>> import numpy as np
    >>> cm = np.array([[0, 0], [1, 3]])  # no COVID-19 image among the true classes
    >>> summarize_confusion(cm, ["COVID-19", "Normal"])["sensitivity"]
    nan
    >>> confusion_notes(cm, ["COVID-19", "Normal"])
    ["no images of the positive class 'COVID-19': sensitivity is undefined (NaN)"]
    >>> confusion_notes(np.eye(2, dtype=int), ["COVID-19", "Normal"])
    []
    """
    cm, _ = _check_confusion(cm, labels, positive)
    (tp, fn), (fp, tn) = binary_confusion(cm, labels, positive)
    notes = []
    if cm.sum() == 0:
        notes.append("no images: accuracy and binary_accuracy are undefined (NaN)")
    if tp + fn == 0:
        notes.append(
            f"no images of the positive class {positive!r}: sensitivity is undefined (NaN)"
        )
    if tn + fp == 0:
        notes.append(
            f"no images outside the positive class {positive!r}: specificity is undefined (NaN)"
        )
    return notes


def _as_indices(values: np.ndarray, classes: Sequence[str], name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise DataError(
            f"{name}: expected a 1-d array of class indices or names, got shape {values.shape}"
        )
    if values.dtype.kind in "iu":
        if len(values) and (values.min() < 0 or values.max() >= len(classes)):
            raise DataError(f"{name}: class indices must lie in 0..{len(classes) - 1}")
        return values.astype(np.int64)
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in values} - set(lookup))
    if unknown:
        raise DataError(
            f"{name}: label(s) {', '.join(unknown[:5])} are not among the classes "
            f"({', '.join(classes)})"
        )
    return np.array([lookup[str(v)] for v in values], dtype=np.int64)


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    # One-vs-rest ROC AUC; NaN when only one of the two groups is present.
    if y.all() or not y.any():
        return math.nan
    return float(roc_auc_score(y, scores))


def _aucs(
    y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], p: int
) -> tuple[float, float, dict[str, float], list[str]]:
    per_class = {c: _auc(y_true == i, probabilities[:, i]) for i, c in enumerate(classes)}
    usable = [c for c in classes if not math.isnan(per_class[c])]
    macro = float(np.mean([per_class[c] for c in usable])) if usable else math.nan
    return macro, per_class[classes[p]], per_class, usable


def _ovr_aucs_by_rank(t: np.ndarray, prob: np.ndarray, k: int) -> np.ndarray:
    """One-vs-rest ROC AUC of every class at once, shape (k,); NaN where undefined.

    The Mann-Whitney form with average ranks for ties, identical to
    ``roc_auc_score(t == c, prob[:, c])`` but one ranking for all classes
    (fast enough for 1000 bootstrap resamples).
    """
    ranks = rankdata(prob, axis=0)
    onehot = t[:, None] == np.arange(k)[None, :]
    n_pos = onehot.sum(axis=0).astype(float)
    n_neg = len(t) - n_pos
    rank_sums = (ranks * onehot).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sums - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def fold_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    positive: str = DEFAULT_POSITIVE_CLASS,
) -> dict[str, Any]:
    """Every metric of one test fold (plain Python types, JSON-ready).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_images,)
        True and predicted classes, as indices into ``classes`` (integers)
        or as class names.
    probabilities : array-like of shape (n_images, n_classes)
        Predicted class probabilities, columns in ``classes`` order.
    classes : sequence of str
        All classes of the dataset (``Dataset.classes``), even those absent
        from this fold.
    positive : str, default :data:`~biomark.config.DEFAULT_POSITIVE_CLASS`

    Returns
    -------
    dict
        ``n_images``; ``accuracy``, ``binary_accuracy``, ``sensitivity``,
        ``specificity`` (fractions); ``macro_auc`` (mean one-vs-rest ROC AUC
        over the classes present in ``y_true``) and ``covid_auc`` (the positive
        class's); ``confusion`` (n_classes x n_classes list, rows true) and
        ``binary_confusion`` (``[[TP, FN], [FP, TN]]``); ``per_class``
        (class -> precision, recall, f1, support, auc); ``classes``,
        ``positive``, ``auc_classes`` (classes averaged in ``macro_auc``),
        ``absent_classes`` (classes with no image in ``y_true``) and
        ``notes`` (why any value is NaN).

    Raises
    ------
    DataError
        On inconsistent lengths or shapes, unknown labels, or a
        ``positive`` that is not a class.

    Examples
    --------
    Six images of three classes, given by name: 4 of 6 predictions are right,
    and COVID-19 against the rest is TP 1, FN 1, FP 1, TN 3.

    >>> import numpy as np
    >>> classes = ["COVID-19", "Normal", "Pneumonia"]
    >>> y_true = ["COVID-19", "COVID-19", "Normal", "Normal", "Pneumonia", "Pneumonia"]
    >>> y_pred = ["COVID-19", "Normal", "Normal", "Normal", "Pneumonia", "COVID-19"]
    >>> probs = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1],
    ...                   [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    >>> m = fold_metrics(y_true, y_pred, probs, classes)
    >>> m["confusion"], m["binary_confusion"]
    ([[1, 1, 0], [0, 2, 0], [1, 0, 1]], [[1, 1], [1, 3]])
    >>> [round(m[k], 3) for k in ("accuracy", "binary_accuracy", "sensitivity", "specificity")]
    [0.667, 0.667, 0.5, 0.75]

    ``covid_auc``: of the 2 x 4 (COVID-19, other) pairs, the COVID-19 image
    scores higher in 7 (0.4 < 0.5 is the miss):

    >>> m["covid_auc"], m["per_class"]["COVID-19"]["recall"], m["notes"]
    (0.875, 0.5, [])
    """
    classes = [str(c) for c in classes]
    if positive not in classes:
        raise DataError(
            f"positive class {positive!r} is not among the classes ({', '.join(classes)}); "
            "pass positive= one of them"
        )
    t = _as_indices(y_true, classes, "y_true")
    y = _as_indices(y_pred, classes, "y_pred")
    prob = np.asarray(probabilities, dtype=np.float64)
    if len(t) != len(y) or prob.shape != (len(t), len(classes)):
        raise DataError(
            f"y_true ({len(t)}), y_pred ({len(y)}) and probabilities {prob.shape} disagree; "
            f"expected probabilities of shape ({len(t)}, {len(classes)})"
        )
    index = list(range(len(classes)))
    cm = confusion_matrix(t, y, labels=index)
    precision, recall, f1, support = precision_recall_fscore_support(
        t, y, labels=index, zero_division=0
    )
    p = classes.index(positive)
    macro, covid_auc, per_class_auc, auc_classes = _aucs(t, prob, classes, p)
    present = np.bincount(t, minlength=len(classes)) > 0
    absent = [c for c, ok in zip(classes, present, strict=True) if not ok]

    notes = confusion_notes(cm, classes, positive)
    if absent:
        notes.append(
            f"class(es) {', '.join(absent)} have no image in this fold: their AUC is undefined "
            "and macro_auc averages the other classes"
        )
    if math.isnan(macro):
        notes.append("fewer than two classes in y_true: macro_auc is undefined (NaN)")
    if math.isnan(covid_auc) and not math.isnan(macro):
        notes.append(f"covid_auc is undefined (NaN): {positive!r} is absent or the only class")

    summary = summarize_confusion(cm, classes, positive)
    return {
        "n_images": int(len(t)),
        **summary,
        "macro_auc": macro,
        "covid_auc": covid_auc,
        "confusion": cm.astype(int).tolist(),
        "binary_confusion": binary_confusion(cm, classes, positive).astype(int).tolist(),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "auc": per_class_auc[c],
            }
            for i, c in enumerate(classes)
        },
        "classes": classes,
        "positive": positive,
        "auc_classes": auc_classes,
        "absent_classes": absent,
        "notes": notes,
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    finite = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return float(finite.mean()), std, int(finite.size)


def _bootstrap(
    t: np.ndarray,
    y: np.ndarray,
    prob: np.ndarray,
    classes: list[str],
    positive: str,
    n_bootstrap: int,
    seed: int,
) -> tuple[dict[str, dict[str, float]], list[str]]:
    rng = np.random.default_rng(seed)
    n, k = len(t), len(classes)
    p = classes.index(positive)
    full_cm = confusion_matrix(t, y, labels=list(range(k)))
    estimate = summarize_confusion(full_cm, classes, positive)
    estimate["macro_auc"], estimate["covid_auc"], _, _ = _aucs(t, prob, classes, p)
    draws: dict[str, list[float]] = {m: [] for m in SCALAR_METRICS}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, size=n)
        ts, ys = t[idx], y[idx]
        cm = np.bincount(ts * k + ys, minlength=k * k).reshape(k, k)
        for name, value in summarize_confusion(cm, classes, positive).items():
            draws[name].append(value)
        aucs = _ovr_aucs_by_rank(ts, prob[idx], k)
        finite = aucs[np.isfinite(aucs)]
        draws["macro_auc"].append(float(finite.mean()) if finite.size else math.nan)
        draws["covid_auc"].append(float(aucs[p]))
    out: dict[str, dict[str, float]] = {}
    notes = []
    for name in SCALAR_METRICS:
        values = np.array(draws[name], dtype=float)
        finite = values[np.isfinite(values)]
        if finite.size < values.size:
            notes.append(
                f"bootstrap: {values.size - finite.size} of {values.size} resamples left "
                f"{name} undefined and were skipped"
            )
        low, high = np.percentile(finite, [2.5, 97.5]) if finite.size else (math.nan, math.nan)
        out[name] = {"estimate": float(estimate[name]), "low": float(low), "high": float(high)}
    return out, notes


def pooled_metrics(
    folds: Sequence[dict[str, Any]],
    *,
    y_true: np.ndarray | None = None,
    y_pred: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Summaries across the folds of one strategy.

    Parameters
    ----------
    folds : sequence of dict
        Outputs of :func:`fold_metrics`, one per test fold (same classes).
    y_true, y_pred : array-like of shape (n_images,), optional
        The pooled out-of-fold true and predicted classes (indices or names).
    probabilities : array-like of shape (n_images, n_classes), optional
        The pooled out-of-fold probabilities.
    classes : sequence of str, optional
        Defaults to the folds' classes.
    n_bootstrap : int, default 1000
        Resamples of the pooled images for the 95% intervals; 0 skips them.
    seed : int, default 0
        Seed of the bootstrap's own generator.

    Returns
    -------
    dict
        ``n_folds``; ``mean`` and ``std`` (sample standard deviation, ddof=1)
        of each scalar metric across folds, ignoring folds where it is NaN
        (``n_folds_used`` counts the rest) - the paper reports these means;
        ``confusion`` and ``binary_confusion`` summed over folds and
        ``pooled`` (the four confusion metrics of the summed matrix);
        ``bootstrap`` (metric -> ``estimate``, ``low``, ``high``: the
        percentile 95% interval from resampling the pooled out-of-fold
        images, or None when the predictions are not given); ``classes``,
        ``positive`` and ``notes``.

    Raises
    ------
    DataError
        If no folds are given or they disagree on the classes.

    Examples
    --------
    Two folds of four images: the mean over folds (what the paper reports)
    differs from the metrics of the summed confusion matrix (``pooled``).

    >>> classes = ["COVID-19", "Normal"]
    >>> f1 = fold_metrics([0, 0, 1, 1], [0, 1, 1, 1], [[.9, .1], [.4, .6], [.2, .8], [.1, .9]],
    ...                   classes)
    >>> f2 = fold_metrics([0, 1, 1, 1], [0, 1, 0, 1], [[.7, .3], [.2, .8], [.6, .4], [.1, .9]],
    ...                   classes)
    >>> f1["sensitivity"], f2["sensitivity"]
    (0.5, 1.0)
    >>> summary = pooled_metrics([f1, f2], n_bootstrap=0)
    >>> round(summary["mean"]["sensitivity"], 3), round(summary["std"]["sensitivity"], 3)
    (0.75, 0.354)
    >>> summary["binary_confusion"]  # [[TP, FN], [FP, TN]] summed over the folds
    [[2, 1], [1, 4]]
    >>> {name: round(value, 3) for name, value in summary["pooled"].items()}
    {'accuracy': 0.75, 'binary_accuracy': 0.75, 'sensitivity': 0.667, 'specificity': 0.8}
    >>> summary["bootstrap"] is None  # no pooled predictions given
    True
    """
    if not folds:
        raise DataError("pooled_metrics: no folds given; pass the fold_metrics of every test fold")
    fold_classes = list(folds[0]["classes"])
    positive = folds[0]["positive"]
    if any(list(f["classes"]) != fold_classes or f["positive"] != positive for f in folds):
        raise DataError("pooled_metrics: the folds disagree on classes or positive class")
    classes = fold_classes if classes is None else [str(c) for c in classes]
    if classes != fold_classes:
        raise DataError(
            f"pooled_metrics: classes {classes} differ from the folds' classes {fold_classes}"
        )
    notes: list[str] = []
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    used: dict[str, int] = {}
    for name in SCALAR_METRICS:
        mean[name], std[name], used[name] = _mean_std([f[name] for f in folds])
        if used[name] < len(folds):
            notes.append(
                f"{name}: undefined in {len(folds) - used[name]} of {len(folds)} folds; "
                "mean and std use the others"
            )
    cm = np.sum([np.asarray(f["confusion"]) for f in folds], axis=0)
    notes.extend(confusion_notes(cm, classes, positive))

    bootstrap = None
    given = [v is not None for v in (y_true, y_pred, probabilities)]
    if any(given) and not all(given):
        raise DataError("pooled_metrics: pass y_true, y_pred and probabilities together (or none)")
    if all(given) and n_bootstrap > 0:
        t = _as_indices(y_true, classes, "y_true")  # type: ignore[arg-type]
        y = _as_indices(y_pred, classes, "y_pred")  # type: ignore[arg-type]
        prob = np.asarray(probabilities, dtype=np.float64)
        if len(t) != len(y) or prob.shape != (len(t), len(classes)):
            raise DataError(
                f"pooled_metrics: y_true ({len(t)}), y_pred ({len(y)}) and probabilities "
                f"{prob.shape} disagree"
            )
        bootstrap, boot_notes = _bootstrap(t, y, prob, classes, positive, n_bootstrap, seed)
        notes.extend(boot_notes)

    return {
        "n_folds": len(folds),
        "mean": mean,
        "std": std,
        "n_folds_used": used,
        "confusion": cm.astype(int).tolist(),
        "binary_confusion": binary_confusion(cm, classes, positive).astype(int).tolist(),
        "pooled": summarize_confusion(cm, classes, positive),
        "bootstrap": bootstrap,
        "n_bootstrap": int(n_bootstrap) if bootstrap is not None else 0,
        "seed": int(seed),
        "classes": classes,
        "positive": positive,
        "notes": notes,
    }


def paper_table(cm: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """A confusion matrix in the paper's orientation.

    Parameters
    ----------
    cm : array-like of shape (n_classes, n_classes)
        Rows true, columns predicted (scikit-learn orientation).
    labels : sequence of str

    Returns
    -------
    DataFrame of shape (n_classes, n_classes)
        Rows predicted (index named ``"predicted"``), columns actual
        (``"actual"``), as in the paper's Tables 2 and 6.

    Raises
    ------
    DataError
        If ``cm`` is not square with one row per label.

    Examples
    --------
    >>> import numpy as np
    >>> cm = np.array([[4, 1, 0], [0, 3, 1], [1, 0, 2]])  # rows true, columns predicted
    >>> paper_table(cm, ["COVID-19", "Normal", "Pneumonia"])
    actual     COVID-19  Normal  Pneumonia
    predicted
    COVID-19          4       0          1
    Normal            1       3          0
    Pneumonia         0       1          2
    """
    cm = np.asarray(cm)
    labels = [str(c) for c in labels]
    if cm.ndim != 2 or cm.shape != (len(labels), len(labels)):
        raise DataError(f"confusion matrix of shape {cm.shape} does not fit {len(labels)} labels")
    return pd.DataFrame(
        cm.T,
        index=pd.Index(labels, name="predicted"),
        columns=pd.Index(labels, name="actual"),
    )
