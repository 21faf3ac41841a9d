"""Cross-validation folds and the validation split, patient-grouped by default.

Folds are computed once per run from the manifest, saved, and reused by
every strategy, so strategies are compared on the same test images.

``grouping: patient`` uses scikit-learn's ``StratifiedGroupKFold`` with
groups that join each patient's images with every copy of them
(:func:`fold_groups`): images with the same file SHA-256 (the manifest's
``sha256``, as listed in ``duplicates.csv``) are one group even under two
patient ids or two labels, and with ``near_duplicate_distance`` >= 0 so are
images whose perceptual hashes (``phash``) differ by at most that many bits.
So no copy of a test image is ever trained on. An empty ``patient_id``
(patient unknown) makes the image its own patient.

``grouping: source`` is leave-one-source-out (DeGrave et al. 2021): fold
``i`` tests on every image of the ``i``-th source in name order and trains
on the others, so each test is on a hospital / collection the model never
saw. It needs ``k`` equal to the number of sources and every class in at
least two sources (:func:`check_source_folds` says which are not: a class
from one source would be absent from training when its source is tested).
The validation split inside the training folds is patient-grouped.

``grouping: none`` is the paper's plain ``StratifiedKFold`` over images
(exact duplicates split across folds are then only logged).

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
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from biomark.data.duplicates import PHASH_BITS, hash_words, near_pairs
from biomark.data.sources_audit import class_sources
from biomark.exceptions import ConfigError, ManifestError

__all__ = [
    "Grouping",
    "check_folds",
    "check_source_folds",
    "fold_groups",
    "make_folds",
    "patient_groups",
    "source_folds",
    "validation_split",
]

logger = logging.getLogger(__name__)

Grouping = Literal["patient", "source", "none"]
_GROUPINGS = ("patient", "source", "none")


def _check_columns(manifest: pd.DataFrame, grouping: str) -> None:
    if grouping not in _GROUPINGS:
        raise ConfigError(
            f"cv.grouping={grouping!r} is not allowed: use 'patient', 'source' or 'none'"
        )
    needed = ["image_id", "label"] + {
        "patient": ["patient_id"],
        "source": ["patient_id", "source"],
    }.get(grouping, [])
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

    Examples
    --------
    >>> manifest = pd.DataFrame({"image_id": ["a", "b", "c", "d"],
    ...                          "patient_id": ["p1", "p1", "", None]})
    >>> patient_groups(manifest).tolist()  # unknown patients: each image on its own
    ['patient:p1', 'patient:p1', 'image:c', 'image:d']
    """
    patient = manifest["patient_id"].astype("string").fillna("").str.strip()
    own = "image:" + manifest["image_id"].astype(str)
    return np.where(patient == "", own, "patient:" + patient).astype(object)


def fold_groups(manifest: pd.DataFrame, *, near_duplicate_distance: int = -1) -> np.ndarray:
    """Group of every row: its patient joined with every copy of its images.

    Two rows share a group when they share a patient (:func:`patient_groups`),
    a non-empty file ``sha256`` (exact duplicates), or -- with
    ``near_duplicate_distance`` >= 0 -- perceptual hashes (``phash``, of
    :data:`biomark.data.duplicates.PHASH_BITS` bits; scaled for shorter ones)
    at most that many bits apart; groups are the connected
    components of these links (``scipy.sparse.csgraph``), so a copy chains
    two patients into one group. Absent ``sha256`` / ``phash`` columns add no
    links.

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, ...)
        Needs ``image_id`` and ``patient_id``; uses ``sha256`` and ``phash``.
    near_duplicate_distance : int, default -1
        Largest phash Hamming distance joined, in bits of a 256-bit hash
        (``cv.near_duplicate_distance``; 14 matches ``duplicates.csv``);
        negative: exact duplicates only.

    Returns
    -------
    ndarray of shape (n_images,), int
        Group labels 0 .. n_groups - 1.

    Examples
    --------
    >>> manifest = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "patient_id": ["p1", "p2", "p3", "p3"],
    ...                          "sha256": ["x", "x", "y", "z"]})
    >>> fold_groups(manifest).tolist()  # a and b are one picture under two patients
    [0, 0, 1, 1]
    """  # noqa: E501
    n = len(manifest)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    keys = [pd.Series(patient_groups(manifest))]
    if "sha256" in manifest.columns:
        sha = manifest["sha256"].astype("string").fillna("").str.strip().reset_index(drop=True)
        keys.append(
            sha.where(sha != "", "image:" + manifest["image_id"].astype(str).reset_index(drop=True))
        )
    for key in keys:
        codes, _ = pd.factorize(key)
        first = np.zeros(codes.max() + 1, dtype=np.int64)
        first[codes[::-1]] = np.arange(n)[::-1]  # first row of every key
        rows.append(np.arange(n))
        cols.append(first[codes])
    if near_duplicate_distance >= 0 and "phash" in manifest.columns:
        phash = manifest["phash"].astype("string").fillna("").str.strip().to_numpy(dtype=object)
        lengths = pd.Series([len(h) for h in phash]).value_counts()
        valid = (
            np.flatnonzero([len(h) == lengths.index[0] for h in phash])
            if len(lengths)
            else np.zeros(0, int)
        )
        if len(valid) and lengths.index[0] % 16 == 0:
            words = hash_words(phash[valid])
            i, j, _ = near_pairs(
                words, round(near_duplicate_distance * words.shape[1] * 64 / PHASH_BITS)
            )
            rows.append(valid[i])
            cols.append(valid[j])
    edges_i, edges_j = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(edges_i), dtype=np.int8), (edges_i, edges_j)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def source_folds(manifest: pd.DataFrame) -> np.ndarray:
    """Leave-one-source-out fold of every row: the index of its source in name order.

    Examples
    --------
    >>> source_folds(pd.DataFrame({"source": ["nih", "cohen", "kermany", "cohen"]})).tolist()
    [2, 0, 1, 0]
    """
    sources = manifest["source"].astype(str).to_numpy()
    return np.searchsorted(np.unique(sources), sources).astype(np.int64)


def check_source_folds(manifest: pd.DataFrame, k: int) -> None:
    """Check that leave-one-source-out folds (``cv.grouping: source``) are possible.

    ``k`` must equal the number of sources (one test fold per source), and
    every class must come from at least two sources: when a class's only
    source is the test fold, the class is absent from training, so none of
    its test images can be classified right and its features cannot be
    separated from its source (:func:`biomark.data.sources_audit.class_sources`).

    Parameters
    ----------
    manifest : DataFrame
        Needs ``label`` and ``source``.
    k : int
        ``cv.k``.

    Raises
    ------
    ConfigError
        Fewer than two sources, a class from a single source (naming each
        such class and its source, and the fixes), or ``k`` different from
        the number of sources (naming the value to set).
    ManifestError
        Rows without a source.

    Examples
    --------
    >>> manifest = pd.DataFrame({"label": ["COVID-19", "COVID-19", "Normal", "Normal"],
    ...                          "source": ["cohen", "nih", "kermany", "nih"]})
    >>> check_source_folds(manifest, k=3)  # two sources per class, one fold per source
    >>> check_source_folds(manifest, k=2)
    Traceback (most recent call last):
    ...
    biomark.exceptions.ConfigError: cv.k=2: ... has 3 (cohen, kermany, nih); set cv.k: 3
    """
    source = manifest["source"].astype("string").fillna("").str.strip()
    if source.eq("").any():
        raise ManifestError(
            f"manifest: {int(source.eq('').sum())} image(s) have no source, which cv.grouping: "
            "source needs; rebuild the dataset or fill the source column"
        )
    sources = sorted(source.unique())
    if len(sources) < 2:
        raise ConfigError(
            "cv.grouping: source holds out one source per fold, but every image comes from "
            f"{sources[0]!r}; use cv.grouping: patient, or build the dataset from two or more "
            "sources"
        )
    audit = class_sources(manifest)
    single = audit.loc[audit["single_source"]]
    if len(single):
        listed = "; ".join(
            f"{row['class']} comes only from {row['dominant_source']}"
            for _, row in single.iterrows()
        )
        raise ConfigError(
            "cv.grouping: source (leave-one-source-out) needs every class in at least two sources, "
            f"but {listed}. When that source is the test fold the class is absent from training, "
            "so its test images can never be classified right, and its features cannot be "
            "separated from its source. Add a second source for those classes, leave them out of "
            "the recipe, or use cv.grouping: patient"
        )
    if k != len(sources):
        raise ConfigError(
            f"cv.k={k}: cv.grouping: source makes one test fold per source and the dataset has "
            f"{len(sources)} ({', '.join(sources)}); set cv.k: {len(sources)}"
        )


def _check_group_counts(labels: np.ndarray, groups: np.ndarray, k: int) -> None:
    per_class = pd.Series(groups).groupby(labels).nunique()
    fewest = per_class.idxmin()
    if k > per_class[fewest]:
        raise ConfigError(
            f"cv.k={k}: class {fewest!r} has only {per_class[fewest]} patient group(s) once its "
            "patients are joined with the patients whose images are copies of theirs (see "
            f"duplicates.csv), fewer than the {k} folds; lower cv.k to at most {per_class[fewest]} "
            "or remove the duplicate images"
        )


def _log_split_copies(manifest: pd.DataFrame, fold: np.ndarray, grouping: str) -> None:
    if "sha256" not in manifest.columns:
        return
    sha = manifest["sha256"].astype("string").fillna("").str.strip().to_numpy(dtype=object)
    keep = sha != ""
    spread = pd.Series(fold[keep]).groupby(sha[keep]).nunique()
    if (spread > 1).any():
        logger.warning(
            "%d image(s) have exact copies in another fold (same sha256; see duplicates.csv): with "
            "cv.grouping: %s a test image can also be a training image%s",
            int((spread > 1).sum()),
            grouping,
            " (copies across sources: that source is not unseen)"
            if grouping == "source"
            else "; use cv.grouping: patient to keep copies in one fold",
        )


def _validation_parts(fraction: float) -> int:
    """Folds the validation splitter gets: ``max(2, round(1 / fraction))``."""
    return max(2, round(1.0 / fraction))


def _validation_limits(
    manifest: pd.DataFrame, grouping: str, groups: np.ndarray | None = None
) -> tuple[int, int, str]:
    """``(capacity, largest class's images, units text)`` of rows to be split for validation.

    The capacity is the most parts the rows can be split into: scikit-learn's
    stratified splitters refuse ``n_splits`` above the image count of every
    class, and a split cannot have more parts than patient groups
    (:func:`fold_groups`, or ``groups`` when given; images with
    ``grouping="none"``).
    """
    largest_class = int(manifest["label"].astype(str).value_counts().max())
    if grouping in ("patient", "source"):
        groups = fold_groups(manifest) if groups is None else groups
        units, text = len(set(groups)), "patients"
    else:
        units, text = len(manifest), "images"
    return min(largest_class, units), largest_class, f"{units} {text}"


def _validation_advice(
    fraction: float,
    manifest: pd.DataFrame,
    grouping: str,
    where: str,
    groups: np.ndarray | None = None,
) -> str:
    """Why a validation split of ``fraction`` cannot be made in these rows, and a value that can."""
    parts = _validation_parts(fraction)
    capacity, largest, units = _validation_limits(manifest, grouping, groups)
    if capacity >= 2:
        # The smallest two-decimal fraction f < 0.5 with max(2, round(1/f)) <= capacity.
        suggest = min(math.ceil(100 / capacity) / 100, 0.45)
        fix = (
            f"set cv.validation_fraction to {suggest:.2f} (1 in {_validation_parts(suggest)}) or "
            "more, or 0"
        )
    else:
        fix = "set cv.validation_fraction to 0"
    return (
        f"cv.validation_fraction={fraction} holds out 1 in {parts} of the training folds, but "
        f"{where} ({units}, largest class {largest} images) can be split at most {capacity} "
        f"way(s); {fix} (no early stopping), or add images"
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
    grouping : {"patient", "source", "none"}
        ``source``: see :func:`check_source_folds`.
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

    Examples
    --------
    Three patients per class, four images each:

    >>> manifest = pd.DataFrame({
    ...     "image_id": [f"i{n:02d}" for n in range(24)],
    ...     "label": [("COVID-19", "Normal")[n // 4 % 2] for n in range(24)],
    ...     "patient_id": [f"p{n // 4}" for n in range(24)],
    ... })
    >>> check_folds(manifest, 3, "patient")
    >>> check_folds(manifest, 4, "patient")
    Traceback (most recent call last):
    ...
    biomark.exceptions.ConfigError: cv.k=4: class 'COVID-19' has only 3 patient(s) ...
    """
    _check_columns(manifest, grouping)
    if grouping == "source":
        return check_source_folds(manifest, k)
    if k < 2:
        raise ConfigError(f"cv.k={k}: need at least 2 folds")
    labels = manifest["label"].astype(str)
    counts = labels.value_counts()
    smallest = counts.idxmin()
    if grouping == "patient":
        per_class = (
            pd.Series(patient_groups(manifest), index=manifest.index).groupby(labels).nunique()
        )
        fewest = per_class.idxmin()
        k_max = int(per_class[fewest])
    else:
        k_max = int(counts[smallest])
    message = None
    lower = f"lower cv.k to at most {k_max}, " if k_max >= 2 else ""
    leave_out = (
        "leave the class out of the dataset (`biomark data build --recipe R`, whose `classes:` "
        "list the classes to keep; see data/recipes/)"
    )
    if k > counts[smallest]:
        message = (
            f"cv.k={k}: class {smallest!r} has only {counts[smallest]} image(s), fewer than "
            f"the {k} folds; {lower}add images of {smallest!r}, or {leave_out}"
        )
    elif k > k_max:
        message = (
            f"cv.k={k}: class {fewest!r} has only {k_max} patient(s) "
            f"({counts[fewest]} images), fewer than the {k} folds, so some test fold would "
            f"have no {fewest!r} patient; {lower}add patients of {fewest!r}, {leave_out}, or use "
            "cv.grouping: none (images of one patient may then fall in different folds)"
        )
    checked_k = k if message is None else k_max
    if validation_fraction and checked_k >= 2:
        folds = make_folds(manifest, checked_k, grouping=grouping, seed=seed)["fold"].to_numpy()
        capacity, fold = min(
            (_validation_limits(manifest[folds != f], grouping)[0], f) for f in range(checked_k)
        )
        if _validation_parts(validation_fraction) > capacity:
            advice = f"fold {fold}: " + _validation_advice(
                validation_fraction, manifest[folds != fold], grouping, "they"
            )
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
    near_duplicate_distance: int = -1,
) -> pd.DataFrame:
    """Assign every image to one of ``k`` test folds.

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, n_columns)
        Needs ``image_id``, ``label``, and ``patient_id`` (``patient``) or
        ``patient_id`` and ``source`` (``source``); ``sha256`` and ``phash``
        are used when present.
    k : int, default 10
    grouping : {"patient", "source", "none"}, default "patient"
        ``patient``: ``StratifiedGroupKFold(k, shuffle=True,
        random_state=seed)`` with :func:`fold_groups` (patients joined with
        copies of their images); ``source``: fold = source index in name
        order (:func:`source_folds`; ``seed`` unused); ``none``:
        ``StratifiedKFold(k, shuffle=True, random_state=seed)``.
    seed : int, default 0
    near_duplicate_distance : int, default -1
        ``patient`` only: also join near duplicates (see :func:`fold_groups`).

    Returns
    -------
    DataFrame of shape (n_images, 2)
        Columns ``image_id`` and ``fold`` (0 .. k-1), in manifest order.

    Raises
    ------
    ConfigError
        See :func:`check_folds` and :func:`check_source_folds`; also when
        joining duplicates leaves a class fewer groups than folds.
    ManifestError
        If a needed column is missing or the manifest is empty.

    Examples
    --------
    Three patients per class, four images each:

    >>> manifest = pd.DataFrame({
    ...     "image_id": [f"i{n:02d}" for n in range(24)],
    ...     "label": [("COVID-19", "Normal")[n // 4 % 2] for n in range(24)],
    ...     "patient_id": [f"p{n // 4}" for n in range(24)],
    ... })
    >>> folds = make_folds(manifest, k=3, grouping="patient", seed=0)
    >>> folds.columns.tolist(), folds["fold"].value_counts().sort_index().tolist()
    (['image_id', 'fold'], [8, 8, 8])
    >>> int(folds.groupby(manifest["patient_id"])["fold"].nunique().max())  # one fold a patient
    1
    """
    check_folds(manifest, k, grouping)
    labels = manifest["label"].astype(str).to_numpy()
    n = len(labels)
    fold = np.full(n, -1, dtype=np.int64)
    if grouping == "source":
        fold = source_folds(manifest)
    else:
        if grouping == "patient":
            groups = fold_groups(manifest, near_duplicate_distance=near_duplicate_distance)
            _check_group_counts(labels, groups, k)
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(n), labels, groups=groups)
        else:
            splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(
                np.zeros(n), labels
            )
        for i, (_, test) in enumerate(splits):
            fold[test] = i
    _log_split_copies(manifest, fold, grouping)
    logger.debug("made %d folds (%s grouping, seed %d) of %d images", k, grouping, seed, n)
    return pd.DataFrame({"image_id": manifest["image_id"].astype(str).to_numpy(), "fold": fold})


def validation_split(
    manifest: pd.DataFrame,
    fraction: float,
    *,
    grouping: Grouping = "patient",
    seed: int = 0,
    near_duplicate_distance: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out part of the training folds for early stopping.

    The split is the first of ``round(1 / fraction)`` stratified (and, with
    ``grouping="patient"`` or ``"source"``, grouped by :func:`fold_groups`:
    patients joined with copies of their images) folds, so the validation
    share is about ``fraction``: ``1 / round(1 / fraction)`` of the groups or
    images when they divide evenly into that many stratified parts, otherwise
    the parts differ in size (1 or 2 of 6 patients for ``fraction=0.25``,
    depending on ``seed``). Under ``source`` the validation images come from the
    training sources. Classes with too few groups/images for every fold are
    stratified as well as possible.

    Parameters
    ----------
    manifest : DataFrame
        The rows of the *training* folds only.
    fraction : float
        ``cv.validation_fraction`` in [0, 0.5); 0 gives an empty validation set.
    grouping : {"patient", "source", "none"}, default "patient"
    seed : int, default 0
    near_duplicate_distance : int, default -1
        See :func:`fold_groups`.

    Returns
    -------
    train : ndarray of shape (n_train,), int
        Sorted positional indices (``manifest.iloc``) of the training rows.
    val : ndarray of shape (n_val,), int
        Sorted positional indices of the validation rows (disjoint groups).

    Raises
    ------
    ConfigError
        If ``fraction`` is outside [0, 0.5), or the rows cannot be split that
        many ways (too few patients/images, or every class smaller than the
        number of parts); the message gives a fraction that works.

    Examples
    --------
    Four patients per class, four images each:

    >>> manifest = pd.DataFrame({
    ...     "image_id": [f"i{n:02d}" for n in range(32)],
    ...     "label": [("COVID-19", "Normal")[n // 4 % 2] for n in range(32)],
    ...     "patient_id": [f"p{n // 4}" for n in range(32)],
    ... })
    >>> train, val = validation_split(manifest, 0.25, seed=0)
    >>> len(train), len(val)  # 1 in 4 of the 8 patients: one of each class
    (24, 8)
    >>> set(manifest["patient_id"].iloc[train]) & set(manifest["patient_id"].iloc[val])
    set()
    """
    _check_columns(manifest, grouping)
    n = len(manifest)
    if not 0.0 <= fraction < 0.5:
        raise ConfigError(f"cv.validation_fraction={fraction}: use a value in [0, 0.5)")
    if fraction == 0.0:
        return np.arange(n), np.array([], dtype=np.int64)
    n_splits = _validation_parts(fraction)
    labels = manifest["label"].astype(str).to_numpy()
    grouped = grouping in ("patient", "source")
    groups = (
        fold_groups(manifest, near_duplicate_distance=near_duplicate_distance) if grouped else None
    )
    if _validation_limits(manifest, grouping, groups)[0] < n_splits:
        raise ConfigError(_validation_advice(fraction, manifest, grouping, "these rows", groups))
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
