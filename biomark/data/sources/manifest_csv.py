"""An existing manifest CSV (e.g. the phantom's ``phantom.csv``).

Required columns: ``path`` and ``label``. Optional: ``image_id`` (kept),
``patient_id`` (default: the file stem, or the end of the path that tells
apart the files whose stems repeat), ``source`` (default ``manifest``),
``view``, ``mask_path`` (a lung mask, letterboxed into ``cache/masks.npy``),
and any other column, carried into the built manifest (``severity``,
``artifact``, ...). Relative ``path`` / ``mask_path`` resolve against the
CSV's folder. Labels that name a canonical class in another spelling
(``covid``) are normalised; others are kept as written, so a row labelled
``Tuberculosis`` reaches the build, which records it as a failure when the
recipe has no such class.

Patient ids are prefixed with the row's source like every other parser's
(:func:`~biomark.data.sources.base.prefix_id`): patient ``282`` of source
``hospital_a`` becomes ``hospital_a-282``, so patient 282 of two hospitals
stays two patients. An id that already starts with its source (a built
``manifest.csv`` fed back in) is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from biomark.data.labels import map_finding
from biomark.data.sources.base import (
    ParseResult,
    Problem,
    SourceOptions,
    finish_candidates,
    own_patients,
    prefix_id,
)
from biomark.exceptions import DataError, ManifestError

__all__ = ["parse_manifest"]

logger = logging.getLogger(__name__)


def _resolve(base: Path, value: str) -> str:
    if not value:
        return ""
    path = Path(value).expanduser()
    return str((path if path.is_absolute() else base / path).resolve())


def parse_manifest(csv_path: str | Path, options: SourceOptions | None = None) -> ParseResult:
    """Candidates from a manifest CSV.

    Parameters
    ----------
    csv_path : str or Path
        The CSV file.
    options : SourceOptions, optional
        Finding map and strictness.

    Returns
    -------
    ParseResult
        Rows whose image exists; rows with a missing file are problems.

    Raises
    ------
    ManifestError
        The CSV is missing or unreadable, lacks ``path``/``label``, has empty
        labels or repeated ``image_id`` values, or (``strict``) a file is missing.
    """
    options = options or SourceOptions()
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise ManifestError(
            f"{csv_path}: manifest CSV not found; give the path of a CSV with path,label columns"
        )
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ManifestError(f"{csv_path}: not a readable CSV ({err}); fix the file") from err
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; a manifest needs at least path "
            "and label"
        )
    if frame.empty:
        raise DataError(f"{csv_path}: the manifest has no rows; give a CSV with one row per image")
    empty = frame.index[frame["label"].str.strip() == ""]
    if len(empty):
        raise ManifestError(
            f"{csv_path}: {len(empty)} row(s) have an empty label (first: row "
            f"{int(empty[0]) + 2}); label every image or drop those rows"
        )
    if "image_id" in frame.columns:
        repeated = frame["image_id"][frame["image_id"].duplicated()].unique()
        if len(repeated):
            raise ManifestError(
                f"{csv_path}: image_id values repeat ({', '.join(repeated[:5])}); make them unique"
            )
    base = csv_path.resolve().parent
    frame = frame.copy()
    frame["path"] = [_resolve(base, str(p).strip()) for p in frame["path"]]
    if "mask_path" in frame.columns:
        frame["mask_path"] = [_resolve(base, str(p).strip()) for p in frame["mask_path"]]
    if "finding" not in frame.columns:
        frame["finding"] = frame["label"]
    frame["label"] = [map_finding(x, options.finding_map) or str(x).strip() for x in frame["label"]]
    if "source" not in frame.columns:
        frame["source"] = "manifest"
    frame["source"] = frame["source"].replace("", "manifest")
    if "patient_id" not in frame.columns:
        logger.warning("%s: no patient_id column; every image is its own patient", csv_path)
        frame["patient_id"] = own_patients(
            [str(p) for p in frame["path"]],
            where=csv_path,
            how_to_name="add a patient_id column",
        )
    frame["patient_id"] = [
        prefix_id(str(s), str(p)) for s, p in zip(frame["source"], frame["patient_id"], strict=True)
    ]
    exists = pd.Series([Path(p).is_file() for p in frame["path"]], index=frame.index)
    problems = []
    for _, row in frame.loc[~exists].iterrows():
        listed = f"{csv_path.name} lists {row['path']}"
        problem = Problem(
            str(row["source"]),
            str(row["path"]),
            "parse",
            f"{listed}, a folder, not an image file"
            if Path(row["path"]).is_dir()
            else f"{listed} but the file is missing",
            "fix the path in the manifest or regenerate it; the row is left out",
            image_id=str(row.get("image_id", "")),
        )
        if options.strict:
            raise ManifestError(f"{csv_path}: {problem.reason}; {problem.action}")
        problems.append(problem)
    candidates = finish_candidates(frame.loc[exists])
    logger.info(
        "%s (manifest): %d candidate images, %d missing files",
        csv_path,
        len(candidates),
        len(problems),
    )
    return ParseResult(candidates, problems, {})
