"""Where a command's files live: a path (local, or shared by every worker) or an fsspec URL.

The pipelines run the same flow whatever the storage; a storage object says
what to copy before and after, where the jobs write and what they read.

Extract (:class:`RunStorage` on a path, :class:`UrlRunStorage` at a URL)
    At a URL (``--out s3://bucket/runs``) the client keeps a local copy of the
    run folder (``<cache>/runs/<url key>/<plan name>``, :func:`run_copy_dir`):
    it downloads what the URL already holds (so a re-submitted run resumes),
    prepares the run there exactly as a local run, and uploads the run-level
    files (``run.json``, ``folds.csv``). Each (strategy, fold) job
    (:func:`remote_job`) downloads ``run.json`` and ``folds.csv`` into a
    scratch folder where it runs, reads the dataset from that machine's own
    cached copy (:func:`biomark.data.remote.mirror_dataset`), trains through
    :func:`~biomark.pipelines.attempt.attempt_job`, and uploads the fold folder
    with ``done.json`` last. The client then downloads the finished folds,
    summarises locally and uploads the summaries; its local copy is a complete
    run folder for ``biomark compare`` / ``report``.
Radiomics (:class:`RadiomicsStorage`, :class:`UrlRadiomicsStorage`)
    At a URL the client works on its copy of the dataset (with the URL's
    earlier results and per-image cache), workers store each image's result
    straight into the cache at the URL, and the output folder is uploaded at
    the end.

Guarantees at a URL, as with shared paths
    Every upload is atomic per file (:meth:`RemoteFolder.put_file`); a fold
    at the URL counts as finished only once its ``done.json`` is there, and a
    new attempt first removes what an interrupted one left. A job lost with
    its worker is rerun elsewhere by Dask; a re-submitted run skips finished
    folds. Unlike a shared path, the mid-training checkpoint stays on the
    machine that trains, so an interrupted fold restarts from its first epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biomark.config import Plan, StrategySpec, apply_overrides
from biomark.features.radiomics_params import RadiomicsParams
from biomark.features.radiomics_run import RadiomicsRun, output_dir
from biomark.features.run_folder import (
    ATTEMPTS_DIR,
    DONE_FILE,
    FOLDS_FILE,
    METRICS_FILE,
    RUN_FILE,
    TIMINGS_FILE,
    RunFolder,
)
from biomark.io.remote import RemoteFolder, is_url, local_cache_dir, redact, url_key
from biomark.pipelines.attempt import attempt_job, attempt_record, job_lock, worker_identity
from biomark.pipelines.executor import Executor

__all__ = [
    "RadiomicsStorage",
    "RunStorage",
    "UrlRadiomicsStorage",
    "UrlRunStorage",
    "radiomics_storage",
    "remote_job",
    "run_copy_dir",
    "run_storage",
]

logger = logging.getLogger(__name__)

_FOLD_FILE = re.compile(r"^[^/]+/fold_\d+/")
_BACKUP = re.compile(r"(^|/)checkpoint\.npz$")

#: The jobs of a run as an executor submits them: (function, arguments before (strategy, fold),
#: keywords).
JobCall = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def _in_fold(name: str) -> bool:
    """Whether a run-relative file name lies in a fold folder (jobs own those)."""
    return bool(_FOLD_FILE.match(name))


def _is_backup(name: str) -> bool:
    """A fold's mid-training checkpoint: scratch of the machine that trains, never uploaded."""
    return bool(_BACKUP.search(name))


def run_copy_dir(run_url: str) -> Path:
    """The parent of the client's local copy of the run folder at ``run_url``."""
    return local_cache_dir() / "runs" / url_key(run_url)


def _read_paths(data: str, dataset_dir: Path) -> list[str]:
    """What a job reads of the dataset: the manifest at its URL, or the manifest and image cache of
    its folder."""
    if is_url(data):
        return [f"{data.rstrip('/')}/manifest.csv"]
    root = Path(dataset_dir).expanduser().resolve()
    return [str(root / "manifest.csv"), str(root / "cache" / "images.npy")]


class RunStorage:
    """An extract run folder on a path: local for jobs here, shared (same absolute path) for
    workers.

    Parameters
    ----------
    plan : Plan
    executor : Executor
        A remote executor needs absolute folders every worker sees.
    """

    def __init__(self, plan: Plan, executor: Executor) -> None:
        self.executor = executor
        out = executor.shared_path(plan.output_dir, "output folder")
        data = (
            plan.data.dir
            if is_url(plan.data.dir)
            else executor.shared_path(plan.data.dir, "dataset folder")
        )
        self.plan = apply_overrides(plan, {"output_dir": out, "data.dir": data})

    def location(self, run: RunFolder) -> str:
        """Where the run folder is, for messages."""
        return str(run.root)

    def fetch(self) -> None:
        """Bring the run's files here (nothing to do on a path)."""

    def begin(self, run: RunFolder, cleared: list[tuple[str, int]]) -> None:
        """Publish the prepared run before its jobs (nothing to do on a path)."""

    def shared_dir(self, run: RunFolder) -> str:
        """The folder jobs write into (checked by the executor's preflight)."""
        return self.executor.shared_path(run.root, "run folder")

    def read_paths(self, dataset_dir: Path) -> list[str]:
        """What jobs read of the dataset (checked by the preflight)."""
        return _read_paths(str(self.plan.data.dir), dataset_dir)

    def job(self, run: RunFolder) -> JobCall:
        """The jobs' function, the arguments before ``(strategy, fold)``, and its keywords.

        On a path: :func:`~biomark.pipelines.attempt.attempt_job` on the run folder.
        """
        data_url = self.plan.data.dir if is_url(self.plan.data.dir) else None
        return (
            attempt_job,
            (str(self.shared_dir(run)),),
            {"isolate": self.executor.isolate, "dataset_dir": data_url},
        )

    def collect(self, run: RunFolder) -> None:
        """Bring the finished folds here (nothing to do on a path)."""

    def publish(self, run: RunFolder) -> None:
        """Publish the run-level files (nothing to do on a path)."""


class UrlRunStorage(RunStorage):
    """An extract run folder at an fsspec URL, with a local copy on this machine (see the module
    notes).

    Parameters
    ----------
    plan : Plan
        Its ``output_dir`` is the URL under which the run folder ``<output_dir>/<name>`` goes.
    executor : Executor

    Raises
    ------
    ConfigError
        The URL's file system cannot be opened (an unknown protocol, a missing package).
    """

    def __init__(self, plan: Plan, executor: Executor) -> None:
        self.executor = executor
        self.url = f"{str(plan.output_dir).rstrip('/')}/{plan.name}"
        self.remote = RemoteFolder(self.url, "output folder")
        self.parent = run_copy_dir(self.url)
        data = (
            plan.data.dir
            if is_url(plan.data.dir)
            else executor.shared_path(plan.data.dir, "dataset folder")
        )
        self.plan = apply_overrides(plan, {"output_dir": str(self.parent), "data.dir": data})

    def location(self, run: RunFolder) -> str:
        """The run folder's URL (credentials redacted)."""
        return redact(self.url)

    def fetch(self) -> None:
        """Download what the URL holds into the local copy (checkpoints aside)."""
        local_run = self.parent / self.plan.name
        fetched = self.remote.get_tree("", local_run, skip=_is_backup)
        logger.info(
            "run folder %s: local copy %s (%d file(s) downloaded)",
            redact(self.url),
            local_run,
            fetched,
        )

    def begin(self, run: RunFolder, cleared: list[tuple[str, int]]) -> None:
        """Remove at the URL the finished folds cleared here (``--force``), note the URL, upload the
        run files."""
        for strategy, fold in cleared:
            relative = run.fold_key(strategy, fold)
            if self.remote.exists(f"{relative}/{DONE_FILE}"):
                logger.info("%s: cleared at %s too", relative, redact(self.url))
                self.remote.remove(relative)
        run.update_info(lambda info: dataclasses.replace(info, url=redact(self.url)))
        self.publish(run)

    def shared_dir(self, run: RunFolder) -> str:
        """The run folder's URL."""
        return self.url

    def job(self, run: RunFolder) -> JobCall:
        """The jobs' function, the arguments before ``(strategy, fold)``, and its keywords.

        At a URL: :func:`remote_job` on the run folder's URL and the dataset's URL or shared path.
        """
        data = str(self.plan.data.dir)
        dataset = data if is_url(data) else str(Path(data).expanduser().resolve())
        return remote_job, (self.url, dataset), {"isolate": self.executor.isolate}

    def collect(self, run: RunFolder) -> None:
        """Download the files of finished folds into the local copy."""
        fetched = self.remote.get_tree(
            "", run.root, skip=lambda name: not _in_fold(name) or _is_backup(name)
        )
        logger.info("downloaded %d file(s) of finished folds into %s", fetched, run.root)

    def publish(self, run: RunFolder) -> None:
        """Upload the run-level files (everything outside fold folders); ``run.json`` last."""
        self.remote.put_tree(
            run.root,
            last=[RUN_FILE],
            skip=lambda name: _in_fold(name) or name.startswith(ATTEMPTS_DIR.as_posix()),
        )


def run_storage(plan: Plan, executor: Executor) -> RunStorage:
    """The storage of a plan's run folder: :class:`UrlRunStorage` when ``output_dir`` is a URL."""
    return UrlRunStorage(plan, executor) if is_url(plan.output_dir) else RunStorage(plan, executor)


def remote_job(
    run_url: str, dataset: str, strategy: str, fold: int, *, isolate: bool = True
) -> dict[str, Any]:
    """One (strategy, fold) job whose run folder is at a URL; runs on a worker (or here).

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
        Train in the worker's job process (see
        :func:`~biomark.pipelines.job_process.run_isolated`).

    Returns
    -------
    dict
        As :func:`~biomark.pipelines.attempt.attempt_job`: ``record``,
        ``skipped``, ``worker``, ``host``, ``pid``.
    """
    remote = RemoteFolder(run_url, "run folder")
    label = StrategySpec.parse(strategy).label
    file_name, attempt = attempt_record(label, fold)
    remote.write_text(f"{ATTEMPTS_DIR.as_posix()}/{file_name}", json.dumps(attempt))
    with job_lock(redact(run_url), label, fold):
        return _remote_job_body(remote, dataset, label, fold, isolate)


def _remote_job_body(
    remote: RemoteFolder, dataset: str, label: str, fold: int, isolate: bool
) -> dict[str, Any]:
    relative = RunFolder(".").fold_key(label, fold)
    if remote.exists(f"{relative}/{DONE_FILE}"):  # another worker finished it
        with tempfile.TemporaryDirectory(prefix="biomark-job-", dir=_scratch_dir()) as scratch:
            copy = RunFolder(scratch)
            for name in (METRICS_FILE, TIMINGS_FILE):
                if name == METRICS_FILE or remote.exists(f"{relative}/{name}"):
                    remote.get_file(f"{relative}/{name}", copy.fold_dir(label, fold) / name)
            return {"record": copy.fold_record(label, fold), "skipped": True, **worker_identity()}
    with tempfile.TemporaryDirectory(prefix="biomark-job-", dir=_scratch_dir()) as scratch:
        local_run = RunFolder(Path(scratch) / "run")
        for name in (RUN_FILE, FOLDS_FILE):
            remote.get_file(name, local_run.root / name)
        remote.remove(relative)  # whatever an interrupted attempt uploaded
        out = attempt_job(
            str(local_run.root),
            label,
            fold,
            isolate=isolate,
            dataset_dir=dataset,
            record_attempt=False,
            lock=False,
        )
        remote.put_tree(
            local_run.fold_dir(label, fold), relative, last=[DONE_FILE], skip=_is_backup
        )
    return out


def _scratch_dir() -> str | None:
    """The Dask worker's local directory, or the system's temporary folder."""
    try:
        from distributed import get_worker

        return str(get_worker().local_directory)
    except (ImportError, ValueError):
        return None


# --------------------------------------------------------------------------- #
# Radiomics
# --------------------------------------------------------------------------- #


class RadiomicsStorage:
    """A dataset (and its radiomics outputs) on a path: local, or shared by every worker."""

    def __init__(
        self, data: str | Path, params: RadiomicsParams, region: str, executor: Executor
    ) -> None:
        self.executor = executor
        self.data = Path(executor.shared_path(data, "dataset folder"))
        self.params, self.region = params, region

    def fetch(self) -> Path:
        """The dataset folder here."""
        return self.data

    @property
    def shared_dir(self) -> str:
        """Where the batches' results are stored (checked by the preflight)."""
        return str(output_dir(self.data, self.params, self.region))

    @property
    def read_paths(self) -> list[str]:
        """The image cache the batches read."""
        return [str(self.data / "cache" / "images.npy")]

    @property
    def cache_url(self) -> str | None:
        """Where remote workers store results (None: the output folder's ``cache/``)."""
        return None

    @property
    def by_reference(self) -> bool:
        """Batches name rows of the dataset's image cache instead of carrying pixels (remote
        workers)."""
        return self.executor.remote

    def publish(self, result: RadiomicsRun) -> None:
        """Publish the output folder (nothing to do on a path)."""


class UrlRadiomicsStorage(RadiomicsStorage):
    """A dataset at an fsspec URL: extracted on this machine's copy, results uploaded next to it."""

    def __init__(
        self, data_url: str, params: RadiomicsParams, region: str, executor: Executor
    ) -> None:
        self.executor, self.params, self.region = executor, params, region
        self.url = data_url
        self.remote = RemoteFolder(data_url, "dataset folder")
        self.data = Path()
        self.relative = ""

    def fetch(self) -> Path:
        """Copy the dataset here (:func:`biomark.data.remote.mirror_dataset`) with the URL's earlier
        results."""
        from biomark.data.remote import mirror_dataset

        self.data = mirror_dataset(self.url)
        out_local = output_dir(self.data, self.params, self.region)
        self.relative = out_local.relative_to(self.data).as_posix()
        fetched = self.remote.get_tree(self.relative, out_local)
        logger.info(
            "radiomics results at %s: %d file(s) downloaded to %s",
            redact(self.url),
            fetched,
            out_local,
        )
        return self.data

    @property
    def shared_dir(self) -> str:
        """The output folder at the URL."""
        return f"{self.remote.url}/{self.relative}"

    @property
    def read_paths(self) -> list[str]:
        """Nothing: batches carry their pixels."""
        return []

    @property
    def cache_url(self) -> str | None:
        """The cache folder at the URL, for remote workers."""
        return f"{self.shared_dir}/cache" if self.executor.remote else None

    @property
    def by_reference(self) -> bool:
        """Never: workers do not see this machine's copy."""
        return False

    def publish(self, result: RadiomicsRun) -> None:
        """Upload the output folder, and the per-image cache files that changed."""
        out_local = output_dir(self.data, self.params, self.region)
        self.remote.put_tree(out_local, self.relative, skip=lambda name: name.startswith("cache/"))
        self.remote.put_tree(out_local / "cache", f"{self.relative}/cache", only_changed=True)
        logger.info("radiomics results uploaded to %s/%s", redact(self.url), self.relative)


def radiomics_storage(
    data: str | Path, params: RadiomicsParams, region: str, executor: Executor
) -> RadiomicsStorage:
    """The storage of a dataset's radiomics: :class:`UrlRadiomicsStorage` when ``data`` is a URL."""
    if is_url(str(data)):
        return UrlRadiomicsStorage(str(data), params, region, executor)
    return RadiomicsStorage(data, params, region, executor)
