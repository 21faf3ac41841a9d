"""The strategies of one report, analysed side by side in worker processes.

:func:`analyse_strategies` runs :func:`biomark.report.report_strategy.analyse_strategy`
for each strategy of a run, in this process (``workers=1``) or in one worker
process per strategy (:func:`biomark.features.worker_pool.worker_pool`: loky
processes that exit with this one; the run's lung null in one more when a
core is free for it, else first in one of theirs, :func:`pool_size`), and
hands back each strategy's
:class:`~biomark.report.strategy_report.StrategyReport`, or the
:class:`~biomark.exceptions.RunError` that left it out, in the order asked.

Why processes
    A strategy's analysis is mostly single-threaded: loading its fold models,
    the unit matching (``linear_sum_assignment``), the statistics and the
    audit run on one core, and TensorFlow's second thread gains little on the
    report's small images. On the demo run (3 strategies, 2,100 images at
    96 px, 2-core Xeon) one strategy after another took 71.8 and 76.1 s for
    94 and 97 CPU s (1.3 of the 2 cores busy); the three strategies in three
    processes of one thread each took 51.3 and 51.5 s for 94 and 95 CPU s
    (runs alternated, ``benchmarks/report.py``). Each worker gets
    ``cores // workers`` threads (at least one) for TensorFlow, OpenMP and
    BLAS, so the processes do not fight over the cores.

What changes
    Nothing a reader sees: the same candidates, flags and verdicts. With one
    thread BLAS and the attributions' float32 sums add in another order, so a
    few numbers differ in their last digits (on the demo run: the SHAP means
    by 6e-8 of their value, the radiomic R^2 by 2e-11).

The source audit's within-class splits depend only on the images' classes,
sources and patients, which the workers and this process share; they are made
once and read by the others through a folder (:func:`biomark.analysis.class_splits.shared_splits`):
on the demo 7 classes' splits were made 4 times, about 7 CPU s of the report's 100.

Each worker opens the run and its dataset itself (a memory-mapped image
array is not sent between processes), runs ``setup`` first (the command
line passes its logging set-up, so a worker logs like the command, each line
starting with the strategy's label, since the workers' lines interleave), keeps
freed memory (:func:`biomark.allocator.keep_freed_memory`) and serves large
blocks from glibc's heap (:func:`biomark.allocator.large_blocks_from_heap`)
before TensorFlow allocates. The latter only in a worker process of its own:
three report workers side by side on the 2-core AVX2-only VM spent about 56 s
of their 160-182 CPU s in the kernel, zeroing the fresh pages of each
activation's own mapping; with it, 131-150 CPU s and the demo report 86-98 s
-> 74-82 s (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from biomark.allocator import keep_freed_memory, large_blocks_from_heap
from biomark.analysis.class_splits import shared_splits
from biomark.data.dataset import Dataset, load_dataset
from biomark.exceptions import BiomarkError, RunError
from biomark.features.run_folder import RunFolder
from biomark.features.run_info import RunInfo
from biomark.features.worker_pool import (
    exit_without_teardown,
    how_a_worker_died,
    threads_per_worker,
    worker_pool,
)
from biomark.report.random_units import PendingNull, compute_and_store
from biomark.report.report_strategy import (
    RadiomicsInput,
    ReportSettings,
    StrategyReport,
    analyse_strategy,
)

__all__ = ["analyse_strategies", "open_run_dataset", "pool_size", "worker_count"]

logger = logging.getLogger(__name__)


def worker_count(requested: int | None, n_strategies: int, cores: int | None = None) -> int:
    """Worker processes for ``n_strategies`` strategies.

    Parameters
    ----------
    requested : int or None
        ``ReportSettings.workers``: None is one per strategy when the machine
        has at least 2 cores (1 otherwise).
    n_strategies : int
    cores : int, optional
        Default ``os.cpu_count()``.

    Returns
    -------
    int
        At least 1 and at most ``n_strategies``.

    Examples
    --------
    >>> worker_count(None, 3, cores=2), worker_count(None, 3, cores=1), worker_count(2, 3, cores=2)
    (3, 1, 2)
    """
    cores = cores or os.cpu_count() or 1
    wanted = (n_strategies if cores >= 2 else 1) if requested is None else requested
    return max(1, min(int(wanted), n_strategies))


def pool_size(n_workers: int, cores: int | None = None) -> int:
    """Processes for ``n_workers`` strategy workers and the lung null.

    The null gets a process of its own only when the machine has a core for
    it. Otherwise it runs first in one of the strategies' processes, and the
    last strategy starts there when it ends: one TensorFlow import and one
    opening of the run fewer (about 5 CPU s). On the 2-core EPYC, 4 runs
    alternated with 4 processes, the demo report's analysis took 53.9-63.5 s
    against 56.1-63.9 s (2.6 s less on average) and 99-119 CPU s against
    108-123 (9 CPU s less).

    Parameters
    ----------
    n_workers : int
        Strategy workers (:func:`worker_count`), at least 2.
    cores : int, optional
        Default ``os.cpu_count()``.

    Examples
    --------
    >>> pool_size(3, cores=2), pool_size(3, cores=16), pool_size(2, cores=2)
    (3, 4, 2)
    """
    cores = cores or os.cpu_count() or 1
    return n_workers + 1 if cores > n_workers else n_workers


def open_run_dataset(info: RunInfo) -> tuple[Dataset | None, str]:
    """The run's dataset (``run.json``'s), or None and why not (no folder named, unreadable,
    manifest changed)."""
    root = info.dataset.dir
    if not root:
        return None, "run.json names no dataset folder"
    try:
        dataset = load_dataset(root)
    except BiomarkError as err:
        return None, str(err)
    expected = info.dataset.manifest_sha256
    if expected and dataset.manifest_sha256 != expected:
        return (
            None,
            f"{root}: the manifest changed since the run (sha256 differs); images are not used",
        )
    return dataset, ""


def _analyse_here(
    run: RunFolder,
    label: str,
    info: RunInfo,
    dataset: Dataset | None,
    settings: ReportSettings,
    radiomics: RadiomicsInput | None,
    lung_null: PendingNull | None = None,
) -> StrategyReport | RunError:
    try:
        return analyse_strategy(run, label, info, dataset, settings, radiomics, lung_null)
    except RunError as err:
        return err


class _StrategyLabel(logging.Filter):
    """Starts every log line of a worker with the strategy it is analysing (the workers' lines
    interleave)."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.prefix = f"[{label}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and not record.msg.startswith(self.prefix):
            record.msg = self.prefix + record.msg
        return True


@contextlib.contextmanager
def _labelled_log(label: str) -> Iterator[None]:
    """Label this process's log lines with ``label`` for the block (on every handler of the root
    logger)."""
    tag = _StrategyLabel(label)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(tag)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(tag)


@contextlib.contextmanager
def _opened_in_worker(
    run_root: str,
    label: str,
    setup: Callable[[], None] | None,
    parent_pid: int,
    splits_folder: str | None = None,
) -> Iterator[tuple[RunFolder, RunInfo, Dataset | None]]:
    """A worker's start: its memory settings, the command's set-up, its log label, the source
    audit's splits shared through ``splits_folder`` (:func:`shared_splits`), and the run and its
    dataset opened (in the worker: the parent's objects are not passed over)."""
    keep_freed_memory()  # before TensorFlow allocates, or it has no effect
    if os.getpid() != parent_pid:  # a worker of its own, which exits with the report
        large_blocks_from_heap()
        exit_without_teardown()
    if setup is not None:
        setup()
    sharing = shared_splits(splits_folder) if splits_folder else contextlib.nullcontext()
    with _labelled_log(label), sharing:
        run = RunFolder(run_root)
        info = run.read_info()
        dataset, _ = open_run_dataset(info)  # the parent has said why when there is none
        yield run, info, dataset


def _analyse_in_worker(
    run_root: str,
    label: str,
    settings: ReportSettings,
    radiomics: RadiomicsInput | None,
    setup: Callable[[], None] | None,
    parent_pid: int,
    lung_null: PendingNull | None = None,
    splits_folder: str | None = None,
) -> StrategyReport | RunError:
    """One strategy in a worker process: set up, open the run and its dataset, analyse."""
    opened = _opened_in_worker(run_root, label, setup, parent_pid, splits_folder)
    with opened as (run, info, dataset):
        return _analyse_here(run, label, info, dataset, settings, radiomics, lung_null)


def _lung_null_in_worker(
    run_root: str,
    settings: ReportSettings,
    setup: Callable[[], None] | None,
    parent_pid: int,
    pending: PendingNull,
) -> None:
    """The run's lung null in a worker process of its own (:mod:`biomark.report.random_units`)."""
    with _opened_in_worker(run_root, "lung null", setup, parent_pid) as (run, info, dataset):
        compute_and_store(run, info, dataset, settings, pending)


def analyse_strategies(
    run: RunFolder,
    labels: Sequence[str],
    info: RunInfo,
    dataset: Dataset | None,
    settings: ReportSettings,
    radiomics: Mapping[str, RadiomicsInput | None],
    *,
    setup: Callable[[], None] | None = None,
    while_last_runs: Callable[[], None] | None = None,
) -> dict[str, StrategyReport | RunError]:
    """Analyse each strategy, side by side in worker processes when there are several.

    Parameters
    ----------
    run : RunFolder
    labels : sequence of str
        Strategies with a finished fold.
    info : RunInfo
        The run's ``run.json``.
    dataset : Dataset or None
        The run's dataset, used when the strategies are analysed in this process.
    settings : ReportSettings
        ``settings.workers`` decides the processes (:func:`worker_count`).
    radiomics : mapping of str to RadiomicsInput or None
        Each strategy's radiomics.
    setup : callable, optional
        Run first in each worker process (picklable: a module-level function
        or a ``functools.partial`` of one), e.g. the command's logging set-up.
    while_last_runs : callable, optional
        Work of this process that needs no strategy, called once: with worker
        processes as soon as only one strategy is still running (a core is
        then free: on the 2-core demo the last strategy ran alone for about
        4 s, and the report's data-level source audit takes 3 s), else after
        the last strategy. Not called when a worker dies.

    Returns
    -------
    dict of str to StrategyReport or RunError
        In the order of ``labels``; a RunError for a strategy that could not
        be read.
    """
    n_workers = worker_count(settings.workers, len(labels))
    with tempfile.TemporaryDirectory(prefix="biomark-report-") as tmp:
        pending = PendingNull(str(Path(tmp) / "lung_null.pickle"))
        if n_workers <= 1:
            compute_and_store(run, info, dataset, settings, pending)
            results: dict[str, StrategyReport | RunError] = {}
            for label in labels:
                logger.info("analysing %s", label)
                results[label] = _analyse_here(
                    run, label, info, dataset, settings, radiomics.get(label), pending
                )
            if while_last_runs is not None:
                while_last_runs()
            return results
        return _side_by_side(
            run,
            labels,
            settings,
            radiomics,
            n_workers,
            pending,
            setup,
            while_last_runs,
            str(Path(tmp) / "source_splits"),
        )


def _side_by_side(
    run: RunFolder,
    labels: Sequence[str],
    settings: ReportSettings,
    radiomics: Mapping[str, RadiomicsInput | None],
    n_workers: int,
    pending: PendingNull,
    setup: Callable[[], None] | None,
    while_last_runs: Callable[[], None] | None,
    splits_folder: str,
) -> dict[str, StrategyReport | RunError]:
    """The strategies in ``n_workers`` worker processes, and the lung null beside them (the
    strategies read it when they need it): in a process of its own when a core is free for it,
    else first, in :func:`pool_size` processes. The processes, this one included, share the
    source audit's splits through ``splits_folder``."""
    processes = pool_size(n_workers)
    Path(splits_folder).mkdir(exist_ok=True)
    threads = threads_per_worker(processes)  # as worker_pool gives each of its processes
    logger.info(
        "analysing %s side by side in %d worker processes, the lung null %s (%d thread%s each)",
        ", ".join(labels),
        n_workers,
        "in one more" if processes > n_workers else "first in one of them",
        threads,
        "" if threads == 1 else "s",
    )
    root = str(Path(run.root).resolve())  # each worker opens the run itself
    # The null is submitted first, so it never waits for a strategy that waits for it.
    with worker_pool(processes) as pool:
        null_done = pool.submit(_lung_null_in_worker, root, settings, setup, os.getpid(), pending)
        futures = {
            label: pool.submit(
                _analyse_in_worker,
                root,
                label,
                settings,
                radiomics.get(label),
                setup,
                os.getpid(),
                pending,
                splits_folder,
            )
            for label in labels
        }
        try:
            if while_last_runs is not None:
                _until_one_runs(list(futures.values()))
                with shared_splits(splits_folder):
                    while_last_runs()
            results = {label: future.result() for label, future in futures.items()}
            null_done.result()
            return results
        except BrokenProcessPool as err:
            detail = how_a_worker_died(err)
            raise RunError(
                f"{run.root}: a worker process analysing the strategies died ({detail}); nothing "
                "was written. Re-run `biomark report` with --workers 1 to analyse them one after "
                "another in one process (less memory at once)"
            ) from err


def _until_one_runs(futures: list[Future]) -> None:
    """Wait until at most one of ``futures`` is still running; raise a dead worker's error at once.

    Raises
    ------
    BrokenProcessPool
        When a finished future holds it (a worker died).
    """
    while True:
        for future in futures:
            error = future.exception() if future.done() else None
            if isinstance(error, BrokenProcessPool):
                raise error
        running = [f for f in futures if not f.done()]
        if len(running) <= 1:
            return
        wait(running, return_when=FIRST_COMPLETED)
