"""The one input checker of biomark.analysis: every failure is a DataError naming the input."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.inputs import check_labels, check_matrix
from biomark.exceptions import DataError


def test_check_matrix_converts_and_keeps_a_float32_when_asked() -> None:
    out = check_matrix([[1, 2], [3, 4]])
    assert out.dtype == np.float64 and out.shape == (2, 2)
    f32 = np.ones((3, 2), dtype=np.float32)
    assert check_matrix(f32, dtype=None) is f32  # no copy when it already fits


@pytest.mark.parametrize(
    ("X", "kwargs", "match"),
    [
        (np.ones(4), {}, r"features must be a non-empty 2-D array .*got shape \(4,\)"),
        (np.ones((0, 3)), {}, "features must be a non-empty 2-D"),
        (np.array([["a", "b"]]), {}, "features must hold real numbers, got dtype <U1"),
        (np.ones((2, 2), dtype=complex), {}, "features must hold real numbers"),
        (
            np.ones((1, 3)),
            {"min_rows": 2, "rows": "folds (rows)"},
            "features needs at least 2 folds",
        ),
        (
            np.ones((2, 3)),
            {"n_columns": 4},
            r"features must have shape \(n >= 1, 4\), got \(2, 3\)",
        ),
        (
            np.array([[1.0, np.nan, np.inf], [0.0, 1.0, 2.0]]),
            {"fix": "drop them"},
            r"features holds 2 NaN/Inf value\(s\): NaN or infinite values in 2 column\(s\) "
            r"\(first: \[1, 2\]\); drop them",
        ),
    ],
)
def test_check_matrix_names_the_input(X: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        check_matrix(X, "features", **kwargs)


def test_check_matrix_converts_an_object_array_through_sklearn() -> None:
    table = np.array(
        [[1, 2.5], [3, 4]], dtype=object
    )  # as DataFrame.to_numpy() gives for mixed columns
    assert check_matrix(table).tolist() == [[1.0, 2.5], [3.0, 4.0]]
    with pytest.raises(DataError, match="^features: .*could not convert"):
        check_matrix(np.array([[1.0, "x"]], dtype=object), "features")


def test_check_labels() -> None:
    assert check_labels([1, "a"], 2, "labels").tolist() == ["1", "a"]
    with pytest.raises(DataError, match=r"sources must have one entry per row of X \(3\), got 2"):
        check_labels(["a", "b"], 3, "sources")
    with pytest.raises(DataError, match=r"labels has 1 empty entries \(first rows: \[1\]\)"):
        check_labels(["a", ""], 2, "labels")


def test_check_matrix_lets_a_matrix_without_columns_through_only_when_asked() -> None:
    assert check_matrix(np.ones((3, 0)), "units", min_columns=0).shape == (3, 0)
    with pytest.raises(DataError, match=r"units must be a non-empty 2-D array .*\(3, 0\)"):
        check_matrix(np.ones((3, 0)), "units")
    with pytest.raises(DataError, match=r"units needs at least 2 columns \(features\), got 1"):
        check_matrix(np.ones((3, 1)), "units", min_columns=2)
