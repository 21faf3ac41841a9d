"""Cross-validation folds and the validation split, patient-grouped by default.

Folds are computed once per run from the manifest, saved, and reused by
every strategy, so strategies are compared on the same test images.

``grouping: patient`` uses scikit-learn's ``StratifiedGroupKFold`` with the
manifest's ``patient_id`` as groups: all images of a patient land in one fold
and class proportions are kept as far as the groups allow. An empty
``patient_id`` (patient unknown) makes the image its own group.
``grouping: none`` is the paper's plain ``StratifiedKFold`` over images.

Examples
--------
>>> import pandas as pd
>>> manifest = pd.DataFrame({
...     "image_id": [f"i{n}" for n in range(12)],
...     "label": ["A", "B"] * 6,
...     "patient_id": [f"p{n // 2}" for n in range(12)],
... })
>>> folds = make_folds(manifest, k=3, grouping="none", seed=0)
>>> folds["fold"].value_counts().sort_index().tolist()
[4, 4, 4]
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from biomark.exceptions import ConfigError, ManifestError

__all__ = ["Grouping", "check_folds", "make_folds", "patient_groups", "validation_split"]

logger = logging.getLogger(__name__)

Grouping = Literal["patient", "none"]
_GROUPINGS = ("patient", "none")


def _check_columns(manifest: pd.DataFrame, grouping: str) -> None:
    if grouping not in _GROUPINGS:
        raise ConfigError(f"cv.grouping={grouping!r} is not allowed: use 'patient' or 'none'")
    needed = ["image_id", "label"] + (["patient_id"] if grouping == "patient" else [])
    missing = [c for c in needed if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"manifest: missing column(s) {', '.join(missing)} needed for folds "
            f"(grouping={grouping!r}); rebuild the dataset"
        )
    if len(manifest) == 0:
        raise ManifestError("manifest: no rows to split into folds; rebuild the dataset")


def patient_groups(manifest: pd.DataFrame) -> np.ndarray:
    """Group key of every row: its ``patient_id``, or its own image when unknown.

    Parameters
    ----------
    manifest : DataFrame with columns image_id, patient_id

    Returns
    -------
    ndarray of shape (n_images,), dtype object
    """
    patient = manifest["patient_id"].astype("string").fillna("").str.strip()
    own = "image:" + manifest["image_id"].astype(str)
    return np.where(patient == "", own, "patient:" + patient).astype(object)


def _validation_parts(fraction: float) -> int:
    """Folds the validation splitter gets: ``max(2, round(1 / fraction))``."""
    return max(2, round(1.0 / fraction))


def _validation_limits(manifest: pd.DataFrame, grouping: str) -> tuple[int, int, str]:
    """``(capacity, largest class's images, units text)`` of rows to be split for validation.

    The capacity is the most parts the rows can be split into: scikit-learn's
    stratified splitters refuse ``n_splits`` above the image count of every
    class, and a split cannot have more parts than patients (images with
    ``grouping="none"``).
    """
    largest_class = int(manifest["label"].astype(str).value_counts().max())
    if grouping == "patient":
        units, text = len(set(patient_groups(manifest))), "patients"
    else:
        units, text = len(manifest), "images"
    return min(largest_class, units), largest_class, f"{units} {text}"


def _validation_advice(fraction: float, manifest: pd.DataFrame, grouping: str, where: str) -> str:
    """Why a validation split of ``fraction`` cannot be made in these rows, and a value that can."""
    parts = _validation_parts(fraction)
    capacity, largest, units = _validation_limits(manifest, grouping)
    if capacity >= 2:
        # The smallest two-decimal fraction f < 0.5 with max(2, round(1/f)) <= capacity.
        suggest = min(math.ceil(100 / capacity) / 100, 0.45)
        fix = f"set cv.validation_fraction to {suggest:.2f} (1 in {_validation_parts(suggest)}) or more, or 0"
    else:
        fix = "set cv.validation_fraction to 0"
    return (
        f"cv.validation_fraction={fraction} holds out 1 in {parts} of the training folds, but {where} "
        f"({units}, largest class {largest} images) can be split at most {capacity} way(s); "
        f"{fix} (no early stopping), or add images"
    )


def check_folds(
    manifest: pd.DataFrame,
    k: int,
    grouping: Grouping,
    *,
    validation_fraction: float | None = None,
    seed: int = 0,
) -> None:
    """Check, before any training, that ``k`` folds are possible for every class.

    With ``validation_fraction`` it also checks the split that
    :func:`validation_split` makes again inside each fold's training rows
    (``round(1 / fraction)`` parts), on the folds :func:`make_folds` gives for
    ``seed``; when ``k`` itself is too large, the advice names a ``k`` *and*
    a fraction that work together, so following it succeeds.

    Parameters
    ----------
    manifest : DataFrame
        Needs ``image_id``, ``label`` and (for ``grouping="patient"``)
        ``patient_id``.
    k : int
        Number of folds (``cv.k``).
    grouping : {"patient", "none"}
    validation_fraction : float, optional
        ``cv.validation_fraction``; None or 0 skips the validation check.
    seed : int, default 0
        The plan's seed (the folds the validation check looks at).

    Raises
    ------
    ConfigError
        If ``k`` < 2, ``k`` exceeds the number of images of a class, or (with
        ``grouping="patient"``) the number of patients of a class, or the
        validation split cannot be made in some fold's training rows; the
        message names the class or fold, the counts and the fix.
    ManifestError
        If a needed column is missing or the manifest is empty.
    """
    _check_columns(manifest, grouping)
    if k < 2:
        raise ConfigError(f"cv.k={k}: need at least 2 folds")
    labels = manifest["label"].astype(str)
    counts = labels.value_counts()
    smallest = counts.idxmin()
    if grouping == "patient":
        per_class = pd.Series(patient_groups(manifest), index=manifest.index).groupby(labels).nunique()
        fewest = per_class.idxmin()
        k_max = int(per_class[fewest])
    else:
        k_max = int(counts[smallest])
    message = None
    lower = f"lower cv.k to at most {k_max} or " if k_max >= 2 else ""
    if k > counts[smallest]:
        message = (
            f"cv.k={k}: class {smallest!r} has only {counts[smallest]} image(s), fewer than "
            f"the {k} folds; {lower}add images of {smallest!r}"
        )
    elif k > k_max:
        message = (
            f"cv.k={k}: class {fewest!r} has only {k_max} patient(s) "
            f"({counts[fewest]} images), fewer than the {k} folds, so some test fold would "
            f"have no {fewest!r} patient; {lower}use cv.grouping: none (images of one patient "
            "may then fall in different folds)"
        )
    checked_k = k if message is None else k_max
    if validation_fraction and checked_k >= 2:
        folds = make_folds(manifest, checked_k, grouping=grouping, seed=seed)["fold"].to_numpy()
        capacity, fold = min((_validation_limits(manifest[folds != f], grouping)[0], f) for f in range(checked_k))
        if _validation_parts(validation_fraction) > capacity:
            advice = f"fold {fold}: " + _validation_advice(validation_fraction, manifest[folds != fold], grouping, "they")
            if message is None:
                raise ConfigError(advice)
            message += f"; with cv.k={k_max}, also {advice}"
    if message is not None:
        raise ConfigError(message)


def make_folds(
    manifest: pd.DataFrame,
    k: int = 10,
    *,
    grouping: Grouping = "patient",
    seed: int = 0,
) -> pd.DataFrame:
    """Assign every image to one of ``k`` test folds.

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, n_columns)
        Needs ``image_id``, ``label`` and, for ``grouping="patient"``,
        ``patient_id``.
    k : int, default 10
    grouping : {"patient", "none"}, default "patient"
        ``patient``: ``StratifiedGroupKFold(k, shuffle=True,
        random_state=seed)`` with patient groups; ``none``:
        ``StratifiedKFold(k, shuffle=True, random_state=seed)``.
    seed : int, default 0

    Returns
    -------
    DataFrame of shape (n_images, 2)
        Columns ``image_id`` and ``fold`` (0 .. k-1), in manifest order.

    Raises
    ------
    ConfigError
        See :func:`check_folds`.
    ManifestError
        If a needed column is missing or the manifest is empty.
    """
    check_folds(manifest, k, grouping)
    labels = manifest["label"].astype(str).to_numpy()
    n = len(labels)
    fold = np.full(n, -1, dtype=np.int64)
    if grouping == "patient":
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(n), labels, groups=patient_groups(manifest))
    else:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), labels)
    for i, (_, test) in enumerate(splits):
        fold[test] = i
    logger.debug("made %d folds (%s grouping, seed %d) of %d images", k, grouping, seed, n)
    return pd.DataFrame({"image_id": manifest["image_id"].astype(str).to_numpy(), "fold": fold})


def validation_split(
    manifest: pd.DataFrame,
    fraction: float,
    *,
    grouping: Grouping = "patient",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out part of the training folds for early stopping.

    The split is the first of ``round(1 / fraction)`` stratified (and, with
    ``grouping="patient"``, patient-grouped) folds, so the validation share
    is about ``fraction`` (exactly ``1 / round(1 / fraction)`` of the
    patients or images). Classes with too few patients/images for every fold
    are stratified as well as possible.

    Parameters
    ----------
    manifest : DataFrame
        The rows of the *training* folds only.
    fraction : float
        ``cv.validation_fraction`` in [0, 0.5); 0 gives an empty validation set.
    grouping : {"patient", "none"}, default "patient"
    seed : int, default 0

    Returns
    -------
    train : ndarray of shape (n_train,), int
        Sorted positional indices (``manifest.iloc``) of the training rows.
    val : ndarray of shape (n_val,), int
        Sorted positional indices of the validation rows (disjoint patients).

    Raises
    ------
    ConfigError
        If ``fraction`` is outside [0, 0.5), or the rows cannot be split that
        many ways (too few patients/images, or every class smaller than the
        number of parts); the message gives a fraction that works.
    """
    _check_columns(manifest, grouping)
    n = len(manifest)
    if not 0.0 <= fraction < 0.5:
        raise ConfigError(f"cv.validation_fraction={fraction}: use a value in [0, 0.5)")
    if fraction == 0.0:
        return np.arange(n), np.array([], dtype=np.int64)
    n_splits = _validation_parts(fraction)
    labels = manifest["label"].astype(str).to_numpy()
    groups = patient_groups(manifest) if grouping == "patient" else None
    if _validation_limits(manifest, grouping)[0] < n_splits:
        raise ConfigError(_validation_advice(fraction, manifest, grouping, "these rows"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if groups is not None:
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            train, val = next(splitter.split(np.zeros(n), labels, groups=groups))
        else:
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            train, val = next(splitter.split(np.zeros(n), labels))
    for item in caught:
        logger.debug("validation split: %s", item.message)
    if len(val) == 0:  # pragma: no cover - sklearn never returns an empty fold
        raise ConfigError(f"cv.validation_fraction={fraction}: the validation split is empty")
    return np.sort(train), np.sort(val)
