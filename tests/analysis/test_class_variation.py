"""Where a network's within-class variation lies: the class a pooled within-class match reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.class_variation import class_variation_shares, dominant_class
from biomark.exceptions import DataError


def _scaled(rng: np.random.Generator, labels: np.ndarray, scale: dict[str, float]) -> np.ndarray:
    """Two units varying within each class with the given standard deviation."""
    sd = np.array([scale[c] for c in labels])
    return rng.standard_normal((len(labels), 2)) * sd[:, None] + 100.0 * (labels == "a")[:, None]


def test_shares_are_each_class_sum_of_squares_over_the_total() -> None:
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 0.0], [6.0, 6.0], [9.0, 3.0]])
    labels = ["a", "a", "b", "b", None]  # the unlabelled row is left out
    shares = class_variation_shares(x, labels)
    # unit 0: 2 within a (deviations 1, 1), 2 within b; unit 1: 0 within a, 18 within b
    np.testing.assert_allclose(shares.to_numpy(), [[0.5, 0.5], [0.0, 1.0]])
    assert list(shares.columns) == ["a", "b"]


def test_a_unit_constant_within_every_class_has_no_shares() -> None:
    x = np.array([[1.0, 0.0], [1.0, 1.0], [5.0, 2.0], [5.0, 4.0]])
    shares = class_variation_shares(x, ["a", "a", "b", "b"])
    assert shares.iloc[0].isna().all()
    assert shares.iloc[1].sum() == pytest.approx(1.0)


def test_the_dominant_class_is_the_one_the_units_vary_in_most() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 60)
    x = _scaled(rng, labels, {"a": 1.0, "b": 8.0, "c": 1.0})  # the class means differ too
    dom = dominant_class(x, labels)
    assert dom is not None
    assert dom.cls == "b"
    assert dom.median_share > 0.9
    assert dom.share_of_units == 1.0
    assert dom.dominates
    assert "lies in b images" in dom.describe()


def test_no_dominant_class_when_nothing_varies_within_classes() -> None:
    x = np.repeat(np.array([[1.0], [2.0]]), 5, axis=0)
    assert dominant_class(x, ["a"] * 5 + ["b"] * 5) is None
    assert dominant_class(np.arange(20.0).reshape(10, 2), [None] * 10) is None  # no class known


def test_labels_must_match_the_rows() -> None:
    with pytest.raises(DataError, match="3 labels for 4 rows"):
        class_variation_shares(np.zeros((4, 2)), ["a", "b", "a"])


def test_nan_labels_are_left_out() -> None:
    x = np.array([[0.0], [2.0], [50.0], [-50.0]])
    shares = class_variation_shares(x, pd.Series(["a", "a", np.nan, np.nan], dtype=object))
    assert list(shares.columns) == ["a"]
    assert shares.iloc[0, 0] == pytest.approx(1.0)
