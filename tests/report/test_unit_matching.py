"""The report's matching note: how many poorly matched families still agree within a class, and
which class the within-class match reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from biomark.report.unit_matching import _describe_dominance, share_agreeing_in_some_class


def test_share_of_families_agreeing_on_some_class() -> None:
    table = pd.DataFrame(
        {"a": [0.8, 0.1, np.nan, 0.2], "b": [0.2, 0.6, np.nan, 0.49]},
        index=["u0000", "u0001", "u0002", "u0003"],
    )
    # u0000 agrees on a, u0001 on b; u0002 is never measured, u0003 never reaches 0.5
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=table), 0.5) == 0.5
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=table), 0.9) == 0.0
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=None), 0.5) is None
    empty = table.iloc[:, :0]
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=empty), 0.5) is None
    silent = table.loc[["u0002"]]
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=silent), 0.5) is None


def _network(rng: np.random.Generator, labels: np.ndarray, loud: str) -> np.ndarray:
    """Units that vary ten times as much within class ``loud`` as within the others."""
    sd = np.where(labels == loud, 10.0, 1.0)
    return rng.standard_normal((len(labels), 4)) * sd[:, None]


def test_the_note_names_the_class_the_within_class_match_reads() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["Edema", "Emphysema", "Fibrosis"], 40)
    reference = {f: _network(rng, labels, "Emphysema") for f in (0, 1)}
    reference[2] = _network(rng, labels, "Fibrosis")
    rep = SimpleNamespace(label="scratch", notes=[])
    al = SimpleNamespace(folds=[0, 1, 2], reference_fold=0, within_classes=True)
    _describe_dominance(rep, reference, labels, al)
    (note,) = rep.notes
    assert "in fold 0's network" in note
    assert "lies in Emphysema images" in note
    assert "agree on Emphysema images" in note
    assert "fold 2's in Fibrosis" in note  # the network that pairs poorly
    assert "fold 1's" not in note


def test_no_note_when_no_class_holds_most_of_the_variation() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(["Edema", "Emphysema", "Fibrosis"], 40)
    reference = {f: rng.standard_normal((len(labels), 4)) for f in (0, 1)}
    rep = SimpleNamespace(label="scratch", notes=[])
    al = SimpleNamespace(folds=[0, 1], reference_fold=0, within_classes=True)
    _describe_dominance(rep, reference, labels, al)
    assert rep.notes == []
