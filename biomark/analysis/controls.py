"""Negative controls: deep-versus-radiomics associations, and the lung blackout.

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

The lung blackout (``biomark report``: each fold's model re-run with the lung
pixels set to 0) is read by :func:`read_blackout` against the majority rate
and the class distribution of the blacked-out predictions: a model pushed out
of distribution is its own verdict, neither "reads the lungs" nor "reads
outside".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.analysis.associate import TEXTURE_FAMILIES, AssociationResult, radiomic_family
from biomark.analysis.chance import AccuracyTest, accuracy_test, p_clause
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "BLACKOUT_VERDICTS",
    "SUMMARY_COLUMNS",
    "VERDICTS",
    "BlackoutReading",
    "ControlThresholds",
    "blackout_distribution",
    "compare_controls",
    "control_summary",
    "control_verdict",
    "read_blackout",
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
    """Associated pairs (significant, |rho| >= min_abs_rho) and the median |rho| of the picked columns."""
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
    """The stated thresholds of :func:`control_verdict` (each is quoted in the sentence it produces).

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
            "No feature-level verdict: the model is not above chance, so its features' associations with "
            "radiomics say nothing about what it learned."
        )
    if "real" not in by.index:
        return (
            "No feature-level verdict: no real-radiomics association to compare with the controls."
        )
    real = by.loc["real"]
    n_real, f_real = int(real["n_associated"]), float(real["fraction_associated"])
    parts = [
        f"{n_real} of {int(real['n_pairs'])} pairs ({f_real:.2%}) are associated with the real radiomics "
        f"(FDR-significant with |rho| >= {th.min_abs_rho:g}; {int(real['n_significant'])} by significance "
        "alone)"
    ]
    n_out = int(by.loc["outside", "n_associated"]) if "outside" in by.index else None
    f_out_all = float(by.loc["outside", "fraction_associated"]) if n_out is not None else 0.0

    def too_few(n: int | None, f: float) -> bool:
        return n is None or n < th.min_significant or f < th.min_fraction

    if too_few(n_real, f_real) and too_few(n_out, f_out_all):
        out_text = f" and {n_out} ({f_out_all:.2%}) outside the lungs" if n_out is not None else ""
        return (
            f"Too few associations for a verdict: {n_real} associated pairs ({f_real:.2%}; FDR-significant "
            f"with |rho| >= {th.min_abs_rho:g}) with the lung radiomics{out_text}; a comparison needs at "
            f"least {th.min_significant} pairs and {th.min_fraction:.0%} of them in one of them."
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
                f"with the lung pixels shuffled {retention:.0%} as many texture pairs are associated "
                f"({kept} vs {base}; texture below {th.max_texture_retention:.0%})"
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


# --------------------------------------------------------------------------- #
# The lung-blackout control
# --------------------------------------------------------------------------- #
#: The readings of the lung-blackout control (:func:`read_blackout`).
BLACKOUT_VERDICTS: tuple[str, ...] = (
    "model at chance",
    "out of distribution",
    "reads the lungs",
    "partly outside the lungs",
    "reads outside the lungs",
)


@dataclass(frozen=True)
class BlackoutReading:
    """What the lung-blackout control says, read against the majority rate (see :func:`read_blackout`).

    Attributes
    ----------
    verdict : str
        One of :data:`BLACKOUT_VERDICTS`.
    sentence : str
        The verdict with its numbers and thresholds.
    n : int
        Images with a usable mask and both predictions.
    accuracy_original, accuracy_blackout, majority_rate : float
    survival_above_chance : float
        ``(accuracy_blackout - majority) / (accuracy_original - majority)``;
        NaN when the original accuracy is not above the majority rate.
    p_above, p_below : float
        One-sided exact binomial p of the blacked-out accuracy above / below
        the majority rate.
    top_classes : tuple of str
        The ``k`` classes predicted most often with the lungs blacked out.
    top_share, top_share_original, top_share_true : float
        Their share of the blacked-out predictions; the share of the ``k``
        most predicted classes of the original predictions; of the ``k``
        largest true classes.
    collapsed : bool
        The blacked-out predictions collapsed onto ``top_classes`` (see
        :func:`read_blackout`).
    """

    verdict: str
    sentence: str
    n: int
    accuracy_original: float
    accuracy_blackout: float
    majority_rate: float
    survival_above_chance: float
    p_above: float
    p_below: float
    top_classes: tuple[str, ...]
    top_share: float
    top_share_original: float
    top_share_true: float
    collapsed: bool

    @property
    def survival_for_flags(self) -> float | None:
        """The survival to flag features with, or None when the control cannot be read."""
        if self.verdict in ("model at chance", "out of distribution") or not np.isfinite(
            self.survival_above_chance
        ):
            return None
        return float(self.survival_above_chance)


def _top_share(values: np.ndarray, k: int) -> tuple[tuple[str, ...], float]:
    counts = pd.Series(values).value_counts(sort=False)
    counts = counts.iloc[np.lexsort((counts.index.astype(str), -counts.to_numpy()))]
    top = counts.head(k)
    return tuple(str(v) for v in top.index), float(top.sum() / max(len(values), 1))


def blackout_distribution(
    labels: Sequence[object], pred: Sequence[object], pred_blackout: Sequence[object]
) -> pd.DataFrame:
    """Per class: how many images are of it, predicted as it, and predicted as it with the lungs blacked out.

    Images without a blacked-out prediction (NaN/None: no usable mask) are left out.

    Returns
    -------
    DataFrame
        Indexed by class: ``true, predicted, predicted_blackout`` (counts).
    """
    frame = pd.DataFrame(
        {
            "true": np.asarray(labels, dtype=object),
            "predicted": np.asarray(pred, dtype=object),
            "predicted_blackout": np.asarray(pred_blackout, dtype=object),
        }
    ).dropna()
    frame = frame.astype(str)
    classes = sorted(set(frame.to_numpy().ravel().tolist()))
    out = pd.DataFrame(
        {c: frame[c].value_counts().reindex(classes, fill_value=0) for c in frame.columns}
    )
    out.index.name = "class"
    return out.astype(int)


def read_blackout(
    labels: Sequence[object],
    pred: Sequence[object],
    pred_blackout: Sequence[object],
    *,
    alpha: float = 0.05,
    max_survival: float = 0.5,
    collapse_share: float = 0.8,
) -> BlackoutReading:
    """Read the lung-blackout control against the majority rate and the blacked-out predictions.

    Blacking out the lungs makes images no model has seen. A model that then
    answers worse than always giving the majority class, or gives nearly one
    or two answers to everything, is not telling us where it looks: its inputs
    are out of distribution. Only when neither happens is the accuracy kept
    read as "where the model looks". Rules, first match wins:

    1. The original predictions (same images) are not above the majority rate
       (:func:`biomark.analysis.chance.accuracy_test`): "model at chance".
    2. The blacked-out accuracy is below the majority rate (one-sided exact
       binomial p < ``alpha``), or the predictions *collapsed*: the ``k``
       most predicted classes (``k`` = 1 with up to 3 classes, else 2) take
       at least ``collapse_share`` of the blacked-out predictions while the
       original predictions and the true labels were spread (their top-``k``
       shares below ``collapse_share``): "out of distribution".
    3. The blacked-out accuracy is above the majority rate (p < ``alpha``):
       "reads outside the lungs" when it keeps at least ``max_survival`` of
       the accuracy above the majority rate, else "partly outside the lungs".
    4. Otherwise (back at the majority rate, predictions still spread):
       "reads the lungs".

    Parameters
    ----------
    labels, pred, pred_blackout : sequence of length n_images
        True class, original prediction and prediction with the lungs
        blacked out. Images with a missing blacked-out prediction (NaN/None,
        e.g. no usable mask) are left out.
    alpha : float, default 0.05
    max_survival : float, default 0.5
        The criteria's ``max_blackout_survival``.
    collapse_share : float, default 0.8

    Returns
    -------
    BlackoutReading

    Raises
    ------
    DataError
        Mismatched lengths, or no image with a blacked-out prediction.
    ConfigError
        A threshold outside (0, 1).
    """
    for name, value in (
        ("alpha", alpha),
        ("max_survival", max_survival),
        ("collapse_share", collapse_share),
    ):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name} must lie in (0, 1), got {value!r}")
    y, p, b = _blackout_predictions(labels, pred, pred_blackout)
    n_classes = len(set(y) | set(p) | set(b))
    original = accuracy_test(y, p, alpha=alpha, n_classes=n_classes)
    above = accuracy_test(y, b, alpha=alpha, n_classes=n_classes)
    majority = original.majority_rate
    p_below = (
        float(sps.binomtest(above.correct, above.n, majority, alternative="less").pvalue)
        if majority < 1
        else 1.0
    )
    gain = original.accuracy - majority
    survival = (above.accuracy - majority) / gain if gain > 0 else float("nan")
    k = 1 if n_classes <= 3 else 2
    top, share = _top_share(b, k)
    share_orig = _top_share(p, k)[1]
    share_true = _top_share(y, k)[1]
    collapsed = bool(
        share >= collapse_share and share_orig < collapse_share and share_true < collapse_share
    )
    numbers = (
        f"with the lungs blacked out accuracy is {above.accuracy:.1%} ({above.correct} of {above.n}) against "
        f"{original.accuracy:.1%} originally and a majority rate of {majority:.1%}"
    )
    spread = (
        f"the {k} most predicted class(es) ({', '.join(top)}) take {share:.0%} of the blacked-out predictions "
        f"(originally {share_orig:.0%}, true labels {share_true:.0%}; collapse at {collapse_share:.0%})"
    )
    verdict, text = _blackout_verdict(
        original,
        above,
        p_below,
        collapsed,
        survival,
        alpha=alpha,
        max_survival=max_survival,
        numbers=numbers,
        spread=spread,
    )
    return BlackoutReading(
        verdict=verdict,
        sentence=text + ".",
        n=len(y),
        accuracy_original=original.accuracy,
        accuracy_blackout=above.accuracy,
        majority_rate=majority,
        survival_above_chance=float(survival),
        p_above=above.p_value,
        p_below=p_below,
        top_classes=top,
        top_share=share,
        top_share_original=share_orig,
        top_share_true=share_true,
        collapsed=collapsed,
    )


def _blackout_predictions(
    labels: Sequence[object], pred: Sequence[object], pred_blackout: Sequence[object]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True class, original and blacked-out prediction of the images that have all three, as strings."""
    frame = pd.DataFrame(
        {"y": np.asarray(labels, dtype=object), "p": np.asarray(pred, dtype=object)}
    )
    bo = np.asarray(pred_blackout, dtype=object)
    if bo.shape != (len(frame),):
        raise DataError(
            f"pred_blackout has {bo.size} entries but labels has {len(frame)}; one per image"
        )
    frame["b"] = bo
    frame = frame.dropna().astype(str)
    if frame.empty:
        raise DataError(
            "no image has a blacked-out prediction (no usable lung mask?); the control cannot be read"
        )
    return frame["y"].to_numpy(), frame["p"].to_numpy(), frame["b"].to_numpy()


def _blackout_verdict(
    original: AccuracyTest,
    above: AccuracyTest,
    p_below: float,
    collapsed: bool,
    survival: float,
    *,
    alpha: float,
    max_survival: float,
    numbers: str,
    spread: str,
) -> tuple[str, str]:
    """The verdict of :func:`read_blackout` (its rules 1-4) and its sentence, without the full stop."""
    majority = original.majority_rate
    if not original.above_majority:
        verdict = "model at chance"
        text = (
            f"Not readable: on these images the model itself is not above the majority rate "
            f"({original.accuracy:.1%} vs {majority:.1%}, {p_clause(original.p_value)}), so losing or keeping "
            "accuracy says nothing about where it looks"
        )
    elif p_below < alpha or collapsed:
        verdict = "out of distribution"
        why = []
        if p_below < alpha:
            why.append(f"below the majority rate (p = {p_below:.2g})")
        if collapsed:
            why.append("the predictions collapsed")
        text = (
            f"Out of distribution: {numbers}, {' and '.join(why)}; {spread}. Blacked-out films are images the "
            "model never saw, so this neither shows that it reads the lungs nor that it reads outside them"
        )
    elif above.above_majority:
        verdict = (
            "reads outside the lungs" if survival >= max_survival else "partly outside the lungs"
        )
        text = (
            f"{verdict.capitalize()}: {numbers}; it keeps {survival:.0%} of its accuracy above the majority "
            f"rate ({p_clause(above.p_value)} above it; outside at {max_survival:.0%} or more); {spread}"
        )
    else:
        verdict = "reads the lungs"
        text = (
            f"Reads the lungs: {numbers}; it falls back to the majority rate ({p_clause(above.p_value)} above it) "
            f"while its predictions stay spread; {spread}"
        )
    return verdict, text
