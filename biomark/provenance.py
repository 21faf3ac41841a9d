"""What produced an output: package versions, hashes, machine facts.

Every output folder biomark writes records these (house rule 14).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PACKAGES", "file_sha256", "bytes_sha256", "environment", "package_versions"]

DEFAULT_PACKAGES = (
    "biomark",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "keras",
    "tensorflow",
    "tensorflow-cpu",
    "jax",
    "pillow",
    "pydicom",
    "SimpleITK",
    "pyradiomics",
    "pyradiomics-bhklab",
    "shap",
    "umap-learn",
    "statsmodels",
    "plotly",
    "pyarrow",
)


def package_versions(names: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (packages that are not installed are left out)."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def bytes_sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    """Machine and interpreter facts plus package versions, for provenance records."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "packages": package_versions(),
    }
