"""Worker processes that exit with their parent (biomark.features.worker_pool).

The end-to-end check (kill -9 of a radiomics run, its workers gone) is
``tests/features/test_radiomics.py::test_workers_exit_when_the_parent_is_killed``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from biomark.features.worker_pool import (
    InlineExecutor,
    threads_per_worker,
    worker_pool,
    worker_thread_env,
)

ROOT = Path(__file__).resolve().parents[2]


def test_inline_executor_runs_at_once_and_keeps_exceptions() -> None:
    pool = InlineExecutor()
    assert pool.submit(divmod, 7, 2).result() == (3, 1)
    failed = pool.submit(divmod, 1, 0)
    assert failed.done()
    with pytest.raises(ZeroDivisionError):
        failed.result()


def test_one_worker_is_this_process() -> None:
    with worker_pool(1) as pool:
        assert isinstance(pool, InlineExecutor)


def _loky_workers(psutil) -> set:  # noqa: ANN001 - the psutil module
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "LokyProcess" in " ".join(child.cmdline()):
                found.add(child)
        except psutil.Error:  # ended meanwhile
            pass
    return found


def test_each_worker_gets_its_share_of_the_cores_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTEROP_THREADS"):  # as set for this test worker
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    assert [threads_per_worker(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    env = worker_thread_env(2)
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "4"
    assert env["TF_NUM_INTRAOP_THREADS"] == "3"  # the user's setting wins


def test_a_test_worker_runs_its_libraries_on_its_share_of_the_cores() -> None:
    """tests/conftest.py gives each pytest-xdist worker cores // workers threads."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        pytest.skip("not under pytest-xdist: every core is this run's")
    expected = str(threads_per_worker(int(workers)))
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        assert os.environ[name] == expected


def test_no_worker_starts_before_the_first_submit() -> None:
    psutil = pytest.importorskip("psutil")
    before = _loky_workers(psutil)
    with worker_pool(2):
        assert _loky_workers(psutil) == before


def test_workers_compute_and_are_gone_after_the_block() -> None:
    psutil = pytest.importorskip("psutil")
    before = _loky_workers(psutil)
    with worker_pool(2) as pool:
        futures = [pool.submit(pow, 2, k) for k in range(6)]
        assert [f.result() for f in futures] == [1, 2, 4, 8, 16, 32]
        workers = list(_loky_workers(psutil) - before)
        assert len(workers) == 2
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive


def test_exit_with_parent_ends_a_process_whose_parent_is_not_the_given_one() -> None:
    """The watchdog's first check: a worker whose parent is already gone exits at once, with status
    1."""
    code = (
        "from biomark.features.worker_pool import exit_with_parent\nexit_with_parent(1)\nimport "
        "time\ntime.sleep(60)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert done.returncode == 1


def test_exit_without_teardown_flushes_what_was_written_and_skips_the_teardown() -> None:
    """The handler ends the process with status 0 after flushing stdout (a pipe, block-buffered)
    and the log; an exit handler registered before it, standing for the interpreter's teardown,
    does not run; a second call registers nothing more."""
    code = "\n".join(
        [
            "import atexit, logging, sys",
            "atexit.register(print, 'teardown ran')",
            "from biomark.features.worker_pool import exit_without_teardown",
            "logging.basicConfig(stream=sys.stderr, level=logging.INFO, format='%(message)s')",
            "exit_without_teardown()",
            "exit_without_teardown()",
            "sys.stdout.write('left in the buffer')",
            "logging.getLogger('worker').info('logged')",
        ]
    )
    done = _run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "left in the buffer"
    assert done.stderr.strip() == "logged"


def test_exit_without_teardown_removes_the_autograph_sources_tensorflow_would_have(
    tmp_path: Path,
) -> None:
    """TensorFlow's autograph writes each function it converts to a temporary file and removes
    it from an exit handler, which ``os._exit`` skips: the handler removes the files of the
    process's autograph modules itself, and leaves every other file alone. (Each demo report
    left two such files in ``/tmp`` before.)"""
    generated = tmp_path / "__autograph_generated_filex1y2z3.py"
    other = tmp_path / "kept.py"
    code = "\n".join(
        [
            "import importlib.util, sys",
            "from biomark.features.worker_pool import exit_without_teardown",
            "def load(path, name):",
            "    spec = importlib.util.spec_from_file_location(name, path)",
            "    module = importlib.util.module_from_spec(spec)",
            "    spec.loader.exec_module(module)",
            "    sys.modules[name] = module",
            f"load({str(generated)!r}, {generated.stem!r})",
            f"load({str(other)!r}, {other.stem!r})",
            "exit_without_teardown()",
        ]
    )
    for path in (generated, other):
        path.write_text("VALUE = 1\n")
    done = _run_python(code)
    assert done.returncode == 0, done.stderr
    assert not generated.exists()
    assert other.exists()


def test_a_worker_that_exits_without_teardown_hands_back_its_result() -> None:
    """Through the pool: the result comes back and the worker is gone after the block."""
    psutil = pytest.importorskip("psutil")
    before = _loky_workers(psutil)
    with worker_pool(2) as pool:
        futures = [pool.submit(_exit_fast_then_square, k) for k in range(4)]
        assert [f.result() for f in futures] == [0, 1, 4, 9]
        workers = list(_loky_workers(psutil) - before)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
    assert all(p.returncode in (0, None) for p in workers)  # None: reaped by the pool already


def _exit_fast_then_square(k: int) -> int:
    from biomark.features.worker_pool import exit_without_teardown

    exit_without_teardown()
    return k * k


@pytest.mark.parametrize("cancel", [True, False], ids=["futures-cancelled", "futures-pending"])
def test_an_error_in_the_block_kills_the_workers_quietly_and_the_process_exits(
    cancel: bool,
) -> None:
    """An error while work is queued (a full disk in ``biomark radiomics``, whose ``collect``
    cancels the futures it waits for): the error reaches the caller, the workers are gone, and
    nothing else is printed. loky's own ``kill_workers`` path printed a raw ``InvalidStateError``
    (cancelled futures) or ``KeyError`` traceback from its manager thread, and with cancelled
    futures the process then hung at exit, joining workers nobody had killed; the subprocess's
    timeout stands for that hang. (The process's other children are the resource trackers.)"""
    pytest.importorskip("psutil")
    code = "\n".join(
        [
            "import time, psutil",
            "from biomark.features.worker_pool import worker_pool",
            "try:",
            "    with worker_pool(2) as pool:",
            "        futures = [pool.submit(time.sleep, 0.2) for _ in range(40)]",
            "        futures[0].result()",
            f"        if {cancel}:",
            "            for future in futures:",
            "                future.cancel()",
            "        raise OSError('No space left on device')",
            "except OSError as err:",
            "    print('caught:', err)",
            "children = psutil.Process().children()",
            "workers = [c for c in children if 'popen_loky' in ' '.join(c.cmdline())]",
            "print('workers left:', len(workers))",
        ]
    )
    done = _run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["caught: No space left on device", "workers left: 0"]
    assert "Traceback" not in done.stderr, done.stderr


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the repository root; its output captured as text.
    The timeout is far above the few seconds these take, and stands for a hang."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
