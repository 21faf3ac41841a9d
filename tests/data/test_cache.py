from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.data.cache import save_stack_atomic, write_cache
from biomark.exceptions import DataError


def test_write_cache_layout(tmp_path: Path) -> None:
    images = [np.full((8, 8), i, np.uint8) for i in range(3)]
    masks = [np.eye(8, dtype=np.uint8)] * 3
    cache = write_cache(
        tmp_path, ["a", "b", "c"], images, size=8, classes=["X"], manifest_sha256="h", masks=masks
    )
    stored = np.load(cache / "images.npy", mmap_mode="r")
    assert stored.shape == (3, 8, 8) and stored[2, 0, 0] == 2
    assert np.load(cache / "masks.npy").sum() == 24
    assert pd.read_csv(cache / "index.csv").to_dict("list") == {
        "image_id": ["a", "b", "c"],
        "row": [0, 1, 2],
    }
    write_cache(tmp_path, ["a"], images[:1], size=8, classes=["X"], manifest_sha256="h2")
    assert not (cache / "masks.npy").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_wrong_shape_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="row 1"):
        save_stack_atomic(
            tmp_path / "x.npy", [np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)], 4
        )
    assert list(tmp_path.iterdir()) == []


def test_length_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="2 image ids but 1 images"):
        write_cache(
            tmp_path,
            ["a", "b"],
            [np.zeros((4, 4), np.uint8)],
            size=4,
            classes=[],
            manifest_sha256="",
        )


def test_full_disk_is_a_named_error_not_a_bus_error(tmp_path: Path) -> None:
    """A memory-mapped write on a full file system used to die with SIGBUS (exit 135)."""
    import subprocess
    import sys

    from tmpfs import mounted_tmpfs  # tests/ is on sys.path (tests/conftest.py)

    code = (
        "import numpy as np, sys\n"
        "from biomark.data.cache import save_stack_atomic\n"
        "from biomark.exceptions import DiskFullError\n"
        "try:\n"
        "    save_stack_atomic(sys.argv[1] + '/images.npy', [np.full((200, 200), 7, np.uint8)] * "
        "40, 200)\nexcept DiskFullError as err:\n"
        "    print(err)\n"
        "    sys.exit(3)\n"
    )
    with mounted_tmpfs(tmp_path / "small", "1m") as folder:
        done = subprocess.run(
            [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 3, f"exit {done.returncode}: {done.stderr[-2000:]}"
        assert (
            f"{folder}/images.npy: no space left on device" in done.stdout
            and "needs 1.5 MiB" in done.stdout
        )
        assert list(folder.iterdir()) == [], "no temporary file is left"
