"""What a matched unit family reads on the reference images every fold's model embedded.

:func:`biomark.analysis.alignment.align_folds` pairs each fold's GAP units
with the reference fold's into *unit families* (reference unit ``j`` with its
per-fold members). Here those families are read on the common reference
images:

* :func:`family_consensus` -- each family's reading: the mean of its members,
  each standardised over the reference images.
* :func:`within_class_member_r` -- per class, how well a family's members
  agree on that class's own images (the weakest correlation over the folds).
* :func:`agreeing_classes` -- per family, the classes on which its members
  agree at a given correlation: the one reading of that table every page uses.

numpy/pandas only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from biomark.analysis.alignment import FoldAlignment
from biomark.exceptions import DataError

__all__ = ["agreeing_classes", "family_consensus", "within_class_member_r"]


def family_consensus(reference: Mapping[int, np.ndarray], alignment: FoldAlignment) -> np.ndarray:
    """Each unit family's consensus on the reference images: the mean of its standardised members.

    An out-of-fold value is one member's reading of an image, and members of
    one family agree only as well as they were matched (median r often
    0.5-0.7), so within-class statistics on pooled out-of-fold values carry
    that disagreement as noise. Every fold's model embedded the same
    reference images, so each member is standardised over them (mean 0,
    standard deviation 1; a silent member contributes 0) and the members are
    averaged. Averaging over folds means that a model which trained on an
    image reads it too: use the consensus for what a family tracks *within*
    a class, not for tests of class separation, which training optimised.

    Parameters
    ----------
    reference : mapping of int to ndarray of shape (n_images, n_units)
        Per fold of ``alignment``: the reference images through that fold's
        model, rows in the same order in every fold, finite.
    alignment : FoldAlignment

    Returns
    -------
    ndarray of shape (n_images, n_units)
        Column ``j``: family ``j``'s consensus. For the identity alignment of
        one shared backbone every member is the same unit, so this is that
        unit standardised.

    Raises
    ------
    DataError
        If a fold of the alignment has no activations, or the folds' shapes
        differ from each other or from the alignment's width.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> signal = rng.standard_normal((300, 1))
    >>> folds = {f: 2.0 * f + (1 + f) * (signal + rng.standard_normal((300, 1))) for f in range(3)}
    >>> from biomark.analysis.alignment import identity_alignment
    >>> al = identity_alignment([0, 1, 2], 1)
    >>> one = np.corrcoef(folds[0][:, 0], signal[:, 0])[0, 1]
    >>> mean = np.corrcoef(family_consensus(folds, al)[:, 0], signal[:, 0])[0, 1]
    >>> bool(mean > one)
    True
    """
    shape = _check_reference(reference, alignment, "family_consensus")
    total = np.zeros(shape, dtype=np.float64)
    for f in alignment.folds:
        z = _standardise(np.asarray(reference[f], dtype=np.float64), constant=0.0)
        total += z[:, alignment.perms[f]]
    return total / len(alignment.folds)


def _check_reference(
    reference: Mapping[int, np.ndarray], alignment: FoldAlignment, caller: str
) -> tuple[int, int]:
    """The shape every fold's reference activations share; DataError when a fold is missing or the
    shapes do not fit the alignment."""
    missing = [f for f in alignment.folds if f not in reference]
    if missing:
        raise DataError(f"{caller}: fold(s) {missing} have no reference activations")
    shapes = {np.asarray(reference[f]).shape for f in alignment.folds}
    shape = next(iter(shapes))
    if len(shapes) != 1 or len(shape) != 2 or shape[1] != alignment.n_units:
        raise DataError(
            f"{caller}: reference activations of shapes {sorted(shapes)} do not fit "
            f"{alignment.n_units} units in every fold"
        )
    return shape[0], shape[1]


def _standardise(x: np.ndarray, *, constant: float) -> np.ndarray:
    """Columns to mean 0, standard deviation 1; ``constant`` for constant columns."""
    sd = x.std(axis=0)
    return np.divide(x - x.mean(axis=0), sd, out=np.full_like(x, constant), where=sd > 0)


def within_class_member_r(
    reference: Mapping[int, np.ndarray],
    alignment: FoldAlignment,
    labels: Sequence[object] | np.ndarray,
    *,
    min_images: int = 10,
) -> pd.DataFrame:
    """Per class and family: how well the family's members agree on the class's own images.

    A match over all reference images is dominated by the classes'
    differences: two members that grade the same finding within a class but
    differ in which other classes they fire for correlate near 0 there (on
    the demo's scratch folds, members matched at r = -0.1 over all images
    correlated at 0.2-0.7 within Effusion). A match within classes
    (``align_folds(labels=...)``) removes that, but pools every class's
    variation, and a unit may grade one class only. On one class's own images
    the correlation reads whether the members track the same variation there:
    the measure of "what the units track" for families the match paired
    poorly.

    Parameters
    ----------
    reference : mapping of int to ndarray of shape (n_images, n_units)
        Per fold of ``alignment``: the reference images through that fold's
        model, rows in the same order in every fold, finite.
    alignment : FoldAlignment
    labels : sequence or ndarray, length n_images
        Class of each reference image (NaN or None: left out).
    min_images : int, default 10
        Classes with fewer reference images get NaN.

    Returns
    -------
    DataFrame of shape (n_units, n_classes)
        Index: family ``j``; one column per class (sorted): the weakest
        Pearson correlation, over the other folds, between the reference
        fold's member and that fold's member on the class's images (NaN for a
        silent member, a class too small, or the identity's single backbone
        compared with itself: 1).

    Raises
    ------
    DataError
        If a fold has no activations or the shapes do not fit.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> grade = rng.standard_normal(40)
    >>> labels = np.repeat(["a", "b"], 20)
    >>> offset = np.where(labels == "a", 5.0, 0.0)  # fold 1's unit also fires for class a
    >>> folds = {0: grade[:, None], 1: (grade + offset)[:, None]}
    >>> al = FoldAlignment(0, [0, 1], {0: np.array([0]), 1: np.array([0])}, {0: np.ones(1), 1: np.ones(1)})
    >>> within_class_member_r(folds, al, labels).round(2).to_dict("list")
    {'a': [1.0], 'b': [1.0]}
    """  # noqa: E501
    n_images, n_units = _check_reference(reference, alignment, "within_class_member_r")
    names = pd.Series(list(labels), dtype=object)
    if len(names) != n_images:
        raise DataError(
            f"within_class_member_r: {len(names)} labels for {n_images} reference images"
        )
    known = names.notna().to_numpy()
    text = names.astype(str).to_numpy()
    others = [f for f in alignment.folds if alignment.identity or f != alignment.reference_fold]
    out = pd.DataFrame(index=pd.RangeIndex(n_units, name="family"), dtype=np.float64)
    for c in sorted(set(text[known])):
        rows = known & (text == c)
        if rows.sum() < min_images or not others:
            out[c] = np.nan
            continue

        def members(fold: int, rows: np.ndarray = rows) -> np.ndarray:
            # NaN for a silent member, which then leaves its family NaN
            x = np.asarray(reference[fold], dtype=np.float64)[rows]
            return _standardise(x, constant=np.nan)[:, alignment.perms[fold]]

        ref = members(alignment.reference_fold)
        out[c] = np.min([(ref * members(f)).mean(axis=0) for f in others], axis=0)
    return out


def agreeing_classes(member_r: pd.DataFrame, min_r: float) -> pd.Series:
    """Per family, the classes on whose images its members agree at ``min_r`` or more.

    One reading of a :func:`within_class_member_r` table for every page: the
    report's index quotes the share of families with any such class, the
    radiomics page names the classes beside each family.

    Parameters
    ----------
    member_r : DataFrame of shape (n_families, n_classes)
        As returned by :func:`within_class_member_r` (NaN: not measured).
    min_r : float
        Weakest member correlation that counts as agreeing.

    Returns
    -------
    Series of str, indexed as ``member_r``
        The agreeing classes in column order, comma-separated; ``""`` for none.

    Examples
    --------
    >>> table = pd.DataFrame({"a": [0.9, 0.1, np.nan], "b": [0.6, 0.2, 0.7]})
    >>> agreeing_classes(table, 0.5).tolist()
    ['a, b', '', 'b']
    """
    agree = member_r.to_numpy(dtype=np.float64) >= min_r  # NaN compares False
    columns = [str(c) for c in member_r.columns]
    return pd.Series(
        [", ".join(c for c, ok in zip(columns, row, strict=True) if ok) for row in agree],
        index=member_r.index,
        dtype=object,
    )
