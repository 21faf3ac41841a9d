"""``biomark radiomics``: pyradiomics features of a dataset, related to a run's deep features.

:func:`extract_radiomics` computes the features of every image
(:func:`biomark.features.radiomics_run.run_radiomics`) with its batches on an
:class:`~biomark.pipelines.executor.Executor` (this machine's worker
processes, or a Dask cluster) and the dataset on a path or at an fsspec URL
(:mod:`biomark.pipelines.url_storage`); :func:`associate_run` relates every
strategy's deep features of a run folder to them (units matched across the
folds' networks where each fold has its own backbone); and
:func:`run_radiomics_command` is the whole command: extraction, the phantom's
ground truth, the association with a run and the page
(:func:`biomark.report.radiomics_page.write_radiomics_report`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.config import (
    Plan,
    RadiomicsSettings,
    Region,
    ReportPlanSettings,
    StrategySpec,
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
from biomark.pipelines.radiomics_units import DeepUnits, deep_units
from biomark.pipelines.url_storage import radiomics_storage
from biomark.report.radiomics_alignment import StrategyAnalysis

__all__ = [
    "RADIOMICS_PACKAGES",
    "RadiomicsCommand",
    "associate_run",
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


def associate_run(
    run_dir: str | Path,
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    controls: Mapping[str, pd.DataFrame] | None = None,
    strategies: list[str] | None = None,
    fdr_alpha: float = 0.05,
    cca_components: int = 3,
    excluded: Collection[str] = (),
) -> dict[str, StrategyAnalysis]:
    """Associate every strategy's deep features with radiomics.

    A shared backbone's out-of-fold features are used as they are. Where each
    fold trained (or drew) its own backbone, unit ``j`` of one fold is not
    unit ``j`` of another: the units are matched across folds on
    ``features_all.parquet`` and each family's consensus is used (``u####``,
    as on the report's index page); without those dumps the pooled
    out-of-fold features are kept and the analysis says that they mix units
    (``unit_basis`` of each :class:`StrategyAnalysis`).

    Parameters
    ----------
    run_dir : path
        A run folder written by ``biomark extract``.
    features : DataFrame
        ``image_id`` + radiomic features (``features.parquet``).
    manifest : DataFrame
        The dataset manifest (covariates for the partial correlation).
    controls : mapping of str to DataFrame, optional
        Control variant -> radiomic features.
    strategies : list of str, optional
        Default: every strategy of the run with features, by its label
        (``finetune:3``, as the other pages name it), in the plan's order.
    fdr_alpha : float, default 0.05
    cca_components : int, default 3
    excluded : collection of str, default ()
        Image ids radiomics left out by name
        (:func:`biomark.report.radiomics_page.excluded_images`); they do not
        count against the overlap check.

    Returns
    -------
    dict of str to StrategyAnalysis

    Raises
    ------
    RunError
        On a run without features or tables with too few images in common.
    """
    run = RunFolder(run_dir)
    info = run.read_info(missing_ok=True)
    thresholds = info.report_settings()
    out: dict[str, StrategyAnalysis] = {}
    for strategy in strategies or _strategy_labels(run):
        meta, X = run.features(strategy)
        units = deep_units(run, info, strategy, meta, X)
        out[strategy] = _associate_strategy(
            strategy,
            meta,
            units,
            features,
            manifest,
            random_control=info.random_control(strategy),
            controls=controls,
            positive=info.positive_class,
            classes=info.classes,
            fdr_alpha=fdr_alpha,
            cca_components=cca_components,
            excluded=excluded,
            thresholds=thresholds,
        )
        logger.info(
            "%s: %d images, %d significant pairs",
            strategy,
            out[strategy].n_images,
            out[strategy].result.n_significant,
        )
    return out


def check_run_readable(run_dir: str | Path) -> None:
    """Read what :func:`associate_run` reads of a run: ``run.json`` and every strategy's features.

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
    for strategy in _strategy_labels(run):
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


def _strategy_labels(run: RunFolder) -> list[str]:
    """The labels of the strategies that hold out-of-fold features, in the plan's order."""
    with_features = {StrategySpec.parse(name).label for name in run.strategy_folders()}
    return [label for label in run.strategies_found() if label in with_features]


def _associate_strategy(
    strategy: str,
    meta: pd.DataFrame,
    units: DeepUnits,
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    random_control: bool,
    controls: Mapping[str, pd.DataFrame] | None,
    positive: str | None,
    classes: tuple[str, ...],
    fdr_alpha: float,
    cca_components: int,
    excluded: Collection[str],
    thresholds: ReportPlanSettings,
) -> StrategyAnalysis:
    """One strategy's associations: plain, partial (manifest covariates), CCA, and each control."""
    from biomark.analysis.associate import associate, cca_explained
    from biomark.analysis.chance import chance_guard
    from biomark.report.radiomics_alignment import align_features, covariates_from_manifest

    rad_names = [c for c in features.columns if c != "image_id"]
    guard = None
    if (
        "pred" in meta and meta["pred"].notna().all() and meta["label"].nunique() > 1
    ):  # all out-of-fold images
        guard = chance_guard(
            meta["label"],
            meta["pred"],
            strategy=strategy,
            positive=positive,
            classes=list(classes) or None,
            alpha=thresholds.chance_alpha,
        )
    meta, X, R = align_features(
        meta,
        units.values,
        features,
        what=f"{strategy} deep features",
        excluded=excluded,
        min_overlap=thresholds.min_overlap,
    )
    ids = meta["image_id"].astype(str).to_numpy()
    deep_names = units.names
    values = R[rad_names].to_numpy(dtype=float)
    result = associate(
        X, values, deep_names=deep_names, radiomic_names=rad_names, fdr_alpha=fdr_alpha
    )
    cov = covariates_from_manifest(manifest, ids)
    partial = None
    if cov is not None:
        partial = associate(
            X,
            values,
            deep_names=deep_names,
            radiomic_names=rad_names,
            covariates=cov,
            fdr_alpha=fdr_alpha,
        )
    finite = np.isfinite(values).all(axis=0)
    folds = meta["fold"].to_numpy() if "fold" in meta.columns and meta["fold"].nunique() > 1 else 5
    try:
        cca: dict[str, Any] = cca_explained(
            X, values[:, finite], n_components=cca_components, folds=folds
        )
    except ValueError as err:
        logger.warning("%s: CCA skipped (%s)", strategy, err)
        cca = {"error": str(err)}
    variants = {"real": result}
    for name, table in (controls or {}).items():
        names = [c for c in table.columns if c != "image_id"]
        _, cX, cR = align_features(
            meta, X, table, what=f"{strategy} vs control {name}", min_overlap=0.5, excluded=excluded
        )
        variants[name] = associate(
            cX,
            cR[names].to_numpy(dtype=float),
            deep_names=deep_names,
            radiomic_names=names,
            fdr_alpha=fdr_alpha,
        )
    return StrategyAnalysis(
        strategy,
        len(ids),
        result,
        partial,
        cca,
        variants,
        guard,
        unit_basis=units.basis,
        basis_note=units.note,
        agree_in=units.agree_in,
        random_control=random_control,
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
        With a run: :func:`associate_run`.
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
