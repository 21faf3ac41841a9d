"""NIH ChestX-ray14 (Wang et al. 2017).

Layout (NIH Box download or Kaggle ``nih-chest-xrays/data``)::

    DIR/Data_Entry_2017*.csv                 the label table (112,120 rows)
    DIR/images*/.../*.png                    one or many image folders, possibly
                                             nested (images_001/images/*.png)

When several ``Data_Entry_2017*.csv`` exist, the last in name order is used
(``Data_Entry_2017_v2020.csv`` sorts after ``Data_Entry_2017.csv``). Image
files are indexed by name with one directory walk (no per-row ``stat``).

Labels: ``Finding Labels`` is pipe-separated. By default an image is a
candidate for class C only when C is its *only* finding (single-label, the
paper's classes must not overlap). With ``multi_label`` an image whose
findings include a class is a candidate, labelled with the first recipe
class (recipe order; canonical order without a recipe) among its findings.
Mapped findings: Edema, Effusion, Emphysema, Fibrosis, and ``No Finding``
-> Normal, plus the recipe's ``finding_map``.

Rows whose image is not in the download stay in the candidates with
``exists=False`` (so a seeded selection picks the same images whatever was
downloaded); the build records them as failures only where the recipe would
have used them, and logs how many rows had no image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from biomark.data.labels import CANONICAL_CLASSES, map_nih_finding
from biomark.data.sources.base import (
    ParseResult,
    SourceOptions,
    check_dir,
    finish_candidates,
    normalize_view,
)
from biomark.exceptions import DataError

__all__ = ["find_label_table", "index_images", "parse_nih"]

logger = logging.getLogger(__name__)

_COLUMNS = {
    "Image Index": "image_index",
    "Finding Labels": "finding",
    "Follow-up #": "follow_up",
    "Patient ID": "nih_patient",
    "Patient Age": "age",
    "Patient Gender": "sex",
    "View Position": "view",
}


def find_label_table(root: Path) -> Path:
    """The ``Data_Entry_2017*.csv`` to use (the last in name order).

    Raises
    ------
    DataError
        When there is none in ``root``.
    """
    tables = sorted(root.glob("Data_Entry_2017*.csv"))
    if not tables:
        raise DataError(
            f"{root}: no Data_Entry_2017*.csv found; point --nih at the ChestX-ray14 folder "
            "holding Data_Entry_2017_v2020.csv and images*/ "
            "(https://nihcc.app.box.com/v/ChestXray-NIHCC)"
        )
    if len(tables) > 1:
        logger.info("%s: several label tables, using %s", root, tables[-1].name)
    return tables[-1]


def index_images(root: Path) -> dict[str, str]:
    """Map image file name -> absolute path for every ``.png`` under ``images*`` folders.

    One :func:`os.walk` per top-level ``images*`` folder (all of ``root``
    when there is none); the first path wins when a name repeats.
    """
    tops = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("images"))
    index: dict[str, str] = {}
    for top in tops or [root]:
        for folder, _dirs, files in os.walk(top):
            for name in files:
                if name.lower().endswith(".png"):
                    index.setdefault(name, os.path.join(folder, name))
    return index


def _labels(findings: pd.Series, options: SourceOptions) -> pd.Series:
    order = options.classes or CANONICAL_CLASSES
    rank = {name: i for i, name in enumerate(order)}
    table: dict[str, str] = {}
    for combo in findings.unique():
        parts = [p.strip() for p in str(combo).split("|") if p.strip()]
        mapped = [map_nih_finding(p, options.finding_map) for p in parts]
        if not options.multi_label:
            table[combo] = mapped[0] if len(parts) == 1 else ""
            continue
        hits = [m for m in mapped if m and (options.classes is None or m in rank)]
        table[combo] = min(hits, key=lambda m: rank.get(m, len(rank))) if hits else ""
    return findings.map(table).fillna("")


def parse_nih(root: str | Path, options: SourceOptions | None = None) -> ParseResult:
    """Candidates of an NIH ChestX-ray14 folder (vectorised; fast on 112k rows).

    Parameters
    ----------
    root : str or Path
        Folder holding ``Data_Entry_2017*.csv`` and ``images*/``.
    options : SourceOptions, optional
        Views, finding map, recipe classes and ``multi_label``.

    Returns
    -------
    ParseResult
        Candidates (labelled rows with an allowed view), including rows
        without an image (``exists`` False); columns ``age``, ``sex``,
        ``follow_up``, ``image_index`` added.

    Raises
    ------
    DataError
        Missing folder or label table, missing columns, or no images at all.
    """
    options = options or SourceOptions()
    root = check_dir(
        root, "NIH ChestX-ray14", "give the folder holding Data_Entry_2017_v2020.csv and images*/"
    )
    table = find_label_table(root)
    try:
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{table}: not a readable CSV ({err}); re-download it") from err
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{table}: missing column(s) {', '.join(missing)}; expected the ChestX-ray14 label "
            "table"
        )
    frame = frame.loc[:, list(_COLUMNS)].rename(columns=_COLUMNS)
    n_rows = len(frame)
    index = index_images(root)
    if not index:
        raise DataError(
            f"{root}: no .png images found under images*/; download and unpack the image archives"
        )
    paths = frame["image_index"].map(index)
    frame["exists"] = paths.notna()
    frame["path"] = paths.fillna(str(root / "images") + os.sep + frame["image_index"])
    n_with_image = int(frame["exists"].sum())
    logger.info(
        "%s: %d label rows, %d with an image under %s, %d without (normal for a partial download)",
        table.name,
        n_rows,
        n_with_image,
        root,
        n_rows - n_with_image,
    )
    skipped: dict[str, int] = {}
    allowed = {normalize_view(v) for v in options.views}
    frontal = frame["view"].str.strip().str.casefold().isin(allowed)
    if (~frontal).any():
        skipped["non-frontal view"] = int((~frontal).sum())
    frame = frame.loc[frontal]
    frame["label"] = _labels(frame["finding"], options)
    unlabelled = frame["label"].eq("")
    skipped[
        "findings outside the classes" + ("" if options.multi_label else " or several findings")
    ] = int(unlabelled.sum())
    skipped["label rows without an image"] = n_rows - n_with_image
    frame = frame.loc[~unlabelled].copy()
    frame["patient_id"] = (
        "nih-" + frame["nih_patient"].str.strip()
    )  # vectorised prefix_id: NIH ids are numbers
    frame["source"] = "nih"
    frame = frame.drop(columns=["nih_patient"])
    candidates = finish_candidates(frame)
    logger.info(
        "%s (nih): %d labelled candidates (%d with an image)",
        root,
        len(candidates),
        int(candidates["exists"].sum()),
    )
    return ParseResult(candidates, [], skipped)
