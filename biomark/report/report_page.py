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

from biomark.analysis.audit import SHOWN_COLUMNS
from biomark.analysis.by_source import class_source_recall, source_metrics
from biomark.analysis.controls import blackout_distribution
from biomark.analysis.source_regions import LUNGS, OUTSIDE
from biomark.config import DEFAULT_POSITIVE_CLASS
from biomark.io.atomic import write_csv_atomic
from biomark.report.figures import confusion_figure, gallery_html, roc_figure, shap_figure
from biomark.report.guards import add_chance_guard
from biomark.report.page import Page, escape
from biomark.report.report_data import ReportData
from biomark.report.report_strategy import StrategyReport
from biomark.report.report_text import (
    claim_verdict,
    class_sources_table,
    learned,
    limitations,
    methods_sentences,
    plan_weights,
    source_sentences,
)
from biomark.report.source_regions_page import (
    region_sentence,
    source_regions_section,
    strategy_sentences,
)

__all__ = [
    "build_report_page",
    "chance_section",
    "claim_verdict",
    "input_warnings",
    "limitations",
    "source_sentences",
    "top_candidates",
    "unit_matching",
    "write_report",
]

logger = logging.getLogger(__name__)

_METRICS = (
    ("accuracy", "Accuracy n-class"),
    ("binary_accuracy", "Accuracy 2-class"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("macro_auc", "Macro AUC"),
    ("covid_auc", "{positive} AUC"),
)  # covid_auc: the AUC of the positive class


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}"


def _metrics_table(rep: StrategyReport) -> pd.DataFrame:
    s = rep.classification or {}
    boot = s.get("bootstrap") or {}
    positive = s.get("positive") or DEFAULT_POSITIVE_CLASS
    rows = []
    for key, name in _METRICS:
        name = name.format(positive=positive)
        mean, std = (s.get("mean") or {}).get(key), (s.get("std") or {}).get(key)
        b = boot.get(key) or {}
        rows.append(
            {
                "metric (%)": name,
                f"mean ± std over {s.get('n_folds', '?')} folds": f"{_pct(mean)} ± {_pct(std)}",
                "pooled [95% bootstrap CI]": f"{_pct(b.get('estimate'))} [{_pct(b.get('low'))}, {_pct(b.get('high'))}]"
                if b
                else "–",
            }
        )
    return pd.DataFrame(rows)


def _paper(cm: list[list[int]], labels: list[str]) -> pd.DataFrame:
    arr = np.asarray(cm)
    return pd.DataFrame(
        arr.T, index=pd.Index(labels, name="predicted"), columns=pd.Index(labels, name="actual")
    )


def _ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Candidate rows: candidates first, then undetermined, then by rank."""
    return table.assign(
        _c=table["is_candidate"].fillna(False).astype(bool), _u=table["is_candidate"].isna()
    ).sort_values(["_c", "_u", "rank"], ascending=[False, False, True], kind="stable")


def top_candidates(data: ReportData, n: int = 10) -> pd.DataFrame:
    """The best rows of the candidate table: candidates first, then rank (for the CLI)."""
    table = data.candidates
    if table.empty:
        return table
    return (
        _ranked(table)[
            [
                "strategy",
                "class",
                "feature",
                "cliffs_delta",
                "auc",
                "q",
                "stable",
                "lung_fraction",
                "radiomic_r2",
                "is_candidate",
                "flags",
            ]
        ]
        .head(n)
        .reset_index(drop=True)
    )


def _strategy_tables(rep: StrategyReport, top: int = 5) -> pd.DataFrame:
    table = rep.candidates
    if table is None or table.empty:
        return pd.DataFrame()
    cols = [
        "class",
        "feature",
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
    ]
    return table[table["rank"] <= top][cols]


def _pct_ci(v: float, lo: float, hi: float) -> str:
    return f"{_pct(v)} [{_pct(lo)}, {_pct(hi)}]"


def chance_section(page: Page, data: ReportData) -> None:
    """The chance guard at the top of the page: a warning per strategy that has not learned, and the numbers."""
    add_chance_guard(
        page, [rep.chance for rep in data.strategies.values() if rep.chance is not None]
    )


def _source_section(page: Page, data: ReportData) -> None:
    positive = data.info.positive_class
    for rep in data.strategies.values():
        meta = rep.meta
        if "source" not in meta or meta["source"].nunique() < 2:
            page.paragraph(
                f"{rep.label}: every image comes from one source; there is nothing to compare."
            )
            continue
        table = source_metrics(
            meta["label"], meta["pred"], meta["source"], folds=meta["fold"], positive=positive
        )
        shown = pd.DataFrame(
            {
                "source": table["source"],
                "images": table["n"],
                "classes": table["classes"],
                "accuracy % [95% CI]": [
                    _pct_ci(a, lo, hi)
                    for a, lo, hi in zip(
                        table["accuracy"], table["accuracy_low"], table["accuracy_high"]
                    )
                ],
                "majority rate %": [_pct(v) for v in table["majority_rate"]],
            }
        )
        if "sensitivity" in table:
            shown[f"{positive} sensitivity % [95% CI] (n)"] = [
                "–" if not n else f"{_pct_ci(v, lo, hi)} ({n})"
                for v, lo, hi, n in zip(
                    table["sensitivity"],
                    table["sensitivity_low"],
                    table["sensitivity_high"],
                    table["n_positive"],
                )
            ]
        shown["trained on"] = table["trained_on"]
        held_out = table.attrs.get("held_out", False)
        if held_out:
            page.paragraph(
                f"{rep.label}: the folds hold sources out (leave one source out), so each row reads "
                "'train on these sources, test on that one'."
            )
            for _, r in table.iterrows():
                sens = (
                    f", {positive} sensitivity {_pct(r['sensitivity'])} %"
                    if "sensitivity" in table and r["n_positive"]
                    else ""
                )
                page.paragraph(
                    f"Trained on {r['trained_on']}; tested on {r['source']} ({r['n']} images): accuracy "
                    f"{_pct_ci(r['accuracy'], r['accuracy_low'], r['accuracy_high'])} % against a majority "
                    f"rate of {_pct(r['majority_rate'])} %{sens}."
                )
        page.table(
            shown,
            caption=f"{rep.label}: out-of-fold accuracy by source, with Wilson intervals; "
            + (
                "each source was held out of training (external validation)."
                if held_out
                else "'trained on': the sources in the other folds, whose models tested this source; a source "
                "seen in training is internal validation, not external."
            ),
        )
        recall = class_source_recall(meta["label"], meta["pred"], meta["source"])
        mixed = recall[recall["n_sources"] > 1]
        if len(mixed):
            cells = mixed.assign(
                cell=[
                    f"{_pct_ci(v, lo, hi)} ({n})"
                    for v, lo, hi, n in zip(
                        mixed["recall"], mixed["recall_low"], mixed["recall_high"], mixed["n"]
                    )
                ]
            )
            grid = cells.pivot(index="class", columns="source", values="cell").fillna("–")
            page.table(
                grid.reset_index(),
                caption=(
                    f"{rep.label}: recall % [95% CI] (images) of each class on each of its sources, classes with "
                    "several sources: a class found on one source and missed on another was learned with its source."
                ),
            )


def _audit_section(page: Page, data: ReportData) -> None:
    composition = class_sources_table(data)
    if composition is not None and len(composition):
        page.table(
            composition[
                ["class", "n", "sources", "top_share", "single_source", "exclusive", "shared_with"]
            ],
            caption="Where each class comes from. single_source: within the class source cannot vary, so "
            "its features cannot be separated from that source; exclusive: its sources supply no "
            "other class, so class and source cannot be told apart at all.",
            float_format="{:.2f}",
        )
    for text in source_sentences(data):
        page.paragraph(text)
    source_regions_section(page, data)
    for rep in data.strategies.values():
        if not learned(rep):
            page.note(
                f"{rep.label}: the model is not above chance. The audit below says what its features carry "
                "(a network that has not learned still responds to what is in the images, a burned-in marker say), not what the "
                "model learned; no verdict about the model is drawn from it.",
                kind="warning",
            )
        sp = rep.source_predictability
        if sp is not None:
            pooled = sp.attrs.get("pooled") or {}
            th = sp.attrs.get("thresholds", {})
            if pooled.get("classes"):
                page.paragraph(
                    f"{rep.label}: over the {len(pooled['classes'])} classes with two or more sources, the mean "
                    f"within-class AUC is {pooled['auc']:.2f} against a permutation null whose 95th percentile is "
                    f"{pooled['null_q95']:.2f} (p = {pooled['p']:.2g}; Holm-adjusted with the classes below "
                    f"{pooled['p_adjusted']:.2g}): {pooled['verdict']}."
                )
            page.table(
                sp[[c for c in SHOWN_COLUMNS if c in sp.columns]],
                float_format="{:.3g}",
                caption=(
                    f"{rep.label}: can the source be predicted within a class from the features? Ridge classifier, "
                    "held-out folds; the null shuffles the sources between patients within the class "
                    f"({th.get('n_permutations', '?')} times); p_adjusted: Holm over the classes and the pooled test; "
                    "recoverable when "
                    f"p_adjusted < {th.get('alpha', '?')} (and AUC > {th.get('recoverable', '?')}, else weakly)."
                ),
            )
        reading = rep.blackout_reading
        if reading is not None:
            page.note(
                f"{rep.label}: lung blackout — {reading.sentence}",
                kind="info" if reading.verdict == "reads the lungs" else "warning",
            )
            dist = blackout_distribution(
                rep.meta["label"], rep.meta["pred"], rep.meta["pred_blackout"]
            )
            page.table(
                dist.reset_index(),
                caption=f"{rep.label}: images per class, and how often each class is "
                "predicted originally and with the lungs blacked out (same images).",
            )
        if rep.blackout is not None:
            page.table(
                rep.blackout,
                caption=f"{rep.label}: lung blackout per fold; survival = accuracy_blackout / "
                "accuracy_original, survival_above_chance = the share of the accuracy above the majority "
                "rate that is kept. Read only through the verdict above.",
            )
        elif data.settings.blackout:
            page.note(
                f"{rep.label}: blackout control not run (no model or no masks).", kind="warning"
            )


#: Columns of the candidate tables, verdict first so it is never cut off.
_CANDIDATE_COLUMNS = (
    "strategy",
    "class",
    "feature",
    "is_candidate",
    "status",
    "flags",
    "rank",
    "q",
    "topk_freq",
    "stability_basis",
    "members",
    "match_r",
    "lung_fraction",
    "lung_method",
    "cliffs_delta",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "source_q",
    "radiomic_correlates",
    "radiomic_r2",
)


def _candidate_section(page: Page, data: ReportData, n_top: int = 12) -> None:
    s = data.settings
    table = data.candidates
    page.paragraph(
        f"A candidate is FDR-significant (q < {s.criteria.alpha}), stable (top-{s.top_k} in ≥ "
        f"{s.criteria.min_stability:.0%} of folds; for unit families matched poorly across folds, the "
        f"same class effect in ≥ {s.criteria.min_stability:.0%} of folds, see stability_basis), inside "
        f"the lungs (lung fraction ≥ "
        f"{s.criteria.min_lung_fraction}) and not a source marker, and comes from a model that is above "
        "chance. radiomic_r2 is how much of the feature's variation within its class the lung radiomics "
        "explain (leave-one-out ridge R²): a biomarker should grade its finding, and a feature that reads "
        "the lungs should do so visibly there. Below: the best rows with the reason for their verdict, "
        "then every row."
    )
    if not len(table):
        page.note("No shortlisted features (see the notes above).", kind="warning")
        return
    top = _ranked(table).head(n_top)
    page.table(
        top[["strategy", "class", "feature", "is_candidate", "status", "flags"]],
        caption=(
            f"The {len(top)} best rows (candidates first, then by rank) and why each is or is not a candidate."
        ),
    )
    _picks_table(page, data)
    cols = [c for c in _CANDIDATE_COLUMNS if c in table.columns]
    page.interactive_table(
        table[cols],
        float_format="{:.3g}",
        wrap=("status", "flags", "radiomic_correlates"),
        link="candidates.csv",
        caption=(
            f"All {len(table)} shortlisted (feature, class) rows: click a header to sort, type "
            "to filter (e.g. 'scratch covid candidate'); every column in candidates.csv."
        ),
    )


def _picks_table(page: Page, data: ReportData) -> None:
    """Per class of each strategy that learned: the one feature the report stands behind, and why."""
    frames = []
    for rep in data.strategies.values():
        picks = rep.picks() if learned(rep) else None
        if picks is not None and len(picks.table):
            frames.append(picks.table)
    if not frames:
        return
    picked = pd.concat(frames, ignore_index=True)
    extra = ["auc", "lung_fraction", "radiomic_correlates"]
    picked = picked.merge(
        data.candidates[["strategy", "class", "feature", *extra]],
        on=["strategy", "class", "feature"],
        how="left",
    )
    page.table(
        picked[["strategy", "class", "feature", "chosen_as", "radiomic_r2", *extra]],
        float_format="{:.3g}",
        caption=(
            "Per class, the feature the report stands behind (its pick): among the candidates, or without one "
            "the stable, significant, unflagged features, the one whose variation within the class the lung "
            "radiomics explain best (radiomic_r2); otherwise the top-ranked feature, which is not evidence."
        ),
    )


def _summary_section(page: Page, data: ReportData) -> None:
    """Summary: the chance guard, each strategy in one sentence, warnings, links and what is missing."""
    chance_section(page, data)
    for rep in data.strategies.values():
        t = rep.candidates if rep.candidates is not None else pd.DataFrame()
        if not learned(rep):
            page.paragraph(
                f"{rep.title} ({rep.label}): not above chance, so none of its {len(t)} shortlisted "
                f"(feature, class) pairs is called a candidate; folds {rep.folds}."
            )
            continue
        n_c = int(t["is_candidate"].fillna(False).astype(bool).sum()) if len(t) else 0
        n_u = int(t["is_candidate"].isna().sum()) if len(t) else 0
        audit = []
        pooled = (
            (rep.source_predictability.attrs.get("pooled") or {})
            if rep.source_predictability is not None
            else {}
        )
        if pooled.get("classes"):
            audit.append(f"{pooled['verdict']} (Holm p = {pooled['p_adjusted']:.2g})")
        if rep.blackout_reading is not None:
            audit.append(f"lung blackout: {rep.blackout_reading.verdict}")
        page.paragraph(
            f"{rep.title} ({rep.label}): {n_c} candidate biomarker(s) among {len(t)} shortlisted "
            f"(feature, class) pairs; {n_u} undetermined for lack of a test; folds {rep.folds}"
            + (f". Audit: {'; '.join(audit)}." if audit else ".")
        )
    for text in source_sentences(data):
        page.note(text, kind="warning")
    in_images = region_sentence(data.source_regions)
    if in_images:
        carried = data.source_regions is not None and (
            data.source_regions.carries(LUNGS) or data.source_regions.carries(OUTSIDE)
        )
        page.note(
            " ".join([in_images, *strategy_sentences(data)]), kind="warning" if carried else "info"
        )
    if plan_weights(data).strip().lower() in ("", "none"):
        page.note(
            "model.weights is 'none': frozen and fine-tuned strategies start from seeded random backbones, a "
            "random-features control, not ImageNet; nothing here tests the paper's claim about pretrained "
            "features.",
            kind="warning",
        )
    if data.links:
        page.html(
            "<p>Other pages of this run: "
            + " · ".join(
                f'<a href="{escape(href)}">{escape(name)}</a>' for name, href in data.links.items()
            )
            + "</p>"
        )
    for item in data.missing:
        page.note(
            f"Missing: {item['section']} ({item['reason']}). Fill it with: {item['command']}",
            kind="warning",
        )


def _classification_section(page: Page, data: ReportData) -> None:
    """The paper's tables: metrics, confusion matrices and ROC curves of every strategy."""
    classes = list(data.info.classes)
    positive = data.info.positive_class or DEFAULT_POSITIVE_CLASS
    page.paragraph(
        "As the paper's Tables 1, 4 and 5: mean ± standard deviation over test folds; pooled estimate "
        f"with a bootstrap 95% interval over the out-of-fold images. 2-class: {positive} vs the rest."
    )
    for rep in data.strategies.values():
        if rep.classification is None:
            page.note(f"{rep.label}: no fold metrics found.", kind="warning")
            continue
        page.table(
            _metrics_table(rep),
            caption=f"{rep.title} ({rep.label}); source: {rep.classification_source}",
        )
        cm = rep.classification.get("confusion")
        if cm:
            page.figure(
                confusion_figure(
                    _paper(cm, classes), f"{rep.label}: {len(classes)}-class confusion matrix"
                )
            )
            page.figure(
                confusion_figure(
                    _paper(rep.classification["binary_confusion"], [positive, f"Non-{positive}"]),
                    f"{rep.label}: 2-class",
                )
            )
        page.figure(
            roc_figure(rep.meta, classes, positive, f"{rep.label}: ROC curves (out-of-fold)")
        )


def _attribution_section(page: Page, data: ReportData) -> None:
    """SHAP additivity per fold and the mean |SHAP| of every strategy."""
    page.paragraph(
        "Attributions (SHAP family; the method is in the table and the Methods) of each class logit of "
        "the classifier head with respect to the GAP features, per "
        "fold. Additivity: the attributions of an image sum to its logit minus the mean logit of the "
        "background; the errors below are that identity's rounding error."
    )
    adds = [
        r.additivity.assign(strategy=r.label)
        for r in data.strategies.values()
        if r.additivity is not None
    ]
    if adds:
        page.table(
            pd.concat(adds, ignore_index=True),
            caption="Per fold: SHAP method, images, additivity error",
            float_format="{:.3g}",
        )
    for rep in data.strategies.values():
        if rep.importance:
            page.figure(
                shap_figure(rep.importance, f"{rep.label}: mean |SHAP|"),
                caption="Mean |SHAP| over folds and explained images; choose the class in the menu.",
            )
        else:
            page.note(
                f"{rep.label}: no SHAP values (no model.keras in the fold folders).", kind="warning"
            )


def _localisation_section(page: Page, data: ReportData) -> None:
    """Lung fractions, map galleries and Grad-CAM: where the features live."""
    s = data.settings
    for rep in data.strategies.values():
        if rep.lung is None:
            page.note(
                f"{rep.label}: lung fractions missing (needs model.keras and the dataset's images).",
                kind="warning",
            )
            continue
        page.paragraph(
            f"{rep.label}: masks from {rep.mask_source}; a feature spread evenly over the image would "
            f"have lung fraction {rep.lung_area_fraction:.2f}, one firing only in the map cell with "
            f"the most lung {rep.lung_attainable:.2f} (the most the maps can show). Identity check: "
            "spatial mean of the "
            f"out_relu map vs the dumped GAP value, max |difference| {rep.identity_error:.2g}. "
            f"Lung fractions measured by: {rep.lung_method or 'out_relu maps'}."
        )  # units: method
        if rep.lung_attainable < s.criteria.min_lung_fraction and not rep.lung_method.startswith(
            "occlusion"
        ):
            page.note(
                f"{rep.label}: the out_relu maps are too coarse for the lung test (attainable lung fraction "
                f"{rep.lung_attainable:.2f} < {s.criteria.min_lung_fraction}); the criterion is left untested. "
                "Use a larger model.image_size.",
                kind="warning",
            )
        if rep.thumbnails:
            groups = [
                {
                    "title": f"{g['feature']} ({g['class']}; {g['status']})",
                    "shared_scale": True,
                    "tiles": [
                        {
                            "image": t["image"],
                            "overlay": t["overlay"],
                            "text": f"{t['which']}: {t['label']} {t['value']:.2f}, lung "
                            + (
                                f"{t['lung_fraction']:.2f}"
                                if np.isfinite(t["lung_fraction"])
                                else "– (silent)"
                            ),
                        }
                        for t in g["tiles"]
                    ],
                }
                for g in rep.thumbnails
            ]
            page.html(
                gallery_html(
                    groups,
                    "Images with the highest and lowest values of each feature, its map "
                    "overlaid (red, one scale per feature; bilinear upsampling of the out_relu "
                    "channel); 'lung' is the feature's lung fraction in that image, measured as "
                    "stated above.",
                )
            )
        if rep.gradcam:
            page.html(
                gallery_html(
                    [
                        {
                            "title": f"{rep.label}: Grad-CAM of the predicted class",
                            "tiles": [
                                {
                                    "image": g["image"],
                                    "overlay": g["overlay"],
                                    "text": f"{g['label']} → {g['pred']}",
                                }
                                for g in rep.gradcam
                            ],
                        }
                    ],
                    "Grad-CAM with weights (1/HW)·∂logit/∂g from the numpy head's analytic "
                    "gradient.",
                )
            )


def _statistics_section(page: Page, data: ReportData) -> None:
    """The top shortlisted features per class at image, patient and mixed-model level."""
    page.paragraph(
        "The top shortlisted features per class: image level (delta, AUC [CI], q), patient level "
        "(per-patient means) and mixed model (coefficient, q)."
    )
    for rep in data.strategies.values():
        t = _strategy_tables(rep)
        if len(t):
            page.table(t, caption=f"{rep.label}: top 5 per class", float_format="{:.3g}")
        if rep.skipped:
            page.table(
                pd.DataFrame(rep.skipped).drop_duplicates(),
                caption=f"{rep.label}: tests not run, and why",
            )


def _stability_section(page: Page, data: ReportData) -> None:
    """Unit matching across folds and Kendall's W of the folds' rankings."""
    for rep in data.strategies.values():
        unit_matching(page, rep)  # units: matched units across folds
        if rep.kendall is not None:
            page.table(
                rep.kendall,
                caption=f"{rep.label}: Kendall's W of the folds' mean |SHAP| rankings",
                float_format="{:.3g}",
            )
        else:
            page.note(
                f"{rep.label}: stability needs SHAP values on at least two folds.", kind="warning"
            )


def _strategies_section(page: Page, data: ReportData) -> None:
    """The paper's claim: CKA between strategies and the overlap of radiomic correlates."""
    page.paragraph(
        "The paper suggests features learned from scratch may be biomarkers distinct from those of "
        "ImageNet-pretrained networks. Tested here by the representations' similarity (CKA) and by the "
        "overlap of the candidates' radiomic correlates."
    )
    for text in claim_verdict(data):
        page.paragraph(text)
    if len(data.cka):
        page.table(
            data.cka, caption="Debiased linear CKA between strategies (1 = same representation)"
        )
    if data.overlap is not None and len(data.overlap):
        page.table(
            data.overlap, caption="Jaccard overlap of radiomic correlates (features, families)"
        )


def _ceiling(row: pd.Series) -> str:
    """The best |rho| of any feature of the class, as a clause (empty when not computed)."""
    rho = row.get("best_any_rho")
    if not isinstance(rho, float) or not np.isfinite(rho):
        return ""
    return (
        f"; the best of all {row['strategy']} features, picked with the truth, "
        f"is {row['best_any_feature']} (ρ = {rho:+.2f})"
    )


def _phantom_section(page: Page, data: ReportData) -> None:
    """The planted ground truth (phantom datasets only; no section otherwise)."""
    if data.truth is not None and len(data.truth):
        page.section("Phantom ground truth")
        for _, r in data.truth.iterrows():
            if isinstance(r.get("rho"), float) and np.isfinite(r["rho"]):
                page.paragraph(
                    f"{r['strategy']}, {r['class']}: {r['feature']} ({r['chosen_as']}) has Spearman ρ = "
                    f"{r['rho']:+.2f} (p = {r['p']:.2g}, n = {r['n']}) with the planted severity"
                    + _ceiling(r)
                    + "."
                )
            else:
                page.paragraph(f"{r['strategy']}, {r['class']}: not scored ({r.get('note', '')}).")
        page.table(data.truth, float_format="{:.3g}")


def build_report_page(data: ReportData) -> Page:
    """The report as a :class:`~biomark.report.page.Page` (not yet written)."""
    page = Page(
        f"Biomarkers or shortcuts? Run {data.name}",
        subtitle="Do the features the CNN learned behave like biomarkers or like shortcuts?",
        provenance={
            "run folder": str(data.run_dir.resolve()),
            "settings": repr(data.settings),
            "report seconds": f"{data.seconds:.1f}",
        },
    )
    input_warnings(page, data)  # units: degenerate or tampered inputs, first thing on the page
    page.section("Summary")
    _summary_section(page, data)
    page.section("Classification results")
    _classification_section(page, data)
    page.section("Performance by source")
    page.paragraph(
        "A model that learned the disease does about as well on every source; one that learned the "
        "source does well on the collections it trained on and fails on others (DeGrave et al. 2021)."
    )
    _source_section(page, data)
    page.section("Attributions")
    _attribution_section(page, data)
    page.section("Where the features live")
    _localisation_section(page, data)
    page.section("Statistics per deep feature")
    _statistics_section(page, data)
    page.section("Fold stability")
    _stability_section(page, data)
    page.section("Shortcut audit")
    _audit_section(page, data)
    page.section("Candidate biomarkers")
    _candidate_section(page, data)
    page.section("Do the strategies learn different biomarkers?")
    _strategies_section(page, data)
    _phantom_section(page, data)
    page.section("Methods")
    for text in methods_sentences(data):
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
    paths["candidates"] = write_csv_atomic(
        out / "candidates.csv",
        table
        if len(table)
        else pd.DataFrame(columns=["strategy", "class", "feature", "is_candidate"]),
    )
    extra = {
        "additivity": [
            r.additivity.assign(strategy=r.label)
            for r in data.strategies.values()
            if r.additivity is not None
        ],
        "blackout": [
            r.blackout.assign(strategy=r.label)
            for r in data.strategies.values()
            if r.blackout is not None
        ],
        "source_audit": [
            r.source_predictability.assign(strategy=r.label)
            for r in data.strategies.values()
            if r.source_predictability is not None
        ],
        "lung_fractions": [
            r.lung.reset_index().assign(strategy=r.label)
            for r in data.strategies.values()
            if r.lung is not None
        ],
    }
    for name, frames in extra.items():
        if frames:
            paths[name] = write_csv_atomic(
                out / f"{name}.csv", pd.concat(frames, ignore_index=True)
            )
    if data.source_regions is not None and len(data.source_regions.table):
        paths["source_regions"] = write_csv_atomic(
            out / "source_regions.csv", data.source_regions.table
        )
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
        page.note(
            f"Input check failed — {w['strategy']}, fold {w['fold']}, feature(s) {w['feature']} "
            f"({w['check']}): {w['message']}",
            kind="warning",
        )


def unit_matching(page: Page, rep: StrategyReport) -> None:
    """How well a strategy's units were matched across folds (nothing for a shared backbone)."""
    if rep.alignment_quality is None or rep.alignment is None:
        return
    al = rep.alignment
    page.paragraph(
        f"{rep.label}: each fold trained its own backbone; units were matched one to one to fold "
        f"{al.reference_fold}'s by {al.method}. A feature u#### is that family; its members per fold are "
        "in candidates.csv (members, match_r)."
    )
    page.table(
        rep.alignment_quality,
        float_format="{:.2f}",
        caption=(
            f"{rep.label}: matched activation correlations per fold (median, 10th and 90th percentiles), the share of "
            "units matched at r ≥ 0.5 (or above the null, if it reaches higher), and the same matching on "
            "image-shuffled activations (null: what unrelated units reach)."
        ),
    )
