"""Per-feature shortcut evidence: does source explain a feature beyond class, and which candidates
to flag.

The model-level question (can the source be read from the features?) is
:func:`biomark.analysis.audit.source_predictability`; this module asks it of
each feature and turns the answers into flags of a candidate table:

* :func:`feature_source_association` -- per feature, the variance explained by
  source beyond class (nested OLS F-test, partial eta squared, BH q).
* :func:`shortcut_flags` -- boolean flags and a text column for a candidate
  table (outside the lungs, source-driven, model reads outside the lungs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.analysis.inputs import check_labels, check_matrix
from biomark.analysis.stats import bh_fdr
from biomark.exceptions import ConfigError, DataError

__all__ = ["feature_source_association", "shortcut_flags"]

logger = logging.getLogger(__name__)


def _dummies(values: np.ndarray) -> np.ndarray:
    levels, codes = np.unique(values, return_inverse=True)
    out = np.zeros((values.size, levels.size))
    out[np.arange(values.size), codes] = 1.0
    return out


def _per_patient(
    X: np.ndarray, labels: np.ndarray, sources: np.ndarray, patient_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``X`` averaged per (patient, class, source), with that cell's class and
    source."""
    means = pd.DataFrame(X).groupby([patient_ids, labels, sources], sort=True).mean()
    keys = means.index
    return (
        means.to_numpy(dtype=np.float64),
        np.asarray(keys.get_level_values(1), dtype=object).astype(str),
        np.asarray(keys.get_level_values(2), dtype=object).astype(str),
    )


def feature_source_association(
    X: np.ndarray,
    labels: Sequence[str],
    sources: Sequence[str],
    *,
    patient_ids: Sequence[Any] | None = None,
    feature_names: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per feature, how much variance source explains beyond class.

    Two OLS models per feature -- ``feature ~ class`` (reduced) and
    ``feature ~ class + source`` (full) -- compared by the nested F-test;
    ``partial_eta2 = (RSS_reduced - RSS_full) / RSS_reduced`` is the share of
    the variance left after class that source explains. statsmodels fits one
    response at a time; the design is the same for every feature, so the
    residual sums of squares of all 1280 features come from one least-squares
    solve here (the tests check it against statsmodels ``compare_f_test``).

    With ``patient_ids`` the test is run on per-patient means (one row per
    patient, class and source): a patient's source and class are the same on
    all of its films, so testing the films as independent rows counts a
    patient's chance difference in disease severity once per film
    (pseudo-replication) and flags a feature that grades the severity as
    carrying the source when the two sources' patients differ by chance.

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
    labels, sources : sequence of str, length n_images
    patient_ids : sequence, length n_images, optional
        Patient of each image (compared as strings); the rows are averaged per
        patient (and class and source, where a patient has several) first.
        None: every image is a row.
    feature_names : sequence of str, optional
        Default ``f0000, f0001, ...``.
    alpha : float, default 0.05
        FDR level of ``flag_source``.

    Returns
    -------
    pandas.DataFrame
        Indexed by feature name with columns ``feature_index, source_F,
        source_df_num, source_df_den, source_p, source_q`` (BH over features),
        ``partial_eta2, flag_source`` (``source_q < alpha``; nullable boolean, NA
        where untestable). A feature with no
        variance left after class gets F 0, p 1, eta 0. When source adds
        nothing to class in the design (every source nested in one class, or a
        single source) nothing can be tested: p, q, F are NaN and
        ``attrs["skipped"]`` says why.

    Raises
    ------
    DataError
        If the inputs do not match in length, ``X`` is not finite, or a
        label/source is empty, or there are no residual degrees of freedom.
    ConfigError
        If ``alpha`` is not in (0, 1).
    """
    X = check_matrix(X, fix="drop or repair those images/features before the audit")
    labels_arr, src = (
        check_labels(labels, X.shape[0], "labels"),
        check_labels(sources, X.shape[0], "sources"),
    )
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    n_images = X.shape[0]
    unit = "image"
    if patient_ids is not None:
        pid = check_labels(patient_ids, n_images, "patient_ids")
        X, labels_arr, src = _per_patient(X, labels_arr, src, pid)
        unit = "patient (per-patient means)"
    n, p_feat = X.shape
    if feature_names is None:
        names = [f"f{j:04d}" for j in range(p_feat)]
    else:
        names = [str(v) for v in feature_names]
        if len(names) != p_feat:
            raise DataError(
                f"feature_names has {len(names)} entries but X has {p_feat} feature columns"
            )
    reduced = _dummies(labels_arr)
    full = np.hstack([reduced, _dummies(src)])
    rank_r = int(np.linalg.matrix_rank(reduced))
    rank_f = int(np.linalg.matrix_rank(full))
    df_num, df_den = rank_f - rank_r, n - rank_f
    if df_den < 1:
        rows = "patients" if patient_ids is not None else "images"
        raise DataError(
            f"{n} {rows} leave no residual degrees of freedom for class + source ({rank_f} "
            "parameters)"
        )

    def rss(design: np.ndarray) -> np.ndarray:
        beta = np.linalg.lstsq(design, X, rcond=None)[0]
        return np.sum((X - design @ beta) ** 2, axis=0)

    rss_r = rss(reduced)
    skipped: list[dict[str, Any]] = []
    frame = pd.DataFrame(index=pd.Index(names, name="feature"))
    frame["feature_index"] = np.arange(p_feat)
    if df_num == 0:
        reason = (
            "source adds nothing to class in this design (each source lies within one class, or "
            "there is one source): variance due to source cannot be separated from class"
        )
        skipped.append({"test": "source_F", "class": None, "n": n, "reason": reason})
        logger.warning("feature_source_association: %s", reason)
        f_stat = p_val = eta = np.full(p_feat, np.nan)
    else:
        rss_f = rss(full)
        # Relative tolerance: rounding leaves ~1e-30 of "variance" in a
        # constant feature, which must not become a test.
        total = np.sum((X - X.mean(axis=0)) ** 2, axis=0)
        tol = 1e-12 * total
        gain = np.clip(rss_r - rss_f, 0.0, None)
        live = (total > 0.0) & (rss_r > tol)
        exact = live & (rss_f <= tol)
        f_stat = np.zeros(p_feat)
        p_val = np.ones(p_feat)
        eta = np.zeros(p_feat)
        fit = live & ~exact
        f_stat[fit] = (gain[fit] / df_num) / (rss_f[fit] / df_den)
        p_val[fit] = sps.f.sf(f_stat[fit], df_num, df_den)
        eta[live] = gain[live] / rss_r[live]
        f_stat[exact], p_val[exact] = np.inf, 0.0
    frame["source_F"] = f_stat
    frame["source_df_num"] = df_num
    frame["source_df_den"] = df_den
    frame["source_p"] = p_val
    frame["source_q"] = bh_fdr(np.asarray(p_val, dtype=np.float64), alpha)[1]
    frame["partial_eta2"] = eta
    q = frame["source_q"].to_numpy()
    flag = pd.array(q < alpha, dtype="boolean")
    flag[np.isnan(q)] = pd.NA  # untestable is unknown, not clean
    frame["flag_source"] = flag
    frame.attrs["skipped"] = skipped
    frame.attrs["settings"] = {
        "alpha": float(alpha),
        "model": "feature ~ class + source vs feature ~ class",
        "unit": unit,
        "n_images": n_images,
        "n_rows": n,
    }
    return frame


def shortcut_flags(
    candidates: pd.DataFrame,
    *,
    lung_fraction_col: str = "lung_fraction",
    source_q_col: str = "source_q",
    min_lung_fraction: float = 0.5,
    alpha: float = 0.05,
    blackout_survival: float | None = None,
    max_blackout_survival: float = 0.5,
    threshold_note: str = "",
) -> pd.DataFrame:
    """Flag candidate features that look like shortcuts rather than biomarkers.

    Parameters
    ----------
    candidates : pandas.DataFrame
        One row per candidate feature with the columns named below.
    lung_fraction_col : str, default "lung_fraction"
        Fraction of the feature's attribution that falls inside the lungs.
    source_q_col : str, default "source_q"
        BH q of "source beyond class" (:func:`feature_source_association`).
    min_lung_fraction : float, default 0.5
        ``flag_outside_lungs`` when the lung fraction is below this.
    alpha : float, default 0.05
        ``flag_source`` when the source q-value is below this.
    blackout_survival : float, optional
        Model-level share of accuracy (above chance) kept when the lungs are
        blacked out. When given, ``flag_model_reads_outside_lungs`` is added
        (the same for every row): True when it is ``>= max_blackout_survival``.
    max_blackout_survival : float, default 0.5
    threshold_note : str, optional
        Where ``min_lung_fraction`` comes from, named in the flag's text (e.g.
        "95 % of random units" when it is the lower quantile of a random
        network's units, :class:`biomark.analysis.lung_null.LungNull`).

    Returns
    -------
    pandas.DataFrame
        A copy of ``candidates`` with nullable boolean columns
        ``flag_outside_lungs``, ``flag_source`` (NA where the input value is
        NaN: unknown, not clean), optionally ``flag_model_reads_outside_lungs``,
        and a text column ``flags`` ("" when nothing is flagged; unknown values
        are named).

    Raises
    ------
    DataError
        If a named column is missing.
    ConfigError
        If a threshold is out of range.
    """
    missing = [c for c in (lung_fraction_col, source_q_col) if c not in candidates.columns]
    if missing:
        raise DataError(
            f"candidates lacks column(s) {missing}; merge the lung fractions and "
            "feature_source_association's source_q first, or name the columns with "
            "lung_fraction_col/source_q_col"
        )
    if not 0.0 <= min_lung_fraction <= 1.0:
        raise ConfigError(f"min_lung_fraction must lie in [0, 1], got {min_lung_fraction!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    out = candidates.copy()
    lung = pd.to_numeric(out[lung_fraction_col], errors="coerce").astype("Float64")
    q = pd.to_numeric(out[source_q_col], errors="coerce").astype("Float64")
    out["flag_outside_lungs"] = (lung < min_lung_fraction).astype("boolean")
    out["flag_source"] = (q < alpha).astype("boolean")
    texts: list[list[str]] = [[] for _ in range(len(out))]
    for i, (lf, qv) in enumerate(zip(lung, q, strict=True)):
        if pd.isna(lf):
            texts[i].append("lung fraction unknown")
        elif lf < min_lung_fraction:
            below = (
                f"{min_lung_fraction:.3f}, further outside than {threshold_note}"
                if threshold_note
                else f"{min_lung_fraction:g}"
            )
            shown = f"{lf:.3f}" if threshold_note else f"{lf:.2f}"
            texts[i].append(f"outside lungs (lung fraction {shown} < {below})")
        if pd.isna(qv):
            texts[i].append("source association unknown")
        elif qv < alpha:
            texts[i].append(f"source beyond class (q = {qv:.2g} < {alpha:g})")
    if blackout_survival is not None:
        if not np.isfinite(blackout_survival):
            raise ConfigError(
                f"blackout_survival must be a finite number, got {blackout_survival!r}"
            )
        reads = bool(blackout_survival >= max_blackout_survival)
        out["flag_model_reads_outside_lungs"] = pd.array([reads] * len(out), dtype="boolean")
        if reads:
            for t in texts:
                t.append(
                    f"model reads outside lungs (blackout survival {blackout_survival:.2f} "
                    f">= {max_blackout_survival:g})"
                )
    out["flags"] = ["; ".join(t) for t in texts]
    return out
