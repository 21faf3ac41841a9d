"""``biomark data``: build a dataset, generate the phantom, compute lung masks; and the dataset of a
plan.

:func:`build` (``biomark data build``), :func:`phantom` (``biomark data
phantom``) and :func:`lung_masks` (``biomark data masks``) are the commands'
flows; :func:`resolve_dataset` is where ``biomark extract`` finds (or, for the
phantom, first generates) the dataset a plan names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomark.config import Plan
from biomark.data.dataset import dataset_paths
from biomark.exceptions import ConfigError, DataError
from biomark.io.remote import is_url

__all__ = ["MasksResult", "PhantomResult", "build", "lung_masks", "phantom", "resolve_dataset"]

logger = logging.getLogger(__name__)


def build(
    out: str | Path,
    sources: dict[str, list[str]],
    *,
    recipe: str | Path | None = None,
    image_size: int = 200,
    min_contrast: float | None = None,
    strict: bool = False,
    jobs: int = 1,
    seed: int | None = None,
) -> Any:
    """Build a dataset folder from public sources (``biomark data build``).

    Parameters
    ----------
    out : path
        The dataset folder to write.
    sources : dict of str to list of str
        ``cohen``, ``kermany``, ``nih``, ``folder``, ``manifest`` -> folders or files.
    recipe : path, optional
        Recipe YAML (classes, targets, sources); without one every labelled image is taken.
    image_size, min_contrast, strict, jobs, seed
        As :func:`biomark.data.build.build_dataset`.

    Returns
    -------
    biomark.data.build.BuildResult

    Raises
    ------
    ConfigError
        No source given, or an invalid recipe.
    """
    from biomark.data.build import build_dataset
    from biomark.data.recipe import load_recipe

    loaded = load_recipe(recipe) if recipe else None
    if not any(sources.values()):
        raise ConfigError(
            "no sources given: pass at least one of --cohen, --kermany, --nih, --folder, --manifest"
        )
    return build_dataset(
        out,
        sources={k: v for k, v in sources.items() if v},
        recipe=loaded,
        image_size=image_size,
        min_contrast=min_contrast,
        strict=strict,
        jobs=jobs,
        seed=seed,
    )


@dataclass(frozen=True)
class PhantomResult:
    """What ``biomark data phantom`` made.

    Attributes
    ----------
    counts : dict of str to int or None
        Images per class when given as counts (None with ``n_per_class``).
    build : biomark.data.build.BuildResult
    """

    counts: dict[str, int] | None
    build: Any


def phantom(
    out: str | Path,
    *,
    n_per_class: int | None = None,
    counts: str | None = None,
    scale: float | None = None,
    seed: int = 0,
    raw_size: int = 256,
    image_size: int = 200,
    images_per_patient: int = 2,
    confounder: bool = False,
    signature_strength: float = 1.0,
    jobs: int = 1,
) -> PhantomResult:
    """Generate the phantom into ``out`` and build it like a real dataset
    (``biomark data phantom``).

    Parameters
    ----------
    out : path
    n_per_class : int, optional
        Images per class (default: the generator's).
    counts : str, optional
        ``paper`` or seven comma-separated counts, instead of ``n_per_class``.
    scale : float, optional
        Multiplies ``counts``.
    seed, raw_size, images_per_patient, confounder, signature_strength, jobs
        As :func:`biomark.data.phantom.generate_phantom`.
    image_size : int, default 200
        Side of the letterboxed cache.

    Returns
    -------
    PhantomResult

    Raises
    ------
    ConfigError
        ``scale`` without ``counts``, or invalid counts.
    NotWritableError
        ``out`` cannot be written.
    """
    from biomark.data.build import build_dataset
    from biomark.data.phantom import generate_phantom, parse_class_counts
    from biomark.io.disk import check_writable_dir

    check_writable_dir(out, "--out")
    class_counts = None
    if counts is not None:
        class_counts = parse_class_counts(counts, 1.0 if scale is None else scale)
    elif scale is not None:
        raise ConfigError("--scale scales --counts; give --counts paper (or seven counts) with it")
    csv = generate_phantom(
        out,
        n_per_class=n_per_class,
        class_counts=class_counts,
        seed=seed,
        image_size=raw_size,
        images_per_patient=images_per_patient,
        confounder=confounder,
        signature_strength=signature_strength,
        jobs=jobs,
    )
    result = build_dataset(out, sources={"manifest": [csv]}, image_size=image_size, jobs=jobs)
    return PhantomResult(class_counts, result)


@dataclass(frozen=True)
class MasksResult:
    """What ``biomark data masks`` did.

    Attributes
    ----------
    copied : int or None
        Mask files imported (None when no folder was given).
    masks : biomark.data.masks.LungMasks
    paths : dict of str to Path
        The stored files (:func:`biomark.data.masks.lung_mask_paths`).
    model : biomark.pipelines.lung_model.ModelMasks or None
        What a lung model wrote (None when no model was given).
    """

    copied: int | None
    masks: Any
    paths: dict[str, Path]
    model: Any = None


def lung_masks(
    data: str | Path,
    *,
    masks: str | Path | None = None,
    model: str | Path | None = None,
    jobs: int = -1,
    refresh: bool = False,
) -> MasksResult:
    """Import (optionally) and compute a dataset's lung masks once (``biomark data masks``).

    Parameters
    ----------
    data : path
        The dataset folder.
    masks : path, optional
        A folder of mask images to copy into ``DATA_DIR/masks/`` first.
    model : path, optional
        A lung model (:func:`biomark.pipelines.lung_model.write_model_masks`) that then writes
        mask files for the films that still have none.
    jobs : int, default -1
        Processes for segmenting.
    refresh : bool, default False
        Recompute even when the stored masks are current.

    Returns
    -------
    MasksResult
    """
    from biomark.data.dataset import load_dataset
    from biomark.data.masks import dataset_lung_masks, import_masks, lung_mask_paths

    copied = import_masks(data, masks) if masks is not None else None
    written = None
    if model is not None:
        from biomark.pipelines.lung_model import write_model_masks

        written = write_model_masks(data, model)
    result = dataset_lung_masks(load_dataset(data), jobs=jobs, refresh=refresh)
    return MasksResult(copied, result, dict(lung_mask_paths(data)), written)


def resolve_dataset(plan: Plan, *, generate: bool = True) -> Path:
    """The dataset folder of a plan, generating the phantom there when asked.

    A ``plan.data.dir`` that is an fsspec URL (``s3://...``) is copied to
    local disk first (:func:`biomark.data.remote.mirror_dataset`; only what
    changed is downloaded) and the copy is returned. If ``plan.data.dir``
    holds no ``manifest.csv`` and ``plan.data.phantom`` is set, the phantom is generated into it
    (:func:`biomark.data.phantom.generate_phantom`) and built
    (:func:`biomark.data.build.build_dataset`) with a cache of
    ``phantom.image_size`` pixels.

    Parameters
    ----------
    plan : Plan
    generate : bool, default True
        False only checks (for a dry run).

    Returns
    -------
    Path

    Raises
    ------
    DataError
        If there is no dataset and no phantom section to generate one, or the
        folder holds a phantom drawn with other settings than the plan's.
    """
    if is_url(plan.data.dir):
        from biomark.data.remote import mirror_dataset

        return mirror_dataset(plan.data.dir)  # reading needs local files: a cached copy
    root = Path(plan.data.dir).expanduser()
    settings = plan.data.phantom
    if dataset_paths(root).manifest.is_file():
        if settings is not None:
            _check_phantom_settings(root, settings)
        return root
    if settings is None:
        raise DataError(
            f"data.dir={str(root)!r}: no manifest.csv there; build the dataset first "
            f"(`biomark data build ... --out {root}` or `biomark data phantom --out {root}`), "
            "give another folder with --data, or add a data.phantom section to the plan"
        )
    if not generate:
        return root
    from biomark.data.build import build_dataset
    from biomark.data.phantom import generate_phantom

    raw_size = max(
        64, settings.raw_size or settings.image_size
    )  # the generator draws at least 64 px
    logger.info(
        "no dataset at %s: generating the phantom there (%d images per class, seed %d, drawn at %d "
        "px, cached at %d px, signature strength %g)",
        root,
        settings.n_per_class,
        settings.seed,
        raw_size,
        settings.image_size,
        settings.signature_strength,
    )
    csv = generate_phantom(
        root,
        n_per_class=settings.n_per_class,
        seed=settings.seed,
        image_size=raw_size,
        images_per_patient=settings.images_per_patient,
        confounder=settings.confounder,
        confounder_strength=settings.confounder_strength,
        signature_strength=settings.signature_strength,
        jobs=-1,
    )
    build_dataset(root, sources={"manifest": [csv]}, image_size=settings.image_size)
    return root


def _check_phantom_settings(root: Path, settings: Any) -> None:
    """Refuse a phantom folder drawn with other settings than the plan's ``data.phantom``.

    A plan that changed its phantom (more images, another strength) would
    otherwise silently train on the old one. The folder is never overwritten:
    the user removes it (or points ``data.dir`` elsewhere).
    """
    from biomark.data.phantom import PHANTOM_CLASSES, SETTINGS_FILE

    path = root / SETTINGS_FILE
    wanted = {
        "class_counts": {c: settings.n_per_class for c in PHANTOM_CLASSES},
        "seed": settings.seed,
        "image_size": max(64, settings.raw_size or settings.image_size),
        "images_per_patient": float(settings.images_per_patient),
        "confounder": settings.confounder,
        "signature_strength": float(settings.signature_strength),
    }
    if settings.confounder:  # the strength only shapes a confounded phantom
        wanted["confounder_strength"] = float(settings.confounder_strength)
    if not path.is_file():
        return  # a dataset built some other way (or by an older biomark): nothing to compare
    found = json.loads(path.read_text(encoding="utf-8"))
    differ = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
    if differ:
        listed = ", ".join(f"{k} {have!r} (plan: {want!r})" for k, (have, want) in differ.items())
        raise DataError(
            f"{root}: this phantom was drawn with other settings than the plan's data.phantom: "
            f"{listed}. Delete {root} to draw the plan's phantom there, or set data.dir to another "
            "folder"
        )
