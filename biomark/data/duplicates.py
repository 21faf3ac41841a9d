"""Exact and near-duplicate images that could leak between folds.

Two images are

* ``exact`` duplicates when their files have the same SHA-256, and
* ``near`` duplicates when the Hamming distance between their 64-bit
  perceptual hashes (``imagehash.phash`` of the letterboxed image) is at most
  ``max_distance`` (default 4 of 64 bits): re-encoded, resized or slightly
  cropped copies.

Only pairs that matter for cross-validation are reported: across classes
(the same picture with two labels) or across patients (the same picture under
two patient ids, which patient-grouped folds cannot keep together). The
search is vectorised: hashes are ``uint64`` and distances come from
``np.bitwise_count(a ^ b)`` over blocks of rows, never a Python loop over pairs.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

__all__ = ["DUPLICATE_COLUMNS", "find_duplicates", "hash_to_uint64", "near_pairs"]

logger = logging.getLogger(__name__)

DUPLICATE_COLUMNS: tuple[str, ...] = (
    "image_id_a",
    "image_id_b",
    "kind",
    "distance",
    "label_a",
    "label_b",
    "patient_a",
    "patient_b",
    "cross_class",
    "cross_patient",
)


def hash_to_uint64(hashes: pd.Series | list[str]) -> np.ndarray:
    """Hex perceptual hashes (16 hex digits) as a uint64 array of shape (n,)."""
    return np.array([int(str(h), 16) for h in hashes], dtype=np.uint64)


def near_pairs(hashes: np.ndarray, max_distance: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with Hamming distance <= ``max_distance``.

    Parameters
    ----------
    hashes : ndarray of shape (n,), uint64
    max_distance : int
    block : int
        Rows compared at once (memory ~ 8 * block * n bytes).

    Returns
    -------
    i, j, distance : ndarray of shape (n_pairs,)

    Examples
    --------
    >>> near_pairs(np.array([0, 1, 0xFF], dtype=np.uint64), 1)
    (array([0]), array([1]), array([1], dtype=uint8))
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    found_i, found_j, found_d = [], [], []
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        distance = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        i, j = np.nonzero(distance <= max_distance)
        i = i + start
        keep = i < j
        found_i.append(i[keep])
        found_j.append(j[keep])
        found_d.append(distance[i[keep] - start, j[keep]])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.uint8)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def find_duplicates(manifest: pd.DataFrame, max_distance: int = 4) -> pd.DataFrame:
    """Exact and near-duplicate pairs across classes or patients.

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, ...)
        Needs columns ``image_id``, ``label``, ``patient_id``, ``sha256`` and
        ``phash`` (16 hex digits).
    max_distance : int, default 4
        Largest Hamming distance (of 64 bits) counted as a near duplicate;
        negative disables the near search.

    Returns
    -------
    DataFrame with columns :data:`DUPLICATE_COLUMNS`
        One row per pair (exact pairs are not repeated as near), sorted by
        kind then image ids.
    """
    frame = manifest.reset_index(drop=True)
    n = len(frame)
    pairs_i: list[np.ndarray] = []
    pairs_j: list[np.ndarray] = []
    kinds: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    sha = frame["sha256"].to_numpy()
    codes, _ = pd.factorize(frame["sha256"])
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    boundaries = np.flatnonzero(np.diff(sorted_codes)) + 1
    for group in np.split(order, boundaries):
        if len(group) > 1:
            gi, gj = np.triu_indices(len(group), k=1)
            pairs_i.append(group[gi])
            pairs_j.append(group[gj])
    n_exact = sum(len(p) for p in pairs_i)
    if n_exact:
        kinds.append(np.full(n_exact, "exact", dtype=object))
        distances.append(np.zeros(n_exact, dtype=np.int64))
    if max_distance >= 0 and n > 1:
        i, j, d = near_pairs(hash_to_uint64(frame["phash"]), max_distance)
        not_exact = sha[i] != sha[j]
        i, j, d = i[not_exact], j[not_exact], d[not_exact]
        pairs_i.append(i)
        pairs_j.append(j)
        kinds.append(np.full(len(i), "near", dtype=object))
        distances.append(d.astype(np.int64))
    if not pairs_i or sum(len(p) for p in pairs_i) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DUPLICATE_COLUMNS})
    i = np.concatenate(pairs_i)
    j = np.concatenate(pairs_j)
    swap = i > j
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    ids = frame["image_id"].to_numpy()
    labels = frame["label"].to_numpy()
    patients = frame["patient_id"].to_numpy()
    result = pd.DataFrame(
        {
            "image_id_a": ids[i],
            "image_id_b": ids[j],
            "kind": np.concatenate(kinds),
            "distance": np.concatenate(distances),
            "label_a": labels[i],
            "label_b": labels[j],
            "patient_a": patients[i],
            "patient_b": patients[j],
        }
    )
    result["cross_class"] = result["label_a"] != result["label_b"]
    result["cross_patient"] = result["patient_a"] != result["patient_b"]
    result = result.loc[result["cross_class"] | result["cross_patient"]]
    result = result.sort_values(["kind", "image_id_a", "image_id_b"]).reset_index(drop=True)
    if len(result):
        counts = result["kind"].value_counts()
        logger.warning(
            "%d exact and %d near-duplicate pair(s) across classes or patients (%d across classes); "
            "they can leak between folds: see duplicates.csv",
            int(counts.get("exact", 0)),
            int(counts.get("near", 0)),
            int(result["cross_class"].sum()),
        )
    return result
