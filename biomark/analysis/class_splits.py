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

The report's worker processes need them too: each strategy whose folds train
networks of their own audits the run's images in the same order, and on the
demo every one of the 3 workers and the report's own process made the same 7
classes' splits (about 2.4 CPU s each, 7 of the report's 100 CPU s spent again).
Inside :func:`shared_splits` a process reads the splits another one wrote to
a shared folder instead of making them again, and the first to ask for a key
makes and writes them while the others wait for the file (the claim is a file
created exclusively and removed once the splits are written or have failed; a
claimer that has not written within :data:`CLAIM_WAIT_SECONDS` is not waited
for longer: then each process makes its own).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.io.atomic import write_bytes_atomic

__all__ = ["CLAIM_WAIT_SECONDS", "class_splits", "shared_splits"]

Split = tuple[np.ndarray, np.ndarray]
_Key = tuple[tuple, tuple | None, int, int, int]

#: How long a process waits for splits that another one has claimed before making them itself.
CLAIM_WAIT_SECONDS = 120.0
#: The folder of :func:`shared_splits`, None outside it.
_shared_folder: Path | None = None


@contextlib.contextmanager
def shared_splits(folder: str | Path) -> Iterator[None]:
    """Within the block, share the splits :func:`class_splits` makes with other processes through
    ``folder`` (an existing folder every process can write, e.g. a temporary one of the caller).

    Examples
    --------
    >>> import tempfile
    >>> src = np.array(["a", "b"] * 6)
    >>> with tempfile.TemporaryDirectory() as tmp, shared_splits(tmp):
    ...     splits = class_splits(src, None, None, n_splits=3, n_repeats=1, seed=5)
    ...     written = len(list(Path(tmp).glob("*.pickle")))
    >>> len(splits), written
    (3, 1)
    """
    global _shared_folder
    previous, _shared_folder = _shared_folder, Path(folder)
    try:
        yield
    finally:
        _shared_folder = previous


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
    cached = _cached_splits(
        (
            tuple(np.asarray(sources).tolist()),
            None if groups is None else tuple(np.asarray(groups).tolist()),
            int(n_splits),
            int(n_repeats),
            int(seed),
        )
    )
    return None if cached is None else list(cached)


@functools.lru_cache(maxsize=32)
def _cached_splits(key: _Key) -> tuple[Split, ...] | None:
    """The splits of ``key``, made once per process: read from the shared folder when another
    process wrote them, else made (and written there, inside :func:`shared_splits`)."""
    folder = _shared_folder
    if folder is None:
        return _shuffled_splits(*key)
    digest = hashlib.sha256(pickle.dumps(key, protocol=5)).hexdigest()
    result, claim = folder / f"{digest}.pickle", folder / f"{digest}.claim"
    if not result.is_file():
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # another process makes them: wait for its file
            deadline = time.monotonic() + CLAIM_WAIT_SECONDS
            while not result.is_file() and claim.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            try:
                splits = _shuffled_splits(*key)
                write_bytes_atomic(result, pickle.dumps(splits, protocol=5))
            finally:
                claim.unlink(missing_ok=True)  # the file, or nothing to wait for
            return splits
    if not result.is_file():  # the claimer failed, died or stalled
        return _shuffled_splits(*key)
    # written by this report's own processes into its temporary folder, not user input
    return _read_only(pickle.loads(result.read_bytes()))


def _read_only(splits: tuple[Split, ...] | None) -> tuple[Split, ...] | None:
    """``splits`` with every array read-only (an unpickled array is writeable)."""
    for train, test in splits or ():
        train.setflags(write=False)
        test.setflags(write=False)
    return splits


def _shuffled_splits(
    sources: tuple, groups: tuple | None, n_splits: int, n_repeats: int, seed: int
) -> tuple[Split, ...] | None:
    """The shuffled stratified (grouped) splits of :func:`class_splits`."""
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
