"""Which class a network's within-class variation lies in.

Units are matched across folds on their activations centred within each class
(:func:`biomark.analysis.alignment.centre_within_classes`): the pooled
within-class correlation. Pooling weighs each class by how much the units vary
there, and one class can hold nearly all of it: on the phantom's scratch
networks about 96 % of a typical unit's within-class variation lies in
Emphysema films, where the planted severity changes the lungs' anatomy. A
family "matched at r >= 0.5" then agrees on that class, and says little about
the class it is shortlisted for; its members' agreement on that class's own
images (:func:`biomark.analysis.unit_families.within_class_member_r`) does.
A network whose largest variation lies in another class pairs poorly with the
others, whatever its units grade.

* :func:`class_variation_shares` -- per unit, the share of its within-class
  sum of squares that each class holds;
* :func:`dominant_class` -- :class:`ClassDominance`: the class holding the
  most, for the median unit, and for how many units it is the largest.

numpy/pandas only.

Examples
--------
Two units that vary ten times as much within class "b" as within "a":

>>> rng = np.random.default_rng(0)
>>> labels = np.repeat(["a", "b"], 50)
>>> x = rng.standard_normal((100, 2)) * np.where(labels == "b", 10.0, 1.0)[:, None]
>>> dom = dominant_class(x, labels)
>>> dom.cls, round(dom.median_share, 2), dom.share_of_units
('b', 0.99, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biomark.analysis.alignment import centre_within_classes
from biomark.exceptions import DataError

__all__ = ["DOMINANT_SHARE", "ClassDominance", "class_variation_shares", "dominant_class"]

#: A class holding at least this share of the median unit's within-class variation is the one a
#: within-class match mostly reads, and the pages name it.
DOMINANT_SHARE = 0.5


def class_variation_shares(x: np.ndarray, labels: Sequence[object] | np.ndarray) -> pd.DataFrame:
    """Per unit, the share of its within-class sum of squares that each class holds.

    Parameters
    ----------
    x : ndarray of shape (n_images, n_units)
        One network's activations, finite.
    labels : sequence or ndarray, length n_images
        Class of each image; NaN or None rows are left out.

    Returns
    -------
    DataFrame of shape (n_units, n_classes)
        Rows sum to 1; a unit constant within every class gets NaN.

    Raises
    ------
    DataError
        If ``labels`` does not have one entry per row of ``x``.

    Examples
    --------
    >>> x = np.array([[0.0, 1.0], [2.0, 1.0], [5.0, 0.0], [5.0, 4.0]])
    >>> class_variation_shares(x, ["a", "a", "b", "b"]).round(2).to_dict("list")
    {'a': [1.0, 0.0], 'b': [0.0, 1.0]}
    """
    names = pd.Series(list(labels), dtype=object)
    if len(names) != np.shape(x)[0]:
        raise DataError(
            f"class_variation_shares: {len(names)} labels for {np.shape(x)[0]} rows of activations"
        )
    centred = centre_within_classes(x, names)
    known = names.notna().to_numpy()
    text = names.astype(str).to_numpy()
    # rows without a class were centred as a group of their own; they count for no class
    table = pd.DataFrame(centred[known] ** 2).groupby(text[known]).sum().T  # units x classes
    total = table.sum(axis=1).to_numpy()
    shares = np.divide(
        table.to_numpy(),
        total[:, None],
        out=np.full(table.shape, np.nan),
        where=total[:, None] > 0,
    )
    return pd.DataFrame(shares, columns=table.columns)


@dataclass(frozen=True)
class ClassDominance:
    """The class holding a network's within-class variation.

    Attributes
    ----------
    cls : str
        The class with the largest median share over the units.
    median_share : float
        That median: the share of a typical unit's within-class variation
        lying in ``cls``.
    share_of_units : float
        Share of the (varying) units whose largest class is ``cls``.
    """

    cls: str
    median_share: float
    share_of_units: float

    @property
    def dominates(self) -> bool:
        """Whether ``cls`` holds at least :data:`DOMINANT_SHARE` of the median unit's variation."""
        return self.median_share >= DOMINANT_SHARE

    def describe(self) -> str:
        """One clause for a log line or a page."""
        return (
            f"{self.median_share:.0%} of the median unit's variation within classes lies in "
            f"{self.cls} images ({self.share_of_units:.0%} of units vary most there)"
        )


def dominant_class(x: np.ndarray, labels: Sequence[object] | np.ndarray) -> ClassDominance | None:
    """The class that holds the most of the units' within-class variation.

    Parameters
    ----------
    x : ndarray of shape (n_images, n_units)
    labels : sequence or ndarray, length n_images

    Returns
    -------
    ClassDominance or None
        None when no unit varies within any class.

    Raises
    ------
    DataError
        If ``labels`` does not have one entry per row of ``x``.
    """
    shares = class_variation_shares(x, labels).dropna()
    if shares.empty:
        return None
    medians = shares.median(axis=0)
    cls = str(medians.idxmax())
    largest = shares.idxmax(axis=1)
    return ClassDominance(cls, float(medians[cls]), float((largest == cls).mean()))
