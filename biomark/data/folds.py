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


def check_folds(manifest: pd.DataFrame, k: int, grouping: Grouping) -> None:
    """Check, before any training, that ``k`` folds are possible for every class.

    Parameters
    ----------
    manifest : DataFrame
        Needs ``image_id``, ``label`` and (for ``grouping="patient"``)
        ``patient_id``.
    k : int
        Number of folds (``cv.k``).
    grouping : {"patient", "none"}

    Raises
    ------
    ConfigError
        If ``k`` < 2, ``k`` exceeds the number of images of a class, or (with
        ``grouping="patient"``) the number of patients of a class; the message
        names the class, its count and the fix.
    ManifestError
        If a needed column is missing or the manifest is empty.
    """
    _check_columns(manifest, grouping)
    if k < 2:
        raise ConfigError(f"cv.k={k}: need at least 2 folds")
    labels = manifest["label"].astype(str)
    counts = labels.value_counts()
    smallest = counts.idxmin()
    if k > counts[smallest]:
        raise ConfigError(
            f"cv.k={k}: class {smallest!r} has only {counts[smallest]} image(s), fewer than "
            f"the {k} folds; lower cv.k to at most {counts[smallest]} or add images of {smallest!r}"
        )
    if grouping == "patient":
        groups = pd.Series(patient_groups(manifest), index=manifest.index)
        per_class = groups.groupby(labels).nunique()
        fewest = per_class.idxmin()
        if k > per_class[fewest]:
            raise ConfigError(
                f"cv.k={k}: class {fewest!r} has only {per_class[fewest]} patient(s) "
                f"({counts[fewest]} images), fewer than the {k} folds, so some test fold would "
                f"have no {fewest!r} patient; lower cv.k to at most {per_class[fewest]} or use "
                "cv.grouping: none (images of one patient may then fall in different folds)"
            )


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
        If ``fraction`` is outside [0, 0.5), or there are too few patients
        (images) for a split of that size.
    """
    _check_columns(manifest, grouping)
    n = len(manifest)
    if not 0.0 <= fraction < 0.5:
        raise ConfigError(f"cv.validation_fraction={fraction}: use a value in [0, 0.5)")
    if fraction == 0.0:
        return np.arange(n), np.array([], dtype=np.int64)
    n_splits = max(2, round(1.0 / fraction))
    labels = manifest["label"].astype(str).to_numpy()
    if grouping == "patient":
        groups = patient_groups(manifest)
        units, unit_name = len(set(groups)), "patients"
    else:
        groups, units, unit_name = None, n, "images"
    if units < n_splits:
        raise ConfigError(
            f"cv.validation_fraction={fraction}: the training folds have only {units} "
            f"{unit_name}, too few to hold out 1 in {n_splits}; set cv.validation_fraction: 0 "
            "(no early stopping) or add data"
        )
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
