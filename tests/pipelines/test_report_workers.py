"""The report's strategies analysed side by side in worker processes (synthetic runs without
models)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from biomark.exceptions import RunError
from biomark.features.deep import fold_dir
from biomark.features.run_folder import RunFolder
from biomark.pipelines import report_workers
from biomark.pipelines.report import analyse_run
from biomark.pipelines.report_workers import (
    _until_one_runs,
    analyse_strategies,
    pool_size,
    worker_count,
)
from biomark.report.report_strategy import ReportSettings

STRATEGIES = ("scratch", "frozen", "finetune:3")
SETTINGS = ReportSettings(top_k=4, n_bootstrap=50, n_mixed=1)


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory: pytest.TempPathFactory, make_feature_run) -> Path:
    run = make_feature_run(
        tmp_path_factory.mktemp("workers") / "runs" / "synth",
        strategies=STRATEGIES,
        n_folds=3,
        n_per_fold=40,
        d=16,
    )
    for s in STRATEGIES:
        for f in range(3):
            (fold_dir(run, s, f) / "done.json").write_text(json.dumps({"fold": f}))
    return run


@pytest.mark.parametrize(
    ("requested", "n_strategies", "cores", "expected"),
    [
        (None, 3, 2, 3),  # one per strategy on 2 or more cores
        (None, 3, 16, 3),
        (None, 3, 1, 1),  # one core: one after another
        (None, 1, 8, 1),
        (2, 3, 2, 2),
        (8, 3, 2, 3),  # never more than the strategies
        (1, 3, 16, 1),
    ],
)
def test_worker_count(requested: int | None, n_strategies: int, cores: int, expected: int) -> None:
    assert worker_count(requested, n_strategies, cores=cores) == expected


@pytest.mark.parametrize(
    ("n_workers", "cores", "expected"),
    [
        (3, 2, 3),  # no core free for the null: it runs first in a strategy's process
        (2, 2, 2),
        (3, 4, 4),  # a process of its own
        (3, 16, 4),
    ],
)
def test_pool_size(n_workers: int, cores: int, expected: int) -> None:
    assert pool_size(n_workers, cores=cores) == expected


@pytest.mark.parametrize("null_alone", [True, False])
def test_side_by_side_gives_the_same_report_as_one_after_another(
    feature_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, null_alone: bool
) -> None:
    """With the lung null in a process of its own, or first in a strategy's (the last strategy
    then runs after it there)."""
    monkeypatch.setattr(report_workers, "pool_size", lambda n: n + 1 if null_alone else n)
    side = analyse_run(feature_run, replace(SETTINGS, workers=3), reports=tmp_path / "a")
    alone = analyse_run(feature_run, replace(SETTINGS, workers=1), reports=tmp_path / "b")
    assert list(side.strategies) == list(alone.strategies) == list(STRATEGIES)  # the run's order
    for label in STRATEGIES:
        a, b = side.strategies[label], alone.strategies[label]
        assert a.candidates is not None and len(a.candidates) > 0
        pd.testing.assert_frame_equal(a.candidates, b.candidates, rtol=1e-9)
        assert a.seconds["total"] > 0  # timed in the worker, handed back with the rest


def test_a_strategy_that_cannot_be_read_is_left_out_and_the_others_analysed(
    feature_run: Path, tmp_path: Path
) -> None:
    """A worker's RunError comes back as that strategy's result and becomes a missing section."""
    run = tmp_path / "synth"
    shutil.copytree(feature_run, run)
    for f in range(3):
        (fold_dir(run, "frozen", f) / "features.parquet").write_bytes(b"not parquet")
    results = analyse_strategies(
        RunFolder(run),
        list(STRATEGIES),
        RunFolder(run).read_info(),
        None,
        replace(SETTINGS, workers=3),
        {},
    )
    assert isinstance(results["frozen"], RunError)
    assert "no readable features.parquet" in str(results["frozen"])
    assert not isinstance(results["scratch"], RunError) and not isinstance(
        results["finetune:3"], RunError
    )
    data = analyse_run(run, replace(SETTINGS, workers=3), reports=tmp_path / "reports")
    assert list(data.strategies) == ["scratch", "finetune:3"]
    assert any(m["section"] == "strategy frozen" for m in data.missing)


def test_a_worker_that_dies_is_a_clear_error(feature_run: Path) -> None:
    with pytest.raises(RunError, match=r"worker process .* died .*--workers 1"):
        analyse_strategies(
            RunFolder(feature_run),
            ["scratch", "frozen"],
            RunFolder(feature_run).read_info(),
            None,
            replace(SETTINGS, workers=2),
            {},
            setup=partial(os._exit, 3),  # the worker process ends before it analyses anything
        )


def test_each_workers_log_lines_name_its_strategy(feature_run: Path, capfd) -> None:
    """The workers' lines interleave on the command's standard error; each starts with its
    strategy."""
    results = analyse_strategies(
        RunFolder(feature_run),
        ["scratch", "frozen"],
        RunFolder(feature_run).read_info(),
        None,
        replace(SETTINGS, workers=2),
        {},
        setup=partial(logging.basicConfig, level=logging.INFO, format="%(name)s: %(message)s"),
    )
    assert not any(isinstance(r, RunError) for r in results.values())
    err = capfd.readouterr().err
    for label in ("scratch", "frozen"):
        assert f"biomark.report.report_strategy: [{label}] {label} analysed in" in err
    lines = [line for line in err.splitlines() if line.startswith("biomark.")]
    assert lines and all(": [scratch] " in line or ": [frozen] " in line for line in lines)


@pytest.mark.parametrize("workers", [1, 2])
def test_work_while_the_last_strategy_runs_is_done_once(feature_run: Path, workers: int) -> None:
    """One strategy after another: after the last; side by side: once at most one still runs."""
    seen: list[int] = []
    results = analyse_strategies(
        RunFolder(feature_run),
        ["scratch", "frozen"],
        RunFolder(feature_run).read_info(),
        None,
        replace(SETTINGS, workers=workers),
        {},
        while_last_runs=lambda: seen.append(len(seen)),
    )
    assert seen == [0]
    assert set(results) == {"scratch", "frozen"}
    assert not any(isinstance(r, RunError) for r in results.values())


def test_work_while_the_last_strategy_runs_waits_for_all_but_one() -> None:
    first, second, last = Future(), Future(), Future()

    def finish_two() -> None:
        first.set_result("a")
        time.sleep(0.05)  # only orders the events: the wait must see the second one too
        second.set_result("b")

    helper = threading.Thread(target=finish_two)
    helper.start()
    _until_one_runs([first, second, last])
    helper.join()
    assert first.done() and second.done() and not last.done()


def test_work_while_the_last_strategy_runs_is_skipped_when_a_worker_died() -> None:
    dead, running = Future(), Future()
    dead.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
    with pytest.raises(BrokenProcessPool):
        _until_one_runs([dead, running, Future()])
