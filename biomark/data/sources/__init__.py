"""Dataset source parsers, one per public dataset layout.

Each parser takes a folder (or, for ``manifest``, a CSV file) and a
:class:`~biomark.data.sources.base.SourceOptions`, and returns a
:class:`~biomark.data.sources.base.ParseResult`: candidates in one schema
plus problems for ``failures.csv``. :data:`SOURCES` is the explicit
registry used by :func:`biomark.data.build.build_dataset` and the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from biomark.data.sources.base import (
    CANDIDATE_COLUMNS,
    DEFAULT_VIEWS,
    ParseResult,
    Problem,
    SourceOptions,
)
from biomark.data.sources.cohen import parse_cohen
from biomark.data.sources.folder import parse_folder
from biomark.data.sources.kermany import parse_kermany
from biomark.data.sources.manifest_csv import parse_manifest
from biomark.data.sources.nih import parse_nih

__all__ = [
    "CANDIDATE_COLUMNS",
    "DEFAULT_VIEWS",
    "SOURCES",
    "ParseResult",
    "Parser",
    "Problem",
    "SourceOptions",
    "parse_cohen",
    "parse_folder",
    "parse_kermany",
    "parse_manifest",
    "parse_nih",
]

Parser = Callable[[str | Path, SourceOptions | None], ParseResult]

#: Source name -> parser. Keys are the names used in ``build_dataset(sources=...)``,
#: recipe ``sources:`` lists and the CLI flags (``--cohen``, ``--kermany``, ...).
SOURCES: dict[str, Parser] = {
    "cohen": parse_cohen,
    "kermany": parse_kermany,
    "nih": parse_nih,
    "folder": parse_folder,
    "manifest": parse_manifest,
}
