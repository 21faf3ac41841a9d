"""The vectorised random-intercept REML fit gives statsmodels' MixedLM estimates."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from statsmodels.regression.linear_model import OLS
from statsmodels.regression.mixed_linear_model import MixedLM

from biomark.analysis.random_intercept import fit_random_intercept


def _data(seed: int, sd_patient: float, effect: float, per_patient: int | None):
    """A patient-level binary exposure, a patient intercept and image noise (as the report's
    model)."""
    rng = np.random.default_rng(seed)
    if per_patient is None:  # unbalanced: 1-4 images per patient
        groups = np.repeat(np.arange(300), rng.integers(1, 5, size=300))
    else:
        groups = np.repeat(np.arange(900 // per_patient), per_patient)
    n_groups = groups.max() + 1
    x = (rng.random(n_groups) < 0.2).astype(float)[groups]
    y = effect * x + sd_patient * rng.normal(size=n_groups)[groups] + rng.normal(size=groups.size)
    return (y - y.mean()) / y.std(), np.column_stack([np.ones(groups.size), x]), groups


@pytest.mark.parametrize(
    ("seed", "sd_patient", "effect", "per_patient"),
    [(0, 0.7, 0.8, 2), (1, 0.3, 1.2, 4), (2, 0.7, 0.5, None), (3, 1.5, 0.0, 3)],
)
def test_the_fit_matches_statsmodels(seed, sd_patient, effect, per_patient) -> None:
    y, X, groups = _data(seed, sd_patient, effect, per_patient)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MixedLM(y, X, groups=groups).fit(reml=True)
    fit = fit_random_intercept(y, X, groups)
    assert fit.converged and fit.identifiable and not fit.on_boundary
    np.testing.assert_allclose(fit.fe_params, ref.fe_params, rtol=1e-5, atol=1e-8)
    # Standard errors: sigma^2 (X' V^-1 X)^-1 (as lme4's vcov); statsmodels inverts the observed
    # Hessian of all parameters, whose fixed-effect block differs from it by up to 0.2 % when
    # patients have different numbers of images (identical for balanced designs).
    rtol = 1e-4 if per_patient else 5e-3
    np.testing.assert_allclose(fit.bse_fe, ref.bse_fe, rtol=rtol)
    np.testing.assert_allclose(fit.pvalues[1], ref.pvalues[1], rtol=100 * rtol, atol=1e-12)
    np.testing.assert_allclose(fit.conf_int, np.asarray(ref.conf_int())[:2], rtol=rtol, atol=1e-6)
    assert fit.group_var == pytest.approx(float(np.asarray(ref.cov_re)[0, 0]), rel=1e-4)
    assert fit.scale == pytest.approx(ref.scale, rel=1e-4)


def test_no_patient_variance_is_the_boundary() -> None:
    y, X, groups = _data(4, 0.0, 0.3, 3)
    fit = fit_random_intercept(y, X, groups)
    assert fit.on_boundary and fit.group_var == 0.0 and fit.identifiable


def test_one_image_per_patient_is_ordinary_least_squares() -> None:
    y, X, groups = _data(5, 1.0, 0.5, 1)
    fit = fit_random_intercept(y, X, groups)
    ols = OLS(y, X).fit()
    assert not fit.identifiable and fit.on_boundary
    np.testing.assert_allclose(fit.fe_params, ols.params, rtol=1e-10)
    np.testing.assert_allclose(fit.bse_fe, ols.bse, rtol=1e-10)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="need n > p rows"):
        fit_random_intercept(np.zeros(3), np.ones((4, 2)), np.arange(4))
