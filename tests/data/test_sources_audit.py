"""Tests for biomark.data.sources_audit: classes per source and their confounding."""

from __future__ import annotations

import pandas as pd
import pytest

from biomark.data.sources_audit import AUDIT_COLUMNS, class_sources, source_table

# The issue-13 shape: four NIH-only classes, COVID-19 only from COVID collections, Pneumonia 95 %
# Kermany.
LAYOUT = {
    ("COVID-19", "cohen"): 60,
    ("COVID-19", "actualmed"): 20,
    ("COVID-19", "figure1"): 20,
    ("Edema", "nih"): 10,
    ("Effusion", "nih"): 30,
    ("Pneumonia", "kermany"): 95,
    ("Pneumonia", "cohen"): 5,
    ("Normal", "kermany"): 50,
    ("Normal", "nih"): 40,
    ("Normal", "actualmed"): 10,
}
CLASSES = ("COVID-19", "Edema", "Effusion", "Emphysema", "Pneumonia", "Normal")


@pytest.fixture
def manifest() -> pd.DataFrame:
    rows = [
        {"label": label, "source": source}
        for (label, source), n in LAYOUT.items()
        for _ in range(n)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_source_table(manifest: pd.DataFrame) -> None:
    table = source_table(manifest, CLASSES)
    assert table.index.tolist() == [
        "COVID-19",
        "Edema",
        "Effusion",
        "Pneumonia",
        "Normal",
    ]  # no Emphysema images
    assert table.columns.tolist() == ["actualmed", "cohen", "figure1", "kermany", "nih"]
    assert table.loc["Pneumonia", "kermany"] == 95 and table.loc["Edema"].sum() == 10
    assert int(table.to_numpy().sum()) == len(manifest)


def test_class_sources(manifest: pd.DataFrame) -> None:
    audit = class_sources(manifest, CLASSES).set_index("class")
    assert list(audit.reset_index().columns) == list(AUDIT_COLUMNS)
    assert audit.loc["Edema", ["sources", "n_sources", "single_source", "confounded"]].tolist() == [
        "nih:10",
        1,
        True,
        True,
    ]
    assert (
        audit.loc["Effusion", "single_source"] and audit.loc["Effusion", "dominant_source"] == "nih"
    )
    pneumonia = audit.loc["Pneumonia"]
    assert pneumonia["sources"] == "kermany:95, cohen:5"
    assert (pneumonia["single_source"], pneumonia["confounded"]) == (False, True)  # 95 % >= 90 %
    assert pneumonia["dominant_share"] == pytest.approx(0.95)
    covid = audit.loc["COVID-19"]
    assert (covid["n_sources"], covid["confounded"]) == (3, False)
    assert covid["exclusive_share"] == pytest.approx(0.2)  # figure1 holds nothing else
    normal = audit.loc["Normal"]
    assert (normal["confounded"], normal["exclusive_share"]) == (False, 0.0)
    # a stricter threshold
    assert (
        not class_sources(manifest, dominant_share=0.96)
        .set_index("class")
        .loc["Pneumonia", "confounded"]
    )


def test_default_order_is_first_appearance() -> None:
    frame = pd.DataFrame({"label": ["B", "A", "B"], "source": ["x", "y", "y"]})
    assert class_sources(frame)["class"].tolist() == ["B", "A"]
