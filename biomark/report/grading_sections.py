"""The report's sections on grading within a class: the network's class evidence and the phantom's
planted ground truth.

A candidate separates its class from the others; a graded biomarker also rises
with the severity of its disease among the patients who have it. These
sections read that: what the network's own evidence for each class goes with
within the class (:func:`evidence_section`), and, on a phantom, how each
class's pick tracks the planted severity and burden (:func:`phantom_section`;
:func:`truth_lines` for the command line).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from biomark.report.page import Page
from biomark.report.report_data import ReportData

__all__ = [
    "BURDEN_NOTE",
    "EVIDENCE_LEAD",
    "evidence_display",
    "evidence_section",
    "evidence_sentences",
    "phantom_section",
    "truth_lines",
]


def _ceiling(row: pd.Series) -> str:
    """The best |rho| of any feature of the class, as a clause (empty when not computed)."""
    rho = row.get("best_any_rho")
    if not isinstance(rho, float) or not np.isfinite(rho):
        return ""
    return (
        f"; the best of all {row['strategy']} features, picked with the truth, "
        f"is {row['best_any_feature']} (ρ = {rho:+.2f})"
    )


def _out_of_fold(row: pd.Series) -> str:
    """The pick read from out-of-fold members alone, as a clause (empty when ``rho`` is already
    that)."""
    rho = row.get("rho_out_of_fold")
    if not isinstance(rho, float) or not np.isfinite(rho):
        return ""
    return f" as the family's consensus (from each image's out-of-fold member alone ρ = {rho:+.2f})"


def _burden(row: pd.Series) -> str:
    """The pick's rho with the planted burden, and the best feature's, as a clause (empty
    without a burden)."""
    rho, best = row.get("rho_burden"), row.get("best_any_rho_burden")
    if not isinstance(rho, float) or not np.isfinite(rho):
        return ""
    return f"; with the planted burden ρ = {rho:+.2f} (the best feature's {best:+.2f})"


#: Said once above the ground-truth paragraphs when the phantom records a burden.
BURDEN_NOTE = (
    "Severity is how strong a planted signature is where it lies; burden is how much of it the "
    "film holds (biomark.data.phantom_render.signature_burden). They part most for Pneumonia, "
    "whose lobe is drawn at random: a feature that sums a finding over the film (a GAP unit) "
    "can grade the burden while it grades the severity only loosely. The acceptance benchmark "
    "(benchmarks/phantom_acceptance.py) scores the severity; the burden says what such a feature "
    "does track."
)


def _has_burden(truth: pd.DataFrame) -> bool:
    """Whether any pick of a ground-truth table was read against the planted burden."""
    burden = truth.get("rho_burden")
    return burden is not None and bool(np.isfinite(burden.to_numpy(dtype=float)).any())


def truth_lines(truth: pd.DataFrame | None) -> list[str]:
    """One line per strategy of the phantom's ground truth, for the command line: each class's
    pick with its Spearman rho against the planted severity and, where there is one, the burden.

    Examples
    --------
    >>> truth = pd.DataFrame(
    ...     {
    ...         "strategy": ["frozen", "frozen"],
    ...         "class": ["COVID-19", "Pneumonia"],
    ...         "feature": ["f0012", "f0200"],
    ...         "chosen_as": ["top-ranked candidate", "best radiomic correlate"],
    ...         "rho": [0.614, np.nan],
    ...         "rho_burden": [0.702, np.nan],
    ...     }
    ... )
    >>> heading, picks = truth_lines(truth)[0].split(": ", 1)
    >>> heading.startswith("phantom ground truth, frozen (each class's pick, Spearman rho")
    True
    >>> picks
    'COVID-19 f0012 (top-ranked) +0.61 / +0.70, Pneumonia not scored'
    >>> truth_lines(None)
    []
    """
    if truth is None or not len(truth):
        return []
    out = []
    for strategy, rows in truth.groupby("strategy", sort=False):
        cells = []
        for _, r in rows.iterrows():
            rho, burden = r.get("rho"), r.get("rho_burden")
            if not isinstance(rho, float) or not np.isfinite(rho):
                cells.append(f"{r['class']} not scored")
                continue
            load = f" / {burden:+.2f}" if isinstance(burden, float) and np.isfinite(burden) else ""
            top = " (top-ranked)" if "top-ranked" in str(r.get("chosen_as", "")) else ""
            cells.append(f"{r['class']} {r['feature']}{top} {rho:+.2f}{load}")
        what = "severity / burden" if _has_burden(rows) else "severity"
        out.append(
            f"phantom ground truth, {strategy} (each class's pick, Spearman rho with the planted "
            f"{what}): " + ", ".join(cells)
        )
    return out


def phantom_section(page: Page, data: ReportData) -> None:
    """The planted ground truth (phantom datasets only; no section otherwise)."""
    if data.truth is not None and len(data.truth):
        page.section("Phantom ground truth")
        if _has_burden(data.truth):
            page.paragraph(BURDEN_NOTE)
        for _, r in data.truth.iterrows():
            if isinstance(r.get("rho"), float) and np.isfinite(r["rho"]):
                page.paragraph(
                    f"{r['strategy']}, {r['class']}: {r['feature']} ({r['chosen_as']}) has "
                    f"Spearman ρ = {r['rho']:+.2f} (p = {r['p']:.2g}, n = {r['n']}) with the "
                    "planted severity" + _out_of_fold(r) + _ceiling(r) + _burden(r) + "."
                )
            else:
                page.paragraph(f"{r['strategy']}, {r['class']}: not scored ({r.get('note', '')}).")
        page.table(data.truth, float_format="{:.3g}")


def _severity_clause(rho: float, p: float) -> str:
    """``it tracks the planted severity with ...`` (empty without a severity)."""
    if not np.isfinite(rho):
        return ""
    return f"it tracks the planted severity with Spearman ρ = {rho:+.2f} (p = {p:.2g})"


def evidence_sentences(data: ReportData) -> list[str]:
    """Per strategy, what the network's evidence tracks within each class (the classes with none in
    one sentence)."""
    if data.evidence is None or not len(data.evidence):
        return []
    out = []
    for strategy, rows in data.evidence.groupby("strategy", sort=False):
        if not bool(rows["learned"].iloc[0]):
            out.append(f"{strategy}: not read, because this strategy did not learn above chance.")
            continue
        silent: list[pd.Series] = []  # tested, and nothing associated
        for _, r in rows.iterrows():
            head = f"{strategy}, {r['class']} (n = {int(r['n'])})"
            if isinstance(r.get("note"), str) and r["note"]:
                out.append(f"{head}: not tested ({r['note']}).")
                continue
            tested = r.get("n_radiomic")
            has_radiomics = isinstance(tested, (int, float)) and np.isfinite(tested) and tested > 0
            if has_radiomics and int(r["n_associated"]) == 0:
                silent.append(r)
                continue
            parts = []
            if has_radiomics:
                hits = int(r["n_associated"])
                parts.append(
                    f"within the class the network's evidence for {r['class']} goes with "
                    f"{r['top_correlates']}{_zone_clause(r.get('top_zone'))}; {hits} of "
                    f"{int(tested)} lung radiomic features "
                    f"{'is' if hits == 1 else 'are'} associated with it at a false discovery rate "
                    f"of 5 % ({r['top_families']})"
                )
            severity = _severity_clause(
                float(r.get("severity_rho", np.nan)), float(r.get("severity_p", np.nan))
            )
            if severity:
                burden = float(r.get("burden_rho", np.nan))
                parts.append(
                    severity
                    + (
                        f" and the planted burden with ρ = {burden:+.2f}"
                        if np.isfinite(burden)
                        else ""
                    )
                )
            if parts:
                out.append(f"{head}: " + "; ".join(parts) + ".")
        if silent:
            names = ", ".join(str(r["class"]) for r in silent)
            text = (
                f"{strategy}: no lung radiomic feature (of {int(silent[0]['n_radiomic'])}) is "
                f"associated at a false discovery rate of 5 % with the network's evidence within "
                f"{names}"
            )
            for planted in ("severity", "burden"):
                rhos = [
                    float(r[f"{planted}_rho"]) for r in silent if pd.notna(r.get(f"{planted}_rho"))
                ]
                if rhos:
                    text += (
                        f"; against the planted {planted} ρ = {min(rhos):+.2f} to {max(rhos):+.2f}"
                        if len(rhos) > 1
                        else f"; against the planted {planted} ρ = {rhos[0]:+.2f}"
                    )
            out.append(text + ".")
    return out


def _zone_clause(zones: object) -> str:
    """E.g. " (the first tracks it best in the middle and central zones)"; "" without zones.

    Examples
    --------
    >>> _zone_clause("middle, central")
    ' (the first tracks it best in the middle and central zones)'
    >>> _zone_clause("lower"), _zone_clause(float("nan"))
    (' (the first tracks it best in the lower zone)', '')
    """
    if not isinstance(zones, str) or not zones:
        return ""
    named = zones.split(", ")
    return f" (the first tracks it best in the {' and '.join(named)} zone{'s' * (len(named) > 1)})"


def evidence_section(page: Page, data: ReportData) -> None:
    """Does the network grade each disease, and by what (nothing without probabilities)?"""
    if data.evidence is None or not len(data.evidence):
        return
    page.section("Does the network grade each disease?")
    page.paragraph(
        "A graded biomarker rises with the severity of its disease among the patients who have it. "
        "No single deep feature need do that, but the network's own evidence for a class does when "
        "the network grades the disease: log p(class) - log p(Normal), from the out-of-fold "
        "predictions. Below, within each class, the lung radiomic features that evidence goes with "
        "(Spearman, Benjamini-Hochberg). These are associations in this dataset: before reading "
        "one as a graded marker, check that it sits in the lungs and fits the disease."
    )
    for text in evidence_sentences(data):
        page.paragraph(text)
    page.table(
        evidence_display(data.evidence),
        float_format="{:.3g}",
        wrap=("top_correlates", "top_families", "top_zone", "note"),
    )


#: Columns of the class-evidence table that the page shows first: the verdict (does the evidence
#: track the severity, and how many radiomic features go with it) before the long text columns,
#: which would push it off the right edge of the page.
EVIDENCE_LEAD = [
    "strategy",
    "class",
    "learned",
    "n",
    "evidence_median",
    "severity_rho",
    "severity_p",
    "burden_rho",
    "n_associated",
    "n_radiomic",
]


def evidence_display(evidence: pd.DataFrame) -> pd.DataFrame:
    """The class-evidence table in the page's column order (:data:`EVIDENCE_LEAD` first, where
    present; the CSV keeps the table's own order).

    Examples
    --------
    >>> evidence = pd.DataFrame(
    ...     {
    ...         "note": [""],
    ...         "top_correlates": ["glcm_Contrast"],
    ...         "class": ["COVID-19"],
    ...         "strategy": ["frozen"],
    ...         "n": [40],
    ...         "severity_rho": [0.5],
    ...     }
    ... )
    >>> evidence_display(evidence).columns.tolist()
    ['strategy', 'class', 'n', 'severity_rho', 'note', 'top_correlates']
    """
    lead = [c for c in EVIDENCE_LEAD if c in evidence.columns]
    return evidence[lead + [c for c in evidence.columns if c not in lead]]
