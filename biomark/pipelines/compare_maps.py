"""The strategies' maps and probes of ``biomark compare``, in a worker process beside its CKA tests.

``biomark compare --all`` computes two kinds of numbers: each pair's CKA
tests (permutations and bootstrap on the folds' Gram matrices) and each
strategy's UMAP map, kNN purity and linear probes. Both ran one after the
other in one process, which kept one of two cores busy (the 2-core demo's
compare took 69 s wall, 99 CPU s). The maps need nothing from the tests, so
:func:`map_worker` hands them, one at a time, to one worker process
(:func:`biomark.features.worker_pool.worker_pool`) while this process runs
the tests. Once the tests are done, this process computes the maps the
worker has not reached, the one needed last first, while it waits. The
first map of a fresh environment pays numba's compilation of umap-learn and
pynndescent (about 20 s on a 2-core AMD EPYC, once per environment), so the
worker starts with umap-learn's import while this process still reads the
run (3.4 s less on the demo, alternated runs).

Where a map is computed does not change it: on the demo every page's numbers
and maps are byte for byte those of the maps computed in this process (the
worker gets one BLAS thread, this process two). A worker that dies (out of
memory, killed) costs no result: its maps are computed here, with a warning
that says why.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool

from biomark.analysis.compare import MapInput
from biomark.analysis.embedding import EmbeddingResult, load_umap
from biomark.features.worker_pool import InlineExecutor, how_a_worker_died, worker_pool

__all__ = ["MapWorker", "map_worker"]

logger = logging.getLogger(__name__)


class MapWorker:
    """Strategies' maps and probes, each input computed once: in the executor, one at a time, or
    here when this process asks for one the executor has not started.

    Parameters
    ----------
    executor : concurrent.futures.Executor
        Where the maps are computed (a worker process, or this process for an
        :class:`~biomark.features.worker_pool.InlineExecutor`).

    Examples
    --------
    >>> import numpy as np
    >>> from biomark.analysis.compare import MapInput
    >>> X = np.random.default_rng(0).standard_normal((40, 3))
    >>> labels, folds = np.repeat(["a", "b"], 20), np.tile([0, 1], 20)
    >>> item = MapInput(X, labels, folds, dict(k=5, umap=False))
    >>> maps = MapWorker(InlineExecutor())
    >>> maps.submit("scratch", item)
    >>> round(maps.result("scratch", item).class_purity_chance, 2)
    0.5
    """

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.RLock()  # the executor's thread calls back into _send_next
        self._queued: OrderedDict[str, MapInput] = OrderedDict()  # not handed over yet
        self._futures: dict[str, Future] = {}  # handed over, or computed here
        self._in_flight: str | None = None
        self._names: dict[str, str] = {}  # the strategy each key was queued for, for the log

    def start(self, umap: bool) -> None:
        """Start the worker now, importing umap-learn there when maps will be drawn: in a fresh
        environment that compiles its numba code (about 12 s), while this process reads the run."""
        if umap and not isinstance(self._executor, InlineExecutor):
            self._executor.submit(load_umap)

    def submit(self, strategy: str, item: MapInput) -> None:
        """Queue ``strategy``'s map and probes of ``item``, unless the same input was queued."""
        self._submit(item.key(), strategy, item)

    def _submit(self, key: str, strategy: str, item: MapInput) -> None:
        # the key hashes the whole feature matrix (about 10 MB on the demo): taken once per call
        with self._lock:
            if key in self._futures or key in self._queued:
                return
            logger.info(
                "%s: %s, kNN purity and linear probes%s",
                strategy,
                "UMAP" if item.options["umap"] else "no UMAP",
                ""
                if isinstance(self._executor, InlineExecutor)
                else ", queued for a worker process",
            )
            self._queued[key] = item
            self._names[key] = strategy
            self._send_next()

    def result(self, strategy: str, item: MapInput) -> EmbeddingResult:
        """``strategy``'s map and probes of ``item``, computed here if the worker has not started.

        While the worker computes it, this process computes the queued map
        needed last, if any.

        Raises
        ------
        Exception
            What computing the map raised (e.g. a ValueError on these features).
        """
        key = item.key()
        self._submit(key, strategy, item)
        while True:
            with self._lock:
                future = self._futures.get(key)
                if future is None:  # still queued: this process is free
                    del self._queued[key]
                    other = None
                elif future.done() or not self._queued:
                    break
                else:
                    other, queued = self._queued.popitem(last=True)
            if other is None:
                logger.info("%s: map and probes computed here, the worker being busy", strategy)
                return self._here(key, item)
            logger.info(
                "%s: map and probes computed here while the worker computes %s's",
                self._names[other],
                strategy,
            )
            self._here(other, queued)
        try:
            return future.result()
        except BrokenProcessPool as err:
            logger.warning(
                "%s: the worker process computing the maps died (%s); computing its map and "
                "probes here instead",
                strategy,
                how_a_worker_died(err),
            )
            return self._here(key, item)

    def _send_next(self) -> None:
        """Hand the next queued map to the executor when none is in flight (under the lock)."""
        if self._in_flight is not None or not self._queued:
            return
        key, item = self._queued.popitem(last=False)
        try:
            future = self._executor.submit(item.embed)
        except (BrokenProcessPool, RuntimeError):  # a dead or shut-down pool takes nothing more
            self._queued[key] = item
            self._queued.move_to_end(key, last=False)
            return
        self._futures[key], self._in_flight = future, key
        future.add_done_callback(self._sent_done)

    def _sent_done(self, future: Future) -> None:
        with self._lock:
            self._in_flight = None
            if not future.cancelled() and not isinstance(future.exception(), BrokenProcessPool):
                self._send_next()

    def _here(self, key: str, item: MapInput) -> EmbeddingResult:
        """``item``'s map and probes computed in this process, kept for the next that asks."""
        result = item.embed()
        done: Future = Future()
        done.set_result(result)
        with self._lock:
            self._futures[key] = done
        return result


@contextlib.contextmanager
def map_worker() -> Iterator[MapWorker]:
    """A :class:`MapWorker` with one worker process beside this one, shut down on leaving.

    Yields
    ------
    MapWorker
        Its process starts with the first ``submit`` and exits with this one;
        on an exception in the block it is killed.
    """
    with worker_pool(1, background=True) as pool:
        yield MapWorker(pool)
