"""The tables of a dataset build: ``manifest.csv``, ``summary.csv`` and ``build.json``'s record.

A :class:`ClassDraw` is one recipe class being drawn (its spec, its shuffled
pool of candidates, the images accepted so far);
:func:`biomark.data.build.build_dataset` fills them, then these functions turn
them into the manifest (:func:`manifest_table`), the per class and source
accounting (:func:`source_counts`, :func:`summary_table`, :func:`with_sizes`)
and the record
of what the build decided and found (:func:`build_record`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from biomark.data.dataset import MANIFEST_COLUMNS
from biomark.data.decode import ImageOutcome
from biomark.data.image_info import IMAGE_INFO_COLUMNS, size_flags
from biomark.data.recipe import ClassSpec, Recipe, recipe_to_dict
from biomark.data.sources.base import make_image_id
from biomark.provenance import environment

__all__ = [
    "SUMMARY_COLUMNS",
    "ClassDraw",
    "build_record",
    "manifest_table",
    "source_counts",
    "summary_table",
    "with_sizes",
]


SUMMARY_COLUMNS: tuple[str, ...] = (
    "class",
    "source",
    "asked",
    "candidates",
    "missing_files",
    "used",
    "failed",
    "low_contrast",
    "median_size",
    "square",
    "off_resolution",
    "size_warning",
)


@dataclass
class ClassDraw:
    """One recipe class being drawn: its spec, its shuffled candidates, and where the draw stands.

    ``position`` is the next candidate of ``pool`` to try; ``first_round``
    is true until the first round of decoding (a class without a target takes
    its whole pool then, and nothing after); ``accepted`` holds the (manifest
    row, decoded image) pairs taken so far.
    """

    spec: ClassSpec
    pool: pd.DataFrame
    position: int = 0
    first_round: bool = True

    def __post_init__(self) -> None:
        self.accepted: list[tuple[dict, ImageOutcome]] = []


def _image_ids(rows: list[dict]) -> list[str]:
    taken = {str(r.get("image_id", "")) for r in rows if str(r.get("image_id", ""))}
    ids = []
    for row in rows:
        given = str(row.get("image_id", ""))
        if given:
            ids.append(given)
            continue
        base = make_image_id(row["source"], row["path"])
        candidate, k = base, 2
        while candidate in taken:
            candidate, k = f"{base}-{k}", k + 1
        taken.add(candidate)
        ids.append(candidate)
    return ids


def manifest_table(
    draws: list[ClassDraw], candidate_columns: list[str]
) -> tuple[pd.DataFrame, list[ImageOutcome]]:
    pairs = [
        pair
        for draw in draws
        for pair in sorted(draw.accepted, key=lambda p: (p[0]["source"], p[0]["path"]))
    ]
    rows = [
        dict(
            row,
            sha256=out.sha256,
            contrast=round(out.contrast, 4),
            phash=out.phash,
            **(out.info.as_dict() if out.info is not None else {}),
        )
        for row, out in pairs
    ]
    ids = _image_ids(rows)
    meta = [
        c
        for c in candidate_columns
        if c not in MANIFEST_COLUMNS + IMAGE_INFO_COLUMNS
        and c not in ("exists", "parser", "finding", "contrast", "phash")  # recomputed here
    ]
    columns = (
        list(MANIFEST_COLUMNS)
        + ["finding"]
        + meta
        + list(IMAGE_INFO_COLUMNS)
        + ["contrast", "phash"]
    )
    frame = pd.DataFrame(rows, columns=[c for c in columns if c != "image_id"])
    frame.insert(0, "image_id", ids)
    return frame.fillna(""), [out for _, out in pairs]


def source_counts(draws: list[ClassDraw]) -> dict[tuple[str, str], dict[str, int]]:
    """Per (class, source): candidates with a file and rows without one; used/failed/low-contrast
    start at 0."""
    stats: dict[tuple[str, str], dict[str, int]] = {}
    for draw in draws:
        for source, group in draw.pool.groupby("source"):
            stats[(draw.spec.name, str(source))] = {
                "candidates": int(group["exists"].sum()),
                "missing_files": int((~group["exists"]).sum()),
                "used": 0,
                "failed": 0,
                "low_contrast": 0,
            }
    return stats


def summary_table(
    draws: list[ClassDraw], stats: dict[tuple[str, str], dict[str, int]]
) -> pd.DataFrame:
    rows = []
    for draw in draws:
        sources = sorted({s for (name, s) in stats if name == draw.spec.name})
        target = draw.spec.target
        for source in sources:
            counts = stats[(draw.spec.name, source)]
            asked = target if len(sources) == 1 and target is not None else None
            rows.append({"class": draw.spec.name, "source": source, "asked": asked, **counts})
        if len(sources) != 1:
            total = {
                k: sum(stats[(draw.spec.name, s)][k] for s in sources)
                for k in ("candidates", "missing_files", "used", "failed", "low_contrast")
            }
            rows.append({"class": draw.spec.name, "source": "all", "asked": target, **total})
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS[:8]))
    frame["asked"] = frame["asked"].astype("Int64")
    return frame


def with_sizes(summary: pd.DataFrame, manifest: pd.DataFrame, mix: pd.DataFrame) -> pd.DataFrame:
    """Add the original-size columns to ``summary``: per class and source (``all``: the class).

    ``median_size`` is ``WIDTHxHEIGHT`` of the used images, ``square`` and
    ``off_resolution`` count them (resolution judged against the whole
    source, :func:`biomark.data.image_info.size_flags`), ``size_warning``
    names the source's mixes (``shape``, ``resolution``).
    """
    flags = size_flags(manifest)
    kinds = {
        row["source"]: "+".join(kind for kind in ("shape", "resolution") if row[f"{kind}_mix"])
        for row in mix.to_dict("records")
    }
    columns: dict[str, list] = {c: [] for c in SUMMARY_COLUMNS[8:]}
    for row in summary.to_dict("records"):
        used = manifest["label"].eq(row["class"])
        if row["source"] != "all":
            used &= manifest["source"].eq(row["source"])
        width, height = manifest.loc[used, "width"], manifest.loc[used, "height"]
        columns["median_size"].append(
            f"{int(width.median())}x{int(height.median())}" if used.any() else ""
        )
        columns["square"].append(int(flags.loc[used, "shape"].eq("square").sum()))
        columns["off_resolution"].append(int(flags.loc[used, "off_resolution"].sum()))
        sources = sorted(set(manifest.loc[used, "source"]))
        columns["size_warning"].append(
            "; ".join(f"{s}: {kinds[s]}" for s in sources if kinds.get(s))
        )
    return summary.assign(**columns)


def build_record(
    recipe: Recipe | None,
    settings: dict[str, Any],
    sources: Mapping[str, Sequence[str | Path]],
    *,
    manifest: pd.DataFrame,
    manifest_sha: str,
    class_names: tuple[str, ...],
    failure_frame: pd.DataFrame,
    duplicates: pd.DataFrame,
    skipped: dict[str, dict[str, int]],
    mix: pd.DataFrame,
) -> dict[str, Any]:
    """What the build decided and found, for the dataset's ``build.json``."""
    return {
        "recipe": recipe_to_dict(recipe) if recipe else None,
        "settings": settings,
        "sources": {
            k: [str(Path(p).resolve()) for p in ([v] if isinstance(v, (str, Path)) else v)]
            for k, v in sources.items()
        },
        "counts": {
            "n_images": len(manifest),
            "per_class": {c: int((manifest["label"] == c).sum()) for c in class_names},
            "failures_by_stage": {
                str(k): int(v) for k, v in failure_frame["stage"].value_counts().items()
            },
            "duplicate_pairs": {
                str(k): int(v) for k, v in duplicates["kind"].value_counts().items()
            },
            "skipped": skipped,
        },
        "image_sizes": [
            {
                k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()
            }  # NaN -> null
            for row in mix.drop(columns="warning").to_dict("records")
        ],
        "warnings": mix.loc[mix["warning"].ne(""), "warning"].tolist(),
        "classes": list(class_names),
        "manifest_sha256": manifest_sha,
        "environment": environment(),
    }
