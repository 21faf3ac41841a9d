"""Near-copies and effective dimension of one network's units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.redundancy import (
    NEAR_COPY_R,
    copy_groups,
    direction_table,
    distinct_candidates,
    mark_near_copies,
    near_copy_matrix,
    nearest_unit_r,
    unit_redundancy,
)
from biomark.analysis.unit_match import match_units
from biomark.exceptions import DataError


def _copies(
    rng: np.random.Generator, n: int, directions: int, copies: int, noise: float
) -> np.ndarray:
    """``directions`` independent signals, each carried by ``copies`` units with a little noise."""
    base = rng.standard_normal((n, directions))
    return np.repeat(base, copies, axis=1) + noise * rng.standard_normal((n, directions * copies))


def test_near_copies_of_a_few_directions_are_found() -> None:
    X = _copies(np.random.default_rng(0), 400, directions=5, copies=8, noise=0.05)
    red = unit_redundancy(X)
    assert (red.n_units, red.n_live, red.n_images) == (40, 40, 400)
    assert red.dimension == 5
    assert red.share_near_copies == 1.0 and red.nearest_r_median > 0.99
    assert red.redundant
    assert "span about 5 directions" in red.describe()
    assert "near-copies of a few directions" in red.describe()


def test_independent_units_are_not_called_redundant() -> None:
    X = np.random.default_rng(1).standard_normal((400, 30))
    red = unit_redundancy(X)
    # 90 % of the variance of 30 independent units needs nearly all of them
    assert red.dimension >= 24
    assert red.share_near_copies == 0.0 and red.nearest_r_median < 0.3
    assert not red.redundant
    assert "near-copies" not in red.describe()


def test_dimension_counts_the_variance_share() -> None:
    rng = np.random.default_rng(2)
    # three directions with variances 10, 1, 0.01 spread over 6 units each (exact copies)
    base = rng.standard_normal((500, 3)) * np.sqrt([10.0, 1.0, 0.01])
    X = np.repeat(base, 6, axis=1)
    # standardised, every unit weighs the same: each direction holds a third of the variance
    assert unit_redundancy(X, share=0.3).dimension == 1
    assert unit_redundancy(X, share=0.6).dimension == 2
    assert unit_redundancy(X, share=0.99).dimension == 3
    assert unit_redundancy(X).first_share == pytest.approx(1 / 3, abs=0.02)


def test_silent_units_are_left_out() -> None:
    rng = np.random.default_rng(3)
    X = np.hstack([_copies(rng, 200, 2, 3, 0.05), np.zeros((200, 4))])
    red = unit_redundancy(X)
    assert (red.n_units, red.n_live) == (10, 6)
    r = nearest_unit_r(X)
    assert np.isnan(r[6:]).all() and (r[:6] > NEAR_COPY_R).all()


def test_all_silent_units() -> None:
    red = unit_redundancy(np.ones((10, 4)))
    assert red.n_live == 0 and red.dimension == 0 and not red.redundant
    assert red.describe() == "none of its 4 GAP units varies over the 10 images"
    one = unit_redundancy(np.column_stack([np.arange(10.0), np.ones((10, 3))]))
    assert one.describe() == "only one of its 4 GAP units varies over the 10 images"
    assert not one.redundant


@pytest.mark.parametrize(
    ("X", "kwargs", "match"),
    [
        (np.ones((2, 3)), {}, "at least 3 images"),
        (np.array([[0.0, np.nan]] * 5), {}, "non-finite|NaN"),
        (np.ones((5, 3)), {"share": 1.5}, r"share=1\.5"),
    ],
)
def test_bad_input_is_named(X: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        unit_redundancy(X, **kwargs)


def test_best_counterpart_exceeds_the_one_to_one_match_for_near_copies() -> None:
    """Two networks that carry the same 4 directions, each in 10 near-copies: every unit has a close
    counterpart, but the one-to-one match pairs copies at whatever is left, well below it."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((600, 4))
    a = np.repeat(base, 10, axis=1) + 0.3 * rng.standard_normal((600, 40))
    # the other network: uneven copies (16, 12, 8, 4) of the same directions
    b = np.hstack([np.repeat(base[:, [k]], c, axis=1) for k, c in enumerate((16, 12, 8, 4))])
    b = b + 0.3 * rng.standard_normal(b.shape)
    m = match_units(a, b)
    assert (m.best_r > 0.8).all()
    assert np.median(m.r) < np.median(m.best_r)
    # directions 3 and 4 have 2 and 6 copies too few in b: those 8 units are paired across
    # directions
    assert (m.r < 0.5).sum() == 8
    assert (m.best_r[m.r < 0.5] > 0.8).all()


def _three_directions(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Features a, c (copies of one direction), b, e (copies of another), d alone."""
    base = rng.standard_normal((300, 3))
    noise = 0.05 * rng.standard_normal((300, 2))
    values = np.column_stack(
        [base[:, 0], base[:, 1], base[:, 0] + noise[:, 0], base[:, 2], 2 * base[:, 1] + noise[:, 1]]
    )
    return values, ["a", "b", "c", "d", "e"]


def test_copy_groups_find_the_planted_copies() -> None:
    values, names = _three_directions(np.random.default_rng(5))
    assert copy_groups(values, names) == [["a", "c"], ["b", "e"], ["d"]]
    assert copy_groups(values, names, near_copy_r=0.9999) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert copy_groups(values[:, :1], ["a"]) == [["a"]]


def test_complete_linkage_does_not_chain() -> None:
    """x ~ y and y ~ z at r 0.93, but x and z only at about 0.86: not one group."""
    rng = np.random.default_rng(6)
    y = rng.standard_normal(2000)
    x = y + 0.4 * rng.standard_normal(2000)
    z = y + 0.4 * rng.standard_normal(2000)
    r = np.corrcoef([x, y, z])
    assert r[0, 1] > 0.9 and r[1, 2] > 0.9 and r[0, 2] < 0.9
    groups = copy_groups(np.column_stack([x, y, z]), ["x", "y", "z"])
    assert len(groups) == 2 and sorted(map(len, groups)) == [1, 2]


def test_candidates_that_copy_a_better_ranked_one_are_marked() -> None:
    values, names = _three_directions(np.random.default_rng(7))
    table = pd.DataFrame(
        {
            "class": ["Edema", "Edema", "Edema", "Effusion", "Effusion", "Effusion"],
            "feature": ["c", "a", "e", "b", "d", "c"],
            "rank": [1, 2, 3, 1, 2, 3],
            "is_candidate": [True, True, True, True, pd.NA, False],
        }
    )
    marked = mark_near_copies(table, values, names)
    # c (rank 1) leads its group over a; e copies b, the better-ranked of the two (rank 1 in
    # Effusion)
    assert marked["copy_of"].tolist() == ["", "c", "b", "", "", ""]
    assert table.columns.tolist() == ["class", "feature", "rank", "is_candidate"]  # not changed
    assert distinct_candidates(marked) == 2
    assert distinct_candidates(table) == 0  # no copy_of column: nothing counted


def test_a_table_without_two_candidates_gets_an_empty_column() -> None:
    values, names = _three_directions(np.random.default_rng(8))
    table = pd.DataFrame({"feature": ["a", "c"], "rank": [1, 2], "is_candidate": [True, False]})
    marked = mark_near_copies(table, values, names)
    assert marked["copy_of"].tolist() == ["", ""] and distinct_candidates(marked) == 1
    empty = mark_near_copies(table.iloc[:0], values, names)
    assert "copy_of" in empty.columns and distinct_candidates(empty) == 0


def test_copy_groups_names_must_match_the_columns() -> None:
    values, _ = _three_directions(np.random.default_rng(9))
    with pytest.raises(DataError, match="4 names for 5 feature columns"):
        copy_groups(values, ["a", "b", "c", "d"])


def test_many_images_are_read_through_a_seeded_subset() -> None:
    X = _copies(np.random.default_rng(10), 900, directions=4, copies=5, noise=0.05)
    sub = unit_redundancy(X, max_images=300)
    assert sub.n_images == 300 and sub.dimension == 4 and sub.redundant
    assert unit_redundancy(X, max_images=300) == sub  # the same subset every time
    assert unit_redundancy(X, max_images=None).n_images == 900


def test_non_finite_candidate_values_are_named() -> None:
    values, names = _three_directions(np.random.default_rng(11))
    values[4, 0] = np.nan
    table = pd.DataFrame({"feature": ["a", "b"], "rank": [1, 2], "is_candidate": [True, True]})
    with pytest.raises(DataError, match="values"):
        mark_near_copies(table, values, names)


def test_direction_table_tells_class_codes_from_within_class_factors() -> None:
    """Two planted directions: a class code (A high, C low) carried by 12 units, and a factor that
    varies within every class, carried by 6; the rest is noise."""
    rng = np.random.default_rng(12)
    labels = np.repeat(["A", "B", "C"], 200)
    code = np.select([labels == "A", labels == "C"], [2.0, -2.0], 0.0) + 0.3 * rng.standard_normal(
        600
    )
    within = rng.standard_normal(600)
    X = np.hstack(
        [
            np.repeat(code[:, None], 12, axis=1),
            np.repeat(within[:, None], 6, axis=1),
            rng.standard_normal((600, 4)),
        ]
    ) + 0.05 * rng.standard_normal((600, 22))
    table = direction_table(X, labels, n_directions=3)
    assert table.columns.tolist() == [
        "direction",
        "variance_share",
        "between_classes",
        "high_end",
        "low_end",
        "units",
    ]
    first, second = table.iloc[0], table.iloc[1]
    assert first["units"] == 12 and first["between_classes"] > 0.9
    # turned so that its units fire more at the high end: the 12 code units are high in A
    assert (first["high_end"], first["low_end"]) == ("A", "C")
    assert second["units"] == 6 and second["between_classes"] < 0.05
    assert first["variance_share"] > second["variance_share"] > table.iloc[2]["variance_share"]
    # ... and turned the same way with the units' signs flipped
    flipped = direction_table(-X, labels, n_directions=3).iloc[0]
    assert (flipped["high_end"], flipped["low_end"]) == ("C", "A")
    # the variance shares are the standardised units' squared singular values
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    singular = np.linalg.svd(Z, compute_uv=False)
    np.testing.assert_allclose(
        table["variance_share"], (singular**2 / np.sum(singular**2))[:3], rtol=1e-10
    )
    redundancy = unit_redundancy(X, share=0.5)
    assert redundancy.first_share == pytest.approx(singular[0] ** 2 / np.sum(singular**2))


def test_direction_table_input_checks() -> None:
    with pytest.raises(DataError, match="2 labels for 5 images"):
        direction_table(np.random.default_rng(0).standard_normal((5, 3)), ["a", "b"])
    assert direction_table(np.ones((5, 3)), list("abcab")).empty


def test_near_copy_matrix_pairs_the_planted_copies_only() -> None:
    rng = np.random.default_rng(5)
    values = _copies(rng, 400, directions=3, copies=4, noise=0.05)
    copies = near_copy_matrix(values)
    direction = np.repeat(np.arange(3), 4)
    np.testing.assert_array_equal(copies, direction[:, None] == direction[None, :])


def test_near_copy_matrix_ignores_flipped_and_silent_units() -> None:
    """A unit that fires exactly against another is no copy of it, and a silent one copies only
    itself, as in ``copy_of``."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal(300)
    copies = near_copy_matrix(np.c_[a, -a, np.zeros(300)])
    np.testing.assert_array_equal(copies, np.eye(3, dtype=bool))


def test_near_copy_matrix_threshold_is_the_copy_of_threshold() -> None:
    rng = np.random.default_rng(7)
    a = rng.standard_normal(2000)
    b = a + 0.35 * rng.standard_normal(2000)  # r about 0.94
    c = a + 0.75 * rng.standard_normal(2000)  # r about 0.8
    copies = near_copy_matrix(np.c_[a, b, c])
    assert copies[0, 1] and not copies[0, 2]
    assert near_copy_matrix(np.c_[a, c], near_copy_r=0.7)[0, 1]
    assert NEAR_COPY_R == 0.9


def test_near_copy_matrix_names_bad_input() -> None:
    with pytest.raises(DataError, match="images"):
        near_copy_matrix(np.ones((2, 3)))
