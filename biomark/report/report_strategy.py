"""The biomarker report's analysis of one strategy of a run.

:func:`analyse_strategy` reads the strategy's finished folds and checks them
(:mod:`biomark.analysis.checks`: NaN, features constant in a class, features
the saved model does not reproduce -- each a warning naming the fold and
feature), runs each fold's model once
(:func:`biomark.report.report_models.model_evidence`: head attributions,
localisation, Grad-CAM, lung blackout, reference embeddings), matches units
across folds where each fold trained its own backbone
(:mod:`biomark.analysis.alignment`), puts every per-fold array into the
matched order, and hands the aligned features to
:func:`biomark.analysis.evidence.assess_strategy` (tests, stability, source
association, candidate table). Whatever cannot be computed (no model, no
dataset, too few images) is recorded in :attr:`StrategyReport.notes` and the
affected columns stay NA; nothing fails for lack of an optional input.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.alignment import (
    FoldAlignment,
    align_folds,
    align_rows,
    family_consensus,
    identity_alignment,
    own_backbones,
)
from biomark.analysis.associate import associate, radiomic_family
from biomark.analysis.audit import source_predictability
from biomark.analysis.biomarkers import Criteria
from biomark.analysis.chance import chance_guard, withhold_candidates
from biomark.analysis.checks import constant_in_class, nonfinite_features, nonfinite_rows, warning
from biomark.analysis.controls import read_blackout
from biomark.analysis.evidence import EvidenceSettings, assess_strategy
from biomark.analysis.lung_swap import read_lung_swap
from biomark.analysis.redundancy import (
    UnitRedundancy,
    direction_table,
    mark_near_copies,
    unit_redundancy,
)
from biomark.data.dataset import Dataset
from biomark.exceptions import BiomarkError, RunError
from biomark.features.run_folder import STRATEGY_SUMMARY, RunFolder
from biomark.features.run_info import RunInfo
from biomark.features.run_summary import strategy_title
from biomark.report.feature_maps import lung_table, thumbnails
from biomark.report.report_models import ModelOutputs, close_models, model_evidence
from biomark.report.strategy_report import RadiomicsInput, ReportSettings, StrategyReport
from biomark.train.metrics import pooled_metrics

__all__ = [
    "RadiomicsInput",
    "ReportSettings",
    "StrategyReport",
    "analyse_strategy",
    "radiomic_columns",
]

logger = logging.getLogger(__name__)


def _classification(
    run: RunFolder, label: str, classes: list[str], meta: pd.DataFrame, folds: list[int], seed: int
) -> tuple[dict[str, Any] | None, str, pd.DataFrame | None]:
    fold_table = run.strategy_table(label, "metrics.csv")
    summary = run.strategy_summary(label)
    if summary is not None:
        return summary, STRATEGY_SUMMARY, fold_table
    records = [r for r in (run.fold_metrics(label, f) for f in folds) if r is not None]
    if not records:
        return None, "", None
    probs = meta[[f"prob_{c}" for c in classes]].to_numpy()
    try:
        pooled = pooled_metrics(
            [r["metrics"] for r in records],
            y_true=meta["label"].to_numpy(),
            y_pred=meta["pred"].to_numpy(),
            probabilities=probs,
            classes=classes,
            n_bootstrap=1000,
            seed=seed,
        )
        rows = [
            {
                "fold": r["fold"],
                "n_test": r["metrics"]["n_images"],
                **{
                    k: r["metrics"][k]
                    for k in (
                        "accuracy",
                        "binary_accuracy",
                        "sensitivity",
                        "specificity",
                        "macro_auc",
                        "covid_auc",
                    )
                },
            }
            for r in records
        ]
    except (KeyError, BiomarkError) as err:
        logger.warning(
            "%s: fold metrics.json unreadable (%s: %s); classification tables left out",
            label,
            type(err).__name__,
            err,
        )
        return None, f"fold metrics.json unreadable ({type(err).__name__}: {err})", None
    return pooled, f"recomputed from the {len(records)} finished folds", pd.DataFrame(rows)


def _unfinished_folds_warning(
    run: RunFolder, label: str, missing: list[int], present: list[int], k: int
) -> dict[str, str]:
    """The warning of a strategy analysed without some of its folds (shown at the top, logged)."""
    return warning(
        label,
        ", ".join(str(f) for f in missing),
        "all",
        "unfinished folds",
        f"fold(s) {missing} are not finished (no done.json in "
        f"{run.fold_dir(label, missing[0]).parent}); analysed on folds {present} only. Their test "
        f"images are missing from every table, and fold stability is judged over {len(present)} of "
        f"{k} folds, so fewer networks must agree and more features pass. Re-run `biomark extract` "
        "with the run's plan: it trains only the unfinished folds.",
    )


def _load_folds(
    run: RunFolder, label: str, folds: list[int], classes: list[str]
) -> tuple[pd.DataFrame, np.ndarray, dict[int, np.ndarray], list[dict[str, str]]]:
    """Out-of-fold features of the finished folds, checked: (meta, X, non-finite units per fold, warnings).

    Images with non-finite probabilities are dropped; features with a
    non-finite value are marked per fold (left out after matching).
    """
    metas, xs, bad, warns = [], [], {}, []
    for f in list(folds):
        where = str(run.fold_dir(label, f) / "features.parquet")
        try:
            m, x = run.features(label, f)
        except (
            RunError,
            OSError,
            ValueError,
        ) as err:  # a truncated table (pyarrow's ArrowInvalid is a ValueError)
            warns.append(
                warning(
                    label,
                    f,
                    "all",
                    "unreadable features",
                    f"{where}: unreadable ({type(err).__name__}: {err}); this fold is left out of the "
                    "report. Re-run `biomark extract --force` for it.",
                )
            )
            folds.remove(f)
            continue
        prob_cols = [c for c in (f"prob_{k}" for k in classes) if c in m.columns]
        if prob_cols:
            rows, w = nonfinite_rows(
                m[prob_cols].to_numpy(dtype=np.float64),
                m["image_id"].astype(str).tolist(),
                strategy=label,
                fold=f,
                where=where,
            )
            warns.extend(w)
            m, x = m[~rows].reset_index(drop=True), x[~rows]
        names = [f"f{j:04d}" for j in range(x.shape[1])]
        bad[f], w = nonfinite_features(x, strategy=label, fold=f, feature_names=names, where=where)
        warns.extend(w)
        metas.append(m)
        xs.append(x)
    if not metas:
        raise RunError(
            f"{run.strategy_dir(label)}: no readable features.parquet in any finished fold; re-run "
            f"`biomark extract --force --strategies {label}`"
        )
    return pd.concat(metas, ignore_index=True), np.concatenate(xs), bad, warns


def _match_units(
    rep: StrategyReport,
    mo: ModelOutputs,
    dumped: tuple[dict[int, np.ndarray], pd.Index] | None,
    n_units: int,
    seed: int,
) -> tuple[FoldAlignment | None, dict[int, np.ndarray], pd.Index]:
    """The strategy's unit matching, with the reference activations and image ids it used.

    The identity for a shared backbone (no reference: nothing is returned for
    it), else matching by reference activations: the dumped ones
    (:func:`_dumped_reference`), else those the fold models embedded here.
    """
    label = rep.label
    none: tuple[dict[int, np.ndarray], pd.Index] = ({}, pd.Index([], dtype=object))
    if rep.shared_features:
        return identity_alignment(rep.folds, n_units), *none
    if len(rep.folds) == 1:
        return identity_alignment(rep.folds, n_units, method="one fold: nothing to match"), *none
    reference, ref_ids = dumped if dumped is not None else none
    method = f"activation correlation over {len(ref_ids)} images of features_all.parquet (every fold's model)"
    if not reference:
        reference = dict(mo.reference)
        ref_ids = pd.Index(rep.reference_ids if rep.reference_ids is not None else [], dtype=object)
        method = (
            f"activation correlation over {len(ref_ids)} class-stratified reference images embedded by every "
            "fold's model here"
        )
    if set(rep.folds) - set(reference):
        rep.notes.append(
            f"{label}: units cannot be matched across folds (no features_all.parquet and no model.keras with the "
            "dataset's images for every fold); fold stability is left untested, and pooled statistics mix "
            "different units."
        )
        return None, *none
    finite = {f: np.where(np.isfinite(x), x, 0.0) for f, x in reference.items()}
    try:
        return align_folds(finite, seed=seed, method=method), finite, ref_ids
    except BiomarkError as err:
        rep.notes.append(f"{label}: units could not be matched across folds ({err}).")
        return None, *none


def _dumped_reference(
    run: RunFolder, rep: StrategyReport, present: list[int]
) -> tuple[dict[int, np.ndarray], pd.Index] | None:
    """The folds' ``features_all.parquet`` on their common images, read once for matching units.

    None when the fold models must embed a reference subset here instead: some
    fold did not dump every image, or a dump cannot be read (each unreadable
    file is then a warning box at the top). Empty for a shared backbone, which
    needs no matching.
    """
    if rep.shared_features:
        return {}, pd.Index([], dtype=object)
    if set(present) - set(run.folds_with(rep.label, "features_all.parquet")):
        return None
    try:
        return run.reference_features(rep.label, rep.folds)
    except RunError:
        for f in rep.folds:  # only on this path: name every file that cannot be read
            try:
                run.features(rep.label, f, kind="all")
            except RunError as err:
                rep.warnings.append(
                    warning(
                        rep.label,
                        f,
                        "all",
                        "unreadable features_all",
                        f"{err}; units are matched on a reference subset embedded by the fold models instead",
                    )
                )
        return None


def _consensus(
    rep: StrategyReport,
    al: FoldAlignment,
    reference: dict[int, np.ndarray],
    ref_ids: pd.Index,
    keep: np.ndarray,
) -> np.ndarray | None:
    """The kept families' consensus on the rows of ``rep.meta``; None (with a note) when some image was not embedded by every fold."""
    ids = rep.meta["image_id"].astype(str).to_numpy()
    rows = ref_ids.get_indexer(ids)
    if (rows < 0).any():
        rep.notes.append(
            f"{rep.label}: only {len(ref_ids)} reference images went through every fold's model, so what a "
            "family tracks within a class is read from each image's out-of-fold member alone "
            "(`dump: {features: all}` in the plan gives every image a reading by every fold)."
        )
        return None
    return family_consensus(reference, al)[rows][:, keep]


def _radiomic_correlates(
    radiomics: RadiomicsInput | None, rep: StrategyReport, X: np.ndarray, names: list[str]
) -> pd.DataFrame | None:
    """Per tested feature, its strongest radiomic correlates (same names as ``names``)."""
    if radiomics is None:
        return None
    if radiomics.pairs is not None and rep.unit_basis != "matched":
        return _correlates(radiomics.pairs)
    if radiomics.table is not None and names:
        rad = radiomics.table
        ids = rep.meta["image_id"].astype(str).to_numpy()
        common = np.isin(ids, rad.index)
        if common.sum() >= 10:
            rad_names = [c for c in rad.columns if c not in ("image_id", "image_sha256")]
            R = rad.loc[ids[common], rad_names].to_numpy(dtype=float)
            finite = np.isfinite(R).all(axis=0)
            try:
                res = associate(
                    X[common],
                    R[:, finite],
                    deep_names=names,
                    radiomic_names=[n for n, ok in zip(rad_names, finite) if ok],
                )
                return _correlates(res.table(only_significant=True))
            except ValueError as err:
                logger.warning("%s: radiomic association skipped (%s)", rep.label, err)
                return None
    if radiomics.pairs is not None:
        rep.notes.append(
            f"{rep.label}: {radiomics.source} relates deep features by index across folds, which "
            "does not apply to matched unit families; radiomic correlates need the dataset's "
            "radiomics table (`biomark radiomics --data DIR`)."
        )
    return None


def radiomic_columns(table: pd.DataFrame) -> list[str]:
    """The radiomic feature columns of a per-image radiomics table (numeric, ids left out)."""
    return [
        c
        for c in table.columns
        if c not in ("image_id", "image_sha256") and pd.api.types.is_numeric_dtype(table[c])
    ]


def _radiomic_values(
    radiomics: RadiomicsInput | None, meta: pd.DataFrame
) -> tuple[np.ndarray, list[str]] | None:
    """The dataset's radiomic features in the rows of ``meta`` (NaN rows where missing) and their families."""
    if radiomics is None or radiomics.table is None:
        return None
    table = radiomics.table
    names = radiomic_columns(table)
    R = table.reindex(meta["image_id"].astype(str).to_numpy())[names].to_numpy(dtype=np.float64)
    present = np.isfinite(R).any(axis=1)  # images with radiomics
    finite = np.isfinite(R[present]).all(axis=0)  # columns complete on those images
    if not present.any() or not finite.any():
        return None
    return R[:, finite], [radiomic_family(n) for n, ok in zip(names, finite) if ok]


def analyse_strategy(
    run: RunFolder,
    label: str,
    info: RunInfo,
    dataset: Dataset | None,
    settings: ReportSettings,
    radiomics: RadiomicsInput | None = None,
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

    Returns
    -------
    StrategyReport
    """
    t0 = time.perf_counter()
    classes = list(info.classes)
    k = info.k or 0
    present = run.finished_folds(label)
    missing = [f for f in range(k) if f not in present]
    meta, X_full, bad_units, warns = _load_folds(
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
        rep.warnings.append(_unfinished_folds_warning(run, label, missing, present, k))
    rep.classification, rep.classification_source, rep.fold_metrics = _classification(
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
    # The report embeds reference images itself only when extract did not dump every image through every fold.
    dumped = _dumped_reference(run, rep, present)
    mo = model_evidence(run.root, rep, dataset, X_full, settings, reference=dumped is None)
    try:
        t_match = time.perf_counter()
        al, X_al, keep, criteria = _matched_features(rep, mo, dumped, X_full, bad_units, settings)
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


def _matched_features(
    rep: StrategyReport,
    mo: ModelOutputs,
    dumped: tuple[dict[int, np.ndarray], pd.Index] | None,
    X_full: np.ndarray,
    bad_units: dict[int, np.ndarray],
    settings: ReportSettings,
) -> tuple[FoldAlignment | None, np.ndarray, np.ndarray, Criteria]:
    """Match units across folds and keep the live ones; fills ``rep.X``, names, lung table, units and notes.

    Returns the alignment (None: unmatched), the aligned features, the kept
    columns and the criteria (the match threshold raised to the shuffled-image
    null where that is higher).
    """
    label, meta = rep.label, rep.meta
    d = X_full.shape[1]
    folds = meta["fold"].to_numpy()
    al, reference, ref_ids = _match_units(rep, mo, dumped, d, settings.seed)
    rep.alignment = al
    rep.unit_basis = "shared" if rep.shared_features else ("unmatched" if al is None else "matched")
    if al is not None and len(rep.folds) == 1:
        rep.unit_basis = "shared"
    prefix = "u" if rep.unit_basis == "matched" else "f"
    X_al = align_rows(X_full, folds, al) if al is not None and not al.identity else X_full
    bad = np.zeros(d, dtype=bool)
    for f, mask in bad_units.items():
        bad |= mask[al.perms[f]] if al is not None else mask
    names_full = [f"{prefix}{j:04d}" for j in range(d)]
    live = ~bad & (np.ptp(np.where(np.isfinite(X_al), X_al, 0.0), axis=0) > 0)
    keep = np.flatnonzero(live)
    names = [names_full[j] for j in keep]
    rep.feature_names, rep.X = names, X_al[:, keep].astype(np.float64)
    if al is not None and not al.identity and reference:
        rep.X_consensus = _consensus(rep, al, reference, ref_ids, keep)
    rep.redundancy, rep.directions = _redundancy(rep, X_full, folds, reference, ref_ids, al)
    rep.n_constant = int((~bad & ~live).sum())
    if rep.n_constant:
        rep.notes.append(
            f"{label}: {rep.n_constant} of {d} features are constant over all out-of-fold images "
            "(dead units) and were dropped from the statistics."
        )
    criteria = settings.criteria
    if al is not None and not al.identity:
        criteria = _describe_matching(rep, al, keep, names, criteria)
    elif rep.unit_basis == "unmatched":
        rep.notes.append(
            f"{label}: GAP unit j of one fold is not the same feature as unit j of another; "
            "pooled statistics mix different units."
        )
    if mo.lung_in is not None and mo.lung_tot is not None:
        lin = (
            align_rows(mo.lung_in, folds, al) if al is not None and not al.identity else mo.lung_in
        )
        ltot = (
            align_rows(mo.lung_tot, folds, al)
            if al is not None and not al.identity
            else mo.lung_tot
        )
        rep.lung, rep.per_image_lung = lung_table(lin, ltot, keep, names)
        rep.per_image_lung_measured = np.isfinite(ltot)
    labels = meta["label"].astype(str).to_numpy()
    for f in rep.folds:  # in the fold's own units, named as in its features.parquet
        rows, ok = folds == f, np.flatnonzero(~bad_units[f])
        _, w = constant_in_class(
            X_full[rows][:, ok],
            labels[rows],
            strategy=label,
            fold=f,
            feature_names=[f"f{j:04d}" for j in ok],
            min_group_size=settings.min_group_size,
        )
        rep.warnings.extend(w)
    return al, X_al, keep, criteria


def _redundancy(
    rep: StrategyReport,
    X_full: np.ndarray,
    folds: np.ndarray,
    reference: dict[int, np.ndarray],
    ref_ids: pd.Index,
    al: FoldAlignment | None,
) -> tuple[UnitRedundancy | None, pd.DataFrame | None]:
    """How many directions the strategy's units span over one network's images, and, where they are near-copies, which.

    A note, and (None, None), when it cannot be measured.
    """
    labels = rep.meta["label"].astype(str).to_numpy()
    if reference and al is not None and al.reference_fold in reference:
        X = reference[al.reference_fold]
        known = pd.Series(labels, index=rep.meta["image_id"].astype(str))
        row_labels = known.reindex(ref_ids.astype(str)).to_numpy()
    elif rep.shared_features:
        X, row_labels = X_full, labels  # one backbone: every fold's rows come from the same units
    else:
        first = folds == (rep.folds[0] if rep.folds else -1)
        X, row_labels = X_full[first], labels[first]
    X = X[:, np.isfinite(X).all(axis=0)]
    try:
        red = unit_redundancy(X)
    except BiomarkError as err:
        rep.notes.append(f"{rep.label}: redundancy of the units not measured ({err}).")
        return None, None
    logger.info("%s: %s", rep.label, red.describe())
    directions = None
    labelled = pd.notna(
        row_labels
    )  # reference images dropped from the out-of-fold table have no label here
    if red.redundant and labelled.sum() >= 3:
        directions = direction_table(X[labelled], row_labels[labelled], n_directions=red.dimension)
    return red, directions


def _describe_matching(
    rep: StrategyReport, al: FoldAlignment, keep: np.ndarray, names: list[str], criteria: Criteria
) -> Criteria:
    """Match quality into ``rep`` (table, units, a note); the criteria with the match threshold above chance."""
    label = rep.label
    null_q95 = float(al.quality().iloc[-1]["null_r_q95"])
    if np.isfinite(null_q95) and null_q95 > criteria.min_match_r:
        # With few reference images unrelated units reach r >= 0.5 by chance: require more than chance.
        criteria = replace(criteria, min_match_r=min(1.0, null_q95))
        rep.notes.append(
            f"{label}: with {al.n_reference} reference images unrelated units match at up to "
            f"r = {null_q95:.2f} (95th percentile of the shuffled-image null); a family "
            "counts as well matched only above that."
        )
    rep.alignment_quality = al.quality(criteria.min_match_r)
    rep.units = al.member_table().iloc[keep].set_axis(names)[["members", "match_r"]]
    share = al.share_matched(criteria.min_match_r)
    last = rep.alignment_quality.iloc[-1]
    text = (
        f"{label}: {own_backbones(label)}, so its units were matched to fold "
        f"{al.reference_fold}'s by {al.method}; a feature u#### is a matched family (its members "
        f"are listed). Matched correlation: median {last['r_median']:.2f}, {100 * share:.0f}% of "
        f"families matched at r >= {criteria.min_match_r:.2g} in every fold (unrelated "
        f"units: 95th percentile {last['null_r_q95']:.2f})."
    )
    if share < 0.5:
        text += (
            " Matching is poor: for families below the threshold, stability is judged on what the "
            "units track (their class effect in each fold), not on their rank."
        )
        best = float(last["share_best_matched"])
        redundant = rep.redundancy is not None and rep.redundancy.redundant
        if redundant and np.isfinite(best) and best >= 0.5:
            text += (
                f" Yet {best:.0%} of units have a counterpart at r >= {criteria.min_match_r:.2g} in "
                f"another fold (best-counterpart median r {last['best_r_median']:.2f}), just not a unique "
                "one: the units are near-copies of a few directions (see Fold stability), and the one-to-one "
                "match has to pair copies with each other."
            )
    rep.notes.append(text)
    return criteria


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
    """Source audit, blackout reading and every per-feature test: fills the evidence and candidates of ``rep``."""
    label, meta, names, Xk = rep.label, rep.meta, rep.feature_names, rep.X
    assert (
        Xk is not None and rep.chance is not None
    )  # set by _matched_features and analyse_strategy
    labels = meta["label"].astype(str).to_numpy()
    folds = meta["fold"].to_numpy()
    sources = meta["source"].astype(str).to_numpy()
    if names:
        try:
            thresholds = info.report_settings()
            rep.source_predictability = source_predictability(
                Xk,
                labels,
                sources,
                folds=folds,
                patient_ids=meta["patient_id"],
                seed=settings.seed,
                auc_recoverable=thresholds.source_auc_recoverable,
                auc_weak=thresholds.source_auc_weak,
            )
        except BiomarkError as err:
            rep.notes.append(f"{label}: source audit not run ({err})")
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
        unit_basis=rep.unit_basis,
        units=rep.units,
        lung=rep.lung,
        lung_method=rep.lung_method,
        lung_attainable=1.0 if occluded else rep.lung_attainable,
        lung_baseline=rep.lung_area_fraction,
        radiomics=_radiomic_correlates(radiomics, rep, Xk, names),
        radiomic_values=_radiomic_values(radiomics, meta),
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
        # near-copies among the candidates are one biomarker, not several (biomark.analysis.redundancy)
        try:
            rep.candidates = mark_near_copies(rep.candidates, values, names)
        except BiomarkError as err:
            rep.notes.append(f"{label}: near-copies among the candidates not marked ({err}).")
    rep.tests, rep.importance = result.evidence.tests, result.evidence.importance
    rep.skipped.extend(result.skipped)
    rep.notes.extend(result.notes)


def _correlates(pairs: pd.DataFrame | None, top: int = 3) -> pd.DataFrame | None:
    """Per deep feature: its strongest radiomic correlates and their families."""
    if pairs is None or pairs.empty:
        return None
    rows = {}
    for feat, grp in pairs.groupby("deep"):
        grp = grp.reindex(grp["rho"].abs().sort_values(ascending=False).index)
        best = grp.head(top)
        fams = grp["family"].astype(str).value_counts()
        rows[str(feat)] = {
            "radiomic_correlates": "; ".join(
                f"{r} ({v:+.2f})" for r, v in zip(best["radiomic"], best["rho"])
            ),
            "radiomic_families": ", ".join(f"{k}: {v}" for k, v in fams.items()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
