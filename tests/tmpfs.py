"""A tiny (or read-only) tmpfs mounted for one test: a real full disk, a real read-only folder.

Mounting needs root (or CAP_SYS_ADMIN) and a kernel that allows it in this
container; where it is not permitted the test is skipped, never failed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str = "1m", *, read_only: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (created) for the block; skip the test if not
    permitted."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount/umount command here")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield path
    finally:
        subprocess.run([umount, "-l", str(path)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int = 0) -> None:
    """Write one file that leaves about ``leave`` bytes free in ``folder``'s file system."""
    free = shutil.disk_usage(folder).free - leave
    with open(folder / "filler", "wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(0, free))
