"""The job lock outside Dask (biomark.pipelines.attempt.job_lock): a file lock per job."""

from __future__ import annotations

import errno
import fcntl
import logging
from pathlib import Path

import pytest

from biomark.exceptions import RunError
from biomark.pipelines.attempt import job_lock, no_local_job_running
from biomark.pipelines.job_process import _JobLog, replay_job_log


def _held_elsewhere(path: Path) -> bool:
    """Whether another open of ``path`` finds its flock taken."""
    with open(path, "a+b") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False


def test_a_local_run_holds_a_file_lock_per_job_while_it_runs(tmp_path: Path) -> None:
    lock = tmp_path / ".cluster" / "locks" / "finetune_3_fold_02.lock"
    with job_lock(str(tmp_path), "finetune:3", 2):
        assert lock.is_file() and _held_elsewhere(lock)
        with job_lock(str(tmp_path), "finetune:3", 1):  # another job of the run: its own lock
            assert _held_elsewhere(lock.with_name("finetune_3_fold_01.lock"))
    assert not _held_elsewhere(lock), "released on leaving, the file left behind means nothing"


def test_a_run_at_a_url_takes_no_file_lock(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with job_lock("s3://bucket/runs/quick", "scratch", 0):
        pass
    assert not list(tmp_path.rglob("*.lock"))


def test_a_file_system_without_flock_runs_unlocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    def no_locks(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with caplog.at_level(logging.DEBUG, logger="biomark.pipelines.attempt"):
        with job_lock(str(tmp_path), "scratch", 0):
            ran.append(True)
    assert ran == [True] and "no file lock" in caplog.text and "running unlocked" in caplog.text
    with pytest.raises(ValueError, match="the job's own error"):  # and its errors pass through
        with job_lock(str(tmp_path), "scratch", 0):
            raise ValueError("the job's own error")


def test_force_guard_refuses_while_another_process_trains_a_fold(tmp_path: Path) -> None:
    with job_lock(str(tmp_path), "scratch", 0):  # a finished job: its lock file stays, free
        pass
    other = tmp_path / ".cluster" / "locks" / "finetune_3_fold_01.lock"
    other.touch()
    with open(other, "a+b") as training:  # another process trains finetune:3 fold 1
        fcntl.flock(training, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(
            RunError,
            match=r"training finetune:3 fold 1 \(finetune_3/fold_01\) of this run .*Wait for it",
        ):
            with no_local_job_running(tmp_path):
                pytest.fail("the block must not run")
        assert not _held_elsewhere(tmp_path / ".cluster" / "locks" / "scratch_fold_00.lock")
    with no_local_job_running(tmp_path):  # nobody trains: every job's lock held meanwhile
        assert _held_elsewhere(other) and _held_elsewhere(other.with_name("scratch_fold_00.lock"))
    assert not _held_elsewhere(other)
    with no_local_job_running(tmp_path / "new_run"):  # a run with no lock yet
        pass


def test_a_job_process_log_is_replayed_under_its_names_levels_and_times(caplog) -> None:
    """What an isolated job logged (collected as plain values) is logged again where the run
    is driven, as if it had been logged there, when it happened; a level the logger does
    not show (``-q``) stays out."""
    collected = _JobLog()
    job_logger = logging.getLogger("biomark.train.epochs")
    job_logger.addHandler(collected)
    try:
        with caplog.at_level(logging.DEBUG, logger="biomark"):  # as enabled as a job process
            job_logger.warning("scratch fold %d cannot fit its own training set", 0)
            job_logger.info("scratch fold 0 fits its training set")
            job_logger.debug("below the collector's level")
    finally:
        job_logger.removeHandler(collected)
    assert [entry["message"] for entry in collected.records] == [
        "scratch fold 0 cannot fit its own training set",
        "scratch fold 0 fits its training set",
    ]
    collected.records[0]["created"] = 1_000_000.25  # logged earlier, in another process

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="biomark"):
        replay_job_log(collected.records)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("biomark.train.epochs", logging.WARNING, "scratch fold 0 cannot fit its own training set"),
        ("biomark.train.epochs", logging.INFO, "scratch fold 0 fits its training set"),
    ]
    assert caplog.records[0].created == 1_000_000.25 and caplog.records[0].msecs == 250.0

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="biomark"):
        replay_job_log(collected.records)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_a_message_every_job_process_logs_is_replayed_once(caplog) -> None:
    warning = {
        "name": "biomark.models.weights",
        "levelno": logging.WARNING,
        "message": "strategy frozen, model.weights=none: the backbone starts from random weights",
        "created": 1_000_000.0,
    }
    fit = dict(warning, name="biomark.train.epochs", message="frozen fold 1 cannot fit")
    seen: set[tuple[str, int, str]] = set()
    with caplog.at_level(logging.INFO, logger="biomark"):
        replay_job_log([warning], seen)  # fold 0's process
        replay_job_log([dict(warning, created=1_000_050.0), fit], seen)  # fold 1's
    assert [r.getMessage() for r in caplog.records] == [warning["message"], fit["message"]]


def test_a_job_process_keeps_its_records_and_writes_its_warnings_to_stderr() -> None:
    """In a job process every biomark record at INFO and above is kept for the answer, and the
    warnings also reach stderr, whose tail is quoted when the process dies without answering."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from biomark.pipelines.job_process import collect_job_log\n"
        "kept = collect_job_log()\n"
        "job = logging.getLogger('biomark.train.epochs')\n"
        "job.warning('fold 0 cannot fit its own training set')\n"
        "job.info('fold 0 fits its training set')\n"
        "job.debug('not kept')\n"
        "print([entry['message'] for entry in kept.records])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == (
        "['fold 0 cannot fit its own training set', 'fold 0 fits its training set']"
    )
    assert "WARNING biomark.train.epochs: fold 0 cannot fit its own training set" in done.stderr
    assert "fits its training set" not in done.stderr  # INFO: kept, not printed
