"""biomark extract / radiomics on Dask clusters (DaskExecutor), checked against single-process runs.

One tiny plan (3 classes x 6 images at 32 px, MobileNetV2 alpha 0.35, 2 folds,
1 epoch, frozen + finetune:1 from a random backbone) is run once as the
reference (shared, see ``cluster_reference`` in tests/conftest.py). Then:

* a LocalCluster (2 worker processes) runs one job submitted twice (its extract of a
  whole run, into a folder at a URL, is checked against the reference in
  ``test_url_storage.py``);
* a separate-process cluster (``dask scheduler`` + two ``dask worker``
  processes, each with a nanny, on 127.0.0.1) runs the two frozen jobs while
  the test SIGKILLs the worker process of the first job mid-training; the nanny
  restarts it, Dask reruns the lost job, and every output equals the reference;
  a re-submission then runs nothing;
* radiomics image batches go through the LocalCluster and give the reference
  table exactly, and through the separate-process cluster with a worker killed.

Equality: each cluster job trains in its worker's job process, with no Dask threads beside it
(see :mod:`biomark.pipelines.job_process`), so feature tables and
metrics equal the single-process run's bit for bit on the same machine; the
test allows atol 1e-5 on features/probabilities (CPU kernels may differ
across machines) and compares metrics to 1e-9.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from biomark.cluster import ClusterError
from biomark.features.deep import fold_dir
from biomark.features.run_folder import ATTEMPTS_DIR
from biomark.pipelines.executor import DaskExecutor
from biomark.pipelines.extract import run_extract
from biomark.pipelines.radiomics import extract_radiomics

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.distributed

DASK = str(Path(sys.executable).with_name("dask"))
#: The strategy of the cluster jobs: the machinery does not depend on it, and a frozen job's
#: fresh process traces no backbone gradients (see ``run_checks.CLUSTER_STRATEGIES``).
JOB = "frozen"
K = 2


import run_checks  # noqa: E402  (tests/ is on sys.path, see tests/conftest.py)
import tiny_data as helpers  # noqa: E402
from run_checks import attempts, stop_process_group  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(cluster_data: Path) -> Path:
    """3 classes x 6 images at 32 px (shared, see tests/conftest.py)."""
    return cluster_data


def plan_for(data: Path, out: Path):
    return helpers.tiny_plan(data, out, strategies=[JOB], **{"cv.k": K})


@pytest.fixture(scope="module")
def reference(cluster_reference: Path) -> Path:
    """The single-process run of the plan (shared, see tests/conftest.py)."""
    return cluster_reference


def assert_same_run(run: Path, ref: Path) -> None:
    run_checks.assert_same_run(run, ref, [JOB], K)


def run_extract_distributed(plan, scheduler, **options):
    """``biomark extract --scheduler``: the run's jobs through a DaskExecutor."""
    executor = DaskExecutor(scheduler, timeout=options.pop("timeout", 10.0))
    return run_extract(plan, executor=executor, **options)


def run_radiomics_distributed(data, params, scheduler, **options):
    """``biomark radiomics --scheduler``: the image batches through a DaskExecutor."""
    return extract_radiomics(data, params, executor=DaskExecutor(scheduler), **options)


# --------------------------------------------------------------------------- #
# LocalCluster
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def local_client():
    from biomark.cluster import open_cluster

    with open_cluster("local:2", timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


def test_unreachable_scheduler_starts_nothing(data_dir: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=f"tcp://127.0.0.1:{port}"):
        run_extract_distributed(
            plan_for(data_dir, tmp_path / "runs"), f"tcp://127.0.0.1:{port}", timeout=2
        )
    assert not (tmp_path / "runs").exists()


def test_radiomics_batches_equal_single_process(local_client, tmp_path: Path) -> None:
    from biomark.features.radiomics_params import load_params
    from biomark.features.radiomics_run import run_radiomics

    data = helpers.make_dataset(tmp_path / "a", n_per_class=4, size=64)
    shutil.copytree(data, tmp_path / "b")
    params = load_params(Path(__file__).resolve().parents[2] / "analyses" / "radiomics_cxr2d.yaml")
    serial = run_radiomics(tmp_path / "a", params, region="image", jobs=1)
    spread = run_radiomics_distributed(tmp_path / "b", params, local_client, region="image")
    assert spread.info["counts"]["computed"] == 12
    pd.testing.assert_frame_equal(spread.features, serial.features)
    pd.testing.assert_frame_equal(spread.failures, serial.failures)
    again = run_radiomics_distributed(tmp_path / "b", params, local_client, region="image")
    assert again.info["counts"]["computed"] == 0 and again.info["counts"]["from_cache"] == 12


def test_jobs_start_in_the_order_given(local_client, tmp_path: Path) -> None:
    """The executor keeps one job per worker thread in flight and starts them in the plan's
    order (slow strategies first), which Dask alone does not: a job at place k starts only
    after k - (threads - 1) jobs have finished."""

    def job(folder: str, place: int) -> int:  # nested: shipped to the workers by value
        finished_before = len(list(Path(folder).glob("done-*")))
        Path(folder, f"done-{place}").write_text("")
        return finished_before

    names = [f"{s}-{f}" for s in ("scratch", "frozen", "finetune_3") for f in range(3)]
    executor = DaskExecutor(local_client)
    with executor.opened():
        outcomes = list(
            executor.map(
                job,
                list(range(len(names))),
                args=lambda place: (str(tmp_path), place),
                key=lambda place: f"biomark-extract-test-{names[place]}",
            )
        )
    threads = sum(local_client.nthreads().values())
    finished_before = {o.item: o.value for o in outcomes}
    assert sorted(finished_before) == list(range(len(names)))
    assert all(finished_before[k] >= k - (threads - 1) for k in finished_before), finished_before


def test_the_same_job_submitted_twice_trains_once(
    local_client, data_dir: Path, tmp_path: Path
) -> None:
    """Two concurrent submissions of one fold (two clients, a resubmission): the job lock lets one
    train."""
    from biomark.pipelines.attempt import attempt_job
    from biomark.pipelines.extract import prepare_run

    setup = prepare_run(plan_for(data_dir, tmp_path))
    futures = [
        local_client.submit(attempt_job, str(setup.run_dir), JOB, 0, isolate=False, pure=False)
        for _ in range(2)
    ]
    outcomes = local_client.gather(futures)
    assert sorted(o["skipped"] for o in outcomes) == [False, True]
    assert len({o["worker"] for o in outcomes}) == 2, "both ran at the same time, on both workers"
    assert len(attempts(setup.run_dir)) == 2
    trained = next(o for o in outcomes if not o["skipped"])["record"]
    waited = next(o for o in outcomes if o["skipped"])["record"]
    assert waited == trained, "the waiting job reports the finished fold's metrics"


def test_two_serial_runs_of_one_job_train_it_once(data_dir: Path, tmp_path: Path, caplog) -> None:
    """Two ``biomark extract`` of one run on one machine (no Dask): the job's file lock lets one
    train.

    Threads stand in for the two processes: ``flock`` locks belong to each
    open of the lock file, so they exclude each other within a process too.
    """
    from biomark.pipelines.attempt import attempt_job, job_lock
    from biomark.pipelines.extract import prepare_run

    setup = prepare_run(plan_for(data_dir, tmp_path))
    run = str(setup.run_dir.resolve())
    outcomes: list[dict[str, Any]] = []
    with job_lock(run, JOB, 0):  # the first run holds the job
        second = threading.Thread(
            target=lambda: outcomes.append(attempt_job(run, JOB, 0, isolate=False))
        )
        with caplog.at_level("INFO", logger="biomark.pipelines.attempt"):
            second.start()
            deadline = time.monotonic() + 120  # a bound for a stuck test, not a timing claim
            while "waiting for it" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "frozen fold 0: another process on this machine is training it" in caplog.text
        assert second.is_alive() and not outcomes, "the second waits while the first holds the job"
        outcomes.append(attempt_job(run, JOB, 0, isolate=False, lock=False))  # the first trains
    second.join(timeout=300)
    assert [o["skipped"] for o in outcomes] == [False, True]
    assert outcomes[1]["record"] == outcomes[0]["record"], (
        "the waiting run reports the finished fold"
    )
    assert len(list((setup.run_dir / ".cluster" / "locks").glob("*.lock"))) == 1


# --------------------------------------------------------------------------- #
# `dask scheduler` + `dask worker` processes; a worker killed mid-job
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def worker_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary directory (``TMPDIR``) of the ``process_cluster`` workers and their jobs."""
    return tmp_path_factory.mktemp("worker-tmp")


@pytest.fixture(scope="module")
def process_cluster(tmp_path_factory: pytest.TempPathFactory, worker_tmpdir: Path):
    """``dask scheduler`` and two ``dask worker`` (with nanny) processes on 127.0.0.1."""
    base = tmp_path_factory.mktemp("cluster")
    scheduler_file = base / "scheduler.json"
    procs: list[subprocess.Popen] = []

    def start(args: list[str], log: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            args,
            stdout=open(base / log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=base,
            env={**os.environ, "TMPDIR": str(worker_tmpdir)},
        )
        procs.append(proc)
        return proc

    try:
        start(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            "scheduler.log",
        )
        deadline = time.time() + 120  # waits for readiness (a loaded machine starts it slowly)
        while not scheduler_file.is_file() and time.time() < deadline:
            time.sleep(0.2)
        for i in range(2):
            start(
                [
                    DASK,
                    "worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                    "--local-directory",
                    str(base / f"w{i}"),
                ],
                f"worker{i}.log",
            )
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            yield client
    finally:
        for proc in reversed(procs):
            stop_process_group(proc)


def test_worker_killed_mid_job(
    process_cluster, worker_tmpdir: Path, data_dir: Path, reference: Path, tmp_path: Path
) -> None:
    client = process_cluster
    plan = plan_for(data_dir, tmp_path)  # two jobs: one killed and rerun, one left alone
    run = tmp_path / plan.name
    outcome: dict[str, Any] = {}

    def submit() -> None:
        try:
            outcome["run"] = run_extract_distributed(plan, client)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            outcome["error"] = err

    thread = threading.Thread(target=submit)
    thread.start()
    deadline = time.time() + 120
    victim = None
    while victim is None and time.time() < deadline and thread.is_alive():
        started = attempts(run) if (run / ATTEMPTS_DIR).is_dir() else []
        if started:
            victim = started[0]
        time.sleep(0.1)
    assert victim is not None, "no job started"
    time.sleep(2.0)  # the job is loading TensorFlow / training in its process
    assert not (fold_dir(run, victim["strategy"], victim["fold"]) / "done.json").is_file(), (
        "job ended too soon"
    )
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(300)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]

    assert_same_run(outcome["run"], reference)
    tries = [a for a in attempts(run) if a["job"] == victim["job"]]
    assert len(tries) >= 2, tries
    assert tries[-1]["pid"] != victim["pid"], "the lost job was rerun by another worker process"
    info = json.loads((run / "run.json").read_text())
    assert set(info["jobs"]) == {f"{JOB}/fold_00", f"{JOB}/fold_01"}
    assert all(job["worker"].startswith("tcp://127.0.0.1:") for job in info["jobs"].values())
    assert info["timings"]["executor"] == "dask client" and info["timings"]["retries"] == 2
    # The killed worker left nothing behind in its temporary directory.
    assert not list(worker_tmpdir.glob("biomark-job-*")), list(worker_tmpdir.iterdir())

    # Re-submitting the finished run runs nothing.
    n_attempts = len(attempts(run))
    again = run_extract_distributed(plan, client)
    assert again == run and len(attempts(run)) == n_attempts


def test_radiomics_with_a_worker_killed(process_cluster, tmp_path: Path) -> None:
    """Radiomics batches on `dask worker` processes; one worker is SIGKILLed while batches run."""
    from biomark.features.radiomics_params import load_params
    from biomark.features.radiomics_run import run_radiomics

    client = process_cluster
    data = helpers.make_dataset(tmp_path / "a", n_per_class=16, size=64)
    shutil.copytree(data, tmp_path / "b")
    params = load_params(Path(__file__).resolve().parents[2] / "analyses" / "radiomics_cxr2d.yaml")
    serial = run_radiomics(tmp_path / "a", params, region="image", jobs=1, controls=False)

    pids = client.run(os.getpid)
    cache = tmp_path / "b" / "radiomics" / serial.out_dir.name / "cache"
    killed: dict[str, Any] = {}

    def kill_when_started() -> None:
        # The victim is a worker the scheduler has batches on while some are stored (so the run is
        # under way): it dies with work in flight however slowly the machine runs, and that work is
        # redone.
        deadline = time.time() + 120
        while time.time() < deadline:
            stored = len(list(cache.glob("*/*.json"))) if cache.is_dir() else 0
            processing = client.processing() if 0 < stored < 48 else {}
            busy = [w for w, keys in processing.items() if keys and w in pids]
            if busy:
                killed.update(stored=stored, worker=busy[0], in_flight=len(processing[busy[0]]))
                os.kill(pids[busy[0]], signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    spread = run_radiomics_distributed(
        tmp_path / "b", params, client, region="image", controls=False
    )
    killer.join(10)
    assert "worker" in killed, "no worker was seen with batches in flight, nothing killed"
    assert killed["stored"] < 48 and killed["in_flight"] >= 1, killed
    pd.testing.assert_frame_equal(spread.features, serial.features)
    assert len(list(cache.glob("*/*.json"))) == 48
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the tests after this one
