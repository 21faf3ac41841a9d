"""Extraction jobs: what a region's images still need, and running it on worker processes.

An :class:`ExtractionJob` is one set of images in one region (the lung, a
lung zone, a control). Creating it computes every image's cache key and reads
what the cache already holds, here in the calling process: a SHA-256 of
about 40 kB and one small file read per image, so a warm re-run starts no
worker at all. :func:`submit_jobs` hands the misses of any number of jobs, in
batches, to one pool (:func:`biomark.features.worker_pool.worker_pool`); each
worker extracts its batch and stores every result in the cache itself
(:func:`~biomark.features.radiomics.extract_chunk_into_cache`), so the
calling process neither waits for nor writes them. :func:`collect` waits for
the batches and gives each job its results; :meth:`ExtractionJob.output`
assembles the feature table.

Submitting returns at once: ``biomark radiomics`` submits the lung region,
computes the controls and writes the mask gallery while the workers extract,
submits the controls, and waits once at the end.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import Executor, Future, as_completed
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pandas as pd

from biomark.exceptions import RunError
from biomark.features.radiomics import (
    FAILURE_COLUMNS,
    ChunkItem,
    ChunkRunner,
    ExtractionOutput,
    RowSource,
    extract_chunk_into_cache,
)
from biomark.features.radiomics_cache import CacheEntry, FeatureCache, array_sha256, cache_key
from biomark.features.radiomics_params import RadiomicsParams
from biomark.features.worker_pool import how_a_worker_died
from biomark.progress import progress

__all__ = [
    "ExtractionJob",
    "Pending",
    "batch_size",
    "collect",
    "run_jobs",
    "submit_jobs",
    "zone_jobs",
    "zone_output",
]

logger = logging.getLogger(__name__)

#: Most images in one batch (a batch is one task of a worker).
MAX_BATCH = 8

#: A submitted batch and the job its results belong to.
Pending = tuple[Future, "ExtractionJob"]


class ExtractionJob:
    """The images of one region: cache keys, cached results, and what is left to compute.

    Parameters
    ----------
    images : ndarray of shape (n_images, S, S), uint8
    masks : ndarray of shape (n_images, S, S)
        One region per image (non-zero = inside).
    image_ids : sequence of str, length n_images
    params : RadiomicsParams
    cache_dir : path
        The cache folder (:class:`~biomark.features.radiomics_cache.FeatureCache`).
    image_source, mask_source : RowSource, optional
        Where a cluster worker can read ``images`` / ``masks`` itself
        (:func:`~biomark.features.radiomics.extract_features`).

    Attributes
    ----------
    keys : list of str
        Cache key of every image.
    todo : list of int
        Rows still to compute (the first of any rows sharing a key).

    Raises
    ------
    ValueError
        If the shapes of ``images``, ``masks`` and ``image_ids`` disagree.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        image_ids: Sequence[str],
        params: RadiomicsParams,
        cache_dir: str | os.PathLike[str],
        *,
        image_source: RowSource | None = None,
        mask_source: RowSource | None = None,
    ) -> None:
        n = len(image_ids)
        if images.shape[0] != n or masks.shape != images.shape:
            raise ValueError(
                f"images {images.shape}, masks {masks.shape} and {n} image ids do not match"
            )
        self.images, self.masks = images, masks
        self.image_ids = [str(i) for i in image_ids]
        self.cache_dir = str(cache_dir)
        self.image_source, self.mask_source = image_source, mask_source
        cache = FeatureCache(cache_dir)
        self.keys: list[str] = []
        self._results: dict[str, CacheEntry | None] = {}
        self.todo: list[int] = []
        for i in range(n):
            region = (np.asarray(masks[i]) > 0).astype(np.uint8)
            key = cache_key(
                array_sha256(np.asarray(images[i])), params.settings_hash, array_sha256(region)
            )
            self.keys.append(key)
            if key in self._results:
                continue
            entry = cache.get(key)
            self._results[key] = entry
            if entry is None:
                self.todo.append(i)
        self.n_cached = n - len(self.todo)

    def batches(self, size: int, by_reference: bool = False) -> list[list[ChunkItem]]:
        """The rows still to compute, in batches of ``size`` items ``(key, image_id, image, mask)``.

        With ``by_reference``, images and masks that have a :class:`RowSource`
        travel as ``(file, row)`` references instead of pixels.
        """

        def item(i: int) -> ChunkItem:
            refs = by_reference
            image = (
                self.image_source.ref(i)
                if refs and self.image_source is not None
                else np.array(self.images[i])
            )
            mask = (
                self.mask_source.ref(i)
                if refs and self.mask_source is not None
                else np.array(self.masks[i])
            )
            return (self.keys[i], self.image_ids[i], image, mask)

        return [[item(i) for i in self.todo[s : s + size]] for s in range(0, len(self.todo), size)]

    def add(self, done: list[tuple[str, CacheEntry]]) -> None:
        """Record the results of one finished batch."""
        for key, entry in done:
            self._results[key] = entry

    def output(self, desc: str = "radiomics") -> ExtractionOutput:
        """The feature and failures tables (every row must have its result).

        Parameters
        ----------
        desc : str
            Names the job in the warning about failures.

        Raises
        ------
        RunError
            If a row's result is missing (a batch was never collected).
        """
        rows: list[dict[str, float]] = []
        row_ids: list[str] = []
        failures: list[dict[str, str]] = []
        for key, image_id in zip(self.keys, self.image_ids, strict=True):
            entry = self._results.get(key)
            if entry is None:
                raise RunError(
                    f"{desc}: no result for image {image_id}; its batch was not collected"
                )
            for stage, reason in entry.failures:
                action = (
                    "image left out of the feature table"
                    if not entry.ok
                    else "value missing in the table; the feature is dropped before correlation"
                )
                failures.append(
                    {"image_id": image_id, "stage": stage, "reason": reason, "action": action}
                )
            if entry.ok:
                rows.append(entry.features)
                row_ids.append(image_id)
        table = pd.DataFrame(rows)
        table.insert(0, "image_id", row_ids)
        failed = pd.DataFrame(failures, columns=list(FAILURE_COLUMNS))
        if len(failed):
            n_out = len(self.image_ids) - len(row_ids)
            logger.warning(
                "%s: %d failure(s) recorded (%d image(s) left out)", desc, len(failed), n_out
            )
        return ExtractionOutput(table, failed, n_computed=len(self.todo), n_cached=self.n_cached)


def batch_size(n_todo: int, n_workers: int) -> int:
    """Images per batch: about four batches per worker, at most :data:`MAX_BATCH`."""
    return max(1, min(MAX_BATCH, math.ceil(n_todo / (max(1, n_workers) * 4))))


def submit_jobs(
    pool: Executor,
    jobs: Sequence[ExtractionJob],
    params: RadiomicsParams,
    *,
    n_workers: int,
    chunk_size: int | None = None,
) -> list[Pending]:
    """Hand the rows still to compute of ``jobs`` to ``pool`` in batches; returns at once.

    Each batch runs :func:`~biomark.features.radiomics.extract_chunk_into_cache`
    (extract, then store every result in the job's cache).

    Parameters
    ----------
    pool : concurrent.futures.Executor
        From :func:`~biomark.features.worker_pool.worker_pool`.
    jobs : sequence of ExtractionJob
    params : RadiomicsParams
    n_workers : int
        The pool's workers (sizes the batches).
    chunk_size : int, optional
        Images per batch (default :func:`batch_size` over all jobs).

    Returns
    -------
    list of (Future, ExtractionJob)
        For :func:`collect`.
    """
    content = params.extractor_params()
    size = chunk_size or batch_size(sum(len(j.todo) for j in jobs), n_workers)
    return [
        (pool.submit(extract_chunk_into_cache, content, job.cache_dir, batch), job)
        for job in jobs
        for batch in job.batches(size)
    ]


def collect(pending: Sequence[Pending], desc: str = "radiomics") -> None:
    """Wait for submitted batches and give each job its results (with a progress bar).

    Raises
    ------
    RunError
        If a worker process died (killed, out of memory); finished images
        are in the cache, so a re-run resumes.
    """
    if not pending:
        return
    owner = {id(future): job for future, job in pending}
    jobs = {id(job): job for _, job in pending}.values()
    bar = progress(total=sum(len(job.todo) for job in jobs), desc=desc, unit="img")
    try:
        for future in as_completed([future for future, _ in pending]):
            done = future.result()
            owner[id(future)].add(done)
            bar.update(len(done))
    except BrokenProcessPool as err:
        detail = how_a_worker_died(err)
        raise RunError(
            f"{desc}: a radiomics worker process died ({detail}); the images finished so far are "
            "cached, re-run to resume (with fewer --jobs if memory ran out)"
        ) from err
    finally:
        for future, _ in pending:
            future.cancel()
        bar.close()


def run_jobs(
    jobs: Sequence[ExtractionJob],
    params: RadiomicsParams,
    *,
    n_workers: int,
    runner: ChunkRunner | None = None,
    chunk_size: int | None = None,
    desc: str = "radiomics",
) -> None:
    """Compute every job's missing rows, here, on worker processes or through ``runner``.

    Parameters
    ----------
    jobs : sequence of ExtractionJob
    params : RadiomicsParams
    n_workers : int
        Worker processes (1 = this process); with a ``runner`` it only sizes the batches.
    runner : ChunkRunner, optional
        Runs the batches elsewhere (a Dask cluster), job by job; batches then
        carry :class:`RowSource` references where the job has them.
    chunk_size : int, optional
        Images per batch.
    desc : str
        Progress-bar label.
    """
    from biomark.features.worker_pool import worker_pool

    if runner is None:
        with worker_pool(n_workers) as pool:
            collect(
                submit_jobs(pool, jobs, params, n_workers=n_workers, chunk_size=chunk_size), desc
            )
        return
    content = params.extractor_params()
    size = chunk_size or batch_size(sum(len(j.todo) for j in jobs), n_workers)
    bar = progress(total=sum(len(j.todo) for j in jobs), desc=desc, unit="img")
    try:
        for job in jobs:
            if job.todo:
                for done in runner(
                    content, job.cache_dir, iter(job.batches(size, by_reference=True))
                ):
                    job.add(done)
                    bar.update(len(done))
    finally:
        bar.close()


def zone_jobs(
    images: np.ndarray,
    masks: np.ndarray,
    image_ids: Sequence[str],
    params: RadiomicsParams,
    cache_dir: str | os.PathLike[str],
    *,
    image_source: RowSource | None = None,
    mask_source: RowSource | None = None,
    zones: Sequence[str] | None = None,
) -> list[tuple[str, ExtractionJob]]:
    """The whole-lung job (zone ``""``) and one job per lung zone of
    :func:`biomark.data.lungs.lung_zones`.

    Zone masks are computed here, once per image; they travel with the
    batches (``mask_source`` is for the whole-lung masks only).

    Parameters
    ----------
    zones : sequence of str, optional
        A subset of :data:`biomark.data.lungs.ZONES` (default: all of them).

    Raises
    ------
    ValueError
        As :class:`ExtractionJob`, or for an unknown zone.
    """
    from biomark.data.lungs import ZONES, lung_zones

    zones = tuple(ZONES if zones is None else zones)
    unknown = sorted(set(zones) - set(ZONES))
    if unknown:
        raise ValueError(f"zones {unknown}: unknown; choose from {list(ZONES)}")
    jobs = [
        (
            "",
            ExtractionJob(
                images,
                masks,
                image_ids,
                params,
                cache_dir,
                image_source=image_source,
                mask_source=mask_source,
            ),
        )
    ]
    per_image = [lung_zones(masks[i]) for i in range(len(image_ids))] if zones else []
    for zone in zones:
        zone_masks = (
            np.stack([z[zone] for z in per_image]) if per_image else np.zeros(masks.shape, np.uint8)
        )
        jobs.append(
            (
                zone,
                ExtractionJob(
                    images, zone_masks, image_ids, params, cache_dir, image_source=image_source
                ),
            )
        )
    return jobs


def zone_output(
    jobs: Sequence[tuple[str, ExtractionJob]], desc: str = "radiomics"
) -> ExtractionOutput:
    """Merge the whole-lung and zone tables of :func:`zone_jobs` (zone columns prefixed
    ``<zone>_``).

    Rows are the images whose whole-lung extraction succeeded; a zone that
    failed for an image leaves that zone's values missing and adds a failures
    row whose reason starts with the zone name. ``n_computed``/``n_cached``
    count region extractions.
    """
    whole = jobs[0][1].output(desc)
    table = whole.features
    failures = [whole.failures]
    n_computed, n_cached = whole.n_computed, whole.n_cached
    for zone, job in jobs[1:]:
        out = job.output(f"{desc} {zone}")
        named = out.features.rename(columns=lambda c: c if c == "image_id" else f"{zone}_{c}")  # noqa: B023
        table = table.merge(named, on="image_id", how="left")
        fails = out.failures.copy()
        fails["reason"] = f"{zone} zone: " + fails["reason"].astype(str)
        fails.loc[fails["stage"] != "feature", "action"] = (
            f"{zone}-zone values missing for this image; such features are dropped before "
            "correlation"
        )
        failures.append(fails)
        n_computed += out.n_computed
        n_cached += out.n_cached
    return ExtractionOutput(
        table, pd.concat(failures, ignore_index=True), n_computed=n_computed, n_cached=n_cached
    )
