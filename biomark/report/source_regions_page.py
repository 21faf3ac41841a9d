"""The report's data-level shortcut audit: where the images carry their source, and whether each
model took it.

Renders :class:`biomark.analysis.source_regions.RegionAudit` (computed by
:func:`biomark.pipelines.report.analyse_run` from the lung and outside-lung
radiomics) into the shortcut audit section, and one sentence for the summary.
The data-level verdict is set beside each strategy's model-level audit
(:func:`biomark.analysis.audit.source_predictability` on its deep features):
a shortcut the images offer and the model's features carry is one the model
took; one they do not carry is one it left alone.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from biomark.analysis.audit import flagged_rows, source_recoverable
from biomark.analysis.source_regions import LUNGS, OUTSIDE, RegionAudit
from biomark.report.page import Page
from biomark.report.report_data import ReportData
from biomark.report.report_text import flag_evidence, learned
from biomark.report.strategy_report import StrategyReport

__all__ = ["region_sentence", "source_regions_section", "strategy_sentences"]


def _pooled(audit: RegionAudit, region: str) -> str:
    pooled = audit.pooled.get(region) or {}
    if not pooled.get("classes"):
        return "not tested"
    return f"pooled within-class AUC {pooled['auc']:.2f}, Holm p = {pooled['p_adjusted']:.2g}"


def _classes(audit: RegionAudit, region: str) -> str:
    tested = audit.table[(audit.table["region"] == region) & (audit.table["status"] == "tested")]
    hit = audit.classes(region)
    if not hit:  # carried, if at all, by the pooled test alone
        return f"none of {len(tested)} classes alone"
    return f"{len(hit)} of {len(tested)} classes: {', '.join(hit)}"


def region_sentence(audit: RegionAudit | None) -> str:
    """One sentence: where the images carry their source within classes ('' when not audited)."""
    if audit is None or not audit.tested:
        return ""
    inside, outside = audit.carries(LUNGS), audit.carries(OUTSIDE)
    lungs, out = _pooled(audit, LUNGS), _pooled(audit, OUTSIDE)
    if outside and not inside:
        return (
            "The images carry their source outside the lungs: from the radiomics of the image "
            f"minus the lung mask the source is recoverable within {_classes(audit, OUTSIDE)} "
            f"({out}); from the lung radiomics it is not ({lungs}). A model can learn the source "
            "there without looking at the lungs: a shortcut is available."
        )
    if outside and inside:
        return (
            "The images carry their source both outside the lungs "
            f"({_classes(audit, OUTSIDE)}; {out}) and inside them ({_classes(audit, LUNGS)}; "
            f"{lungs}): acquisition differences reach the lung fields, so lung features can carry "
            "the source as well as the disease."
        )
    if inside:
        return (
            f"The images carry their source in the lung fields ({_classes(audit, LUNGS)}; {lungs}) "
            f"but not outside them ({out}): lung features can carry the source as well as the "
            "disease."
        )
    weak = _weak_flags(audit)
    if weak:
        return (
            f"The radiomics find the source only weakly within classes: {weak} (inside the lungs "
            f"{lungs}; outside them {out}). With no source signal at all, about 1 region in "
            f"{round(1 / audit.alpha)} is flagged somewhere by chance at this level, so this asks "
            "for a look at those classes' sources (how they differ in patients or acquisition) "
            "rather than proving a shortcut."
        )
    return (
        "The radiomics find no source signal within classes, inside the lungs "
        f"({lungs}) or outside them ({out}). Radiomics summarise whole regions, so a small marker "
        "can still escape them; the model-level audit tests the features themselves."
    )


def _weak_flags(audit: RegionAudit) -> str:
    """The classes flagged (weakly) in any region, with their AUC and Holm p ('' when none)."""
    parts = []
    for region, where in ((LUNGS, "inside the lungs"), (OUTSIDE, "outside them")):
        for _, row in flagged_rows(audit.table[audit.table["region"] == region]).iterrows():
            parts.append(f"{row['class']} {where} ({flag_evidence(row)})")
    return "; ".join(parts)


def _model_carries(rep: StrategyReport) -> tuple[bool, dict[str, Any]] | None:
    sp = rep.source_predictability
    if sp is None:
        return None
    pooled = dict(sp.attrs.get("pooled") or {})
    if not pooled.get("classes"):
        return None
    return source_recoverable(sp, pooled), pooled


def strategy_sentences(data: ReportData) -> list[str]:
    """Per learned strategy: do its features carry the source the images offer?"""
    audit = data.source_regions
    if audit is None or not audit.tested:
        return []
    in_images = audit.carries(LUNGS) or audit.carries(OUTSIDE)
    out = []
    for rep in data.strategies.values():
        model = _model_carries(rep)
        if model is None or not learned(rep):
            continue
        carries, pooled = model
        stats = f"pooled within-class AUC {pooled['auc']:.2f}, Holm p = {pooled['p_adjusted']:.2g}"
        if in_images and not carries:
            out.append(
                f"{rep.label}: its features do not carry the source within classes ({stats}): no "
                "sign that this model took the shortcut the images offer."
            )
        elif in_images:
            out.append(
                f"{rep.label}: its features carry the source within classes as well ({stats}): the "
                "model took up what the images offer; read its candidates with their source flags."
            )
        elif carries:
            out.append(
                f"{rep.label}: its features carry the source within classes ({stats}) although the "
                "region radiomics do not: the model picks up a source signal that the region "
                "summaries miss."
            )
    return out


def source_regions_section(page: Page, data: ReportData) -> None:
    """The data-level audit in the shortcut audit section: the verdict, each model beside it, the
    table."""
    audit = data.source_regions
    if audit is None:
        return
    sentence = region_sentence(audit)
    if not sentence:
        return
    page.paragraph("Where do the images carry their source? " + sentence)
    for text in strategy_sentences(data):
        page.paragraph(text)
    shown = audit.table[audit.table["status"] == "tested"]
    if len(shown):
        page.table(
            pd.DataFrame(shown).drop(columns=["status", "reason"]),
            float_format="{:.3g}",
            caption=(
                "Can the source be predicted within a class from the images' radiomics? The same "
                f"test as the model-level audit below, on {audit.n_features.get(LUNGS, 0)} "
                f"whole-lung radiomic features and the same {audit.n_features.get(OUTSIDE, 0)} "
                "features of the image minus the lung mask (the radiomics' outside control); Holm "
                "over each region's classes and its pooled test."
            ),
        )
