"""REML fit of a linear model with one random intercept per group, vectorised over the groups.

``y = X beta + u_g + e`` with ``u_g ~ N(0, lam * sigma^2)`` and ``e ~ N(0, sigma^2)``:
the model of :func:`biomark.analysis.patient_level.mixed_model_tests` (``feature ~ 1 +
is_positive + (1 | patient)``), the same fit as statsmodels' ``MixedLM(...).fit(reml=True)``.

Written by hand because statsmodels evaluates the likelihood with a Python
loop over the groups: with ~1,000 patients one fit takes 0.4-1 s, and a report
makes a dozen of them. With a single random intercept each group's covariance
``sigma^2 (I + lam 1 1')`` has a closed-form inverse and determinant, so the
REML profile likelihood is a handful of per-group sums (``np.bincount``) for
each ``lam``, maximised in one dimension (``scipy.optimize.minimize_scalar``);
beta and sigma^2 are profiled out exactly. The tests check every returned
number against statsmodels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

__all__ = ["RandomInterceptFit", "fit_random_intercept"]

#: Upper end of the searched variance ratio lam = var(u) / var(e) (log10 search on [-8, 4]).
LOG10_LAM_RANGE: tuple[float, float] = (-8.0, 4.0)


@dataclass(frozen=True)
class RandomInterceptFit:
    """One REML fit.

    Attributes
    ----------
    fe_params : ndarray of shape (p,)
        Fixed effects.
    bse_fe : ndarray of shape (p,)
        Their standard errors, ``sqrt(diag(sigma^2 (X' H^-1 X)^-1))`` (as lme4's
        ``vcov``; statsmodels inverts the observed Hessian of all parameters,
        which differs by up to 0.2 % when groups differ in size).
    pvalues : ndarray of shape (p,)
        Two-sided normal (Wald z) p-values, as statsmodels reports for MixedLM.
    conf_int : ndarray of shape (p, 2)
        95 % normal intervals.
    group_var : float
        Random-intercept variance ``lam * sigma^2``.
    scale : float
        Residual variance ``sigma^2``.
    on_boundary : bool
        The REML optimum is at ``lam = 0`` (no between-group variance): a
        legitimate estimate, reported as such.
    identifiable : bool
        False when every group has one row: group and residual variance
        cannot be told apart, and the fit is ordinary least squares.
    converged : bool
        The one-dimensional search ended normally.
    """

    fe_params: np.ndarray
    bse_fe: np.ndarray
    pvalues: np.ndarray
    conf_int: np.ndarray
    group_var: float
    scale: float
    on_boundary: bool
    identifiable: bool
    converged: bool


def _sums(y: np.ndarray, X: np.ndarray, inverse: np.ndarray, n_groups: int):
    """Per-group sums of y and of each column of X, and the group sizes."""
    size = np.bincount(inverse, minlength=n_groups).astype(np.float64)
    sum_y = np.bincount(inverse, weights=y, minlength=n_groups)
    sum_x = np.stack(
        [np.bincount(inverse, weights=X[:, k], minlength=n_groups) for k in range(X.shape[1])],
        axis=1,
    )
    return size, sum_y, sum_x


def fit_random_intercept(y: np.ndarray, X: np.ndarray, groups: np.ndarray) -> RandomInterceptFit:
    """REML fit of ``y ~ X + (1 | groups)``.

    Parameters
    ----------
    y : ndarray of shape (n,)
    X : ndarray of shape (n, p)
        Fixed-effects design (full column rank; include the intercept).
    groups : ndarray of shape (n,)
        Group of each row.

    Returns
    -------
    RandomInterceptFit

    Raises
    ------
    numpy.linalg.LinAlgError
        If ``X' H^-1 X`` is singular (a rank-deficient design).
    ValueError
        If the shapes disagree or ``n <= p``.
    """
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    if y.shape != (n,) or np.shape(groups) != (n,) or n <= p:
        raise ValueError(f"y {y.shape}, X {X.shape}, groups {np.shape(groups)}: need n > p rows")
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    size, sum_y, sum_x = _sums(y, X, inverse, n_groups)
    xtx, xty, yty = X.T @ X, X.T @ y, float(y @ y)

    def pieces(lam: float) -> tuple[np.ndarray, np.ndarray, float, float]:
        # H_g^-1 = I - w_g 1 1' with w_g = lam / (1 + lam n_g); log|H_g| = log(1 + lam n_g)
        w = lam / (1.0 + lam * size)
        a = xtx - (sum_x * w[:, None]).T @ sum_x
        b = xty - (sum_x * (w * sum_y)[:, None]).sum(axis=0)
        c = yty - float(np.sum(w * sum_y**2))
        return a, b, c, float(np.sum(np.log1p(lam * size)))

    def negative_reml(log10_lam: float) -> float:
        a, b, c, logdet_h = pieces(10.0**log10_lam)
        beta = np.linalg.solve(a, b)
        rss = c - float(b @ beta)
        _, logdet_a = np.linalg.slogdet(a)
        return 0.5 * ((n - p) * np.log(rss / (n - p)) + logdet_h + logdet_a)

    low, high = LOG10_LAM_RANGE
    best = optimize.minimize_scalar(
        negative_reml, bounds=(low, high), method="bounded", options={"xatol": 1e-7}
    )
    log10_lam = float(best.x)
    on_boundary = bool(negative_reml(low) <= best.fun + 1e-9 or log10_lam <= low + 1e-3)
    lam = 0.0 if on_boundary else 10.0**log10_lam
    a, b, c, _ = pieces(lam)
    beta = np.linalg.solve(a, b)
    scale = (c - float(b @ beta)) / (n - p)
    bse = np.sqrt(np.diag(scale * np.linalg.inv(a)))
    z = beta / bse
    half = sps.norm.ppf(0.975) * bse
    return RandomInterceptFit(
        fe_params=beta,
        bse_fe=bse,
        pvalues=2.0 * sps.norm.sf(np.abs(z)),
        conf_int=np.column_stack([beta - half, beta + half]),
        group_var=float(lam * scale),
        scale=float(scale),
        on_boundary=on_boundary,
        identifiable=bool(size.max() > 1),
        converged=bool(best.success),
    )
