"""The lung-swap control: do a model's answers follow the lungs or their surroundings?

Blacking out the lungs (:func:`biomark.analysis.blackout.read_blackout`)
makes images no model has seen, and on most runs its reading is "out of
distribution". The lung swap keeps every pixel a real film's: each test film
(the *outside donor*, class ``a``) gets the lung fields of another test film
of a different class (the *lung donor*, class ``b``), pasted over both lung
masks (:func:`biomark.features.report_inputs.swap_lungs`). A model that reads
the lungs answers ``b``; one that reads the surroundings -- a burned-in tag,
a site's collimation, the build of a site's patients -- answers ``a``.

Composites are odd images too (two anatomies meet at the lung border), so
answers are not compared with the original accuracy but between composites
that differ only in their surroundings. For each class ``c``, among the
composites whose lungs are not of class ``c``: are they predicted ``c``
more often when their surroundings are of class ``c`` than when they are
not, at the same lung class? That is a Cochran-Mantel-Haenszel test over
the lung-donor classes (:class:`statsmodels.stats.contingency_tables.StratifiedTable`,
one-sided: surroundings of class ``c`` raise the odds of answering ``c``),
Holm-adjusted over the classes. A class whose answers its surroundings
sway is *flagged*. With no class flagged, the reading is "follows the
lungs" only when composites are answered as their lungs' class more often
than as their surroundings' (one-sided binomial test over the composites
answered as either); a model that reads little of either -- a barely
trained control -- "follows neither".

A flag says where the model finds a class, not that the cue is a shortcut:
some diseases show outside the lung masks (hyperinflation flattens the
diaphragm and narrows the heart; an effusion blunts the costophrenic angle).
A class whose disease lives inside the lungs (COVID-19's peripheral
opacities) flagged here is a shortcut suspect.

Examples
--------
>>> labels = np.array(["a", "b", "c"] * 4)
>>> donors = pair_donors(labels, np.ones(12, bool), seed=0)
>>> bool((labels[donors] != labels).all())
True
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import StratifiedTable

from biomark.analysis.chance import NOT_READABLE_AT_CHANCE, AccuracyTest, accuracy_test
from biomark.analysis.stats import holm
from biomark.exceptions import ConfigError, DataError

__all__ = ["LUNG_SWAP_VERDICTS", "LungSwapReading", "pair_donors", "read_lung_swap"]

#: The readings of the lung-swap control (:func:`read_lung_swap`).
LUNG_SWAP_VERDICTS: tuple[str, ...] = (
    "model at chance",
    "not testable",
    "follows the lungs",
    "follows neither",
    "surroundings sway some classes",
)

#: The per-class table's columns (:attr:`LungSwapReading.per_class`).
PER_CLASS_COLUMNS: tuple[str, ...] = (
    "class",
    "n_surroundings",
    "n_strata",
    "rate_own_surroundings",
    "rate_other_surroundings",
    "odds_ratio",
    "p",
    "p_adjusted",
    "flagged",
)


@dataclass(frozen=True)
class LungSwapReading:
    """What the lung-swap control says (see :func:`read_lung_swap`).

    Attributes
    ----------
    verdict : str
        One of :data:`LUNG_SWAP_VERDICTS`.
    sentence : str
        The verdict with its numbers.
    n : int
        Composites read.
    follows_lungs, follows_surroundings : float
        Share of composites predicted as their lung donor's class, as their
        surroundings' class.
    flagged : tuple of str
        Classes whose answers their surroundings sway (Holm-adjusted p < alpha).
    lungs_p : float
        One-sided binomial p that, among composites answered as their lungs'
        or their surroundings' class, the lungs win more than half (scipy
        ``binomtest``); NaN when no composite was answered as either.
    per_class : DataFrame
        :data:`PER_CLASS_COLUMNS`, one row per class with surroundings in the
        composites. ``n_strata``: lung classes with composites both with and
        without surroundings of class ``c`` (the strata compared; 0: not
        testable). ``rate_own_surroundings``: share predicted ``c`` among
        composites with surroundings of class ``c``; ``rate_other_surroundings``:
        among those with surroundings and lungs of other classes.
    """

    verdict: str
    sentence: str
    n: int
    follows_lungs: float
    follows_surroundings: float
    flagged: tuple[str, ...]
    lungs_p: float
    per_class: pd.DataFrame

    @property
    def label(self) -> str:
        """The verdict with the flagged classes, e.g. "surroundings sway some classes
        (COVID-19)"; "model at chance" reads as
        :data:`~biomark.analysis.chance.NOT_READABLE_AT_CHANCE`."""
        if self.verdict == "model at chance":
            return NOT_READABLE_AT_CHANCE
        return self.verdict + (f" ({', '.join(self.flagged)})" if self.flagged else "")

    @property
    def summary(self) -> str:
        """One line: :attr:`label` and how many composites followed their lungs, and their
        surroundings."""
        return (
            f"{self.label}; {self.follows_lungs:.0%} of {self.n} composites answered as "
            f"their lungs' class, {self.follows_surroundings:.0%} as their surroundings'"
        )


def pair_donors(labels: Sequence[object], usable: np.ndarray, *, seed: int) -> np.ndarray:
    """For every image, a lung donor of another class (seeded); -1 where there is none.

    Parameters
    ----------
    labels : sequence of length n
        Class of each image.
    usable : ndarray of bool, shape (n,)
        Images with a usable lung mask; only they give or receive lungs.
    seed : int

    Returns
    -------
    ndarray of int, shape (n,)
        Position of each image's lung donor, or -1 (unusable mask, or no
        usable image of another class).
    """
    names = np.asarray(labels, dtype=object).astype(str)
    usable = np.asarray(usable, dtype=bool)
    if usable.shape != names.shape:
        raise DataError(f"usable has {usable.size} entries but labels has {names.size}")
    rng = np.random.default_rng(seed)
    donors = np.full(names.size, -1, dtype=np.int64)
    candidates = np.flatnonzero(usable)
    for i in candidates:
        others = candidates[names[candidates] != names[i]]
        if others.size:
            donors[i] = int(rng.choice(others))
    return donors


def _class_test(a: np.ndarray, b: np.ndarray, pred: np.ndarray, c: str) -> dict[str, float]:
    """The stratified 2x2 test for one class: surroundings of ``c`` vs others, at equal lung
    class."""
    keep = b != c  # composites whose lungs are of class c would be answered c by a lung reader
    a, b, hit = a[keep], b[keep], pred[keep] == c
    own = a == c
    tables = []
    for stratum in np.unique(b):
        s = b == stratum
        if own[s].any() and (~own[s]).any():
            tables.append(
                np.array(
                    [
                        [np.sum(own[s] & hit[s]), np.sum(own[s] & ~hit[s])],
                        [np.sum(~own[s] & hit[s]), np.sum(~own[s] & ~hit[s])],
                    ],
                    dtype=float,
                )
            )
    out = {
        "n_surroundings": int(own.sum()),
        "n_strata": len(tables),
        "rate_own_surroundings": float(hit[own].mean()) if own.any() else float("nan"),
        "rate_other_surroundings": float(hit[~own].mean()) if (~own).any() else float("nan"),
        "odds_ratio": float("nan"),
        "p": 1.0,
    }
    if not tables:
        return out
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = StratifiedTable(tables)
        test = table.test_null_odds(correction=False)
        odds = float(table.oddsratio_pooled)
    if np.isfinite(test.pvalue):
        # the 1-df chi-square is a squared z; its sign is that of the hits with own surroundings
        # beyond their expectation under independence, summed over the strata
        excess = sum(t[0, 0] - t[0].sum() * t[:, 0].sum() / t.sum() for t in tables)
        raised = excess > 0
        out["p"] = float(test.pvalue / 2 if raised else 1 - test.pvalue / 2)
    out["odds_ratio"] = odds
    return out


def read_lung_swap(
    labels: Sequence[object],
    pred: Sequence[object],
    lung_labels: Sequence[object],
    pred_swap: Sequence[object],
    *,
    alpha: float = 0.05,
) -> LungSwapReading:
    """Read the lung-swap control: per class, do the surroundings sway the answers?

    Parameters
    ----------
    labels, pred : sequence of length n
        True class and original prediction of each outside donor (the film
        whose surroundings the composite keeps).
    lung_labels : sequence of length n
        Class of the film whose lungs were pasted in.
    pred_swap : sequence of length n
        Prediction for the composite. Rows with a missing ``lung_labels`` or
        ``pred_swap`` (None/NaN: no usable mask, no donor) are left out.
    alpha : float, default 0.05
        Level of the Holm-adjusted per-class tests, and of the chance guard on
        the original predictions.

    Returns
    -------
    LungSwapReading

    Raises
    ------
    DataError
        Mismatched lengths, or no composite to read.
    ConfigError
        ``alpha`` outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    columns = {"a": labels, "p": pred, "b": lung_labels, "s": pred_swap}
    sizes = {k: len(v) for k, v in columns.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"labels, pred, lung_labels and pred_swap differ in length: {sizes}")
    frame = pd.DataFrame({k: np.asarray(v, dtype=object) for k, v in columns.items()})
    frame = frame.dropna().astype(str)
    frame = frame[frame["a"] != frame["b"]]
    if frame.empty:
        raise DataError(
            "no lung-swap composite to read (no usable lung masks, or one class only); "
            "the control cannot be read"
        )
    a, b, s = frame["a"].to_numpy(), frame["b"].to_numpy(), frame["s"].to_numpy()
    n = len(frame)
    n_lungs, n_out = int(np.sum(s == b)), int(np.sum(s == a))
    follows_lungs, follows_out = n_lungs / n, n_out / n
    # The answers of a model at chance are not read, so no class is flagged either.
    original = accuracy_test(frame["a"].to_numpy(), frame["p"].to_numpy(), alpha=alpha)
    classes = sorted(set(a) | set(b))
    rows = [{"class": c, **_class_test(a, b, s, c)} for c in classes if (a == c).any()]
    per_class = pd.DataFrame(rows)
    per_class["p_adjusted"] = holm(per_class["p"].to_numpy())
    per_class["flagged"] = (per_class["p_adjusted"] < alpha) & original.above_majority
    per_class = per_class[list(PER_CLASS_COLUMNS)]
    flagged = tuple(per_class.loc[per_class["flagged"], "class"].astype(str))
    # Does the lung donor win more often than the outside donor? A lung reader answers its lungs'
    # class; a surroundings reader the other; a model reading neither splits them evenly.
    lungs_p = (
        float(binomtest(n_lungs, n_lungs + n_out, 0.5, alternative="greater").pvalue)
        if n_lungs + n_out
        else float("nan")
    )
    shares = (
        f"of {n} composites (each film's surroundings with the lungs of a film of another class), "
        f"{follows_lungs:.0%} are predicted as the class of their lungs and {follows_out:.0%} as "
        "the class of their surroundings"
    )
    verdict, sentence = _verdict(original, per_class, flagged, lungs_p, shares, alpha)
    return LungSwapReading(
        verdict=verdict,
        sentence=sentence + ".",
        n=n,
        follows_lungs=follows_lungs,
        follows_surroundings=follows_out,
        flagged=flagged,
        lungs_p=lungs_p,
        per_class=per_class.reset_index(drop=True),
    )


def _verdict(
    original: AccuracyTest,
    per_class: pd.DataFrame,
    flagged: tuple[str, ...],
    lungs_p: float,
    shares: str,
    alpha: float,
) -> tuple[str, str]:
    """The reading's verdict and its sentence (without the final full stop).

    ``original`` is the chance test of the original predictions
    (:func:`biomark.analysis.chance.accuracy_test`); the first that applies of
    model at chance, not testable, flagged classes, lungs winning
    (``lungs_p < alpha``), else follows neither.
    """
    if not original.above_majority:
        verdict = "model at chance"
        sentence = (
            f"Not readable: on these films the model itself is not above the majority rate "
            f"({original.accuracy:.1%} vs {original.majority_rate:.1%}), so whom its answers "
            "follow says nothing"
        )
    elif not per_class["n_strata"].gt(0).any():
        verdict = "not testable"
        sentence = (
            f"Not testable: no class has composites with and without its surroundings; {shares}"
        )
    elif flagged:
        detail = "; ".join(
            f"{r['class']}: {r['rate_own_surroundings']:.0%} of composites with its surroundings "
            f"are answered {r['class']}, {r['rate_other_surroundings']:.0%} with other "
            f"surroundings (Holm p = {r['p_adjusted']:.2g})"
            for _, r in per_class[per_class["flagged"]].iterrows()
        )
        verdict = "surroundings sway some classes"
        sentence = (
            f"The surroundings of the lungs sway the answers toward {', '.join(flagged)}: "
            f"{detail}. Overall, {shares}. A disease that shows outside the lung masks can explain "
            "this; one that lives in the lungs cannot, and its flag is a shortcut suspect"
        )
    elif lungs_p < alpha:
        verdict = "follows the lungs"
        sentence = (
            f"Follows the lungs: {shares} (one-sided binomial p = {lungs_p:.2g}); for no class do "
            "its surroundings raise the odds of answering it (Cochran-Mantel-Haenszel over the "
            f"lung classes, Holm-adjusted p ≥ {alpha:g})"
        )
    else:
        verdict = "follows neither"
        sentence = (
            f"Follows neither: {shares}, no more often the lungs' class than the surroundings' "
            f"(one-sided binomial p = {lungs_p:.2g}), and for no class do its surroundings raise "
            "the odds of answering it (Cochran-Mantel-Haenszel over the lung classes, "
            f"Holm-adjusted p ≥ {alpha:g}). The model reads too little of either on these "
            "composites for the control to say where it looks"
        )
    return verdict, sentence
