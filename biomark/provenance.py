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

from biomark.onednn import onednn_setting

__all__ = [
    "DEFAULT_PACKAGES",
    "FLOAT_KERNEL_FLAGS",
    "bytes_sha256",
    "cpu_info",
    "describe_cpu",
    "environment",
    "file_sha256",
    "package_versions",
]

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


#: Instruction sets that change which floating-point kernels oneDNN/XLA run (and so the rounding
#: of a training run): the same seed trains to different weights on a CPU with a different set.
FLOAT_KERNEL_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU's model name and which of :data:`FLOAT_KERNEL_FLAGS` it has.

    Read from ``/proc/cpuinfo`` by hand: the standard library gives no model
    name on Linux (``platform.processor()`` is often empty) and a package for
    two fields is not worth a dependency. Elsewhere, or when the file cannot be
    read, the model is ``platform.processor()`` and ``flags`` is None (unknown).

    Parameters
    ----------
    cpuinfo : str or Path, default "/proc/cpuinfo"

    Returns
    -------
    dict
        ``model`` (str) and ``flags`` (the ones it has, in :data:`FLOAT_KERNEL_FLAGS` order; None
        when unknown).
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return {"model": platform.processor(), "flags": None}
    fields: dict[str, str] = {}
    for line in text.splitlines():  # every core repeats the same block: keep the first
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    present = set(fields["flags"].split()) if "flags" in fields else None
    model = fields.get("model name") or platform.processor()
    flags = None if present is None else [f for f in FLOAT_KERNEL_FLAGS if f in present]
    return {"model": model, "flags": flags}


def describe_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """:func:`cpu_info` as one line for logs and benchmark output, e.g. ``AMD EPYC (avx2, fma)``.

    Parameters
    ----------
    cpuinfo : str or Path, default "/proc/cpuinfo"

    Returns
    -------
    str
        The model name (``platform.machine()`` when there is none) and the
        flags in brackets: ``none of them`` when the CPU has none of
        :data:`FLOAT_KERNEL_FLAGS`, ``flags unknown`` when they could not be read.
    """
    info = cpu_info(cpuinfo)
    flags = info["flags"]
    listed = "flags unknown" if flags is None else ", ".join(flags) or "none of them"
    return f"{info['model'] or platform.machine()} ({listed})"


def environment() -> dict[str, Any]:
    """Machine and interpreter facts plus package versions, for provenance records."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_info(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "tf_enable_onednn_opts": onednn_setting(),
        "packages": package_versions(),
    }
