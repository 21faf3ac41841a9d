"""Fixtures shared by the tests of biomark.analysis."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


@pytest.fixture
def mixed_sources() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COVID-19 from cohen (60) and actualmed (60), features 0-2 shifted in
    cohen; Normal from kermany (60) and nih (60), features independent of
    source; Edema only from nih (40); Pneumonia from kermany (50) plus 3 stray
    sirm images."""
    rng = np.random.default_rng(0)
    labels = np.repeat(
        ["COVID-19", "COVID-19", "Normal", "Normal", "Edema", "Pneumonia", "Pneumonia"],
        [60, 60, 60, 60, 40, 50, 3],
    )
    sources = np.repeat(
        ["cohen", "actualmed", "kermany", "nih", "nih", "kermany", "sirm"],
        [60, 60, 60, 60, 40, 50, 3],
    )
    X = rng.normal(size=(len(labels), 15))
    X[sources == "cohen", :3] += 1.5
    return X, labels, sources


def _relu_units(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """GAP-like activations: non-negative, correlated through a few latent factors."""
    latent = rng.standard_normal((n, 8))
    mix = rng.standard_normal((8, d))
    return np.maximum(latent @ mix + 0.5 * rng.standard_normal((n, d)), 0.0)


@pytest.fixture
def relu_units() -> Callable[[np.random.Generator, int, int], np.ndarray]:
    """``relu_units(rng, n_images, n_units)``: GAP-like activations of one network (non-negative,
    correlated through 8 latent factors)."""
    return _relu_units
