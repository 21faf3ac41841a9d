"""Input checks of the report: each finding names the strategy, fold and feature, and goes to the
log."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from biomark.analysis.checks import (
    WARNING_KEYS,
    constant_in_class,
    model_disagreement,
    nonfinite_features,
    nonfinite_rows,
)

NAMES = [f"f{j:04d}" for j in range(6)]


def test_nonfinite_features_are_named(caplog: pytest.LogCaptureFixture) -> None:
    X = np.ones((5, 6))
    X[1, 2] = np.nan
    X[3, 4] = np.inf
    with caplog.at_level(logging.WARNING, logger="biomark.analysis.checks"):
        bad, warns = nonfinite_features(
            X, strategy="scratch", fold=2, feature_names=NAMES, where="x/features.parquet"
        )
    np.testing.assert_array_equal(bad, [False, False, True, False, True, False])
    (w,) = warns
    assert tuple(w) == WARNING_KEYS and w["strategy"] == "scratch" and w["fold"] == "2"
    assert (
        w["feature"] == "f0002, f0004"
        and "x/features.parquet" in w["message"]
        and "2 NaN" in w["message"]
    )
    assert "scratch fold 2" in caplog.text
    assert nonfinite_features(np.ones((3, 6)), strategy="s", fold=0, feature_names=NAMES)[1] == []


def test_nonfinite_probabilities_drop_images() -> None:
    P = np.full((4, 3), 1 / 3)
    P[2, 0] = np.nan
    bad, (w,) = nonfinite_rows(P, ["a", "b", "c", "d"], strategy="frozen", fold=0)
    np.testing.assert_array_equal(bad, [False, False, True, False])
    assert "(c)" in w["message"] and w["check"] == "non-finite probabilities"


def test_constant_nonzero_value_in_a_class_is_warned_silent_units_counted() -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["A"] * 5 + ["B"] * 5)
    X = rng.random((10, 6))
    X[labels == "A", 1] = 0.25  # tampered: one non-zero value for the whole class
    X[labels == "A", 3] = 0.0  # a ReLU unit silent for the class: common, counted only
    X[:, 5] = 0.7  # dead everywhere: not a class matter
    silent, warns = constant_in_class(X, labels, strategy="scratch", fold=1, feature_names=NAMES)
    assert silent == {"A": 1, "B": 0}
    (w,) = warns
    assert (
        w["feature"] == "f0001" and w["check"] == "constant in A" and "5 A images" in w["message"]
    )
    assert (
        constant_in_class(X[:2], labels[:2], strategy="s", fold=0, feature_names=NAMES)[1] == []
    )  # too few


def test_model_disagreement_names_the_worst_columns() -> None:
    rng = np.random.default_rng(1)
    dumped = rng.random((8, 6)) * 4
    recomputed = dumped + 1e-6
    err, warns = model_disagreement(
        recomputed, dumped, strategy="scratch", fold=0, feature_names=NAMES
    )
    assert err == pytest.approx(1e-6) and warns == []
    recomputed[:, 3] += 0.5
    recomputed[2, 1] += 2.0
    err, (w,) = model_disagreement(
        recomputed, dumped, strategy="scratch", fold=0, feature_names=NAMES
    )
    assert err == pytest.approx(2.0, abs=1e-5)
    assert (
        w["feature"] == "f0001, f0003"
        and "2 column(s)" in w["message"]
        and "re-run" in w["message"]
    )
