"""Worker processes that exit when the process that started them dies.

``with worker_pool(n) as pool:`` gives an executor (``submit`` -> future)
with ``n`` worker processes, shut down when the block ends, or one that runs
everything here for ``n = 1``. It is loky's process executor (vendored in
joblib, which runs joblib's own ``Parallel``), with two additions:

* **Workers die with their parent.** Each worker runs :func:`exit_with_parent`
  when it starts: a daemon thread that polls ``os.getppid()`` twice a second
  and ends the worker (``os._exit``) once the parent is gone. Without it a
  ``kill -9`` of ``biomark radiomics`` left both workers running (about
  320 MB each; still there 60 s later in the test, 19 minutes in the field);
  ``tests/features/test_radiomics.py`` kills a run's parent and checks that
  its workers are gone.
* **No oversubscription.** Workers get ``cores // n`` threads for OpenMP,
  BLAS, ITK (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``: SimpleITK would
  otherwise start one thread per core in every worker, for 200-pixel images)
  and TensorFlow (``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS``, read
  when TensorFlow starts), unless the environment already sets them (as
  joblib does for the first ones).

Why this design
    * joblib's ``Parallel`` has no documented way to run an initializer in its
      workers. loky's executor has one, sets the workers' environment before
      anything is imported, starts workers by fork+exec (safe when the parent
      has threads) and reports a crashed worker as an error instead of
      hanging.
    * One executor per run, not loky's process-wide reusable one: joblib keeps
      its own record of that shared executor and, finding its settings
      unchanged, would take over one created here without the state it
      expects (``AttributeError: ... _temp_folder_manager`` in the next
      ``Parallel``). A run's workers start once (about 0.3 CPU s each: they
      import neither pandas nor pyarrow) and serve every region and control
      of the run; nothing outlives the run.
    * A polling thread rather than ``prctl(PR_SET_PDEATHSIG)``: that signal is
      sent when the *thread* that forked the worker ends, and loky starts
      workers from whichever thread submits work, so a worker could be killed
      while its parent is alive.
    * ``submit`` (futures) rather than a map: a run hands over the batches of
      every region and control as soon as it knows them and does its own work
      (controls, gallery) while the workers extract, with one wait at the end
      instead of one per region.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

__all__ = [
    "InlineExecutor",
    "exit_with_parent",
    "exit_without_teardown",
    "how_a_worker_died",
    "threads_per_worker",
    "worker_pool",
    "worker_thread_env",
]

logger = logging.getLogger(__name__)

#: Thread-count variables set in the workers (unless set in the environment).
_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """End this process (``os._exit(1)``) as soon as ``parent_pid`` is no longer its parent.

    Run in every worker as the executor's initializer. A daemon thread polls
    ``os.getppid()``: when the parent dies the worker is re-parented (to init
    or a subreaper) and the value changes. Results a worker had not handed
    back are lost with the parent anyway; files are written atomically, so
    nothing is left half-written.

    Parameters
    ----------
    parent_pid : int
        The pid of the process that created the executor.
    interval : float, default 0.5
        Seconds between checks.
    """
    if os.getppid() != parent_pid:  # the parent died while this worker started
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="biomark-exit-with-parent", daemon=True).start()


def exit_without_teardown() -> None:
    """At this process's normal exit, flush the log and the standard streams and end it with
    ``os._exit(0)``, skipping the interpreter's teardown.

    For a worker process of its own whose results are already handed back
    when it exits (the report's strategy workers): Python's teardown of a
    process that has loaded TensorFlow (freeing every module, object and
    library) took about 1.5 s of CPU on the 2-core AVX2 VM (0.1 s with this),
    and a pool's shutdown waits for every worker to exit. Registered with
    :mod:`atexit`, so it runs after the interpreter has joined the process's
    threads, and before the handlers registered earlier (which it replaces:
    logging's is called here). The exit status is 0: a worker that fails
    hands its error back through its future, not through its status.

    The one handler of theirs it stands in for is TensorFlow's removal of the
    source files autograph writes to the temporary folder (one per function it
    converts, removed by an :mod:`atexit` handler that ``os._exit`` skips): each
    demo report left two ``__autograph_generated_file*.py`` in ``/tmp`` before
    (:func:`_remove_autograph_sources`).
    """
    atexit.unregister(_exit_now)  # once, however often a worker calls this
    atexit.register(_exit_now)


def _exit_now() -> None:
    _remove_autograph_sources()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or detached stream has nothing to flush
            stream.flush()
    os._exit(0)


#: The prefix of the modules (and temporary files) TensorFlow's autograph makes
#: of the functions it converts (``tensorflow/python/autograph/pyct/loader.py``).
_AUTOGRAPH_PREFIX = "__autograph_generated_file"


def _remove_autograph_sources() -> None:
    """Delete the temporary source files of this process's autograph modules.

    By hand because TensorFlow has no call for it: its loader registers one
    :mod:`atexit` handler per file, which :func:`_exit_now` skips. The files
    are found through the modules autograph keeps in :data:`sys.modules`; a
    file already gone is passed over.
    """
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.startswith(_AUTOGRAPH_PREFIX) and path:
            with contextlib.suppress(OSError):
                os.remove(path)


class InlineExecutor(Executor):
    """Runs each submitted call at once, in this process (``worker_pool(1)``).

    Examples
    --------
    >>> InlineExecutor().submit(pow, 2, 10).result()
    1024
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future, as a pool would
            future.set_exception(err)
        return future


class _LazyExecutor(Executor):
    """Creates the process executor on the first ``submit``: a run served from the cache starts
    nothing."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._pool: Any = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._pool is None:
            self._pool = self._factory()
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, kill_workers: bool = False
    ) -> None:
        if self._pool is None:
            return
        if kill_workers:
            _kill_and_join(self._pool)
        else:
            self._pool.shutdown(wait=wait)


def _kill_and_join(pool: Any) -> None:
    """Kill ``pool``'s worker processes, then join its manager thread: nothing is left running.

    Written by hand because loky's own ``shutdown(kill_workers=True)`` races
    (joblib 1.6): its manager thread sets an exception on every pending
    future, which raises ``InvalidStateError`` for one the caller has
    cancelled (as :func:`biomark.features.radiomics_jobs.collect` does on an
    error), or then looks up a work item it has just dropped (``KeyError``).
    Either way the thread dies with a raw traceback on stderr, and when it dies
    before killing the workers the process hangs at exit, joining them. Killed
    here first, the workers' exit is seen by the manager thread as a broken
    pool, whose path ignores cancelled futures and ends the thread; the wait
    for it is short, since nothing runs any more. ``_processes`` is loky's
    record of its workers (no public accessor); without it, loky's path is
    taken.
    """
    processes = getattr(pool, "_processes", None)
    if not isinstance(processes, dict):
        pool.shutdown(wait=False, kill_workers=True)
        return
    for process in list(processes.values()):
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(process.pid, signal.SIGKILL)
    pool.shutdown(wait=True)


def threads_per_worker(n_workers: int) -> int:
    """Threads each of ``n_workers`` workers gets for its libraries: ``cores // n_workers``, at
    least 1."""
    return max(1, (os.cpu_count() or 1) // n_workers)


def worker_thread_env(n_workers: int) -> dict[str, str]:
    """The thread-count variables for one of ``n_workers`` processes sharing this machine.

    Each library variable (OpenMP, BLAS, ITK, TensorFlow's intra- and
    inter-op pools) gets :func:`threads_per_worker` threads, unless the
    environment already sets it, in which case its value is kept.

    Parameters
    ----------
    n_workers : int
        Processes that run side by side.

    Returns
    -------
    dict of str to str
        Variable name to value, for a child's environment or ``os.environ``
        (before the libraries start their thread pools).

    Examples
    --------
    >>> env = worker_thread_env(os.cpu_count() or 1)
    >>> env["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", "1")
    True
    """
    threads = str(threads_per_worker(n_workers))
    return {name: os.environ.get(name, threads) for name in _THREAD_VARIABLES}


@contextlib.contextmanager
def worker_pool(n_workers: int, *, background: bool = False) -> Iterator[Executor]:
    """An executor with ``n_workers`` processes that exit with this one; shut down on leaving.

    Parameters
    ----------
    n_workers : int
        Worker processes; 1 (or a daemonic process, which may not have
        children) gives an :class:`InlineExecutor`, unless ``background``.
    background : bool, default False
        The workers run beside this process's own work: even one worker is a
        process, and the cores are shared by ``n_workers + 1`` processes
        (:func:`worker_thread_env`).

    Yields
    ------
    concurrent.futures.Executor
        Its processes start with the first ``submit``. On a normal exit the
        block waits for what was submitted; on an exception the workers are
        killed.
    """
    if (n_workers <= 1 and not background) or multiprocessing.current_process().daemon:
        if n_workers > 1 or background:
            logger.info(
                "running in a daemonic process, which cannot start workers: working serially"
            )
        yield InlineExecutor()
        return

    def start() -> Executor:
        from joblib.externals.loky import ProcessPoolExecutor

        return ProcessPoolExecutor(
            max_workers=n_workers,
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
            env=worker_thread_env(n_workers + 1 if background else n_workers),
        )

    pool = _LazyExecutor(start)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, kill_workers=True)
        raise
    pool.shutdown(wait=True)


def how_a_worker_died(err: BaseException) -> str:
    """What a broken pool says about its dead worker, in one line (its exit code when given).

    Examples
    --------
    >>> how_a_worker_died(RuntimeError("A worker stopped.\\nThe exit codes of the workers are {EXIT(3)}"))
    'The exit codes of the workers are {EXIT(3)}'
    """  # noqa: E501
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(line for line in lines if "exit code" in line) or (
        lines[0] if lines else type(err).__name__
    )
