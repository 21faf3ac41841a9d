"""Within-class R^2 of deep features from radiomics (:mod:`biomark.analysis.texture_explained`)."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.texture_explained import ALPHAS, within_class_r2


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 160
    labels = np.array(["A"] * 100 + ["B"] * 60)
    R = rng.normal(size=(n, 12))
    X = np.c_[
        2.0 * R[:, 0] + 0.5 * rng.normal(size=n),  # texture: var 4 of 4.25 explained
        rng.normal(size=n),  # unrelated
        np.where(labels == "A", 1.0, rng.normal(size=n)),  # constant within A
    ]
    return X, R, labels


def test_texture_driven_feature_is_explained_and_noise_is_not() -> None:
    X, R, labels = _data()
    r2 = within_class_r2(X, R, labels, positive="A", feature_names=["tex", "noise", "flat"])
    assert r2.name == "radiomic_r2" and r2.attrs["n"] == 100
    assert r2["tex"] == pytest.approx(4 / 4.25, abs=0.05)
    assert -0.2 < r2["noise"] < 0.1
    assert np.isnan(r2["flat"])  # constant within the class: nothing to explain


def test_equals_a_brute_force_leave_one_out_ridge() -> None:
    from sklearn.linear_model import Ridge

    X, R, labels = _data(1)
    own = labels == "B"
    Rc = (R[own] - R[own].mean(axis=0)) / R[own].std(axis=0)
    y = X[own, 0]
    best = np.inf
    for alpha in ALPHAS:
        errors = [
            y[i]
            - Ridge(alpha=alpha).fit(np.delete(Rc, i, 0), np.delete(y, i)).predict(Rc[i : i + 1])[0]
            for i in range(own.sum())
        ]
        best = min(best, float(np.mean(np.square(errors))))
    r2 = within_class_r2(X[:, :1], R, labels, positive="B", feature_names=["tex"])
    assert r2["tex"] == pytest.approx(1 - best / y.var(), abs=1e-9)


def test_images_without_radiomics_are_left_out_and_too_few_give_nan() -> None:
    X, R, labels = _data()
    R = R.copy()
    R[:90] = np.nan  # only 10 images of A keep radiomics
    r2 = within_class_r2(X, R, labels, positive="A", feature_names=["tex", "noise", "flat"])
    assert r2.attrs["n"] == 10 and r2.isna().all()
