"""Kermany et al. pediatric pneumonia chest X-rays (``chest_xray``).

Layout (Mendeley data / Kaggle ``paultimothymooney/chest-xray-pneumonia``)::

    DIR/chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg

``DIR`` may be the folder holding ``chest_xray`` or ``chest_xray`` itself.
The label comes from the class folder; ``split`` (train/test/val) and
``subtype`` (``bacteria`` / ``virus`` / ``""``) are kept as metadata. The
patient is in the file name:

=================================  ===================
file                               patient_id
=================================  ===================
``person123_bacteria_456.jpeg``    ``kermany-person123``
``IM-0115-0001.jpeg``              ``kermany-IM-0115``
``IM-0505-0001-0002.jpeg``         ``kermany-IM-0505``
``NORMAL2-IM-1427-0001.jpeg``      ``kermany-NORMAL2-IM-1427``
=================================  ===================

A name that matches none of these uses its stem as the patient (one
warning lists how many and an example). A file in a class folder that is
not a readable image (a ``.bmp`` re-save, a ``notes.txt``) is a ``parse``
row of ``failures.csv``
(:func:`~biomark.data.sources.base.list_images`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from biomark.data.labels import map_finding
from biomark.data.sources.base import (
    ParseResult,
    Problem,
    SourceOptions,
    check_dir,
    finish_candidates,
    list_images,
    prefix_id,
)
from biomark.exceptions import DataError

__all__ = ["kermany_patient", "parse_kermany", "SPLITS"]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "test", "val")
_PATTERNS = (
    re.compile(r"^(person\d+)_(bacteria|virus)_\d+$", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)(?:-\d+)+$", re.IGNORECASE),
    re.compile(r"^(IM-\d+)(?:-\d+)+$", re.IGNORECASE),
)


def kermany_patient(stem: str) -> tuple[str, str] | None:
    """Patient id and pneumonia subtype from a Kermany file stem, or None.

    Examples
    --------
    >>> kermany_patient("person123_bacteria_456"), kermany_patient("NORMAL2-IM-1427-0001")
    (('person123', 'bacteria'), ('NORMAL2-IM-1427', ''))
    """
    for pattern in _PATTERNS:
        match = pattern.match(stem)
        if match:
            subtype = match.group(2).lower() if pattern is _PATTERNS[0] else ""
            return match.group(1), subtype
    return None


def _find_root(root: Path) -> Path:
    for candidate in (root / "chest_xray", root, root / "chest_xray" / "chest_xray"):
        if any((candidate / split).is_dir() for split in SPLITS):
            return candidate
    raise DataError(
        f"{root}: no chest_xray/{{train,test,val}}/ folders found; point --kermany at the "
        "folder that holds chest_xray/ (or at chest_xray/ itself) from "
        "https://data.mendeley.com/datasets/rscbjbr9sj"
    )


def parse_kermany(root: str | Path, options: SourceOptions | None = None) -> ParseResult:
    """Candidates of the Kermany ``chest_xray`` folder.

    Parameters
    ----------
    root : str or Path
        Folder holding ``chest_xray/`` or ``chest_xray/`` itself.
    options : SourceOptions, optional
        Extra finding mappings (class folder names go through the label normaliser).

    Returns
    -------
    ParseResult
        One candidate per image with columns ``split`` and ``subtype``
        added; one problem per other file in a class folder.

    Raises
    ------
    DataError
        The folder is missing, has no split folders, holds no images, or
        (``strict``) a class folder holds a file that is not a readable image.
    """
    options = options or SourceOptions()
    base = _find_root(check_dir(root, "Kermany", "give the folder that holds chest_xray/"))
    rows: list[dict[str, object]] = []
    problems: list[Problem] = []
    hidden = 0
    unmatched: list[str] = []
    for split in SPLITS:
        split_dir = base / split
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = map_finding(class_dir.name, options.finding_map)
            files, unreadable, n_hidden = list_images(
                class_dir, "kermany", recursive=False, strict=options.strict
            )
            hidden += n_hidden
            problems.extend(unreadable)
            for path in files:
                parsed = kermany_patient(path.stem)
                if parsed is None:
                    unmatched.append(path.name)
                    patient, subtype = path.stem, ""
                else:
                    patient, subtype = parsed
                rows.append(
                    {
                        "path": str(path.resolve()),
                        "label": label,
                        "finding": class_dir.name,
                        "patient_id": prefix_id("kermany", patient),
                        "source": "kermany",
                        "view": "",
                        "split": split,
                        "subtype": subtype,
                    }
                )
    if not rows:
        raise DataError(
            f"{base}: no .jpeg/.jpg/.png images under {{train,test,val}}/{{NORMAL,PNEUMONIA}}/; "
            "check the download is complete"
        )
    if unmatched:
        logger.warning(
            "%s: %d file name(s) match no Kermany pattern (e.g. %s); their patient id is the "
            "file stem, so patient grouping may be wrong for them",
            base,
            len(unmatched),
            unmatched[0],
        )
    candidates = finish_candidates(pd.DataFrame(rows))
    logger.info("%s (kermany): %d candidate images", base, len(candidates))
    return ParseResult(candidates, problems, {"hidden file": hidden} if hidden else {})
