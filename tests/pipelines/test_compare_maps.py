"""The strategies' maps and probes beside the CKA tests (biomark.pipelines.compare_maps)."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
import pytest

from biomark.analysis.compare import MapInput, write_compare_csv
from biomark.analysis.embedding import EmbeddingResult, load_umap
from biomark.features.worker_pool import InlineExecutor, worker_pool
from biomark.pipelines.compare import compare_strategies, run_compare
from biomark.pipelines.compare_maps import MapWorker, map_worker


def _item(seed: int) -> MapInput:
    rng = np.random.default_rng(seed)
    labels = np.repeat(["covid", "normal", "pneumonia"], 20)
    X = rng.standard_normal((60, 6)) + (labels == "covid")[:, None]
    return MapInput(X, labels, np.tile([0, 1, 2], 20), dict(k=5, umap=False, random_state=0))


def _fresh(item: MapInput) -> EmbeddingResult:
    """``item``'s map computed now, not served from the cache of maps already computed."""
    import biomark.analysis.embedding as embedding

    embedding._EMBEDDINGS.clear()
    return MapInput(item.X, item.labels, item.folds, item.options).embed()


def _same(got: EmbeddingResult, want: EmbeddingResult) -> None:
    assert got is not want
    assert got.class_purity_features == want.class_purity_features
    assert got.fold_purity_features == want.fold_purity_features
    np.testing.assert_array_equal(got.probe_accuracy, want.probe_accuracy)
    np.testing.assert_array_equal(got.within_fold_accuracy, want.within_fold_accuracy)


class _HeldExecutor(Executor):
    """Takes work and runs none of it: the test finishes its futures by hand."""

    def __init__(self) -> None:
        self.submitted: list[tuple[object, Future]] = []

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN202 - Executor's signature
        future: Future = Future()
        self.submitted.append((fn, future))
        return future


def test_one_map_at_a_time_goes_to_the_worker_and_this_process_takes_one_it_has_not_started():
    executor = _HeldExecutor()
    maps = MapWorker(executor)
    a, b, c = _item(0), _item(1), _item(2)
    for name, item in (("a", a), ("b", b), ("c", c), ("a again", _item(0))):
        maps.submit(name, item)
    assert len(executor.submitted) == 1  # only a is handed over; the same input is queued once
    _same(maps.result("b", b), _fresh(b))  # not started by the worker: computed here
    assert len(executor.submitted) == 1
    fn, future = executor.submitted[0]
    future.set_result(fn())  # the worker finishes a: the next queued, c, is handed over
    assert len(executor.submitted) == 2
    _same(maps.result("a", a), _fresh(a))
    fn, future = executor.submitted[1]
    future.set_result(fn())
    _same(maps.result("c", c), _fresh(c))


def test_start_imports_umap_in_the_worker_only_when_maps_are_drawn():
    executor = _HeldExecutor()
    MapWorker(executor).start(umap=False)
    assert executor.submitted == []
    MapWorker(executor).start(umap=True)
    assert [fn for fn, _ in executor.submitted] == [load_umap]
    MapWorker(InlineExecutor()).start(umap=True)  # nothing to start beside this process


@dataclass(frozen=True)
class _Noted(MapInput):
    """A map input that records which thread computed it, and signals when it is done."""

    done: threading.Event = field(default_factory=threading.Event)
    threads: list[str] = field(default_factory=list)

    def embed(self) -> EmbeddingResult:
        result = super().embed()
        self.threads.append(threading.current_thread().name)
        self.done.set()
        return result


@dataclass(frozen=True)
class _AfterOther(_Noted):
    """One that starts only once ``other`` is done (a worker busy until then)."""

    other: threading.Event | None = None

    def embed(self) -> EmbeddingResult:
        assert self.other is not None and self.other.wait(60), "the queued map was not taken"
        return super().embed()


def test_waiting_for_the_worker_this_process_computes_the_map_needed_last():
    last = _Noted(*vars(_item(2)).values())
    first = _AfterOther(*vars(_item(0)).values(), other=last.done)
    middle = _Noted(*vars(_item(1)).values())
    with ThreadPoolExecutor(1, thread_name_prefix="worker") as executor:
        maps = MapWorker(executor)
        for name, item in (("first", first), ("middle", middle), ("last", last)):
            maps.submit(name, item)
        _same(maps.result("first", first), _fresh(_item(0)))
        assert last.threads == [threading.current_thread().name]  # taken here while waiting
        assert first.threads[0].startswith("worker")
        _same(maps.result("last", last), _fresh(_item(2)))
        _same(maps.result("middle", middle), _fresh(_item(1)))
    assert len(last.threads) == 1 and len(middle.threads) == 1  # each computed once


def test_a_dead_worker_costs_no_map(caplog):
    executor = _HeldExecutor()
    maps = MapWorker(executor)
    a, b = _item(0), _item(1)
    maps.submit("scratch", a)
    maps.submit("frozen", b)
    executor.submitted[0][1].set_exception(
        BrokenProcessPool("A worker stopped.\nThe exit codes of the workers are {SIGKILL(-9)}")
    )
    assert len(executor.submitted) == 1  # nothing more is handed to a broken pool
    with caplog.at_level(logging.WARNING, logger="biomark.pipelines.compare_maps"):
        _same(maps.result("scratch", a), _fresh(a))
    assert "scratch: the worker process computing the maps died" in caplog.text
    assert "SIGKILL(-9)" in caplog.text and "computing its map and probes here" in caplog.text
    _same(maps.result("frozen", b), _fresh(b))
    assert len(executor.submitted) == 1


def test_a_background_pool_of_one_is_another_process():
    with worker_pool(1, background=True) as pool:
        assert pool.submit(os.getpid).result() != os.getpid()
    with map_worker() as maps:
        item = _item(3)
        maps.submit("scratch", item)
        _same(maps.result("scratch", item), _fresh(item))


def test_compare_all_writes_what_each_pair_compared_alone_writes(make_feature_run, tmp_path):
    run = make_feature_run(tmp_path / "demo", n_per_fold=20, d=8)
    compared = run_compare(
        run, all_pairs=True, reports=tmp_path / "reports", permutations=20, bootstrap=20, umap=False
    )
    assert len(compared) == 3
    for pair in compared:
        alone = compare_strategies(
            run, pair.result.a, pair.result.b, pair.result.settings, umap=False
        )
        expected = write_compare_csv(alone, tmp_path / "alone.csv")
        assert pair.csv.read_bytes() == expected.read_bytes()


@pytest.fixture(autouse=True)
def _no_cached_maps(monkeypatch):
    """Every map here is computed, not served from another test's cache."""
    from collections import OrderedDict

    import biomark.analysis.embedding as embedding

    monkeypatch.setattr(embedding, "_EMBEDDINGS", OrderedDict())
