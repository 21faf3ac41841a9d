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
A re-run whose inputs and settings are unchanged reads the finished outputs
instead of recomputing them (:mod:`biomark.features.radiomics_result_cache`).
"""

from __future__ import annotations

import logging
import os
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
from biomark.features.radiomics_gallery import write_gallery
from biomark.features.radiomics_jobs import (
    ExtractionJob,
    collect,
    run_jobs,
    submit_jobs,
    zone_jobs,
    zone_output,
)
from biomark.features.radiomics_output import (
    CONTROL_VARIANTS,
    RadiomicsRun,
    load_radiomics,
    output_dir,
    reused_run,
    written_files,
)
from biomark.features.radiomics_params import RadiomicsParams
from biomark.features.radiomics_result_cache import find_reusable, forget, record_finished
from biomark.features.worker_pool import worker_pool

__all__ = [
    "CONTROL_VARIANTS",
    "RadiomicsRun",
    "load_radiomics",
    "output_dir",
    "region_masks_for",
    "run_radiomics",
]

logger = logging.getLogger(__name__)

_ZONES_INFO = (
    "biomark.data.lungs.lung_zones: each lung (mask pixels either side of the mask's midline) "
    "split into upper/middle/lower thirds of its own height and, row by row, central (medial half) "
    "/ peripheral (lateral half); zone features are named <zone>_<feature>"
)


def region_masks_for(
    dataset: Any, region: str, n_workers: int = 1
) -> tuple[np.ndarray, list[Any], str]:
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

    sel = np.flatnonzero([u and c.plausible for u, c in zip(usable, lung_checks, strict=True)])
    sel_ids = [ids[i] for i in sel]
    mask_src = RowSource(shared[1], sel) if shared else None
    image_src = RowSource(shared[0], sel) if shared else None
    empty = np.zeros((0,) + images.shape[1:], np.uint8)
    shuffled = (
        np.stack(
            [
                shuffle_within(
                    images[i], masks[i], (seed, int(array_sha256(np.asarray(images[i]))[:8], 16))
                )
                for i in sel
            ]
        )
        if len(sel)
        else empty
    )
    outside = (
        np.stack(
            [
                (content_mask(images[i]) & ~(np.asarray(lung_masks[i]) > 0)).astype(np.uint8)
                for i in sel
            ]
        )
        if len(sel)
        else empty
    )
    real_images = images[sel]
    what = "pixels randomly permuted inside the region (seeded per image)"
    if zoned:
        # like with like: the shuffled control gets the zone features too
        # (shuffling across the whole lung); the outside region has no zones
        shuffled_jobs = zone_jobs(
            shuffled, masks[sel], sel_ids, params, cache_dir, mask_source=mask_src
        )
        what = f"{what}; lung and lung-zone features"
    else:
        shuffled_jobs = [
            (
                "",
                ExtractionJob(
                    shuffled, masks[sel], sel_ids, params, cache_dir, mask_source=mask_src
                ),
            )
        ]
    outside_job = ExtractionJob(
        real_images, outside, sel_ids, params, cache_dir, image_source=image_src
    )
    return {
        "shuffled": (shuffled_jobs, what),
        "outside": ([("", outside_job)], "image content minus the lung mask"),
    }


@dataclass(frozen=True)
class _Regions:
    """The region masks of every image, their checks, and the lung region the controls use."""

    masks: np.ndarray
    checks: list[Any]
    source: str
    lung_masks: np.ndarray
    lung_checks: list[Any]
    table: pd.DataFrame

    @property
    def usable(self) -> np.ndarray:
        return self.table["used"].to_numpy(dtype=bool)


def _regions(dataset: Any, out: Path, region: str, controls: bool, n_workers: int) -> _Regions:
    """The region masks and ``masks.csv``'s table, written to ``masks.npy`` / ``masks.csv``."""
    from biomark.io.atomic import save_npy_atomic, write_csv_atomic

    mask_region = "lung" if region == "zones" else region
    masks, checks, source = region_masks_for(dataset, mask_region, n_workers)
    lung_masks, lung_checks = masks, checks  # the controls' lung region
    if controls and region == "image":
        lung_masks, lung_checks, _ = region_masks_for(dataset, "lung", n_workers)
    table = pd.DataFrame([c.as_dict() for c in checks])
    table.insert(0, "mask_source", source)
    table.insert(0, "image_id", dataset.manifest["image_id"].astype(str).tolist())
    table["used"] = table["plausible"].to_numpy(dtype=bool)
    save_npy_atomic(out / "masks.npy", masks, keep_if_equal=True)  # a resumed run rewrites nothing
    write_csv_atomic(out / "masks.csv", table)
    return _Regions(masks, checks, source, lung_masks, lung_checks, table)


def _mask_failures(regions: _Regions, region: str) -> pd.DataFrame:
    """One failures row (stage ``mask``) per image whose region mask is implausible."""
    table, source = regions.table, regions.source
    mask_region = "lung" if region == "zones" else region
    rows = [
        {
            "image_id": table["image_id"].iat[i],
            "stage": "mask",
            "reason": f"implausible {source} {mask_region} mask: {table['flags'].iat[i]} "
            f"(area {table['area_fraction'].iat[i]:.3f} of the image content)",
            "action": f"excluded from {region}-region extraction (see masks.csv and gallery/)",
        }
        for i in np.flatnonzero(~regions.usable)
    ]
    return pd.DataFrame(rows, columns=list(FAILURE_COLUMNS))


def _real_jobs(
    images: np.ndarray,
    regions: _Regions,
    params: RadiomicsParams,
    cache_dir: Path,
    *,
    zoned: bool,
    shared: tuple[str, str] | None,
) -> list[tuple[str, ExtractionJob]]:
    """The jobs of the usable images' region (and zones); with ``shared``, rows of (image cache,
    masks.npy)."""
    keep = np.flatnonzero(regions.usable)
    keep_ids = [regions.table["image_id"].iat[i] for i in keep]
    # On a cluster that sees this folder, batches name rows of the dataset's
    # image cache and of masks.npy instead of carrying the pixels.
    image_src = RowSource(shared[0], keep) if shared else None
    mask_src = RowSource(shared[1], keep) if shared else None
    if zoned:
        return zone_jobs(
            images[keep],
            regions.masks[keep],
            keep_ids,
            params,
            cache_dir,
            image_source=image_src,
            mask_source=mask_src,
        )
    return [
        (
            "",
            ExtractionJob(
                images[keep],
                regions.masks[keep],
                keep_ids,
                params,
                cache_dir,
                image_source=image_src,
                mask_source=mask_src,
            ),
        )
    ]


_Variants = dict[str, tuple[list[tuple[str, ExtractionJob]], str]]


def _extract_all(
    images: np.ndarray,
    regions: _Regions,
    real_jobs: list[tuple[str, ExtractionJob]],
    params: RadiomicsParams,
    out: Path,
    *,
    controls: bool,
    seed: int,
    zoned: bool,
    n_workers: int,
    runner: ChunkRunner | None,
    shared: tuple[str, str] | None,
) -> tuple[list[str], _Variants]:
    """Run every extraction (region, then controls), writing the gallery meanwhile; returns gallery,
    controls."""
    ids = regions.table["image_id"].tolist()

    def control_jobs(shared_files: tuple[str, str] | None) -> _Variants:
        if not controls:
            return {}
        return _control_jobs(
            images,
            regions.masks,
            regions.lung_masks,
            regions.lung_checks,
            regions.usable,
            ids,
            params,
            out / "cache",
            seed=seed,
            zoned=zoned,
            shared=shared_files,
        )

    if runner is not None:
        gallery = write_gallery(out / "gallery", images, regions.masks, regions.table)
        variants = control_jobs(shared)
        run_jobs(
            [j for _, j in real_jobs], params, n_workers=n_workers, runner=runner, desc="radiomics"
        )
        for name, (pairs, _) in variants.items():
            run_jobs(
                [j for _, j in pairs],
                params,
                n_workers=n_workers,
                runner=runner,
                desc=f"control {name}",
            )
        return gallery, variants
    with worker_pool(n_workers) as pool:
        pending = submit_jobs(pool, [j for _, j in real_jobs], params, n_workers=n_workers)
        # while the workers extract:
        gallery = write_gallery(out / "gallery", images, regions.masks, regions.table)
        variants = control_jobs(None)
        if variants:
            pending += submit_jobs(
                pool,
                [j for pairs, _ in variants.values() for _, j in pairs],
                params,
                n_workers=n_workers,
            )
        collect(pending, "radiomics" + (" + controls" if controls else ""))
    return gallery, variants


def _write_controls(
    out: Path, variants: _Variants
) -> tuple[dict[str, pd.DataFrame], list[pd.DataFrame], dict[str, Any]]:
    """Each control's ``controls/<name>/features.parquet``; its tables, failures and
    ``radiomics.json`` entry."""
    from biomark.io.atomic import write_parquet_atomic

    tables: dict[str, pd.DataFrame] = {}
    failures: list[pd.DataFrame] = []
    info: dict[str, Any] = {}
    for name, (pairs, what) in variants.items():
        result = zone_output(pairs, f"control {name}")
        tables[name] = result.features
        write_parquet_atomic(out / "controls" / name / "features.parquet", result.features)
        fails = result.failures.copy()
        fails.insert(0, "variant", name)
        failures.append(fails)
        info[name] = {
            "description": what,
            "images": len(pairs[0][1].keys),
            "extracted": len(result.features),
            "computed": result.n_computed,
            "from_cache": result.n_cached,
        }
    return tables, failures, info


def _run_info(
    dataset: Any,
    params: RadiomicsParams,
    regions: _Regions,
    real: Any,
    failures: pd.DataFrame,
    *,
    region: str,
    control_info: dict[str, Any],
    seed: int,
    gallery: list[str],
) -> dict[str, Any]:
    """The content of ``radiomics.json``."""
    from biomark.provenance import environment

    usable = regions.usable
    return {
        "params": {
            "path": str(params.path),
            "file_sha256": params.file_sha256,
            "settings_hash": params.settings_hash,
            "content": params.content,
        },
        "region": region,
        "zones": _ZONES_INFO if region == "zones" else None,
        "mask_source": regions.source,
        "versions": radiomics_versions(),
        "environment": environment(),
        "dataset": {
            "root": str(dataset.root),
            "manifest_sha256": dataset.manifest_sha256,
            "image_size": dataset.size,
            "has_severity": "severity" in dataset.manifest.columns,
        },
        "counts": {
            "images": len(usable),
            "masks_flagged": int((~usable).sum()),
            "extracted": int(len(real.features)),
            "failed_images": int(usable.sum() - len(real.features)),
            "failure_rows": int(len(failures)),
            "features": int(real.features.shape[1] - 1),
            "computed": real.n_computed,
            "from_cache": real.n_cached,
        },
        "controls": control_info,
        "seed": seed,
        "gallery": gallery,
        "naming": "<family>_<feature> for the Original image; <imagetype>_<family>_<feature> "
        "for filtered images (pyradiomics image type without its -3D suffix)",
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
        On a re-run whose inputs and settings are unchanged, the outputs the
        earlier run wrote (untouched), with ``info`` counting every image as
        taken from the cache.

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

    The output folder's ``finished.json``, written last, records everything
    the outputs depend on (:mod:`~biomark.features.radiomics_result_cache`):
    a re-run with the same inputs and settings reads the finished tables
    instead of recomputing masks, controls and gallery; any change recomputes
    (the per-image cache still spares the unchanged extractions).
    """
    out = output_dir(data_dir, params, region)
    reusable, key = find_reusable(
        out, data_dir, params, region=region, controls=controls, seed=seed
    )
    if reusable:
        return reused_run(out)
    forget(out)
    run = _compute(
        data_dir,
        params,
        out,
        region=region,
        jobs=jobs,
        controls=controls,
        seed=seed,
        runner=runner,
        by_reference=by_reference,
    )
    record_finished(out, key, written_files(run.info))
    return run


def _compute(
    data_dir: str | os.PathLike[str],
    params: RadiomicsParams,
    out: Path,
    *,
    region: Region,
    jobs: int,
    controls: bool,
    seed: int,
    runner: ChunkRunner | None,
    by_reference: bool,
) -> RadiomicsRun:
    """:func:`run_radiomics` without reuse: masks, extraction, controls, gallery, tables,
    ``radiomics.json``."""
    from biomark.data.dataset import dataset_paths, load_dataset
    from biomark.io.atomic import write_csv_atomic, write_json_atomic, write_parquet_atomic

    dataset = load_dataset(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger.info(
        "%s: %d images, region %s, params %s", dataset.root, len(dataset), region, params.path
    )
    n_workers = resolve_jobs(jobs)
    regions = _regions(dataset, out, region, controls, n_workers)
    shared = None
    if by_reference and runner is not None:
        shared = (
            str(dataset_paths(dataset.root).images.resolve()),
            str((out / "masks.npy").resolve()),
        )
    real_jobs = _real_jobs(
        dataset.images, regions, params, out / "cache", zoned=region == "zones", shared=shared
    )
    gallery, variants = _extract_all(
        dataset.images,
        regions,
        real_jobs,
        params,
        out,
        controls=controls,
        seed=seed,
        zoned=region == "zones",
        n_workers=n_workers,
        runner=runner,
        shared=shared,
    )
    real = zone_output(real_jobs, "radiomics")
    failures = pd.concat([_mask_failures(regions, region), real.failures], ignore_index=True)
    failures.insert(0, "variant", "real")
    control_tables, control_failures, control_info = _write_controls(out, variants)
    failures = pd.concat([failures, *control_failures], ignore_index=True)
    write_parquet_atomic(out / "features.parquet", real.features)
    write_csv_atomic(out / "failures.csv", failures)
    info = _run_info(
        dataset,
        params,
        regions,
        real,
        failures,
        region=region,
        control_info=control_info,
        seed=seed,
        gallery=gallery,
    )
    write_json_atomic(out / "radiomics.json", info)
    logger.info(
        "radiomics: %d/%d images extracted (%d computed, %d from cache), %d features -> %s",
        len(real.features),
        len(dataset),
        real.n_computed,
        real.n_cached,
        info["counts"]["features"],
        out,
    )
    return RadiomicsRun(out, real.features, failures, regions.table, control_tables, info)
