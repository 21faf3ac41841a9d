"""Train/test splits of one class's images for the within-class source test, made once per input.

:func:`biomark.analysis.audit.source_predictability` splits each class's
images stratified on the source and grouped by patient, shuffled several
times (``n_repeats``). Those splits depend on the sources, the patients and
the seeds only, not on the features, so the report's two radiomic regions
(lungs and outside the lungs, :mod:`biomark.analysis.source_regions`) need
the same splits for the same images. scikit-learn's ``StratifiedGroupKFold``
places the patients one at a time in Python: on the demo phantom (7 classes
of 300 images from about 146 patients, 5 shuffles) the splits were 4-6 s of
the report's serial tail, the same splits made twice. :func:`class_splits`
keeps the last few in a small cache (``functools.lru_cache``) keyed on the
sources, patients and seeds, so the second region reuses the first's.
The arrays it hands back are read-only, as callers share them.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

__all__ = ["class_splits"]

Split = tuple[np.ndarray, np.ndarray]


def class_splits(
    sources: np.ndarray,
    groups: np.ndarray | None,
    folds: np.ndarray | None,
    n_splits: int,
    n_repeats: int,
    seed: int,
) -> list[Split] | None:
    """Train/test splits within one class: the run's folds when given, else stratified on the
    source.

    Parameters
    ----------
    sources : ndarray of shape (n_images,)
        Source of each of the class's images (the stratification target).
    groups : ndarray of shape (n_images,), optional
        Patient of each image: the splits keep a patient's images on one side.
    folds : ndarray of shape (n_images,), optional
        The run's fold of each image: each fold held out in turn (then the
        other arguments are not used).
    n_splits : int
        Folds of the splitter, capped at the patients (or images) of the
        smallest source.
    n_repeats : int
        Shuffles of the splitter (seeds ``seed``, ``seed + 1``, ...), their
        folds listed one after another.
    seed : int

    Returns
    -------
    list of (train, test) index arrays, or None
        None when a source has fewer than 2 patients (no grouped split is
        possible). The arrays are read-only.

    Examples
    --------
    >>> src = np.array(["a", "b"] * 6)
    >>> splits = class_splits(src, None, None, n_splits=3, n_repeats=2, seed=0)
    >>> len(splits), sorted(np.concatenate([test for _, test in splits[:3]]).tolist()) == list(range(12))
    (6, True)
    >>> splits[0][1].flags.writeable
    False
    """  # noqa: E501
    if folds is not None:
        return [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in np.unique(folds)]
    cached = _shuffled_splits(
        tuple(np.asarray(sources).tolist()),
        None if groups is None else tuple(np.asarray(groups).tolist()),
        int(n_splits),
        int(n_repeats),
        int(seed),
    )
    return None if cached is None else list(cached)


@functools.lru_cache(maxsize=32)
def _shuffled_splits(
    sources: tuple, groups: tuple | None, n_splits: int, n_repeats: int, seed: int
) -> tuple[Split, ...] | None:
    """The shuffled stratified (grouped) splits of :func:`class_splits`, cached on their inputs."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(sources)
    if groups is not None:
        k = int(min(n_splits, pd.Series(groups).groupby(y).nunique().min()))
        if k < 2:
            return None
    else:
        k = int(min(n_splits, pd.Series(y).value_counts().min()))
    splitter = (
        StratifiedGroupKFold if groups is not None else StratifiedKFold
    )  # the latter: no groups
    placeholder = np.zeros((y.size, 1))  # the splitters read only the number of rows of X
    splits = []
    for r in range(n_repeats):
        for train, test in splitter(n_splits=k, shuffle=True, random_state=seed + r).split(
            placeholder, y, None if groups is None else np.asarray(groups)
        ):
            train.setflags(write=False)
            test.setflags(write=False)
            splits.append((train, test))
    return tuple(splits)
