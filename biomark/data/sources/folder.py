"""A generic folder-per-class dataset: ``DIR/<class>/*.png|jpg|jpeg|dcm``.

Sub-folders of a class folder are walked too. Every other file in a class
folder (a ``.bmp``, ``.tif``, ``.gif`` or ``.webp`` image biomark does not
read, a stray ``notes.txt``) is a ``parse`` row of ``failures.csv`` saying
what to do (:func:`~biomark.data.sources.base.list_images`); hidden files
are counted in ``skipped``.

Class folder names go through the label normaliser
(:func:`biomark.data.labels.map_finding`: ``covid``, ``covid19``,
``COVID-19`` -> COVID-19, ``normal`` -> Normal, ...). With a recipe every
class folder must map to one of its classes (otherwise an error lists
them); without one, a folder that maps to no canonical class is a class of
its own, named as the folder.

Source name: the folder's own name in lower case (``--folder
raw/Hospital_A`` -> ``hospital_a``), so two folders are two sources (for
``cv.grouping: source`` and the source audit); a recipe may still name them
all ``folder``. Patients: the file stem (the end of the path for a stem
that repeats: ``covid/1.png`` and ``normal/1.png`` are two patients),
unless ``DIR/patients.csv`` exists with columns ``file`` (path relative to
``DIR``, or just the file name) and ``patient_id``. Patient ids are prefixed with the source name
(``hospital_a-282``), so patient 282 of two hospitals stays two patients.
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
    check_dir,
    finish_candidates,
    folder_source_name,
    list_images,
    own_patients,
    prefix_id,
)
from biomark.exceptions import DataError

__all__ = ["parse_folder"]

logger = logging.getLogger(__name__)


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
    return {
        str(k).strip(): str(v).strip()
        for k, v in zip(frame[file_col], frame["patient_id"], strict=True)
    }


def _own_patients(rows: list[dict[str, object]], root: Path, source: str) -> None:
    """Give each row that ``patients.csv`` names no patient for one of its own
    (:func:`~biomark.data.sources.base.own_patients`, which says which file names repeat)."""
    unnamed = [row for row in rows if not row["patient_id"]]
    if not unnamed:
        return
    ids = own_patients(
        [str(row["path"]) for row in unnamed],
        where=root,
        how_to_name=f"list the patients in {root}/patients.csv",
    )
    for row, patient in zip(unnamed, ids, strict=True):
        row["patient_id"] = prefix_id(source, patient)


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
        One candidate per readable image; one problem per other file.

    Raises
    ------
    DataError
        Missing folder, no class folders or no images, (with a recipe) a
        class folder that maps to none of the recipe's classes, or
        (``strict``) the first file that is not a readable image.
    """
    options = options or SourceOptions()
    root = check_dir(
        root, "folder-per-class dataset", "give a folder with one sub-folder per class"
    )
    patients = _read_patients(root)
    source = folder_source_name(root, "folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root}: no class sub-folders; expected {root}/<class>/*.png (e.g. covid/, normal/)"
        )
    rows: list[dict[str, object]] = []
    problems: list[Problem] = []
    hidden = 0
    for class_dir in class_dirs:
        label = map_finding(class_dir.name, options.finding_map)
        if options.classes is not None and label not in options.classes:
            raise DataError(
                f"{class_dir}: class folder {class_dir.name!r} matches none of the recipe's "
                f"classes ({', '.join(options.classes)}); rename the folder, add it to "
                "finding_map, or add the class to the recipe"
            )
        label = label or class_dir.name
        files, unreadable, n_hidden = list_images(
            class_dir, source, recursive=True, strict=options.strict
        )
        hidden += n_hidden
        problems.extend(unreadable)
        if not files:
            logger.warning("%s: class folder holds no images", class_dir)
        for path in files:
            relative = path.relative_to(root).as_posix()
            patient = patients.get(relative) or patients.get(path.name) or ""
            rows.append(
                {
                    "path": str(path.resolve()),
                    "label": label,
                    "finding": class_dir.name,
                    "patient_id": prefix_id(source, patient),
                    "source": source,
                    "view": "",
                }
            )
    if not rows:
        others = (
            f" ({len(problems)} other file(s), e.g. {Path(problems[0].path).name})"
            if problems
            else ""
        )
        raise DataError(
            f"{root}: the class folders hold no .png/.jpg/.jpeg/.dcm images{others}; "
            "convert the images to PNG or point at the right folder"
        )
    _own_patients(rows, root, source)
    if not patients:
        logger.info("%s: no patients.csv; every image is its own patient (file stem)", root)
    candidates = finish_candidates(pd.DataFrame(rows))
    logger.info(
        "%s (folder %s): %d candidate images in %d classes",
        root,
        source,
        len(candidates),
        len(class_dirs),
    )
    return ParseResult(candidates, problems, {"hidden file": hidden} if hidden else {})
