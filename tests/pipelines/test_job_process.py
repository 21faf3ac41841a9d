"""The job process a cluster worker trains a run's extract jobs in (biomark.pipelines.job_process).

One tiny run (3 classes x 6 images at 32 px, frozen from a random backbone, 2 folds, 1 epoch)
trains both folds through one job process and equals the single-process reference run; the
other tests start job processes that train nothing.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from biomark.exceptions import RunError
from biomark.pipelines import job_process
from biomark.pipelines.executor import SerialExecutor
from biomark.pipelines.extract import run_extract
from biomark.pipelines.job_process import JobProcess, close_job_processes

import run_checks  # noqa: E402  (tests/ is on sys.path, see tests/conftest.py)
import tiny_data  # noqa: E402

JOB = "frozen"
REQUEST = {"run_dir": "/nonexistent", "strategy": JOB, "fold": 0, "dataset_dir": None}


@pytest.fixture(autouse=True)
def no_job_process_left():
    yield
    close_job_processes()


def test_a_runs_folds_train_one_after_another_in_one_process_as_in_a_single_process_run(
    cluster_data: Path, cluster_reference: Path, tmp_path: Path
) -> None:
    """The second fold reuses the first fold's compiled model in the same job process, and both
    folds equal the reference run, trained in the test session's own process."""
    executor = SerialExecutor()
    executor.isolate = True  # what a Dask worker does, here without a cluster
    plan = tiny_data.tiny_plan(cluster_data, tmp_path, strategies=[JOB], **{"cv.k": 2})
    run = run_extract(plan, executor=executor)
    run_checks.assert_same_run(run, cluster_reference, [JOB], 2)
    reused = [
        json.loads((run / JOB / f"fold_{fold:02d}" / "timings.json").read_text())["execution"][
            "pipeline"
        ]["reused_compiled_model"]
        for fold in range(2)
    ]
    assert reused == [False, True]
    (kept,) = [p for ps in job_process._IDLE.values() for p in ps]
    assert kept.alive() and kept.jobs == 2


def test_a_job_process_that_dies_is_named_and_the_next_job_gets_a_new_one() -> None:
    process = JobProcess(("run", "", ""))
    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(RunError, match=r"frozen fold 0: the job's process ended with status -9"):
        process.run(REQUEST)
    job_process._give_back(process)
    fresh = job_process._take(("run", "", ""))
    assert fresh is not process and fresh.alive()
    fresh.close()


def test_a_job_process_left_idle_takes_no_job_and_run_isolated_sends_it_on() -> None:
    """A process that exited idle answers None (the job was not taken), not an error."""
    process = JobProcess(("run", "", ""), idle_seconds=0.1)
    assert process._proc.wait(timeout=120) == job_process._IDLE_EXIT
    assert process.run(REQUEST) is None
    process.close()


def test_a_job_of_another_run_ends_the_idle_processes_of_the_last() -> None:
    first = JobProcess(("run A", "", ""))
    job_process._give_back(first)
    assert job_process._take(("run A", "", "")) is first  # the same run: kept
    job_process._give_back(first)
    second = job_process._take(("run B", "", ""))
    assert second is not first
    assert first._proc.wait(timeout=120) == 0  # its request pipe closed: it ended by itself
    second.close()


def test_a_run_keeps_its_job_process_as_jobs_finish_but_not_when_started_again(
    tmp_path: Path,
) -> None:
    """The key reads the plan hash and creation time of run.json, not the job entries that the
    client adds as jobs finish."""
    run_json = tmp_path / "run.json"
    info = {"created": "2026-12-07T12:58:36+00:00", "plan_hash": "660d583852965998", "jobs": {}}
    run_json.write_text(json.dumps(info))
    first = job_process._plan_digest(str(tmp_path))
    run_json.write_text(json.dumps({**info, "jobs": {"frozen_fold_00": {"seconds": 46.0}}}))
    assert job_process._plan_digest(str(tmp_path)) == first
    run_json.write_text(json.dumps({**info, "plan_hash": "0000000000000000"}))
    assert job_process._plan_digest(str(tmp_path)) != first
    assert job_process._plan_digest(str(tmp_path / "no run")) == ""


def test_a_failed_job_raises_its_error_and_ends_its_process(tmp_path: Path) -> None:
    """The job's own error comes back with its type; its process ends, so the next job starts in
    a fresh one."""
    with pytest.raises(RunError, match=r"RunError: .*run\.json") as raised:
        job_process.run_isolated(str(tmp_path / "no run"), JOB, 0)
    assert "the job's process ended" not in str(raised.value)  # an answer, not a death
    assert not job_process._IDLE  # the process was not kept
