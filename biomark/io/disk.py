"""Disk space and writable folders: named errors instead of bus errors and raw ``OSError``.

Three failures of writing files get a :class:`~biomark.exceptions.BiomarkError`
that names the file, the file system and the fix:

* **No space** (``ENOSPC``, or ``EDQUOT`` for a full quota) raises
  :class:`~biomark.exceptions.DiskFullError` with the size being written
  (when known), the space free and the mount point.
* **Not writable** (``EROFS``, ``EACCES``, ``EPERM``) raises
  :class:`~biomark.exceptions.NotWritableError`.
* **Memory maps**: a page of a memory-mapped file that the file system cannot
  back kills the process with ``SIGBUS`` ("Bus error", exit 135), which no
  ``try`` can catch. :func:`reserve` allocates the whole file first with
  :func:`os.posix_fallocate`, so a full disk is an ``ENOSPC`` before any
  page is touched.

:func:`disk_errors` does the translation around any block of writes;
:func:`biomark.io.atomic.atomic_path` uses it, so every atomic write of the
package (caches, feature tables, JSON, CSV) reports a full disk this way and
leaves no temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path

from biomark.exceptions import BiomarkError, DiskFullError, NotWritableError

__all__ = [
    "DISK_FULL_ERRNOS",
    "NOT_WRITABLE_ERRNOS",
    "check_free_space",
    "check_writable_dir",
    "disk_errors",
    "format_bytes",
    "free_bytes",
    "reserve",
    "translate_os_error",
]

logger = logging.getLogger(__name__)

#: ``errno`` values that mean "the file system (or the user's quota) is full".
DISK_FULL_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT})
#: ``errno`` values that mean "this process may not write there".
NOT_WRITABLE_ERRNOS: frozenset[int] = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
# posix_fallocate is not supported by every file system (some network and
# FUSE file systems); then the free space is compared instead.
_NO_FALLOCATE = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS})
# Less than this free when a write failed without an errno counts as full.
_NEARLY_FULL = 64 * 1024


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``"3.8 MiB"``.

    Examples
    --------
    >>> format_bytes(4_000_128)
    '3.8 MiB'
    >>> format_bytes(512)
    '512 B'
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (free space is asked of a real folder)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free for this user on the file system holding ``path`` (or its nearest existing
    parent).

    Returns None when the file system cannot be asked.
    """
    try:
        return int(shutil.disk_usage(_existing(Path(path))).free)
    except OSError:
        return None


def _mount_point(path: Path) -> Path:
    path = _existing(path)
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _is_disk_full(err: OSError, folder: Path) -> bool:
    if err.errno in DISK_FULL_ERRNOS or "no space left on device" in str(err).lower():
        return True
    # Some writers lose the errno (numpy's tofile: "50000 requested and 2032
    # written"); a short write on a file system with no room left is the same.
    if err.errno is None:
        free = free_bytes(folder)
        return free is not None and free < _NEARLY_FULL
    return False


def translate_os_error(
    err: OSError,
    path: str | os.PathLike[str],
    needed: int | None = None,
    *,
    written: int | None = None,
    full_only: bool = False,
    cleaned: bool = False,
) -> BiomarkError | None:
    """The named error for a full disk or a folder that is not writable, else None.

    Parameters
    ----------
    err : OSError
        What the write raised.
    path : str or Path
        The file (or folder) being written, named in the message.
    needed : int, optional
        Bytes the whole write needs, when known.
    written : int, optional
        Bytes written before the disk filled (when ``needed`` is unknown).
    full_only : bool, default False
        Translate a full disk only (the block also reads files, whose
        permission errors are not about the destination).
    cleaned : bool, default False
        The caller removed the partial file (said in the message).

    Returns
    -------
    DiskFullError, NotWritableError or None
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if _is_disk_full(err, folder):
        free = free_bytes(folder)
        if needed:
            size = f"needs {format_bytes(needed)}"
        elif written:
            size = f"needs more than the {format_bytes(written)} written when the disk filled"
        else:
            size = "size unknown"
        reason = "disk quota exceeded" if err.errno == errno.EDQUOT else "no space left on device"
        return DiskFullError(
            f"{path}: {reason} while writing it ({size}; "
            f"{format_bytes(free) if free is not None else 'unknown space'} free on the file "
            f"system mounted at {_mount_point(folder)}). Free space there, or send the output "
            "to another file system, and re-run"
            + ("; the partial file was removed" if cleaned else "")
        )
    if err.errno in NOT_WRITABLE_ERRNOS and not full_only:
        where = Path(err.filename) if err.filename else path
        why = (
            "is on a read-only file system"
            if err.errno == errno.EROFS
            else "is not writable by this user"
        )
        return NotWritableError(
            f"{where} {why} ({os.strerror(err.errno)}) while writing {path}; choose a writable "
            "folder (e.g. --out DIR) or fix the folder's permissions"
        )
    return None


@contextlib.contextmanager
def disk_errors(
    path: str | os.PathLike[str], needed: int | None = None, *, full_only: bool = False
) -> Iterator[None]:
    """Raise the named error of :func:`translate_os_error` for an ``OSError`` in the block.

    Other errors pass through unchanged; the original is chained.

    Parameters
    ----------
    path : str or Path
        The file or folder the block writes.
    needed : int, optional
        Bytes the block writes, when known (for the message).
    full_only : bool, default False
        See :func:`translate_os_error`.

    Raises
    ------
    DiskFullError, NotWritableError
    """
    try:
        yield
    except OSError as err:
        named = translate_os_error(err, path, needed, full_only=full_only)
        if named is None:
            raise
        raise named from err


def check_free_space(folder: str | os.PathLike[str], needed: int, what: str) -> None:
    """Raise :class:`~biomark.exceptions.DiskFullError` now if ``needed`` bytes cannot fit in
    ``folder``.

    A check before a multi-file write (the writes themselves still reserve or
    translate, since others may fill the disk meanwhile).

    Parameters
    ----------
    folder : str or Path
        Where the files go (or its nearest existing parent).
    needed : int
        Bytes the files will take at least.
    what : str
        What is being written, for the message (``"the dataset"``).

    Raises
    ------
    DiskFullError
    """
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise DiskFullError(
            f"{folder}: not enough space for {what}: it needs at least {format_bytes(needed)} but "
            f"only {format_bytes(free)} is free on the file system mounted at "
            f"{_mount_point(Path(folder))}. Free space there, or send the output to another file "
            "system, and re-run; nothing was written"
        )


def reserve(
    path: str | os.PathLike[str], nbytes: int, *, target: str | os.PathLike[str] | None = None
) -> None:
    """Allocate the first ``nbytes`` of the existing file ``path`` on disk.

    After this, writes into that range (through ``write`` or a memory map)
    cannot fail for lack of space; a memory map over an unallocated range of
    a full file system would die with ``SIGBUS`` instead.

    Parameters
    ----------
    path : str or Path
        An existing file (typically a temporary one, about to be memory-mapped).
    nbytes : int
        Its final size in bytes.
    target : str or Path, optional
        The file's final name, for the message (default ``path``).

    Raises
    ------
    DiskFullError
        The file system has less than ``nbytes`` free.
    """
    name = Path(target) if target is not None else Path(path)
    if nbytes <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as err:
        if err.errno not in _NO_FALLOCATE:
            named = translate_os_error(err, name, nbytes)
            if named is None:
                raise
            raise named from err
        free = free_bytes(path)
        logger.debug(
            "%s: posix_fallocate not supported (%s); comparing free space instead", path, err
        )
        if free is not None and free < nbytes:
            full = translate_os_error(
                OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), name, nbytes
            )
            raise typing.cast(
                DiskFullError, full
            ) from err  # ENOSPC always translates to a DiskFullError
    finally:
        os.close(fd)


def check_writable_dir(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Check, creating nothing, that files can be written in ``folder``.

    The check creates and removes an empty file in ``folder``, or, when it
    does not exist yet, in its nearest existing parent (where it would be
    created). Call it where a command takes its output folder, before any
    long work, so a read-only ``--out`` fails at once with a named error.

    Parameters
    ----------
    folder : str or Path
    what : str
        Its role, for the message (``"--out"``).

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    NotWritableError
        The folder (or the parent it would be created in) is read-only, not
        permitted or refuses new files (a pseudo file system), or a file stands
        where the folder should be.
    DiskFullError
        Not even an empty file fits.
    """
    folder = Path(folder)
    probe_in = _existing(folder)
    if not probe_in.is_dir():
        raise NotWritableError(
            f"{what} {folder}: {probe_in} is a file, not a folder; give a folder path, or move the "
            "file"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".biomark-write-check-", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        named = translate_os_error(err, probe_in)
        if isinstance(named, NotWritableError):
            raise NotWritableError(
                f"{what} {folder}: cannot write in {probe_in} ({os.strerror(err.errno or 0)}); "
                "choose a writable folder or fix its permissions"
            ) from err
        if named is not None:
            raise named from err
        raise NotWritableError(  # e.g. a pseudo file system (/proc) where nothing can be created
            f"{what} {folder}: cannot create a file in {probe_in} ({os.strerror(err.errno or 0)}); "
            "choose an ordinary writable folder"
        ) from err
    return folder
