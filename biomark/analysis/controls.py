"""Negative controls for deep-versus-radiomics associations.

A deep feature that behaves like a biomarker should be associated with what
the lungs *look like*. Two controls (extracted by
``biomark radiomics``, see :func:`biomark.features.radiomics_run.run_radiomics`)
ask whether the associations found with the real radiomics say that:

``shuffled``
    the same lung pixels randomly permuted inside the mask (seeded per image):
    the grey-level histogram (every first-order feature) is unchanged, texture
    is destroyed. Texture associations that survive shuffling were never about
    texture (they ride on intensity or on which image it is).
``outside``
    features of the region outside the lungs (image content minus the lung
    mask): body habitus, labels, collimation, devices. If deep features relate
    to it at least as strongly as to the lungs, they look like shortcuts.

:func:`control_summary` counts FDR-significant pairs and the median |rho| for
the real features and each control (overall, texture families, first order);
:func:`control_verdict` turns one strategy's summary into a plain sentence.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd

from biomark.analysis.associate import TEXTURE_FAMILIES, AssociationResult, radiomic_family

__all__ = ["SUMMARY_COLUMNS", "control_summary", "control_verdict", "compare_controls"]

logger = logging.getLogger(__name__)

#: Columns of :func:`control_summary`.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "variant",
    "n_pairs",
    "n_significant",
    "fraction_significant",
    "median_abs_rho",
    "n_significant_texture",
    "median_abs_rho_texture",
    "n_significant_firstorder",
    "median_abs_rho_firstorder",
)


def _stats(result: AssociationResult, pick: np.ndarray | None) -> tuple[int, float]:
    if pick is not None and not pick.any():
        return 0, float("nan")
    rho = result.rho if pick is None else result.rho[:, pick]
    sig = result.significant if pick is None else result.significant[:, pick]
    return int(sig.sum()), float(np.median(np.abs(rho))) if rho.size else float("nan")


def control_summary(results: Mapping[str, AssociationResult]) -> pd.DataFrame:
    """Significant pairs and median |rho| for the real radiomics and each control.

    Parameters
    ----------
    results : mapping of str to AssociationResult
        ``{"real": ..., "shuffled": ..., "outside": ...}`` (any subset, same
        deep features).

    Returns
    -------
    DataFrame
        One row per variant with :data:`SUMMARY_COLUMNS`.
    """
    rows = []
    for variant, result in results.items():
        families = np.asarray([radiomic_family(n) for n in result.radiomic_names])
        n_sig, med = _stats(result, None)
        t_sig, t_med = _stats(result, np.isin(families, TEXTURE_FAMILIES))
        f_sig, f_med = _stats(result, families == "firstorder")
        rows.append(
            {
                "variant": variant,
                "n_pairs": int(result.rho.size),
                "n_significant": n_sig,
                "fraction_significant": n_sig / max(result.rho.size, 1),
                "median_abs_rho": med,
                "n_significant_texture": t_sig,
                "median_abs_rho_texture": t_med,
                "n_significant_firstorder": f_sig,
                "median_abs_rho_firstorder": f_med,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def control_verdict(summary: pd.DataFrame) -> str:
    """A plain-language reading of one strategy's :func:`control_summary`.

    A biomarker-like association survives shuffling poorly in the texture
    families (texture retention below 50 %) and is not dominated by the region
    outside the lungs (fewer significant pairs outside than inside).
    """
    by = summary.set_index("variant")
    if "real" not in by.index:
        return "No real-radiomics association to compare with the controls."
    real = by.loc["real"]
    if real["n_significant"] == 0:
        return (
            "No deep-radiomic pair is FDR-significant with the real lung radiomics, so there is "
            "no association for the controls to explain."
        )
    parts = [f"{int(real['n_significant'])} pairs are FDR-significant with the real radiomics"]
    texture_ok = outside_ok = None
    if "shuffled" in by.index:
        base = real["n_significant_texture"]
        kept = by.loc["shuffled", "n_significant_texture"]
        if base > 0:
            retention = kept / base
            texture_ok = bool(retention < 0.5)
            parts.append(
                f"{retention:.0%} of the texture associations survive pixel shuffling "
                f"({int(kept)} of {int(base)}; {'low, as expected for real texture' if texture_ok else 'high: they are not about texture'})"
            )
        else:
            parts.append("no texture association to test with the shuffled control")
    if "outside" in by.index:
        out = by.loc["outside", "n_significant"]
        ratio = out / real["n_significant"]
        outside_ok = bool(ratio < 1.0)
        parts.append(
            f"the region outside the lungs gives {int(out)} significant pairs "
            f"({ratio:.0%} of the lung count; {'not dominant' if outside_ok else 'dominant: a shortcut warning'})"
        )
    if texture_ok is not False and outside_ok is not False:
        verdict = "Consistent with lung biomarkers"
    elif outside_ok is False:
        verdict = "Shortcut suspected"
    else:
        verdict = "Mixed evidence"
    return f"{verdict}: " + "; ".join(parts) + "."


def compare_controls(per_strategy: Mapping[str, Mapping[str, AssociationResult]]) -> pd.DataFrame:
    """:func:`control_summary` for every strategy, with its verdict.

    Parameters
    ----------
    per_strategy : mapping of str to mapping of str to AssociationResult
        ``{strategy: {"real": ..., "shuffled": ..., "outside": ...}}``.

    Returns
    -------
    DataFrame
        ``strategy`` + :data:`SUMMARY_COLUMNS` + ``verdict`` (same sentence on
        every row of a strategy).
    """
    frames = []
    for strategy, results in per_strategy.items():
        summary = control_summary(results)
        summary.insert(0, "strategy", strategy)
        summary["verdict"] = control_verdict(summary)
        frames.append(summary)
    if not frames:
        return pd.DataFrame(columns=["strategy", *SUMMARY_COLUMNS, "verdict"])
    return pd.concat(frames, ignore_index=True)
