"""The biomarker report's analysis of one strategy of a run.

:func:`analyse_strategy` reads the strategy's finished folds, runs each fold's
model once (:func:`biomark.features.report_inputs.run_fold_model`: head
weights, ``out_relu`` lung mass, Grad-CAM maps, lung blackout), explains the
head (:mod:`biomark.analysis.attribution`), tests every feature
(:mod:`biomark.analysis.stats`), measures fold stability
(:mod:`biomark.analysis.stability`), audits sources
(:mod:`biomark.analysis.audit`) and builds the candidate table
(:mod:`biomark.analysis.biomarkers`). Whatever cannot be computed (no model,
no dataset, too few images) is recorded in :attr:`StrategyReport.notes` and
the affected columns stay NA; nothing fails for lack of an optional input.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.audit import feature_source_association, source_predictability
from biomark.analysis.biomarkers import Criteria, StrategyEvidence, candidate_table
from biomark.analysis.chance import ChanceGuard, chance_guard, withhold_candidates
from biomark.analysis.controls import BlackoutReading, read_blackout
from biomark.analysis.stability import stability_table
from biomark.analysis.stats import feature_tests, mixed_model_tests, patient_level_tests
from biomark.data.dataset import Dataset
from biomark.exceptions import BiomarkError
from biomark.features.deep import fold_dir, list_folds, load_features, strategy_dir
from biomark.features.run_folder import STRATEGY_SUMMARY, is_done, strategy_title
from biomark.report.report_models import model_evidence, thumbnails
from biomark.train.metrics import pooled_metrics

__all__ = ["ReportSettings", "StrategyReport", "analyse_strategy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportSettings:
    """Settings of ``biomark report`` (CLI flags in brackets).

    Attributes
    ----------
    strategies : tuple of str, optional
        Strategies to report (``--strategies``); default all of the run's.
    top_k : int, default 20
        Features shortlisted per class, and the k of the top-k stability (``--top-k``).
    shap_samples : int, default 32
        Test images explained per fold (``--shap-samples``).
    n_background : int, default 16
        Background rows of the SHAP masker per fold.
    n_permutations : int, default 2
        Antithetic permutation pairs per explained image.
    shap_precision : {"float32", "float64"}, default "float32"
        Arithmetic of the SHAP walk (:func:`biomark.analysis.attribution.explain_head`):
        float32 is ~1.8x faster and differs from float64 by ~1e-6 of the values'
        scale, far below the sampling error of two permutation pairs.
    blackout : bool, default True
        Run the lung-blackout control (``--no-blackout`` turns it off).
    n_bootstrap : int, default 1000
        Bootstrap draws of the AUC intervals.
    n_mixed : int, default 3
        Top shortlisted features per class fitted with the mixed model (statsmodels MixedLM takes
        ~3 s per fit with ~2,000 patients, the dominant cost of a report without models).
    n_gallery : int, default 4
        Features per strategy shown with map thumbnails.
    n_thumbnails : int, default 3
        Highest and lowest images shown per feature.
    n_gradcam : int, default 4
        Grad-CAM sample images per strategy.
    min_group_size : int, default 3
        Classes with fewer images are not tested.
    seed : int, default 0
    criteria : Criteria
    """

    strategies: tuple[str, ...] | None = None
    top_k: int = 20
    shap_samples: int = 32
    n_background: int = 16
    n_permutations: int = 2
    shap_precision: str = "float32"
    blackout: bool = True
    n_bootstrap: int = 1000
    n_mixed: int = 3
    n_gallery: int = 4
    n_thumbnails: int = 3
    n_gradcam: int = 4
    min_group_size: int = 3
    seed: int = 0
    criteria: Criteria = field(default_factory=Criteria)


@dataclass
class StrategyReport:
    """Everything the report shows about one strategy (see :func:`analyse_strategy`)."""

    label: str
    title: str
    classes: list[str]
    folds: list[int]
    missing_folds: list[int]
    meta: pd.DataFrame
    feature_names: list[str]
    n_constant: int
    classification: dict[str, Any] | None = None
    classification_source: str = ""
    fold_metrics: pd.DataFrame | None = None
    additivity: pd.DataFrame | None = None
    importance: dict[str, pd.Series] = field(default_factory=dict)
    kendall: pd.DataFrame | None = None
    tests: dict[str, pd.DataFrame] = field(default_factory=dict)
    evidence: StrategyEvidence | None = None
    source_predictability: pd.DataFrame | None = None
    lung: pd.DataFrame | None = None
    lung_area_fraction: float = float("nan")
    lung_attainable: float = float("nan")
    mask_source: str = ""
    blackout: pd.DataFrame | None = None
    candidates: pd.DataFrame | None = None
    thumbnails: list[dict[str, Any]] = field(default_factory=list)
    gradcam: list[dict[str, Any]] = field(default_factory=list)
    identity_error: float = float("nan")
    shared_features: bool = False
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    X: np.ndarray | None = None
    per_image_lung: np.ndarray | None = None
    chance: ChanceGuard | None = None
    blackout_reading: BlackoutReading | None = None


def _classification(run_dir: Any, label: str, classes: list[str], meta: pd.DataFrame, folds: list[int],
                    seed: int) -> tuple[dict[str, Any] | None, str, pd.DataFrame | None]:
    base = strategy_dir(run_dir, label)
    fold_table = pd.read_csv(base / "metrics.csv") if (base / "metrics.csv").is_file() else None
    path = base / STRATEGY_SUMMARY
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8")), str(path.name), fold_table
    records = []
    for f in folds:
        p = fold_dir(run_dir, label, f) / "metrics.json"
        if p.is_file():
            records.append(json.loads(p.read_text(encoding="utf-8")))
    if not records:
        return None, "", None
    probs = meta[[f"prob_{c}" for c in classes]].to_numpy()
    try:
        pooled = pooled_metrics([r["metrics"] for r in records], y_true=meta["label"].to_numpy(),
                                y_pred=meta["pred"].to_numpy(), probabilities=probs, classes=classes,
                                n_bootstrap=1000, seed=seed)
        rows = [{"fold": r["fold"], "n_test": r["metrics"]["n_images"],
                 **{k: r["metrics"][k] for k in ("accuracy", "binary_accuracy", "sensitivity", "specificity",
                                                  "macro_auc", "covid_auc")}} for r in records]
    except (KeyError, BiomarkError) as err:
        logger.warning("%s: fold metrics.json unreadable (%s: %s); classification tables left out",
                       label, type(err).__name__, err)
        return None, f"fold metrics.json unreadable ({type(err).__name__}: {err})", None
    return pooled, f"recomputed from the {len(records)} finished folds", pd.DataFrame(rows)


class _SkipIntervalNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "n_bootstrap=0" not in record.getMessage()


@contextmanager
def _no_interval_warning() -> Iterator[None]:
    """Hide stats' "n_bootstrap=0" warning: the report computes intervals for the shortlist on purpose."""
    stats_logger = logging.getLogger("biomark.analysis.stats")
    note = _SkipIntervalNote()
    stats_logger.addFilter(note)
    try:
        yield
    finally:
        stats_logger.removeFilter(note)


def analyse_strategy(run_dir: Any, label: str, info: dict[str, Any], dataset: Dataset | None,
                     settings: ReportSettings, radiomics: pd.DataFrame | None = None) -> StrategyReport:
    """Analyse one strategy of a run (see the module docstring).

    Parameters
    ----------
    run_dir : path
    label : str
        Strategy label (``scratch``, ``frozen``, ``finetune:3``).
    info : dict
        ``run.json``.
    dataset : Dataset or None
        The run's dataset (None: no images, so no maps, masks or blackout).
    settings : ReportSettings
    radiomics : DataFrame, optional
        Significant deep x radiomic pairs of this strategy (``deep, radiomic, family, rho``).

    Returns
    -------
    StrategyReport
    """
    t0 = time.perf_counter()
    classes = list(info["classes"])
    k = int(info.get("folds", {}).get("k", info.get("plan", {}).get("cv", {}).get("k", 0)))
    present = [f for f in list_folds(run_dir, label) if is_done(run_dir, label, f)]
    missing = [f for f in range(k) if f not in present]
    meta_parts, x_parts = [], []
    for f in present:
        m, x = load_features(run_dir, label, f)
        meta_parts.append(m)
        x_parts.append(x)
    meta = pd.concat(meta_parts, ignore_index=True)
    X_full = np.concatenate(x_parts)
    names_full = [f"f{j:04d}" for j in range(X_full.shape[1])]
    live = np.ptp(X_full, axis=0) > 0
    keep = np.flatnonzero(live)
    names = [names_full[j] for j in keep]
    Xk = X_full[:, keep].astype(np.float64)
    weights = str(info.get("plan", {}).get("model", {}).get("weights", "none")).lower()
    rep = StrategyReport(label=label, title=strategy_title(label), classes=classes, folds=present,
                         missing_folds=missing, meta=meta, feature_names=names, n_constant=int((~live).sum()), X=Xk,
                         shared_features=label == "frozen" and weights != "none")
    if missing:
        rep.notes.append(f"{label}: fold(s) {missing} are not finished (no done.json); analysed on folds {present}.")
    if rep.n_constant:
        rep.notes.append(f"{label}: {rep.n_constant} of {X_full.shape[1]} features are constant over all "
                         "out-of-fold images (dead units) and were dropped from the statistics.")
    if not rep.shared_features:
        rep.notes.append(
            f"{label}: every fold trains its own backbone, so GAP unit j of one fold is not the same feature as "
            "unit j of another; pooled statistics and index-level fold stability mix different units.")
    rep.classification, rep.classification_source, rep.fold_metrics = _classification(
        run_dir, label, classes, meta, present, settings.seed)
    labels = meta["label"].astype(str).to_numpy()
    rep.chance = chance_guard(labels, meta["pred"], strategy=label, positive=info.get("positive_class"),
                              classes=classes, alpha=settings.criteria.alpha)

    # ---------------------------------------------------------------- models
    per_fold_imp, rows_all = model_evidence(run_dir, rep, dataset, X_full, keep, settings)
    # ---------------------------------------------------------- statistics
    t_stats = time.perf_counter()
    crit = settings.criteria
    present_classes = [c for c in classes if c in set(labels)] if names else []
    if not names:
        rep.notes.append(f"{label}: every feature is constant; nothing to test.")
    tests: dict[str, pd.DataFrame] = {}
    for c in list(present_classes):
        try:
            with _no_interval_warning():  # intervals come below, for the shortlist only
                t = feature_tests(Xk, labels, positive=c, feature_names=names, n_bootstrap=0, alpha=crit.alpha,
                                  min_group_size=settings.min_group_size, seed=settings.seed)
        except BiomarkError as err:
            rep.skipped.append({"test": "feature_tests", "class": c, "n": int((labels == c).sum()), "reason": str(err)})
            present_classes.remove(c)
            continue
        rep.skipped.extend(s for s in t.attrs.get("skipped", []) if s["test"] != "auc_bootstrap")
        tests[c] = t
    rep.tests = tests
    shap_folds = sorted(per_fold_imp)
    importance: dict[str, pd.Series] = {}
    stability: dict[str, pd.DataFrame] = {}
    kendall_rows = []
    for c in present_classes:
        ci = classes.index(c)
        if shap_folds:
            imp = np.stack([per_fold_imp[f][keep, ci] for f in shap_folds])
            importance[c] = pd.Series(imp.mean(axis=0), index=names)
            if len(shap_folds) >= 2:
                st = stability_table(imp, k=min(settings.top_k, len(names)), feature_names=names)
                stability[c] = st
                kendall_rows.append({"class": c, "folds": len(shap_folds), "k": st.attrs["k"],
                                     "kendalls_w": st.attrs.get("kendalls_w"), "p": st.attrs.get("kendalls_w_p")})
    rep.importance = importance
    rep.kendall = pd.DataFrame(kendall_rows) if kendall_rows else None
    if shap_folds and len(shap_folds) < 2:
        rep.notes.append(f"{label}: SHAP is available for one fold only; fold stability cannot be measured.")
    shortlist: dict[str, list[str]] = {}
    for c in present_classes:
        if c in importance:
            order = importance[c].sort_values(ascending=False, kind="stable").index
        else:
            t = tests[c]
            order = t.assign(absd=-t["cliffs_delta"].abs()).sort_values(["mw_p", "absd"], kind="stable").index
        shortlist[c] = [str(v) for v in order[: settings.top_k]]
    ev = StrategyEvidence(strategy=label, tests=tests, shortlist=shortlist, importance=importance,
                          stability=stability, lung=rep.lung, radiomics=_correlates(radiomics),
                          lung_attainable=rep.lung_attainable, lung_baseline=rep.lung_area_fraction)
    pid = meta["patient_id"].astype(str).to_numpy()
    col = {n: i for i, n in enumerate(names)}
    for c in present_classes:
        idx = [col[n] for n in shortlist[c]]
        if not idx:
            continue
        try:
            ev.ci[c] = feature_tests(Xk[:, idx], labels, positive=c, feature_names=shortlist[c],
                                     n_bootstrap=settings.n_bootstrap, alpha=crit.alpha,
                                     min_group_size=settings.min_group_size, seed=settings.seed)
            ev.patient[c] = patient_level_tests(Xk, labels, pid, features=idx, positive=c, feature_names=names,
                                                min_group_size=settings.min_group_size, alpha=crit.alpha)
            ev.mixed[c] = mixed_model_tests(Xk, labels, pid, features=idx[: settings.n_mixed], positive=c,
                                            feature_names=names, alpha=crit.alpha)
        except BiomarkError as err:
            rep.skipped.append({"test": "patient/mixed", "class": c, "n": int((labels == c).sum()),
                                "reason": str(err)})
    rep.seconds["statistics"] = time.perf_counter() - t_stats

    # ----------------------------------------------------------------- audit
    sources = meta["source"].astype(str).to_numpy()
    try:
        rep.source_predictability = source_predictability(Xk, labels, sources, folds=meta["fold"].to_numpy(),
                                                          patient_ids=meta["patient_id"], seed=settings.seed)
        ev.source = feature_source_association(Xk, labels, sources, feature_names=names, alpha=crit.alpha)
        rep.skipped.extend(ev.source.attrs.get("skipped", []))
    except BiomarkError as err:
        rep.notes.append(f"{label}: source audit not run ({err})")
    if "pred_blackout" in meta and meta["pred_blackout"].notna().any():
        rep.blackout_reading = read_blackout(labels, meta["pred"], meta["pred_blackout"], alpha=crit.alpha,
                                             max_survival=crit.max_blackout_survival)
        ev.blackout_survival = rep.blackout_reading.survival_for_flags
    rep.evidence = ev
    rep.candidates = withhold_candidates(candidate_table(ev, crit), rep.chance)
    rep.thumbnails = thumbnails(run_dir, rep, dataset, rows_all, X_full, settings)
    rep.seconds["total"] = time.perf_counter() - t0
    return rep


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
            "radiomic_correlates": "; ".join(f"{r} ({v:+.2f})" for r, v in zip(best["radiomic"], best["rho"])),
            "radiomic_families": ", ".join(f"{k}: {v}" for k, v in fams.items()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
