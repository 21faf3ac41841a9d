"""Cohen's covid-chestxray-dataset and its Actualmed / Figure1 siblings.

Layout (as cloned from GitHub)::

    DIR/metadata.csv     one row per image
    DIR/images/...       the image files (``folder`` column, default ``images``)

Column names differ between versions and siblings and are matched
case-insensitively: the file name is ``filename`` (Cohen) or ``imagename``
(Actualmed); Figure1's metadata has no file-name column (its
``originalfile`` is the name before renaming), so its image is
``images/<patientid>.jpg`` (or ``.jpeg`` / ``.png``). The patient is
``patientid`` / ``Patientid``. Rows are kept when ``modality`` is X-ray and
``view`` is one of the allowed frontal projections; CT rows and lateral views
are skipped and counted, not failures.

Source name: ``cohen`` when the folder is named ``cohen`` or
``covid-chestxray-dataset*``; ``actualmed`` / ``figure1`` when the folder's
name contains that word (``Actualmed-COVID-chestxray-dataset``); otherwise
the folder's own name in lower case. Patient ids are prefixed with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from biomark.data.labels import map_finding
from biomark.data.sources.base import (
    ParseResult,
    Problem,
    SourceOptions,
    check_dir,
    finish_candidates,
    folder_source_name,
    normalize_view,
    prefix_id,
)
from biomark.exceptions import DataError

__all__ = ["cohen_source_name", "parse_cohen"]

logger = logging.getLogger(__name__)

_FILE_COLUMNS = ("filename", "imagename")
_FIGURE1_SUFFIXES = (".jpg", ".jpeg", ".png")
_METADATA_KEYS = ("sex", "age", "modality", "date", "offset", "location", "doi", "url", "license")


def cohen_source_name(folder: str | Path) -> str:
    """The ``source`` value for a Cohen-style folder (see module docstring).

    Examples
    --------
    >>> cohen_source_name("/data/covid-chestxray-dataset"), cohen_source_name("Actualmed-COVID-chestxray-dataset")
    ('cohen', 'actualmed')
    """  # noqa: E501
    name = Path(folder).name.casefold()
    if "actualmed" in name:
        return "actualmed"
    if "figure1" in name:
        return "figure1"
    if name == "cohen" or name.startswith("covid-chestxray-dataset"):
        return "cohen"
    return folder_source_name(folder, "cohen")


def _column(frame: pd.DataFrame, *names: str) -> str | None:
    lookup = {str(c).strip().casefold(): c for c in frame.columns}
    for name in names:
        if name in lookup:
            return lookup[name]
    return None


def _read_metadata(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(
            f"{path}: metadata.csv not found; point --cohen at the folder that holds "
            "metadata.csv and images/ (a clone of ieee8023/covid-chestxray-dataset, "
            "agchung/Actualmed-COVID-chestxray-dataset or agchung/Figure1-COVID-chestxray-dataset)"
        )
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err}); re-download metadata.csv") from err


def _figure1_path(root: Path, folder: str, patient: str) -> Path:
    for suffix in _FIGURE1_SUFFIXES:
        candidate = root / folder / f"{patient}{suffix}"
        if candidate.is_file():
            return candidate
    return root / folder / f"{patient}.jpg"


def parse_cohen(root: str | Path, options: SourceOptions | None = None) -> ParseResult:
    """Candidates of one Cohen-style folder (metadata.csv + images/).

    Parameters
    ----------
    root : str or Path
        Folder holding ``metadata.csv``.
    options : SourceOptions, optional
        Allowed views, extra finding mappings, strictness.

    Returns
    -------
    ParseResult
        One candidate per frontal X-ray row whose file exists and whose
        finding maps to a class; missing files and unknown findings are
        problems; CT and non-frontal rows are counted in ``skipped``.

    Raises
    ------
    DataError
        The folder or metadata.csv is missing or unreadable, a needed column
        is absent, or (``strict``) the first missing file / unknown finding.
    """
    options = options or SourceOptions()
    root = check_dir(
        root, "Cohen-style dataset", "give the folder that holds metadata.csv and images/"
    )
    metadata_path = root / "metadata.csv"
    meta = _read_metadata(metadata_path)
    source = cohen_source_name(root)
    columns = _columns(meta, metadata_path)
    meta, skipped = _frontal_xrays(meta, columns, options)
    rows: list[dict[str, object]] = []
    problems: list[Problem] = []
    for record in meta.to_dict("records"):
        row = _candidate(record, columns, root, source, metadata_path, options)
        if isinstance(row, Problem):
            problems.append(row)
        else:
            rows.append(row)
    if skipped:
        logger.info("%s: skipped %s", root, ", ".join(f"{n} {why}" for why, n in skipped.items()))
    candidates = finish_candidates(pd.DataFrame(rows))
    logger.info(
        "%s (%s): %d candidate images, %d problems", root, source, len(candidates), len(problems)
    )
    return ParseResult(candidates, problems, skipped)


@dataclass(frozen=True)
class _Columns:
    """The metadata.csv columns a Cohen-style folder uses (None: absent in this version).

    ``metadata`` maps each of ``_METADATA_KEYS`` (sex, age, ...) to its column, copied into the
    candidates.
    """

    patient: str
    finding: str
    file: str | None
    folder: str | None
    view: str | None
    modality: str | None
    metadata: dict[str, str | None]


def _columns(meta: pd.DataFrame, metadata_path: Path) -> _Columns:
    """Find the columns of ``meta`` (names differ between versions); patientid and finding are
    required."""
    patient_col = _column(meta, "patientid", "patient_id", "patient id")
    finding_col = _column(meta, "finding")
    if patient_col is None or finding_col is None:
        raise DataError(
            f"{metadata_path}: needs columns patientid and finding (found "
            f"{', '.join(map(str, meta.columns))}); is this a covid-chestxray-dataset metadata.csv?"
        )
    columns = _Columns(
        patient=patient_col,
        finding=finding_col,
        file=_column(meta, *_FILE_COLUMNS),
        folder=_column(meta, "folder"),
        view=_column(meta, "view"),
        modality=_column(meta, "modality"),
        metadata={key: _column(meta, key) for key in _METADATA_KEYS},
    )
    if columns.file is None:
        logger.info(
            "%s: no filename/imagename column; images are images/<patientid>.jpg (Figure1 layout)",
            metadata_path,
        )
    return columns


def _frontal_xrays(
    meta: pd.DataFrame, columns: _Columns, options: SourceOptions
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep the X-ray rows of an allowed (frontal) view; count the others by reason."""
    skipped: dict[str, int] = {}
    if columns.modality is not None:
        modality = meta[columns.modality].str.replace(r"[\s\-_]", "", regex=True).str.casefold()
        not_xray = modality.ne("xray") & modality.ne("")
        if not_xray.any():
            skipped["not an X-ray (CT, ...)"] = int(not_xray.sum())
        meta = meta.loc[~not_xray]
    if columns.view is not None:
        allowed = {normalize_view(v) for v in options.views}
        frontal = meta[columns.view].map(normalize_view).isin(allowed)
        if (~frontal).any():
            skipped["lateral or other non-frontal view"] = int((~frontal).sum())
        meta = meta.loc[frontal]
    return meta, skipped


def _candidate(
    record: dict[str, Any],
    columns: _Columns,
    root: Path,
    source: str,
    metadata_path: Path,
    options: SourceOptions,
) -> dict[str, object] | Problem:
    """One metadata row as a candidate row, or the problem that leaves it out (raised when
    ``strict``)."""
    folder = str(record[columns.folder]).strip() if columns.folder else ""
    folder = folder or "images"
    patient = str(record[columns.patient]).strip()
    if columns.file is not None:
        path = root / folder / str(record[columns.file]).strip()
    else:
        path = _figure1_path(root, folder, patient)
    finding = str(record[columns.finding]).strip()
    if not path.is_file():
        problem = Problem(
            source,
            str(path),
            "parse",
            f"{metadata_path.name} lists {path.name} (patient {patient}) but the file is missing",
            "re-download the source's images/ folder, or ignore: the row is left out",
        )
        if options.strict:
            raise DataError(f"{path}: {problem.reason}; {problem.action}")
        return problem
    label = map_finding(finding, options.finding_map)
    if not label:
        problem = Problem(
            source,
            str(path),
            "parse",
            f"unknown finding {finding!r}" if finding else "no finding given",
            "left out; to use it add a mapping under finding_map in the recipe "
            f"(e.g. finding_map: {{{finding or 'Tuberculosis'!r}: Pneumonia}})",
        )
        if options.strict:
            raise DataError(f"{metadata_path}: {path.name}: {problem.reason}; {problem.action}")
        return problem
    row: dict[str, object] = {
        "path": str(path.resolve()),
        "label": label,
        "finding": finding,
        "patient_id": prefix_id(source, patient),
        "source": source,
        "view": str(record[columns.view]).strip() if columns.view else "",
    }
    for key, column in columns.metadata.items():
        if column is not None:
            row[key] = record[column]
    return row
