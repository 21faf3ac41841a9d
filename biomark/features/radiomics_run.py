"""``biomark radiomics`` for a whole dataset: regions, controls, output folder.

:func:`run_radiomics` extracts the features of every image of a dataset
(the lung region, the image content, or the lung and its zones), the
negative controls, a mask gallery, and writes
``DATA_DIR/radiomics/<params-stem>_<region>/``; :func:`load_radiomics` reads
such a folder back. Regions, feature names, failures and caching are described
in :mod:`biomark.features.radiomics`; the extraction runs as
:class:`~biomark.features.radiomics_jobs.ExtractionJob` objects on one pool of
worker processes (:mod:`biomark.features.worker_pool`).

Where the region masks come from is one function, :func:`region_masks_for`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.features.radiomics import (
    FAILURE_COLUMNS,
    ChunkRunner,
    Region,
    RowSource,
    radiomics_versions,
    resolve_jobs,
    shuffle_within,
)
from biomark.features.radiomics_cache import array_sha256
from biomark.features.radiomics_jobs import (
    ExtractionJob,
    collect,
    run_jobs,
    submit_jobs,
    zone_jobs,
    zone_output,
)
from biomark.features.radiomics_params import RadiomicsParams
from biomark.features.worker_pool import worker_pool

__all__ = ["CONTROL_VARIANTS", "RadiomicsRun", "load_radiomics", "output_dir", "region_masks_for", "run_radiomics"]

logger = logging.getLogger(__name__)

#: Negative-control variants (see :mod:`biomark.analysis.controls`).
CONTROL_VARIANTS: tuple[str, ...] = ("shuffled", "outside")

_GALLERY_SIZE = 24

_ZONES_INFO = (
    "biomark.data.lungs.lung_zones: each lung (mask pixels either side of the mask's midline) split into "
    "upper/middle/lower thirds of its own height and, row by row, central (medial half) / peripheral "
    "(lateral half); zone features are named <zone>_<feature>"
)


@dataclass(frozen=True)
class RadiomicsRun:
    """Everything ``biomark radiomics`` wrote for one dataset, params and region.

    Attributes
    ----------
    out_dir : Path
        ``DATA_DIR/radiomics/<params-stem>_<region>/``.
    features : DataFrame of shape (n_ok, 1 + n_features)
        ``image_id`` + feature columns (``features.parquet``).
    failures : DataFrame
        ``variant`` + :data:`FAILURE_COLUMNS` (``failures.csv``).
    masks : DataFrame
        Per image: ``image_id, mask_source, area_fraction, n_components,
        touches_border, lr_balance, flags, plausible, used`` (``masks.csv``).
    controls : dict of str to DataFrame
        Control variant -> its feature table (``controls/<variant>/features.parquet``).
    info : dict
        The content of ``radiomics.json``.
    """

    out_dir: Path
    features: pd.DataFrame
    failures: pd.DataFrame
    masks: pd.DataFrame
    controls: dict[str, pd.DataFrame]
    info: dict[str, Any]


def output_dir(data_dir: str | os.PathLike[str], params: RadiomicsParams, region: str) -> Path:
    """``DATA_DIR/radiomics/<params-stem>_<region>/``."""
    return Path(data_dir) / "radiomics" / f"{params.stem}_{region}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "image"


def _thumbnail(image: np.ndarray, mask: np.ndarray, flagged: bool) -> np.ndarray:
    from scipy import ndimage

    inside = np.asarray(mask) > 0
    edge = inside & ~ndimage.binary_erosion(inside)
    edge = ndimage.binary_dilation(edge)
    rgb = np.repeat(np.asarray(image)[..., None], 3, axis=2).copy()
    rgb[edge] = (230, 60, 60) if flagged else (60, 220, 90)
    return rgb


def _write_gallery(folder: Path, images: np.ndarray, masks: np.ndarray, table: pd.DataFrame) -> list[str]:
    from PIL import Image

    from biomark.io.atomic import atomic_path

    flagged = [i for i in range(len(table)) if not table["plausible"].iat[i]]
    plausible = [i for i in range(len(table)) if table["plausible"].iat[i]]
    chosen = flagged[: _GALLERY_SIZE // 2]
    chosen += plausible[: _GALLERY_SIZE - len(chosen)]
    names = []
    for i in sorted(chosen):
        name = f"{i:05d}_{_safe_name(str(table['image_id'].iat[i]))}.png"
        with atomic_path(folder / name, suffix=".png") as tmp:
            thumbnail = Image.fromarray(_thumbnail(images[i], masks[i], not table["plausible"].iat[i]))
            thumbnail.save(tmp, format="PNG", compress_level=1)  # level 6 took 16 ms per thumbnail
        names.append(name)
    return names


def region_masks_for(dataset: Any, region: str, n_workers: int = 1) -> tuple[np.ndarray, list[Any], str]:
    """Where ``biomark radiomics`` obtains the region mask of every image (the one place to change).

    :func:`biomark.data.masks.dataset_region_masks`: ``image`` is the content
    mask; ``lung`` the dataset's lung masks, computed once per dataset
    (its own masks, or the segmentation) and checked.

    Parameters
    ----------
    dataset : biomark.data.dataset.Dataset
    region : {"lung", "image"}
    n_workers : int, default 1
        Worker processes for a segmentation that is not cached yet.

    Returns
    -------
    masks : ndarray of shape (n, S, S), uint8
    checks : list of biomark.data.lungs.MaskCheck
    source : str
    """
    from biomark.data.masks import dataset_region_masks

    return dataset_region_masks(dataset, region, jobs=n_workers)


def _control_jobs(
    images: np.ndarray,
    masks: np.ndarray,
    lung_masks: np.ndarray,
    lung_checks: list[Any],
    usable: np.ndarray,
    ids: list[str],
    params: RadiomicsParams,
    cache_dir: Path,
    *,
    seed: int,
    zoned: bool,
    shared: tuple[str, str] | None = None,
) -> dict[str, tuple[list[tuple[str, ExtractionJob]], str]]:
    """The negative controls' jobs: ``shuffled`` and ``outside``, with their descriptions.

    Images whose region mask is used and whose lung mask is plausible take
    part; ``shared`` = (image cache file, ``masks.npy``) that cluster workers
    can read rows of (the rest is computed here and travels with the batches).
    """
    from biomark.data.lungs import content_mask

    sel = np.flatnonzero([u and c.plausible for u, c in zip(usable, lung_checks)])
    sel_ids = [ids[i] for i in sel]
    mask_src = RowSource(shared[1], sel) if shared else None
    image_src = RowSource(shared[0], sel) if shared else None
    empty = np.zeros((0,) + images.shape[1:], np.uint8)
    shuffled = np.stack(
        [shuffle_within(images[i], masks[i], (seed, int(array_sha256(np.asarray(images[i]))[:8], 16))) for i in sel]
    ) if len(sel) else empty
    outside = np.stack(
        [(content_mask(images[i]) & ~(np.asarray(lung_masks[i]) > 0)).astype(np.uint8) for i in sel]
    ) if len(sel) else empty
    real_images = images[sel]
    what = "pixels randomly permuted inside the region (seeded per image)"
    if zoned:
        # like with like: the shuffled control gets the zone features too
        # (shuffling across the whole lung); the outside region has no zones
        shuffled_jobs = zone_jobs(shuffled, masks[sel], sel_ids, params, cache_dir, mask_source=mask_src)
        what = f"{what}; lung and lung-zone features"
    else:
        shuffled_jobs = [("", ExtractionJob(shuffled, masks[sel], sel_ids, params, cache_dir, mask_source=mask_src))]
    outside_job = ExtractionJob(real_images, outside, sel_ids, params, cache_dir, image_source=image_src)
    return {
        "shuffled": (shuffled_jobs, what),
        "outside": ([("", outside_job)], "image content minus the lung mask"),
    }


def run_radiomics(
    data_dir: str | os.PathLike[str],
    params: RadiomicsParams,
    *,
    region: Region = "lung",
    jobs: int = -1,
    controls: bool = False,
    seed: int = 0,
    runner: ChunkRunner | None = None,
    by_reference: bool = False,
) -> RadiomicsRun:
    """Extract radiomics for a whole dataset and write the output folder.

    Parameters
    ----------
    data_dir : path
        A dataset folder (``biomark data build`` / ``biomark data phantom``).
    params : RadiomicsParams
        Validated parameter file.
    region : {"lung", "image", "zones"}, default "lung"
        Where features are computed (:mod:`biomark.features.radiomics`):
        ``zones`` adds the features of each lung zone to the lung features.
    jobs : int, default -1
        Worker processes (-1 = all cores).
    controls : bool, default False
        Also extract the negative controls: ``shuffled`` (pixels permuted
        inside the region, seeded per image) and ``outside`` (image content
        minus the lungs).
    seed : int, default 0
        Seed of the shuffled control.
    runner : ChunkRunner, optional
        Where the image batches run (default: here, or worker processes); see
        :func:`biomark.pipelines.radiomics.extract_radiomics`.
    by_reference : bool, default False
        With a ``runner`` whose workers see ``data_dir`` at the same path:
        batches carry rows of the dataset's image cache and of ``masks.npy``
        (:class:`~biomark.features.radiomics.RowSource`) instead of pixels.

    Returns
    -------
    RadiomicsRun

    Raises
    ------
    DataError
        If the dataset cannot be opened (from :func:`load_dataset`).
    RunError
        If a worker process died (finished images stay cached; re-run to resume).

    Notes
    -----
    Without a ``runner``, one pool of worker processes does all the
    extraction: the lung region's batches are submitted first, and while the
    workers extract them this process builds the controls and the mask
    gallery and submits the controls' batches; it waits once, at the end.
    """
    from biomark.data.dataset import dataset_paths, load_dataset
    from biomark.io.atomic import (
        save_npy_atomic,
        write_csv_atomic,
        write_json_atomic,
        write_parquet_atomic,
    )
    from biomark.provenance import environment

    dataset = load_dataset(data_dir)
    out = output_dir(data_dir, params, region)
    out.mkdir(parents=True, exist_ok=True)
    ids = dataset.manifest["image_id"].astype(str).tolist()
    images = dataset.images
    logger.info("%s: %d images, region %s, params %s", dataset.root, len(ids), region, params.path)
    n_workers = resolve_jobs(jobs)
    cache_dir = out / "cache"

    zoned = region == "zones"
    mask_region = "lung" if zoned else region
    masks, checks, source = region_masks_for(dataset, mask_region, n_workers)
    lung_masks, lung_checks = masks, checks  # the controls' lung region
    if controls and region == "image":
        lung_masks, lung_checks, _ = region_masks_for(dataset, "lung", n_workers)
    table = pd.DataFrame([c.as_dict() for c in checks])
    table.insert(0, "mask_source", source)
    table.insert(0, "image_id", ids)
    usable = table["plausible"].to_numpy(dtype=bool)
    table["used"] = usable
    save_npy_atomic(out / "masks.npy", masks)
    write_csv_atomic(out / "masks.csv", table)

    mask_failures = [
        {
            "image_id": ids[i],
            "stage": "mask",
            "reason": f"implausible {source} {mask_region} mask: {table['flags'].iat[i]} "
            f"(area {table['area_fraction'].iat[i]:.3f} of the image content)",
            "action": f"excluded from {region}-region extraction (see masks.csv and gallery/)",
        }
        for i in np.flatnonzero(~usable)
    ]
    keep = np.flatnonzero(usable)
    keep_ids = [ids[i] for i in keep]
    # On a cluster that sees this folder, batches name rows of the dataset's
    # image cache and of masks.npy instead of carrying the pixels.
    shared = by_reference and runner is not None
    image_file = str(dataset_paths(dataset.root).images.resolve())
    mask_file = str((out / "masks.npy").resolve())
    image_src = RowSource(image_file, keep) if shared else None
    mask_src = RowSource(mask_file, keep) if shared else None
    if zoned:
        real_jobs = zone_jobs(images[keep], masks[keep], keep_ids, params, cache_dir,
                              image_source=image_src, mask_source=mask_src)
    else:
        real_jobs = [("", ExtractionJob(images[keep], masks[keep], keep_ids, params, cache_dir,
                                        image_source=image_src, mask_source=mask_src))]
    variants: dict[str, tuple[list[tuple[str, ExtractionJob]], str]] = {}
    if runner is not None:
        gallery = _write_gallery(out / "gallery", images, masks, table)
        if controls:
            variants = _control_jobs(images, masks, lung_masks, lung_checks, usable, ids, params, cache_dir,
                                     seed=seed, zoned=zoned, shared=(image_file, mask_file) if shared else None)
        run_jobs([j for _, j in real_jobs], params, n_workers=n_workers, runner=runner, desc="radiomics")
        for name, (pairs, _) in variants.items():
            run_jobs([j for _, j in pairs], params, n_workers=n_workers, runner=runner, desc=f"control {name}")
    else:
        with worker_pool(n_workers) as pool:
            pending = submit_jobs(pool, [j for _, j in real_jobs], params, n_workers=n_workers)
            # while the workers extract:
            gallery = _write_gallery(out / "gallery", images, masks, table)
            if controls:
                variants = _control_jobs(images, masks, lung_masks, lung_checks, usable, ids, params, cache_dir,
                                         seed=seed, zoned=zoned)
                pending += submit_jobs(pool, [j for pairs, _ in variants.values() for _, j in pairs], params,
                                       n_workers=n_workers)
            collect(pending, "radiomics" + (" + controls" if controls else ""))

    real = zone_output(real_jobs, "radiomics")
    failures = pd.DataFrame(mask_failures, columns=list(FAILURE_COLUMNS))
    failures = pd.concat([failures, real.failures], ignore_index=True)
    failures.insert(0, "variant", "real")
    control_tables: dict[str, pd.DataFrame] = {}
    control_info: dict[str, Any] = {}
    for name, (pairs, what) in variants.items():
        result = zone_output(pairs, f"control {name}")
        control_tables[name] = result.features
        write_parquet_atomic(out / "controls" / name / "features.parquet", result.features)
        fails = result.failures.copy()
        fails.insert(0, "variant", name)
        failures = pd.concat([failures, fails], ignore_index=True)
        control_info[name] = {
            "description": what,
            "images": len(pairs[0][1].keys),
            "extracted": len(result.features),
            "computed": result.n_computed,
            "from_cache": result.n_cached,
        }

    write_parquet_atomic(out / "features.parquet", real.features)
    write_csv_atomic(out / "failures.csv", failures)
    n_features = real.features.shape[1] - 1
    info: dict[str, Any] = {
        "params": {
            "path": str(params.path),
            "file_sha256": params.file_sha256,
            "settings_hash": params.settings_hash,
            "content": params.content,
        },
        "region": region,
        "zones": _ZONES_INFO if zoned else None,
        "mask_source": source,
        "versions": radiomics_versions(),
        "environment": environment(),
        "dataset": {
            "root": str(dataset.root),
            "manifest_sha256": dataset.manifest_sha256,
            "image_size": dataset.size,
            "has_severity": "severity" in dataset.manifest.columns,
        },
        "counts": {
            "images": len(ids),
            "masks_flagged": int((~usable).sum()),
            "extracted": int(len(real.features)),
            "failed_images": int(len(keep_ids) - len(real.features)),
            "failure_rows": int(len(failures)),
            "features": int(n_features),
            "computed": real.n_computed,
            "from_cache": real.n_cached,
        },
        "controls": control_info,
        "seed": seed,
        "gallery": gallery,
        "naming": "<family>_<feature> for the Original image; <imagetype>_<family>_<feature> "
        "for filtered images (pyradiomics image type without its -3D suffix)",
    }
    write_json_atomic(out / "radiomics.json", info)
    logger.info(
        "radiomics: %d/%d images extracted (%d computed, %d from cache), %d features -> %s",
        len(real.features), len(ids), real.n_computed, real.n_cached, n_features, out,
    )
    return RadiomicsRun(out, real.features, failures, table, control_tables, info)


def load_radiomics(out_dir: str | os.PathLike[str]) -> RadiomicsRun:
    """Read an output folder written by :func:`run_radiomics`.

    Raises
    ------
    DataError
        If ``features.parquet`` or ``radiomics.json`` is missing.
    """
    import json

    from biomark.exceptions import DataError

    out = Path(out_dir)
    for needed in ("features.parquet", "radiomics.json", "failures.csv", "masks.csv"):
        if not (out / needed).is_file():
            raise DataError(f"{out / needed}: missing; run `biomark radiomics --data DATA_DIR` first")
    controls = {
        name: pd.read_parquet(out / "controls" / name / "features.parquet")
        for name in CONTROL_VARIANTS
        if (out / "controls" / name / "features.parquet").is_file()
    }
    return RadiomicsRun(
        out_dir=out,
        features=pd.read_parquet(out / "features.parquet"),
        failures=pd.read_csv(out / "failures.csv", dtype={"image_id": str}, keep_default_na=False),
        masks=pd.read_csv(out / "masks.csv", dtype={"image_id": str}, keep_default_na=False),
        controls=controls,
        info=json.loads((out / "radiomics.json").read_text(encoding="utf-8")),
    )
