"""Metrics by image source: does the model work on every collection, and on one it never saw?

A model that learned the disease should do about as well on every source.
One that learned the source (DeGrave et al. 2021) does well on the
collections it trained on and falls apart on another. Two readings of a
run's pooled out-of-fold predictions:

* :func:`source_metrics` -- per source: accuracy (Wilson interval) against the
  majority rate within the source, and sensitivity for the positive class;
  with the sources each test fold's model was trained on.
* :func:`class_source_recall` -- per class and source: recall (the share of
  the class's images of that source answered correctly). A class recognised
  on one source and missed on another is read off this table.

:func:`class_sources` says where each class comes from and
:func:`confounding_sentences` says in words which classes cannot be told
apart from their source (a single source, or sources no other class has).

:func:`external_design` says whether the folds hold sources out
(``cv.grouping: source``, leave one source out): then each source's row *is*
"train on these sources, test on that one".

numpy/pandas/scipy only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.data.labels import order_classes
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "class_source_recall",
    "class_sources",
    "confounding_sentences",
    "external_design",
    "source_metrics",
]

logger = logging.getLogger(__name__)


def _frame(
    labels: Sequence[object],
    pred: Sequence[object],
    sources: Sequence[object],
    folds: Sequence[object] | None,
) -> pd.DataFrame:
    columns = {
        "label": np.asarray(labels, dtype=object),
        "pred": np.asarray(pred, dtype=object),
        "source": np.asarray(sources, dtype=object),
    }
    n = len(columns["label"])
    if n == 0:
        raise DataError("no images: labels is empty")
    for name, key in (("pred", "pred"), ("sources", "source")):
        if len(columns[key]) != n:
            raise DataError(f"{name} must have one entry per label ({n}), got {len(columns[key])}")
    frame = pd.DataFrame(columns)
    if folds is not None:
        fold_arr = np.asarray(folds, dtype=object)
        if fold_arr.shape != (n,):
            raise DataError(
                f"folds must have one fold id per image ({n}), got shape {fold_arr.shape}"
            )
        frame["fold"] = fold_arr
    if frame[["label", "pred", "source"]].isna().any().any():
        raise DataError(
            "labels, predictions and sources must not be missing; drop those images first"
        )
    frame[["label", "pred", "source"]] = frame[["label", "pred", "source"]].astype(str)
    return frame


def _wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def external_design(sources: Sequence[object], folds: Sequence[object]) -> dict[str, Any]:
    """Do the folds hold sources out? (leave-one-source-out, ``cv.grouping: source``)

    Parameters
    ----------
    sources, folds : sequence of length n_images
        Source and test fold of every out-of-fold image.

    Returns
    -------
    dict
        ``held_out`` (True when no source of a test fold appears in any other
        fold, i.e. every fold's model never trained on the sources it is tested
        on) and ``folds``: per fold id, ``{"test": [...], "train": [...]}``
        (sources of that fold, and of all the others).
    """
    frame = pd.DataFrame(
        {
            "source": np.asarray(sources, dtype=object).astype(str),
            "fold": np.asarray(folds, dtype=object),
        }
    )
    per_fold = frame.groupby("fold", sort=True)["source"].agg(lambda s: sorted(set(s)))
    out: dict[Any, dict[str, list[str]]] = {}
    held_out = len(per_fold) > 1
    for f, test in per_fold.items():
        train = sorted(set(frame.loc[frame["fold"] != f, "source"]))
        out[f] = {"test": list(test), "train": train}
        held_out = held_out and not set(test) & set(train)
    return {"held_out": bool(held_out), "folds": out}


def source_metrics(
    labels: Sequence[object],
    pred: Sequence[object],
    sources: Sequence[object],
    *,
    folds: Sequence[object] | None = None,
    positive: str | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Accuracy and sensitivity per source, with what each source's models trained on.

    Parameters
    ----------
    labels, pred, sources : sequence of length n_images
        True class, out-of-fold prediction and source collection of every image.
    folds : sequence of length n_images, optional
        Test fold of every image: adds ``folds`` and ``trained_on`` (the
        sources in the other folds, which trained the models that tested
        this source) and ``seen_in_training``.
    positive : str, optional
        The 2-class task's positive class: adds its sensitivity per source
        (``n_positive, sensitivity, sensitivity_low, sensitivity_high``; NaN
        where the source has none).
    confidence : float, default 0.95
        Of the Wilson intervals.

    Returns
    -------
    DataFrame
        One row per source (largest first): ``source, n, classes``
        (``class:count``), ``accuracy, accuracy_low, accuracy_high,
        majority_rate`` (always answering the source's most frequent class),
        the sensitivity columns, ``folds, trained_on, seen_in_training``.

    Raises
    ------
    DataError
        Mismatched lengths, empty or missing entries.
    """
    frame = _frame(labels, pred, sources, folds)
    layout = external_design(frame["source"], frame["fold"]) if "fold" in frame else None
    rows = []
    order = frame["source"].value_counts().index
    for source in order:
        sub = frame[frame["source"] == source]
        n, correct = len(sub), int((sub["label"] == sub["pred"]).sum())
        counts = sub["label"].value_counts()
        low, high = _wilson(correct, n, confidence)
        row: dict[str, Any] = {
            "source": source,
            "n": n,
            "classes": ", ".join(f"{c}:{k}" for c, k in counts.items()),
            "accuracy": correct / n,
            "accuracy_low": low,
            "accuracy_high": high,
            "majority_rate": float(counts.iloc[0] / n),
        }
        if positive is not None:
            pos = sub[sub["label"] == str(positive)]
            hits = int((pos["pred"] == str(positive)).sum())
            s_low, s_high = _wilson(hits, len(pos), confidence)
            row.update(
                n_positive=len(pos),
                sensitivity=hits / len(pos) if len(pos) else float("nan"),
                sensitivity_low=s_low,
                sensitivity_high=s_high,
            )
        if layout is not None:
            own = sorted(set(sub["fold"]), key=str)
            trained = sorted({s for f in own for s in layout["folds"][f]["train"]})
            row.update(
                folds=", ".join(map(str, own)),
                trained_on=", ".join(trained),
                seen_in_training=source in trained,
            )
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["held_out"] = bool(layout["held_out"]) if layout is not None else False
    return out


def class_source_recall(
    labels: Sequence[object],
    pred: Sequence[object],
    sources: Sequence[object],
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Recall of every class on each of its sources.

    Returns
    -------
    DataFrame
        One row per (class, source) with images: ``class, source, n, correct,
        recall, recall_low, recall_high`` (Wilson), ``n_sources`` (of the
        class). Classes with several sources first.

    Raises
    ------
    DataError
        Mismatched lengths, empty or missing entries.
    """
    frame = _frame(labels, pred, sources, None)
    rows = []
    for (cls, source), sub in frame.groupby(["label", "source"], sort=True):
        correct = int((sub["pred"] == cls).sum())
        low, high = _wilson(correct, len(sub), confidence)
        rows.append(
            {
                "class": cls,
                "source": source,
                "n": len(sub),
                "correct": correct,
                "recall": correct / len(sub),
                "recall_low": low,
                "recall_high": high,
            }
        )
    out = pd.DataFrame(rows)
    out["n_sources"] = out.groupby("class")["source"].transform("size")
    return out.sort_values(
        ["n_sources", "class", "n"], ascending=[False, True, False], kind="stable"
    ).reset_index(drop=True)


def class_sources(
    labels: Sequence[str] | np.ndarray,
    sources: Sequence[str] | np.ndarray,
    *,
    dominant_share: float = 0.9,
) -> pd.DataFrame:
    """Per class: where its images come from, and whether class and source can be told apart.

    Parameters
    ----------
    labels, sources : sequence of str, length n_images
    dominant_share : float, default 0.9
        A class is *dominated* by a source that supplies at least this share
        of its images.

    Returns
    -------
    DataFrame
        One row per class (:func:`biomark.data.labels.order_classes` order):
        ``class, n, n_sources, sources`` (``name:count``, largest first),
        ``top_source, top_share``, ``single_source`` (every image from one
        source: within the class, source cannot vary, so whether the class's
        features track the disease or the source cannot be tested inside it),
        ``dominated`` (``top_share >= dominant_share``), ``exclusive`` (its
        sources supply no other class: source and class cannot be told apart
        at all), ``shared_with`` (the other classes its sources also supply).

    Raises
    ------
    DataError
        Mismatched lengths or empty entries.
    ConfigError
        ``dominant_share`` outside (0.5, 1].
    """
    if not 0.5 < dominant_share <= 1.0:
        raise ConfigError(f"dominant_share must lie in (0.5, 1], got {dominant_share!r}")
    labels_arr = np.asarray([str(v) for v in labels], dtype=object)
    src = np.asarray([str(v) for v in sources], dtype=object)
    if src.shape != labels_arr.shape:
        raise DataError(
            f"sources must have one entry per label ({labels_arr.size}), got {src.size}"
        )
    if np.any(labels_arr == "") or np.any(src == ""):
        raise DataError(
            "labels and sources must not have empty entries; every image needs a class and a source"
        )
    table = pd.crosstab(pd.Series(labels_arr, name="class"), pd.Series(src, name="source"))
    classes = order_classes(labels_arr)
    rows = []
    for c in classes:
        counts = table.loc[c][table.loc[c] > 0].sort_values(ascending=False, kind="stable")
        others = sorted(
            {d for d in classes if d != c for s in counts.index if table.loc[d, s] > 0},
            key=classes.index,
        )
        n = int(counts.sum())
        rows.append(
            {
                "class": c,
                "n": n,
                "n_sources": int(counts.size),
                "sources": ", ".join(f"{s}:{int(k)}" for s, k in counts.items()),
                "top_source": str(counts.index[0]),
                "top_share": float(counts.iloc[0] / n),
                "single_source": bool(counts.size == 1),
                "dominated": bool(counts.iloc[0] / n >= dominant_share),
                "exclusive": bool(not others and len(classes) > 1),
                "shared_with": ", ".join(others),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "class",
            "n",
            "n_sources",
            "sources",
            "top_source",
            "top_share",
            "single_source",
            "dominated",
            "exclusive",
            "shared_with",
        ],
    )


def confounding_sentences(table: pd.DataFrame) -> list[str]:
    """Plain sentences on class/source confounding from :func:`class_sources`.

    A class whose sources supply no other class cannot be told apart from its
    sources at all; a class from a single source cannot be tested for source
    within itself (only against other classes of that source); a class
    dominated by one source is nearly so. An empty list when no class is
    affected (then every class has several sources, none dominant).
    """
    out: list[str] = []
    if len(table) < 2:
        return out
    exclusive = table[table["exclusive"]]
    if len(exclusive):
        names = "; ".join(
            f"{r['class']} ({', '.join(v.split(':')[0] for v in r['sources'].split(', '))})"
            for _, r in exclusive.iterrows()
        )
        out.append(
            f"Classes whose images all come from sources that supply no other class: {names}. For "
            "these classes source and class cannot be told apart: any feature that separates the "
            "class from the rest also separates its source(s) from the others."
        )
    single = table[table["single_source"] & ~table["exclusive"]]
    for source, grp in single.groupby("top_source", sort=False):
        names = ", ".join(grp["class"])
        shared = sorted(
            {c for v in grp["shared_with"] for c in str(v).split(", ") if c} - set(grp["class"])
        )
        also = (
            (
                f"; only the comparison with the other {source} class(es) ({', '.join(shared)}) "
                "holds source fixed"
            )
            if shared
            else ""
        )
        one = len(grp) == 1
        out.append(
            f"{names}: every image comes from one source ({source}). Within "
            f"{'this class' if one else 'these classes'} source cannot vary, so "
            f"{'its' if one else 'their'} features cannot be separated from that source: whether "
            f"they mark the disease or {source} cannot be tested{also}."
        )
    dominated = table[table["dominated"] & ~table["single_source"] & ~table["exclusive"]]
    for _, r in dominated.iterrows():
        out.append(
            f"{r['class']}: {r['top_share']:.0%} of its images come from {r['top_source']} "
            f"({r['sources']}), so its features are nearly inseparable from that source."
        )
    return out
