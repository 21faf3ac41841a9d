"""From one strategy's aligned features to its candidate table: the report's logic as a pure
function.

:func:`assess_strategy` takes what the models gave (per-fold importances,
lung fractions, unit matching) as arrays and runs every test the candidate
criteria need: per-feature tests per class (:mod:`biomark.analysis.stats`),
the shortlist, bootstrap intervals, patient-level and mixed-model tests, fold
stability (:mod:`biomark.analysis.stability`), the per-feature source
association (:mod:`biomark.analysis.audit`), and the candidate table
(:func:`biomark.analysis.biomarkers.candidate_table`). The report
(:mod:`biomark.report.report_strategy`) calls it on real runs; tests and
benchmarks call it on synthetic features with planted truth.

Columns of ``X`` are *unit families* for a strategy whose folds were matched
(:func:`biomark.analysis.alignment.align_rows`), and plain features for a
shared backbone. numpy/pandas/scipy/statsmodels only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.biomarkers import UNIT_BASES, Criteria, StrategyEvidence, candidate_table
from biomark.analysis.inputs import true_where
from biomark.analysis.lung_null import LungNull
from biomark.analysis.patient_level import mixed_model_tests, patient_level_tests
from biomark.analysis.rank_tests import pooled_ranks
from biomark.analysis.source_flags import feature_source_association
from biomark.analysis.stability import fold_class_effects, fold_radiomic_agreement, stability_table
from biomark.analysis.stats import feature_tests
from biomark.analysis.texture_explained import within_class_correlates, within_class_r2
from biomark.exceptions import BiomarkError, ConfigError, DataError

__all__ = ["Assessment", "EvidenceSettings", "RadiomicValues", "assess_strategy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvidenceSettings:
    """Settings of :func:`assess_strategy` (the report's, see ``ReportSettings``).

    Attributes
    ----------
    top_k : int, default 20
        Features shortlisted per class, and the k of the top-k stability.
    n_bootstrap : int, default 1000
    n_mixed : int, default 20
        Top shortlisted features per class fitted with the mixed model, when
        significant at the image level (the mixed model confirms an effect;
        a feature without one gets NaN ``mixed_coef`` and ``mixed_q``). The
        default covers the default shortlist: a fit takes 1-2 ms.
    min_group_size : int, default 3
    seed : int, default 0
    criteria : Criteria
    """

    top_k: int = 20
    n_bootstrap: int = 1000
    n_mixed: int = 20
    min_group_size: int = 3
    seed: int = 0
    criteria: Criteria = field(default_factory=Criteria)


@dataclass(frozen=True)
class RadiomicValues:
    """Radiomic features of a strategy's images (``radiomic_values`` of :func:`assess_strategy`).

    Attributes
    ----------
    values : ndarray of shape (n_images, n_radiomic)
        Rows as the deep features; NaN rows for images without radiomics.
    families : sequence of str
        Each column's pyradiomics feature class.
    names : sequence of str, optional
        Each column's name; without them no within-class correlates are named.
    """

    values: np.ndarray
    families: Sequence[str]
    names: Sequence[str] | None = None


@dataclass
class Assessment:
    """What :func:`assess_strategy` found.

    Attributes
    ----------
    evidence : StrategyEvidence
    table : DataFrame
        :func:`~biomark.analysis.biomarkers.candidate_table`.
    kendall : DataFrame or None
        Per class: ``class, folds, k, kendalls_w, p``.
    skipped : list of dict
        Tests not run, and why (``test, class, n, reason``).
    notes : list of str
    """

    evidence: StrategyEvidence
    table: pd.DataFrame
    kendall: pd.DataFrame | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _shortlist(importance: pd.Series | None, tests: pd.DataFrame, k: int) -> list[str]:
    if importance is not None:
        order = importance.sort_values(ascending=False, kind="stable").index
    else:
        order = (
            tests.assign(absd=-tests["cliffs_delta"].abs())
            .sort_values(["mw_p", "absd"], kind="stable")
            .index
        )
    return [str(v) for v in order[:k]]


def _poorly_matched(
    units: pd.DataFrame | None, shortlist: dict[str, list[str]], min_r: float
) -> list[str]:
    """Shortlisted families whose weakest member matches below ``min_r`` (or is silent)."""
    if units is None:
        return []
    listed = sorted({f for feats in shortlist.values() for f in feats})
    r = units["match_r"].reindex(listed)
    return [f for f, v in r.items() if not (v >= min_r)]


def assess_strategy(
    X: np.ndarray,
    meta: pd.DataFrame,
    *,
    strategy: str,
    classes: Sequence[str],
    feature_names: Sequence[str],
    importance: Mapping[int, np.ndarray] | None = None,
    near_copies: Mapping[int, np.ndarray] | None = None,
    unit_basis: str = "shared",
    units: pd.DataFrame | None = None,
    within_class_match: pd.DataFrame | None = None,
    lung: pd.DataFrame | None = None,
    lung_method: str = "",
    lung_attainable: float = float("nan"),
    lung_baseline: float = float("nan"),
    lung_null: LungNull | None = None,
    radiomics: pd.DataFrame | None = None,
    radiomic_values: RadiomicValues | None = None,
    consensus: np.ndarray | None = None,
    blackout_survival: float | None = None,
    settings: EvidenceSettings | None = None,
) -> Assessment:
    """Test every feature of one strategy and build its candidate table.

    Parameters
    ----------
    X : ndarray of shape (n_images, n_features)
        Out-of-fold features, columns in ``feature_names`` order (unit families
        for matched strategies), finite; constant columns should be left out.
    meta : DataFrame of shape (n_images, ...)
        Columns ``label``, ``patient_id``, ``source`` and ``fold``.
    strategy : str
    classes : sequence of str
        The run's classes, in order (the columns of the importances).
    feature_names : sequence of str
    importance : mapping of int to ndarray of shape (n_features, n_classes), optional
        Per fold: mean |attribution| of every feature for every class, in the
        columns of ``X``. Without it, stability is untested and the
        shortlist is ranked by the tests.
    near_copies : mapping of int to bool ndarray of shape (n_features, n_features), optional
        Per fold: which features are near-copies of which in that fold's
        network, in the columns of ``X``
        (:func:`~biomark.analysis.redundancy.near_copy_matrix`). Given for every
        fold with an importance, a near-copy in a fold's top k counts as the
        feature in the top-k frequency (``topk_freq``; its own is ``topk_freq_own``).
    unit_basis : {"shared", "matched", "unmatched"}, default "shared"
        How columns relate across folds (:data:`~biomark.analysis.biomarkers.UNIT_BASES`).
    units : DataFrame, optional
        Index feature name, ``members`` and ``match_r`` (matched families).
    within_class_match : DataFrame, optional
        Index feature name, one column per class: how well a matched family's
        members agree on that class's images
        (:func:`~biomark.analysis.unit_families.within_class_member_r`); for poorly
        matched families it decides stability with the class effect.
    lung : DataFrame, optional
        Index feature name, column ``lung_fraction``.
    lung_method, lung_attainable, lung_baseline, lung_null
        See :class:`~biomark.analysis.biomarkers.StrategyEvidence`.
    radiomics : DataFrame, optional
        Index feature name, ``radiomic_correlates`` and ``radiomic_families`` over all films
        (the candidate table's ``radiomic_correlates_all_films``).
    radiomic_values : RadiomicValues, optional
        Radiomic features of the images: poorly matched unit families are then
        also judged on whether their top radiomic correlate keeps its family
        across folds, every shortlisted feature gets the share of its
        within-class variation that radiomics explain (``radiomic_r2``) and,
        with the columns' names, its strongest correlates within its class
        (``radiomic_correlates``).
    consensus : ndarray of shape (n_images, n_features), optional
        Matched families' consensus in the rows and columns of ``X``
        (:func:`~biomark.analysis.unit_families.family_consensus`): when given,
        ``radiomic_r2`` is measured on it instead of the out-of-fold members.
        Every test of class separation stays on ``X``.
    blackout_survival : float, optional
    settings : EvidenceSettings, optional

    Returns
    -------
    Assessment

    Raises
    ------
    ConfigError
        If ``unit_basis`` is unknown.
    DataError
        If ``X`` is not finite or does not match ``meta`` (from the tests),
        or ``consensus`` is not of ``X``'s shape.
    """
    settings = settings or EvidenceSettings()
    if unit_basis not in UNIT_BASES:
        raise ConfigError(f"unit_basis={unit_basis!r}: use one of {', '.join(UNIT_BASES)}")
    crit = settings.criteria
    classes = list(classes)
    names = [str(v) for v in feature_names]
    labels = meta["label"].astype(str).to_numpy()
    folds = meta["fold"].to_numpy()
    out = Assessment(
        evidence=StrategyEvidence(strategy=strategy, tests={}, shortlist={}), table=pd.DataFrame()
    )
    present = [c for c in classes if c in set(labels)] if names else []
    if not names:
        out.notes.append(f"{strategy}: every feature is constant; nothing to test.")
    tests = _class_tests(X, labels, present, names, settings, out)
    imp_by_class, stability = _importance_stability(
        importance, near_copies, present, classes, names, settings.top_k, out
    )
    if len(importance or {}) == 1:
        out.notes.append(
            f"{strategy}: attributions are available for one fold only; fold stability cannot be "
            "measured."
        )
    shortlist = {c: _shortlist(imp_by_class.get(c), tests[c], settings.top_k) for c in present}
    ev = StrategyEvidence(
        strategy=strategy,
        tests=tests,
        shortlist=shortlist,
        importance=imp_by_class,
        stability=stability,
        lung=lung,
        radiomics=radiomics,
        lung_attainable=lung_attainable,
        lung_baseline=lung_baseline,
        lung_null=lung_null,
        lung_method=lung_method,
        unit_basis=unit_basis,
        units=units,
        within_class_match=within_class_match,
    )
    _shortlist_tests(ev, X, meta, names, settings, out)
    if radiomic_values is not None:
        _radiomic_evidence(
            ev, X, consensus, labels, folds, names, radiomic_values, crit.min_match_r
        )
    if names:
        sources = meta["source"].astype(str).to_numpy()
        try:
            # one row per patient: source and class are patient-level, films are not independent
            ev.source = feature_source_association(
                X,
                labels,
                sources,
                patient_ids=meta["patient_id"].astype(str).to_numpy()
                if "patient_id" in meta
                else None,
                feature_names=names,
                alpha=crit.alpha,
            )
            out.skipped.extend(ev.source.attrs.get("skipped", []))
        except BiomarkError as err:
            out.notes.append(f"{strategy}: per-feature source association not run ({err})")
    ev.blackout_survival = blackout_survival
    out.evidence = ev
    out.table = candidate_table(ev, crit)
    return out


def _class_tests(
    X: np.ndarray,
    labels: np.ndarray,
    present: list[str],
    names: list[str],
    settings: EvidenceSettings,
    out: Assessment,
) -> dict[str, pd.DataFrame]:
    """Per class, every feature's class-vs-rest tests without intervals; a class that cannot be
    tested leaves ``present``.

    Intervals come later, for the shortlist only. Kruskal-Wallis across classes
    and the pooled ranks of the Mann-Whitney tests are the same for every
    positive class: computed once.
    """
    crit = settings.criteria
    tests: dict[str, pd.DataFrame] = {}
    kruskal = None
    ranks = pooled_ranks(X) if present else None
    for c in list(present):
        try:
            t = feature_tests(
                X,
                labels,
                positive=c,
                feature_names=names,
                n_bootstrap=0,
                alpha=crit.alpha,
                min_group_size=settings.min_group_size,
                seed=settings.seed,
                kruskal=kruskal,
                ranks=ranks,
            )
            kruskal = t[["kruskal_H", "kruskal_p", "kruskal_q"]] if kruskal is None else kruskal
        except BiomarkError as err:
            out.skipped.append(
                {
                    "test": "feature_tests",
                    "class": c,
                    "n": int((labels == c).sum()),
                    "reason": str(err),
                }
            )
            present.remove(c)
            continue
        out.skipped.extend(s for s in t.attrs.get("skipped", []) if s["test"] != "auc_bootstrap")
        tests[c] = t
    if tests:
        logger.info(
            "%s: features significant at q < %g (of %d): %s",
            out.evidence.strategy,
            crit.alpha,
            len(names),
            ", ".join(f"{c} {int(t['significant'].sum())}" for c, t in tests.items()),
        )
    return tests


def _importance_stability(
    importance: Mapping[int, np.ndarray] | None,
    near_copies: Mapping[int, np.ndarray] | None,
    present: list[str],
    classes: list[str],
    names: list[str],
    top_k: int,
    out: Assessment,
) -> tuple[dict[str, pd.Series], dict[str, pd.DataFrame]]:
    """Per class: mean attribution over folds and, with two folds or more, the top-k stability
    (Kendall's W in ``out``), counting a fold's near-copies where every fold's are known."""
    folds_imp = sorted(importance) if importance else []
    copies = (
        [near_copies[f] for f in folds_imp]
        if near_copies and all(f in near_copies for f in folds_imp)
        else None
    )
    imp_by_class: dict[str, pd.Series] = {}
    stability: dict[str, pd.DataFrame] = {}
    kendall_rows = []
    for c in present if folds_imp else []:
        ci = classes.index(c)
        imp = np.stack([np.asarray(importance[f])[:, ci] for f in folds_imp])  # type: ignore[index]
        imp_by_class[c] = pd.Series(imp.mean(axis=0), index=names)
        if len(folds_imp) >= 2:
            st = stability_table(imp, k=min(top_k, len(names)), feature_names=names, copies=copies)
            stability[c] = st
            kendall_rows.append(
                {
                    "class": c,
                    "folds": len(folds_imp),
                    "k": st.attrs["k"],
                    "kendalls_w": st.attrs.get("kendalls_w"),
                    "p": st.attrs.get("kendalls_w_p"),
                }
            )
    out.kendall = pd.DataFrame(kendall_rows) if kendall_rows else None
    return imp_by_class, stability


def _shortlist_tests(
    ev: StrategyEvidence,
    X: np.ndarray,
    meta: pd.DataFrame,
    names: list[str],
    settings: EvidenceSettings,
    out: Assessment,
) -> None:
    """Per class, on its shortlist: class effect per fold, bootstrap intervals, patient-level and
    mixed-model tests."""
    crit = settings.criteria
    labels = meta["label"].astype(str).to_numpy()
    folds = meta["fold"].to_numpy()
    pid = meta["patient_id"].astype(str).to_numpy()
    col = {n: i for i, n in enumerate(names)}
    for c, listed in ev.shortlist.items():
        idx = [col[n] for n in listed]
        if not idx:
            continue
        if len(set(folds.tolist())) > 1:
            ev.fold_effects[c] = fold_class_effects(
                X[:, idx],
                labels,
                folds,
                positive=c,
                feature_names=listed,
                min_effect=crit.min_fold_effect,
                min_group_size=settings.min_group_size,
            )
        try:
            ev.ci[c] = feature_tests(
                X[:, idx],
                labels,
                positive=c,
                feature_names=listed,
                n_bootstrap=settings.n_bootstrap,
                alpha=crit.alpha,
                min_group_size=settings.min_group_size,
                seed=settings.seed,
            )
            ev.patient[c] = patient_level_tests(
                X,
                labels,
                pid,
                features=idx,
                positive=c,
                feature_names=names,
                min_group_size=settings.min_group_size,
                alpha=crit.alpha,
            )
            # The mixed model confirms a significant effect with patients as a random effect; a
            # feature that is not significant at the image level has nothing to confirm.
            significant = true_where(ev.tests[c]["significant"])
            confirm = [j for j in idx[: settings.n_mixed] if bool(significant.get(names[j], False))]
            if confirm:
                ev.mixed[c] = mixed_model_tests(
                    X,
                    labels,
                    pid,
                    features=confirm,
                    positive=c,
                    feature_names=names,
                    alpha=crit.alpha,
                )
        except BiomarkError as err:
            out.skipped.append(
                {
                    "test": "patient/mixed",
                    "class": c,
                    "n": int((labels == c).sum()),
                    "reason": str(err),
                }
            )


def _radiomic_evidence(
    ev: StrategyEvidence,
    X: np.ndarray,
    consensus: np.ndarray | None,
    labels: np.ndarray,
    folds: np.ndarray,
    names: list[str],
    radiomic_values: RadiomicValues,
    min_match_r: float,
) -> None:
    """What radiomics say about the shortlist: within-class R^2 and correlates (on the consensus
    when given) and, for poorly matched families, family agreement (per fold, on ``X``)."""
    families = radiomic_values.families
    R = np.asarray(radiomic_values.values, dtype=np.float64)
    col = {n: i for i, n in enumerate(names)}
    within = X if consensus is None else np.asarray(consensus, dtype=np.float64)
    if within.shape != X.shape:
        raise DataError(f"consensus values {within.shape} do not match the features {X.shape}")
    for c, listed in ev.shortlist.items():
        if listed:
            values = within[:, [col[n] for n in listed]]
            ev.radiomic_r2[c] = within_class_r2(values, R, labels, positive=c, feature_names=listed)
            if radiomic_values.names is not None:
                correlates = within_class_correlates(
                    values,
                    R,
                    labels,
                    positive=c,
                    feature_names=listed,
                    radiomic_names=radiomic_values.names,
                )
                if correlates is not None:
                    ev.class_radiomics[c] = correlates
    poor = (
        _poorly_matched(ev.units, ev.shortlist, min_match_r) if ev.unit_basis == "matched" else []
    )
    rows = np.isfinite(R).all(axis=1)
    if poor and rows.sum() >= 10 and len(set(folds[rows].tolist())) > 1:
        cols = [col[n] for n in poor]
        ev.fold_radiomics = fold_radiomic_agreement(
            X[rows][:, cols], R[rows], folds[rows], families=families, feature_names=poor
        )
