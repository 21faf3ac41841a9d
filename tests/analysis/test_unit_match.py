"""Matching two networks' units: planted permutations, silent units, a shuffled null, bad inputs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from biomark.analysis.unit_match import match_units, unit_correlation
from biomark.exceptions import DataError


def test_unit_correlation_matches_numpy_and_marks_silent_units() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 5)), rng.standard_normal((30, 4))
    b = np.hstack([b, np.full((30, 1), 2.0)])  # a silent unit
    r = unit_correlation(a, b)
    full = np.corrcoef(a.T, b[:, :4].T)[:5, 5:]
    np.testing.assert_allclose(r[:, :4], full, atol=1e-12)
    assert np.isnan(r[:, 4]).all()


def test_planted_permutation_is_recovered_exactly(
    relu_units: Callable[[np.random.Generator, int, int], np.ndarray],
) -> None:
    rng = np.random.default_rng(1)
    ref = relu_units(rng, 120, 64)
    perm = rng.permutation(64)
    other = np.empty_like(ref)
    other[:, perm] = ref  # reference unit j is unit perm[j] of the other fold
    m = match_units(ref, other)
    np.testing.assert_array_equal(m.perm, perm)
    np.testing.assert_allclose(m.r, 1.0)
    assert np.nanmedian(m.null_r) < 0.5  # shuffled images: unrelated units do not match


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
