"""``biomark extract`` and ``biomark radiomics`` on a Dask cluster.

The work is the same pure, file-based functions the single-process commands
run; this module only hands them to a cluster (:mod:`biomark.cluster`):

* :func:`run_extract_distributed` prepares the run locally
  (:func:`~biomark.features.extract.prepare_run`: dataset checks, ``run.json``,
  ``folds.csv``), checks every worker (:func:`~biomark.cluster.preflight`),
  submits every unfinished (strategy, fold) job
  (:func:`~biomark.features.extract.run_job`) with ``retries``, logs each job
  as it finishes, then summarises locally
  (:func:`~biomark.features.extract.finish_run`).
* :func:`run_radiomics_distributed` runs
  :func:`~biomark.features.radiomics_run.run_radiomics` with a
  :func:`dask_chunk_runner`: image batches are extracted on the workers, which
  read the images from the shared dataset cache and the masks from the shared
  ``masks.npy`` by row (only computed arrays, such as the shuffled control's
  pixels, travel with a batch) and write each image's result into the shared
  per-image cache; the table, the controls and the output folder are
  assembled locally exactly as in a single-process run.

Why nothing finished is lost or duplicated
    Every file a job writes is written atomically (temporary file +
    ``os.replace``) and a fold's ``done.json`` is written last; a fold without
    ``done.json`` is cleared and redone by whoever runs it next, resuming
    exactly from its last epoch's checkpoint (:mod:`biomark.train.checkpoint`;
    an unreadable one makes the fold start over). A job is skipped at
    submission when its fold is done and again when it starts on a worker
    (another worker may have finished it). A worker lost mid-job makes the
    scheduler run the job elsewhere (Dask reschedules tasks of lost workers;
    ``retries`` covers jobs that raise). Only the client writes ``run.json``.

Each attempt leaves a small record ``<run>/.cluster/attempts/<job>-<pid>-<n>.json``
(worker, host, pid, start time), so which worker ran (or lost) which job is
on disk; the finished job's worker is also noted in ``run.json``'s ``jobs``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from biomark.cluster import (
    ClusterError,
    SchedulerSpec,
    check_shared_path,
    guarded_call,
    import_distributed,
    open_cluster,
    preflight,
)
from biomark.config import Plan, StrategySpec
from biomark.exceptions import RunError
from biomark.features.deep import fold_dir
from biomark.features.extract import finish_run, log_finished_job, prepare_run, record_finished_job, run_job
from biomark.features.radiomics import ChunkItem, ChunkRunner, extract_chunk_into_cache
from biomark.features.radiomics_params import RadiomicsParams
from biomark.features.radiomics_run import RadiomicsRun, output_dir, run_radiomics
from biomark.features.run_folder import is_done, read_fold_record, update_run
from biomark.io.atomic import write_json_atomic
from biomark.io.remote import is_url
from biomark.progress import progress

__all__ = [
    "ATTEMPTS_DIR",
    "cluster_job",
    "dask_chunk_runner",
    "extract_packages",
    "job_lock",
    "run_extract_distributed",
    "run_radiomics_distributed",
]

logger = logging.getLogger(__name__)

#: Per-attempt records of cluster jobs, relative to the run folder.
ATTEMPTS_DIR = Path(".cluster") / "attempts"

Scheduler = Any  # str ("tcp://HOST:PORT", "local:N"), SchedulerSpec, or a distributed.Client


def extract_packages() -> list[str]:
    """What an extract job imports on a worker: biomark, Keras and its backend."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow").strip() or "tensorflow"
    return ["biomark", "keras", backend, "pandas", "pyarrow"]


class client_for:
    """``with client_for(scheduler) as client``: reuse a Client, or open one."""

    def __init__(self, scheduler: Scheduler, timeout: float) -> None:
        self.scheduler, self.timeout, self._cm = scheduler, timeout, None

    def __enter__(self) -> Any:
        if isinstance(self.scheduler, (str, SchedulerSpec)):
            self._cm = open_cluster(self.scheduler, timeout=self.timeout)
            return self._cm.__enter__()
        import_distributed()
        return self.scheduler

    def __exit__(self, *exc: Any) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


# --------------------------------------------------------------------------- #
# Extract
# --------------------------------------------------------------------------- #


def cluster_job(
    run_dir: str,
    strategy: str,
    fold: int,
    *,
    isolate: bool = True,
    dataset_dir: str | None = None,
    record_attempt: bool = True,
    lock: bool = True,
) -> dict[str, Any]:
    """One (strategy, fold) job as run on a worker.

    Records the attempt, takes the job's cluster-wide lock (:func:`job_lock`),
    skips a fold another worker finished, runs
    :func:`~biomark.features.extract.run_job` (a missing package becomes a
    :class:`~biomark.cluster.ClusterError` naming it) and returns its
    ``metrics.json`` content with where it ran.

    Parameters
    ----------
    run_dir : str
        Absolute path of a prepared run folder, visible to the worker.
    strategy : str
    fold : int
    isolate : bool, default True
        Train in a fresh child process (see :func:`_run_isolated`): results
        equal a single-process run's. False trains in the worker's thread
        (no ~5 s TensorFlow start per job, but initial weights vary).

    Returns
    -------
    dict
        ``record`` (``metrics.json``), ``skipped`` (bool), ``worker``,
        ``host``, ``pid``.
    """
    label = StrategySpec.parse(strategy)
    if record_attempt:
        file_name, attempt = attempt_record(label.label, fold)
        write_json_atomic(Path(run_dir) / ATTEMPTS_DIR / file_name, attempt)
    if not lock:
        return _cluster_job_body(run_dir, label.label, fold, isolate, dataset_dir)
    with job_lock(str(Path(run_dir).resolve()), label.label, fold):
        return _cluster_job_body(run_dir, label.label, fold, isolate, dataset_dir)


def _cluster_job_body(
    run_dir: str, label: str, fold: int, isolate: bool, dataset_dir: str | None
) -> dict[str, Any]:
    import json

    where = worker_identity()
    if is_done(run_dir, label, fold):
        return {"record": read_fold_record(fold_dir(run_dir, label, fold)), "skipped": True, **where}
    if dataset_dir is not None and is_url(dataset_dir):
        from biomark.data.remote import mirror_dataset

        dataset_dir = str(mirror_dataset(dataset_dir))  # this worker's own cached copy
    if isolate:
        record = _run_isolated(run_dir, label, fold, dataset_dir)
    else:
        record = guarded_call(run_job, run_dir, label, fold, dataset_dir=dataset_dir)
    return {"record": record, "skipped": False, **where}


@contextlib.contextmanager
def job_lock(run: str, strategy: str, fold: int) -> Iterator[None]:
    """Hold the cluster-wide lock of one (run, strategy, fold) job for the block.

    On a Dask worker this is a :class:`distributed.Lock` named after the job,
    kept by the scheduler, so the same fold never trains twice at once: not
    when two clients submit the same run, nor when a job is resubmitted while
    its first attempt still runs. The scheduler's lease on it lapses when the
    holder's worker is lost, so a dead worker never blocks the job. Outside a
    worker (a serial run) there is nothing to share and no lock.

    Parameters
    ----------
    run : str
        The run folder's absolute path or URL (without credentials).
    strategy : str
    fold : int
    """
    try:
        from distributed import Lock, get_worker

        get_worker()
    except (ImportError, ValueError):
        yield
        return
    import hashlib

    digest = hashlib.sha256(run.rstrip("/").encode("utf-8")).hexdigest()[:16]
    name = f"biomark-job-{digest}-{StrategySpec.parse(strategy).dirname}-fold{fold:02d}"
    with Lock(name):
        yield


def worker_identity() -> dict[str, Any]:
    """Where this code runs: ``worker`` (Dask address or ``"local"``), ``host``, ``pid``."""
    return {"worker": _worker_address(), "host": socket.gethostname(), "pid": os.getpid()}


def attempt_record(strategy: str, fold: int) -> tuple[str, dict[str, Any]]:
    """File name and content of the record of one attempt at a job (see the module notes)."""
    name = f"{StrategySpec.parse(strategy).dirname}_fold_{fold:02d}"
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    record = {"job": name, "strategy": StrategySpec.parse(strategy).label, "fold": fold, "started": started,
              **worker_identity()}
    return f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json", record


def _run_isolated(run_dir: str, strategy: str, fold: int, dataset_dir: str | None = None) -> dict[str, Any]:
    """``run_job`` in a fresh child process that dies with this worker.

    A Dask worker's own threads (heartbeats, the event loop) draw from
    Python's global :mod:`random` state, which Keras uses for every
    initializer without an explicit seed after ``keras.utils.set_random_seed``;
    a job trained in a worker thread therefore gets other initial weights on
    every run. A fresh process per job has no such neighbours (and returns
    TensorFlow's memory when it ends), so the job trains exactly as in a
    single-process run. The child (a plain subprocess: Dask's worker processes
    are daemonic and may not use :mod:`multiprocessing`) is killed with the
    worker (``PR_SET_PDEATHSIG`` on Linux, a parent watch elsewhere), so a lost
    worker leaves no orphan writing into the fold while the job is retried.
    """
    import json
    import subprocess
    import sys
    import tempfile

    fd, result_name = tempfile.mkstemp(prefix="biomark-job-", suffix=".json")
    os.close(fd)
    result = Path(result_name)
    code = "from biomark.features.distributed import _child_main; _child_main()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, run_dir, strategy, str(fold), str(os.getpid()), str(result),
             dataset_dir or ""],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
        )
        answer = json.loads(result.read_text(encoding="utf-8") or "{}")
    finally:
        result.unlink(missing_ok=True)
    if proc.returncode == 0 and "record" in answer:
        return answer["record"]
    if answer.get("cluster"):
        raise ClusterError(answer["message"])
    if answer.get("message"):
        raise RunError(answer["message"])
    tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
    raise RunError(
        f"{strategy} fold {fold}: the job's process ended with status {proc.returncode} "
        f"(killed, out of memory?): {' | '.join(tail) or 'no output'}; finished folds are kept, re-run to resume"
    )


def _child_main() -> None:
    """Entry point of a job process (:func:`_run_isolated`)."""
    import json
    import sys

    run_dir, strategy, fold, parent, result, dataset_dir = sys.argv[1:7]
    _die_with_parent(int(parent))
    try:
        answer: dict[str, Any] = {
            "record": guarded_call(run_job, run_dir, strategy, int(fold), dataset_dir=dataset_dir or None)
        }
        status = 0
    except ClusterError as err:
        answer, status = {"message": str(err), "cluster": True}, 3
    except Exception as err:  # noqa: BLE001 - reported to the worker with its type
        answer, status = {"message": f"{type(err).__name__}: {err}"}, 2
    Path(result).write_text(json.dumps(answer), encoding="utf-8")
    sys.exit(status)


def _die_with_parent(parent: int) -> None:
    """Make this process exit when the worker process ``parent`` is gone."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="biomark-parent-watch", daemon=True).start()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def run_extract_distributed(
    plan: Plan,
    scheduler: Scheduler,
    *,
    data_dir: str | None = None,
    out_dir: str | None = None,
    force: bool = False,
    strategies: list[str] | None = None,
    retries: int = 2,
    timeout: float = 10.0,
    isolate: bool = True,
) -> Path:
    """Run every (strategy, fold) job of a plan on a Dask cluster; resumable.

    Same result folder as :func:`biomark.features.extract.run_extract`; only
    where the jobs run differs.

    Parameters
    ----------
    plan : Plan
    scheduler : str, SchedulerSpec or distributed.Client
        ``tcp://HOST:PORT``, ``local:N`` (see :func:`biomark.cluster.parse_scheduler`),
        or a connected client (left open).
    data_dir, out_dir : str, optional
        Override ``plan.data.dir`` / ``plan.output_dir``. The output folder
        must be a local or shared POSIX path that every worker sees at the
        same path (for a URL use
        :func:`biomark.features.remote_run.run_extract_remote`); the dataset
        may also be an fsspec URL, which the client and each worker copy to
        their own disk.
    force : bool, default False
        Redo finished folds of the selected strategies (cleared here, once,
        before submission).
    strategies : list of str, optional
        A subset of the plan's strategies.
    retries : int, default 2
        Extra attempts of a job that raised (a job on a lost worker is
        rescheduled by Dask regardless).
    timeout : float, default 10
        Seconds to wait for the scheduler.
    isolate : bool, default True
        Each job in a fresh process on its worker (:func:`cluster_job`).

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    ClusterError
        Scheduler unreachable (nothing written), a worker that cannot see the
        run or dataset folder or lacks a package (before any job), or a job
        that could not import a package (remaining jobs are cancelled).
    ConfigError, DataError, WeightsError
        Invalid inputs (from :func:`~biomark.features.extract.prepare_run`).
    RunError
        Jobs that failed after their retries (finished folds are kept;
        re-running resumes).
    """
    if out_dir is not None:
        out_dir = str(check_shared_path(out_dir, "output folder"))
    if data_dir is not None and not is_url(data_dir):
        data_dir = str(check_shared_path(data_dir, "dataset folder"))
    t0 = time.perf_counter()
    with client_for(scheduler, timeout) as client:
        check_shared_path(out_dir or plan.output_dir, "output folder")
        setup = prepare_run(plan, data_dir=data_dir, out_dir=out_dir, force=force, strategies=strategies)
        run_dir = check_shared_path(setup.run_dir, "run folder")
        if is_url(setup.plan.data.dir):  # each worker copies it to its own disk
            data_url = str(setup.plan.data.dir)
            read_paths: list[Any] = [f"{data_url.rstrip('/')}/manifest.csv"]
        else:
            data_url = None
            dataset_dir = check_shared_path(setup.dataset_dir, "dataset folder")
            read_paths = [dataset_dir / "manifest.csv", dataset_dir / "cache" / "images.npy"]
        preflight(client, run_dir, read_paths=read_paths, packages=extract_packages())
        todo = [job for job in setup.jobs if not job.done]
        if force:
            for job in todo:
                shutil.rmtree(fold_dir(run_dir, job.strategy, job.fold), ignore_errors=True)
        logger.info(
            "run %s: %d jobs (%d finished, %d submitted to %s) -> %s",
            setup.plan.name, len(setup.jobs), len(setup.jobs) - len(todo), len(todo),
            client.scheduler.address, run_dir,
        )
        failures = _run_jobs(
            client, run_dir, setup.plan.name, todo, len(setup.jobs), retries, isolate, data_url
        )
    if failures:
        lines = "\n".join(f"  {name}: {err}" for name, err in failures)
        raise RunError(
            f"{len(failures)} job(s) of run {setup.plan.name} failed on the cluster after {retries} "
            f"retries; finished folds are kept in {run_dir}, re-run to resume:\n{lines}"
        )
    selected = list(dict.fromkeys(job.strategy for job in setup.jobs))
    summary = finish_run(run_dir, selected)
    seconds = time.perf_counter() - t0

    def timing(info: dict[str, Any]) -> None:
        info.setdefault("timings", {})["last_invocation_seconds"] = round(seconds, 3)
        info["timings"]["jobs_seconds"] = round(sum(j.get("seconds", 0.0) for j in info.get("jobs", {}).values()), 3)
        info["timings"]["last_invocation_scheduler"] = str(scheduler) if isinstance(scheduler, (str, SchedulerSpec)) else "client"

    update_run(run_dir, timing)
    logger.info("run %s finished on the cluster in %.0f s: %s", setup.plan.name, seconds, summary)
    return run_dir


def _run_jobs(
    client: Any, run_dir: Path, name: str, todo: list[Any], n_jobs: int, retries: int, isolate: bool,
    data_url: str | None = None,
) -> list[tuple[str, str]]:
    """Submit ``todo`` (:func:`cluster_job` each), note finished jobs in ``run.json``; return failures."""
    def submit(job: Any, key: str) -> Any:
        return client.submit(
            cluster_job, str(run_dir), job.strategy, job.fold, isolate=isolate, dataset_dir=data_url,
            key=key, retries=retries, pure=False,
        )

    pending = [job for job in todo if not is_done(run_dir, job.strategy, job.fold)]  # another client may have
    return submit_jobs(client, run_dir, name, pending, n_jobs, submit)


def submit_jobs(
    client: Any, run_dir: Path, name: str, todo: list[Any], n_jobs: int, submit: Callable[[Any, str], Any]
) -> list[tuple[str, str]]:
    """Submit each job of ``todo`` with ``submit(job, key)``; log and record each as it finishes.

    A job's result is :func:`cluster_job`'s dict. Each finished job is noted in
    ``run_dir``'s ``run.json`` (by this client only). A
    :class:`~biomark.cluster.ClusterError` (a worker without a package) cancels
    the rest and is raised; any other job error is collected.

    Returns
    -------
    list of (str, str)
        ``(job name, error)`` of the jobs that failed.
    """
    distributed = import_distributed()
    token = uuid.uuid4().hex[:8]
    futures = {}
    for job in todo:
        key = f"biomark-extract-{name}-{StrategySpec.parse(job.strategy).dirname}-fold{job.fold:02d}-{token}"
        futures[submit(job, key)] = job
    bar = progress(total=n_jobs, initial=n_jobs - len(futures), desc=f"extract {name}", unit="job")
    failures: list[tuple[str, str]] = []
    try:
        for future in distributed.as_completed(list(futures), loop=client.loop):
            job = futures[future]
            try:
                out = future.result()
            except ClusterError:
                client.cancel(list(futures))
                raise
            except Exception as err:  # noqa: BLE001 - any job error is reported together, finished jobs kept
                failures.append((job.name, f"{type(err).__name__}: {err}"))
                logger.error("%s failed on the cluster: %s", job.name, err)
                bar.update(1)
                continue
            record = out["record"]
            log_finished_job(record, where=out["worker"], note=" (already finished)" if out["skipped"] else "")
            record_finished_job(run_dir, record, worker=out["worker"], host=out["host"])
            bar.set_postfix_str(job.name, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return failures


# --------------------------------------------------------------------------- #
# Radiomics
# --------------------------------------------------------------------------- #


def dask_chunk_runner(
    client: Any, *, retries: int = 2, max_in_flight: int | None = None, cache_url: str | None = None
) -> ChunkRunner:
    """A :data:`~biomark.features.radiomics.ChunkRunner` that runs batches on a Dask cluster.

    Each batch becomes one task, :func:`~biomark.features.radiomics.extract_chunk_into_cache`,
    which stores its images' results in the (shared) cache before returning
    them. At most ``max_in_flight`` batches are submitted at a time, so the
    images of a large dataset are not all shipped to the scheduler at once.

    Parameters
    ----------
    client : distributed.Client
    retries : int, default 2
    max_in_flight : int, optional
        Default: four per worker thread, at least 4.
    cache_url : str, optional
        Where the workers store results when the client's cache folder is a
        local copy of a dataset at a URL (:mod:`biomark.features.remote_run`):
        the cache folder at that URL.

    Returns
    -------
    ChunkRunner
    """

    def run(content: dict[str, Any], cache_dir: str, batches: Iterable[list[ChunkItem]]) -> Iterator[list[Any]]:
        distributed = import_distributed()
        threads = sum(client.nthreads().values()) or 1
        limit = max_in_flight or max(4, 4 * threads)
        token = uuid.uuid4().hex[:8]
        source = iter(batches)
        count = 0

        def submit(batch: list[ChunkItem]) -> Any:
            nonlocal count
            count += 1
            return client.submit(
                guarded_call, extract_chunk_into_cache, content, cache_url or cache_dir, batch,
                key=f"biomark-radiomics-{token}-{count:06d}", retries=retries, pure=False,
            )

        pending = {submit(b) for _, b in zip(range(limit), source)}
        queue = distributed.as_completed(list(pending), loop=client.loop)
        try:
            for future in queue:
                pending.discard(future)
                done = future.result()
                future.release()
                following = next(source, None)
                if following is not None:
                    new = submit(following)
                    pending.add(new)
                    queue.add(new)
                yield done
        finally:
            if pending:
                client.cancel(list(pending))

    return run


def run_radiomics_distributed(
    data_dir: str | os.PathLike[str],
    params: RadiomicsParams,
    scheduler: Scheduler,
    *,
    region: str = "lung",
    controls: bool = False,
    seed: int = 0,
    retries: int = 2,
    timeout: float = 10.0,
) -> RadiomicsRun:
    """:func:`~biomark.features.radiomics_run.run_radiomics` with image batches on a Dask cluster.

    Masks, controls and the output folder are made here; the pyradiomics
    extraction of every image (the expensive part) runs on the workers, which
    write the per-image cache under ``DATA_DIR/radiomics/<params>_<region>/cache``
    (images already cached are not submitted). Batches name rows of the
    dataset's image cache and of ``masks.npy`` rather than carry pixels, so
    the scheduler moves kilobytes per batch even for NIH-sized datasets. The
    result is identical to a single-process run's.

    Parameters
    ----------
    data_dir : path
        Dataset folder, visible to every worker at the same path.
    params : RadiomicsParams
    scheduler : str, SchedulerSpec or distributed.Client
    region, controls, seed
        As :func:`~biomark.features.radiomics_run.run_radiomics`.
    retries : int, default 2
    timeout : float, default 10

    Returns
    -------
    RadiomicsRun

    Raises
    ------
    ClusterError
        Scheduler unreachable, a worker that cannot write the output folder or
        lacks pyradiomics/SimpleITK (before any batch), or a batch that could
        not import a package.
    DataError
        The dataset cannot be opened.
    """
    data = check_shared_path(data_dir, "dataset folder")
    with client_for(scheduler, timeout) as client:
        out = output_dir(data, params, region)
        out.mkdir(parents=True, exist_ok=True)
        preflight(
            client, out, read_paths=[data / "cache" / "images.npy"], packages=["biomark", "radiomics", "SimpleITK"]
        )
        threads = sum(client.nthreads().values()) or 1
        return run_radiomics(
            data, params, region=region, jobs=threads, controls=controls, seed=seed,  # type: ignore[arg-type]
            runner=dask_chunk_runner(client, retries=retries), by_reference=True,
        )

