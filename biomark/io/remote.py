"""Folders at an fsspec URL (``s3://``, ``gs://``, ``ftp://``, ...): copy in, copy out, atomically.

biomark's jobs work on local files (Keras saves models to paths, the dataset
cache is a memory map). When the shared folder of a cluster run is a URL
instead of a mounted path, the data moves between the URL and a local copy:
this module does those copies with :mod:`fsspec`, the file-system layer Dask
itself uses, and nothing else (no file format knowledge).

* :class:`RemoteFolder` is one folder at a URL: list, read, and upload files.
* An upload goes to a temporary name next to the target and is renamed into
  place (:meth:`RemoteFolder.put_file`), so a reader sees the old file or the
  whole new one. Object stores (S3, GCS) rename by copy-then-delete, and a
  single object only appears once fully written, so they give the same
  guarantee per file.
* :meth:`RemoteFolder.put_tree` uploads a folder with chosen files (a fold's
  ``done.json``) last, so "that file exists" still means "everything before it
  is complete", as on a local disk.
* :meth:`RemoteFolder.get_tree` downloads what is missing or of another size.

Examples
--------
>>> is_url("s3://bucket/runs"), is_url("/mnt/shared/runs")
(True, False)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from biomark.exceptions import ConfigError, RemoteError

__all__ = ["RemoteFolder", "is_url", "local_cache_dir", "open_url", "redact", "url_key"]

logger = logging.getLogger(__name__)

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
_CREDENTIALS_RE = re.compile(r"(://)([^/@:]+)(:[^/@]*)?@")


def is_url(location: str | os.PathLike[str] | None) -> bool:
    """Whether ``location`` is an fsspec URL (``protocol://...``) rather than a path."""
    return location is not None and bool(_URL_RE.match(os.fspath(location)))


def local_cache_dir() -> Path:
    """Where local copies of URL folders live: ``$BIOMARK_CACHE_DIR`` or ``~/.cache/biomark``."""
    return Path(os.environ.get("BIOMARK_CACHE_DIR") or Path.home() / ".cache" / "biomark").expanduser()


def url_key(url: str) -> str:
    """A short, stable folder name for ``url`` (credentials left out)."""
    import hashlib

    plain = _CREDENTIALS_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}@", url.rstrip("/"))
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()[:16]


def _is_partial(name: str) -> bool:
    """Temporary names of atomic writes (ours and :mod:`biomark.io.atomic`'s)."""
    base = posixpath.basename(name)
    return ".tmp-" in base or (base.startswith(".") and base.endswith((".tmp", ".part")))


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and messages).

    Examples
    --------
    >>> redact("ftp://user:secret@host:21/runs")
    'ftp://user:***@host:21/runs'
    """
    return _CREDENTIALS_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{':***' if m.group(3) else ''}@", url)


def open_url(url: str, what: str = "folder") -> tuple[Any, str]:
    """The fsspec file system and path of ``url``, or a clear error.

    Parameters
    ----------
    url : str
    what : str
        Its role, for messages (``"output folder"``).

    Returns
    -------
    (fsspec.AbstractFileSystem, str)

    Raises
    ------
    ConfigError
        fsspec is missing, the protocol is unknown, or its implementation
        package (``s3fs``, ``gcsfs``, ...) is not installed.
    """
    try:
        import fsspec
    except ImportError as err:  # pragma: no cover - fsspec comes with dask
        raise ConfigError(f"{what} {redact(url)}: URLs need fsspec; install `biomark[distributed]`") from err
    protocol = url.split("://", 1)[0].split("::")[-1]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError as err:
        raise ConfigError(
            f"{what} {redact(url)}: fsspec knows no protocol {protocol!r}; use a local path or a URL "
            "such as s3://, gs://, az://, ftp://, sftp://"
        ) from err
    except ImportError as err:
        raise ConfigError(
            f"{what} {redact(url)}: the {protocol}:// file system needs a package that is not installed "
            f"({err}); install it (e.g. `pip install s3fs` for s3://) on this machine and on every worker"
        ) from err
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{what} {redact(url)}: cannot open it ({type(err).__name__}: {err})") from err
    return fs, path.rstrip("/") or "/"


def _storage_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a storage library's failure inside ``method`` into a :class:`RemoteError` naming the URL.

    :class:`FileNotFoundError` passes through (callers ask about missing
    files on purpose). Anything else a file-system library raises (socket
    errors, ``ftplib`` replies, botocore's client errors) is not the user's
    to decode: it becomes one message with the folder, the operation and
    what to do.
    """

    @functools.wraps(method)
    def wrapper(self: "RemoteFolder", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (FileNotFoundError, RemoteError):
            raise
        except Exception as err:  # noqa: BLE001 - the storage boundary; the cause is chained
            target = args[0] if args and isinstance(args[0], str) else ""
            raise RemoteError(
                f"{self.what} {redact(self.url)}: {method.__name__.strip('_').replace('_', ' ')} "
                f"{target!r} failed ({type(err).__name__}: {err}); check the connection, the credentials "
                "and the space there. Finished work is kept; re-run to resume"
            ) from err

    return wrapper


class RemoteFolder:
    """One folder at an fsspec URL.

    Parameters
    ----------
    url : str
        ``protocol://.../folder``; credentials and options as fsspec takes them
        (in the URL, environment variables, or the protocol's config files).
    what : str
        Its role, for messages.

    Raises
    ------
    ConfigError
        See :func:`open_url`.
    """

    def __init__(self, url: str, what: str = "folder") -> None:
        self.url = url.rstrip("/")
        self.what = what
        self.fs, self.root = open_url(self.url, what)

    def __repr__(self) -> str:
        return f"RemoteFolder({redact(self.url)!r})"

    def child(self, *parts: str) -> "RemoteFolder":
        """The sub-folder ``parts`` (not created)."""
        return RemoteFolder(posixpath.join(self.url, *parts), self.what)

    def path(self, relative: str = "") -> str:
        """The file system path of ``relative`` (POSIX separators) inside the folder."""
        return posixpath.join(self.root, relative) if relative else self.root

    @_storage_errors
    def exists(self, relative: str = "") -> bool:
        """Whether ``relative`` exists (asked of the storage, not a cached listing)."""
        self._forget_listings()
        return bool(self.fs.exists(self.path(relative)))

    def _forget_listings(self) -> None:
        # fsspec caches directory listings per process; other machines write
        # into the same folders (workers finish folds), so a cached listing
        # would hide their files. Every question goes to the storage.
        self.fs.invalidate_cache()

    @_storage_errors
    def read_bytes(self, relative: str) -> bytes:
        """The content of ``relative``."""
        return bytes(self.fs.cat_file(self.path(relative)))

    def read_text(self, relative: str) -> str:
        """The content of ``relative`` as UTF-8."""
        return self.read_bytes(relative).decode("utf-8")

    @_storage_errors
    def files(self, relative: str = "") -> dict[str, int]:
        """Every file under ``relative`` (recursively): relative POSIX path to size."""
        base = self.path(relative)
        self._forget_listings()
        if not self.fs.exists(base):
            return {}
        found = self.fs.find(base, detail=True)
        strip = self.fs._strip_protocol(base).rstrip("/") + "/"
        out = {}
        for name, info in found.items():
            name = self.fs._strip_protocol(name)
            if info.get("type", "file") != "file" or not name.startswith(strip):
                continue
            out[posixpath.join(relative, name[len(strip):]) if relative else name[len(strip):]] = int(info.get("size") or 0)
        return out

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write ``data`` to ``relative`` atomically (temporary name, then rename)."""

        def write(tmp: str) -> None:
            with self.fs.open(tmp, "wb") as handle:
                handle.write(data)

        self._upload(relative, write)

    def write_text(self, relative: str, text: str) -> None:
        """Write UTF-8 ``text`` to ``relative`` atomically."""
        self.write_bytes(relative, text.encode("utf-8"))

    def put_file(self, local: str | os.PathLike[str], relative: str) -> None:
        """Upload a local file to ``relative`` atomically (temporary name, then rename)."""
        self._upload(relative, lambda tmp: self.fs.put_file(os.fspath(local), tmp))

    @_storage_errors
    def _upload(self, relative: str, write: Callable[[str], None]) -> None:
        """``write(tmp)`` a temporary file next to ``relative``, then move it into place."""
        target = self.path(relative)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            write(tmp)
            self._replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError, FileNotFoundError):
                self.fs.rm_file(tmp)
            raise

    def _replace(self, tmp: str, target: str) -> None:
        # Not every file system renames over an existing file (FTP, Windows
        # shares refuse), so remove the old one first; a reader in between
        # sees the file missing, never half-written.
        if self.fs.exists(target):
            self.fs.rm_file(target)
        self.fs.mv(tmp, target)

    def put_tree(
        self,
        local: str | os.PathLike[str],
        relative: str = "",
        *,
        last: Iterable[str] = (),
        skip: Callable[[str], bool] | None = None,
        only_changed: bool = False,
    ) -> int:
        """Upload every file under a local folder, the ``last`` names after all others.

        Parameters
        ----------
        local : path
            Local folder.
        relative : str
            Destination inside this folder.
        last : iterable of str
            File names (relative to ``local``) uploaded after all the others,
            e.g. a completion marker.
        skip : callable, optional
            ``skip(relative_name)`` true: not uploaded.
        only_changed : bool, default False
            Skip files already there with the same size (for content-addressed
            files such as cache entries, whose name fixes the content).

        Returns
        -------
        int
            Files uploaded.
        """
        local = Path(local)
        final = set(last)
        names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        names = [n for n in names if not (skip and skip(n)) and not _is_partial(n)]
        if only_changed:
            there = self.files(relative)
            names = [
                n for n in names
                if n in final or there.get(posixpath.join(relative, n) if relative else n) != (local / n).stat().st_size
            ]
        ordered = [n for n in names if n not in final] + [n for n in names if n in final]
        for name in ordered:
            self.put_file(local / name, posixpath.join(relative, name) if relative else name)
        return len(ordered)

    def get_tree(
        self, relative: str, local: str | os.PathLike[str], *, skip: Callable[[str], bool] | None = None
    ) -> int:
        """Download the files under ``relative`` that are missing locally or of another size.

        Each file is written to a temporary local name and renamed, so a local
        copy is never half a file.

        Parameters
        ----------
        relative : str
            Folder inside this folder (``""``: all of it).
        local : path
            Local destination folder (created).
        skip : callable, optional
            ``skip(relative_name)`` true: not downloaded (names relative to ``relative``).

        Returns
        -------
        int
            Files downloaded.
        """
        local = Path(local)
        count = 0
        prefix = f"{relative.rstrip('/')}/" if relative else ""
        for name, size in sorted(self.files(relative).items()):
            inner = name[len(prefix):]
            if (skip and skip(inner)) or _is_partial(inner):
                continue
            target = local / inner
            if target.is_file() and target.stat().st_size == size:
                continue
            self.get_file(name, target)
            count += 1
        return count

    @_storage_errors
    def get_file(self, relative: str, local: str | os.PathLike[str]) -> Path:
        """Download ``relative`` to the local path ``local`` atomically."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.fs.get_file(self.path(relative), os.fspath(tmp))
            os.replace(tmp, local)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return local

    @_storage_errors
    def remove(self, relative: str) -> None:
        """Delete ``relative`` (a file or a whole folder), if present."""
        target = self.path(relative)
        if not self.fs.exists(target):
            return
        if self.fs.isdir(target):
            self.fs.rm(target, recursive=True)
        else:
            self.fs.rm_file(target)
