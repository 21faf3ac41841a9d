"""Sections of the report page built from one strategy's results
(biomark.report.feature_sections)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.redundancy import direction_table, unit_redundancy
from biomark.report.feature_sections import (
    _tile_lung,
    unit_redundancy_note,
)
from biomark.report.page import Page
from biomark.report.strategy_report import StrategyReport


def _report(X: np.ndarray | None) -> StrategyReport:
    return StrategyReport(
        label="scratch",
        title="Training from scratch",
        classes=["COVID-19", "Normal"],
        folds=[0],
        missing_folds=[],
        meta=pd.DataFrame(),
        feature_names=[],
        n_constant=0,
        redundancy=None if X is None else unit_redundancy(X),
    )


@pytest.mark.parametrize("copies", [True, False])
def test_near_copies_get_a_warning_box_and_independent_units_a_sentence(copies: bool) -> None:
    rng = np.random.default_rng(0)
    if copies:
        base = rng.standard_normal((300, 4))
        X = np.repeat(base, 10, axis=1) + 0.05 * rng.standard_normal((300, 40))
    else:
        X = rng.standard_normal((300, 40))
    page = Page("x")
    unit_redundancy_note(page, _report(X))
    text = page.render()
    assert "scratch: its 40 live GAP units span about" in text
    assert ('class="note warning"' in text) is copies
    assert ("a verdict on its direction" in text) is copies


def test_the_directions_of_near_copies_are_tabled() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(["COVID-19", "Normal"], 150)
    X = np.repeat((labels == "COVID-19")[:, None] * 2.0, 10, axis=1) + 0.1 * rng.standard_normal(
        (300, 10)
    )
    rep = _report(X)
    rep.directions = direction_table(X, labels, n_directions=rep.redundancy.dimension)
    page = Page("x")
    unit_redundancy_note(page, rep)
    text = page.render()
    assert "the leading directions of its units" in text and "between_classes" in text
    assert "COVID-19" in text.split("between_classes")[1]


def test_nothing_without_a_measurement() -> None:
    page = Page("x")
    unit_redundancy_note(page, _report(None))
    assert "GAP units span" not in page.render()


@pytest.mark.parametrize(
    "fraction, measured, text",
    [(0.734, True, "0.73"), (np.nan, True, "– (silent)"), (np.nan, False, "– (not measured)")],
)
def test_a_gallery_tile_says_why_it_has_no_lung_fraction(
    fraction: float, measured: bool, text: str
) -> None:
    """An image outside the lung test's subset is not called silent (it was at its highest
    value)."""
    assert _tile_lung(fraction, measured) == text
