"""The chance guard: has a model learned anything before its features are read?

Every page of biomark reads features of a trained model. When the model is
no better than guessing, its features are not "what the network learned to
see", and calling any of them a candidate biomarker, a shortcut or evidence
for the paper's claim would be a conclusion drawn from noise. So every page
first tests each strategy's pooled out-of-fold accuracy against two
baselines:

``chance``
    ``1 / n_classes``: answering at random.
``majority rate``
    the share of the most frequent class: always giving the same answer. It is
    never below chance, so it is the bar that is tested. On the paper's
    2-class task (COVID-19 vs the rest, 455 of 3,905 images) always answering
    "not COVID-19" is right 88 % of the time.

The test is a one-sided exact binomial test of the number of correct
out-of-fold answers against the majority rate (:func:`scipy.stats.binomtest`,
``alternative="greater"``) with a Wilson interval of the accuracy. A strategy
*has learned* when its n-class accuracy is above the majority rate at level
``alpha``; the 2-class (positive vs rest) result is tested and reported the
same way.

The test treats the out-of-fold images as independent. Films of one patient
are not, and the majority class of the *training* folds can differ from the
pooled one, so the p-value is somewhat optimistic: a strategy that fails this
test has certainly not shown it learned; one that passes it narrowly has not
shown much either.

Examples
--------
>>> guard = chance_guard(["a", "b", "c"] * 20, ["a"] * 60, strategy="scratch")
>>> guard.learned, round(guard.multiclass.accuracy, 3), round(guard.multiclass.majority_rate, 3)
(False, 0.333, 0.333)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from biomark.config import ReportPlanSettings
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "ALPHA",
    "NOT_READABLE_AT_CHANCE",
    "AccuracyTest",
    "ChanceGuard",
    "accuracy_test",
    "chance_guard",
    "guard_table",
    "p_clause",
    "p_value_text",
    "withhold_candidates",
]

logger = logging.getLogger(__name__)

#: Level of the one-sided test against the majority rate (default of the plan's
#: ``report.chance_alpha``).
ALPHA: float = ReportPlanSettings.chance_alpha


#: How a summary names a control (lung blackout, lung swap) whose verdict is "model at chance".
#: The control re-reads a subset of the films (the test films with usable lung masks), so a
#: strategy can pass the chance guard on all its films and still not be above the majority rate
#: on these: "model at chance" beside "has learned something" would read as a contradiction.
NOT_READABLE_AT_CHANCE: str = (
    "not readable (on the films it re-reads the model is not above the majority rate)"
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


#: Below this a p-value is printed as a bound: the exact binomial p of a model far above chance
#: underflows double precision (about 1e-308) and comes back as 0, which is not its value.
SMALLEST_P = 1e-300


def p_value_text(p: float) -> str:
    """A p-value for a table cell: two significant digits, or ``< 1e-300`` where it underflowed.

    Examples
    --------
    >>> p_value_text(0.02734), p_value_text(0.0)
    ('0.027', '< 1e-300')
    """
    return f"< {SMALLEST_P:.0e}" if p < SMALLEST_P else f"{p:.2g}"


def p_clause(p: float) -> str:
    """A p-value in a sentence: ``p = 0.027``, or ``p < 1e-300`` where it underflowed.

    Examples
    --------
    >>> p_clause(0.02734), p_clause(0.0)
    ('p = 0.027', 'p < 1e-300')
    """
    return f"p {p_value_text(p)}" if p < SMALLEST_P else f"p = {p_value_text(p)}"


@dataclass(frozen=True)
class AccuracyTest:
    """One accuracy tested against the majority rate (see :func:`accuracy_test`).

    Attributes
    ----------
    task : str
        What was predicted, e.g. ``"7-class"`` or ``"2-class (COVID-19 vs rest)"``.
    n, correct : int
        Images and correct answers.
    accuracy : float
        ``correct / n``.
    ci_low, ci_high : float
        Wilson interval of the accuracy at ``confidence``.
    confidence : float
    majority_class : str
        The most frequent true class (ties: the first in sorted order).
    majority_rate : float
        Its share: the accuracy of always answering it.
    chance_rate : float
        ``1 / n_classes``.
    p_value : float
        One-sided exact binomial p of ``correct`` against ``majority_rate``.
    alpha : float
    """

    task: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    confidence: float
    majority_class: str
    majority_rate: float
    chance_rate: float
    p_value: float
    alpha: float

    @property
    def above_majority(self) -> bool:
        """True when the accuracy is above the majority rate at level ``alpha``."""
        return bool(self.p_value < self.alpha)

    def describe(self) -> str:
        """The numbers in words: accuracy, interval, both baselines, the test."""
        return (
            f"{self.task} accuracy {_pct(self.accuracy)} ({self.correct} of {self.n}; "
            f"{self.confidence:.0%} Wilson interval {_pct(self.ci_low)}–{_pct(self.ci_high)}) "
            f"against a majority rate of {_pct(self.majority_rate)} (always answering "
            f"'{self.majority_class}') and chance {_pct(self.chance_rate)}: one-sided exact "
            f"binomial {p_clause(self.p_value)}"
        )


@dataclass(frozen=True)
class ChanceGuard:
    """The chance guard of one strategy (see :func:`chance_guard`).

    Attributes
    ----------
    strategy : str
    multiclass : AccuracyTest
        All classes.
    binary : AccuracyTest or None
        Positive class vs the rest (None without a positive class among the labels).
    """

    strategy: str
    multiclass: AccuracyTest
    binary: AccuracyTest | None = None

    @property
    def learned(self) -> bool:
        """Whether the n-class accuracy is above the majority rate (features may be read)."""
        return self.multiclass.above_majority

    @property
    def verdict(self) -> str:
        """``"learned"`` or ``"not above chance"``."""
        return "learned" if self.learned else "not above chance"

    def sentence(self) -> str:
        """One plain paragraph: has this strategy learned, and what follows."""
        name = self.strategy or "the model"
        m = self.multiclass
        if self.learned:
            text = f"{name} has learned something: {m.describe()} < {m.alpha:g}."
        else:
            text = (
                f"{name} has NOT learned to tell the classes apart: {m.describe()} ≥ {m.alpha:g}. "
                "Its features are those of a model that guesses, so no feature-level conclusion is "
                "drawn from them: no candidate biomarkers, no shortcut verdicts, no support for or "
                "against the paper's claim."
            )
        b = self.binary
        if b is not None:
            if b.above_majority:
                text += f" {b.describe()} < {b.alpha:g}."
            else:
                text += (
                    f" {b.describe()} ≥ {b.alpha:g}: the 2-class figures are no better than always "
                    f"answering '{b.majority_class}'."
                )
        return text

    def banner(self) -> str | None:
        """A warning for the top of a page, or None when both tests pass."""
        if self.learned and (self.binary is None or self.binary.above_majority):
            return None
        return self.sentence()


def _as_labels(values: Sequence[object] | np.ndarray | pd.Series, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise DataError(
            f"{name} must be one-dimensional (one entry per image), got shape {arr.shape}"
        )
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in arr):
        raise DataError(
            f"{name} has missing entries; every out-of-fold image needs a label and a prediction"
        )
    return np.asarray([str(v) for v in arr], dtype=object)


def accuracy_test(
    y_true: Sequence[object] | np.ndarray,
    y_pred: Sequence[object] | np.ndarray,
    *,
    task: str = "",
    n_classes: int | None = None,
    alpha: float = ALPHA,
    confidence: float = 0.95,
) -> AccuracyTest:
    """Test an accuracy against the majority rate (one-sided exact binomial).

    Parameters
    ----------
    y_true, y_pred : sequence of length n_images
        True and predicted labels (compared as strings).
    task : str, optional
        Named in :meth:`AccuracyTest.describe` (default ``"<k>-class"``).
    n_classes : int, optional
        Classes of the task, for the chance rate (default: distinct true labels).
    alpha : float, default 0.05
    confidence : float, default 0.95
        Of the Wilson interval.

    Returns
    -------
    AccuracyTest

    Raises
    ------
    DataError
        Empty or mismatched inputs, missing entries.
    ConfigError
        ``alpha`` or ``confidence`` outside (0, 1), ``n_classes < 1``.

    Examples
    --------
    Always answering the frequent class is right 88 % of the time, and has learned nothing:

    >>> truth = ["COVID-19"] * 12 + ["rest"] * 88
    >>> t = accuracy_test(truth, ["rest"] * 100)
    >>> t.accuracy, t.majority_class, t.majority_rate, t.above_majority
    (0.88, 'rest', 0.88, False)

    Finding 9 of the 12 positives (2 false alarms) beats that bar:

    >>> pred = ["COVID-19"] * 9 + ["rest"] * 89 + ["COVID-19"] * 2
    >>> t = accuracy_test(truth, pred)
    >>> t.accuracy, round(t.p_value, 3), t.above_majority
    (0.95, 0.015, True)
    >>> round(t.ci_low, 3), round(t.ci_high, 3)
    (0.888, 0.978)
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}")
    truth, pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if truth.size == 0:
        raise DataError("no images to test: y_true is empty")
    if pred.shape != truth.shape:
        raise DataError(
            f"y_pred has {pred.size} entries but y_true has {truth.size}; give one prediction per "
            "image"
        )
    counts = pd.Series(truth).value_counts()
    top = counts[counts == counts.max()].index
    majority_class = str(sorted(top)[0])
    k = int(n_classes) if n_classes is not None else int(counts.size)
    if k < 1:
        raise ConfigError(f"n_classes must be >= 1, got {n_classes!r}")
    n, correct = int(truth.size), int(np.sum(truth == pred))
    majority = float(counts.max() / n)
    result = sps.binomtest(correct, n, min(majority, 1.0), alternative="greater")
    # one class only: nothing can beat always answering it
    p_value = 1.0 if majority >= 1.0 else float(result.pvalue)
    # two-sided interval (the one of the one-sided test would be open-ended)
    low, high = sps.binomtest(correct, n).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return AccuracyTest(
        task=task or f"{k}-class",
        n=n,
        correct=correct,
        accuracy=correct / n,
        ci_low=float(low),
        ci_high=float(high),
        confidence=float(confidence),
        majority_class=majority_class,
        majority_rate=majority,
        chance_rate=1.0 / k,
        p_value=p_value,
        alpha=float(alpha),
    )


def chance_guard(
    labels: Sequence[object] | np.ndarray | pd.Series,
    pred: Sequence[object] | np.ndarray | pd.Series,
    *,
    strategy: str = "",
    positive: str | None = None,
    classes: Sequence[str] | None = None,
    alpha: float = ALPHA,
    confidence: float = 0.95,
) -> ChanceGuard:
    """Test one strategy's pooled out-of-fold predictions against chance and the majority rate.

    Parameters
    ----------
    labels, pred : sequence of length n_images
        True and predicted class of every out-of-fold image.
    strategy : str, optional
        Named in the sentences.
    positive : str, optional
        The positive class of the 2-class task (the paper: COVID-19). When it
        is among the labels, ``binary`` tests "positive vs the rest".
    classes : sequence of str, optional
        The run's classes (for the chance rate; default the distinct labels).
    alpha : float, default 0.05
    confidence : float, default 0.95

    Returns
    -------
    ChanceGuard

    Raises
    ------
    DataError, ConfigError
        As :func:`accuracy_test`.

    Examples
    --------
    >>> labels = ["Normal"] * 40 + ["Pneumonia"] * 40 + ["COVID-19"] * 20
    >>> pred = ["Normal"] * 40 + ["Pneumonia"] * 30 + ["Normal"] * 10 + ["COVID-19"] * 20
    >>> g = chance_guard(labels, pred, strategy="frozen", positive="COVID-19")
    >>> g.verdict, g.multiclass.accuracy, g.multiclass.majority_rate
    ('learned', 0.9, 0.4)
    >>> g.binary.task, g.binary.accuracy, g.binary.majority_rate, g.binary.above_majority
    ('2-class (COVID-19 vs rest)', 1.0, 0.8, True)
    >>> g.banner() is None  # both tests pass: no warning on the page
    True
    """
    truth, guess = _as_labels(labels, "labels"), _as_labels(pred, "pred")
    k = len(classes) if classes is not None else None
    multi = accuracy_test(
        truth,
        guess,
        task=f"{k or len(set(truth))}-class",
        n_classes=k,
        alpha=alpha,
        confidence=confidence,
    )
    binary = None
    if positive is not None and str(positive) in set(truth):
        pos = str(positive)
        binary = accuracy_test(
            np.where(truth == pos, pos, f"not {pos}"),
            np.where(guess == pos, pos, f"not {pos}"),
            task=f"2-class ({pos} vs rest)",
            n_classes=2,
            alpha=alpha,
            confidence=confidence,
        )
    guard = ChanceGuard(strategy=strategy, multiclass=multi, binary=binary)
    if not guard.learned:
        logger.warning(
            "%s: accuracy %.3f is not significantly above the majority rate %.3f (one-sided "
            "binomial p = %.2g, not below %g): no feature-level conclusion will be drawn",
            strategy or "model",
            multi.accuracy,
            multi.majority_rate,
            multi.p_value,
            alpha,
        )
    return guard


def guard_table(guards: Iterable[ChanceGuard]) -> pd.DataFrame:
    """One row per strategy and task: the numbers behind :meth:`ChanceGuard.sentence`.

    Returns
    -------
    DataFrame
        ``strategy, task, n, accuracy, ci_low, ci_high, majority_rate,
        majority_class, chance_rate, p_value, verdict`` (rates as fractions).

    Examples
    --------
    >>> guessing = chance_guard(["a", "b", "c"] * 20, ["a"] * 60, strategy="scratch")
    >>> seeing = chance_guard(["a", "b", "c"] * 20, ["a", "b", "c"] * 20, strategy="frozen")
    >>> guard_table([guessing, seeing])[["strategy", "task", "accuracy", "verdict"]]
      strategy     task  accuracy                      verdict
    0  scratch  3-class  0.333333  not above the majority rate
    1   frozen  3-class  1.000000      above the majority rate
    """
    rows = []
    for g in guards:
        for t in (g.multiclass, g.binary):
            if t is None:
                continue
            rows.append(
                {
                    "strategy": g.strategy,
                    "task": t.task,
                    "n": t.n,
                    "accuracy": t.accuracy,
                    "ci_low": t.ci_low,
                    "ci_high": t.ci_high,
                    "majority_rate": t.majority_rate,
                    "majority_class": t.majority_class,
                    "chance_rate": t.chance_rate,
                    "p_value": t.p_value,
                    "verdict": "above the majority rate"
                    if t.above_majority
                    else "not above the majority rate",
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "strategy",
            "task",
            "n",
            "accuracy",
            "ci_low",
            "ci_high",
            "majority_rate",
            "majority_class",
            "chance_rate",
            "p_value",
            "verdict",
        ],
    )


def withhold_candidates(table: pd.DataFrame, guard: ChanceGuard) -> pd.DataFrame:
    """A candidate table with every verdict withheld because the model did not learn.

    The evidence columns are kept; ``is_candidate`` becomes False for every
    row and ``status`` says why (and what the row would otherwise have been),
    so no feature of a model at chance is called a candidate.

    Parameters
    ----------
    table : DataFrame
        :func:`biomark.analysis.biomarkers.candidate_table` of one strategy
        (``is_candidate``, ``status``).
    guard : ChanceGuard
        That strategy's guard; the table is returned unchanged when it learned.

    Returns
    -------
    DataFrame
        A copy.

    Raises
    ------
    DataError
        If ``table`` lacks ``is_candidate`` or ``status``.

    Examples
    --------
    >>> table = pd.DataFrame({"feature": ["gap_0042"], "is_candidate": [True], "status": ["ok"]})
    >>> guard = chance_guard(["a", "b"] * 10, ["a"] * 20)  # always answers "a": at chance
    >>> out = withhold_candidates(table, guard)
    >>> out["is_candidate"].tolist()
    [False]
    >>> out["status"].iloc[0]
    'withheld: the model is not above chance (accuracy 50.0 % ...); the criteria alone said: ok'
    """
    missing = [c for c in ("is_candidate", "status") if c not in table.columns]
    if missing:
        raise DataError(
            f"candidate table lacks column(s) {missing}; give the output of candidate_table"
        )
    out = table.copy()
    if guard.learned or out.empty:
        return out
    m = guard.multiclass
    why = (
        f"withheld: the model is not above chance (accuracy {_pct(m.accuracy)} vs majority rate "
        f"{_pct(m.majority_rate)}, {p_clause(m.p_value)})"
    )
    out["status"] = [f"{why}; the criteria alone said: {s}" for s in out["status"].astype(str)]
    out["is_candidate"] = pd.array([False] * len(out), dtype="boolean")
    return out
