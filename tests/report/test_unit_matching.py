"""The report's matching note: how many poorly matched families still agree within a class, and
which class the within-class match reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from biomark.analysis.alignment import align_folds
from biomark.report.unit_matching import (
    _describe_dominance,
    fold_near_copies,
    share_agreeing_in_some_class,
)


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


def test_near_copies_are_read_in_each_folds_network_in_the_matched_order() -> None:
    """Fold 0's units 0 and 1 are near-copies; fold 1 keeps them apart, in another unit order. The
    matrices come back in the families' order (fold 0's), each from its own network."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((300, 4))
    fold0 = base.copy()
    fold0[:, 1] = base[:, 0] + 0.05 * rng.standard_normal(300)
    perm = np.array([2, 0, 3, 1])  # fold 1's unit k is latent unit perm[k]
    fold1 = base[:, perm] + 0.01 * rng.standard_normal((300, 4))
    al = align_folds({0: fold0, 1: fold1})
    keep = np.arange(4)
    rep = SimpleNamespace(model_views={0: fold0, 1: fold1}, unit_basis="matched", X=None)
    copies = fold_near_copies(rep, al, keep)
    assert copies is not None and set(copies) == {0, 1}
    assert copies[0][0, 1] and copies[0][1, 0]
    assert not copies[1][0, 1]
    np.testing.assert_array_equal(np.diag(copies[1]), True)
    # only kept families, in their order
    fewer = fold_near_copies(rep, al, np.array([1, 0]))
    assert fewer is not None and fewer[0].shape == (2, 2) and fewer[0][0, 1]


def test_a_shared_backbone_reads_its_near_copies_once_for_every_fold() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal(200)
    X = np.c_[a, a + 0.05 * rng.standard_normal(200), rng.standard_normal(200)]
    rep = SimpleNamespace(model_views={}, unit_basis="shared", X=X, folds=[0, 1, 2])
    copies = fold_near_copies(rep, None, np.arange(3))
    assert copies is not None and set(copies) == {0, 1, 2}
    assert copies[2][0, 1] and not copies[2][0, 2]
    assert (
        fold_near_copies(
            SimpleNamespace(model_views={}, unit_basis="unmatched", X=X), None, np.arange(3)
        )
        is None
    )
