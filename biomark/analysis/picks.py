"""What the report stands behind per class: the pick, and on the phantom whether it tracks the
truth.

:func:`class_picks` chooses, per class of one strategy's candidate table
(:func:`biomark.analysis.biomarkers.candidate_table`), the candidate, or else
the stable, significant, unflagged feature whose variation within the class
lung radiomics explain best, with its per-image values; :func:`ground_truth`
scores those picks against the phantom's planted severity (and gives the best
any feature reaches, picked with the truth: the ceiling of any one-per-class
rule).

numpy/pandas/scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.analysis.inputs import true_where
from biomark.analysis.phantom_truth import spearman_columns, spearman_where_known

__all__ = ["ClassPicks", "class_picks", "ground_truth", "qualifying"]


@dataclass
class ClassPicks:
    """Per class, the feature the report stands behind, and its values.

    Attributes
    ----------
    table : DataFrame
        One row per class of the candidate table: ``strategy, class, feature,
        members, rank, radiomic_r2, chosen_as, eligible``. ``eligible`` is
        True for a candidate or, when the class has none, a feature that is
        significant, stable and not flagged (source, outside the lungs);
        otherwise the top-ranked feature is given with ``eligible`` False.
        Among several eligible features the one whose variation within the
        class lung radiomics explains best (``radiomic_r2``) is picked, the
        SHAP rank breaking ties and standing in where radiomics are missing.
    values : DataFrame
        Index ``image_id`` (the rows of ``X``), one column per class: the
        picked feature's value in each image.
    """

    table: pd.DataFrame
    values: pd.DataFrame


def _flagged(rows: pd.DataFrame) -> pd.Series:
    out = pd.Series(False, index=rows.index)
    for column in ("flag_source", "flag_outside_lungs"):
        if column in rows.columns:
            out |= true_where(rows[column])
    return out


def qualifying(rows: pd.DataFrame) -> pd.Series:
    """Per row of a candidate table: significant, stable and not flagged as a shortcut (source, or
    outside the lungs), the features a class without a candidate is picked from."""
    return true_where(rows["significant"]) & true_where(rows["stable"]) & ~_flagged(rows)


def class_picks(
    table: pd.DataFrame, X: np.ndarray, image_ids: Sequence[str], *, feature_names: Sequence[str]
) -> ClassPicks:
    """Per class: the candidate, else the best stable significant unflagged feature, and its
    per-image values.

    This is the rule by which the phantom's planted truth is scored
    (:func:`ground_truth`, ``benchmarks/phantom_acceptance.py``); the pick is
    made without looking at any ground truth.

    Parameters
    ----------
    table : DataFrame
        :func:`candidate_table` of one strategy.
    X : ndarray of shape (n_images, n_features)
        The strategy's (aligned) out-of-fold features, columns ``feature_names``.
    image_ids : sequence of str, length n_images
    feature_names : sequence of str

    Returns
    -------
    ClassPicks
    """
    column = {name: i for i, name in enumerate(feature_names)}
    ids = pd.Index([str(v) for v in image_ids], name="image_id")
    rows, values = [], {}
    for cls, sub in table.groupby("class", sort=False):
        sub = sub.sort_values("rank", kind="stable")
        cand = sub[true_where(sub["is_candidate"])]
        ok = qualifying(sub)
        if len(cand):
            pick, eligible = _best_explained(cand), True
            how = "candidate best explained by lung radiomics" if _has_r2(cand) else "top candidate"
        elif ok.any():
            pick, eligible = _best_explained(sub[ok]), True
            how = (
                "stable significant feature best explained by lung radiomics (no candidate)"
                if _has_r2(sub[ok])
                else "best stable significant feature (no candidate)"
            )
        else:
            pick, how, eligible = (
                sub.iloc[0],
                "top-ranked feature (none stable and significant)",
                False,
            )
        r2 = float(pick.get("radiomic_r2", np.nan))
        feat = str(pick["feature"])
        rows.append(
            {
                "strategy": pick.get("strategy", ""),
                "class": cls,
                "feature": feat,
                "members": pick.get("members", ""),
                "rank": int(pick["rank"]),
                "radiomic_r2": r2,
                "chosen_as": how,
                "eligible": eligible,
            }
        )
        if feat in column:
            values[str(cls)] = np.asarray(X[:, column[feat]], dtype=np.float64)
    frame = pd.DataFrame(
        rows,
        columns=[
            "strategy",
            "class",
            "feature",
            "members",
            "rank",
            "radiomic_r2",
            "chosen_as",
            "eligible",
        ],
    )
    return ClassPicks(frame, pd.DataFrame(values, index=ids))


def _has_r2(rows: pd.DataFrame) -> bool:
    return "radiomic_r2" in rows.columns and bool(
        np.isfinite(rows["radiomic_r2"].astype(float)).any()
    )


def _best_explained(rows: pd.DataFrame) -> pd.Series:
    """The row with the highest ``radiomic_r2`` (SHAP rank breaks ties); the top-ranked row without
    it."""
    if not _has_r2(rows):
        return rows.iloc[0]
    order = rows.assign(_r2=rows["radiomic_r2"].astype(float).fillna(-np.inf)).sort_values(
        ["_r2", "rank"], ascending=[False, True], kind="stable"
    )
    return order.drop(columns="_r2").iloc[0]


def _burden_rhos(X: np.ndarray, burden: np.ndarray, pick: int) -> dict[str, float]:
    """The pick's Spearman rho with the planted burden, and the best of all columns' (signed).

    Empty where the class's burden is missing or constant (Emphysema's is NaN).
    """
    every = spearman_where_known(X, burden)
    if every is None or not np.isfinite(every).any():
        return {}
    best = float(every[int(np.nanargmax(np.abs(every)))])
    return {"rho_burden": float(every[pick]), "best_any_rho_burden": best}


def ground_truth(
    table: pd.DataFrame,
    X: np.ndarray,
    labels: Sequence[str],
    severity: Sequence[float],
    *,
    feature_names: Sequence[str],
    normal: str = "Normal",
    min_images: int = 5,
    out_of_fold: np.ndarray | None = None,
    burden: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Phantom ground truth: does each class's picked feature track the planted severity?

    For each diseased class the feature is :func:`class_picks`'s (among the
    candidates, else the stable significant unflagged features, the one whose
    within-class variation lung radiomics explain best, or the first by SHAP
    rank without radiomics; else the top-ranked feature; said in
    ``chosen_as``); it is chosen without looking at severity, so its Spearman
    p-value is an honest single test. The best
    |rho| over the class's whole shortlist is given for reference (a maximum
    over several features: optimistic).

    Parameters
    ----------
    table : DataFrame
        :func:`candidate_table` of one strategy.
    X : ndarray of shape (n_images, n_features)
        The features' within-class values (the family consensus of matched
        units, else the out-of-fold features), columns named by
        ``feature_names``.
    labels, severity : sequences of length n_images
    feature_names : sequence of str
    normal : str, default "Normal"
    min_images : int, default 5
    out_of_fold : ndarray of shape (n_images, n_features), optional
        When ``X`` is a consensus: the out-of-fold members, for
        ``rho_out_of_fold`` (the pick read from each image's out-of-fold
        member alone).
    burden : sequence of float of length n_images, optional
        The amount of signature each film holds (the phantom's ``burden``
        column, :func:`biomark.data.phantom_render.signature_burden`), for
        ``rho_burden`` and ``best_any_rho_burden``. Where a class's extent is
        drawn at random (Pneumonia's lobe), a feature that sums a finding over
        the film can track the burden closely and the severity only loosely.

    Returns
    -------
    DataFrame
        ``strategy, class, n, feature, chosen_as, rho, p, best_shortlist_feature,
        best_shortlist_rho, best_any_feature, best_any_rho, note,
        rho_out_of_fold`` (NaN without ``out_of_fold``), ``rho_burden,
        best_any_rho_burden`` (NaN without ``burden``, or where a class's
        burden is undefined or constant: Emphysema).
    """
    labels_arr = np.asarray([str(v) for v in labels], dtype=object)
    sev = np.asarray(severity, dtype=np.float64)
    load = None if burden is None else np.asarray(burden, dtype=np.float64)
    column = {name: i for i, name in enumerate(feature_names)}
    strategy = str(table["strategy"].iat[0]) if len(table) else ""
    picks = (
        class_picks(
            table, X, [str(i) for i in range(len(labels_arr))], feature_names=feature_names
        ).table.set_index("class")
        if len(table)
        else pd.DataFrame()
    )
    rows = []
    for cls in sorted(set(labels_arr.tolist()) - {normal}):
        own = labels_arr == cls
        n = int(own.sum())
        row: dict[str, object] = {"strategy": strategy, "class": cls, "n": n}
        if cls not in picks.index:
            row["note"] = "no feature shortlisted for this class"
            rows.append(row)
            continue
        pick = picks.loc[cls]
        row["chosen_as"] = pick["chosen_as"]
        row["feature"] = pick["feature"]
        if n < min_images or np.ptp(sev[own]) == 0:
            row["note"] = f"{n} image(s) or no severity variation: not scored"
            rows.append(row)
            continue
        rho, p = sps.spearmanr(X[own, column[pick["feature"]]], sev[own])
        row.update(rho=float(rho), p=float(p))
        if out_of_fold is not None:
            oof = sps.spearmanr(out_of_fold[own, column[pick["feature"]]], sev[own])[0]
            row["rho_out_of_fold"] = float(oof)
        best, best_rho = "", 0.0
        for feat in table.loc[table["class"] == cls, "feature"]:
            r = sps.spearmanr(X[own, column[feat]], sev[own])[0]
            if np.isfinite(r) and abs(r) > abs(best_rho):
                best, best_rho = feat, float(r)
        row.update(best_shortlist_feature=best, best_shortlist_rho=best_rho)
        every = spearman_columns(X[own], sev[own])
        if np.isfinite(every).any():
            j = int(np.nanargmax(np.abs(every)))
            row.update(best_any_feature=str(feature_names[j]), best_any_rho=float(every[j]))
        if load is not None:
            row.update(_burden_rhos(X[own], load[own], column[pick["feature"]]))
        row["note"] = ""
        rows.append(row)
    return pd.DataFrame(rows).reindex(
        columns=[
            "strategy",
            "class",
            "n",
            "feature",
            "chosen_as",
            "rho",
            "p",
            "best_shortlist_feature",
            "best_shortlist_rho",
            "best_any_feature",
            "best_any_rho",
            "note",
            "rho_out_of_fold",
            "rho_burden",
            "best_any_rho_burden",
        ]
    )
