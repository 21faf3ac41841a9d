"""Tests for biomark.io.atomic: a reader never sees a half-written file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biomark.io.atomic import (
    atomic_open,
    atomic_path,
    save_npy_atomic,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


def _leftovers(folder: Path, keep: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p != keep]


def test_atomic_path_success_moves_into_place(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.txt"  # parents are created
    with atomic_path(target, suffix=".txt") as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert tmp.name.endswith(".txt.tmp")
        tmp.write_text("new")
        assert not target.exists()  # not visible before the block ends
    assert target.read_text() == "new"
    assert _leftovers(target.parent, target) == []


def test_atomic_path_can_keep_the_suffix_last(tmp_path: Path) -> None:
    """Writers that insist on an extension (Keras's ``.keras``) get a temporary name ending in
    it."""
    target = tmp_path / "model.keras"
    with atomic_path(target, suffix=".keras", keep_suffix=True) as tmp:
        assert tmp.name.startswith(".model.keras.") and tmp.suffix == ".keras"
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights"
    assert _leftovers(tmp_path, target) == []


def test_atomic_path_exception_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path, target) == []


def test_atomic_path_exception_without_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "never.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target):
            raise KeyboardInterrupt  # BaseException is cleaned up too
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_exception_after_temp_removed(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(ValueError, match="gone"):
        with atomic_path(target) as tmp:
            tmp.unlink()
            raise ValueError("gone")
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_exception_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    write_bytes_atomic(target, b"old")
    with pytest.raises(OSError, match="disk"):
        with atomic_open(target, "wb") as handle:
            handle.write(b"new but incomplete")
            raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, target) == []


def test_text_and_bytes_round_trip(tmp_path: Path) -> None:
    assert write_text_atomic(tmp_path / "t.txt", "héllo\n") == tmp_path / "t.txt"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_json_with_numpy_values_round_trips(tmp_path: Path) -> None:
    obj = {
        "int": np.int64(7),
        "float": np.float32(0.5),
        "bool": np.bool_(True),
        "array": np.arange(3, dtype=np.int16),
        "matrix": np.eye(2),
        "path": Path("a/b.png"),
        "nested": [{"auc": np.float64(0.875)}],
    }
    path = write_json_atomic(tmp_path / "r.json", obj)
    assert json.loads(path.read_text()) == {
        "int": 7,
        "float": 0.5,
        "bool": True,
        "array": [0, 1, 2],
        "matrix": [[1.0, 0.0], [0.0, 1.0]],
        "path": "a/b.png",
        "nested": [{"auc": 0.875}],
    }
    assert path.read_text().endswith("}\n")


def test_json_unserialisable_keeps_previous_file(tmp_path: Path) -> None:
    target = write_json_atomic(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert _leftovers(tmp_path, target) == []


def test_npy_round_trip_and_mmap(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = save_npy_atomic(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), array)
    assert _leftovers(tmp_path, path) == []


def test_npy_keep_if_equal_leaves_the_same_array_alone_and_rewrites_any_other(
    tmp_path: Path,
) -> None:
    """The same array: no write at all (same inode, same modification time), so a full disk
    cannot stop a re-run there; another value, dtype or shape, or a file that is not an array:
    rewritten."""
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = save_npy_atomic(tmp_path / "a.npy", array)
    before = path.stat()
    save_npy_atomic(path, array.copy(), keep_if_equal=True)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    changed = array.copy()
    changed[1, 2, 3] = 0
    for other in (changed, array.astype(np.int16), array.reshape(4, 6)):
        save_npy_atomic(path, other, keep_if_equal=True)
        saved = np.load(path)
        assert saved.dtype == other.dtype
        np.testing.assert_array_equal(saved, other)
    path.write_text("not an array")
    save_npy_atomic(path, array, keep_if_equal=True)
    np.testing.assert_array_equal(np.load(path), array)
    assert _leftovers(tmp_path, path) == []


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    import biomark.io.atomic as atomic

    path = write_json_atomic(tmp_path / "p.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK


def test_csv_and_parquet_round_trip(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"image_id": ["a", "b"], "score": [0.5, 0.25]})
    csv = write_csv_atomic(tmp_path / "f.csv", frame)
    pd.testing.assert_frame_equal(pd.read_csv(csv), frame)
    pytest.importorskip("pyarrow")
    parquet = write_parquet_atomic(tmp_path / "f.parquet", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "f.parquet"]
