"""The paper-size grid's executor wrapper (``benchmarks/paper_grid.py``): which jobs it
submits, in which order, and that everything else is the wrapped executor's."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest

from biomark.pipelines.executor import SerialExecutor

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_grid.py"


class Job(NamedTuple):
    strategy: str
    fold: int


class RemoteSerial(SerialExecutor):
    """A serial executor whose settings differ from the defaults, to see them read through."""

    retries, isolate, remote = 3, True, True

    def __init__(self) -> None:
        self.probed: list[tuple[Any, dict[str, Any]]] = []

    def preflight(self, shared: Any, **kwargs: Any) -> None:
        self.probed.append((shared, kwargs))

    def chunk_runner(self, cache_url: str | None = None) -> Any:
        return ("runner", cache_url)


@pytest.fixture(scope="module")
def paper_grid() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paper_grid", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def submitted(executor: Any, jobs: list[Job]) -> list[Job]:
    """The jobs ``executor`` runs, in the order it runs them (called as the extract's jobs are:
    strategy and fold last)."""
    outcomes = executor.map(
        lambda job, strategy, fold: job, jobs, args=lambda job: (job, job.strategy, job.fold)
    )
    return [outcome.value for outcome in outcomes]


def test_first_folds_and_order_choose_and_sort_the_jobs(paper_grid: ModuleType) -> None:
    jobs = [
        Job(strategy, fold) for strategy in ("scratch", "frozen", "finetune:3") for fold in range(3)
    ]
    executor = paper_grid.grid_executor(first_folds=2, order=["finetune:3", "scratch", "frozen"])
    assert submitted(executor, jobs) == [
        Job("finetune:3", 0),
        Job("finetune:3", 1),
        Job("scratch", 0),
        Job("scratch", 1),
        Job("frozen", 0),
        Job("frozen", 1),
    ]


def test_stagger_submits_every_strategys_fold_0_first(
    paper_grid: ModuleType, tmp_path: Path
) -> None:
    from biomark.features.deep import fold_dir
    from biomark.train.epochs import HISTORY_FILE

    for strategy in ("scratch", "frozen"):  # the leads have trained an epoch: nothing waits
        history = fold_dir(tmp_path, strategy, 0) / HISTORY_FILE
        history.parent.mkdir(parents=True)
        history.write_text("epoch\n0\n")
    jobs = [Job(strategy, fold) for strategy in ("scratch", "frozen") for fold in range(2)]
    executor = paper_grid.grid_executor(stagger=tmp_path)
    assert submitted(executor, jobs) == [
        Job("scratch", 0),
        Job("frozen", 0),
        Job("scratch", 1),
        Job("frozen", 1),
    ]


def test_everything_else_is_the_wrapped_executors(paper_grid: ModuleType, tmp_path: Path) -> None:
    inner = RemoteSerial()
    executor = paper_grid.grid_executor(inner)
    assert (executor.retries, executor.isolate, executor.remote) == (3, True, True)
    assert executor.name == "serial"
    assert executor.workers(5) == 5
    assert executor.chunk_runner("cache") == ("runner", "cache")
    assert executor.shared_path(tmp_path, "run folder") == str(tmp_path)
    executor.preflight(tmp_path, read_paths=["data"], packages=("biomark", "keras"))
    assert inner.probed == [(tmp_path, {"read_paths": ["data"], "packages": ("biomark", "keras")})]
    with executor.opened() as opened:
        assert opened is executor
