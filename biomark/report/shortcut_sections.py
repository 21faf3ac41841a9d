"""The shortcut sections of the biomarker report: performance by source and the shortcut audit.

:func:`performance_by_source_section` reads each strategy's out-of-fold
predictions by source (DeGrave et al. 2021: a model that learned the source does
well on the collections it trained on and fails on others);
:func:`shortcut_audit_section` shows where each class comes from, the data-level
source audit, each strategy's within-class source test, the lung blackout and
the lung swap.
"""

from __future__ import annotations

import pandas as pd

from biomark.analysis.audit import SHOWN_COLUMNS
from biomark.analysis.blackout import blackout_distribution
from biomark.analysis.by_source import class_source_recall, source_metrics
from biomark.report.page import Page, percent, percent_ci
from biomark.report.report_data import ReportData
from biomark.report.report_text import class_sources_table, learned, source_sentences
from biomark.report.source_regions_page import source_regions_section
from biomark.report.strategy_report import StrategyReport

__all__ = ["performance_by_source_section", "shortcut_audit_section"]


def _source_table(table: pd.DataFrame, positive: str | None) -> pd.DataFrame:
    """A :func:`~biomark.analysis.by_source.source_metrics` table as shown, one row per source."""
    shown = pd.DataFrame(
        {
            "source": table["source"],
            "images": table["n"],
            "classes": table["classes"],
            "accuracy % [95% CI]": [
                percent_ci(a, lo, hi)
                for a, lo, hi in zip(
                    table["accuracy"],
                    table["accuracy_low"],
                    table["accuracy_high"],
                    strict=True,
                )
            ],
            "majority rate %": [percent(v) for v in table["majority_rate"]],
        }
    )
    if "sensitivity" in table:
        shown[f"{positive} sensitivity % [95% CI] (n)"] = [
            "–" if not n else f"{percent_ci(v, lo, hi)} ({n})"
            for v, lo, hi, n in zip(
                table["sensitivity"],
                table["sensitivity_low"],
                table["sensitivity_high"],
                table["n_positive"],
                strict=True,
            )
        ]
    shown["trained on"] = table["trained_on"]
    return shown


def _held_out_paragraphs(page: Page, label: str, table: pd.DataFrame, positive: str | None) -> None:
    """Add a paragraph per held-out source: 'trained on these sources, tested on that one'.

    Parameters
    ----------
    page : Page
    label : str
        The strategy's label.
    table : DataFrame
        Its :func:`~biomark.analysis.by_source.source_metrics` table.
    positive : str or None
        The positive class, whose sensitivity is stated where a source has it.
    """
    page.paragraph(
        f"{label}: the folds hold sources out (leave one source out), so each row "
        "reads 'train on these sources, test on that one'."
    )
    for _, r in table.iterrows():
        sens = (
            f", {positive} sensitivity {percent(r['sensitivity'])} %"
            if "sensitivity" in table and r["n_positive"]
            else ""
        )
        page.paragraph(
            f"Trained on {r['trained_on']}; tested on {r['source']} ({r['n']} images): "
            f"accuracy {percent_ci(r['accuracy'], r['accuracy_low'], r['accuracy_high'])} "
            f"% against a majority rate of {percent(r['majority_rate'])} %{sens}."
        )


def _class_recall_table(page: Page, rep: StrategyReport) -> None:
    """Add the table of each class's recall on each of its sources (classes with several)."""
    meta = rep.meta
    recall = class_source_recall(meta["label"], meta["pred"], meta["source"])
    mixed = recall[recall["n_sources"] > 1]
    if len(mixed):
        cells = mixed.assign(
            cell=[
                f"{percent_ci(v, lo, hi)} ({n})"
                for v, lo, hi, n in zip(
                    mixed["recall"],
                    mixed["recall_low"],
                    mixed["recall_high"],
                    mixed["n"],
                    strict=True,
                )
            ]
        )
        grid = cells.pivot(index="class", columns="source", values="cell").fillna("–")
        page.table(
            # without the columns' name "source", which pandas would print as an empty column
            grid.rename_axis(columns=None).reset_index(),
            caption=(
                f"{rep.label}: recall % [95% CI] (images) of each class on each of its "
                "sources, classes with several sources: a class found on one source and missed "
                "on another was learned with its source."
            ),
        )


def performance_by_source_section(page: Page, data: ReportData) -> None:
    """Per strategy: accuracy and sensitivity by source, and each class's recall on each of its
    sources."""
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
        shown = _source_table(table, positive)
        held_out = table.attrs.get("held_out", False)
        if held_out:
            _held_out_paragraphs(page, rep.label, table, positive)
        page.table(
            shown,
            caption=f"{rep.label}: out-of-fold accuracy by source, with Wilson intervals; "
            + (
                "each source was held out of training (external validation)."
                if held_out
                else "'trained on': the sources in the other folds, whose models tested this "
                "source; a source seen in training is internal validation, not external."
            ),
        )
        _class_recall_table(page, rep)


def shortcut_audit_section(page: Page, data: ReportData) -> None:
    """Class composition by source, the source in the images, each strategy's source test and lung
    blackout."""
    composition = class_sources_table(data)
    if composition is not None and len(composition):
        page.table(
            composition[
                ["class", "n", "sources", "top_share", "single_source", "exclusive", "shared_with"]
            ],
            caption="Where each class comes from. single_source: within the class source cannot "
            "vary, so its features cannot be separated from that source; exclusive: its sources "
            "supply no other class, so class and source cannot be told apart at all.",
            float_format="{:.2f}",
        )
    for text in source_sentences(data):
        page.paragraph(text)
    source_regions_section(page, data)
    for rep in data.strategies.values():
        if not learned(rep):
            page.note(
                f"{rep.label}: the model is not above chance. The audit below says what its "
                "features carry (a network that has not learned still responds to what is in the "
                "images, a burned-in marker say), not what the model learned; no verdict about the "
                "model is drawn from it.",
                kind="warning",
            )
        sp = rep.source_predictability
        if sp is not None:
            pooled = sp.attrs.get("pooled") or {}
            th = sp.attrs.get("thresholds", {})
            if pooled.get("classes"):
                page.paragraph(
                    f"{rep.label}: over the {len(pooled['classes'])} classes with two or more "
                    f"sources, the mean within-class AUC is {pooled['auc']:.2f} against a "
                    f"permutation null whose 95th percentile is {pooled['null_q95']:.2f} (p = "
                    f"{pooled['p']:.2g}; Holm-adjusted with the classes below "
                    f"{pooled['p_adjusted']:.2g}): {pooled['verdict']}."
                )
            page.table(
                sp[[c for c in SHOWN_COLUMNS if c in sp.columns]],
                float_format="{:.3g}",
                caption=(
                    f"{rep.label}: can the source be predicted within a class from the features? "
                    "Ridge classifier, held-out folds, on "
                    f"{sp.attrs.get('features', 'the out-of-fold features')}; the null shuffles "
                    "the sources between "
                    f"patients within the class ({th.get('n_permutations', '?')} times); "
                    "p_adjusted: Holm over the classes and the pooled test; recoverable when "
                    f"p_adjusted < {th.get('alpha', '?')} (and AUC > {th.get('recoverable', '?')}, "
                    "else weakly)."
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
                caption=f"{rep.label}: images per class, how often each class is predicted "
                "originally and with the lungs blacked out (same images), and how many of its own "
                "images are recalled each way.",
            )
        if rep.blackout is not None:
            page.table(
                rep.blackout,
                caption=f"{rep.label}: lung blackout per fold; survival = accuracy_blackout / "
                "accuracy_original, survival_above_chance = the share of the accuracy above the "
                "majority rate that is kept; each fold's majority rate is that of its own "
                "images, the row 'all' that of all of them together, as the verdict above reads "
                "it. Read only through the verdict above.",
            )
        elif data.settings.blackout:
            page.note(
                f"{rep.label}: blackout control not run (no model or no masks).", kind="warning"
            )
        _lung_swap(page, rep)


def _lung_swap(page: Page, rep: StrategyReport) -> None:
    """The lung-swap reading and its per-class table."""
    reading = rep.lung_swap_reading
    if reading is None:
        return
    page.note(
        f"{rep.label}: lung swap — {reading.sentence}",
        kind="warning" if reading.flagged else "info",
    )
    page.table(
        reading.per_class,
        float_format="{:.3g}",
        caption=(
            f"{rep.label}: lung swap per class c (the class of the composite's surroundings). "
            "n_strata: lung classes compared. rate_own_surroundings: share of composites with "
            "surroundings of c (lungs of another class) answered c; rate_other_surroundings: share "
            "answered c among composites whose surroundings and lungs are both of other classes; "
            "odds_ratio and p: Cochran-Mantel-Haenszel over the lung classes (one-sided); flagged: "
            "Holm-adjusted p below the criteria's alpha."
        ),
    )
