"""Unit matching across folds: planted permutations, noisy copies, silent units, the identity."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.alignment import (
    FoldAlignment,
    align_folds,
    align_rows,
    family_consensus,
    identity_alignment,
    match_units,
    own_backbones,
    unit_correlation,
)
from biomark.exceptions import DataError


def _relu_units(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """GAP-like activations: non-negative, correlated through a few latent factors."""
    latent = rng.standard_normal((n, 8))
    mix = rng.standard_normal((8, d))
    return np.maximum(latent @ mix + 0.5 * rng.standard_normal((n, d)), 0.0)


def test_unit_correlation_matches_numpy_and_marks_silent_units() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 5)), rng.standard_normal((30, 4))
    b = np.hstack([b, np.full((30, 1), 2.0)])  # a silent unit
    r = unit_correlation(a, b)
    full = np.corrcoef(a.T, b[:, :4].T)[:5, 5:]
    np.testing.assert_allclose(r[:, :4], full, atol=1e-12)
    assert np.isnan(r[:, 4]).all()


def test_planted_permutation_is_recovered_exactly() -> None:
    rng = np.random.default_rng(1)
    ref = _relu_units(rng, 120, 64)
    perm = rng.permutation(64)
    other = np.empty_like(ref)
    other[:, perm] = ref  # reference unit j is unit perm[j] of the other fold
    m = match_units(ref, other)
    np.testing.assert_array_equal(m.perm, perm)
    np.testing.assert_allclose(m.r, 1.0)
    assert np.nanmedian(m.null_r) < 0.5  # shuffled images: unrelated units do not match


def test_noisy_copies_are_matched_and_quality_reported() -> None:
    rng = np.random.default_rng(2)
    n, d = 150, 48
    ref = _relu_units(rng, n, d)
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


def test_unrelated_units_match_no_better_than_the_null() -> None:
    rng = np.random.default_rng(3)
    al = align_folds({0: _relu_units(rng, 80, 40), 1: _relu_units(rng, 80, 40)})
    q = al.quality().iloc[0]
    assert q["share_above_null"] < 0.3
    assert al.share_matched() < 0.5


def test_silent_units_pair_last_and_are_reported() -> None:
    rng = np.random.default_rng(4)
    ref = _relu_units(rng, 60, 10)
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


def test_shared_backbone_is_the_identity() -> None:
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
    shared = _relu_units(rng, 50, 12)
    matched = align_folds({0: shared, 1: shared.copy(), 2: shared.copy()})
    for f in (1, 2):
        np.testing.assert_array_equal(matched.perms[f], np.arange(12))


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
    shared = _relu_units(rng, 60, 5)
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


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((5, 3)), np.zeros((5, 4)), "differ in shape"),
        (np.zeros((2, 3)), np.zeros((2, 3)), "at least 3"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
    ],
)
def test_bad_inputs_are_named(a: np.ndarray, b: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        match_units(a, b)


def test_the_page_says_how_each_fold_came_by_its_own_backbone() -> None:
    """Units are matched where the folds' backbones differ; a random frozen backbone is drawn, not
    trained."""
    assert own_backbones("scratch") == "each fold trained its own backbone"
    assert own_backbones("finetune:3") == "each fold fine-tuned its own copy of the backbone"
    frozen = own_backbones("frozen")
    assert (
        "random backbone" in frozen and "model.weights: none" in frozen and "trained" not in frozen
    )


def test_members_that_grade_a_class_alike_agree_within_it_though_their_match_is_poor() -> None:
    """Fold 1's member grades class a as fold 0's does but also fires for class b: over all images
    the two barely correlate, on class a's images they agree; an unrelated member agrees
    nowhere."""
    from biomark.analysis.alignment import agreeing_classes, within_class_member_r

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
