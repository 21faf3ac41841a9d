"""``biomark extract``: train every strategy under cross-validation and dump features.

Two levels, both driven only by files:

* a **job** is one (strategy, fold)
  (:func:`~biomark.pipelines.extract_job.run_job`): it reads ``run.json``, the
  dataset and ``folds.csv``, trains the fold's model, predicts, and writes
  everything into ``<run>/<strategy>/fold_XX/``, ``done.json`` last. Jobs
  share no in-memory state, so they run in any order, here or on a cluster.
* a **run** (:func:`run_extract`) resolves and checks the dataset *before
  any training* (:func:`prepare_run`), creates the run folder with ``run.json``
  and ``folds.csv`` (computed once, reused by every strategy), hands the jobs
  that are not finished to an :class:`~biomark.pipelines.executor.Executor`
  (in this process, or on a Dask cluster), then writes per-strategy summaries
  and ``summary.md`` (:func:`finish_run`). The run folder may be a path or an
  fsspec URL (:mod:`biomark.pipelines.url_storage`); the flow is the same.

Resuming: a fold with ``done.json`` is skipped; a fold without it is redone,
continuing from its last finished epoch's checkpoint. A crash loses at most
the folds in progress. ``force=True`` clears the selected folds and redoes them.
Every executor records the same things: an attempt record per job
(``.cluster/attempts/``), the finished job with where it ran in ``run.json``,
and the run's timing, executor and retries in ``run.json``'s ``timings``.

The folder layout is documented in :mod:`biomark.features.run_folder`.
This module imports no Keras.

Examples
--------
>>> from biomark.config import load_plan
>>> plan = load_plan("analyses/quick.yaml")                      # doctest: +SKIP
>>> run_dir = run_extract(plan, out_dir="/tmp/runs")             # doctest: +SKIP
>>> (run_dir / "summary.md").is_file()                           # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from biomark.config import (
    DEFAULT_POSITIVE_CLASS,
    Plan,
    StrategySpec,
    apply_overrides,
    check_positive_class,
    plan_hash,
    plan_to_dict,
)
from biomark.data.dataset import Dataset, dataset_paths, load_dataset
from biomark.data.folds import check_folds, make_folds, validation_split
from biomark.exceptions import ConfigError, DataError, RunError
from biomark.features.run_folder import FOLDS_FILE, RunFolder, fold_table_summary
from biomark.features.run_info import DatasetRecord, FoldsRecord, JobRecord, RunInfo, now_utc
from biomark.features.run_summary import write_strategy_summary, write_summary_md
from biomark.io.disk import check_writable_dir
from biomark.io.remote import is_url, redact
from biomark.pipelines.data import resolve_dataset
from biomark.pipelines.executor import Executor, SerialExecutor
from biomark.pipelines.extract_job import Job
from biomark.pipelines.url_storage import RunStorage, run_copy_dir, run_storage
from biomark.progress import progress

__all__ = [
    "RESUME_KEYS",
    "RunSetup",
    "extract_packages",
    "finish_run",
    "log_finished_job",
    "plan_run",
    "prepare_run",
    "record_finished_job",
    "run_extract",
    "validate_inputs",
]

logger = logging.getLogger(__name__)

#: Plan sections (and settings) that must not change between the start of a run and a resume.
RESUME_KEYS: tuple[str, ...] = ("seed", "cv", "model", "training", "dump", "positive_class")


def extract_packages() -> list[str]:
    """What an extract job imports where it runs: biomark, Keras and its backend."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow").strip() or "tensorflow"
    return ["biomark", "keras", backend, "pandas", "pyarrow"]


@dataclass
class RunSetup:
    """A checked run, ready for its jobs (what :func:`prepare_run` returns).

    Attributes
    ----------
    plan : Plan
    run_dir : Path
        ``<output_dir>/<plan.name>``; not created by a dry run.
    dataset_dir : Path
    dataset : Dataset or None
        None only in a dry run whose phantom is not generated yet.
    folds : DataFrame or None
        ``image_id``, ``fold``, ``label``, ``patient_id`` (None as ``dataset``).
    jobs : list of Job
        Every (strategy, fold) of the selected strategies, in run order.
    notes : list of str
        What a dry run would do first (e.g. generate the phantom).
    """

    plan: Plan
    run_dir: Path
    dataset_dir: Path
    dataset: Dataset | None
    folds: pd.DataFrame | None
    jobs: list[Job] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def run(self) -> RunFolder:
        """The run folder."""
        return RunFolder(self.run_dir)


# --------------------------------------------------------------------------- #
# Checks and the run folder
# --------------------------------------------------------------------------- #


def validate_inputs(plan: Plan, dataset: Dataset, strategies: list[StrategySpec]) -> pd.DataFrame:
    """Every check that can fail a run, done before any training.

    Checks that the dataset has the plan's ``positive_class`` and at least two
    classes with images, that ``cv.k`` folds are possible for every class
    (images, and patients with ``grouping: patient``), that every training
    fold can give up a validation split, and that the backbone weights of the
    pretrained strategies exist. Returns the fold table.

    Parameters
    ----------
    plan : Plan
    dataset : Dataset
    strategies : list of StrategySpec

    Returns
    -------
    DataFrame
        ``image_id``, ``fold``, ``label``, ``patient_id`` (from
        :func:`biomark.data.folds.make_folds`, seeded with ``plan.seed``).

    Raises
    ------
    ConfigError
        ``cv.k`` too large for a class, a validation split that cannot be made.
    DataError
        The plan's ``positive_class`` is not one of the dataset's classes, or fewer
        than two classes have images.
    WeightsError
        A weights file that does not exist, or ImageNet weights for an
        ``alpha`` that has none.
    """
    from biomark.models.strategies import needs_pretrained
    from biomark.models.weights import resolve_backbone_weights

    manifest = dataset.manifest
    check_positive_class(plan, dataset.classes, where=str(dataset.root))
    counts = manifest["label"].value_counts()
    empty = [c for c in dataset.classes if c not in counts.index]
    if len(counts) < 2:
        raise DataError(
            f"{dataset.root}: only one class has images ({counts.index[0]}); a classifier needs two"
        )
    if empty:
        logger.warning(
            "classes without images (their output unit never trains): %s", ", ".join(empty)
        )
    check_folds(
        manifest,
        plan.cv.k,
        plan.cv.grouping,
        validation_fraction=plan.cv.validation_fraction,
        seed=plan.seed,
    )
    folds = make_folds(
        manifest,
        plan.cv.k,
        grouping=plan.cv.grouping,
        seed=plan.seed,
        near_duplicate_distance=plan.cv.near_duplicate_distance,
    )
    folds["label"] = manifest["label"].to_numpy()
    folds["patient_id"] = manifest["patient_id"].to_numpy()
    for fold in range(plan.cv.k):
        train = manifest[folds["fold"].to_numpy() != fold].reset_index(drop=True)
        try:
            validation_split(
                train,
                plan.cv.validation_fraction,
                grouping=plan.cv.grouping,
                seed=plan.seed + fold,
                near_duplicate_distance=plan.cv.near_duplicate_distance,
            )
        except ConfigError as err:
            raise ConfigError(f"fold {fold}: {err}") from err
    if any(needs_pretrained(s) for s in strategies):
        weights = resolve_backbone_weights(
            plan.model.weights, alpha=plan.model.alpha, image_size=plan.model.image_size
        )
        if weights == "imagenet":
            logger.info(
                "ImageNet weights are not cached yet: Keras will download them at the first pretrained job"
            )
    return folds


def _select_strategies(plan: Plan, strategies: list[str] | None) -> list[StrategySpec]:
    if not strategies:
        return list(plan.strategies)
    in_plan = {s.label: s for s in plan.strategies}
    chosen = []
    for text in strategies:
        spec = StrategySpec.parse(text)
        if spec.label not in in_plan:
            raise ConfigError(
                f"strategy {spec.label!r} is not in the plan's strategies "
                f"({', '.join(in_plan)}); choose among them or add it to the plan"
            )
        if spec not in chosen:
            chosen.append(spec)
    return chosen


def _check_resume(
    run: RunFolder,
    plan: Plan,
    dataset: Dataset,
    dataset_dir: Path,
    folds: pd.DataFrame,
    *,
    force: bool,
    dry_run: bool,
) -> bool:
    """Whether an existing run folder is resumed (False: none, or started over with ``force``).

    Raises
    ------
    RunError
        The run was started on another manifest or with other settings (without ``force``),
        or its saved folds differ from the plan's.
    """
    if not run.has_info():
        return False
    info = run.read_info()
    same_manifest = info.dataset.manifest_sha256 == dataset.manifest_sha256
    wanted = plan_to_dict(plan)
    # a run.json from before the plan had positive_class recorded it at its top level only
    recorded = {"positive_class": info.positive_class or DEFAULT_POSITIVE_CLASS, **info.plan}
    changed = [key for key in RESUME_KEYS if recorded.get(key) != wanted.get(key)]
    if not same_manifest and not force:
        raise RunError(
            f"{run.root}: this run was started on a dataset whose manifest differs from "
            f"{dataset_paths(dataset_dir).manifest} (sha256 {info.dataset.manifest_sha256[:12]}… vs "
            f"{dataset.manifest_sha256[:12]}…); its folds no longer apply. Use --force to start "
            "the run over, or give the plan a new name"
        )
    if changed and not force:
        raise RunError(
            f"{run.root}: the plan's {', '.join(changed)} settings differ from those this run "
            "was started with, so finished folds would not be comparable; use --force to "
            "start the run over, or give the plan a new name"
        )
    if not same_manifest or changed:
        if not dry_run:
            logger.warning(
                "%s: %s changed; --force starts the whole run over",
                run.root,
                "the dataset manifest" if not same_manifest else ", ".join(changed),
            )
            shutil.rmtree(run.root)
        return False
    if run.folds_csv.is_file():
        saved = run.read_folds()
        if not saved[["image_id", "fold"]].equals(folds[["image_id", "fold"]]):
            raise RunError(
                f"{run.root / FOLDS_FILE}: the saved folds differ from those the plan gives "
                "for this dataset; use --force to start over or give the plan a new name"
            )
    return True


def prepare_run(
    plan: Plan,
    *,
    data_dir: str | None = None,
    out_dir: str | None = None,
    force: bool = False,
    strategies: list[str] | None = None,
    dry_run: bool = False,
) -> RunSetup:
    """Resolve the dataset, check everything, and create (or reopen) the run folder.

    Parameters
    ----------
    plan : Plan
    data_dir : str, optional
        Overrides ``plan.data.dir``.
    out_dir : str, optional
        Overrides ``plan.output_dir``; the run folder is ``out_dir/plan.name``.
    force : bool, default False
        Start the selected strategies over; if the dataset's manifest changed,
        start the whole run over.
    strategies : list of str, optional
        A subset of the plan's strategies (default: all).
    dry_run : bool, default False
        Check only: write nothing, generate nothing.

    Returns
    -------
    RunSetup

    Raises
    ------
    ConfigError, DataError, WeightsError
        From :func:`validate_inputs`, or a strategy not in the plan.
    RunError
        The run folder exists for another dataset manifest or other training
        settings (use ``force`` or another ``name``).
    """
    plan = apply_overrides(plan, {"data.dir": data_dir, "output_dir": out_dir})
    chosen = _select_strategies(plan, strategies)
    run = RunFolder(Path(plan.output_dir).expanduser() / plan.name)
    if not dry_run:  # a read-only --out fails now, not after the dataset is generated
        check_writable_dir(run.root, "output folder (--out / output_dir)")
    dataset_dir = resolve_dataset(plan, generate=not dry_run)
    if dry_run and not dataset_paths(dataset_dir).manifest.is_file():
        jobs = [Job(s.label, f) for s in chosen for f in range(plan.cv.k)]
        note = (
            f"the phantom would be generated into {dataset_dir} first; fold checks run after that"
        )
        return RunSetup(plan, run.root, dataset_dir, None, None, jobs, [note])
    dataset = load_dataset(dataset_dir)
    folds = validate_inputs(plan, dataset, chosen)
    existing = _check_resume(run, plan, dataset, dataset_dir, folds, force=force, dry_run=dry_run)
    jobs = [
        Job(s.label, f, (not force) and existing and run.is_done(s.label, f))
        for s in chosen
        for f in range(plan.cv.k)
    ]
    setup = RunSetup(plan, run.root, dataset_dir, dataset, folds, jobs)
    if not dry_run:
        _write_run_start(setup, chosen, existing)
    return setup


def _write_run_start(setup: RunSetup, chosen: list[StrategySpec], keep_history: bool) -> None:
    from biomark.provenance import environment
    from biomark.train.loop import backend_info

    plan, run, dataset = setup.plan, setup.run, setup.dataset
    assert dataset is not None and setup.folds is not None
    run.root.mkdir(parents=True, exist_ok=True)
    previous = run.read_info() if keep_history and run.has_info() else RunInfo()
    if not run.folds_csv.is_file() or not keep_history:
        run.write_folds(setup.folds)
    labels = [s.label for s in chosen]
    known = list(previous.strategies)
    env = environment()
    env["keras"] = backend_info()
    now = now_utc()
    info = RunInfo(
        name=plan.name,
        created=previous.created or now,
        updated=now,
        plan=plan_to_dict(plan),
        plan_hash=plan_hash(plan),
        seed=plan.seed,
        dataset=DatasetRecord(
            dir=str(Path(setup.dataset_dir).resolve()),
            url=redact(plan.data.dir) if is_url(plan.data.dir) else None,
            manifest_sha256=dataset.manifest_sha256,
            n_images=len(dataset),
            image_size=dataset.size,
            class_counts=dataset.manifest["label"]
            .value_counts()
            .reindex(dataset.classes, fill_value=0)
            .astype(int)
            .to_dict(),
        ),
        classes=tuple(dataset.classes),
        positive_class=plan.positive_class,
        folds=FoldsRecord(
            file=FOLDS_FILE,
            grouping=plan.cv.grouping,
            seed=plan.seed,
            **_folds_summary(setup.folds, dataset.classes),
        ),
        strategies=tuple(known + [label for label in labels if label not in known]),
        environment=env,
        jobs=dict(previous.jobs),
        timings=previous.timings,
    )
    run.write_info(info)


def _folds_summary(folds: pd.DataFrame, classes: Any) -> dict[str, Any]:
    summary = fold_table_summary(folds, classes)
    return {"k": summary["k"], "sizes": tuple(summary["sizes"]), "per_class": summary["per_class"]}


def plan_run(plan: Plan, *, strategies: list[str] | None = None, force: bool = False) -> RunSetup:
    """What ``biomark extract --dry-run`` shows: every check, the jobs, and nothing written.

    A run folder at a URL is looked up in this machine's local copy of it.
    """
    out_dir = None
    if is_url(plan.output_dir):  # the client's local copy stands in for the URL
        out_dir = str(run_copy_dir(f"{plan.output_dir.rstrip('/')}/{plan.name}"))
    return prepare_run(plan, strategies=strategies, force=force, dry_run=True, out_dir=out_dir)


# --------------------------------------------------------------------------- #
# Finished jobs
# --------------------------------------------------------------------------- #


def _pct(value: float | None) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{100 * value:.1f}%"
    )


def log_finished_job(record: dict[str, Any], *, where: str = "", note: str = "") -> None:
    """One log line for a finished (strategy, fold) job with its metrics.

    ``where`` names the worker that ran it (cluster runs); ``note`` is appended.
    """
    m = record["metrics"]
    logger.info(
        "%s fold %d/%d%s: %d-class acc %s | %s vs rest acc %s | sens %s | spec %s (%d epochs, %.0f s)%s",
        record["strategy"],
        record["fold"] + 1,
        record["k"],
        f" on {where}" if where else "",
        len(m.get("confusion") or []),
        _pct(m.get("accuracy")),
        m.get("positive", DEFAULT_POSITIVE_CLASS),
        _pct(m.get("binary_accuracy")),
        _pct(m.get("sensitivity")),
        _pct(m.get("specificity")),
        record["training"]["epochs_run"],
        record["timings"]["total_seconds"],
        note,
    )


def record_finished_job(
    run: RunFolder, record: dict[str, Any], *, worker: str | None = None, host: str | None = None
) -> RunInfo:
    """Add a finished job's entry (time, seconds, epochs, accuracy, where it ran) to ``run.json``."""
    key = run.fold_key(record["strategy"], record["fold"])
    job = JobRecord(
        finished=now_utc(),
        seconds=record["timings"]["total_seconds"],
        epochs_run=record["training"]["epochs_run"],
        accuracy=record["metrics"]["accuracy"],
        worker=worker,
        host=host,
    )
    return run.update_info(lambda info: info.with_job(key, job))


def finish_run(run_dir: str | Path | RunFolder, strategies: list[str] | None = None) -> Path:
    """Write each finished strategy's summaries and the run's ``summary.md``.

    Parameters
    ----------
    run_dir : str, Path or RunFolder
    strategies : list of str, optional
        Strategies to (re)summarise; default: every strategy of the run whose
        folds are all finished.

    Returns
    -------
    Path
        ``summary.md``.
    """
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    info = run.read_info()
    k = info.folds.k or 0
    n_bootstrap = int(info.plan_value("compare.n_bootstrap", 1000))
    for label in strategies or info.strategies:
        if all(run.is_done(label, f) for f in range(k)):
            write_strategy_summary(
                run, label, info.classes, k, n_bootstrap=n_bootstrap, seed=info.seed
            )
        else:
            logger.warning("%s: not every fold finished; no summary yet", label)
    return write_summary_md(run, info)


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #


def _run_jobs(executor: Executor, storage: RunStorage, setup: RunSetup) -> list[tuple[str, str]]:
    """Every unfinished job through the executor; each finished one logged and noted in ``run.json``.

    Returns the ``(job name, error)`` of the jobs that failed (an executor
    that stops at the first error raises it instead).
    """
    run, name = setup.run, setup.plan.name
    for job in setup.jobs:
        if job.done:
            logger.info("%s: skipping finished fold", job.name)
    todo = [job for job in setup.jobs if not job.done and not run.is_done(job.strategy, job.fold)]
    fn, leading, kwargs = storage.job(run)
    bar = progress(
        total=len(setup.jobs),
        initial=len(setup.jobs) - len(todo),
        desc=f"extract {name}",
        unit="job",
    )
    failures: list[tuple[str, str]] = []
    try:
        outcomes = executor.map(
            fn,
            todo,
            args=lambda job: (*leading, job.strategy, job.fold),
            kwargs=kwargs,
            key=lambda job: f"biomark-extract-{name}-{job.key}",
        )
        for outcome in outcomes:
            job = outcome.item
            bar.set_postfix_str(job.name, refresh=False)
            if outcome.error is not None:
                failures.append((job.name, f"{type(outcome.error).__name__}: {outcome.error}"))
                logger.error("%s failed (%s): %s", job.name, executor.name, outcome.error)
            else:
                out = outcome.value
                where = out["worker"] if out["worker"] != "local" else ""
                log_finished_job(
                    out["record"], where=where, note=" (already finished)" if out["skipped"] else ""
                )
                record_finished_job(run, out["record"], worker=out["worker"], host=out["host"])
            bar.update(1)
    finally:
        bar.close()
    return failures


def run_extract(
    plan: Plan,
    *,
    data_dir: str | None = None,
    out_dir: str | None = None,
    force: bool = False,
    strategies: list[str] | None = None,
    executor: Executor | None = None,
) -> Path:
    """Run every (strategy, fold) job of a plan and summarise; resumable.

    Parameters
    ----------
    plan : Plan
        The analysis plan (``analyses/*.yaml``).
    data_dir : str, optional
        Overrides ``plan.data.dir``: a folder or an fsspec URL.
    out_dir : str, optional
        Overrides ``plan.output_dir``: a folder or an fsspec URL under which
        the run folder ``<out_dir>/<plan.name>`` goes.
    force : bool, default False
        Redo finished folds of the selected strategies (cleared before any job).
    strategies : list of str, optional
        A subset of the plan's strategies.
    executor : Executor, optional
        Where the jobs run (default: :class:`~biomark.pipelines.executor.SerialExecutor`,
        in this process). With a Dask executor, local folders must be seen by
        every worker at the same path.

    Returns
    -------
    Path
        The run folder ``<output_dir>/<plan.name>`` (for a URL, this machine's
        complete local copy, for ``biomark compare`` and ``biomark report``).

    Raises
    ------
    ConfigError, DataError, WeightsError
        Invalid inputs, found before any training.
    ClusterError
        Scheduler unreachable (nothing written), a worker (or this process)
        that cannot see the folders or lacks a package (before any job), or a
        job that could not import a package (remaining jobs cancelled).
    RunError
        The run folder belongs to another dataset or settings, or jobs failed
        (finished folds are kept; re-running resumes).
    """
    executor = executor if executor is not None else SerialExecutor()
    plan = apply_overrides(plan, {"data.dir": data_dir, "output_dir": out_dir})
    storage = run_storage(plan, executor)
    t0 = time.perf_counter()
    with executor.opened():  # an unreachable scheduler fails here, before anything is written
        storage.fetch()
        setup = prepare_run(storage.plan, force=force, strategies=strategies)
        run = setup.run
        cleared = [(job.strategy, job.fold) for job in setup.jobs if force]
        for strategy, fold in cleared:
            run.clear_fold(strategy, fold, keep_checkpoint=False)
        storage.begin(run, cleared)
        executor.preflight(
            storage.shared_dir(run),
            read_paths=storage.read_paths(setup.dataset_dir),
            packages=extract_packages(),
        )
        todo = [job for job in setup.jobs if not job.done]
        logger.info(
            "run %s: %d jobs (%d finished, %d to do on %s) -> %s",
            setup.plan.name,
            len(setup.jobs),
            len(setup.jobs) - len(todo),
            len(todo),
            executor.name,
            storage.location(run),
        )
        failures = _run_jobs(executor, storage, setup)
        storage.collect(run)
    if failures:
        storage.publish(run)
        lines = "\n".join(f"  {name}: {err}" for name, err in failures)
        raise RunError(
            f"{len(failures)} job(s) of run {setup.plan.name} failed ({executor.name}, {executor.retries} "
            f"retries each); finished folds are kept in {storage.location(run)}, re-run to resume:\n{lines}"
        )
    summary = finish_run(run, list(dict.fromkeys(job.strategy for job in setup.jobs)))
    seconds = time.perf_counter() - t0
    run.update_info(
        lambda info: info.with_timings(
            last_invocation_seconds=round(seconds, 3),
            jobs_seconds=info.jobs_seconds,
            executor=executor.name,
            retries=executor.retries,
        )
    )
    storage.publish(run)
    logger.info(
        "run %s finished in %.0f s: %s (%s)",
        setup.plan.name,
        seconds,
        summary,
        storage.location(run),
    )
    return run.root
