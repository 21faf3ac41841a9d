"""The one input checker of :mod:`biomark.analysis`: matrices and label vectors at the edge.

Every public analysis function that takes a feature matrix or one label per
image checks it here, once, and its inner helpers trust the result (house
rule 5). A failed check raises :class:`~biomark.exceptions.DataError` (a
``ValueError``) whose message names the input (``X``, ``background``,
``importance``, ``labels`` ...), what is wrong and what to do.

:func:`check_matrix` is :func:`sklearn.utils.check_array` (conversion, sparse
and minimum-size checks) with two checks of its own in front and one behind:
the shape and dtype are tested first so the message speaks of images and
features (an ``object`` array, e.g. from a table, is left to ``check_array`` to
convert), and non-finite values are counted per column after, so the message
says how many and where (``check_array`` only says that there are some).
:func:`true_where` reads the tables' tri-state verdict columns (NA: untested)
one way everywhere.

Examples
--------
>>> import numpy as np
>>> check_matrix([[1, 2], [3, 4]]).dtype
dtype('float64')
>>> check_matrix(np.ones(3))
Traceback (most recent call last):
...
biomark.exceptions.DataError: X must be a non-empty 2-D array (n_images, n_features), got shape (3,)
>>> check_labels(["COVID-19", "Normal"], 2, "labels").tolist()
['COVID-19', 'Normal']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_array

from biomark.exceptions import DataError

__all__ = ["check_labels", "check_matrix", "true_where"]


def check_matrix(
    X: Any,
    name: str = "X",
    *,
    dtype: type | None = np.float64,
    min_rows: int = 1,
    rows: str = "rows",
    min_columns: int = 1,
    n_columns: int | None = None,
    fix: str = "drop or repair those images/features first",
) -> np.ndarray:
    """Check a feature matrix and return it as an array.

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        Real numbers, every one finite.
    name : str, default "X"
        The input's name in the caller's signature, used in every message.
    dtype : numpy dtype or None, default np.float64
        The returned dtype; None keeps a numeric dtype as it is (float32 stays float32).
    min_rows : int, default 1
        Fewest rows accepted.
    rows : str, default "rows"
        What a row is, for the message (``"folds (rows)"``, ``"images"``).
    min_columns : int, default 1
        Fewest columns accepted; 0 lets a matrix without features through (a caller
        that handles "no unit is live" itself).
    n_columns : int, optional
        The exact number of columns required (e.g. a head's input features).
    fix : str
        What to do about non-finite values, appended to that message.

    Returns
    -------
    ndarray of shape (n_images, n_features)
        ``X`` converted by :func:`sklearn.utils.check_array` (no copy when it already fits).

    Raises
    ------
    DataError
        ``X`` is not 2-D, is empty, has too few rows, the wrong number of
        columns, values that are not real numbers, or NaN/infinite values.
    """
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < min(min_columns, 1):
        raise DataError(
            f"{name} must be a non-empty 2-D array (n_images, n_features), got shape {arr.shape}"
        )
    if arr.shape[1] < min_columns:
        raise DataError(
            f"{name} needs at least {min_columns} columns (features), got {arr.shape[1]}"
        )
    numeric = np.issubdtype(arr.dtype, np.number) and not np.issubdtype(
        arr.dtype, np.complexfloating
    )
    if (
        not numeric and arr.dtype != object
    ):  # an object array is converted (or refused) by check_array
        raise DataError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape[0] < min_rows:
        raise DataError(f"{name} needs at least {min_rows} {rows}, got {arr.shape[0]}")
    if n_columns is not None and arr.shape[1] != n_columns:
        raise DataError(f"{name} must have shape (n >= {min_rows}, {n_columns}), got {arr.shape}")
    try:
        arr = check_array(
            arr,
            dtype="numeric" if dtype is None else dtype,
            ensure_all_finite=False,
            ensure_min_samples=min_rows,
            ensure_min_features=min_columns,
            input_name=name,
        )
    except (TypeError, ValueError) as err:
        raise DataError(f"{name}: {err}") from err
    finite = np.isfinite(arr)
    if not finite.all():
        bad_columns = np.flatnonzero(~finite.all(axis=0))
        raise DataError(
            f"{name} holds {int(arr.size - np.count_nonzero(finite))} NaN/Inf value(s): NaN or "
            f"infinite values in {bad_columns.size} column(s) (first: {bad_columns[:5].tolist()}); "
            f"{fix}"
        )
    return arr


def check_labels(values: Sequence[Any] | np.ndarray, n: int, name: str) -> np.ndarray:
    """Check one label (class, source, patient ...) per row and return them as text.

    Parameters
    ----------
    values : sequence of length n
        One entry per image; each is written as ``str(value)``.
    n : int
        Rows of the matrix the labels belong to.
    name : str
        The input's name in the caller's signature (``labels``, ``sources``).

    Returns
    -------
    ndarray of shape (n,), dtype object
        The entries as ``str``.

    Raises
    ------
    DataError
        Not one entry per row, or empty entries.
    """
    arr = np.asarray([str(v) for v in values], dtype=object)
    if arr.shape != (n,):
        raise DataError(f"{name} must have one entry per row of X ({n}), got {arr.shape[0]}")
    empty = np.flatnonzero(arr == "")
    if empty.size:
        raise DataError(
            f"{name} has {empty.size} empty entries (first rows: {empty[:5].tolist()}); every "
            "image needs one"
        )
    return arr


def true_where(values: pd.Series) -> pd.Series:
    """A tri-state verdict column (True, False, NA; bool or object dtype) as plain bool.

    The report's tables leave a verdict NA where it was not tested (e.g.
    ``is_candidate`` of an undetermined row, ``flag_outside_lungs`` where
    localisation did not run); for counting and selecting, NA is not True.

    Examples
    --------
    >>> true_where(pd.Series([True, None, False], dtype=object)).tolist()
    [True, False, False]
    """
    return values.astype("boolean").fillna(False).astype(bool)
