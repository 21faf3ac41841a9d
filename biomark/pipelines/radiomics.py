"""``biomark radiomics``: pyradiomics features of a dataset, related to a run's deep features.

:func:`extract_radiomics` computes the features of every image
(:func:`biomark.features.radiomics_run.run_radiomics`) with its batches on an
:class:`~biomark.pipelines.executor.Executor` (this machine's worker
processes, or a Dask cluster) and the dataset on a path or at an fsspec URL
(:mod:`biomark.pipelines.url_storage`);
:func:`~biomark.pipelines.radiomics_associate.associate_run` relates every
strategy's deep features of a run folder to them (units matched across the
folds' networks where each fold has its own backbone); and
:func:`run_radiomics_command` is the whole command: extraction, the phantom's
ground truth, the association with a run and the page
(:func:`biomark.report.radiomics_page.write_radiomics_report`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from biomark.config import (
    Plan,
    RadiomicsSettings,
    Region,
    apply_overrides,
)
from biomark.config.seeds import check_seed
from biomark.exceptions import ConfigError, RunError
from biomark.features.radiomics_params import RadiomicsParams
from biomark.features.radiomics_run import RadiomicsRun
from biomark.features.run_folder import RunFolder
from biomark.io.disk import check_writable_dir
from biomark.io.remote import is_url
from biomark.pipelines.executor import Executor, SerialExecutor
from biomark.pipelines.radiomics_associate import associate_run, strategies_with_features
from biomark.pipelines.url_storage import radiomics_storage
from biomark.report.radiomics_alignment import StrategyAnalysis

__all__ = [
    "RADIOMICS_PACKAGES",
    "RadiomicsCommand",
    "check_run_readable",
    "extract_radiomics",
    "run_dataset",
    "run_radiomics_command",
]

logger = logging.getLogger(__name__)

#: What a radiomics batch imports where it runs.
RADIOMICS_PACKAGES: tuple[str, ...] = ("biomark", "radiomics", "SimpleITK")


def extract_radiomics(
    data: str | Path,
    params: RadiomicsParams,
    *,
    region: Region = "lung",
    jobs: int = -1,
    controls: bool = False,
    seed: int = 0,
    executor: Executor | None = None,
) -> RadiomicsRun:
    """Radiomics of a whole dataset, with the batches on ``executor`` and the dataset on a path or
    at a URL.

    Masks, controls and the output folder are made here; the pyradiomics
    extraction of every image (the expensive part) runs in this machine's
    worker processes or on a cluster's workers, which write the per-image
    cache under ``DATA_DIR/radiomics/<params>_<region>/cache`` (images already
    cached are not extracted again). On a cluster that sees the dataset's
    folder, batches name rows of the image cache and of ``masks.npy`` instead
    of carrying pixels. The result is the same whatever the executor.

    Parameters
    ----------
    data : path or str
        The dataset folder (visible to every worker at the same path with a
        Dask executor), or its fsspec URL (results are uploaded next to it).
    params : RadiomicsParams
    region, jobs, controls, seed
        As :func:`~biomark.features.radiomics_run.run_radiomics` (``jobs``:
        this machine's worker processes; a cluster uses its worker threads).
    executor : Executor, optional
        Default: :class:`~biomark.pipelines.executor.SerialExecutor`.

    Returns
    -------
    RadiomicsRun
        Its ``out_dir`` is this machine's output folder (a local copy for a URL).

    Raises
    ------
    ClusterError
        Scheduler unreachable, or a worker (or this process) that cannot write
        the output folder or lacks pyradiomics/SimpleITK (before any batch), or
        a batch that could not import a package.
    DataError
        The dataset cannot be opened.
    """
    from biomark.data.dataset import load_dataset
    from biomark.features.radiomics_run import run_radiomics

    executor = executor if executor is not None else SerialExecutor()
    storage = radiomics_storage(data, params, region, executor)
    with executor.opened():
        local = storage.fetch()
        load_dataset(local)  # a missing or broken dataset is named as such, before the preflight
        executor.preflight(
            storage.shared_dir, read_paths=storage.read_paths, packages=RADIOMICS_PACKAGES
        )
        runner = executor.chunk_runner(cache_url=storage.cache_url)
        result = run_radiomics(
            local,
            params,
            region=region,
            jobs=executor.workers(jobs),
            controls=controls,
            seed=seed,
            runner=runner,
            by_reference=runner is not None and storage.by_reference,
        )
    storage.publish(result)
    return result


def check_run_readable(run_dir: str | Path) -> None:
    """Read what :func:`~biomark.pipelines.radiomics_associate.associate_run` reads of a run:
    ``run.json`` and every strategy's features.

    Parameters
    ----------
    run_dir : path

    Raises
    ------
    RunError
        Naming the file and what to do: an unreadable ``run.json``, or a
        strategy whose ``features.parquet`` tables are not the ones
        ``biomark extract`` wrote (columns missing or out of order, folds of
        different widths).
    """
    run = RunFolder(run_dir)
    run.read_info(missing_ok=True)
    for strategy in strategies_with_features(run):
        run.features(strategy)


def run_dataset(run_dir: str | Path) -> str:
    """The dataset a run trained on, as its ``run.json`` records it: ``biomark radiomics`` without
    ``--data``.

    Parameters
    ----------
    run_dir : path or str
        A run folder written by ``biomark extract``.

    Returns
    -------
    str
        The dataset folder the run read (``dataset.dir``) when it is still a
        folder on this machine, named relative to the current folder when it
        lies inside it, else the fsspec URL it was copied from
        (``dataset.url``), if any. ``run.json`` records the absolute path while
        ``make demo`` names the folder relative (``data/phantom_quick``), and a
        finished radiomics run is reused only for the same path text (which
        ``radiomics.json`` records).

    Raises
    ------
    RunError
        No ``run.json``, or one that names no dataset this machine can read
        (the message names the folder recorded and asks for ``--data``).
    """
    run = RunFolder(run_dir)
    record = run.read_info().dataset
    if record.dir and Path(record.dir).is_dir():
        folder = Path(record.dir)
        return (
            str(folder.relative_to(Path.cwd())) if folder.is_relative_to(Path.cwd()) else record.dir
        )
    if record.url:
        return record.url
    where = (
        f"names {record.dir}, which is not a folder on this machine"
        if record.dir
        else "names no dataset"
    )
    raise RunError(
        f"{run.run_json}: {where}; give the dataset the run trained on with --data DATA_DIR"
    )


@dataclass(frozen=True)
class RadiomicsCommand:
    """What ``biomark radiomics`` did (for the CLI to print).

    Attributes
    ----------
    result : RadiomicsRun
    truth : DataFrame or None
        The phantom's ground truth (:func:`biomark.analysis.phantom_truth.phantom_truth`).
    analyses : dict of str to StrategyAnalysis or None
        With a run: :func:`~biomark.pipelines.radiomics_associate.associate_run`.
    page : Path
        ``<reports>/<name>/radiomics.html``.
    """

    result: RadiomicsRun
    truth: pd.DataFrame | None
    analyses: dict[str, StrategyAnalysis] | None
    page: Path


def radiomics_settings(params: str | Path, region: Region, jobs: int) -> RadiomicsSettings:
    """The flags through the plan's validation (``radiomics.params``, ``.region``, ``.jobs``).

    Raises
    ------
    ConfigError
        An invalid region, or ``jobs`` 0.
    """
    settings: RadiomicsSettings = apply_overrides(
        Plan(),
        {"radiomics.params": str(params), "radiomics.region": region, "radiomics.jobs": jobs},
    ).radiomics
    if settings.jobs == 0:
        raise ConfigError(
            "--jobs 0: give a positive number of worker processes or -1 for all cores"
        )
    return settings


def run_radiomics_command(
    data: str,
    params: str | Path,
    *,
    region: Region = "lung",
    jobs: int = -1,
    run_dir: str | None = None,
    reports: str | Path = "reports",
    controls: bool | None = None,
    seed: int = 0,
    executor: Executor | None = None,
) -> RadiomicsCommand:
    """``biomark radiomics``: extract, check against the phantom's truth, relate to a run, write the
    page.

    Parameters
    ----------
    data : str
        Dataset folder or fsspec URL.
    params : path
        pyradiomics parameter file.
    region, jobs, seed
        As :func:`extract_radiomics`.
    run_dir : str, optional
        A run folder whose deep features are related to the radiomics.
    reports : path, default "reports"
        The page goes to ``<reports>/<run folder name>/`` (without a run:
        ``<reports>/<dataset folder name>/``).
    controls : bool, optional
        Extract the negative controls (default: with a run).
    executor : Executor, optional
        Default: this machine's worker processes (``jobs``).

    Returns
    -------
    RadiomicsCommand
    """
    from biomark.data.dataset import load_dataset
    from biomark.features.radiomics_params import load_params
    from biomark.report.radiomics_alignment import excluded_images
    from biomark.report.radiomics_page import write_radiomics_report

    check_seed(seed, "--seed")
    settings = radiomics_settings(params, region, jobs)
    loaded = load_params(settings.params)
    # A run it cannot read and a reports folder it cannot write are named now, not after minutes
    # of extraction.
    if run_dir:
        check_run_readable(run_dir)
        name = RunFolder(run_dir).name
    else:
        name = data.rstrip("/").rsplit("/", 1)[-1] if is_url(data) else Path(data).resolve().name
    page_dir = check_writable_dir(Path(reports) / name, "--reports")
    controls = bool(run_dir) if controls is None else bool(controls)
    result = extract_radiomics(
        data,
        loaded,
        region=settings.region,
        jobs=settings.jobs,
        controls=controls,
        seed=seed,
        executor=executor,
    )
    data_dir = (
        result.out_dir.parent.parent
    )  # DATA_DIR/radiomics/<params>_<region>: this machine's dataset
    manifest = load_dataset(data_dir).manifest
    truth = None
    if "severity" in manifest.columns:
        from biomark.analysis.phantom_truth import phantom_truth

        truth = phantom_truth(result.features, manifest)
    analyses = None
    if run_dir:
        analyses = associate_run(
            run_dir,
            result.features,
            manifest,
            controls=result.controls,
            excluded=excluded_images(result.failures, result.features),
        )
    page = write_radiomics_report(
        page_dir, result, manifest, analyses, truth, title=f"Radiomics: {name}"
    )
    return RadiomicsCommand(result, truth, analyses, page)
