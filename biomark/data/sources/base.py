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
    Text, prefixed by the source (``cohen-25``, ``kermany-person123``,
    ``hospital_a-282``; :func:`prefix_id`) so ids stay unique when sources
    are combined. Every parser prefixes, the manifest parser included.
``source``
    ``cohen``, ``actualmed``, ``figure1``, ``kermany``, ``nih``, ``folder``,
    or a manifest's own ``source`` column.
``view``
    Projection (``PA``, ``AP``, ...) where the source says, else ``""``.
``exists``
    False only for NIH label rows whose image is not in the download.

``problems`` are rows for ``failures.csv`` (a metadata row whose file is
missing, an unknown finding, a file in an image folder that biomark cannot
read such as a ``.bmp``); rows a source skips on purpose (lateral views, CT)
are not problems but are counted in ``skipped``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from biomark.exceptions import DataError
from biomark.io.images import SUPPORTED_SUFFIXES, is_dicom_file

__all__ = [
    "CANDIDATE_COLUMNS",
    "DEFAULT_VIEWS",
    "FAILURE_COLUMNS",
    "ParseResult",
    "Problem",
    "SourceOptions",
    "check_dir",
    "finish_candidates",
    "folder_source_name",
    "list_images",
    "make_image_id",
    "normalize_view",
    "own_patients",
    "prefix_id",
]

CANDIDATE_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "finding",
    "patient_id",
    "source",
    "view",
    "exists",
)
FAILURE_COLUMNS: tuple[str, ...] = ("source", "image_id", "path", "stage", "reason", "action")

#: Frontal chest X-ray projections kept by default (compared with
#: :func:`normalize_view`). ``AP erect`` is how Figure1 writes an AP view.
logger = logging.getLogger(__name__)

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


def folder_source_name(folder: str | Path, default: str) -> str:
    """A source name from a folder's own name: lower case, ``[a-z0-9_-]`` only.

    Examples
    --------
    >>> folder_source_name("/data/Hospital A", "folder"), folder_source_name("/", "folder")
    ('hospital_a', 'folder')
    """
    name = Path(folder).name.casefold()
    return re.sub(r"[^a-z0-9_-]+", "_", name).strip("_") or default


def own_patients(paths: list[str], *, where: object, how_to_name: str) -> list[str]:
    """A patient id per image for a source that names no patients: every image its own patient.

    The id is the file stem, as before, unless another file of the source has
    the same stem (``covid/1.png`` and ``normal/1.png``: two films that a stem
    alone would make one patient, forced into one fold and counted once); those
    files get the shortest end of their path without the suffix that tells
    them apart (``covid/1``, ``normal/1``), and a warning names the repeated
    stems.

    Parameters
    ----------
    paths : list of str
        The images' paths.
    where : object
        The source (its folder or manifest), for the warning.
    how_to_name : str
        How a user names the patients of this source instead, for the warning
        (``"add a patient_id column"``).

    Returns
    -------
    list of str
        One id per path, not yet prefixed with the source.

    Examples
    --------
    >>> own_patients(["/x/covid/1.png", "/x/normal/1.png", "/x/normal/2.png"], where="x",
    ...              how_to_name="add a patient_id column")
    ['covid/1', 'normal/1', '2']
    >>> own_patients(["/a/site/covid/1.png", "/b/site/covid/1.png"], where="x", how_to_name="")
    ['a/site/covid/1', 'b/site/covid/1']
    """
    stems = [Path(p).stem for p in paths]
    counts = pd.Series(stems, dtype=object).value_counts()
    repeated = sorted(counts.index[counts > 1])
    parts = [Path(p).with_suffix("").parts for p in paths]
    ids = list(stems)
    for stem in repeated:
        rows = [k for k, s in enumerate(stems) if s == stem]
        longest = max(len(parts[k]) for k in rows)
        for depth in range(2, longest + 1):
            ends = ["/".join(parts[k][-depth:]) for k in rows]
            if len(set(ends)) == len(ends) or depth == longest:
                for k, end in zip(rows, ends, strict=True):
                    ids[k] = end.lstrip("/")
                break
    if repeated:
        logger.warning(
            "%s: %d file name(s) repeat in different folders (e.g. %s); each such image is its "
            "own patient, named by its path (e.g. %s), not one patient shared by the files of that "
            "name; %s if some are",
            where,
            len(repeated),
            ", ".join(repeated[:3]),
            next(i for i, s in zip(ids, stems, strict=True) if s == repeated[0]),
            how_to_name,
        )
    return ids


def prefix_id(source: str, text: str) -> str:
    """``text`` prefixed with ``<source>-``, unless it already starts with the source's name.

    Patient and image ids are prefixed so they stay unique when sources are
    combined (patient 282 of two hospitals is two patients). An id that
    already begins with the source name followed by ``-``, ``_`` or ``.``
    (compared case-insensitively: a re-used built manifest, files named
    ``nih_0001.png``) is kept as it is rather than doubled. Empty text stays
    empty (an unknown patient).

    Examples
    --------
    >>> prefix_id("hospital_a", "282"), prefix_id("cohen", "cohen-25"), prefix_id("nih", "nihil")
    ('hospital_a-282', 'cohen-25', 'nih-nihil')
    """
    text = str(text).strip()
    if not text or not source:
        return text
    head, rest = text[: len(source)], text[len(source) :]
    if head.casefold() == source.casefold() and (rest == "" or rest[0] in "-_."):
        return text
    return f"{source}-{text}"


def make_image_id(source: str, path: str | Path) -> str:
    """A readable, file-system-safe image id: ``<source>-<file stem>``.

    The source is not repeated when the stem already starts with it
    (:func:`prefix_id`).

    Examples
    --------
    >>> make_image_id("kermany", "/x/person1_bacteria_1.jpeg")
    'kermany-person1_bacteria_1'
    >>> make_image_id("cohen", "/x/cohen-0001.png")
    'cohen-0001'
    """
    stem = Path(str(path)).name
    for suffix in (".gz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".nii"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    text = prefix_id(source, stem)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def list_images(
    folder: Path, source: str, *, recursive: bool, strict: bool = False
) -> tuple[list[Path], list[Problem], int]:
    """The image files biomark can read in ``folder``, and a problem for every other file.

    A file is kept when its suffix is one :func:`biomark.io.images.read_image`
    reads (:data:`~biomark.io.images.SUPPORTED_SUFFIXES`, case-insensitive) or
    it has no suffix and carries the DICOM magic. Every other visible file
    becomes a ``parse`` problem for ``failures.csv``, so nothing vanishes
    silently: an image format biomark does not read (``.bmp``, ``.tif``,
    ``.gif``, ``.webp``, ...) says to convert it, anything else says it is
    not an image. Hidden files (``.DS_Store``) are only counted.

    Parameters
    ----------
    folder : Path
        A class folder.
    source : str
        Source name for the problems.
    recursive : bool
        Walk sub-folders too (hidden sub-folders are skipped).
    strict : bool, default False
        Raise the first unreadable file instead of returning it as a problem.

    Returns
    -------
    files : list of Path
        Readable image files, sorted.
    problems : list of Problem
        One per unreadable file, in path order.
    hidden : int
        Hidden files left out.

    Raises
    ------
    DataError
        ``strict`` only: the first file that is not a readable image.
    """
    from PIL import Image

    supported = {s.lower() for s in SUPPORTED_SUFFIXES}
    pil_suffixes = {s.lower() for s in Image.registered_extensions()}
    entries = sorted(folder.rglob("*") if recursive else folder.iterdir())
    files: list[Path] = []
    problems: list[Problem] = []
    hidden = 0
    for path in entries:
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            hidden += int(path.is_file())
            continue
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in supported or (suffix == "" and is_dicom_file(path)):
            files.append(path)
            continue
        if suffix in pil_suffixes:
            reason = (
                f"unsupported image format {suffix}: biomark reads PNG, JPEG and DICOM "
                f"({', '.join(sorted(supported))})"
            )
            action = f"convert it to PNG to use it (e.g. `mogrify -format png *{suffix}`); left out"
        else:
            reason = f"not an image file ({suffix or 'no suffix'})"
            action = "left out; move it out of the image folder to drop this row"
        if strict:
            raise DataError(f"{path}: {reason}; {action}")
        problems.append(Problem(source, str(path.resolve()), "parse", reason, action))
    if problems:
        logger.warning(
            "%s: %d file(s) are not readable images (e.g. %s: %s); listed in failures.csv",
            folder,
            len(problems),
            Path(problems[0].path).name,
            problems[0].reason,
        )
    return files, problems, hidden


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
