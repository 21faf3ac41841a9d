"""On-disk cache of per-image radiomics results.

Each image's result (its feature values, or why it failed) is stored in one
small JSON file keyed by the SHA-256 of

* the image content (the exact cached ``uint8`` array and its shape),
* the parameter settings hash (:attr:`RadiomicsParams.settings_hash`, which
  includes the pyradiomics version), and
* the mask content (so the lung mask, the image-content mask and the control
  regions are cached separately).

Layout: ``<cache>/<key[:2]>/<key>.json``. Writes are atomic, one file per
image, so an interrupted run keeps everything finished so far, parallel writers
never clash, and a re-run or an enlarged dataset computes only what is new.
Entries are not ``fsync``-ed (an fsync cost 6-9 ms on the development
machine's disk, a third of an image's extraction, 5 s a run): a killed process
cannot tear an entry (temporary file + rename), and after a power loss an
entry that did not reach the disk reads as unreadable and is recomputed.
Floats round-trip exactly (``json`` writes ``repr`` floats; non-finite values
as ``NaN``/``Infinity``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biomark.io.atomic import atomic_path

__all__ = ["CacheEntry", "FeatureCache", "array_sha256", "cache_key"]

logger = logging.getLogger(__name__)


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order).

    Parameters
    ----------
    array : ndarray of any shape

    Returns
    -------
    str
        64 hex digits.
    """
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def cache_key(image_sha256: str, settings_hash: str, mask_sha256: str) -> str:
    """The cache key of one (image, parameters, mask) triple (64 hex digits)."""
    return hashlib.sha256(f"{image_sha256}|{settings_hash}|{mask_sha256}".encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One image's radiomics result.

    Attributes
    ----------
    features : dict of str to float
        Feature values by biomark name (empty when extraction failed).
    failures : list of (stage, reason)
        What went wrong (a failed extraction, or single non-finite features).
    ok : bool
        True when features were extracted (individual values may still have
        failed; they are listed in ``failures``).
    """

    features: dict[str, float]
    failures: list[tuple[str, str]] = field(default_factory=list)
    ok: bool = True


class FeatureCache:
    """A folder of per-image radiomics results.

    Parameters
    ----------
    root : str or Path
        The cache folder (created on the first write).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cache = FeatureCache(tmp)
    ...     _ = cache.put("ab" * 32, CacheEntry({"firstorder_Mean": 1.5}))
    ...     cache.get("ab" * 32).features
    {'firstorder_Mean': 1.5}
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file of ``key``."""
        return self.root / self.relative(key)

    @staticmethod
    def relative(key: str) -> str:
        """The file of ``key`` relative to the cache folder (POSIX separators)."""
        return f"{key[:2]}/{key}.json"

    @staticmethod
    def serialize(entry: CacheEntry, image_id: str = "") -> str:
        """The JSON text stored for ``entry``."""
        return json.dumps(
            {
                "image_id": image_id,
                "ok": entry.ok,
                "features": entry.features,
                "failures": [list(f) for f in entry.failures],
            }
        )

    def get(self, key: str) -> CacheEntry | None:
        """The stored entry, or None when absent or unreadable (then recomputed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return CacheEntry(
                features={str(k): float(v) for k, v in data["features"].items()},
                failures=[(str(s), str(r)) for s, r in data.get("failures", [])],
                ok=bool(data.get("ok", True)),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("%s: unreadable cache entry (%s); it will be recomputed", path, err)
            return None

    def put(self, key: str, entry: CacheEntry, image_id: str = "") -> Path:
        """Store ``entry`` under ``key`` atomically (no fsync, see the module docstring); returns
        the file path."""
        path = self.path(key)
        with atomic_path(path, suffix=".json") as tmp:
            tmp.write_text(self.serialize(entry, image_id), encoding="utf-8")
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.is_dir() else 0
