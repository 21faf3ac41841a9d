"""Metrics by image source (biomark.analysis.by_source)."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.by_source import (
    class_source_recall,
    class_sources,
    confounding_sentences,
    external_design,
    source_metrics,
)
from biomark.exceptions import DataError


@pytest.fixture
def shortcut_run() -> dict[str, np.ndarray]:
    """COVID-19 from cohen (recognised) and actualmed (missed); Normal from kermany and nih (both
    fine)."""
    labels = np.repeat(["COVID-19", "COVID-19", "Normal", "Normal"], [40, 20, 30, 30])
    sources = np.repeat(["cohen", "actualmed", "kermany", "nih"], [40, 20, 30, 30])
    pred = labels.copy()
    pred[40:60] = "Normal"  # every actualmed COVID-19 film missed
    pred[60:63] = "COVID-19"
    folds = np.tile([0, 1, 2], 40)
    return {"labels": labels, "pred": pred, "sources": sources, "folds": folds}


def test_source_metrics_separate_a_source_the_model_fails_on(shortcut_run) -> None:
    table = source_metrics(
        shortcut_run["labels"],
        shortcut_run["pred"],
        shortcut_run["sources"],
        folds=shortcut_run["folds"],
        positive="COVID-19",
    ).set_index("source")
    assert table.at["cohen", "accuracy"] == 1.0 and table.at["cohen", "sensitivity"] == 1.0
    assert table.at["actualmed", "accuracy"] == 0.0 and table.at["actualmed", "sensitivity"] == 0.0
    assert table.at["kermany", "accuracy"] == pytest.approx(27 / 30)
    assert np.isnan(table.at["nih", "sensitivity"]) and table.at["nih", "n_positive"] == 0
    low, high = table.at["actualmed", "accuracy_low"], table.at["actualmed", "accuracy_high"]
    assert low == 0.0 and 0.1 < high < 0.2  # Wilson interval of 0/20
    assert (
        table.at["cohen", "classes"] == "COVID-19:40" and table.at["cohen", "majority_rate"] == 1.0
    )
    assert (
        table["seen_in_training"].all() and not table.attrs["held_out"]
    )  # every source in every fold


def test_leave_one_source_out_says_train_on_these_test_on_that() -> None:
    sources = np.repeat(["cohen", "actualmed", "figure1"], [30, 20, 10])
    labels = np.where(np.arange(60) % 2 == 0, "COVID-19", "Normal")
    folds = np.repeat([0, 1, 2], [30, 20, 10])  # each fold is one source
    layout = external_design(sources, folds)
    assert layout["held_out"]
    assert layout["folds"][1] == {"test": ["actualmed"], "train": ["cohen", "figure1"]}
    table = source_metrics(labels, labels, sources, folds=folds).set_index("source")
    assert table.attrs["held_out"] and not table["seen_in_training"].any()
    assert (
        table.at["figure1", "trained_on"] == "actualmed, cohen"
        and table.at["figure1", "folds"] == "2"
    )


def test_class_source_recall(shortcut_run) -> None:
    table = class_source_recall(
        shortcut_run["labels"], shortcut_run["pred"], shortcut_run["sources"]
    )
    covid = table[table["class"] == "COVID-19"].set_index("source")
    assert covid.at["cohen", "recall"] == 1.0 and covid.at["actualmed", "recall"] == 0.0
    assert (table["n_sources"] == 2).all() and table["n"].sum() == 120


def test_mismatched_inputs_are_named() -> None:
    with pytest.raises(DataError, match="sources must have one entry per label"):
        source_metrics(["a", "b"], ["a", "b"], ["s"])
    with pytest.raises(DataError, match="folds must have one fold id per image"):
        source_metrics(["a", "b"], ["a", "b"], ["s", "t"], folds=[0])


def test_class_sources_on_the_real_data_composition() -> None:
    """As in issue 13: four classes from NIH only, COVID-19 only from COVID collections, Pneumonia
    95 % Kermany."""
    composition = {
        "COVID-19": {"cohen": 300, "actualmed": 100, "figure1": 55},
        "Edema": {"nih": 40},
        "Effusion": {"nih": 60},
        "Emphysema": {"nih": 50},
        "Fibrosis": {"nih": 45},
        "Pneumonia": {"kermany": 950, "nih": 50},
        "Normal": {"kermany": 500, "nih": 500},
    }
    labels = [c for c, srcs in composition.items() for s, n in srcs.items() for _ in range(n)]
    sources = [s for c, srcs in composition.items() for s, n in srcs.items() for _ in range(n)]
    table = class_sources(labels, sources).set_index("class")
    assert table.at["COVID-19", "exclusive"] and not table.at["COVID-19", "single_source"]
    assert table.loc[["Edema", "Effusion", "Emphysema", "Fibrosis"], "single_source"].all()
    assert not table.loc[["Edema", "Effusion", "Emphysema", "Fibrosis"], "exclusive"].any()
    assert table.at["Pneumonia", "dominated"] and table.at[
        "Pneumonia", "top_share"
    ] == pytest.approx(0.95)
    assert not table.at["Normal", "dominated"]
    text = " ".join(confounding_sentences(table.reset_index()))
    assert "COVID-19 (cohen, actualmed, figure1)" in text and "cannot be told apart" in text
    assert (
        "Edema, Effusion, Emphysema, Fibrosis: every image comes from one source (nih)" in text
        and "their features cannot be separated from that source" in text
    )
    assert "Pneumonia: 95% of its images come from kermany" in text
    assert "Normal" not in text.split("(Pneumonia, Normal)")[-1].split("Pneumonia: 95%")[-1]
    assert "shares at least one source" not in text
