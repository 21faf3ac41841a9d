"""The network's own class evidence and what it tracks within each class."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.class_evidence import EVIDENCE_COLUMNS, evidence_scores, evidence_table

CLASSES = ["Fibrosis", "Pneumonia", "Normal"]


def test_scores_are_log_odds_against_normal() -> None:
    p = np.array([[0.6, 0.1, 0.3], [0.0, 0.5, 0.5]])
    scores = evidence_scores(p, CLASSES)
    assert list(scores.columns) == ["Fibrosis", "Pneumonia"]  # no column for Normal itself
    np.testing.assert_allclose(scores.iloc[0], [np.log(2.0), np.log(1 / 3)])
    assert scores.iloc[1, 1] == 0.0
    assert np.isfinite(scores.iloc[1, 0]) and scores.iloc[1, 0] < -15  # a 0 is floored, not -inf


@pytest.mark.parametrize(
    ("probabilities", "classes", "message"),
    [
        (np.full((2, 3), 1 / 3), ["A", "B", "C"], "no 'Normal' class"),
        (np.full((2, 2), 0.5), CLASSES, "for 3 classes"),
    ],
)
def test_scores_refuse_what_they_cannot_read(probabilities, classes, message) -> None:
    with pytest.raises(ValueError, match=message):
        evidence_scores(probabilities, classes)


def _planted(n: int = 120, seed: int = 0):
    """Fibrosis evidence that rises with severity and with one radiomic feature; flat Pneumonia
    evidence."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["Fibrosis", "Pneumonia", "Normal"], n)
    severity = np.concatenate([rng.uniform(0, 1, 2 * n), np.zeros(n)])
    noise = rng.normal(size=3 * n)
    scores = pd.DataFrame(
        {
            "Fibrosis": np.where(labels == "Fibrosis", 3 * severity + 0.3 * noise, -2.0 + noise),
            "Pneumonia": rng.normal(size=3 * n),  # the network does not grade it
        }
    )
    radiomics = pd.DataFrame(
        {
            "lower_glcm_Contrast": severity + 0.2 * rng.normal(size=3 * n),
            "upper_firstorder_Mean": rng.normal(size=3 * n),
            "shape2D_Sphericity": np.ones(3 * n),  # constant: left out
        }
    )
    return scores, labels, radiomics, severity


def test_the_graded_class_is_found_with_its_radiomic_correlate() -> None:
    scores, labels, radiomics, severity = _planted()
    table = evidence_table(scores, labels, radiomics=radiomics, severity=severity).set_index(
        "class"
    )
    assert list(table.reset_index().columns) == EVIDENCE_COLUMNS
    fib, pneu = table.loc["Fibrosis"], table.loc["Pneumonia"]
    assert fib["n"] == 120 and fib["n_radiomic"] == 2  # the constant feature is not tested
    assert fib["top_correlates"].startswith("lower_glcm_Contrast (+0.")
    assert fib["n_associated"] == 1 and fib["top_families"] == "glcm: 1"
    assert fib["severity_rho"] > 0.9 and fib["severity_p"] < 1e-10
    # a class the network does not grade: no association beyond chance, severity untracked
    assert pneu["n_associated"] == 0 and pd.isna(pneu["top_correlates"])
    assert abs(pneu["severity_rho"]) < 0.3


def test_the_evidence_is_placed_in_the_zone_where_its_correlate_tracks_it() -> None:
    """A whole-lung correlate names no zone; its zone versions say where the evidence grades."""
    scores, labels, _, severity = _planted(n=200, seed=1)
    rng = np.random.default_rng(2)
    zones = {"upper": 0.1, "middle": 0.2, "lower": 1.0, "central": 0.3, "peripheral": 0.8}
    radiomics = pd.DataFrame(
        {f"{z}_glcm_Contrast": w * severity + 0.3 * rng.normal(size=600) for z, w in zones.items()}
    )
    radiomics["glcm_Contrast"] = radiomics.sum(axis=1) + 0.1 * rng.normal(size=600)
    table = evidence_table(scores, labels, radiomics=radiomics).set_index("class")
    assert table.loc["Fibrosis", "top_zone"] == "lower, peripheral"
    assert pd.isna(table.loc["Pneumonia", "top_zone"])  # nothing associated: nothing to place


def test_small_or_constant_classes_say_why_they_were_not_tested() -> None:
    scores, labels, radiomics, _ = _planted(n=6)
    scores["Pneumonia"] = 1.0
    table = evidence_table(scores, labels, radiomics=radiomics, min_images=5).set_index("class")
    assert table.loc["Pneumonia", "note"] == "the evidence is constant within the class"
    small = evidence_table(scores, labels, min_images=10).set_index("class")
    assert small.loc["Fibrosis", "note"] == "fewer than 10 images"
    assert small["severity_rho"].isna().all()  # no severity given, no severity columns filled


def test_without_radiomics_only_severity_is_scored() -> None:
    scores, labels, _, severity = _planted()
    table = evidence_table(scores, labels, severity=severity).set_index("class")
    assert table["n_radiomic"].isna().all() and table["top_correlates"].isna().all()
    assert table.loc["Fibrosis", "severity_rho"] > 0.9


def test_the_planted_burden_is_scored_beside_the_severity() -> None:
    # the evidence follows how much signature the film holds (severity x a random extent)
    scores, labels, _, severity = _planted()
    rng = np.random.default_rng(5)
    burden = severity * rng.choice([0.3, 1.0], severity.size)
    fib = labels == "Fibrosis"
    scores["Fibrosis"] = np.where(fib, burden, scores["Fibrosis"])
    table = evidence_table(scores, labels, severity=severity, burden=burden).set_index("class")
    assert table.loc["Fibrosis", "burden_rho"] == pytest.approx(1.0)
    assert table.loc["Fibrosis", "burden_p"] < 1e-10
    assert table.loc["Fibrosis", "severity_rho"] < 0.9
    assert evidence_table(scores, labels, severity=severity)["burden_rho"].isna().all()


def test_rows_must_match_the_labels() -> None:
    scores, labels, _, _ = _planted()
    with pytest.raises(ValueError, match="evidence rows"):
        evidence_table(scores, labels[:-1])
