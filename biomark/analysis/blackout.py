"""The lung-blackout control: where does a model look?

``biomark report`` re-runs each fold's model on its test films with the lung
pixels set to 0. :func:`read_blackout` reads what is left of its accuracy
against the majority rate and the class distribution of the blacked-out
predictions: a model pushed out of distribution is its own verdict, neither
"reads the lungs" nor "reads outside" (:data:`BLACKOUT_VERDICTS`).
:func:`blackout_distribution` tabulates the blacked-out predictions per class.

A blacked-out film keeps the lungs' outline, and its lungs are as dark as a
film can be. A class whose finding is the lungs' size, shape or darkness
(hyperinflated, hyperlucent lungs in emphysema) can therefore keep its recall
without the model reading anything outside the lungs. Where accuracy
survives, the reading names the classes that keep it (``kept_classes``), so
that the survival can be told from a shortcut; the lung swap
(:mod:`biomark.analysis.lung_swap`), which keeps real lungs, is the sharper test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.analysis.chance import NOT_READABLE_AT_CHANCE, AccuracyTest, accuracy_test, p_clause
from biomark.analysis.stats import holm
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "BLACKOUT_VERDICTS",
    "OUTSIDE_VERDICTS",
    "BlackoutReading",
    "blackout_distribution",
    "read_blackout",
]

#: The readings of the lung-blackout control (:func:`read_blackout`).
BLACKOUT_VERDICTS: tuple[str, ...] = (
    "model at chance",
    "out of distribution",
    "reads the lungs",
    "partly outside the lungs",
    "reads outside the lungs",
)

#: The verdicts under which accuracy survived the blackout (rule 3 of :func:`read_blackout`).
OUTSIDE_VERDICTS: tuple[str, ...] = ("partly outside the lungs", "reads outside the lungs")


@dataclass(frozen=True)
class BlackoutReading:
    """What the lung-blackout control says, read against the majority rate (see
    :func:`read_blackout`).

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
    kept_classes : tuple of str
        The classes the model still tells apart with the lungs blacked out
        (see :func:`read_blackout`), in class order; empty when none.
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
    kept_classes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The verdict for a summary line: "model at chance" reads as
        :data:`~biomark.analysis.chance.NOT_READABLE_AT_CHANCE` (the control re-reads only some
        of the films), as :attr:`biomark.analysis.lung_swap.LungSwapReading.label` does."""
        return NOT_READABLE_AT_CHANCE if self.verdict == "model at chance" else self.verdict

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
    labels: Sequence[object] | np.ndarray,
    pred: Sequence[object] | np.ndarray,
    pred_blackout: Sequence[object] | np.ndarray,
) -> pd.DataFrame:
    """Per class: how many images are of it, predicted as it, and predicted as it with the lungs
    blacked out; and how many of its own images are recalled, originally and blacked out.

    Images without a blacked-out prediction (NaN/None: no usable mask) are left out.

    Returns
    -------
    DataFrame
        Indexed by class: ``true, predicted, predicted_blackout, recalled,
        recalled_blackout`` (counts; ``recalled``: images of the class predicted
        as it).

    Examples
    --------
    >>> y = ["Emphysema", "Emphysema", "Normal", "Normal"]
    >>> blackout_distribution(y, y, ["Emphysema", "Emphysema", "Emphysema", "Normal"])
               true  predicted  predicted_blackout  recalled  recalled_blackout
    class
    Emphysema     2          2                   3         2                  2
    Normal        2          2                   1         2                  1
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
    for column, answer in (("recalled", "predicted"), ("recalled_blackout", "predicted_blackout")):
        right = frame.loc[frame[answer] == frame["true"], "true"]
        out[column] = right.value_counts().reindex(classes, fill_value=0)
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
       The sentence then names the classes that keep their recall
       (``kept_classes``): blacked out, a class keeps at least
       ``max_survival`` of its original recall, and its images are answered
       as it more often than the other images are (one-sided Fisher exact
       test, Holm over the classes, p < ``alpha``). The blacked-out lungs keep
       their outline and are as dark as can be, so such a class may be one
       whose finding is the lungs' size, shape or darkness.
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
        f"with the lungs blacked out accuracy is {above.accuracy:.1%} ({above.correct} of "
        f"{above.n}) against {original.accuracy:.1%} originally and a majority rate of "
        f"{majority:.1%}"
    )
    spread = (
        f"the {k} most predicted class(es) ({', '.join(top)}) take {share:.0%} of the blacked-out "
        f"predictions (originally {share_orig:.0%}, true labels {share_true:.0%}; collapse at "
        f"{collapse_share:.0%})"
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
    per_class = blackout_distribution(y, p, b)
    kept = _kept_classes(per_class, alpha=alpha, max_survival=max_survival)
    if verdict in OUTSIDE_VERDICTS and kept:
        text += "; " + _kept_clause(per_class, kept)
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
        kept_classes=kept,
    )


def _kept_classes(per_class: pd.DataFrame, *, alpha: float, max_survival: float) -> tuple[str, ...]:
    """The classes the model still tells apart with the lungs blacked out (rule 3 of
    :func:`read_blackout`), in sorted order, from the :func:`blackout_distribution` table."""
    n = int(per_class["true"].sum())
    names, p_values = [], []
    for c, row in per_class.iterrows():
        own = int(row["true"])
        if own == 0 or own == n:
            continue
        hits, recalled = int(row["recalled_blackout"]), int(row["recalled"])
        if recalled == 0 or hits < max_survival * recalled:
            continue
        false_hits = int(row["predicted_blackout"]) - hits
        table = [[hits, own - hits], [false_hits, n - own - false_hits]]
        names.append(str(c))
        p_values.append(float(sps.fisher_exact(table, alternative="greater").pvalue))
    if not names:
        return ()
    # stats.holm, not statsmodels' multipletests: its Holm branch calls gc.collect() (0.3 s a
    # report worker with TensorFlow loaded); rejected where the adjusted p is <= alpha, as there
    reject = holm(np.asarray(p_values)) <= alpha
    return tuple(c for c, ok in zip(names, reject, strict=True) if ok)


def _kept_clause(per_class: pd.DataFrame, kept: Sequence[str]) -> str:
    """Which classes keep their recall (from the :func:`blackout_distribution` table), with the
    caveat of the lungs' outline."""
    n = int(per_class["true"].sum())
    parts = []
    for c in kept:
        row = per_class.loc[c]
        parts.append(
            f"{c} (recall {row['recalled'] / row['true']:.0%} → "
            f"{row['recalled_blackout'] / row['true']:.0%}, and "
            f"{row['predicted_blackout'] / n:.0%} of all blacked-out films answered {c})"
        )
    which = (
        "the class still told apart is" if len(parts) == 1 else "the classes still told apart are"
    )
    return (
        f"{which} {', '.join(parts)}. A blacked-out film keeps the lungs' outline and makes them "
        "as dark as a film can be, so a finding of the lungs' size, shape or darkness "
        "(hyperinflated, hyperlucent lungs) can survive it without the model reading anything "
        "outside the lungs; the lung swap, which keeps real lungs, is the sharper test"
    )


def _blackout_predictions(
    labels: Sequence[object], pred: Sequence[object], pred_blackout: Sequence[object]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True class, original and blacked-out prediction of the images that have all three, as
    strings."""
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
            "no image has a blacked-out prediction (no usable lung mask?); the control cannot be "
            "read"
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
    """The verdict of :func:`read_blackout` (its rules 1-4) and its sentence, without the full
    stop."""
    majority = original.majority_rate
    if not original.above_majority:
        verdict = "model at chance"
        text = (
            f"Not readable: on these images the model itself is not above the majority rate "
            f"({original.accuracy:.1%} vs {majority:.1%}, {p_clause(original.p_value)}), so losing "
            "or keeping accuracy says nothing about where it looks"
        )
    elif p_below < alpha or collapsed:
        verdict = "out of distribution"
        why = []
        if p_below < alpha:
            why.append(f"below the majority rate (p = {p_below:.2g})")
        if collapsed:
            why.append("the predictions collapsed")
        text = (
            f"Out of distribution: {numbers}, {' and '.join(why)}; {spread}. Blacked-out films are "
            "images the model never saw, so this neither shows that it reads the lungs nor that it "
            "reads outside them"
        )
    elif above.above_majority:
        verdict = (
            "reads outside the lungs" if survival >= max_survival else "partly outside the lungs"
        )
        text = (
            f"{verdict.capitalize()}: {numbers}; it keeps {survival:.0%} of its accuracy above the "
            f"majority rate ({p_clause(above.p_value)} above it; outside at {max_survival:.0%} or "
            f"more); {spread}"
        )
    else:
        verdict = "reads the lungs"
        text = (
            f"Reads the lungs: {numbers}; it falls back to the majority rate "
            f"({p_clause(above.p_value)} above it) while its predictions stay spread; {spread}"
        )
    return verdict, text
