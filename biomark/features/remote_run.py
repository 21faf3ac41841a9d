"""``biomark extract`` and ``biomark radiomics`` with the shared folder at an fsspec URL.

When the run folder (``--out s3://bucket/runs``) or the dataset
(``--data gs://bucket/cxr``) is at a URL rather than a path every machine
mounts, the same file-based jobs run on local copies and the results travel
through :class:`biomark.io.remote.RemoteFolder`:

Extract (:func:`run_extract_remote`)
    The client keeps a local copy of the run folder
    (``<cache>/runs/<url key>/<plan name>``, :func:`run_copy_dir`): it
    downloads what the URL already holds (so a re-submitted run resumes),
    prepares the run there exactly as a local run
    (:func:`~biomark.features.extract.prepare_run`), and uploads the run-level
    files (``run.json``, ``folds.csv``). Each (strategy, fold) job
    (:func:`remote_job`) downloads ``run.json`` and ``folds.csv`` into a
    scratch folder on its worker, reads the dataset from the worker's own
    cached copy (:func:`biomark.data.remote.mirror_dataset`), trains through
    :func:`~biomark.features.distributed.cluster_job`, and uploads the fold
    folder with ``done.json`` last. The client then downloads the finished
    folds, summarises locally and uploads the summaries; its local copy is a
    complete run folder for ``biomark compare`` / ``report``.
Radiomics (:func:`run_radiomics_remote`)
    The client works on its copy of the dataset (with the URL's earlier
    results and per-image cache), workers store each image's result straight
    into the cache at the URL, and the output folder is uploaded at the end.

Guarantees, as with shared paths
    Every upload is atomic per file (:meth:`RemoteFolder.put_file`); a fold
    at the URL counts as finished only once its ``done.json`` is there, and a
    new attempt first removes what an interrupted one left. A job lost with
    its worker is rerun elsewhere by Dask; a re-submitted run skips finished
    folds. Unlike a shared path, the mid-training checkpoint stays on the
    worker's disk, so an interrupted fold restarts from its first epoch.
Without a scheduler
    The same flow runs in this process (``scheduler=None``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from biomark.cluster import guarded_call, preflight
from biomark.config import Plan, StrategySpec
from biomark.data.remote import mirror_dataset
from biomark.features.deep import fold_dir
from biomark.features.distributed import (
    ATTEMPTS_DIR,
    attempt_record,
    client_for,
    cluster_job,
    dask_chunk_runner,
    extract_packages,
    job_lock,
    submit_jobs,
    worker_identity,
)
from biomark.features.extract import finish_run, log_finished_job, prepare_run, record_finished_job
from biomark.features.radiomics_params import RadiomicsParams
from biomark.features.radiomics_run import RadiomicsRun, output_dir, run_radiomics
from biomark.features.run_folder import (
    DONE_FILE,
    FOLDS_FILE,
    METRICS_FILE,
    RUN_FILE,
    TIMINGS_FILE,
    is_done,
    update_run,
)
from biomark.io.remote import RemoteFolder, is_url, local_cache_dir, redact, url_key
from biomark.exceptions import ConfigError, RunError
from biomark.progress import progress

__all__ = ["remote_job", "run_copy_dir", "run_extract_remote", "run_radiomics_remote"]

logger = logging.getLogger(__name__)

_FOLD_FILE = re.compile(r"^[^/]+/fold_\d+/")
_BACKUP = re.compile(r"(^|/)checkpoint\.npz$")


def _in_fold(name: str) -> bool:
    """Whether a run-relative file name lies in a fold folder (jobs own those)."""
    return bool(_FOLD_FILE.match(name))


def _is_backup(name: str) -> bool:
    """A fold's mid-training checkpoint: worker-local scratch, never uploaded."""
    return bool(_BACKUP.search(name))


def run_copy_dir(run_url: str) -> Path:
    """The parent of the client's local copy of the run folder at ``run_url``."""
    return local_cache_dir() / "runs" / url_key(run_url)


def _fold_relative(strategy: str, fold: int) -> str:
    return fold_dir(Path("."), strategy, fold).as_posix()


def remote_job(
    run_url: str, dataset: str, strategy: str, fold: int, *, isolate: bool = True
) -> dict[str, Any]:
    """One (strategy, fold) job whose run folder is at a URL; runs on a worker (or locally).

    Parameters
    ----------
    run_url : str
        The run folder's URL (``run.json`` and ``folds.csv`` uploaded by the client).
    dataset : str
        The dataset: an fsspec URL (copied to this machine's cache) or a path
        this machine sees.
    strategy : str
    fold : int
    isolate : bool, default True
        Train in a fresh process (see :func:`~biomark.features.distributed.cluster_job`).

    Returns
    -------
    dict
        As :func:`~biomark.features.distributed.cluster_job`: ``record``
        (``metrics.json``), ``skipped``, ``worker``, ``host``, ``pid``.
    """
    remote = RemoteFolder(run_url, "run folder")
    label = StrategySpec.parse(strategy).label
    file_name, attempt = attempt_record(label, fold)
    remote.write_text(f"{ATTEMPTS_DIR.as_posix()}/{file_name}", json.dumps(attempt))
    with job_lock(redact(run_url), label, fold):
        return _remote_job_body(remote, dataset, label, fold, isolate)


def _remote_job_body(remote: RemoteFolder, dataset: str, label: str, fold: int, isolate: bool) -> dict[str, Any]:
    relative = _fold_relative(label, fold)
    if remote.exists(f"{relative}/{DONE_FILE}"):  # another worker finished it
        record = json.loads(remote.read_text(f"{relative}/{METRICS_FILE}"))
        if remote.exists(f"{relative}/{TIMINGS_FILE}"):
            record.update(json.loads(remote.read_text(f"{relative}/{TIMINGS_FILE}")))
        return {"record": record, "skipped": True, **worker_identity()}
    with tempfile.TemporaryDirectory(prefix="biomark-job-", dir=_scratch_dir()) as scratch:
        local_run = Path(scratch) / "run"
        for name in (RUN_FILE, FOLDS_FILE):
            remote.get_file(name, local_run / name)
        remote.remove(relative)  # whatever an interrupted attempt uploaded
        out = cluster_job(
            str(local_run), label, fold, isolate=isolate, dataset_dir=dataset, record_attempt=False, lock=False
        )
        remote.put_tree(fold_dir(local_run, label, fold), relative, last=[DONE_FILE], skip=_is_backup)
    return out


def _scratch_dir() -> str | None:
    """The Dask worker's local directory, or the system's temporary folder."""
    try:
        from distributed import get_worker

        return str(get_worker().local_directory)
    except (ImportError, ValueError):
        return None


def _push_run_files(local_run: Path, remote: RemoteFolder) -> None:
    """Upload the run-level files (everything outside fold folders); ``run.json`` last."""
    remote.put_tree(
        local_run, last=[RUN_FILE],
        skip=lambda name: _in_fold(name) or name.startswith(ATTEMPTS_DIR.as_posix()),
    )


def _reconcile_cleared_folds(local_run: Path, remote: RemoteFolder, strategies: list[str], k: int) -> None:
    """Remove at the URL the finished folds that ``prepare_run`` cleared locally (``--force``)."""
    for label in strategies:
        for fold in range(k):
            relative = _fold_relative(label, fold)
            if not is_done(local_run, label, fold) and remote.exists(f"{relative}/{DONE_FILE}"):
                logger.info("%s: cleared at %s too", relative, redact(remote.url))
                remote.remove(relative)


def run_extract_remote(
    plan: Plan,
    scheduler: Any = None,
    *,
    data_dir: str | None = None,
    out_dir: str | None = None,
    force: bool = False,
    strategies: list[str] | None = None,
    retries: int = 2,
    timeout: float = 10.0,
    isolate: bool = True,
) -> Path:
    """Run every (strategy, fold) job of a plan with the run folder at an fsspec URL.

    Parameters
    ----------
    plan : Plan
    scheduler : str, SchedulerSpec, distributed.Client or None
        Where the jobs run (see
        :func:`~biomark.features.distributed.run_extract_distributed`); None:
        one after the other in this process.
    data_dir : str, optional
        Overrides ``plan.data.dir``: a URL, or a path every worker sees.
    out_dir : str, optional
        Overrides ``plan.output_dir``: the URL under which the run folder
        ``<out_dir>/<plan.name>`` goes.
    force, strategies
        As :func:`~biomark.features.extract.run_extract`.
    retries : int, default 2
        Extra attempts of a job that raised.
    timeout : float, default 10
        Seconds to wait for the scheduler.
    isolate : bool, default True
        On a cluster, each job in a fresh process on its worker.

    Returns
    -------
    Path
        The client's local copy of the run folder: complete, for
        ``biomark compare`` and ``biomark report``.

    Raises
    ------
    ConfigError
        The output location is not a URL, or its file system cannot be opened.
    ClusterError, RunError, DataError, WeightsError
        As the local and cluster runs.
    """
    out_url = str(out_dir or plan.output_dir)
    if not is_url(out_url):
        raise ConfigError(f"output folder {out_url!r} is not a URL; use run_extract or run_extract_distributed")
    run_url = f"{out_url.rstrip('/')}/{plan.name}"
    remote = RemoteFolder(run_url, "output folder")
    parent = run_copy_dir(run_url)
    local_run = parent / plan.name
    fetched = remote.get_tree("", local_run, skip=_is_backup)
    logger.info("run folder %s: local copy %s (%d file(s) downloaded)", redact(run_url), local_run, fetched)
    t0 = time.perf_counter()
    setup = prepare_run(plan, data_dir=data_dir, out_dir=str(parent), force=force, strategies=strategies)
    selected = list(dict.fromkeys(job.strategy for job in setup.jobs))
    todo = [job for job in setup.jobs if not job.done]
    if force:
        for job in todo:
            shutil.rmtree(fold_dir(local_run, job.strategy, job.fold), ignore_errors=True)
    _reconcile_cleared_folds(local_run, remote, selected, setup.plan.cv.k)
    dataset = str(setup.plan.data.dir) if is_url(setup.plan.data.dir) else str(Path(setup.dataset_dir).resolve())
    update_run(local_run, lambda info: info.update(url=redact(run_url)))
    _push_run_files(local_run, remote)
    logger.info(
        "run %s: %d jobs (%d finished, %d to do) -> %s",
        setup.plan.name, len(setup.jobs), len(setup.jobs) - len(todo), len(todo), redact(run_url),
    )
    if scheduler is None:
        failures = _run_here(local_run, remote, setup.plan.name, todo, len(setup.jobs), dataset)
    else:
        with client_for(scheduler, timeout) as client:
            preflight(
                client, run_url,
                read_paths=[f"{dataset.rstrip('/')}/manifest.csv"],
                packages=extract_packages(),
            )

            def submit(job: Any, key: str) -> Any:
                return client.submit(
                    remote_job, run_url, dataset, job.strategy, job.fold, isolate=isolate,
                    key=key, retries=retries, pure=False,
                )

            failures = submit_jobs(client, local_run, setup.plan.name, todo, len(setup.jobs), submit)
    fetched = remote.get_tree("", local_run, skip=lambda name: not _in_fold(name) or _is_backup(name))
    logger.info("downloaded %d file(s) of finished folds into %s", fetched, local_run)
    if failures:
        lines = "\n".join(f"  {name}: {err}" for name, err in failures)
        _push_run_files(local_run, remote)
        raise RunError(
            f"{len(failures)} job(s) of run {setup.plan.name} failed after {retries} retries; finished "
            f"folds are kept at {redact(run_url)}, re-run to resume:\n{lines}"
        )
    summary = finish_run(local_run, selected)
    seconds = time.perf_counter() - t0
    update_run(local_run, lambda info: info.setdefault("timings", {}).update(last_invocation_seconds=round(seconds, 3)))
    _push_run_files(local_run, remote)
    logger.info("run %s finished in %.0f s: %s (uploaded to %s)", setup.plan.name, seconds, summary, redact(run_url))
    return local_run


def _run_here(
    local_run: Path, remote: RemoteFolder, name: str, todo: list[Any], n_jobs: int, dataset: str
) -> list[tuple[str, str]]:
    """The jobs in this process, one after the other (no scheduler)."""
    bar = progress(total=n_jobs, initial=n_jobs - len(todo), desc=f"extract {name}", unit="job")
    try:
        for job in todo:
            bar.set_postfix_str(job.name, refresh=True)
            out = guarded_call(remote_job, remote.url, dataset, job.strategy, job.fold, isolate=False)
            log_finished_job(out["record"], note=" (already finished)" if out["skipped"] else "")
            record_finished_job(local_run, out["record"])
            bar.update(1)
    finally:
        bar.close()
    return []


def run_radiomics_remote(
    data_url: str,
    params: RadiomicsParams,
    scheduler: Any = None,
    *,
    region: str = "lung",
    jobs: int = -1,
    controls: bool = True,
    seed: int = 0,
    retries: int = 2,
    timeout: float = 10.0,
) -> RadiomicsRun:
    """:func:`~biomark.features.radiomics_run.run_radiomics` for a dataset at an fsspec URL.

    Parameters
    ----------
    data_url : str
        The dataset folder's URL.
    params : RadiomicsParams
    scheduler : str, SchedulerSpec, distributed.Client or None
        None: extract in local processes (``jobs``).
    region, jobs, controls, seed
        As :func:`~biomark.features.radiomics_run.run_radiomics`.
    retries : int, default 2
    timeout : float, default 10

    Returns
    -------
    RadiomicsRun
        Its ``out`` is the local copy of the output folder, which is also
        uploaded to ``<data_url>/radiomics/<params>_<region>/``.
    """
    remote = RemoteFolder(data_url, "dataset folder")
    local = mirror_dataset(data_url)
    out_local = output_dir(local, params, region)
    relative = out_local.relative_to(local).as_posix()
    fetched = remote.get_tree(relative, out_local)
    logger.info("radiomics results at %s: %d file(s) downloaded to %s", redact(data_url), fetched, out_local)
    if scheduler is None:
        result = run_radiomics(local, params, region=region, jobs=jobs, controls=controls, seed=seed)  # type: ignore[arg-type]
    else:
        with client_for(scheduler, timeout) as client:
            preflight(client, f"{remote.url}/{relative}", packages=["biomark", "radiomics", "SimpleITK"])
            threads = sum(client.nthreads().values()) or 1
            runner = dask_chunk_runner(client, retries=retries, cache_url=f"{remote.url}/{relative}/cache")
            result = run_radiomics(
                local, params, region=region, jobs=threads, controls=controls, seed=seed,  # type: ignore[arg-type]
                runner=runner,
            )
    remote.put_tree(out_local, relative, skip=lambda name: name.startswith("cache/"))
    remote.put_tree(out_local / "cache", f"{relative}/cache", only_changed=True)
    logger.info("radiomics results uploaded to %s/%s", redact(data_url), relative)
    return result
