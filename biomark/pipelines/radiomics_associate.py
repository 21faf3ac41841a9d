"""What ``biomark radiomics`` relates to a run: each strategy's deep features against radiomics.

:func:`associate_run` analyses every strategy of a run folder
(:func:`associate_strategy`: plain and partial associations, CCA, each
control), two at a time: the plan's first strategy in a worker process, the
others here. On the demo that took the 18 s of the three after the
extraction, on one core, to about 10 s.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.config import ReportPlanSettings, StrategySpec
from biomark.features.run_folder import RunFolder
from biomark.features.worker_pool import InlineExecutor, worker_pool
from biomark.pipelines.job_process import collected_log, replay_job_log
from biomark.pipelines.radiomics_units import DeepUnits, deep_units
from biomark.report.radiomics_alignment import StrategyAnalysis

__all__ = ["associate_run", "associate_strategy", "strategies_with_features"]

logger = logging.getLogger(__name__)


def associate_run(
    run_dir: str | Path,
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    controls: Mapping[str, pd.DataFrame] | None = None,
    strategies: list[str] | None = None,
    fdr_alpha: float = 0.05,
    cca_components: int = 3,
    excluded: Collection[str] = (),
) -> dict[str, StrategyAnalysis]:
    """Associate every strategy's deep features with radiomics.

    One strategy (the plan's first: on the demo scratch, whose units take
    longest to match) is analysed in a worker process while this process
    analyses the others, and the worker's log is logged here; the tables are
    those of one strategy after another.

    A shared backbone's out-of-fold features are used as they are. Where each
    fold trained (or drew) its own backbone, unit ``j`` of one fold is not
    unit ``j`` of another: the units are matched across folds on
    ``features_all.parquet`` and each family's consensus is used (``u####``,
    as on the report's index page); without those dumps the pooled
    out-of-fold features are kept and the analysis says that they mix units
    (``unit_basis`` of each :class:`StrategyAnalysis`).

    Parameters
    ----------
    run_dir : path
        A run folder written by ``biomark extract``.
    features : DataFrame
        ``image_id`` + radiomic features (``features.parquet``).
    manifest : DataFrame
        The dataset manifest (covariates for the partial correlation).
    controls : mapping of str to DataFrame, optional
        Control variant -> radiomic features.
    strategies : list of str, optional
        Default: every strategy of the run with features, by its label
        (``finetune:3``, as the other pages name it), in the plan's order.
    fdr_alpha : float, default 0.05
    cca_components : int, default 3
    excluded : collection of str, default ()
        Image ids radiomics left out by name
        (:func:`biomark.report.radiomics_page.excluded_images`); they do not
        count against the overlap check.

    Returns
    -------
    dict of str to StrategyAnalysis

    Raises
    ------
    RunError
        On a run without features or tables with too few images in common.
    """
    run = RunFolder(run_dir)
    labels = strategies or strategies_with_features(run)
    options: dict[str, Any] = {
        "controls": controls,
        "fdr_alpha": fdr_alpha,
        "cca_components": cca_components,
        "excluded": excluded,
    }
    out: dict[str, StrategyAnalysis] = {}
    with worker_pool(1, background=len(labels) > 1) as pool:
        beside = None
        if len(labels) > 1 and not isinstance(pool, InlineExecutor):
            beside = pool.submit(_associate_logged, run_dir, labels[0], features, manifest, options)
        for strategy in labels[1:] if beside is not None else labels:
            out[strategy] = associate_strategy(run_dir, strategy, features, manifest, **options)
        if beside is not None:
            analysis, records = beside.result()
            replay_job_log(records)
            out[labels[0]] = analysis
    return {strategy: out[strategy] for strategy in labels}


def _associate_logged(
    run_dir: str | Path,
    strategy: str,
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    options: dict[str, Any],
) -> tuple[StrategyAnalysis, list[dict[str, Any]]]:
    """:func:`associate_strategy` in a worker process, with its log records for the parent."""
    with collected_log() as records:
        analysis = associate_strategy(run_dir, strategy, features, manifest, **options)
    return analysis, records


def associate_strategy(
    run_dir: str | Path,
    strategy: str,
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    controls: Mapping[str, pd.DataFrame] | None = None,
    fdr_alpha: float = 0.05,
    cca_components: int = 3,
    excluded: Collection[str] = (),
) -> StrategyAnalysis:
    """One strategy of :func:`associate_run` (the same parameters, for one strategy label)."""
    run = RunFolder(run_dir)
    info = run.read_info(missing_ok=True)
    meta, X = run.features(strategy)
    units = deep_units(run, info, strategy, meta, X)
    analysis = _associate_units(
        strategy,
        meta,
        units,
        features,
        manifest,
        random_control=info.random_control(strategy),
        controls=controls,
        positive=info.positive_class,
        classes=info.classes,
        fdr_alpha=fdr_alpha,
        cca_components=cca_components,
        excluded=excluded,
        thresholds=info.report_settings(),
    )
    logger.info(
        "%s: %d images, %d significant pairs",
        strategy,
        analysis.n_images,
        analysis.result.n_significant,
    )
    return analysis


def strategies_with_features(run: RunFolder) -> list[str]:
    """The labels of the strategies that hold out-of-fold features, in the plan's order."""
    with_features = {StrategySpec.parse(name).label for name in run.strategy_folders()}
    return [label for label in run.strategies_found() if label in with_features]


def _associate_units(
    strategy: str,
    meta: pd.DataFrame,
    units: DeepUnits,
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    random_control: bool,
    controls: Mapping[str, pd.DataFrame] | None,
    positive: str | None,
    classes: tuple[str, ...],
    fdr_alpha: float,
    cca_components: int,
    excluded: Collection[str],
    thresholds: ReportPlanSettings,
) -> StrategyAnalysis:
    """One strategy's associations: plain, partial (manifest covariates), CCA, and each control."""
    from biomark.analysis.associate import associate, cca_explained
    from biomark.analysis.chance import chance_guard
    from biomark.report.radiomics_alignment import align_features, covariates_from_manifest

    rad_names = [c for c in features.columns if c != "image_id"]
    guard = None
    if (
        "pred" in meta and meta["pred"].notna().all() and meta["label"].nunique() > 1
    ):  # all out-of-fold images
        guard = chance_guard(
            meta["label"],
            meta["pred"],
            strategy=strategy,
            positive=positive,
            classes=list(classes) or None,
            alpha=thresholds.chance_alpha,
        )
    meta, X, R = align_features(
        meta,
        units.values,
        features,
        what=f"{strategy} deep features",
        excluded=excluded,
        min_overlap=thresholds.min_overlap,
    )
    ids = meta["image_id"].astype(str).to_numpy()
    deep_names = units.names
    values = R[rad_names].to_numpy(dtype=float)
    result = associate(
        X, values, deep_names=deep_names, radiomic_names=rad_names, fdr_alpha=fdr_alpha
    )
    cov = covariates_from_manifest(manifest, ids)
    partial = None
    if cov is not None:
        partial = associate(
            X,
            values,
            deep_names=deep_names,
            radiomic_names=rad_names,
            covariates=cov,
            fdr_alpha=fdr_alpha,
        )
    finite = np.isfinite(values).all(axis=0)
    folds = meta["fold"].to_numpy() if "fold" in meta.columns and meta["fold"].nunique() > 1 else 5
    try:
        cca: dict[str, Any] = cca_explained(
            X, values[:, finite], n_components=cca_components, folds=folds
        )
    except ValueError as err:
        logger.warning("%s: CCA skipped (%s)", strategy, err)
        cca = {"error": str(err)}
    variants = {"real": result}
    for name, table in (controls or {}).items():
        names = [c for c in table.columns if c != "image_id"]
        _, cX, cR = align_features(
            meta, X, table, what=f"{strategy} vs control {name}", min_overlap=0.5, excluded=excluded
        )
        variants[name] = associate(
            cX,
            cR[names].to_numpy(dtype=float),
            deep_names=deep_names,
            radiomic_names=names,
            fdr_alpha=fdr_alpha,
        )
    return StrategyAnalysis(
        strategy,
        len(ids),
        result,
        partial,
        cca,
        variants,
        guard,
        unit_basis=units.basis,
        basis_note=units.note,
        agree_in=units.agree_in,
        random_control=random_control,
    )
