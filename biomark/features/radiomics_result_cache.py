"""Reuse of a finished ``biomark radiomics`` output folder while its inputs are unchanged.

The per-image cache (:mod:`biomark.features.radiomics_cache`) spares the
pyradiomics extraction of a re-run, but the rest of a run (masks, checks,
controls, gallery, tables) costs 10-20 times the cached extraction.
:func:`~biomark.features.radiomics_run.run_radiomics` therefore writes, after
everything else, a record ``<out>/finished.json`` of

* the **key**: everything the output folder depends on: the dataset's
  files (SHA-256 of ``manifest.csv`` and of every file of ``cache/``
  that holds images, masks or their order), the names, sizes and
  modification times of the files in the dataset's masks folder, the
  parameter file (path, file hash, settings hash), region, controls, seed,
  the dataset path as given, the biomark, pyradiomics, SimpleITK and numpy
  versions, and a digest of the source of the modules that compute the
  output (so a code change recomputes);
* the **outputs**: every file it wrote, with its size and modification time.

A later run with the same key whose outputs are all still as written reads
the finished tables instead of recomputing them (:func:`find_reusable`). Any
change of an input, a setting or an output file (edited, deleted, rewritten by
an interrupted run) makes the run compute again, from the per-image cache. A
run that starts computing deletes the record first (:func:`forget`), so a run
killed half-way never leaves a record that vouches for half-written outputs.

Hashing without re-reading big files
    The dataset's image cache can be gigabytes. Its hash is stored in the
    record together with the file's ``stat`` (size, modification and change
    times in ns, inode, device), as git's index does; a later run re-hashes
    a file only when its ``stat`` differs. Any write to a file changes its
    change time (which, unlike the modification time, cannot be set back by
    a program), and a rename or copy changes the inode. As in git, a hash
    taken less than :data:`_RACY_NS` after the file's last change is not
    trusted later (a second write within the file system's timestamp
    granularity could keep the same ``stat``): such files are re-hashed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomark.exceptions import BiomarkError
from biomark.features.radiomics_params import RadiomicsParams

__all__ = [
    "RECORD",
    "RESULT_FORMAT",
    "ResultKey",
    "find_reusable",
    "forget",
    "record_finished",
    "result_key",
    "what_changed",
]

logger = logging.getLogger(__name__)

#: The record's file name inside the output folder (written last).
RECORD = "finished.json"

#: Changes whenever the layout or meaning of a radiomics output folder changes.
RESULT_FORMAT = 1

#: Dataset files (relative to the dataset folder) that the output depends on; a missing one is
#: recorded as such.
_DATASET_FILES = (
    "manifest.csv",
    "cache/images.npy",
    "cache/masks.npy",
    "cache/index.csv",
    "cache/cache.json",
)

#: The dataset's folder of supplied lung-mask files: :data:`biomark.data.masks.MASKS_DIR` (not
#: imported here: that module imports scipy, which would cost a warm run more than everything else;
#: a test checks they agree).
_MASKS_DIR = "masks"

#: Each part of a run's key in words, for the log line that says why a run recomputes.
_KEY_PARTS = {
    "format": "the output format",
    "biomark": "biomark's version",
    "versions": "the version of pyradiomics, SimpleITK or numpy",
    "sources": "biomark's radiomics code",
    "params": "the parameter file",
    "region": "the region",
    "controls": "the controls setting",
    "seed": "the seed",
}
#: The dataset's parts of the key, in words.
_DATASET_PARTS = {
    "root": "the dataset's path",
    "files": "the dataset's images, masks or manifest",
    "masks_folder": "the dataset's masks folder",
}

#: Modules (relative to the ``biomark`` package) whose code decides what the output folder holds.
_SOURCES = (
    "features/radiomics.py",
    "features/radiomics_cache.py",
    "features/radiomics_gallery.py",
    "features/radiomics_jobs.py",
    "features/radiomics_output.py",
    "features/radiomics_params.py",
    "features/radiomics_run.py",
    "features/radiomics_result_cache.py",
    "data/lungs.py",
    "data/lung_checks.py",
    "data/masks.py",
)

#: A hash is trusted by ``stat`` only if taken this long after the file's last change (2 s, in ns).
_RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class ResultKey:
    """What a radiomics output folder depends on.

    Attributes
    ----------
    value : dict
        The key (JSON types only); equal keys mean equal outputs.
    memo : dict of str to dict
        Dataset file -> ``{"stat": [...], "sha256": ...}`` for the hashes
        that a later run may reuse without re-reading the file.
    """

    value: dict[str, Any]
    memo: dict[str, dict[str, Any]]


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _file_digest(
    path: Path, memo: Mapping[str, Any] | None
) -> tuple[str | None, dict[str, Any] | None]:
    """SHA-256 of ``path`` (None when absent), from ``memo`` when its stat still matches; and the
    new memo entry."""
    from biomark.provenance import file_sha256

    stat = _stat(path)
    if stat is None:
        return None, None
    if memo and memo.get("stat") == stat and isinstance(memo.get("sha256"), str):
        return str(memo["sha256"]), dict(memo)
    digest = file_sha256(path)
    trusted = (
        stat[2] <= time.time_ns() - _RACY_NS
    )  # changed long enough ago: a later write changes the stat
    return digest, ({"stat": stat, "sha256": digest} if trusted else None)


def _folder_listing(folder: Path) -> list[list[Any]]:
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        if path.is_file():
            st = path.stat()
            out.append([path.name, st.st_size, st.st_mtime_ns])
    return out


def _sources_digest() -> str:
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for relative in _SOURCES:
        digest.update(relative.encode())
        path = package / relative
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def result_key(
    data_dir: str | os.PathLike[str],
    params: RadiomicsParams,
    *,
    region: str,
    controls: bool,
    seed: int,
    previous: Mapping[str, Any] | None = None,
) -> ResultKey:
    """The key of a radiomics run (see the module docstring).

    Parameters
    ----------
    data_dir : path
        The dataset folder, as given to ``run_radiomics`` (its text is part
        of the output: ``radiomics.json`` records it).
    params : RadiomicsParams
    region : str
    controls : bool
    seed : int
    previous : mapping, optional
        The record of an earlier run (:func:`find_reusable` reads it): its
        stored hashes are reused for files whose ``stat`` is unchanged.

    Returns
    -------
    ResultKey
    """
    import numpy as np

    import biomark
    from biomark.features.radiomics import radiomics_versions

    root = Path(data_dir)
    old_memo = (previous or {}).get("inputs", {})
    files: dict[str, str | None] = {}
    memo: dict[str, dict[str, Any]] = {}
    for relative in _DATASET_FILES:
        files[relative], entry = _file_digest(root / relative, old_memo.get(relative))
        if entry is not None:
            memo[relative] = entry
    value = {
        "format": RESULT_FORMAT,
        "biomark": biomark.__version__,
        "versions": {**radiomics_versions(), "numpy": np.__version__},
        "sources": _sources_digest(),
        "params": {
            "path": str(params.path),
            "file_sha256": params.file_sha256,
            "settings_hash": params.settings_hash,
        },
        "region": region,
        "controls": bool(controls),
        "seed": int(seed),
        "dataset": {
            "root": str(root),
            "files": files,
            "masks_folder": _folder_listing(root / _MASKS_DIR),
        },
    }
    return ResultKey(json.loads(json.dumps(value)), memo)  # JSON types, as a record read back holds


def _read_record(out: Path) -> dict[str, Any] | None:
    path = out / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("%s: unreadable (%s); the radiomics outputs will be recomputed", path, err)
        return None
    return record if isinstance(record, dict) else None


def _outputs_unchanged(out: Path, outputs: Mapping[str, Any]) -> bool:
    for relative, expected in outputs.items():
        stat = _stat(out / relative)
        if stat is None or stat[:2] != list(expected):
            logger.info(
                "%s: changed or missing since the run that wrote it; recomputing", out / relative
            )
            return False
    return bool(outputs)


def what_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Which parts of a run's key differ, in words (for the log).

    Examples
    --------
    >>> what_changed({"seed": 0, "region": "lung"}, {"seed": 1, "region": "lung"})
    'the seed'
    >>> what_changed({"dataset": {"files": {"a": "1"}}}, {"dataset": {"files": {"a": "2"}}})
    "the dataset's images, masks or manifest"
    """
    parts = [words for name, words in _KEY_PARTS.items() if old.get(name) != new.get(name)]
    old_data, new_data = old.get("dataset") or {}, new.get("dataset") or {}
    parts += [
        words for name, words in _DATASET_PARTS.items() if old_data.get(name) != new_data.get(name)
    ]
    return ", ".join(parts) or "the run's key"


def find_reusable(
    out: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    params: RadiomicsParams,
    *,
    region: str,
    controls: bool,
    seed: int,
) -> tuple[bool, ResultKey]:
    """Whether ``out`` holds the finished outputs of this very run, and the run's key.

    Parameters
    ----------
    out : path
        The output folder.
    data_dir, params, region, controls, seed
        As :func:`result_key`.

    Returns
    -------
    reusable : bool
        True when ``out`` has a record with this key and every output file it
        lists is as written (size and modification time).
    key : ResultKey
        To pass to :func:`record_finished` after computing.
    """
    out = Path(out)
    record = _read_record(out)
    key = result_key(data_dir, params, region=region, controls=controls, seed=seed, previous=record)
    if record is None:
        return False, key
    if record.get("key") != key.value:
        logger.info(
            "%s: %s changed since the last run; recomputing (images whose own inputs are unchanged "
            "come from the per-image cache)",
            out,
            what_changed(record.get("key") or {}, key.value),
        )
        return False, key
    if not _outputs_unchanged(out, record.get("outputs", {})):
        return False, key
    if key.memo != record.get("inputs"):
        # hashes re-taken (a copied dataset): store them for the next run
        try:
            _write_record(out, key, record["outputs"])
        except BiomarkError as err:
            # a read-only folder: its outputs are still good, the hashes are re-taken next time
            logger.info("%s: hashes not stored (%s)", out / RECORD, err)
    return True, key


def forget(out: str | os.PathLike[str]) -> None:
    """Delete the record before a run rewrites ``out``: a run killed half-way leaves no record.

    Raises
    ------
    NotWritableError
        ``out`` is read-only (the run could not write its outputs either).
    """
    from biomark.io.disk import disk_errors

    path = Path(out, RECORD)
    with disk_errors(path):
        path.unlink(missing_ok=True)


def _write_record(out: Path, key: ResultKey, outputs: Mapping[str, Any]) -> None:
    from biomark.io.atomic import write_json_atomic

    write_json_atomic(
        out / RECORD, {"key": key.value, "inputs": key.memo, "outputs": dict(outputs)}
    )


def record_finished(out: str | os.PathLike[str], key: ResultKey, outputs: Iterable[str]) -> Path:
    """Write the record of a finished run (after every output), listing ``outputs`` with their sizes
    and times.

    Parameters
    ----------
    out : path
        The output folder.
    key : ResultKey
        From :func:`find_reusable`, taken before the run read its inputs.
    outputs : iterable of str
        The files the run wrote, relative to ``out``.

    Returns
    -------
    Path
        The record file.

    Raises
    ------
    DiskFullError, NotWritableError
        From the atomic write (:func:`biomark.io.atomic.write_json_atomic`).
    """
    out = Path(out)
    listed: dict[str, list[int]] = {}
    for relative in outputs:
        st = (out / relative).stat()
        listed[relative] = [st.st_size, st.st_mtime_ns]
    _write_record(out, key, listed)
    return out / RECORD
