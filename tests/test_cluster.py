"""biomark.cluster: --scheduler parsing, connecting, and the preflight checks on workers.

The cluster tests start real Dask clusters on 127.0.0.1 (a LocalCluster of two
worker processes; for the "blind worker" case a `dask scheduler` and a `dask
worker` in its own mount namespace). No TensorFlow is imported here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from biomark.cluster import (
    ClusterError,
    check_shared_path,
    guarded_call,
    open_cluster,
    parse_scheduler,
    preflight,
)
from biomark.exceptions import ConfigError

from run_checks import stop_process_group  # tests/ is on sys.path (tests/conftest.py)

distributed = pytest.importorskip("distributed")

DASK = str(Path(sys.executable).with_name("dask"))


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("text", "kind", "address", "n"),
    [
        ("tcp://127.0.0.1:8786", "tcp", "tcp://127.0.0.1:8786", None),
        ("tcp://scheduler.example.org:9000", "tcp", "tcp://scheduler.example.org:9000", None),
        ("local:2", "local", None, 2),
        (" local:1 ", "local", None, 1),
    ],
)
def test_parse_scheduler(text: str, kind: str, address: str | None, n: int | None) -> None:
    spec = parse_scheduler(text)
    assert (spec.kind, spec.address, spec.n_workers) == (kind, address, n)


def test_parse_scheduler_local_defaults_to_cores() -> None:
    assert parse_scheduler("local").n_workers == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("127.0.0.1:8786", "tcp://HOST:PORT"),
        ("http://127.0.0.1:8786", "tcp://HOST:PORT"),
        ("local:0", "at least one worker"),
        ("tcp://127.0.0.1:99999", "outside 1..65535"),
    ],
)
def test_parse_scheduler_rejects(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_scheduler(text)


def test_check_shared_path_sends_urls_elsewhere(tmp_path: Path) -> None:
    assert check_shared_path(tmp_path / "x") == (tmp_path / "x").resolve()
    with pytest.raises(
        ConfigError, match="output folder 's3://bucket/runs' is a URL: give it to biomark.pipelines"
    ):
        check_shared_path("s3://bucket/runs", "output folder")


@pytest.mark.distributed
@pytest.mark.timeout(
    300
)  # a hang guard (the call gives up after its 2 s timeout), not a speed check
def test_unreachable_scheduler_names_the_address() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(
        ClusterError, match=f"cannot reach the Dask scheduler at {address}.*nothing was submitted"
    ):
        with open_cluster(address, timeout=2):
            pass  # pragma: no cover


@pytest.fixture(scope="module")
def local_client():
    """A LocalCluster of two worker processes (one thread each) on 127.0.0.1."""
    with open_cluster("local:2", timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.mark.distributed
def test_preflight_passes(local_client, tmp_path: Path) -> None:
    checks = preflight(
        local_client, tmp_path, read_paths=[tmp_path], packages=["biomark", "pandas"]
    )
    assert len(checks) == 2 and all(not c.problems for c in checks)
    assert not list(tmp_path.glob(".biomark-probe-*")), "probe files are removed"


@pytest.mark.distributed
def test_preflight_names_missing_package_and_path(local_client, tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="2 of 2 Dask worker.*nothing was submitted") as info:
        preflight(
            local_client,
            tmp_path,
            read_paths=[tmp_path / "no_dataset"],
            packages=["biomark_no_such_pkg"],
        )
    text = str(info.value)
    assert text.count("package 'biomark_no_such_pkg' is not installed") == 2
    assert f"cannot see {tmp_path / 'no_dataset'}" in text
    for worker in local_client.scheduler_info()["workers"]:
        assert worker in text


@pytest.mark.distributed
def test_job_without_package_names_it(local_client) -> None:
    import importlib

    future = local_client.submit(
        guarded_call, importlib.import_module, "biomark_no_such_pkg", pure=False
    )
    with pytest.raises(
        ClusterError,
        match="worker tcp://127.0.0.1:\\d+ .*cannot import 'biomark_no_such_pkg'.*install",
    ):
        future.result()


def _can_unshare() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.distributed
@pytest.mark.skipif(
    not _can_unshare(), reason="needs Linux mount namespaces (unshare --user --mount)"
)
def test_worker_that_cannot_see_the_shared_folder(tmp_path: Path) -> None:
    """A worker whose view of the shared folder is a different (empty) file system."""
    shared = tmp_path / "shared"
    shared.mkdir()
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    scheduler = subprocess.Popen(
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
        stdout=open(logs / "scheduler.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # The worker sees an empty tmpfs where the client's shared folder is.
    blind = (
        f"mount -t tmpfs none {shared} && exec {DASK} worker --scheduler-file {scheduler_file} "
        "--host 127.0.0.1 --nthreads 1 --no-nanny --no-dashboard --local-directory "
        f"{tmp_path / 'scratch'} --name blind"
    )
    worker = None
    try:
        deadline = time.time() + 120  # waits for readiness (a loaded machine starts it slowly)
        while not scheduler_file.is_file() and time.time() < deadline:
            time.sleep(0.2)
        worker = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", blind],
            stdout=open(logs / "worker.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            with pytest.raises(
                ClusterError,
                match=f"worker tcp://127.0.0.1:\\d+ .*cannot see the shared folder {shared}",
            ):
                preflight(client, shared, packages=["biomark"])
    finally:
        if worker is not None:
            stop_process_group(worker)
        stop_process_group(scheduler)


def test_a_local_cluster_leaves_this_process_environment_as_it_was() -> None:
    """Dask's nannies set their workers' environment (MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS)
    in the process that starts them; processes started later (the phantom's joblib workers) must
    not inherit it."""
    pytest.importorskip("distributed")
    from biomark.cluster import open_cluster

    before = dict(os.environ)
    with open_cluster("local:1", timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
        inside = dict(os.environ)
        worker_environment = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert inside == before
    assert list(worker_environment.values()) == ["65536"], "the workers keep Dask's settings"
