"""Dask clusters for biomark: parse ``--scheduler``, connect, check the workers.

biomark hands its jobs (``biomark extract``'s (strategy, fold) trainings,
``biomark radiomics``'s image batches) to an existing distributed engine,
`Dask <https://distributed.dask.org>`_, instead of a home-made one. This module
is the only place that knows how to reach a cluster; the work itself stays in
pure, file-based functions (:func:`biomark.pipelines.extract_job.run_job`,
:func:`biomark.features.radiomics.extract_chunk_into_cache`) that
:class:`biomark.pipelines.executor.DaskExecutor` submits.

``--scheduler`` values
    ``tcp://HOST:PORT``
        An existing scheduler (``dask scheduler`` + ``dask worker`` processes,
        a Kubernetes/SLURM deployment, ...). Connecting waits at most
        ``timeout`` seconds; an unreachable address is a :class:`ClusterError`
        naming it, raised before anything is submitted.
    ``local:N`` (``local`` = one worker per CPU core)
        A :class:`distributed.LocalCluster` of ``N`` worker *processes* with
        one thread each (TensorFlow and pyradiomics run their own thread
        pools; two jobs per process would only fight over the cores), bound to
        127.0.0.1, no dashboard, stopped when the ``with`` block ends.

Preflight (:func:`preflight`), before any job
    Every worker must see the shared folder (the run folder, the dataset):
    the client writes a probe file there and each worker reads it back, then
    writes and removes its own probe (so "visible" and "writable" are both
    checked); every worker must be able to import the packages the jobs need
    and run the same biomark version as the client. Problems are collected
    over all workers and raised as one :class:`ClusterError` that names each
    worker, the path or package, and what to do. :func:`preflight_here` runs
    the same probe in this process (for jobs run here).

The shared folder is a local or shared POSIX path (same path on every
machine) or an fsspec URL (``s3://``, ``gs://``, ``ftp://``, ...): then the
probe goes through :class:`biomark.io.remote.RemoteFolder`, and the copying
between the URL and local disks is :mod:`biomark.pipelines.url_storage`'s job.

``distributed`` is an optional dependency (``pip install biomark[distributed]``)
imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from biomark.exceptions import BiomarkError, ClusterError, ConfigError
from biomark.io.remote import RemoteFolder, is_url, redact

__all__ = [
    "PACKAGE_EXTRAS",
    "ClusterError",
    "SchedulerSpec",
    "WorkerCheck",
    "check_shared_path",
    "guarded_call",
    "import_distributed",
    "open_cluster",
    "parse_scheduler",
    "preflight",
    "preflight_here",
    "worker_count",
]

logger = logging.getLogger(__name__)

#: Where a package a job needs comes from (shown when a worker lacks it).
PACKAGE_EXTRAS: dict[str, str] = {
    "biomark": "biomark",
    "distributed": "biomark[distributed]",
    "keras": "biomark",
    "tensorflow": "biomark[tensorflow]",
    "jax": "biomark[jax]",
    "radiomics": "biomark[radiomics]",
    "SimpleITK": "biomark",
    "pandas": "biomark",
    "pyarrow": "biomark",
}

_TCP_RE = re.compile(r"^(tcp|tls)://(?P<host>\[[0-9a-fA-F:]+\]|[^:/\s]+):(?P<port>\d{1,5})$")
_LOCAL_RE = re.compile(r"^local(?::(?P<n>-?\d+))?$")
_PROBE_PREFIX = ".biomark-probe-"


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler`` value.

    Attributes
    ----------
    text : str
        The value as given.
    kind : {"tcp", "local"}
    address : str or None
        ``tcp://HOST:PORT`` for ``kind="tcp"``.
    n_workers : int or None
        Worker processes for ``kind="local"``.
    """

    text: str
    kind: Literal["tcp", "local"]
    address: str | None = None
    n_workers: int | None = None

    def __str__(self) -> str:
        return str(self.address) if self.kind == "tcp" else f"local:{self.n_workers}"


def parse_scheduler(text: str) -> SchedulerSpec:
    """Parse a ``--scheduler`` value.

    Parameters
    ----------
    text : str
        ``tcp://HOST:PORT`` (or ``tls://``), ``local:N`` or ``local``.

    Returns
    -------
    SchedulerSpec

    Raises
    ------
    ConfigError
        Anything else, a port outside 1..65535 or ``N < 1``.

    Examples
    --------
    >>> parse_scheduler("tcp://127.0.0.1:8786").address
    'tcp://127.0.0.1:8786'
    >>> parse_scheduler("local:2").n_workers
    2
    """
    value = str(text).strip()
    local = _LOCAL_RE.match(value)
    if local:
        n = int(local.group("n")) if local.group("n") is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ConfigError(
                f"--scheduler {text!r}: a local cluster needs at least one worker (local:N, N >= 1)"
            )
        return SchedulerSpec(value, "local", n_workers=n)
    tcp = _TCP_RE.match(value)
    if tcp:
        port = int(tcp.group("port"))
        if not 0 < port < 65536:
            raise ConfigError(f"--scheduler {text!r}: port {port} is outside 1..65535")
        return SchedulerSpec(value, "tcp", address=value)
    raise ConfigError(
        f"--scheduler {text!r}: give the address of a running Dask scheduler as tcp://HOST:PORT "
        "(e.g. tcp://10.0.0.5:8786, printed by `dask scheduler`) or local:N for a local cluster "
        "of N worker processes"
    )


def import_distributed() -> Any:
    """Import :mod:`distributed`, or say how to install it.

    Raises
    ------
    ClusterError
        If ``distributed`` is not installed.
    """
    try:
        return importlib.import_module("distributed")
    except ImportError as err:
        raise ClusterError(
            "--scheduler needs Dask's distributed scheduler, which is not installed "
            f"({err}); install it with `pip install biomark[distributed]` or run without "
            "--scheduler"
        ) from err


def check_shared_path(path: str | os.PathLike[str], what: str = "shared folder") -> Path:
    """A local or shared POSIX folder for cluster jobs, as an absolute path.

    Parameters
    ----------
    path : path-like
    what : str
        Its role, for messages (``"run folder"``, ``"dataset folder"``).

    Returns
    -------
    Path
        Absolute, user-expanded.

    Raises
    ------
    ConfigError
        An fsspec URL (``s3://...``): those go through
        :mod:`biomark.pipelines.url_storage` (the pipelines pick it by themselves).
    """
    text = os.fspath(path)
    if is_url(text):
        raise ConfigError(
            f"{what} {redact(text)!r} is a URL: give it to biomark.pipelines (run_extract / "
            "extract_radiomics), which copy data between the URL and local disks through "
            "biomark.pipelines.url_storage; `biomark extract` and `biomark radiomics` do so by "
            "themselves"
        )
    return Path(text).expanduser().resolve()


def _connect(address: str, timeout: float) -> Any:
    distributed = import_distributed()
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no answer'}); "
            "nothing was submitted. Check that `dask scheduler` runs there, that the address and "
            "port are right and reachable from this machine, or use --scheduler local:N"
        ) from err


def _restore_environment(saved: Mapping[str, str]) -> None:
    """Set this process's environment back to ``saved``.

    A local cluster's nannies run in this process and, to spawn their
    workers, set Dask's ``distributed.nanny.pre-spawn-environ`` in *this*
    process's environment (``MALLOC_TRIM_THRESHOLD_=65536``,
    ``OMP_NUM_THREADS=1``, ...), where every process started afterwards
    inherits it. With glibc returning every freed 64 kB to the system, the
    demo's phantom took 51.5 s instead of 17.8 s to draw in its joblib worker
    processes (2-core AMD EPYC, 2026-12-07). The workers keep the settings.

    Parameters
    ----------
    saved : mapping of str to str
        ``dict(os.environ)`` taken before the cluster started.
    """
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@contextlib.contextmanager
def open_cluster(
    scheduler: str | SchedulerSpec,
    *,
    timeout: float = 10.0,
    threads_per_worker: int = 1,
    local_directory: str | os.PathLike[str] | None = None,
) -> Iterator[Any]:
    """Connect to a scheduler (or start a local cluster) for the ``with`` block.

    Parameters
    ----------
    scheduler : str or SchedulerSpec
        ``tcp://HOST:PORT`` or ``local:N`` (:func:`parse_scheduler`).
    timeout : float, default 10
        Seconds to wait for the scheduler (and, for a local cluster, its workers).
    threads_per_worker : int, default 1
        Threads of each local worker process (ignored for ``tcp://``).
    local_directory : path, optional
        Scratch folder of local workers (default: Dask's, under the temp dir).

    Yields
    ------
    distributed.Client
        Closed (and the local cluster stopped) when the block ends.

    Raises
    ------
    ClusterError
        ``distributed`` missing, or the scheduler unreachable within ``timeout``.
    ConfigError
        An invalid ``scheduler`` string.
    """
    spec = scheduler if isinstance(scheduler, SchedulerSpec) else parse_scheduler(scheduler)
    distributed = import_distributed()
    cluster = None
    if spec.kind == "local":
        environment = dict(os.environ)
        try:
            cluster = distributed.LocalCluster(
                n_workers=spec.n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                scheduler_kwargs={"dashboard": False},
                silence_logs=logging.WARNING,
                local_directory=None if local_directory is None else os.fspath(local_directory),
            )
        except (OSError, TimeoutError, RuntimeError) as err:
            raise ClusterError(f"could not start a local Dask cluster ({spec}): {err}") from err
        finally:
            _restore_environment(environment)
        address = cluster.scheduler_address
        logger.info(
            "started a local Dask cluster: %d worker processes x %d thread(s) at %s",
            spec.n_workers,
            threads_per_worker,
            address,
        )
    else:
        address = str(spec.address)
    try:
        client = _connect(address, timeout)
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        if spec.kind == "tcp":
            logger.info(
                "connected to the Dask scheduler at %s (%d workers)", address, worker_count(client)
            )
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_count(client: Any) -> int:
    """Number of workers the scheduler knows now."""
    return len(client.scheduler_info(n_workers=-1).get("workers", {}))


# --------------------------------------------------------------------------- #
# Preflight
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class WorkerCheck:
    """What one worker reported during :func:`preflight`.

    Attributes
    ----------
    worker : str
        Worker address.
    host : str
        Its host name.
    problems : tuple of str
        Empty when the worker can run the jobs.
    """

    worker: str
    host: str
    problems: tuple[str, ...]


def _probe_worker(
    probe: str, token: str, read_paths: list[str], packages: list[str], version: str
) -> dict[str, Any]:
    """Runs on each worker (``client.run``): report what it cannot do."""
    problems: list[str] = []
    if is_url(probe):
        problems.extend(_probe_url(probe, token))
    else:
        problems.extend(_probe_path(Path(probe), token))
    for path in read_paths:
        if is_url(path):
            try:
                found = RemoteFolder(path).exists()
            except (BiomarkError, OSError, ImportError) as err:
                problems.append(f"cannot open {redact(path)} ({type(err).__name__}: {err})")
                continue
            if not found:
                problems.append(
                    f"cannot see {redact(path)}; check the URL and this worker's credentials for it"
                )
        elif not os.path.exists(path):
            problems.append(f"cannot see {path}; mount it at the same path on every worker")
    for name in packages:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(
                f"package {name!r} is not installed; install `{PACKAGE_EXTRAS.get(name, name)}` "
                "in the workers' environment"
            )
    try:
        import biomark

        if biomark.__version__ != version:
            problems.append(
                f"runs biomark {biomark.__version__}, the client {version}; install the same "
                "version everywhere"
            )
    except ImportError:
        pass  # reported through the package list
    return {"host": socket.gethostname(), "problems": problems}


def _probe_path(probe_path: Path, token: str) -> list[str]:
    """Problems of a worker with a shared POSIX folder (see :func:`_probe_worker`)."""
    problems: list[str] = []
    try:
        seen = probe_path.read_text(encoding="utf-8")
    except OSError as err:
        return [
            f"cannot see the shared folder {probe_path.parent} (the probe file written there by "
            f"the client is not visible here: {type(err).__name__}: {err}); mount the same folder "
            "at the same path on every worker"
        ]
    if seen.strip() != token:
        problems.append(
            f"{probe_path.parent} on this worker is not the client's folder (the probe file "
            "differs); mount the same shared folder at the same path on every worker"
        )
    own = probe_path.with_name(f"{probe_path.name}-{os.getpid()}-{socket.gethostname()}")
    try:
        own.write_text(token, encoding="utf-8")
        own.unlink()
    except OSError as err:
        problems.append(
            f"cannot write in the shared folder {probe_path.parent} ({type(err).__name__}: {err}); "
            "give the worker's user write permission there"
        )
    return problems


def _probe_url(probe: str, token: str) -> list[str]:
    """Problems of a worker with a shared folder at an fsspec URL (see :func:`_probe_worker`)."""
    folder, name = probe.rsplit("/", 1)
    try:
        remote = RemoteFolder(folder, "shared folder")
        seen = remote.read_text(name)
    except (BiomarkError, OSError, ImportError) as err:
        return [
            f"cannot read the shared folder {redact(folder)} (the probe file written there by the "
            f"client: {type(err).__name__}: {err}); give every worker the same access to that URL "
            "(credentials, network, the protocol's package)"
        ]
    if seen.strip() != token:
        return [
            f"{redact(folder)} seen from this worker is not the client's folder (the probe file "
            "differs)"
        ]
    own = f"{name}-{os.getpid()}-{socket.gethostname()}"
    try:
        remote.write_text(own, token)
        remote.remove(own)
    except (OSError, ImportError) as err:
        return [f"cannot write in the shared folder {redact(folder)} ({type(err).__name__}: {err})"]
    return []


@contextlib.contextmanager
def _probe_file(shared_dir: str | os.PathLike[str]) -> Iterator[tuple[str, str]]:
    """Write a probe file with a fresh token into the shared folder for the block:
    ``(probe, token)``."""
    token = uuid.uuid4().hex
    probe_name = f"{_PROBE_PREFIX}{token}"
    remote = RemoteFolder(str(shared_dir), "shared folder") if is_url(shared_dir) else None
    if remote is not None:
        remote.write_text(probe_name, token)
        probe = f"{remote.url}/{probe_name}"
    else:
        Path(shared_dir).mkdir(parents=True, exist_ok=True)
        probe = str(Path(shared_dir) / probe_name)
        Path(probe).write_text(token, encoding="utf-8")
    try:
        yield probe, token
    finally:
        with contextlib.suppress(OSError):
            if remote is not None:
                remote.remove(probe_name)
            else:
                Path(probe).unlink()


def preflight(
    client: Any,
    shared_dir: str | os.PathLike[str],
    *,
    read_paths: Sequence[str | os.PathLike[str]] = (),
    packages: Sequence[str] = ("biomark",),
    timeout: float = 60.0,
) -> list[WorkerCheck]:
    """Check, on every worker, that the jobs can run there; before any job.

    Parameters
    ----------
    client : distributed.Client
    shared_dir : path or str
        The folder jobs write into, a path or an fsspec URL (see
        :mod:`biomark.io.remote`): each worker must read the client's probe
        file there and write its own.
    read_paths : sequence of path or str
        Further files or folders the jobs read (e.g. the dataset's manifest);
        paths or URLs.
    packages : sequence of str
        Importable names the jobs need (``"tensorflow"``, ``"radiomics"``);
        checked with :func:`importlib.util.find_spec`, which finds a package
        without importing it.
    timeout : float, default 60
        Seconds to wait for at least one worker and for the answers.

    Returns
    -------
    list of WorkerCheck
        One per worker, all without problems.

    Raises
    ------
    ClusterError
        No worker joined within ``timeout``, or any worker reported a problem
        (every problem of every worker, with its address).
    """
    distributed = import_distributed()
    shared = redact(str(shared_dir)) if is_url(shared_dir) else Path(shared_dir)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, distributed.TimeoutError) as err:
        raise ClusterError(
            f"the Dask scheduler at {client.scheduler.address} has no worker after {timeout:g} s; "
            "start workers with `dask worker <scheduler address>`"
        ) from err
    with _probe_file(shared_dir) as (probe, token):
        answers = client.run(
            _probe_worker,
            probe,
            token,
            [os.fspath(p) for p in read_paths],
            list(packages),
            _client_version(),
            on_error="return",
        )
    checks = []
    for worker, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            checks.append(WorkerCheck(worker, "?", (f"the check itself failed: {answer!r}",)))
        else:
            checks.append(WorkerCheck(worker, answer["host"], tuple(answer["problems"])))
    bad = [c for c in checks if c.problems]
    if bad:
        lines = [f"  worker {c.worker} ({c.host}): {p}" for c in bad for p in c.problems]
        raise ClusterError(
            f"{len(bad)} of {len(checks)} Dask worker(s) cannot run the jobs; nothing was "
            "submitted:\n" + "\n".join(lines)
        )
    logger.info(
        "preflight: %d worker(s) see %s and have %s", len(checks), shared, ", ".join(packages)
    )
    return checks


def preflight_here(
    shared_dir: str | os.PathLike[str],
    *,
    read_paths: Sequence[str | os.PathLike[str]] = (),
    packages: Sequence[str] = ("biomark",),
) -> WorkerCheck:
    """:func:`preflight`'s checks in this process, for jobs run here (the serial executor).

    The same probe as on a cluster's workers: the shared folder (a path or an
    fsspec URL) is written and read back, ``read_paths`` must exist and
    ``packages`` be importable.

    Returns
    -------
    WorkerCheck
        This process, without problems.

    Raises
    ------
    ClusterError
        Any problem, each named with what to do.
    """
    with _probe_file(shared_dir) as (probe, token):
        answer = _probe_worker(
            probe, token, [os.fspath(p) for p in read_paths], list(packages), _client_version()
        )
    check = WorkerCheck("local", answer["host"], tuple(answer["problems"]))
    if check.problems:
        raise ClusterError(
            "this process cannot run the jobs; nothing was started:\n"
            + "\n".join(f"  {p}" for p in check.problems)
        )
    return check


def _client_version() -> str:
    import biomark

    return biomark.__version__


# --------------------------------------------------------------------------- #
# Running on a worker
# --------------------------------------------------------------------------- #


def guarded_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` on a worker, turning a missing package into a clear error.

    Jobs are submitted through this wrapper so that a worker without, say,
    TensorFlow fails the job with a :class:`ClusterError` naming the package,
    the worker and the ``pip install`` to run, instead of a bare
    ``ModuleNotFoundError`` from deep inside Keras.

    Raises
    ------
    ClusterError
        ``func`` raised :class:`ImportError` (chained).
    """
    try:
        return func(*args, **kwargs)
    except ImportError as err:
        name = (err.name or str(err)).split(".")[0]
        where = socket.gethostname()
        with contextlib.suppress(ImportError, ValueError):
            from distributed import get_worker

            where = f"{get_worker().address} ({where})"
        raise ClusterError(
            f"worker {where} cannot import {name!r} ({err}); install "
            f"`{PACKAGE_EXTRAS.get(name, name)}` in the workers' environment and re-submit "
            "(finished jobs are kept)"
        ) from err
