"""What a unit without a learned preference for any region reads as its lung fraction.

A feature's lung fraction (:mod:`biomark.analysis.localisation`) is not read
against the lungs' share of the image. By occlusion, the units of a random
MobileNetV2 read about 0.50 on the demo phantom, 2.3 times the lungs' 21.5 % of
the film, because filling the lungs with the mean image changes more than
filling the rest, whose letterbox and background differ little from the mean.
A fixed threshold of 0.5 therefore sits inside what random units read, and
flags "outside the lungs" units that prefer no region at all.

:class:`LungNull` holds the lung fractions of the units of random-weight
copies of the run's network, measured the same way on the run's films
(:func:`biomark.report.random_units.run_lung_null` builds it), and turns
them into the two thresholds the criteria use: a feature is *in the lungs*
when it reads more than the null's upper quantile (and at least the plan's
``min_lung_fraction``), and is flagged *outside the lungs* when it reads less
than the null's lower quantile (and less than ``min_lung_fraction``).
Between the two it shows no preference that a random unit would not show.

numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

__all__ = ["LungNull", "unit_lung_fractions"]

#: The null's two-sided band: a feature is read against its 5th and 95th percentiles.
NULL_QUANTILE = 0.05


def unit_lung_fractions(inside: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Per unit, the share of its activation (or occlusion effect) inside the lungs, pooled over
    images.

    Parameters
    ----------
    inside, total : ndarray of shape (n_images, n_units)
        Per image, the unit's mass (or effect) inside the lungs and in total
        (:func:`biomark.analysis.localisation.lung_mass`,
        :func:`~biomark.analysis.localisation.occlusion_effects`); NaN where unknown.

    Returns
    -------
    ndarray of shape (n_units,)
        ``sum inside / sum total``; NaN for a unit that is silent on every image.

    Examples
    --------
    >>> unit_lung_fractions(np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([[2.0, 0.0], [6.0, 0.0]]))
    array([0.5, nan])
    """
    tot = np.nansum(np.asarray(total, dtype=np.float64), axis=0)
    ins = np.nansum(np.asarray(inside, dtype=np.float64), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tot > 0, ins / tot, np.nan)


@dataclass(frozen=True)
class LungNull:
    """The lung fractions of units without a learned preference, and the thresholds they set.

    Attributes
    ----------
    fractions : ndarray of shape (n_units,)
        Lung fraction of every unit of a random-weight network that is not
        silent on the films, by the same method and on the same films as the
        features read against it.
    n_images : int
        Films the null was measured on.
    source : str
        What the units are, for the report (e.g. "1280 units of a random
        backbone (seed 4000)").
    method : str, default ""
        How the fractions were measured (``"occlusion"`` or ``"out_relu"``
        maps): a feature is read against a null of its own method only.
    quantile : float, default 0.05
        Lower quantile of the band; the upper one is ``1 - quantile``.

    Examples
    --------
    >>> null = LungNull(np.linspace(0.44, 0.52, 101), n_images=768, source="random units")
    >>> round(null.low, 3), round(null.high, 3)
    (0.444, 0.516)
    >>> round(null.inside_threshold(0.5), 3), round(null.outside_threshold(0.5), 3)
    (0.516, 0.444)
    """

    fractions: np.ndarray
    n_images: int
    source: str
    method: str = ""
    quantile: float = NULL_QUANTILE

    def __post_init__(self) -> None:
        values = np.asarray(self.fractions, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError(f"{self.source}: no unit has a finite lung fraction")
        if not 0.0 < self.quantile < 0.5:
            raise ValueError(f"quantile must lie in (0, 0.5), got {self.quantile!r}")
        object.__setattr__(self, "fractions", values)

    @property
    def low(self) -> float:
        """The lower quantile: below it a unit reads further outside than most random units."""
        return float(np.quantile(self.fractions, self.quantile))

    @property
    def median(self) -> float:
        return float(np.median(self.fractions))

    @property
    def high(self) -> float:
        """The upper quantile: above it a unit reads further inside than most random units."""
        return float(np.quantile(self.fractions, 1.0 - self.quantile))

    @property
    def lower_percentile(self) -> int:
        """The band's lower edge as a percentile (5 for the default quantile)."""
        return round(100 * self.quantile)

    @property
    def upper_percentile(self) -> int:
        """The band's upper edge as a percentile (95): a feature beyond it reads further than
        that share of random units."""
        return 100 - self.lower_percentile

    def inside_threshold(self, min_lung_fraction: float) -> float:
        """The lung fraction a feature needs to count as in the lungs: beyond the null and at
        least ``min_lung_fraction``."""
        return max(float(min_lung_fraction), self.high)

    def outside_threshold(self, min_lung_fraction: float) -> float:
        """Below this a feature is flagged outside the lungs: below the null and below
        ``min_lung_fraction``."""
        return min(float(min_lung_fraction), self.low)

    def share_below(self, threshold: float) -> float:
        """The share of random units that read below ``threshold``."""
        return float(np.mean(self.fractions < threshold))

    def excess_below(self, n_below: int, n_tested: int, threshold: float) -> float:
        """One-sided binomial p that ``n_below`` of ``n_tested`` features below ``threshold`` are
        more than random units' share there would give (1.0 when nothing was tested).

        Examples
        --------
        >>> null = LungNull(np.linspace(0.4, 0.6, 1001), n_images=10, source="x")
        >>> round(null.excess_below(2, 140, 0.41), 2), null.excess_below(30, 140, 0.41) < 1e-6
        (0.99, True)
        """
        if n_tested <= 0:
            return 1.0
        share = self.share_below(threshold)
        return float(binomtest(int(n_below), int(n_tested), share, alternative="greater").pvalue)

    def outside_excess(
        self, n_flagged: int, lung_fractions: np.ndarray, min_lung_fraction: float
    ) -> tuple[int, float, float]:
        """Are ``n_flagged`` features flagged outside the lungs more than random units would give?

        ``lung_fractions`` are the tested features' fractions (NaN: not measured).
        Returns how many were measured, how many random units' share of them would
        read below the outside threshold, and the one-sided binomial p
        (:meth:`excess_below`): the run-level reading of the per-feature flags.

        Examples
        --------
        >>> null = LungNull(np.linspace(0.4, 0.6, 1001), n_images=10, source="x")
        >>> tested, expected, p = null.outside_excess(2, np.full(140, 0.5), 0.5)
        >>> tested, round(expected, 1), round(p, 2)
        (140, 7.0, 0.99)
        """
        below = self.outside_threshold(min_lung_fraction)
        tested = int(np.isfinite(np.asarray(lung_fractions, dtype=float)).sum())
        return tested, self.share_below(below) * tested, self.excess_below(n_flagged, tested, below)

    def band(self) -> str:
        """The null in words, e.g. "median 0.48, 5th-95th percentile 0.44-0.50"."""
        return (
            f"median {self.median:.2f}, {self.lower_percentile}th-{self.upper_percentile}th "
            "percentile "
            f"{self.low:.2f}-{self.high:.2f}"
        )
