"""Where in the lungs a deep feature's radiomic correlate is strongest.

A whole-lung radiomic feature summarises every zone at once, so a deep feature
that grades a perihilar haze correlates with the whole lung's 90th intensity
percentile about as well as with the central zone's: the name of its strongest
correlate does not say where it looks. :func:`leading_zones` reads the same
radiomic feature measured in each zone (``biomark radiomics --region zones``:
columns ``<zone>_<feature>``) and, within each partition of the lungs
(:data:`ZONE_PARTITIONS`: upper / middle / lower, central / peripheral), names
the zone whose correlation with the deep feature leads every other zone of its
partition, with a bootstrap interval of the difference above zero. A feature
that grades a finding spread evenly over the lungs leads in no zone: with every
zone as informative as the others (400 simulated features of 300 films), a
zone led by chance in 1.5 % of them among upper, middle and lower, and in 6 %
between central and peripheral, where a 95 % interval lets through about 5 %.

:func:`radiomic_zones` does that for many features, each with its own
strongest correlate (the candidate table's ``radiomic_zone``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from biomark.data.lungs import ZONES

__all__ = [
    "ZONE_PARTITIONS",
    "base_feature",
    "leading_zones",
    "radiomic_zones",
    "split_zone",
]

#: The lung zones compared with each other: each tuple partitions the lung mask
#: (:func:`biomark.data.lungs.lung_zones`), so its zones do not overlap.
ZONE_PARTITIONS: tuple[tuple[str, ...], ...] = (
    ("upper", "middle", "lower"),
    ("central", "peripheral"),
)

#: Bootstrap resamples per feature.
N_RESAMPLES = 999


def split_zone(name: str) -> tuple[str, str]:
    """A radiomic column's zone (``""`` for a whole-lung feature) and its name without it.

    Examples
    --------
    >>> split_zone("lower_glcm_Idm"), split_zone("glcm_Idm")
    (('lower', 'glcm_Idm'), ('', 'glcm_Idm'))
    """
    head, sep, rest = str(name).partition("_")
    return (head, rest) if head in ZONES and sep else ("", str(name))


def base_feature(name: str) -> str:
    """A radiomic column's name without its zone (``lower_glcm_Idm`` -> ``glcm_Idm``).

    Examples
    --------
    >>> base_feature("central_firstorder_Mean"), base_feature("firstorder_Mean")
    ('firstorder_Mean', 'firstorder_Mean')
    """
    return split_zone(name)[1]


def leading_zones(
    x: np.ndarray,
    regional: pd.DataFrame,
    *,
    sign: float = 1.0,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[str, ...]:
    """The zones where ``x`` tracks a radiomic feature better than in the rest of their partition.

    In each partition of :data:`ZONE_PARTITIONS` whose zones are all columns of
    ``regional``, the zone of largest ``sign * rho`` leads when the
    ``confidence`` percentile-bootstrap interval of its difference from each
    other zone of the partition lies above zero (images resampled with their
    regional values, ``n_resamples`` times, seeded).

    Parameters
    ----------
    x : ndarray of shape (n_images,)
        One deep feature on one class's images.
    regional : DataFrame of shape (n_images, n_zones)
        The same radiomic feature in each zone, columns named by zone (e.g. ``upper``).
    sign : float, default 1
        The sign of the feature's correlation with the radiomic feature: a zone leads
        by correlating more strongly in that direction.
    confidence, n_resamples, seed
        The bootstrap.

    Returns
    -------
    tuple of str
        The leading zones, at most one per partition, in partition order; empty when
        no zone leads.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> grade = rng.normal(size=200)
    >>> regional = pd.DataFrame({z: rng.normal(size=200) for z in ZONES})
    >>> regional["lower"] += 3 * grade
    >>> regional["peripheral"] += grade
    >>> regional["central"] += grade
    >>> leading_zones(grade, regional)
    ('lower',)
    """
    partitions = [p for p in ZONE_PARTITIONS if all(z in regional.columns for z in p)]
    if not partitions or len(x) < 10:
        return ()
    zones = [z for p in partitions for z in p]
    # Spearman is Pearson on ranks; the ranks are taken once over the class's images and the
    # bootstrap resamples them (re-ranking every resample of every shortlisted feature would cost
    # the report seconds for intervals that differ in the third decimal).
    ranks = stats.rankdata(
        np.c_[np.asarray(x, dtype=np.float64), regional[zones].to_numpy(float)], axis=0
    )
    usable = np.isfinite(ranks).all(axis=0) & (np.ptp(ranks, axis=0) > 0)
    if not usable[0]:
        return ()
    moments = _moments(ranks)
    rho = sign * _resampled_r(np.ones((1, len(ranks))), moments)[0]
    pairs: list[tuple[int, int]] = []  # (leader, other) column positions in `zones`, per partition
    for part in partitions:
        cols = [zones.index(z) for z in part if usable[zones.index(z) + 1]]
        if len(cols) < 2:
            continue
        lead = max(cols, key=lambda j: rho[j])
        if rho[lead] <= 0:  # no zone correlates in the correlate's direction
            continue
        pairs.extend((lead, j) for j in cols if j != lead)
    if not pairs:
        return ()
    lead_cols = np.array([j for j, _ in pairs])
    other_cols = np.array([j for _, j in pairs])

    def differences(index: np.ndarray, axis: int = -1) -> np.ndarray:
        batch = np.atleast_2d(index)
        flat = batch + batch.shape[1] * np.arange(len(batch))[:, None]
        counts = np.bincount(flat.ravel(), minlength=batch.size).reshape(batch.shape)
        r = sign * _resampled_r(counts, moments)
        return (r[:, lead_cols] - r[:, other_cols]).T.reshape(len(pairs), *np.shape(index)[:-1])

    interval = stats.bootstrap(
        (np.arange(len(x)),),
        differences,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    low = np.atleast_1d(interval.low)
    leaders = []
    for part in partitions:
        mine = [k for k, (a, _) in enumerate(pairs) if zones[a] in part]
        if mine and all(low[k] > 0 for k in mine):
            leaders.append(zones[pairs[mine[0]][0]])
    return tuple(leaders)


def radiomic_zones(
    X: np.ndarray,
    R: pd.DataFrame,
    top_correlates: Mapping[str, tuple[str, float]],
    feature_names: Sequence[str],
    *,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> pd.Series:
    """Per feature, the zones where its strongest radiomic correlate tracks it best.

    Parameters
    ----------
    X : ndarray of shape (n_images, n_features)
        Deep features on one class's images.
    R : DataFrame of shape (n_images, n_radiomic)
        The same images' radiomics, zone columns ``<zone>_<feature>`` included.
    top_correlates : mapping of str to (str, float)
        Feature name -> its strongest radiomic correlate and their rho; features
        without one are left out.
    feature_names : sequence of str
        The columns of ``X``.
    confidence, n_resamples, seed
        As :func:`leading_zones`.

    Returns
    -------
    Series of str
        Index the features of ``top_correlates``: the leading zones joined by ``", "``,
        ``""`` where none leads or the correlate has no zone columns.
    """
    col = {str(n): i for i, n in enumerate(feature_names)}
    out = {}
    for feature, (radiomic, rho) in top_correlates.items():
        base = base_feature(radiomic)
        zones = [z for z in ZONES if f"{z}_{base}" in R.columns]
        regional = R[[f"{z}_{base}" for z in zones]].set_axis(zones, axis=1)
        lead = leading_zones(
            X[:, col[feature]],
            regional,
            sign=1.0 if rho >= 0 else -1.0,
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
        out[feature] = ", ".join(lead)
    return pd.Series(out, dtype=object)


def _moments(ranks: np.ndarray) -> np.ndarray:
    """Per image, every term Pearson's r of column 0 with the others sums: (n, 1 + 3 k)."""
    return np.c_[ranks, ranks**2, ranks[:, :1] * ranks[:, 1:]]


def _resampled_r(counts: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """Pearson r of column 0 with each other column in resamples given as image counts.

    A resample's moments are its image counts times the per-image terms: one
    matrix product for every resample at once (gathering each resample's values
    instead took four times as long).

    Parameters
    ----------
    counts : ndarray of shape (n_resamples, n_images)
        How often each image is drawn (each row sums to n_images).
    moments : ndarray of shape (n_images, 1 + 3 k)
        :func:`_moments` of the values.

    Returns
    -------
    ndarray of shape (n_resamples, k)
    """
    k = (moments.shape[1] - 1) // 3
    m = counts @ moments / counts.sum(axis=1, keepdims=True)
    mean, square, cross = m[:, : k + 1], m[:, k + 1 : 2 * k + 2], m[:, 2 * k + 2 :]
    var = square - mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return (cross - mean[:, :1] * mean[:, 1:]) / np.sqrt(var[:, :1] * var[:, 1:])
