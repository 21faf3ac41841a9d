"""``biomark extract``: train every strategy under cross-validation and dump features.

Two levels, both driven only by files:

* a **job** is one (strategy, fold)
  (:func:`~biomark.pipelines.extract_job.run_job`): it reads ``run.json``, the
  dataset and ``folds.csv``, trains the fold's model, predicts, and writes
  everything into ``<run>/<strategy>/fold_XX/``, ``done.json`` last. Jobs
  share no in-memory state, so they run in any order, here or on a cluster.
* a **run** (:func:`run_extract`) resolves and checks the dataset *before
  any training* (:func:`~biomark.pipelines.extract_setup.prepare_run`),
  creates the run folder with ``run.json`` and ``folds.csv`` (computed once,
  reused by every strategy), hands the jobs that are not finished to an
  :class:`~biomark.pipelines.executor.Executor` (in this process, or on a
  Dask cluster), then writes per-strategy summaries and ``summary.md``
  (:func:`finish_run`). The run folder may be a path or an fsspec URL
  (:mod:`biomark.pipelines.url_storage`); the flow is the same.

Resuming: a fold with ``done.json`` is skipped; a fold without it is redone,
continuing from its last finished epoch's checkpoint. A crash loses at most
the folds in progress. ``force=True`` clears the selected folds and redoes them
(refused while another process on this machine trains a fold of the run).
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

import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from biomark.config import (
    DEFAULT_POSITIVE_CLASS,
    Plan,
    apply_overrides,
)
from biomark.exceptions import RunError
from biomark.features.run_folder import RunFolder
from biomark.features.run_info import JobRecord, RunInfo, now_utc
from biomark.features.run_summary import write_strategy_summary, write_summary_md
from biomark.pipelines.attempt import no_local_job_running
from biomark.pipelines.executor import Executor, SerialExecutor
from biomark.pipelines.extract_setup import (
    RESUME_KEYS,
    RunSetup,
    plan_run,
    prepare_run,
    validate_inputs,
)
from biomark.pipelines.job_process import replay_job_log
from biomark.pipelines.url_storage import RunStorage, run_storage
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


def extract_packages() -> list[str]:
    """What an extract job imports where it runs: biomark, Keras and its backend."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow").strip() or "tensorflow"
    return ["biomark", "keras", backend, "pandas", "pyarrow"]


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

    The fold is named by its id, as in the run folder (``fold_00``), every
    other log line and the report, with its place among the run's folds.

    ``where`` names the worker that ran it (cluster runs); ``note`` is appended.
    """
    m = record["metrics"]
    logger.info(
        "%s fold %d (%d of %d)%s: %d-class acc %s | %s vs rest acc %s | sens %s | spec %s (%d "
        "epochs, %.0f s)%s",
        record["strategy"],
        record["fold"],
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
    """Add a finished job's entry (time, seconds, epochs, accuracy, where it ran) to
    ``run.json``."""
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
    """Every unfinished job through the executor; each finished one logged and noted in
    ``run.json``.

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
    replayed: set[tuple[str, int, str]] = set()
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
                replay_job_log(out.get("log", []), replayed)  # what the job's own process logged
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
        The run folder belongs to another dataset or settings, jobs failed
        (finished folds are kept; re-running resumes), or, with ``force``,
        another process on this machine is training a fold of the run
        (nothing is cleared).
    """
    executor = executor if executor is not None else SerialExecutor()
    plan = apply_overrides(plan, {"data.dir": data_dir, "output_dir": out_dir})
    storage = run_storage(plan, executor)
    t0 = time.perf_counter()
    with executor.opened():  # an unreachable scheduler fails here, before anything is written
        storage.fetch()
        local_root = Path(storage.plan.output_dir).expanduser() / storage.plan.name
        guard = no_local_job_running(local_root) if force else contextlib.nullcontext()
        with guard:  # --force clears nothing another process is training
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
            f"{len(failures)} job(s) of run {setup.plan.name} failed ({executor.name}, "
            f"{executor.retries} retries each); finished folds are kept in "
            f"{storage.location(run)}, re-run to resume:\n{lines}"
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
