"""The report's sections on grading within a class (biomark.report.grading_sections): the network's
class evidence and the phantom's ground truth."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import numpy as np
import pandas as pd

from biomark.report.grading_sections import evidence_display, evidence_sentences, truth_lines
from biomark.report.report_data import ReportData


def test_the_evidence_table_shows_its_verdict_before_the_long_text_columns() -> None:
    from biomark.analysis.class_evidence import EVIDENCE_COLUMNS

    table = pd.DataFrame(
        [["scratch", True] + [None] * len(EVIDENCE_COLUMNS)],
        columns=["strategy", "learned", *EVIDENCE_COLUMNS],
    )
    shown = list(evidence_display(table).columns)
    assert sorted(shown) == sorted(table.columns)  # every column, once
    first = shown[:7]  # who, then the verdict: does the evidence track the planted severity
    assert first[:2] == ["strategy", "class"] and {"severity_rho", "severity_p"} <= set(first)
    assert shown.index("top_correlates") > shown.index("n_associated")
    # without a planted severity (real films) the same order, less those columns
    real = evidence_display(table.drop(columns=["severity_rho", "severity_p"]))
    assert list(real.columns[:5]) == ["strategy", "class", "learned", "n", "evidence_median"]


def test_evidence_sentences_follow_the_table() -> None:
    evidence = pd.DataFrame(
        [
            {
                "strategy": "scratch",
                "learned": True,
                "class": "Fibrosis",
                "n": 120,
                "n_radiomic": 2,
                "n_associated": 1,
                "top_correlates": "lower_glcm_Contrast (+0.81)",
                "top_families": "glcm: 1",
                "top_zone": "lower",
                "severity_rho": 0.93,
                "severity_p": 1e-40,
                "burden_rho": 0.95,
            },
            {
                "strategy": "scratch",
                "learned": True,
                "class": "Pneumonia",
                "n": 120,
                "n_radiomic": 2,
                "n_associated": 0,
                "severity_rho": 0.02,
                "severity_p": 0.8,
                "burden_rho": 0.31,
            },
            {
                "strategy": "scratch",
                "learned": True,
                "class": "Edema",
                "n": 4,
                "note": "fewer than 10 images",
            },
            {"strategy": "frozen", "learned": False, "class": "Fibrosis", "n": 120},
        ]
    )
    text = evidence_sentences(cast(ReportData, SimpleNamespace(evidence=evidence)))
    assert text[0].startswith(
        "scratch, Fibrosis (n = 120): within the class the network's evidence"
    )
    assert (
        "lower_glcm_Contrast (+0.81) (the first tracks it best in the lower zone); 1 of 2 lung "
        "radiomic features" in text[0]
    )
    assert (
        "planted severity with Spearman ρ = +0.93 (p = 1e-40) and the planted burden with ρ = +0.95"
        in text[0]
    )
    assert text[1] == "scratch, Edema (n = 4): not tested (fewer than 10 images)."
    # the classes with nothing associated share one sentence
    assert text[2] == (
        "scratch: no lung radiomic feature (of 2) is associated at a false discovery rate of 5 % "
        "with the network's evidence within Pneumonia; against the planted severity ρ = +0.02; "
        "against the planted burden ρ = +0.31."
    )
    assert text[3] == "frozen: not read, because this strategy did not learn above chance."
    assert len(text) == 4


def test_the_command_line_states_each_picks_ground_truth_in_one_line_per_strategy() -> None:
    truth = pd.DataFrame(
        {
            "strategy": ["scratch", "scratch", "scratch", "frozen"],
            "class": ["Emphysema", "Fibrosis", "Pneumonia", "Pneumonia"],
            "feature": ["u0841", "u0642", "u0928", "f0001"],
            "chosen_as": [
                "candidate best explained by lung radiomics",
                "top-ranked feature (none stable and significant)",
                "candidate best explained by lung radiomics",
                "top-ranked feature (none stable and significant)",
            ],
            "rho": [0.81, 0.07, 0.01, np.nan],
            "rho_burden": [np.nan, 0.12, 0.28, np.nan],
        }
    )
    scratch, frozen = truth_lines(truth)
    assert scratch == (
        "phantom ground truth, scratch (each class's pick, Spearman rho with the planted "
        "severity / burden): Emphysema u0841 +0.81, Fibrosis u0642 (top-ranked) +0.07 / +0.12, "
        "Pneumonia u0928 +0.01 / +0.28"
    )
    assert frozen == (
        "phantom ground truth, frozen (each class's pick, Spearman rho with the planted "
        "severity): Pneumonia not scored"
    )
    assert truth_lines(None) == [] and truth_lines(truth.iloc[:0]) == []
