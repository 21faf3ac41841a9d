"""Unit families read on the reference images: the consensus of their members, and their members'
agreement within each class."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.alignment import align_folds, identity_alignment
from biomark.analysis.unit_families import (
    agreeing_classes,
    family_consensus,
    within_class_member_r,
)
from biomark.exceptions import DataError


def test_family_consensus_reads_a_planted_signal_better_than_any_member() -> None:
    """Members of one family at their own scale and offset, each a noisy reading of one signal."""
    rng = np.random.default_rng(7)
    n, d = 400, 12
    signal = rng.standard_normal(n)
    latent = np.column_stack([signal, rng.standard_normal((n, d - 1))])
    folds, perms = {}, {}
    for f in range(3):
        perms[f] = np.arange(d) if f == 0 else rng.permutation(d)
        reading = (1 + 2 * f) * (latent + rng.standard_normal((n, d))) + 5.0 * f
        folds[f] = np.empty_like(reading)
        folds[f][:, perms[f]] = reading  # family j (latent j) is unit perms[f][j] of fold f
    al = align_folds(folds, seed=0)
    for f in range(3):
        np.testing.assert_array_equal(al.perms[f], perms[f])
    consensus = family_consensus(folds, al)
    assert consensus.shape == (n, d)
    np.testing.assert_allclose(consensus.mean(axis=0), 0.0, atol=1e-12)
    members = [np.corrcoef(folds[f][:, perms[f][0]], signal)[0, 1] for f in range(3)]
    together = np.corrcoef(consensus[:, 0], signal)[0, 1]
    # each member reads the signal at r ~ 0.71; the mean of three at r ~ 0.87
    assert max(members) < 0.76 and together > 0.84


def test_family_consensus_of_one_shared_backbone_is_the_standardised_unit() -> None:
    rng = np.random.default_rng(8)
    shared = np.maximum(rng.standard_normal((60, 5)), 0.0)  # GAP-like: non-negative
    shared[:, 3] = 1.5  # a silent unit reads 0
    al = identity_alignment([0, 1], 5)
    out = family_consensus({0: shared, 1: shared.copy()}, al)
    live = [0, 1, 2, 4]
    np.testing.assert_allclose(
        out[:, live], (shared[:, live] - shared[:, live].mean(0)) / shared[:, live].std(0)
    )
    np.testing.assert_array_equal(out[:, 3], 0.0)


def test_family_consensus_names_a_missing_fold_and_a_wrong_width() -> None:
    al = identity_alignment([0, 1], 4)
    with pytest.raises(DataError, match=r"fold\(s\) \[1\] have no reference"):
        family_consensus({0: np.zeros((5, 4))}, al)
    with pytest.raises(DataError, match="do not fit 4 units"):
        family_consensus({0: np.zeros((5, 4)), 1: np.zeros((5, 3))}, al)


def test_members_that_grade_a_class_alike_agree_within_it_though_their_match_is_poor() -> None:
    """Fold 1's member grades class a as fold 0's does but also fires for class b: over all images
    the two barely correlate, on class a's images they agree; an unrelated member agrees
    nowhere."""
    rng = np.random.default_rng(0)
    n = 200
    labels = np.repeat(["a", "b", "c", "tiny"], [90, 90, 15, 5])
    grade = rng.standard_normal(n)
    fires_for_b = np.where(labels == "b", 3.0 + rng.standard_normal(n), 0.0)
    unit0 = np.where(labels == "a", 2.0 + grade, -grade)
    fold0 = np.column_stack([unit0, rng.standard_normal(n), np.zeros(n)])
    fold1 = np.column_stack(
        [unit0 + fires_for_b + 0.3 * rng.standard_normal(n), rng.standard_normal(n), np.ones(n)]
    )
    al = align_folds({0: fold0, 1: fold1})
    assert list(al.perms[1][:2]) == [0, 1]
    table = within_class_member_r({0: fold0, 1: fold1}, al, labels)
    assert list(table.columns) == ["a", "b", "c", "tiny"]
    overall = np.corrcoef(fold0[:, 0], fold1[:, 0])[0, 1]
    assert table.at[0, "a"] > 0.95 and table.at[0, "a"] > overall + 0.2
    assert abs(table.at[1, "a"]) < 0.3  # unrelated units
    assert table["tiny"].isna().all()  # fewer than 10 images of the class
    assert np.isnan(table.at[2, "a"])  # silent members
    # the one reading of the table that every page uses: unit 0's members agree on a and c (b's
    # extra firing is noise within b), the others nowhere
    assert agreeing_classes(table, 0.9).tolist() == ["a, c", "", ""]
    assert agreeing_classes(table, 1.01).tolist() == ["", "", ""]
    with pytest.raises(DataError, match="labels"):
        within_class_member_r({0: fold0, 1: fold1}, al, labels[:-1])
    with pytest.raises(DataError, match="no reference activations"):
        within_class_member_r({0: fold0}, al, labels)
