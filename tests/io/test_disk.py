"""A full disk and a read-only folder become named errors; no temporary file is left.

The real cases run on a tiny tmpfs (``tests/tmpfs.py``; skipped where this
container may not mount one); the rest simulate the ``OSError`` the kernel
gives, through the same functions.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.exceptions import DiskFullError, NotWritableError
from biomark.io import atomic
from biomark.io.disk import (
    check_writable_dir,
    disk_errors,
    format_bytes,
    reserve,
    translate_os_error,
)

from tmpfs import fill, mounted_tmpfs  # tests/ is on sys.path (tests/conftest.py)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "filler")


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 1 MiB tmpfs with about 16 KiB left."""
    with mounted_tmpfs(tmp_path / "small", "1m") as folder:
        fill(folder, leave=16 * 1024)
        yield folder


WRITERS = {
    "text": lambda p: atomic.write_text_atomic(p / "a.json", "x" * 200_000),
    "bytes": lambda p: atomic.write_bytes_atomic(p / "a.bin", b"x" * 200_000),
    "npy": lambda p: atomic.save_npy_atomic(p / "a.npy", np.ones(50_000)),
    "csv": lambda p: atomic.write_csv_atomic(p / "a.csv", pd.DataFrame({"x": np.arange(40_000)})),
    "parquet": lambda p: atomic.write_parquet_atomic(
        p / "a.parquet",
        pd.DataFrame(
            np.random.default_rng(0).random((2_000, 40)), columns=[f"f{i}" for i in range(40)]
        ),
    ),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_atomic_writes_on_a_full_disk(full_disk: Path, kind: str) -> None:
    with pytest.raises(DiskFullError, match=r"no space left on device") as info:
        WRITERS[kind](full_disk)
    message = str(info.value)
    assert str(full_disk) in message, "names the file and the mount point"
    assert "free on the file system mounted at" in message and "Free space there" in message
    assert message.endswith("the partial file was removed")
    assert leftovers(full_disk) == [], "the temporary file is removed"


def test_known_sizes_are_named(full_disk: Path) -> None:
    with pytest.raises(DiskFullError, match=r"needs 195\.3 KiB"):
        atomic.write_bytes_atomic(full_disk / "a.bin", b"x" * 200_000)


def test_reserve_on_a_full_disk(full_disk: Path) -> None:
    target = full_disk / "big.npy"
    tmp = full_disk / ".big.tmp"
    tmp.touch()
    with pytest.raises(DiskFullError, match=r"big\.npy: no space left on device .*needs 3\.8 MiB"):
        reserve(tmp, 4_000_128, target=target)
    reserve(tmp, 1024)  # what fits is allocated
    assert tmp.stat().st_size == 1024


def test_reserve_without_fallocate_compares_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    tmp = tmp_path / "f"
    tmp.touch()
    reserve(tmp, 1024)
    monkeypatch.setattr("biomark.io.disk.free_bytes", lambda path: 10)
    with pytest.raises(DiskFullError, match=r"needs 1\.0 KiB; 10 B free"):
        reserve(tmp, 1024)


def test_enospc_in_any_writer_is_translated(tmp_path: Path) -> None:
    """Without a mount: the errno the kernel gives, raised inside an atomic write."""
    with pytest.raises(DiskFullError, match="no space left"):
        with atomic.atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"abc")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DiskFullError, match="disk quota exceeded"):
        with disk_errors(tmp_path / "x"):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


def test_other_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        with disk_errors(tmp_path):
            raise FileNotFoundError(errno.ENOENT, "gone", "x")
    err = OSError(errno.EACCES, os.strerror(errno.EACCES), "/src/in.png")
    assert translate_os_error(err, tmp_path / "out", full_only=True) is None
    assert isinstance(translate_os_error(err, tmp_path / "out"), NotWritableError)


def test_read_only_folder(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", "64k", read_only=True) as folder:
        with pytest.raises(
            NotWritableError,
            match=r"--out .*/ro/new: cannot write in .*/ro \(Read-only file system\)",
        ):
            check_writable_dir(folder / "new", "--out")
        with pytest.raises(NotWritableError, match="read-only file system"):
            atomic.write_text_atomic(folder / "a.txt", "x")


def test_check_writable_creates_nothing(tmp_path: Path) -> None:
    assert check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotWritableError, match="is a file, not a folder"):
        check_writable_dir(tmp_path / "file" / "sub", "--out")


def test_permission_denied_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root may write anywhere, so a permission error is simulated at mkstemp."""

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

    monkeypatch.setattr("biomark.io.disk.tempfile.mkstemp", denied)
    with pytest.raises(
        NotWritableError, match=r"--out .*: cannot write in .*\(Permission denied\)"
    ):
        check_writable_dir(tmp_path, "--out")


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (3 * 2**30, "3.0 GiB")]
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_a_folder_that_refuses_new_files_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pseudo file system (/proc) answers ENOENT to any new file: simulated at mkstemp."""

    def refused(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(tmp_path / "x"))

    monkeypatch.setattr("biomark.io.disk.tempfile.mkstemp", refused)
    with pytest.raises(
        NotWritableError,
        match=r"--reports .*/sub: cannot create a file in .* \(No such file or directory\); choose",
    ):
        check_writable_dir(tmp_path / "sub", "--reports")
