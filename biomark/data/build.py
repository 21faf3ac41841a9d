"""Build a dataset folder from public sources: ``biomark data build``.

Steps of :func:`build_dataset`:

1. **Parse** every source folder (:data:`biomark.data.sources.SOURCES`) into
   candidates; metadata rows whose file is missing and unknown findings
   become failures, CT / lateral rows are counted as skipped.
2. **Select** per recipe class: the class's candidates are pooled, shuffled
   once with a generator seeded from the recipe seed
   (:func:`biomark.data.recipe.shuffled_pool`), and tried in that order
   until ``target`` images passed; a failing image is replaced by the next
   candidate. A shortfall is a warning naming class, sources, asked and
   available. Without a recipe every labelled candidate is taken.
3. **Decode** each tried image in parallel (joblib, ``jobs``): read
   (:func:`biomark.io.images.read_image`), letterbox to ``image_size``,
   contrast score of the letterboxed content (below ``min_contrast`` the
   image is excluded, paper 2.1.4), file SHA-256, perceptual hash, and the
   file's original ``width``, ``height``, ``mode`` and ``bit_depth``
   (:func:`biomark.data.image_info.read_image_info`, manifest columns).
   A source that mixes image shapes or resolutions (square re-saves among
   rectangular films; :func:`biomark.data.image_info.size_mix`) is a
   warning in the log, in ``summary.csv`` (``size_warning``) and in
   ``build.json`` (``warnings``, ``image_sizes``).
4. **Write** (:mod:`biomark.data.build_tables` makes the tables,
   :func:`biomark.data.dataset_writer.write_dataset` writes them) into a
   hidden staging folder inside ``out_dir``: the cache
   (:func:`biomark.data.cache.write_cache`), ``summary.csv``,
   ``failures.csv``, ``duplicates.csv``, ``build.json``; then move them into
   place and ``manifest.csv`` LAST. An interrupted build leaves the previous
   dataset (and its manifest) as it was and no staging folder.

The layout is documented in :mod:`biomark.data.dataset`, whose
:func:`~biomark.data.dataset.load_dataset` reads it.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.config.seeds import check_seed
from biomark.data.build_tables import (
    ClassDraw,
    build_record,
    manifest_table,
    source_counts,
    summary_table,
    with_sizes,
)
from biomark.data.dataset_writer import write_dataset
from biomark.data.decode import ImageOutcome, decode_many
from biomark.data.duplicates import DEFAULT_MAX_DISTANCE, find_duplicates
from biomark.data.image_info import size_mix
from biomark.data.labels import CANONICAL_CLASSES, order_classes
from biomark.data.recipe import ClassSpec, Recipe, shuffled_pool
from biomark.data.sources import SOURCES
from biomark.data.sources.base import (
    DEFAULT_VIEWS,
    FAILURE_COLUMNS,
    Problem,
    SourceOptions,
)
from biomark.exceptions import ConfigError, DataError
from biomark.io.contrast import DEFAULT_MIN_CONTRAST
from biomark.io.disk import check_writable_dir
from biomark.provenance import bytes_sha256

__all__ = ["BuildResult", "build_dataset"]

#: A source's mixed image shapes are logged as a warning when they go with the class at this level
#: (chi-square test; ``size_mix``'s ``shape_class_p``), or when resolutions mix; else as
#: information.
SHAPE_CLASS_ALPHA = 0.01


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_dataset` wrote.

    Attributes
    ----------
    out_dir : Path
        The dataset folder.
    n_images : int
        Rows of ``manifest.csv`` (= images in the cache).
    n_failures : int
        Rows of ``failures.csv``.
    n_duplicate_pairs : int
        Rows of ``duplicates.csv``.
    summary : DataFrame
        ``summary.csv``: per class and source asked, candidates, used, failed.
    """

    out_dir: Path
    n_images: int
    n_failures: int
    n_duplicate_pairs: int
    summary: pd.DataFrame


def _parse_sources(
    sources: Mapping[str, Sequence[str | Path]], options: SourceOptions
) -> tuple[pd.DataFrame, list[Problem], dict[str, dict[str, int]]]:
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ConfigError(
            f"unknown source(s) {', '.join(unknown)}; use one of {', '.join(SOURCES)}"
        )
    frames, problems, skipped = [], [], {}
    for name, folders in sources.items():
        for folder in [folders] if isinstance(folders, (str, Path)) else folders:
            result = SOURCES[name](folder, options)
            frames.append(result.candidates.assign(parser=name))
            problems.extend(result.problems)
            if result.skipped:
                skipped[str(folder)] = result.skipped
    if not frames:
        raise DataError(
            "no sources given; pass at least one of --cohen, --kermany, --nih, --folder, --manifest"
        )
    candidates = pd.concat(frames, ignore_index=True).fillna("")
    candidates["exists"] = candidates["exists"].astype(bool)
    return candidates, problems, skipped


def _class_specs(
    candidates: pd.DataFrame, recipe: Recipe | None, sources: Mapping
) -> tuple[ClassSpec, ...]:
    if recipe is None:
        labelled = candidates.loc[candidates["exists"] & candidates["label"].ne(""), "label"]
        names = order_classes(labelled)
        given = tuple(sorted(set(candidates["parser"]) | set(candidates["source"])))
        return tuple(ClassSpec(name=n, sources=given) for n in names)
    known = set(sources) | set(candidates["source"])
    for spec in recipe.classes:
        if not known & set(spec.sources):
            flags = " or ".join(f"--{s} DIR" for s in spec.sources if s in SOURCES) or "the source"
            raise ConfigError(
                f"recipe {recipe.name}: class {spec.name} takes images from "
                f"{', '.join(spec.sources)}, which was not given; pass {flags}, or remove the "
                "class from the recipe"
            )
    return recipe.classes


def _outside_recipe(
    candidates: pd.DataFrame, classes: tuple[str, ...], strict: bool
) -> list[Problem]:
    outside = (
        candidates["label"].ne("")
        & ~candidates["label"].isin(classes)
        & ~candidates["label"].isin(CANONICAL_CLASSES)
    )
    problems = []
    for row in candidates.loc[outside].to_dict("records"):
        problem = Problem(
            row["source"],
            row["path"],
            "select",
            f"label {row['label']!r} is not a class of the recipe ({', '.join(classes)})",
            "add the class to the recipe (or map it with finding_map), or drop the row",
            image_id=str(row.get("image_id", "")),
        )
        if strict:
            raise DataError(f"{row['path']}: {problem.reason}; {problem.action}")
        problems.append(problem)
    return problems


def _draw(
    draws: list[ClassDraw],
    *,
    image_size: int,
    min_contrast: float,
    strict: bool,
    jobs: int,
    masks: bool,
    failures: list[Problem],
    stats: dict[tuple[str, str], dict[str, int]],
) -> None:
    """Decode candidates in rounds until every class has its target or runs out.

    Each round takes, per class, as many next candidates (in shuffled order)
    as the class still lacks; rows without a file are skipped, and recorded
    as failures when they sit within the first ``target`` positions (the
    seed would have picked them).
    """
    while True:
        tasks: list[tuple[ClassDraw, dict]] = []
        for draw in draws:
            target = draw.spec.target
            if target is None:
                need = len(draw.pool) if draw.first_round else 0
            else:
                need = target - len(draw.accepted)
            draw.first_round = False
            if need <= 0 or draw.position >= len(draw.pool):
                continue
            exists = draw.pool["exists"].to_numpy()[draw.position :]
            take = np.flatnonzero(exists)[:need]
            end = draw.position + (
                int(take[-1]) + 1 if len(take) and len(take) == need else len(exists)
            )
            if target is not None:
                lost = (
                    np.flatnonzero(~exists[: max(0, min(end, target) - draw.position)])
                    + draw.position
                )
                for row in draw.pool.iloc[lost].to_dict("records"):
                    problem = Problem(
                        row["source"],
                        row["path"],
                        "select",
                        f"selected for {draw.spec.name} but the image file is not in the download",
                        "download the image archive that holds it; replaced by the next candidate",
                    )
                    if strict:
                        raise DataError(f"{row['path']}: {problem.reason}; {problem.action}")
                    failures.append(problem)
            rows = draw.pool.iloc[take + draw.position].to_dict("records")
            tasks.extend((draw, row) for row in rows)
            draw.position = end
        if not tasks:
            return
        items = [(row["path"], str(row.get("mask_path", "")) if masks else "") for _, row in tasks]
        outcomes = decode_many(
            items, size=image_size, min_contrast=min_contrast, jobs=jobs, strict=strict
        )
        for (draw, row), outcome in zip(tasks, outcomes, strict=True):
            key = (draw.spec.name, row["source"])
            if outcome.ok:
                draw.accepted.append((row, outcome))
                stats[key]["used"] += 1
                continue
            stats[key]["low_contrast" if outcome.stage == "contrast" else "failed"] += 1
            failures.append(
                Problem(
                    row["source"],
                    row["path"],
                    outcome.stage,
                    outcome.reason,
                    outcome.action,
                    image_id=str(row.get("image_id", "")),
                )
            )


def build_dataset(
    out_dir: str | Path,
    *,
    sources: Mapping[str, Sequence[str | Path]],
    recipe: Recipe | None = None,
    image_size: int = 200,
    min_contrast: float | None = None,
    strict: bool = False,
    jobs: int = 1,
    seed: int | None = None,
    near_duplicate_distance: int = DEFAULT_MAX_DISTANCE,
) -> BuildResult:
    """Parse sources, select per recipe, decode, cache, and write a dataset folder.

    Parameters
    ----------
    out_dir : str or Path
        Dataset folder (created; an existing dataset there is replaced
        atomically, manifest last).
    sources : mapping of str to sequence of paths
        :data:`~biomark.data.sources.SOURCES` name -> folders (a CSV for
        ``manifest``), e.g. ``{"cohen": [d1, d2], "kermany": [d3]}``.
    recipe : Recipe, optional
        Classes, targets and sources; None takes every labelled candidate.
    image_size : int, default 200
        Side of the letterboxed images.
    min_contrast : float, optional
        Contrast threshold; default the recipe's, else
        :data:`biomark.io.contrast.DEFAULT_MIN_CONTRAST`.
    strict : bool, default False
        Raise the first bad row or image instead of recording it.
    jobs : int, default 1
        Decoding processes; -1 uses all cores.
    seed : int, optional
        Overrides the recipe's seed.
    near_duplicate_distance : int, default 14
        Largest Hamming distance of the 256-bit pHash reported as a near
        duplicate (-1: off); see :mod:`biomark.data.duplicates`.

    Returns
    -------
    BuildResult

    Raises
    ------
    ConfigError
        Invalid settings, unknown source names, a recipe class whose sources were not given.
    DataError
        Missing or empty source folders, no usable images, or (``strict``)
        the first bad row or image (``ImageReadError`` for an unreadable file).
    NotWritableError
        ``out_dir`` is on a read-only file system or not permitted (checked
        before any image is decoded).
    DiskFullError
        The file system of ``out_dir`` filled up while writing; the previous
        dataset there is left as it was and no temporary file remains.
    """
    threshold = _check_settings(image_size, jobs, min_contrast, recipe)
    if seed is not None:
        check_seed(seed, "--seed")
    out = check_writable_dir(Path(out_dir), "output folder (--out)")
    options = SourceOptions(
        finding_map=dict(recipe.finding_map) if recipe else {},
        views=recipe.views if recipe else DEFAULT_VIEWS,
        classes=recipe.class_names if recipe else None,
        multi_label=recipe.nih.multi_label if recipe else False,
        strict=strict,
    )
    candidates, failures, skipped = _parse_sources(sources, options)
    specs = _class_specs(candidates, recipe, sources)
    class_names = tuple(s.name for s in specs)
    if recipe is not None:
        failures.extend(_outside_recipe(candidates, class_names, strict))
    used_seed = seed if seed is not None else (recipe.seed if recipe else 0)
    rng = np.random.default_rng(used_seed)
    draws = [ClassDraw(spec, shuffled_pool(candidates, spec, rng)) for spec in specs]
    stats = source_counts(draws)
    has_masks = "mask_path" in candidates.columns and candidates["mask_path"].ne("").any()
    _draw(
        draws,
        image_size=image_size,
        min_contrast=threshold,
        strict=strict,
        jobs=jobs,
        masks=has_masks,
        failures=failures,
        stats=stats,
    )
    _warn_short_classes(draws, stats)
    manifest, outcomes = manifest_table(draws, list(candidates.columns))
    if manifest.empty:
        raise _no_usable_images(sources)
    mix = size_mix(manifest)
    _log_size_mix(mix)
    summary = with_sizes(summary_table(draws, stats), manifest, mix)
    failure_frame = pd.DataFrame([p.as_row() for p in failures], columns=list(FAILURE_COLUMNS))
    duplicates = find_duplicates(manifest, near_duplicate_distance)
    manifest_bytes = manifest.to_csv(index=False, lineterminator="\n").encode("utf-8")
    masks = _masks(outcomes, image_size) if has_masks else None
    record = build_record(
        recipe,
        {
            "image_size": image_size,
            "min_contrast": threshold,
            "strict": strict,
            "jobs": jobs,
            "seed": used_seed,
            "near_duplicate_distance": near_duplicate_distance,
        },
        sources,
        manifest=manifest,
        manifest_sha=bytes_sha256(manifest_bytes),
        class_names=class_names,
        failure_frame=failure_frame,
        duplicates=duplicates,
        skipped=skipped,
        mix=mix,
    )
    # Accepted outcomes are the ones that decoded, so every one has its image.
    images = typing.cast("list[np.ndarray]", [o.image for o in outcomes])
    write_dataset(
        out,
        images,
        masks,
        image_size=image_size,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        classes=class_names,
        tables={"summary": summary, "failures": failure_frame, "duplicates": duplicates},
        record=record,
    )
    logger.info(
        "%s: %d images, %d failures, %d duplicate pairs",
        out,
        len(manifest),
        len(failure_frame),
        len(duplicates),
    )
    return BuildResult(out, len(manifest), len(failure_frame), len(duplicates), summary)


def _no_usable_images(sources: Mapping[str, Sequence[str | Path]]) -> DataError:
    """The error of a build that kept no image, naming every source folder given."""
    given = "; ".join(
        f"{k}: {', '.join(map(str, v if not isinstance(v, (str, Path)) else [v]))}"
        for k, v in sources.items()
    )
    return DataError(
        f"no usable images from {given}; see the log for skipped rows and check the folders and "
        "recipe"
    )


def _check_settings(
    image_size: int, jobs: int, min_contrast: float | None, recipe: Recipe | None
) -> float:
    """Check the build's settings; return the contrast threshold in force (the flag's, else the
    recipe's)."""
    if image_size < 8:
        raise ConfigError(f"image_size={image_size}: use at least 8 pixels (the paper uses 200)")
    if jobs == 0 or jobs < -1:
        raise ConfigError(f"jobs={jobs}: use a positive number of processes or -1 for all cores")
    threshold = (
        min_contrast
        if min_contrast is not None
        else (
            recipe.min_contrast
            if recipe is not None and recipe.min_contrast is not None
            else DEFAULT_MIN_CONTRAST
        )
    )
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"min_contrast={threshold}: use a value in [0, 1]")
    return threshold


def _masks(outcomes: list[ImageOutcome], image_size: int) -> list[np.ndarray]:
    """Every image's lung mask, empty (zeros) for an image without a ``mask_path``."""
    empty = np.zeros((image_size, image_size), np.uint8)
    masks = [o.mask if o.mask is not None else empty for o in outcomes]
    if any(o.mask is None for o in outcomes):
        logger.warning("some images have no mask_path; their masks in cache/masks.npy are empty")
    return masks


def _warn_short_classes(
    draws: list[ClassDraw], stats: dict[tuple[str, str], dict[str, int]]
) -> None:
    """Warn for every class that got fewer images than the recipe asked, with the reasons
    counted."""
    for draw in draws:
        target, got = draw.spec.target, len(draw.accepted)
        if target is not None and got < target:
            counts = [stats[k] for k in stats if k[0] == draw.spec.name]
            logger.warning(
                "class %s: asked %d from %s, only %d available (%d candidates with a file, %d rows "
                "without one, %d unreadable, %d low contrast); taking what there is",
                draw.spec.name,
                target,
                ", ".join(draw.spec.sources),
                got,
                *(
                    sum(c[k] for c in counts)
                    for k in ("candidates", "missing_files", "failed", "low_contrast")
                ),
            )


def _log_size_mix(mix: pd.DataFrame) -> None:
    """Log the size mixes of :func:`biomark.data.image_info.size_mix` that carry a warning."""
    for _, row in mix.loc[mix["warning"].ne("")].iterrows():
        # Shapes that mix independently of the class (e.g. the phantom's portrait crops) are worth
        # knowing but are no shortcut; mixed resolutions, or shapes that go with a class, are
        # warnings.
        benign = not row["resolution_mix"] and row["shape_class_p"] >= SHAPE_CLASS_ALPHA
        (logger.info if benign else logger.warning)(
            "%s; see the width, height columns of manifest.csv", row["warning"]
        )
