"""Candidate biomarkers: which deep features pass every test, and what they track.

A deep (GAP) feature ``j`` of one strategy is a **candidate biomarker for class
c** when all four criteria hold (:class:`Criteria`):

1. *significant*: its class-``c``-vs-rest Mann--Whitney q-value (BH over all
   features, :func:`biomark.analysis.stats.feature_tests`) is below ``alpha``;
2. *stable*: it is among the top-k features by mean ``|SHAP|`` of class ``c`` in at
   least ``min_stability`` of the folds (:func:`biomark.analysis.stability.topk_frequency`).
   For strategies whose backbone trains per fold a "feature" is a *unit
   family*: a reference fold's unit with the units of the other folds matched
   to it (:mod:`biomark.analysis.alignment`); the family's ``members`` are
   listed. Where the match is poor (a member's activation correlation with
   the reference unit below ``min_match_r``) the top-k frequency compares
   different units, so stability is judged instead on what the members
   track: the share of folds in which the member shows the family's class
   effect (:func:`biomark.analysis.stability.fold_class_effects`);
   ``stability_basis`` says which was used. Without any matching (no
   reference embeddings) stability is untested;
3. *in the lungs*: at least ``min_lung_fraction`` of its activation mass lies in
   the lung fields (:mod:`biomark.analysis.localisation`);
4. *not a source marker*: source explains none of its variance beyond class
   (:func:`biomark.analysis.audit.feature_source_association`, q >= alpha).

Each criterion is three-valued: True, False, or unknown (NA) when it could not
be tested (no model to explain or map, sources nested in classes, too few
images). ``is_candidate`` is False as soon as one criterion fails, True when
all four pass, and NA otherwise; ``status`` says which and why. Nothing is
dropped: every shortlisted feature is in the table with its flags
(:func:`biomark.analysis.audit.shortcut_flags`).

Also here: :func:`class_picks` (per class, the candidate, or else the
stable, significant, unflagged feature, whose variation within the class lung
radiomics explain best, with its per-image values),
:func:`ground_truth` (phantom: does that pick track the planted severity?) and
:func:`correlate_overlap` (do two strategies' candidates relate to the same
radiomic features?).

numpy/pandas/scipy only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.analysis.phantom_truth import spearman_columns
from biomark.analysis.source_flags import shortcut_flags
from biomark.config import Criteria  # the plan's report.criteria; re-exported here

__all__ = [
    "TABLE_COLUMNS",
    "ClassPicks",
    "Criteria",
    "StrategyEvidence",
    "UNIT_BASES",
    "candidate_table",
    "class_picks",
    "correlate_overlap",
    "ground_truth",
    "jaccard",
]

logger = logging.getLogger(__name__)

#: Columns of :func:`candidate_table`, in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "strategy",
    "class",
    "feature",
    "feature_index",
    "members",
    "match_r",
    "rank",
    "mean_abs_shap",
    "cliffs_delta",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "q",
    "patient_delta",
    "patient_q",
    "mixed_coef",
    "mixed_q",
    "topk_freq",
    "fold_effect_freq",
    "radiomic_family_freq",
    "stability_basis",
    "lung_fraction",
    "lung_method",
    "lung_enrichment",
    "source_q",
    "radiomic_correlates",
    "radiomic_families",
    "radiomic_r2",
    "significant",
    "stable",
    "in_lungs",
    "source_clean",
    "flag_outside_lungs",
    "flag_source",
    "flag_model_reads_outside_lungs",
    "flags",
    "is_candidate",
    "status",
)

#: How a strategy's features relate across folds: one shared backbone (feature j is
#: one unit), units matched to a reference fold, or no matching available.
UNIT_BASES: tuple[str, ...] = ("shared", "matched", "unmatched")


@dataclass
class StrategyEvidence:
    """Everything known about one strategy's features (inputs of :func:`candidate_table`).

    Attributes
    ----------
    strategy : str
    tests : dict of str to DataFrame
        Per class: :func:`~biomark.analysis.stats.feature_tests` with that class
        as ``positive``, over all features (index: feature name).
    shortlist : dict of str to list of str
        Per class: the features to tabulate, most important first.
    importance : dict of str to Series, optional
        Per class: mean ``|SHAP|`` over folds (index: feature name).
    ci : dict of str to DataFrame, optional
        Per class: feature_tests on the shortlist with bootstrap AUC intervals.
    patient, mixed : dict of str to DataFrame, optional
        Per class: patient-level and mixed-model tests of the shortlist.
    stability : dict of str to DataFrame, optional
        Per class: :func:`~biomark.analysis.stability.stability_table` (index: feature name).
    lung : DataFrame, optional
        Index feature name, column ``lung_fraction``.
    source : DataFrame, optional
        :func:`~biomark.analysis.audit.feature_source_association` (index: feature name).
    radiomics : DataFrame, optional
        Index feature name, columns ``radiomic_correlates`` and ``radiomic_families``.
    blackout_survival : float, optional
        Share of above-chance accuracy kept with the lungs blacked out.
    lung_attainable : float, optional
        The largest lung fraction the maps can show (mean over images of the
        lung share of the map cell with the most lung). Below
        ``min_lung_fraction`` the maps are too coarse to tell inside from
        outside, and the lung criterion is untested (NA), not failed.
    lung_baseline : float, optional
        Lung fraction of a feature spread evenly over the image (the lung
        share of the image); ``lung_enrichment`` is the ratio to it.
    lung_method : str
        How ``lung`` was measured (``out_relu maps (h x w)`` or occlusion).
    unit_basis : {"shared", "matched", "unmatched"}, default "shared"
        See :data:`UNIT_BASES`.
    units : DataFrame, optional
        Index feature name, columns ``members`` and ``match_r`` (matched families).
    fold_effects : dict of str to DataFrame, optional
        Per class: :func:`~biomark.analysis.stability.fold_class_effects` of the shortlist.
    fold_radiomics : DataFrame, optional
        :func:`~biomark.analysis.stability.fold_radiomic_agreement` of the shortlisted features.
    radiomic_r2 : dict of str to Series, optional
        Per class: :func:`~biomark.analysis.texture_explained.within_class_r2`
        of the shortlist (how much of each feature's variation within the
        class lung radiomics explains, leave-one-out).
    """

    strategy: str
    tests: dict[str, pd.DataFrame]
    shortlist: dict[str, list[str]]
    importance: dict[str, pd.Series] = field(default_factory=dict)
    ci: dict[str, pd.DataFrame] = field(default_factory=dict)
    patient: dict[str, pd.DataFrame] = field(default_factory=dict)
    mixed: dict[str, pd.DataFrame] = field(default_factory=dict)
    stability: dict[str, pd.DataFrame] = field(default_factory=dict)
    lung: pd.DataFrame | None = None
    source: pd.DataFrame | None = None
    radiomics: pd.DataFrame | None = None
    blackout_survival: float | None = None
    lung_attainable: float = float("nan")
    lung_baseline: float = float("nan")
    lung_method: str = ""
    unit_basis: str = "shared"
    units: pd.DataFrame | None = None
    fold_effects: dict[str, pd.DataFrame] = field(default_factory=dict)
    fold_radiomics: pd.DataFrame | None = None
    radiomic_r2: dict[str, pd.Series] = field(default_factory=dict)


def _get(frame: pd.DataFrame | None, feature: str, column: str) -> float:
    if frame is None or column not in frame.columns or feature not in frame.index:
        return float("nan")
    value = frame.at[feature, column]
    return float(value) if value is not None and not pd.isna(value) else float("nan")


def _text(frame: pd.DataFrame | None, feature: str, column: str) -> str:
    if frame is None or column not in frame.columns or feature not in frame.index:
        return ""
    value = frame.at[feature, column]
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _series(values: pd.Series | None, feature: str) -> float:
    return (
        float(values[feature]) if values is not None and feature in values.index else float("nan")
    )


def _decide(row: pd.Series) -> tuple[object, str]:
    checks = {
        "significant": "not FDR-significant",
        "stable": "not stable across folds",
        "in_lungs": "activation mainly outside the lungs",
        "source_clean": "carries source beyond class",
    }
    failed = [why for key, why in checks.items() if not pd.isna(row[key]) and not bool(row[key])]
    unknown = [key.replace("_", " ") for key in checks if pd.isna(row[key])]
    if failed:
        return False, "rejected: " + "; ".join(failed)
    if unknown:
        return pd.NA, "undetermined: untested " + ", ".join(unknown)
    return True, "candidate"


def _bool(value: float, test: bool) -> object:
    return pd.NA if np.isnan(value) else bool(test)


def _stability(
    ev: StrategyEvidence, cls: str, feat: str, criteria: Criteria
) -> tuple[float, float, object, str]:
    """(match_r, topk_freq, stable, stability_basis) of one feature for one class."""
    topk = _get(ev.stability.get(cls), feat, "topk_freq")
    if ev.unit_basis == "unmatched":
        return float("nan"), topk, pd.NA, "units not matched across folds: untested"
    match_r = 1.0 if ev.unit_basis == "shared" else _get(ev.units, feat, "match_r")
    if ev.unit_basis == "shared" or match_r >= criteria.min_match_r:
        basis = (
            "top-k frequency"
            if ev.unit_basis == "shared"
            else f"top-k frequency of matched units (r {match_r:.2f})"
        )
        return match_r, topk, _bool(topk, topk >= criteria.min_stability), basis
    # Poorly matched: the members may be different units, so their ranks are not compared; what they
    # track is -- the class effect in each fold and, with radiomics, the family of the top correlate.
    why = "silent member" if np.isnan(match_r) else f"r {match_r:.2f} < {criteria.min_match_r:g}"
    effect = _get(ev.fold_effects.get(cls), feat, "fold_effect_freq")
    family = _get(ev.fold_radiomics, feat, "radiomic_family_freq")
    stable = _bool(effect, effect >= criteria.min_stability)
    basis = f"poorly matched units ({why}): class effect in each fold"
    if np.isfinite(family):
        stable = stable if pd.isna(stable) else bool(stable and family >= criteria.min_stability)
        basis += " and family of the top radiomic correlate"
    return match_r, topk, stable, basis


def candidate_table(evidence: StrategyEvidence, criteria: Criteria | None = None) -> pd.DataFrame:
    """One row per (class, shortlisted feature) with its evidence, flags and verdict.

    Parameters
    ----------
    evidence : StrategyEvidence
    criteria : Criteria, optional

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`; per class in shortlist order (``rank``
        1 = most important). Boolean criteria and flags are nullable
        booleans (NA = untested); ``flags`` is the text of
        :func:`biomark.analysis.audit.shortcut_flags`.
    """
    criteria = criteria or Criteria()
    ev = evidence
    coarse = bool(
        np.isfinite(ev.lung_attainable) and ev.lung_attainable < criteria.min_lung_fraction
    )
    if coarse:
        logger.warning(
            "%s: maps too coarse for the lung test (attainable lung fraction %.2f < %.2f)",
            ev.strategy,
            ev.lung_attainable,
            criteria.min_lung_fraction,
        )
    rows = []
    for cls, features in ev.shortlist.items():
        tests = ev.tests.get(cls)
        for rank, feat in enumerate(features, start=1):
            q = _get(tests, feat, "mw_q")
            match_r, topk, stable, basis = _stability(ev, cls, feat, criteria)
            lung = _get(ev.lung, feat, "lung_fraction")
            tested = float("nan") if coarse else lung
            src_q = _get(ev.source, feat, "source_q")
            rows.append(
                {
                    "strategy": ev.strategy,
                    "class": cls,
                    "feature": feat,
                    "feature_index": int(_get(tests, feat, "feature_index"))
                    if tests is not None
                    else -1,
                    "members": _text(ev.units, feat, "members"),
                    "match_r": match_r,
                    "rank": rank,
                    "mean_abs_shap": _series(ev.importance.get(cls), feat),
                    "cliffs_delta": _get(tests, feat, "cliffs_delta"),
                    "auc": _get(tests, feat, "auc"),
                    "auc_ci_low": _get(ev.ci.get(cls), feat, "auc_ci_low"),
                    "auc_ci_high": _get(ev.ci.get(cls), feat, "auc_ci_high"),
                    "q": q,
                    "patient_delta": _get(ev.patient.get(cls), feat, "cliffs_delta"),
                    "patient_q": _get(ev.patient.get(cls), feat, "mw_q"),
                    "mixed_coef": _get(ev.mixed.get(cls), feat, "coef"),
                    "mixed_q": _get(ev.mixed.get(cls), feat, "q"),
                    "topk_freq": topk,
                    "fold_effect_freq": _get(ev.fold_effects.get(cls), feat, "fold_effect_freq"),
                    "radiomic_family_freq": _get(ev.fold_radiomics, feat, "radiomic_family_freq"),
                    "stability_basis": basis,
                    "lung_fraction": lung,
                    "lung_method": ev.lung_method if np.isfinite(lung) else "",
                    "lung_tested": tested,
                    "lung_enrichment": lung / ev.lung_baseline
                    if ev.lung_baseline > 0
                    else float("nan"),
                    "source_q": src_q,
                    "radiomic_correlates": _text(ev.radiomics, feat, "radiomic_correlates"),
                    "radiomic_families": _text(ev.radiomics, feat, "radiomic_families"),
                    "radiomic_r2": _series(ev.radiomic_r2.get(cls), feat),
                    "significant": _bool(q, q < criteria.alpha),
                    "stable": stable,
                    "in_lungs": _bool(tested, tested >= criteria.min_lung_fraction),
                    "source_clean": _bool(src_q, src_q >= criteria.alpha),
                }
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    frame = shortcut_flags(
        frame,
        lung_fraction_col="lung_tested",
        min_lung_fraction=criteria.min_lung_fraction,
        alpha=criteria.alpha,
        blackout_survival=ev.blackout_survival,
        max_blackout_survival=criteria.max_blackout_survival,
    )
    if "flag_model_reads_outside_lungs" not in frame.columns:
        frame["flag_model_reads_outside_lungs"] = pd.array([pd.NA] * len(frame), dtype="boolean")
    for column in ("significant", "stable", "in_lungs", "source_clean"):
        frame[column] = frame[column].astype("boolean")
    if coarse:
        note = f"maps too coarse to localise (attainable lung fraction {ev.lung_attainable:.2f})"
        frame["flags"] = [t.replace("lung fraction unknown", note) for t in frame["flags"]]
    decisions = [
        _decide(row)
        for _, row in frame[["significant", "stable", "in_lungs", "source_clean"]].iterrows()
    ]
    frame["is_candidate"] = pd.array([d[0] for d in decisions], dtype="boolean")
    frame["status"] = [d[1] for d in decisions]
    return frame.reindex(columns=list(TABLE_COLUMNS))


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
            out |= rows[column].astype("boolean").fillna(False).astype(bool)
    return out


def class_picks(
    table: pd.DataFrame, X: np.ndarray, image_ids: Sequence[str], *, feature_names: Sequence[str]
) -> ClassPicks:
    """Per class: the candidate, else the best stable significant unflagged feature, and its per-image values.

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
        cand = sub[sub["is_candidate"].astype("boolean").fillna(False).astype(bool)]
        ok = (
            sub["significant"].astype("boolean").fillna(False).astype(bool)
            & sub["stable"].astype("boolean").fillna(False).astype(bool)
            & ~_flagged(sub)
        )
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
    """The row with the highest ``radiomic_r2`` (SHAP rank breaks ties); the top-ranked row without it."""
    if not _has_r2(rows):
        return rows.iloc[0]
    order = rows.assign(_r2=rows["radiomic_r2"].astype(float).fillna(-np.inf)).sort_values(
        ["_r2", "rank"], ascending=[False, True], kind="stable"
    )
    return order.drop(columns="_r2").iloc[0]


def ground_truth(
    table: pd.DataFrame,
    X: np.ndarray,
    labels: Sequence[str],
    severity: Sequence[float],
    *,
    feature_names: Sequence[str],
    normal: str = "Normal",
    min_images: int = 5,
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
        Out-of-fold features, columns named by ``feature_names``.
    labels, severity : sequences of length n_images
    feature_names : sequence of str
    normal : str, default "Normal"
    min_images : int, default 5

    Returns
    -------
    DataFrame
        ``strategy, class, n, feature, chosen_as, rho, p, best_shortlist_feature,
        best_shortlist_rho, best_any_feature, best_any_rho, note``.
    """
    labels_arr = np.asarray([str(v) for v in labels], dtype=object)
    sev = np.asarray(severity, dtype=np.float64)
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
        ]
    )


def jaccard(a: set[str], b: set[str]) -> float:
    """``|a & b| / |a | b|``; NaN when both are empty."""
    union = a | b
    return float(len(a & b) / len(union)) if union else float("nan")


def correlate_overlap(
    tables: Mapping[str, pd.DataFrame], *, candidates_only: bool = True
) -> pd.DataFrame:
    """Jaccard overlap of the radiomic correlates of two strategies' features.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        Strategy -> :func:`candidate_table` (``radiomic_correlates`` as
        ``"name (+0.41); ..."`` and ``radiomic_families`` as ``"glcm, firstorder"``).
    candidates_only : bool, default True
        Use the candidates; a strategy without candidates falls back to its
        whole shortlist (said in ``basis``).

    Returns
    -------
    DataFrame
        One row per pair: ``a, b, basis, n_features_a, n_features_b,
        jaccard_features, jaccard_families, shared_families``.
    """
    sets: dict[str, tuple[set[str], set[str], int, str]] = {}
    for name, table in tables.items():
        basis = "shortlist"
        rows = table
        if candidates_only and len(table):
            cand = table[table["is_candidate"].fillna(False).astype(bool)]
            if len(cand):
                rows, basis = cand, "candidates"
        feats: set[str] = set()
        fams: set[str] = set()
        for text in rows.get("radiomic_correlates", pd.Series(dtype=str)).fillna(""):
            feats |= {part.split(" (")[0].strip() for part in str(text).split(";") if part.strip()}
        for text in rows.get("radiomic_families", pd.Series(dtype=str)).fillna(""):
            fams |= {part.split(":")[0].strip() for part in str(text).split(",") if part.strip()}
        sets[name] = (feats, fams, int(rows["feature"].nunique()) if len(rows) else 0, basis)
    out = []
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fa, ma, na, ba = sets[a]
            fb, mb, nb, bb = sets[b]
            out.append(
                {
                    "a": a,
                    "b": b,
                    "basis": f"{a}: {ba}, {b}: {bb}",
                    "n_features_a": na,
                    "n_features_b": nb,
                    "jaccard_features": jaccard(fa, fb),
                    "jaccard_families": jaccard(ma, mb),
                    "shared_families": ", ".join(sorted(ma & mb)),
                }
            )
    return pd.DataFrame(
        out,
        columns=[
            "a",
            "b",
            "basis",
            "n_features_a",
            "n_features_b",
            "jaccard_features",
            "jaccard_families",
            "shared_families",
        ],
    )
