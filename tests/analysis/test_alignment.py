"""Unit matching across folds: planted permutations, noisy copies, silent units, the identity."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from biomark.analysis.alignment import (
    FoldAlignment,
    align_folds,
    align_rows,
    identity_alignment,
    own_backbones,
)
from biomark.exceptions import DataError


def test_noisy_copies_are_matched_and_quality_reported(
    relu_units: Callable[[np.random.Generator, int, int], np.ndarray],
) -> None:
    rng = np.random.default_rng(2)
    n, d = 150, 48
    ref = relu_units(rng, n, d)
    folds = {0: ref}
    perms = {}
    for f, noise in ((1, 0.3), (2, 0.6)):
        perm = rng.permutation(d)
        other = np.empty_like(ref)
        other[:, perm] = ref + noise * ref.std(axis=0) * rng.standard_normal((n, d))
        folds[f], perms[f] = other, perm
    al = align_folds(folds, seed=0)
    assert al.reference_fold == 0 and al.folds == [0, 1, 2]
    np.testing.assert_array_equal(al.perms[1], perms[1])
    assert np.mean(al.perms[2] == perms[2]) > 0.95
    q = al.quality().set_index("fold")
    assert list(q.index) == ["1", "2", "all"]
    assert q.at["1", "r_median"] > q.at["2", "r_median"] > 0.8  # more noise, weaker matches
    assert q.at["1", "share_matched"] == 1.0 and q.at["all", "share_above_null"] > 0.95
    assert q.at["1", "null_r_q95"] < 0.6
    # families: reference unit j with its members in each fold
    assert al.members(5) == f"f0:0005, f1:{perms[1][5]:04d}, f2:{al.perms[2][5]:04d}"
    table = al.member_table()
    assert list(table.columns[:2]) == ["members", "match_r"] and len(table) == d
    assert al.share_matched() > 0.9


def test_unrelated_units_match_no_better_than_the_null(
    relu_units: Callable[[np.random.Generator, int, int], np.ndarray],
) -> None:
    rng = np.random.default_rng(3)
    al = align_folds({0: relu_units(rng, 80, 40), 1: relu_units(rng, 80, 40)})
    q = al.quality().iloc[0]
    assert q["share_above_null"] < 0.3
    assert al.share_matched() < 0.5


def test_silent_units_pair_last_and_are_reported(
    relu_units: Callable[[np.random.Generator, int, int], np.ndarray],
) -> None:
    rng = np.random.default_rng(4)
    ref = relu_units(rng, 60, 10)
    ref[:, 7] = 0.0
    perm = rng.permutation(10)
    other = np.empty_like(ref)
    other[:, perm] = ref
    al = align_folds({0: ref, 3: other})
    np.testing.assert_array_equal(al.perms[3][np.arange(10) != 7], perm[np.arange(10) != 7])
    assert al.perms[3][7] == perm[7]  # the only silent unit left
    assert np.isnan(al.r[3][7]) and np.isnan(al.family_r()[7])
    assert al.quality().iloc[0]["n_silent"] == 1


def test_align_rows_puts_each_fold_in_reference_order() -> None:
    rng = np.random.default_rng(5)
    d = 6
    perm = rng.permutation(d)
    al = FoldAlignment(
        reference_fold=0,
        folds=[0, 1],
        perms={0: np.arange(d), 1: perm},
        r={0: np.ones(d), 1: np.ones(d)},
    )
    X = rng.standard_normal((5, d))
    folds = np.array([0, 1, 1, 0, 1])
    out = align_rows(X, folds, al)
    np.testing.assert_array_equal(out[folds == 0], X[folds == 0])
    np.testing.assert_array_equal(out[folds == 1], X[folds == 1][:, perm])
    with pytest.raises(DataError, match=r"fold\(s\) \[2\]"):
        align_rows(X, np.array([0, 1, 2, 0, 1]), al)


def test_shared_backbone_is_the_identity(
    relu_units: Callable[[np.random.Generator, int, int], np.ndarray],
) -> None:
    """frozen with pretrained weights: identity by construction, and matching its features finds the
    identity."""
    rng = np.random.default_rng(6)
    al = identity_alignment([2, 0, 1], 12)
    assert al.identity and al.folds == [0, 1, 2]
    for f in al.folds:
        np.testing.assert_array_equal(al.perms[f], np.arange(12))
    np.testing.assert_array_equal(al.family_r(), np.ones(12))
    assert al.share_matched() == 1.0
    # the same images through one shared backbone give the same activations in every fold
    shared = relu_units(rng, 50, 12)
    matched = align_folds({0: shared, 1: shared.copy(), 2: shared.copy()})
    for f in (1, 2):
        np.testing.assert_array_equal(matched.perms[f], np.arange(12))


def test_the_page_says_how_each_fold_came_by_its_own_backbone() -> None:
    """Units are matched where the folds' backbones differ; a random frozen backbone is drawn, not
    trained."""
    assert own_backbones("scratch") == "each fold trained its own backbone"
    assert own_backbones("finetune:3") == "each fold fine-tuned its own copy of the backbone"
    frozen = own_backbones("frozen")
    assert (
        "random backbone" in frozen and "model.weights: none" in frozen and "trained" not in frozen
    )


def test_matching_within_classes_pairs_units_that_grade_alike_where_class_means_mislead() -> None:
    """Each unit grades one signal inside every class; fold 1's units carry the same grades,
    permuted, but with class offsets that differ from fold 0's. Over all images the offsets dominate
    and the match goes wrong; with the classes' means removed it recovers the planted
    permutation."""
    from biomark.analysis.alignment import centre_within_classes

    rng = np.random.default_rng(3)
    n_per, d = 60, 12
    labels = np.repeat(["a", "b", "c"], n_per)
    grades = rng.standard_normal((labels.size, d))
    offsets0, offsets1 = (6.0 * rng.standard_normal((3, d)) for _ in range(2))
    klass = np.repeat(np.arange(3), n_per)
    fold0 = grades + offsets0[klass]
    perm = rng.permutation(d)
    fold1 = np.empty_like(fold0)
    fold1[:, perm] = grades + 0.2 * rng.standard_normal(grades.shape) + offsets1[klass]

    plain = align_folds({0: fold0, 1: fold1}, seed=0)
    within = align_folds({0: fold0, 1: fold1}, labels=labels, seed=0)
    assert not np.array_equal(plain.perms[1], perm)
    np.testing.assert_array_equal(within.perms[1], perm)
    assert within.within_classes and not plain.within_classes
    assert "within-class" in within.method
    assert within.share_matched() == 1.0 and np.nanmin(within.r[1]) > 0.9

    centred = centre_within_classes(fold0, labels)
    for c in "abc":
        np.testing.assert_allclose(centred[labels == c].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        centred[labels == "a"],
        fold0[labels == "a"] - offsets0[0] - (grades[labels == "a"].mean(axis=0)),
        atol=1e-12,
    )
    # an image without a class is centred with the others that have none
    unknown = np.array([None, None, "a", "a"], dtype=object)
    np.testing.assert_allclose(
        centre_within_classes(np.array([[1.0], [3.0], [5.0], [9.0]]), unknown).ravel(),
        [-1.0, 1.0, -2.0, 2.0],
    )
    with pytest.raises(DataError, match="labels"):
        align_folds({0: fold0, 1: fold1}, labels=labels[:-1])


def test_labels_by_image_lines_classes_up_with_the_reference_images() -> None:
    import pandas as pd

    from biomark.analysis.alignment import labels_by_image

    meta = pd.DataFrame({"image_id": [3, 1, 2], "label": ["Edema", "Normal", "Fibrosis"]})
    got = labels_by_image(meta, pd.Index(["1", "9", "3"]))
    assert got[0] == "Normal" and got[2] == "Edema"
    assert pd.isna(got[1])  # an image the table does not hold has no class
    with pytest.raises(DataError, match="no label column"):
        labels_by_image(meta.drop(columns="label"), ["1"])
