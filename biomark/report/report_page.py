"""The biomarker report page: ``reports/<run>/index.html`` and ``candidates.csv``.

:func:`write_report` renders a :class:`~biomark.report.report_data.ReportData`
into one self-contained page (plotly inlined, thumbnails as base64 PNGs) a
clinician-researcher can read without running anything, and writes the
tables beside it: ``candidates.csv`` (every shortlisted feature with its
evidence, flags and verdict), ``additivity.csv``, ``blackout.csv``,
``source_audit.csv``, ``lung_fractions.csv`` and, on the phantom,
``ground_truth.csv``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.attribution import method_sentence
from biomark.io.atomic import write_csv_atomic
from biomark.provenance import package_versions
from biomark.report.figures import confusion_figure, gallery_html, roc_figure, shap_figure
from biomark.report.page import Page, escape
from biomark.report.report_data import ReportData
from biomark.report.report_strategy import StrategyReport

__all__ = ["build_report_page", "claim_verdict", "input_warnings", "limitations", "top_candidates", "unit_matching",
           "write_report"]

logger = logging.getLogger(__name__)

_METRICS = (("accuracy", "Accuracy n-class"), ("binary_accuracy", "Accuracy 2-class"),
            ("sensitivity", "Sensitivity"), ("specificity", "Specificity"), ("macro_auc", "Macro AUC"),
            ("covid_auc", "COVID-19 AUC"))


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}"


def _metrics_table(rep: StrategyReport) -> pd.DataFrame:
    s = rep.classification or {}
    boot = s.get("bootstrap") or {}
    rows = []
    for key, name in _METRICS:
        mean, std = (s.get("mean") or {}).get(key), (s.get("std") or {}).get(key)
        b = boot.get(key) or {}
        rows.append({"metric (%)": name, f"mean ± std over {s.get('n_folds', '?')} folds":
                     f"{_pct(mean)} ± {_pct(std)}",
                     "pooled [95% bootstrap CI]":
                         f"{_pct(b.get('estimate'))} [{_pct(b.get('low'))}, {_pct(b.get('high'))}]" if b else "–"})
    return pd.DataFrame(rows)


def _paper(cm: list[list[int]], labels: list[str]) -> pd.DataFrame:
    arr = np.asarray(cm)
    return pd.DataFrame(arr.T, index=pd.Index(labels, name="predicted"), columns=pd.Index(labels, name="actual"))


def top_candidates(data: ReportData, n: int = 10) -> pd.DataFrame:
    """The best rows of the candidate table: candidates first, then rank (for the CLI)."""
    table = data.candidates
    if table.empty:
        return table
    order = table.assign(_c=table["is_candidate"].fillna(False).astype(bool),
                         _u=table["is_candidate"].isna()).sort_values(
        ["_c", "_u", "rank"], ascending=[False, False, True], kind="stable")
    return order[["strategy", "class", "feature", "cliffs_delta", "auc", "q", "topk_freq", "lung_fraction",
                  "is_candidate", "flags"]].head(n).reset_index(drop=True)


def limitations(data: ReportData) -> list[str]:
    """Plain sentences on what limits the conclusions, generated from the audit."""
    out = []
    for rep in data.strategies.values():
        sp = rep.source_predictability
        if sp is not None:
            if sp.attrs.get("summary"):
                out.append(f"{rep.label}: {sp.attrs['summary']}")
            bad = sp[sp["verdict"] == "source is recoverable"]
            for _, r in bad.iterrows():
                out.append(f"{rep.label}: within {r['class']}, the image source is recoverable from the features "
                           f"(AUC {r['auc']:.2f}): features can separate sites, not only disease.")
        if rep.blackout is not None:
            pooled = rep.blackout.iloc[-1]
            limit = data.settings.criteria.max_blackout_survival
            if np.isfinite(pooled["survival"]) and pooled["survival_above_chance"] >= limit:
                out.append(f"{rep.label}: with the lungs blacked out the model keeps {100 * pooled['survival']:.0f}% "
                           "of its accuracy: it reads something outside the lungs.")
        table = rep.candidates
        if table is not None and len(table):
            outside = table["flag_outside_lungs"].fillna(False).astype(bool).sum()
            if outside:
                out.append(f"{rep.label}: {outside} of {len(table)} shortlisted features put most of their "
                           "activation outside the lung fields.")
        out.extend(rep.notes)
    n_img = max((len(r.meta) for r in data.strategies.values()), default=0)
    if n_img < 200:
        out.append(f"Only {n_img} images: tests have little power and the intervals are wide.")
    out.append("The last convolutional maps are coarse (side/32 cells) and each cell's receptive field covers most "
               "of the image, so 'inside the lungs' means the activation sits in map cells over the lungs.")
    out.append("SHAP values explain the classifier head given the GAP features (interventional, independent "
               "features); they say which features the head uses, not what in the image causes them.")
    return out


def claim_verdict(data: ReportData) -> list[str]:
    """Plain sentences on the paper's claim: do the strategies' features (and candidates) differ?"""
    from biomark.report.compare_page import CKA_BANDS

    out = []
    for _, r in data.cka.iterrows():
        v = r["linear_cka_debiased"]
        if isinstance(v, float) and np.isfinite(v):
            wording = next(text for bound, text in CKA_BANDS if v < bound)
            out.append(f"{r['a']} vs {r['b']}: debiased linear CKA {v:.2f} ({r['source']}): the two strategies "
                       f"{wording}.")
    if data.overlap is not None:
        for _, r in data.overlap.iterrows():
            jf, jm = r["jaccard_features"], r["jaccard_families"]
            if np.isfinite(jf):
                out.append(f"{r['a']} vs {r['b']} ({r['basis']}): Jaccard overlap of radiomic correlates "
                           f"{jf:.2f} (features), {jm:.2f} (families; shared: {r['shared_families'] or 'none'}).")
    counts = {k: int(v.candidates["is_candidate"].fillna(False).astype(bool).sum())
              for k, v in data.strategies.items() if v.candidates is not None and len(v.candidates)}
    if counts:
        scratch = counts.get("scratch")
        if scratch == 0:
            out.append("No scratch feature passes every criterion: on this run the claim that training from scratch "
                       "yields biomarkers is not supported (which differs from 'refuted': see the undetermined rows "
                       "and the limitations).")
        out.append("Candidates per strategy: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    return out


def _methods(data: ReportData) -> list[str]:
    info, s = data.info, data.settings
    plan = info.get("plan", {})
    env = info.get("environment", {})
    keras_info = env.get("keras", {}) if isinstance(env, dict) else {}
    model, cv, train = plan.get("model", {}), plan.get("cv", {}), plan.get("training", {})
    folds = info.get("folds", {})
    masks = ", ".join(sorted({r.mask_source for r in data.strategies.values() if r.mask_source}))
    versions = package_versions(("numpy", "scipy", "pandas", "scikit-learn", "statsmodels", "shap", "plotly"))
    return [
        f"Run {data.name} (plan hash {info.get('plan_hash', '?')}, seed {info.get('seed', plan.get('seed', '?'))}); "
        f"dataset {info.get('dataset', {}).get('dir', '?')} ({info.get('dataset', {}).get('n_images', '?')} images, "
        f"classes {', '.join(info.get('classes', []))}).",
        f"{folds.get('k', cv.get('k', '?'))}-fold cross-validation grouped by "
        f"{folds.get('grouping', cv.get('grouping', '?'))} (folds in folds.csv, shared by every strategy), "
        f"validation fraction {cv.get('validation_fraction', '?')}.",
        f"MobileNetV2 alpha {model.get('alpha', '?')} at {model.get('image_size', '?')} px, weights "
        f"{model.get('weights', '?')}, head Dense({model.get('head_units', '?')}, relu) → BatchNorm → "
        f"Dropout({model.get('dropout', '?')}) → softmax; {train.get('optimizer', '?')}, lr "
        f"{train.get('learning_rate', '?')}, up to {train.get('epochs', '?')} epochs, "
        f"batch {train.get('batch_size', '?')}. "
        f"Strategies: {', '.join(data.strategies)}.",
        f"Keras {keras_info.get('keras', '?')} on {keras_info.get('backend', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        method_sentence(s.shap_method, n_permutations=s.n_permutations, precision=s.shap_precision,  # units
                        n_background=s.n_background, n_explained=s.shap_samples),
        "Per-feature statistics (biomark.analysis.stats): class-vs-rest Mann–Whitney U with Benjamini–Hochberg q "
        "over all features, Cliff's delta, single-feature AUC with a stratified bootstrap "
        f"{100 * (1 - s.criteria.alpha):.0f}% interval ({s.n_bootstrap} draws); the shortlist ({s.top_k} per class, "
        f"by mean |SHAP|) repeated on per-patient means and, for the top {s.n_mixed}, with a linear mixed model "
        "(random intercept per patient, statsmodels MixedLM).",
        f"Fold stability: top-{s.top_k} frequency of each feature across folds (by per-fold mean |SHAP|) and "
        "Kendall's W of the folds' rankings; where each fold trained its own backbone, over unit families matched "
        "one to one to a reference fold by activation correlation on common images (scipy linear_sum_assignment), "
        f"and, for families matched below r = {s.criteria.min_match_r}, the share of folds showing the class "
        f"effect (|Cliff's delta| ≥ {s.criteria.min_fold_effect} with the pooled sign).",
        "Audit: within-class source prediction (standardised logistic regression, held-out folds, ROC AUC); "
        "source beyond class per feature (nested OLS F-test, BH); share of each feature inside the lung mask "
        f"({masks or 'no masks'}): its activation mass on the out_relu maps where they are fine enough, else its "
        "change when the lungs, or the rest, are filled with the mean image (occlusion); "
        "lung-blackout control (lung pixels set to 0, each fold's model re-run on its test images).",
        f"Candidate: q < {s.criteria.alpha}, top-k frequency ≥ {s.criteria.min_stability}, lung fraction ≥ "
        f"{s.criteria.min_lung_fraction}, source q ≥ {s.criteria.alpha}.",
    ]


def _strategy_tables(rep: StrategyReport, top: int = 5) -> pd.DataFrame:
    table = rep.candidates
    if table is None or table.empty:
        return pd.DataFrame()
    cols = ["class", "feature", "rank", "mean_abs_shap", "cliffs_delta", "auc", "auc_ci_low", "auc_ci_high", "q",
            "patient_delta", "patient_q", "mixed_coef", "mixed_q"]
    return table[table["rank"] <= top][cols]


def build_report_page(data: ReportData) -> Page:
    """The report as a :class:`~biomark.report.page.Page` (not yet written)."""
    s = data.settings
    classes = list(data.info.get("classes", []))
    positive = data.info.get("positive_class", "COVID-19")
    page = Page(f"Biomarkers or shortcuts? Run {data.name}",
                subtitle="Do the features the CNN learned behave like biomarkers or like shortcuts?",
                provenance={"run folder": str(data.run_dir.resolve()), "settings": repr(s),
                            "report seconds": f"{data.seconds:.1f}"})
    input_warnings(page, data)  # units: degenerate or tampered inputs, first thing on the page
    page.section("Summary")
    table = data.candidates
    for rep in data.strategies.values():
        t = rep.candidates if rep.candidates is not None else pd.DataFrame()
        n_c = int(t["is_candidate"].fillna(False).astype(bool).sum()) if len(t) else 0
        n_u = int(t["is_candidate"].isna().sum()) if len(t) else 0
        page.paragraph(f"{rep.title} ({rep.label}): {n_c} candidate biomarker(s) among {len(t)} shortlisted "
                       f"(feature, class) pairs; {n_u} undetermined for lack of a test; folds {rep.folds}.")
    if data.links:
        page.html("<p>Other pages of this run: " + " · ".join(
            f'<a href="{escape(href)}">{escape(name)}</a>' for name, href in data.links.items()) + "</p>")
    for item in data.missing:
        page.note(f"Missing: {item['section']} ({item['reason']}). Fill it with: {item['command']}", kind="warning")

    page.section("Classification results")
    page.paragraph("As the paper's Tables 1, 4 and 5: mean ± standard deviation over test folds; pooled estimate "
                   f"with a bootstrap 95% interval over the out-of-fold images. 2-class: {positive} vs the rest.")
    for rep in data.strategies.values():
        if rep.classification is None:
            page.note(f"{rep.label}: no fold metrics found.", kind="warning")
            continue
        page.table(_metrics_table(rep), caption=f"{rep.title} ({rep.label}); source: {rep.classification_source}")
        cm = rep.classification.get("confusion")
        if cm:
            page.figure(confusion_figure(_paper(cm, classes), f"{rep.label}: {len(classes)}-class confusion matrix"))
            page.figure(confusion_figure(_paper(rep.classification["binary_confusion"],
                                                [positive, f"Non-{positive}"]), f"{rep.label}: 2-class"))
        page.figure(roc_figure(rep.meta, classes, positive, f"{rep.label}: ROC curves (out-of-fold)"))

    page.section("Attributions")
    page.paragraph("Attributions (SHAP family; the method is in the table and the Methods) of each class logit of "
                   "the classifier head with respect to the GAP features, per "
                   "fold. Additivity: the attributions of an image sum to its logit minus the mean logit of the "
                   "background; the errors below are that identity's rounding error.")
    adds = [r.additivity.assign(strategy=r.label) for r in data.strategies.values() if r.additivity is not None]
    if adds:
        page.table(pd.concat(adds, ignore_index=True), caption="Per fold: SHAP method, images, additivity error",
                   float_format="{:.3g}")
    for rep in data.strategies.values():
        if rep.importance:
            page.figure(shap_figure(rep.importance, f"{rep.label}: mean |SHAP|"),
                        caption="Mean |SHAP| over folds and explained images; choose the class in the menu.")
        else:
            page.note(f"{rep.label}: no SHAP values (no model.keras in the fold folders).", kind="warning")

    page.section("Where the features live")
    for rep in data.strategies.values():
        if rep.lung is None:
            page.note(f"{rep.label}: lung fractions missing (needs model.keras and the dataset's images).",
                      kind="warning")
            continue
        page.paragraph(f"{rep.label}: masks from {rep.mask_source}; a feature spread evenly over the image would "
                       f"have lung fraction {rep.lung_area_fraction:.2f}, one firing only in the map cell with "
                       f"the most lung {rep.lung_attainable:.2f} (the most the maps can show). Identity check: "
                       "spatial mean of the "
                       f"out_relu map vs the dumped GAP value, max |difference| {rep.identity_error:.2g}. "
                       f"Lung fractions measured by: {rep.lung_method or 'out_relu maps'}.")  # units: method
        if rep.lung_attainable < s.criteria.min_lung_fraction and not rep.lung_method.startswith("occlusion"):
            page.note(f"{rep.label}: the out_relu maps are too coarse for the lung test (attainable lung fraction "
                      f"{rep.lung_attainable:.2f} < {s.criteria.min_lung_fraction}); the criterion is left untested. "
                      "Use a larger model.image_size.", kind="warning")
        if rep.thumbnails:
            groups = [{"title": f"{g['feature']} ({g['class']}; {g['status']})", "shared_scale": True,
                       "tiles": [{"image": t["image"], "overlay": t["overlay"],
                                  "text": f"{t['which']}: {t['label']} {t['value']:.2f}, lung "
                                          + (f"{t['lung_fraction']:.2f}" if np.isfinite(t["lung_fraction"])
                                             else "– (silent)")}
                                 for t in g["tiles"]]} for g in rep.thumbnails]
            page.html(gallery_html(groups, "Images with the highest and lowest values of each feature, its map "
                                   "overlaid (red, one scale per feature; bilinear upsampling of the out_relu "
                                   "channel); 'lung' is the feature's lung fraction in that image, measured as "
                                   "stated above."))
        if rep.gradcam:
            page.html(gallery_html([{"title": f"{rep.label}: Grad-CAM of the predicted class",
                                     "tiles": [{"image": g["image"], "overlay": g["overlay"],
                                                "text": f"{g['label']} → {g['pred']}"} for g in rep.gradcam]}],
                                   "Grad-CAM with weights (1/HW)·∂logit/∂g from the numpy head's analytic "
                                   "gradient."))

    page.section("Statistics per deep feature")
    page.paragraph("The top shortlisted features per class: image level (delta, AUC [CI], q), patient level "
                   "(per-patient means) and mixed model (coefficient, q).")
    for rep in data.strategies.values():
        t = _strategy_tables(rep)
        if len(t):
            page.table(t, caption=f"{rep.label}: top 5 per class", float_format="{:.3g}")
        if rep.skipped:
            page.table(pd.DataFrame(rep.skipped).drop_duplicates(), caption=f"{rep.label}: tests not run, and why")

    page.section("Fold stability")
    for rep in data.strategies.values():
        unit_matching(page, rep)  # units: matched units across folds
        if rep.kendall is not None:
            page.table(rep.kendall, caption=f"{rep.label}: Kendall's W of the folds' mean |SHAP| rankings",
                       float_format="{:.3g}")
        else:
            page.note(f"{rep.label}: stability needs SHAP values on at least two folds.", kind="warning")

    page.section("Shortcut audit")
    for rep in data.strategies.values():
        sp = rep.source_predictability
        if sp is not None:
            page.paragraph(f"{rep.label}: {sp.attrs.get('summary', '')}")
            page.table(sp, caption=f"{rep.label}: can the source be predicted within a class from the features?")
        if rep.blackout is not None:
            page.table(rep.blackout, caption=f"{rep.label}: lung blackout; survival = accuracy_blackout / "
                       "accuracy_original (high: the model reads outside the lungs)")
        elif data.settings.blackout:
            page.note(f"{rep.label}: blackout control not run (no model or no masks).", kind="warning")

    page.section("Candidate biomarkers")
    page.paragraph(f"A candidate is FDR-significant (q < {s.criteria.alpha}), stable (top-{s.top_k} in ≥ "
                   f"{s.criteria.min_stability:.0%} of folds), inside the lungs (lung fraction ≥ "
                   f"{s.criteria.min_lung_fraction}) and not a source marker. All rows in candidates.csv.")
    if len(table):
        cols = ["strategy", "class", "feature", "cliffs_delta", "auc", "auc_ci_low", "auc_ci_high", "q", "topk_freq",
                "lung_fraction", "radiomic_correlates", "flags", "is_candidate", "status"]
        shown = table[table["is_candidate"].fillna(True).astype(bool) | (table["rank"] <= 3)][cols]
        page.table(shown, caption="Candidates, undetermined rows, and the top 3 per class", float_format="{:.3g}")

    page.section("Do the strategies learn different biomarkers?")
    page.paragraph("The paper suggests features learned from scratch may be biomarkers distinct from those of "
                   "ImageNet-pretrained networks. Tested here by the representations' similarity (CKA) and by the "
                   "overlap of the candidates' radiomic correlates.")
    for text in claim_verdict(data):
        page.paragraph(text)
    if len(data.cka):
        page.table(data.cka, caption="Debiased linear CKA between strategies (1 = same representation)")
    if data.overlap is not None and len(data.overlap):
        page.table(data.overlap, caption="Jaccard overlap of radiomic correlates (features, families)")

    if data.truth is not None and len(data.truth):
        page.section("Phantom ground truth")
        for _, r in data.truth.iterrows():
            if isinstance(r.get("rho"), float) and np.isfinite(r["rho"]):
                page.paragraph(f"{r['strategy']}, {r['class']}: {r['chosen_as']} {r['feature']} has Spearman ρ = "
                               f"{r['rho']:+.2f} (p = {r['p']:.2g}, n = {r['n']}) with the planted severity.")
            else:
                page.paragraph(f"{r['strategy']}, {r['class']}: not scored ({r.get('note', '')}).")
        page.table(data.truth, float_format="{:.3g}")

    page.section("Methods")
    for text in _methods(data):
        page.paragraph(text)
    page.section("Limitations")
    for text in limitations(data):
        page.paragraph(text)
    return page


def write_report(data: ReportData) -> dict[str, Path]:
    """Write ``index.html`` and the CSV tables into ``data.out_dir``.

    Returns
    -------
    dict of str to Path
        ``index``, ``candidates`` and the other tables written.
    """
    out = data.out_dir
    paths: dict[str, Path] = {}
    table = data.candidates
    paths["candidates"] = write_csv_atomic(out / "candidates.csv", table if len(table) else
                                           pd.DataFrame(columns=["strategy", "class", "feature", "is_candidate"]))
    extra = {
        "additivity": [r.additivity.assign(strategy=r.label) for r in data.strategies.values()
                       if r.additivity is not None],
        "blackout": [r.blackout.assign(strategy=r.label) for r in data.strategies.values() if r.blackout is not None],
        "source_audit": [r.source_predictability.assign(strategy=r.label) for r in data.strategies.values()
                         if r.source_predictability is not None],
        "lung_fractions": [r.lung.reset_index().assign(strategy=r.label) for r in data.strategies.values()
                           if r.lung is not None],
    }
    for name, frames in extra.items():
        if frames:
            paths[name] = write_csv_atomic(out / f"{name}.csv", pd.concat(frames, ignore_index=True))
    if data.truth is not None:
        paths["ground_truth"] = write_csv_atomic(out / "ground_truth.csv", data.truth)
    paths["index"] = build_report_page(data).write(out / "index.html")
    return paths


# --------------------------------------------------------------------------- #
# Rendered from the units engineer's data (report_strategy: warnings, alignment).
# --------------------------------------------------------------------------- #
def input_warnings(page: Page, data: ReportData) -> None:
    """A warning box per degenerate or tampered input (``data.warnings``), at the top of the page."""
    for w in data.warnings:
        page.note(f"Input check failed — {w['strategy']}, fold {w['fold']}, feature(s) {w['feature']} "
                  f"({w['check']}): {w['message']}", kind="warning")


def unit_matching(page: Page, rep: StrategyReport) -> None:
    """How well a strategy's units were matched across folds (nothing for a shared backbone)."""
    if rep.alignment_quality is None or rep.alignment is None:
        return
    al = rep.alignment
    page.paragraph(f"{rep.label}: each fold trained its own backbone; units were matched one to one to fold "
                   f"{al.reference_fold}'s by {al.method}. A feature u#### is that family; its members per fold are "
                   "in candidates.csv (members, match_r).")
    page.table(rep.alignment_quality, float_format="{:.2f}", caption=(
        f"{rep.label}: matched activation correlations per fold (median, 10th and 90th percentiles), the share of "
        "units matched at r ≥ 0.5 (or above the null, if it reaches higher), and the same matching on "
        "image-shuffled activations (null: what unrelated units reach)."))
