"""A generic folder-per-class dataset: ``DIR/<class>/*.png|jpg|jpeg|dcm``.

Class folder names go through the label normaliser
(:func:`biomark.data.labels.map_finding`: ``covid``, ``covid19``,
``COVID-19`` -> COVID-19, ``normal`` -> Normal, ...). With a recipe every
class folder must map to one of its classes (otherwise an error lists
them); without one, a folder that maps to no canonical class is a class of
its own, named as the folder.

Patients: the file stem, unless ``DIR/patients.csv`` exists with columns
``file`` (path relative to ``DIR``, or just the file name) and
``patient_id``. Patient ids are prefixed with ``folder-``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from biomark.data.labels import map_finding
from biomark.data.sources.base import ParseResult, SourceOptions, check_dir, finish_candidates
from biomark.exceptions import DataError

__all__ = ["IMAGE_SUFFIXES", "parse_folder"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})


def _read_patients(root: Path) -> dict[str, str]:
    path = root / "patients.csv"
    if not path.is_file():
        return {}
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err}); fix or remove it") from err
    file_col = next((c for c in ("file", "filename", "path") if c in frame.columns), None)
    if file_col is None or "patient_id" not in frame.columns:
        raise DataError(
            f"{path}: needs columns file and patient_id (found {', '.join(frame.columns)}); "
            "fix it or remove it to use file stems as patients"
        )
    return {str(k).strip(): str(v).strip() for k, v in zip(frame[file_col], frame["patient_id"])}


def parse_folder(root: str | Path, options: SourceOptions | None = None) -> ParseResult:
    """Candidates of a folder-per-class dataset.

    Parameters
    ----------
    root : str or Path
        Folder whose sub-folders are classes.
    options : SourceOptions, optional
        Recipe classes (to check folder names against) and finding map.

    Returns
    -------
    ParseResult

    Raises
    ------
    DataError
        Missing folder, no class folders or no images, or (with a recipe) a
        class folder that maps to none of the recipe's classes.
    """
    options = options or SourceOptions()
    root = check_dir(root, "folder-per-class dataset", "give a folder with one sub-folder per class")
    patients = _read_patients(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class>/*.png (e.g. covid/, normal/)")
    rows: list[dict[str, object]] = []
    for class_dir in class_dirs:
        label = map_finding(class_dir.name, options.finding_map)
        if options.classes is not None and label not in options.classes:
            raise DataError(
                f"{class_dir}: class folder {class_dir.name!r} matches none of the recipe's classes "
                f"({', '.join(options.classes)}); rename the folder, add it to finding_map, or "
                "add the class to the recipe"
            )
        label = label or class_dir.name
        files = sorted(
            p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            logger.warning("%s: class folder holds no images", class_dir)
        for path in files:
            relative = path.relative_to(root).as_posix()
            patient = patients.get(relative) or patients.get(path.name) or path.stem
            rows.append(
                {
                    "path": str(path.resolve()),
                    "label": label,
                    "finding": class_dir.name,
                    "patient_id": f"folder-{patient}",
                    "source": "folder",
                    "view": "",
                }
            )
    if not rows:
        raise DataError(f"{root}: the class folders hold no .png/.jpg/.jpeg/.dcm images")
    if not patients:
        logger.info("%s: no patients.csv; every image is its own patient (file stem)", root)
    candidates = finish_candidates(pd.DataFrame(rows))
    logger.info("%s (folder): %d candidate images in %d classes", root, len(candidates), len(class_dirs))
    return ParseResult(candidates, [], {})
