"""Ground truth on the phantom: which radiomic feature tracks each planted signature?

The phantom (:mod:`biomark.data.phantom`) plants one signature per class with
a known per-image ``severity`` in ``[0, 1]`` (Normal = 0). If radiomics is a
sensible reference for interpreting deep features, some radiomic feature
should track each signature's severity. :func:`phantom_truth` finds, for each
class, the feature with the largest |Spearman rho| with severity

* ``within`` the class's own images (severity varies from 0.15 to 1), and
* ``vs_normal``: across the class's images plus the Normal images (severity 0),

and reports the best whole-lung feature and the best of each family group
(texture = GLCM/GLRLM/GLSZM/GLDM/NGTDM, first order, shape). With ~100
features the largest |rho| of pure noise is about ``3.3 / sqrt(n)``
(Bonferroni-ish), given as ``chance_rho`` for comparison.

Lung zones. When the table also holds zone features (``biomark radiomics
--region zones``: columns ``<zone>_<feature>`` for the zones of
:data:`biomark.data.lungs.ZONES`), the ``*_overall`` columns give the best
feature over the whole-lung *and* zone features (overall and per family
group), with ``region_overall`` naming its region. Searching 6x as many
features raises the chance level, so ``null_rho99`` is measured rather than
guessed: the 99th percentile, over ``n_null`` random permutations of the
class's severities (seeded), of the largest within-class |rho| over every
feature searched: a best |rho| above it is significant at a family-wise 1 %
level. ``expected_found_overall`` says whether an expected family group beats
it.

What the signatures should touch (:data:`EXPECTED`): effusion and pneumonia
add dense fluid/consolidation (first-order intensity and texture contrast
inside the lung mask), emphysema darkens and enlarges the lungs (first-order,
shape), fibrosis adds a fine reticular texture (texture families), COVID-19
and edema add a faint haze (first order). Measured results (phantom, 200 px,
Original image, the shipped parameter file) are in
``tests/analysis/test_phantom_truth.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from biomark.analysis.associate import TEXTURE_FAMILIES, radiomic_family
from biomark.analysis.radiomic_zones import split_zone

__all__ = [
    "EXPECTED",
    "FAMILY_GROUPS",
    "TRUTH_COLUMNS",
    "phantom_truth",
    "family_group",
    "feature_region",
    "spearman_columns",
    "spearman_where_known",
    "spearman_p",
]

logger = logging.getLogger(__name__)

#: Family groups reported separately.
FAMILY_GROUPS: tuple[str, ...] = ("texture", "firstorder", "shape")

#: The family group(s) each signature is expected to show up in.
EXPECTED: dict[str, tuple[str, ...]] = {
    "COVID-19": ("firstorder", "texture"),
    "Edema": ("firstorder", "texture"),
    "Effusion": ("firstorder", "texture"),
    "Emphysema": ("firstorder", "shape"),
    "Fibrosis": ("texture",),
    "Pneumonia": ("firstorder", "texture"),
}


def family_group(name: str) -> str:
    """``texture``, ``firstorder``, ``shape`` or ``other`` for a radiomic column."""
    family = radiomic_family(name)
    if family in TEXTURE_FAMILIES:
        return "texture"
    if family.startswith("shape"):
        return "shape"
    return family if family == "firstorder" else "other"


def feature_region(name: str) -> str:
    """The lung zone of a radiomic column (``lower_glcm_Contrast`` -> ``lower``), else ``lung``."""
    return split_zone(name)[0] or "lung"


def _null_max_rho(
    F: np.ndarray, severity: np.ndarray, n_null: int, rng: np.random.Generator
) -> np.ndarray:
    """Largest |Spearman rho| over the columns of F for ``n_null`` permuted severities."""
    ranks = stats.rankdata(F, axis=0)
    ranks -= ranks.mean(axis=0)
    norms = np.linalg.norm(ranks, axis=0)
    s = stats.rankdata(severity)
    s -= s.mean()
    perms = np.stack([rng.permutation(s) for _ in range(n_null)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks.T @ perms) / (norms[:, None] * np.linalg.norm(s))
    rho[norms == 0] = 0.0
    return np.nanmax(np.abs(rho), axis=0)


def spearman_columns(F: np.ndarray, severity: np.ndarray) -> np.ndarray:
    """Spearman rho of every column of ``F`` with ``severity``, NaN for constant columns.

    One rank transform and one matrix product instead of a ``spearmanr`` call
    per column.
    """
    ranks = stats.rankdata(F, axis=0)
    ranks -= ranks.mean(axis=0)
    s = stats.rankdata(severity)
    s -= s.mean()
    denom = np.linalg.norm(ranks, axis=0) * np.linalg.norm(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks.T @ s) / denom
    rho[denom == 0] = np.nan
    return rho


def spearman_where_known(
    F: np.ndarray, planted: np.ndarray, min_known: int = 3
) -> np.ndarray | None:
    """:func:`spearman_columns` over the images where a planted score is known.

    The burden is NaN where a class has none (Emphysema); None when fewer than
    ``min_known`` images have the score or it does not vary, so that nothing
    is read against it.
    """
    known = np.isfinite(planted)
    if known.sum() < min_known or np.ptp(planted[known]) == 0:
        return None
    return spearman_columns(F[known], planted[known])


def spearman_p(rho: np.ndarray | float, n: int) -> np.ndarray:
    """Two-sided p-values of Spearman coefficients over ``n`` pairs (t approximation, as
    ``spearmanr``)."""
    r = np.abs(np.asarray(rho, dtype=np.float64))
    t = r * np.sqrt((n - 2) / np.maximum(1e-12, 1 - r * r))
    return 2 * stats.t.sf(t, n - 2)


def _best(rho: np.ndarray, names: list[str], pick: np.ndarray | None = None) -> tuple[str, float]:
    values = np.where(np.isnan(rho), -1.0, np.abs(rho))
    if pick is not None:
        values = np.where(pick, values, -1.0)
    j = int(np.argmax(values))
    if values[j] < 0:
        return "", float("nan")
    return names[j], float(rho[j])


#: The columns of :func:`phantom_truth`, in order.
TRUTH_COLUMNS: tuple[str, ...] = (
    "class",
    "n",
    "best_feature",
    "best_family",
    "rho_within",
    "p_within",
    "best_vs_normal",
    "rho_vs_normal",
    "n_vs_normal",
    "best_texture",
    "rho_texture",
    "best_firstorder",
    "rho_firstorder",
    "best_shape",
    "rho_shape",
    "chance_rho",
    "expected",
    "expected_found",
    "best_overall",
    "region_overall",
    "rho_overall",
    *[f"{kind}_overall_{g}" for g in FAMILY_GROUPS for kind in ("best", "rho")],
    "null_rho99",
    "expected_found_overall",
    "note",
    "best_burden_overall",
    "rho_burden_overall",
)


def phantom_truth(
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    normal: str = "Normal",
    min_images: int = 8,
    n_null: int = 200,
    random_state: int = 0,
) -> pd.DataFrame:
    """For each phantom class, the radiomic features that best track severity.

    Parameters
    ----------
    features : DataFrame of shape (n_images, 1 + n_features)
        ``image_id`` and radiomic feature columns (``features.parquet``).
    manifest : DataFrame
        The dataset manifest with ``image_id``, ``label`` and ``severity``.
    normal : str, default "Normal"
        The class without a signature.
    min_images : int, default 8
        Classes with fewer extracted images are reported with a note, not scored.
    n_null : int, default 200
        Severity permutations for ``null_rho99``.
    random_state : int, default 0
        Seed of the permutations' own generator.

    Returns
    -------
    DataFrame
        One row per diseased class: ``class, n, best_feature, best_family,
        rho_within, p_within, best_vs_normal, rho_vs_normal, n_vs_normal,
        best_texture, rho_texture, best_firstorder, rho_firstorder, best_shape,
        rho_shape, chance_rho, expected, expected_found`` (whole-lung features
        only), then ``best_overall, region_overall, rho_overall,
        best_overall_<group>, rho_overall_<group>`` (whole-lung and zone
        features), ``null_rho99, expected_found_overall, note``. Without zone
        columns the ``*_overall`` columns repeat the whole-lung ones. Last,
        ``best_burden_overall, rho_burden_overall``: the feature (whole-lung or
        zone) that best tracks the film's planted ``burden`` within the class,
        where the manifest has that column and the class a burden (empty
        otherwise; Emphysema has none).

    Raises
    ------
    ValueError
        If the manifest has no ``severity`` column (not a phantom).
    """
    if "severity" not in manifest.columns:
        raise ValueError(
            "the manifest has no 'severity' column: ground truth exists for the phantom only"
        )
    planted = ["severity", "burden"] if "burden" in manifest.columns else ["severity"]
    merged = (
        manifest[["image_id", "label", *planted]]
        .astype({"image_id": str})
        .merge(features.astype({"image_id": str}), on="image_id", how="inner")
    )
    names = [c for c in features.columns if c != "image_id"]
    groups = np.asarray([family_group(n) for n in names])
    regions = np.asarray([feature_region(n) for n in names])
    whole = regions == "lung"
    rng = np.random.default_rng(random_state)
    F_all = merged[names].to_numpy(dtype=np.float64)
    finite = np.isfinite(F_all).all(axis=0)
    severity_all = pd.to_numeric(merged["severity"], errors="coerce").to_numpy(dtype=np.float64)
    burden_all = (
        pd.to_numeric(merged["burden"], errors="coerce").to_numpy(dtype=np.float64)
        if "burden" in merged.columns
        else None
    )
    F = np.where(finite, F_all, 0.0)
    rows = []
    for label in sorted(set(merged["label"]) - {normal}):
        own = (merged["label"] == label).to_numpy()
        both = own | (merged["label"] == normal).to_numpy()
        n = int(own.sum())
        row: dict[str, Any] = {
            "class": label,
            "n": n,
            "expected": ", ".join(EXPECTED.get(label, ())),
        }
        if n < min_images or np.ptp(severity_all[own]) == 0:
            row["note"] = f"only {n} image(s) or no severity variation: not scored"
        else:
            row.update(
                _class_truth(
                    label,
                    F[own],
                    severity_all[own],
                    F[both],
                    severity_all[both],
                    finite,
                    names=names,
                    groups=groups,
                    whole=whole,
                    n_null=n_null,
                    rng=rng,
                )
            )
            if burden_all is not None:
                row.update(_burden_truth(F[own], burden_all[own], finite, names))
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(TRUTH_COLUMNS))


def _burden_truth(
    F_own: np.ndarray, burden_own: np.ndarray, finite: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """The feature that best tracks a class's planted burden (empty where it has none)."""
    rho = spearman_where_known(F_own, burden_own)
    if rho is None:
        return {}
    best, r = _best(np.where(finite, rho, np.nan), names)
    return {"best_burden_overall": best, "rho_burden_overall": r} if best else {}


def _class_truth(
    label: str,
    F_own: np.ndarray,
    severity_own: np.ndarray,
    F_both: np.ndarray,
    severity_both: np.ndarray,
    finite: np.ndarray,
    *,
    names: list[str],
    groups: np.ndarray,
    whole: np.ndarray,
    n_null: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The ground-truth columns of one scored class (see :func:`phantom_truth`).

    ``F_own`` holds the class's images, ``F_both`` the class's and Normal's
    (non-finite columns zeroed, ``finite`` marks the others); ``rng`` draws
    the severity permutations of the null.
    """
    n = len(severity_own)
    rho_in = np.where(finite, spearman_columns(F_own, severity_own), np.nan)
    rho_vs = np.where(finite, spearman_columns(F_both, severity_both), np.nan)
    best, r = _best(rho_in, names, whole)
    row: dict[str, Any] = {
        "best_feature": best,
        "best_family": radiomic_family(best),
        "rho_within": r,
        "p_within": float(spearman_p(r, n)),
    }
    best_vs, r_vs = _best(rho_vs, names, whole)
    row.update(best_vs_normal=best_vs, rho_vs_normal=r_vs, n_vs_normal=len(severity_both))
    for group in FAMILY_GROUPS:
        row[f"best_{group}"], row[f"rho_{group}"] = _best(rho_in, names, whole & (groups == group))
        row[f"best_overall_{group}"], row[f"rho_overall_{group}"] = _best(
            rho_in, names, groups == group
        )
    row["chance_rho"] = float(3.3 / np.sqrt(n))
    expected = EXPECTED.get(label, ())
    row["expected_found"] = bool(
        any(abs(float(row.get(f"rho_{g}", np.nan) or 0.0)) > row["chance_rho"] for g in expected)
    )
    o_best, o_r = _best(rho_in, names)
    row.update(
        best_overall=o_best,
        region_overall=feature_region(o_best) if o_best else "",
        rho_overall=o_r,
    )
    usable = finite & (np.ptp(F_own, axis=0) > 0)
    null = (
        _null_max_rho(F_own[:, usable], severity_own, n_null, rng) if usable.any() else np.zeros(1)
    )
    row["null_rho99"] = float(np.quantile(null, 0.99))
    row["expected_found_overall"] = bool(
        any(
            abs(float(row.get(f"rho_overall_{g}", np.nan) or 0.0)) > row["null_rho99"]
            for g in expected
        )
    )
    row["note"] = ""
    return row
