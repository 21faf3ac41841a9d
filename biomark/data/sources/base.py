"""What every source parser returns: one candidates table schema plus problems.

A *candidate* is an image a source offers, before selection and decoding.
Every parser in :mod:`biomark.data.sources` returns a :class:`ParseResult`
whose ``candidates`` frame has the columns :data:`CANDIDATE_COLUMNS` first,
then the source's own metadata columns (age, sex, modality, date, split,
subtype, ...):

``path``
    Absolute path of the image file (for an NIH row without a file: where it
    would be, and ``exists`` is False).
``label``
    Canonical class (:data:`biomark.data.labels.CANONICAL_CLASSES`), a
    ``finding_map`` target, or ``""`` when the finding maps to no class.
``finding``
    The raw finding / folder name / manifest label.
``patient_id``
    Text, prefixed by the source (``cohen-25``, ``kermany-person123``) so
    ids stay unique when sources are combined.
``source``
    ``cohen``, ``actualmed``, ``figure1``, ``kermany``, ``nih``, ``folder``,
    or a manifest's own ``source`` column.
``view``
    Projection (``PA``, ``AP``, ...) where the source says, else ``""``.
``exists``
    False only for NIH label rows whose image is not in the download.

``problems`` are rows for ``failures.csv`` (a metadata row whose file is
missing, an unknown finding); rows a source skips on purpose (lateral views,
CT) are not problems but are counted in ``skipped``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from biomark.exceptions import DataError

__all__ = [
    "CANDIDATE_COLUMNS",
    "DEFAULT_VIEWS",
    "FAILURE_COLUMNS",
    "ParseResult",
    "Problem",
    "SourceOptions",
    "check_dir",
    "finish_candidates",
    "make_image_id",
    "normalize_view",
]

CANDIDATE_COLUMNS: tuple[str, ...] = ("path", "label", "finding", "patient_id", "source", "view", "exists")
FAILURE_COLUMNS: tuple[str, ...] = ("source", "image_id", "path", "stage", "reason", "action")

#: Frontal chest X-ray projections kept by default (compared with
#: :func:`normalize_view`). ``AP erect`` is how Figure1 writes an AP view.
DEFAULT_VIEWS: tuple[str, ...] = ("PA", "AP", "AP Supine", "AP semi erect", "AP erect")


@dataclass(frozen=True)
class Problem:
    """One row of ``failures.csv``: an input that could not be used."""

    source: str
    path: str
    stage: str
    reason: str
    action: str
    image_id: str = ""

    def as_row(self) -> dict[str, str]:
        """The problem as a ``failures.csv`` row (``image_id`` derived when empty)."""
        image_id = self.image_id or (make_image_id(self.source, self.path) if self.path else "")
        return {
            "source": self.source,
            "image_id": image_id,
            "path": self.path,
            "stage": self.stage,
            "reason": self.reason,
            "action": self.action,
        }


@dataclass(frozen=True)
class SourceOptions:
    """Settings a recipe passes to every parser.

    Parameters
    ----------
    finding_map : mapping of str to str
        Extra raw finding -> class mappings (checked before the built-in ones).
    views : tuple of str
        Allowed projections for sources that record one (Cohen, NIH).
    classes : tuple of str or None
        The recipe's classes in order (None: no recipe). The folder source
        checks its class folders against them; NIH multi-label uses the order.
    multi_label : bool
        NIH: allow images with several findings (label = first recipe class
        among them) instead of single-finding images only.
    strict : bool
        Raise the first problem as an error instead of recording it.
    """

    finding_map: Mapping[str, str] = field(default_factory=dict)
    views: tuple[str, ...] = DEFAULT_VIEWS
    classes: tuple[str, ...] | None = None
    multi_label: bool = False
    strict: bool = False


@dataclass
class ParseResult:
    """Candidates of one source folder, plus what went wrong and what was skipped.

    Attributes
    ----------
    candidates : DataFrame of shape (n_candidates, n_columns)
        :data:`CANDIDATE_COLUMNS` then source metadata.
    problems : list of Problem
        Rows for ``failures.csv``.
    skipped : dict of str to int
        Rows left out on purpose, by reason (``"lateral or other non-frontal
        view"``: 12); logged and written to ``build.json``.
    """

    candidates: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def normalize_view(view: object) -> str:
    """Comparison key of a projection: case-folded, single spaces, ``_``/``-`` as space.

    Examples
    --------
    >>> normalize_view("AP  Supine") == normalize_view("ap_supine")
    True
    """
    return " ".join(re.sub(r"[_\-]+", " ", str(view)).casefold().split())


def make_image_id(source: str, path: str | Path) -> str:
    """A readable, file-system-safe image id: ``<source>-<file stem>``.

    Examples
    --------
    >>> make_image_id("kermany", "/x/person1_bacteria_1.jpeg")
    'kermany-person1_bacteria_1'
    """
    stem = Path(str(path)).name
    for suffix in (".gz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".nii"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    text = f"{source}-{stem}" if source else stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def check_dir(path: str | Path, what: str, hint: str) -> Path:
    """Return ``path`` resolved, or raise when it is not an existing folder.

    Raises
    ------
    DataError
        Naming the folder, that it is missing, and ``hint`` (what to do).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found; {hint}")
    return folder.resolve()


def finish_candidates(frame: pd.DataFrame) -> pd.DataFrame:
    """Put :data:`CANDIDATE_COLUMNS` first (filling absent ones) as text / bool.

    Metadata columns keep their order; ``Unnamed: N`` columns (trailing commas
    in the source CSV) are dropped.
    """
    frame = frame.loc[:, [c for c in frame.columns if not str(c).startswith("Unnamed")]].copy()
    for column in CANDIDATE_COLUMNS:
        if column not in frame.columns:
            frame[column] = True if column == "exists" else ""
    for column in CANDIDATE_COLUMNS[:-1]:
        frame[column] = frame[column].astype("string").fillna("").astype(str)
    frame["exists"] = frame["exists"].astype(bool)
    extra = [c for c in frame.columns if c not in CANDIDATE_COLUMNS]
    return frame.loc[:, list(CANDIDATE_COLUMNS) + extra].reset_index(drop=True)
