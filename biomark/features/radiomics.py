"""pyradiomics features of every image of a dataset, on the pixels the CNN saw.

This is the only biomark module (with its helpers :mod:`radiomics_params` and
:mod:`radiomics_cache`) that imports pyradiomics and SimpleITK, and it does so
inside functions, so importing it is cheap.

Input
    The dataset's image cache (``cache/images.npy``: uint8, letterboxed,
    exactly what the CNN was trained on). Each image is handed to pyradiomics
    as a native 2-D SimpleITK image (pixel spacing 1, units = pixels).

Region (``region``)
    ``lung`` (default): inside a lung mask: the dataset's true masks
    (``cache/masks.npy``, the phantom) or, without them, the classical
    segmentation of :func:`biomark.data.lungs.segment_lungs`. Every mask is
    checked (:func:`biomark.data.lungs.check_mask`); an implausible mask is
    *excluded* and recorded in ``failures.csv`` (stage ``mask``) with its flags.
    ``image``: the whole image content (the bounding box of the non-black
    pixels, i.e. without the letterbox padding).
    ``zones``: the ``lung`` features plus the same features computed in each
    lung zone of :func:`biomark.data.lungs.lung_zones` (upper, middle, lower
    thirds; central, peripheral halves), so that a regional signature (basal
    fibrosis, perihilar edema, peripheral COVID-19 haze) is not diluted by the
    rest of the lung (:func:`extract_zone_features`). Six extractions per
    image: opt in.

2-D extraction
    The parameter file must state ``force2D: true, force2Ddimension: 0``. In
    pyradiomics these settings describe a 2-D slice inside a 3-D volume; a
    single-slice volume, however, cannot be LoG-filtered (pyradiomics needs at
    least 4 pixels along every axis). biomark therefore passes native 2-D
    images, for which pyradiomics's extraction is 2-D by construction, and
    gives pyradiomics ``force2D: false`` (with ``force2D: true`` pyradiomics
    would treat a 2-D image's rows as the out-of-plane axis and compute
    texture along one direction only, and a 1-D wavelet). The test suite checks
    that every Original feature equals the single-slice-volume + ``force2D``
    result.

Feature names
    ``<family>_<feature>`` for the Original image (``glcm_Contrast``,
    ``firstorder_Mean``, ``shape2D_Perimeter``) and
    ``<imagetype>_<family>_<feature>`` for filtered images, where
    ``<imagetype>`` is pyradiomics's name without the ``-3D`` dimension
    suffix: ``log-sigma-1-0-mm_glcm_Contrast``, ``wavelet-LH_glcm_Contrast``.
    Zone features carry the zone as a further prefix: ``lower_glcm_Contrast``,
    ``peripheral_log-sigma-1-0-mm_firstorder_Mean``.
    pyradiomics's ``diagnostics_*`` entries are not features and are left out.

Failures are never silent NaN
    An image whose extraction raises (empty or too small region, pyradiomics
    error) gets no row in the feature table and a failures row (``image_id,
    stage, reason, action``). A single feature that pyradiomics could not
    compute for an image (it logs an error and returns NaN) is recorded
    (stage ``feature``, with pyradiomics's message); the value stays missing in
    the table and the association step drops such features, reporting them.

Speed
    Images are processed in batches on worker processes (``jobs=-1`` = all
    cores; :mod:`biomark.features.worker_pool`: one extractor per worker,
    workers exit with their parent), which also store each result in the
    on-disk cache (:mod:`biomark.features.radiomics_cache`), keyed by image,
    settings and mask hashes, so a re-run or an enlarged dataset computes
    only new images; looking up the cache happens here, so a warm re-run
    starts no worker (:mod:`biomark.features.radiomics_jobs`).
    The mask hash is that of the exact region used (the lung, one zone, a
    control region), so the region and zone definition are part of the key:
    changing the zone definition recomputes exactly the zones that changed.

The dataset-level run (output folder, controls, gallery) is
:mod:`biomark.features.radiomics_run`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # worker processes import this module: pandas (0.4 s) only where tables are built
    import pandas as pd

from biomark.config import Region
from biomark.features.radiomics_cache import CacheEntry, FeatureCache
from biomark.features.radiomics_params import RadiomicsParams
from biomark.io.remote import RemoteFolder, is_url

__all__ = [
    "FAILURE_COLUMNS",
    "ArrayRow",
    "ChunkItem",
    "RowSource",
    "ChunkRunner",
    "ExtractionOutput",
    "Region",
    "extract_chunk_into_cache",
    "extract_features",
    "extract_one",
    "extract_zone_features",
    "feature_name",
    "radiomics_versions",
    "resolve_jobs",
    "shuffle_within",
]

logger = logging.getLogger(__name__)


#: A row of a ``.npy`` file that the process running a batch can read: (path, row).
ArrayRow = tuple[str, int]
#: One image of a batch: (cache key, image id, image, region mask); image and
#: mask are arrays, or :data:`ArrayRow` references (a cluster worker then reads
#: them from the shared dataset cache or ``masks.npy``, not from the message).
ChunkItem = tuple[str, str, "np.ndarray | ArrayRow", "np.ndarray | ArrayRow"]
#: Runs batches elsewhere (e.g. on a Dask cluster): called with the extractor
#: parameters, the cache folder and an iterable of batches; yields, per batch
#: and in any order, ``[(key, entry), ...]`` *after* storing the entries in the
#: cache (:func:`extract_chunk_into_cache` does both).
ChunkRunner = Callable[
    [dict[str, Any], str, Iterable[list[ChunkItem]]], Iterable[list[tuple[str, "CacheEntry"]]]
]

#: Columns of every failures table.
FAILURE_COLUMNS: tuple[str, ...] = ("image_id", "stage", "reason", "action")

_IMAGE_TYPE_RE = re.compile(r"-[23]D$")


def radiomics_versions() -> dict[str, str]:
    """Versions of pyradiomics, SimpleITK and numpy (recorded with every result)."""
    import radiomics
    import SimpleITK as sitk

    return {
        "pyradiomics": str(radiomics.__version__),
        "SimpleITK": str(sitk.Version_VersionString()),
        "numpy": np.__version__,
    }


def feature_name(key: str) -> str | None:
    """biomark's column name for a pyradiomics output key (None for diagnostics).

    Examples
    --------
    >>> feature_name("original_glcm_Contrast")
    'glcm_Contrast'
    >>> feature_name("log-sigma-1-0-mm-3D_firstorder_Mean")
    'log-sigma-1-0-mm_firstorder_Mean'
    >>> feature_name("wavelet-LH_glcm_Contrast")
    'wavelet-LH_glcm_Contrast'
    >>> feature_name("diagnostics_Versions_PyRadiomics") is None
    True
    """
    if key.startswith("diagnostics_") or "_" not in key:
        return None
    image_type, rest = key.split("_", 1)
    image_type = _IMAGE_TYPE_RE.sub("", image_type)
    return rest if image_type == "original" else f"{image_type}_{rest}"


def shuffle_within(image: np.ndarray, mask: np.ndarray, seed: int | Sequence[int]) -> np.ndarray:
    """Randomly permute the pixels inside ``mask`` (negative control).

    Destroys spatial structure (texture, shape of intensity patterns) inside
    the region while keeping its grey-level histogram, hence every first-order
    feature, exactly.

    Parameters
    ----------
    image : ndarray of shape (S, S), uint8
    mask : ndarray of shape (S, S)
        Non-zero = region to shuffle.
    seed : int or sequence of int
        Seed of the permutation's own ``numpy.random.Generator``.

    Returns
    -------
    ndarray of shape (S, S), uint8
        A copy of ``image`` with the region's pixels permuted.
    """
    out = np.array(image, copy=True)
    inside = np.asarray(mask) > 0
    values = out[inside]
    out[inside] = np.random.default_rng(seed).permutation(values)
    return out


class _ListHandler(logging.Handler):
    """Collects pyradiomics's error messages during one extraction."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}: {record.exc_info[1]!r}"
        self.messages.append(text.splitlines()[0] if text else text)


@contextlib.contextmanager
def _captured_radiomics_log() -> Iterator[_ListHandler]:
    """Capture pyradiomics errors; keep its stderr chatter out of the user's way.

    pyradiomics attaches its own stderr handler at import (level WARNING) and
    logs one warning per image with symmetrical GLCMs; biomark records
    pyradiomics errors in failures.csv instead, so the stderr handler is
    silenced (``radiomics.setVerbosity(60)``) and propagation is paused while
    extracting.
    """
    import radiomics

    radiomics.setVerbosity(60)
    rlog = logging.getLogger("radiomics")
    handler = _ListHandler()
    previous = rlog.propagate
    rlog.addHandler(handler)
    rlog.propagate = False
    try:
        yield handler
    finally:
        rlog.removeHandler(handler)
        rlog.propagate = previous


def _make_extractor(params: dict[str, Any]) -> Any:
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    content = dict(params)
    settings = dict(content.get("setting") or {})
    settings["force2D"] = False  # native 2-D input; see the module docstring
    content["setting"] = settings
    with warnings.catch_warnings():
        # pykwalify (parameter validation) uses the deprecated load_module()
        warnings.simplefilter("ignore", DeprecationWarning)
        return RadiomicsFeatureExtractor(content)


def extract_one(extractor: Any, image: np.ndarray, mask: np.ndarray) -> CacheEntry:
    """Extract the features of one image inside one mask.

    Parameters
    ----------
    extractor : radiomics.featureextractor.RadiomicsFeatureExtractor
        Built from the run's parameters (see :func:`extract_features`).
    image : ndarray of shape (S, S), uint8
    mask : ndarray of shape (S, S)
        Region, non-zero = inside (written as label 1).

    Returns
    -------
    CacheEntry
        ``ok=False`` with the reason when the extraction raised or the mask is
        empty; otherwise the features, with any non-finite value listed in
        ``failures`` (stage ``feature``).
    """
    import SimpleITK as sitk

    region = (np.asarray(mask) > 0).astype(np.uint8)
    if not region.any():
        return CacheEntry({}, [("extract", "empty region mask")], ok=False)
    with _captured_radiomics_log() as log:
        try:
            raw = extractor.execute(
                sitk.GetImageFromArray(np.asarray(image, dtype=np.float32)),
                sitk.GetImageFromArray(region),
                label=1,
            )
        except Exception as err:  # noqa: BLE001 - pyradiomics raises assorted types; recorded, not swallowed
            reason = f"pyradiomics {type(err).__name__}: {err}".splitlines()[0]
            return CacheEntry({}, [("extract", reason)], ok=False)
    features: dict[str, float] = {}
    failures: list[tuple[str, str]] = []
    for key, value in raw.items():
        name = feature_name(str(key))
        if name is None:
            continue
        number = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
        features[name] = number
        if not math.isfinite(number):
            pieces = key.split("_")
            related = [m for m in log.messages if len(pieces) > 2 and pieces[2] in m]
            detail = related[0] if related else (log.messages[0] if log.messages else "no message")
            failures.append(("feature", f"{name}: pyradiomics returned {number} ({detail})"))
    return CacheEntry(features, failures, ok=True)


# One extractor per process and parameter set: building one validates the
# parameters with pykwalify (~0.1 s), which would otherwise be paid per chunk.
_EXTRACTORS: dict[str, Any] = {}


def _cached_extractor(params: dict[str, Any]) -> Any:
    import json

    key = json.dumps(params, sort_keys=True)
    if key not in _EXTRACTORS:
        # pyradiomics/pykwalify log at INFO while building an extractor; keep that quiet
        quiet = [logging.getLogger(name) for name in ("pykwalify", "radiomics")]
        levels = [q.level for q in quiet]
        for q in quiet:
            q.setLevel(logging.WARNING)
        try:
            with _captured_radiomics_log():
                _EXTRACTORS.clear()
                _EXTRACTORS[key] = _make_extractor(params)
        finally:
            for q, level in zip(quiet, levels, strict=True):
                q.setLevel(level)
    return _EXTRACTORS[key]


def _extract_chunk(
    params: dict[str, Any], items: list[tuple[str, np.ndarray, np.ndarray]]
) -> list[tuple[str, CacheEntry]]:
    extractor = _cached_extractor(params)
    return [(key, extract_one(extractor, image, mask)) for key, image, mask in items]


@dataclass(frozen=True)
class RowSource:
    """Where a worker can read the arrays given to :func:`extract_features` itself.

    Attributes
    ----------
    path : str
        A ``.npy`` file visible to every worker (the dataset's image cache, a
        run's ``masks.npy``).
    rows : ndarray of int
        ``rows[i]``: the file's row holding the ``i``-th array.
    """

    path: str
    rows: np.ndarray

    def ref(self, i: int) -> ArrayRow:
        """The reference to the ``i``-th array."""
        return (self.path, int(self.rows[i]))


@functools.lru_cache(maxsize=8)
def _open_npy(path: str, mtime_ns: int, size: int) -> np.ndarray:
    # Keyed by modification time and size too: masks.npy is rewritten (by an
    # atomic rename) by a run whose masks differ, and a long-lived worker must
    # not keep reading the old file through a stale memory map.
    return np.load(path, mmap_mode="r")


def _materialize(value: np.ndarray | ArrayRow) -> np.ndarray:
    """An array, or the row an :data:`ArrayRow` points to (read from a memory map)."""
    if isinstance(value, np.ndarray):
        return value
    path, row = value
    stat = os.stat(path)
    return np.array(_open_npy(path, stat.st_mtime_ns, stat.st_size)[row])


def extract_chunk_into_cache(
    params: dict[str, Any], cache_dir: str | os.PathLike[str], items: list[ChunkItem]
) -> list[tuple[str, CacheEntry]]:
    """Extract one batch of images and store each result in the cache.

    The unit of work a cluster worker runs (:class:`biomark.pipelines.executor.DaskExecutor`):
    a pure function of its arguments whose only side effect is one atomic
    cache file per image, so a batch lost with its worker is simply redone
    and a finished image is never lost or half-written.

    Parameters
    ----------
    params : dict
        :meth:`RadiomicsParams.extractor_params`.
    cache_dir : path or str
        The cache folder (shared with the client), or its fsspec URL
        (each file then uploaded atomically, see :mod:`biomark.io.remote`).
    items : list of (key, image_id, image, mask)
        ``image`` and ``mask`` as ndarray of shape (S, S), or :data:`ArrayRow`
        references read here.

    Returns
    -------
    list of (str, CacheEntry)
        The batch's results, in input order.
    """
    done = _extract_chunk(
        params, [(key, _materialize(image), _materialize(mask)) for key, _, image, mask in items]
    )
    owner = {key: image_id for key, image_id, _, _ in items}
    if is_url(cache_dir):
        remote = RemoteFolder(str(cache_dir), "radiomics cache")
        for key, entry in done:
            remote.write_text(
                FeatureCache.relative(key), FeatureCache.serialize(entry, owner.get(key, ""))
            )
        return done
    cache = FeatureCache(cache_dir)
    for key, entry in done:
        cache.put(key, entry, image_id=owner.get(key, ""))
    return done


@dataclass(frozen=True)
class ExtractionOutput:
    """Features of a set of images (one region or control variant).

    Attributes
    ----------
    features : DataFrame of shape (n_ok, 1 + n_features)
        ``image_id`` then one column per feature, for images that were
        extracted (input order).
    failures : DataFrame
        :data:`FAILURE_COLUMNS`, one row per failed image or feature value.
    n_computed : int
        Images computed in this call.
    n_cached : int
        Images read from the cache.
    """

    features: pd.DataFrame
    failures: pd.DataFrame
    n_computed: int
    n_cached: int


def resolve_jobs(jobs: int) -> int:
    """Worker processes for ``jobs`` (-1 = all cores; at most 4 per core).

    Raises
    ------
    ValueError
        If ``jobs`` is 0.
    """
    cores = os.cpu_count() or 1
    if jobs == 0:
        raise ValueError("jobs=0: use a positive number of workers or -1 for all cores")
    return cores if jobs < 0 else max(1, min(int(jobs), cores * 4))


def extract_features(
    images: np.ndarray,
    masks: np.ndarray,
    image_ids: Sequence[str],
    params: RadiomicsParams,
    *,
    cache_dir: str | os.PathLike[str],
    jobs: int = -1,
    desc: str = "radiomics",
    chunk_size: int | None = None,
    runner: ChunkRunner | None = None,
    image_source: RowSource | None = None,
    mask_source: RowSource | None = None,
) -> ExtractionOutput:
    """Extract features for many images, in parallel, through the disk cache.

    Parameters
    ----------
    images : ndarray of shape (n_images, S, S), uint8
        The images (e.g. a dataset's memory-mapped cache).
    masks : ndarray of shape (n_images, S, S)
        One region per image (non-zero = inside).
    image_ids : sequence of str, length n_images
        Row labels of the output.
    params : RadiomicsParams
        Validated parameters (:func:`biomark.features.radiomics_params.load_params`).
    cache_dir : path
        Cache folder (see :class:`~biomark.features.radiomics_cache.FeatureCache`).
    jobs : int, default -1
        Worker processes; -1 = all cores, 1 = serial in this process.
    desc : str
        Progress-bar label.
    chunk_size : int, optional
        Images per task (default: about four tasks per worker, at most 32).
    runner : ChunkRunner, optional
        Runs the batches elsewhere (a Dask cluster, see
        :func:`biomark.pipelines.executor.dask_chunk_runner`), which stores
        the results in the cache; ``jobs`` then only sizes the batches.
        Default: this process (``jobs=1``) or worker processes
        (:func:`biomark.features.worker_pool.worker_pool`).
    image_source, mask_source : RowSource, optional
        With a ``runner``: where its workers can read ``images`` / ``masks``
        themselves (a shared file), so batches carry row references instead
        of pixels (for large datasets, most of what would travel).

    Returns
    -------
    ExtractionOutput

    Raises
    ------
    ValueError
        If the shapes of ``images``, ``masks`` and ``image_ids`` disagree or
        ``jobs`` is 0.
    RunError
        If a worker process died (finished images stay cached).
    """
    from biomark.features.radiomics_jobs import ExtractionJob, run_jobs

    job = ExtractionJob(
        images,
        masks,
        image_ids,
        params,
        cache_dir,
        image_source=image_source,
        mask_source=mask_source,
    )
    run_jobs(
        [job], params, n_workers=resolve_jobs(jobs), runner=runner, chunk_size=chunk_size, desc=desc
    )
    return job.output(desc)


def extract_zone_features(
    images: np.ndarray,
    masks: np.ndarray,
    image_ids: Sequence[str],
    params: RadiomicsParams,
    *,
    cache_dir: str | os.PathLike[str],
    jobs: int = -1,
    desc: str = "radiomics",
    runner: ChunkRunner | None = None,
    image_source: RowSource | None = None,
    mask_source: RowSource | None = None,
    zones: Sequence[str] | None = None,
) -> ExtractionOutput:
    """Whole-lung features plus the same features in every lung zone.

    The zones are :func:`biomark.data.lungs.lung_zones` of each lung mask;
    zone feature columns are named ``<zone>_<feature>`` (``lower_glcm_Contrast``)
    after the whole-lung columns (unprefixed). Each zone goes through
    :func:`extract_features` and its cache, keyed by the zone mask.

    Parameters
    ----------
    images : ndarray of shape (n_images, S, S), uint8
    masks : ndarray of shape (n_images, S, S)
        Lung masks (both lungs, non-zero = lung).
    image_ids : sequence of str, length n_images
    params : RadiomicsParams
    cache_dir : path
    jobs : int, default -1
    desc : str
        Progress-bar label (the zone is appended).
    runner : ChunkRunner, optional
        As :func:`extract_features`.
    image_source, mask_source : RowSource, optional
        As :func:`extract_features` (``mask_source`` for the whole-lung masks
        only; zone masks are computed here and travel with the batches).
    zones : sequence of str, optional
        A subset of :data:`biomark.data.lungs.ZONES` (default: all of them).

    Returns
    -------
    ExtractionOutput
        Rows = images whose whole-lung extraction succeeded. A zone whose
        extraction failed for an image (e.g. fewer than ``minimumROISize``
        pixels) leaves that zone's values missing for the image and adds a
        failures row whose reason starts with the zone name. ``n_computed`` and
        ``n_cached`` count region extractions (up to 6 per image).

    Raises
    ------
    ValueError
        As :func:`extract_features`, or for an unknown zone.
    """
    from biomark.features.radiomics_jobs import run_jobs, zone_jobs, zone_output

    regions = zone_jobs(
        images,
        masks,
        image_ids,
        params,
        cache_dir,
        image_source=image_source,
        mask_source=mask_source,
        zones=zones,
    )
    run_jobs(
        [job for _, job in regions], params, n_workers=resolve_jobs(jobs), runner=runner, desc=desc
    )
    return zone_output(regions, desc)
