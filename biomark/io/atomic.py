"""Atomic file writes: a reader never sees a half-written file.

Everything is written to a temporary file in the destination's folder and
moved into place with :func:`os.replace`, which is atomic on POSIX and Windows
when source and destination are on the same file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from biomark.io.disk import disk_errors, translate_os_error

# Read once: os.umask can only be queried by setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "atomic_path",
    "atomic_open",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "write_csv_atomic",
    "write_parquet_atomic",
    "save_npy_atomic",
]


@contextlib.contextmanager
def atomic_path(
    path: str | Path, suffix: str = "", needed: int | None = None, *, keep_suffix: bool = False
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place.

    If the block raises, the temporary file is removed and ``path`` is left
    as it was (absent or its previous content). A full disk anywhere in the
    block raises :class:`~biomark.exceptions.DiskFullError`, a folder that
    cannot be written :class:`~biomark.exceptions.NotWritableError`
    (:mod:`biomark.io.disk`).

    Parameters
    ----------
    path : str or Path
        Final destination; parent folders are created.
    suffix : str
        Suffix of the temporary name (some writers need the right extension).
    needed : int, optional
        Bytes the file will take, when known (named in a full-disk message).
    keep_suffix : bool, default False
        End the temporary name with ``suffix`` itself rather than
        ``suffix + ".tmp"``, for writers that refuse any other ending
        (Keras's ``model.save`` wants ``.keras``).

    Raises
    ------
    DiskFullError, NotWritableError

    Examples
    --------
    A write that fails half-way leaves the previous file as it was:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     target = Path(tmp) / "folds.csv"
    ...     with atomic_path(target, suffix=".csv") as part:
    ...         _ = part.write_text("image_id,fold")
    ...     try:
    ...         with atomic_path(target, suffix=".csv") as part:
    ...             _ = part.write_text("image_")
    ...             raise KeyboardInterrupt
    ...     except KeyboardInterrupt:
    ...         pass
    ...     target.read_text(), sorted(p.name for p in Path(tmp).iterdir())
    ('image_id,fold', ['folds.csv'])
    """
    path = Path(path)
    with disk_errors(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        ending = suffix if keep_suffix else suffix + ".tmp"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=ending, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            # mkstemp creates the file 0600; give the result the usual permissions.
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except OSError as err:
            written = tmp.stat().st_size if tmp.exists() else None
            named = translate_os_error(
                err, path, needed, written=written, full_only=True, cleaned=True
            )
            if named is None:
                raise
            raise named from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", needed: int | None = None, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on clean exit move it to ``path``.

    ``needed`` (bytes, when known) goes into a full-disk message; see :func:`atomic_path`.
    """
    with atomic_path(path, needed=needed) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path``."""
    with atomic_open(path, "wb", needed=len(data)) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return ``path``."""
    with atomic_open(path, "w", needed=len(text.encode("utf-8")), encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy scalars/arrays allowed).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:  # parent folders are created
    ...     path = write_json_atomic(Path(tmp) / "fold_00" / "metrics.json",
    ...                              {"k": np.int64(3), "sizes": np.arange(3)})
    ...     json.loads(path.read_text(encoding="utf-8"))
    {'k': 3, 'sizes': [0, 1, 2]}
    """
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_csv_atomic(path: str | Path, frame: Any, index: bool = False) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=index)
    return Path(path)


def write_parquet_atomic(path: str | Path, frame: Any) -> Path:
    """Write a pandas DataFrame as Parquet (pyarrow) atomically."""
    with atomic_path(path, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow")
    return Path(path)


def save_npy_atomic(path: str | Path, array: np.ndarray, *, keep_if_equal: bool = False) -> Path:
    """Save a numpy array as ``.npy`` atomically (loadable with ``mmap_mode``).

    Parameters
    ----------
    path : str or Path
    array : ndarray
    keep_if_equal : bool, default False
        Leave an existing file that already holds this array (same dtype,
        shape and values) as it is: no write, so a re-run needs no room for a
        second copy beside the first while it is renamed into place.

    Returns
    -------
    Path
    """
    array = np.asarray(array)
    if keep_if_equal and _holds(Path(path), array):
        return Path(path)
    # Write through a handle: given a file *name*, np.save appends ".npy" to it.
    with atomic_open(path, "wb", needed=int(array.nbytes)) as handle:
        np.save(handle, array, allow_pickle=False)
    return Path(path)


def _holds(path: Path, array: np.ndarray) -> bool:
    """Whether the ``.npy`` file at ``path`` holds ``array`` (False when it is missing or
    unreadable)."""
    try:
        saved = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return bool(
        saved.dtype == array.dtype
        and saved.shape == array.shape
        and np.array_equal(saved, array, equal_nan=array.dtype.kind in "fc")
    )
