"""The process an extract job trains in on a cluster worker: one per worker and run, kept between
jobs.

:func:`run_isolated` hands a (strategy, fold) job to a child process of this
worker (:class:`JobProcess`) and returns its record and log. The child trains
one run's jobs one after another, so the folds after its first pay neither
TensorFlow's import nor, for a strategy it has trained before, the tracing of
the model's steps (:mod:`biomark.train.reuse`: on the demo about 4 s and
10-14 s per scratch fold). A job trains there exactly as in a fresh process
or a single-process run: every job seeds its own generators and the reused
model takes the fresh model's initial state.

Why a child process at all
    A Dask worker's own threads (heartbeats, the event loop) draw from
    Python's global :mod:`random` state, which Keras uses for every
    initializer without an explicit seed after ``keras.utils.set_random_seed``;
    a job trained in a worker thread therefore gets other initial weights on
    every run. The child has no such neighbours. It is a plain subprocess
    (Dask's worker processes are daemonic and may not use
    :mod:`multiprocessing`), killed with the worker (``PR_SET_PDEATHSIG`` on
    Linux, a parent watch elsewhere), so a lost worker leaves no orphan
    writing into a fold while the job is retried.

When the child ends
    After a job that failed (the next job gets a fresh process, as after a
    kill), when a job of another run comes, or of the same run folder started
    again (a run's plan sets the process's thread pools, which cannot change
    once TensorFlow runs; the process is keyed by the plan hash and creation
    time in ``run.json``), when the worker ends, and after
    :data:`IDLE_SECONDS` without a job, so an idle worker of a long-lived
    cluster does not keep TensorFlow's memory.

A job process's log records (the fit check, the random-backbone warning)
travel back with its answer, and the process that drives the run logs them
(:func:`replay_job_log`): a cluster worker's own output reaches no one.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from biomark.cluster import ClusterError, guarded_call
from biomark.exceptions import RunError
from biomark.features.run_folder import RunFolder
from biomark.features.worker_pool import exit_with_parent

__all__ = [
    "IDLE_SECONDS",
    "JobProcess",
    "close_job_processes",
    "collect_job_log",
    "replay_job_log",
    "run_isolated",
]

#: Seconds a job process waits for its next job before it exits.
IDLE_SECONDS = 60.0
#: Exit status of a job process that left idle, before taking any request it was sent.
_IDLE_EXIT = 75
#: Lines of a dead job process's stderr quoted in the error.
_STDERR_TAIL = 5

# ``PR_SET_PDEATHSIG`` fires when the *thread* that started the child ends, not the process: a
# job process started from a Dask task thread could be killed mid-job when that thread retires.
# Every job process is therefore started from this one thread, which lives as long as the worker.
_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="biomark-job-launcher")
_IDLE: dict[tuple[str, str, str], list[JobProcess]] = {}
_IDLE_LOCK = threading.Lock()


class JobProcess:
    """A child process of this worker that runs extract jobs one at a time.

    Requests and answers are JSON lines on two pipes; the child's standard
    error goes to an unlinked temporary file, whose tail since the current
    job started is quoted when the child dies without answering.

    Parameters
    ----------
    key : tuple of (str, str, str)
        The run folder, the dataset folder and the run's plan hash and creation
        time (from ``run.json``) the process serves.
    idle_seconds : float, default :data:`IDLE_SECONDS`
        How long the child waits for a job before it exits.
    """

    def __init__(self, key: tuple[str, str, str], idle_seconds: float = IDLE_SECONDS) -> None:
        self.key = key
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        requests_read, requests_write = os.pipe()
        answers_read, answers_write = os.pipe()
        code = "from biomark.pipelines.job_process import _job_process_main; _job_process_main()"
        args = [sys.executable, "-c", code, str(os.getpid()), str(requests_read)]
        args += [str(answers_write), repr(float(idle_seconds))]
        try:
            self._proc = _LAUNCHER.submit(
                subprocess.Popen,
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(requests_read, answers_write),
            ).result()
        except BaseException:
            for fd in (requests_write, answers_read):
                os.close(fd)
            self._stderr.close()
            raise
        finally:
            os.close(requests_read)
            os.close(answers_write)
        self._requests = os.fdopen(requests_write, "w", encoding="utf-8")
        self._answers = os.fdopen(answers_read, "r", encoding="utf-8")
        self.jobs = 0

    @property
    def pid(self) -> int:
        """The child's process id."""
        return int(self._proc.pid)

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self._proc.poll() is None

    def run(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Send one job and wait for its answer.

        Returns
        -------
        dict or None
            The child's answer (``record`` and ``log``, or ``message``); None
            when the child had left idle without taking the job (the caller
            sends it to a new process).

        Raises
        ------
        RunError
            The child ended without answering (killed, out of memory), with
            the last lines it wrote to its standard error since the job began.
        """
        started_at = os.fstat(self._stderr.fileno()).st_size
        self.jobs += 1
        try:
            self._requests.write(json.dumps(request) + "\n")
            self._requests.flush()
            line = self._answers.readline()
        except BrokenPipeError:
            line = ""
        answer = _read_answer(line)
        if answer:
            return answer
        status = self._proc.wait()
        if status == _IDLE_EXIT:
            return None
        self._stderr.seek(started_at)
        text = self._stderr.read().decode("utf-8", "replace")
        tail = text.strip().splitlines()[-_STDERR_TAIL:]
        raise RunError(
            f"{request['strategy']} fold {request['fold']}: the job's process ended with status "
            f"{status} (killed, out of memory?): {' | '.join(tail) or 'no output'}; finished "
            "folds are kept, re-run to resume"
        )

    def kill(self) -> None:
        """Kill the child, in whatever job it is, and release the pipes."""
        self._proc.kill()
        self.close()

    def close(self) -> None:
        """Tell the child to end (it exits when its request pipe closes) and release the pipes."""
        for stream in (self._requests, self._answers, self._stderr):
            try:
                stream.close()
            except OSError:  # the child is gone and the pipe's last bytes went nowhere
                pass
        if self._proc.poll() is None:
            threading.Thread(target=self._proc.wait, daemon=True).start()  # reaped when it exits


def _take(key: tuple[str, str, str]) -> JobProcess:
    """An idle job process of this run, or a new one; idle ones of other runs are closed."""
    with _IDLE_LOCK:
        others = [p for k in list(_IDLE) if k != key for p in _IDLE.pop(k)]
        waiting = _IDLE.get(key, [])
        found = None
        while waiting and found is None:
            candidate = waiting.pop()
            if candidate.alive():
                found = candidate
            else:
                others.append(candidate)
    for process in others:
        process.close()
    return found if found is not None else JobProcess(key)


def _give_back(process: JobProcess) -> None:
    with _IDLE_LOCK:
        _IDLE.setdefault(process.key, []).append(process)


def close_job_processes() -> None:
    """End every idle job process of this worker (they also end by themselves when idle)."""
    with _IDLE_LOCK:
        idle = [p for ps in _IDLE.values() for p in ps]
        _IDLE.clear()
    for process in idle:
        process.close()


def run_isolated(
    run_dir: str, strategy: str, fold: int, dataset_dir: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``run_job`` in this worker's job process for the run (see the module notes).

    Returns
    -------
    record : dict
        The fold's record, as :func:`~biomark.pipelines.extract_job.run_job` returns it.
    log : list of dict
        The job's ``biomark`` log records at INFO and above (:func:`replay_job_log`).

    Raises
    ------
    ClusterError
        The job process could not import a package.
    RunError
        The job failed, or its process ended without an answer (killed, out of memory).
    """
    request = {"run_dir": run_dir, "strategy": strategy, "fold": fold, "dataset_dir": dataset_dir}
    key = (run_dir, dataset_dir or "", _plan_digest(run_dir))
    while True:
        process = _take(key)
        try:
            answer = process.run(request)
        except RunError:
            process.close()
            raise
        except BaseException:  # this thread was interrupted: the job stops with it
            process.kill()
            raise
        if answer is not None:
            break
        process.close()  # it had left idle: the job goes to a new process
    if "record" in answer:
        _give_back(process)
        return answer["record"], list(answer.get("log", []))
    process.close()  # a failed job's process ends: the next job starts afresh
    if answer.get("cluster"):
        raise ClusterError(answer["message"])
    raise RunError(answer["message"])


def _plan_digest(run_dir: str) -> str:
    """The run's plan hash and creation time from ``run.json`` (not its job entries, which change
    as jobs finish): a run started again with ``--force``, perhaps with another plan and other
    thread settings, gets a new job process."""
    try:
        info = json.loads(RunFolder(run_dir).run_json.read_text(encoding="utf-8"))
        return f"{info.get('plan_hash')} {info.get('created')}"
    except (OSError, ValueError, AttributeError):  # the job itself will say what is wrong
        return ""


def _read_answer(line: str) -> dict[str, Any]:
    """The child's answer, or ``{}`` when it wrote none (or was killed while writing it)."""
    try:
        answer = json.loads(line or "{}")
    except json.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _next_request(fd: int, pending: bytearray, timeout: float) -> bytes | None:
    """The next request line from ``fd``: ``b""`` when the worker closed it, None after ``timeout``
    seconds without one."""
    deadline = time.monotonic() + timeout
    while b"\n" not in pending:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        pending.extend(chunk)
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line


def _job_process_main() -> None:
    """Entry point of a job process (:class:`JobProcess`): answer requests until told to end."""
    from biomark.allocator import keep_freed_memory

    keep_freed_memory()  # before TensorFlow allocates, or it has no effect
    from biomark.pipelines.extract_job import run_job

    parent, requests_fd, answers_fd = (int(x) for x in sys.argv[1:4])
    idle_seconds = float(sys.argv[4])
    _die_with_parent(parent)
    collected = collect_job_log()
    pending = bytearray()
    with os.fdopen(answers_fd, "w", encoding="utf-8") as answers:
        while True:
            line = _next_request(requests_fd, pending, idle_seconds)
            if line is None:
                sys.exit(_IDLE_EXIT)
            if not line:
                sys.exit(0)  # the worker closed its end
            request = json.loads(line)
            collected.records.clear()
            try:
                answer: dict[str, Any] = {
                    "record": guarded_call(
                        run_job,
                        request["run_dir"],
                        request["strategy"],
                        int(request["fold"]),
                        dataset_dir=request["dataset_dir"] or None,
                    )
                }
                status = 0
            except ClusterError as err:
                answer, status = {"message": str(err), "cluster": True}, 3
            except Exception as err:  # noqa: BLE001 - reported to the worker with its type
                answer, status = {"message": f"{type(err).__name__}: {err}"}, 2
            answer["log"] = list(collected.records)
            answers.write(json.dumps(answer) + "\n")
            answers.flush()
            if status:
                sys.exit(status)


class _JobLog(logging.Handler):
    """Keeps a job process's log records as plain values, to travel with its answer."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {
                "name": record.name,
                "levelno": record.levelno,
                "message": record.getMessage(),
                "created": record.created,
            }
        )


def collect_job_log() -> _JobLog:
    """Collect this job process's ``biomark`` records at INFO and above for its answers.

    Warnings also go to its stderr, whose last lines :meth:`JobProcess.run`
    quotes when the process ends without an answer (killed, out of memory).
    """
    collected = _JobLog()
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.WARNING)
    to_stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("biomark")
    package_logger.setLevel(logging.INFO)
    package_logger.addHandler(collected)
    package_logger.addHandler(to_stderr)
    package_logger.propagate = False
    return collected


def replay_job_log(
    records: list[dict[str, Any]], seen: set[tuple[str, int, str]] | None = None
) -> None:
    """Log a job process's records here, under their own logger names and times.

    A record is logged only where its logger is enabled for its level, so
    ``-q`` keeps a job's INFO lines out as it keeps this process's own.

    Parameters
    ----------
    records : list of dict
        ``name``, ``levelno``, ``message`` and ``created`` (seconds since the
        epoch, kept so the line shows when the job logged it), as
        :func:`run_isolated` returns them.
    seen : set, optional
        ``(name, levelno, message)`` of the records already logged in this run,
        updated here: a message every job logs once (each fold of a
        random-backbone strategy warns that its backbone is random) is logged
        once, as a single process would.
    """
    for entry in records:
        target = logging.getLogger(str(entry["name"]))
        level = int(entry["levelno"])
        identity = (target.name, level, str(entry["message"]))
        if seen is not None:
            if identity in seen:
                continue
            seen.add(identity)
        if target.isEnabledFor(level):
            target.handle(
                logging.makeLogRecord(
                    {
                        "name": target.name,
                        "levelno": level,
                        "levelname": logging.getLevelName(level),
                        "msg": str(entry["message"]),
                        "created": float(entry["created"]),
                        "msecs": (float(entry["created"]) % 1) * 1000,
                    }
                )
            )


def _die_with_parent(parent: int) -> None:
    """Make this process exit when the worker process ``parent`` is gone: killed with it on Linux,
    and a parent watch (:func:`~biomark.features.worker_pool.exit_with_parent`) everywhere."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    exit_with_parent(parent)  # elsewhere, and if the worker died before prctl took effect
