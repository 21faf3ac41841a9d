"""Negative controls of the deep-versus-radiomics associations.

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

:func:`control_summary` counts associated pairs (FDR-significant *and* |rho| at
least :attr:`ControlThresholds.min_abs_rho`) and the median |rho| for the real
features and each control (overall, texture families, first order);
:func:`control_verdict` turns one strategy's summary into a verdict that
follows from stated thresholds (:class:`ControlThresholds`) and the null.

The lung blackout, the image-level control of ``biomark report``, is read in
:mod:`biomark.analysis.blackout`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biomark.analysis.associate import TEXTURE_FAMILIES, AssociationResult, radiomic_family
from biomark.exceptions import ConfigError

__all__ = [
    "SUMMARY_COLUMNS",
    "VERDICTS",
    "ControlThresholds",
    "compare_controls",
    "control_summary",
    "control_verdict",
]

logger = logging.getLogger(__name__)

#: Columns of :func:`control_summary`.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "variant",
    "n_pairs",
    "n_significant",
    "n_associated",
    "fraction_associated",
    "median_abs_rho",
    "n_associated_texture",
    "median_abs_rho_texture",
    "n_associated_firstorder",
    "median_abs_rho_firstorder",
)


def _stats(
    result: AssociationResult, pick: np.ndarray | None, min_abs_rho: float
) -> tuple[int, float]:
    """Associated pairs (significant, |rho| >= min_abs_rho) and the median |rho| of the picked
    columns."""
    if pick is not None and not pick.any():
        return 0, float("nan")
    rho = np.abs(result.rho if pick is None else result.rho[:, pick])
    median = float(np.median(rho)) if rho.size else float("nan")
    return result.n_associated(min_abs_rho, pick), median


def control_summary(
    results: Mapping[str, AssociationResult], *, min_abs_rho: float = 0.3
) -> pd.DataFrame:
    """Associated pairs and median |rho| for the real radiomics and each control.

    Parameters
    ----------
    results : mapping of str to AssociationResult
        ``{"real": ..., "shuffled": ..., "outside": ...}`` (any subset, same
        deep features).
    min_abs_rho : float, default 0.3
        A pair counts as associated when FDR-significant with at least this
        |rho| (:attr:`ControlThresholds.min_abs_rho`); ``n_significant`` keeps
        the count by significance alone.

    Returns
    -------
    DataFrame
        One row per variant with :data:`SUMMARY_COLUMNS`.
    """
    rows = []
    for variant, result in results.items():
        families = np.asarray([radiomic_family(n) for n in result.radiomic_names])
        n_assoc, med = _stats(result, None, min_abs_rho)
        t_assoc, t_med = _stats(result, np.isin(families, TEXTURE_FAMILIES), min_abs_rho)
        f_assoc, f_med = _stats(result, families == "firstorder", min_abs_rho)
        rows.append(
            {
                "variant": variant,
                "n_pairs": int(result.rho.size),
                "n_significant": int(result.significant.sum()),
                "n_associated": n_assoc,
                "fraction_associated": n_assoc / max(result.rho.size, 1),
                "median_abs_rho": med,
                "n_associated_texture": t_assoc,
                "median_abs_rho_texture": t_med,
                "n_associated_firstorder": f_assoc,
                "median_abs_rho_firstorder": f_med,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


@dataclass(frozen=True)
class ControlThresholds:
    """The stated thresholds of :func:`control_verdict` (each is quoted in the sentence it
    produces).

    Attributes
    ----------
    min_abs_rho : float, default 0.3
        A deep-radiomic pair counts as associated when it is FDR-significant
        *and* its |rho| reaches this (about 9 % of shared rank variance).
        Significance alone is no effect size: over the thousands of images of
        a real run it is reached near |rho| 0.08, so every feature that
        differs by class "associates" with everything else that does, inside
        the lungs or outside them, and the controls cannot tell them apart (on
        ``make demo``'s scratch features: 82 % of lung pairs and 51 % of
        outside pairs significant; at |rho| >= 0.3, 16.9 % and 1.1 %).
    min_significant : int, default 20
        Fewer associated pairs than this, with the real radiomics *and*
        outside the lungs, is too few to compare: no verdict. (Counts of a few
        pairs swing with one correlated block of features.)
    min_fraction : float, default 0.01
        The same as a share of the pairs: below it in both, hardly any deep
        feature relates to any radiomic feature, and a ratio of two such
        counts is no verdict (on ``make demo``'s random-backbone controls,
        0.04-0.11 % of lung pairs are associated).
    max_outside_ratio : float, default 0.5
        The outside-the-lungs control may reach at most this share of the real
        radiomics' rate of associated pairs (fractions of pairs, so tables of
        different widths compare) for the associations to count as specific to
        the lungs; at 1 or more it dominates: "shortcut suspected".
    max_texture_retention : float, default 0.5
        With the lung pixels shuffled, the count of associated texture
        associations may reach at most this share of the real count for them
        to count as texture (a count ratio: it can exceed 1).
    min_variance_explained : float, default 0.05
        Cross-validated share of the deep-feature variance radiomics must
        explain (:func:`biomark.analysis.associate.cca_explained`; 0 under the
        null) for the link to count as more than a thin one.
    """

    min_abs_rho: float = 0.3
    min_significant: int = 20
    min_fraction: float = 0.01
    max_outside_ratio: float = 0.5
    max_texture_retention: float = 0.5
    min_variance_explained: float = 0.05

    def __post_init__(self) -> None:
        if int(self.min_significant) != self.min_significant or self.min_significant < 1:
            raise ConfigError(
                f"min_significant must be an integer >= 1, got {self.min_significant!r}"
            )
        for name in (
            "min_abs_rho",
            "min_fraction",
            "max_outside_ratio",
            "max_texture_retention",
            "min_variance_explained",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {value!r}")


#: The verdicts :func:`control_verdict` can give, from the most to the least conclusive.
VERDICTS: tuple[str, ...] = (
    "Consistent with lung biomarkers",
    "Weak link to radiomics",
    "Texture not confirmed",
    "Lung specificity untested",
    "Not specific to the lungs",
    "Shortcut suspected",
    "Too few associations for a verdict",
    "No feature-level verdict",
)


def control_verdict(
    summary: pd.DataFrame,
    *,
    variance_explained: float | None = None,
    learned: bool = True,
    thresholds: ControlThresholds | None = None,
) -> str:
    """A plain-language reading of one strategy's :func:`control_summary`, from stated thresholds.

    The first rule that applies gives the verdict (one of :data:`VERDICTS`);
    the sentence names the numbers and the threshold it was read against.

    1. ``learned`` is False (the model is at chance,
       :mod:`biomark.analysis.chance`): "No feature-level verdict".
    2. Fewer than ``min_significant`` associated pairs, or fewer than a share
       ``min_fraction`` of the pairs, with the real radiomics and outside the
       lungs: "Too few associations for a verdict".
    3. Outside-lung rate / lung rate ``>= 1``: "Shortcut suspected";
       ``>= max_outside_ratio``: "Not specific to the lungs"; no outside
       control: "Lung specificity untested".
    4. Shuffling the lung pixels leaves more than ``max_texture_retention``
       times as many associated texture pairs: "Texture not confirmed".
    5. Radiomics explain less than ``min_variance_explained`` of the
       deep-feature variance (cross-validated CCA): "Weak link to radiomics".
    6. Otherwise: "Consistent with lung biomarkers".

    Parameters
    ----------
    summary : DataFrame
        :func:`control_summary` of one strategy (``real`` and any controls).
    variance_explained : float, optional
        ``cca_explained(...)["variance_explained"]`` of the strategy (None or
        NaN: not available, rule 5 is skipped and said to be).
    learned : bool, default True
        The strategy's chance guard (:attr:`biomark.analysis.chance.ChanceGuard.learned`).
    thresholds : ControlThresholds, optional

    Returns
    -------
    str
        ``"<verdict>: <the numbers>."``
    """
    th = thresholds or ControlThresholds()
    by = summary.set_index("variant")
    if not learned:
        return (
            "No feature-level verdict: the model is not above chance, so its features' "
            "associations with radiomics say nothing about what it learned."
        )
    if "real" not in by.index:
        return (
            "No feature-level verdict: no real-radiomics association to compare with the controls."
        )
    real = by.loc["real"]
    n_real, f_real = int(real["n_associated"]), float(real["fraction_associated"])
    parts = [
        f"{n_real} of {int(real['n_pairs'])} pairs ({f_real:.2%}) are associated with the real "
        f"radiomics (FDR-significant with |rho| >= {th.min_abs_rho:g}; "
        f"{int(real['n_significant'])} by significance alone)"
    ]
    n_out = int(by.loc["outside", "n_associated"]) if "outside" in by.index else None
    f_out_all = float(by.loc["outside", "fraction_associated"]) if n_out is not None else 0.0

    def too_few(n: int | None, f: float) -> bool:
        return n is None or n < th.min_significant or f < th.min_fraction

    if too_few(n_real, f_real) and too_few(n_out, f_out_all):
        out_text = f" and {n_out} ({f_out_all:.2%}) outside the lungs" if n_out is not None else ""
        return (
            f"Too few associations for a verdict: {n_real} associated pairs ({f_real:.2%}; "
            f"FDR-significant with |rho| >= {th.min_abs_rho:g}) with the lung radiomics{out_text}; "
            f"a comparison needs at least {th.min_significant} pairs and {th.min_fraction:.0%} of "
            "them in one of them."
        )
    if n_out is None:
        verdict = "Lung specificity untested"
        parts.append(
            "there is no outside-the-lungs control to tell lung associations from whole-image ones"
        )
    else:
        f_out = float(by.loc["outside", "fraction_associated"])
        ratio = f_out / f_real if f_real > 0 else float("inf")
        share = (
            f"{ratio:.0%} of the lung rate" if np.isfinite(ratio) else "against none in the lungs"
        )
        parts.append(
            f"outside the lungs {n_out} pairs ({f_out:.2%}) are associated, {share} "
            f"(specific to the lungs below {th.max_outside_ratio:.0%}, dominant at 100 %)"
        )
        verdict = (
            "Shortcut suspected"
            if ratio >= 1.0
            else "Not specific to the lungs"
            if ratio >= th.max_outside_ratio
            else ""
        )
    if "shuffled" in by.index:
        base = int(real["n_associated_texture"])
        kept = int(by.loc["shuffled", "n_associated_texture"])
        if base > 0:
            retention = kept / base
            parts.append(
                # a count ratio, not a share: the shuffled images can give more associated pairs
                f"with the lung pixels shuffled (texture destroyed) {kept} texture pairs are "
                f"associated against {base} with the real pixels, {retention:.0%} as many "
                f"(a texture link keeps at most {th.max_texture_retention:.0%})"
            )
            if not verdict and retention > th.max_texture_retention:
                verdict = "Texture not confirmed"
        else:
            parts.append("no texture association to test with the shuffled control")
    if variance_explained is not None and np.isfinite(variance_explained):
        parts.append(
            f"radiomics explain {variance_explained:.1%} of the deep-feature variance out of fold "
            f"(a thin link below {th.min_variance_explained:.0%}; 0 % under the null)"
        )
        if not verdict and variance_explained < th.min_variance_explained:
            verdict = "Weak link to radiomics"
    else:
        parts.append("the share of deep-feature variance radiomics explain is not available")
    return f"{verdict or 'Consistent with lung biomarkers'}: " + "; ".join(parts) + "."


def compare_controls(
    per_strategy: Mapping[str, Mapping[str, AssociationResult]],
    *,
    variance_explained: Mapping[str, float] | None = None,
    learned: Mapping[str, bool] | None = None,
    thresholds: ControlThresholds | None = None,
) -> pd.DataFrame:
    """:func:`control_summary` for every strategy, with its verdict.

    Parameters
    ----------
    per_strategy : mapping of str to mapping of str to AssociationResult
        ``{strategy: {"real": ..., "shuffled": ..., "outside": ...}}``.
    variance_explained : mapping of str to float, optional
        Per strategy, the cross-validated CCA share (see :func:`control_verdict`).
    learned : mapping of str to bool, optional
        Per strategy, its chance guard (missing strategies count as learned).
    thresholds : ControlThresholds, optional

    Returns
    -------
    DataFrame
        ``strategy`` + :data:`SUMMARY_COLUMNS` + ``verdict`` (same sentence on
        every row of a strategy).
    """
    frames = []
    for strategy, results in per_strategy.items():
        th = thresholds or ControlThresholds()
        summary = control_summary(results, min_abs_rho=th.min_abs_rho)
        summary.insert(0, "strategy", strategy)
        summary["verdict"] = control_verdict(
            summary,
            variance_explained=(variance_explained or {}).get(strategy),
            learned=(learned or {}).get(strategy, True),
            thresholds=thresholds,
        )
        frames.append(summary)
    if not frames:
        return pd.DataFrame(columns=["strategy", *SUMMARY_COLUMNS, "verdict"])
    return pd.concat(frames, ignore_index=True)
