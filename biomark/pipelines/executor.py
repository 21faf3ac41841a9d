"""Where a run's jobs execute: one interface, in this process or on a Dask cluster.

Both ``biomark extract`` (one job per (strategy, fold)) and ``biomark
radiomics`` (one job per batch of images) hand their jobs to an
:class:`Executor` and nothing else:

* :meth:`Executor.opened` -- the executor's resources for a ``with`` block
  (a Dask client, or nothing); an unreachable scheduler fails here, before
  anything is written;
* :meth:`Executor.preflight` -- before any job, check where the jobs run that
  they can see the shared folder and the inputs and import the packages
  (:func:`biomark.cluster.preflight`; in this process, the same probe here);
* :meth:`Executor.map` -- run a function over jobs, yielding each
  :class:`Outcome` as it finishes (with its result, or its error);
* :meth:`Executor.chunk_runner` -- the radiomics batches' runner (None: the
  local worker-process pool of :func:`biomark.features.radiomics_run.run_radiomics`);
* :attr:`Executor.name`, :attr:`Executor.retries` -- recorded in ``run.json``
  the same way for every executor.

:class:`SerialExecutor` runs jobs one after the other in this process and
stops at the first error (no retries). :class:`DaskExecutor` submits them to a
scheduler (``tcp://HOST:PORT``, ``local:N``, or a connected
:class:`distributed.Client`), each with ``retries``, a missing package turned
into a :class:`~biomark.cluster.ClusterError` naming it (which cancels the
rest); other job errors are collected and reported together. Where the files
live (a path every worker sees, or an fsspec URL) is the storage's business
(:mod:`biomark.pipelines.url_storage`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from biomark.cluster import (
    ClusterError,
    SchedulerSpec,
    check_shared_path,
    guarded_call,
    import_distributed,
    open_cluster,
    preflight,
    preflight_here,
)
from biomark.features.radiomics import ChunkItem, ChunkRunner, extract_chunk_into_cache

__all__ = [
    "DaskExecutor",
    "Executor",
    "Outcome",
    "SerialExecutor",
    "dask_chunk_runner",
    "executor_for",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")

#: A scheduler: ``"tcp://HOST:PORT"``, ``"local:N"``, a SchedulerSpec, or a connected
#: ``distributed.Client``.
Scheduler = Any


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One finished job: its item and either its result (``value``) or its ``error``."""

    item: T
    value: Any = None
    error: BaseException | None = None


class Executor(ABC):
    """Where jobs run (see the module notes). Subclasses: :class:`SerialExecutor`,
    :class:`DaskExecutor`."""

    #: Extra attempts of a job that raised.
    retries: int = 0
    #: Each extract job in the worker's job process (equal results next to a scheduler's threads).
    isolate: bool = False
    #: Jobs run on other machines: local folders must be absolute paths every worker sees.
    remote: bool = False

    @property
    @abstractmethod
    def name(self) -> str:
        """What ``run.json`` records as the executor (``serial``, ``dask local:2``, ...)."""

    @contextlib.contextmanager
    def opened(self) -> Iterator[Executor]:
        """The executor, ready for jobs, for the ``with`` block."""
        yield self

    @abstractmethod
    def workers(self, jobs: int) -> int:
        """Parallel workers for radiomics batches (``jobs``: what the user asked for here)."""

    @abstractmethod
    def preflight(
        self,
        shared: str | os.PathLike[str],
        *,
        read_paths: Sequence[str | os.PathLike[str]] = (),
        packages: Sequence[str] = ("biomark",),
    ) -> None:
        """Check, before any job, that the jobs can run (see :func:`biomark.cluster.preflight`)."""

    @abstractmethod
    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[T],
        *,
        args: Callable[[T], tuple[Any, ...]],
        kwargs: dict[str, Any] | None = None,
        key: Callable[[T], str] = str,
    ) -> Iterator[Outcome[T]]:
        """Run ``fn(*args(item), **kwargs)`` for every item; yield each :class:`Outcome` as it
        finishes."""

    def chunk_runner(self, cache_url: str | None = None) -> ChunkRunner | None:
        """The runner of radiomics batches (None: the local worker-process pool)."""
        return None

    def shared_path(self, path: str | os.PathLike[str], what: str) -> str:
        """A folder as jobs see it: unchanged here, absolute (and not a URL) for remote workers."""
        return str(check_shared_path(path, what)) if self.remote else os.fspath(path)


class SerialExecutor(Executor):
    """Jobs one after the other in this process; the first error stops the run (no retries).

    Radiomics batches still use this machine's worker processes (the ``jobs`` of the command).
    """

    @property
    def name(self) -> str:
        """``serial``."""
        return "serial"

    def workers(self, jobs: int) -> int:
        """``jobs`` as given (worker processes of this machine)."""
        return jobs

    def preflight(
        self,
        shared: str | os.PathLike[str],
        *,
        read_paths: Sequence[str | os.PathLike[str]] = (),
        packages: Sequence[str] = ("biomark",),
    ) -> None:
        """The cluster's probe, run here (:func:`biomark.cluster.preflight_here`)."""
        preflight_here(shared, read_paths=read_paths, packages=packages)

    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[T],
        *,
        args: Callable[[T], tuple[Any, ...]],
        kwargs: dict[str, Any] | None = None,
        key: Callable[[T], str] = str,
    ) -> Iterator[Outcome[T]]:
        """Each job in turn; an error propagates at once."""
        for item in items:
            yield Outcome(item, fn(*args(item), **(kwargs or {})))


class DaskExecutor(Executor):
    """Jobs on a Dask cluster (:mod:`biomark.cluster`).

    Parameters
    ----------
    scheduler : str, SchedulerSpec or distributed.Client
        ``tcp://HOST:PORT``, ``local:N`` (see :func:`biomark.cluster.parse_scheduler`),
        or a connected client (left open).
    retries : int, default 2
        Extra attempts of a job that raised (a job on a lost worker is
        rescheduled by Dask regardless).
    timeout : float, default 10
        Seconds to wait for the scheduler.
    isolate : bool, default True
        Each extract job in its worker's job process for the run, kept between jobs
        (:func:`biomark.pipelines.job_process.run_isolated`).
    """

    remote = True

    def __init__(
        self, scheduler: Scheduler, *, retries: int = 2, timeout: float = 10.0, isolate: bool = True
    ) -> None:
        self.scheduler, self.retries, self.timeout, self.isolate = (
            scheduler,
            retries,
            timeout,
            isolate,
        )
        self._client: Any = None

    @property
    def name(self) -> str:
        """``dask <scheduler>`` (``dask client`` for a client given by the caller)."""
        given = isinstance(self.scheduler, (str, SchedulerSpec))
        return f"dask {self.scheduler}" if given else "dask client"

    @property
    def client(self) -> Any:
        """The connected client (inside :meth:`opened`)."""
        if self._client is None:
            raise ClusterError(
                "the Dask executor is not open: use it inside `with executor.opened():`"
            )
        return self._client

    @contextlib.contextmanager
    def opened(self) -> Iterator[Executor]:
        """Connect (or start a local cluster) for the block; a client given by the caller stays
        open."""
        if isinstance(self.scheduler, (str, SchedulerSpec)):
            with open_cluster(self.scheduler, timeout=self.timeout) as client:
                self._client = client
                try:
                    yield self
                finally:
                    self._client = None
            return
        import_distributed()
        self._client = self.scheduler
        try:
            yield self
        finally:
            self._client = None

    def workers(self, jobs: int) -> int:
        """The cluster's worker threads."""
        return sum(self.client.nthreads().values()) or 1

    def preflight(
        self,
        shared: str | os.PathLike[str],
        *,
        read_paths: Sequence[str | os.PathLike[str]] = (),
        packages: Sequence[str] = ("biomark",),
    ) -> None:
        """:func:`biomark.cluster.preflight` on every worker."""
        preflight(self.client, shared, read_paths=read_paths, packages=packages)

    def map(
        self,
        fn: Callable[..., Any],
        items: Sequence[T],
        *,
        args: Callable[[T], tuple[Any, ...]],
        kwargs: dict[str, Any] | None = None,
        key: Callable[[T], str] = str,
    ) -> Iterator[Outcome[T]]:
        """Submit the jobs (with ``retries``) in the order of ``items``; yield outcomes as they
        complete.

        As many jobs as the cluster has worker threads are in flight at a time,
        and the next is submitted as one finishes, so the jobs start in the
        order of ``items``: a plan lists its slow strategies first, and the
        quick ones then fill in beside them instead of leaving one slow fold to
        run alone at the end. (Dask's own order for tasks submitted together
        is not theirs, even with task priorities: measured with Dask 2026.8,
        one worker ran 9 prioritised jobs in the order 0, 1, 3, 4, 6, 7, 2, 5, 8.)

        Raises
        ------
        ClusterError
            A job could not import a package (the remaining jobs are cancelled).
        """
        client, token = self.client, uuid.uuid4().hex[:8]

        def submit(item: T) -> Any:
            return client.submit(
                guarded_call,
                fn,
                *args(item),
                **(kwargs or {}),
                key=f"{key(item)}-{token}",
                retries=self.retries,
                pure=False,
            )

        slots = max(1, sum(client.nthreads().values()))
        finished = _submitted_in_order(client, submit, items, slots)
        with contextlib.closing(finished):  # a ClusterError cancels the jobs in flight
            for future, item in finished:
                try:
                    value = future.result()
                except ClusterError:
                    raise
                except Exception as err:  # noqa: BLE001 - any job error is reported together, finished jobs kept
                    yield Outcome(item, error=err)
                    continue
                yield Outcome(item, value)

    def chunk_runner(self, cache_url: str | None = None) -> ChunkRunner:
        """Radiomics batches as tasks (:func:`dask_chunk_runner`)."""
        return dask_chunk_runner(self.client, retries=self.retries, cache_url=cache_url)


def executor_for(
    scheduler: Scheduler | None = None, *, retries: int = 2, timeout: float = 10.0
) -> Executor:
    """The executor for a ``--scheduler`` value: :class:`SerialExecutor` when None, else
    :class:`DaskExecutor`.

    Examples
    --------
    >>> executor_for(None).name, executor_for("local:2").name
    ('serial', 'dask local:2')
    """
    if scheduler is None or scheduler == "":
        return SerialExecutor()
    return DaskExecutor(scheduler, retries=retries, timeout=timeout)


def _submitted_in_order(
    client: Any, submit: Callable[[U], Any], items: Iterable[U], limit: int
) -> Generator[tuple[Any, U], None, None]:
    """Submit ``items`` in their order, at most ``limit`` in flight; yield ``(future, item)`` as
    each completes.

    The next item is submitted as one completes, so they start in order (Dask's own order
    for tasks submitted together is not theirs) and a large input is not shipped to the
    scheduler at once. Futures still in flight when the caller stops reading (an error,
    or ``close()``) are cancelled.
    """
    distributed = import_distributed()
    waiting = iter(items)
    in_flight: dict[Any, U] = {}

    def submit_next() -> Any | None:
        for item in waiting:
            future = submit(item)
            in_flight[future] = item
            return future
        return None

    first = [f for f in (submit_next() for _ in range(limit)) if f is not None]
    queue = distributed.as_completed(first, loop=client.loop)
    try:
        for future in queue:
            item = in_flight.pop(future)
            following = submit_next()
            if following is not None:
                queue.add(following)
            yield future, item
    finally:
        if in_flight:
            client.cancel(list(in_flight))


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
        local copy of a dataset at a URL: the cache folder at that URL.

    Returns
    -------
    ChunkRunner
    """

    def run(
        content: dict[str, Any], cache_dir: str, batches: Iterable[list[ChunkItem]]
    ) -> Iterator[list[Any]]:
        threads = sum(client.nthreads().values()) or 1
        limit = max_in_flight or max(4, 4 * threads)
        token = uuid.uuid4().hex[:8]
        numbers = itertools.count(1)

        def submit(batch: list[ChunkItem]) -> Any:
            return client.submit(
                guarded_call,
                extract_chunk_into_cache,
                content,
                cache_url or cache_dir,
                batch,
                key=f"biomark-radiomics-{token}-{next(numbers):06d}",
                retries=retries,
                pure=False,
            )

        # the first `limit` batches only: the rest are submitted as these finish
        finished = _submitted_in_order(client, submit, batches, limit)
        with contextlib.closing(finished):
            for future, _ in finished:
                done = future.result()
                future.release()
                yield done

    return run
