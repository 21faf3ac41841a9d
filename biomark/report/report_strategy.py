"""The biomarker report's analysis of one strategy of a run.

:func:`analyse_strategy` reads the strategy's finished folds and checks them
(:mod:`biomark.report.strategy_folds`; :mod:`biomark.analysis.checks`: NaN,
features constant in a class, features the saved model does not reproduce --
each a warning naming the fold and feature), runs each fold's model once
(:func:`biomark.report.report_models.model_evidence`: head attributions,
localisation, Grad-CAM, lung blackout, reference embeddings), matches units
across folds where each fold trained its own backbone
(:mod:`biomark.report.unit_matching`), puts every per-fold array into the
matched order, and hands the aligned features to
:func:`biomark.analysis.evidence.assess_strategy` (tests, stability, source
association, candidate table). Whatever cannot be computed (no model, no
dataset, too few images) is recorded in :attr:`StrategyReport.notes` and the
affected columns stay NA; nothing fails for lack of an optional input.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biomark.analysis.alignment import FoldAlignment
from biomark.analysis.audit import source_predictability
from biomark.analysis.biomarkers import Criteria
from biomark.analysis.blackout import read_blackout
from biomark.analysis.chance import chance_guard, withhold_candidates
from biomark.analysis.evidence import EvidenceSettings, assess_strategy
from biomark.analysis.lung_swap import read_lung_swap
from biomark.analysis.redundancy import mark_near_copies
from biomark.analysis.unpicked import why_unpicked
from biomark.config import ReportPlanSettings
from biomark.data.dataset import Dataset
from biomark.exceptions import BiomarkError
from biomark.features.run_folder import RunFolder
from biomark.features.run_info import RunInfo
from biomark.features.run_summary import strategy_title
from biomark.report.feature_maps import thumbnails
from biomark.report.radiomic_correlates import radiomic_correlates, radiomic_values
from biomark.report.random_units import PendingNull
from biomark.report.report_models import ModelOutputs, close_models, model_evidence
from biomark.report.strategy_folds import (
    classification_tables,
    dumped_reference,
    load_folds,
    mixed_backbones_warning,
    unfinished_folds_warning,
)
from biomark.report.strategy_report import RadiomicsInput, ReportSettings, StrategyReport
from biomark.report.unit_matching import fold_near_copies, matched_features

__all__ = [
    "RadiomicsInput",
    "ReportSettings",
    "SourceAuditInputs",
    "StrategyReport",
    "analyse_strategy",
    "source_audit_inputs",
]

logger = logging.getLogger(__name__)


def analyse_strategy(
    run: RunFolder,
    label: str,
    info: RunInfo,
    dataset: Dataset | None,
    settings: ReportSettings,
    radiomics: RadiomicsInput | None = None,
    lung_null: PendingNull | None = None,
) -> StrategyReport:
    """Analyse one strategy of a run (see the module docstring).

    Parameters
    ----------
    run : RunFolder
    label : str
        Strategy label (``scratch``, ``frozen``, ``finetune:3``).
    info : RunInfo
        ``run.json``.
    dataset : Dataset or None
        The run's dataset (None: no images, so no maps, masks or blackout).
    settings : ReportSettings
    radiomics : RadiomicsInput, optional
    lung_null : PendingNull, optional
        The run's random-network lung fractions
        (:mod:`biomark.report.random_units`), read once the strategy's own
        model passes are done; the features' lung criteria are read against
        them. None: against ``min_lung_fraction`` alone.

    Returns
    -------
    StrategyReport
    """
    t0 = time.perf_counter()
    classes = list(info.classes)
    k = info.k or 0
    present = run.finished_folds(label)
    missing = [f for f in range(k) if f not in present]
    meta, X_full, bad_units, warns = load_folds(
        run, label, present, classes
    )  # drops unreadable folds
    rep = StrategyReport(
        label=label,
        title=strategy_title(label),
        classes=classes,
        folds=present,
        missing_folds=missing,
        meta=meta,
        feature_names=[],
        n_constant=0,
        shared_features=info.shared_backbone(label),
        image_size=info.image_size,
        warnings=warns,
    )
    if missing:
        rep.warnings.append(unfinished_folds_warning(run, label, missing, present, k))
    mixed = mixed_backbones_warning(run, label, present) if info.random_control(label) else None
    if mixed is not None:
        rep.warnings.append(mixed)
    rep.classification, rep.classification_source, rep.fold_metrics = classification_tables(
        run, label, classes, meta, present, settings.seed
    )
    rep.chance = chance_guard(
        meta["label"].astype(str).to_numpy(),
        meta["pred"],
        strategy=label,
        positive=info.positive_class,
        classes=classes,
        alpha=settings.criteria.alpha,
    )

    # ------------------------------------------------- models, then matching
    # The report embeds reference images itself only when extract did not dump every image through
    # every fold.
    dumped = dumped_reference(run, rep, present)
    mo = model_evidence(run.root, rep, dataset, X_full, settings, reference=dumped is None)
    if lung_null is not None and rep.lung_method:
        _read_lung_null(rep, lung_null, settings.criteria)
    try:
        t_match = time.perf_counter()
        al, X_al, keep, criteria = matched_features(rep, mo, dumped, X_full, bad_units, settings)
        rep.seconds["matching"] = time.perf_counter() - t_match
        t_stats = time.perf_counter()
        _statistics(rep, info, mo, al, keep, criteria, settings, radiomics)
        rep.seconds["statistics"] = time.perf_counter() - t_stats
        t_thumbs = time.perf_counter()
        rep.thumbnails = thumbnails(
            rep, dataset, mo, X_al, al if al is not None and not al.identity else None, settings
        )
        rep.seconds["thumbnails"] = time.perf_counter() - t_thumbs
    finally:
        close_models(mo)
    rep.seconds["total"] = time.perf_counter() - t0
    logger.info(
        "%s analysed in %.0f s (%s)",
        label,
        rep.seconds["total"],
        ", ".join(f"{k} {v:.1f}" for k, v in rep.seconds.items() if k != "total"),
    )
    return rep


def _read_lung_null(rep: StrategyReport, pending: PendingNull, criteria: Criteria) -> None:
    """The run's lung null into ``rep.lung_null`` when it was measured as this strategy's
    features were; else a note that the fixed threshold alone is used."""
    null = pending.read()
    if isinstance(null, str):
        why = null
    elif not rep.lung_method.startswith(null.method):
        why = (
            f"the random network was localised by {null.method}, this strategy by {rep.lung_method}"
        )
    else:
        rep.lung_null = null
        return
    rep.notes.append(
        f"{rep.label}: lung fractions are read against the fixed threshold "
        f"{criteria.min_lung_fraction:g} alone: {why}."
    )


def _statistics(
    rep: StrategyReport,
    info: RunInfo,
    mo: ModelOutputs,
    al: FoldAlignment | None,
    keep: np.ndarray,
    criteria: Criteria,
    settings: ReportSettings,
    radiomics: RadiomicsInput | None,
) -> None:
    """Every per-feature test, after the shortcut audits: fills the evidence and candidates of
    ``rep``."""
    label, meta, names, Xk = rep.label, rep.meta, rep.feature_names, rep.X
    assert Xk is not None and rep.chance is not None  # set by matched_features and analyse_strategy
    near_copies = fold_near_copies(rep, al, keep)  # before the audits, which free the models' views
    survival = _shortcut_audits(rep, info, criteria, settings)
    imp = (
        {f: v[al.perms[f]][keep] for f, v in mo.importance.items()}
        if al is not None
        else {f: v[keep] for f, v in mo.importance.items()}
    )
    occluded = rep.lung_method.startswith("occlusion")
    result = assess_strategy(
        Xk,
        meta,
        strategy=label,
        classes=list(rep.classes),
        feature_names=names,
        importance=imp or None,
        near_copies=near_copies,
        unit_basis=rep.unit_basis,
        units=rep.units,
        within_class_match=rep.within_class_match,
        lung=rep.lung,
        lung_method=rep.lung_method,
        lung_attainable=1.0 if occluded else rep.lung_attainable,
        lung_baseline=rep.lung_area_fraction,
        lung_null=rep.lung_null,
        radiomics=radiomic_correlates(radiomics, rep, Xk, names),
        radiomic_values=radiomic_values(radiomics, meta),
        consensus=rep.X_consensus,
        blackout_survival=survival,
        settings=EvidenceSettings(
            top_k=settings.top_k,
            n_bootstrap=settings.n_bootstrap,
            n_mixed=settings.n_mixed,
            min_group_size=settings.min_group_size,
            seed=settings.seed,
            criteria=criteria,
        ),
    )
    rep.evidence, rep.kendall = result.evidence, result.kendall
    rep.candidates = withhold_candidates(result.table, rep.chance)
    values = rep.within_class_values()
    if values is not None and len(names):
        # near-copies among the candidates are one biomarker, not several
        # (biomark.analysis.redundancy)
        try:
            rep.candidates = mark_near_copies(rep.candidates, values, names)
        except BiomarkError as err:
            rep.notes.append(f"{label}: near-copies among the candidates not marked ({err}).")
    rep.unpicked = why_unpicked(rep.candidates, criteria, top_k=settings.top_k)
    rep.tests, rep.importance = result.evidence.tests, result.evidence.importance
    rep.skipped.extend(result.skipped)
    rep.notes.extend(result.notes)


@dataclass(frozen=True)
class SourceAuditInputs:
    """What the model-level source audit of one strategy reads (see :func:`source_audit_inputs`).

    ``features`` is one matrix (a shared backbone's out-of-fold features,
    probed across the run's ``folds``) or a list of views (each fold's own
    network on the same images, ``folds`` None); ``meta`` holds those images'
    rows (label, source, patient_id) in the same order; ``described`` says in
    words what was read, for the table's caption.
    """

    features: np.ndarray | list[np.ndarray]
    meta: pd.DataFrame
    folds: np.ndarray | None
    described: str


def source_audit_inputs(rep: StrategyReport, Xk: np.ndarray) -> SourceAuditInputs:
    """The features the source audit of ``rep`` reads, with their images.

    Folds that train networks of their own are probed network by network
    (each fold's model on the images every fold's model embedded,
    ``rep.model_views``); a shared backbone's out-of-fold features ``Xk`` are
    probed across the run's folds.
    """
    meta, ids = rep.meta, rep.model_view_ids
    if len(rep.model_views) >= 2 and ids is not None and len(ids):
        views = [rep.model_views[f] for f in sorted(rep.model_views)]
        return SourceAuditInputs(
            features=views,
            meta=meta.set_index(meta["image_id"].astype(str)).loc[ids.astype(str)],
            folds=None,
            described=(
                f"each fold's own network on the {len(ids):,} images every fold's model "
                f"embedded ({len(views)} networks, each probed on its own units; the AUC is their "
                "mean), since the folds' networks do not share units"
            ),
        )
    return SourceAuditInputs(
        features=Xk,
        meta=meta,
        folds=meta["fold"].to_numpy(),
        described="the out-of-fold features, the probe held out fold by fold",
    )


def _source_audit(
    rep: StrategyReport, Xk: np.ndarray, seed: int, thresholds: ReportPlanSettings
) -> pd.DataFrame:
    """The within-class source audit of ``rep``'s features (:func:`source_audit_inputs`), with
    ``attrs["features"]`` saying what it read."""
    inputs = source_audit_inputs(rep, Xk)
    audit = source_predictability(
        inputs.features,
        inputs.meta["label"].astype(str).to_numpy(),
        inputs.meta["source"].astype(str).to_numpy(),
        folds=inputs.folds,
        patient_ids=inputs.meta["patient_id"],
        seed=seed,
        auc_recoverable=thresholds.source_auc_recoverable,
        auc_weak=thresholds.source_auc_weak,
    )
    audit.attrs["features"] = inputs.described
    return audit


def _shortcut_audits(
    rep: StrategyReport, info: RunInfo, criteria: Criteria, settings: ReportSettings
) -> float | None:
    """The source audit, the lung blackout and the lung swap, read into ``rep``.

    Returns the blackout survival the per-feature flags use (None without a blackout).
    """
    label, meta, names, Xk = rep.label, rep.meta, rep.feature_names, rep.X
    assert Xk is not None  # set by matched_features
    labels = meta["label"].astype(str).to_numpy()
    if names:
        try:
            thresholds = info.report_settings()
            rep.source_predictability = _source_audit(rep, Xk, settings.seed, thresholds)
        except BiomarkError as err:
            rep.notes.append(f"{label}: source audit not run ({err})")
    rep.model_views = {}  # only the audit reads them: not carried back from the worker
    survival = None
    if "pred_blackout" in meta and meta["pred_blackout"].notna().any():
        rep.blackout_reading = read_blackout(
            labels,
            meta["pred"],
            meta["pred_blackout"],
            alpha=criteria.alpha,
            max_survival=criteria.max_blackout_survival,
        )
        survival = rep.blackout_reading.survival_for_flags
    swap = rep.lung_swap
    if swap is not None and len(swap):
        try:
            rep.lung_swap_reading = read_lung_swap(
                swap["label"],
                swap["pred"],
                swap["lung_label"],
                swap["pred_swap"],
                alpha=criteria.alpha,
            )
        except BiomarkError as err:
            rep.notes.append(f"{label}: lung swap not read ({err})")
    return survival
