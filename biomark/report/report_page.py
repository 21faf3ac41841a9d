"""The biomarker report page: ``reports/<run>/index.html`` and ``candidates.csv``.

:func:`write_report` renders a :class:`~biomark.report.report_data.ReportData`
into one self-contained page (plotly inlined, thumbnails as base64 PNGs) a
clinician-researcher can read without running anything, and writes the
tables beside it: ``candidates.csv`` (every shortlisted feature with its
evidence, flags and verdict), ``additivity.csv``, ``blackout.csv``,
``source_audit.csv``, ``lung_fractions.csv``, ``lung_null.csv`` (the lung
fractions of the random units every feature is read against) and, on the
phantom, ``ground_truth.csv``.

The summary, the classification tables and the order of the sections live
here; the sections themselves are rendered by
:mod:`biomark.report.feature_sections` and
:mod:`biomark.report.shortcut_sections`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.analysis.source_regions import LUNGS, OUTSIDE
from biomark.config import DEFAULT_POSITIVE_CLASS
from biomark.io.atomic import write_csv_atomic, write_json_atomic
from biomark.report.feature_sections import (
    attribution_section,
    candidate_section,
    localisation_section,
    stability_section,
    statistics_section,
    strategies_section,
    top_candidates,
    unit_matching,
    unpicked_rows,
)
from biomark.report.figures import confusion_figure, roc_figure
from biomark.report.grading_sections import evidence_section, phantom_section
from biomark.report.guards import add_chance_guard
from biomark.report.page import Page, escape, percent
from biomark.report.report_data import ReportData
from biomark.report.report_record import REPORT_RECORD, report_record
from biomark.report.report_text import (
    claim_verdict,
    limitations,
    lung_null_of,
    methods_sentences,
    plan_weights,
    source_sentences,
    strategy_summary,
)
from biomark.report.shortcut_sections import performance_by_source_section, shortcut_audit_section
from biomark.report.source_regions_page import region_sentence, strategy_sentences
from biomark.report.strategy_report import StrategyReport

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
                f"mean ± std over {s.get('n_folds', '?')} folds": (
                    f"{percent(mean)} ± {percent(std)}"
                ),
                "pooled [95% bootstrap CI]": (
                    f"{percent(b.get('estimate'))} [{percent(b.get('low'))}, "
                    f"{percent(b.get('high'))}]"
                )
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


def chance_section(page: Page, data: ReportData) -> None:
    """The chance guard at the top of the page: a warning per strategy that has not learned, and the
    numbers."""
    add_chance_guard(
        page, [rep.chance for rep in data.strategies.values() if rep.chance is not None]
    )


def _summary_section(page: Page, data: ReportData) -> None:
    """Summary: the chance guard, each strategy in one sentence, warnings, links and what is
    missing."""
    chance_section(page, data)
    for rep in data.strategies.values():
        page.paragraph(strategy_summary(rep))
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
            "model.weights is 'none': frozen and fine-tuned strategies start from one seeded "
            "random backbone, a random-features control, not ImageNet; nothing here tests the "
            "paper's claim about pretrained features.",
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
        "As the paper's Tables 1, 4 and 5: mean ± standard deviation over test folds; pooled "
        f"estimate with a bootstrap 95% interval over the out-of-fold images. 2-class: {positive} "
        "vs the rest."
    )
    for rep in data.strategies.values():
        page.subsection(rep.heading)  # each strategy's table and figures under its own name
        if rep.classification is None:
            page.note(f"{rep.label}: no fold metrics found.", kind="warning")
            continue
        page.table(
            _metrics_table(rep),
            caption=f"{rep.heading}; source: {rep.classification_source}",
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
        "source does well on the collections it trained on and fails on others (DeGrave et al. "
        "2021)."
    )
    performance_by_source_section(page, data)
    page.section("Attributions")
    attribution_section(page, data)
    page.section("Where the features live")
    localisation_section(page, data)
    page.section("Statistics per deep feature")
    statistics_section(page, data)
    page.section("Fold stability")
    stability_section(page, data)
    page.section("Shortcut audit")
    shortcut_audit_section(page, data)
    page.section("Candidate biomarkers")
    candidate_section(page, data)
    evidence_section(page, data)
    page.section("Do the strategies learn different biomarkers?")
    strategies_section(page, data)
    phantom_section(page, data)
    page.section("Methods")
    for text in methods_sentences(data):
        page.paragraph(text)
    page.section("Limitations")
    for text in limitations(data):
        page.paragraph(text)
    return page


def write_report(data: ReportData) -> dict[str, Path]:
    """Write ``index.html``, the CSV tables and ``report.json`` (what it rests on) into
    ``data.out_dir``.

    Returns
    -------
    dict of str to Path
        ``index``, ``candidates``, ``record`` and the other tables written.
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
        "lung_swap": [
            r.lung_swap_reading.per_class.assign(
                strategy=r.label, verdict=r.lung_swap_reading.verdict
            )
            for r in data.strategies.values()
            if r.lung_swap_reading is not None
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
    null = lung_null_of(data)
    if null is not None:
        paths["lung_null"] = write_csv_atomic(
            out / "lung_null.csv",
            pd.DataFrame(
                {"lung_fraction": null.fractions, "method": null.method, "source": null.source}
            ),
        )
    if data.source_regions is not None and len(data.source_regions.table):
        paths["source_regions"] = write_csv_atomic(
            out / "source_regions.csv", data.source_regions.table
        )
    unpicked = unpicked_rows(data)
    if unpicked is not None:
        paths["unpicked"] = write_csv_atomic(out / "unpicked.csv", unpicked)
    if data.truth is not None:
        paths["ground_truth"] = write_csv_atomic(out / "ground_truth.csv", data.truth)
    if data.evidence is not None:
        paths["class_evidence"] = write_csv_atomic(out / "class_evidence.csv", data.evidence)
    _remove_stale_tables(out, [*extra, *OPTIONAL_TABLES], paths)
    paths["record"] = write_json_atomic(out / REPORT_RECORD, report_record(data))
    paths["index"] = build_report_page(data).write(out / "index.html")
    return paths


#: The report's tables that only some runs have, beside the ``extra`` ones of :func:`write_report`.
OPTIONAL_TABLES = ("lung_null", "source_regions", "unpicked", "ground_truth", "class_evidence")


def _remove_stale_tables(out: Path, names: Sequence[str], written: Mapping[str, Path]) -> None:
    """Delete the report's own optional tables that this report did not write.

    A report re-made into the same folder would otherwise leave an earlier
    report's table beside a page that no longer has it (e.g. ``unpicked.csv``
    naming a class that now has a pick). ``biomark radiomics``'s tables
    (``radiomics_*.csv``) and ``compare``'s are not the report's and stay.
    """
    for name in names:
        path = out / f"{name}.csv"
        if name not in written and path.is_file():
            path.unlink()
            logger.info("removed %s: an earlier report's table this report has no rows for", path)


def input_warnings(page: Page, data: ReportData) -> None:
    """A warning box per degenerate or tampered input (``data.warnings``), at the top of the
    page."""
    for w in data.warnings:
        page.note(
            f"Input check failed — {w['strategy']}, fold {w['fold']}, feature(s) {w['feature']} "
            f"({w['check']}): {w['message']}",
            kind="warning",
        )
