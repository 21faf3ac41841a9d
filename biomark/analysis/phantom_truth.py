"""Ground truth on the phantom: which radiomic feature tracks each planted signature?

The phantom (:mod:`biomark.data.phantom`) plants one signature per class with
a known per-image ``severity`` in ``[0, 1]`` (Normal = 0). If radiomics is a
sensible reference for interpreting deep features, some radiomic feature
should track each signature's severity. :func:`phantom_truth` finds, for each
class, the feature with the largest |Spearman rho| with severity

* ``within`` the class's own images (severity varies from 0.15 to 1), and
* ``vs_normal``: across the class's images plus the Normal images (severity 0),

and reports the best feature overall and the best of each family group
(texture = GLCM/GLRLM/GLSZM/GLDM/NGTDM, first order, shape). With ~100
features the largest |rho| of pure noise is about ``3.3 / sqrt(n)``
(Bonferroni-ish), given as ``chance_rho`` for comparison.

What the signatures should touch (:data:`EXPECTED`): effusion and pneumonia
add dense fluid/consolidation (first-order intensity and texture contrast
inside the lung mask), emphysema darkens and enlarges the lungs (first-order,
shape), fibrosis adds a fine reticular texture (texture families), COVID-19
and edema add a faint haze (first order). Measured results (phantom, 200 px,
Original image, ``binWidth: 8``) are in ``tests/analysis/test_phantom_truth.py``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from biomark.analysis.associate import TEXTURE_FAMILIES, radiomic_family

__all__ = ["EXPECTED", "FAMILY_GROUPS", "phantom_truth", "family_group"]

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


def _spearman_all(F: np.ndarray, severity: np.ndarray) -> np.ndarray:
    """|columns of F| x severity Spearman rho, NaN for constant columns."""
    ranks = stats.rankdata(F, axis=0)
    ranks -= ranks.mean(axis=0)
    s = stats.rankdata(severity)
    s -= s.mean()
    denom = np.linalg.norm(ranks, axis=0) * np.linalg.norm(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks.T @ s) / denom
    rho[denom == 0] = np.nan
    return rho


def _best(rho: np.ndarray, names: list[str], pick: np.ndarray | None = None) -> tuple[str, float]:
    values = np.where(np.isnan(rho), -1.0, np.abs(rho))
    if pick is not None:
        values = np.where(pick, values, -1.0)
    j = int(np.argmax(values))
    if values[j] < 0:
        return "", float("nan")
    return names[j], float(rho[j])


def phantom_truth(
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    normal: str = "Normal",
    min_images: int = 8,
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

    Returns
    -------
    DataFrame
        One row per diseased class: ``class, n, best_feature, best_family,
        rho_within, p_within, best_vs_normal, rho_vs_normal, n_vs_normal,
        best_texture, rho_texture, best_firstorder, rho_firstorder, best_shape,
        rho_shape, chance_rho, expected, expected_found, note``.

    Raises
    ------
    ValueError
        If the manifest has no ``severity`` column (not a phantom).
    """
    if "severity" not in manifest.columns:
        raise ValueError("the manifest has no 'severity' column: ground truth exists for the phantom only")
    merged = manifest[["image_id", "label", "severity"]].astype({"image_id": str}).merge(
        features.astype({"image_id": str}), on="image_id", how="inner"
    )
    names = [c for c in features.columns if c != "image_id"]
    groups = np.asarray([family_group(n) for n in names])
    F_all = merged[names].to_numpy(dtype=np.float64)
    finite = np.isfinite(F_all).all(axis=0)
    severity_all = pd.to_numeric(merged["severity"], errors="coerce").to_numpy(dtype=np.float64)
    rows = []
    for label in sorted(set(merged["label"]) - {normal}):
        own = (merged["label"] == label).to_numpy()
        both = own | (merged["label"] == normal).to_numpy()
        n = int(own.sum())
        row: dict[str, object] = {"class": label, "n": n, "expected": ", ".join(EXPECTED.get(label, ()))}
        if n < min_images or np.ptp(severity_all[own]) == 0:
            row["note"] = f"only {n} image(s) or no severity variation: not scored"
            rows.append(row)
            continue
        F = np.where(finite, F_all, 0.0)
        rho_in = np.where(finite, _spearman_all(F[own], severity_all[own]), np.nan)
        rho_vs = np.where(finite, _spearman_all(F[both], severity_all[both]), np.nan)
        best, r = _best(rho_in, names)
        t = r * np.sqrt((n - 2) / max(1e-12, 1 - r * r))
        row.update(
            best_feature=best,
            best_family=radiomic_family(best),
            rho_within=r,
            p_within=float(2 * stats.t.sf(abs(t), n - 2)),
        )
        best_vs, r_vs = _best(rho_vs, names)
        row.update(best_vs_normal=best_vs, rho_vs_normal=r_vs, n_vs_normal=int(both.sum()))
        for group in FAMILY_GROUPS:
            g_best, g_r = _best(rho_in, names, groups == group)
            row[f"best_{group}"] = g_best
            row[f"rho_{group}"] = g_r
        row["chance_rho"] = float(3.3 / np.sqrt(n))
        expected = EXPECTED.get(label, ())
        row["expected_found"] = bool(
            any(abs(float(row.get(f"rho_{g}", np.nan) or 0.0)) > row["chance_rho"] for g in expected)
        )
        row["note"] = ""
        rows.append(row)
    columns = [
        "class", "n", "best_feature", "best_family", "rho_within", "p_within", "best_vs_normal",
        "rho_vs_normal", "n_vs_normal", "best_texture", "rho_texture", "best_firstorder",
        "rho_firstorder", "best_shape", "rho_shape", "chance_rho", "expected", "expected_found", "note",
    ]
    return pd.DataFrame(rows).reindex(columns=columns)
