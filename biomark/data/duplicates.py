"""Exact and near-duplicate images that could leak between folds.

Two images are

* ``exact`` duplicates when their files have the same SHA-256, and
* ``near`` duplicates when the Hamming distance between their perceptual
  hashes (``imagehash.phash`` of the letterboxed image, :data:`PHASH_SIZE`
  squared = 256 bits) is at most ``max_distance`` (default
  :data:`DEFAULT_MAX_DISTANCE` = 14 of 256 bits): re-saved, re-encoded or
  resized copies.

Why 256 bits: chest radiographs (and, more so, the phantom's stylised
anatomy) share their coarse layout, which is all a 64-bit pHash sees (an
8 x 8 DCT of a 32 x 32 thumbnail). Within 4 of 64 bits, the default phantom
(280 images) had 113 pairs of *different* patients and the paper-sized one
(3,905 images) 24,001, while re-encoded copies were no closer. With a
16 x 16 DCT of a 64 x 64 thumbnail, unrelated phantom images are at least 16
of 256 bits apart (3,905 images, 7.6 M pairs: 2 pairs at 16, none closer;
median 104) and unrelated real radiographs at least 72 (101 images), while a
JPEG re-encode (quality 30-90), a resize to 1/2 or 1/4 or x1.5 (with or
without re-encoding) or a slight brightness or gamma change stays within 12
(measured on 60 phantom and 40 real images). The threshold
sits between the two. A slight crop is not a near duplicate to a perceptual
hash at either size.

A hash of another length (a 64-bit one in an older manifest) is compared with
the threshold scaled to its length: ``round(max_distance * bits / 256)``.

Only pairs that matter for cross-validation are reported: across classes
(the same picture with two labels) or across patients (the same picture under
two patient ids, which patient-grouped folds cannot keep together). The
search is vectorised: hashes are ``uint64`` words and distances come from
``np.bitwise_count(a ^ b)`` over blocks of rows, never a Python loop over pairs.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "DUPLICATE_COLUMNS",
    "PHASH_BITS",
    "PHASH_SIZE",
    "find_duplicates",
    "hash_to_uint64",
    "hash_words",
    "image_phash",
    "near_pairs",
]

logger = logging.getLogger(__name__)

#: Side of the pHash DCT block: ``PHASH_SIZE ** 2`` bits.
PHASH_SIZE = 16
PHASH_BITS = PHASH_SIZE * PHASH_SIZE
#: Largest Hamming distance (of :data:`PHASH_BITS`) reported as a near duplicate.
DEFAULT_MAX_DISTANCE = 14

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


def image_phash(image: np.ndarray) -> str:
    """The :data:`PHASH_BITS`-bit perceptual hash of a letterboxed uint8 image, as hex digits.

    Parameters
    ----------
    image : ndarray of shape (size, size), uint8

    Returns
    -------
    str
        ``PHASH_BITS // 4`` hex digits.
    """
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(image), hash_size=PHASH_SIZE))


def hash_to_uint64(hashes: pd.Series | list[str]) -> np.ndarray:
    """Hex 64-bit perceptual hashes (16 hex digits) as a uint64 array of shape (n,)."""
    return np.array([int(str(h), 16) for h in hashes], dtype=np.uint64)


def hash_words(hashes: pd.Series | list[str]) -> np.ndarray:
    """Hex perceptual hashes of one length (a multiple of 16 digits) as uint64 words.

    Returns
    -------
    ndarray of shape (n, n_digits // 16), uint64

    Raises
    ------
    ValueError
        Hashes of different lengths, or a length that is not a multiple of 16.
    """
    texts = [str(h) for h in hashes]
    lengths = {len(t) for t in texts}
    if len(lengths) > 1 or (lengths and next(iter(lengths)) % 16):
        raise ValueError(
            f"perceptual hashes of lengths {sorted(lengths)}: expected one multiple of 16 hex "
            "digits"
        )
    digits = lengths.pop() if lengths else 16
    words = [[int(t[k : k + 16], 16) for k in range(0, digits, 16)] for t in texts]
    return np.array(words, dtype=np.uint64).reshape(len(texts), digits // 16)


def near_pairs(
    hashes: np.ndarray, max_distance: int, block: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with Hamming distance <= ``max_distance``.

    Parameters
    ----------
    hashes : ndarray of shape (n,) or (n, n_words), uint64
        One 64-bit hash per row, or longer hashes as words (:func:`hash_words`).
    max_distance : int
    block : int
        Rows compared at once (memory ~ 2 * block * n bytes per word).

    Returns
    -------
    i, j, distance : ndarray of shape (n_pairs,)

    Examples
    --------
    >>> near_pairs(np.array([0, 1, 0xFF], dtype=np.uint64), 1)
    (array([0]), array([1]), array([1], dtype=uint16))
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if hashes.ndim == 1:
        hashes = hashes[:, None]
    n = len(hashes)
    found_i, found_j, found_d = [], [], []
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        distance = np.zeros((len(rows), n), dtype=np.uint16)
        for word in range(hashes.shape[1]):
            distance += np.bitwise_count(rows[:, None, word] ^ hashes[None, :, word])
        i, j = np.nonzero(distance <= max_distance)
        i = i + start
        keep = i < j
        found_i.append(i[keep])
        found_j.append(j[keep])
        found_d.append(distance[i[keep] - start, j[keep]])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.uint16)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def find_duplicates(
    manifest: pd.DataFrame, max_distance: int = DEFAULT_MAX_DISTANCE
) -> pd.DataFrame:
    """Exact and near-duplicate pairs across classes or patients.

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, ...)
        Needs columns ``image_id``, ``label``, ``patient_id``, ``sha256`` and
        ``phash`` (hex digits, one length for all rows: 64 from
        :func:`image_phash`, 16 in older manifests).
    max_distance : int, default 14
        Largest Hamming distance of a :data:`PHASH_BITS`-bit hash counted as a
        near duplicate, scaled to the hashes' length (4 for 64-bit hashes);
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
        words = hash_words(frame["phash"])
        scaled = round(max_distance * words.shape[1] * 64 / PHASH_BITS)
        i, j, d = near_pairs(words, scaled)
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
            "%d exact and %d near-duplicate pair(s) across classes or patients (%d across "
            "classes); they can leak between folds: see duplicates.csv",
            int(counts.get("exact", 0)),
            int(counts.get("near", 0)),
            int(result["cross_class"].sum()),
        )
    return result
