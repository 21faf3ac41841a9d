"""One attempt at an extract job, the same on every executor: recorded, locked, skipped when done.

:func:`attempt_job` is what an executor runs for each (strategy, fold): it
writes an attempt record ``<run>/.cluster/attempts/<job>-<pid>-<n>.json``
(worker, host, pid, start time), takes the job's lock (:func:`job_lock`: a
scheduler-held :class:`distributed.Lock` on a Dask worker, a file lock in a
single process), returns the saved record of a fold another attempt finished,
and otherwise runs :func:`~biomark.pipelines.extract_job.run_job`, in this
process or in the worker's job process for the run
(:func:`biomark.pipelines.job_process.run_isolated`).

Why nothing finished is lost or duplicated
    Every file a job writes is written atomically (temporary file +
    ``os.replace``) and a fold's ``done.json`` is written last; a fold without
    ``done.json`` is cleared and redone by whoever runs it next, resuming
    exactly from its last epoch's checkpoint (:mod:`biomark.train.checkpoint`;
    an unreadable one makes the fold start over). A job is skipped at
    submission when its fold is done and again when it starts (another worker
    may have finished it). A worker lost mid-job makes the scheduler run the
    job elsewhere (Dask reschedules tasks of lost workers; ``retries`` covers
    jobs that raise). Only the client writes ``run.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biomark.config import StrategySpec
from biomark.exceptions import RunError
from biomark.features.run_folder import ATTEMPTS_DIR, LOCKS_DIR, RunFolder
from biomark.io.atomic import write_json_atomic
from biomark.io.remote import is_url
from biomark.pipelines.job_process import run_isolated

__all__ = [
    "attempt_job",
    "attempt_record",
    "job_lock",
    "no_local_job_running",
    "worker_identity",
]

logger = logging.getLogger(__name__)


def worker_identity() -> dict[str, Any]:
    """Where this code runs: ``worker`` (Dask address or ``"local"``), ``host``, ``pid``."""
    return {"worker": _worker_address(), "host": socket.gethostname(), "pid": os.getpid()}


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def attempt_record(strategy: str, fold: int) -> tuple[str, dict[str, Any]]:
    """File name and content of the record of one attempt at a job (see the module notes)."""
    spec = StrategySpec.parse(strategy)
    name = f"{spec.dirname}_fold_{fold:02d}"
    started = datetime.now(UTC).isoformat(timespec="milliseconds")
    record = {
        "job": name,
        "strategy": spec.label,
        "fold": fold,
        "started": started,
        **worker_identity(),
    }
    return f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json", record


@contextlib.contextmanager
def job_lock(run: str, strategy: str, fold: int) -> Iterator[None]:
    """Hold the cluster-wide lock of one (run, strategy, fold) job for the block.

    On a Dask worker this is a :class:`distributed.Lock` named after the job,
    kept by the scheduler, so the same fold never trains twice at once: not
    when two clients submit the same run, nor when a job is resubmitted while
    its first attempt still runs. The scheduler's lease on it lapses when the
    holder's worker is lost, so a dead worker never blocks the job. Outside a
    worker (a serial run) a run folder on this machine gets a file lock per
    job (:func:`_file_lock`), so two ``biomark extract`` of the same run (two
    terminals, or a re-run while the first still trains) never train one fold
    at once: the second waits for the fold and then finds it done. A run
    folder at a URL has no lock outside a worker.

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
        if is_url(run):
            yield
            return
        with _file_lock(Path(run), strategy, fold):
            yield
        return
    digest = hashlib.sha256(run.rstrip("/").encode("utf-8")).hexdigest()[:16]
    name = f"biomark-job-{digest}-{StrategySpec.parse(strategy).dirname}-fold{fold:02d}"
    with Lock(name):
        yield


@contextlib.contextmanager
def _file_lock(run_root: Path, strategy: str, fold: int) -> Iterator[None]:
    """Hold ``<run>/.cluster/locks/<job>.lock``, waiting (and saying so) while another process holds
    it.

    ``flock`` locks belong to the open file and the kernel drops them when
    the holder exits, however it exits, so a killed run never leaves a stale
    lock (the file itself stays, meaning nothing). A file system without
    ``flock`` (some network mounts) runs unlocked, as before.
    """
    import fcntl  # POSIX; biomark runs on Linux and macOS

    spec = StrategySpec.parse(strategy)
    path = run_root / LOCKS_DIR / f"{spec.dirname}_fold_{fold:02d}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        locked = True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info(
                "%s fold %d: another process on this machine is training it (%s); waiting for it",
                spec.label,
                fold,
                path,
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:  # no flock on this file system: nothing to share it with
            logger.debug("%s: no file lock (%s); running unlocked", path, err)
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def no_local_job_running(run_root: Path) -> Iterator[None]:
    """Hold every job lock of a local run folder for the block, or refuse if another process holds
    one.

    ``biomark extract --force`` clears folds and rewrites ``run.json`` before
    its jobs start; done while another process on this machine trains a fold
    of the same run, that would delete the other process's work under it.
    Holding every lock the run has ever used (one file per job that has
    started, :func:`_file_lock`) keeps such a process from starting a job
    meanwhile, and one that holds a lock now stops this run before anything is
    cleared. A file system without ``flock`` is not guarded, as in
    :func:`_file_lock`.

    Parameters
    ----------
    run_root : Path
        The run folder on this machine.

    Raises
    ------
    RunError
        Another process holds a job's lock: it is training that fold now.
    """
    import fcntl  # POSIX; biomark runs on Linux and macOS

    with contextlib.ExitStack() as held:
        for path in sorted((run_root / LOCKS_DIR).glob("*_fold_*.lock")):
            handle = held.enter_context(open(path, "a+b"))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                dirname, _, fold = path.stem.rpartition("_fold_")
                label = StrategySpec.parse(dirname).label
                raise RunError(
                    f"{run_root}: another process on this machine is training {label} fold "
                    f"{int(fold)} ({dirname}/fold_{fold}) of this run (it holds {path}); --force "
                    "now would delete its work. Wait for it to finish, or stop it, then run again"
                ) from None
            except OSError as err:  # no flock on this file system: nothing to guard with
                logger.debug("%s: no file lock (%s); not guarded", path, err)
                continue
            held.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        yield


def attempt_job(
    run_dir: str,
    strategy: str,
    fold: int,
    *,
    isolate: bool = False,
    dataset_dir: str | None = None,
    record_attempt: bool = True,
    lock: bool = True,
) -> dict[str, Any]:
    """One attempt at a (strategy, fold) job, on whichever executor runs it.

    Records the attempt, takes the job's lock (:func:`job_lock`), skips a
    fold another attempt finished, runs
    :func:`~biomark.pipelines.extract_job.run_job` and returns its record
    with where it ran.

    Parameters
    ----------
    run_dir : str
        Path of a prepared run folder, visible where this runs (absolute on a cluster).
    strategy : str
    fold : int
    isolate : bool, default False
        Train in this worker's job process for the run (see
        :func:`biomark.pipelines.job_process.run_isolated`): what a Dask worker
        does, so results equal a single-process run's.
    dataset_dir : str, optional
        The dataset, when not at the path ``run.json`` records: an fsspec URL
        (copied to this machine's cache first) or a path.
    record_attempt, lock : bool, default True
        Off when a caller does both itself (a run folder at a URL).

    Returns
    -------
    dict
        ``record`` (``metrics.json`` + ``timings.json``), ``skipped`` (bool),
        ``log`` (an isolated job's log records, for :func:`replay_job_log`; empty when the
        job ran in this process, whose records were logged as they came), ``worker``,
        ``host``, ``pid``.
    """
    label = StrategySpec.parse(strategy).label
    if record_attempt:
        file_name, attempt = attempt_record(label, fold)
        write_json_atomic(Path(run_dir) / ATTEMPTS_DIR / file_name, attempt)
    if not lock:
        return _attempt_body(run_dir, label, fold, isolate, dataset_dir)
    with job_lock(str(Path(run_dir).resolve()), label, fold):
        return _attempt_body(run_dir, label, fold, isolate, dataset_dir)


def _attempt_body(
    run_dir: str, label: str, fold: int, isolate: bool, dataset_dir: str | None
) -> dict[str, Any]:
    from biomark.pipelines.extract_job import run_job

    where = worker_identity()
    run = RunFolder(run_dir)
    if run.is_done(label, fold):
        return {"record": run.fold_record(label, fold), "skipped": True, "log": [], **where}
    if dataset_dir is not None and is_url(dataset_dir):
        from biomark.data.remote import mirror_dataset

        dataset_dir = str(mirror_dataset(dataset_dir))  # this machine's own cached copy
    log: list[dict[str, Any]] = []
    if isolate:
        record, log = run_isolated(run_dir, label, fold, dataset_dir)
    else:
        record = run_job(run_dir, label, fold, dataset_dir=dataset_dir)
    return {"record": record, "skipped": False, "log": log, **where}
