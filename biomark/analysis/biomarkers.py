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
   listed; the units are matched on their variation within classes. Where the
   match is poor (a member's within-class activation correlation with the
   reference unit below ``min_match_r``) the top-k frequency compares
   different units, so stability is judged instead on what the members
   track: the share of folds in which the member shows the family's class
   effect (:func:`biomark.analysis.stability.fold_class_effects`) and
   whether its members agree on the class's own images at ``min_match_r``
   (:func:`biomark.analysis.unit_families.within_class_member_r`; without every
   image through every fold's model, whether the top radiomic correlate keeps
   its family); ``stability_basis`` says which was used. Without any matching (no
   reference embeddings) stability is untested;
3. *in the lungs*: at least ``min_lung_fraction`` of its activation mass lies in
   the lung fields (:mod:`biomark.analysis.localisation`) and, where the lung
   fractions of a random network's units on the same films are known
   (:class:`biomark.analysis.lung_null.LungNull`), more than 95 % of those
   units read; a feature is flagged *outside the lungs* only below their 5th
   percentile (and below ``min_lung_fraction``). Between the two it prefers no
   region more than a random unit does: not in the lungs, and not flagged;
4. *not a source marker*: source explains none of its variance beyond class
   (:func:`biomark.analysis.audit.feature_source_association`, q >= alpha).

Each criterion is three-valued: True, False, or unknown (NA) when it could not
be tested (no model to explain or map, sources nested in classes, too few
images). ``is_candidate`` is False as soon as one criterion fails, True when
all four pass, and NA otherwise; ``status`` says which and why. Nothing is
dropped: every shortlisted feature is in the table with its flags
(:func:`biomark.analysis.audit.shortcut_flags`).

Also here: :func:`correlate_overlap` (do two strategies' candidates relate to
the same radiomic features?). The per-class pick and its phantom ground truth
are in :mod:`biomark.analysis.picks` (re-exported here).

numpy/pandas/scipy only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from biomark.analysis.inputs import true_where
from biomark.analysis.lung_null import LungNull
from biomark.analysis.picks import ClassPicks, class_picks, ground_truth
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
    "topk_freq_own",
    "fold_effect_freq",
    "within_class_r",
    "radiomic_family_freq",
    "stability_basis",
    "lung_fraction",
    "lung_method",
    "lung_enrichment",
    "source_q",
    "radiomic_correlates",
    "radiomic_families",
    "radiomic_zone",
    "radiomic_correlates_all_films",
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
        Index feature name, columns ``radiomic_correlates`` and ``radiomic_families``: each
        feature's strongest radiomic correlates over all films (the candidate table's
        ``radiomic_correlates_all_films``).
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
    lung_null : LungNull, optional
        The lung fractions of a random network's units on the same films, by
        the same method: they set the thresholds of *in the lungs* and of the
        *outside the lungs* flag (without it both are ``min_lung_fraction``).
    unit_basis : {"shared", "matched", "unmatched"}, default "shared"
        See :data:`UNIT_BASES`.
    units : DataFrame, optional
        Index feature name, columns ``members`` and ``match_r`` (matched families).
    within_class_match : DataFrame, optional
        Index feature name, one column per class: the weakest agreement of a
        family's members on that class's images
        (:func:`~biomark.analysis.unit_families.within_class_member_r`). Where it
        is known, a poorly matched family is stable only if its members agree
        within the class at ``min_match_r`` or more.
    fold_effects : dict of str to DataFrame, optional
        Per class: :func:`~biomark.analysis.stability.fold_class_effects` of the shortlist.
    fold_radiomics : DataFrame, optional
        :func:`~biomark.analysis.stability.fold_radiomic_agreement` of the shortlisted features.
    radiomic_r2 : dict of str to Series, optional
        Per class: :func:`~biomark.analysis.texture_explained.within_class_r2`
        of the shortlist (how much of each feature's variation within the
        class lung radiomics explains, leave-one-out).
    class_radiomics : dict of str to DataFrame, optional
        Per class: :func:`~biomark.analysis.texture_explained.within_class_correlates` of the
        shortlist (index feature name, ``radiomic_correlates``, ``radiomic_families`` and
        ``radiomic_zone`` within the class's films: the candidate table's columns of those
        names).
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
    lung_null: LungNull | None = None
    unit_basis: str = "shared"
    units: pd.DataFrame | None = None
    within_class_match: pd.DataFrame | None = None
    fold_effects: dict[str, pd.DataFrame] = field(default_factory=dict)
    fold_radiomics: pd.DataFrame | None = None
    radiomic_r2: dict[str, pd.Series] = field(default_factory=dict)
    class_radiomics: dict[str, pd.DataFrame] = field(default_factory=dict)


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


def _decide(row: pd.Series, not_in_lungs: str) -> tuple[object, str]:
    checks = {
        "significant": "not FDR-significant",
        "stable": "not stable across folds",
        "in_lungs": not_in_lungs,
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
    # track is -- the class effect in each fold and whether the members agree on the class's own
    # images (the match pools every class's variation, and a unit may grade one class only), else,
    # with radiomics, the family of the top correlate.
    why = "silent member" if np.isnan(match_r) else f"r {match_r:.2f} < {criteria.min_match_r:g}"
    effect = _get(ev.fold_effects.get(cls), feat, "fold_effect_freq")
    stable = _bool(effect, effect >= criteria.min_stability)
    basis = f"poorly matched units ({why}): class effect in each fold"
    within = _get(ev.within_class_match, feat, cls)
    if np.isfinite(within):
        stable = stable if pd.isna(stable) else bool(stable and within >= criteria.min_match_r)
        return (
            match_r,
            topk,
            stable,
            f"{basis} and members agreeing within the class (r {within:.2f})",
        )
    family = _get(ev.fold_radiomics, feat, "radiomic_family_freq")
    if np.isfinite(family):
        stable = stable if pd.isna(stable) else bool(stable and family >= criteria.min_stability)
        basis += " and family of the top radiomic correlate"
    return match_r, topk, stable, basis


def _maps_too_coarse(ev: StrategyEvidence, criteria: Criteria) -> bool:
    """Whether the maps cannot reach ``min_lung_fraction`` (the lung test is then NA); warns."""
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
    return coarse


def _feature_row(
    ev: StrategyEvidence,
    cls: str,
    rank: int,
    feat: str,
    criteria: Criteria,
    coarse: bool,
) -> dict[str, object]:
    """The evidence and the four criteria of one shortlisted feature for one class.

    Parameters
    ----------
    ev : StrategyEvidence
    cls : str
        The class the feature was shortlisted for.
    rank : int
        Its place in the class's shortlist (1 = most important).
    feat : str
        The feature name.
    criteria : Criteria
    coarse : bool
        The maps are too coarse for the lung test (:func:`_maps_too_coarse`).

    Returns
    -------
    dict
        One row of the table before its flags (``lung_tested`` is the lung
        fraction the lung test uses: NaN when ``coarse``).
    """
    tests = ev.tests.get(cls)
    q = _get(tests, feat, "mw_q")
    match_r, topk, stable, basis = _stability(ev, cls, feat, criteria)
    lung = _get(ev.lung, feat, "lung_fraction")
    tested = float("nan") if coarse else lung
    src_q = _get(ev.source, feat, "source_q")
    return {
        "strategy": ev.strategy,
        "class": cls,
        "feature": feat,
        "feature_index": int(_get(tests, feat, "feature_index")) if tests is not None else -1,
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
        "topk_freq_own": _get(ev.stability.get(cls), feat, "topk_freq_own"),
        "fold_effect_freq": _get(ev.fold_effects.get(cls), feat, "fold_effect_freq"),
        "within_class_r": _get(ev.within_class_match, feat, cls),
        "radiomic_family_freq": _get(ev.fold_radiomics, feat, "radiomic_family_freq"),
        "stability_basis": basis,
        "lung_fraction": lung,
        "lung_method": ev.lung_method if np.isfinite(lung) else "",
        "lung_tested": tested,
        "lung_enrichment": lung / ev.lung_baseline if ev.lung_baseline > 0 else float("nan"),
        "source_q": src_q,
        "radiomic_correlates": _text(ev.class_radiomics.get(cls), feat, "radiomic_correlates"),
        "radiomic_families": _text(ev.class_radiomics.get(cls), feat, "radiomic_families"),
        "radiomic_zone": _text(ev.class_radiomics.get(cls), feat, "radiomic_zone"),
        "radiomic_correlates_all_films": _text(ev.radiomics, feat, "radiomic_correlates"),
        "radiomic_r2": _series(ev.radiomic_r2.get(cls), feat),
        "significant": _bool(q, q < criteria.alpha),
        "stable": stable,
        "in_lungs": _bool(tested, tested >= _inside_threshold(ev, criteria)),
        "source_clean": _bool(src_q, src_q >= criteria.alpha),
    }


def _inside_threshold(ev: StrategyEvidence, criteria: Criteria) -> float:
    """The lung fraction a feature needs to be in the lungs (beyond the random units, if known)."""
    if ev.lung_null is None:
        return float(criteria.min_lung_fraction)
    return ev.lung_null.inside_threshold(criteria.min_lung_fraction)


def _not_in_lungs(ev: StrategyEvidence, criteria: Criteria) -> str:
    """Why a feature fails *in the lungs*, in the status column."""
    if ev.lung_null is None:
        return "activation mainly outside the lungs"
    return (
        f"not in the lungs beyond a random unit (lung fraction < "
        f"{_inside_threshold(ev, criteria):.3f})"
    )


def _flag_shortcuts(
    frame: pd.DataFrame, ev: StrategyEvidence, criteria: Criteria, coarse: bool
) -> pd.DataFrame:
    """``frame`` with the :func:`~biomark.analysis.audit.shortcut_flags` columns added.

    Parameters
    ----------
    frame : DataFrame
        The rows of :func:`_feature_row` (not empty).
    ev : StrategyEvidence
    criteria : Criteria
    coarse : bool
        The maps are too coarse for the lung test: the ``flags`` text says so
        instead of "lung fraction unknown".

    Returns
    -------
    DataFrame
        With ``flag_model_reads_outside_lungs`` NA where no blackout result
        was given.
    """
    null = ev.lung_null
    frame = shortcut_flags(
        frame,
        lung_fraction_col="lung_tested",
        min_lung_fraction=(
            criteria.min_lung_fraction
            if null is None
            else null.outside_threshold(criteria.min_lung_fraction)
        ),
        threshold_note="" if null is None else f"{null.upper_percentile} % of random units",
        alpha=criteria.alpha,
        blackout_survival=ev.blackout_survival,
        max_blackout_survival=criteria.max_blackout_survival,
    )
    if "flag_model_reads_outside_lungs" not in frame.columns:
        frame["flag_model_reads_outside_lungs"] = pd.array([pd.NA] * len(frame), dtype="boolean")
    if coarse:
        note = f"maps too coarse to localise (attainable lung fraction {ev.lung_attainable:.2f})"
        frame["flags"] = [t.replace("lung fraction unknown", note) for t in frame["flags"]]
    return frame


def _add_verdicts(frame: pd.DataFrame, not_in_lungs: str) -> None:
    """Make the four criteria nullable booleans and add ``is_candidate`` and ``status``
    (``not_in_lungs``: the reason given when *in the lungs* fails)."""
    for column in ("significant", "stable", "in_lungs", "source_clean"):
        frame[column] = frame[column].astype("boolean")
    decisions = [
        _decide(row, not_in_lungs)
        for _, row in frame[["significant", "stable", "in_lungs", "source_clean"]].iterrows()
    ]
    frame["is_candidate"] = pd.array([d[0] for d in decisions], dtype="boolean")
    frame["status"] = [d[1] for d in decisions]


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
    coarse = _maps_too_coarse(ev, criteria)
    rows = [
        _feature_row(ev, cls, rank, feat, criteria, coarse)
        for cls, features in ev.shortlist.items()
        for rank, feat in enumerate(features, start=1)
    ]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    frame = _flag_shortcuts(frame, ev, criteria, coarse)
    _add_verdicts(frame, _not_in_lungs(evidence, criteria))
    return frame.reindex(columns=list(TABLE_COLUMNS))


def jaccard(a: set[str], b: set[str]) -> float:
    """``|a & b| / |a | b|``; NaN when both are empty.

    Examples
    --------
    >>> round(jaccard({"glcm", "firstorder"}, {"glcm", "shape"}), 3)  # 1 shared of 3
    0.333
    >>> jaccard(set(), set())
    nan
    """
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
            cand = table[true_where(table["is_candidate"])]
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
