"""The lung-fraction null of random units: its band, its thresholds and its checks."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.lung_null import LungNull, unit_lung_fractions


def test_unit_fractions_pool_over_images_and_leave_silent_units_unknown() -> None:
    inside = np.array([[1.0, 0.0, np.nan], [3.0, 0.0, 1.0]])
    total = np.array([[2.0, 0.0, np.nan], [6.0, 0.0, 4.0]])
    np.testing.assert_allclose(unit_lung_fractions(inside, total), [0.5, np.nan, 0.25])


def test_thresholds_never_loosen_the_fixed_one() -> None:
    """The null widens the gap between "in" and "outside" around a random unit; it never lets a
    feature under min_lung_fraction count as in the lungs, nor flags one above it."""
    low = LungNull(np.linspace(0.10, 0.30, 201), n_images=10, source="maps")
    assert low.inside_threshold(0.5) == 0.5 and low.outside_threshold(0.5) == pytest.approx(0.11)
    high = LungNull(np.linspace(0.45, 0.55, 201), n_images=10, source="occlusion")
    assert high.inside_threshold(0.5) == pytest.approx(0.545)
    assert high.outside_threshold(0.5) == pytest.approx(0.455)
    assert high.band() == "median 0.50, 5th-95th percentile 0.46-0.55"


def test_nan_units_are_dropped_and_an_empty_null_is_refused() -> None:
    null = LungNull(np.array([0.4, np.nan, 0.6]), n_images=3, source="x")
    assert null.fractions.tolist() == [0.4, 0.6]
    with pytest.raises(ValueError, match="no unit has a finite lung fraction"):
        LungNull(np.array([np.nan]), n_images=3, source="silent network")
    with pytest.raises(ValueError, match="quantile"):
        LungNull(np.array([0.5]), n_images=3, source="x", quantile=0.5)
